//! The run's figures kept current while it trains (`[tracking] plots`): `plots/` of
//! the run directory is redrawn every `tracking.plot_every_evals` evaluations, on a
//! thread of its own so that training never waits for a drawing (a redraw asked for
//! while one is under way is skipped), and once more at the end, before the run's
//! files go to MLflow. With `tracking.compare`, the runs and seed groups it names are
//! read again at each redraw (they may be training too) and drawn beside this run in
//! `plots/compare`. A figure that fails is said once; the run goes on.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::{bail, Result};
use crossbeam_channel::{bounded, Receiver, Sender};

use crate::config::RunConfig;
use crate::plot::{self, Group, Metric, PlotError, Run, RunFigures, PLOTS_DIR};
use crate::rundir::LineSink;
use crate::runs;

/// Metrics lines between redraws when evaluation is off.
const LINES_WITHOUT_EVAL: u64 = 100;

/// A run or seed group to draw beside this run: its label and run directories.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub label: String,
    pub dirs: Vec<PathBuf>,
}

/// Resolves `tracking.compare` in `root` (the runs folder), leaving out the run in
/// `own` (a seed compared with its own group). A name that finds nothing is an error
/// that says what was looked for.
pub fn targets(root: &Path, names: &[String], own: &Path) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    for name in names {
        let found = runs::resolve_group(root, name)
            .map_err(|e| anyhow::anyhow!("tracking.compare = '{name}': {e:#}"))?;
        let is_group = found.iter().any(|r| r.record.group == *name);
        let label = if is_group {
            name.clone()
        } else {
            found[0].record.name.clone()
        };
        let dirs: Vec<PathBuf> = found
            .into_iter()
            .map(|r| r.dir)
            .filter(|d| !same_dir(d, own))
            .collect();
        if dirs.is_empty() {
            bail!("tracking.compare = '{name}' names only this run itself");
        }
        out.push(Target { label, dirs });
    }
    Ok(out)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The runs of the targets as they are now; runs with nothing to read yet are left out.
fn read_groups(targets: &[Target]) -> Vec<Group> {
    targets
        .iter()
        .filter_map(|t| {
            let runs: Vec<Run> = t.dirs.iter().filter_map(|d| Run::read(d).ok()).collect();
            (!runs.is_empty()).then(|| Group {
                label: t.label.clone(),
                runs,
            })
        })
        .collect()
}

/// What the drawing thread needs.
#[derive(Debug, Clone)]
struct Job {
    dir: PathBuf,
    targets: Vec<Target>,
    metric: Metric,
}

impl Job {
    fn draw(&self) -> plot::PlotResult<Vec<PathBuf>> {
        let mut compare = read_groups(&self.targets);
        // A comparison needs the metric in every run; runs without it yet wait.
        compare.iter_mut().for_each(|g| {
            g.runs
                .retain(|r| !r.series(self.metric.key(), plot::Axis::Steps).is_empty())
        });
        compare.retain(|g| !g.runs.is_empty());
        let opts = RunFigures {
            compare,
            metric: self.metric,
            ..RunFigures::default()
        };
        plot::draw_run(&self.dir, &self.dir.join(PLOTS_DIR), &opts)
    }

    /// Draws; says a failure once (`said`), and whether to go on drawing.
    fn draw_or_say(&self, said: &mut bool) -> bool {
        match self.draw() {
            Ok(_) | Err(PlotError::BadInput(_)) => true,
            Err(e) => {
                if !*said {
                    volley_common::say!(
                        "volley-learner: figures: {e}; the run goes on (draw them later with volley-runs plot)"
                    );
                    *said = true;
                }
                !matches!(e, PlotError::Font(_))
            }
        }
    }
}

/// The figures of a run, redrawn while it trains.
#[derive(Debug)]
pub struct Figures {
    job: Job,
    tx: Sender<()>,
    thread: JoinHandle<bool>,
    every: u64,
    evaluates: bool,
}

impl Figures {
    /// Starts the drawing thread for the run in `dir` of config `cfg`; `None` when
    /// `tracking.plots` is off. Fails on a `tracking.compare` that names no run.
    pub fn start(dir: &Path, cfg: &RunConfig) -> Result<Option<Figures>> {
        if !cfg.tracking.plots {
            return Ok(None);
        }
        let targets = targets(Path::new(&cfg.run.dir), &cfg.tracking.compare, dir)?;
        let evaluates = cfg.eval.every_updates > 0;
        let job = Job {
            dir: dir.to_path_buf(),
            targets,
            metric: if evaluates {
                Metric::Eval
            } else {
                Metric::Train
            },
        };
        let (tx, rx) = bounded::<()>(1);
        let worker = job.clone();
        let thread = std::thread::Builder::new()
            .name("volley-figures".into())
            .spawn(move || redraw(worker, rx))?;
        Ok(Some(Figures {
            job,
            tx,
            thread,
            every: cfg.tracking.plot_every_evals,
            evaluates,
        }))
    }

    /// The sink that asks for redraws as metrics lines come.
    pub fn trigger(&self) -> Trigger {
        Trigger {
            tx: self.tx.clone(),
            every: if self.evaluates {
                self.every
            } else {
                LINES_WITHOUT_EVAL
            },
            evals: self.evaluates,
            seen: 0,
        }
    }

    /// Stops the thread and draws the final figures. Returns the files written.
    pub fn finish(self) -> Vec<PathBuf> {
        let Figures {
            job, tx, thread, ..
        } = self;
        drop(tx);
        let go_on = thread.join().unwrap_or(true);
        if !go_on {
            return Vec::new();
        }
        match job.draw() {
            Ok(files) => files,
            Err(PlotError::BadInput(_)) => Vec::new(),
            Err(e) => {
                volley_common::say!(
                    "volley-learner: figures: {e} (draw them later with volley-runs plot)"
                );
                Vec::new()
            }
        }
    }
}

/// The drawing thread: one redraw per request until the learner ends; returns
/// whether drawing still works.
fn redraw(job: Job, rx: Receiver<()>) -> bool {
    let mut said = false;
    while rx.recv().is_ok() {
        if !job.draw_or_say(&mut said) {
            // No font: nothing will draw; take requests without drawing.
            while rx.recv().is_ok() {}
            return false;
        }
    }
    true
}

/// Asks for a redraw every `every` evaluations (or metrics lines, without
/// evaluation), never waiting.
#[derive(Debug)]
pub struct Trigger {
    tx: Sender<()>,
    every: u64,
    evals: bool,
    seen: u64,
}

impl LineSink for Trigger {
    fn line(&mut self, line: &serde_json::Value) {
        let counts = !self.evals || line["eval_return_mean"].is_number();
        if counts {
            self.seen += 1;
            if self.seen % self.every == 0 {
                let _ = self.tx.try_send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_groups_and_runs_and_leave_this_run_out() {
        let root = std::env::temp_dir().join(format!("volley-figures-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (name, group) in [("a-seed1", "a"), ("a-seed2", "a"), ("solo", "")] {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("config.toml"), "algorithm = \"ppo\"\n").unwrap();
            runs::Record::new(name, group, "ppo", "CartPole-v1", 1)
                .write(&dir)
                .unwrap();
        }
        let t = targets(&root, &["a".into(), "solo".into()], &root.join("a-seed2")).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].label, "a");
        assert_eq!(t[0].dirs, vec![root.join("a-seed1")]);
        assert_eq!(t[1].label, "solo");
        let e = targets(&root, &["nope".into()], &root.join("solo")).unwrap_err();
        assert!(
            format!("{e:#}").contains("tracking.compare = 'nope'"),
            "{e:#}"
        );
        let e = targets(&root, &["solo".into()], &root.join("solo")).unwrap_err();
        assert!(format!("{e:#}").contains("only this run"), "{e:#}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_trigger_asks_every_few_evaluations_and_never_waits() {
        let (tx, rx) = bounded::<()>(1);
        let mut t = Trigger {
            tx,
            every: 2,
            evals: true,
            seen: 0,
        };
        let plain = serde_json::json!({"steps": 1, "eval_return_mean": null});
        let eval = serde_json::json!({"steps": 1, "eval_return_mean": 20.0});
        t.line(&plain);
        t.line(&eval);
        assert!(rx.try_recv().is_err());
        t.line(&eval);
        assert!(rx.try_recv().is_ok());
        // Nobody drawing: requests past the first are dropped, not queued.
        for _ in 0..10 {
            t.line(&eval);
        }
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
    }
}
