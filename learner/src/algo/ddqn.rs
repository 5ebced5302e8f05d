//! Double DQN (van Hasselt, Guez and Silver 2016, "Deep Reinforcement Learning with
//! Double Q-learning", arXiv 1509.06461) on the DQN of Mnih et al. 2015: the online
//! network selects the next action, the target network evaluates it,
//!
//! `y = r + gamma^h (1 - terminated) Q_target(s', argmax_a Q_online(s', a))`,
//!
//! with `h` the steps the stored reward sums (1, or up to `n_step` for n-step returns
//! computed within each chunk, [`crate::replay::nstep_transitions`]), a Huber loss
//! (Nature DQN's error clipping) between `Q_online(s, a)` and `y`, global grad-norm
//! clipping, a target network copied every `target_update_every` updates (or
//! Polyak-averaged with `tau < 1`), and replay at `replay_ratio` updates per env step.
//! Actors act epsilon-greedily, epsilon linear over the run's env steps
//! (`volley_common::nn::ddqn`).
//!
//! Layout: the hyperparameters ([`DdqnConfig`]; defaults the Atari settings of Mnih
//! et al. 2015 that van Hasselt et al. keep, with the tuned version's final epsilon
//! 0.01 and Adam as CleanRL's `dqn_atari.py`), the networks ([`QNetwork`] in
//! `volley_common::nn::ddqn`), the update ([`double_q_target`], [`Ddqn::update`]),
//! the training loop's view ([`build`]).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};
use volley_common::env::Space;
use volley_common::nn::ddqn::{gather_actions, EpsilonSchedule, QNetwork};
use volley_common::nn::{Adam, AdamConfig, ModelKind, ModelSpec};

use super::{Algorithm, Batch, BuildContext, Built, Source, Stats, UpdateContext};
use crate::checkpoint::{pack_state, unpack_state};
use crate::replay::{ReplayBatch, ReplaySettings};

// ---------------------------------------------------------------------------------
// Hyperparameters
// ---------------------------------------------------------------------------------

/// Double DQN hyperparameters (shared by Split-Q, which adds its own); defaults are
/// Mnih et al. 2015's Atari values as van Hasselt et al. 2016 use them. Unknown keys
/// are refused by the config loader's round trip (the struct is also flattened into
/// Split-Q's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DdqnConfig {
    /// Replay capacity in transitions.
    pub buffer_size: usize,
    /// Refuse a replay buffer whose storage would exceed this many GiB.
    pub buffer_max_gib: f64,
    /// Transitions per update.
    pub batch_size: usize,
    /// Discount factor.
    pub gamma: f64,
    /// Adam learning rate.
    pub lr: f64,
    /// Adam epsilon.
    pub adam_eps: f64,
    /// Transitions stored before the first update.
    pub learning_starts: u64,
    /// Gradient updates per env step (one update every 4 steps).
    pub replay_ratio: f64,
    /// Copy the online network into the target every this many updates (10000 env
    /// steps at one update per 4).
    pub target_update_every: u64,
    /// Polyak rate of the target update: 1 copies (hard update), below 1 averages.
    pub tau: f64,
    /// Rewards summed per stored transition (n-step returns; 1: one-step).
    pub n_step: usize,
    /// Huber loss threshold (Nature DQN's error clipping at 1).
    pub huber_delta: f64,
    /// Global grad-norm clipping threshold (0: none).
    pub max_grad_norm: f64,
    /// Epsilon of the first env step.
    pub epsilon_start: f64,
    /// Epsilon once annealed.
    pub epsilon_final: f64,
    /// Env steps over which epsilon falls linearly.
    pub epsilon_steps: u64,
}

impl Default for DdqnConfig {
    fn default() -> Self {
        DdqnConfig {
            buffer_size: 1_000_000,
            buffer_max_gib: 16.0,
            batch_size: 32,
            gamma: 0.99,
            lr: 1e-4,
            adam_eps: 1e-8,
            learning_starts: 50_000,
            replay_ratio: 0.25,
            target_update_every: 2_500,
            tau: 1.0,
            n_step: 1,
            huber_delta: 1.0,
            max_grad_norm: 10.0,
            epsilon_start: 1.0,
            epsilon_final: 0.01,
            epsilon_steps: 1_000_000,
        }
    }
}

impl DdqnConfig {
    /// Checks the ranges; `section` names the config section in messages.
    pub fn validate(&self, section: &str) -> Result<()> {
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if self.buffer_size == 0 || self.batch_size == 0 || self.n_step == 0 {
            bail!("{section}.buffer_size, {section}.batch_size and {section}.n_step must be >= 1");
        }
        if self.target_update_every == 0 {
            bail!("{section}.target_update_every must be >= 1");
        }
        for (name, v) in [
            ("gamma", self.gamma),
            ("epsilon_start", self.epsilon_start),
            ("epsilon_final", self.epsilon_final),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{section}.{name} must be in [0, 1], got {v}");
            }
        }
        if !(self.tau > 0.0 && self.tau <= 1.0) {
            bail!("{section}.tau must be in (0, 1], got {}", self.tau);
        }
        for (name, v) in [
            ("lr", self.lr),
            ("adam_eps", self.adam_eps),
            ("replay_ratio", self.replay_ratio),
            ("huber_delta", self.huber_delta),
            ("buffer_max_gib", self.buffer_max_gib),
        ] {
            if !pos(v) {
                bail!("{section}.{name} must be > 0, got {v}");
            }
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            bail!("{section}.max_grad_norm must be >= 0, got {}", self.max_grad_norm);
        }
        Ok(())
    }

    /// What actors explore with.
    pub fn schedule(&self) -> EpsilonSchedule {
        EpsilonSchedule {
            epsilon_start: self.epsilon_start,
            epsilon_final: self.epsilon_final,
            epsilon_steps: self.epsilon_steps,
        }
    }

    /// The replay the loop feeds.
    pub fn replay(&self) -> ReplaySettings {
        ReplaySettings {
            capacity: self.buffer_size,
            max_bytes: (self.buffer_max_gib * (1u64 << 30) as f64) as u64,
            batch_size: self.batch_size,
            learning_starts: self.learning_starts,
            replay_ratio: self.replay_ratio,
            n_step: self.n_step,
            gamma: self.gamma,
            split_rewards: false,
            frame_stack: None,
        }
    }

    /// A fresh Adam with these settings.
    pub fn adam(&self, params: Vec<Tensor>) -> Result<Adam> {
        Ok(Adam::new(
            params,
            AdamConfig {
                eps: self.adam_eps,
                ..AdamConfig::default()
            },
        )?)
    }
}

/// The Q network's spec for the run: `[model]` with `auto` meaning the Nature CNN
/// for images (DQN's) and an MLP for vectors; a discrete action space.
pub fn q_spec(ctx: &BuildContext<'_>) -> Result<ModelSpec> {
    let model = &ctx.cfg.model;
    let kind = match (model.kind.as_str(), ctx.observation_space) {
        ("auto", Space::Image { .. }) => ModelKind::NatureCnn { fc: model.fc },
        _ => model.kind_for(ctx.observation_space),
    };
    if !matches!(ctx.action_space, Space::Discrete { .. }) {
        bail!(
            "{} needs a discrete action space, and {} has {}",
            ctx.cfg.algorithm,
            ctx.cfg.env.id,
            ctx.action_space.describe()
        );
    }
    Ok(ModelSpec::for_spaces(
        kind,
        ctx.observation_space,
        ctx.action_space,
    )?)
}

// ---------------------------------------------------------------------------------
// The update
// ---------------------------------------------------------------------------------

/// The Double DQN target of `batch`, `[B]`, without gradient:
/// `r + gamma^h (1 - d) Q_target(s', argmax_a Q_online(s', a))`.
pub fn double_q_target(
    online: &QNetwork,
    target: &QNetwork,
    batch: &ReplayBatch,
    gamma: f64,
) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let device = online.device();
    let next = batch.next_obs.f_to_device(device)?;
    let best = online.forward(&next)?.f_argmax(1, false)?;
    let q_next = gather_actions(&target.forward(&next)?, &best)?;
    bootstrap(&batch.rewards, batch, &q_next, gamma, device)
}

/// `rewards + gamma^h (1 - d) q_next`, `[B]`, with the horizons and terminations of
/// `batch`.
pub(crate) fn bootstrap(
    rewards: &Tensor,
    batch: &ReplayBatch,
    q_next: &Tensor,
    gamma: f64,
    device: Device,
) -> Result<Tensor> {
    let f = |t: &Tensor| -> Result<Tensor> { Ok(t.f_to_device(device)?.f_to_kind(Kind::Float)?) };
    let discount = f(&batch.horizon)?
        .f_mul_scalar(gamma.ln())?
        .f_exp()?
        .f_mul(&f(&batch.terminated)?.f_neg()?.f_add_scalar(1.0)?)?;
    Ok(f(rewards)?.f_add(&discount.f_mul(q_next)?)?)
}

/// Double DQN's networks and optimizer.
#[derive(Debug)]
pub struct Ddqn {
    pub cfg: DdqnConfig,
    pub online: QNetwork,
    pub target: QNetwork,
    adam: Adam,
    /// Updates done (decides the target updates).
    updates: u64,
}

/// What one update logged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdqnStats {
    pub loss: f64,
    /// Mean `Q(s, a)` of the batch's actions.
    pub q_mean: f64,
    /// Whether this update refreshed the target network.
    pub target_updated: bool,
}

impl Ddqn {
    /// Fresh networks for `spec` (the target a copy of the online network).
    pub fn new(spec: ModelSpec, cfg: DdqnConfig, device: Device) -> Result<Ddqn> {
        cfg.validate("ddqn")?;
        let online = QNetwork::new(spec.clone(), device)?;
        let mut target = QNetwork::new(spec, device)?;
        target.copy_from(&online)?;
        let adam = cfg.adam(online.parameters())?;
        Ok(Ddqn {
            cfg,
            online,
            target,
            adam,
            updates: 0,
        })
    }

    /// One update: Huber loss to the double-Q target, a clipped Adam step, and the
    /// target update when due.
    pub fn update(&mut self, batch: &ReplayBatch) -> Result<DdqnStats> {
        batch.rows()?;
        let y = double_q_target(&self.online, &self.target, batch, self.cfg.gamma)?;
        let device = self.online.device();
        let q = gather_actions(
            &self.online.forward(&batch.obs.f_to_device(device)?)?,
            &batch.actions.f_to_device(device)?.f_select(1, 0)?.f_round()?,
        )?;
        let loss = q.f_huber_loss(&y, Reduction::Mean, self.cfg.huber_delta)?;
        self.adam.zero_grad();
        loss.f_backward()?;
        if self.cfg.max_grad_norm > 0.0 {
            let _ = self.adam.clip_grad_norm(self.cfg.max_grad_norm)?;
        }
        self.adam.step(self.cfg.lr)?;
        self.updates += 1;
        let target_updated = self.updates % self.cfg.target_update_every == 0;
        if target_updated {
            self.target.soft_update_from(&self.online, self.cfg.tau)?;
        }
        Ok(DdqnStats {
            loss: loss.f_double_value(&[])?,
            q_mean: q.f_mean(Kind::Float)?.f_double_value(&[])?,
            target_updated,
        })
    }
}

// ---------------------------------------------------------------------------------
// The training loop's view
// ---------------------------------------------------------------------------------

const STATE_MAGIC: &[u8; 4] = b"VLYE";

const STATS: &[(&str, &str)] = &[
    ("loss", "Huber loss of the last update"),
    ("q_mean", "mean Q value of the last update's batch"),
];

impl Algorithm for Ddqn {
    fn source(&self) -> Source {
        Source::Replay(self.cfg.replay())
    }

    fn update(&mut self, batch: &Batch<'_>, _ctx: &UpdateContext<'_>) -> Result<Stats> {
        let s = Ddqn::update(self, batch.replay("ddqn")?)?;
        Ok(vec![("loss", s.loss), ("q_mean", s.q_mean)])
    }

    fn actor_weights(&self) -> Vec<u8> {
        self.online.to_bytes()
    }

    fn state(&self) -> Vec<u8> {
        pack_state(
            STATE_MAGIC,
            &[
                &self.online.to_bytes(),
                &self.target.to_bytes(),
                &self.adam.state_to_bytes(),
                &self.updates.to_le_bytes(),
            ],
        )
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let parts = unpack_state(STATE_MAGIC, bytes, 4, "ddqn")?;
        let mut fresh = Ddqn::new(
            self.online.spec().clone(),
            self.cfg.clone(),
            self.online.device(),
        )?;
        fresh.online.load_bytes(parts[0])?;
        fresh.target.load_bytes(parts[1])?;
        fresh.adam.load_state_bytes(parts[2])?;
        let n: [u8; 8] = parts[3]
            .try_into()
            .map_err(|_| anyhow::anyhow!("ddqn state: an update count of {} bytes", parts[3].len()))?;
        fresh.updates = u64::from_le_bytes(n);
        *self = fresh;
        Ok(())
    }

    fn stats_help(&self) -> &'static [(&'static str, &'static str)] {
        STATS
    }
}

/// Double DQN for a run: `[ddqn]` and `[model]`, a discrete action space.
pub fn build(ctx: BuildContext<'_>) -> Result<Built> {
    let cfg: DdqnConfig = ctx.section()?;
    cfg.validate("ddqn")?;
    let spec = q_spec(&ctx)?;
    let ddqn = Ddqn::new(spec.clone(), cfg.clone(), ctx.device)?;
    Ok(Built {
        section: super::section_of(&cfg)?,
        spec_json: serde_json::to_string(&spec)?,
        explore_json: serde_json::to_string(&cfg.schedule())?,
        algorithm: Box::new(ddqn),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use volley_common::nn::ModelKind;

    pub(crate) fn spec() -> ModelSpec {
        ModelSpec::for_spaces(
            ModelKind::Mlp { hidden: vec![4] },
            &Space::uniform_box(&[2], -1.0, 1.0),
            &Space::Discrete { n: 3 },
        )
        .unwrap()
    }

    /// Makes `q` output `values` for every observation: zero weights, the values as
    /// the head's bias.
    pub(crate) fn constant_q(q: &QNetwork, values: &[f32]) {
        let _guard = tch::no_grad_guard();
        let params = q.parameters();
        for p in &params {
            let _ = p.shallow_clone().zero_();
        }
        let bias = params.last().unwrap();
        bias.shallow_clone().copy_(&Tensor::from_slice(values));
    }

    pub(crate) fn batch(rewards: &[f32], terminated: &[f32], actions: &[f32]) -> ReplayBatch {
        let n = rewards.len() as i64;
        let o = (Kind::Float, Device::Cpu);
        let r = Tensor::from_slice(rewards);
        ReplayBatch {
            obs: Tensor::randn([n, 2], o),
            actions: Tensor::from_slice(actions).view([n, 1]),
            rewards: Tensor::from_slice(rewards),
            next_obs: Tensor::randn([n, 2], o),
            terminated: Tensor::from_slice(terminated),
            horizon: Tensor::ones([n], o),
            reward_parts: Tensor::stack(&[r.clamp_min(0.0), r.clamp_max(0.0)], 1),
        }
    }

    #[test]
    fn the_double_q_target_by_hand() {
        let _torch = volley_common::testing::torch();
        // Online picks action 1 (its largest value); the target evaluates action 1 at
        // 2.0, although its own maximum (5.0, action 2) is larger: DQN would use 5.
        let online = QNetwork::new(spec(), Device::Cpu).unwrap();
        let target = QNetwork::new(spec(), Device::Cpu).unwrap();
        constant_q(&online, &[0.0, 3.0, 1.0]);
        constant_q(&target, &[-1.0, 2.0, 5.0]);
        let b = batch(&[1.0, 0.5], &[0.0, 1.0], &[0.0, 2.0]);
        let y = Vec::<f32>::try_from(double_q_target(&online, &target, &b, 0.9).unwrap()).unwrap();
        // Row 0: 1 + 0.9 * 2 = 2.8. Row 1 terminated: 0.5.
        assert!((y[0] - 2.8).abs() < 1e-6 && (y[1] - 0.5).abs() < 1e-6, "{y:?}");
        // An n-step row of horizon 3 bootstraps with 0.9^3.
        let mut b3 = batch(&[1.0], &[0.0], &[0.0]);
        b3.horizon = Tensor::from_slice(&[3.0f32]);
        let y = double_q_target(&online, &target, &b3, 0.9).unwrap().double_value(&[0]);
        assert!((y - (1.0 + 0.729 * 2.0)).abs() < 1e-5, "{y}");
    }

    #[test]
    fn updates_fit_the_target_and_refresh_it_on_schedule() {
        let _torch = volley_common::testing::torch();
        tch::manual_seed(0);
        let cfg = DdqnConfig {
            gamma: 0.0,
            lr: 1e-2,
            target_update_every: 3,
            ..DdqnConfig::default()
        };
        let mut d = Ddqn::new(spec(), cfg, Device::Cpu).unwrap();
        let b = batch(&[1.0, -1.0, 0.5, 2.0], &[0.0; 4], &[0.0, 1.0, 2.0, 1.0]);
        let first = d.update(&b).unwrap();
        assert!(!first.target_updated);
        assert!(!d.update(&b).unwrap().target_updated);
        assert!(d.update(&b).unwrap().target_updated);
        assert_eq!(d.target.to_bytes(), d.online.to_bytes());
        let mut last = first.loss;
        for _ in 0..300 {
            last = d.update(&b).unwrap().loss;
        }
        // gamma 0: the target is the reward, a regression the network fits.
        assert!(last < 0.1 * first.loss, "{} -> {last}", first.loss);
        // The whole state resumes identically.
        let state = Algorithm::state(&d);
        let mut e = Ddqn::new(spec(), d.cfg.clone(), Device::Cpu).unwrap();
        e.load_state(&state).unwrap();
        assert_eq!(Algorithm::state(&e), state);
        assert!(e.load_state(&state[..state.len() - 3]).is_err());
        assert_eq!(Algorithm::state(&e), state);
    }
}
