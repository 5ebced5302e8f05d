//! The training thread of off-policy runs (SAC): chunks become transitions in the
//! replay buffer, and each chunk's env steps buy `sac.replay_ratio` gradient updates,
//! run before the next chunk is taken off the queue. The ratio therefore holds
//! exactly: a learner that falls behind leaves chunks in its bounded queue, which
//! fills and slows the actors (backpressure), instead of letting the ratio drift.
//!
//! Actors act uniformly at random while the weights are at version 0; the first
//! updates (and version 1) come once the buffer holds `sac.learning_starts`
//! transitions, as CleanRL's random warm-up.

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
use crate::replay::ReplayBuffer;
use crate::rundir::RunDir;
use crate::sac::{Sac, SacStats, UpdateBudget};
use crate::server::{publish_weights, WeightsSender};
use crate::trainer::Status;
use crate::validate::ValidChunk;

/// SAC's training thread.
pub struct SacTrainer {
    cfg: RunConfig,
    sac: Sac,
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

impl std::fmt::Debug for SacTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SacTrainer")
            .field("counters", &self.counters)
            .finish()
    }
}

impl SacTrainer {
    pub fn new(
        cfg: RunConfig,
        sac: Sac,
        device: Device,
        run_dir: RunDir,
        counters: Counters,
        weights_tx: WeightsSender,
        status: Arc<Mutex<Status>>,
    ) -> Result<SacTrainer> {
        let spec = sac.spec().clone();
        let replay = ReplayBuffer::new(
            cfg.sac.buffer_size,
            spec.obs_dim,
            spec.action_dim(),
            cfg.sac.buffer_max_bytes(),
            device,
        )
        .context("cannot allocate the replay buffer (sac.buffer_size, sac.buffer_max_gib)")?;
        gauge!(t::REPLAY_RATIO_TARGET).set(cfg.sac.replay_ratio);
        let now = Instant::now();
        Ok(SacTrainer {
            rng: StdRng::seed_from_u64(cfg.run.seed),
            last_log: (now, counters.steps, counters.updates),
            cfg,
            sac,
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
            self.sac.actor_weights(),
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
            if total > 0 && self.counters.steps >= total {
                volley_common::say!("volley-learner: reached run.total_steps = {total}, stopping");
                stop.store(true, Ordering::SeqCst);
                break;
            }
        }
        self.checkpoint()
    }

    fn ingest(&mut self, c: ValidChunk) -> Result<()> {
        let rows = c.rows();
        histogram!(t::POLICY_LAG)
            .record(self.counters.version.saturating_sub(c.policy_version) as f64);
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
                &c.actions_tensor(),
                &Tensor::from_slice(&c.rewards_f32()),
                &c.next_obs_tensor().to_kind(Kind::Float),
                &terminated,
            )
            .context("cannot store the chunk's transitions")?;
        self.counters.steps += rows as u64;
        gauge!(t::REPLAY_SIZE).set(self.replay.len() as f64);

        if (self.replay.len() as u64) < self.cfg.sac.learning_starts {
            return Ok(());
        }
        self.steps_learning += rows as u64;
        let owed = self
            .budget
            .add_steps(rows as u64, self.cfg.sac.replay_ratio);
        if owed == 0 {
            return Ok(());
        }
        let start = Instant::now();
        let mut last = SacStats::default();
        for _ in 0..owed {
            let batch = self
                .replay
                .sample(self.cfg.sac.batch_size, &mut self.rng)
                .context("cannot sample the replay buffer")?;
            last = self.sac.update(&batch).context("sac update failed")?;
        }
        self.counters.updates += owed;
        self.counters.version += 1;
        let took = start.elapsed().as_secs_f64();
        histogram!(t::UPDATE_DURATION).record(took / owed as f64);
        gauge!(t::REPLAY_RATIO).set(self.counters_ratio());
        let weights = self.publish();
        let c = &self.counters;
        self.eval.maybe_offer(
            self.cfg.eval.every_updates,
            c.version,
            c.version,
            c.steps,
            weights,
        );
        self.eval.poll(&self.run_dir)?;
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

    fn log(&mut self, s: &SacStats, took: f64) -> Result<()> {
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
            "qf1_loss": s.qf1_loss,
            "qf2_loss": s.qf2_loss,
            "actor_loss": s.actor_loss,
            "alpha": s.alpha,
            "q_mean": s.q_mean,
            "replay_size": self.replay.len(),
            "replay_ratio": self.counters_ratio(),
            "update_seconds": took,
            "weights_version": self.counters.version,
        });
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
            &self.sac.actor_weights(),
            &self.sac.state_to_bytes(),
            &self.counters,
            &HashMap::new(),
        )
        .context("cannot write checkpoint")
    }
}
