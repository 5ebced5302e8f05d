//! volley-actor: runs environments and, in a training run, streams their trajectories
//! to the learner.
//!
//! - [`run`]: `volley-actor run`, the actor of a training run: registration and
//!   wiring;
//! - `rollout`: the env loop (acting, reward shaping, chunk building);
//! - `link`: connecting, reconnecting, the sender and weights tasks;
//! - [`client`]: the gRPC client side, with reconnect backoff.
//! - [`tools`]: the env tools behind `volley-actor envs`, `random` and `bench`.

pub mod client;
mod link;
mod rollout;
pub mod run;
pub mod tools;
