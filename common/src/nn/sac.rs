//! The networks of Soft Actor-Critic (Haarnoja et al. 2018, "Soft Actor-Critic:
//! Off-Policy Maximum Entropy Deep Reinforcement Learning with a Stochastic Actor",
//! arXiv 1801.01290; automatic temperature from "Soft Actor-Critic Algorithms and
//! Applications", arXiv 1812.05905) as CleanRL's `sac_continuous_action.py` builds them:
//!
//! - [`SacActor`]: MLP (256-256 ReLU) to a mean and a log standard deviation per action
//!   dimension; the log-std is squashed into `[LOG_STD_MIN, LOG_STD_MAX]` by
//!   `min + (max - min) (tanh(x) + 1) / 2`; a Gaussian sample `u` is squashed by `tanh`
//!   and scaled to the env's bounds, `a = tanh(u) * scale + bias`, with the
//!   change-of-variables log-probability (paper, appendix C)
//!   `log pi(a|s) = sum_i [ log N(u_i; mu_i, sigma_i) - log(scale_i (1 - tanh(u_i)^2) + 1e-6) ]`;
//! - [`SacQ`]: a Q network, `[obs, action]` -> 256-256 ReLU -> 1;
//! - [`polyak_update`]: the soft target update `target = tau online + (1 - tau) target`.
//!
//! Layers keep PyTorch's default `nn.Linear` initialisation (weights and biases uniform
//! in `+-1/sqrt(fan_in)`), as CleanRL does for SAC. The learner-side update lives in
//! `volley_learner::sac`; actors build only the [`SacActor`] from a [`SacSpec`] and load
//! its weights.
//!
//! Weights travel as bytes in the format of [`super::Policy::to_bytes`] (`"VLYW"`,
//! version 1, names and shapes, then the `f32` data), so the same tools read both.

use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::{weights, Linear, NnError, NnResult};
use crate::agent::{
    to_f32_vec, ActionBatch, Agent, AgentContext, ChunkFields, Decision, Mode, Progress,
};
use crate::env::{Actions, EnvRng, RandomActions, Space};

/// Lower bound of the actor's log standard deviation (CleanRL `LOG_STD_MIN`).
pub const LOG_STD_MIN: f64 = -5.0;
/// Upper bound of the actor's log standard deviation (CleanRL `LOG_STD_MAX`).
pub const LOG_STD_MAX: f64 = 2.0;
/// Added inside the log of the tanh Jacobian so it stays finite at `|tanh(u)| = 1`.
pub const TANH_EPS: f64 = 1e-6;
/// ln(2 pi) / 2, for Gaussian log-densities.
const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_7;
const WEIGHTS_MAGIC: &[u8; 4] = b"VLYW";
/// Upper bound on observation and action dimensions and hidden widths, to refuse absurd
/// specs from a peer before allocating.
const MAX_DIM: usize = 1 << 20;
const MAX_HIDDEN: usize = 1 << 16;

/// What the SAC networks are built for: observation size, action bounds and hidden
/// widths. The learner sends it to the actors (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SacSpec {
    /// Elements of one (flat `f32`) observation.
    pub obs_dim: usize,
    /// Per-dimension lower bounds of the action space (finite).
    pub action_low: Vec<f32>,
    /// Per-dimension upper bounds of the action space (finite, above `action_low`).
    pub action_high: Vec<f32>,
    /// Hidden layer widths of the actor and of each Q network (CleanRL: 256-256).
    pub hidden: Vec<usize>,
}

impl SacSpec {
    /// The spec for an env with a `Box` observation space and a bounded `Box` action
    /// space.
    pub fn for_spaces(obs: &Space, action: &Space, hidden: Vec<usize>) -> NnResult<SacSpec> {
        let obs_dim = match obs {
            Space::Box { .. } => obs.flat_len(),
            other => {
                return Err(NnError::BadSpec(format!(
                    "sac needs a box observation space, got {}",
                    other.describe()
                )))
            }
        };
        let (action_low, action_high) = match action {
            Space::Box { low, high, .. } => (low.clone(), high.clone()),
            other => {
                return Err(NnError::BadSpec(format!(
                    "sac needs a box action space, got {}",
                    other.describe()
                )))
            }
        };
        let spec = SacSpec {
            obs_dim,
            action_low,
            action_high,
            hidden,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Action dimensions.
    pub fn action_dim(&self) -> usize {
        self.action_low.len()
    }

    /// Checks that the networks can be built (the spec may come from a peer).
    pub fn validate(&self) -> NnResult<()> {
        let bad = |m: String| Err(NnError::BadSpec(m));
        if self.obs_dim == 0 || self.obs_dim > MAX_DIM {
            return bad(format!("sac observation size {}", self.obs_dim));
        }
        let dim = self.action_low.len();
        if dim == 0 || dim > MAX_DIM || self.action_high.len() != dim {
            return bad(format!(
                "sac action bounds of {} and {} elements",
                dim,
                self.action_high.len()
            ));
        }
        for (i, (&lo, &hi)) in self.action_low.iter().zip(&self.action_high).enumerate() {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return bad(format!(
                    "sac action dimension {i} has bounds [{lo}, {hi}], need finite low < high"
                ));
            }
        }
        if self.hidden.is_empty() || self.hidden.iter().any(|&h| h == 0 || h > MAX_HIDDEN) {
            return bad(format!("sac hidden widths {:?}", self.hidden));
        }
        Ok(())
    }
}

/// Variables in creation order, with their names: the order of the weights bytes and
/// of `parameters()`.
#[derive(Debug, Default)]
struct Vars {
    vars: Vec<(String, Tensor)>,
}

impl Vars {
    /// A `din` -> `dout` layer named `name` with PyTorch's default init: weight and
    /// bias uniform in `+-1/sqrt(din)` (`kaiming_uniform_(a = sqrt 5)`).
    fn linear(&mut self, name: &str, din: i64, dout: i64, device: Device) -> NnResult<Linear> {
        let bound = 1.0 / (din as f64).sqrt();
        let opts = (Kind::Float, device);
        let w = Tensor::f_empty([dout, din], opts)?
            .f_uniform_(-bound, bound)?
            .set_requires_grad(true);
        let b = Tensor::f_empty([dout], opts)?
            .f_uniform_(-bound, bound)?
            .set_requires_grad(true);
        self.vars
            .push((format!("{name}.weight"), w.shallow_clone()));
        self.vars.push((format!("{name}.bias"), b.shallow_clone()));
        Ok(Linear { w, b })
    }

    /// Hidden ReLU layers `din -> hidden[0] -> ... -> hidden[n-1]` named `{prefix}{i}`.
    fn torso(
        &mut self,
        prefix: &str,
        din: i64,
        hidden: &[usize],
        device: Device,
    ) -> NnResult<(Vec<Linear>, i64)> {
        let mut layers = Vec::with_capacity(hidden.len());
        let mut d = din;
        for (i, &h) in hidden.iter().enumerate() {
            layers.push(self.linear(&format!("{prefix}{i}"), d, h as i64, device)?);
            d = h as i64;
        }
        Ok((layers, d))
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.vars.iter().map(|(_, t)| t.shallow_clone()).collect()
    }

    fn num_params(&self) -> usize {
        self.vars.iter().map(|(_, t)| t.numel()).sum()
    }

    fn to_bytes(&self) -> Vec<u8> {
        weights::encode(WEIGHTS_MAGIC, &self.vars)
    }

    /// Checks everything (format, names, shapes, length, finiteness) before copying.
    fn load_bytes(&mut self, bytes: &[u8]) -> NnResult<()> {
        weights::decode_into(WEIGHTS_MAGIC, bytes, &mut self.vars)
    }
}

/// `[B, dim]` float observations on `device`, after checking the shape.
fn prep(x: &Tensor, dim: usize, what: &str, device: Device) -> NnResult<Tensor> {
    let size = x.size();
    if size.len() != 2 || size[1] != dim as i64 {
        return Err(NnError::BadInput(format!(
            "{what} of shape {size:?}, expected [B, {dim}]"
        )));
    }
    Ok(x.f_to_device(device)?.f_to_kind(Kind::Float)?)
}

/// A reparameterised action of the squashed Gaussian and what the update needs.
#[derive(Debug)]
pub struct SacSample {
    /// `[B, dim]`: `tanh(u) * scale + bias`, inside the action bounds.
    pub action: Tensor,
    /// `[B]`: `log pi(action | obs)` with the tanh correction (CleanRL's formula).
    pub log_prob: Tensor,
    /// `[B, dim]`: the deterministic action `tanh(mean) * scale + bias`.
    pub mean_action: Tensor,
}

/// The SAC actor: a squashed diagonal Gaussian policy.
#[derive(Debug)]
pub struct SacActor {
    spec: SacSpec,
    device: Device,
    vars: Vars,
    torso: Vec<Linear>,
    mean: Linear,
    log_std: Linear,
    /// `[1, dim]`: `(high - low) / 2`.
    action_scale: Tensor,
    /// `[1, dim]`: `(high + low) / 2`.
    action_bias: Tensor,
}

impl SacActor {
    /// A freshly initialised actor (tch's global generator: seed it with
    /// `tch::manual_seed` for reproducible weights).
    pub fn new(spec: SacSpec, device: Device) -> NnResult<SacActor> {
        spec.validate()?;
        let mut vars = Vars::default();
        let (torso, d) = vars.torso("fc", spec.obs_dim as i64, &spec.hidden, device)?;
        let dim = spec.action_dim() as i64;
        let mean = vars.linear("fc_mean", d, dim, device)?;
        let log_std = vars.linear("fc_logstd", d, dim, device)?;
        let low = Tensor::from_slice(&spec.action_low).f_to_device(device)?;
        let high = Tensor::from_slice(&spec.action_high).f_to_device(device)?;
        let action_scale = high.f_sub(&low)?.f_mul_scalar(0.5)?.f_view([1, dim])?;
        let action_bias = high.f_add(&low)?.f_mul_scalar(0.5)?.f_view([1, dim])?;
        Ok(SacActor {
            spec,
            device,
            vars,
            torso,
            mean,
            log_std,
            action_scale,
            action_bias,
        })
    }

    pub fn spec(&self) -> &SacSpec {
        &self.spec
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The trainable variables in their fixed order (shallow clones). Hand these to
    /// [`super::Adam`].
    pub fn parameters(&self) -> Vec<Tensor> {
        self.vars.parameters()
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.vars.num_params()
    }

    /// The mean `[B, dim]` and the squashed log standard deviation `[B, dim]` (in
    /// `[LOG_STD_MIN, LOG_STD_MAX]`) of the pre-tanh Gaussian, with gradient.
    pub fn forward(&self, obs: &Tensor) -> NnResult<(Tensor, Tensor)> {
        let mut x = prep(obs, self.spec.obs_dim, "observations", self.device)?;
        for l in &self.torso {
            x = l.forward(&x)?.f_relu()?;
        }
        let mean = self.mean.forward(&x)?;
        let log_std = self
            .log_std
            .forward(&x)?
            .f_tanh()?
            .f_add_scalar(1.0)?
            .f_mul_scalar(0.5 * (LOG_STD_MAX - LOG_STD_MIN))?
            .f_add_scalar(LOG_STD_MIN)?;
        Ok((mean, log_std))
    }

    /// The reparameterised sample for standard-normal `noise` `[B, dim]`:
    /// `u = mean + exp(log_std) noise`, `a = tanh(u) scale + bias` and
    /// `log pi(a) = sum_i [ -noise_i^2 / 2 - log_std_i - ln(2 pi) / 2
    /// - ln(scale_i (1 - tanh(u_i)^2) + 1e-6) ]`. With gradient.
    pub fn squash(&self, obs: &Tensor, noise: &Tensor) -> NnResult<SacSample> {
        let (mean, log_std) = self.forward(obs)?;
        let noise = noise.f_to_device(self.device)?.f_to_kind(Kind::Float)?;
        if noise.size() != mean.size() {
            return Err(NnError::BadInput(format!(
                "noise of shape {:?}, expected {:?}",
                noise.size(),
                mean.size()
            )));
        }
        let u = mean.f_add(&log_std.f_exp()?.f_mul(&noise)?)?;
        let y = u.f_tanh()?;
        let action = y.f_mul(&self.action_scale)?.f_add(&self.action_bias)?;
        // log N(u; mean, std) = -((u - mean) / std)^2 / 2 - log std - ln(2 pi) / 2, and
        // (u - mean) / std is the noise (same value and gradient as torch's rsample +
        // log_prob).
        let log_prob = self.squashed_log_prob(&noise, &log_std, &y)?;
        let mean_action = mean
            .f_tanh()?
            .f_mul(&self.action_scale)?
            .f_add(&self.action_bias)?;
        Ok(SacSample {
            action,
            log_prob,
            mean_action,
        })
    }

    /// A fresh reparameterised sample with its log-probability, with gradient (the
    /// update's `actor.get_action`). Noise from tch's global generator.
    pub fn sample_with_logprob(&self, obs: &Tensor) -> NnResult<SacSample> {
        let b = obs.size().first().copied().unwrap_or(0);
        let noise = Tensor::f_randn(
            [b, self.spec.action_dim() as i64],
            (Kind::Float, self.device),
        )?;
        self.squash(obs, &noise)
    }

    /// Stochastic actions `[B, dim]` for exploration (no gradient).
    pub fn act(&self, obs: &Tensor) -> NnResult<Tensor> {
        let _guard = tch::no_grad_guard();
        Ok(self.sample_with_logprob(obs)?.action)
    }

    /// Deterministic actions `tanh(mean) scale + bias` `[B, dim]`, for evaluation (no
    /// gradient).
    pub fn act_deterministic(&self, obs: &Tensor) -> NnResult<Tensor> {
        let _guard = tch::no_grad_guard();
        self.mean_action(obs)
    }

    /// `tanh(mean) scale + bias` `[B, dim]`, with gradient.
    pub fn mean_action(&self, obs: &Tensor) -> NnResult<Tensor> {
        let (mean, _) = self.forward(obs)?;
        Ok(mean
            .f_tanh()?
            .f_mul(&self.action_scale)?
            .f_add(&self.action_bias)?)
    }

    /// `log pi(action | obs)` `[B]` of given actions `[B, dim]` inside the bounds
    /// (behaviour cloning's likelihood), with gradient: `u = atanh((a - bias) /
    /// scale)`, with `(a - bias) / scale` clamped to `+-(1 - 1e-6)` so that actions on
    /// the bounds stay finite, then the density of [`SacActor::squash`].
    pub fn log_prob(&self, obs: &Tensor, action: &Tensor) -> NnResult<Tensor> {
        let (mean, log_std) = self.forward(obs)?;
        let action = action.f_to_device(self.device)?.f_to_kind(Kind::Float)?;
        if action.size() != mean.size() {
            return Err(NnError::BadInput(format!(
                "actions of shape {:?}, expected {:?}",
                action.size(),
                mean.size()
            )));
        }
        let y = action
            .f_sub(&self.action_bias)?
            .f_div(&self.action_scale)?
            .f_clamp(-1.0 + TANH_EPS, 1.0 - TANH_EPS)?;
        let u = y.f_atanh()?;
        let z = u.f_sub(&mean)?.f_mul(&log_std.f_neg()?.f_exp()?)?;
        self.squashed_log_prob(&z, &log_std, &y)
    }

    /// `sum_i [ -z_i^2 / 2 - log_std_i - ln(2 pi) / 2 - ln(scale_i (1 - y_i^2) + 1e-6) ]`
    /// `[B]`: the log-density of the squashed action `y = tanh(u)` whose
    /// pre-squash value is `z` standard deviations from the mean.
    fn squashed_log_prob(&self, z: &Tensor, log_std: &Tensor, y: &Tensor) -> NnResult<Tensor> {
        let normal = z
            .f_square()?
            .f_mul_scalar(-0.5)?
            .f_sub(log_std)?
            .f_sub_scalar(HALF_LOG_2PI)?;
        let jacobian = y
            .f_square()?
            .f_neg()?
            .f_add_scalar(1.0)?
            .f_mul(&self.action_scale)?
            .f_add_scalar(TANH_EPS)?
            .f_log()?;
        Ok(normal
            .f_sub(&jacobian)?
            .f_sum_dim_intlist(-1, false, Kind::Float)?)
    }

    /// `n` actions uniform over the action bounds `[n, dim]` (the warm-up before
    /// `learning_starts`; tch's global generator).
    pub fn act_random(&self, n: i64) -> NnResult<Tensor> {
        let dim = self.spec.action_dim() as i64;
        let u = Tensor::f_rand([n, dim], (Kind::Float, self.device))?;
        // low + u (high - low) = bias + (2u - 1) scale
        Ok(u.f_mul_scalar(2.0)?
            .f_sub_scalar(1.0)?
            .f_mul(&self.action_scale)?
            .f_add(&self.action_bias)?)
    }

    /// Every variable as bytes (the [`super::Policy::to_bytes`] format).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.vars.to_bytes()
    }

    /// Replaces every variable with [`SacActor::to_bytes`] output of an actor with the
    /// same spec. Checked first: on error the actor is unchanged.
    pub fn load_bytes(&mut self, bytes: &[u8]) -> NnResult<()> {
        self.vars.load_bytes(bytes)
    }
}

/// A soft Q network: `Q(s, a)` from `[obs, action]` through ReLU hidden layers.
#[derive(Debug)]
pub struct SacQ {
    spec: SacSpec,
    device: Device,
    vars: Vars,
    torso: Vec<Linear>,
    out: Linear,
}

impl SacQ {
    /// A freshly initialised Q network (tch's global generator).
    pub fn new(spec: SacSpec, device: Device) -> NnResult<SacQ> {
        spec.validate()?;
        let mut vars = Vars::default();
        let din = (spec.obs_dim + spec.action_dim()) as i64;
        let (torso, d) = vars.torso("fc", din, &spec.hidden, device)?;
        let out = vars.linear("fc_out", d, 1, device)?;
        Ok(SacQ {
            spec,
            device,
            vars,
            torso,
            out,
        })
    }

    pub fn spec(&self) -> &SacSpec {
        &self.spec
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The trainable variables in their fixed order (shallow clones).
    pub fn parameters(&self) -> Vec<Tensor> {
        self.vars.parameters()
    }

    pub fn num_params(&self) -> usize {
        self.vars.num_params()
    }

    /// `Q(obs, action)` as `[B]`, with gradient.
    pub fn forward(&self, obs: &Tensor, action: &Tensor) -> NnResult<Tensor> {
        let o = prep(obs, self.spec.obs_dim, "observations", self.device)?;
        let a = prep(action, self.spec.action_dim(), "actions", self.device)?;
        if o.size()[0] != a.size()[0] {
            return Err(NnError::BadInput(format!(
                "{} observations and {} actions",
                o.size()[0],
                a.size()[0]
            )));
        }
        let mut x = Tensor::f_cat(&[o, a], 1)?;
        for l in &self.torso {
            x = l.forward(&x)?.f_relu()?;
        }
        Ok(self.out.forward(&x)?.f_squeeze_dim(1)?)
    }

    /// Copies every variable of `other` (same spec) into this network: the initial
    /// `target.load_state_dict(online.state_dict())`.
    pub fn copy_from(&mut self, other: &SacQ) -> NnResult<()> {
        polyak_update(&self.parameters(), &other.parameters(), 1.0)
    }

    /// Every variable as bytes (the [`super::Policy::to_bytes`] format).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.vars.to_bytes()
    }

    /// Replaces every variable with [`SacQ::to_bytes`] output of a network with the
    /// same spec. Checked first: on error the network is unchanged.
    pub fn load_bytes(&mut self, bytes: &[u8]) -> NnResult<()> {
        self.vars.load_bytes(bytes)
    }
}

/// The soft target update, in place and without gradient:
/// `target = tau * online + (1 - tau) * target` for each pair, computed as CleanRL's
/// `target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)`.
/// `tau = 1` copies.
pub fn polyak_update(target: &[Tensor], online: &[Tensor], tau: f64) -> NnResult<()> {
    if target.len() != online.len() {
        return Err(NnError::BadInput(format!(
            "polyak update of {} target and {} online tensors",
            target.len(),
            online.len()
        )));
    }
    if !(0.0..=1.0).contains(&tau) {
        return Err(NnError::BadInput(format!("polyak tau {tau} not in [0, 1]")));
    }
    let _guard = tch::no_grad_guard();
    for (t, p) in target.iter().zip(online) {
        if t.size() != p.size() {
            return Err(NnError::BadInput(format!(
                "polyak update of shapes {:?} and {:?}",
                t.size(),
                p.size()
            )));
        }
    }
    for (t, p) in target.iter().zip(online) {
        let mixed = if tau == 1.0 {
            p.shallow_clone()
        } else {
            p.f_mul_scalar(tau)?.f_add(&t.f_mul_scalar(1.0 - tau)?)?
        };
        t.shallow_clone().f_copy_(&mixed)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Acting
// ---------------------------------------------------------------------------------

/// SAC's agent: while training, uniform random actions until the learner's first
/// update (weights version 0, CleanRL's warm-up of `learning_starts` steps), then a
/// sample of the squashed Gaussian; when greedy, the squashed mean.
#[derive(Debug)]
pub struct SacAgent {
    actor: SacActor,
    random: RandomActions,
    rng: EnvRng,
    /// Uniform random actions while exploring with the initial weights (SAC's
    /// warm-up); off for policies that start from something learnt.
    warm_up: bool,
}

impl Agent for SacAgent {
    fn fields(&self) -> ChunkFields {
        ChunkFields {
            next_obs: true,
            ..ChunkFields::default()
        }
    }

    fn load_weights(&mut self, bytes: &[u8]) -> NnResult<()> {
        self.actor.load_bytes(bytes)
    }

    fn act(
        &mut self,
        obs: &Tensor,
        progress: &Progress,
        mode: Mode,
        out: &mut ActionBatch,
    ) -> NnResult<()> {
        let obs = obs.f_view([obs.size().first().copied().unwrap_or(0), -1])?;
        match mode {
            Mode::Explore if self.warm_up && progress.version == 0 => {
                if let Actions::Continuous(a) = self.random.sample(&mut self.rng) {
                    out.continuous.clear();
                    out.continuous.extend_from_slice(a);
                }
            }
            Mode::Explore => out.continuous = to_f32_vec(&self.actor.act(&obs)?)?,
            Mode::Greedy => out.continuous = to_f32_vec(&self.actor.act_deterministic(&obs)?)?,
        }
        Ok(())
    }

    /// The squashed mean action `tanh(mean) scale + bias` (what greedy acting takes);
    /// no value side (the critics stay on the learner).
    fn decision(&self, obs: &Tensor, _taken: &ActionBatch) -> NnResult<Decision> {
        let obs = obs.f_view([obs.size().first().copied().unwrap_or(0), -1])?;
        let action = self.actor.mean_action(&obs)?;
        Ok(Decision {
            outputs: action.shallow_clone(),
            policy: action,
            value: None,
        })
    }
}

/// SAC's exploration settings: whether the first weights explore uniformly at random
/// (CleanRL's warm-up), or, for a policy seeded by imitation, act from the start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SacExplore {
    pub warm_up: bool,
}

/// SAC's agent, from the [`SacSpec`] and [`SacExplore`] JSON the learner sends (no
/// exploration settings: the warm-up, as runs before them had).
pub fn agent(ctx: &AgentContext<'_>) -> NnResult<Box<dyn Agent>> {
    let warm_up = if ctx.explore_json.is_empty() {
        true
    } else {
        ctx.explore::<SacExplore>("sac")?.warm_up
    };
    Ok(Box::new(SacAgent::new(ctx, "sac", warm_up)?))
}

impl SacAgent {
    /// The agent of `algorithm`'s [`SacSpec`] in `ctx`, with or without the warm-up.
    pub fn new(ctx: &AgentContext<'_>, algorithm: &str, warm_up: bool) -> NnResult<SacAgent> {
        let spec: SacSpec = ctx.spec(algorithm)?;
        let random = RandomActions::new(ctx.action_space, ctx.num_envs)
            .map_err(|e| NnError::BadSpec(format!("{algorithm} random actions: {e}")))?;
        Ok(SacAgent {
            actor: SacActor::new(spec, ctx.device)?,
            random,
            rng: EnvRng::seed_from_u64(ctx.seed ^ 0x5ac),
            warm_up,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dim: usize, low: f32, high: f32) -> SacSpec {
        SacSpec {
            obs_dim: 3,
            action_low: vec![low; dim],
            action_high: vec![high; dim],
            hidden: vec![8, 8],
        }
    }

    fn f64s(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap()
    }

    #[test]
    fn squashed_logprob_matches_a_hand_computation() {
        let _torch = crate::testing::torch();
        tch::manual_seed(0);
        // Two action dimensions with bounds [-2, 2] and [0, 1]: scale (2, 0.5), bias
        // (0, 0.5).
        let spec = SacSpec {
            action_low: vec![-2.0, 0.0],
            action_high: vec![2.0, 1.0],
            ..spec(2, 0.0, 0.0)
        };
        let actor = SacActor::new(spec, Device::Cpu).unwrap();
        // Zero every weight and set the head biases: mean = (0.5, -0.3), raw log-std
        // (0, 0.4) -> log_std = -5 + 3.5 (tanh(x) + 1).
        tch::no_grad(|| {
            for p in actor.parameters() {
                let _ = p.shallow_clone().zero_();
            }
            actor
                .mean
                .b
                .shallow_clone()
                .copy_(&Tensor::from_slice(&[0.5f32, -0.3]));
            actor
                .log_std
                .b
                .shallow_clone()
                .copy_(&Tensor::from_slice(&[0.0f32, 0.4]));
        });
        let obs = Tensor::from_slice(&[0.3f32, -1.0, 2.0]).view([1, 3]);
        let noise = Tensor::from_slice(&[1.0f32, -0.7]).view([1, 2]);
        let s = actor.squash(&obs, &noise).unwrap();

        let (mean, raw, eps, scale, bias) = (
            [0.5f64, -0.3],
            [0.0f64, 0.4],
            [1.0f64, -0.7],
            [2.0f64, 0.5],
            [0.0f64, 0.5],
        );
        let mut lp = 0.0;
        let mut action = [0.0; 2];
        for i in 0..2 {
            let log_std = -5.0 + 0.5 * 7.0 * (raw[i].tanh() + 1.0);
            let std = log_std.exp();
            let u = mean[i] + std * eps[i];
            let y = u.tanh();
            action[i] = y * scale[i] + bias[i];
            let normal = -0.5 * ((u - mean[i]) / std).powi(2)
                - log_std
                - 0.5 * (2.0 * std::f64::consts::PI).ln();
            lp += normal - (scale[i] * (1.0 - y * y) + 1e-6).ln();
        }
        let got_a = f64s(&s.action);
        let got_lp = f64s(&s.log_prob);
        for i in 0..2 {
            assert!(
                (got_a[i] - action[i]).abs() < 1e-6,
                "{got_a:?} vs {action:?}"
            );
        }
        assert_eq!(s.log_prob.size(), vec![1]);
        assert!((got_lp[0] - lp).abs() < 1e-5, "{} vs {lp}", got_lp[0]);
        let mean_action = f64s(&s.mean_action);
        assert!((mean_action[0] - 2.0 * 0.5f64.tanh()).abs() < 1e-6);
        assert!((mean_action[1] - (0.5 * (-0.3f64).tanh() + 0.5)).abs() < 1e-6);
        let det = f64s(&actor.act_deterministic(&obs).unwrap());
        assert!((det[0] - mean_action[0]).abs() < 1e-7);
    }

    #[test]
    fn squashed_density_integrates_to_one() {
        let _torch = crate::testing::torch();
        // One action dimension in [-3, 1]: the density of the squashed action, from the
        // log-probabilities over a fine grid of pre-tanh values, integrates to ~1.
        tch::manual_seed(1);
        let actor = SacActor::new(spec(1, -3.0, 1.0), Device::Cpu).unwrap();
        let n = 20001i64;
        let obs = Tensor::from_slice(&[0.2f32, 0.1, -0.4])
            .view([1, 3])
            .repeat([n, 1]);
        let noise = Tensor::linspace(-8.0, 8.0, n, (Kind::Float, Device::Cpu)).view([n, 1]);
        let s = tch::no_grad(|| actor.squash(&obs, &noise).unwrap());
        let a = f64s(&s.action);
        let p: Vec<f64> = f64s(&s.log_prob).iter().map(|l| l.exp()).collect();
        let mut integral = 0.0;
        for i in 1..a.len() {
            integral += 0.5 * (p[i] + p[i - 1]) * (a[i] - a[i - 1]);
        }
        assert!((integral - 1.0).abs() < 1e-3, "integral {integral}");
        assert!(a.iter().all(|&x| (-3.0..=1.0).contains(&x)));
    }

    #[test]
    fn actions_stay_in_bounds_and_logprob_has_gradient() {
        let _torch = crate::testing::torch();
        tch::manual_seed(2);
        let actor = SacActor::new(spec(4, -0.4, 0.4), Device::Cpu).unwrap();
        let obs = Tensor::randn([64, 3], (Kind::Float, Device::Cpu)) * 10.0;
        for a in [
            actor.act(&obs).unwrap(),
            actor.act_deterministic(&obs).unwrap(),
            actor.act_random(64).unwrap(),
        ] {
            assert_eq!(a.size(), vec![64, 4]);
            assert!(a.abs().max().double_value(&[]) <= 0.4 + 1e-6);
            assert!(!a.requires_grad());
        }
        let s = actor.sample_with_logprob(&obs).unwrap();
        assert!(s.log_prob.requires_grad());
        let (_, log_std) = actor.forward(&obs).unwrap();
        assert!(log_std.min().double_value(&[]) >= LOG_STD_MIN);
        assert!(log_std.max().double_value(&[]) <= LOG_STD_MAX);
        let e = actor.act(&Tensor::zeros([2, 4], (Kind::Float, Device::Cpu)));
        assert!(e.unwrap_err().to_string().contains("expected [B, 3]"));
    }

    #[test]
    fn weights_round_trip_and_bad_bytes_are_rejected() {
        let _torch = crate::testing::torch();
        tch::manual_seed(3);
        let a = SacActor::new(spec(2, -1.0, 1.0), Device::Cpu).unwrap();
        let mut b = SacActor::new(spec(2, -1.0, 1.0), Device::Cpu).unwrap();
        let bytes = a.to_bytes();
        assert_ne!(b.to_bytes(), bytes);
        b.load_bytes(&bytes).unwrap();
        assert_eq!(b.to_bytes(), bytes);
        for cut in (0..bytes.len()).step_by(7) {
            assert!(b.load_bytes(&bytes[..cut]).is_err());
        }
        let q = SacQ::new(spec(2, -1.0, 1.0), Device::Cpu).unwrap();
        assert!(b.load_bytes(&q.to_bytes()).is_err());
        assert_eq!(b.to_bytes(), bytes);
        let mut q2 = SacQ::new(spec(2, -1.0, 1.0), Device::Cpu).unwrap();
        q2.load_bytes(&q.to_bytes()).unwrap();
        let obs = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
        let act = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
        let d = (q.forward(&obs, &act).unwrap() - q2.forward(&obs, &act).unwrap())
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(d, 0.0);
        assert_eq!(q.forward(&obs, &act).unwrap().size(), vec![5]);
    }

    #[test]
    fn polyak_mixes_exactly() {
        let _torch = crate::testing::torch();
        tch::manual_seed(4);
        let online = SacQ::new(spec(2, -1.0, 1.0), Device::Cpu).unwrap();
        let mut target = SacQ::new(spec(2, -1.0, 1.0), Device::Cpu).unwrap();
        let before: Vec<Vec<f64>> = target.parameters().iter().map(f64s).collect();
        let on: Vec<Vec<f64>> = online.parameters().iter().map(f64s).collect();
        let tau = 0.005;
        // The same f32 expression, computed beforehand: the update matches it bit for bit.
        let exact: Vec<Tensor> = target
            .parameters()
            .iter()
            .zip(online.parameters())
            .map(|(t, p)| (p * tau + t * (1.0 - tau)).detach())
            .collect();
        polyak_update(&target.parameters(), &online.parameters(), tau).unwrap();
        for (t, e) in target.parameters().iter().zip(&exact) {
            assert!(t.equal(e));
        }
        for ((t, b), o) in target.parameters().iter().zip(&before).zip(&on) {
            for ((x, b), o) in f64s(t).iter().zip(b).zip(o) {
                // f32 arithmetic: within a few ulps of the exact mix.
                let want = tau * o + (1.0 - tau) * b;
                assert!(
                    (x - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{x} vs {want}"
                );
            }
        }
        assert!(!target.parameters()[0].grad().defined());
        target.copy_from(&online).unwrap();
        assert_eq!(target.to_bytes(), online.to_bytes());
        assert!(polyak_update(&target.parameters(), &online.parameters()[1..], tau).is_err());
        assert!(polyak_update(&target.parameters(), &online.parameters(), 1.5).is_err());
    }

    #[test]
    fn spec_from_spaces_and_validation() {
        let _torch = crate::testing::torch();
        let obs = Space::uniform_box(&[11], f32::NEG_INFINITY, f32::INFINITY);
        let act = Space::uniform_box(&[3], -1.0, 1.0);
        let s = SacSpec::for_spaces(&obs, &act, vec![256, 256]).unwrap();
        assert_eq!((s.obs_dim, s.action_dim()), (11, 3));
        let unbounded = Space::uniform_box(&[3], f32::NEG_INFINITY, 1.0);
        assert!(SacSpec::for_spaces(&obs, &unbounded, vec![256]).is_err());
        assert!(SacSpec::for_spaces(&obs, &Space::Discrete { n: 2 }, vec![256]).is_err());
        assert!(SacSpec::for_spaces(&obs, &act, vec![]).is_err());
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<SacSpec>(&json).unwrap(), s);
    }
}
