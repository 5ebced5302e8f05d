//! volley-common: what the volley actor and learner share.
//!
//! - [`env`]: the environment layer: spaces, vector envs stepped on worker threads,
//!   Procgen (through procgen's C library), MuJoCo (Gymnasium v5 tasks), Platform
//!   (parameterised actions) and CartPole, and the registry of env ids.
//! - [`deps`]: where the native dependencies installed by `deploy/setup.sh` live.

pub mod deps;
pub mod env;
