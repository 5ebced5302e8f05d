//! The run directory `runs/<run-id>/`: the resolved config, the run's record
//! `run.json` (`runs.rs`), `metrics.jsonl` (one line per update), `checkpoints/` and
//! the TensorBoard event files `events.out.tfevents.*` (`tensorboard.rs`, one per
//! learner process).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use crate::config::RunConfig;
use crate::runs::{Record, Recorder};

/// What gets each `metrics.jsonl` line after it is written: the TensorBoard event
/// file, the MLflow mirror, the figures. A sink never fails the run and never makes
/// it wait: what goes wrong there is its own to say.
pub trait LineSink: Send + std::fmt::Debug {
    fn line(&mut self, line: &serde_json::Value);
}

#[derive(Debug)]
pub struct RunDir {
    pub path: PathBuf,
    metrics: BufWriter<File>,
    sinks: Vec<Box<dyn LineSink>>,
    /// The run's record, shared with whoever reports on the run (the end of `main`,
    /// the MLflow mirror).
    recorder: Arc<Mutex<Recorder>>,
}

impl RunDir {
    /// Creates `parent/<record.name>/` (it must not exist yet) and writes the resolved
    /// config and the record.
    pub fn create(parent: &Path, record: Record, cfg: &RunConfig) -> Result<RunDir> {
        let path = parent.join(&record.name);
        if path.exists() {
            anyhow::bail!(
                "run directory {} already exists: pick another run.name, or continue it with --resume {}",
                path.display(),
                path.display()
            );
        }
        fs::create_dir_all(path.join("checkpoints"))
            .with_context(|| format!("cannot create run directory {}", path.display()))?;
        // The auth token is a secret: it is not written (pass it again on --resume).
        let mut saved = cfg.clone();
        saved.learner.auth_token.clear();
        let text = toml::to_string_pretty(&saved).context("cannot encode the resolved config")?;
        fs::write(path.join("config.toml"), text)
            .with_context(|| format!("cannot write {}/config.toml", path.display()))?;
        let recorder = Recorder::start(&path, record, false)?;
        Self::with(path, recorder)
    }

    /// Opens an existing run directory (for `--resume`): a new session of its record,
    /// appending to its metrics log.
    pub fn open(path: PathBuf) -> Result<RunDir> {
        let found = crate::runs::read_run(&path)?;
        let recorder = Recorder::start(&path, found.record, true)?;
        Self::with(path, recorder)
    }

    fn with(path: PathBuf, recorder: Recorder) -> Result<RunDir> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path.join("metrics.jsonl"))
            .with_context(|| format!("cannot open {}/metrics.jsonl", path.display()))?;
        Ok(RunDir {
            path,
            metrics: BufWriter::new(file),
            sinks: Vec::new(),
            recorder: Arc::new(Mutex::new(recorder)),
        })
    }

    /// Writes `agent.json`: what the run's agent is built from (the play and
    /// explain commands read it). Rewritten on resume, so runs made before it
    /// existed get one.
    pub fn write_agent(&self, recipe: &volley_common::agent::AgentRecipe) -> Result<()> {
        self.write_json(crate::runs::AGENT, recipe)
    }

    /// Writes `value` as the run directory's JSON file `name` (whole or not at all).
    pub fn write_json(&self, name: &str, value: &impl serde::Serialize) -> Result<()> {
        let path = self.path.join(name);
        let text = serde_json::to_vec_pretty(value)?;
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The run's record (`run.json`).
    pub fn recorder(&self) -> Arc<Mutex<Recorder>> {
        Arc::clone(&self.recorder)
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.path.join("checkpoints")
    }

    /// Hands every metrics line to `sink` too.
    pub fn add_sink(&mut self, sink: Box<dyn LineSink>) {
        self.sinks.push(sink);
    }

    /// Appends one JSON line and flushes it, so a crash loses at most the line being
    /// written; then hands it to the sinks.
    pub fn append_metrics(&mut self, line: &serde_json::Value) -> Result<()> {
        serde_json::to_writer(&mut self.metrics, line)?;
        self.metrics.write_all(b"\n")?;
        self.metrics.flush()?;
        for sink in &mut self.sinks {
            sink.line(line);
        }
        Ok(())
    }
}
