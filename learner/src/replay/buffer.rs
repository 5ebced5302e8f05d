//! The replay buffer: preallocated columns of transitions, uniform sampling, the
//! filled rows as bytes for checkpoints. Observations are stored whole, or as
//! frame stacks with each frame once ([`super::frames`]).

use rand::Rng;
use tch::{Device, Kind, Tensor};
use volley_common::env::StepBatch;

use super::frames::{self, FrameStack, FrameStore};

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

/// A chunk's transitions to store, `steps x envs` rows in time-major order (row
/// `t * envs + e` is step `t` of env `e`), with `next_obs` still one-step: row `r`
/// bootstraps from `next_obs[next_row[r]]`. Frame-stacked buffers find the frames
/// that consecutive steps share through this order.
#[derive(Debug)]
pub struct ChunkTransitions<'a> {
    pub steps: usize,
    pub envs: usize,
    /// `[rows, obs_dim]`.
    pub obs: &'a Tensor,
    /// `[rows, obs_dim]`: the observation after each step (the episode's real last
    /// one where it ended).
    pub next_obs: &'a Tensor,
    /// `[rows]`: the row of `next_obs` each transition bootstraps from.
    pub next_row: &'a [i64],
    /// `[rows, action_dim]`.
    pub actions: &'a Tensor,
    /// `[rows]`.
    pub rewards: &'a Tensor,
    /// `[rows]`, 1 where the episode terminated.
    pub terminated: &'a Tensor,
    /// `[rows]` steps each reward sums.
    pub horizon: &'a Tensor,
    /// `[rows, 2]` the positive and negative parts (buffers that split rewards),
    /// `[rows, 0]` otherwise.
    pub reward_parts: &'a Tensor,
}

/// The columns of a buffer of whole observations, in byte order.
const COLUMNS: [&str; 7] = [
    "obs",
    "actions",
    "rewards",
    "next_obs",
    "terminated",
    "horizon",
    "reward_parts",
];

/// The columns besides the observations, in storage (and byte) order.
const ROW_COLUMNS: [&str; 5] = [
    "actions",
    "rewards",
    "terminated",
    "horizon",
    "reward_parts",
];

const BYTES_MAGIC: &[u8; 4] = b"VLYB";
/// 2 adds the frame stack (0: whole observations) after the reward parts; version 1
/// bytes (whole observations) still load.
const BYTES_VERSION: u32 = 2;

/// How the observations are stored.
#[derive(Debug)]
enum ObsStore {
    /// `obs` and `next_obs` in full, `[capacity, obs_dim]` each.
    Whole { obs: Tensor, next_obs: Tensor },
    /// Frame stacks, each frame once.
    Frames(FrameStore),
}

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
    obs: ObsStore,
    /// The columns of [`ROW_COLUMNS`].
    cols: [Tensor; 5],
    /// Rows held, up to `capacity`: the `len` slots before `pos` (whole
    /// observations: slots `0..len` until the ring is full).
    len: usize,
    /// Next slot to write.
    pos: usize,
}

/// Bytes per row of the columns besides the observations.
fn other_row_bytes(action_dim: usize, parts: usize) -> u64 {
    4 * (action_dim as u64 + 3 + parts as u64)
}

/// Raw little-endian bytes of a CPU tensor (`u8`, or 4-byte `f32` / `i32`).
fn put(out: &mut Vec<u8>, t: &Tensor) -> ReplayResult<()> {
    let t = t.f_to_device(Device::Cpu)?.f_contiguous()?;
    let n = t.numel();
    let width = if t.kind() == Kind::Uint8 { 1 } else { 4 };
    let start = out.len();
    out.resize(start + n * width, 0);
    t.f_copy_data_u8(&mut out[start..], n)?;
    if width == 4 && cfg!(target_endian = "big") {
        for c in out[start..].chunks_exact_mut(4) {
            c.reverse();
        }
    }
    Ok(())
}

/// A tensor of `dims` and `kind` (`u8`, or 4-byte `f32` / `i32`) from little-endian
/// bytes.
fn parse(data: &[u8], dims: &[i64], kind: Kind) -> ReplayResult<Tensor> {
    if kind != Kind::Uint8 && cfg!(target_endian = "big") {
        let swapped: Vec<u8> = data
            .chunks_exact(4)
            .flat_map(|c| [c[3], c[2], c[1], c[0]])
            .collect();
        Ok(Tensor::f_from_data_size(&swapped, dims, kind)?)
    } else {
        Ok(Tensor::f_from_data_size(data, dims, kind)?)
    }
}

impl ReplayBuffer {
    /// Bytes of one stored row: the observations twice (1 byte per element for `u8`,
    /// 4 for `f32`), the action, reward, terminated flag and horizon in `f32`.
    pub fn row_bytes(obs_dim: usize, action_dim: usize, obs_u8: bool) -> u64 {
        let o = if obs_u8 { 1 } else { 4 };
        2 * o * obs_dim as u64 + 4 * (action_dim as u64 + 3)
    }

    /// Bytes of `capacity` rows of frame stacks: the frame ring
    /// ([`FrameStack::frames_for`] frames of `h * w` bytes) and per row its frame
    /// indices ([`FrameStack::row_index_bytes`]), action, reward, terminated flag,
    /// horizon (and reward parts when `split`).
    pub fn frame_bytes_for(
        capacity: usize,
        stack: FrameStack,
        action_dim: usize,
        split: bool,
    ) -> u64 {
        let parts = if split { 2 } else { 0 };
        let frames = (stack.frames_for(capacity) as u64).saturating_mul(stack.frame_len() as u64);
        let row = stack.row_index_bytes() + other_row_bytes(action_dim, parts);
        frames.saturating_add(row.saturating_mul(capacity as u64))
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
        let (c, o) = (capacity as i64, obs_dim as i64);
        Self::alloc(
            (capacity, obs_dim, action_dim, obs_u8, parts),
            |d| {
                Ok(ObsStore::Whole {
                    obs: Tensor::f_zeros([c, o], (obs_kind, d))?,
                    next_obs: Tensor::f_zeros([c, o], (obs_kind, d))?,
                })
            },
            device,
        )
    }

    /// An empty buffer of `capacity` rows of frame-stacked `u8` images
    /// ([`super::frames`]), refused when its storage
    /// ([`ReplayBuffer::frame_bytes_for`]) would exceed `max_bytes`; devices as
    /// [`ReplayBuffer::with`].
    pub fn with_frames(
        capacity: usize,
        stack: FrameStack,
        action_dim: usize,
        split: bool,
        max_bytes: u64,
        device: Device,
    ) -> ReplayResult<ReplayBuffer> {
        if capacity == 0 || action_dim == 0 || stack.obs_len() == 0 {
            return Err(ReplayError::BadSettings(format!(
                "capacity {capacity}, frames of {}x{}, stacks of {} and action size \
                 {action_dim} must all be at least 1",
                stack.height, stack.width, stack.k
            )));
        }
        if stack.frames_for(capacity) > i32::MAX as usize || stack.k > u32::MAX as usize {
            return Err(ReplayError::BadSettings(format!(
                "a frame ring for {capacity} transitions of stacks of {} is over {} frames",
                stack.k,
                i32::MAX
            )));
        }
        let needed = Self::frame_bytes_for(capacity, stack, action_dim, split);
        if needed > max_bytes {
            return Err(ReplayError::TooLarge {
                capacity,
                needed,
                bound: max_bytes,
            });
        }
        let parts = if split { 2 } else { 0 };
        Self::alloc(
            (capacity, stack.obs_len(), action_dim, true, parts),
            |d| Ok(ObsStore::Frames(FrameStore::alloc(stack, capacity, d)?)),
            device,
        )
    }

    /// Allocates the storage on `device`, or on the CPU when that fails for a GPU.
    fn alloc(
        (capacity, obs_dim, action_dim, obs_u8, parts): (usize, usize, usize, bool, usize),
        obs: impl Fn(Device) -> Result<ObsStore, tch::TchError>,
        device: Device,
    ) -> ReplayResult<ReplayBuffer> {
        let alloc = |d: Device| -> Result<(ObsStore, [Tensor; 5]), tch::TchError> {
            let (c, a) = (capacity as i64, action_dim as i64);
            let f = (Kind::Float, d);
            Ok((
                obs(d)?,
                [
                    Tensor::f_zeros([c, a], f)?,
                    Tensor::f_zeros([c], f)?,
                    Tensor::f_zeros([c], f)?,
                    Tensor::f_ones([c], f)?,
                    Tensor::f_zeros([c, parts as i64], f)?,
                ],
            ))
        };
        let (storage, (obs, cols)) = match alloc(device) {
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
            obs,
            cols,
            len: 0,
            pos: 0,
        })
    }

    /// Transitions stored (at most `capacity`; frame stacks: fewer when the frame
    /// ring is full first).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most transitions the buffer holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The frame stack of a frame-stacked buffer.
    pub fn frame_stack(&self) -> Option<FrameStack> {
        match &self.obs {
            ObsStore::Frames(f) => Some(f.stack),
            ObsStore::Whole { .. } => None,
        }
    }

    /// Frame-stacked buffers: the frames held by the stored rows and the frame
    /// ring's capacity.
    pub fn frames(&self) -> Option<(usize, usize)> {
        match &self.obs {
            ObsStore::Frames(f) => Some((f.held(self.oldest()), f.capacity())),
            ObsStore::Whole { .. } => None,
        }
    }

    /// Bytes held by the storage (frame stacks: with the rows' floors in host
    /// memory).
    pub fn bytes(&self) -> u64 {
        match &self.obs {
            ObsStore::Whole { .. } => self.own_row_bytes().saturating_mul(self.capacity as u64),
            ObsStore::Frames(f) => {
                Self::frame_bytes_for(self.capacity, f.stack, self.action_dim, self.parts > 0)
            }
        }
    }

    /// [`ReplayBuffer::bytes`] per transition of capacity.
    pub fn bytes_per_transition(&self) -> f64 {
        self.bytes() as f64 / self.capacity as f64
    }

    /// Bytes of the filled rows ([`ReplayBuffer::to_bytes`] is this plus a header);
    /// frame stacks: with the frames they use.
    pub fn filled_bytes(&self) -> u64 {
        match &self.obs {
            ObsStore::Whole { .. } => self.own_row_bytes().saturating_mul(self.len as u64),
            ObsStore::Frames(f) => {
                let row = 8 * f.stack.k as u64 + other_row_bytes(self.action_dim, self.parts);
                (f.held(self.oldest()) as u64 * f.stack.frame_len() as u64)
                    .saturating_add(row.saturating_mul(self.len as u64))
            }
        }
    }

    /// Where the rows are stored.
    pub fn storage_device(&self) -> Device {
        self.storage
    }

    /// Where sampled batches are returned.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The slot of the oldest row.
    fn oldest(&self) -> Option<usize> {
        (self.len > 0).then(|| (self.pos + self.capacity - self.len) % self.capacity)
    }

    /// The slot of stored row `i` (below `len`): whole observations: slot `i`
    /// (slots `0..len` are the stored ones); frame stacks: the `i`-th oldest.
    fn slot(&self, i: i64) -> i64 {
        match &self.obs {
            ObsStore::Whole { .. } => i,
            ObsStore::Frames(_) => (self.oldest().unwrap_or(0) as i64 + i) % self.capacity as i64,
        }
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

    /// Checks that each tensor has its expected shape.
    fn check_shapes(src: &[(&str, &Tensor, Vec<i64>)]) -> ReplayResult<()> {
        for (name, t, want) in src {
            if t.size() != *want {
                return Err(ReplayError::BadInput(format!(
                    "{name} of shape {:?}, expected {want:?}",
                    t.size()
                )));
            }
        }
        Ok(())
    }

    /// Appends `n` transitions at once, overwriting the oldest rows once full. With
    /// `n > capacity` only the last `capacity` rows are kept. Every shape is checked
    /// first: on error nothing is stored. Frame-stacked buffers take the rows as
    /// consecutive steps of one env ([`ReplayBuffer::push_chunk`]).
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
        if let ObsStore::Frames(_) = self.obs {
            let next_row: Vec<i64> = (0..n).collect();
            return self.push_chunk(&ChunkTransitions {
                steps: n as usize,
                envs: 1,
                obs: t.obs,
                next_obs: t.next_obs,
                next_row: &next_row,
                actions: t.actions,
                rewards: t.rewards,
                terminated: t.terminated,
                horizon,
                reward_parts: parts,
            });
        }
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
        Self::check_shapes(&src)?;
        if n == 0 {
            return Ok(());
        }
        let _guard = tch::no_grad_guard();
        // Only the newest `capacity` rows can survive.
        let cap = self.capacity as i64;
        let skip = (n - cap).max(0);
        let keep = n - skip;
        let pos = ((self.pos as i64) + skip) % cap;
        let ObsStore::Whole { obs, next_obs } = &self.obs else {
            unreachable!("frame stacks returned above")
        };
        let [actions, rewards, terminated, horizon_col, parts_col] = &self.cols;
        let dst = [
            obs,
            actions,
            rewards,
            next_obs,
            terminated,
            horizon_col,
            parts_col,
        ];
        let mut prepared = Vec::with_capacity(7);
        for ((_, s, _), d) in src.iter().zip(dst) {
            prepared.push(
                s.f_narrow(0, skip, keep)?
                    .f_to_device(self.storage)?
                    .f_to_kind(d.kind())?,
            );
        }
        for (d, s) in dst.iter().zip(&prepared) {
            frames::write_ring(d, s, pos, cap)?;
        }
        self.pos = ((pos + keep) % cap) as usize;
        self.len = (self.len + n as usize).min(self.capacity);
        Ok(())
    }

    /// Appends a chunk's transitions. Whole observations: as [`ReplayBuffer::push`]
    /// of the rows with their `next_obs` picked. Frame stacks: each frame once
    /// ([`super::frames`]); the oldest rows go until the newest fit both rings, and
    /// of a chunk larger than either only the newest rows that fit are kept. Every
    /// shape is checked first: on error nothing is stored.
    pub fn push_chunk(&mut self, c: &ChunkTransitions<'_>) -> ReplayResult<()> {
        let rows = c.steps * c.envs;
        let n = rows as i64;
        if c.next_row.len() != rows {
            return Err(ReplayError::BadInput(format!(
                "{} next rows for {rows} rows",
                c.next_row.len()
            )));
        }
        if let Some(bad) = c.next_row.iter().find(|&&r| r < 0 || r >= n) {
            return Err(ReplayError::BadInput(format!(
                "next row {bad} out of the chunk's {rows}"
            )));
        }
        let o = self.obs_dim as i64;
        Self::check_shapes(&[
            ("obs", c.obs, vec![n, o]),
            ("next_obs", c.next_obs, vec![n, o]),
        ])?;
        let stack = match &self.obs {
            ObsStore::Whole { .. } => {
                let next = c
                    .next_obs
                    .f_index_select(0, &Tensor::f_from_slice(c.next_row)?)?;
                return self.push(&Transitions {
                    obs: c.obs,
                    actions: c.actions,
                    rewards: c.rewards,
                    next_obs: &next,
                    terminated: c.terminated,
                    horizon: Some(c.horizon),
                    reward_parts: Some(c.reward_parts),
                });
            }
            ObsStore::Frames(f) => f.stack,
        };
        let src: [(&str, &Tensor, Vec<i64>); 5] = [
            ("actions", c.actions, vec![n, self.action_dim as i64]),
            ("rewards", c.rewards, vec![n]),
            ("terminated", c.terminated, vec![n]),
            ("horizon", c.horizon, vec![n]),
            ("reward_parts", c.reward_parts, vec![n, self.parts as i64]),
        ];
        Self::check_shapes(&src)?;
        for (name, t) in [("obs", c.obs), ("next_obs", c.next_obs)] {
            if t.kind() != Kind::Uint8 {
                return Err(ReplayError::BadInput(format!(
                    "a frame-stacked buffer stores u8 images, {name} is {:?}",
                    t.kind()
                )));
            }
        }
        if rows == 0 {
            return Ok(());
        }
        let _guard = tch::no_grad_guard();
        let cap = self.capacity;
        let ObsStore::Frames(store) = &mut self.obs else {
            unreachable!("whole observations returned above")
        };
        let plan = frames::plan(
            &frames::channel_major(c.obs, stack)?,
            &frames::channel_major(c.next_obs, stack)?,
            (c.steps, c.envs),
            c.next_row,
            stack,
            (cap, store.capacity()),
        );
        let kept = plan.floors.len();
        let mut prepared = Vec::with_capacity(5);
        for ((_, s, _), d) in src.iter().zip(&self.cols) {
            prepared.push(
                s.f_narrow(0, plan.first_row as i64, kept as i64)?
                    .f_to_device(self.storage)?
                    .f_to_kind(d.kind())?,
            );
        }
        // The oldest rows go until the new ones fit the row ring and no row left
        // uses a frame the new ones overwrite (floors are nondecreasing from the
        // oldest row).
        let (mut len, pos) = (self.len, self.pos);
        let need = store.overwrite_floor(plan.count);
        while len > 0 && (len + kept > cap || store.floor((pos + cap - len) % cap) < need) {
            len -= 1;
        }
        store.write(&plan, pos, cap)?;
        for (d, s) in self.cols.iter().zip(&prepared) {
            frames::write_ring(d, s, pos as i64, cap as i64)?;
        }
        self.len = len + kept;
        self.pos = (pos + kept) % cap;
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

    /// The stored rows `idx` (each below [`ReplayBuffer::len`]; frame stacks count
    /// from the oldest), on the sampling device.
    pub fn gather(&self, idx: &[i64]) -> ReplayResult<ReplayBatch> {
        if let Some(&bad) = idx.iter().find(|&&i| i < 0 || i >= self.len as i64) {
            return Err(ReplayError::BadInput(format!(
                "row {bad} out of the {} stored",
                self.len
            )));
        }
        let _guard = tch::no_grad_guard();
        let slots: Vec<i64> = idx.iter().map(|&i| self.slot(i)).collect();
        let idx = Tensor::f_from_slice(&slots)?.f_to_device(self.storage)?;
        let pick = |t: &Tensor| -> ReplayResult<Tensor> {
            Ok(t.f_index_select(0, &idx)?.f_to_device(self.device)?)
        };
        let (obs, next_obs) = match &self.obs {
            ObsStore::Whole { obs, next_obs } => (pick(obs)?, pick(next_obs)?),
            ObsStore::Frames(f) => {
                let (o, n) = f.gather(&idx)?;
                (o.f_to_device(self.device)?, n.f_to_device(self.device)?)
            }
        };
        let [actions, rewards, terminated, horizon, parts] = &self.cols;
        Ok(ReplayBatch {
            obs,
            actions: pick(actions)?,
            rewards: pick(rewards)?,
            next_obs,
            terminated: pick(terminated)?,
            horizon: pick(horizon)?,
            reward_parts: pick(parts)?,
        })
    }

    /// The frame stack of the bytes format, 0 for whole observations.
    fn stack_code(&self) -> usize {
        self.frame_stack().map_or(0, |s| s.k)
    }

    /// The filled rows as bytes, for checkpoints:
    ///
    /// ```text
    /// "VLYB" | version u32 = 2 | capacity u64 | obs_dim u64 | action_dim u64 | obs_u8 u8
    /// parts u8 | stack u32 | len u64 | pos u64 | then, all raw little-endian:
    /// stack 0 (whole observations): for each column of COLUMNS its first `len` rows
    /// stack k (frame stacks): frames u64 | the frames [frames, h * w] u8, oldest
    ///   first | for each of the stacks ([len, 2k] i32, indices of those frames) and
    ///   the columns of ROW_COLUMNS: the rows, oldest first (`pos` is `len % capacity`)
    /// ```
    ///
    /// Version 1 is version 2 without `stack` (whole observations).
    pub fn to_bytes(&self) -> ReplayResult<Vec<u8>> {
        let mut out = Vec::with_capacity(64 + self.filled_bytes() as usize);
        out.extend_from_slice(BYTES_MAGIC);
        out.extend_from_slice(&BYTES_VERSION.to_le_bytes());
        for v in [self.capacity, self.obs_dim, self.action_dim] {
            out.extend_from_slice(&(v as u64).to_le_bytes());
        }
        out.push(u8::from(self.obs_u8));
        out.push(self.parts as u8);
        out.extend_from_slice(&(self.stack_code() as u32).to_le_bytes());
        out.extend_from_slice(&(self.len as u64).to_le_bytes());
        let _guard = tch::no_grad_guard();
        let len = self.len as i64;
        match &self.obs {
            ObsStore::Whole { obs, next_obs } => {
                out.extend_from_slice(&(self.pos as u64).to_le_bytes());
                let [actions, rewards, terminated, horizon, parts] = &self.cols;
                for col in [obs, actions, rewards, next_obs, terminated, horizon, parts] {
                    put(&mut out, &col.f_narrow(0, 0, len)?)?;
                }
            }
            ObsStore::Frames(f) => {
                out.extend_from_slice(&((self.len % self.capacity) as u64).to_le_bytes());
                let tail = f.tail(self.oldest());
                out.extend_from_slice(&(f.held(self.oldest()) as u64).to_le_bytes());
                put(&mut out, &f.frames_from(tail)?)?;
                let slots: Vec<i64> = (0..len).map(|i| self.slot(i)).collect();
                let slots = Tensor::f_from_slice(&slots)?.f_to_device(self.storage)?;
                put(
                    &mut out,
                    &Tensor::f_from_slice(&f.stacks_from(&slots, tail)?)?,
                )?;
                for col in &self.cols {
                    put(&mut out, &col.f_index_select(0, &slots)?)?;
                }
            }
        }
        Ok(out)
    }

    /// Restores [`ReplayBuffer::to_bytes`] (of this or of version 1) of a buffer of
    /// the same capacity, shapes and storage. Everything is checked first: on error
    /// the buffer is unchanged.
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
        if version != 1 && version != BYTES_VERSION {
            return Err(bad(format!(
                "format version {version}, this build reads 1 and {BYTES_VERSION}"
            )));
        }
        let capacity = u64_at(take(8, "capacity")?);
        let obs_dim = u64_at(take(8, "obs_dim")?);
        let action_dim = u64_at(take(8, "action_dim")?);
        let obs_u8 = take(1, "obs kind")?[0] == 1;
        let parts = take(1, "reward parts")?[0] as usize;
        let stack = if version == 1 {
            0
        } else {
            u32_at(take(4, "frame stack")?) as usize
        };
        let want = (
            self.capacity as u64,
            self.obs_dim as u64,
            self.action_dim as u64,
            self.obs_u8,
            self.parts,
            self.stack_code(),
        );
        if (capacity, obs_dim, action_dim, obs_u8, parts, stack) != want {
            let kind = |k: usize| match k {
                0 => "whole observations".to_string(),
                k => format!("stacks of {k} frames"),
            };
            return Err(bad(format!(
                "a buffer of {capacity} transitions of {obs_dim} observation and \
                 {action_dim} action elements ({}), this run's holds {} of {} and {} ({})",
                kind(stack),
                self.capacity,
                self.obs_dim,
                self.action_dim,
                kind(self.stack_code())
            )));
        }
        let len = u64_at(take(8, "len")?);
        let ring = u64_at(take(8, "pos")?);
        let canonical = ring == len % capacity.max(1);
        if len > capacity
            || ring >= capacity.max(1)
            || (stack > 0 && !canonical)
            || (len < capacity && ring != len % capacity)
        {
            return Err(bad(format!(
                "{len} rows and write position {ring} in a buffer of {capacity}"
            )));
        }
        let len = len as usize;
        // The frames and stacks of frame-stacked bytes.
        let mut frames = None;
        if let ObsStore::Frames(f) = &self.obs {
            let n = u64_at(take(8, "frames")?);
            if n > f.capacity() as u64 {
                return Err(bad(format!(
                    "{n} frames, this buffer holds {}",
                    f.capacity()
                )));
            }
            let hw = f.stack.frame_len();
            let data = take(n as usize * hw, "frames")?;
            let t = parse(data, &[n as i64, hw as i64], Kind::Uint8)?;
            let k2 = 2 * f.stack.k;
            let data = take(len * k2 * 4, "stacks")?;
            let st = Vec::<i32>::try_from(parse(data, &[(len * k2) as i64], Kind::Int)?)?;
            frames = Some((t, st));
        }
        let mut cols = Vec::with_capacity(7);
        let names: &[&str] = match self.obs {
            ObsStore::Whole { .. } => &COLUMNS,
            ObsStore::Frames(_) => &ROW_COLUMNS,
        };
        for name in names {
            let col = self.column(name);
            let mut dims = col.size();
            dims[0] = len as i64;
            let n: i64 = dims.iter().product();
            let (kind, width) = if col.kind() == Kind::Uint8 {
                (Kind::Uint8, 1)
            } else {
                (Kind::Float, 4)
            };
            let t = parse(take(n as usize * width, name)?, &dims, kind)?;
            if width == 4 && !bool::try_from(t.f_isfinite()?.f_all()?)? {
                return Err(bad(format!("{name} holds NaN or infinity")));
            }
            cols.push((*name, t));
        }
        if pos != bytes.len() {
            return Err(bad(format!("{} trailing bytes", bytes.len() - pos)));
        }
        let _guard = tch::no_grad_guard();
        if let (ObsStore::Frames(f), Some((t, st))) = (&mut self.obs, &frames) {
            f.load(t, st)?;
        }
        for (name, src) in &cols {
            if len > 0 {
                self.column(name)
                    .f_narrow(0, 0, len as i64)?
                    .f_copy_(&src.f_to_device(self.storage)?)?;
            }
        }
        self.len = len;
        self.pos = ring as usize;
        Ok(())
    }

    /// The storage column `name` of [`COLUMNS`].
    fn column(&self, name: &str) -> &Tensor {
        let [actions, rewards, terminated, horizon, parts] = &self.cols;
        match (name, &self.obs) {
            ("obs", ObsStore::Whole { obs, .. }) => obs,
            ("next_obs", ObsStore::Whole { next_obs, .. }) => next_obs,
            ("actions", _) => actions,
            ("rewards", _) => rewards,
            ("terminated", _) => terminated,
            ("horizon", _) => horizon,
            _ => parts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::frames::synth::{self, Style};
    use crate::replay::nstep_transitions;
    use rand::SeedableRng;
    use std::collections::HashSet;
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
        assert_eq!(f32s(&buf.cols[1])[..3], [0.0, 1.0, 2.0]);
        // Crosses the end: rows 3, 4 at the end, 5, 6 at the start.
        push_rows(&mut buf, 3, 4);
        assert_eq!(buf.len(), 5);
        assert_eq!(f32s(&buf.cols[1]), [5.0, 6.0, 2.0, 3.0, 4.0]);
        assert_eq!(buf.pos, 2);
        // More rows than the capacity: only the last 5 of 7 survive, in ring order.
        push_rows(&mut buf, 7, 7);
        assert_eq!(buf.len(), 5);
        let r = f32s(&buf.cols[1]);
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
        assert_eq!(bytes.len() as u64, buf.filled_bytes() + 54);
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

    fn u8s(t: &Tensor) -> Vec<u8> {
        Vec::<u8>::try_from(t.to_device(Device::Cpu).reshape([-1])).unwrap()
    }

    /// A synthetic chunk's `n`-step transitions, as the feed computes them.
    struct Prepared {
        next_row: Vec<i64>,
        rewards: Tensor,
        terminated: Tensor,
        horizon: Tensor,
        parts: Tensor,
    }

    fn prepare(c: &synth::Chunk, n: usize, split: bool) -> Prepared {
        let s = nstep_transitions(
            &c.rewards,
            &c.terminated,
            &c.truncated,
            (c.steps, c.envs),
            n,
            0.9,
            true,
        );
        let rows = (c.steps * c.envs) as i64;
        Prepared {
            rewards: Tensor::from_slice(&s.ret),
            terminated: Tensor::from_slice(&s.terminated),
            horizon: Tensor::from_slice(&s.horizon),
            parts: if split {
                Tensor::from_slice(&s.parts).view([rows, 2])
            } else {
                Tensor::zeros([rows, 0], (Kind::Float, Device::Cpu))
            },
            next_row: s.next_row,
        }
    }

    fn rows<'a>(c: &'a synth::Chunk, p: &'a Prepared) -> ChunkTransitions<'a> {
        ChunkTransitions {
            steps: c.steps,
            envs: c.envs,
            obs: &c.obs,
            next_obs: &c.next_obs,
            next_row: &p.next_row,
            actions: &c.actions,
            rewards: &p.rewards,
            terminated: &p.terminated,
            horizon: &p.horizon,
            reward_parts: &p.parts,
        }
    }

    /// Pushes a chunk into both buffers.
    fn push_both(bufs: [&mut ReplayBuffer; 2], c: &synth::Chunk, n: usize) {
        for b in bufs {
            let p = prepare(c, n, b.parts > 0);
            b.push_chunk(&rows(c, &p)).unwrap();
        }
    }

    /// Every row of the frame-stacked buffer `f` is, field for field, the row of the
    /// plain buffer `plain` for the same transition (`f` holds the newest `f.len()`
    /// of the transitions `plain` holds).
    fn assert_same_rows(f: &ReplayBuffer, plain: &ReplayBuffer) {
        assert!(f.len() <= plain.len() && !f.is_empty());
        let cap = plain.capacity as i64;
        let first = if plain.len < plain.capacity {
            0
        } else {
            plain.pos as i64
        };
        let skip = (plain.len - f.len) as i64;
        let slots: Vec<i64> = (0..f.len as i64)
            .map(|i| (first + skip + i) % cap)
            .collect();
        let all: Vec<i64> = (0..f.len as i64).collect();
        let (a, b) = (f.gather(&all).unwrap(), plain.gather(&slots).unwrap());
        assert_eq!(a.obs.kind(), Kind::Uint8);
        assert_eq!(a.obs.size(), b.obs.size());
        assert!(u8s(&a.obs) == u8s(&b.obs), "obs differ");
        assert!(u8s(&a.next_obs) == u8s(&b.next_obs), "next_obs differ");
        for (x, y) in [
            (&a.actions, &b.actions),
            (&a.rewards, &b.rewards),
            (&a.terminated, &b.terminated),
            (&a.horizon, &b.horizon),
            (&a.reward_parts, &b.reward_parts),
        ] {
            assert_eq!(x.size(), y.size());
            assert_eq!(f32s(x), f32s(y));
        }
    }

    fn small() -> FrameStack {
        FrameStack {
            height: 3,
            width: 5,
            k: 4,
        }
    }

    fn frame_buffer(cap: usize, split: bool) -> ReplayBuffer {
        ReplayBuffer::with_frames(cap, small(), 1, split, u64::MAX, Device::Cpu).unwrap()
    }

    fn plain_buffer(cap: usize, split: bool) -> ReplayBuffer {
        let d = small().obs_len();
        ReplayBuffer::with_parts(cap, d, 1, true, split, u64::MAX, Device::Cpu).unwrap()
    }

    const ATARI_LIKE: Style = Style {
        overlap: true,
        episode: 12,
        repeat: 0.1,
        glitch: 0.05,
    };

    #[test]
    fn frame_stacks_come_back_as_the_plain_buffer_rows() {
        let _torch = volley_common::testing::torch();
        // Episodes of ~12 steps (terminated and truncated, some ending on a chunk's
        // first or last step), still screens and observations that do not continue
        // the previous next_obs: 1-step and 3-step transitions, rewards split or not.
        for (n, split, seed) in [(1, false, 1), (3, true, 2), (3, false, 3)] {
            let mut envs = synth::Envs::new(small(), 3, ATARI_LIKE, seed);
            let (mut f, mut p) = (frame_buffer(1000, split), plain_buffer(1000, split));
            for _ in 0..8 {
                push_both([&mut f, &mut p], &envs.chunk(9), n);
                assert_eq!(f.len(), p.len());
                assert_same_rows(&f, &p);
            }
            // Sampling draws the same rows from both.
            let (mut r1, mut r2) = (EnvRng::seed_from_u64(5), EnvRng::seed_from_u64(5));
            let (a, b) = (
                f.sample(64, &mut r1).unwrap(),
                p.sample(64, &mut r2).unwrap(),
            );
            assert!(u8s(&a.obs) == u8s(&b.obs) && u8s(&a.next_obs) == u8s(&b.next_obs));
            assert_eq!(f32s(&a.rewards), f32s(&b.rewards));
            assert_eq!(a.obs.size(), [64, small().obs_len() as i64]);
            // Each frame once: about (9 + 4) / 9 frames a row plus the episode starts
            // and glitches, where whole observations take 2k = 8.
            let (held, _) = f.frames().unwrap();
            let per_row = held as f64 / f.len() as f64;
            assert!(per_row < 2.0, "{per_row} frames per row");
            assert_eq!(
                f.filled_bytes(),
                held as u64 * 15 + f.len() as u64 * (32 + 16 + 4 * p.parts as u64)
            );
        }
    }

    #[test]
    fn stacks_that_do_not_overlap_come_back_exact() {
        let _torch = volley_common::testing::torch();
        let style = Style {
            overlap: false,
            episode: 5,
            repeat: 0.0,
            glitch: 0.0,
        };
        let mut envs = synth::Envs::new(small(), 2, style, 9);
        let (mut f, mut p) = (frame_buffer(500, false), plain_buffer(500, false));
        for _ in 0..5 {
            push_both([&mut f, &mut p], &envs.chunk(6), 1);
            assert_same_rows(&f, &p);
        }
        // Nothing to share: 2k frames per row, every one stored.
        assert_eq!(f.frames().unwrap().0, 8 * f.len());
        // Rows pushed one by one (push, push_batch) are stored as one env's steps.
        let mut envs = synth::Envs::new(small(), 1, ATARI_LIKE, 10);
        let (mut f, mut p) = (frame_buffer(100, true), plain_buffer(100, true));
        for _ in 0..3 {
            let c = envs.chunk(7);
            let r = Tensor::from_slice(&c.rewards);
            let t = Tensor::from_slice(&c.terminated).to_kind(Kind::Float);
            for b in [&mut f, &mut p] {
                b.push_batch(&c.obs, &c.actions, &r, &c.next_obs, &t)
                    .unwrap();
            }
            assert_same_rows(&f, &p);
        }
        assert!(f.frames().unwrap().0 < 3 * f.len());
    }

    #[test]
    fn eviction_never_returns_a_stale_frame() {
        let _torch = volley_common::testing::torch();
        // A ring of 40 rows and 40 + 3 + 8 = 51 frames, chunks of 21 rows: frames
        // run out before rows do (overlapping chunks take ~33 frames, non-overlapping
        // ones 168 of which only the newest rows that fit are kept), and every frame
        // carries its id, so a stale one would show.
        let mut a = synth::Envs::new(small(), 3, ATARI_LIKE, 20);
        let lone = Style {
            overlap: false,
            ..ATARI_LIKE
        };
        let mut b = synth::Envs::new(small(), 3, lone, 21);
        let (mut f, mut p) = (frame_buffer(40, true), plain_buffer(40, true));
        assert_eq!(f.frames().unwrap().1, 51);
        let mut rng = EnvRng::seed_from_u64(3);
        let mut lens = HashSet::new();
        for i in 0..60 {
            let c = match i % 7 {
                3 => b.chunk(7),
                // More rows than the ring holds: only the newest that fit stay.
                5 => a.chunk(20),
                _ => a.chunk(7),
            };
            push_both([&mut f, &mut p], &c, 3);
            assert_same_rows(&f, &p);
            let (held, cap) = f.frames().unwrap();
            assert!(held <= cap && f.len() <= 40);
            lens.insert(f.len());
            // Sampled rows are stored rows.
            let all: Vec<i64> = (0..f.len() as i64).collect();
            let stored: HashSet<Vec<u8>> = {
                let g = f.gather(&all).unwrap();
                let both = Tensor::cat(&[g.obs, g.next_obs], 1);
                (0..f.len() as i64)
                    .map(|r| u8s(&both.narrow(0, r, 1)))
                    .collect()
            };
            let s = f.sample(32, &mut rng).unwrap();
            let both = Tensor::cat(&[s.obs, s.next_obs], 1);
            for r in 0..32 {
                assert!(stored.contains(&u8s(&both.narrow(0, r, 1))));
            }
        }
        // Both evictions happened: by rows and by frames.
        assert!(lens.len() > 3, "{lens:?}");
    }

    #[test]
    fn an_atari_ring_costs_about_one_frame_per_transition() {
        let _torch = volley_common::testing::torch();
        // 84x84x4 frame stacks, chunks of 128 steps x 8 envs, episodes of ~1000
        // steps, into a ring of 16384 rows, until it has wrapped.
        let atari = FrameStack {
            height: 84,
            width: 84,
            k: 4,
        };
        let style = Style {
            overlap: true,
            episode: 1000,
            repeat: 0.0,
            glitch: 0.0,
        };
        let cap = 16384;
        let mut f = ReplayBuffer::with_frames(cap, atari, 1, false, u64::MAX, Device::Cpu).unwrap();
        let mut envs = synth::Envs::new(atari, 8, style, 4);
        let mut last = None;
        for _ in 0..20 {
            let c = envs.chunk(128);
            let p = prepare(&c, 1, false);
            f.push_chunk(&rows(&c, &p)).unwrap();
            last = Some(c);
        }
        // The frame ring never ran short: the ring holds `capacity` rows.
        assert_eq!(f.len(), cap);
        let (held, ring) = f.frames().unwrap();
        assert_eq!(ring, cap + cap / 16 + 8);
        // Each env adds k frames at a chunk's start and one a step.
        let per_row = held as f64 / cap as f64;
        assert!(per_row < 1.04, "{per_row} frames per row");
        // Storage per transition: (F * 7056 + capacity * 56) / capacity, where a
        // row is 8 i32 frame indices, action, reward, flag, horizon and the floor.
        let frame = 7056u64;
        let want = (ring as u64 * frame + cap as u64 * 56) as f64 / cap as f64;
        let got = f.bytes_per_transition();
        assert_eq!(f.bytes(), ring as u64 * frame + cap as u64 * 56);
        assert!((got - want).abs() < 1e-9);
        assert!(got < 1.1 * 7056.0 + 64.0, "{got} bytes per transition");
        let used = f.filled_bytes() as f64 / cap as f64;
        // CleanRL's DQN on Atari keeps 1M transitions.
        let million = ReplayBuffer::frame_bytes_for(1_000_000, atari, 1, false);
        let whole = (ReplayBuffer::row_bytes(atari.obs_len(), 1, true) * 1_000_000) as f64;
        let gib = |b: f64| b / f64::from(1u32 << 30);
        println!(
            "84x84x4 frame stacks: {got:.1} bytes per transition of capacity \
             ({per_row:.4} frames per stored row, {used:.1} bytes per row in use); \
             1M transitions: {:.3} GiB (whole observations: {:.2} GiB)",
            gib(million as f64),
            gib(whole)
        );
        assert_eq!(million, 1_062_508 * 7056 + 1_000_000 * 56);
        assert!(gib(million as f64) < 7.1);
        // The newest rows are the last chunk's, exact.
        let c = last.unwrap();
        let idx: Vec<i64> = (cap as i64 - 16..cap as i64).collect();
        let g = f.gather(&idx).unwrap();
        assert!(u8s(&g.obs) == u8s(&c.obs.narrow(0, 1024 - 16, 16)));
        assert!(u8s(&g.next_obs) == u8s(&c.next_obs.narrow(0, 1024 - 16, 16)));
    }

    #[test]
    fn frame_stacks_round_trip_through_bytes() {
        let _torch = volley_common::testing::torch();
        let mut envs = synth::Envs::new(small(), 3, ATARI_LIKE, 30);
        let (mut f, mut p) = (frame_buffer(40, true), plain_buffer(40, true));
        for _ in 0..9 {
            push_both([&mut f, &mut p], &envs.chunk(7), 3);
        }
        let bytes = f.to_bytes().unwrap();
        assert_eq!(bytes.len() as u64, f.filled_bytes() + 62);
        let mut back = frame_buffer(40, true);
        back.load_bytes(&bytes).unwrap();
        assert_eq!(back.len(), f.len());
        assert_eq!(back.frames(), f.frames());
        assert_eq!(back.to_bytes().unwrap(), bytes);
        assert_same_rows(&back, &p);
        // The restored buffer goes on as the original: its floors and frame head
        // were rebuilt.
        for _ in 0..6 {
            let c = envs.chunk(7);
            push_both([&mut back, &mut p], &c, 3);
            let q = prepare(&c, 3, true);
            f.push_chunk(&rows(&c, &q)).unwrap();
            assert_same_rows(&back, &p);
            assert_eq!(back.len(), f.len());
        }
        // Damage: truncations leave the buffer unchanged.
        let before = back.to_bytes().unwrap();
        for cut in [0, 10, 53, 61, bytes.len() - 1] {
            assert!(back.load_bytes(&bytes[..cut]).is_err());
        }
        let mut bad = bytes.clone();
        // The first frame index of the first row (after the header and the frames).
        let at = 62 + 15 * frames_in(&bytes);
        bad[at..at + 4].copy_from_slice(&i32::MAX.to_le_bytes());
        let e = back.load_bytes(&bad).unwrap_err().to_string();
        assert!(e.contains("frame index"), "{e}");
        assert_eq!(back.to_bytes().unwrap(), before);
        // A buffer of whole observations and a frame-stacked one refuse each other's
        // bytes, saying why.
        let mut plain = plain_buffer(40, true);
        let e = plain.load_bytes(&bytes).unwrap_err().to_string();
        assert!(
            e.contains("stacks of 4 frames") && e.contains("whole observations"),
            "{e}"
        );
        let e = back
            .load_bytes(&p.to_bytes().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("whole observations"), "{e}");
        // An empty frame-stacked buffer round-trips too.
        let empty = frame_buffer(40, true);
        let mut e2 = frame_buffer(40, true);
        e2.load_bytes(&empty.to_bytes().unwrap()).unwrap();
        assert!(e2.is_empty());
    }

    /// The frame count of frame-stacked bytes.
    fn frames_in(bytes: &[u8]) -> usize {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[54..62]);
        u64::from_le_bytes(a) as usize
    }

    #[test]
    fn version_one_bytes_still_load() {
        let _torch = volley_common::testing::torch();
        let mut buf = ReplayBuffer::new(5, 3, 1, u64::MAX, Device::Cpu).unwrap();
        push_rows(&mut buf, 0, 7);
        let v2 = buf.to_bytes().unwrap();
        // Version 1: the same without the frame stack field.
        let mut v1 = v2[..34].to_vec();
        v1[4..8].copy_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&v2[38..]);
        let mut back = ReplayBuffer::new(5, 3, 1, u64::MAX, Device::Cpu).unwrap();
        back.load_bytes(&v1).unwrap();
        assert_eq!(back.to_bytes().unwrap(), v2);
        let mut f = frame_buffer(5, false);
        assert!(f.load_bytes(&v1).is_err());
    }

    #[test]
    fn bad_frame_stacks_are_errors() {
        let _torch = volley_common::testing::torch();
        // f32 observations into a frame-stacked buffer.
        let mut f = frame_buffer(10, false);
        let z = |s: &[i64]| Tensor::zeros(s, (Kind::Float, Device::Cpu));
        let e = f
            .push_batch(&z(&[2, 60]), &z(&[2, 1]), &z(&[2]), &z(&[2, 60]), &z(&[2]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("u8 images") && e.contains("Float"), "{e}");
        // Wrong widths and next rows.
        let o = Tensor::zeros([2, 61], (Kind::Uint8, Device::Cpu));
        assert!(f
            .push_batch(&o, &z(&[2, 1]), &z(&[2]), &o, &z(&[2]))
            .is_err());
        assert!(f.is_empty());
        // The memory bound counts the frame ring.
        let atari = FrameStack {
            height: 84,
            width: 84,
            k: 4,
        };
        let needed = ReplayBuffer::frame_bytes_for(1_000_000, atari, 1, false);
        match ReplayBuffer::with_frames(1_000_000, atari, 1, false, 1 << 30, Device::Cpu) {
            Err(ReplayError::TooLarge { needed: n, .. }) => assert_eq!(n, needed),
            other => panic!("{other:?}"),
        }
        let none = FrameStack { k: 0, ..atari };
        assert!(ReplayBuffer::with_frames(10, none, 1, false, u64::MAX, Device::Cpu).is_err());
    }
}
