//! volley-common: what the volley actor and learner share.
//!
//! - [`env`]: the environment layer: spaces, vector envs stepped on worker threads,
//!   Procgen (through procgen's C library), MuJoCo (Gymnasium v5 tasks), Platform
//!   (parameterised actions) and CartPole, and the registry of env ids.
//! - [`config`]: TOML configs with dotted command-line overrides.
//! - [`telemetry`]: metric names and the Prometheus exporter.
//! - [`algorithms`]: the one list of the algorithms volley trains;
//! - [`agent`]: acting, behind one trait, for actors, evaluation and play;
//! - [`nn`]: the networks of every algorithm, their weights as bytes, optimizers with
//!   saveable state.
//! - [`checkpoint`]: durable checkpoints in a run's `checkpoints/` folder: files with a
//!   checksummed manifest, fsync before rename, numeric names, an atomic `best`.
//! - [`crc32c`]: CRC-32C, for checkpoint manifests and TensorBoard event files.
//! - [`reward`]: reward shaping as the run's `[reward]` section says;
//! - [`signals`]: SIGINT/SIGTERM as a stop flag.
//! - [`deps`]: where the native dependencies installed by `deploy/setup.sh` live.

/// Writes a line to stderr, ignoring failure: a process must not die because the
/// reader of its stderr went away (`deploy/local.sh | tee log` and Ctrl-C), as
/// `eprintln!` would make it (it panics on a closed stderr).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

/// Like [`say!`] without the newline.
#[macro_export]
macro_rules! say_inline {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let mut e = ::std::io::stderr();
        let _ = ::std::write!(e, $($arg)*);
        let _ = e.flush();
    }};
}

pub mod agent;
pub mod algorithms;
pub mod checkpoint;
pub mod config;
pub mod crc32c;
pub mod dataset;
pub mod deps;
pub mod env;
pub mod nn;
pub mod reward;
pub mod signals;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
