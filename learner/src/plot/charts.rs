//! The figures. Each takes its data, an output path ([`super::output_paths`]: a
//! `.png` or `.svg` path, or a stem for both) and options with named defaults, and
//! returns the files it wrote.
//!
//! - [`learning_curve`]: one run's training and evaluation returns against env steps
//!   and against wall time;
//! - [`losses`]: one small panel per update statistic of one run;
//! - [`comparison`]: groups of runs (seeds), mean and 95% band on a shared grid;
//! - [`iqm_intervals`], [`performance_profile`]: aggregates across runs and tasks
//!   with stratified bootstrap intervals ([`super::stats`]);
//! - [`best_eval`]: the episodes of the best checkpoint's evaluation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::style::RGBColor;

use super::draw::{color, render, Figure, Item, LegendEntry, Mark, Panel, Ticks};
use super::series::{Axis, BestEval, Group, Run, Series, EVAL_RETURN, TRAIN_RETURN};
use super::stats::{
    iqm_interval, linspace, mean_band, moving_average, score_profile, Bootstrap, ScoreMatrix,
};
use super::{PlotError, PlotResult};

/// The colour of training curves.
const TRAIN: usize = 0;
/// The colour of evaluation curves.
const EVAL: usize = 1;
/// The colour of the best checkpoint's episodes.
const EPISODES: usize = 0;
/// The colour of marked means.
const MEAN: usize = 3;
/// The colour of single episodes.
const DOT: RGBColor = RGBColor(30, 30, 30);

/// Options of [`learning_curve`].
#[derive(Debug, Clone, PartialEq)]
pub struct CurveOptions {
    /// The training return's moving average window in log lines (1: no smoothing;
    /// the raw line is drawn faint behind the smoothed one).
    pub smooth: usize,
    /// Pixels.
    pub size: (u32, u32),
}

impl CurveOptions {
    /// The default smoothing window.
    pub const DEFAULT_SMOOTH: usize = 10;
    /// The default size.
    pub const DEFAULT_SIZE: (u32, u32) = (1400, 540);
}

impl Default for CurveOptions {
    fn default() -> Self {
        CurveOptions {
            smooth: Self::DEFAULT_SMOOTH,
            size: Self::DEFAULT_SIZE,
        }
    }
}

/// The wall-time unit for a span of `seconds`: seconds in it, and its symbol.
fn time_unit(seconds: f64) -> (f64, &'static str) {
    if seconds < 180.0 {
        (1.0, "s")
    } else if seconds < 3.0 * 3600.0 {
        (60.0, "min")
    } else {
        (3600.0, "h")
    }
}

/// A raw line drawn faint under its moving average, or the line alone.
fn smoothed_lines(s: &Series, window: usize, c: usize) -> Vec<Item> {
    let mut items = Vec::new();
    if window > 1 {
        items.push(Item::Line {
            points: s.points(),
            color: color(c),
            width: 1,
            alpha: 0.3,
        });
    }
    let y = moving_average(&s.y, window);
    items.push(Item::Line {
        points: s.x.iter().copied().zip(y).collect(),
        color: color(c),
        width: 2,
        alpha: 1.0,
    });
    items
}

/// The legend of [`smoothed_lines`]: the faint raw line and the smoothed one.
fn smoothing_legend(window: usize, what: &str, c: usize) -> Vec<LegendEntry> {
    if window > 1 {
        vec![
            LegendEntry {
                label: format!("{what} (raw)"),
                color: color(c),
                mark: Mark::FaintLine,
            },
            LegendEntry {
                label: format!("{what}, moving average of {window} log lines"),
                color: color(c),
                mark: Mark::Line,
            },
        ]
    } else {
        vec![LegendEntry {
            label: what.to_owned(),
            color: color(c),
            mark: Mark::Line,
        }]
    }
}

/// The subtitle of one run's figures: seed, steps and wall time.
fn run_subtitle(run: &Run) -> String {
    let mut parts = Vec::new();
    if let Some(s) = run.seed {
        parts.push(format!("seed {s}"));
    }
    match run.resumes() {
        0 => {}
        1 => parts.push("resumed once".into()),
        n => parts.push(format!("resumed {n} times")),
    }
    if let Some(last) = run.rows.last() {
        let (div, unit) = time_unit(last.time);
        parts.push(format!(
            "{} {} in {:.1} {unit}",
            super::draw::tick_label(last.steps, Ticks::Count),
            run.progress(),
            last.time / div
        ));
    }
    parts.join(", ")
}

/// One run's learning curve: the training episode return (mean of the last
/// `run.return_window` episodes, smoothed over `opts.smooth` log lines, the raw line
/// faint behind it) and the evaluation return (markers and line), against env steps
/// (left) and wall time (right). Title: run name, algorithm, env.
pub fn learning_curve(run: &Run, out: &Path, opts: &CurveOptions) -> PlotResult<Vec<PathBuf>> {
    let train_steps = run.series(TRAIN_RETURN, Axis::Steps);
    let eval_steps = run.series(EVAL_RETURN, Axis::Steps);
    if train_steps.is_empty() && eval_steps.is_empty() {
        return Err(PlotError::BadInput(format!(
            "run {} has no episode or evaluation returns in {} yet",
            run.name,
            run.dir.join(super::series::METRICS_FILE).display()
        )));
    }
    let last_time = run.rows.last().map_or(0.0, |r| r.time);
    let (div, unit) = time_unit(last_time);
    let time_desc = format!("wall time ({unit})");
    let in_unit = |mut s: Series| {
        s.x.iter_mut().for_each(|x| *x /= div);
        s
    };
    // Against wall time, each learner process of a resumed run is its own piece:
    // nothing was logged between them.
    let train_time: Vec<Series> = run
        .series_by_segment(TRAIN_RETURN, Axis::Time)
        .into_iter()
        .map(in_unit)
        .collect();
    let eval_time: Vec<Series> = run
        .series_by_segment(EVAL_RETURN, Axis::Time)
        .into_iter()
        .map(in_unit)
        .collect();
    let panel = |x_desc: &str, ticks: Ticks, train: &[Series], eval: &[Series], title: &str| {
        let mut p = Panel::new(x_desc, "episode return");
        p.title = Some(title.to_owned());
        p.x_ticks = ticks;
        p.x_from_zero = true;
        for t in train.iter().filter(|t| !t.is_empty()) {
            p.items.extend(smoothed_lines(t, opts.smooth, TRAIN));
        }
        for e in eval.iter().filter(|e| !e.is_empty()) {
            p.items.push(Item::Line {
                points: e.points(),
                color: color(EVAL),
                width: 2,
                alpha: 1.0,
            });
            p.items.push(Item::Markers {
                points: e.points(),
                color: color(EVAL),
                radius: 4,
            });
        }
        p
    };
    let mut legend = Vec::new();
    if !train_steps.is_empty() {
        legend.extend(smoothing_legend(
            opts.smooth,
            "training episode return",
            TRAIN,
        ));
    }
    if !eval_steps.is_empty() {
        legend.push(LegendEntry {
            label: "evaluation return (greedy)".into(),
            color: color(EVAL),
            mark: Mark::LineMarker,
        });
    }
    let fig = Figure {
        title: run.title(),
        subtitle: Some(run_subtitle(run)),
        legend,
        panels: vec![
            panel(
                run.progress(),
                Ticks::Count,
                std::slice::from_ref(&train_steps),
                std::slice::from_ref(&eval_steps),
                &format!("against {}", run.progress()),
            ),
            panel(
                &time_desc,
                Ticks::Number,
                &train_time,
                &eval_time,
                "against wall time",
            ),
        ],
        columns: 2,
        size: opts.size,
    };
    render(&fig, out)
}

/// Options of [`losses`].
#[derive(Debug, Clone, PartialEq)]
pub struct LossOptions {
    /// The statistics to draw (default: every update statistic the run logged,
    /// [`Run::statistic_keys`]).
    pub keys: Option<Vec<String>>,
    /// Moving average window in log lines (1: raw lines only).
    pub smooth: usize,
    /// Panels per row.
    pub columns: usize,
    /// Pixels of one panel.
    pub panel_size: (u32, u32),
}

/// Pixels above the panels of [`losses`]: title, subtitle, legend.
const LOSS_HEADER: u32 = 100;

impl LossOptions {
    /// The default smoothing window.
    pub const DEFAULT_SMOOTH: usize = 10;
    /// The default panels per row.
    pub const DEFAULT_COLUMNS: usize = 3;
    /// The default panel size.
    pub const DEFAULT_PANEL_SIZE: (u32, u32) = (460, 300);
}

impl Default for LossOptions {
    fn default() -> Self {
        LossOptions {
            keys: None,
            smooth: Self::DEFAULT_SMOOTH,
            columns: Self::DEFAULT_COLUMNS,
            panel_size: Self::DEFAULT_PANEL_SIZE,
        }
    }
}

/// One run's update statistics, one small panel each against env steps. By default
/// every numeric key of the log other than the training loop's bookkeeping
/// ([`super::series::BOOKKEEPING_KEYS`]: counters, throughput, episode and
/// evaluation results) and other than constants ([`Run::statistic_keys`]), so each
/// algorithm's statistics (losses, entropy, KL, Q values, temperature, learning
/// rate, ...) appear without a list to keep up.
pub fn losses(run: &Run, out: &Path, opts: &LossOptions) -> PlotResult<Vec<PathBuf>> {
    let keys = opts.keys.clone().unwrap_or_else(|| run.statistic_keys());
    let mut panels = Vec::new();
    for key in &keys {
        let s = run.series(key, Axis::Steps);
        if s.is_empty() {
            return Err(PlotError::BadInput(format!(
                "run {} has no `{key}` in {}",
                run.name,
                run.dir.join(super::series::METRICS_FILE).display()
            )));
        }
        let mut p = Panel::new(run.progress(), "");
        p.title = Some(key.clone());
        p.x_ticks = Ticks::Count;
        p.x_from_zero = true;
        p.items = smoothed_lines(&s, opts.smooth, TRAIN);
        panels.push(p);
    }
    if panels.is_empty() {
        return Err(PlotError::BadInput(format!(
            "run {} logged no update statistics in {}",
            run.name,
            run.dir.join(super::series::METRICS_FILE).display()
        )));
    }
    let columns = opts.columns.clamp(1, panels.len());
    let rows = panels.len().div_ceil(columns) as u32;
    let (pw, ph) = opts.panel_size;
    let fig = Figure {
        title: format!("{}, update statistics", run.title()),
        subtitle: Some(run_subtitle(run)),
        legend: smoothing_legend(opts.smooth, "statistic", TRAIN),
        panels,
        columns,
        size: (pw * columns as u32, ph * rows + LOSS_HEADER),
    };
    render(&fig, out)
}

/// What a comparison averages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// The evaluation return (`eval_return_mean`).
    Eval,
    /// The training episode return (`episode_return_mean`).
    Train,
}

impl Metric {
    /// Its key in `metrics.jsonl`.
    pub fn key(self) -> &'static str {
        match self {
            Metric::Eval => EVAL_RETURN,
            Metric::Train => TRAIN_RETURN,
        }
    }

    /// Its axis description.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Eval => "evaluation return",
            Metric::Train => "training episode return",
        }
    }
}

/// Options of [`comparison`].
#[derive(Debug, Clone, PartialEq)]
pub struct CompareOptions {
    /// What to average.
    pub metric: Metric,
    /// What against: env steps, or expert labels for imitation runs.
    pub axis: Axis,
    /// Grid points over each group's shared range of env steps.
    pub points: usize,
    /// Moving average window applied to each run before interpolation (1: none).
    pub smooth: usize,
    /// Published or other reference values, `(label, value)`: dashed horizontal lines.
    pub references: Vec<(String, f64)>,
    /// Pixels.
    pub size: (u32, u32),
}

impl CompareOptions {
    /// The default grid size.
    pub const DEFAULT_POINTS: usize = 200;
    /// The default size.
    pub const DEFAULT_SIZE: (u32, u32) = (1000, 620);
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            metric: Metric::Eval,
            axis: Axis::Steps,
            points: Self::DEFAULT_POINTS,
            smooth: 1,
            references: Vec::new(),
            size: Self::DEFAULT_SIZE,
        }
    }
}

/// Groups of runs compared: for each group, the mean over its runs of the metric,
/// each run interpolated linearly onto a grid of `opts.axis` (env steps, or expert
/// labels) over the range every run of the group covers, with a 95% band of mean +-
/// 1.96 standard errors over runs ([`super::stats::mean_band`]); one colour per group,
/// a legend with the number of runs.
///
/// Against expert labels, a run whose labels never change (behaviour cloning: one
/// dataset) is one point, its final evaluation at its labels, and a group of such runs
/// is the line through its runs' points: the return as a function of the labels given.
pub fn comparison(groups: &[Group], out: &Path, opts: &CompareOptions) -> PlotResult<Vec<PathBuf>> {
    if groups.is_empty() {
        return Err(PlotError::BadInput(
            "a comparison needs at least one group of runs".into(),
        ));
    }
    let what = opts.axis.label();
    let mut panel = Panel::new(what, opts.metric.label());
    panel.x_ticks = Ticks::Count;
    panel.x_from_zero = true;
    let mut legend = Vec::new();
    let mut lines = Vec::new();
    let mut fixed_sets = false;
    for (i, g) in groups.iter().enumerate() {
        let mut curves = Vec::new();
        for run in &g.runs {
            let mut s = run.series(opts.metric.key(), opts.axis);
            if s.is_empty() {
                let why = if opts.axis == Axis::Labels
                    && !run.series(opts.metric.key(), Axis::Steps).is_empty()
                {
                    format!(
                        "no `{}` on its lines (not an imitation run)",
                        super::series::EXPERT_LABELS
                    )
                } else {
                    format!("no `{}`", opts.metric.key())
                };
                return Err(PlotError::BadInput(format!(
                    "run {} of {} has {why} in {}",
                    run.name,
                    g.label,
                    run.dir.join(super::series::METRICS_FILE).display()
                )));
            }
            s.y = moving_average(&s.y, opts.smooth);
            curves.push(s);
        }
        let fixed = |s: &Series| s.x.first() == s.x.last();
        if opts.axis == Axis::Labels && curves.iter().all(fixed) {
            // One point per run: its final evaluation at its labels.
            fixed_sets = true;
            let mut points: Vec<(f64, f64)> = curves
                .iter()
                .filter_map(|s| Some((*s.x.last()?, *s.y.last()?)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            lines.push(Item::Line {
                points: points.clone(),
                color: color(i),
                width: 2,
                alpha: 1.0,
            });
            lines.push(Item::Markers {
                points,
                color: color(i),
                radius: 4,
            });
            legend.push(LegendEntry {
                label: format!(
                    "{} ({} runs, final evaluation of each)",
                    g.label,
                    curves.len()
                ),
                color: color(i),
                mark: Mark::LineMarker,
            });
            continue;
        }
        let band = mean_band(&curves, opts.points).ok_or_else(|| {
            PlotError::BadInput(format!("the runs of {} share no range of {what}", g.label))
        })?;
        panel.items.push(Item::Band {
            x: band.x.clone(),
            lo: band.lo.clone(),
            hi: band.hi.clone(),
            color: color(i),
            alpha: 0.2,
        });
        lines.push(Item::Line {
            points: band
                .x
                .iter()
                .copied()
                .zip(band.mean.iter().copied())
                .collect(),
            color: color(i),
            width: 2,
            alpha: 1.0,
        });
        let runs = if band.runs == 1 {
            "1 run".to_owned()
        } else {
            format!("{} runs", band.runs)
        };
        legend.push(LegendEntry {
            label: format!("{} ({runs})", g.label),
            color: color(i),
            mark: Mark::Line,
        });
    }
    // Lines over every band, and the references over all.
    panel.items.extend(lines);
    for (k, (label, value)) in opts.references.iter().enumerate() {
        let c = color(groups.len() + k);
        panel.items.push(Item::HLine {
            y: *value,
            color: c,
        });
        legend.push(LegendEntry {
            label: format!("{label}: {value}"),
            color: c,
            mark: Mark::Dashed,
        });
    }
    let smoothing = if opts.smooth > 1 {
        format!(", each run a moving average of {} log lines", opts.smooth)
    } else {
        String::new()
    };
    let fig = Figure {
        title: format!("{}: mean over runs with 95% confidence band", opts.metric.label()),
        subtitle: Some(format!(
            "band: mean \u{b1} 1.96 standard errors over runs; runs interpolated onto a shared grid of {what}{smoothing}{}",
            if fixed_sets { "; runs on one fixed dataset: a point each" } else { "" }
        )),
        legend,
        panels: vec![panel],
        columns: 1,
        size: opts.size,
    };
    render(&fig, out)
}

/// One method's scores for the aggregates: `runs` x `tasks`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreGroup {
    /// The legend's (or row's) text.
    pub label: String,
    /// The scores.
    pub scores: ScoreMatrix,
}

impl ScoreGroup {
    /// The final evaluation mean of each run ([`Run::final_eval_return`]), tasks
    /// being the env ids (in name order) and each task's runs ordered by seed. Every
    /// task must have as many runs.
    pub fn from_runs(label: impl Into<String>, runs: &[Run]) -> PlotResult<ScoreGroup> {
        let label = label.into();
        let mut tasks: BTreeMap<String, Vec<(Option<u64>, f64)>> = BTreeMap::new();
        for run in runs {
            let score = run.final_eval_return().ok_or_else(|| {
                PlotError::BadInput(format!(
                    "run {} has no evaluation in {}",
                    run.name,
                    run.dir.join(super::series::METRICS_FILE).display()
                ))
            })?;
            let task = run.env_id.clone().unwrap_or_else(|| "unknown env".into());
            tasks.entry(task).or_default().push((run.seed, score));
        }
        let counts: Vec<(String, usize)> =
            tasks.iter().map(|(t, r)| (t.clone(), r.len())).collect();
        let n = counts.first().map_or(0, |c| c.1);
        if counts.iter().any(|c| c.1 != n) {
            let list: Vec<String> = counts.iter().map(|(t, c)| format!("{t}: {c}")).collect();
            return Err(PlotError::BadInput(format!(
                "{label}: every task needs as many runs, got {}",
                list.join(", ")
            )));
        }
        let mut columns: Vec<Vec<f64>> = tasks
            .into_values()
            .map(|mut r| {
                r.sort_by_key(|(seed, _)| *seed);
                r.into_iter().map(|(_, s)| s).collect()
            })
            .collect();
        let rows = (0..n)
            .map(|i| columns.iter_mut().map(|c| c[i]).collect())
            .collect();
        Ok(ScoreGroup {
            label,
            scores: ScoreMatrix::new(rows)?,
        })
    }
}

/// Groups runs by algorithm (the label; the run's name when unknown) into score
/// matrices of their final evaluations ([`ScoreGroup::from_runs`]).
pub fn score_groups(runs: &[Run]) -> PlotResult<Vec<ScoreGroup>> {
    let mut by: Vec<(String, Vec<Run>)> = Vec::new();
    for run in runs {
        let label = run.algorithm.clone().unwrap_or_else(|| run.name.clone());
        match by.iter_mut().find(|(l, _)| *l == label) {
            Some((_, v)) => v.push(run.clone()),
            None => by.push((label, vec![run.clone()])),
        }
    }
    by.into_iter()
        .map(|(label, runs)| ScoreGroup::from_runs(label, &runs))
        .collect()
}

/// Options of [`iqm_intervals`].
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateOptions {
    /// The stratified bootstrap.
    pub bootstrap: Bootstrap,
    /// What the scores are, for the axis ("final evaluation return", "normalized
    /// score").
    pub score_label: String,
    /// Pixels (default: taller with more groups).
    pub size: Option<(u32, u32)>,
}

impl Default for AggregateOptions {
    fn default() -> Self {
        AggregateOptions {
            bootstrap: Bootstrap::default(),
            score_label: "final evaluation return".into(),
            size: None,
        }
    }
}

/// The scores' summary in the subtitles of the aggregates.
fn aggregate_subtitle(groups: &[ScoreGroup], b: &Bootstrap) -> String {
    let tasks = groups.iter().map(|g| g.scores.tasks()).max().unwrap_or(0);
    let runs = groups.iter().map(|g| g.scores.runs()).max().unwrap_or(0);
    format!(
        "{:.0}% stratified bootstrap confidence intervals ({} resamples of runs within each task, seed {}); up to {}",
        b.confidence * 100.0,
        b.reps,
        b.seed,
        runs_by_tasks(runs, tasks)
    )
}

/// "3 runs x 1 task", in words that agree with the numbers.
fn runs_by_tasks(runs: usize, tasks: usize) -> String {
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    format!("{} x {}", plural(runs, "run"), plural(tasks, "task"))
}

/// The interquartile mean of each group's scores (every run of every task) with its
/// stratified bootstrap interval ([`super::stats::iqm_interval`]), one row per
/// group: a bar over the interval and a tick at the IQM.
pub fn iqm_intervals(
    groups: &[ScoreGroup],
    out: &Path,
    opts: &AggregateOptions,
) -> PlotResult<Vec<PathBuf>> {
    if groups.is_empty() {
        return Err(PlotError::BadInput(
            "an IQM plot needs at least one group".into(),
        ));
    }
    let mut panel = Panel::new(format!("IQM of {}", opts.score_label), "");
    panel.categories = Some(groups.iter().map(|g| g.label.clone()).collect());
    panel.x_pad = 0.08;
    for (i, g) in groups.iter().enumerate() {
        let iv = iqm_interval(&g.scores, &opts.bootstrap);
        panel.items.push(Item::Interval {
            row: i,
            lo: iv.lo,
            hi: iv.hi,
            point: iv.point,
            color: color(i),
        });
    }
    let size = opts.size.unwrap_or((900, 190 + 56 * groups.len() as u32));
    let fig = Figure {
        title: "interquartile mean (IQM)".into(),
        subtitle: Some(aggregate_subtitle(groups, &opts.bootstrap)),
        legend: Vec::new(),
        panels: vec![panel],
        columns: 1,
        size,
    };
    render(&fig, out)
}

/// Options of [`performance_profile`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileOptions {
    /// The stratified bootstrap.
    pub bootstrap: Bootstrap,
    /// The thresholds (default: `tau_points` from the lowest to the highest score).
    pub tau: Option<Vec<f64>>,
    /// Thresholds of the default range.
    pub tau_points: usize,
    /// What the scores are, for the axis.
    pub score_label: String,
    /// Pixels.
    pub size: (u32, u32),
}

impl ProfileOptions {
    /// The default number of thresholds.
    pub const DEFAULT_TAU_POINTS: usize = 101;
    /// The default size.
    pub const DEFAULT_SIZE: (u32, u32) = (1000, 620);
}

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions {
            bootstrap: Bootstrap::default(),
            tau: None,
            tau_points: Self::DEFAULT_TAU_POINTS,
            score_label: "final evaluation return".into(),
            size: Self::DEFAULT_SIZE,
        }
    }
}

/// The performance profile of each group: the fraction of its runs (over every
/// task) whose score exceeds tau, over a range of tau, with stratified bootstrap
/// bands ([`super::stats::score_profile`]).
pub fn performance_profile(
    groups: &[ScoreGroup],
    out: &Path,
    opts: &ProfileOptions,
) -> PlotResult<Vec<PathBuf>> {
    if groups.is_empty() {
        return Err(PlotError::BadInput(
            "a performance profile needs at least one group".into(),
        ));
    }
    let tau = match &opts.tau {
        Some(t) if !t.is_empty() => t.clone(),
        Some(_) => return Err(PlotError::BadInput("no thresholds for the profile".into())),
        None => {
            let all = groups
                .iter()
                .flat_map(|g| g.scores.values().iter().copied());
            let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
            let pad = if hi > lo { 0.02 * (hi - lo) } else { 1.0 };
            linspace(lo - pad, hi + pad, opts.tau_points.max(2))
        }
    };
    let mut panel = Panel::new(
        format!("threshold \u{3c4} ({})", opts.score_label),
        "fraction of runs with score > \u{3c4}",
    );
    panel.y_range = Some((-0.02, 1.02));
    let mut lines = Vec::new();
    let mut legend = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let p = score_profile(&g.scores, &tau, &opts.bootstrap);
        panel.items.push(Item::Band {
            x: p.tau.clone(),
            lo: p.lo.clone(),
            hi: p.hi.clone(),
            color: color(i),
            alpha: 0.2,
        });
        lines.push(Item::Line {
            points: p
                .tau
                .iter()
                .copied()
                .zip(p.fraction.iter().copied())
                .collect(),
            color: color(i),
            width: 2,
            alpha: 1.0,
        });
        legend.push(LegendEntry {
            label: format!(
                "{} ({})",
                g.label,
                runs_by_tasks(g.scores.runs(), g.scores.tasks())
            ),
            color: color(i),
            mark: Mark::Line,
        });
    }
    panel.items.extend(lines);
    let fig = Figure {
        title: "performance profile".into(),
        subtitle: Some(aggregate_subtitle(groups, &opts.bootstrap)),
        legend,
        panels: vec![panel],
        columns: 1,
        size: opts.size,
    };
    render(&fig, out)
}

/// Options of [`best_eval`].
#[derive(Debug, Clone, PartialEq)]
pub struct BestEvalOptions {
    /// Histogram bins (default: about the square root of the episodes, 5 to 40).
    pub bins: Option<usize>,
    /// Pixels.
    pub size: (u32, u32),
}

impl BestEvalOptions {
    /// The default size.
    pub const DEFAULT_SIZE: (u32, u32) = (1000, 560);
}

impl Default for BestEvalOptions {
    fn default() -> Self {
        BestEvalOptions {
            bins: None,
            size: Self::DEFAULT_SIZE,
        }
    }
}

/// A fixed spread in `[0, 1)` for the `i`-th dot of a strip (the golden ratio's
/// sequence: neighbours land far apart).
fn spread(i: usize) -> f64 {
    (i as f64 * 0.618_033_988_749_895).fract()
}

/// Histogram bars `(x0, x1, count)` of `values` over `bins` equal bins; a single
/// value gets one bar around it.
fn histogram(values: &[f64], bins: usize) -> Vec<(f64, f64, f64)> {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if hi <= lo {
        let d = (lo.abs() * 0.004).max(0.5);
        return vec![(lo - d, lo + d, values.len() as f64)];
    }
    let bins = bins.max(1);
    let w = (hi - lo) / bins as f64;
    let mut counts = vec![0.0; bins];
    for &v in values {
        let i = (((v - lo) / w).floor() as usize).min(bins - 1);
        counts[i] += 1.0;
    }
    counts
        .into_iter()
        .enumerate()
        .filter(|(_, c)| *c > 0.0)
        .map(|(i, c)| (lo + i as f64 * w, lo + (i + 1) as f64 * w, c))
        .collect()
}

/// The best checkpoint's evaluation: a histogram of its episodes' returns, each
/// episode a dot along the bottom, the mean a dashed line; titled with the weights
/// version and env steps.
pub fn best_eval(
    run: &Run,
    eval: &BestEval,
    out: &Path,
    opts: &BestEvalOptions,
) -> PlotResult<Vec<PathBuf>> {
    let returns = &eval.eval_returns;
    if returns.is_empty() {
        return Err(PlotError::BadInput(format!(
            "{} has no eval_returns (written by a volley that did not keep each episode)",
            run.dir.join(super::series::BEST_EVAL_FILE).display()
        )));
    }
    let n = returns.len();
    let bins = opts
        .bins
        .unwrap_or_else(|| ((n as f64).sqrt().ceil() as usize).clamp(5, 40));
    let bars = histogram(returns, bins);
    let top = bars.iter().map(|b| b.2).fold(0.0, f64::max);
    let mean = returns.iter().sum::<f64>() / n as f64;
    let mut panel = Panel::new("episode return", "episodes");
    panel.y_ticks = Ticks::Integer;
    // Below the bars, a strip with one dot per episode, spread over its height so
    // that equal returns stay countable.
    let strip = 0.12 * top.max(1.0);
    panel.y_range = Some((-strip, (top * 1.1).max(top + 0.5)));
    if returns.iter().all(|&r| r == returns[0]) {
        // Every episode returned the same: a narrow bar in a readable range.
        let d = (mean.abs() * 0.05).max(5.0);
        panel.x_range = Some((mean - d, mean + d));
    }
    panel.items.push(Item::Bars {
        bars,
        color: color(EPISODES),
    });
    panel.items.push(Item::VLine {
        x: mean,
        color: color(MEAN),
    });
    panel.items.push(Item::Markers {
        points: returns
            .iter()
            .enumerate()
            .map(|(i, &r)| (r, -strip * (0.2 + 0.6 * spread(i))))
            .collect(),
        color: DOT,
        radius: 3,
    });
    let episodes = if n == 1 {
        "1 episode".to_owned()
    } else {
        format!("{n} episodes")
    };
    let fig = Figure {
        title: format!(
            "{}, best checkpoint (weights version {}, {} env steps)",
            run.title(),
            eval.weights_version,
            super::draw::tick_label(eval.steps as f64, Ticks::Count)
        ),
        subtitle: Some(format!(
            "greedy evaluation, {episodes}: mean return {}{}",
            super::draw::tick_label(mean, Ticks::Number),
            eval.eval_length_mean
                .map(|l| format!(
                    ", mean length {}",
                    super::draw::tick_label(l, Ticks::Number)
                ))
                .unwrap_or_default()
        )),
        legend: vec![
            LegendEntry {
                label: "episodes per return bin".into(),
                color: color(EPISODES),
                mark: Mark::Box,
            },
            LegendEntry {
                label: "one episode".into(),
                color: DOT,
                mark: Mark::Dot,
            },
            LegendEntry {
                label: format!("mean {}", super::draw::tick_label(mean, Ticks::Number)),
                color: color(MEAN),
                mark: Mark::Dashed,
            },
        ],
        panels: vec![panel],
        columns: 1,
        size: opts.size,
    };
    render(&fig, out)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    use volley_common::testing::TempDir;

    use super::*;
    use crate::plot::series::{BEST_EVAL_FILE, CONFIG_FILE, METRICS_FILE};

    /// Where a test's figures go: `VOLLEY_PLOT_PREVIEW` when set (to look at them),
    /// else a folder of the temp dir.
    fn out_dir(test: &str) -> TempDir {
        match std::env::var_os("VOLLEY_PLOT_PREVIEW") {
            Some(p) => TempDir::kept(PathBuf::from(p)),
            None => TempDir::named(&format!("plot-{test}")),
        }
    }

    /// A run directory with a noisy rising learning curve, resumed once: PPO-like
    /// statistics every line, an evaluation every 10 lines, a best checkpoint.
    fn fixture_run(parent: &Path, name: &str, algo: &str, seed: u64, speed: f64) -> Run {
        let dir = parent.join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("checkpoints/best")).unwrap();
        fs::write(
            dir.join(CONFIG_FILE),
            format!("algorithm = \"{algo}\"\n[env]\nid = \"CartPole-v1\"\n[run]\nseed = {seed}\n"),
        )
        .unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut text = String::new();
        let mut time = 0.0;
        let mut best = (f64::NEG_INFINITY, 0u64, 0u64);
        for i in 1..=150u64 {
            // A resume at line 100: its clock starts again; it trains from the
            // checkpoint at line 95 again.
            let (k, t) = if i <= 100 {
                (i, i as f64 * 0.9)
            } else {
                (i - 5, (i - 100) as f64 * 0.9)
            };
            time = t;
            let steps = k * 1024;
            let level =
                480.0 / (1.0 + (-(steps as f64 - 50_000.0 / speed) / 12_000.0).exp()) + 15.0;
            let ret = (level + rng.random_range(-40.0..40.0)).clamp(8.0, 500.0);
            let mut line = serde_json::json!({
                "update": k, "steps": steps, "time": time, "fps": 1100.0,
                "episode_return_mean": if k < 3 { None } else { Some(ret) },
                "episode_length_mean": ret, "episodes": k * 4, "weights_version": k,
                "eval_return_mean": null, "eval_length_mean": null, "eval_weights_version": null,
                "policy_loss": -0.01 + rng.random_range(-0.01..0.01),
                "value_loss": 40.0 * (-(k as f64) / 40.0).exp() + rng.random_range(0.0..4.0),
                "entropy": 0.69 - 0.2 * (k as f64 / 150.0) + rng.random_range(-0.01..0.01),
                "approx_kl": rng.random_range(0.0..0.02),
                "lr": 2.5e-4 * (1.0 - k as f64 / 1000.0),
            });
            if k % 10 == 0 {
                let eval = (level + rng.random_range(-15.0..15.0)).clamp(8.0, 500.0);
                line["eval_return_mean"] = eval.into();
                line["eval_weights_version"] = k.into();
                if eval > best.0 {
                    best = (eval, k, steps);
                }
            }
            text += &line.to_string();
            text += "\n";
        }
        assert!(time > 0.0);
        fs::write(dir.join(METRICS_FILE), text).unwrap();
        let returns: Vec<f64> = (0..20)
            .map(|_| (best.0 + rng.random_range(-30.0..30.0)).min(500.0))
            .collect();
        let eval = serde_json::json!({
            "weights_version": best.1, "steps": best.2, "eval_return_mean": best.0,
            "eval_length_mean": best.0, "eval_episodes": returns.len(),
            "eval_returns": returns, "eval_lengths": vec![best.0 as u32; 20],
        });
        fs::write(dir.join(BEST_EVAL_FILE), eval.to_string()).unwrap();
        Run::read(&dir).unwrap()
    }

    /// Checks a PNG's signature and its header's size, and that an SVG holds `text`.
    fn check_outputs(paths: &[PathBuf], size: Option<(u32, u32)>, text: &str) {
        assert_eq!(paths.len(), 2, "{paths:?}");
        let png = fs::read(&paths[0]).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{}", paths[0].display());
        assert_eq!(&png[12..16], b"IHDR");
        let w = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
        let h = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
        if let Some(size) = size {
            assert_eq!((w, h), size);
        }
        assert!(w > 100 && h > 100);
        // Far more than a blank image would compress to.
        assert!(png.len() > 8_000, "{} bytes", png.len());
        let svg = fs::read_to_string(&paths[1]).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60.min(svg.len())]);
        assert!(svg.contains(text), "{} lacks {text:?}", paths[1].display());
    }

    #[test]
    fn learning_curve_writes_png_and_svg() {
        let dir = out_dir("curve");
        let run = fixture_run(&dir.join("runs"), "ppo-demo", "ppo", 1, 1.0);
        let opts = CurveOptions::default();
        let paths = learning_curve(&run, &dir.join("learning_curve"), &opts).unwrap();
        assert_eq!(paths[0], dir.join("learning_curve.png"));
        check_outputs(&paths, Some(opts.size), "ppo-demo: ppo on CartPole-v1");
        // The extension picks one file.
        let one = learning_curve(&run, &dir.join("only.svg"), &opts).unwrap();
        assert_eq!(one, vec![dir.join("only.svg")]);
        assert!(!dir.join("only.png").exists());
    }

    #[test]
    fn losses_write_one_panel_per_statistic() {
        let dir = out_dir("losses");
        let run = fixture_run(&dir.join("runs"), "ppo-losses", "ppo", 2, 1.0);
        assert_eq!(
            run.statistic_keys(),
            vec!["approx_kl", "entropy", "lr", "policy_loss", "value_loss"]
        );
        let paths = losses(&run, &dir.join("losses"), &LossOptions::default()).unwrap();
        check_outputs(&paths, Some((3 * 460, 2 * 300 + LOSS_HEADER)), "value_loss");
        let svg = fs::read_to_string(&paths[1]).unwrap();
        assert!(svg.contains("approx_kl") && svg.contains("update statistics"));
        let bad = LossOptions {
            keys: Some(vec!["nope".into()]),
            ..LossOptions::default()
        };
        let err = losses(&run, &dir.join("x"), &bad).unwrap_err();
        assert!(err.to_string().contains("no `nope`"), "{err}");
    }

    #[test]
    fn comparison_of_seed_groups() {
        let dir = out_dir("compare");
        let parent = dir.join("runs");
        let runs = vec![
            fixture_run(&parent, "ppo-1", "ppo", 1, 1.0),
            fixture_run(&parent, "ppo-2", "ppo", 2, 1.0),
            fixture_run(&parent, "ppo-3", "ppo", 3, 1.0),
            fixture_run(&parent, "a2c-1", "a2c", 4, 0.6),
            fixture_run(&parent, "a2c-2", "a2c", 5, 0.6),
            fixture_run(&parent, "a2c-3", "a2c", 6, 0.6),
        ];
        let groups = crate::plot::group_runs(runs);
        assert_eq!(groups.len(), 2);
        let opts = CompareOptions::default();
        let paths = comparison(&groups, &dir.join("compare_eval"), &opts).unwrap();
        check_outputs(&paths, Some(opts.size), "ppo CartPole-v1 (3 runs)");
        let train = CompareOptions {
            metric: Metric::Train,
            smooth: 5,
            ..opts
        };
        let paths = comparison(&groups, &dir.join("compare_train"), &train).unwrap();
        check_outputs(&paths, None, "training episode return");
    }

    /// A metrics line of an imitation run: labels, weights version, and an
    /// evaluation's return and the version it measured.
    type LabelLine = (u64, u64, Option<(f64, u64)>);

    /// An imitation run of the algorithm its name begins with.
    fn imitation_run(parent: &Path, name: &str, lines: &[LabelLine]) -> Run {
        let dir = parent.join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let algo = name.split('-').next().unwrap();
        fs::write(
            dir.join(CONFIG_FILE),
            format!("algorithm = \"{algo}\"\n[env]\nid = \"Hopper-v5\"\n"),
        )
        .unwrap();
        let text: String = lines
            .iter()
            .enumerate()
            .map(|(i, &(labels, version, eval))| {
                let mut l = serde_json::json!({"update": i, "steps": labels, "time": i as f64,
                    "weights_version": version, "expert_labels": labels});
                if let Some((ret, of)) = eval {
                    l["eval_return_mean"] = ret.into();
                    l["eval_weights_version"] = of.into();
                }
                l.to_string() + "\n"
            })
            .collect();
        fs::write(dir.join(METRICS_FILE), text).unwrap();
        Run::read(&dir).unwrap()
    }

    #[test]
    fn comparison_against_expert_labels() {
        let dir = out_dir("compare_labels");
        let parent = dir.join("runs");
        // DAgger: each iteration's evaluation is logged a line after the version it
        // measured, at more labels.
        let dagger = imitation_run(
            &parent,
            "dagger-1",
            &[
                (1000, 1, None),
                (2000, 2, Some((900.0, 1))),
                (3000, 3, Some((1500.0, 2))),
            ],
        );
        let evals = dagger.series(EVAL_RETURN, Axis::Labels);
        assert_eq!(evals.points(), vec![(1000.0, 900.0), (2000.0, 1500.0)]);
        // Cloning: one dataset per run, a point each.
        let bc: Vec<Run> = [(1000, 700.0), (5000, 1800.0)]
            .iter()
            .map(|&(n, ret)| {
                imitation_run(
                    &parent,
                    &format!("bc-{n}"),
                    &[
                        (n, 1, None),
                        (n, 2, Some((ret - 100.0, 1))),
                        (n, 3, Some((ret, 2))),
                    ],
                )
            })
            .collect();
        let groups = vec![
            Group {
                label: "dagger".into(),
                runs: vec![dagger],
            },
            Group {
                label: "bc".into(),
                runs: bc,
            },
        ];
        let opts = CompareOptions {
            axis: Axis::Labels,
            references: vec![("expert".into(), 2665.0)],
            ..CompareOptions::default()
        };
        let paths = comparison(&groups, &dir.join("labels"), &opts).unwrap();
        check_outputs(&paths, Some(opts.size), "expert labels");
        check_outputs(&paths, None, "bc (2 runs, final evaluation of each)");
        // A run that learnt from no expert has no place on that axis.
        let sac = fixture_run(&parent, "sac-1", "sac", 1, 1.0);
        let e = comparison(
            &[Group {
                label: "sac".into(),
                runs: vec![sac],
            }],
            &dir.join("none"),
            &opts,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("expert_labels") && e.contains("sac-1"), "{e}");
    }

    /// Scores of `runs` x `tasks` around `level`, normalised to about 0..1.
    fn scores(runs: usize, tasks: usize, level: f64, seed: u64) -> ScoreMatrix {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let rows = (0..runs)
            .map(|_| {
                (0..tasks)
                    .map(|t| level + 0.1 * t as f64 + rng.random_range(-0.25..0.25))
                    .collect()
            })
            .collect();
        ScoreMatrix::new(rows).unwrap()
    }

    #[test]
    fn aggregates_write_iqm_intervals_and_profiles() {
        let dir = out_dir("aggregates");
        let groups = vec![
            ScoreGroup {
                label: "ppo".into(),
                scores: scores(10, 5, 0.8, 1),
            },
            ScoreGroup {
                label: "a2c".into(),
                scores: scores(10, 5, 0.5, 2),
            },
            ScoreGroup {
                label: "splitq".into(),
                scores: scores(5, 5, 0.6, 3),
            },
        ];
        let opts = AggregateOptions {
            score_label: "normalized score".into(),
            ..AggregateOptions::default()
        };
        let paths = iqm_intervals(&groups, &dir.join("iqm"), &opts).unwrap();
        check_outputs(
            &paths,
            Some((900, 190 + 56 * 3)),
            "interquartile mean (IQM)",
        );
        let svg = fs::read_to_string(&paths[1]).unwrap();
        assert!(svg.contains("splitq"));
        let popts = ProfileOptions {
            score_label: "normalized score".into(),
            ..ProfileOptions::default()
        };
        let paths = performance_profile(&groups, &dir.join("profile"), &popts).unwrap();
        check_outputs(&paths, Some(popts.size), "performance profile");
    }

    #[test]
    fn score_groups_from_runs_need_as_many_runs_per_task() {
        let dir = out_dir("scoregroups");
        let parent = dir.join("runs");
        let runs = vec![
            fixture_run(&parent, "s-ppo-2", "ppo", 2, 1.0),
            fixture_run(&parent, "s-ppo-1", "ppo", 1, 1.0),
            fixture_run(&parent, "s-a2c-1", "a2c", 1, 0.6),
        ];
        let groups = score_groups(&runs).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].label, "ppo");
        assert_eq!((groups[0].scores.runs(), groups[0].scores.tasks()), (2, 1));
        // Ordered by seed: seed 1 first.
        assert_eq!(groups[0].scores.get(0, 0), runs[1].final_eval_return());
        let mut other = runs[2].clone();
        other.env_id = Some("Acrobot-v1".into());
        let err =
            ScoreGroup::from_runs("mixed", &[runs[0].clone(), runs[1].clone(), other]).unwrap_err();
        assert!(err.to_string().contains("as many runs"), "{err}");
    }

    #[test]
    fn best_eval_writes_the_episodes() {
        let dir = out_dir("best");
        let run = fixture_run(&dir.join("runs"), "ppo-best", "ppo", 3, 1.0);
        let eval = run.best_eval().unwrap();
        assert_eq!(eval.eval_returns.len(), 20);
        let opts = BestEvalOptions::default();
        let paths = best_eval(&run, &eval, &dir.join("best_eval"), &opts).unwrap();
        let title = format!("weights version {}", eval.weights_version);
        check_outputs(&paths, Some(opts.size), &title);
        // Every episode with one return: one bar.
        let same = BestEval {
            eval_returns: vec![500.0; 10],
            ..eval.clone()
        };
        let paths = best_eval(&run, &same, &dir.join("best_eval_solved"), &opts).unwrap();
        check_outputs(&paths, Some(opts.size), "mean 500");
        let none = BestEval {
            eval_returns: Vec::new(),
            ..eval
        };
        assert!(best_eval(&run, &none, &dir.join("none"), &opts).is_err());
    }

    #[test]
    fn histogram_bins_cover_every_value() {
        let bars = histogram(&[0.0, 1.0, 2.0, 3.0, 4.0], 2);
        assert_eq!(bars, vec![(0.0, 2.0, 2.0), (2.0, 4.0, 3.0)]);
        // Empty bins are left out.
        let bars = histogram(&[0.0, 0.5, 4.0], 4);
        assert_eq!(bars, vec![(0.0, 1.0, 2.0), (3.0, 4.0, 1.0)]);
        let one = histogram(&[7.0, 7.0], 5);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].2, 2.0);
    }
}
