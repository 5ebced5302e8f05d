//! Plots of runs, drawn by volley itself as PNG and SVG.
//!
//! - [`series`]: reading run directories (`config.toml`, `metrics.jsonl`, the best
//!   checkpoint's `eval.json`) into runs, series and groups of runs;
//! - [`stats`]: moving averages, interpolation onto a grid, mean bands, and the
//!   aggregates of Agarwal et al. 2021 ("Deep Reinforcement Learning at the Edge of
//!   the Statistical Precipice", the `rliable` library): interquartile mean and
//!   performance profiles with stratified bootstrap confidence intervals;
//! - [`charts`]: the figures: [`learning_curve`], [`losses`], [`comparison`],
//!   [`iqm_intervals`], [`performance_profile`] and [`best_eval`];
//! - [`explain`]: an explained decision, the env's frame beside each feature's
//!   importance;
//! - [`report`]: the sets of figures of a run (its `plots/` folder) and of a
//!   comparison, as `volley-runs` and the learner draw them;
//! - `draw`: the panels, legends and output files the figures share;
//! - `backend`: plotters' bitmap and SVG backends with text laid out by the font;
//! - [`font`]: the TrueType font the text is drawn with, found at run time.
//!
//! Every figure takes an output path: `curve.png` writes only the PNG, `curve.svg`
//! only the SVG, and any other path (`runs/demo/curve`) both `curve.png` and
//! `curve.svg` ([`output_paths`]). Each returns the paths it wrote.

mod backend;
pub mod charts;
mod draw;
pub mod explain;
pub mod font;
pub mod report;
pub mod series;
pub mod stats;

use std::path::PathBuf;

pub use charts::{
    best_eval, comparison, iqm_intervals, learning_curve, losses, performance_profile,
    score_groups, AggregateOptions, BestEvalOptions, CompareOptions, CurveOptions, LossOptions,
    Metric, ProfileOptions, ScoreGroup,
};
pub use draw::output_paths;
pub use report::{draw_comparison, draw_run, RunFigures, PLOTS_DIR};
pub use series::{group_runs, Axis, BestEval, Group, Row, Run, Series};
pub use stats::{Bootstrap, Interval, Profile, ScoreMatrix};

/// What can go wrong reading runs or drawing a figure.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// A file that cannot be read (missing, unreadable).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file whose content is not what volley writes.
    #[error("{}: {message}", path.display())]
    BadFile {
        /// The file, with `:line` for a line of `metrics.jsonl`.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Inputs a figure or statistic cannot use (no data, mismatched shapes).
    #[error("{0}")]
    BadInput(String),
    /// No usable font ([`font`]).
    #[error("{0}")]
    Font(String),
    /// The drawing or the writing of an output file failed.
    #[error("cannot draw {}: {message}", path.display())]
    Draw {
        /// The output file.
        path: PathBuf,
        /// The backend's error.
        message: String,
    },
}

/// The result of reading runs and drawing figures.
pub type PlotResult<T> = Result<T, PlotError>;
