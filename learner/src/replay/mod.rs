//! Experience replay (Lin 1992; Mnih et al. 2015), the data source of the off-policy
//! algorithms.
//!
//! [`ReplayBuffer`]: a ring of the last `capacity` transitions `(obs, action, reward,
//! next_obs, terminated, horizon)` with uniform sampling with replacement
//! (Stable-Baselines3's `ReplayBuffer`, which CleanRL uses). Storage is preallocated
//! tensors of `capacity` rows on one device (`u8` observations for images, `f32`
//! otherwise), so a batch is an `index_select` there: on the GPU when the buffer fits
//! in its memory, otherwise in host memory (the constructor falls back to the CPU
//! when the allocation on the GPU fails) and each batch is copied to the training
//! device. Its filled rows travel as bytes for checkpoints
//! ([`ReplayBuffer::to_bytes`]).
//!
//! [`ReplayFeed`]: what the training loop draws from. A chunk's transitions go into
//! the buffer (`n`-step returns computed within the chunk, [`nstep_transitions`]);
//! once the buffer holds `learning_starts` transitions, every env step stored buys
//! `replay_ratio` gradient updates, the fraction carried over, run before the next
//! chunk is taken. The ratio therefore holds exactly: a learner that falls behind
//! leaves chunks in its bounded queue, which fills and slows the actors.
//!
//! Frame stacks ([`FrameStack`], `ReplaySettings::frame_stack`): observations that are
//! `u8` images whose `k` channels are the last `k` frames (Atari) are stored as a ring
//! of unique frames plus per transition the indices of its `obs` and `next_obs`
//! frames, about one frame per transition instead of `2k`; batches come back as the
//! same whole observations ([`frames`] has the layout, deduplication and eviction).
//!
//! Time limits: a truncated transition is stored with `terminated = false` and the
//! real last observation of the episode as `next_obs`, so its target bootstraps; a
//! terminated one is stored with `terminated = true` and its target does not. Envs
//! without a final observation (Procgen) store truncations as terminal.

mod buffer;
mod feed;
pub mod frames;

pub use buffer::{
    ChunkTransitions, ReplayBatch, ReplayBuffer, ReplayError, ReplayResult, Transitions,
};
pub use feed::{
    nstep_transitions, NStep, ObsFormat, ReplayAccounting, ReplayFeed, ReplaySettings, UpdateBudget,
};
pub use frames::FrameStack;
