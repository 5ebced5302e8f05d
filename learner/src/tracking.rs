//! What watches a run besides `metrics.jsonl`, set up in one place: the TensorBoard
//! event file, the live MLflow mirror and the figures, each a sink of the run
//! directory's metrics lines ([`crate::rundir::LineSink`]); and their end, in order:
//! the final figures first, so that they go to MLflow with the other artifacts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::config::RunConfig;
use crate::figures::Figures;
use crate::mlflow::{self, Mirror};
use crate::plot::PLOTS_DIR;
use crate::rundir::RunDir;
use crate::runs::RunStatus;

/// How long the MLflow mirror gets at the end for the rest of the metrics, the
/// artifacts and the status.
pub const MLFLOW_FINISH: Duration = Duration::from_secs(30);

/// The run's trackers that outlive the training loop.
#[derive(Debug)]
pub struct Tracking {
    dir: PathBuf,
    mlflow: Option<Mirror>,
    figures: Option<Figures>,
}

impl Tracking {
    /// Starts what `cfg.tracking` asks for on `run_dir` and adds their sinks to it.
    /// Fails on a `tracking.compare` that names no run.
    pub fn start(cfg: &RunConfig, run_dir: &mut RunDir) -> Result<Tracking> {
        if cfg.tracking.tensorboard {
            let tb = crate::tensorboard::Mirror::open(&run_dir.path, true);
            run_dir.add_sink(Box::new(tb));
        }
        let mlflow = match cfg.tracking.mlflow() {
            Some(uri) => {
                let recorder = run_dir.recorder();
                let record = recorder
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .record()
                    .clone();
                let rec = Arc::clone(&recorder);
                // The MLflow run id goes into run.json as soon as the run exists
                // there, so a resume continues it and export completes it.
                let mirror = Mirror::start(
                    &uri,
                    &cfg.tracking.mlflow_experiment,
                    &record,
                    &toml::Table::try_from(cfg)?,
                    move |id| {
                        if let Ok(mut r) = rec.lock() {
                            if let Err(e) = r.set_mlflow_run(id) {
                                volley_common::say!(
                                    "volley-learner: cannot write the run record: {e:#}"
                                );
                            }
                        }
                    },
                )?;
                run_dir.add_sink(Box::new(mirror.lines()));
                volley_common::say!(
                    "volley-learner: mirroring the run to MLflow at {uri} (experiment {})",
                    cfg.tracking.mlflow_experiment
                );
                Some(mirror)
            }
            None => None,
        };
        let figures = Figures::start(&run_dir.path, cfg)?;
        if let Some(f) = &figures {
            run_dir.add_sink(Box::new(f.trigger()));
        }
        Ok(Tracking {
            dir: run_dir.path.clone(),
            mlflow,
            figures,
        })
    }

    /// Draws the final figures, then ends the MLflow run with `status` and the run
    /// directory's artifacts.
    pub fn finish(self, status: RunStatus) {
        if let Some(f) = self.figures {
            let files = f.finish();
            if !files.is_empty() {
                volley_common::say!(
                    "volley-learner: figures in {}/{PLOTS_DIR}/ ({} files)",
                    self.dir.display(),
                    files.len()
                );
            }
        }
        if let Some(m) = self.mlflow {
            m.finish(
                mlflow::status_of(status),
                mlflow::artifacts_of(&self.dir),
                MLFLOW_FINISH,
            );
        }
    }
}
