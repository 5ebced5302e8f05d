//! Behaviour cloning (Pomerleau 1991; in the supervised form of Ross, Gordon and
//! Bagnell 2011, section 2, and of the `imitation` library's `BC`): fit a policy to an
//! expert's actions by supervised learning on its demonstrations, no env interaction.
//!
//! - `loss = "gaussian"`: maximum likelihood of the expert's action under the policy,
//!   `-mean log pi(a_expert | s)`, with SAC's tanh-squashed Gaussian
//!   ([`SacActor::log_prob`]);
//! - `loss = "mse"`: a deterministic policy, `mean || tanh(mu(s)) scale + bias -
//!   a_expert ||^2`.
//!
//! The policy is SAC's actor (256-256 ReLU by default) so that a clone acts, evaluates
//! and plays like a SAC policy and imitation-seeded SAC can start from it. The data
//! are the run's `imitation.dataset` (`crate::demos`), loaded by the training loop;
//! the learner runs alone: no actors connect, and evaluation and the best checkpoint
//! work as for every algorithm. Hyperparameters below are the `imitation` library's BC
//! defaults (Adam, lr 1e-3) with a larger batch (256) and a fixed number of updates.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};
use volley_common::nn::sac::{SacActor, SacSpec};
use volley_common::nn::{Adam, AdamConfig};

use super::{Algorithm, Batch, BuildContext, Built, Source, Stats, UpdateContext};
use crate::checkpoint::{pack_state, unpack_state};
use crate::demos::{DemoBatch, DemoSettings};

/// Behaviour cloning's settings (`[bc]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BcConfig {
    /// `gaussian` (maximum likelihood) or `mse` (deterministic).
    pub loss: String,
    /// Adam learning rate.
    pub lr: f64,
    /// Demonstrations per minibatch.
    pub batch_size: usize,
    /// Gradient updates of the whole run.
    pub updates: u64,
    /// Updates per weights version (evaluation counts versions).
    pub updates_per_round: u64,
    /// Hidden widths of the policy.
    pub hidden: Vec<usize>,
    /// Demonstrations kept at most (rows of the dataset).
    pub dataset_capacity: usize,
}

impl Default for BcConfig {
    fn default() -> Self {
        BcConfig {
            loss: "gaussian".into(),
            lr: 1e-3,
            batch_size: 256,
            updates: 20_000,
            updates_per_round: 500,
            hidden: vec![256, 256],
            dataset_capacity: 1_000_000,
        }
    }
}

/// How a clone is fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    Gaussian,
    Mse,
}

impl BcConfig {
    pub fn validate(&self) -> Result<Loss> {
        let loss = match self.loss.as_str() {
            "gaussian" => Loss::Gaussian,
            "mse" => Loss::Mse,
            other => bail!("bc.loss = '{other}': expected gaussian or mse"),
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("bc.lr must be > 0, got {}", self.lr);
        }
        if self.batch_size == 0 || self.updates == 0 || self.updates_per_round == 0 {
            bail!("bc.batch_size, bc.updates and bc.updates_per_round must be at least 1");
        }
        if self.dataset_capacity == 0 {
            bail!("bc.dataset_capacity must be at least 1");
        }
        if self.hidden.is_empty() || self.hidden.iter().any(|&h| h == 0 || h > 65536) {
            bail!(
                "bc.hidden must be 1 or more widths in 1..=65536, got {:?}",
                self.hidden
            );
        }
        Ok(loss)
    }
}

/// The imitation losses of a squashed Gaussian policy on a minibatch, shared with
/// DAgger and imitation-seeded SAC: the fitted loss (with gradient) and the mean
/// squared error of the policy's mean action (detached, for the logs).
pub fn imitation_loss(
    actor: &SacActor,
    loss: Loss,
    batch: &DemoBatch,
) -> Result<(tch::Tensor, tch::Tensor)> {
    let device = actor.device();
    let obs = batch.obs.f_to_device(device)?;
    let target = batch.actions.f_to_device(device)?;
    let mean = actor.mean_action(&obs)?;
    let mse = mean.f_mse_loss(&target, tch::Reduction::Mean)?;
    let fitted = match loss {
        Loss::Mse => mse.shallow_clone(),
        Loss::Gaussian => actor.log_prob(&obs, &target)?.f_mean(Kind::Float)?.f_neg()?,
    };
    Ok((fitted, mse.f_detach()?))
}

/// A behaviour-cloned policy and its optimizer.
#[derive(Debug)]
pub struct Bc {
    cfg: BcConfig,
    loss: Loss,
    actor: SacActor,
    opt: Adam,
    updates: u64,
}

const STATE_MAGIC: &[u8; 4] = b"VLYB";

const STATS: &[(&str, &str)] = &[
    ("loss", "imitation loss of the last update (negative log-likelihood or MSE)"),
    ("action_mse", "mean squared error of the policy's mean action against the expert's"),
];

impl Bc {
    pub fn new(spec: SacSpec, cfg: BcConfig, device: Device) -> Result<Bc> {
        let loss = cfg.validate()?;
        let spec = SacSpec {
            hidden: cfg.hidden.clone(),
            ..spec
        };
        let actor = SacActor::new(spec, device)?;
        let opt = Adam::new(actor.parameters(), AdamConfig::default())?;
        Ok(Bc {
            cfg,
            loss,
            actor,
            opt,
            updates: 0,
        })
    }

    /// One Adam step on a minibatch of demonstrations.
    pub fn step(&mut self, batch: &DemoBatch) -> Result<Stats> {
        let (fitted, mse) = imitation_loss(&self.actor, self.loss, batch)?;
        self.opt.zero_grad();
        fitted.f_backward()?;
        self.opt.step(self.cfg.lr)?;
        self.updates += 1;
        Ok(vec![
            ("loss", fitted.f_double_value(&[])?),
            ("action_mse", mse.f_double_value(&[])?),
        ])
    }
}

impl Algorithm for Bc {
    fn source(&self) -> Source {
        Source::Demos(DemoSettings {
            batch_size: self.cfg.batch_size,
            updates_per_round: self.cfg.updates_per_round,
            total_updates: self.cfg.updates,
            capacity: self.cfg.dataset_capacity,
        })
    }

    fn update(&mut self, batch: &Batch<'_>, _ctx: &UpdateContext<'_>) -> Result<Stats> {
        self.step(batch.demos("bc")?)
    }

    fn actor_weights(&self) -> Vec<u8> {
        self.actor.to_bytes()
    }

    fn state(&self) -> Vec<u8> {
        pack_state(
            STATE_MAGIC,
            &[
                &self.actor.to_bytes(),
                &self.opt.state_to_bytes(),
                &self.updates.to_le_bytes(),
            ],
        )
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let parts = unpack_state(STATE_MAGIC, bytes, 3, "bc")?;
        let mut fresh = Bc::new(
            self.actor.spec().clone(),
            self.cfg.clone(),
            self.actor.device(),
        )?;
        fresh.actor.load_bytes(parts[0])?;
        fresh.opt.load_state_bytes(parts[1])?;
        let n: [u8; 8] = parts[2]
            .try_into()
            .map_err(|_| anyhow::anyhow!("bc state: an update count of {} bytes", parts[2].len()))?;
        fresh.updates = u64::from_le_bytes(n);
        *self = fresh;
        Ok(())
    }

    fn stats_help(&self) -> &'static [(&'static str, &'static str)] {
        STATS
    }
}

/// Behaviour cloning for a run: `[bc]`, vector observations and continuous actions.
pub fn build(ctx: BuildContext<'_>) -> Result<Built> {
    let cfg: BcConfig = ctx.section()?;
    cfg.validate()?;
    if ctx.cfg.imitation.dataset.is_empty() {
        bail!("bc trains on demonstrations: set imitation.dataset to a transitions file (record one with volley-runs play EXPERT --record FILE)");
    }
    let spec = SacSpec::for_spaces(ctx.observation_space, ctx.action_space, cfg.hidden.clone())
        .map_err(|e| anyhow::anyhow!("bc clones continuous actions from vector observations: {e}"))?;
    let bc = Bc::new(spec.clone(), cfg.clone(), ctx.device)?;
    Ok(Built {
        section: super::section_of(&cfg)?,
        spec_json: serde_json::to_string(&spec)?,
        explore_json: String::new(),
        algorithm: Box::new(bc),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    fn spec() -> SacSpec {
        SacSpec {
            obs_dim: 2,
            action_low: vec![-1.0],
            action_high: vec![1.0],
            hidden: vec![16, 16],
        }
    }

    fn cfg(loss: &str) -> BcConfig {
        BcConfig {
            loss: loss.into(),
            lr: 3e-3,
            hidden: vec![16, 16],
            ..BcConfig::default()
        }
    }

    /// An expert acting `a = 0.8 tanh(x0 - x1)`: both losses fit it.
    #[test]
    fn both_losses_fit_a_smooth_expert() {
        let _torch = volley_common::testing::torch();
        for loss in ["gaussian", "mse"] {
            tch::manual_seed(3);
            let mut bc = Bc::new(spec(), cfg(loss), Device::Cpu).unwrap();
            let obs = Tensor::rand([512, 2], (Kind::Float, Device::Cpu)) * 4.0 - 2.0;
            let x = obs.select(1, 0) - obs.select(1, 1);
            let actions = (x.tanh() * 0.8).view([512, 1]);
            let batch = DemoBatch { obs, actions };
            let first = bc.step(&batch).unwrap();
            let mut last = first.clone();
            for _ in 0..600 {
                last = bc.step(&batch).unwrap();
            }
            let mse = |s: &Stats| s.iter().find(|(k, _)| *k == "action_mse").unwrap().1;
            assert!(
                mse(&last) < 0.01 && mse(&last) < mse(&first) / 10.0,
                "{loss}: action MSE {} -> {}",
                mse(&first),
                mse(&last)
            );
        }
    }

    #[test]
    fn the_gaussian_loss_is_the_negative_log_likelihood() {
        let _torch = volley_common::testing::torch();
        tch::manual_seed(0);
        let actor = SacActor::new(spec(), Device::Cpu).unwrap();
        let obs = Tensor::from_slice(&[0.3f32, -0.2]).view([1, 2]);
        let a = Tensor::from_slice(&[0.25f32]).view([1, 1]);
        let batch = DemoBatch {
            obs: obs.shallow_clone(),
            actions: a.shallow_clone(),
        };
        let (nll, _) = imitation_loss(&actor, Loss::Gaussian, &batch).unwrap();
        // By hand: u = atanh(0.25), N(u; mean, std), minus log(1 - 0.25^2).
        let (mean, log_std) = actor.forward(&obs).unwrap();
        let (m, ls) = (mean.double_value(&[0, 0]), log_std.double_value(&[0, 0]));
        let u = 0.25f64.atanh();
        let logp = -0.5 * ((u - m) / ls.exp()).powi(2) - ls - 0.5 * (2.0 * std::f64::consts::PI).ln()
            - (1.0 - 0.25f64.powi(2) + 1e-6).ln();
        assert!((nll.double_value(&[]) + logp).abs() < 1e-4, "{} vs {}", nll.double_value(&[]), -logp);
    }

    #[test]
    fn state_round_trips_and_a_bad_loss_is_named() {
        let _torch = volley_common::testing::torch();
        let mut bc = Bc::new(spec(), cfg("mse"), Device::Cpu).unwrap();
        let batch = DemoBatch {
            obs: Tensor::zeros([4, 2], (Kind::Float, Device::Cpu)),
            actions: Tensor::full([4, 1], 0.5, (Kind::Float, Device::Cpu)),
        };
        bc.step(&batch).unwrap();
        let state = bc.state();
        let mut other = Bc::new(spec(), cfg("mse"), Device::Cpu).unwrap();
        other.load_state(&state).unwrap();
        assert_eq!(other.state(), state);
        assert!(other.load_state(&state[..state.len() - 1]).is_err());
        let e = BcConfig {
            loss: "l1".into(),
            ..BcConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("bc.loss = 'l1'"), "{e}");
    }
}
