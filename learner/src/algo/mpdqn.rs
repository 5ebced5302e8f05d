//! MP-DQN (Bester, James and Konidaris 2019, "Multi-Pass Q-Networks for Deep
//! Reinforcement Learning with Parameterised Action Spaces", arXiv 1905.04388) with the
//! Platform settings of the reference implementation cycraig/MP-DQN
//! (`run_platform_pdqn.py`, `agents/pdqn.py`), and plain P-DQN (Xiong et al. 2018) behind
//! [`MpdqnConfig::multipass`] for comparison.
//!
//! One update on a uniform replay batch `(s, k, x, r, s', d)`:
//!
//! 1. Q network: `y = r + (1 - d) gamma max_k Q'(s', x'(s'))` with the target networks,
//!    MSE between `Q_k(s, x)` (the choice taken, with the parameters stored) and `y`,
//!    grad-norm clip 10, Adam lr 1e-3;
//! 2. parameter network: maximise `mean_b sum_k Q_k(s, x(s))`. `delta = dJ/dx` is
//!    computed with respect to the parameters alone, then the gradients are inverted
//!    (Hausknecht and Stone 2016) to keep `x` in `[-1, 1]`: a component that would
//!    grow `x` is scaled by `(1 - x) / 2`, one that would shrink it by `(x + 1) / 2`
//!    (negative, so pushed back, once `x` is outside); then `-delta . x(s)` is
//!    backpropagated through the parameter network alone, grad-norm clip 10, Adam lr
//!    1e-4;
//! 3. soft target updates, tau 0.1 (Q) and 0.001 (parameter network).
//!
//! Layout, as in CleanRL: the hyperparameters ([`MpdqnConfig`], the reference's
//! defaults), the networks ([`MpdqnNet`] in `volley_common::nn::mpdqn`, with acting
//! and exploration for the actors), then the update ([`Mpdqn::update`],
//! [`invert_gradients`]), then the training loop's view ([`build`]).

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};
use volley_common::env::Space;
use volley_common::nn::mpdqn::{
    ExploreSettings, Explorer, MpdqnNet, MpdqnSpec, DEFAULT_HIDDEN, PLATFORM_INITIAL_PARAMS,
    PLATFORM_STATE_FEATURES,
};
use volley_common::nn::{Adam, AdamConfig, NnError};

use super::{Algorithm, Batch, BuildContext, Built, Source, Stats, UpdateContext};
use crate::replay::ReplaySettings;

/// Errors of the MP-DQN code: inconsistent inputs or a failure of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum MpdqnError {
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("bad config: {0}")]
    BadConfig(String),
    #[error("bad mp-dqn state: {0}")]
    BadState(String),
    #[error(transparent)]
    Nn(#[from] NnError),
    #[error("torch error: {0}")]
    Torch(#[from] tch::TchError),
}

pub type MpdqnResult<T> = Result<T, MpdqnError>;

// ---------------------------------------------------------------------------------
// Hyperparameters
// ---------------------------------------------------------------------------------

/// MP-DQN hyperparameters; defaults are the reference's Platform values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MpdqnConfig {
    /// Transitions per update.
    pub batch_size: usize,
    /// Discount factor.
    pub gamma: f64,
    /// Replay capacity in transitions.
    pub replay_size: usize,
    /// Transitions collected before the first update.
    pub learning_starts: usize,
    /// Gradient updates per env step once learning started (the reference: 1).
    pub replay_ratio: f64,
    /// Refuse a replay buffer whose storage would exceed this many GiB.
    pub buffer_max_gib: f64,
    /// Epsilon of the first episode.
    pub epsilon_start: f64,
    /// Epsilon once annealed.
    pub epsilon_final: f64,
    /// Episodes over which epsilon anneals linearly.
    pub epsilon_episodes: u64,
    /// Ornstein-Uhlenbeck mean reversion of the parameter noise.
    pub ou_theta: f64,
    /// Ornstein-Uhlenbeck scale of the parameter noise (in `[-1, 1]` units).
    pub ou_sigma: f64,
    /// Polyak rate of the target Q network.
    pub tau_q: f64,
    /// Polyak rate of the target parameter network.
    pub tau_param: f64,
    /// Adam learning rate of the Q network.
    pub lr_q: f64,
    /// Adam learning rate of the parameter network.
    pub lr_param: f64,
    /// Global grad-norm clipping threshold of both networks.
    pub clip_grad: f64,
    /// Hidden layer widths of both networks.
    pub hidden: Vec<i64>,
    /// Observation elements the networks read (Platform: the 9 state features, not the
    /// sub-step count the observation also carries).
    pub state_features: usize,
    /// Initial parameters (env units) of the passthrough layer; `None` starts at the
    /// middle of every range.
    pub initial_params: Option<Vec<f32>>,
    /// MP-DQN's `K` passes; `false` is plain P-DQN (one pass with all parameters).
    pub multipass: bool,
}

impl Default for MpdqnConfig {
    fn default() -> Self {
        MpdqnConfig {
            batch_size: 128,
            gamma: 0.9,
            replay_size: 10_000,
            learning_starts: 500,
            replay_ratio: 1.0,
            buffer_max_gib: 4.0,
            epsilon_start: 1.0,
            epsilon_final: 0.01,
            epsilon_episodes: 1000,
            ou_theta: 0.15,
            ou_sigma: 1e-4,
            tau_q: 0.1,
            tau_param: 0.001,
            lr_q: 1e-3,
            lr_param: 1e-4,
            clip_grad: 10.0,
            hidden: DEFAULT_HIDDEN.to_vec(),
            state_features: PLATFORM_STATE_FEATURES,
            initial_params: Some(PLATFORM_INITIAL_PARAMS.to_vec()),
            multipass: true,
        }
    }
}

impl MpdqnConfig {
    /// Checks the ranges; configs come from files and command lines.
    pub fn validate(&self) -> MpdqnResult<()> {
        let bad = |m: String| Err(MpdqnError::BadConfig(m));
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if self.batch_size == 0 || self.replay_size == 0 {
            return bad("mpdqn.batch_size and mpdqn.replay_size must be >= 1".into());
        }
        if self.batch_size > self.replay_size {
            return bad(format!(
                "mpdqn.batch_size ({}) exceeds mpdqn.replay_size ({})",
                self.batch_size, self.replay_size
            ));
        }
        for (name, v) in [
            ("gamma", self.gamma),
            ("epsilon_start", self.epsilon_start),
            ("epsilon_final", self.epsilon_final),
            ("tau_q", self.tau_q),
            ("tau_param", self.tau_param),
            ("ou_theta", self.ou_theta),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("mpdqn.{name} must be in [0, 1], got {v}"));
            }
        }
        for (name, v) in [
            ("lr_q", self.lr_q),
            ("lr_param", self.lr_param),
            ("clip_grad", self.clip_grad),
            ("replay_ratio", self.replay_ratio),
            ("buffer_max_gib", self.buffer_max_gib),
        ] {
            if !pos(v) {
                return bad(format!("mpdqn.{name} must be > 0, got {v}"));
            }
        }
        if !(self.ou_sigma.is_finite() && self.ou_sigma >= 0.0) {
            return bad(format!(
                "mpdqn.ou_sigma must be >= 0, got {}",
                self.ou_sigma
            ));
        }
        if self.hidden.iter().any(|&h| h <= 0) {
            return bad(format!(
                "mpdqn.hidden widths must be >= 1, got {:?}",
                self.hidden
            ));
        }
        if self.state_features == 0 {
            return bad("mpdqn.state_features must be >= 1".into());
        }
        Ok(())
    }

    /// What actors explore with.
    pub fn explore_settings(&self) -> ExploreSettings {
        ExploreSettings {
            epsilon_start: self.epsilon_start,
            epsilon_final: self.epsilon_final,
            epsilon_episodes: self.epsilon_episodes,
            ou_theta: self.ou_theta,
            ou_sigma: self.ou_sigma,
        }
    }

    /// Epsilon after `episode` finished episodes (linear, then constant).
    pub fn epsilon(&self, episode: u64) -> f64 {
        self.explore_settings().epsilon(episode)
    }

    /// The replay bound in bytes.
    pub fn buffer_max_bytes(&self) -> u64 {
        (self.buffer_max_gib * (1u64 << 30) as f64) as u64
    }

    /// The networks' spec for these spaces (`Box` observations, `Parameterised`
    /// actions) with this config's hidden widths, initial parameters and passes.
    pub fn spec_for(&self, obs: &Space, action: &Space) -> MpdqnResult<MpdqnSpec> {
        self.validate()?;
        let mut spec = MpdqnSpec::for_spaces(obs, action, self.state_features)?;
        spec.hidden = self.hidden.clone();
        spec.initial_params = self.initial_params.clone();
        spec.multipass = self.multipass;
        spec.validate()?;
        Ok(spec)
    }

    /// An actor's exploration state for `num_envs` envs, at epsilon of episode 0.
    pub fn explorer(&self, num_envs: usize, param_dim: usize, seed: u64) -> Explorer {
        self.explore_settings().explorer(num_envs, param_dim, seed)
    }
}

// ---------------------------------------------------------------------------------
// Update
// ---------------------------------------------------------------------------------

/// A batch of transitions, all on the learner's device.
#[derive(Debug)]
pub struct MpdqnBatch {
    /// `f32` [B, obs_len]: observations in env units.
    pub obs: Tensor,
    /// `i64` [B]: the choice taken.
    pub choice: Tensor,
    /// `f32` [B, P]: the parameters of every choice in `[-1, 1]` units as the actor
    /// produced them (`MpdqnAction::params`, noise included).
    pub params: Tensor,
    /// `f32` [B].
    pub reward: Tensor,
    /// `f32` [B, obs_len]: the next observation (the final one when the episode ended).
    pub next_obs: Tensor,
    /// `f32` [B]: 1 where the episode terminated (no bootstrap), else 0. Truncated
    /// transitions bootstrap from `next_obs`.
    pub terminated: Tensor,
}

impl MpdqnBatch {
    /// The number of rows, after checking every shape against `spec`.
    pub fn rows(&self, spec: &MpdqnSpec) -> MpdqnResult<i64> {
        let b = self.choice.size().first().copied().unwrap_or(0);
        let (o, p) = (spec.obs_len as i64, spec.param_dim() as i64);
        let checks: [(&str, &Tensor, Vec<i64>); 6] = [
            ("obs", &self.obs, vec![b, o]),
            ("choice", &self.choice, vec![b]),
            ("params", &self.params, vec![b, p]),
            ("reward", &self.reward, vec![b]),
            ("next_obs", &self.next_obs, vec![b, o]),
            ("terminated", &self.terminated, vec![b]),
        ];
        for (name, t, want) in checks {
            if t.size() != want {
                return Err(MpdqnError::BadInput(format!(
                    "{name} has shape {:?}, expected {want:?}",
                    t.size()
                )));
            }
        }
        if b == 0 {
            return Err(MpdqnError::BadInput("empty batch".into()));
        }
        let k = spec.num_choices() as i64;
        let c = self.choice.f_to_kind(Kind::Int64)?;
        if bool::try_from(c.f_lt(0)?.f_logical_or(&c.f_ge(k)?)?.f_any()?)? {
            return Err(MpdqnError::BadInput(format!("a choice is outside 0..{k}")));
        }
        Ok(b)
    }
}

/// What one update reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MpdqnStats {
    /// MSE between `Q_k(s, x)` and the target.
    pub q_loss: f64,
    /// `-mean_b sum_k Q_k(s, x(s))` before the parameter-network step.
    pub param_loss: f64,
    /// Mean `Q_k(s, x)` of the choices taken.
    pub q_mean: f64,
}

/// Inverting gradients (Hausknecht and Stone 2016) for parameters bounded in
/// `[low, high]`: `grad` is the ascent direction `dJ/dx`; where it is positive it is
/// scaled by `(high - x) / (high - low)`, elsewhere by `(x - low) / (high - low)`.
pub fn invert_gradients(grad: &Tensor, x: &Tensor, low: f64, high: f64) -> MpdqnResult<Tensor> {
    let range = high - low;
    let up = x.f_neg()?.f_add_scalar(high)?.f_div_scalar(range)?;
    let down = x.f_sub_scalar(low)?.f_div_scalar(range)?;
    let scale = up.f_where_self(&grad.f_gt(0.0)?, &down)?;
    Ok(grad.f_mul(&scale)?)
}

/// The learner's MP-DQN: online and target networks and the two optimisers.
#[derive(Debug)]
pub struct Mpdqn {
    cfg: MpdqnConfig,
    /// The networks the actors act with.
    online: MpdqnNet,
    /// Polyak-averaged copies for the bootstrap target.
    target: MpdqnNet,
    /// Adam on the Q network (lr `cfg.lr_q`).
    q_adam: Adam,
    /// Adam on the parameter network's trainable layers (lr `cfg.lr_param`).
    param_adam: Adam,
    /// Updates done.
    updates: u64,
}

const STATE_MAGIC: &[u8; 4] = b"VLYD";
const STATE_VERSION: u32 = 1;

impl Mpdqn {
    /// Fresh networks for `spec` (targets start equal to them).
    pub fn new(spec: MpdqnSpec, cfg: MpdqnConfig, device: Device) -> MpdqnResult<Mpdqn> {
        cfg.validate()?;
        let online = MpdqnNet::new(spec.clone(), device)?;
        let mut target = MpdqnNet::new(spec, device)?;
        target.copy_from(&online)?;
        let (q_adam, param_adam) = optimisers(&online)?;
        Ok(Mpdqn {
            cfg,
            online,
            target,
            q_adam,
            param_adam,
            updates: 0,
        })
    }

    /// [`Mpdqn::new`] with the spec from the env's spaces.
    pub fn for_spaces(
        cfg: MpdqnConfig,
        obs: &Space,
        action: &Space,
        device: Device,
    ) -> MpdqnResult<Mpdqn> {
        let spec = cfg.spec_for(obs, action)?;
        Mpdqn::new(spec, cfg, device)
    }

    pub fn config(&self) -> &MpdqnConfig {
        &self.cfg
    }

    /// The online networks (what actors act with; `to_bytes` gives their weights).
    pub fn net(&self) -> &MpdqnNet {
        &self.online
    }

    pub fn target_net(&self) -> &MpdqnNet {
        &self.target
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// One update (module docs): Q step, parameter-network step, soft target updates.
    pub fn update(&mut self, batch: &MpdqnBatch) -> MpdqnResult<MpdqnStats> {
        let spec = self.online.spec();
        batch.rows(spec)?;
        let cfg = &self.cfg;
        let s = self.online.states(&batch.obs)?;
        let choice = batch.choice.f_to_kind(Kind::Int64)?.f_unsqueeze(1)?;

        // 1. Q network.
        let target = {
            let _guard = tch::no_grad_guard();
            let s2 = self.target.states(&batch.next_obs)?;
            let x2 = self.target.param_forward(&s2)?;
            let q2 = self.target.q_forward(&s2, &x2)?.f_amax(1, false)?;
            let not_done = batch.terminated.f_neg()?.f_add_scalar(1.0)?;
            batch
                .reward
                .f_add(&q2.f_mul(&not_done)?.f_mul_scalar(cfg.gamma)?)?
        };
        let q = self
            .online
            .q_forward(&s, &batch.params)?
            .f_gather(1, &choice, false)?
            .f_squeeze_dim(1)?;
        let q_loss = q.f_mse_loss(&target, Reduction::Mean)?;
        self.q_adam.zero_grad();
        q_loss.f_backward()?;
        let _ = self.q_adam.clip_grad_norm(cfg.clip_grad)?;
        self.q_adam.step(cfg.lr_q)?;

        // 2. Parameter network, through inverted gradients.
        let x = self.online.param_forward(&s)?;
        let x_leaf = x.f_detach()?.f_set_requires_grad(true)?;
        let objective = self
            .online
            .q_forward(&s, &x_leaf)?
            .f_sum_dim_intlist(1, false, Kind::Float)?
            .f_mean(Kind::Float)?;
        // dJ/dx only: no gradient reaches the Q network's variables.
        let delta = Tensor::f_run_backward(&[&objective], &[&x_leaf], false, false)?
            .pop()
            .ok_or_else(|| MpdqnError::BadInput("no gradient for the parameters".into()))?;
        let delta = invert_gradients(&delta, &x.f_detach()?, -1.0, 1.0)?;
        let surrogate = delta.f_neg()?.f_mul(&x)?.f_sum(Kind::Float)?;
        self.param_adam.zero_grad();
        surrogate.f_backward()?;
        let _ = self.param_adam.clip_grad_norm(cfg.clip_grad)?;
        self.param_adam.step(cfg.lr_param)?;

        // 3. Targets.
        self.target
            .soft_update_from(&self.online, cfg.tau_q, cfg.tau_param)?;
        self.updates += 1;
        Ok(MpdqnStats {
            q_loss: q_loss.f_double_value(&[])?,
            param_loss: -objective.f_double_value(&[])?,
            q_mean: q.f_mean(Kind::Float)?.f_double_value(&[])?,
        })
    }

    /// Everything an exact restart needs, as bytes:
    ///
    /// ```text
    /// "VLYD" | version u32 = 1 | updates u64
    /// 4 x ( len u64 | bytes ): online weights, target weights, Q Adam, parameter Adam
    /// ```
    pub fn state_to_bytes(&self) -> Vec<u8> {
        let parts = [
            self.online.to_bytes(),
            self.target.to_bytes(),
            self.q_adam.state_to_bytes(),
            self.param_adam.state_to_bytes(),
        ];
        let mut out = Vec::with_capacity(16 + parts.iter().map(|p| p.len() + 8).sum::<usize>());
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&STATE_VERSION.to_le_bytes());
        out.extend_from_slice(&self.updates.to_le_bytes());
        for p in &parts {
            out.extend_from_slice(&(p.len() as u64).to_le_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    /// Restores [`Mpdqn::state_to_bytes`] of an `Mpdqn` with the same spec. Everything
    /// is checked first: on error nothing changes.
    pub fn load_state_bytes(&mut self, bytes: &[u8]) -> MpdqnResult<()> {
        let bad = |m: String| MpdqnError::BadState(m);
        let mut rest = bytes;
        let mut take = |n: usize, what: &str| -> MpdqnResult<&[u8]> {
            if rest.len() < n {
                return Err(bad(format!(
                    "truncated: {what} needs {n} bytes, {} left",
                    rest.len()
                )));
            }
            let (a, b) = rest.split_at(n);
            rest = b;
            Ok(a)
        };
        if take(4, "magic")? != STATE_MAGIC {
            return Err(bad("not a volley mp-dqn state (bad magic)".into()));
        }
        let version = u32::from_le_bytes(four(take(4, "version")?));
        if version != STATE_VERSION {
            return Err(bad(format!(
                "mp-dqn state version {version}, this build reads {STATE_VERSION}"
            )));
        }
        let updates = u64::from_le_bytes(eight(take(8, "update count")?));
        let mut parts = Vec::with_capacity(4);
        for what in ["online weights", "target weights", "q adam", "param adam"] {
            let len = u64::from_le_bytes(eight(take(8, what)?));
            let len = usize::try_from(len).map_err(|_| bad(format!("{what}: length {len}")))?;
            parts.push(take(len, what)?);
        }
        if !rest.is_empty() {
            return Err(bad(format!("{} trailing bytes", rest.len())));
        }
        let spec = self.online.spec().clone();
        let device = self.online.device();
        let mut online = MpdqnNet::new(spec.clone(), device)?;
        online.load_bytes(parts[0])?;
        let mut target = MpdqnNet::new(spec, device)?;
        target.load_bytes(parts[1])?;
        let (mut q_adam, mut param_adam) = optimisers(&online)?;
        q_adam.load_state_bytes(parts[2])?;
        param_adam.load_state_bytes(parts[3])?;
        self.online = online;
        self.target = target;
        self.q_adam = q_adam;
        self.param_adam = param_adam;
        self.updates = updates;
        Ok(())
    }
}

/// Adam (PyTorch defaults) on the Q network and on the parameter network.
fn optimisers(net: &MpdqnNet) -> MpdqnResult<(Adam, Adam)> {
    Ok((
        Adam::new(net.q_net_parameters(), AdamConfig::default())?,
        Adam::new(net.param_net_parameters(), AdamConfig::default())?,
    ))
}

fn four(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    a
}

fn eight(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    a
}

// ---------------------------------------------------------------------------------
// The training loop's view
// ---------------------------------------------------------------------------------

impl MpdqnBatch {
    /// A replay batch whose action rows are the choice followed by the parameters
    /// ([`crate::validate::ValidChunk::replay_actions_tensor`]).
    pub fn from_replay(batch: &crate::replay::ReplayBatch) -> MpdqnResult<MpdqnBatch> {
        let width = batch.actions.size().get(1).copied().unwrap_or(0);
        if width < 1 {
            return Err(MpdqnError::BadInput(format!(
                "replay actions have shape {:?}, expected [B, 1 + P]",
                batch.actions.size()
            )));
        }
        Ok(MpdqnBatch {
            obs: batch.obs.shallow_clone(),
            choice: batch
                .actions
                .f_select(1, 0)?
                .f_round()?
                .f_to_kind(Kind::Int64)?,
            params: batch.actions.f_narrow(1, 1, width - 1)?,
            reward: batch.rewards.shallow_clone(),
            next_obs: batch.next_obs.shallow_clone(),
            terminated: batch.terminated.shallow_clone(),
        })
    }
}

const STATS: &[(&str, &str)] = &[
    ("q_loss", "Q-network loss of the last update"),
    ("param_loss", "parameter-network loss (-sum_k Q_k) of the last update"),
    ("q_mean", "mean Q value of the last update's batch"),
];

impl Algorithm for Mpdqn {
    fn source(&self) -> Source {
        Source::Replay(ReplaySettings {
            capacity: self.cfg.replay_size,
            max_bytes: self.cfg.buffer_max_bytes(),
            batch_size: self.cfg.batch_size,
            learning_starts: self.cfg.learning_starts as u64,
            replay_ratio: self.cfg.replay_ratio,
            n_step: 1,
            gamma: self.cfg.gamma,
            split_rewards: false,
            frame_stack: None,
        })
    }

    fn update(&mut self, batch: &Batch<'_>, _ctx: &UpdateContext<'_>) -> anyhow::Result<Stats> {
        let b = MpdqnBatch::from_replay(batch.replay("mpdqn")?)?;
        let s = Mpdqn::update(self, &b)?;
        Ok(vec![
            ("q_loss", s.q_loss),
            ("param_loss", s.param_loss),
            ("q_mean", s.q_mean),
        ])
    }

    fn actor_weights(&self) -> Vec<u8> {
        self.online.to_bytes()
    }

    fn state(&self) -> Vec<u8> {
        Mpdqn::state_to_bytes(self)
    }

    fn load_state(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        Ok(Mpdqn::load_state_bytes(self, bytes)?)
    }

    fn stats_help(&self) -> &'static [(&'static str, &'static str)] {
        STATS
    }
}

/// MP-DQN for a run: `[mpdqn]` (the reference's Platform settings) for a box
/// observation and a parameterised action space.
pub fn build(ctx: BuildContext<'_>) -> anyhow::Result<Built> {
    let cfg: MpdqnConfig = ctx.section()?;
    let spec = cfg.spec_for(ctx.observation_space, ctx.action_space)?;
    let mpdqn = Mpdqn::new(spec.clone(), cfg.clone(), ctx.device)?;
    Ok(Built {
        section: super::section_of(&cfg)?,
        spec_json: serde_json::to_string(&spec)?,
        explore_json: serde_json::to_string(&cfg.explore_settings())?,
        algorithm: Box::new(mpdqn),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(spec: &MpdqnSpec, b: i64, seed: i64) -> MpdqnBatch {
        tch::manual_seed(seed);
        let o = spec.obs_len as i64;
        let p = spec.param_dim() as i64;
        let opts = (Kind::Float, Device::Cpu);
        MpdqnBatch {
            obs: Tensor::rand([b, o], opts),
            choice: Tensor::randint(spec.num_choices() as i64, [b], (Kind::Int64, Device::Cpu)),
            params: Tensor::rand([b, p], opts) * 2.0 - 1.0,
            reward: Tensor::rand([b], opts),
            next_obs: Tensor::rand([b, o], opts),
            terminated: Tensor::rand([b], opts).gt(0.7).to_kind(Kind::Float),
        }
    }

    #[test]
    fn inverting_gradients_match_a_hand_computation() {
        let _torch = volley_common::testing::torch();
        // x = [0.5, 0.5, -0.5, 1.5], grad = [2, -2, 1, 1], bounds [-1, 1] (range 2):
        //   grad > 0: * (1 - x) / 2;  grad <= 0: * (x + 1) / 2.
        //   [2 * 0.25, -2 * 0.75, 1 * 0.75, 1 * -0.25] = [0.5, -1.5, 0.75, -0.25]
        let x = Tensor::from_slice(&[0.5f32, 0.5, -0.5, 1.5]);
        let g = Tensor::from_slice(&[2.0f32, -2.0, 1.0, 1.0]);
        let got = Vec::<f32>::try_from(invert_gradients(&g, &x, -1.0, 1.0).unwrap()).unwrap();
        assert_eq!(got, vec![0.5, -1.5, 0.75, -0.25]);
        // Other bounds: [0, 10], x = 2, grad 1 -> 0.8; grad -1 -> -0.2.
        let x = Tensor::from_slice(&[2.0f32, 2.0]);
        let g = Tensor::from_slice(&[1.0f32, -1.0]);
        let got = Vec::<f32>::try_from(invert_gradients(&g, &x, 0.0, 10.0).unwrap()).unwrap();
        assert!((got[0] - 0.8).abs() < 1e-6 && (got[1] + 0.2).abs() < 1e-6);
    }

    /// The parameter-network step follows the inverted `dJ/dx` (Adam's first step is
    /// `-lr sign(grad)` per weight), the passthrough stays frozen, and the targets move
    /// by their own rates.
    #[test]
    fn update_steps_the_parameter_net_along_inverted_gradients() {
        let _torch = volley_common::testing::torch();
        tch::manual_seed(0);
        let cfg = MpdqnConfig::default();
        let spec = MpdqnSpec::platform();
        let mut m = Mpdqn::new(spec.clone(), cfg.clone(), Device::Cpu).unwrap();
        let b = batch(&spec, 64, 1);
        let s = m.net().states(&b.obs).unwrap();
        let x0 = m.net().param_forward(&s).unwrap().detach();
        let out_bias0 = m.net().param_net_parameters()[3].detach().copy();
        let pt0 = m.net().passthrough().1.copy();
        let q_target0: Vec<Tensor> = m
            .target_net()
            .q_net_parameters()
            .iter()
            .map(|t| t.detach().copy())
            .collect();
        let p_target0: Vec<Tensor> = m
            .target_net()
            .param_net_parameters()
            .iter()
            .map(|t| t.detach().copy())
            .collect();
        let stats = m.update(&b).unwrap();
        assert!(stats.q_loss.is_finite() && stats.param_loss.is_finite());
        assert_eq!(m.updates(), 1);

        // The Q step came first and the parameter step leaves Q alone, so the Q network
        // now is the one the parameter step differentiated.
        let x_leaf = x0.copy().set_requires_grad(true);
        let j = m
            .net()
            .q_forward(&s, &x_leaf)
            .unwrap()
            .sum_dim_intlist(1, false, Kind::Float)
            .mean(Kind::Float);
        let delta = Tensor::run_backward(&[&j], &[&x_leaf], false, false)
            .pop()
            .unwrap();
        // Hand inversion with bounds [-1, 1].
        let (d, x) = (
            Vec::<f32>::try_from(delta.view(-1)).unwrap(),
            Vec::<f32>::try_from(x0.view(-1)).unwrap(),
        );
        let mut grad_bias = [0f64; 3];
        for (i, (d, x)) in d.iter().zip(&x).enumerate() {
            let inv = if *d > 0.0 {
                d * (1.0 - x) / 2.0
            } else {
                d * (x + 1.0) / 2.0
            };
            // d(-inv . x)/d bias_j = -inv for column j.
            grad_bias[i % 3] -= f64::from(inv);
        }
        let out_bias1 = Vec::<f32>::try_from(&m.net().param_net_parameters()[3]).unwrap();
        for j in 0..3 {
            let step = f64::from(out_bias1[j]) - out_bias0.double_value(&[j as i64]);
            let want = -cfg.lr_param * grad_bias[j].signum();
            assert!(
                (step - want).abs() < 1e-6,
                "bias {j}: step {step}, want {want}"
            );
        }
        // Passthrough frozen.
        assert_eq!(
            Vec::<f32>::try_from(m.net().passthrough().1).unwrap(),
            Vec::<f32>::try_from(&pt0).unwrap()
        );
        // Targets: t1 = tau * online1 + (1 - tau) * t0 with the two rates.
        for (tau, t0, t1, o1) in [
            (
                cfg.tau_q,
                &q_target0,
                m.target_net().q_net_parameters(),
                m.net().q_net_parameters(),
            ),
            (
                cfg.tau_param,
                &p_target0,
                m.target_net().param_net_parameters(),
                m.net().param_net_parameters(),
            ),
        ] {
            for ((a, b), c) in t0.iter().zip(&t1).zip(&o1) {
                let want = c * tau + a * (1.0 - tau);
                assert!((b - want).abs().max().double_value(&[]) < 1e-6);
            }
        }
    }

    #[test]
    fn q_loss_falls_on_a_fixed_batch() {
        let _torch = volley_common::testing::torch();
        tch::manual_seed(2);
        let spec = MpdqnSpec::platform();
        // gamma 0: a plain regression on the rewards, so the loss must fall.
        let cfg = MpdqnConfig {
            gamma: 0.0,
            ..MpdqnConfig::default()
        };
        let mut m = Mpdqn::new(spec.clone(), cfg, Device::Cpu).unwrap();
        let b = batch(&spec, 128, 3);
        let first = m.update(&b).unwrap().q_loss;
        let mut last = first;
        for _ in 0..200 {
            last = m.update(&b).unwrap().q_loss;
        }
        assert!(last < 0.2 * first, "{first} -> {last}");
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let _torch = volley_common::testing::torch();
        tch::manual_seed(4);
        let spec = MpdqnSpec::platform();
        let cfg = MpdqnConfig::default();
        let mut a = Mpdqn::new(spec.clone(), cfg.clone(), Device::Cpu).unwrap();
        for i in 0..3 {
            a.update(&batch(&spec, 32, 10 + i)).unwrap();
        }
        let state = a.state_to_bytes();
        let mut b = Mpdqn::new(spec.clone(), cfg.clone(), Device::Cpu).unwrap();
        b.load_state_bytes(&state).unwrap();
        assert_eq!(b.updates(), 3);
        assert_eq!(b.state_to_bytes(), state);
        let bt = batch(&spec, 32, 20);
        let sa = a.update(&bt).unwrap();
        let sb = b.update(&bt).unwrap();
        assert_eq!(sa, sb);
        assert_eq!(a.state_to_bytes(), b.state_to_bytes());

        let before = b.state_to_bytes();
        for cut in [0, 4, 16, 100, state.len() / 2, state.len() - 1] {
            assert!(b.load_state_bytes(&state[..cut]).is_err());
        }
        let mut other_cfg = cfg;
        other_cfg.hidden = vec![32];
        let other = Mpdqn::for_spaces(
            other_cfg,
            &volley_common::env::Env::observation_space(
                &volley_common::env::platform::Platform::new(),
            ),
            &volley_common::env::Env::action_space(&volley_common::env::platform::Platform::new()),
            Device::Cpu,
        )
        .unwrap();
        assert!(b.load_state_bytes(&other.state_to_bytes()).is_err());
        assert_eq!(b.state_to_bytes(), before);
    }

    #[test]
    fn bad_batches_and_configs_are_errors() {
        let _torch = volley_common::testing::torch();
        let spec = MpdqnSpec::platform();
        let mut m = Mpdqn::new(spec.clone(), MpdqnConfig::default(), Device::Cpu).unwrap();
        let mut b = batch(&spec, 8, 5);
        b.choice = Tensor::from_slice(&[0i64, 1, 2, 3, 0, 1, 2, 0]);
        assert!(m.update(&b).is_err());
        let mut b = batch(&spec, 8, 5);
        b.params = Tensor::zeros([8, 2], (Kind::Float, Device::Cpu));
        assert!(m.update(&b).is_err());
        let bad = MpdqnConfig {
            gamma: 1.5,
            ..MpdqnConfig::default()
        };
        assert!(bad.validate().is_err());
        let parsed: Result<MpdqnConfig, _> = serde_json::from_str(r#"{"gama": 0.9}"#);
        assert!(parsed.is_err());
        let parsed: MpdqnConfig = serde_json::from_str(r#"{"multipass": false}"#).unwrap();
        assert!(!parsed.multipass && parsed.batch_size == 128);
    }
}
