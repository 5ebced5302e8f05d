//! The training thread of off-policy runs (SAC, MP-DQN): chunks become transitions
//! in the replay buffer, and each chunk's env steps buy `replay_ratio` gradient
//! updates, run before the next chunk is taken off the queue. The ratio therefore
//! holds exactly: a learner that falls behind leaves chunks in its bounded queue,
//! which fills and slows the actors (backpressure), instead of letting the ratio
//! drift.
//!
//! The first updates (and weights version 1) come once the buffer holds
//! `learning_starts` transitions. Until then SAC's actors act uniformly at random
//! (CleanRL's warm-up) and MP-DQN's act with the initial networks and epsilon 1.
//!
//! The algorithm is behind [`OffPolicyAlgorithm`]: its replay settings, one update on
//! a sampled batch, and the bytes actors and checkpoints need.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use metrics::{gauge, histogram};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};
use tokio::sync::mpsc;
use volley_common::telemetry as t;

use crate::checkpoint::{self, Counters};
use crate::config::RunConfig;
use crate::eval::{EvalTracker, Evaluator};
use crate::replay::ReplayBatch;
use crate::replay::ReplayBuffer;
use crate::rundir::RunDir;
use crate::sac::UpdateBudget;
use crate::server::{publish_weights, WeightsSender};
use crate::trainer::{budget_spent, Status};
use crate::validate::ValidChunk;

/// The replay settings of an off-policy algorithm's config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplaySettings {
    /// Capacity in transitions.
    pub capacity: usize,
    /// Refuse storage over this many bytes.
    pub max_bytes: u64,
    pub batch_size: usize,
    /// Transitions stored before the first update.
    pub learning_starts: u64,
    /// Gradient updates per env step.
    pub replay_ratio: f64,
}

/// What the off-policy training thread needs of an algorithm.
pub trait OffPolicyAlgorithm: Send {
    fn replay_settings(&self) -> ReplaySettings;
    /// Observation elements per transition.
    fn obs_dim(&self) -> usize;
    /// Action floats per transition ([`crate::validate::ActionSpec::replay_width`]).
    fn action_width(&self) -> usize;
    /// One gradient update on a batch; returns the statistics to log, by name.
    fn update(&mut self, batch: &ReplayBatch) -> Result<Vec<(&'static str, f64)>>;
    /// Sets the algorithm's gauges from an update's statistics.
    fn record(&self, stats: &[(&'static str, f64)]);
    /// The weights actors act with.
    fn actor_weights(&self) -> Vec<u8>;
    /// Everything needed to continue training (networks, targets, optimisers).
    fn state_to_bytes(&self) -> Vec<u8>;
}

/// The training thread of off-policy runs.
pub struct OffPolicyTrainer {
    cfg: RunConfig,
    algo: Box<dyn OffPolicyAlgorithm>,
    settings: ReplaySettings,
    replay: ReplayBuffer,
    budget: UpdateBudget,
    rng: StdRng,
    run_dir: RunDir,
    weights_tx: WeightsSender,
    status: Arc<Mutex<Status>>,
    /// `updates`: gradient updates; `steps`: env steps stored; `version`: weights
    /// published (one per chunk that brought updates).
    counters: Counters,
    /// Env steps stored since the buffer reached `learning_starts`.
    steps_learning: u64,
    recent: VecDeque<(f32, u32)>,
    started: Instant,
    last_log: (Instant, u64, u64),
    eval: EvalTracker,
}

impl std::fmt::Debug for OffPolicyTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffPolicyTrainer")
            .field("counters", &self.counters)
            .finish()
    }
}

impl OffPolicyTrainer {
    pub fn new(
        cfg: RunConfig,
        algo: Box<dyn OffPolicyAlgorithm>,
        device: Device,
        run_dir: RunDir,
        counters: Counters,
        weights_tx: WeightsSender,
        status: Arc<Mutex<Status>>,
    ) -> Result<OffPolicyTrainer> {
        let settings = algo.replay_settings();
        let replay = ReplayBuffer::new(
            settings.capacity,
            algo.obs_dim(),
            algo.action_width(),
            settings.max_bytes,
            device,
        )
        .with_context(|| {
            let a = cfg.algorithm.name();
            format!("cannot allocate the replay buffer (see {a}'s buffer size and memory bound)")
        })?;
        gauge!(t::REPLAY_RATIO_TARGET).set(settings.replay_ratio);
        metrics::counter!(t::UPDATES).absolute(counters.updates);
        metrics::counter!(t::ENV_STEPS).absolute(counters.steps);
        let now = Instant::now();
        Ok(OffPolicyTrainer {
            rng: StdRng::seed_from_u64(cfg.run.seed),
            last_log: (now, counters.steps, counters.updates),
            cfg,
            algo,
            settings,
            replay,
            budget: UpdateBudget::default(),
            run_dir,
            weights_tx,
            status,
            counters,
            steps_learning: 0,
            recent: VecDeque::new(),
            started: now,
            eval: EvalTracker::default(),
        })
    }

    pub fn set_evaluator(&mut self, evaluator: Evaluator) {
        self.eval.set_evaluator(evaluator);
    }

    fn publish(&self) -> bytes::Bytes {
        publish_weights(
            &self.weights_tx,
            self.counters.version,
            self.counters.episodes,
            self.algo.actor_weights(),
        )
    }

    /// Runs until the queue closes, `stop` is set or the step budget is spent; then
    /// writes a final checkpoint.
    pub fn run(mut self, mut rx: mpsc::Receiver<ValidChunk>, stop: Arc<AtomicBool>) -> Result<()> {
        self.publish();
        let total = self.cfg.run.total_steps;
        while !stop.load(Ordering::SeqCst) {
            let Some(chunk) = rx.blocking_recv() else {
                break;
            };
            gauge!(t::QUEUE_DEPTH).set(rx.len() as f64);
            self.eval.poll(&self.run_dir)?;
            self.ingest(chunk)?;
            if budget_spent(total, self.counters.steps, &stop) {
                break;
            }
        }
        self.checkpoint()
    }

    fn ingest(&mut self, c: ValidChunk) -> Result<()> {
        let rows = c.rows();
        histogram!(t::POLICY_LAG)
            .record(self.counters.version.saturating_sub(c.policy_version) as f64);
        self.counters.episodes += c.episode_returns.len() as u64;
        for (&r, &l) in c.episode_returns.iter().zip(&c.episode_lengths) {
            if self.recent.len() >= self.cfg.run.return_window {
                self.recent.pop_front();
            }
            self.recent.push_back((r, l));
        }
        if let Ok(mut s) = self.status.lock() {
            s.received += rows as u64;
        }
        let terminated = Tensor::from_slice(&c.terminated_bools()).to_kind(Kind::Float);
        self.replay
            .push_batch(
                &c.obs_tensor().to_kind(Kind::Float),
                &c.replay_actions_tensor(),
                &Tensor::from_slice(&c.rewards_f32()),
                &c.next_obs_tensor().to_kind(Kind::Float),
                &terminated,
            )
            .context("cannot store the chunk's transitions")?;
        self.counters.steps += rows as u64;
        gauge!(t::REPLAY_SIZE).set(self.replay.len() as f64);

        if (self.replay.len() as u64) < self.settings.learning_starts {
            return Ok(());
        }
        self.steps_learning += rows as u64;
        let owed = self
            .budget
            .add_steps(rows as u64, self.settings.replay_ratio);
        if owed == 0 {
            return Ok(());
        }
        let start = Instant::now();
        let mut last = Vec::new();
        for _ in 0..owed {
            let batch = self
                .replay
                .sample(self.settings.batch_size, &mut self.rng)
                .context("cannot sample the replay buffer")?;
            last = self.algo.update(&batch)?;
        }
        self.algo.record(&last);
        self.counters.updates += owed;
        self.counters.version += 1;
        let took = start.elapsed().as_secs_f64();
        histogram!(t::UPDATE_DURATION).record(took / owed as f64);
        gauge!(t::REPLAY_RATIO).set(self.counters_ratio());
        let weights = self.publish();
        let c = &self.counters;
        self.eval.after_update(
            self.cfg.eval.every_updates,
            (c.version, c.version, c.steps),
            weights,
            &self.run_dir,
        )?;
        self.log(&last, took)?;
        let ck = self.cfg.run.checkpoint_every;
        if ck > 0 && self.counters.version % ck == 0 {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Gradient updates per env step stored since learning started.
    fn counters_ratio(&self) -> f64 {
        if self.steps_learning == 0 {
            0.0
        } else {
            self.counters.updates as f64 / self.steps_learning as f64
        }
    }

    fn log(&mut self, stats: &[(&'static str, f64)], took: f64) -> Result<()> {
        let now = Instant::now();
        let (t0, steps0, updates0) = self.last_log;
        let dt = now.duration_since(t0).as_secs_f64().max(1e-9);
        let fps = (self.counters.steps - steps0) as f64 / dt;
        let ups = (self.counters.updates - updates0) as f64 / dt;
        self.last_log = (now, self.counters.steps, self.counters.updates);
        gauge!(t::ENV_STEPS_PER_SEC).set(fps);
        gauge!(t::UPDATES_PER_SEC).set(ups);
        metrics::counter!(t::ENV_STEPS).absolute(self.counters.steps);
        metrics::counter!(t::UPDATES).absolute(self.counters.updates);
        let n = self.recent.len() as f64;
        let ret_mean =
            (n > 0.0).then(|| self.recent.iter().map(|r| f64::from(r.0)).sum::<f64>() / n);
        let mut line = serde_json::json!({
            "update": self.counters.updates,
            "steps": self.counters.steps,
            "time": self.started.elapsed().as_secs_f64(),
            "fps": fps,
            "updates_per_second": ups,
            "episode_return_mean": ret_mean,
            "episodes": self.counters.episodes,
            "replay_size": self.replay.len(),
            "replay_ratio": self.counters_ratio(),
            "update_seconds": took,
            "weights_version": self.counters.version,
        });
        for &(k, v) in stats {
            line[k] = serde_json::json!(v);
        }
        for (k, v) in self.eval.take_fields() {
            line[k] = v;
        }
        self.run_dir.append_metrics(&line)?;
        if let Ok(mut st) = self.status.lock() {
            st.steps = self.counters.steps;
            st.fps = fps;
            st.return_mean = ret_mean;
            st.updates = self.counters.updates;
            st.version = self.counters.version;
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<()> {
        checkpoint::save(
            &self.run_dir,
            &self.algo.actor_weights(),
            &self.algo.state_to_bytes(),
            &self.counters,
            &HashMap::new(),
        )
        .context("cannot write checkpoint")
    }
}
