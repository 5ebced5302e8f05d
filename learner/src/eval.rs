//! Evaluation: greedy episodes with a published version of the weights, on a thread
//! of its own so training never waits for it.
//!
//! The training loop offers every `eval.every_updates`-th version; the evaluator
//! takes it if idle (a version offered while one is being evaluated is skipped), runs
//! `eval.episodes` episodes, one per env of its own vector env, with the algorithm's
//! agent in greedy mode (argmax, mean action, no exploration: the same
//! [`volley_common::agent::Agent`] the actors act with), and hands back the mean
//! return and length with the weights it evaluated, so the loop can keep the best as
//! `checkpoints/best`.
//!
//! For vector observations it also explains its decisions as it goes: the gradient
//! feature importance ([`crate::explain::gradient_importance`]) of every decision of
//! every episode, averaged per named feature, exported as
//! `volley_feature_importance{feature}` and kept in the best checkpoint's `eval.json`.
//! For pixel observations, every `eval.saliency_every`-th evaluation writes what the
//! evaluated policy looks at: Greydanus et al.'s perturbation saliency of the first
//! observation of env 0, policy on blue and value on red over the env's frame, as
//! `<run>/saliency/v<version>.png` (and `latest.png`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tch::Device;
use volley_common::agent::{
    observation_shape, observations, ActionBatch, Agent, AgentRecipe, Mode, Progress,
};
use volley_common::checkpoint::CheckpointStore;
use volley_common::env::{make_vec_env, EnvId, StepBatch, VecEnv, VecEnvOptions};

/// The `[eval]` section of the run config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate every this many weights versions (0: never).
    pub every_updates: u64,
    /// Episodes per evaluation (run in parallel, one per env).
    pub episodes: usize,
    /// Env steps after which an unfinished episode counts with its return so far.
    pub max_steps: u32,
    pub seed: u64,
    /// Pixel observations: a saliency frame every this many evaluations (0: never).
    pub saliency_every: u64,
    /// Also evaluate the weights a fresh run starts from (version 0), before any
    /// update: a policy seeded by imitation is measured as it starts.
    pub at_start: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            every_updates: 10,
            episodes: 10,
            max_steps: 10_000,
            saliency_every: 5,
            seed: 12_345,
            at_start: false,
        }
    }
}

/// One evaluation's outcome.
#[derive(Debug, Clone)]
pub struct EvalResult {
    pub version: u64,
    /// Env steps of the run when the evaluated weights were published.
    pub steps: u64,
    pub return_mean: f64,
    pub length_mean: f64,
    pub episodes: usize,
    /// Every episode's return and length, in env order.
    pub returns: Vec<f32>,
    pub lengths: Vec<u32>,
    /// The weights evaluated, for the best checkpoint.
    pub weights: Bytes,
    /// The mean gradient feature importance of every decision, per named feature
    /// (vector observations).
    pub importance: Vec<(String, f64)>,
}

struct Job {
    version: u64,
    steps: u64,
    weights: Bytes,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("version", &self.version)
            .finish()
    }
}

/// The training loop's handle on the evaluation thread.
#[derive(Debug)]
pub struct Evaluator {
    jobs: Option<SyncSender<Job>>,
    results: Receiver<Result<EvalResult, String>>,
    /// Set when the evaluator is dropped: an evaluation in progress ends at its next
    /// step, so a learner that stops never waits for one.
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Evaluator {
    /// Starts the thread; it builds its envs and agent first, so a problem with either
    /// is reported here.
    /// `run_dir` is where saliency frames go (none: not written).
    pub fn start(
        env_id: &EnvId,
        recipe: &AgentRecipe,
        cfg: &EvalConfig,
        run_dir: Option<&Path>,
    ) -> Result<Evaluator> {
        let env = make_vec_env(
            env_id,
            VecEnvOptions {
                num_envs: cfg.episodes.max(1),
                threads: 1,
                // Procgen draws its 512x512 frames only when one is asked for.
                render: true,
            },
        )
        .with_context(|| format!("cannot make the evaluation envs of {env_id}"))?;
        let features = match env.observation_space() {
            volley_common::env::Space::Image { .. } => Vec::new(),
            s => {
                let names = env_id.feature_names();
                if names.len() == s.flat_len() {
                    names
                } else {
                    (0..s.flat_len()).map(|i| format!("obs[{i}]")).collect()
                }
            }
        };
        let agent = recipe
            .build(
                env.observation_space(),
                env.action_space(),
                env.num_envs(),
                cfg.seed,
                Device::Cpu,
            )
            .context("cannot build the evaluation agent")?;
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(0);
        let (result_tx, results) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&cancel);
        let cfg = cfg.clone();
        let saliency_dir = match env.observation_space() {
            volley_common::env::Space::Image { .. } if cfg.saliency_every > 0 => {
                run_dir.map(|d| d.join("saliency"))
            }
            _ => None,
        };
        let thread = std::thread::Builder::new()
            .name("volley-eval".into())
            .spawn(move || {
                // Small-batch forward passes beside the training thread: one torch
                // thread (OpenMP's setting is per thread; the default is every core).
                tch::set_num_threads(1);
                let mut env = env;
                let mut agent = agent;
                for (k, job) in job_rx.into_iter().enumerate() {
                    let saliency = saliency_dir
                        .as_deref()
                        .filter(|_| k as u64 % cfg.saliency_every.max(1) == 0);
                    let r = evaluate(
                        &mut *env,
                        &mut *agent,
                        &cfg,
                        &job,
                        &stop,
                        &features,
                        saliency,
                    )
                    .map_err(|e| format!("{e:#}"));
                    if stop.load(Ordering::SeqCst) || result_tx.send(r).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Evaluator {
            jobs: Some(jobs),
            results,
            cancel,
            thread: Some(thread),
        })
    }

    /// Offers a version for evaluation; false when the evaluator is busy (skipped).
    pub fn offer(&self, version: u64, steps: u64, weights: Bytes) -> bool {
        let Some(jobs) = &self.jobs else { return false };
        match jobs.try_send(Job {
            version,
            steps,
            weights,
        }) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Hands a version to the evaluator, waiting until it takes it (it finishes the
    /// evaluation in progress first); false when the evaluator is gone.
    pub fn offer_waiting(&self, version: u64, steps: u64, weights: Bytes) -> bool {
        let Some(jobs) = &self.jobs else { return false };
        jobs.send(Job {
            version,
            steps,
            weights,
        })
        .is_ok()
    }

    /// A finished evaluation, if any.
    pub fn poll(&self) -> Option<Result<EvalResult, String>> {
        self.results.try_recv().ok()
    }

    /// Waits for the next finished evaluation; `None` when the evaluator is gone.
    fn wait(&self) -> Option<Result<EvalResult, String>> {
        self.results.recv().ok()
    }
}

impl Drop for Evaluator {
    fn drop(&mut self) {
        // Cancelling ends the evaluation in progress; closing the job channel ends
        // the thread.
        self.cancel.store(true, Ordering::SeqCst);
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the training loop keeps of evaluation: the evaluator, the result to log next
/// and the best return so far (whose weights are `checkpoints/best`).
#[derive(Debug, Default)]
pub struct EvalTracker {
    evaluator: Option<Evaluator>,
    last: Option<EvalResult>,
    best: Option<f64>,
    /// The best evaluation's score, steps and version, for the run's record.
    best_record: Option<crate::runs::Best>,
    /// Evaluations handed over and not yet taken, and the last version handed over.
    outstanding: usize,
    offered: Option<u64>,
}

impl EvalTracker {
    pub fn set_evaluator(&mut self, evaluator: Evaluator) {
        self.evaluator = Some(evaluator);
    }

    /// The best evaluation so far (restored from `checkpoints/best` on resume).
    pub fn best(&self) -> Option<f64> {
        self.best
    }

    /// The best evaluation as the run's record keeps it.
    pub fn best_record(&self) -> Option<crate::runs::Best> {
        self.best_record.clone()
    }

    /// Continues from the best checkpoint of a resumed run: a later evaluation must
    /// beat its score to replace it.
    pub fn restore_best(&mut self, store: &CheckpointStore) -> Result<()> {
        let Some(best) = store.load_best().context("cannot read checkpoints/best")? else {
            return Ok(());
        };
        let info: serde_json::Value = match best.files.get("eval.json") {
            Some(b) => serde_json::from_slice(b).context("bad eval.json in checkpoints/best")?,
            None => serde_json::Value::Null,
        };
        self.best = info["eval_return_mean"].as_f64();
        self.best_record = self.best.map(|b| crate::runs::Best {
            eval_return_mean: b,
            steps: info["steps"].as_u64().unwrap_or(0),
            weights_version: info["weights_version"].as_u64().unwrap_or(0),
        });
        Ok(())
    }

    /// After an update published `version`: offers it when `every` divides `count`
    /// (0: never), then takes a finished evaluation if there is one ([`Self::poll`]).
    /// With `wait`, an offered version is never skipped: the call waits for the
    /// evaluation in progress to finish.
    pub fn after_update(
        &mut self,
        every: u64,
        (count, version, steps): (u64, u64, u64),
        weights: Bytes,
        store: &CheckpointStore,
        wait: bool,
    ) -> Result<()> {
        if every > 0 && count % every == 0 {
            if let Some(e) = &self.evaluator {
                let taken = if wait {
                    e.offer_waiting(version, steps, weights)
                } else {
                    e.offer(version, steps, weights)
                };
                if taken {
                    self.outstanding += 1;
                    self.offered = Some(version);
                }
            }
        }
        self.poll(store)
    }

    /// Evaluates `version` (unless it was the last one offered) and waits for every
    /// evaluation still running, taking each result: the end of a run that trains
    /// alone, so that its last weights are measured too.
    pub fn finish(
        &mut self,
        (version, steps): (u64, u64),
        weights: Bytes,
        store: &CheckpointStore,
    ) -> Result<()> {
        let Some(e) = &self.evaluator else {
            return Ok(());
        };
        if self.offered != Some(version) && e.offer_waiting(version, steps, weights) {
            self.outstanding += 1;
            self.offered = Some(version);
        }
        while self.outstanding > 0 {
            let Some(r) = self.evaluator.as_ref().and_then(Evaluator::wait) else {
                break;
            };
            self.take(r, store)?;
        }
        Ok(())
    }

    /// Takes a finished evaluation, if any: metrics, and the best checkpoint when it
    /// beats every earlier one.
    pub fn poll(&mut self, store: &CheckpointStore) -> Result<()> {
        let Some(r) = self.evaluator.as_ref().and_then(Evaluator::poll) else {
            return Ok(());
        };
        self.take(r, store)
    }

    fn take(&mut self, r: Result<EvalResult, String>, store: &CheckpointStore) -> Result<()> {
        self.outstanding = self.outstanding.saturating_sub(1);
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                volley_common::say!("volley-learner: evaluation failed: {e}");
                return Ok(());
            }
        };
        metrics::gauge!(volley_common::telemetry::EVAL_RETURN).set(r.return_mean);
        metrics::gauge!(volley_common::telemetry::EVAL_LENGTH).set(r.length_mean);
        for (feature, v) in &r.importance {
            metrics::gauge!(volley_common::telemetry::FEATURE_IMPORTANCE, "feature" => feature.clone())
                .set(*v);
        }
        if self.best.is_none_or(|b| r.return_mean > b) {
            self.best = Some(r.return_mean);
            self.best_record = Some(crate::runs::Best {
                eval_return_mean: r.return_mean,
                steps: r.steps,
                weights_version: r.version,
            });
            let info = serde_json::json!({
                "weights_version": r.version,
                "steps": r.steps,
                "eval_return_mean": r.return_mean,
                "eval_length_mean": r.length_mean,
                "eval_episodes": r.episodes,
                "eval_returns": r.returns,
                "eval_lengths": r.lengths,
                "feature_importance": r.importance.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<String, serde_json::Value>>(),
            });
            let info = serde_json::to_vec_pretty(&info)?;
            store
                .save_best(&[("weights.bin", &r.weights), ("eval.json", &info)])
                .context("cannot write the best checkpoint")?;
        }
        self.last = Some(r);
        Ok(())
    }

    /// The `eval_*` fields of the next metrics line (nulls when no evaluation
    /// finished since the last one).
    pub fn take_fields(&mut self) -> [(&'static str, serde_json::Value); 3] {
        let e = self.last.take();
        [
            ("eval_return_mean", e.as_ref().map(|e| e.return_mean).into()),
            ("eval_length_mean", e.as_ref().map(|e| e.length_mean).into()),
            ("eval_weights_version", e.as_ref().map(|e| e.version).into()),
        ]
    }
}

/// Writes the perturbation saliency of env 0's observation over its frame.
fn saliency_frame(
    env: &mut dyn VecEnv,
    agent: &dyn Agent,
    obs: &tch::Tensor,
    act: &ActionBatch,
    dir: &Path,
    version: u64,
) -> Result<()> {
    use crate::explain::{overlay, perturbation_saliency, Overlay, Perturbation};
    let row = obs.f_narrow(0, 0, 1)?.f_to_kind(tch::Kind::Float)?;
    let taken = ActionBatch {
        discrete: act.discrete.first().map(|&a| vec![a]).unwrap_or_default(),
        ..ActionBatch::default()
    };
    let (pi, v) = perturbation_saliency(agent, &row, &taken, &Perturbation::default())?;
    let mut frame = env.render(0)?;
    let blue = Overlay {
        channel: 2,
        constant: 200.0,
        sigma: None,
    };
    overlay(&mut frame, &pi, &blue)?;
    if let Some(v) = &v {
        overlay(&mut frame, v, &Overlay { channel: 0, ..blue })?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("v{version}.png"));
    crate::video::save_png(&frame, &path)?;
    std::fs::copy(&path, dir.join("latest.png"))?;
    Ok(())
}

/// Adds one step to the episodes still running; true once every env's first episode
/// has ended.
fn record(
    batch: &StepBatch,
    done: &mut [Option<(f32, u32)>],
    ret: &mut [f32],
    len: &mut [u32],
) -> bool {
    for i in 0..done.len() {
        if done[i].is_some() {
            continue;
        }
        ret[i] += batch.reward[i];
        len[i] += 1;
        if batch.done(i) {
            done[i] = Some((batch.episode_return[i], batch.episode_length[i]));
        }
    }
    done.iter().all(Option::is_some)
}

fn evaluate(
    env: &mut dyn VecEnv,
    agent: &mut dyn Agent,
    cfg: &EvalConfig,
    job: &Job,
    cancel: &AtomicBool,
    features: &[String],
    saliency: Option<&Path>,
) -> Result<EvalResult> {
    agent
        .load_weights(&job.weights)
        .context("evaluation cannot load the published weights")?;
    let n = env.num_envs();
    let shape = observation_shape(env.observation_space());
    let space = env.action_space().clone();
    let progress = Progress {
        version: job.version,
        steps: job.steps,
        episodes: 0,
    };
    let (mut act, mut clipped) = (ActionBatch::default(), Vec::new());
    env.reset(cfg.seed)?;
    let mut done: Vec<Option<(f32, u32)>> = vec![None; n];
    let (mut ret, mut len) = (vec![0f32; n], vec![0u32; n]);
    let (mut importance, mut decisions) = (vec![0f64; features.len()], 0u64);
    for _ in 0..cfg.max_steps {
        if cancel.load(Ordering::SeqCst) {
            anyhow::bail!("evaluation cancelled");
        }
        let obs = observations(&env.batch().obs, n, &shape)?;
        agent.act(&obs, &progress, Mode::Greedy, &mut act)?;
        if let Some(dir) = saliency.filter(|_| len[0] == 0 && done[0].is_none()) {
            if let Err(e) = saliency_frame(env, &*agent, &obs, &act, dir, job.version) {
                volley_common::say!(
                    "volley-learner: no saliency frame for weights v{}: {e:#}",
                    job.version
                );
            }
        }
        if !features.is_empty() {
            let rows = crate::explain::gradient_importance(&*agent, &obs, &act)?;
            for (row, _) in rows.iter().zip(&done).filter(|(_, d)| d.is_none()) {
                for (s, v) in importance.iter_mut().zip(row) {
                    *s += f64::from(*v);
                }
                decisions += 1;
            }
        }
        let batch = env.step(act.env_actions(&space, &mut clipped)?)?;
        if record(batch, &mut done, &mut ret, &mut len) {
            break;
        }
    }
    let finished: Vec<(f32, u32)> = done
        .iter()
        .zip(ret.iter().zip(&len))
        .map(|(d, (&r, &l))| d.unwrap_or((r, l)))
        .collect();
    let k = finished.len().max(1) as f64;
    Ok(EvalResult {
        version: job.version,
        steps: job.steps,
        return_mean: finished.iter().map(|e| f64::from(e.0)).sum::<f64>() / k,
        length_mean: finished.iter().map(|e| f64::from(e.1)).sum::<f64>() / k,
        episodes: finished.len(),
        returns: finished.iter().map(|e| e.0).collect(),
        lengths: finished.iter().map(|e| e.1).collect(),
        weights: job.weights.clone(),
        importance: features
            .iter()
            .cloned()
            .zip(importance.iter().map(|s| s / decisions.max(1) as f64))
            .collect(),
    })
}
