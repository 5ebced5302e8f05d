//! SAC seeded by imitation (`[sac.imitation]`), as the MuJoCo project volley replaces
//! runs it: before SAC explores,
//!
//! 1. the actor is fitted to the expert's actions of `imitation.dataset` (maximum
//!    likelihood of its squashed Gaussian, as behaviour cloning fits it,
//!    `crate::algo::bc::imitation_loss`), and both critics to the discounted rewards-to-go
//!    of the expert's trajectories at the expert's actions, `Q(s_t, a_t) ~ sum_k
//!    gamma^k r_{t+k}` to the end of the recorded episode; the target critics start as
//!    copies of them. `pretrain_updates` minibatch steps of each, on optimizers of
//!    their own;
//! 2. then SAC trains as always, and after each of its updates, with probability
//!    `p_t = recalibrate_p * (1 - t / recalibrate_updates)` (falling linearly to 0 over
//!    `recalibrate_updates` updates), the actor takes one step back towards the
//!    imitator on a minibatch of the demonstrations (with SAC's actor optimizer), else
//!    SAC explores alone.
//!
//! The actors act with the seeded policy from the first step: no uniform random
//! warm-up (`SacExplore::warm_up` off). Pretraining runs when a fresh run starts
//! ([`crate::algo::Algorithm::start`]); a resumed run has it in its state already.

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use volley_common::dataset::Transitions;
use volley_common::nn::{Adam, AdamConfig};

use super::Sac;
use crate::algo::bc::{imitation_loss, Loss};
use crate::demos::Demos;

/// `[sac.imitation]`: off unless `pretrain_updates > 0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeedConfig {
    /// Minibatch steps of the actor's and the critics' pretraining (0: no seeding).
    pub pretrain_updates: u64,
    /// Adam learning rate of the pretraining.
    pub pretrain_lr: f64,
    /// Probability of a recalibration step after SAC's first update.
    pub recalibrate_p: f64,
    /// SAC updates over which that probability falls linearly to 0.
    pub recalibrate_updates: u64,
    /// Demonstrations kept at most.
    pub dataset_capacity: usize,
}

impl Default for SeedConfig {
    fn default() -> Self {
        SeedConfig {
            pretrain_updates: 0,
            pretrain_lr: 1e-3,
            recalibrate_p: 0.5,
            recalibrate_updates: 50_000,
            dataset_capacity: 1_000_000,
        }
    }
}

impl SeedConfig {
    pub fn enabled(&self) -> bool {
        self.pretrain_updates > 0
    }

    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.recalibrate_p) {
            bail!(
                "sac.imitation.recalibrate_p must be in [0, 1], got {}",
                self.recalibrate_p
            );
        }
        if !(self.pretrain_lr.is_finite() && self.pretrain_lr > 0.0) {
            bail!("sac.imitation.pretrain_lr must be > 0, got {}", self.pretrain_lr);
        }
        if self.dataset_capacity == 0 {
            bail!("sac.imitation.dataset_capacity must be at least 1");
        }
        Ok(())
    }

    /// The recalibration probability after `updates` SAC updates.
    pub fn recalibrate_p(&self, updates: u64) -> f64 {
        if self.recalibrate_updates == 0 {
            return 0.0;
        }
        let left = 1.0 - updates as f64 / self.recalibrate_updates as f64;
        self.recalibrate_p * left.max(0.0)
    }
}

/// `sum_k gamma^k r_{t+k}` to the end of each recorded episode (rows of one episode
/// are consecutive, as `volley-runs play --record` writes them).
pub fn rewards_to_go(rewards: &[f32], episode: &[i64], gamma: f64) -> Vec<f32> {
    let mut out = vec![0f32; rewards.len()];
    let mut g = 0f64;
    for i in (0..rewards.len()).rev() {
        if i + 1 < rewards.len() && episode[i + 1] != episode[i] {
            g = 0.0;
        }
        g = f64::from(rewards[i]) + gamma * g;
        out[i] = g as f32;
    }
    out
}

/// The demonstrations and the seeding's settings, held by a seeded [`Sac`].
#[derive(Debug)]
pub struct Seeding {
    cfg: SeedConfig,
    demos: Demos,
    /// `[len]` rewards-to-go of the demonstrations' rows (for pretraining only).
    returns: Tensor,
    /// The last recalibration step's loss and how many there were.
    last_loss: f64,
    recalibrations: u64,
}

/// What pretraining reached, for the log.
#[derive(Debug, Clone, Copy)]
pub struct Pretrained {
    pub action_mse: f64,
    pub q_loss: f64,
    pub returns_mean: f64,
}

impl Seeding {
    pub fn new(cfg: SeedConfig, demos: Demos, t: &Transitions, gamma: f64) -> Result<Seeding> {
        cfg.validate()?;
        if t.len() != demos.len() {
            bail!("{} demonstrations for {} transitions", demos.len(), t.len());
        }
        let rtg = rewards_to_go(&t.rewards, &t.episode, gamma);
        let returns = Tensor::f_from_slice(&rtg)?.f_to_device(demos.device())?;
        Ok(Seeding {
            cfg,
            demos,
            returns,
            last_loss: 0.0,
            recalibrations: 0,
        })
    }

    /// Fits `sac`'s actor to the expert's actions and its critics to the rewards-to-go
    /// (module docs); the targets become copies of the critics.
    pub fn pretrain(&self, sac: &mut Sac, seed: u64) -> Result<Pretrained> {
        let lr = self.cfg.pretrain_lr;
        let mut actor_opt = Adam::new(sac.actor.parameters(), AdamConfig::default())?;
        let mut qp = sac.qf1.parameters();
        qp.extend(sac.qf2.parameters());
        let mut q_opt = Adam::new(qp, AdamConfig::default())?;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5eed);
        let (mut mse, mut q_loss) = (0.0, 0.0);
        for _ in 0..self.cfg.pretrain_updates {
            let idx = self.demos.sample_indices(sac.cfg.batch_size, &mut rng)?;
            let batch = self.demos.rows(&idx)?;
            let (fitted, m) = imitation_loss(&sac.actor, Loss::Gaussian, &batch)?;
            actor_opt.zero_grad();
            fitted.f_backward()?;
            actor_opt.step(lr)?;

            let target = self.returns.f_index_select(0, &idx)?;
            let obs = batch.obs.f_to_device(sac.device())?;
            let act = batch.actions.f_to_device(sac.device())?;
            let q1 = sac.qf1.forward(&obs, &act)?;
            let q2 = sac.qf2.forward(&obs, &act)?;
            let loss = q1
                .f_mse_loss(&target, tch::Reduction::Mean)?
                .f_add(&q2.f_mse_loss(&target, tch::Reduction::Mean)?)?;
            q_opt.zero_grad();
            loss.f_backward()?;
            q_opt.step(lr)?;
            mse = m.f_double_value(&[])?;
            q_loss = 0.5 * loss.f_double_value(&[])?;
        }
        sac.qf1_target.copy_from(&sac.qf1)?;
        sac.qf2_target.copy_from(&sac.qf2)?;
        Ok(Pretrained {
            action_mse: mse,
            q_loss,
            returns_mean: self.returns.f_mean(Kind::Float)?.f_double_value(&[])?,
        })
    }

    /// After SAC update `updates` (0-based): with probability
    /// [`SeedConfig::recalibrate_p`], one imitation step of the actor on a minibatch
    /// of the demonstrations. Draws from a generator seeded by `seed` and `updates`,
    /// so a resumed run draws what it would have.
    pub fn after_update(&mut self, sac: &mut Sac, updates: u64, seed: u64) -> Result<()> {
        let p = self.cfg.recalibrate_p(updates);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(
            seed ^ 0x5eed ^ updates.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        if p <= 0.0 || rng.random::<f64>() >= p {
            return Ok(());
        }
        let batch = self.demos.sample(sac.cfg.batch_size, &mut rng)?;
        let (fitted, _) = imitation_loss(&sac.actor, Loss::Gaussian, &batch)?;
        sac.step_actor(&fitted)?;
        self.last_loss = fitted.f_double_value(&[])?;
        self.recalibrations += 1;
        Ok(())
    }

    /// `(p now, recalibration steps so far, the last one's loss)`.
    pub fn stats(&self, updates: u64) -> (f64, u64, f64) {
        (
            self.cfg.recalibrate_p(updates),
            self.recalibrations,
            self.last_loss,
        )
    }

    pub fn demos(&self) -> &Demos {
        &self.demos
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::sac::SacConfig;
    use tch::Device;
    use volley_common::env::Space;
    use volley_common::nn::sac::SacSpec;

    /// 256 states `x` with the expert's action `0.6 tanh(x0 - x1)` and return `x0 + x1`.
    fn seeding(updates: u64) -> Seeding {
        let space = |n: usize, b: f32| Space::Box {
            shape: vec![n],
            low: vec![-b; n],
            high: vec![b; n],
        };
        let x = Tensor::rand([256, 2], (Kind::Float, Device::Cpu)) * 4.0 - 2.0;
        let a = ((x.select(1, 0) - x.select(1, 1)).tanh() * 0.6).view([256, 1]);
        let g = x.select(1, 0) + x.select(1, 1);
        let mut demos = Demos::new(&space(2, 10.0), &space(1, 1.0), 1000, Device::Cpu).unwrap();
        let v = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
        demos.push(&v(&x), &v(&a)).unwrap();
        Seeding {
            cfg: SeedConfig {
                pretrain_updates: updates,
                ..SeedConfig::default()
            },
            demos,
            returns: g,
            last_loss: 0.0,
            recalibrations: 0,
        }
    }

    #[test]
    fn pretraining_fits_the_actor_to_the_actions_and_the_critics_to_the_returns() {
        let _torch = volley_common::testing::torch();
        tch::manual_seed(0);
        let spec = SacSpec {
            obs_dim: 2,
            action_low: vec![-1.0],
            action_high: vec![1.0],
            hidden: vec![32, 32],
        };
        let cfg = SacConfig {
            hidden: vec![32, 32],
            batch_size: 64,
            ..SacConfig::default()
        };
        let mut sac = Sac::new(spec, cfg, Device::Cpu).unwrap();
        let s = seeding(1);
        let before = s.pretrain(&mut sac, 1).unwrap();
        let s = Seeding {
            cfg: SeedConfig {
                pretrain_updates: 800,
                ..SeedConfig::default()
            },
            ..s
        };
        let after = s.pretrain(&mut sac, 1).unwrap();
        assert!(
            after.action_mse < before.action_mse / 5.0 && after.q_loss < before.q_loss / 5.0,
            "action MSE {} -> {}, critic loss {} -> {}",
            before.action_mse,
            after.action_mse,
            before.q_loss,
            after.q_loss
        );
        // The targets start as the pretrained critics.
        assert_eq!(sac.qf1_target.to_bytes(), sac.qf1.to_bytes());
        assert_eq!(sac.qf2_target.to_bytes(), sac.qf2.to_bytes());
    }

    #[test]
    fn recalibration_steps_come_at_the_scheduled_rate_and_move_the_actor() {
        let _torch = volley_common::testing::torch();
        let spec = SacSpec {
            obs_dim: 2,
            action_low: vec![-1.0],
            action_high: vec![1.0],
            hidden: vec![16],
        };
        let cfg = SacConfig {
            hidden: vec![16],
            batch_size: 32,
            ..SacConfig::default()
        };
        let mut sac = Sac::new(spec, cfg, Device::Cpu).unwrap();
        let mut s = seeding(0);
        s.cfg.recalibrate_p = 0.5;
        s.cfg.recalibrate_updates = 2000;
        let before = sac.actor.to_bytes();
        // Over the first 1000 updates p falls from 0.5 to 0.25: about 375 steps.
        for u in 0..1000 {
            s.after_update(&mut sac, u, 7).unwrap();
        }
        let n = s.stats(1000).1;
        assert!((300..450).contains(&n), "{n} recalibration steps");
        assert_ne!(sac.actor.to_bytes(), before);
        // None once p is 0; the draws depend on the update only.
        for u in 2000..2100 {
            s.after_update(&mut sac, u, 7).unwrap();
        }
        assert_eq!(s.stats(2100).1, n);
        assert_eq!(s.stats(2100).0, 0.0);
    }

    #[test]
    fn rewards_to_go_restart_at_each_episode() {
        let r = rewards_to_go(&[1.0, 1.0, 1.0, 2.0, 2.0], &[0, 0, 0, 1, 1], 0.5);
        assert_eq!(r, vec![1.75, 1.5, 1.0, 3.0, 2.0]);
    }

    #[test]
    fn the_recalibration_probability_falls_linearly_to_zero() {
        let c = SeedConfig {
            recalibrate_p: 0.5,
            recalibrate_updates: 100,
            ..SeedConfig::default()
        };
        assert_eq!(c.recalibrate_p(0), 0.5);
        assert_eq!(c.recalibrate_p(50), 0.25);
        assert_eq!(c.recalibrate_p(100), 0.0);
        assert_eq!(c.recalibrate_p(1000), 0.0);
        let bad = SeedConfig {
            recalibrate_p: 1.5,
            ..c
        };
        assert!(bad.validate().unwrap_err().to_string().contains("recalibrate_p"));
    }
}
