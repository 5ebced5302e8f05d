//! The experience replay buffer of the off-policy learners (Lin 1992; Mnih et al.
//! 2015), as SAC (Haarnoja et al. 2018) uses it: a ring of the last `capacity`
//! transitions `(obs, action, reward, next_obs, terminated)` with uniform sampling
//! with replacement (Stable-Baselines3's `ReplayBuffer`, which CleanRL uses).
//!
//! Storage is preallocated `f32` tensors of `capacity` rows on one device, so a batch
//! is an `index_select` there: on the GPU when the buffer fits in its memory,
//! otherwise in host memory (the constructor falls back to the CPU when the
//! allocation on the GPU fails) and each batch is copied to the training device.
//!
//! Time limits: a truncated transition is stored with `terminated = false` and the
//! real last observation of the episode as `next_obs`, so its target bootstraps; a
//! terminated one is stored with `terminated = true` and its target does not
//! ([`ReplayBuffer::push_env_step`] builds both from a `StepBatch`).

use rand::Rng;
use tch::{Device, Kind, Tensor};
use volley_common::env::StepBatch;

/// Errors of the replay buffer: a capacity over the memory bound, inconsistent inputs
/// or a torch failure.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replay buffer of {capacity} transitions needs {needed} bytes, over the bound of {bound} bytes")]
    TooLarge {
        capacity: usize,
        needed: u64,
        bound: u64,
    },
    #[error("bad replay settings: {0}")]
    BadSettings(String),
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("torch error: {0}")]
    Torch(#[from] tch::TchError),
}

pub type ReplayResult<T> = Result<T, ReplayError>;

/// A sampled minibatch, on the buffer's sampling device.
#[derive(Debug)]
pub struct ReplayBatch {
    /// `[B, obs_dim]`.
    pub obs: Tensor,
    /// `[B, action_dim]`.
    pub actions: Tensor,
    /// `[B]`.
    pub rewards: Tensor,
    /// `[B, obs_dim]`: the observation after the action (the episode's real last one
    /// when it ended).
    pub next_obs: Tensor,
    /// `[B]`, 1.0 where the episode terminated (no bootstrap), else 0.0.
    pub terminated: Tensor,
}

impl ReplayBatch {
    /// Rows of the batch after checking that every field has them and the expected
    /// rank.
    pub fn rows(&self) -> ReplayResult<i64> {
        let b = self.obs.size().first().copied().unwrap_or(0);
        let checks = [
            ("obs", &self.obs, 2),
            ("actions", &self.actions, 2),
            ("rewards", &self.rewards, 1),
            ("next_obs", &self.next_obs, 2),
            ("terminated", &self.terminated, 1),
        ];
        for (name, t, rank) in checks {
            let s = t.size();
            if s.len() != rank || s[0] != b {
                return Err(ReplayError::BadInput(format!(
                    "batch {name} has shape {s:?}, expected {b} rows of rank {rank}"
                )));
            }
        }
        if b == 0 {
            return Err(ReplayError::BadInput("empty batch".into()));
        }
        Ok(b)
    }
}

/// A ring buffer of transitions in preallocated tensors.
#[derive(Debug)]
pub struct ReplayBuffer {
    capacity: usize,
    obs_dim: usize,
    action_dim: usize,
    /// Where the rows live (the requested device, or the CPU after a failed GPU
    /// allocation).
    storage: Device,
    /// Where [`ReplayBuffer::sample`] returns its batches (the requested device).
    device: Device,
    obs: Tensor,
    actions: Tensor,
    rewards: Tensor,
    next_obs: Tensor,
    terminated: Tensor,
    /// Rows written so far, up to `capacity`.
    len: usize,
    /// Next row to write.
    pos: usize,
}

impl ReplayBuffer {
    /// Bytes of the storage for `capacity` transitions: `4 (2 obs_dim + action_dim + 2)`
    /// per row.
    pub fn bytes_for(capacity: usize, obs_dim: usize, action_dim: usize) -> u64 {
        let per_row = 4 * (2 * obs_dim as u64 + action_dim as u64 + 2);
        per_row.saturating_mul(capacity as u64)
    }

    /// An empty buffer of `capacity` rows, refused when its storage would exceed
    /// `max_bytes`. The rows live on `device` when they can be allocated there
    /// (otherwise, for a GPU, in host memory); batches are returned on `device`.
    pub fn new(
        capacity: usize,
        obs_dim: usize,
        action_dim: usize,
        max_bytes: u64,
        device: Device,
    ) -> ReplayResult<ReplayBuffer> {
        if capacity == 0 || obs_dim == 0 || action_dim == 0 {
            return Err(ReplayError::BadSettings(format!(
                "capacity {capacity}, observation size {obs_dim} and action size \
                 {action_dim} must all be at least 1"
            )));
        }
        let needed = Self::bytes_for(capacity, obs_dim, action_dim);
        if needed > max_bytes {
            return Err(ReplayError::TooLarge {
                capacity,
                needed,
                bound: max_bytes,
            });
        }
        let alloc = |d: Device| -> Result<[Tensor; 5], tch::TchError> {
            let (c, o, a) = (capacity as i64, obs_dim as i64, action_dim as i64);
            let opts = (Kind::Float, d);
            Ok([
                Tensor::f_zeros([c, o], opts)?,
                Tensor::f_zeros([c, a], opts)?,
                Tensor::f_zeros([c], opts)?,
                Tensor::f_zeros([c, o], opts)?,
                Tensor::f_zeros([c], opts)?,
            ])
        };
        let (storage, [obs, actions, rewards, next_obs, terminated]) = match alloc(device) {
            Ok(t) => (device, t),
            Err(_) if device != Device::Cpu => (Device::Cpu, alloc(Device::Cpu)?),
            Err(e) => return Err(e.into()),
        };
        Ok(ReplayBuffer {
            capacity,
            obs_dim,
            action_dim,
            storage,
            device,
            obs,
            actions,
            rewards,
            next_obs,
            terminated,
            len: 0,
            pos: 0,
        })
    }

    /// Transitions stored (at most `capacity`).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held by the storage tensors.
    pub fn bytes(&self) -> u64 {
        Self::bytes_for(self.capacity, self.obs_dim, self.action_dim)
    }

    /// Where the rows are stored.
    pub fn storage_device(&self) -> Device {
        self.storage
    }

    /// Where sampled batches are returned.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Appends `n` transitions at once (`obs`, `next_obs` `[n, obs_dim]`, `actions`
    /// `[n, action_dim]`, `rewards` and `terminated` `[n]`, any float or bool kind,
    /// any device), overwriting the oldest rows once full. With `n > capacity` only
    /// the last `capacity` rows are kept.
    pub fn push_batch(
        &mut self,
        obs: &Tensor,
        actions: &Tensor,
        rewards: &Tensor,
        next_obs: &Tensor,
        terminated: &Tensor,
    ) -> ReplayResult<()> {
        let n = obs.size().first().copied().unwrap_or(0);
        let shapes = [
            ("obs", obs, vec![n, self.obs_dim as i64]),
            ("actions", actions, vec![n, self.action_dim as i64]),
            ("rewards", rewards, vec![n]),
            ("next_obs", next_obs, vec![n, self.obs_dim as i64]),
            ("terminated", terminated, vec![n]),
        ];
        for (name, t, want) in &shapes {
            if t.size() != *want {
                return Err(ReplayError::BadInput(format!(
                    "{name} of shape {:?}, expected {want:?}",
                    t.size()
                )));
            }
        }
        if n == 0 {
            return Ok(());
        }
        let _guard = tch::no_grad_guard();
        // Only the newest `capacity` rows can survive.
        let cap = self.capacity as i64;
        let skip = (n - cap).max(0);
        let keep = n - skip;
        let prep = |t: &Tensor| -> ReplayResult<Tensor> {
            Ok(t.f_narrow(0, skip, keep)?
                .f_to_device(self.storage)?
                .f_to_kind(Kind::Float)?)
        };
        let src = [
            prep(obs)?,
            prep(actions)?,
            prep(rewards)?,
            prep(next_obs)?,
            prep(terminated)?,
        ];
        let pos = ((self.pos as i64) + skip) % cap;
        // Up to two contiguous pieces: [pos, cap) then [0, rest).
        let first = keep.min(cap - pos);
        let rest = keep - first;
        let dst = [
            &self.obs,
            &self.actions,
            &self.rewards,
            &self.next_obs,
            &self.terminated,
        ];
        for (d, s) in dst.iter().zip(&src) {
            d.f_narrow(0, pos, first)?
                .f_copy_(&s.f_narrow(0, 0, first)?)?;
            if rest > 0 {
                d.f_narrow(0, 0, rest)?
                    .f_copy_(&s.f_narrow(0, first, rest)?)?;
            }
        }
        self.pos = ((pos + keep) % cap) as usize;
        self.len = (self.len + n as usize).min(self.capacity);
        Ok(())
    }

    /// Appends the transitions of one vector-env step: `obs` is the observation the
    /// actions were taken in (`num_envs * obs_dim`), `actions` the actions
    /// (`num_envs * action_dim`) and `step` what the env returned. Where an episode
    /// ended, `next_obs` is its real last observation (`step.final_obs`), and only
    /// termination (not truncation) sets `terminated`.
    pub fn push_env_step(
        &mut self,
        obs: &[f32],
        actions: &[f32],
        step: &StepBatch,
    ) -> ReplayResult<()> {
        let n = step.num_envs;
        if step.obs_len != self.obs_dim {
            return Err(ReplayError::BadInput(format!(
                "env observations of {} elements, the buffer stores {}",
                step.obs_len, self.obs_dim
            )));
        }
        if obs.len() != n * self.obs_dim || actions.len() != n * self.action_dim {
            return Err(ReplayError::BadInput(format!(
                "{} observation and {} action values for {n} envs of sizes {} and {}",
                obs.len(),
                actions.len(),
                self.obs_dim,
                self.action_dim
            )));
        }
        let cur = step.obs.as_f32().ok_or_else(|| {
            ReplayError::BadInput("the replay buffer stores f32 observations only".into())
        })?;
        let ended = (0..n).any(|i| step.terminated[i] || step.truncated[i]);
        let mut next = cur.to_vec();
        if ended {
            let fin = match step.final_obs.as_f32() {
                Some(f) if step.has_final_obs && f.len() == cur.len() => f,
                _ => {
                    return Err(ReplayError::BadInput(
                        "an episode ended but the env gave no final observation".into(),
                    ))
                }
            };
            let d = self.obs_dim;
            for i in (0..n).filter(|&i| step.terminated[i] || step.truncated[i]) {
                next[i * d..(i + 1) * d].copy_from_slice(&fin[i * d..(i + 1) * d]);
            }
        }
        let term: Vec<f32> = step
            .terminated
            .iter()
            .map(|&t| if t { 1.0 } else { 0.0 })
            .collect();
        let (n, od, ad) = (n as i64, self.obs_dim as i64, self.action_dim as i64);
        self.push_batch(
            &Tensor::f_from_slice(obs)?.f_view([n, od])?,
            &Tensor::f_from_slice(actions)?.f_view([n, ad])?,
            &Tensor::f_from_slice(&step.reward)?,
            &Tensor::f_from_slice(&next)?.f_view([n, od])?,
            &Tensor::f_from_slice(&term)?,
        )
    }

    /// `batch` transitions drawn uniformly with replacement from the stored ones
    /// (indices from `rng`), on [`ReplayBuffer::device`].
    pub fn sample<R: Rng + ?Sized>(&self, batch: usize, rng: &mut R) -> ReplayResult<ReplayBatch> {
        if self.len == 0 {
            return Err(ReplayError::BadInput(
                "sampling an empty replay buffer".into(),
            ));
        }
        if batch == 0 {
            return Err(ReplayError::BadInput("sampling a batch of 0".into()));
        }
        let idx: Vec<i64> = (0..batch)
            .map(|_| rng.random_range(0..self.len as i64))
            .collect();
        self.gather(&idx)
    }

    /// The rows at `idx` (each below [`ReplayBuffer::len`]), on the sampling device.
    pub fn gather(&self, idx: &[i64]) -> ReplayResult<ReplayBatch> {
        if let Some(&bad) = idx.iter().find(|&&i| i < 0 || i >= self.len as i64) {
            return Err(ReplayError::BadInput(format!(
                "row {bad} out of the {} stored",
                self.len
            )));
        }
        let _guard = tch::no_grad_guard();
        let idx = Tensor::f_from_slice(idx)?.f_to_device(self.storage)?;
        let pick = |t: &Tensor| -> ReplayResult<Tensor> {
            Ok(t.f_index_select(0, &idx)?.f_to_device(self.device)?)
        };
        Ok(ReplayBatch {
            obs: pick(&self.obs)?,
            actions: pick(&self.actions)?,
            rewards: pick(&self.rewards)?,
            next_obs: pick(&self.next_obs)?,
            terminated: pick(&self.terminated)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use volley_common::env::{EnvRng, ObsBuf};

    fn f32s(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.to_kind(Kind::Float).reshape([-1])).unwrap()
    }

    /// Pushes rows `start..start + n` whose every field encodes the row number.
    fn push_rows(buf: &mut ReplayBuffer, start: i64, n: i64) {
        let ids = Tensor::arange_start(start, start + n, (Kind::Float, Device::Cpu));
        let col = ids.view([n, 1]);
        buf.push_batch(
            &col.repeat([1, 3]),
            &(&col * 10.0),
            &ids,
            &(&col.repeat([1, 3]) + 0.5),
            &ids.remainder(2),
        )
        .unwrap();
    }

    #[test]
    fn capacity_wraps_around_keeping_the_newest_rows() {
        tch::set_num_threads(1);
        let mut buf = ReplayBuffer::new(5, 3, 1, u64::MAX, Device::Cpu).unwrap();
        assert!(buf.is_empty());
        push_rows(&mut buf, 0, 3);
        assert_eq!(buf.len(), 3);
        assert_eq!(f32s(&buf.rewards)[..3], [0.0, 1.0, 2.0]);
        // Crosses the end: rows 3, 4 at the end, 5, 6 at the start.
        push_rows(&mut buf, 3, 4);
        assert_eq!(buf.len(), 5);
        assert_eq!(f32s(&buf.rewards), [5.0, 6.0, 2.0, 3.0, 4.0]);
        assert_eq!(buf.pos, 2);
        // More rows than the capacity: only the last 5 of 7 survive, in ring order.
        push_rows(&mut buf, 7, 7);
        assert_eq!(buf.len(), 5);
        let r = f32s(&buf.rewards);
        let mut sorted = r.clone();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(sorted, [9.0, 10.0, 11.0, 12.0, 13.0]);
        // The next write overwrites the oldest row (9).
        let oldest = r.iter().position(|&x| x == 9.0).unwrap();
        assert_eq!(buf.pos, oldest);
        // Every field of a row stays together.
        let b = buf.gather(&[0, 1, 2, 3, 4]).unwrap();
        let (o, a, no, t) = (
            f32s(&b.obs),
            f32s(&b.actions),
            f32s(&b.next_obs),
            f32s(&b.terminated),
        );
        for (i, &rw) in f32s(&b.rewards).iter().enumerate() {
            assert_eq!(o[3 * i..3 * i + 3], [rw; 3]);
            assert_eq!(no[3 * i], rw + 0.5);
            assert_eq!(a[i], rw * 10.0);
            assert_eq!(t[i], rw % 2.0);
        }
        assert!(buf.gather(&[5]).is_err());
        assert_eq!(b.rows().unwrap(), 5);
    }

    #[test]
    fn sampling_is_uniform_over_stored_rows() {
        tch::set_num_threads(1);
        // 50 stored rows of a capacity of 64 (only stored rows may come out), after a
        // wrap of a smaller buffer too; chi-square of the counts of 100k draws against
        // uniform. 49 degrees of freedom: the 0.999 quantile is 85.4, while a sampler
        // that gives half the rows 1.2x the weight of the others scores ~800.
        let mut rng = EnvRng::seed_from_u64(7);
        let mut buf = ReplayBuffer::new(64, 3, 1, u64::MAX, Device::Cpu).unwrap();
        push_rows(&mut buf, 0, 50);
        let draws = 100_000usize;
        let mut counts = [0usize; 50];
        let mut left = draws;
        while left > 0 {
            let n = left.min(4096);
            let b = buf.sample(n, &mut rng).unwrap();
            for r in f32s(&b.rewards) {
                counts[r as usize] += 1;
            }
            left -= n;
        }
        let chi2 = |counts: &[usize]| {
            let e = draws as f64 / counts.len() as f64;
            counts
                .iter()
                .map(|&c| (c as f64 - e).powi(2) / e)
                .sum::<f64>()
        };
        let x = chi2(&counts);
        assert!(x < 85.4, "chi-square {x} over 49 degrees of freedom");
        // The test has power: a biased sampler (rows 0..25 weighted 1.2) fails it.
        let mut biased = [0usize; 50];
        for _ in 0..draws {
            let i = loop {
                let i = rng.random_range(0..50usize);
                if i < 25 || rng.random::<f64>() < 1.0 / 1.2 {
                    break i;
                }
            };
            biased[i] += 1;
        }
        assert!(chi2(&biased) > 85.4);

        // After a wrap every stored row is still reachable and nothing else is.
        let mut small = ReplayBuffer::new(8, 3, 1, u64::MAX, Device::Cpu).unwrap();
        push_rows(&mut small, 0, 13);
        let got = f32s(&small.sample(4000, &mut rng).unwrap().rewards);
        let mut seen = [0usize; 13];
        for r in got {
            seen[r as usize] += 1;
        }
        assert!(seen[..5].iter().all(|&c| c == 0));
        assert!(seen[5..].iter().all(|&c| c > 350), "{seen:?}");
    }

    #[test]
    fn memory_bound_and_bad_inputs_are_errors() {
        tch::set_num_threads(1);
        let needed = ReplayBuffer::bytes_for(1_000_000, 11, 3);
        assert_eq!(needed, 1_000_000 * 4 * (22 + 3 + 2));
        let e = ReplayBuffer::new(1_000_000, 11, 3, 1 << 20, Device::Cpu).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&needed.to_string()) && msg.contains("1048576"),
            "{msg}"
        );
        let buf = ReplayBuffer::new(10, 11, 3, needed, Device::Cpu).unwrap();
        assert_eq!(buf.bytes(), 10 * 4 * 27);
        assert!(ReplayBuffer::new(0, 11, 3, u64::MAX, Device::Cpu).is_err());
        let mut rng = EnvRng::seed_from_u64(0);
        assert!(buf.sample(4, &mut rng).is_err());
        let mut buf = buf;
        let z = |s: &[i64]| Tensor::zeros(s, (Kind::Float, Device::Cpu));
        let e = buf.push_batch(&z(&[2, 11]), &z(&[2, 2]), &z(&[2]), &z(&[2, 11]), &z(&[2]));
        assert!(e.unwrap_err().to_string().contains("actions"));
        assert_eq!(buf.len(), 0);
    }

    #[test]
    fn truncation_keeps_the_final_observation_and_bootstraps() {
        tch::set_num_threads(1);
        // Three envs: env 0 continues, env 1 terminates, env 2 is truncated. obs is the
        // reset observation for the envs that ended.
        let step = StepBatch {
            num_envs: 3,
            obs_len: 2,
            obs: ObsBuf::F32(vec![1.0, 1.0, 90.0, 90.0, 80.0, 80.0]),
            reward: vec![0.5, 1.5, 2.5],
            terminated: vec![false, true, false],
            truncated: vec![false, false, true],
            final_obs: ObsBuf::F32(vec![0.0, 0.0, 2.0, 2.0, 3.0, 3.0]),
            has_final_obs: true,
            episode_return: vec![0.0; 3],
            episode_length: vec![0; 3],
        };
        let mut buf = ReplayBuffer::new(4, 2, 1, u64::MAX, Device::Cpu).unwrap();
        buf.push_env_step(&[0.0, 0.0, 1.0, 1.0, 2.0, 2.0], &[0.1, 0.2, 0.3], &step)
            .unwrap();
        let b = buf.gather(&[0, 1, 2]).unwrap();
        assert_eq!(f32s(&b.next_obs), [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
        assert_eq!(f32s(&b.terminated), [0.0, 1.0, 0.0]);
        assert_eq!(f32s(&b.rewards), [0.5, 1.5, 2.5]);
        assert_eq!(f32s(&b.actions), [0.1, 0.2, 0.3]);
        let no_final = StepBatch {
            has_final_obs: false,
            final_obs: ObsBuf::F32(Vec::new()),
            ..step
        };
        assert!(buf.push_env_step(&[0.0; 6], &[0.0; 3], &no_final).is_err());
    }
}
