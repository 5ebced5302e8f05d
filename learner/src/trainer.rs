//! The training thread: owns the model and optimizer, turns validated chunks into PPO
//! batches, updates, publishes weights, logs and checkpoints.
//!
//! Per chunk: drop it if its policy is more than `max_policy_lag` versions old;
//! normalise its rewards with the actor's per-env running statistics; compute GAE
//! with the behaviour values that came with it; keep it until the batch holds
//! `ppo.batch_steps` env steps. Then one PPO update, one weights publication.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use metrics::{counter, gauge, histogram};
use tch::{Device, Tensor};
use tokio::sync::mpsc;
use volley_common::telemetry as t;

use crate::checkpoint::{self, Counters};
use crate::config::RunConfig;
use crate::eval::{EvalTracker, Evaluator};
use crate::ppo::{gae, Batch, Ppo, RewardNormalizer};
use crate::rundir::RunDir;
use crate::server::{publish_weights, WeightsSender};
use crate::validate::ValidChunk;

/// What the console status line shows, shared with the status thread.
#[derive(Debug, Default, Clone)]
pub struct Status {
    /// Env steps trained on.
    pub steps: u64,
    /// Env steps received in valid chunks (trained, pending or dropped).
    pub received: u64,
    pub fps: f64,
    pub return_mean: Option<f64>,
    pub updates: u64,
    pub version: u64,
    pub dropped: u64,
    /// Actors connected to the weight stream.
    pub actors: usize,
}

/// A chunk after GAE, ready to be stacked into a batch (CPU tensors, flattened
/// to `T * N` rows).
struct Prepared {
    obs: Tensor,
    actions: Tensor,
    logprobs: Tensor,
    values: Tensor,
    advantages: Tensor,
    returns: Tensor,
}

pub struct Trainer {
    cfg: RunConfig,
    ppo: Ppo,
    device: Device,
    run_dir: RunDir,
    weights_tx: WeightsSender,
    status: Arc<Mutex<Status>>,
    /// Running reward statistics per actor (one stream per env of that actor).
    normalizers: HashMap<String, RewardNormalizer>,
    pending: Vec<Prepared>,
    pending_rows: usize,
    counters: Counters,
    /// Returns and lengths of the last `run.return_window` finished episodes.
    recent: VecDeque<(f32, u32)>,
    lags: Vec<u64>,
    dropped_since_update: u64,
    started: Instant,
    last_update: Instant,
    steps_at_last_update: u64,
    /// Greedy evaluation of every `eval.every_updates`-th version, if enabled.
    eval: EvalTracker,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("counters", &self.counters)
            .field("pending_rows", &self.pending_rows)
            .finish()
    }
}

/// Whether a run's step budget (`run.total_steps`, 0: none) is spent; if so, says so
/// and sets `stop` so the server shuts down too.
pub(crate) fn budget_spent(total: u64, steps: u64, stop: &AtomicBool) -> bool {
    if total == 0 || steps < total {
        return false;
    }
    volley_common::say!("volley-learner: reached run.total_steps = {total}, stopping");
    stop.store(true, Ordering::SeqCst);
    true
}

impl Trainer {
    pub fn new(
        cfg: RunConfig,
        ppo: Ppo,
        device: Device,
        run_dir: RunDir,
        counters: Counters,
        weights_tx: WeightsSender,
        status: Arc<Mutex<Status>>,
    ) -> Trainer {
        let now = Instant::now();
        // Counters exist from the start (at their resumed values), so rate() sees
        // their first increments.
        counter!(t::CHUNKS_DROPPED, "reason" => "policy_lag").increment(0);
        counter!(t::UPDATES).absolute(counters.updates);
        counter!(t::ENV_STEPS).absolute(counters.steps);
        Trainer {
            steps_at_last_update: counters.steps,
            cfg,
            ppo,
            device,
            run_dir,
            weights_tx,
            status,
            normalizers: HashMap::new(),
            pending: Vec::new(),
            pending_rows: 0,
            counters,
            recent: VecDeque::new(),
            lags: Vec::new(),
            dropped_since_update: 0,
            started: now,
            last_update: now,
            eval: EvalTracker::default(),
        }
    }

    /// Evaluates published versions with `evaluator`.
    pub fn set_evaluator(&mut self, evaluator: Evaluator) {
        self.eval.set_evaluator(evaluator);
    }

    /// Restores the reward statistics of a resumed run (actor id -> saved state).
    pub fn restore_normalizers(&mut self, saved: HashMap<String, Vec<u8>>) -> Result<()> {
        for (actor, bytes) in saved {
            let n = RewardNormalizer::from_bytes(&bytes)
                .with_context(|| format!("bad reward-normaliser state for actor {actor}"))?;
            self.normalizers.insert(actor, n);
        }
        Ok(())
    }

    /// Serialises the current weights once and hands them to every weight stream;
    /// returns the bytes, shared.
    pub fn publish(&self) -> bytes::Bytes {
        publish_weights(
            &self.weights_tx,
            self.counters.version,
            self.counters.episodes,
            self.ppo.policy().to_bytes(),
        )
    }

    /// Runs until the queue closes, `stop` is set or the step budget is spent; then
    /// writes a final checkpoint.
    pub fn run(mut self, mut rx: mpsc::Receiver<ValidChunk>, stop: Arc<AtomicBool>) -> Result<()> {
        self.publish();
        if self.cfg.learner.ingest_only {
            return self.drain(rx, stop);
        }
        let total = self.cfg.run.total_steps;
        while !stop.load(Ordering::SeqCst) {
            let Some(chunk) = rx.blocking_recv() else {
                break;
            };
            gauge!(t::QUEUE_DEPTH).set(rx.len() as f64);
            self.eval.poll(&self.run_dir)?;
            self.ingest(chunk)?;
            if self.pending_rows >= self.cfg.ppo.batch_steps {
                self.update()?;
                if budget_spent(total, self.counters.steps, &stop) {
                    break;
                }
            }
        }
        self.checkpoint()?;
        Ok(())
    }

    /// `learner.ingest_only`: takes chunks off the queue and counts them, trains on
    /// nothing. For measuring what the transport costs an actor.
    fn drain(&self, mut rx: mpsc::Receiver<ValidChunk>, stop: Arc<AtomicBool>) -> Result<()> {
        while !stop.load(Ordering::SeqCst) {
            let Some(c) = rx.blocking_recv() else {
                break;
            };
            gauge!(t::QUEUE_DEPTH).set(rx.len() as f64);
            if let Ok(mut s) = self.status.lock() {
                s.received += (c.steps * c.num_envs) as u64;
            }
        }
        Ok(())
    }

    fn ingest(&mut self, c: ValidChunk) -> Result<()> {
        if let Ok(mut s) = self.status.lock() {
            s.received += (c.steps * c.num_envs) as u64;
        }
        let lag = self.counters.version.saturating_sub(c.policy_version);
        histogram!(t::POLICY_LAG).record(lag as f64);
        if lag > self.cfg.rollout.max_policy_lag {
            counter!(t::CHUNKS_DROPPED, "reason" => "policy_lag").increment(1);
            self.dropped_since_update += 1;
            if let Ok(mut s) = self.status.lock() {
                s.dropped += 1;
            }
            return Ok(());
        }
        self.lags.push(lag);
        self.counters.episodes += c.episode_returns.len() as u64;
        for (&r, &l) in c.episode_returns.iter().zip(&c.episode_lengths) {
            if self.recent.len() >= self.cfg.run.return_window {
                self.recent.pop_front();
            }
            self.recent.push_back((r, l));
        }
        let (steps, envs) = (c.steps, c.num_envs);
        let mut rewards = c.rewards_f32();
        if self.cfg.ppo.norm_reward {
            let norm = self
                .normalizers
                .entry(c.actor_id.clone())
                .or_insert_with(|| {
                    RewardNormalizer::new(envs, self.cfg.ppo.gamma, self.cfg.ppo.reward_clip)
                });
            norm.normalize_chunk(
                &mut rewards,
                &c.terminated_bools(),
                &c.truncated_bools(),
                steps,
                envs,
            )?;
        }
        let (adv, ret) = gae(
            &rewards,
            &c.values_f32(),
            &c.terminated_bools(),
            &c.truncated_bools(),
            &c.truncation_values_f32(),
            &c.bootstrap_values_f32(),
            steps,
            envs,
            self.cfg.ppo.gamma,
            self.cfg.ppo.gae_lambda,
        )?;
        let rows = steps * envs;
        self.pending.push(Prepared {
            obs: c.obs_tensor(),
            actions: c.actions_tensor(),
            logprobs: Tensor::from_slice(&c.logprobs_f32()),
            values: Tensor::from_slice(&c.values_f32()),
            advantages: Tensor::from_slice(&adv),
            returns: Tensor::from_slice(&ret),
        });
        self.pending_rows += rows;
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        let p = &self.cfg.ppo;
        let total = self.cfg.run.total_steps;
        if p.anneal_lr && total > 0 {
            let frac = 1.0 - (self.counters.steps as f64 / total as f64).min(1.0);
            p.lr * frac.max(0.0)
        } else {
            p.lr
        }
    }

    fn update(&mut self) -> Result<()> {
        let cat = |f: fn(&Prepared) -> &Tensor, pending: &[Prepared]| -> Tensor {
            let parts: Vec<&Tensor> = pending.iter().map(f).collect();
            Tensor::cat(&parts, 0)
        };
        let d = self.device;
        let batch = Batch {
            obs: cat(|p| &p.obs, &self.pending).to_device(d),
            actions: cat(|p| &p.actions, &self.pending).to_device(d),
            logprobs: cat(|p| &p.logprobs, &self.pending).to_device(d),
            values: cat(|p| &p.values, &self.pending).to_device(d),
            advantages: cat(|p| &p.advantages, &self.pending).to_device(d),
            returns: cat(|p| &p.returns, &self.pending).to_device(d),
        };
        let rows = self.pending_rows;
        self.pending.clear();
        self.pending_rows = 0;
        let lr = self.learning_rate();
        let start = Instant::now();
        let stats = self.ppo.update(&batch, lr)?;
        let took = start.elapsed().as_secs_f64();
        self.counters.updates += 1;
        self.counters.version += 1;
        self.counters.steps += rows as u64;
        let weights = self.publish();
        let c = &self.counters;
        self.eval.after_update(
            self.cfg.eval.every_updates,
            (c.updates, c.version, c.steps),
            weights,
            &self.run_dir,
        )?;

        let now = Instant::now();
        let fps = (self.counters.steps - self.steps_at_last_update) as f64
            / now.duration_since(self.last_update).as_secs_f64().max(1e-9);
        self.last_update = now;
        self.steps_at_last_update = self.counters.steps;
        let (ret_mean, len_mean) = if self.recent.is_empty() {
            (None, None)
        } else {
            let n = self.recent.len() as f64;
            (
                Some(self.recent.iter().map(|r| f64::from(r.0)).sum::<f64>() / n),
                Some(self.recent.iter().map(|r| f64::from(r.1)).sum::<f64>() / n),
            )
        };
        let lag_mean = if self.lags.is_empty() {
            0.0
        } else {
            self.lags.iter().sum::<u64>() as f64 / self.lags.len() as f64
        };
        self.lags.clear();

        counter!(t::UPDATES).increment(1);
        counter!(t::ENV_STEPS).increment(rows as u64);
        gauge!(t::ENV_STEPS_PER_SEC).set(fps);
        histogram!(t::UPDATE_DURATION).record(took);
        gauge!(t::LEARNING_RATE).set(lr);
        gauge!(t::PPO_POLICY_LOSS).set(stats.policy_loss);
        gauge!(t::PPO_VALUE_LOSS).set(stats.value_loss);
        gauge!(t::PPO_ENTROPY).set(stats.entropy);
        gauge!(t::PPO_APPROX_KL).set(stats.approx_kl);
        gauge!(t::PPO_CLIP_FRACTION).set(stats.clip_fraction);
        gauge!(t::PPO_EXPLAINED_VARIANCE).set(stats.explained_variance);

        let mut line = serde_json::json!({
            "update": self.counters.updates,
            "steps": self.counters.steps,
            "time": self.started.elapsed().as_secs_f64(),
            "fps": fps,
            "episode_return_mean": ret_mean,
            "episode_length_mean": len_mean,
            "policy_loss": stats.policy_loss,
            "value_loss": stats.value_loss,
            "entropy": stats.entropy,
            "approx_kl": stats.approx_kl,
            "clip_fraction": stats.clip_fraction,
            "explained_variance": stats.explained_variance,
            "lr": lr,
            "update_seconds": took,
            "weights_version": self.counters.version,
            "policy_lag_mean": lag_mean,
            "chunks_dropped": self.dropped_since_update,
        });
        for (k, v) in self.eval.take_fields() {
            line[k] = v;
        }
        self.dropped_since_update = 0;
        self.run_dir.append_metrics(&line)?;
        if let Ok(mut s) = self.status.lock() {
            s.steps = self.counters.steps;
            s.fps = fps;
            s.return_mean = ret_mean;
            s.updates = self.counters.updates;
            s.version = self.counters.version;
        }
        let every = self.cfg.run.checkpoint_every;
        if every > 0 && self.counters.updates % every == 0 {
            self.checkpoint()?;
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<()> {
        let norms: HashMap<String, Vec<u8>> = self
            .normalizers
            .iter()
            .map(|(k, v)| (k.clone(), v.to_bytes()))
            .collect();
        let weights = self.ppo.policy().to_bytes();
        let state = self.ppo.optimizer_state_bytes();
        checkpoint::save(&self.run_dir, &weights, &state, &self.counters, &norms)
            .context("cannot write checkpoint")
    }
}
