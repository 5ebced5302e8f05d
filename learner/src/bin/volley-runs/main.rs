//! `volley-runs`: the runs of a folder (`runs/` by default), as users look for them:
//! list them, show one, find one's directory, plot and compare them, play and explain
//! their trained agents.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use volley_learner::plot;

mod explain;
mod play;
use volley_learner::runs::{self, FoundRun};

#[derive(Debug, Parser)]
#[command(
    name = "volley-runs",
    version,
    about = "volley's runs: list, show, find, plot and compare them; play and explain their agents"
)]
struct Cli {
    /// The folder of runs (a run.dir).
    #[arg(long, global = true, default_value = "runs")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One line per run: id, name, algorithm, env, status, steps, best evaluation,
    /// wall time, seed and group; oldest first. Runs still going are read as they are.
    List {
        /// One JSON object per run, one per line.
        #[arg(long)]
        json: bool,
    },
    /// A run's record, config, last metrics line and checkpoints.
    Show {
        /// Its id, name, a prefix of either, or its directory.
        run: String,
        /// The record, last metrics line and checkpoints as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Prints a run's directory (for scripts: `cd $(volley-runs find ppo-cart)`).
    Find {
        /// Its id, name, a prefix of either, or its directory.
        run: String,
    },
    /// Draws a run's figures (PNG and SVG) into its plots/ folder, or --out: the
    /// learning curve (training and evaluation return against env steps and wall
    /// time), the update statistics, the best checkpoint's evaluation episodes.
    Plot {
        /// Its id, name, a prefix of either, or its directory.
        run: String,
        /// The folder to draw into (default: the run's plots/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Moving-average window of the curves, in metrics lines.
        #[arg(long, default_value_t = 10)]
        smooth: usize,
    },
    /// Compares runs and seed groups in one figure: each group's mean evaluation
    /// return with a 95% band over its runs; where groups have several runs, the IQM
    /// of their final evaluations with bootstrap intervals (-iqm) and a performance
    /// profile (-profile).
    Compare {
        /// Seed groups (run.group) or runs (id, name, prefix, directory).
        #[arg(required = true)]
        what: Vec<String>,
        /// The figure's path without extension (PNG and SVG), or with .png or .svg
        /// (default: <dir>/compare/<names>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Compare the training episode return instead of the evaluation return.
        #[arg(long)]
        train: bool,
        /// Moving-average window applied to each run first, in metrics lines.
        #[arg(long, default_value_t = 1)]
        smooth: usize,
        /// A reference value drawn as a dashed line, `LABEL=VALUE` (a published
        /// score: `--reference "CleanRL DQN, 10M steps=2109"`); repeatable.
        #[arg(long = "reference", value_parser = parse_reference)]
        references: Vec<(String, f64)>,
        /// What the curves are drawn against: `steps` (env steps) or `labels` (the
        /// expert labels of imitation runs; a behaviour cloning run is one point, its
        /// final evaluation at its dataset's size).
        #[arg(long = "x", value_enum, default_value_t = XAxis::Steps)]
        x: XAxis,
    },
    /// Plays a run's trained agent: N episodes at once with the run's env settings
    /// (by default its evaluation's seed, episodes and step limit, greedy), prints
    /// each episode's return and length and a JSON summary; --record keeps every
    /// transition in a safetensors file.
    Play(play::PlayCommand),
    /// Plays a run's trained agent as `play` does and explains what it did into
    /// <run>/explain/<checkpoint>/: a video of the first episode with the return and
    /// step on each frame, per-step feature importances (vector observations: a JSON
    /// line and a figure of the env beside the bars per step, the mean over all
    /// episodes) or saliency maps overlaid on the frames (images), and summary.json.
    Explain(explain::ExplainCommand),
    /// Sends a finished run to an MLflow tracking server after the fact: params, tags,
    /// every metrics line, artifacts and status. Completes the MLflow run its record
    /// names (sending only what that run lacks), or makes a new one; prints its id.
    MlflowExport {
        /// Its id, name, a prefix of either, or its directory.
        run: String,
        /// The tracking server (`http://host:5000`).
        #[arg(long, env = "MLFLOW_TRACKING_URI")]
        uri: String,
        /// The experiment (created if missing).
        #[arg(long, default_value = "volley")]
        experiment: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            volley_common::say!("volley-runs: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut text = String::new();
    match cli.command {
        Command::List { json } => list(&cli.dir, json, &mut text)?,
        Command::Show { run, json } => show(&runs::resolve(&cli.dir, &run)?, json, &mut text)?,
        Command::Find { run } => {
            text = format!("{}\n", runs::resolve(&cli.dir, &run)?.dir.display());
        }
        Command::Plot { run, out, smooth } => {
            let found = runs::resolve(&cli.dir, &run)?;
            let out = out.unwrap_or_else(|| found.dir.join(plot::PLOTS_DIR));
            let opts = plot::RunFigures {
                smooth,
                ..plot::RunFigures::default()
            };
            let files = plot::draw_run(&found.dir, &out, &opts)?;
            out_files(&files, &mut text);
        }
        Command::Compare {
            what,
            out,
            train,
            smooth,
            references,
            x,
        } => {
            let mut groups = Vec::new();
            for w in &what {
                groups.push(group_of(&cli.dir, w)?);
            }
            let out = out.unwrap_or_else(|| {
                let names: Vec<String> = what.iter().map(|w| runs::file_safe(w)).collect();
                cli.dir.join("compare").join(names.join("-vs-"))
            });
            let metric = if train {
                plot::Metric::Train
            } else {
                plot::Metric::Eval
            };
            let files =
                plot::draw_comparison(&groups, &out, metric, x.axis(), smooth, &references)?;
            out_files(&files, &mut text);
        }
        Command::Play(cmd) => text = play::run(&cli.dir, &cmd)?,
        Command::Explain(cmd) => text = explain::run(&cli.dir, &cmd)?,
        Command::MlflowExport {
            run,
            uri,
            experiment,
        } => {
            let found = runs::resolve(&cli.dir, &run)?;
            let path = found.dir.join("config.toml");
            let config = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let table: toml::Table = config
                .parse()
                .with_context(|| format!("{} is not TOML", path.display()))?;
            let done = volley_learner::mlflow::export(
                &uri,
                &experiment,
                &found.dir,
                &found.record,
                &table,
            )
            .with_context(|| format!("exporting run {} to {uri}", found.record.name))?;
            if done.created {
                // The record names its MLflow run, so a second export completes it.
                let mut record = found.record.clone();
                record.mlflow_run_id = Some(done.run_id.clone());
                record.write(&found.dir)?;
            }
            volley_common::say!(
                "volley-runs: run {} (id {}) is MLflow run {} at {uri} ({}; {} metric values sent, {} artifacts)",
                found.record.name,
                found.record.id,
                done.run_id,
                if done.created { format!("new, in experiment {experiment}") } else { "completed".to_string() },
                done.sent,
                done.artifacts
            );
            text = format!("{}\n", done.run_id);
        }
    }
    emit(&text)
}

/// Lists written files, one per line.
/// `compare --x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum XAxis {
    Steps,
    Labels,
}

impl XAxis {
    fn axis(self) -> plot::Axis {
        match self {
            XAxis::Steps => plot::Axis::Steps,
            XAxis::Labels => plot::Axis::Labels,
        }
    }
}

/// `LABEL=VALUE` of `compare --reference`: the value after the last `=`.
fn parse_reference(s: &str) -> Result<(String, f64), String> {
    let (label, value) = s.rsplit_once('=').ok_or_else(|| {
        format!("--reference '{s}': write LABEL=VALUE, e.g. \"CleanRL DQN=2109\"")
    })?;
    let v: f64 = value
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| format!("--reference '{s}': '{value}' is not a number"))?;
    if label.trim().is_empty() {
        return Err(format!("--reference '{s}': the label is empty"));
    }
    Ok((label.trim().to_string(), v))
}

fn out_files(files: &[PathBuf], text: &mut String) {
    for f in files {
        text.push_str(&format!("{}\n", f.display()));
    }
}

/// The runs `what` names as one group of a comparison: a seed group (labelled with
/// its name and size) or one run (its name).
fn group_of(root: &Path, what: &str) -> Result<plot::Group> {
    let found = runs::resolve_group(root, what)?;
    let is_group = found.iter().any(|r| r.record.group == what);
    let label = if is_group {
        what.to_string()
    } else {
        found[0].record.name.clone()
    };
    let runs = found
        .iter()
        .map(|r| plot::Run::read(&r.dir))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(plot::Group { label, runs })
}

/// Writes `text` to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `println!` into the output buffer.
macro_rules! outln {
    ($out:expr) => { $out.push('\n') };
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// `1h02m`, `3m05s`, `12s`.
fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// `1.25M`, `40.0k`, `512`.
fn count(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn list(dir: &Path, json: bool, out: &mut String) -> Result<()> {
    let (found, skipped) = runs::find_runs(dir)?;
    if json {
        for r in &found {
            let mut v = serde_json::to_value(&r.record)?;
            v["status"] = r.record.status_now().name().into();
            v["dir"] = r.dir.display().to_string().into();
            outln!(out, "{}", serde_json::to_string(&v)?);
        }
    } else {
        let rows: Vec<[String; 10]> = found
            .iter()
            .map(|r| {
                let rec = &r.record;
                [
                    if rec.id.is_empty() {
                        "-".into()
                    } else {
                        rec.id.clone()
                    },
                    rec.name.clone(),
                    rec.algorithm.clone(),
                    rec.env.clone(),
                    rec.status_now().name().to_string(),
                    count(rec.steps),
                    rec.best
                        .as_ref()
                        .map_or("-".into(), |b| format!("{:.3}", b.eval_return_mean)),
                    duration(rec.wall_seconds),
                    rec.seed.to_string(),
                    if rec.group.is_empty() {
                        "-".into()
                    } else {
                        rec.group.clone()
                    },
                ]
            })
            .collect();
        let head = [
            "id",
            "name",
            "algorithm",
            "env",
            "status",
            "steps",
            "best",
            "wall",
            "seed",
            "group",
        ];
        let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            cells
                .iter()
                .zip(&width)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        outln!(out, "{}", line(head.to_vec()));
        for row in &rows {
            outln!(out, "{}", line(row.iter().map(String::as_str).collect()));
        }
        if found.is_empty() {
            outln!(out, "(no runs in {})", dir.display());
        }
    }
    for s in skipped {
        volley_common::say!("volley-runs: skipped {s}");
    }
    Ok(())
}

/// The last line of the run's metrics.jsonl that parses.
fn last_metrics(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).ok()?;
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
}

/// The run's checkpoints: the update folders (oldest first), the one `latest` names,
/// and the best checkpoint's eval.json.
fn checkpoints(dir: &Path) -> (Vec<String>, Option<String>, Option<serde_json::Value>) {
    let ck = dir.join("checkpoints");
    let mut updates: Vec<String> = std::fs::read_dir(&ck)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("update-"))
                .collect()
        })
        .unwrap_or_default();
    updates.sort_by_key(|n| n.trim_start_matches("update-").parse::<u64>().unwrap_or(0));
    let latest = std::fs::read_to_string(ck.join("latest"))
        .ok()
        .map(|s| s.trim().to_string());
    let best = std::fs::read(ck.join("best").join("eval.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    (updates, latest, best)
}

/// The PNG figures in a run's plots/ folder, by name.
fn plots(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(plot::PLOTS_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    names
}

fn show(run: &FoundRun, json: bool, out: &mut String) -> Result<()> {
    let rec = &run.record;
    let last = last_metrics(&run.dir);
    let (updates, latest, best) = checkpoints(&run.dir);
    let figures = plots(&run.dir);
    if json {
        let mut v = serde_json::to_value(rec)?;
        v["status"] = rec.status_now().name().into();
        v["dir"] = run.dir.display().to_string().into();
        v["last_metrics"] = last.unwrap_or_default();
        v["checkpoints"] = serde_json::json!({"updates": updates, "latest": latest, "best": best});
        v["plots"] = serde_json::json!(figures);
        outln!(out, "{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!(out, "run       {} (id {})", rec.name, rec.id);
    outln!(out, "dir       {}", run.dir.display());
    outln!(out, "status    {}", rec.status_now().name());
    if let Some(e) = &rec.error {
        outln!(out, "error     {e}");
    }
    outln!(
        out,
        "algorithm {} on {}, seed {}",
        rec.algorithm,
        rec.env,
        rec.seed
    );
    if !rec.group.is_empty() {
        outln!(out, "group     {}", rec.group);
    }
    outln!(
        out,
        "progress  {} env steps, {} of training over {} session(s), started {} UTC on {}",
        rec.steps,
        duration(rec.wall_seconds),
        rec.sessions,
        runs::timestamp(rec.started),
        if rec.host.is_empty() { "?" } else { &rec.host }
    );
    if let Some(m) = &rec.mlflow_run_id {
        outln!(out, "mlflow    run {m}");
    }
    outln!(out);
    outln!(
        out,
        "checkpoints ({}):",
        run.dir.join("checkpoints").display()
    );
    outln!(out, "  latest  {}", latest.as_deref().unwrap_or("-"));
    outln!(
        out,
        "  kept    {}",
        if updates.is_empty() {
            "-".into()
        } else {
            updates.join(", ")
        }
    );
    match &best {
        Some(b) => outln!(
            out,
            "  best    eval return {} over {} episodes at {} env steps (weights v{})",
            b["eval_return_mean"],
            b["eval_episodes"],
            b["steps"],
            b["weights_version"]
        ),
        None => outln!(out, "  best    -"),
    }
    outln!(out);
    outln!(
        out,
        "plots ({}): {}",
        run.dir.join(plot::PLOTS_DIR).display(),
        if figures.is_empty() {
            format!("none yet (volley-runs plot {})", rec.name)
        } else {
            figures.join(", ")
        }
    );
    outln!(out);
    outln!(out, "last metrics line:");
    match last {
        Some(serde_json::Value::Object(map)) => {
            for (k, v) in map {
                if !v.is_null() {
                    outln!(out, "  {k:<24} {v}");
                }
            }
        }
        _ => outln!(out, "  -"),
    }
    outln!(out);
    outln!(out, "config ({}):", run.dir.join("config.toml").display());
    let config = std::fs::read_to_string(run.dir.join("config.toml"))
        .with_context(|| format!("cannot read {}/config.toml", run.dir.display()))?;
    for l in config.lines() {
        outln!(out, "  {l}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_reference;

    #[test]
    fn references_are_label_equals_value() {
        assert_eq!(
            parse_reference("CleanRL DQN, 10M steps=2109"),
            Ok(("CleanRL DQN, 10M steps".to_string(), 2109.0))
        );
        assert_eq!(parse_reference("a=b=0.5"), Ok(("a=b".to_string(), 0.5)));
        for (bad, why) in [
            ("2109", "LABEL=VALUE"),
            ("x=high", "not a number"),
            ("x=inf", "not a number"),
            (" =3", "label is empty"),
        ] {
            let e = parse_reference(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
