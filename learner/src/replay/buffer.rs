//! The replay buffer: preallocated columns of transitions, uniform sampling, the
//! filled rows as bytes for checkpoints.

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
    #[error("bad replay buffer bytes: {0}")]
    BadBytes(String),
    #[error("torch error: {0}")]
    Torch(#[from] tch::TchError),
}

pub type ReplayResult<T> = Result<T, ReplayError>;

/// A sampled minibatch, on the buffer's sampling device.
#[derive(Debug)]
pub struct ReplayBatch {
    /// `[B, obs_dim]`, `f32` (`u8` for image observations).
    pub obs: Tensor,
    /// `[B, action_dim]` `f32`: continuous actions; the discrete action (an exact
    /// small integer); or a parameterised action's choice followed by its parameters.
    pub actions: Tensor,
    /// `[B]`: the reward, or the discounted sum of the `horizon` rewards.
    pub rewards: Tensor,
    /// `[B, obs_dim]`: the observation `horizon` steps after the action (the
    /// episode's real last one when it ended).
    pub next_obs: Tensor,
    /// `[B]`, 1.0 where the episode terminated (no bootstrap), else 0.0.
    pub terminated: Tensor,
    /// `[B]`: env steps the reward sums (1 for one-step transitions): the bootstrap
    /// is discounted by `gamma^horizon`.
    pub horizon: Tensor,
    /// `[B, 2]` in buffers that split rewards: the discounted sums of the positive
    /// and of the negative parts of the rewards (for algorithms that learn the two
    /// streams of the reward apart); `[B, 0]`
    /// otherwise.
    pub reward_parts: Tensor,
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
            ("horizon", &self.horizon, 1),
            ("reward_parts", &self.reward_parts, 2),
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

/// Transitions to store, `n` rows (any float or bool kind, any device).
#[derive(Debug)]
pub struct Transitions<'a> {
    /// `[n, obs_dim]`.
    pub obs: &'a Tensor,
    /// `[n, action_dim]`.
    pub actions: &'a Tensor,
    /// `[n]`.
    pub rewards: &'a Tensor,
    /// `[n, obs_dim]`.
    pub next_obs: &'a Tensor,
    /// `[n]`, 1 where the episode terminated.
    pub terminated: &'a Tensor,
    /// `[n]` steps each reward sums; `None`: one-step transitions.
    pub horizon: Option<&'a Tensor>,
    /// `[n, 2]` the positive and negative parts (buffers that split rewards);
    /// `None`: computed from `rewards` (one-step transitions).
    pub reward_parts: Option<&'a Tensor>,
}

/// The columns of the buffer, in storage (and byte) order.
const COLUMNS: [&str; 7] = [
    "obs",
    "actions",
    "rewards",
    "next_obs",
    "terminated",
    "horizon",
    "reward_parts",
];

const BYTES_MAGIC: &[u8; 4] = b"VLYB";
const BYTES_VERSION: u32 = 1;

/// A ring buffer of transitions in preallocated tensors.
#[derive(Debug)]
pub struct ReplayBuffer {
    capacity: usize,
    obs_dim: usize,
    action_dim: usize,
    /// Observations stored as `u8` (images) rather than `f32`.
    obs_u8: bool,
    /// Keep the positive and negative parts of the rewards apart (2, else 0).
    parts: usize,
    /// Where the rows live (the requested device, or the CPU after a failed GPU
    /// allocation).
    storage: Device,
    /// Where [`ReplayBuffer::sample`] returns its batches (the requested device).
    device: Device,
    /// The columns of [`COLUMNS`].
    cols: [Tensor; 7],
    /// Rows written so far, up to `capacity`.
    len: usize,
    /// Next row to write.
    pos: usize,
}

impl ReplayBuffer {
    /// Bytes of one stored row: the observations twice (1 byte per element for `u8`,
    /// 4 for `f32`), the action, reward, terminated flag and horizon in `f32`.
    pub fn row_bytes(obs_dim: usize, action_dim: usize, obs_u8: bool) -> u64 {
        let o = if obs_u8 { 1 } else { 4 };
        2 * o * obs_dim as u64 + 4 * (action_dim as u64 + 3)
    }

    fn own_row_bytes(&self) -> u64 {
        Self::row_bytes(self.obs_dim, self.action_dim, self.obs_u8) + 4 * self.parts as u64
    }

    /// Bytes of the storage for `capacity` transitions of `f32` observations.
    pub fn bytes_for(capacity: usize, obs_dim: usize, action_dim: usize) -> u64 {
        Self::row_bytes(obs_dim, action_dim, false).saturating_mul(capacity as u64)
    }

    /// An empty buffer of `capacity` rows of `f32` observations ([`ReplayBuffer::with`]).
    pub fn new(
        capacity: usize,
        obs_dim: usize,
        action_dim: usize,
        max_bytes: u64,
        device: Device,
    ) -> ReplayResult<ReplayBuffer> {
        Self::with(capacity, obs_dim, action_dim, false, max_bytes, device)
    }

    /// An empty buffer of `capacity` rows, refused when its storage would exceed
    /// `max_bytes`. The rows live on `device` when they can be allocated there
    /// (otherwise, for a GPU, in host memory); batches are returned on `device`.
    pub fn with(
        capacity: usize,
        obs_dim: usize,
        action_dim: usize,
        obs_u8: bool,
        max_bytes: u64,
        device: Device,
    ) -> ReplayResult<ReplayBuffer> {
        Self::with_parts(
            capacity, obs_dim, action_dim, obs_u8, false, max_bytes, device,
        )
    }

    /// [`ReplayBuffer::with`], also keeping the positive and negative parts of the
    /// rewards apart when `split`.
    pub fn with_parts(
        capacity: usize,
        obs_dim: usize,
        action_dim: usize,
        obs_u8: bool,
        split: bool,
        max_bytes: u64,
        device: Device,
    ) -> ReplayResult<ReplayBuffer> {
        if capacity == 0 || obs_dim == 0 || action_dim == 0 {
            return Err(ReplayError::BadSettings(format!(
                "capacity {capacity}, observation size {obs_dim} and action size \
                 {action_dim} must all be at least 1"
            )));
        }
        let parts = if split { 2 } else { 0 };
        let needed = (Self::row_bytes(obs_dim, action_dim, obs_u8) + 4 * parts as u64)
            .saturating_mul(capacity as u64);
        if needed > max_bytes {
            return Err(ReplayError::TooLarge {
                capacity,
                needed,
                bound: max_bytes,
            });
        }
        let obs_kind = if obs_u8 { Kind::Uint8 } else { Kind::Float };
        let alloc = |d: Device| -> Result<[Tensor; 7], tch::TchError> {
            let (c, o, a) = (capacity as i64, obs_dim as i64, action_dim as i64);
            let f = (Kind::Float, d);
            Ok([
                Tensor::f_zeros([c, o], (obs_kind, d))?,
                Tensor::f_zeros([c, a], f)?,
                Tensor::f_zeros([c], f)?,
                Tensor::f_zeros([c, o], (obs_kind, d))?,
                Tensor::f_zeros([c], f)?,
                Tensor::f_ones([c], f)?,
                Tensor::f_zeros([c, parts as i64], f)?,
            ])
        };
        let (storage, cols) = match alloc(device) {
            Ok(t) => (device, t),
            Err(_) if device != Device::Cpu => (Device::Cpu, alloc(Device::Cpu)?),
            Err(e) => return Err(e.into()),
        };
        Ok(ReplayBuffer {
            capacity,
            obs_dim,
            action_dim,
            obs_u8,
            parts,
            storage,
            device,
            cols,
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
        self.own_row_bytes().saturating_mul(self.capacity as u64)
    }

    /// Bytes of the filled rows ([`ReplayBuffer::to_bytes`] is this plus a header).
    pub fn filled_bytes(&self) -> u64 {
        self.own_row_bytes().saturating_mul(self.len as u64)
    }

    /// Where the rows are stored.
    pub fn storage_device(&self) -> Device {
        self.storage
    }

    /// Where sampled batches are returned.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Appends one-step transitions ([`ReplayBuffer::push`] with no horizon).
    pub fn push_batch(
        &mut self,
        obs: &Tensor,
        actions: &Tensor,
        rewards: &Tensor,
        next_obs: &Tensor,
        terminated: &Tensor,
    ) -> ReplayResult<()> {
        self.push(&Transitions {
            obs,
            actions,
            rewards,
            next_obs,
            terminated,
            horizon: None,
            reward_parts: None,
        })
    }

    /// Appends `n` transitions at once, overwriting the oldest rows once full. With
    /// `n > capacity` only the last `capacity` rows are kept. Every shape is checked
    /// first: on error nothing is stored.
    pub fn push(&mut self, t: &Transitions<'_>) -> ReplayResult<()> {
        let n = t.obs.size().first().copied().unwrap_or(0);
        let ones;
        let horizon = match t.horizon {
            Some(h) => h,
            None => {
                ones = Tensor::f_ones([n], (Kind::Float, Device::Cpu))?;
                &ones
            }
        };
        let split;
        let parts = match t.reward_parts {
            Some(p) => p,
            None if self.parts == 0 => {
                split = Tensor::f_zeros([n, 0], (Kind::Float, Device::Cpu))?;
                &split
            }
            None => {
                let r = t.rewards.f_to_kind(Kind::Float)?;
                split = Tensor::f_stack(&[r.f_clamp_min(0.0)?, r.f_clamp_max(0.0)?], 1)?;
                &split
            }
        };
        let (o, a) = (self.obs_dim as i64, self.action_dim as i64);
        let src: [(&str, &Tensor, Vec<i64>); 7] = [
            ("obs", t.obs, vec![n, o]),
            ("actions", t.actions, vec![n, a]),
            ("rewards", t.rewards, vec![n]),
            ("next_obs", t.next_obs, vec![n, o]),
            ("terminated", t.terminated, vec![n]),
            ("horizon", horizon, vec![n]),
            ("reward_parts", parts, vec![n, self.parts as i64]),
        ];
        for (name, t, want) in &src {
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
        let pos = ((self.pos as i64) + skip) % cap;
        // Up to two contiguous pieces: [pos, cap) then [0, rest).
        let first = keep.min(cap - pos);
        let rest = keep - first;
        let mut prepared = Vec::with_capacity(7);
        for ((_, s, _), d) in src.iter().zip(&self.cols) {
            prepared.push(
                s.f_narrow(0, skip, keep)?
                    .f_to_device(self.storage)?
                    .f_to_kind(d.kind())?,
            );
        }
        for (d, s) in self.cols.iter().zip(&prepared) {
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
            ReplayError::BadInput("push_env_step takes f32 observations only".into())
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
        let [obs, actions, rewards, next_obs, terminated, horizon, parts] = &self.cols;
        Ok(ReplayBatch {
            obs: pick(obs)?,
            actions: pick(actions)?,
            rewards: pick(rewards)?,
            next_obs: pick(next_obs)?,
            terminated: pick(terminated)?,
            horizon: pick(horizon)?,
            reward_parts: pick(parts)?,
        })
    }

    /// The filled rows as bytes, for checkpoints:
    ///
    /// ```text
    /// "VLYB" | version u32 = 1 | capacity u64 | obs_dim u64 | action_dim u64 | obs_u8 u8
    /// parts u8 | len u64 | pos u64 | for each column of COLUMNS: its first `len` rows,
    /// raw little-endian (u8 or f32)
    /// ```
    pub fn to_bytes(&self) -> ReplayResult<Vec<u8>> {
        let mut out = Vec::with_capacity(64 + self.filled_bytes() as usize);
        out.extend_from_slice(BYTES_MAGIC);
        out.extend_from_slice(&BYTES_VERSION.to_le_bytes());
        for v in [self.capacity, self.obs_dim, self.action_dim] {
            out.extend_from_slice(&(v as u64).to_le_bytes());
        }
        out.push(u8::from(self.obs_u8));
        out.push(self.parts as u8);
        out.extend_from_slice(&(self.len as u64).to_le_bytes());
        out.extend_from_slice(&(self.pos as u64).to_le_bytes());
        let _guard = tch::no_grad_guard();
        for col in &self.cols {
            let rows = col
                .f_narrow(0, 0, self.len as i64)?
                .f_to_device(Device::Cpu)?
                .f_contiguous()?;
            let n = rows.numel();
            let width = if rows.kind() == Kind::Uint8 { 1 } else { 4 };
            let start = out.len();
            out.resize(start + n * width, 0);
            rows.f_copy_data_u8(&mut out[start..], n)?;
            if width == 4 && cfg!(target_endian = "big") {
                for c in out[start..].chunks_exact_mut(4) {
                    c.reverse();
                }
            }
        }
        Ok(out)
    }

    /// Restores [`ReplayBuffer::to_bytes`] of a buffer of the same capacity and
    /// shapes. Everything is checked first: on error the buffer is unchanged.
    pub fn load_bytes(&mut self, bytes: &[u8]) -> ReplayResult<()> {
        let bad = |m: String| ReplayError::BadBytes(m);
        let mut pos = 0usize;
        let mut take = |n: usize, what: &str| -> ReplayResult<&[u8]> {
            let end = pos
                .checked_add(n)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| bad(format!("truncated at {what} (offset {pos})")))?;
            let s = &bytes[pos..end];
            pos = end;
            Ok(s)
        };
        if take(4, "magic")? != BYTES_MAGIC {
            return Err(bad("not a volley replay buffer (bad magic)".into()));
        }
        let u32_at = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let u64_at = |b: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        };
        let version = u32_at(take(4, "version")?);
        if version != BYTES_VERSION {
            return Err(bad(format!(
                "format version {version}, this build reads {BYTES_VERSION}"
            )));
        }
        let capacity = u64_at(take(8, "capacity")?);
        let obs_dim = u64_at(take(8, "obs_dim")?);
        let action_dim = u64_at(take(8, "action_dim")?);
        let obs_u8 = take(1, "obs kind")?[0] == 1;
        let parts = take(1, "reward parts")?[0] as usize;
        let want = (
            self.capacity as u64,
            self.obs_dim as u64,
            self.action_dim as u64,
            self.obs_u8,
            self.parts,
        );
        if (capacity, obs_dim, action_dim, obs_u8, parts) != want {
            return Err(bad(format!(
                "a buffer of {capacity} transitions of {obs_dim} observation and \
                 {action_dim} action elements, this run's holds {} of {} and {}",
                self.capacity, self.obs_dim, self.action_dim
            )));
        }
        let len = u64_at(take(8, "len")?);
        let ring = u64_at(take(8, "pos")?);
        if len > capacity || ring >= capacity.max(1) || (len < capacity && ring != len % capacity) {
            return Err(bad(format!(
                "{len} rows and write position {ring} in a buffer of {capacity}"
            )));
        }
        let len = len as usize;
        let mut cols = Vec::with_capacity(7);
        for (name, col) in COLUMNS.iter().zip(&self.cols) {
            let mut dims = col.size();
            dims[0] = len as i64;
            let n: i64 = dims.iter().product();
            let (kind, width) = if col.kind() == Kind::Uint8 {
                (Kind::Uint8, 1)
            } else {
                (Kind::Float, 4)
            };
            let data = take(n as usize * width, name)?;
            let t = if width == 4 && cfg!(target_endian = "big") {
                let swapped: Vec<u8> = data
                    .chunks_exact(4)
                    .flat_map(|c| [c[3], c[2], c[1], c[0]])
                    .collect();
                Tensor::f_from_data_size(&swapped, &dims, kind)?
            } else {
                Tensor::f_from_data_size(data, &dims, kind)?
            };
            if width == 4 && !bool::try_from(t.f_isfinite()?.f_all()?)? {
                return Err(bad(format!("{name} holds NaN or infinity")));
            }
            cols.push(t);
        }
        if pos != bytes.len() {
            return Err(bad(format!("{} trailing bytes", bytes.len() - pos)));
        }
        let _guard = tch::no_grad_guard();
        for (dst, src) in self.cols.iter().zip(&cols) {
            if len > 0 {
                dst.f_narrow(0, 0, len as i64)?
                    .f_copy_(&src.f_to_device(self.storage)?)?;
            }
        }
        self.len = len;
        self.pos = ring as usize;
        Ok(())
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
        let _torch = volley_common::testing::torch();
        let mut buf = ReplayBuffer::new(5, 3, 1, u64::MAX, Device::Cpu).unwrap();
        assert!(buf.is_empty());
        push_rows(&mut buf, 0, 3);
        assert_eq!(buf.len(), 3);
        assert_eq!(f32s(&buf.cols[2])[..3], [0.0, 1.0, 2.0]);
        // Crosses the end: rows 3, 4 at the end, 5, 6 at the start.
        push_rows(&mut buf, 3, 4);
        assert_eq!(buf.len(), 5);
        assert_eq!(f32s(&buf.cols[2]), [5.0, 6.0, 2.0, 3.0, 4.0]);
        assert_eq!(buf.pos, 2);
        // More rows than the capacity: only the last 5 of 7 survive, in ring order.
        push_rows(&mut buf, 7, 7);
        assert_eq!(buf.len(), 5);
        let r = f32s(&buf.cols[2]);
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
        let _torch = volley_common::testing::torch();
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
        let _torch = volley_common::testing::torch();
        let needed = ReplayBuffer::bytes_for(1_000_000, 11, 3);
        // Observations twice, the action, reward, terminated flag and horizon.
        assert_eq!(needed, 1_000_000 * 4 * (22 + 3 + 3));
        // Images are stored as bytes.
        assert_eq!(ReplayBuffer::row_bytes(12288, 1, true), 2 * 12288 + 16);
        let e = ReplayBuffer::new(1_000_000, 11, 3, 1 << 20, Device::Cpu).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&needed.to_string()) && msg.contains("1048576"),
            "{msg}"
        );
        let buf = ReplayBuffer::new(10, 11, 3, needed, Device::Cpu).unwrap();
        assert_eq!(buf.bytes(), 10 * 4 * 28);
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
        let _torch = volley_common::testing::torch();
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
            lives: vec![0; 3],
            life_lost: vec![false; 3],
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
    #[test]
    fn the_buffer_round_trips_through_bytes() {
        let _torch = volley_common::testing::torch();
        let mut buf = ReplayBuffer::new(5, 3, 1, u64::MAX, Device::Cpu).unwrap();
        push_rows(&mut buf, 0, 7);
        let bytes = buf.to_bytes().unwrap();
        assert_eq!(bytes.len() as u64, buf.filled_bytes() + 50);
        let mut back = ReplayBuffer::new(5, 3, 1, u64::MAX, Device::Cpu).unwrap();
        back.load_bytes(&bytes).unwrap();
        assert_eq!((back.len(), back.pos), (buf.len(), buf.pos));
        assert_eq!(back.to_bytes().unwrap(), bytes);
        let all: Vec<i64> = (0..5).collect();
        let (a, b) = (buf.gather(&all).unwrap(), back.gather(&all).unwrap());
        assert_eq!(f32s(&a.next_obs), f32s(&b.next_obs));
        // Damage, another shape and a partly filled buffer.
        let mut other = ReplayBuffer::new(6, 3, 1, u64::MAX, Device::Cpu).unwrap();
        let e = other.load_bytes(&bytes).unwrap_err().to_string();
        assert!(e.contains("this run's holds 6"), "{e}");
        for cut in [0, 10, 44, bytes.len() - 1] {
            assert!(back.load_bytes(&bytes[..cut]).is_err());
        }
        assert_eq!(back.to_bytes().unwrap(), bytes);
        let mut part = ReplayBuffer::new(5, 3, 1, u64::MAX, Device::Cpu).unwrap();
        push_rows(&mut part, 0, 2);
        let mut again = ReplayBuffer::new(5, 3, 1, u64::MAX, Device::Cpu).unwrap();
        again.load_bytes(&part.to_bytes().unwrap()).unwrap();
        assert_eq!((again.len(), again.pos), (2, 2));
        // u8 observations keep their bytes.
        let mut img = ReplayBuffer::with(4, 6, 1, true, u64::MAX, Device::Cpu).unwrap();
        let o = Tensor::arange(12, (Kind::Uint8, Device::Cpu)).view([2, 6]);
        let z = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        img.push_batch(&o, &z.view([2, 1]), &z, &o, &z).unwrap();
        let mut img2 = ReplayBuffer::with(4, 6, 1, true, u64::MAX, Device::Cpu).unwrap();
        img2.load_bytes(&img.to_bytes().unwrap()).unwrap();
        let g = img2.gather(&[1]).unwrap();
        assert_eq!(g.obs.kind(), Kind::Uint8);
        assert_eq!(
            Vec::<u8>::try_from(g.obs.view(-1)).unwrap(),
            (6..12).collect::<Vec<u8>>()
        );
    }
}
