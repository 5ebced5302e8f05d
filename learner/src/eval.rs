//! Evaluation: greedy episodes with a published version of the weights, on a thread
//! of its own so training never waits for it.
//!
//! The trainer offers every `eval.every_updates`-th version; the evaluator takes it
//! if idle (a version offered while one is being evaluated is skipped), runs
//! `eval.episodes` episodes, one per env of its own vector env, with the greedy action
//! (argmax or mean), and hands back the mean return and length with the weights it
//! evaluated, so the trainer can keep the best as `checkpoints/best`.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use volley_common::env::{make_vec_env, Actions, EnvId, ObsBuf, Space, VecEnvOptions};
use volley_common::nn::mpdqn::{MpdqnNet, MpdqnSpec};
use volley_common::nn::sac::{SacActor, SacSpec};
use volley_common::nn::{ModelSpec, Policy};

/// Which network acts in evaluation.
#[derive(Debug, Clone)]
pub enum EvalNet {
    /// A PPO policy: argmax or mean action.
    Policy(ModelSpec),
    /// A SAC actor: the squashed mean action.
    Sac(SacSpec),
    /// MP-DQN: the greedy choice with the parameter network's parameters.
    Mpdqn(MpdqnSpec),
}

enum Net {
    Policy(Policy),
    Sac(SacActor),
    Mpdqn(MpdqnNet),
}

/// A greedy action per env.
enum Greedy {
    /// Discrete actions, or continuous ones (not yet clipped to the bounds).
    Tensor(Tensor),
    /// Parameterised: choices and parameters in env units.
    Parameterised { choice: Vec<i64>, params: Vec<f32> },
}

impl Net {
    fn load(&mut self, bytes: &[u8]) -> volley_common::nn::NnResult<()> {
        match self {
            Net::Policy(p) => p.load_bytes(bytes),
            Net::Sac(a) => a.load_bytes(bytes),
            Net::Mpdqn(m) => m.load_bytes(bytes),
        }
    }

    fn greedy(&self, obs: &Tensor) -> Result<Greedy> {
        Ok(match self {
            Net::Policy(p) => Greedy::Tensor(p.act_greedy(obs)?.action),
            Net::Sac(a) => Greedy::Tensor(a.act_deterministic(obs)?),
            Net::Mpdqn(m) => {
                let flat = Vec::<f32>::try_from(obs.to_kind(Kind::Float).flatten(0, -1))?;
                let a = m.act_greedy(&flat)?;
                Greedy::Parameterised {
                    choice: a.choice,
                    params: a.env_params,
                }
            }
        })
    }
}

/// The `[eval]` section of the run config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate every this many updates (0: never).
    pub every_updates: u64,
    /// Episodes per evaluation (run in parallel, one per env).
    pub episodes: usize,
    /// Env steps after which an unfinished episode counts with its return so far.
    pub max_steps: u32,
    pub seed: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            every_updates: 10,
            episodes: 10,
            max_steps: 10_000,
            seed: 12_345,
        }
    }
}

/// One evaluation's outcome.
#[derive(Debug, Clone)]
pub struct EvalResult {
    pub version: u64,
    /// Env steps trained on when the evaluated weights were published.
    pub steps: u64,
    pub return_mean: f64,
    pub length_mean: f64,
    pub episodes: usize,
    /// The weights evaluated, for the best checkpoint.
    pub weights: Bytes,
}

struct Job {
    version: u64,
    steps: u64,
    weights: Bytes,
}

/// The trainer's handle on the evaluation thread.
#[derive(Debug)]
pub struct Evaluator {
    jobs: Option<SyncSender<Job>>,
    results: Receiver<Result<EvalResult, String>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("version", &self.version)
            .finish()
    }
}

impl Evaluator {
    /// Starts the thread; it builds its env and policy first, so a problem with either
    /// is reported here.
    pub fn start(env_id: &EnvId, net: &EvalNet, cfg: &EvalConfig) -> Result<Evaluator> {
        let env = make_vec_env(
            env_id,
            VecEnvOptions {
                num_envs: cfg.episodes.max(1),
                threads: 1,
            },
        )
        .with_context(|| format!("cannot make the evaluation envs of {env_id}"))?;
        let policy = match net {
            EvalNet::Policy(spec) => Net::Policy(Policy::new(spec.clone(), Device::Cpu)?),
            EvalNet::Sac(spec) => Net::Sac(SacActor::new(spec.clone(), Device::Cpu)?),
            EvalNet::Mpdqn(spec) => Net::Mpdqn(MpdqnNet::new(spec.clone(), Device::Cpu)?),
        };
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(0);
        let (result_tx, results) = mpsc::channel();
        let cfg = cfg.clone();
        let thread = std::thread::Builder::new()
            .name("volley-eval".into())
            .spawn(move || {
                // Small-batch forward passes beside the training thread: one torch
                // thread (OpenMP's setting is per thread; the default is every core).
                tch::set_num_threads(1);
                let mut env = env;
                let mut policy = policy;
                for job in job_rx {
                    let r =
                        evaluate(&mut *env, &mut policy, &cfg, &job).map_err(|e| format!("{e:#}"));
                    if result_tx.send(r).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Evaluator {
            jobs: Some(jobs),
            results,
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

    /// A finished evaluation, if any.
    pub fn poll(&self) -> Option<Result<EvalResult, String>> {
        self.results.try_recv().ok()
    }
}

impl Drop for Evaluator {
    fn drop(&mut self) {
        // Closing the job channel ends the thread after its current evaluation.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a trainer keeps of evaluation: the evaluator, the result to log next and the
/// best return so far (whose weights are `checkpoints/best`).
#[derive(Debug, Default)]
pub struct EvalTracker {
    evaluator: Option<Evaluator>,
    last: Option<EvalResult>,
    best: Option<f64>,
}

impl EvalTracker {
    pub fn set_evaluator(&mut self, evaluator: Evaluator) {
        self.evaluator = Some(evaluator);
    }

    /// After an update published `version`: offers it when `every` divides `count`
    /// (0: never), then takes a finished evaluation if there is one ([`Self::poll`]).
    pub fn after_update(
        &mut self,
        every: u64,
        (count, version, steps): (u64, u64, u64),
        weights: Bytes,
        run_dir: &crate::rundir::RunDir,
    ) -> Result<()> {
        if every > 0 && count % every == 0 {
            if let Some(e) = &self.evaluator {
                e.offer(version, steps, weights);
            }
        }
        self.poll(run_dir)
    }

    /// Takes a finished evaluation, if any: metrics, and the best checkpoint when it
    /// beats every earlier one.
    pub fn poll(&mut self, run_dir: &crate::rundir::RunDir) -> Result<()> {
        let Some(r) = self.evaluator.as_ref().and_then(Evaluator::poll) else {
            return Ok(());
        };
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                volley_common::say!("volley-learner: evaluation failed: {e}");
                return Ok(());
            }
        };
        metrics::gauge!(volley_common::telemetry::EVAL_RETURN).set(r.return_mean);
        metrics::gauge!(volley_common::telemetry::EVAL_LENGTH).set(r.length_mean);
        if self.best.is_none_or(|b| r.return_mean > b) {
            self.best = Some(r.return_mean);
            let info = serde_json::json!({
                "weights_version": r.version,
                "steps": r.steps,
                "eval_return_mean": r.return_mean,
                "eval_length_mean": r.length_mean,
                "eval_episodes": r.episodes,
            });
            crate::checkpoint::save_best(run_dir, &r.weights, &info)
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

/// Adds one step to the episodes still running; true once every env's first episode
/// has ended.
fn record(
    batch: &volley_common::env::StepBatch,
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
    env: &mut dyn volley_common::env::VecEnv,
    policy: &mut Net,
    cfg: &EvalConfig,
    job: &Job,
) -> Result<EvalResult> {
    policy
        .load(&job.weights)
        .context("evaluation cannot load the published weights")?;
    let n = env.num_envs();
    let shape: Vec<i64> = match env.observation_space() {
        Space::Image {
            height,
            width,
            channels,
        } => vec![n as i64, *height as i64, *width as i64, *channels as i64],
        s => vec![n as i64, s.flat_len() as i64],
    };
    let discrete = matches!(env.action_space(), Space::Discrete { .. });
    let (low, high) = match env.action_space() {
        Space::Box { low, high, .. } => (low.clone(), high.clone()),
        _ => (Vec::new(), Vec::new()),
    };
    env.reset(cfg.seed)?;
    let mut done: Vec<Option<(f32, u32)>> = vec![None; n];
    let (mut ret, mut len) = (vec![0f32; n], vec![0u32; n]);
    for _ in 0..cfg.max_steps {
        let obs = match &env.batch().obs {
            ObsBuf::U8(v) => Tensor::from_slice(v),
            ObsBuf::F32(v) => Tensor::from_slice(v),
        }
        .view(shape.as_slice());
        let action = match policy.greedy(&obs)? {
            Greedy::Tensor(t) => t,
            Greedy::Parameterised { choice, params } => {
                let batch = env.step(Actions::Parameterised {
                    choice: &choice,
                    params: &params,
                })?;
                if record(batch, &mut done, &mut ret, &mut len) {
                    break;
                }
                continue;
            }
        };
        let flat = action
            .to_kind(if discrete { Kind::Int64 } else { Kind::Float })
            .flatten(0, -1);
        let batch = if discrete {
            let a = Vec::<i64>::try_from(&flat)?;
            env.step(Actions::Discrete(&a))?
        } else {
            let dim = low.len().max(1);
            let a: Vec<f32> = Vec::<f32>::try_from(&flat)?
                .iter()
                .enumerate()
                .map(|(j, v)| v.clamp(low[j % dim], high[j % dim]))
                .collect();
            env.step(Actions::Continuous(&a))?
        };
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
        weights: job.weights.clone(),
    })
}
