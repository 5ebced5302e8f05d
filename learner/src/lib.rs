//! volley-learner: the gRPC server that ingests actor trajectories, trains one of the
//! algorithms of `volley_common::algorithms` on one device and broadcasts weights.
//! The environment layer and the networks it shares with the actors live in
//! `volley-common`. The data flow is described in docs/runtime.md; adding an
//! algorithm in docs/adding-an-algorithm.md.
//!
//! - [`server`], [`validate`]: the gRPC service, chunk validation, weight streams;
//! - [`training`]: the one training loop (queue, data source, updates, publication,
//!   logging, evaluation, checkpoints), the same for every algorithm;
//! - [`algo`]: the algorithm trait and one module per algorithm of the list
//!   (`algo::<name>`);
//! - [`rollout`], [`normalize`]: the on-policy data source (GAE, reward statistic);
//! - [`replay`]: the replay data source;
//! - [`eval`]: greedy evaluation on its own thread, feeding the best checkpoint;
//! - [`config`]: the run config; [`rundir`], [`checkpoint`]: the run directory;
//!   [`runs`]: run records (`run.json`), finding runs by id or name;
//! - [`tracking`]: what watches a run, set up and ended in one place: [`mlflow`],
//!   the run mirrored to an MLflow tracking server; [`figures`], its plots kept
//!   current while it trains;
//! - [`tensorboard`]: the metrics lines as TensorBoard event files in the run directory;
//! - [`plot`]: figures of run directories (learning curves, statistics, comparisons,
//!   aggregates, the best checkpoint's evaluation) as PNG and SVG;
//! - [`video`]: env frames as PNG images, text on frames, and videos (MP4 by ffmpeg,
//!   GIF in pure Rust).

pub use volley_common::env;

pub mod algo;
pub mod checkpoint;
pub mod config;
pub mod demos;
pub mod eval;
pub mod explain;
pub mod figures;
pub mod imitation;
pub mod memory;
pub mod mlflow;
pub mod normalize;
pub mod play;
pub mod plot;
pub mod replay;
pub mod rollout;
pub mod rundir;
pub mod runs;
pub mod server;
pub mod tensorboard;
pub mod tracking;
pub mod training;
pub mod validate;
pub mod video;
