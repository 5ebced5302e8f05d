//! volley-common: what the volley actor and learner share.
//!
//! - [`env`]: the environment layer: spaces, vector envs stepped on worker threads,
//!   Procgen (through procgen's C library), MuJoCo (Gymnasium v5 tasks), Platform
//!   (parameterised actions) and CartPole, and the registry of env ids.
//! - [`config`]: TOML configs with dotted command-line overrides.
//! - [`telemetry`]: metric names and the Prometheus exporter.
//! - [`nn`]: policy networks, their weights as bytes, and Adam with saveable state.
//! - [`signals`]: SIGINT/SIGTERM as a stop flag.
//! - [`deps`]: where the native dependencies installed by `deploy/setup.sh` live.

pub mod config;
pub mod deps;
pub mod env;
pub mod nn;
pub mod signals;
pub mod telemetry;
