//! Frame-stacked observations stored once per frame (as the replay memory of
//! DeepMind's DQN code for Mnih et al. 2015 kept frames, not stacks).
//!
//! An observation of [`FrameStack`] `k` is a `u8` image of `k` channels (HWC) whose
//! channel `c` is the frame of step `t - k + 1 + c`, so consecutive observations of
//! one env share `k - 1` frames and a transition's `obs` and `next_obs` share `k - 1`
//! more. Storing both in full costs `2k` frames per transition; storing each frame
//! once costs about one.
//!
//! Layout: a ring of `frames_for(capacity)` unique frames `[F, h * w]` (`u8`) and, per
//! row of the replay ring, the ring positions of its `obs` frames then its `next_obs`
//! frames (`[capacity, 2k]` `i32`). A batch gathers `[B, 2k, h * w]` frames and
//! permutes them back to `[B, h, w, k]`: the same bytes as the stacks that came in.
//!
//! Deduplication (`plan`): per env, walking a chunk's steps in order, each channel
//! of an observation reuses a frame already stored for the same chunk when its bytes
//! are equal to it: the same channel of the previous step's `next_obs` (for `obs`),
//! the next channel of this step's `obs` (for `next_obs`, shifted by one step), or the
//! previous channel of the same stack (the copies that pad a stack at an episode's
//! start). Otherwise the frame is stored. Reuse is decided by comparing bytes, never
//! assumed, so any input comes back exact: a non-overlapping one only costs more
//! frames. Frames are not shared across chunks (chunks of different actors
//! interleave): a chunk of `T` steps of `N` envs stores about `N * (T + k)` frames for
//! its `N * T` rows, plus one per episode start.
//!
//! Eviction: frames get ids in the order they are stored (frame `i` lives at `i % F`);
//! each row keeps its floor, the lowest id it or any newer row uses (nondecreasing
//! along the ring, since a chunk's frames are all newer than the previous chunk's).
//! Before a chunk's `G` frames are written, the oldest rows go (oldest first, as the
//! row ring always does) until the rows left fit the row ring and every floor is at
//! least `head + G - F`: no live row ever references an overwritten frame. Memory is
//! fixed at `F * h * w + capacity * (8k + row columns + 8)` bytes; the ring holds
//! `capacity` rows as long as the chunks need at most `F / capacity` frames per row
//! (`1 + 1/16`: chunks of `T >= 16k` steps), and the newest rows that fit otherwise
//! ([`super::ReplayBuffer::len`] says how many).

use tch::{Device, Kind, Tensor};

use super::buffer::{ReplayError, ReplayResult};

/// The shape of frame-stacked observations: `u8` images `height x width x k` (HWC)
/// whose `k` channels are consecutive frames, newest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameStack {
    pub height: usize,
    pub width: usize,
    /// Frames per observation (the image's channels).
    pub k: usize,
}

impl FrameStack {
    /// Bytes of one frame.
    pub fn frame_len(&self) -> usize {
        self.height * self.width
    }

    /// Elements of one observation.
    pub fn obs_len(&self) -> usize {
        self.frame_len() * self.k
    }

    /// Frames the ring holds for `capacity` rows: `capacity + capacity / 16` (rounded
    /// up) `+ 2k`, so that chunks of at least `16k` steps keep `capacity` rows and any
    /// single transition fits.
    pub fn frames_for(&self, capacity: usize) -> usize {
        capacity
            .saturating_add(capacity.div_ceil(16))
            .saturating_add(2 * self.k)
    }

    /// Bytes of one row besides its frames: the `2k` `i32` frame positions and the
    /// `u64` floor kept in host memory.
    pub fn row_index_bytes(&self) -> u64 {
        8 * self.k as u64 + 8
    }
}

/// The frame storage of a frame-stacked replay buffer (rows are indexed by the
/// buffer's ring slots).
#[derive(Debug)]
pub(super) struct FrameStore {
    pub(super) stack: FrameStack,
    /// `[F, h * w]` `u8`: frame id `i` at row `i % F`.
    frames: Tensor,
    /// `[capacity, 2k]` `i32`: per row slot, the ring positions of its `obs` frames
    /// then of its `next_obs` frames.
    stacks: Tensor,
    /// Per row slot: the lowest frame id that row or any newer row uses.
    floors: Vec<u64>,
    /// Frames ever stored: the next frame's id.
    head: u64,
}

/// What storing a chunk takes (`plan`).
#[derive(Debug)]
pub(super) struct Plan {
    /// The first row of the chunk kept: the rows before it fit neither the row ring
    /// nor the frame ring together with the later ones.
    pub first_row: usize,
    /// The frames to store, `count * h * w` bytes, oldest first.
    pub frames: Vec<u8>,
    /// Frames in `frames`.
    pub count: usize,
    /// Per kept row, `2k` indices into `frames`: its `obs` stack then its `next_obs`
    /// stack.
    pub stacks: Vec<u32>,
    /// Per kept row, the lowest index it or any later kept row uses.
    pub floors: Vec<u32>,
}

/// Where a candidate frame's bytes are: in `obs` (false) or `next_obs` (true), at
/// this offset.
type Source = (bool, usize);

/// Frame ids for the `k` channels of the stack `cur` (CHW bytes at `at`), reusing a
/// frame of `prev` (another stack's bytes and ids) or an earlier channel of `cur`
/// whenever the bytes are equal, new frames otherwise.
fn assign(
    cur: &[u8],
    at: Source,
    prev: Option<(&[u8], &[u32])>,
    shifted_first: bool,
    hw: usize,
    out: &mut [u32],
    sources: &mut Vec<Source>,
) {
    let k = out.len();
    for c in 0..k {
        let f = &cur[c * hw..(c + 1) * hw];
        let mut id = None;
        if let Some((p, ids)) = prev {
            let order = if shifted_first {
                [c + 1, c]
            } else {
                [c, c + 1]
            };
            id = order
                .into_iter()
                .find(|&j| j < k && &p[j * hw..(j + 1) * hw] == f)
                .map(|j| ids[j]);
        }
        if id.is_none() && c > 0 && &cur[(c - 1) * hw..c * hw] == f {
            id = Some(out[c - 1]);
        }
        out[c] = id.unwrap_or_else(|| {
            sources.push((at.0, at.1 + c * hw));
            (sources.len() - 1) as u32
        });
    }
}

/// The frames and stacks that store a chunk of `steps x envs` time-major rows:
/// `obs` and `next_obs` hold each row's stack channel-major (`[rows, k, h * w]`
/// bytes; `next_obs` the observation after the step, the real last one where an
/// episode ended) and row `r` bootstraps from the `next_obs` of `next_row[r]`.
/// Keeps the newest rows that fit `max_rows` rows and `max_frames` frames (at least
/// one when `max_frames >= 2k`).
pub(super) fn plan(
    obs: &[u8],
    next_obs: &[u8],
    (steps, envs): (usize, usize),
    next_row: &[i64],
    stack: FrameStack,
    (max_rows, max_frames): (usize, usize),
) -> Plan {
    let (k, hw) = (stack.k, stack.frame_len());
    let (rows, sl) = (steps * envs, k * hw);
    let mut sources: Vec<Source> = Vec::with_capacity(rows + 2 * k * envs);
    let mut obs_ids = vec![0u32; rows * k];
    let mut next_ids = vec![0u32; rows * k];
    for t in 0..steps {
        for e in 0..envs {
            let r = t * envs + e;
            let cur = &obs[r * sl..(r + 1) * sl];
            // obs[t] continues the stack of next_obs[t - 1] channel for channel.
            let prev = (t > 0).then(|| {
                let p = r - envs;
                (
                    &next_obs[p * sl..(p + 1) * sl],
                    &next_ids[p * k..(p + 1) * k],
                )
            });
            assign(
                cur,
                (false, r * sl),
                prev,
                false,
                hw,
                &mut obs_ids[r * k..(r + 1) * k],
                &mut sources,
            );
            // next_obs[t] is obs[t] shifted by one frame.
            assign(
                &next_obs[r * sl..(r + 1) * sl],
                (true, r * sl),
                Some((cur, &obs_ids[r * k..(r + 1) * k])),
                true,
                hw,
                &mut next_ids[r * k..(r + 1) * k],
                &mut sources,
            );
        }
    }
    let row_stack = |r: usize| {
        let n = next_row[r] as usize;
        obs_ids[r * k..(r + 1) * k]
            .iter()
            .chain(&next_ids[n * k..(n + 1) * k])
    };
    // The newest rows whose frames fit.
    let mut used = vec![false; sources.len()];
    let (mut first, mut count) = (rows, 0usize);
    let mut fresh = Vec::with_capacity(2 * k);
    while first > 0 && rows - first < max_rows {
        fresh.clear();
        for &id in row_stack(first - 1) {
            if !used[id as usize] && !fresh.contains(&id) {
                fresh.push(id);
            }
        }
        if count + fresh.len() > max_frames {
            break;
        }
        for &id in &fresh {
            used[id as usize] = true;
        }
        count += fresh.len();
        first -= 1;
    }
    // The used frames, renumbered in order (so floors stay nondecreasing).
    let mut rank = vec![0u32; sources.len()];
    let mut frames = Vec::with_capacity(count * hw);
    let mut n = 0u32;
    for (i, &(in_next, at)) in sources.iter().enumerate() {
        if used[i] {
            rank[i] = n;
            n += 1;
            let src = if in_next { next_obs } else { obs };
            frames.extend_from_slice(&src[at..at + hw]);
        }
    }
    let mut stacks = Vec::with_capacity((rows - first) * 2 * k);
    for r in first..rows {
        stacks.extend(row_stack(r).map(|&id| rank[id as usize]));
    }
    let mut floors = vec![0u32; rows - first];
    let mut low = u32::MAX;
    for (i, f) in floors.iter_mut().enumerate().rev() {
        let row_min = stacks[i * 2 * k..(i + 1) * 2 * k]
            .iter()
            .copied()
            .min()
            .unwrap_or(u32::MAX);
        low = low.min(row_min);
        *f = low;
    }
    Plan {
        first_row: first,
        frames,
        count,
        stacks,
        floors,
    }
}

/// `[rows, k * h * w]` HWC stacks as channel-major bytes, `[rows, k, h * w]`.
pub(super) fn channel_major(t: &Tensor, stack: FrameStack) -> ReplayResult<Vec<u8>> {
    let rows = t.size().first().copied().unwrap_or(0);
    let chw = t
        .f_to_device(Device::Cpu)?
        .f_reshape([rows, stack.frame_len() as i64, stack.k as i64])?
        .f_permute([0, 2, 1])?
        .f_contiguous()?;
    let n = chw.numel();
    let mut out = vec![0u8; n];
    chw.f_copy_data_u8(&mut out, n)?;
    Ok(out)
}

/// Copies `src` (`n` rows) into the ring `dst` of `cap` rows from row `at`, wrapping.
pub(super) fn write_ring(dst: &Tensor, src: &Tensor, at: i64, cap: i64) -> ReplayResult<()> {
    let n = src.size().first().copied().unwrap_or(0);
    let first = n.min(cap - at);
    dst.f_narrow(0, at, first)?
        .f_copy_(&src.f_narrow(0, 0, first)?)?;
    if n > first {
        dst.f_narrow(0, 0, n - first)?
            .f_copy_(&src.f_narrow(0, first, n - first)?)?;
    }
    Ok(())
}

impl FrameStore {
    /// Empty storage for `capacity` rows on `device`.
    pub(super) fn alloc(
        stack: FrameStack,
        capacity: usize,
        device: Device,
    ) -> Result<FrameStore, tch::TchError> {
        let f = stack.frames_for(capacity) as i64;
        Ok(FrameStore {
            stack,
            frames: Tensor::f_zeros([f, stack.frame_len() as i64], (Kind::Uint8, device))?,
            stacks: Tensor::f_zeros([capacity as i64, 2 * stack.k as i64], (Kind::Int, device))?,
            floors: vec![0; capacity],
            head: 0,
        })
    }

    /// Frames the ring holds.
    pub(super) fn capacity(&self) -> usize {
        self.frames.size()[0] as usize
    }

    /// The oldest frame id the rows from `slot` on use (`head` when there are none).
    pub(super) fn tail(&self, oldest_slot: Option<usize>) -> u64 {
        oldest_slot.map_or(self.head, |s| self.floors[s])
    }

    /// Frames the live rows (from `oldest_slot`) may use.
    pub(super) fn held(&self, oldest_slot: Option<usize>) -> usize {
        (self.head - self.tail(oldest_slot)) as usize
    }

    /// The floor of the row at `slot`.
    pub(super) fn floor(&self, slot: usize) -> u64 {
        self.floors[slot]
    }

    /// The id of the first frame a plan of `count` frames may overwrite: rows with a
    /// lower floor must go before it is written.
    pub(super) fn overwrite_floor(&self, count: usize) -> u64 {
        (self.head + count as u64).saturating_sub(self.capacity() as u64)
    }

    /// Writes a plan's frames and stacks, its rows at slots `slot..` of a ring of
    /// `cap` rows (the caller made room: no live row uses a frame this overwrites).
    pub(super) fn write(&mut self, p: &Plan, slot: usize, cap: usize) -> ReplayResult<()> {
        let f = self.capacity() as u64;
        let (hw, k2) = (self.stack.frame_len() as i64, 2 * self.stack.k as i64);
        let device = self.frames.device();
        let frames = Tensor::f_from_slice(&p.frames)?
            .f_view([p.count as i64, hw])?
            .f_to_device(device)?;
        let stacks: Vec<i32> = p
            .stacks
            .iter()
            .map(|&i| ((self.head + u64::from(i)) % f) as i32)
            .collect();
        let kept = p.floors.len();
        let stacks = Tensor::f_from_slice(&stacks)?
            .f_view([kept as i64, k2])?
            .f_to_device(device)?;
        write_ring(&self.frames, &frames, (self.head % f) as i64, f as i64)?;
        write_ring(&self.stacks, &stacks, slot as i64, cap as i64)?;
        for (i, &fl) in p.floors.iter().enumerate() {
            self.floors[(slot + i) % cap] = self.head + u64::from(fl);
        }
        self.head += p.count as u64;
        Ok(())
    }

    /// `obs` and `next_obs` `[B, h * w * k]` (HWC) of the rows at `slots` (on the
    /// storage device).
    pub(super) fn gather(&self, slots: &Tensor) -> ReplayResult<(Tensor, Tensor)> {
        let b = slots.size()[0];
        let (k, hw) = (self.stack.k as i64, self.stack.frame_len() as i64);
        let ids = self
            .stacks
            .f_index_select(0, slots)?
            .f_to_kind(Kind::Int64)?
            .f_view([-1])?;
        let both = self
            .frames
            .f_index_select(0, &ids)?
            .f_view([b, 2, k, hw])?
            .f_permute([1, 0, 3, 2])?
            .f_reshape([2, b, hw * k])?;
        Ok((both.f_get(0)?, both.f_get(1)?))
    }

    /// The frames from id `tail` to the head, oldest first, `[n, h * w]` on the CPU.
    pub(super) fn frames_from(&self, tail: u64) -> ReplayResult<Tensor> {
        let f = self.capacity() as u64;
        let n = (self.head - tail) as i64;
        let at = (tail % f) as i64;
        let first = n.min(f as i64 - at);
        let mut parts = vec![self.frames.f_narrow(0, at, first)?];
        if n > first {
            parts.push(self.frames.f_narrow(0, 0, n - first)?);
        }
        Ok(Tensor::f_cat(&parts, 0)?.f_to_device(Device::Cpu)?)
    }

    /// The stacks of the rows at `slots` as offsets from frame id `tail`, `[n, 2k]`
    /// row-major.
    pub(super) fn stacks_from(&self, slots: &Tensor, tail: u64) -> ReplayResult<Vec<i32>> {
        let f = self.capacity() as i64;
        let at = (tail % self.capacity() as u64) as i64;
        let pos = Vec::<i32>::try_from(
            self.stacks
                .f_index_select(0, slots)?
                .f_to_device(Device::Cpu)?
                .f_reshape([-1])?,
        )?;
        Ok(pos
            .into_iter()
            .map(|p| (i64::from(p) - at).rem_euclid(f) as i32)
            .collect())
    }

    /// Replaces everything with `frames` (`[n, h * w]`, `n` at most the ring's) and
    /// rows `0..` whose stacks index them (`[rows, 2k]` row-major, checked below `n`).
    pub(super) fn load(&mut self, frames: &Tensor, stacks: &[i32]) -> ReplayResult<()> {
        let n = frames.size()[0];
        let k2 = 2 * self.stack.k;
        let rows = stacks.len() / k2;
        if n as usize > self.capacity() || rows > self.floors.len() {
            return Err(ReplayError::BadBytes(format!(
                "{n} frames and {rows} rows, this buffer holds {} and {}",
                self.capacity(),
                self.floors.len()
            )));
        }
        if let Some(bad) = stacks.iter().find(|&&i| i < 0 || i64::from(i) >= n) {
            return Err(ReplayError::BadBytes(format!(
                "frame index {bad} out of the {n} stored"
            )));
        }
        if n > 0 {
            self.frames
                .f_narrow(0, 0, n)?
                .f_copy_(&frames.f_to_device(self.frames.device())?)?;
        }
        if rows > 0 {
            let st = Tensor::f_from_slice(stacks)?.f_view([rows as i64, k2 as i64])?;
            self.stacks
                .f_narrow(0, 0, rows as i64)?
                .f_copy_(&st.f_to_device(self.stacks.device())?)?;
        }
        let mut low = u64::MAX;
        for r in (0..rows).rev() {
            let m = stacks[r * k2..(r + 1) * k2]
                .iter()
                .copied()
                .min()
                .unwrap_or(0);
            low = low.min(m as u64);
            self.floors[r] = low;
        }
        self.head = n as u64;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod synth {
    //! Synthetic frame-stacked observations for tests: every frame has bytes of its
    //! own (its id first), so a wrong or stale frame never passes for the right one.

    use std::collections::HashMap;

    use rand::{Rng, SeedableRng};
    use tch::{Device, Kind, Tensor};
    use volley_common::env::EnvRng;

    use super::FrameStack;

    /// How the synthetic envs behave.
    #[derive(Debug, Clone, Copy)]
    pub struct Style {
        /// Consecutive observations share `k - 1` frames (Atari); otherwise every
        /// stack is `k` new frames.
        pub overlap: bool,
        /// Mean episode length.
        pub episode: usize,
        /// Chance that a step's new frame repeats the last one (a still screen).
        pub repeat: f64,
        /// Chance that `obs[t + 1]` is not `next_obs[t]` though the episode goes on.
        pub glitch: f64,
    }

    /// `envs` synthetic envs, each with its current stack of frame ids.
    #[derive(Debug)]
    pub struct Envs {
        stack: FrameStack,
        style: Style,
        rng: EnvRng,
        next_id: u64,
        stacks: Vec<Vec<u64>>,
        left: Vec<usize>,
    }

    /// One chunk, time-major rows.
    #[derive(Debug)]
    pub struct Chunk {
        pub steps: usize,
        pub envs: usize,
        /// `[rows, h * w * k]` `u8`, HWC.
        pub obs: Tensor,
        /// `[rows, h * w * k]`: the observation after each step.
        pub next_obs: Tensor,
        /// `[rows, 1]` `f32`.
        pub actions: Tensor,
        pub rewards: Vec<f32>,
        pub terminated: Vec<bool>,
        pub truncated: Vec<bool>,
    }

    /// The bytes of frame `id`: the id, then a stream seeded by it.
    fn frame_bytes(id: u64, hw: usize, out: &mut Vec<u8>) {
        let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for i in 0..hw {
            if i < 8 {
                out.push((id >> (8 * i)) as u8);
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                out.push(x as u8);
            }
        }
    }

    impl Envs {
        pub fn new(stack: FrameStack, envs: usize, style: Style, seed: u64) -> Envs {
            let mut e = Envs {
                stack,
                style,
                rng: EnvRng::seed_from_u64(seed),
                // Apart per seed, so two generators never share a frame's bytes.
                next_id: seed << 40,
                stacks: Vec::new(),
                left: Vec::new(),
            };
            for _ in 0..envs {
                let s = e.reset_stack();
                e.stacks.push(s);
                let l = e.episode();
                e.left.push(l);
            }
            e
        }

        fn fresh(&mut self) -> u64 {
            self.next_id += 1;
            self.next_id
        }

        fn fresh_stack(&mut self) -> Vec<u64> {
            (0..self.stack.k).map(|_| self.fresh()).collect()
        }

        /// An episode's first stack: its first frame `k` times.
        fn reset_stack(&mut self) -> Vec<u64> {
            if self.style.overlap {
                vec![self.fresh(); self.stack.k]
            } else {
                self.fresh_stack()
            }
        }

        fn episode(&mut self) -> usize {
            let m = self.style.episode.max(2);
            self.rng.random_range(m / 2..=m + m / 2)
        }

        /// The next `steps` steps of every env.
        pub fn chunk(&mut self, steps: usize) -> Chunk {
            let envs = self.stacks.len();
            let rows = steps * envs;
            let (mut obs_ids, mut next_ids) = (Vec::new(), Vec::new());
            let (mut terminated, mut truncated) = (vec![false; rows], vec![false; rows]);
            for t in 0..steps {
                for e in 0..envs {
                    let r = t * envs + e;
                    let cur = self.stacks[e].clone();
                    obs_ids.extend(&cur);
                    let next = if self.style.overlap {
                        let new = match cur.last() {
                            Some(&last) if self.rng.random::<f64>() < self.style.repeat => last,
                            _ => self.fresh(),
                        };
                        let mut n = cur[1..].to_vec();
                        n.push(new);
                        n
                    } else {
                        self.fresh_stack()
                    };
                    next_ids.extend(&next);
                    self.left[e] -= 1;
                    if self.left[e] == 0 {
                        if self.rng.random::<bool>() {
                            terminated[r] = true;
                        } else {
                            truncated[r] = true;
                        }
                        self.left[e] = self.episode();
                        self.stacks[e] = self.reset_stack();
                    } else if !self.style.overlap || self.rng.random::<f64>() < self.style.glitch {
                        self.stacks[e] = self.fresh_stack();
                    } else {
                        self.stacks[e] = next;
                    }
                }
            }
            let rewards = (0..rows)
                .map(|_| self.rng.random_range(-1.0..1.0))
                .collect();
            let actions: Vec<f32> = (0..rows)
                .map(|_| self.rng.random_range(0..6) as f32)
                .collect();
            Chunk {
                steps,
                envs,
                obs: self.images(&obs_ids),
                next_obs: self.images(&next_ids),
                actions: Tensor::from_slice(&actions).view([rows as i64, 1]),
                rewards,
                terminated,
                truncated,
            }
        }

        /// `[rows, h * w * k]` HWC images of stacks of frame ids (`k` per row).
        fn images(&self, ids: &[u64]) -> Tensor {
            let (k, hw) = (self.stack.k as i64, self.stack.frame_len());
            let mut bank = Vec::new();
            let mut at: HashMap<u64, i64> = HashMap::new();
            let idx: Vec<i64> = ids
                .iter()
                .map(|&id| {
                    let n = at.len() as i64;
                    *at.entry(id).or_insert_with(|| {
                        frame_bytes(id, hw, &mut bank);
                        n
                    })
                })
                .collect();
            let rows = ids.len() as i64 / k;
            Tensor::from_slice(&bank)
                .view([at.len() as i64, hw as i64])
                .index_select(0, &Tensor::from_slice(&idx))
                .view([rows, k, hw as i64])
                .permute([0, 2, 1])
                .reshape([rows, hw as i64 * k])
                .to_kind(Kind::Uint8)
                .to_device(Device::Cpu)
        }
    }
}
