//! The replay source of the training loop: chunks to one- or n-step transitions,
//! the replay-ratio accounting, sampling.

use anyhow::Context;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use volley_common::env::Space;

use super::buffer::{ChunkTransitions, ReplayBatch, ReplayBuffer, ReplayError, ReplayResult};
use super::frames::FrameStack;
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
    /// Observations are stacks of this many frames (`u8` images of that many
    /// channels, newest last): store each frame once ([`super::frames`]). `None`:
    /// store whole observations.
    pub frame_stack: Option<usize>,
}

/// What one observation of the run is, for the replay buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObsFormat {
    /// `f32` vectors of this many elements.
    F32(usize),
    /// `u8` images, height x width x channels (HWC).
    Image {
        height: usize,
        width: usize,
        channels: usize,
    },
}

impl ObsFormat {
    /// The format of observations of `space`.
    pub fn of(space: &Space) -> ObsFormat {
        match *space {
            Space::Image {
                height,
                width,
                channels,
            } => ObsFormat::Image {
                height,
                width,
                channels,
            },
            ref s => ObsFormat::F32(s.flat_len()),
        }
    }

    /// Elements of one observation.
    pub fn len(&self) -> usize {
        match *self {
            ObsFormat::F32(n) => n,
            ObsFormat::Image {
                height,
                width,
                channels,
            } => height * width * channels,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
    /// An empty feed for observations of `obs` and actions of `action_width`
    /// floats. A `frame_stack` of `k` needs `u8` images of `k` channels.
    pub fn new(
        settings: ReplaySettings,
        obs: ObsFormat,
        action_width: usize,
        device: Device,
        bootstrap_truncated: bool,
    ) -> ReplayResult<ReplayFeed> {
        if settings.n_step == 0 || settings.batch_size == 0 {
            return Err(ReplayError::BadSettings(
                "n_step and batch_size must be at least 1".into(),
            ));
        }
        let s = &settings;
        let buffer = match (s.frame_stack, obs) {
            (None, _) => ReplayBuffer::with_parts(
                s.capacity,
                obs.len(),
                action_width,
                matches!(obs, ObsFormat::Image { .. }),
                s.split_rewards,
                s.max_bytes,
                device,
            )?,
            (
                Some(k),
                ObsFormat::Image {
                    height,
                    width,
                    channels,
                },
            ) if k == channels && k > 0 => ReplayBuffer::with_frames(
                s.capacity,
                FrameStack { height, width, k },
                action_width,
                s.split_rewards,
                s.max_bytes,
                device,
            )?,
            (Some(k), _) => {
                let what = match obs {
                    ObsFormat::F32(n) => format!("f32 vectors of {n} elements"),
                    ObsFormat::Image {
                        height,
                        width,
                        channels,
                    } => format!("u8 images {height}x{width}x{channels}"),
                };
                return Err(ReplayError::BadSettings(format!(
                    "frame_stack = {k} needs u8 image observations of {k} channels \
                     (k >= 1), these are {what}"
                )));
            }
        };
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
        let parts = if self.settings.split_rewards {
            Tensor::f_from_slice(&nstep.parts)?.f_view([rows as i64, 2])?
        } else {
            Tensor::f_zeros([rows as i64, 0], (Kind::Float, Device::Cpu))?
        };
        self.buffer
            .push_chunk(&ChunkTransitions {
                steps: c.steps,
                envs: c.num_envs,
                obs: &flat(c.obs_tensor())?,
                next_obs: &flat(c.next_obs_tensor())?,
                next_row: &nstep.next_row,
                actions: &c.replay_actions_tensor(),
                rewards: &Tensor::f_from_slice(&nstep.ret)?,
                terminated: &Tensor::f_from_slice(&nstep.terminated)?,
                horizon: &Tensor::f_from_slice(&nstep.horizon)?,
                reward_parts: &parts,
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
    use crate::replay::frames::synth::{self, Style};
    use crate::validate::{check_structure, ActionSpec, ActorSpec};
    use volley_common::agent::ChunkFields;
    use volley_proto::tensor::from_vec;
    use volley_proto::{Chunk, DType, PROTOCOL_VERSION};

    fn settings(frame_stack: Option<usize>) -> ReplaySettings {
        ReplaySettings {
            capacity: 200,
            max_bytes: u64::MAX,
            batch_size: 8,
            learning_starts: 0,
            replay_ratio: 1.0,
            n_step: 3,
            gamma: 0.99,
            split_rewards: true,
            frame_stack,
        }
    }

    const IMAGE: ObsFormat = ObsFormat::Image {
        height: 4,
        width: 3,
        channels: 4,
    };

    /// A synthetic chunk as an actor sends it.
    fn valid(c: &synth::Chunk) -> ValidChunk {
        let (t, n) = (c.steps, c.envs);
        let img = |x: &Tensor| {
            from_vec(
                &[t, n, 4, 3, 4],
                Vec::<u8>::try_from(x.reshape([-1])).unwrap(),
            )
            .unwrap()
        };
        let actions = Vec::<f32>::try_from(c.actions.reshape([-1])).unwrap();
        let chunk = Chunk {
            protocol_version: PROTOCOL_VERSION,
            actor_id: "a".into(),
            policy_version: 1,
            seq: 1,
            obs: Some(img(&c.obs)),
            actions: Some(from_vec(&[t, n], actions.iter().map(|&a| a as i64).collect()).unwrap()),
            logprobs: None,
            values: None,
            rewards: Some(from_vec(&[t, n], c.rewards.clone()).unwrap()),
            terminated: Some(from_vec(&[t, n], c.terminated.clone()).unwrap()),
            truncated: Some(from_vec(&[t, n], c.truncated.clone()).unwrap()),
            truncation_values: None,
            bootstrap_values: None,
            episode_returns: vec![],
            episode_lengths: vec![],
            next_obs: Some(img(&c.next_obs)),
            action_params: None,
        };
        let spec = ActorSpec {
            num_envs: n,
            chunk_steps: t,
            obs_shape: vec![4, 3, 4],
            obs_dtype: DType::U8,
            action: ActionSpec::Discrete { n: 6 },
            fields: ChunkFields {
                next_obs: true,
                ..ChunkFields::default()
            },
        };
        check_structure(chunk, &spec).unwrap()
    }

    #[test]
    fn a_frame_stacked_feed_stores_what_a_plain_one_does() {
        let _torch = volley_common::testing::torch();
        let stack = FrameStack {
            height: 4,
            width: 3,
            k: 4,
        };
        let style = Style {
            overlap: true,
            episode: 10,
            repeat: 0.1,
            glitch: 0.05,
        };
        let mut envs = synth::Envs::new(stack, 2, style, 40);
        let cpu = Device::Cpu;
        let mut plain = ReplayFeed::new(settings(None), IMAGE, 1, cpu, true).unwrap();
        let mut frames = ReplayFeed::new(settings(Some(4)), IMAGE, 1, cpu, true).unwrap();
        assert_eq!(frames.buffer().frame_stack(), Some(stack));
        assert!(plain.buffer().frame_stack().is_none());
        for _ in 0..6 {
            let c = valid(&envs.chunk(8));
            assert_eq!(plain.ingest(&c).unwrap(), frames.ingest(&c).unwrap());
        }
        let (p, f) = (plain.buffer(), frames.buffer());
        assert_eq!(p.len(), f.len());
        let all: Vec<i64> = (0..p.len() as i64).collect();
        let (a, b) = (p.gather(&all).unwrap(), f.gather(&all).unwrap());
        let u8s = |t: &Tensor| Vec::<u8>::try_from(t.reshape([-1])).unwrap();
        assert!(u8s(&a.obs) == u8s(&b.obs) && u8s(&a.next_obs) == u8s(&b.next_obs));
        for (x, y) in [
            (&a.actions, &b.actions),
            (&a.rewards, &b.rewards),
            (&a.terminated, &b.terminated),
            (&a.horizon, &b.horizon),
            (&a.reward_parts, &b.reward_parts),
        ] {
            assert!(x.equal(y));
        }
        // Each frame once, where whole observations take 2k = 8 a row.
        let (held, _) = f.frames().unwrap();
        assert!(held < 2 * f.len(), "{held} frames for {} rows", f.len());
    }

    #[test]
    fn frame_stacks_of_other_observations_are_bad_settings() {
        let _torch = volley_common::testing::torch();
        let cpu = Device::Cpu;
        let err = |k: usize, obs: ObsFormat| match ReplayFeed::new(
            settings(Some(k)),
            obs,
            1,
            cpu,
            true,
        ) {
            Err(ReplayError::BadSettings(m)) => m,
            other => panic!("{other:?}"),
        };
        // k is not the number of channels.
        let m = err(3, IMAGE);
        assert!(
            m.contains("frame_stack = 3") && m.contains("u8 images 4x3x4"),
            "{m}"
        );
        // f32 observations.
        let m = err(4, ObsFormat::F32(48));
        assert!(m.contains("f32 vectors of 48"), "{m}");
        let m = err(0, IMAGE);
        assert!(m.contains("frame_stack = 0"), "{m}");
        // Images of k channels are fine; so are whole observations of any kind.
        assert!(ReplayFeed::new(settings(Some(4)), IMAGE, 1, cpu, true).is_ok());
        assert!(ReplayFeed::new(settings(None), ObsFormat::F32(48), 1, cpu, true).is_ok());
        let space = Space::Image {
            height: 84,
            width: 84,
            channels: 4,
        };
        assert_eq!(
            ObsFormat::of(&space),
            ObsFormat::Image {
                height: 84,
                width: 84,
                channels: 4
            }
        );
        assert_eq!(ObsFormat::of(&space).len(), 84 * 84 * 4);
    }

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
