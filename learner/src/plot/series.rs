//! Reading run directories (`runs/<name>/`, README.md "Run directory"): the resolved
//! `config.toml` (algorithm, env id, seed), `metrics.jsonl` (one line per round of
//! updates) and the best checkpoint's `checkpoints/best/eval.json`.
//!
//! A resumed run appends to `metrics.jsonl`, and its learner's clock starts again at
//! 0: a line whose `time` or `steps` is below the previous line's starts a new
//! segment. Its times are offset by the last time before it, so `time` counts the
//! wall time of every segment ([`continuous_time`]); and the earlier lines at or past
//! its first `steps` are dropped, since the resumed learner went back to an older
//! checkpoint and trained those steps again.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::{PlotError, PlotResult};

/// The metrics log of a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The resolved config of a run directory.
pub const CONFIG_FILE: &str = "config.toml";
/// The best checkpoint's evaluation, under a run directory.
pub const BEST_EVAL_FILE: &str = "checkpoints/best/eval.json";

/// The training return key of a metrics line (mean of the last training episodes).
pub const TRAIN_RETURN: &str = "episode_return_mean";
/// The evaluation return key of a metrics line (present when an evaluation finished).
pub const EVAL_RETURN: &str = "eval_return_mean";

/// Keys of a metrics line that the training loop writes for every algorithm (counters,
/// throughput, episode and evaluation results): the rest are the algorithm's update
/// statistics (losses, entropy, KL, Q values, temperature, learning rate, ...).
pub const BOOKKEEPING_KEYS: &[&str] = &[
    "update",
    "steps",
    "time",
    "fps",
    "updates_per_second",
    "episode_return_mean",
    "episode_length_mean",
    "episodes",
    "update_seconds",
    "weights_version",
    "policy_lag_mean",
    "chunks_dropped",
    "replay_size",
    "replay_ratio",
    "eval_return_mean",
    "eval_length_mean",
    "eval_weights_version",
    "dataset_size",
    EXPERT_LABELS,
    STEPS_ARE_UPDATES,
];

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Env steps so far (`steps`).
    pub steps: f64,
    /// Seconds of training so far, across resumes ([`continuous_time`]).
    pub time: f64,
    /// Which learner process wrote it: 0, then one more at each resume.
    pub segment: usize,
    /// Every numeric field of the line, as written (nulls and other types left out).
    pub values: BTreeMap<String, f64>,
}

/// What a figure plots against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Env steps.
    Steps,
    /// Wall time in seconds.
    Time,
    /// Expert labels the run has learnt from (`expert_labels`: imitation runs).
    Labels,
}

impl Axis {
    /// The axis description.
    pub fn label(self) -> &'static str {
        match self {
            Axis::Steps => "env steps",
            Axis::Time => "wall time",
            Axis::Labels => "expert labels",
        }
    }
}

/// The expert labels key of a metrics line (imitation runs).
pub const EXPERT_LABELS: &str = "expert_labels";

/// Points `(x[i], y[i])`, in the order of the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// The abscissae.
    pub x: Vec<f64>,
    /// The values.
    pub y: Vec<f64>,
}

impl Series {
    /// The number of points.
    pub fn len(&self) -> usize {
        self.x.len()
    }

    /// True when there are no points.
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    /// The points as pairs.
    pub fn points(&self) -> Vec<(f64, f64)> {
        self.x.iter().copied().zip(self.y.iter().copied()).collect()
    }
}

/// One run: its name, what it trained, and its metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The run's name (its folder's name).
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// `algorithm` of its config.
    pub algorithm: Option<String>,
    /// `[env] id` of its config.
    pub env_id: Option<String>,
    /// `[run] seed` of its config.
    pub seed: Option<u64>,
    /// The lines of `metrics.jsonl`, resumes resolved (see the module docs).
    pub rows: Vec<Row>,
}

/// What a run's progress is counted in: env steps, or for a run that trains alone
/// (behaviour cloning: no env step ever) its gradient updates.
pub fn progress_name(rows: &[Row]) -> &'static str {
    if rows
        .iter()
        .any(|r| r.values.contains_key(STEPS_ARE_UPDATES))
    {
        "gradient updates"
    } else {
        "env steps"
    }
}

/// Marks the lines of a run whose `steps` are its updates ([`progress_name`]).
const STEPS_ARE_UPDATES: &str = "__steps_are_updates";

impl Run {
    /// What the x axis of this run's figures counts ([`progress_name`]).
    pub fn progress(&self) -> &'static str {
        progress_name(&self.rows)
    }

    /// Reads a run directory: `metrics.jsonl` must be there; `config.toml` may be
    /// missing (the algorithm, env and seed are then unknown).
    pub fn read(dir: &Path) -> PlotResult<Run> {
        let metrics = dir.join(METRICS_FILE);
        let text = fs::read_to_string(&metrics).map_err(|source| PlotError::Read {
            path: metrics.clone(),
            source,
        })?;
        let rows = parse_metrics(&text, &metrics)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let mut run = Run {
            name,
            dir: dir.to_path_buf(),
            algorithm: None,
            env_id: None,
            seed: None,
            rows,
        };
        let config = dir.join(CONFIG_FILE);
        if config.is_file() {
            let text = fs::read_to_string(&config).map_err(|source| PlotError::Read {
                path: config.clone(),
                source,
            })?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| PlotError::BadFile {
                path: config.clone(),
                message: format!("not TOML: {}", e.message()),
            })?;
            run.algorithm = table
                .get("algorithm")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            run.env_id = table
                .get("env")
                .and_then(|e| e.get("id"))
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            run.seed = table
                .get("run")
                .and_then(|r| r.get("seed"))
                .and_then(|v| v.as_integer())
                .and_then(|s| u64::try_from(s).ok());
        }
        Ok(run)
    }

    /// The values of `key` against `axis`, on the lines that have it.
    pub fn series(&self, key: &str, axis: Axis) -> Series {
        let at = self.placer(key, axis);
        let mut s = Series::default();
        for r in &self.rows {
            if let (Some(v), Some(x)) = (r.values.get(key), at(r)) {
                s.x.push(x);
                s.y.push(*v);
            }
        }
        s
    }

    /// Where `key` of a row goes on `axis` (`None`: the row has no place there, a
    /// line without `expert_labels` on the labels axis). An evaluation's result is
    /// logged when it finishes, a round or more after the version it measured was
    /// published: on the steps and labels axes it goes at that version's steps or
    /// labels (the line that published `eval_weights_version`), so a curve of a few
    /// iterations is not shifted by one.
    fn placer(&self, key: &str, axis: Axis) -> impl Fn(&Row) -> Option<f64> {
        let x_of = move |r: &Row| match axis {
            Axis::Time => Some(r.time),
            Axis::Steps => Some(r.steps),
            Axis::Labels => r.values.get(EXPERT_LABELS).copied(),
        };
        let mut published = BTreeMap::new();
        if axis == Axis::Steps && key.starts_with("eval_") {
            // Version 0 is the weights a run starts with (`eval.at_start`), before its
            // first step, whatever line first names it.
            published.insert(0u64, 0.0);
        }
        if axis != Axis::Time && key.starts_with("eval_") {
            for r in &self.rows {
                if let (Some(&v), Some(x)) = (r.values.get("weights_version"), x_of(r)) {
                    published.entry(v as u64).or_insert(x);
                }
            }
        }
        move |r: &Row| {
            r.values
                .get("eval_weights_version")
                .filter(|_| axis != Axis::Time)
                .and_then(|&v| published.get(&(v as u64)).copied())
                .or_else(|| x_of(r))
        }
    }

    /// [`Run::series`] cut where the run was resumed: one series per learner process
    /// that logged `key` (on the wall-time axis, the time between them has no data).
    pub fn series_by_segment(&self, key: &str, axis: Axis) -> Vec<Series> {
        let at = self.placer(key, axis);
        let mut out: Vec<Series> = Vec::new();
        let mut current = None;
        for r in &self.rows {
            let Some(v) = r.values.get(key) else { continue };
            if current != Some(r.segment) {
                out.push(Series::default());
                current = Some(r.segment);
            }
            if let (Some(s), Some(x)) = (out.last_mut(), at(r)) {
                s.x.push(x);
                s.y.push(*v);
            }
        }
        out
    }

    /// How many times the run was resumed.
    pub fn resumes(&self) -> usize {
        self.rows.last().map_or(0, |r| r.segment)
    }

    /// Every numeric key of the lines.
    pub fn keys(&self) -> BTreeSet<String> {
        self.rows
            .iter()
            .flat_map(|r| r.values.keys().cloned())
            .collect()
    }

    /// The algorithm's update statistics: the numeric keys other than
    /// [`BOOKKEEPING_KEYS`], in name order, but for those logged more than once with
    /// always the same value (settings such as a fixed minibatch size or learning
    /// rate).
    pub fn statistic_keys(&self) -> Vec<String> {
        self.keys()
            .into_iter()
            .filter(|k| !BOOKKEEPING_KEYS.contains(&k.as_str()))
            .filter(|k| {
                let values: Vec<f64> = self
                    .rows
                    .iter()
                    .filter_map(|r| r.values.get(k))
                    .copied()
                    .collect();
                values.len() < 2 || values.iter().any(|v| *v != values[0])
            })
            .collect()
    }

    /// The last evaluation's mean return, if the run was evaluated.
    pub fn final_eval_return(&self) -> Option<f64> {
        self.rows
            .iter()
            .rev()
            .find_map(|r| r.values.get(EVAL_RETURN).copied())
    }

    /// "name: algorithm on env", with what is known.
    pub fn title(&self) -> String {
        match (&self.algorithm, &self.env_id) {
            (Some(a), Some(e)) => format!("{}: {a} on {e}", self.name),
            (Some(a), None) => format!("{}: {a}", self.name),
            (None, Some(e)) => format!("{}: {e}", self.name),
            (None, None) => self.name.clone(),
        }
    }

    /// The best checkpoint's evaluation of this run.
    pub fn best_eval(&self) -> PlotResult<BestEval> {
        BestEval::read(&self.dir)
    }
}

/// Parses the text of a `metrics.jsonl` (`path` names it in errors) and resolves
/// resumes (see the module docs). A last line without its newline that does not parse
/// is the one a crash cut short, and is left out.
pub fn parse_metrics(text: &str, path: &Path) -> PlotResult<Vec<Row>> {
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut raw = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || PathBuf::from(format!("{}:{}", path.display(), i + 1));
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) if !complete && i + 1 == lines.len() => break,
            Err(e) => {
                return Err(PlotError::BadFile {
                    path: at(),
                    message: format!("not a JSON line: {e}"),
                })
            }
        };
        let Some(object) = value.as_object() else {
            return Err(PlotError::BadFile {
                path: at(),
                message: "not a JSON object".into(),
            });
        };
        let values: BTreeMap<String, f64> = object
            .iter()
            .filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v)))
            .collect();
        let field = |k: &str| {
            values.get(k).copied().ok_or_else(|| PlotError::BadFile {
                path: at(),
                message: format!("no numeric `{k}`"),
            })
        };
        let steps = field("steps")?;
        let time = field("time")?;
        raw.push(Row {
            steps,
            time,
            segment: 0,
            values,
        });
    }
    // A run that never stepped an env but updated (behaviour cloning) progresses by
    // its updates.
    let update = |r: &Row| r.values.get("update").copied().unwrap_or(0.0);
    if raw.iter().all(|r| r.steps == 0.0) && raw.iter().any(|r| update(r) > 0.0) {
        for r in &mut raw {
            r.steps = update(r);
            r.values.insert(STEPS_ARE_UPDATES.into(), 1.0);
        }
    }
    let times: Vec<f64> = raw.iter().map(|r| r.time).collect();
    let steps: Vec<f64> = raw.iter().map(|r| r.steps).collect();
    let starts = segment_starts(&times, &steps);
    let times = continuous_time(&times, &steps);
    let mut rows: Vec<Row> = Vec::with_capacity(raw.len());
    let mut segment = 0;
    for ((mut row, t), start) in raw.into_iter().zip(times).zip(starts) {
        row.time = t;
        if start {
            segment += 1;
            // A resumed segment trains again from an older checkpoint: what the
            // earlier segments logged at or past its steps is superseded.
            while rows.last().is_some_and(|last| last.steps >= row.steps) {
                rows.pop();
            }
        }
        row.segment = segment;
        rows.push(row);
    }
    Ok(rows)
}

/// Which lines start a resumed segment: those whose time or steps is below the line
/// before. `times` and `steps` are the columns of the same lines.
fn segment_starts(times: &[f64], steps: &[f64]) -> Vec<bool> {
    let mut starts = vec![false; times.len()];
    for (i, start) in starts.iter_mut().enumerate().skip(1) {
        let back = |v: &[f64]| matches!((v.get(i), v.get(i - 1)), (Some(a), Some(b)) if a < b);
        *start = back(times) || back(steps);
    }
    starts
}

/// Makes a learner clock that starts again at 0 on every resume continuous. A line
/// whose time or steps is below the line before it starts a segment; its times are
/// offset by the last time before it (the offsets add up over several resumes).
/// `times` and `steps` are the columns of the same lines.
pub fn continuous_time(times: &[f64], steps: &[f64]) -> Vec<f64> {
    let mut offset = 0.0;
    let starts = segment_starts(times, steps);
    times
        .iter()
        .zip(&starts)
        .enumerate()
        .map(|(i, (&t, &start))| {
            if start {
                offset += times[i - 1];
            }
            t + offset
        })
        .collect()
}

/// The best checkpoint's evaluation (`checkpoints/best/eval.json`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct BestEval {
    /// The mean return of its episodes.
    pub eval_return_mean: f64,
    /// The mean length of its episodes.
    #[serde(default)]
    pub eval_length_mean: Option<f64>,
    /// Env steps when the evaluated weights were published.
    pub steps: u64,
    /// The weights version evaluated.
    pub weights_version: u64,
    /// Each episode's return (empty in runs of volleys that did not keep them).
    #[serde(default)]
    pub eval_returns: Vec<f64>,
    /// Each episode's length.
    #[serde(default)]
    pub eval_lengths: Vec<f64>,
}

impl BestEval {
    /// Reads `checkpoints/best/eval.json` of a run directory.
    pub fn read(run_dir: &Path) -> PlotResult<BestEval> {
        let path = run_dir.join(BEST_EVAL_FILE);
        let bytes = fs::read(&path).map_err(|source| PlotError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| PlotError::BadFile {
            path,
            message: format!("not an evaluation record: {e}"),
        })
    }
}

/// Runs plotted as one curve (seeds of one configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The legend's text.
    pub label: String,
    /// Its runs.
    pub runs: Vec<Run>,
}

/// Groups runs by algorithm and env, in the order they first appear; the label is
/// "algorithm env" (the run's name when both are unknown).
pub fn group_runs(runs: Vec<Run>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for run in runs {
        let label = match (&run.algorithm, &run.env_id) {
            (None, None) => run.name.clone(),
            (a, e) => [a.as_deref(), e.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" "),
        };
        match groups.iter_mut().find(|g| g.label == label) {
            Some(g) => g.runs.push(run),
            None => groups.push(Group {
                label,
                runs: vec![run],
            }),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(steps: u64, time: f64, ret: Option<f64>) -> String {
        serde_json::json!({"update": steps / 100, "steps": steps, "time": time,
            "episode_return_mean": ret, "eval_return_mean": null, "loss": 0.5})
        .to_string()
    }

    #[test]
    fn continuous_time_offsets_each_resume_by_the_last_time_before_it() {
        let t = continuous_time(
            &[1.0, 2.0, 5.0, 0.5, 1.5, 0.25, 3.0],
            &[1.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0],
        );
        assert_eq!(t, vec![1.0, 2.0, 5.0, 5.5, 6.5, 6.75, 9.5]);
        // A resume whose first line came later on its clock: steps go back.
        let t = continuous_time(&[1.0, 2.0, 3.0], &[100.0, 200.0, 150.0]);
        assert_eq!(t, vec![1.0, 2.0, 5.0]);
    }

    #[test]
    fn resumed_metrics_are_continuous_and_drop_superseded_lines() {
        // Segment one logs up to 400 steps; the resume restarts from the checkpoint at
        // 200 steps and logs 300 again at its own time 1.0.
        let text = [
            line(100, 1.0, None),
            line(200, 2.0, Some(10.0)),
            line(300, 3.0, Some(11.0)),
            line(400, 4.0, Some(12.0)),
            line(300, 1.0, Some(20.0)),
            line(400, 2.0, Some(21.0)),
        ]
        .join("\n")
            + "\n";
        let rows = parse_metrics(&text, Path::new("m.jsonl")).unwrap();
        let steps: Vec<f64> = rows.iter().map(|r| r.steps).collect();
        let times: Vec<f64> = rows.iter().map(|r| r.time).collect();
        assert_eq!(steps, vec![100.0, 200.0, 300.0, 400.0]);
        assert_eq!(times, vec![1.0, 2.0, 5.0, 6.0]);
        assert_eq!(rows[2].values[TRAIN_RETURN], 20.0);
        let segments: Vec<usize> = rows.iter().map(|r| r.segment).collect();
        assert_eq!(segments, vec![0, 0, 1, 1]);
        let run = Run {
            name: "r".into(),
            dir: PathBuf::from("r"),
            algorithm: None,
            env_id: None,
            seed: None,
            rows,
        };
        assert_eq!(run.resumes(), 1);
        let cut = run.series_by_segment(TRAIN_RETURN, Axis::Time);
        assert_eq!(cut.len(), 2);
        assert_eq!(cut[0].points(), vec![(2.0, 10.0)]);
        assert_eq!(cut[1].points(), vec![(5.0, 20.0), (6.0, 21.0)]);
        assert!(!run.rows[0].values.contains_key(TRAIN_RETURN));
        assert!(!run.rows[0].values.contains_key(EVAL_RETURN));
        assert_eq!(progress_name(&run.rows), "env steps");
    }

    #[test]
    fn a_run_without_env_steps_progresses_by_its_updates() {
        let text = [
            r#"{"update": 500, "steps": 0, "time": 1.0, "loss": 2.0}"#,
            r#"{"update": 1000, "steps": 0, "time": 2.0, "loss": 1.0, "eval_return_mean": 30.0}"#,
        ]
        .join("\n");
        let rows = parse_metrics(&text, Path::new("m.jsonl")).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.steps).collect::<Vec<_>>(),
            vec![500.0, 1000.0]
        );
        assert_eq!(
            rows.iter().map(|r| r.segment).collect::<Vec<_>>(),
            vec![0, 0]
        );
        assert_eq!(progress_name(&rows), "gradient updates");
    }

    #[test]
    fn an_evaluation_goes_at_the_steps_of_the_version_it_measured() {
        let text = [
            r#"{"steps": 500, "time": 0.5, "weights_version": 0, "eval_return_mean": 20.0, "eval_weights_version": 0}"#,
            r#"{"steps": 1000, "time": 1.0, "weights_version": 1}"#,
            r#"{"steps": 2000, "time": 2.0, "weights_version": 2, "eval_return_mean": 30.0, "eval_weights_version": 1}"#,
            r#"{"steps": 3000, "time": 3.0, "weights_version": 3, "eval_return_mean": 40.0, "eval_weights_version": 3}"#,
        ]
        .join("\n");
        let run = Run {
            name: "r".into(),
            dir: PathBuf::from("r"),
            algorithm: None,
            env_id: None,
            seed: None,
            rows: parse_metrics(&text, Path::new("m.jsonl")).unwrap(),
        };
        assert_eq!(
            run.series(EVAL_RETURN, Axis::Steps).points(),
            vec![(0.0, 20.0), (1000.0, 30.0), (3000.0, 40.0)],
            "the starting weights' evaluation at step 0"
        );
        // Wall time is when the result came in.
        assert_eq!(
            run.series(EVAL_RETURN, Axis::Time).points(),
            vec![(0.5, 20.0), (2.0, 30.0), (3.0, 40.0)]
        );
    }

    #[test]
    fn a_cut_last_line_is_left_out_and_a_bad_line_is_named() {
        let text = format!("{}\n{{\"steps\": 2", line(100, 1.0, None));
        assert_eq!(parse_metrics(&text, Path::new("m.jsonl")).unwrap().len(), 1);
        let text = format!(
            "{}\nnot json\n{}\n",
            line(100, 1.0, None),
            line(200, 2.0, None)
        );
        let err = parse_metrics(&text, Path::new("runs/x/metrics.jsonl")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("runs/x/metrics.jsonl:2: not a JSON line"),
            "{err}"
        );
        let err = parse_metrics("{\"time\": 1}\n", Path::new("m.jsonl")).unwrap_err();
        assert!(err.to_string().contains("no numeric `steps`"), "{err}");
    }

    #[test]
    fn reads_a_run_directory() {
        let dir = volley_common::testing::TempDir::named("plot-series");
        fs::create_dir_all(dir.join("checkpoints/best")).unwrap();
        fs::write(
            dir.join(CONFIG_FILE),
            "algorithm = \"ppo\"\n[env]\nid = \"CartPole-v1\"\n[run]\nseed = 3\n",
        )
        .unwrap();
        let mut text = String::new();
        for i in 1..=5u64 {
            text += &line(i * 100, i as f64, Some(i as f64));
            text += "\n";
        }
        text += "{\"steps\": 600, \"time\": 6.0, \"eval_return_mean\": 42.0, \"policy_loss\": 1, \"lr\": 0.1}\n";
        fs::write(dir.join(METRICS_FILE), text).unwrap();
        fs::write(
            dir.join(BEST_EVAL_FILE),
            r#"{"weights_version": 7, "steps": 600, "eval_return_mean": 42.0,
               "eval_length_mean": 40.0, "eval_episodes": 2,
               "eval_returns": [40.0, 44.0], "eval_lengths": [39, 41]}"#,
        )
        .unwrap();
        let run = Run::read(&dir).unwrap();
        // The evaluation line names no version: it stays where it was logged.
        assert_eq!(
            run.series(EVAL_RETURN, Axis::Steps).points(),
            vec![(600.0, 42.0)]
        );
        assert_eq!(run.algorithm.as_deref(), Some("ppo"));
        assert_eq!(run.env_id.as_deref(), Some("CartPole-v1"));
        assert_eq!(run.seed, Some(3));
        assert_eq!(run.rows.len(), 6);
        assert_eq!(run.series(TRAIN_RETURN, Axis::Steps).len(), 5);
        assert_eq!(
            run.series(EVAL_RETURN, Axis::Time).points(),
            vec![(6.0, 42.0)]
        );
        assert_eq!(run.final_eval_return(), Some(42.0));
        // `loss` is the same on every line: a setting, not a statistic.
        assert_eq!(run.statistic_keys(), vec!["lr", "policy_loss"]);
        let best = run.best_eval().unwrap();
        assert_eq!(best.weights_version, 7);
        assert_eq!(best.eval_returns, vec![40.0, 44.0]);
        assert_eq!(best.eval_lengths, vec![39.0, 41.0]);
        let missing = Run::read(&dir.join("nope")).unwrap_err();
        assert!(
            missing.to_string().contains("nope/metrics.jsonl"),
            "{missing}"
        );
    }

    #[test]
    fn groups_by_algorithm_and_env() {
        let run = |name: &str, algo: &str, env: &str| Run {
            name: name.into(),
            dir: PathBuf::from(name),
            algorithm: Some(algo.into()),
            env_id: Some(env.into()),
            seed: None,
            rows: Vec::new(),
        };
        let groups = group_runs(vec![
            run("a", "ppo", "CartPole-v1"),
            run("b", "sac", "Hopper-v5"),
            run("c", "ppo", "CartPole-v1"),
        ]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].label, "ppo CartPole-v1");
        assert_eq!(groups[0].runs.len(), 2);
        assert_eq!(groups[1].runs[0].name, "b");
    }
}
