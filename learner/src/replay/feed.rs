//! The replay source of the training loop: chunks to one- or n-step transitions,
//! the replay-ratio accounting, sampling.

use anyhow::Context;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::buffer::{ReplayBatch, ReplayBuffer, ReplayError, ReplayResult, Transitions};
use crate::validate::ValidChunk;

/// The one-step or `n`-step transitions of a chunk (time-major `[T, N]`), computed
/// within the chunk: from step `t` of env `e`, the rewards of steps `t..=end` summed
/// with discounts `gamma^k`, where `end` is the first of: the step that ends the
/// episode, the `n`-th step, the chunk's last step; the bootstrap observation is
/// `next_obs[end]` and the horizon `end - t + 1`. Truncations count as terminations
/// when `bootstrap_truncated` is false (the env has no final observation).
///
/// See [`NStep`] for what each transition holds.
pub fn nstep_transitions(
    rewards: &[f32],
    terminated: &[bool],
    truncated: &[bool],
    (steps, envs): (usize, usize),
    n: usize,
    gamma: f64,
    bootstrap_truncated: bool,
) -> NStep {
    let rows = steps * envs;
    let mut out = NStep {
        next_row: Vec::with_capacity(rows),
        ret: Vec::with_capacity(rows),
        parts: Vec::with_capacity(2 * rows),
        terminated: Vec::with_capacity(rows),
        horizon: Vec::with_capacity(rows),
    };
    for t in 0..steps {
        for e in 0..envs {
            let (mut pos, mut neg, mut disc, mut k) = (0f64, 0f64, 1f64, 0usize);
            let (end, done) = loop {
                let i = (t + k) * envs + e;
                let r = f64::from(rewards[i]);
                if r >= 0.0 {
                    pos += disc * r;
                } else {
                    neg += disc * r;
                }
                disc *= gamma;
                let done = terminated[i] || (truncated[i] && !bootstrap_truncated);
                if done || truncated[i] || k + 1 == n || t + k + 1 == steps {
                    break (i, done);
                }
                k += 1;
            };
            out.next_row.push(end as i64);
            out.ret.push((pos + neg) as f32);
            out.parts.extend([pos as f32, neg as f32]);
            out.terminated.push(if done { 1.0 } else { 0.0 });
            out.horizon.push((k + 1) as f32);
        }
    }
    out
}

/// The transitions of [`nstep_transitions`], in `[T * N]` row order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NStep {
    /// The row of `next_obs` each bootstraps from.
    pub next_row: Vec<i64>,
    /// The discounted reward sum.
    pub ret: Vec<f32>,
    /// `[rows, 2]`, row-major: the discounted sums of the positive and of the negative
    /// parts of the rewards.
    pub parts: Vec<f32>,
    /// 1 where the episode terminated (no bootstrap).
    pub terminated: Vec<f32>,
    /// Steps summed.
    pub horizon: Vec<f32>,
}

/// What an off-policy algorithm asks of its data.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySettings {
    /// Capacity in transitions.
    pub capacity: usize,
    /// Refuse storage over this many bytes.
    pub max_bytes: u64,
    /// Transitions per gradient update.
    pub batch_size: usize,
    /// Transitions stored before the first update.
    pub learning_starts: u64,
    /// Gradient updates per env step.
    pub replay_ratio: f64,
    /// Rewards each stored transition sums (1: one-step transitions).
    pub n_step: usize,
    /// Discount of the `n`-step sums.
    pub gamma: f64,
    /// Keep the sums of the positive and of the negative parts of the rewards
    /// (two reward streams, [`ReplayBatch::reward_parts`]).
    pub split_rewards: bool,
}

/// Counts gradient updates owed for env steps at `replay_ratio` updates per step,
/// carrying the fractional part (ratio 0.25: one update every 4 steps; ratio 2: two per
/// step).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateBudget {
    owed: f64,
}

impl UpdateBudget {
    /// Records `env_steps` new env steps; returns how many updates to run now.
    pub fn add_steps(&mut self, env_steps: u64, replay_ratio: f64) -> u64 {
        self.owed += env_steps as f64 * replay_ratio;
        let n = self.owed.floor();
        self.owed -= n;
        n as u64
    }

    /// Owes `n` updates again (they were not run).
    pub fn give_back(&mut self, n: u64) {
        self.owed += n as f64;
    }
}

/// The replay accounting a checkpoint keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayAccounting {
    /// Updates owed but not yet run.
    pub budget: UpdateBudget,
    /// Env steps stored since the buffer reached `learning_starts`.
    pub steps_learning: u64,
}

/// The replay source of the training loop.
#[derive(Debug)]
pub struct ReplayFeed {
    settings: ReplaySettings,
    buffer: ReplayBuffer,
    accounting: ReplayAccounting,
    /// Truncated episodes bootstrap (the env gives final observations).
    bootstrap_truncated: bool,
}

impl ReplayFeed {
    /// An empty feed for observations of `obs_dim` elements (`u8` images when
    /// `obs_u8`) and actions of `action_width` floats.
    pub fn new(
        settings: ReplaySettings,
        (obs_dim, obs_u8): (usize, bool),
        action_width: usize,
        device: Device,
        bootstrap_truncated: bool,
    ) -> ReplayResult<ReplayFeed> {
        if settings.n_step == 0 || settings.batch_size == 0 {
            return Err(ReplayError::BadSettings(
                "n_step and batch_size must be at least 1".into(),
            ));
        }
        let buffer = ReplayBuffer::with_parts(
            settings.capacity,
            obs_dim,
            action_width,
            obs_u8,
            settings.split_rewards,
            settings.max_bytes,
            device,
        )?;
        Ok(ReplayFeed {
            settings,
            buffer,
            accounting: ReplayAccounting::default(),
            bootstrap_truncated,
        })
    }

    pub fn buffer(&self) -> &ReplayBuffer {
        &self.buffer
    }

    pub fn settings(&self) -> &ReplaySettings {
        &self.settings
    }

    /// Stores a chunk's transitions; returns the gradient updates they buy.
    pub fn ingest(&mut self, c: &ValidChunk) -> anyhow::Result<u64> {
        let rows = c.rows();
        let nstep = nstep_transitions(
            &c.rewards_f32(),
            &c.terminated_bools(),
            &c.truncated_bools(),
            (c.steps, c.num_envs),
            self.settings.n_step,
            self.settings.gamma,
            self.bootstrap_truncated,
        );
        let flat = |t: Tensor| -> anyhow::Result<Tensor> { Ok(t.f_view([rows as i64, -1])?) };
        let next = flat(c.next_obs_tensor())?
            .f_index_select(0, &Tensor::f_from_slice(&nstep.next_row)?)?;
        let parts = if self.settings.split_rewards {
            Tensor::f_from_slice(&nstep.parts)?.f_view([rows as i64, 2])?
        } else {
            Tensor::f_zeros([rows as i64, 0], (Kind::Float, Device::Cpu))?
        };
        self.buffer
            .push(&Transitions {
                obs: &flat(c.obs_tensor())?,
                actions: &c.replay_actions_tensor(),
                rewards: &Tensor::f_from_slice(&nstep.ret)?,
                next_obs: &next,
                terminated: &Tensor::f_from_slice(&nstep.terminated)?,
                horizon: Some(&Tensor::f_from_slice(&nstep.horizon)?),
                reward_parts: Some(&parts),
            })
            .context("cannot store the chunk's transitions")?;
        if (self.buffer.len() as u64) < self.settings.learning_starts {
            return Ok(0);
        }
        self.accounting.steps_learning += rows as u64;
        Ok(self
            .accounting
            .budget
            .add_steps(rows as u64, self.settings.replay_ratio))
    }

    /// Returns `n` owed updates that were not run (the learner stopped mid-round).
    pub fn give_back(&mut self, n: u64) {
        self.accounting.budget.give_back(n);
    }

    /// A uniform batch of `batch_size` transitions.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> ReplayResult<ReplayBatch> {
        self.buffer.sample(self.settings.batch_size, rng)
    }

    /// Updates per env step stored since learning started, given the run's updates.
    pub fn ratio(&self, updates: u64) -> f64 {
        if self.accounting.steps_learning == 0 {
            0.0
        } else {
            updates as f64 / self.accounting.steps_learning as f64
        }
    }

    pub fn accounting(&self) -> ReplayAccounting {
        self.accounting
    }

    /// Restores the accounting of a checkpoint (and, when it has one and it fits, the
    /// buffer's rows).
    pub fn restore(
        &mut self,
        accounting: ReplayAccounting,
        rows: Option<&[u8]>,
    ) -> ReplayResult<()> {
        if let Some(bytes) = rows {
            self.buffer.load_bytes(bytes)?;
        }
        self.accounting = accounting;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nstep_transitions_stop_at_episode_ends_and_the_chunk_end() {
        // One env, 5 steps, n = 3, gamma 0.5. Step 2 terminates, step 3 is truncated.
        let r = [1.0, 2.0, 4.0, 8.0, 16.0];
        let term = [false, false, true, false, false];
        let trunc = [false, false, false, true, false];
        let s = nstep_transitions(&r, &term, &trunc, (5, 1), 3, 0.5, true);
        let (next, ret, done, h) = (s.next_row, s.ret, s.terminated, s.horizon);
        // t=0: 1 + 0.5*2 + 0.25*4, ends at the termination (row 2), horizon 3.
        // t=1: 2 + 0.5*4, terminated at row 2, horizon 2.
        // t=2: 4, terminated. t=3: 8, truncated: bootstraps from row 3, horizon 1.
        // t=4: 16, cut by the chunk end: bootstraps from row 4.
        assert_eq!(next, vec![2, 2, 2, 3, 4]);
        assert_eq!(ret, vec![3.0, 4.0, 4.0, 8.0, 16.0]);
        assert_eq!(done, vec![1.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(h, vec![3.0, 2.0, 1.0, 1.0, 1.0]);
        // Without final observations a truncation does not bootstrap.
        let s = nstep_transitions(&r, &term, &trunc, (5, 1), 3, 0.5, false);
        assert_eq!(s.terminated[3], 1.0);
        // n = 1 and two envs, time-major: every transition is its own step.
        let r2 = [1.0, 10.0, 2.0, 20.0];
        let s = nstep_transitions(&r2, &[false; 4], &[false; 4], (2, 2), 1, 0.9, true);
        let (next, ret, done, h) = (s.next_row, s.ret, s.terminated, s.horizon);
        assert_eq!(next, vec![0, 1, 2, 3]);
        assert_eq!(ret, vec![1.0, 10.0, 2.0, 20.0]);
        assert_eq!(done, vec![0.0; 4]);
        assert_eq!(h, vec![1.0; 4]);
        // n = 2 across envs: env 1's step 0 sums 10 + 0.9 * 20.
        let s = nstep_transitions(&r2, &[false; 4], &[false; 4], (2, 2), 2, 0.9, true);
        let (next, ret, h) = (s.next_row, s.ret, s.horizon);
        assert_eq!(next, vec![2, 3, 2, 3]);
        assert!((ret[1] - 28.0).abs() < 1e-5);
        assert_eq!(h, vec![2.0, 2.0, 1.0, 1.0]);
        // The parts of mixed-sign rewards are summed apart: 3 + 0.25 * 4 and 0.5 * -2.
        let s = nstep_transitions(
            &[3.0, -2.0, 4.0],
            &[false; 3],
            &[false; 3],
            (3, 1),
            3,
            0.5,
            true,
        );
        assert_eq!(&s.parts[..2], &[4.0, -1.0]);
        assert_eq!(s.ret[0], 3.0);
    }
}
