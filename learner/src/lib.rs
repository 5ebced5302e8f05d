//! volley-learner: the gRPC server that ingests actor trajectories, trains PPO, SAC or
//! MP-DQN on one device and broadcasts weights. The environment layer it shares with
//! the actors lives in `volley-common`.

pub use volley_common::env;
