//! Split Q-learning (Lin, Bouneffouf and Cecchi 2019, "Split Q Learning:
//! Reinforcement Learning with Two-Stream Rewards", arXiv 1906.11286) as a deep,
//! double Q-learner on the replay and target machinery of Double DQN
//! ([`super::ddqn`]).
//!
//! Two Q functions learn from the two streams of the reward: `Q+` from its positive
//! part `r+ = max(r, 0)`, `Q-` from its negative part `r- = min(r, 0)`. The paper's
//! tabular rule, with the four parameters under the names the Ms. Pac-Man project's
//! users know (reward/punish weight `w`, reward/punish memory `lambda`),
//!
//! `Q+(s, a) <- lambda+ Q+(s, a) + alpha (w+ r+ + gamma V+(s') - Q+(s, a))`,
//!
//! is, with a step size of one, a regression of `Q+(s, a)` on the target
//!
//! `y+ = w+ r+ + gamma (1 - d) Q+_target(s', a*) - (1 - lambda+) Q+_target(s, a)`
//!
//! (and the same for `Q-`): the memory factor forgets a share of the old estimate.
//! Each stream is fitted with a Huber loss, its own Adam and grad-norm clipping.
//! Actors act on `Q+ + Q-`, epsilon-greedily (`volley_common::nn::splitq`).
//!
//! The next action `a*` is the greedy action of that combined policy by the online
//! networks, `argmax_a Q+(s', a) + Q-(s', a)` (`next_action = "sum"`): the value of
//! the policy the agent follows, so that with unit weights and memories Split-Q is
//! Double DQN on `r = r+ + r-`. The Ms. Pac-Man project takes each stream's own
//! argmax and applies the memory term to non-terminal transitions only:
//! `next_action = "stream"` selects per stream; the memory term here applies to
//! every transition, as the tabular rule does. With `n_step > 1` each stream sums
//! its own part of the rewards (the replay keeps the two sums apart).
//!
//! Layout: the hyperparameters ([`SplitqConfig`]: Double DQN's plus the four of the
//! paper, which default to 1, plain double Q-learning), the networks
//! ([`SplitQNet`]), the update ([`split_targets`], [`Splitq::update`]), the training
//! loop's view ([`build`]).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};
use volley_common::nn::ddqn::{gather_actions, QNetwork};
use volley_common::nn::splitq::SplitQNet;
use volley_common::nn::{Adam, ModelSpec};

use super::ddqn::{bootstrap, q_spec, DdqnConfig};
use super::{Algorithm, Batch, BuildContext, Built, Source, Stats, UpdateContext};
use crate::checkpoint::{pack_state, unpack_state};
use crate::replay::{ReplayBatch, ReplaySettings};

// ---------------------------------------------------------------------------------
// Hyperparameters
// ---------------------------------------------------------------------------------

/// Split-Q hyperparameters: Double DQN's (the same keys, in `[splitq]`) and the
/// paper's four.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplitqConfig {
    /// Weight of the positive reward stream (`w+`).
    pub reward_weight: f64,
    /// Weight of the negative reward stream (`w-`).
    pub punish_weight: f64,
    /// Memory of `Q+` (`lambda+`): 1 keeps the whole old estimate.
    pub reward_memory: f64,
    /// Memory of `Q-` (`lambda-`).
    pub punish_memory: f64,
    /// How the next action is chosen: `sum` (the combined policy's greedy action) or
    /// `stream` (each stream's own, as the Ms. Pac-Man project).
    pub next_action: String,
    #[serde(flatten)]
    pub q: DdqnConfig,
}

impl Default for SplitqConfig {
    fn default() -> Self {
        SplitqConfig {
            reward_weight: 1.0,
            punish_weight: 1.0,
            reward_memory: 1.0,
            punish_memory: 1.0,
            next_action: "sum".into(),
            q: DdqnConfig::default(),
        }
    }
}

impl SplitqConfig {
    pub fn validate(&self) -> Result<()> {
        self.q.validate("splitq")?;
        for (name, v) in [
            ("reward_weight", self.reward_weight),
            ("punish_weight", self.punish_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("splitq.{name} must be >= 0, got {v}");
            }
        }
        for (name, v) in [
            ("reward_memory", self.reward_memory),
            ("punish_memory", self.punish_memory),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("splitq.{name} must be in [0, 1], got {v}");
            }
        }
        if !["sum", "stream"].contains(&self.next_action.as_str()) {
            bail!(
                "splitq.next_action = '{}': expected sum or stream",
                self.next_action
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// The update
// ---------------------------------------------------------------------------------

/// The two streams' targets of `batch`, `([B], [B])`, without gradient (module docs).
pub fn split_targets(
    cfg: &SplitqConfig,
    online: &SplitQNet,
    target: &SplitQNet,
    batch: &ReplayBatch,
) -> Result<(Tensor, Tensor)> {
    let _guard = tch::no_grad_guard();
    let device = online.positive.device();
    let next = batch.next_obs.f_to_device(device)?;
    let obs = batch.obs.f_to_device(device)?;
    let actions = batch.actions.f_to_device(device)?.f_select(1, 0)?.f_round()?;
    let (on_p, on_n) = online.forward(&next)?;
    let (next_p, next_n) = target.forward(&next)?;
    let (now_p, now_n) = target.forward(&obs)?;
    let (best_p, best_n) = if cfg.next_action == "stream" {
        (on_p.f_argmax(1, false)?, on_n.f_argmax(1, false)?)
    } else {
        let best = on_p.f_add(&on_n)?.f_argmax(1, false)?;
        (best.shallow_clone(), best)
    };
    if batch.reward_parts.size().get(1) != Some(&2) {
        bail!("splitq needs a replay that keeps the positive and negative reward parts");
    }
    let parts = batch.reward_parts.f_to_device(device)?.f_to_kind(Kind::Float)?;
    let stream = |part: Tensor,
                  weight: f64,
                  memory: f64,
                  next_q: &Tensor,
                  best: &Tensor,
                  now_q: &Tensor|
     -> Result<Tensor> {
        let y = bootstrap(
            &part.f_mul_scalar(weight)?,
            batch,
            &gather_actions(next_q, best)?,
            cfg.q.gamma,
            device,
        )?;
        Ok(y.f_sub(&gather_actions(now_q, &actions)?.f_mul_scalar(1.0 - memory)?)?)
    };
    let y_p = stream(
        parts.f_select(1, 0)?,
        cfg.reward_weight,
        cfg.reward_memory,
        &next_p,
        &best_p,
        &now_p,
    )?;
    let y_n = stream(
        parts.f_select(1, 1)?,
        cfg.punish_weight,
        cfg.punish_memory,
        &next_n,
        &best_n,
        &now_n,
    )?;
    Ok((y_p, y_n))
}

/// Split-Q's networks and optimizers.
#[derive(Debug)]
pub struct Splitq {
    pub cfg: SplitqConfig,
    pub online: SplitQNet,
    pub target: SplitQNet,
    /// One Adam per stream.
    adam_p: Adam,
    adam_n: Adam,
    updates: u64,
}

/// What one update logged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitqStats {
    pub reward_loss: f64,
    pub punish_loss: f64,
    /// Mean of `Q+(s, a)` and of `Q-(s, a)` over the batch's actions.
    pub q_reward_mean: f64,
    pub q_punish_mean: f64,
}

impl Splitq {
    pub fn new(spec: ModelSpec, cfg: SplitqConfig, device: Device) -> Result<Splitq> {
        cfg.validate()?;
        let online = SplitQNet::new(spec.clone(), device)?;
        let mut target = SplitQNet::new(spec, device)?;
        target.copy_from(&online)?;
        let adam_p = cfg.q.adam(online.positive.parameters())?;
        let adam_n = cfg.q.adam(online.negative.parameters())?;
        Ok(Splitq {
            cfg,
            online,
            target,
            adam_p,
            adam_n,
            updates: 0,
        })
    }

    /// One update of both streams, then the target update when due.
    pub fn update(&mut self, batch: &ReplayBatch) -> Result<SplitqStats> {
        batch.rows()?;
        let (y_p, y_n) = split_targets(&self.cfg, &self.online, &self.target, batch)?;
        let device = self.online.positive.device();
        let obs = batch.obs.f_to_device(device)?;
        let actions = batch.actions.f_to_device(device)?.f_select(1, 0)?.f_round()?;
        let q = self.cfg.q.clone();
        let fit = |net: &QNetwork, adam: &mut Adam, y: &Tensor| -> Result<(f64, f64)> {
            let pred = gather_actions(&net.forward(&obs)?, &actions)?;
            let loss = pred.f_huber_loss(y, Reduction::Mean, q.huber_delta)?;
            adam.zero_grad();
            loss.f_backward()?;
            if q.max_grad_norm > 0.0 {
                let _ = adam.clip_grad_norm(q.max_grad_norm)?;
            }
            adam.step(q.lr)?;
            Ok((
                loss.f_double_value(&[])?,
                pred.f_mean(Kind::Float)?.f_double_value(&[])?,
            ))
        };
        let (reward_loss, q_reward_mean) = fit(&self.online.positive, &mut self.adam_p, &y_p)?;
        let (punish_loss, q_punish_mean) = fit(&self.online.negative, &mut self.adam_n, &y_n)?;
        self.updates += 1;
        if self.updates % self.cfg.q.target_update_every == 0 {
            self.target.soft_update_from(&self.online, self.cfg.q.tau)?;
        }
        Ok(SplitqStats {
            reward_loss,
            punish_loss,
            q_reward_mean,
            q_punish_mean,
        })
    }
}

// ---------------------------------------------------------------------------------
// The training loop's view
// ---------------------------------------------------------------------------------

const STATE_MAGIC: &[u8; 4] = b"VLYT";

const STATS: &[(&str, &str)] = &[
    ("reward_loss", "Huber loss of the positive stream Q+"),
    ("punish_loss", "Huber loss of the negative stream Q-"),
    ("q_reward_mean", "mean Q+ of the last update's batch"),
    ("q_punish_mean", "mean Q- of the last update's batch"),
    ("q_mean", "mean Q+ + Q- of the last update's batch"),
];

impl Algorithm for Splitq {
    fn source(&self) -> Source {
        Source::Replay(ReplaySettings {
            split_rewards: true,
            ..self.cfg.q.replay()
        })
    }

    fn update(&mut self, batch: &Batch<'_>, _ctx: &UpdateContext<'_>) -> Result<Stats> {
        let s = Splitq::update(self, batch.replay("splitq")?)?;
        Ok(vec![
            ("reward_loss", s.reward_loss),
            ("punish_loss", s.punish_loss),
            ("q_reward_mean", s.q_reward_mean),
            ("q_punish_mean", s.q_punish_mean),
            ("q_mean", s.q_reward_mean + s.q_punish_mean),
        ])
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
                &self.adam_p.state_to_bytes(),
                &self.adam_n.state_to_bytes(),
                &self.updates.to_le_bytes(),
            ],
        )
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let parts = unpack_state(STATE_MAGIC, bytes, 5, "splitq")?;
        let mut fresh = Splitq::new(
            self.online.spec().clone(),
            self.cfg.clone(),
            self.online.positive.device(),
        )?;
        fresh.online.load_bytes(parts[0])?;
        fresh.target.load_bytes(parts[1])?;
        fresh.adam_p.load_state_bytes(parts[2])?;
        fresh.adam_n.load_state_bytes(parts[3])?;
        let n: [u8; 8] = parts[4].try_into().map_err(|_| {
            anyhow::anyhow!("splitq state: an update count of {} bytes", parts[4].len())
        })?;
        fresh.updates = u64::from_le_bytes(n);
        *self = fresh;
        Ok(())
    }

    fn stats_help(&self) -> &'static [(&'static str, &'static str)] {
        STATS
    }
}

/// Split-Q for a run: `[splitq]` and `[model]`, a discrete action space.
pub fn build(ctx: BuildContext<'_>) -> Result<Built> {
    let cfg: SplitqConfig = ctx.section()?;
    cfg.validate()?;
    let spec = q_spec(&ctx)?;
    let splitq = Splitq::new(spec.clone(), cfg.clone(), ctx.device)?;
    Ok(Built {
        section: super::section_of(&cfg)?,
        spec_json: serde_json::to_string(&spec)?,
        explore_json: serde_json::to_string(&cfg.q.schedule())?,
        algorithm: Box::new(splitq),
    })
}

#[cfg(test)]
mod tests {
    use super::super::ddqn::tests::{batch, constant_q, spec};
    use super::super::ddqn::DdqnConfig;
    use super::*;

    fn nets(
        online: (&[f32], &[f32]),
        target: (&[f32], &[f32]),
    ) -> (SplitQNet, SplitQNet) {
        let on = SplitQNet::new(spec(), Device::Cpu).unwrap();
        let tg = SplitQNet::new(spec(), Device::Cpu).unwrap();
        constant_q(&on.positive, online.0);
        constant_q(&on.negative, online.1);
        constant_q(&tg.positive, target.0);
        constant_q(&tg.negative, target.1);
        (on, tg)
    }

    #[test]
    fn the_split_targets_by_hand() {
        let _torch = volley_common::testing::torch();
        // Online Q+ = [0, 2, 1], Q- = [0, -3, 0]: the sum [0, -1, 1] picks action 2,
        // Q+ alone picks 1, Q- alone picks 0 (ties: the first).
        // Target Q+ = [1, 4, 2], Q- = [-1, -2, -0.5].
        let (on, tg) = nets(
            (&[0.0, 2.0, 1.0], &[0.0, -3.0, 0.0]),
            (&[1.0, 4.0, 2.0], &[-1.0, -2.0, -0.5]),
        );
        // Rows: reward 2 (action 0, not terminal); reward -1 (action 1, terminal).
        let b = batch(&[2.0, -1.0], &[0.0, 1.0], &[0.0, 1.0]);
        let cfg = SplitqConfig {
            reward_weight: 0.5,
            punish_weight: 2.0,
            reward_memory: 0.75,
            punish_memory: 0.5,
            q: DdqnConfig {
                gamma: 0.9,
                ..DdqnConfig::default()
            },
            ..SplitqConfig::default()
        };
        let (yp, yn) = split_targets(&cfg, &on, &tg, &b).unwrap();
        let (yp, yn) = (
            Vec::<f32>::try_from(yp).unwrap(),
            Vec::<f32>::try_from(yn).unwrap(),
        );
        // Row 0, "sum" picks a* = 2:
        //   y+ = 0.5 * 2 + 0.9 * 2 - (1 - 0.75) * Q+_t(s, 0) = 1 + 1.8 - 0.25 = 2.55
        //   y- = 2 * 0 + 0.9 * (-0.5) - (1 - 0.5) * Q-_t(s, 0) = -0.45 + 0.5 = 0.05
        // Row 1, terminal, action 1:
        //   y+ = 0 - 0.25 * 4 = -1;  y- = 2 * (-1) - 0.5 * (-2) = -1
        let want = ([2.55, -1.0], [0.05, -1.0]);
        for i in 0..2 {
            assert!((yp[i] - want.0[i]).abs() < 1e-5, "y+ {yp:?}");
            assert!((yn[i] - want.1[i]).abs() < 1e-5, "y- {yn:?}");
        }
        // Per-stream selection: Q+ picks 1 (target 4), Q- picks 0 (target -1).
        let stream = SplitqConfig {
            next_action: "stream".into(),
            ..cfg.clone()
        };
        let (yp, yn) = split_targets(&stream, &on, &tg, &b).unwrap();
        assert!((yp.double_value(&[0]) - (1.0 + 0.9 * 4.0 - 0.25)).abs() < 1e-5);
        assert!((yn.double_value(&[0]) - (-0.9 + 0.5)).abs() < 1e-5);
    }

    #[test]
    fn unit_weights_and_memories_are_double_dqn_on_the_sum() {
        let _torch = volley_common::testing::torch();
        tch::manual_seed(3);
        let on = SplitQNet::new(spec(), Device::Cpu).unwrap();
        let tg = SplitQNet::new(spec(), Device::Cpu).unwrap();
        let b = batch(&[1.5, -2.0, 0.0, 3.0], &[0.0, 0.0, 1.0, 0.0], &[0.0, 1.0, 2.0, 0.0]);
        let cfg = SplitqConfig::default();
        let (yp, yn) = split_targets(&cfg, &on, &tg, &b).unwrap();
        // Double DQN on Q = Q+ + Q-: a* by the online sum, evaluated by the target sum.
        let device = Device::Cpu;
        let _g = tch::no_grad_guard();
        let a = on.combined(&b.next_obs).unwrap().argmax(1, false);
        let q_next = gather_actions(&tg.combined(&b.next_obs).unwrap(), &a).unwrap();
        let want = bootstrap(&b.rewards, &b, &q_next, cfg.q.gamma, device).unwrap();
        let got = yp + yn;
        assert!((got - want).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn both_streams_learn_and_bad_settings_are_refused() {
        let _torch = volley_common::testing::torch();
        tch::manual_seed(4);
        let cfg = SplitqConfig {
            q: DdqnConfig {
                gamma: 0.0,
                lr: 1e-2,
                ..DdqnConfig::default()
            },
            ..SplitqConfig::default()
        };
        let mut s = Splitq::new(spec(), cfg.clone(), Device::Cpu).unwrap();
        let b = batch(&[1.0, -1.0, 0.5, -2.0], &[0.0; 4], &[0.0, 1.0, 2.0, 1.0]);
        let first = s.update(&b).unwrap();
        let mut last = first;
        for _ in 0..300 {
            last = s.update(&b).unwrap();
        }
        assert!(last.reward_loss < 0.1 * first.reward_loss.max(1e-3));
        assert!(last.punish_loss < 0.1 * first.punish_loss.max(1e-3));
        let state = Algorithm::state(&s);
        let mut t = Splitq::new(spec(), cfg.clone(), Device::Cpu).unwrap();
        t.load_state(&state).unwrap();
        assert_eq!(Algorithm::state(&t), state);
        for bad in [
            SplitqConfig {
                reward_memory: 1.5,
                ..cfg.clone()
            },
            SplitqConfig {
                next_action: "max".into(),
                ..cfg.clone()
            },
        ] {
            assert!(bad.validate().is_err());
        }
    }
}
