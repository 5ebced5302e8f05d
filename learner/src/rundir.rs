//! The run directory `runs/<run-id>/`: the resolved config, `metrics.jsonl` (one
//! line per update) and `checkpoints/`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::RunConfig;

#[derive(Debug)]
pub struct RunDir {
    pub path: PathBuf,
    metrics: BufWriter<File>,
}

impl RunDir {
    /// Creates `parent/id/` (it must not exist yet) and writes the resolved config.
    pub fn create(parent: &Path, id: &str, cfg: &RunConfig) -> Result<RunDir> {
        let path = parent.join(id);
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
        Self::open(path)
    }

    /// Opens an existing run directory (for `--resume`), appending to its metrics log.
    pub fn open(path: PathBuf) -> Result<RunDir> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path.join("metrics.jsonl"))
            .with_context(|| format!("cannot open {}/metrics.jsonl", path.display()))?;
        Ok(RunDir {
            path,
            metrics: BufWriter::new(file),
        })
    }

    /// The resolved config of an existing run.
    pub fn read_config(path: &Path) -> Result<toml::Table> {
        let p = path.join("config.toml");
        volley_common::config::read_file(&p).with_context(|| {
            format!(
                "{} is not a run directory (no readable config.toml)",
                path.display()
            )
        })
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.path.join("checkpoints")
    }

    /// Appends one JSON line and flushes it, so a crash loses at most the line being
    /// written.
    pub fn append_metrics(&mut self, line: &serde_json::Value) -> Result<()> {
        serde_json::to_writer(&mut self.metrics, line)?;
        self.metrics.write_all(b"\n")?;
        self.metrics.flush()?;
        Ok(())
    }
}
