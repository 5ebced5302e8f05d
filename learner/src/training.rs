//! The one training loop, the same for every algorithm. It owns, on the training
//! thread:
//!
//! - the queue: validated chunks from the gRPC handlers, taken one at a time (a full
//!   queue holds the actors back);
//! - the data source the algorithm names ([`Source`]): on-policy [`Rollouts`]
//!   (chunks past `rollout.max_policy_lag` dropped and counted, one update per
//!   `batch_steps`) or the [`ReplayFeed`] (`replay_ratio` updates per env step
//!   stored, run before the next chunk is taken);
//! - episode statistics, the status line, one `metrics.jsonl` line and the metrics
//!   of every round of updates (the run directory hands the line on to its sinks:
//!   TensorBoard, MLflow, the figures);
//! - weight publishing (once per round: a new version), evaluation of every
//!   `eval.every_updates`-th version and the best checkpoint;
//! - checkpoints every `run.checkpoint_every` versions and at the end, and resuming
//!   from one.
//!
//! Randomness: before each round of updates torch's generator is seeded, and the
//! replay sampler created, from `run.seed` and the update count, so a run resumed
//! from a checkpoint draws what it would have drawn had it never stopped.
//!
//! Stopping: a stop request (SIGTERM, Ctrl-C, the step budget) ends a long update at
//! its next minibatch and the loop writes the final checkpoint. An error ends the
//! loop too; the learner then stops serving and exits non-zero (`main.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use metrics::{counter, gauge, histogram};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use tch::Device;
use tokio::sync::mpsc;
use volley_common::agent::Progress;
use volley_common::checkpoint::CheckpointStore;
use volley_common::telemetry as t;

use crate::algo::{Algorithm, Batch, Source, Stats, UpdateContext};
use crate::checkpoint::{self, Counters, Restored, Snapshot, TrainingState};
use crate::config::RunConfig;
use crate::demos::{AggregateSettings, DemoSettings, Demos};
use crate::eval::{EvalTracker, Evaluator};
use crate::imitation::Expert;
use crate::replay::{ObsFormat, ReplayFeed, ReplaySettings};
use crate::rollout::{Ingested, Rollouts};
use crate::rundir::RunDir;
use crate::server::{publish_weights, WeightsSender};
use crate::validate::ValidChunk;

/// What the console status line shows, shared with the status thread.
#[derive(Debug, Default, Clone)]
pub struct Status {
    /// Env steps trained on (on-policy) or stored (replay).
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

/// Whether a run's step budget (`run.total_steps`, 0: none) is spent; if so, says so
/// and sets `stop` so the server shuts down too.
pub fn budget_spent(total: u64, steps: u64, stop: &AtomicBool) -> bool {
    if total == 0 || steps < total {
        return false;
    }
    volley_common::say!("volley-learner: reached run.total_steps = {total}, stopping");
    stop.store(true, Ordering::SeqCst);
    true
}

/// A seed for stream `salt` of update `updates` of a run seeded `seed` (SplitMix64).
fn derive_seed(seed: u64, updates: u64, salt: u64) -> u64 {
    let mut z = seed
        .wrapping_add(updates.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(salt.wrapping_mul(0xd1b5_4a32_d192_ed03));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The data source the loop feeds the algorithm from.
#[derive(Debug)]
enum Feed {
    Rollouts(Rollouts),
    Replay(ReplayFeed),
    Demos(Demos, DemoSettings),
    Aggregate(Box<Aggregation>),
}

impl Feed {
    /// The demonstration set and minibatch size of a feed that trains on one.
    fn demos(&self) -> Option<(&Demos, usize)> {
        match self {
            Feed::Demos(d, s) => Some((d, s.batch_size)),
            Feed::Aggregate(a) => Some((&a.demos, a.settings.batch_size)),
            Feed::Rollouts(_) | Feed::Replay(_) => None,
        }
    }
}

/// DAgger's data: the labelled states, the expert that labels them, and the steps of
/// the iteration so far.
#[derive(Debug)]
struct Aggregation {
    demos: Demos,
    expert: Expert,
    settings: AggregateSettings,
    pending: u64,
}

impl Aggregation {
    /// Labels every state of `chunk` with the expert's action and adds them; returns
    /// the updates owed (an iteration's when its steps are in).
    ///
    /// Every chunk is labelled, also one acted by the previous iteration's mixture
    /// (in flight while the policy retrained): its states are as informative, and
    /// `policy_lag` shows how many there were.
    fn ingest(&mut self, chunk: &ValidChunk) -> Result<u64> {
        let obs = chunk.obs_tensor().f_to_kind(tch::Kind::Float)?;
        let obs = obs.f_view([chunk.rows() as i64, -1])?;
        let actions = self.expert.label(&obs)?;
        let obs: Vec<f32> = obs.f_flatten(0, -1)?.try_into()?;
        self.demos.push(&obs, &actions)?;
        self.pending += chunk.rows() as u64;
        if self.pending < self.settings.steps_per_iteration {
            return Ok(0);
        }
        self.pending = 0;
        Ok(self.settings.updates_per_iteration)
    }
}

/// What the observations of a run look like, for the replay buffer.
#[derive(Debug, Clone, Copy)]
pub struct ObsLayout {
    /// One observation.
    pub obs: ObsFormat,
    /// Elements of one action in the replay buffer.
    pub action_width: usize,
    /// The env gives final observations (truncations can bootstrap).
    pub final_obs: bool,
    /// The observations are stacks of this many frames ([`EnvId::frame_stack`]): a
    /// replay buffer stores each frame once.
    pub frame_stack: Option<usize>,
}

/// What the data sources are built from: the observation layout (replay), the
/// demonstrations (an algorithm that trains on them; DAgger's starting set) and the
/// expert (DAgger's labels).
#[derive(Debug)]
pub struct DataInputs {
    pub layout: ObsLayout,
    pub demos: Option<Demos>,
    pub expert: Option<Expert>,
}

/// The training thread's state.
pub struct Training {
    cfg: RunConfig,
    algo: Box<dyn Algorithm>,
    feed: Feed,
    device: Device,
    run_dir: RunDir,
    store: CheckpointStore,
    weights_tx: WeightsSender,
    status: Arc<Mutex<Status>>,
    counters: Counters,
    /// Returns and lengths of the last `run.return_window` finished episodes.
    recent: VecDeque<(f32, u32)>,
    eval: EvalTracker,
    /// `(stat name, gauge name)` of every statistic the algorithm reports.
    gauges: Vec<(&'static str, String)>,
    started: Instant,
    /// Time, steps and updates at the last metrics line.
    last_log: (Instant, u64, u64),
    /// Receives with a timeout, so a stop is seen without a chunk.
    rt: tokio::runtime::Runtime,
    /// Continued from a checkpoint.
    restored: bool,
}

impl std::fmt::Debug for Training {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Training")
            .field("algorithm", &self.cfg.algorithm)
            .field("counters", &self.counters)
            .finish()
    }
}

impl Training {
    pub fn new(
        cfg: RunConfig,
        algo: Box<dyn Algorithm>,
        data: DataInputs,
        device: Device,
        run_dir: RunDir,
        weights_tx: WeightsSender,
        status: Arc<Mutex<Status>>,
    ) -> Result<Training> {
        let DataInputs {
            layout,
            demos,
            expert,
        } = data;
        let feed = match algo.source() {
            Source::Aggregate(s) => {
                let (Some(demos), Some(expert)) = (demos, expert) else {
                    bail!(
                        "{} labels states with an expert: imitation.expert must name one",
                        cfg.algorithm
                    );
                };
                volley_common::say!(
                    "volley-learner: {} iterations of {} env steps labelled by the expert, then {} updates of {}; at most {} labelled states{}",
                    s.iterations,
                    s.steps_per_iteration,
                    s.updates_per_iteration,
                    s.batch_size,
                    s.capacity,
                    if demos.is_empty() {
                        String::new()
                    } else {
                        format!(", {} from imitation.dataset to start", demos.len())
                    }
                );
                Feed::Aggregate(Box::new(Aggregation {
                    demos,
                    expert,
                    settings: s,
                    pending: 0,
                }))
            }
            Source::Demos(s) => {
                let d = demos.with_context(|| {
                    format!(
                        "{} trains on demonstrations, and none were loaded",
                        cfg.algorithm
                    )
                })?;
                volley_common::say!(
                    "volley-learner: {} demonstrations ({:.1} MiB on the device), {} updates of {} in rounds of {}",
                    d.len(),
                    d.bytes() as f64 / f64::from(1u32 << 20),
                    s.total_updates,
                    s.batch_size,
                    s.updates_per_round
                );
                Feed::Demos(d, s)
            }
            Source::Rollouts(s) => Feed::Rollouts(Rollouts::new(s, cfg.rollout.max_policy_lag)),
            Source::Replay(s) => {
                gauge!(t::REPLAY_RATIO_TARGET).set(s.replay_ratio);
                let s = ReplaySettings {
                    frame_stack: s.frame_stack.or(layout.frame_stack),
                    ..s
                };
                let obs = layout.obs;
                let f = ReplayFeed::new(s, obs, layout.action_width, device, layout.final_obs)
                    .with_context(|| {
                        format!(
                            "cannot allocate the replay buffer (see {}'s buffer size and memory bound)",
                            cfg.algorithm
                        )
                    })?;
                let b = f.buffer();
                volley_common::say!(
                    "volley-learner: replay of {} transitions, {:.2} GiB, {:.0} bytes a transition{}",
                    b.capacity(),
                    b.bytes() as f64 / f64::from(1u32 << 30),
                    b.bytes_per_transition(),
                    match b.frame_stack() {
                        Some(f) => format!(" (stacks of {} frames, each frame stored once)", f.k),
                        None => String::new(),
                    }
                );
                Feed::Replay(f)
            }
        };
        let algorithm = cfg.algorithm.clone();
        let gauges = algo
            .stats_help()
            .iter()
            .map(|(name, help)| {
                let g = format!("volley_{algorithm}_{name}");
                metrics::describe_gauge!(g.clone(), format!("{algorithm} {help}"));
                (*name, g)
            })
            .collect();
        counter!(t::CHUNKS_DROPPED, "reason" => "policy_lag").increment(0);
        let store = CheckpointStore::new(run_dir.checkpoints(), cfg.checkpoint.keep);
        let now = Instant::now();
        Ok(Training {
            cfg,
            algo,
            feed,
            device,
            run_dir,
            store,
            weights_tx,
            status,
            counters: Counters::default(),
            recent: VecDeque::new(),
            eval: EvalTracker::default(),
            gauges,
            started: now,
            last_log: (now, 0, 0),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()?,
            restored: false,
        })
    }

    /// What the algorithm does before any data ([`Algorithm::start`]); before the
    /// server takes actors.
    pub fn prepare(&mut self) -> Result<()> {
        self.algo.start(!self.restored)
    }

    /// Evaluates published versions with `evaluator`.
    pub fn set_evaluator(&mut self, evaluator: Evaluator) {
        self.eval.set_evaluator(evaluator);
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Continues from a checkpoint: the algorithm's state, the counters, the data
    /// source's state (the reward statistic; the replay accounting and, when the
    /// checkpoint kept it, the buffer) and the best evaluation so far.
    pub fn restore(&mut self, r: Restored) -> Result<()> {
        for why in &r.refused {
            volley_common::say!("volley-learner: skipped a checkpoint: {why}");
        }
        if r.training.algorithm != self.cfg.algorithm {
            bail!(
                "checkpoint {} was written by {}, this run trains {}",
                r.name,
                r.training.algorithm,
                self.cfg.algorithm
            );
        }
        self.algo.load_state(&r.state).with_context(|| {
            format!(
                "checkpoint {}: state.bin does not fit the {} networks",
                r.name, self.cfg.algorithm
            )
        })?;
        match &mut self.feed {
            Feed::Rollouts(rollouts) => {
                if let Some(s) = &r.training.rollouts {
                    rollouts.load_state(s)?;
                }
            }
            Feed::Replay(feed) => {
                let accounting = r.training.replay.unwrap_or_default();
                match feed.restore(accounting, r.replay.as_deref()) {
                    Ok(()) if r.replay.is_some() => volley_common::say!(
                        "volley-learner: replay buffer restored: {} transitions",
                        feed.buffer().len()
                    ),
                    Ok(()) => volley_common::say!(
                        "volley-learner: checkpoint {} has no replay buffer ({} transitions were over checkpoint.max_replay_bytes): it refills before training resumes",
                        r.name,
                        r.training.replay_len
                    ),
                    Err(e) => {
                        volley_common::say!(
                            "volley-learner: checkpoint {}: the replay buffer cannot be restored ({e}): it refills before training resumes",
                            r.name
                        );
                        feed.restore(accounting, None)?;
                    }
                }
            }
            // The demonstrations come from their file again; DAgger's labelled states
            // are not kept: a resumed run aggregates anew from its restored policy.
            Feed::Demos(..) | Feed::Aggregate(_) => {}
        }
        self.counters = r.training.counters;
        self.eval.restore_best(&self.store)?;
        self.restored = true;
        Ok(())
    }

    /// Serialises the current weights once and hands them to every weight stream;
    /// returns the bytes, shared.
    fn publish(&self) -> bytes::Bytes {
        let c = &self.counters;
        publish_weights(
            &self.weights_tx,
            Progress {
                version: c.version,
                steps: c.steps,
                episodes: c.episodes,
            },
            self.algo.actor_weights(),
        )
    }

    /// The next chunk; `None` when the queue closed or `stop` is set.
    fn next_chunk(
        &self,
        rx: &mut mpsc::Receiver<ValidChunk>,
        stop: &AtomicBool,
    ) -> Option<ValidChunk> {
        while !stop.load(Ordering::SeqCst) {
            let got = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
            });
            match got {
                Ok(Some(c)) => {
                    gauge!(t::QUEUE_DEPTH).set(rx.len() as f64);
                    return Some(c);
                }
                Ok(None) => return None,
                Err(_) => continue,
            }
        }
        None
    }

    /// Runs until the queue closes, `stop` is set or the step budget is spent; then
    /// writes a final checkpoint.
    pub fn run(mut self, mut rx: mpsc::Receiver<ValidChunk>, stop: Arc<AtomicBool>) -> Result<()> {
        counter!(t::UPDATES).absolute(self.counters.updates);
        counter!(t::ENV_STEPS).absolute(self.counters.steps);
        self.last_log = (Instant::now(), self.counters.steps, self.counters.updates);
        let weights = self.publish();
        if self.cfg.eval.at_start && !self.restored {
            // The weights training starts from (a policy seeded by imitation) are
            // measured before anything is trained.
            let c = self.counters;
            self.eval
                .after_update(1, (0, c.version, c.steps), weights, &self.store, true)?;
        }
        if self.cfg.learner.ingest_only {
            return self.drain(rx, &stop);
        }
        if let Feed::Demos(_, s) = &self.feed {
            let (every, total) = (s.updates_per_round, s.total_updates);
            drop(rx);
            while !stop.load(Ordering::SeqCst) && self.counters.updates < total {
                let owed = every.min(total - self.counters.updates);
                self.train(owed, &stop)?;
            }
            self.finish_evaluations()?;
            return self.checkpoint();
        }
        let total = self.cfg.run.total_steps;
        while let Some(chunk) = self.next_chunk(&mut rx, &stop) {
            self.eval.poll(&self.store)?;
            self.record_episodes(&chunk);
            histogram!(t::POLICY_LAG)
                .record(self.counters.version.saturating_sub(chunk.policy_version) as f64);
            let owed = match &mut self.feed {
                Feed::Rollouts(r) => match r.ingest(&chunk, self.counters.version)? {
                    Ingested::Dropped => {
                        counter!(t::CHUNKS_DROPPED, "reason" => "policy_lag").increment(1);
                        if let Ok(mut s) = self.status.lock() {
                            s.dropped += 1;
                        }
                        0
                    }
                    Ingested::Kept => u64::from(r.ready()),
                },
                Feed::Replay(f) => {
                    let owed = f.ingest(&chunk)?;
                    self.counters.steps += chunk.rows() as u64;
                    gauge!(t::REPLAY_SIZE).set(f.buffer().len() as f64);
                    owed
                }
                Feed::Aggregate(a) => {
                    self.counters.steps += chunk.rows() as u64;
                    a.ingest(&chunk)?
                }
                Feed::Demos(..) => 0,
            };
            if owed > 0 {
                self.train(owed, &stop)?;
            }
            if let Feed::Aggregate(a) = &self.feed {
                let n = a.settings.iterations;
                if self.counters.version >= n {
                    volley_common::say!("volley-learner: {n} iterations done, stopping");
                    stop.store(true, Ordering::SeqCst);
                    self.finish_evaluations()?;
                    break;
                }
            }
            if budget_spent(total, self.counters.steps, &stop) {
                break;
            }
        }
        self.checkpoint()
    }

    /// The end of a run with a fixed number of rounds: the last version is evaluated
    /// too, the run waits for every evaluation, and a last metrics line has them.
    fn finish_evaluations(&mut self) -> Result<()> {
        self.eval.finish(
            (self.counters.version, self.counters.steps),
            bytes::Bytes::from(self.algo.actor_weights()),
            &self.store,
        )?;
        self.log(&Vec::new(), 0.0)
    }

    /// `learner.ingest_only`: takes chunks off the queue and counts them, trains on
    /// nothing. For measuring what the transport costs an actor.
    fn drain(&self, mut rx: mpsc::Receiver<ValidChunk>, stop: &AtomicBool) -> Result<()> {
        while let Some(c) = self.next_chunk(&mut rx, stop) {
            if let Ok(mut s) = self.status.lock() {
                s.received += c.rows() as u64;
            }
        }
        Ok(())
    }

    fn record_episodes(&mut self, c: &ValidChunk) {
        if let Ok(mut s) = self.status.lock() {
            s.received += c.rows() as u64;
        }
        self.counters.episodes += c.episode_returns.len() as u64;
        for (&r, &l) in c.episode_returns.iter().zip(&c.episode_lengths) {
            if self.recent.len() >= self.cfg.run.return_window {
                self.recent.pop_front();
            }
            self.recent.push_back((r, l));
        }
    }

    /// One round: `owed` updates (on-policy: one on the batch), then a new version.
    fn train(&mut self, owed: u64, stop: &AtomicBool) -> Result<()> {
        let seed = self.cfg.run.seed;
        tch::manual_seed(derive_seed(seed, self.counters.updates, 1) as i64);
        let start = Instant::now();
        let mut last: Stats = Vec::new();
        let mut done = 0u64;
        let ctx = |counters: &Counters| UpdateContext {
            steps: counters.steps,
            total_steps: self.cfg.run.total_steps,
            updates: counters.updates,
            stop,
        };
        match &mut self.feed {
            Feed::Rollouts(r) => {
                let (batch, rows) = r.take_batch(self.device)?;
                self.counters.steps += rows;
                last = self
                    .algo
                    .update(&Batch::Rollout(&batch), &ctx(&self.counters))?;
                done = 1;
            }
            Feed::Replay(f) => {
                let mut rng =
                    Xoshiro256PlusPlus::seed_from_u64(derive_seed(seed, self.counters.updates, 2));
                while done < owed {
                    if stop.load(Ordering::SeqCst) {
                        // The updates not run stay owed, so the ratio holds on resume.
                        f.give_back(owed - done);
                        break;
                    }
                    let batch = f
                        .sample(&mut rng)
                        .context("cannot sample the replay buffer")?;
                    let c = Counters {
                        updates: self.counters.updates + done,
                        ..self.counters
                    };
                    last = self.algo.update(&Batch::Replay(&batch), &ctx(&c))?;
                    done += 1;
                }
            }
            Feed::Demos(..) | Feed::Aggregate(_) => {
                let (d, batch_size) = self.feed.demos().context("a feed without demonstrations")?;
                let mut rng =
                    Xoshiro256PlusPlus::seed_from_u64(derive_seed(seed, self.counters.updates, 2));
                while done < owed && !stop.load(Ordering::SeqCst) {
                    let batch = d.sample(batch_size, &mut rng)?;
                    let c = Counters {
                        updates: self.counters.updates + done,
                        ..self.counters
                    };
                    last = self.algo.update(&Batch::Demos(&batch), &ctx(&c))?;
                    done += 1;
                }
            }
        }
        if done == 0 {
            return Ok(());
        }
        let took = start.elapsed().as_secs_f64();
        self.counters.updates += done;
        self.counters.version += 1;
        histogram!(t::UPDATE_DURATION).record(took / done as f64);
        let weights = self.publish();
        let c = self.counters;
        // Training alone on demonstrations, the loop waits for the evaluator rather
        // than skip a version: rounds take milliseconds and evaluations seconds.
        // DAgger's iterations too are few and each is evaluated.
        let wait = matches!(self.feed, Feed::Demos(..) | Feed::Aggregate(_));
        self.eval.after_update(
            self.cfg.eval.every_updates,
            (c.version, c.version, c.steps),
            weights,
            &self.store,
            wait,
        )?;
        self.log(&last, took)?;
        let every = self.cfg.run.checkpoint_every;
        if every > 0 && self.counters.version % every == 0 {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Metrics and the `metrics.jsonl` line of a round.
    fn log(&mut self, stats: &Stats, took: f64) -> Result<()> {
        let now = Instant::now();
        let (t0, steps0, updates0) = self.last_log;
        let dt = now.duration_since(t0).as_secs_f64().max(1e-9);
        let fps = (self.counters.steps - steps0) as f64 / dt;
        let ups = (self.counters.updates - updates0) as f64 / dt;
        self.last_log = (now, self.counters.steps, self.counters.updates);
        counter!(t::UPDATES).absolute(self.counters.updates);
        counter!(t::ENV_STEPS).absolute(self.counters.steps);
        gauge!(t::ENV_STEPS_PER_SEC).set(fps);
        gauge!(t::UPDATES_PER_SEC).set(ups);
        for (name, value) in stats {
            if let Some((_, g)) = self.gauges.iter().find(|(n, _)| n == name) {
                gauge!(g.clone()).set(*value);
            }
            gauge!(t::UPDATE_STAT, "algorithm" => self.cfg.algorithm.clone(), "stat" => *name)
                .set(*value);
            match *name {
                "lr" => gauge!(t::LEARNING_RATE).set(*value),
                "q_mean" => gauge!(t::Q_MEAN).set(*value),
                _ => {}
            }
        }
        let n = self.recent.len() as f64;
        let mean = |f: fn(&(f32, u32)) -> f64| {
            (n > 0.0).then(|| self.recent.iter().map(f).sum::<f64>() / n)
        };
        let ret_mean = mean(|r| f64::from(r.0));
        let mut line = serde_json::json!({
            "update": self.counters.updates,
            "steps": self.counters.steps,
            "time": self.started.elapsed().as_secs_f64(),
            "fps": fps,
            "updates_per_second": ups,
            "episode_return_mean": ret_mean,
            "episode_length_mean": mean(|r| f64::from(r.1)),
            "episodes": self.counters.episodes,
            "update_seconds": took,
            "weights_version": self.counters.version,
        });
        match &mut self.feed {
            Feed::Rollouts(r) => {
                let (lag, dropped) = r.take_log();
                line["policy_lag_mean"] = lag.into();
                line["chunks_dropped"] = dropped.into();
            }
            Feed::Replay(f) => {
                let ratio = f.ratio(self.counters.updates);
                gauge!(t::REPLAY_RATIO).set(ratio);
                line["replay_size"] = f.buffer().len().into();
                line["replay_ratio"] = ratio.into();
            }
            Feed::Demos(d, _) => log_demos(&mut line, d),
            Feed::Aggregate(a) => {
                log_demos(&mut line, &a.demos);
                let beta = a.settings.schedule.beta(self.counters.version);
                gauge!(t::IMITATION_BETA).set(beta);
                line["beta"] = beta.into();
                line["iteration"] = self.counters.version.into();
            }
        }
        for (k, v) in stats {
            line[*k] = serde_json::json!(v);
        }
        for (k, v) in self.eval.take_fields() {
            line[k] = v;
        }
        self.run_dir.append_metrics(&line)?;
        if let Ok(mut r) = self.run_dir.recorder().lock() {
            r.progress(self.counters.steps, self.eval.best_record())?;
        }
        if let Ok(mut s) = self.status.lock() {
            s.steps = self.counters.steps;
            s.fps = fps;
            s.return_mean = ret_mean;
            s.updates = self.counters.updates;
            s.version = self.counters.version;
        }
        Ok(())
    }

    /// Writes a checkpoint of everything a resume needs (and the run's record).
    fn checkpoint(&self) -> Result<()> {
        if let Ok(mut r) = self.run_dir.recorder().lock() {
            r.progress(self.counters.steps, self.eval.best_record())?;
            r.flush()?;
        }
        let mut training = TrainingState::new(&self.cfg.algorithm, self.counters);
        let replay_bytes;
        let mut replay = None;
        match &self.feed {
            Feed::Rollouts(r) => training.rollouts = Some(r.state()?),
            Feed::Demos(..) | Feed::Aggregate(_) => {}
            Feed::Replay(f) => {
                training.replay = Some(f.accounting());
                let buffer = f.buffer();
                training.replay_len = buffer.len() as u64;
                let max = self.cfg.checkpoint.max_replay_bytes;
                if buffer.filled_bytes() <= max {
                    replay_bytes = buffer.to_bytes()?;
                    replay = Some(replay_bytes.as_slice());
                } else {
                    volley_common::say!(
                        "volley-learner: the replay buffer ({} transitions, {} bytes) is over checkpoint.max_replay_bytes = {max}: this checkpoint leaves it out, and a resume refills it",
                        buffer.len(),
                        buffer.filled_bytes()
                    );
                }
            }
        }
        let weights = self.algo.actor_weights();
        let state = self.algo.state();
        checkpoint::save(
            &self.store,
            &Snapshot {
                weights: &weights,
                state: &state,
                training,
                replay,
            },
        )
    }
}

/// The size of a demonstration set in the metrics and the `metrics.jsonl` line.
fn log_demos(line: &mut serde_json::Value, d: &Demos) {
    gauge!(t::IMITATION_DATASET_SIZE).set(d.len() as f64);
    gauge!(t::IMITATION_LABELS).set(d.labels() as f64);
    line["dataset_size"] = d.len().into();
    line["expert_labels"] = d.labels().into();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_by_update_and_stream() {
        let a = derive_seed(1, 0, 1);
        assert_ne!(a, derive_seed(1, 1, 1));
        assert_ne!(a, derive_seed(1, 0, 2));
        assert_ne!(a, derive_seed(2, 0, 1));
        assert_eq!(a, derive_seed(1, 0, 1));
    }
}
