//! Proximal Policy Optimization (Schulman et al. 2017, arXiv 1707.06347) with the
//! Procgen settings of Cobbe et al. 2020 (arXiv 1912.01588, openai/train-procgen) as
//! CleanRL's `ppo_procgen.py` implements them: generalized advantage estimation
//! (Schulman et al. 2016, [`crate::rollout::gae`]), the clipped surrogate objective,
//! clipped value loss, an entropy bonus, per-minibatch advantage normalisation, global
//! grad-norm clipping, Adam with eps 1e-5, and rewards divided by a running standard
//! deviation of the discounted return, then clipped ([`crate::normalize`]).
//!
//! Layout, as in CleanRL: the hyperparameters ([`PpoConfig`], defaults the paper's),
//! then the networks (the actor-critic of `volley_common::nn::ppo`), then the update
//! ([`Ppo::update`], [`ppo_loss`]), then the training loop's view ([`build`]). The
//! data (chunks of recent weights, advantages) come from the on-policy source,
//! [`crate::rollout`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use volley_common::nn::{Adam, AdamConfig, ModelKind, ModelSpec, NnError, Policy};

use super::{Algorithm, Batch, BuildContext, Built, Source, Stats, UpdateContext};
use crate::checkpoint::{pack_state, unpack_state};
use crate::config::ModelSection;
use crate::rollout::{RolloutBatch, RolloutError, RolloutSettings};

/// Errors of the PPO code: inconsistent inputs or a failure of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum PpoError {
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("bad config: {0}")]
    BadConfig(String),
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    #[error(transparent)]
    Nn(#[from] NnError),
    #[error("torch error: {0}")]
    Torch(#[from] tch::TchError),
}

pub type PpoResult<T> = Result<T, PpoError>;

// ---------------------------------------------------------------------------------
// Hyperparameters
// ---------------------------------------------------------------------------------

/// PPO hyperparameters; defaults are the Procgen values of Cobbe et al. 2020.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// Adam learning rate.
    pub lr: f64,
    /// Anneal the learning rate linearly to 0 over the run (the caller computes the
    /// rate it passes to [`Ppo::update`]). Off: train-procgen keeps it constant
    /// (CleanRL's `ppo_procgen.py` anneals).
    pub anneal_lr: bool,
    /// Adam epsilon.
    pub adam_eps: f64,
    /// Discount factor.
    pub gamma: f64,
    /// GAE lambda.
    pub gae_lambda: f64,
    /// Env steps per update (64 envs x 256 steps).
    pub batch_steps: usize,
    /// Minibatches per epoch.
    pub minibatches: usize,
    /// Passes over the batch per update.
    pub epochs: usize,
    /// Surrogate clipping coefficient epsilon.
    pub clip: f64,
    /// Clip the value loss around the behaviour values (with the same `clip`).
    pub clip_vloss: bool,
    /// Value-loss coefficient.
    pub vf_coef: f64,
    /// Entropy-bonus coefficient.
    pub ent_coef: f64,
    /// Global grad-norm clipping threshold.
    pub max_grad_norm: f64,
    /// Normalise advantages per minibatch.
    pub norm_adv: bool,
    /// Divide rewards by the running std of the discounted return.
    pub norm_reward: bool,
    /// Clip normalised rewards to `[-reward_clip, reward_clip]`.
    pub reward_clip: f64,
    /// Stop the update's epochs early once the approximate KL exceeds this.
    pub target_kl: Option<f64>,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            lr: 5e-4,
            anneal_lr: false,
            adam_eps: 1e-5,
            gamma: 0.999,
            gae_lambda: 0.95,
            batch_steps: 64 * 256,
            minibatches: 8,
            epochs: 3,
            clip: 0.2,
            clip_vloss: true,
            vf_coef: 0.5,
            ent_coef: 0.01,
            max_grad_norm: 0.5,
            norm_adv: true,
            norm_reward: true,
            reward_clip: 10.0,
            target_kl: None,
        }
    }
}

impl PpoConfig {
    /// Checks the ranges; configs come from files and command lines.
    pub fn validate(&self) -> PpoResult<()> {
        let bad = |m: String| Err(PpoError::BadConfig(m));
        let pos = |v: f64| v.is_finite() && v > 0.0;
        let nonneg = |v: f64| v.is_finite() && v >= 0.0;
        if !nonneg(self.lr) {
            return bad(format!("ppo.lr must be >= 0, got {}", self.lr));
        }
        if !pos(self.adam_eps) {
            return bad(format!("ppo.adam_eps must be > 0, got {}", self.adam_eps));
        }
        for (name, v) in [("gamma", self.gamma), ("gae_lambda", self.gae_lambda)] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("ppo.{name} must be in [0, 1], got {v}"));
            }
        }
        if self.batch_steps == 0 || self.minibatches == 0 || self.epochs == 0 {
            return bad("ppo.batch_steps, ppo.minibatches and ppo.epochs must be >= 1".into());
        }
        if self.minibatches > self.batch_steps {
            return bad(format!(
                "ppo.minibatches ({}) exceeds ppo.batch_steps ({})",
                self.minibatches, self.batch_steps
            ));
        }
        for (name, v) in [
            ("clip", self.clip),
            ("max_grad_norm", self.max_grad_norm),
            ("reward_clip", self.reward_clip),
        ] {
            if !pos(v) {
                return bad(format!("ppo.{name} must be > 0, got {v}"));
            }
        }
        for (name, v) in [("vf_coef", self.vf_coef), ("ent_coef", self.ent_coef)] {
            if !nonneg(v) {
                return bad(format!("ppo.{name} must be >= 0, got {v}"));
            }
        }
        if let Some(k) = self.target_kl {
            if !pos(k) {
                return bad(format!("ppo.target_kl must be > 0, got {k}"));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Networks: `volley_common::nn::Policy` (IMPALA CNN [16, 32, 32] + 256 for Procgen,
// orthogonal init, actor head std 0.01, critic head 1).
// ---------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------
// The update
// ---------------------------------------------------------------------------------

/// Averages over the minibatches of one update (CleanRL's logged quantities).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct PpoStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    pub entropy: f64,
    /// `mean((ratio - 1) - log ratio)` (Schulman's k3 estimator).
    pub approx_kl: f64,
    /// Fraction of samples whose ratio left `[1 - clip, 1 + clip]`.
    pub clip_fraction: f64,
    /// `1 - Var(returns - values) / Var(returns)` of the behaviour values (NaN when
    /// the returns are constant).
    pub explained_variance: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Rows in the batch.
    pub samples: usize,
    /// Epochs run (fewer than configured when `target_kl` stopped the update).
    pub epochs: usize,
    /// Optimizer steps taken.
    pub minibatch_steps: usize,
    /// A stop request ended the update early (after `minibatch_steps` steps).
    pub interrupted: bool,
}

/// The loss and its logged terms for one minibatch, as 0-d tensors.
#[derive(Debug)]
pub struct LossTerms {
    /// `pg_loss - ent_coef * entropy + vf_coef * value_loss` (with gradient).
    pub loss: Tensor,
    pub policy_loss: Tensor,
    pub value_loss: Tensor,
    pub entropy: Tensor,
    pub approx_kl: Tensor,
    pub clip_fraction: Tensor,
}

/// The PPO loss of one minibatch. `advantages` are used as given (normalise before);
/// every input is `[M]`.
///
/// - ratio `r = exp(logp - logp_old)`; `pg = mean(max(-A r, -A clamp(r, 1-c, 1+c)))`;
/// - value: `0.5 mean(max((V - R)^2, (V_old + clamp(V - V_old, -c, c) - R)^2))`, or
///   `0.5 mean((V - R)^2)` without `clip_vloss`;
/// - `loss = pg - ent_coef * mean(entropy) + vf_coef * value`.
#[allow(clippy::too_many_arguments)]
pub fn ppo_loss(
    cfg: &PpoConfig,
    newlogprob: &Tensor,
    oldlogprob: &Tensor,
    advantages: &Tensor,
    newvalue: &Tensor,
    oldvalue: &Tensor,
    returns: &Tensor,
    entropy: &Tensor,
) -> PpoResult<LossTerms> {
    let logratio = newlogprob.f_sub(oldlogprob)?;
    let ratio = logratio.f_exp()?;
    let (approx_kl, clip_fraction) = tch::no_grad(|| -> PpoResult<(Tensor, Tensor)> {
        let kl = ratio
            .f_sub_scalar(1.0)?
            .f_sub(&logratio)?
            .f_mean(Kind::Float)?;
        let cf = ratio
            .f_sub_scalar(1.0)?
            .f_abs()?
            .f_gt(cfg.clip)?
            .f_to_kind(Kind::Float)?
            .f_mean(Kind::Float)?;
        Ok((kl, cf))
    })?;
    let pg1 = advantages.f_neg()?.f_mul(&ratio)?;
    let pg2 = advantages
        .f_neg()?
        .f_mul(&ratio.f_clamp(1.0 - cfg.clip, 1.0 + cfg.clip)?)?;
    let policy_loss = pg1.f_maximum(&pg2)?.f_mean(Kind::Float)?;
    let unclipped = newvalue.f_sub(returns)?.f_square()?;
    let value_loss = if cfg.clip_vloss {
        let clipped = oldvalue
            .f_add(&newvalue.f_sub(oldvalue)?.f_clamp(-cfg.clip, cfg.clip)?)?
            .f_sub(returns)?
            .f_square()?;
        unclipped.f_maximum(&clipped)?.f_mean(Kind::Float)?
    } else {
        unclipped.f_mean(Kind::Float)?
    }
    .f_mul_scalar(0.5)?;
    let entropy = entropy.f_mean(Kind::Float)?;
    let loss = policy_loss
        .f_sub(&entropy.f_mul_scalar(cfg.ent_coef)?)?
        .f_add(&value_loss.f_mul_scalar(cfg.vf_coef)?)?;
    Ok(LossTerms {
        loss,
        policy_loss,
        value_loss,
        entropy,
        approx_kl,
        clip_fraction,
    })
}

/// PPO: the policy, its optimizer and the hyperparameters.
#[derive(Debug)]
pub struct Ppo {
    pub policy: Policy,
    pub adam: Adam,
    pub cfg: PpoConfig,
}

impl Ppo {
    /// A freshly initialised policy for `spec` on `device` (seed with
    /// `tch::manual_seed` first for reproducible weights) and a fresh Adam.
    pub fn new(spec: ModelSpec, cfg: PpoConfig, device: Device) -> PpoResult<Ppo> {
        Ppo::with_policy(Policy::new(spec, device)?, cfg)
    }

    /// PPO over `policy` with a fresh Adam (betas 0.9, 0.999; eps `cfg.adam_eps`).
    pub fn with_policy(policy: Policy, cfg: PpoConfig) -> PpoResult<Ppo> {
        cfg.validate()?;
        let adam = Adam::new(
            policy.parameters(),
            AdamConfig {
                eps: cfg.adam_eps,
                ..AdamConfig::default()
            },
        )?;
        Ok(Ppo { policy, adam, cfg })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn policy_mut(&mut self) -> &mut Policy {
        &mut self.policy
    }

    /// Replaces the policy's weights with [`Policy::to_bytes`] output (checked first;
    /// on error nothing changes). Adam's moments stay as they are.
    pub fn load_weights(&mut self, bytes: &[u8]) -> PpoResult<()> {
        Ok(self.policy.load_bytes(bytes)?)
    }

    /// Adam's state (step count and moments) as bytes, for checkpoints.
    pub fn optimizer_state_bytes(&self) -> Vec<u8> {
        self.adam.state_to_bytes()
    }

    /// Restores Adam's state from [`Ppo::optimizer_state_bytes`].
    pub fn load_optimizer_state(&mut self, bytes: &[u8]) -> PpoResult<()> {
        Ok(self.adam.load_state_bytes(bytes)?)
    }

    /// One PPO update: `epochs` passes over the batch in `minibatches` shuffled
    /// minibatches (the last one smaller when the rows do not divide evenly), each an
    /// Adam step with learning rate `lr` after grad-norm clipping.
    ///
    /// `stop` is checked after every minibatch: once set, the update ends there (a
    /// learner asked to stop during a long CPU update writes its checkpoint within a
    /// minibatch's time).
    pub fn update(
        &mut self,
        batch: &RolloutBatch,
        lr: f64,
        stop: &AtomicBool,
    ) -> PpoResult<PpoStats> {
        let b = batch.rows()?;
        let device = self.policy.device();
        let to = |t: &Tensor| t.f_to_device(device);
        let obs = to(&batch.obs)?;
        let actions = to(&batch.actions)?;
        let logprobs = to(&batch.logprobs)?.f_to_kind(Kind::Float)?;
        let values = to(&batch.values)?.f_to_kind(Kind::Float)?;
        let advantages = to(&batch.advantages)?.f_to_kind(Kind::Float)?;
        let returns = to(&batch.returns)?.f_to_kind(Kind::Float)?;
        let cfg = self.cfg.clone();
        let mb = (b + cfg.minibatches as i64 - 1) / cfg.minibatches as i64;

        // Per-minibatch [pg, v, entropy, kl, clipfrac, grad_norm], read back once.
        let mut logged: Vec<Tensor> = Vec::new();
        let mut epochs = 0;
        let mut recent_kl: VecDeque<Tensor> = VecDeque::new();
        let mut interrupted = false;
        'epochs: for _ in 0..cfg.epochs {
            epochs += 1;
            let perm = Tensor::f_randperm(b, (Kind::Int64, device))?;
            let mut start = 0;
            while start < b {
                let len = mb.min(b - start);
                let idx = perm.f_narrow(0, start, len)?;
                start += len;
                let pick = |t: &Tensor| t.f_index_select(0, &idx);
                let (newlogprob, entropy, newvalue) =
                    self.policy.evaluate(&pick(&obs)?, &pick(&actions)?)?;
                let mut adv = pick(&advantages)?;
                if cfg.norm_adv && len > 1 {
                    let mean = adv.f_mean(Kind::Float)?;
                    let std = adv.f_std(true)?;
                    adv = adv.f_sub(&mean)?.f_div(&std.f_add_scalar(1e-8)?)?;
                }
                let terms = ppo_loss(
                    &cfg,
                    &newlogprob,
                    &pick(&logprobs)?,
                    &adv,
                    &newvalue,
                    &pick(&values)?,
                    &pick(&returns)?,
                    &entropy,
                )?;
                self.adam.zero_grad();
                terms.loss.f_backward()?;
                let grad_norm = self.adam.clip_grad_norm(cfg.max_grad_norm)?;
                self.adam.step(lr)?;
                let row = Tensor::f_stack(
                    &[
                        terms.policy_loss.f_detach()?,
                        terms.value_loss.f_detach()?,
                        terms.entropy.f_detach()?,
                        terms.approx_kl.shallow_clone(),
                        terms.clip_fraction.shallow_clone(),
                        grad_norm.f_to_device(device)?,
                    ],
                    0,
                )?;
                recent_kl.push_back(terms.approx_kl);
                logged.push(row);
                if stop.load(Ordering::SeqCst) {
                    interrupted = true;
                    break 'epochs;
                }
            }
            if let Some(target) = cfg.target_kl {
                // CleanRL checks the last minibatch's approximate KL after each epoch.
                if let Some(kl) = recent_kl.back() {
                    if kl.f_double_value(&[])? > target {
                        break;
                    }
                }
            }
            recent_kl.clear();
        }
        let means = Tensor::f_stack(&logged, 0)?
            .f_mean_dim(0, false, Kind::Float)?
            .f_to_device(Device::Cpu)?;
        let m: Vec<f32> = Vec::<f32>::try_from(&means)?;
        let explained_variance = tch::no_grad(|| -> PpoResult<f64> {
            let var_y = returns.f_var(false)?.f_double_value(&[])?;
            if var_y == 0.0 {
                return Ok(f64::NAN);
            }
            let var_res = returns.f_sub(&values)?.f_var(false)?.f_double_value(&[])?;
            Ok(1.0 - var_res / var_y)
        })?;
        Ok(PpoStats {
            policy_loss: f64::from(m[0]),
            value_loss: f64::from(m[1]),
            entropy: f64::from(m[2]),
            approx_kl: f64::from(m[3]),
            clip_fraction: f64::from(m[4]),
            explained_variance,
            grad_norm: f64::from(m[5]),
            samples: b as usize,
            epochs,
            minibatch_steps: logged.len(),
            interrupted,
        })
    }
}

// ---------------------------------------------------------------------------------
// The training loop's view
// ---------------------------------------------------------------------------------

/// The learning rate after `steps` of `total` env steps: constant, or annealed
/// linearly to 0 over the run (`anneal_lr`, CleanRL's `frac`).
pub fn learning_rate(cfg: &PpoConfig, steps: u64, total: u64) -> f64 {
    if cfg.anneal_lr && total > 0 {
        let frac = 1.0 - (steps as f64 / total as f64).min(1.0);
        cfg.lr * frac.max(0.0)
    } else {
        cfg.lr
    }
}

const STATE_MAGIC: &[u8; 4] = b"VLYP";

const STATS: &[(&str, &str)] = &[
    ("policy_loss", "clipped surrogate loss of the last update"),
    ("value_loss", "value loss of the last update"),
    ("entropy", "policy entropy of the last update"),
    ("approx_kl", "approximate KL between behaviour and updated policy"),
    ("clip_fraction", "fraction of samples whose ratio was clipped"),
    ("explained_variance", "explained variance of the value function"),
    ("grad_norm", "gradient norm before clipping, mean over minibatches"),
    ("lr", "learning rate of the last update"),
];

impl Algorithm for Ppo {
    fn source(&self) -> Source {
        Source::Rollouts(RolloutSettings {
            batch_steps: self.cfg.batch_steps,
            gamma: self.cfg.gamma,
            gae_lambda: self.cfg.gae_lambda,
            norm_reward: self.cfg.norm_reward,
            reward_clip: self.cfg.reward_clip,
        })
    }

    fn update(&mut self, batch: &Batch<'_>, ctx: &UpdateContext<'_>) -> anyhow::Result<Stats> {
        let lr = learning_rate(&self.cfg, ctx.steps, ctx.total_steps);
        let s = Ppo::update(self, batch.rollout("ppo")?, lr, ctx.stop)?;
        Ok(vec![
            ("policy_loss", s.policy_loss),
            ("value_loss", s.value_loss),
            ("entropy", s.entropy),
            ("approx_kl", s.approx_kl),
            ("clip_fraction", s.clip_fraction),
            ("explained_variance", s.explained_variance),
            ("grad_norm", s.grad_norm),
            ("lr", lr),
            ("minibatch_steps", s.minibatch_steps as f64),
        ])
    }

    fn actor_weights(&self) -> Vec<u8> {
        self.policy.to_bytes()
    }

    fn state(&self) -> Vec<u8> {
        pack_state(
            STATE_MAGIC,
            &[&self.policy.to_bytes(), &self.adam.state_to_bytes()],
        )
    }

    fn load_state(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let parts = unpack_state(STATE_MAGIC, bytes, 2, "ppo")?;
        let mut fresh = Ppo::with_policy(Policy::new(self.policy.spec().clone(), self.policy.device())?, self.cfg.clone())?;
        fresh.policy.load_bytes(parts[0])?;
        fresh.adam.load_state_bytes(parts[1])?;
        *self = fresh;
        Ok(())
    }

    fn stats_help(&self) -> &'static [(&'static str, &'static str)] {
        STATS
    }
}

/// The actor-critic's spec for the run's spaces and `[model]` section.
pub fn model_spec(ctx: &BuildContext<'_>, model: &ModelSection) -> anyhow::Result<ModelSpec> {
    let kind: ModelKind = model.kind_for(ctx.observation_space);
    Ok(ModelSpec::for_spaces(
        kind,
        ctx.observation_space,
        ctx.action_space,
    )?)
}

/// PPO for a run: `[ppo]` (defaults of Cobbe et al. 2020) and `[model]`.
pub fn build(ctx: BuildContext<'_>) -> anyhow::Result<Built> {
    let cfg: PpoConfig = ctx.section()?;
    cfg.validate()?;
    let spec = model_spec(&ctx, &ctx.cfg.model)?;
    let ppo = Ppo::new(spec.clone(), cfg.clone(), ctx.device)?;
    Ok(Built {
        section: super::section_of(&cfg)?,
        spec_json: serde_json::to_string(&spec)?,
        explore_json: String::new(),
        algorithm: Box::new(ppo),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_are_the_procgen_values_and_unknown_keys_fail() {
        let c: PpoConfig = toml::from_str("").unwrap();
        assert_eq!(c, PpoConfig::default());
        assert_eq!((c.lr, c.gamma, c.gae_lambda), (5e-4, 0.999, 0.95));
        assert_eq!((c.batch_steps, c.minibatches, c.epochs), (16384, 8, 3));
        assert!(c.validate().is_ok());
        let c: PpoConfig = toml::from_str("gamma = 0.99\ntarget_kl = 0.02").unwrap();
        assert_eq!((c.gamma, c.target_kl), (0.99, Some(0.02)));
        assert!(toml::from_str::<PpoConfig>("gama = 0.9").is_err());
        let bad = PpoConfig {
            minibatches: 0,
            ..PpoConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn ppo_loss_hand_checked() {
        let _torch = volley_common::testing::torch();
        let cfg = PpoConfig {
            clip: 0.2,
            vf_coef: 0.5,
            ent_coef: 0.01,
            clip_vloss: true,
            ..PpoConfig::default()
        };
        let t = |v: &[f32]| Tensor::from_slice(v);
        // Ratios 1.5 (A > 0: clipped to 1.2), 0.5 (A < 0: clipped to 0.8), 1.1 (inside).
        let old = t(&[0.0, 0.0, 0.0]);
        let new = t(&[1.5f32.ln(), 0.5f32.ln(), 1.1f32.ln()]);
        let adv = t(&[1.0, -1.0, 2.0]);
        // pg terms: max(-1*1.5, -1*1.2) = -1.2; max(1*0.5, 1*0.8) = 0.8;
        // max(-2.2, -2.2) = -2.2. mean = (-1.2 + 0.8 - 2.2) / 3 = -0.8667
        let want_pg = (-1.2 + 0.8 - 2.2) / 3.0;
        // Values: old 0, new [1.0, -0.1, 0.5], returns [2.0, 0.0, -1.0].
        // unclipped (v - R)^2: [1.0, 0.01, 2.25]; clipped v: [0.2, -0.1, 0.2] ->
        // (.. - R)^2: [3.24, 0.01, 1.44]; max: [3.24, 0.01, 2.25]; 0.5 * mean = 0.9167
        let want_v = 0.5 * (3.24 + 0.01 + 2.25) / 3.0;
        let ent = t(&[1.0, 2.0, 3.0]);
        let terms = ppo_loss(
            &cfg,
            &new,
            &old,
            &adv,
            &t(&[1.0, -0.1, 0.5]),
            &t(&[0.0, 0.0, 0.0]),
            &t(&[2.0, 0.0, -1.0]),
            &ent,
        )
        .unwrap();
        let f = |x: &Tensor| x.double_value(&[]);
        assert!((f(&terms.policy_loss) - want_pg).abs() < 1e-5);
        assert!((f(&terms.value_loss) - want_v).abs() < 1e-5);
        assert!((f(&terms.entropy) - 2.0).abs() < 1e-6);
        let want_loss = want_pg - 0.01 * 2.0 + 0.5 * want_v;
        assert!((f(&terms.loss) - want_loss).abs() < 1e-5);
        // Two of three ratios left [0.8, 1.2].
        assert!((f(&terms.clip_fraction) - 2.0 / 3.0).abs() < 1e-6);
        // k3 KL: mean(r - 1 - ln r).
        let kl = [1.5f64, 0.5, 1.1]
            .iter()
            .map(|r| r - 1.0 - r.ln())
            .sum::<f64>()
            / 3.0;
        assert!((f(&terms.approx_kl) - kl).abs() < 1e-5);

        // Without value clipping: 0.5 * mean((v - R)^2).
        let cfg = PpoConfig {
            clip_vloss: false,
            ..cfg
        };
        let terms = ppo_loss(
            &cfg,
            &new,
            &old,
            &adv,
            &t(&[1.0, -0.1, 0.5]),
            &t(&[0.0, 0.0, 0.0]),
            &t(&[2.0, 0.0, -1.0]),
            &ent,
        )
        .unwrap();
        assert!((f(&terms.value_loss) - 0.5 * (1.0 + 0.01 + 2.25) / 3.0).abs() < 1e-5);
    }

    #[test]
    fn update_on_u8_images_and_gaussian_actions() {
        use volley_common::nn::{ActionHead, ModelKind};
        let _torch = volley_common::testing::torch();
        tch::manual_seed(4);
        let cfg = PpoConfig {
            batch_steps: 10,
            minibatches: 3,
            epochs: 2,
            ..PpoConfig::default()
        };
        let z = |n: i64| Tensor::zeros([n], (Kind::Float, Device::Cpu));
        let specs = [
            ModelSpec {
                kind: ModelKind::ImpalaCnn {
                    depths: vec![4, 8],
                    fc: 16,
                },
                obs_shape: vec![12, 12, 3],
                obs_u8: true,
                action: ActionHead::Categorical { n: 5 },
            },
            ModelSpec {
                kind: ModelKind::mlp64(),
                obs_shape: vec![3],
                obs_u8: false,
                action: ActionHead::Gaussian { dim: 2 },
            },
        ];
        for spec in specs {
            let mut ppo = Ppo::new(spec.clone(), cfg.clone(), Device::Cpu).unwrap();
            let mut shape = vec![10i64];
            shape.extend(spec.obs_shape.iter().map(|&d| d as i64));
            let obs = if spec.obs_u8 {
                Tensor::randint(256, shape.as_slice(), (Kind::Uint8, Device::Cpu))
            } else {
                Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu))
            };
            let act = ppo.policy.act(&obs).unwrap();
            let before = ppo.policy.to_bytes();
            let batch = RolloutBatch {
                obs,
                actions: act.action,
                logprobs: act.logprob,
                values: act.value,
                advantages: Tensor::randn([10], (Kind::Float, Device::Cpu)),
                returns: z(10) + 1.0,
            };
            let stats = ppo.update(&batch, 1e-3, &AtomicBool::new(false)).unwrap();
            // 10 rows in minibatches of 4, 4, 2, twice.
            assert_eq!(
                (stats.samples, stats.epochs, stats.minibatch_steps),
                (10, 2, 6)
            );
            assert!(stats.policy_loss.is_finite() && stats.grad_norm > 0.0);
            assert_ne!(ppo.policy.to_bytes(), before);
            assert_eq!(ppo.adam.steps(), 6);
            // A batch with mismatched rows is an error, not a panic.
            let bad = RolloutBatch {
                returns: z(9),
                ..batch
            };
            assert!(ppo.update(&bad, 1e-3, &AtomicBool::new(false)).is_err());
        }
    }

    #[test]
    fn gradient_flows_only_through_unclipped_ratios() {
        let _torch = volley_common::testing::torch();
        // d pg / d logp: for the clipped sample (ratio 1.5, A > 0) zero; inside the
        // range -A * r / M.
        let cfg = PpoConfig::default();
        let new = Tensor::from_slice(&[1.5f32.ln(), 1.1f32.ln()]).set_requires_grad(true);
        let z = Tensor::from_slice(&[0.0f32, 0.0]);
        let adv = Tensor::from_slice(&[1.0f32, 2.0]);
        let terms = ppo_loss(&cfg, &new, &z, &adv, &z, &z, &z, &z).unwrap();
        terms.policy_loss.backward();
        let g = new.grad();
        assert!(g.double_value(&[0]).abs() < 1e-7);
        assert!((g.double_value(&[1]) + 2.0 * 1.1 / 2.0).abs() < 1e-5);
    }
}
