//! Advantage actor-critic, A2C: the synchronous form of A3C (Mnih et al. 2016,
//! "Asynchronous Methods for Deep Reinforcement Learning", arXiv 1602.01783) as
//! OpenAI Baselines' `a2c` runs it: n-step returns bootstrapped by the critic (GAE
//! with lambda 1, [`crate::rollout::gae`]), one gradient step per batch of all
//! envs' steps, `loss = -mean(A log pi(a|s)) - ent_coef H + vf_coef mean((R -
//! V(s))^2)`, global grad-norm clipping, RMSProp (alpha 0.99, eps 1e-5) with a
//! learning rate annealed linearly to 0.
//!
//! Against PPO: no ratio, no clipping, one pass over each batch. The policy gradient
//! uses the log-probability under the current weights: chunks acted up to
//! `rollout.max_policy_lag` versions ago are trained on as if on-policy, as A3C's
//! asynchronous workers are.
//!
//! Layout: the hyperparameters ([`A2cConfig`], Baselines' defaults: 16 envs x 5
//! steps per update), the networks (the actor-critic of `volley_common::nn::a2c`),
//! the update ([`A2c::update`]), the training loop's view ([`build`]).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use volley_common::nn::{Adam, AdamConfig, ModelSpec, Policy, Rmsprop, RmspropConfig};

use super::{Algorithm, Batch, BuildContext, Built, Source, Stats, UpdateContext};
use crate::checkpoint::{pack_state, unpack_state};
use crate::rollout::{RolloutBatch, RolloutSettings};

// ---------------------------------------------------------------------------------
// Hyperparameters
// ---------------------------------------------------------------------------------

/// A2C hyperparameters; defaults are OpenAI Baselines' (`a2c.learn`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct A2cConfig {
    /// Learning rate (annealed linearly to 0 over the run with `anneal_lr`).
    pub lr: f64,
    pub anneal_lr: bool,
    /// `rmsprop` (the paper's) or `adam`.
    pub optimizer: String,
    /// RMSProp decay.
    pub alpha: f64,
    /// RMSProp / Adam epsilon.
    pub eps: f64,
    /// Discount factor.
    pub gamma: f64,
    /// GAE lambda: 1 gives the paper's n-step returns (to the end of the chunk).
    pub gae_lambda: f64,
    /// Env steps per update (16 envs x 5 steps).
    pub batch_steps: usize,
    /// Entropy-bonus coefficient.
    pub ent_coef: f64,
    /// Value-loss coefficient.
    pub vf_coef: f64,
    /// Global grad-norm clipping threshold.
    pub max_grad_norm: f64,
    /// Normalise advantages over the batch (Baselines: no).
    pub norm_adv: bool,
    /// Divide rewards by the running std of the discounted return (as PPO can).
    pub norm_reward: bool,
    /// Clip of normalised rewards.
    pub reward_clip: f64,
}

impl Default for A2cConfig {
    fn default() -> Self {
        A2cConfig {
            lr: 7e-4,
            anneal_lr: true,
            optimizer: "rmsprop".into(),
            alpha: 0.99,
            eps: 1e-5,
            gamma: 0.99,
            gae_lambda: 1.0,
            batch_steps: 80,
            ent_coef: 0.01,
            vf_coef: 0.5,
            max_grad_norm: 0.5,
            norm_adv: false,
            norm_reward: false,
            reward_clip: 10.0,
        }
    }
}

impl A2cConfig {
    /// Checks the ranges; configs come from files and command lines.
    pub fn validate(&self) -> Result<()> {
        let pos = |v: f64| v.is_finite() && v > 0.0;
        let nonneg = |v: f64| v.is_finite() && v >= 0.0;
        if !nonneg(self.lr) {
            bail!("a2c.lr must be >= 0, got {}", self.lr);
        }
        if !["rmsprop", "adam"].contains(&self.optimizer.as_str()) {
            bail!(
                "a2c.optimizer = '{}': expected rmsprop or adam",
                self.optimizer
            );
        }
        for (name, v) in [
            ("gamma", self.gamma),
            ("gae_lambda", self.gae_lambda),
            ("alpha", self.alpha),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("a2c.{name} must be in [0, 1], got {v}");
            }
        }
        for (name, v) in [
            ("eps", self.eps),
            ("max_grad_norm", self.max_grad_norm),
            ("reward_clip", self.reward_clip),
        ] {
            if !pos(v) {
                bail!("a2c.{name} must be > 0, got {v}");
            }
        }
        for (name, v) in [("ent_coef", self.ent_coef), ("vf_coef", self.vf_coef)] {
            if !nonneg(v) {
                bail!("a2c.{name} must be >= 0, got {v}");
            }
        }
        if self.batch_steps == 0 {
            bail!("a2c.batch_steps must be at least 1");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Networks: `volley_common::nn::a2c` (the actor-critic Policy; Baselines' MLP or
// Nature CNN, here any torso of `[model]`).
// ---------------------------------------------------------------------------------

/// The optimizer of the paper (RMSProp) or Adam.
#[derive(Debug)]
enum Optimizer {
    Rmsprop(Rmsprop),
    Adam(Adam),
}

impl Optimizer {
    fn new(cfg: &A2cConfig, params: Vec<Tensor>) -> Result<Optimizer> {
        Ok(match cfg.optimizer.as_str() {
            "adam" => Optimizer::Adam(Adam::new(
                params,
                AdamConfig {
                    eps: cfg.eps,
                    ..AdamConfig::default()
                },
            )?),
            _ => Optimizer::Rmsprop(Rmsprop::new(
                params,
                RmspropConfig {
                    alpha: cfg.alpha,
                    eps: cfg.eps,
                },
            )?),
        })
    }

    fn zero_grad(&mut self) {
        match self {
            Optimizer::Rmsprop(o) => o.zero_grad(),
            Optimizer::Adam(o) => o.zero_grad(),
        }
    }

    fn clip_grad_norm(&self, max: f64) -> Result<Tensor> {
        Ok(match self {
            Optimizer::Rmsprop(o) => o.clip_grad_norm(max)?,
            Optimizer::Adam(o) => o.clip_grad_norm(max)?,
        })
    }

    fn step(&mut self, lr: f64) -> Result<()> {
        match self {
            Optimizer::Rmsprop(o) => o.step(lr)?,
            Optimizer::Adam(o) => o.step(lr)?,
        }
        Ok(())
    }

    fn state_to_bytes(&self) -> Vec<u8> {
        match self {
            Optimizer::Rmsprop(o) => o.state_to_bytes(),
            Optimizer::Adam(o) => o.state_to_bytes(),
        }
    }

    fn load_state_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Optimizer::Rmsprop(o) => o.load_state_bytes(bytes)?,
            Optimizer::Adam(o) => o.load_state_bytes(bytes)?,
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// The update
// ---------------------------------------------------------------------------------

/// What one update logged.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct A2cStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    pub entropy: f64,
    /// `1 - Var(R - V_behaviour) / Var(R)` (NaN when the returns are constant).
    pub explained_variance: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// A2C: the actor-critic, its optimizer and the hyperparameters.
#[derive(Debug)]
pub struct A2c {
    pub policy: Policy,
    opt: Optimizer,
    pub cfg: A2cConfig,
}

impl A2c {
    /// A freshly initialised actor-critic for `spec` on `device` and a fresh optimizer.
    pub fn new(spec: ModelSpec, cfg: A2cConfig, device: Device) -> Result<A2c> {
        cfg.validate()?;
        let policy = Policy::new(spec, device)?;
        let opt = Optimizer::new(&cfg, policy.parameters())?;
        Ok(A2c { policy, opt, cfg })
    }

    /// The A2C loss terms of `batch` under the current weights: `(loss, policy loss,
    /// value loss, entropy)`, the first with gradient.
    pub fn loss(&self, batch: &RolloutBatch) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        batch.rows()?;
        let device = self.policy.device();
        let (logprob, entropy, value) = self.policy.evaluate(
            &batch.obs.f_to_device(device)?,
            &batch.actions.f_to_device(device)?,
        )?;
        let mut adv = batch.advantages.f_to_device(device)?.f_to_kind(Kind::Float)?;
        if self.cfg.norm_adv && adv.numel() > 1 {
            let mean = adv.f_mean(Kind::Float)?;
            let std = adv.f_std(true)?;
            adv = adv.f_sub(&mean)?.f_div(&std.f_add_scalar(1e-8)?)?;
        }
        let returns = batch.returns.f_to_device(device)?.f_to_kind(Kind::Float)?;
        let policy_loss = adv.f_mul(&logprob)?.f_mean(Kind::Float)?.f_neg()?;
        let value_loss = returns.f_sub(&value)?.f_square()?.f_mean(Kind::Float)?;
        let entropy = entropy.f_mean(Kind::Float)?;
        let loss = policy_loss
            .f_sub(&entropy.f_mul_scalar(self.cfg.ent_coef)?)?
            .f_add(&value_loss.f_mul_scalar(self.cfg.vf_coef)?)?;
        Ok((loss, policy_loss, value_loss, entropy))
    }

    /// One gradient step on `batch` with learning rate `lr`.
    pub fn update(&mut self, batch: &RolloutBatch, lr: f64) -> Result<A2cStats> {
        let (loss, pg, v, ent) = self.loss(batch)?;
        self.opt.zero_grad();
        loss.f_backward()?;
        let grad_norm = self.opt.clip_grad_norm(self.cfg.max_grad_norm)?;
        self.opt.step(lr)?;
        let explained_variance = tch::no_grad(|| -> Result<f64> {
            let r = batch.returns.f_to_kind(Kind::Float)?;
            let var_y = r.f_var(false)?.f_double_value(&[])?;
            if var_y == 0.0 {
                return Ok(f64::NAN);
            }
            let var_res = r
                .f_sub(&batch.values.f_to_kind(Kind::Float)?)?
                .f_var(false)?
                .f_double_value(&[])?;
            Ok(1.0 - var_res / var_y)
        })?;
        Ok(A2cStats {
            policy_loss: pg.f_double_value(&[])?,
            value_loss: v.f_double_value(&[])?,
            entropy: ent.f_double_value(&[])?,
            explained_variance,
            grad_norm: grad_norm.f_double_value(&[])?,
        })
    }
}

// ---------------------------------------------------------------------------------
// The training loop's view
// ---------------------------------------------------------------------------------

const STATE_MAGIC: &[u8; 4] = b"VLYC";

const STATS: &[(&str, &str)] = &[
    ("policy_loss", "policy-gradient loss of the last update"),
    ("value_loss", "value loss of the last update"),
    ("entropy", "policy entropy of the last update"),
    ("explained_variance", "explained variance of the value function"),
    ("grad_norm", "gradient norm before clipping"),
    ("lr", "learning rate of the last update"),
];

impl Algorithm for A2c {
    fn source(&self) -> Source {
        Source::Rollouts(RolloutSettings {
            batch_steps: self.cfg.batch_steps,
            gamma: self.cfg.gamma,
            gae_lambda: self.cfg.gae_lambda,
            norm_reward: self.cfg.norm_reward,
            reward_clip: self.cfg.reward_clip,
        })
    }

    fn update(&mut self, batch: &Batch<'_>, ctx: &UpdateContext<'_>) -> Result<Stats> {
        let lr = if self.cfg.anneal_lr && ctx.total_steps > 0 {
            self.cfg.lr * (1.0 - (ctx.steps as f64 / ctx.total_steps as f64).min(1.0))
        } else {
            self.cfg.lr
        };
        let s = A2c::update(self, batch.rollout("a2c")?, lr)?;
        Ok(vec![
            ("policy_loss", s.policy_loss),
            ("value_loss", s.value_loss),
            ("entropy", s.entropy),
            ("explained_variance", s.explained_variance),
            ("grad_norm", s.grad_norm),
            ("lr", lr),
        ])
    }

    fn actor_weights(&self) -> Vec<u8> {
        self.policy.to_bytes()
    }

    fn state(&self) -> Vec<u8> {
        pack_state(
            STATE_MAGIC,
            &[&self.policy.to_bytes(), &self.opt.state_to_bytes()],
        )
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let parts = unpack_state(STATE_MAGIC, bytes, 2, "a2c")?;
        let mut fresh = A2c::new(
            self.policy.spec().clone(),
            self.cfg.clone(),
            self.policy.device(),
        )?;
        fresh.policy.load_bytes(parts[0])?;
        fresh.opt.load_state_bytes(parts[1])?;
        *self = fresh;
        Ok(())
    }

    fn stats_help(&self) -> &'static [(&'static str, &'static str)] {
        STATS
    }
}

/// A2C for a run: `[a2c]` (Baselines' defaults) and `[model]`.
pub fn build(ctx: BuildContext<'_>) -> Result<Built> {
    let cfg: A2cConfig = ctx.section()?;
    cfg.validate()?;
    let spec = super::ppo::model_spec(&ctx, &ctx.cfg.model)?;
    let a2c = A2c::new(spec.clone(), cfg.clone(), ctx.device)?;
    Ok(Built {
        section: super::section_of(&cfg)?,
        spec_json: serde_json::to_string(&spec)?,
        explore_json: String::new(),
        algorithm: Box::new(a2c),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use volley_common::env::Space;
    use volley_common::nn::ModelKind;

    fn spec() -> ModelSpec {
        ModelSpec::for_spaces(
            ModelKind::Mlp { hidden: vec![8] },
            &Space::uniform_box(&[3], -1.0, 1.0),
            &Space::Discrete { n: 2 },
        )
        .unwrap()
    }

    fn batch(a: &A2c) -> RolloutBatch {
        let obs = Tensor::randn([6, 3], (Kind::Float, Device::Cpu));
        let act = a.policy.act(&obs).unwrap();
        RolloutBatch {
            obs,
            actions: act.action,
            logprobs: act.logprob,
            values: act.value.shallow_clone(),
            advantages: Tensor::from_slice(&[1.0f32, -1.0, 0.5, 2.0, -0.5, 0.0]),
            returns: act.value + 1.0,
        }
    }

    #[test]
    fn the_loss_is_the_papers_by_hand() {
        let _torch = volley_common::testing::torch();
        tch::manual_seed(0);
        let cfg = A2cConfig {
            ent_coef: 0.01,
            vf_coef: 0.5,
            ..A2cConfig::default()
        };
        let a = A2c::new(spec(), cfg, Device::Cpu).unwrap();
        let b = batch(&a);
        let (loss, pg, v, ent) = a.loss(&b).unwrap();
        let (lp, e, val) = a.policy.evaluate(&b.obs, &b.actions).unwrap();
        let adv = [1.0f64, -1.0, 0.5, 2.0, -0.5, 0.0];
        let lp = Vec::<f32>::try_from(&lp).unwrap();
        let want_pg = -adv
            .iter()
            .zip(&lp)
            .map(|(a, l)| a * f64::from(*l))
            .sum::<f64>()
            / 6.0;
        let ret = Vec::<f32>::try_from(&b.returns).unwrap();
        let val = Vec::<f32>::try_from(&val).unwrap();
        let want_v = ret
            .iter()
            .zip(&val)
            .map(|(r, v)| f64::from(r - v).powi(2))
            .sum::<f64>()
            / 6.0;
        let want_ent = e.mean(Kind::Float).double_value(&[]);
        let f = |t: &Tensor| t.double_value(&[]);
        assert!((f(&pg) - want_pg).abs() < 1e-5);
        assert!((f(&v) - want_v).abs() < 1e-5);
        assert!((f(&ent) - want_ent).abs() < 1e-6);
        assert!((f(&loss) - (want_pg - 0.01 * want_ent + 0.5 * want_v)).abs() < 1e-5);
    }

    #[test]
    fn update_steps_both_optimizers_and_state_resumes_exactly() {
        let _torch = volley_common::testing::torch();
        for opt in ["rmsprop", "adam"] {
            tch::manual_seed(1);
            let cfg = A2cConfig {
                optimizer: opt.into(),
                ..A2cConfig::default()
            };
            let mut a = A2c::new(spec(), cfg.clone(), Device::Cpu).unwrap();
            let b = batch(&a);
            let before = a.policy.to_bytes();
            let s = a.update(&b, 7e-4).unwrap();
            assert!(s.grad_norm > 0.0 && s.policy_loss.is_finite(), "{opt}");
            assert_ne!(a.policy.to_bytes(), before);
            let state = Algorithm::state(&a);
            let mut c = A2c::new(spec(), cfg.clone(), Device::Cpu).unwrap();
            c.load_state(&state).unwrap();
            a.update(&b, 7e-4).unwrap();
            c.update(&b, 7e-4).unwrap();
            assert_eq!(a.policy.to_bytes(), c.policy.to_bytes(), "{opt}");
            assert!(c.load_state(&state[..state.len() - 1]).is_err());
        }
        let bad = A2cConfig {
            optimizer: "sgd".into(),
            ..A2cConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
