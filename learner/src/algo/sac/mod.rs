//! Soft Actor-Critic (Haarnoja et al. 2018, arXiv 1801.01290) with the twin Q networks
//! and automatic entropy temperature of "Soft Actor-Critic Algorithms and
//! Applications" (Haarnoja et al. 2018, arXiv 1812.05905), as CleanRL's
//! `sac_continuous_action.py` implements them:
//!
//! - two Q networks trained towards `r + gamma (1 - terminated) (min_j Q'_j(s', a') -
//!   alpha log pi(a'|s'))` with `a' ~ pi(.|s')` and the Polyak-averaged target networks
//!   `Q'_j` (terminated transitions do not bootstrap; truncated ones are stored as not
//!   terminated, with their real last observation, and do);
//! - the actor minimising `alpha log pi(a|s) - min_j Q_j(s, a)` through a
//!   reparameterised tanh-squashed Gaussian (`volley_common::nn::sac`);
//! - the temperature `alpha = exp(log_alpha)` minimising `-alpha (log pi + H_target)`
//!   with `H_target = -|A|`;
//! - uniform random actions for the first `learning_starts` env steps.
//!
//! Layout, as in CleanRL: the hyperparameters ([`SacConfig`], CleanRL's defaults),
//! then the networks (built from a [`SacSpec`] in `volley_common::nn::sac`), then the
//! update ([`Sac::update`]), then the training loop's view ([`build`]). The replay
//! buffer is [`crate::replay`].

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use volley_common::nn::sac::{polyak_update, SacActor, SacQ, SacSpec};
use volley_common::nn::{Adam, AdamConfig, NnError};

use super::{Algorithm, Batch, BuildContext, Built, Source, Stats, UpdateContext};
use crate::replay::{ReplayBatch, ReplayError, ReplaySettings};

pub mod seed;
use seed::{SeedConfig, Seeding};

/// Errors of the SAC code: a bad config or input, or a failure of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum SacError {
    #[error("bad config: {0}")]
    BadConfig(String),
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("bad sac state: {0}")]
    BadState(String),
    #[error(transparent)]
    Nn(#[from] NnError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("torch error: {0}")]
    Torch(#[from] tch::TchError),
}

pub type SacResult<T> = Result<T, SacError>;

// ---------------------------------------------------------------------------------
// Hyperparameters
// ---------------------------------------------------------------------------------

/// SAC hyperparameters; defaults are CleanRL's `sac_continuous_action.py` (the MuJoCo
/// settings of Haarnoja et al. 2018).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SacConfig {
    /// Replay buffer capacity in transitions.
    pub buffer_size: usize,
    /// Refuse a replay buffer whose storage would exceed this many GiB.
    pub buffer_max_gib: f64,
    /// Discount factor.
    pub gamma: f64,
    /// Polyak coefficient of the target networks.
    pub tau: f64,
    /// Transitions per gradient update.
    pub batch_size: usize,
    /// Env steps taken with uniform random actions before the first update.
    pub learning_starts: u64,
    /// Actor Adam learning rate.
    pub policy_lr: f64,
    /// Q networks' Adam learning rate.
    pub q_lr: f64,
    /// Temperature Adam learning rate (CleanRL uses `q_lr`).
    pub alpha_lr: f64,
    /// The actor (and temperature) is updated on every `policy_frequency`-th update,
    /// `policy_frequency` times in a row (delayed, TD3-style).
    pub policy_frequency: u64,
    /// Polyak-update the targets every this many updates.
    pub target_network_frequency: u64,
    /// Learn the temperature (target entropy `target_entropy`, default `-|A|`).
    pub autotune: bool,
    /// The fixed temperature when `autotune` is off.
    pub alpha: f64,
    /// Target entropy for `autotune`; `None` means `-action_dim`.
    pub target_entropy: Option<f64>,
    /// Gradient updates per env step once learning has started (CleanRL: 1).
    pub replay_ratio: f64,
    /// Hidden widths of the actor and Q networks.
    pub hidden: Vec<usize>,
    /// Seeding by imitation (`[sac.imitation]`, [`seed`]): off by default.
    pub imitation: SeedConfig,
}

impl Default for SacConfig {
    fn default() -> Self {
        SacConfig {
            buffer_size: 1_000_000,
            buffer_max_gib: 16.0,
            gamma: 0.99,
            tau: 0.005,
            batch_size: 256,
            learning_starts: 5_000,
            policy_lr: 3e-4,
            q_lr: 1e-3,
            alpha_lr: 1e-3,
            policy_frequency: 2,
            target_network_frequency: 1,
            autotune: true,
            alpha: 0.2,
            target_entropy: None,
            replay_ratio: 1.0,
            hidden: vec![256, 256],
            imitation: SeedConfig::default(),
        }
    }
}

impl SacConfig {
    /// Checks the ranges; configs come from files and command lines.
    pub fn validate(&self) -> SacResult<()> {
        let bad = |m: String| Err(SacError::BadConfig(m));
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if self.buffer_size == 0 || self.batch_size == 0 {
            return bad("sac.buffer_size and sac.batch_size must be >= 1".into());
        }
        if !pos(self.buffer_max_gib) {
            return bad(format!(
                "sac.buffer_max_gib must be > 0, got {}",
                self.buffer_max_gib
            ));
        }
        if !(0.0..=1.0).contains(&self.gamma) {
            return bad(format!("sac.gamma must be in [0, 1], got {}", self.gamma));
        }
        if !(self.tau > 0.0 && self.tau <= 1.0) {
            return bad(format!("sac.tau must be in (0, 1], got {}", self.tau));
        }
        for (name, v) in [
            ("policy_lr", self.policy_lr),
            ("q_lr", self.q_lr),
            ("alpha_lr", self.alpha_lr),
            ("replay_ratio", self.replay_ratio),
        ] {
            if !pos(v) {
                return bad(format!("sac.{name} must be > 0, got {v}"));
            }
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return bad(format!("sac.alpha must be >= 0, got {}", self.alpha));
        }
        if let Some(h) = self.target_entropy {
            if !h.is_finite() {
                return bad(format!("sac.target_entropy must be finite, got {h}"));
            }
        }
        if self.policy_frequency == 0 || self.target_network_frequency == 0 {
            return bad(
                "sac.policy_frequency and sac.target_network_frequency must be >= 1".into(),
            );
        }
        if self.hidden.is_empty() || self.hidden.iter().any(|&h| h == 0 || h > 65536) {
            return bad(format!(
                "sac.hidden must be 1 or more widths in 1..=65536, got {:?}",
                self.hidden
            ));
        }
        Ok(())
    }

    /// The replay bound in bytes.
    pub fn buffer_max_bytes(&self) -> u64 {
        (self.buffer_max_gib * (1u64 << 30) as f64) as u64
    }

    /// Whether env step `global_step` (counted from 0) still takes uniform random
    /// actions.
    pub fn random_phase(&self, global_step: u64) -> bool {
        global_step < self.learning_starts
    }
}

// ---------------------------------------------------------------------------------
// Networks: `volley_common::nn::sac` (SacActor: 256-256 ReLU, squashed Gaussian;
// SacQ: [obs, action] -> 256-256 ReLU -> 1; PyTorch default init).
// ---------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------
// The update
// ---------------------------------------------------------------------------------

/// What one update logged (CleanRL's `losses/*`).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct SacStats {
    pub qf1_loss: f64,
    pub qf2_loss: f64,
    /// Of the last actor step (this update's when it had one).
    pub actor_loss: f64,
    /// The temperature after this update.
    pub alpha: f64,
    /// Of the last temperature step (0 without autotune).
    pub alpha_loss: f64,
    /// Mean of `Q1(s, a)` and `Q2(s, a)` over the batch.
    pub q_mean: f64,
    /// Whether this update stepped the actor.
    pub actor_updated: bool,
}

/// SAC: actor, twin Q networks and their targets, the optimizers and the temperature.
#[derive(Debug)]
pub struct Sac {
    pub cfg: SacConfig,
    spec: SacSpec,
    device: Device,
    pub actor: SacActor,
    pub qf1: SacQ,
    pub qf2: SacQ,
    pub qf1_target: SacQ,
    pub qf2_target: SacQ,
    actor_opt: Adam,
    /// One Adam over the parameters of both Q networks, as CleanRL's `q_optimizer`.
    q_opt: Adam,
    /// 0-d `log_alpha` with gradient when autotuning, else `ln(cfg.alpha)` (unused).
    log_alpha: Tensor,
    alpha_opt: Option<Adam>,
    /// Detached `alpha` used by the losses (CleanRL's Python float, refreshed after
    /// each temperature step).
    alpha: Tensor,
    target_entropy: f64,
    /// Updates done: decides the delayed actor and target steps.
    updates: u64,
    /// Last actor and temperature losses (0-d tensors, read when logging).
    last_actor_loss: Tensor,
    last_alpha_loss: Tensor,
    /// The demonstrations of a run seeded by imitation.
    seeding: Option<Box<Seeding>>,
    /// `run.seed`, for the recalibration draws.
    run_seed: u64,
}

const STATE_MAGIC: &[u8; 4] = b"VLYS";
const STATE_VERSION: u32 = 1;

impl Sac {
    /// Fresh networks for `spec` (its `hidden` is replaced by `cfg.hidden`) on
    /// `device`; seed with `tch::manual_seed` for reproducible weights. Targets start
    /// as copies of the Q networks; `log_alpha` starts at 0 (alpha 1) when autotuning,
    /// as in CleanRL.
    pub fn new(spec: SacSpec, cfg: SacConfig, device: Device) -> SacResult<Sac> {
        cfg.validate()?;
        let spec = SacSpec {
            hidden: cfg.hidden.clone(),
            ..spec
        };
        spec.validate()?;
        let actor = SacActor::new(spec.clone(), device)?;
        let qf1 = SacQ::new(spec.clone(), device)?;
        let qf2 = SacQ::new(spec.clone(), device)?;
        let mut qf1_target = SacQ::new(spec.clone(), device)?;
        let mut qf2_target = SacQ::new(spec.clone(), device)?;
        qf1_target.copy_from(&qf1)?;
        qf2_target.copy_from(&qf2)?;
        let actor_opt = Adam::new(actor.parameters(), AdamConfig::default())?;
        let mut qp = qf1.parameters();
        qp.extend(qf2.parameters());
        let q_opt = Adam::new(qp, AdamConfig::default())?;
        let opts = (Kind::Float, device);
        let (log_alpha, alpha_opt) = if cfg.autotune {
            let la = Tensor::f_zeros([], opts)?.set_requires_grad(true);
            let opt = Adam::new(vec![la.shallow_clone()], AdamConfig::default())?;
            (la, Some(opt))
        } else {
            (Tensor::f_full([], cfg.alpha.ln(), opts)?, None)
        };
        let alpha = tch::no_grad(|| log_alpha.f_exp())?.f_detach()?;
        let target_entropy = cfg.target_entropy.unwrap_or(-(spec.action_dim() as f64));
        let zero = Tensor::f_zeros([], opts)?;
        Ok(Sac {
            cfg,
            spec,
            device,
            actor,
            qf1,
            qf2,
            qf1_target,
            qf2_target,
            actor_opt,
            q_opt,
            log_alpha,
            alpha_opt,
            alpha,
            target_entropy,
            updates: 0,
            last_actor_loss: zero.shallow_clone(),
            last_alpha_loss: zero,
            seeding: None,
            run_seed: 0,
        })
    }

    pub fn spec(&self) -> &SacSpec {
        &self.spec
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Gradient updates done.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The current temperature (a host read).
    pub fn alpha(&self) -> SacResult<f64> {
        Ok(self.alpha.f_double_value(&[])?)
    }

    pub fn target_entropy(&self) -> f64 {
        self.target_entropy
    }

    /// The actor's weights, what the actors load ([`SacActor::load_bytes`]).
    pub fn actor_weights(&self) -> Vec<u8> {
        self.actor.to_bytes()
    }

    /// The TD target `r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log
    /// pi(a'|s'))`, `a' ~ pi(.|s')`, `[B]`, without gradient.
    pub fn td_target(&self, batch: &ReplayBatch) -> SacResult<Tensor> {
        let _guard = tch::no_grad_guard();
        let next_obs = batch.next_obs.f_to_device(self.device)?;
        let s = self.actor.sample_with_logprob(&next_obs)?;
        let q1 = self.qf1_target.forward(&next_obs, &s.action)?;
        let q2 = self.qf2_target.forward(&next_obs, &s.action)?;
        let min_q = q1.f_minimum(&q2)?.f_sub(&s.log_prob.f_mul(&self.alpha)?)?;
        let not_done = batch
            .terminated
            .f_to_device(self.device)?
            .f_to_kind(Kind::Float)?
            .f_neg()?
            .f_add_scalar(1.0)?;
        let rewards = batch
            .rewards
            .f_to_device(self.device)?
            .f_to_kind(Kind::Float)?;
        Ok(rewards.f_add(&not_done.f_mul(&min_q)?.f_mul_scalar(self.cfg.gamma)?)?)
    }

    /// One gradient update on `batch`, in CleanRL's order: the Q step; on every
    /// `policy_frequency`-th update, `policy_frequency` actor steps each followed by a
    /// temperature step (autotune); on every `target_network_frequency`-th update, the
    /// Polyak update of both targets.
    pub fn update(&mut self, batch: &ReplayBatch) -> SacResult<SacStats> {
        batch.rows()?;
        let obs = batch.obs.f_to_device(self.device)?.f_to_kind(Kind::Float)?;
        let actions = batch
            .actions
            .f_to_device(self.device)?
            .f_to_kind(Kind::Float)?;
        let next_q = self.td_target(batch)?;

        let q1 = self.qf1.forward(&obs, &actions)?;
        let q2 = self.qf2.forward(&obs, &actions)?;
        let qf1_loss = q1.f_mse_loss(&next_q, tch::Reduction::Mean)?;
        let qf2_loss = q2.f_mse_loss(&next_q, tch::Reduction::Mean)?;
        self.q_opt.zero_grad();
        qf1_loss.f_add(&qf2_loss)?.f_backward()?;
        self.q_opt.step(self.cfg.q_lr)?;

        let actor_updated = self.updates % self.cfg.policy_frequency == 0;
        if actor_updated {
            for _ in 0..self.cfg.policy_frequency {
                let s = self.actor.sample_with_logprob(&obs)?;
                let q1_pi = self.qf1.forward(&obs, &s.action)?;
                let q2_pi = self.qf2.forward(&obs, &s.action)?;
                let min_q = q1_pi.f_minimum(&q2_pi)?;
                let actor_loss = s
                    .log_prob
                    .f_mul(&self.alpha)?
                    .f_sub(&min_q)?
                    .f_mean(Kind::Float)?;
                self.actor_opt.zero_grad();
                actor_loss.f_backward()?;
                self.actor_opt.step(self.cfg.policy_lr)?;
                self.last_actor_loss = actor_loss.f_detach()?;

                if let Some(opt) = &mut self.alpha_opt {
                    let log_pi = tch::no_grad(|| self.actor.sample_with_logprob(&obs))?.log_prob;
                    let alpha_loss = self
                        .log_alpha
                        .f_exp()?
                        .f_neg()?
                        .f_mul(&log_pi.f_add_scalar(self.target_entropy)?)?
                        .f_mean(Kind::Float)?;
                    opt.zero_grad();
                    alpha_loss.f_backward()?;
                    opt.step(self.cfg.alpha_lr)?;
                    self.alpha = tch::no_grad(|| self.log_alpha.f_exp())?.f_detach()?;
                    self.last_alpha_loss = alpha_loss.f_detach()?;
                }
            }
        }

        if self.updates % self.cfg.target_network_frequency == 0 {
            self.update_targets()?;
        }
        self.updates += 1;

        let q_mean = tch::no_grad(|| q1.f_add(&q2)?.f_mean(Kind::Float))?.f_mul_scalar(0.5)?;
        let logged = Tensor::f_stack(
            &[
                qf1_loss.f_detach()?,
                qf2_loss.f_detach()?,
                self.last_actor_loss.shallow_clone(),
                self.alpha.shallow_clone(),
                self.last_alpha_loss.shallow_clone(),
                q_mean.f_detach()?,
            ],
            0,
        )?
        .f_to_device(Device::Cpu)?;
        let v = Vec::<f64>::try_from(&logged.f_to_kind(Kind::Double)?)?;
        Ok(SacStats {
            qf1_loss: v[0],
            qf2_loss: v[1],
            actor_loss: v[2],
            alpha: v[3],
            alpha_loss: v[4],
            q_mean: v[5],
            actor_updated,
        })
    }

    /// One step of SAC's actor optimizer on `loss` (a recalibration towards the
    /// imitator, [`seed`]).
    pub fn step_actor(&mut self, loss: &Tensor) -> SacResult<()> {
        self.actor_opt.zero_grad();
        loss.f_backward()?;
        self.actor_opt.step(self.cfg.policy_lr)?;
        Ok(())
    }

    /// `target = tau online + (1 - tau) target` for both Q networks.
    pub fn update_targets(&mut self) -> SacResult<()> {
        let tau = self.cfg.tau;
        polyak_update(&self.qf1_target.parameters(), &self.qf1.parameters(), tau)?;
        polyak_update(&self.qf2_target.parameters(), &self.qf2.parameters(), tau)?;
        Ok(())
    }

    /// Everything a checkpoint needs to resume training exactly (but the replay
    /// buffer): the update count, the five networks, the three optimizers and
    /// `log_alpha`.
    ///
    /// ```text
    /// "VLYS" | version u32 = 1 | updates u64 | count u32 = 9
    /// count x ( len u64 | bytes ): actor, qf1, qf2, qf1_target, qf2_target (weights),
    ///   actor_opt, q_opt, alpha_opt (Adam state, empty without autotune), log_alpha (f32)
    /// ```
    pub fn state_to_bytes(&self) -> Vec<u8> {
        let log_alpha = tch::no_grad(|| self.log_alpha.to_device(Device::Cpu).double_value(&[]));
        let sections: [Vec<u8>; 9] = [
            self.actor.to_bytes(),
            self.qf1.to_bytes(),
            self.qf2.to_bytes(),
            self.qf1_target.to_bytes(),
            self.qf2_target.to_bytes(),
            self.actor_opt.state_to_bytes(),
            self.q_opt.state_to_bytes(),
            self.alpha_opt
                .as_ref()
                .map(|o| o.state_to_bytes())
                .unwrap_or_default(),
            (log_alpha as f32).to_le_bytes().to_vec(),
        ];
        let mut out = Vec::with_capacity(32 + sections.iter().map(|s| 8 + s.len()).sum::<usize>());
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&STATE_VERSION.to_le_bytes());
        out.extend_from_slice(&self.updates.to_le_bytes());
        out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
        for s in &sections {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s);
        }
        out
    }

    /// Restores [`Sac::state_to_bytes`] output of a `Sac` with the same spec and
    /// config. Everything is loaded into fresh networks first: on error nothing
    /// changes.
    pub fn load_state_bytes(&mut self, bytes: &[u8]) -> SacResult<()> {
        let bad = |m: String| SacError::BadState(m);
        let take = |pos: &mut usize, n: usize, what: &str| -> SacResult<&[u8]> {
            let end = pos.checked_add(n).filter(|&e| e <= bytes.len());
            match end {
                Some(end) => {
                    let s = &bytes[*pos..end];
                    *pos = end;
                    Ok(s)
                }
                None => Err(bad(format!(
                    "truncated state: {what} needs {n} bytes at offset {pos}"
                ))),
            }
        };
        let mut pos = 0usize;
        if take(&mut pos, 4, "magic")? != STATE_MAGIC {
            return Err(bad("not a volley sac state (bad magic)".into()));
        }
        let u32_at = |pos: &mut usize, what: &str| -> SacResult<u32> {
            let b = take(pos, 4, what)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let version = u32_at(&mut pos, "version")?;
        if version != STATE_VERSION {
            return Err(bad(format!(
                "sac state version {version}, this build reads {STATE_VERSION}"
            )));
        }
        let u64_at = |pos: &mut usize, what: &str| -> SacResult<u64> {
            let b = take(pos, 8, what)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Ok(u64::from_le_bytes(a))
        };
        let updates = u64_at(&mut pos, "update count")?;
        let count = {
            let b = take(&mut pos, 4, "section count")?;
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        if count != 9 {
            return Err(bad(format!("{count} sections, expected 9")));
        }
        let mut sections = Vec::with_capacity(9);
        for i in 0..9 {
            let len = u64_at(&mut pos, "section length")?;
            let len = usize::try_from(len).map_err(|_| bad(format!("section {i} too long")))?;
            sections.push(take(&mut pos, len, "section")?);
        }
        if pos != bytes.len() {
            return Err(bad(format!(
                "{} trailing bytes after the state",
                bytes.len() - pos
            )));
        }

        let mut fresh = Sac::new(self.spec.clone(), self.cfg.clone(), self.device)?;
        fresh.actor.load_bytes(sections[0])?;
        fresh.qf1.load_bytes(sections[1])?;
        fresh.qf2.load_bytes(sections[2])?;
        fresh.qf1_target.load_bytes(sections[3])?;
        fresh.qf2_target.load_bytes(sections[4])?;
        fresh.actor_opt.load_state_bytes(sections[5])?;
        fresh.q_opt.load_state_bytes(sections[6])?;
        match &mut fresh.alpha_opt {
            Some(opt) => opt.load_state_bytes(sections[7])?,
            None if sections[7].is_empty() => {}
            None => {
                return Err(bad(
                    "the state has a temperature optimizer, this config does not autotune".into(),
                ))
            }
        }
        let la: [u8; 4] = sections[8]
            .try_into()
            .map_err(|_| bad(format!("log_alpha of {} bytes", sections[8].len())))?;
        let la = f32::from_le_bytes(la);
        if fresh.alpha_opt.is_some() {
            if !la.is_finite() {
                return Err(bad(format!("log_alpha {la}")));
            }
            let _ = tch::no_grad(|| fresh.log_alpha.shallow_clone().f_fill_(f64::from(la)))?;
            fresh.alpha = tch::no_grad(|| fresh.log_alpha.f_exp())?.f_detach()?;
        }
        fresh.updates = updates;
        fresh.seeding = self.seeding.take();
        fresh.run_seed = self.run_seed;
        *self = fresh;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// The training loop's view
// ---------------------------------------------------------------------------------

/// SAC's statistics: the first 7 of [`SEEDED_STATS`].
const STATS: &[(&str, &str)] = SEEDED_STATS.split_at(7).0;

/// SAC's statistics and, last, those of the seeding by imitation.
const SEEDED_STATS: &[(&str, &str)] = &[
    ("q_loss", "mean of the twin Q losses of the last update"),
    ("qf1_loss", "first Q network's loss of the last update"),
    ("qf2_loss", "second Q network's loss of the last update"),
    ("actor_loss", "actor loss of the last actor step"),
    ("alpha", "entropy temperature"),
    ("alpha_loss", "temperature loss of the last temperature step"),
    ("q_mean", "mean Q value of the last update's batch"),
    ("recalibrate_p", "probability of a recalibration step towards the imitator now"),
    ("recalibrations", "recalibration steps towards the imitator so far"),
    ("recalibrate_loss", "imitation loss of the last recalibration step"),
];

impl Algorithm for Sac {
    fn source(&self) -> Source {
        Source::Replay(ReplaySettings {
            capacity: self.cfg.buffer_size,
            max_bytes: self.cfg.buffer_max_bytes(),
            batch_size: self.cfg.batch_size,
            learning_starts: self.cfg.learning_starts,
            replay_ratio: self.cfg.replay_ratio,
            n_step: 1,
            gamma: self.cfg.gamma,
            split_rewards: false,
            frame_stack: None,
        })
    }

    fn start(&mut self, fresh: bool) -> anyhow::Result<()> {
        let Some(seeding) = self.seeding.take() else {
            return Ok(());
        };
        if fresh {
            let n = self.cfg.imitation.pretrain_updates;
            let t0 = std::time::Instant::now();
            let p = seeding.pretrain(self, self.run_seed)?;
            volley_common::say!(
                "volley-learner: sac seeded by imitation: {n} pretraining steps on {} demonstrations in {:.1} s: action MSE {:.4}, critic loss {:.3} (rewards-to-go mean {:.1})",
                seeding.demos().len(),
                t0.elapsed().as_secs_f64(),
                p.action_mse,
                p.q_loss,
                p.returns_mean
            );
        }
        self.seeding = Some(seeding);
        Ok(())
    }

    fn update(&mut self, batch: &Batch<'_>, _ctx: &UpdateContext<'_>) -> anyhow::Result<Stats> {
        let s = Sac::update(self, batch.replay("sac")?)?;
        let mut stats = vec![
            ("q_loss", 0.5 * (s.qf1_loss + s.qf2_loss)),
            ("qf1_loss", s.qf1_loss),
            ("qf2_loss", s.qf2_loss),
            ("actor_loss", s.actor_loss),
            ("alpha", s.alpha),
            ("alpha_loss", s.alpha_loss),
            ("q_mean", s.q_mean),
        ];
        if let Some(mut seeding) = self.seeding.take() {
            let updates = self.updates - 1;
            let r = seeding.after_update(self, updates, self.run_seed);
            let (p, n, loss) = seeding.stats(updates);
            self.seeding = Some(seeding);
            r?;
            stats.extend([
                ("recalibrate_p", p),
                ("recalibrations", n as f64),
                ("recalibrate_loss", loss),
            ]);
        }
        Ok(stats)
    }

    fn actor_weights(&self) -> Vec<u8> {
        Sac::actor_weights(self)
    }

    fn state(&self) -> Vec<u8> {
        Sac::state_to_bytes(self)
    }

    fn load_state(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        Ok(Sac::load_state_bytes(self, bytes)?)
    }

    fn stats_help(&self) -> &'static [(&'static str, &'static str)] {
        if self.seeding.is_some() {
            SEEDED_STATS
        } else {
            STATS
        }
    }
}

/// SAC for a run: `[sac]` (CleanRL's defaults) for a box observation and a bounded
/// box action space.
pub fn build(ctx: BuildContext<'_>) -> anyhow::Result<Built> {
    let cfg: SacConfig = ctx.section()?;
    cfg.validate()?;
    let spec = SacSpec::for_spaces(ctx.observation_space, ctx.action_space, cfg.hidden.clone())?;
    let mut sac = Sac::new(spec.clone(), cfg.clone(), ctx.device)?;
    sac.run_seed = ctx.cfg.run.seed;
    let seeded = cfg.imitation.enabled();
    if seeded {
        cfg.imitation.validate()?;
        if ctx.cfg.imitation.dataset.trim().is_empty() {
            anyhow::bail!("sac.imitation.pretrain_updates > 0 seeds SAC from demonstrations: set imitation.dataset to a transitions file (record one with volley-runs play EXPERT --record FILE)");
        }
        let (demos, t) = crate::imitation::load_transitions(
            ctx.cfg,
            ctx.observation_space,
            ctx.action_space,
            cfg.imitation.dataset_capacity,
            ctx.device,
        )?;
        sac.seeding = Some(Box::new(Seeding::new(
            cfg.imitation.clone(),
            demos,
            &t,
            cfg.gamma,
        )?));
    }
    Ok(Built {
        section: super::section_of(&cfg)?,
        spec_json: serde_json::to_string(&spec)?,
        // A seeded policy acts from the start: no uniform random warm-up.
        explore_json: serde_json::to_string(&volley_common::nn::sac::SacExplore {
            warm_up: !seeded,
        })?,
        algorithm: Box::new(sac),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::ReplayBuffer;
    use rand::SeedableRng;
    use volley_common::env::EnvRng;

    fn spec() -> SacSpec {
        SacSpec {
            obs_dim: 4,
            action_low: vec![-1.0, -2.0],
            action_high: vec![1.0, 2.0],
            hidden: vec![256, 256],
        }
    }

    fn small_cfg() -> SacConfig {
        SacConfig {
            hidden: vec![32, 32],
            batch_size: 16,
            ..SacConfig::default()
        }
    }

    fn random_batch(n: i64, terminated: f32) -> ReplayBatch {
        let o = (Kind::Float, Device::Cpu);
        ReplayBatch {
            obs: Tensor::randn([n, 4], o),
            actions: Tensor::rand([n, 2], o) - 0.5,
            rewards: Tensor::randn([n], o),
            next_obs: Tensor::randn([n, 4], o),
            terminated: Tensor::full([n], f64::from(terminated), o),
            horizon: Tensor::ones([n], o),
            reward_parts: Tensor::zeros([n, 0], o),
        }
    }

    fn f64s(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap()
    }

    #[test]
    fn config_defaults_are_cleanrl_and_unknown_keys_fail() {
        let _torch = volley_common::testing::torch();
        let c: SacConfig = toml::from_str("").unwrap();
        assert_eq!(c, SacConfig::default());
        assert_eq!(
            (c.buffer_size, c.batch_size, c.learning_starts),
            (1_000_000, 256, 5000)
        );
        assert_eq!(
            (c.gamma, c.tau, c.policy_lr, c.q_lr),
            (0.99, 0.005, 3e-4, 1e-3)
        );
        assert_eq!((c.policy_frequency, c.target_network_frequency), (2, 1));
        assert!(c.autotune && c.alpha == 0.2 && c.replay_ratio == 1.0);
        assert_eq!(c.hidden, vec![256, 256]);
        assert!(c.validate().is_ok());
        assert!(toml::from_str::<SacConfig>("gama = 0.9").is_err());
        for bad in [
            "tau = 0.0",
            "policy_frequency = 0",
            "replay_ratio = 0.0",
            "hidden = []",
        ] {
            let c: SacConfig = toml::from_str(bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(c.random_phase(4999) && !c.random_phase(5000));
    }

    #[test]
    fn terminated_rows_do_not_bootstrap_and_others_do() {
        let _torch = volley_common::testing::torch();
        tch::manual_seed(0);
        let sac = Sac::new(spec(), small_cfg(), Device::Cpu).unwrap();
        let mut b = random_batch(8, 0.0);
        b.terminated = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        let r = f64s(&b.rewards);
        // Fix the sampled next actions: recompute the target's pieces with the same seed.
        tch::manual_seed(5);
        let y = f64s(&sac.td_target(&b).unwrap());
        tch::manual_seed(5);
        let s = tch::no_grad(|| sac.actor.sample_with_logprob(&b.next_obs).unwrap());
        let q1 = sac.qf1_target.forward(&b.next_obs, &s.action).unwrap();
        let q2 = sac.qf2_target.forward(&b.next_obs, &s.action).unwrap();
        let soft = f64s(&(q1.minimum(&q2) - s.log_prob * sac.alpha().unwrap()));
        for i in 0..8 {
            if i % 2 == 0 {
                assert_eq!(y[i], r[i], "terminated row {i}");
            } else {
                let want = r[i] + 0.99 * soft[i];
                assert!((y[i] - want).abs() < 1e-5, "row {i}: {} vs {want}", y[i]);
                assert!((y[i] - r[i]).abs() > 1e-4);
            }
        }
    }

    #[test]
    fn update_order_targets_and_temperature() {
        let _torch = volley_common::testing::torch();
        tch::manual_seed(1);
        let cfg = small_cfg();
        let mut sac = Sac::new(spec(), cfg.clone(), Device::Cpu).unwrap();
        assert_eq!(sac.qf1_target.to_bytes(), sac.qf1.to_bytes());
        assert_eq!(sac.alpha().unwrap(), 1.0);
        assert_eq!(sac.target_entropy(), -2.0);
        let b = random_batch(16, 0.0);

        // Expected targets after one update: tau q' + (1 - tau) q_old_target, with q'
        // the Q weights after the Q step. Snapshot the target before.
        let t1_before: Vec<Tensor> = sac
            .qf1_target
            .parameters()
            .iter()
            .map(|t| t.detach().copy())
            .collect();
        let actor_before = sac.actor.to_bytes();
        let s0 = sac.update(&b).unwrap();
        assert!(s0.actor_updated);
        assert_ne!(sac.actor.to_bytes(), actor_before);
        // Two actor steps, each followed by a temperature step (Adam's first steps
        // move log_alpha by about lr each): log alpha ~ -2e-3 or +2e-3.
        assert_eq!(sac.actor_opt.steps(), 2);
        assert_eq!(sac.alpha_opt.as_ref().map(|o| o.steps()), Some(2));
        assert!(
            (s0.alpha.ln().abs() - 2e-3).abs() < 2e-4,
            "alpha {}",
            s0.alpha
        );
        for ((t, old), p) in sac
            .qf1_target
            .parameters()
            .iter()
            .zip(&t1_before)
            .zip(sac.qf1.parameters())
        {
            let want = &p * cfg.tau + old * (1.0 - cfg.tau);
            assert!(t.equal(&want.detach()));
        }
        // The second update has no actor step (policy_frequency 2), the third does.
        let actor_after = sac.actor.to_bytes();
        let s1 = sac.update(&b).unwrap();
        assert!(!s1.actor_updated);
        assert_eq!(sac.actor.to_bytes(), actor_after);
        assert_eq!(s1.actor_loss, s0.actor_loss);
        assert!(sac.update(&b).unwrap().actor_updated);
        assert_eq!(sac.actor_opt.steps(), 4);
        assert_eq!(sac.q_opt.steps(), 3);
        assert_eq!(sac.updates(), 3);
        for s in [&s0, &s1] {
            assert!(s.qf1_loss.is_finite() && s.qf2_loss.is_finite() && s.q_mean.is_finite());
        }

        // Without autotune alpha stays fixed.
        let cfg = SacConfig {
            autotune: false,
            ..small_cfg()
        };
        let mut fixed = Sac::new(spec(), cfg, Device::Cpu).unwrap();
        let s = fixed.update(&b).unwrap();
        assert!((s.alpha - 0.2).abs() < 1e-7 && s.alpha_loss == 0.0);
    }

    #[test]
    fn q_update_fits_a_fixed_target() {
        let _torch = volley_common::testing::torch();
        // With gamma 0 the target is the reward: a few hundred updates fit it.
        tch::manual_seed(2);
        let cfg = SacConfig {
            gamma: 0.0,
            ..small_cfg()
        };
        let mut sac = Sac::new(spec(), cfg, Device::Cpu).unwrap();
        let mut b = random_batch(64, 0.0);
        b.rewards = b.actions.sum_dim_intlist(-1, false, Kind::Float) * 3.0;
        let first = sac.update(&b).unwrap().qf1_loss;
        let mut last = first;
        for _ in 0..300 {
            last = sac.update(&b).unwrap().qf1_loss;
        }
        assert!(last < 0.05 * first, "{first} -> {last}");
    }

    #[test]
    fn state_round_trip_resumes_identically() {
        let _torch = volley_common::testing::torch();
        tch::manual_seed(3);
        let mut a = Sac::new(spec(), small_cfg(), Device::Cpu).unwrap();
        let mut buf = ReplayBuffer::new(100, 4, 2, u64::MAX, Device::Cpu).unwrap();
        let b = random_batch(100, 0.0);
        buf.push_batch(&b.obs, &b.actions, &b.rewards, &b.next_obs, &b.terminated)
            .unwrap();
        let mut rng = EnvRng::seed_from_u64(0);
        for _ in 0..3 {
            a.update(&buf.sample(16, &mut rng).unwrap()).unwrap();
        }
        let state = a.state_to_bytes();
        let mut c = Sac::new(spec(), small_cfg(), Device::Cpu).unwrap();
        c.load_state_bytes(&state).unwrap();
        assert_eq!(c.state_to_bytes(), state);
        assert_eq!(c.updates(), 3);
        let batch = buf.sample(16, &mut rng).unwrap();
        tch::manual_seed(9);
        let sa = a.update(&batch).unwrap();
        tch::manual_seed(9);
        let sc = c.update(&batch).unwrap();
        // The last actor and temperature losses are logging only, not state.
        assert_eq!(
            (sa.qf1_loss, sa.qf2_loss, sa.q_mean),
            (sc.qf1_loss, sc.qf2_loss, sc.q_mean)
        );
        assert_eq!((sa.alpha, sa.actor_updated), (sc.alpha, sc.actor_updated));
        assert_eq!(a.state_to_bytes(), c.state_to_bytes());

        let before = c.state_to_bytes();
        for cut in (0..state.len()).step_by(997) {
            assert!(c.load_state_bytes(&state[..cut]).is_err());
        }
        let mut longer = state.clone();
        longer.push(0);
        assert!(c.load_state_bytes(&longer).is_err());
        let other = SacConfig {
            autotune: false,
            ..small_cfg()
        };
        let mut d = Sac::new(spec(), other, Device::Cpu).unwrap();
        assert!(d
            .load_state_bytes(&state)
            .unwrap_err()
            .to_string()
            .contains("autotune"));
        assert_eq!(c.state_to_bytes(), before);
    }
}
