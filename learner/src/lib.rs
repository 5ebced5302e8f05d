//! volley-learner: the gRPC server that ingests actor trajectories, trains PPO, SAC or
//! MP-DQN on one device and broadcasts weights. The environment layer it shares with
//! the actors lives in `volley-common`. The data flow is described in docs/runtime.md.
//!
//! - [`server`], [`validate`]: the gRPC service, chunk validation, weight streams;
//! - [`trainer`]: the training thread (batches, updates, publication, logging);
//! - [`ppo`]: PPO (Schulman et al. 2017);
//! - [`eval`]: greedy evaluation on its own thread, feeding the best checkpoint;
//! - [`sac`]: SAC (Haarnoja et al. 2018); [`replay`]: its replay buffer;
//! - [`config`]: the run config; [`rundir`], [`checkpoint`]: the run directory.

pub use volley_common::env;

pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod memory;
pub mod mpdqn;
pub mod offpolicy;
pub mod ppo;
pub mod replay;
pub mod rundir;
pub mod sac;
pub mod server;
pub mod trainer;
pub mod validate;
