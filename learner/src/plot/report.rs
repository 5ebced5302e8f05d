//! The sets of figures volley draws for people: those of one run (its `plots/`
//! folder, drawn by `volley-runs plot` and by the learner while it trains) and the
//! comparison of groups of runs (`volley-runs compare`, and a run's `tracking.compare`
//! drawn beside it while it trains).

use std::path::{Path, PathBuf};

use super::charts::{
    best_eval, comparison, iqm_intervals, learning_curve, losses, performance_profile,
    AggregateOptions, BestEvalOptions, CompareOptions, CurveOptions, LossOptions, Metric,
    ProfileOptions, ScoreGroup,
};
use super::series::{Axis, BestEval, Group, Run, BEST_EVAL_FILE};
use super::{PlotError, PlotResult};

/// The folder of a run's figures.
pub const PLOTS_DIR: &str = "plots";

/// What one run's figures are drawn with.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFigures {
    /// Moving-average window of the curves, in metrics lines.
    pub smooth: usize,
    /// The comparison drawn with the run (the run itself is the first group), if any.
    pub compare: Vec<Group>,
    /// What the comparison averages.
    pub metric: Metric,
}

impl Default for RunFigures {
    fn default() -> Self {
        RunFigures {
            smooth: CurveOptions::default().smooth,
            compare: Vec::new(),
            metric: Metric::Eval,
        }
    }
}

/// Draws the figures of the run in `dir` into `out` (created if missing), each as
/// PNG and SVG: `learning_curve`, `losses`, `best_eval` (once the best checkpoint's
/// `eval.json` has its episodes) and, with `opts.compare`, `compare` (the run beside
/// the groups it is compared with). Returns the files written; a figure that has no
/// data yet is left out, any other failure is an error.
pub fn draw_run(dir: &Path, out: &Path, opts: &RunFigures) -> PlotResult<Vec<PathBuf>> {
    let run = Run::read(dir)?;
    let mut written = Vec::new();
    let mut any = false;
    let mut keep = |r: PlotResult<Vec<PathBuf>>, written: &mut Vec<PathBuf>| match r {
        Ok(p) => {
            written.extend(p);
            any = true;
            Ok(())
        }
        Err(PlotError::BadInput(_)) => Ok(()),
        Err(e) => Err(e),
    };
    let curve = CurveOptions {
        smooth: opts.smooth,
        ..CurveOptions::default()
    };
    keep(
        learning_curve(&run, &out.join("learning_curve"), &curve),
        &mut written,
    )?;
    let loss = LossOptions {
        smooth: opts.smooth,
        ..LossOptions::default()
    };
    keep(losses(&run, &out.join("losses"), &loss), &mut written)?;
    if dir.join(BEST_EVAL_FILE).is_file() {
        let eval = BestEval::read(dir)?;
        keep(
            best_eval(
                &run,
                &eval,
                &out.join("best_eval"),
                &BestEvalOptions::default(),
            ),
            &mut written,
        )?;
    }
    if !opts.compare.is_empty() {
        let mut groups = vec![Group {
            label: run.name.clone(),
            runs: vec![run.clone()],
        }];
        groups.extend(opts.compare.iter().cloned());
        let c = CompareOptions {
            metric: opts.metric,
            ..CompareOptions::default()
        };
        keep(comparison(&groups, &out.join("compare"), &c), &mut written)?;
    }
    if !any {
        return Err(PlotError::BadInput(format!(
            "run {} has nothing to plot yet in {}",
            run.name,
            dir.join(super::series::METRICS_FILE).display()
        )));
    }
    Ok(written)
}

/// `path` with `suffix` added to its file name (`a/b` + `-iqm` is `a/b-iqm`).
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

/// Draws the comparison of `groups` at `out` (PNG and SVG, or the one `out`'s
/// extension names): the mean of each group with its confidence band; and where a
/// group has several runs with evaluations, the aggregates across runs of their
/// final evaluation returns: `<out>-iqm` (interquartile mean with stratified
/// bootstrap intervals) and `<out>-profile` (performance profile). Returns the files
/// written.
pub fn draw_comparison(
    groups: &[Group],
    out: &Path,
    metric: Metric,
    axis: Axis,
    smooth: usize,
    references: &[(String, f64)],
) -> PlotResult<Vec<PathBuf>> {
    let c = CompareOptions {
        metric,
        axis,
        smooth,
        references: references.to_vec(),
        ..CompareOptions::default()
    };
    let mut written = comparison(groups, out, &c)?;
    let scored: Vec<ScoreGroup> = groups
        .iter()
        .filter(|g| g.runs.iter().all(|r| r.final_eval_return().is_some()))
        .filter_map(|g| ScoreGroup::from_runs(g.label.clone(), &g.runs).ok())
        .collect();
    if scored.iter().any(|g| g.scores.runs() >= 2) {
        let (stem, ext) = match out.extension().and_then(|e| e.to_str()) {
            Some(e @ ("png" | "svg")) => (out.with_extension(""), format!(".{e}")),
            _ => (out.to_path_buf(), String::new()),
        };
        written.extend(iqm_intervals(
            &scored,
            &suffixed(&stem, &format!("-iqm{ext}")),
            &AggregateOptions::default(),
        )?);
        written.extend(performance_profile(
            &scored,
            &suffixed(&stem, &format!("-profile{ext}")),
            &ProfileOptions::default(),
        )?);
    }
    Ok(written)
}
