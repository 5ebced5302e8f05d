//! volley-actor: runs environments and, in a training run, streams their trajectories
//! to the learner.
//!
//! - [`tools`]: the env tools behind `volley-actor envs`, `random` and `bench`.

pub mod tools;
