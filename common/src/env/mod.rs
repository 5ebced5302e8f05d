//! The environment layer: spaces, the vector-env interface and its implementations.
//!
//! - [`space`]: observation and action spaces, validation of action batches;
//! - [`VecEnv`]: a batch of environments stepped together, with same-step auto-reset,
//!   episode statistics and terminated/truncated kept apart;
//! - [`threaded`]: a [`VecEnv`] over any single-env simulator ([`Env`]), stepped on a
//!   pool of worker threads without allocating per step;
//! - [`cartpole`], [`platform`], [`mujoco`]: single-env simulators;
//! - [`procgen`]: the 16 Procgen games through procgen's own vectorised C library;
//! - [`ale`]: Atari 2600 games through the Arcade Learning Environment's emulator;
//! - [`render`]: [`Frame`]s, what an env looks like (RGB, rows top to bottom);
//! - [`registry`]: env ids as users write them (`procgen:starpilot?num_levels=200`,
//!   `Hopper-v5`, ...) and the one constructor, [`make_vec_env`].

pub mod ale;
pub mod cartpole;
pub mod mujoco;
pub mod platform;
pub mod pool;
pub mod procgen;
mod query;
pub mod random;
pub mod registry;
pub mod render;
pub mod space;
pub mod threaded;

use rand_xoshiro::Xoshiro256PlusPlus;

pub use random::RandomActions;
pub use registry::{make_vec_env, EnvId, VecEnvOptions};
pub use render::Frame;
pub use space::{ActionRef, Actions, ParamBox, Space};

/// The random generator of one env: seeded per env, so the same seed gives the same
/// trajectories whatever the thread count.
pub type EnvRng = Xoshiro256PlusPlus;

/// Errors of the environment layer.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("unknown env id '{id}': valid ids are {valid}")]
    UnknownEnv { id: String, valid: String },
    #[error("bad option for env '{id}': {message}")]
    BadOption { id: String, message: String },
    #[error("invalid action: {0}")]
    InvalidAction(String),
    #[error("{what} is missing ({path}): run deploy/setup.sh to install the native dependencies")]
    MissingDependency { what: String, path: String },
    #[error("native library error: {0}")]
    Native(String),
    #[error("bad vector-env settings: {0}")]
    BadSettings(String),
    #[error("an env worker thread panicked: {0}")]
    WorkerPanicked(String),
}

pub type EnvResult<T> = Result<T, EnvError>;

/// Observations of a batch, one row of `obs_len` elements per env.
#[derive(Debug, Clone, PartialEq)]
pub enum ObsBuf {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

impl ObsBuf {
    pub fn len(&self) -> usize {
        match self {
            ObsBuf::F32(v) => v.len(),
            ObsBuf::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            ObsBuf::F32(v) => Some(v),
            ObsBuf::U8(_) => None,
        }
    }

    pub fn as_u8(&self) -> Option<&[u8]> {
        match self {
            ObsBuf::U8(v) => Some(v),
            ObsBuf::F32(_) => None,
        }
    }
}

/// What a vector env returns from `reset` and `step`. Buffers are allocated once and
/// overwritten in place by every call.
///
/// Auto-reset happens in the same step: for an env whose episode ended (terminated or
/// truncated) `obs` already holds the first observation of its next episode, and the
/// observation the episode ended on is in `final_obs` when the env can provide it.
#[derive(Debug, Clone)]
pub struct StepBatch {
    pub num_envs: usize,
    /// Elements per observation row.
    pub obs_len: usize,
    /// Current observation of each env (after auto-reset).
    pub obs: ObsBuf,
    /// Reward of the transition just taken.
    pub reward: Vec<f32>,
    /// The episode ended in a terminal state: do not bootstrap.
    pub terminated: Vec<bool>,
    /// The episode was cut short (time limit): bootstrap from `final_obs`.
    pub truncated: Vec<bool>,
    /// For rows where `terminated || truncated`: the last observation of the episode
    /// that ended. Other rows hold stale data. Empty when `has_final_obs` is false.
    pub final_obs: ObsBuf,
    /// Whether `final_obs` is filled (Procgen resets inside its C library and never
    /// renders the last frame of an episode).
    pub has_final_obs: bool,
    /// For rows where an episode ended: its undiscounted return.
    pub episode_return: Vec<f32>,
    /// For rows where an episode ended: its length in steps.
    pub episode_length: Vec<u32>,
    /// Lives left after the step, before any auto-reset (for a row whose episode ended:
    /// the lives it ended with), in games that have lives (Atari); 0 elsewhere.
    pub lives: Vec<i32>,
    /// The step lost a life (its lives went down; a game over that takes the last life
    /// counts too). Always false in envs without lives. Training can treat it as the
    /// end of an episode (Atari's `episodic_life`) while the game goes on.
    pub life_lost: Vec<bool>,
}

impl StepBatch {
    /// Buffers for `num_envs` envs whose observations are `obs_len` elements of `f32`
    /// (`u8 == false`) or `u8`.
    pub fn new(num_envs: usize, obs_len: usize, u8_obs: bool, has_final_obs: bool) -> Self {
        let buf = |n: usize| {
            if u8_obs {
                ObsBuf::U8(vec![0; n])
            } else {
                ObsBuf::F32(vec![0.0; n])
            }
        };
        StepBatch {
            num_envs,
            obs_len,
            obs: buf(num_envs * obs_len),
            reward: vec![0.0; num_envs],
            terminated: vec![false; num_envs],
            truncated: vec![false; num_envs],
            final_obs: buf(if has_final_obs { num_envs * obs_len } else { 0 }),
            has_final_obs,
            episode_return: vec![0.0; num_envs],
            episode_length: vec![0; num_envs],
            lives: vec![0; num_envs],
            life_lost: vec![false; num_envs],
        }
    }

    /// Whether env `i`'s episode ended in the last step.
    pub fn done(&self, i: usize) -> bool {
        self.terminated[i] || self.truncated[i]
    }

    /// Finished episodes of the last step as `(env index, return, length)`.
    pub fn finished_episodes(&self) -> impl Iterator<Item = (usize, f32, u32)> + '_ {
        (0..self.num_envs)
            .filter(|&i| self.done(i))
            .map(|i| (i, self.episode_return[i], self.episode_length[i]))
    }

    pub(crate) fn clear_step_flags(&mut self) {
        self.reward.fill(0.0);
        self.terminated.fill(false);
        self.truncated.fill(false);
        self.life_lost.fill(false);
    }
}

/// A batch of environments stepped together.
pub trait VecEnv: Send {
    fn num_envs(&self) -> usize;
    fn observation_space(&self) -> &Space;
    fn action_space(&self) -> &Space;
    /// Starts a new episode in every env. Env `i` is seeded from `seed` and `i`, so the
    /// same seed gives the same trajectories for the same actions.
    fn reset(&mut self, seed: u64) -> EnvResult<&StepBatch>;
    /// Steps every env with its action. The whole batch is validated first: an invalid
    /// action is an error and no env is stepped.
    fn step(&mut self, actions: Actions<'_>) -> EnvResult<&StepBatch>;
    /// The batch returned by the last `reset` or `step`.
    fn batch(&self) -> &StepBatch;
    /// Steps after which an episode is truncated by the env's time limit, if it has
    /// one.
    fn time_limit(&self) -> Option<u32> {
        None
    }
    /// What env `index` looks like now, before its next action: the state its current
    /// observation shows (see [`render`] for the layout).
    fn render(&mut self, index: usize) -> EnvResult<Frame>;
}

/// The outcome of one step of a single env.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub reward: f64,
    pub terminated: bool,
    /// The env's own time limit cut the episode short (ALE's frame limit); the vector
    /// env adds its step limit ([`Env::max_episode_steps`]) to it.
    pub truncated: bool,
}

/// The element type of an [`Env`]'s observations: `f32` (vectors) or `u8` (images),
/// and so which [`ObsBuf`] a vector of such envs fills.
pub trait ObsElem: Copy + Default + Send + Sync + 'static {
    /// Whether observations are `u8` (the [`ObsBuf::U8`] variant).
    const U8: bool;
    /// The rows of `buf`, which must be of this element type.
    fn rows(buf: &mut ObsBuf) -> Option<&mut [Self]>;
}

impl ObsElem for f32 {
    const U8: bool = false;
    fn rows(buf: &mut ObsBuf) -> Option<&mut [f32]> {
        match buf {
            ObsBuf::F32(v) => Some(v),
            ObsBuf::U8(_) => None,
        }
    }
}

impl ObsElem for u8 {
    const U8: bool = true;
    fn rows(buf: &mut ObsBuf) -> Option<&mut [u8]> {
        match buf {
            ObsBuf::U8(v) => Some(v),
            ObsBuf::F32(_) => None,
        }
    }
}

/// A single-env simulator, stepped by [`threaded::ThreadedVecEnv`], which adds
/// auto-reset, the time limit and episode statistics. Observations are rows of
/// [`Env::Obs`]: `f32` vectors, or `u8` images (HWC).
pub trait Env: Send + 'static {
    /// `f32` or `u8`.
    type Obs: ObsElem;
    fn observation_space(&self) -> Space;
    fn action_space(&self) -> Space;
    /// Episodes are truncated after this many steps (Gymnasium's `TimeLimit`).
    fn max_episode_steps(&self) -> Option<u32>;
    /// Seeds the env's own generator, for envs that have one (ALE's, which its sticky
    /// actions draw from): called on [`VecEnv::reset`] with env `i`'s seed, before
    /// [`Env::reset`]; auto-resets keep the generator running. The others draw from
    /// the `rng` they are given and ignore it.
    fn seed(&mut self, _seed: u64) -> EnvResult<()> {
        Ok(())
    }
    /// Starts a new episode and writes its first observation.
    fn reset(&mut self, rng: &mut EnvRng, obs: &mut [Self::Obs]) -> EnvResult<()>;
    /// Applies one already-validated action and writes the next observation.
    fn step(
        &mut self,
        action: ActionRef<'_>,
        rng: &mut EnvRng,
        obs: &mut [Self::Obs],
    ) -> EnvResult<Step>;
    /// What the env looks like now (see [`render`] for the layout).
    fn render(&mut self) -> EnvResult<Frame>;
    /// Lives left, in games that have them (Atari).
    fn lives(&self) -> Option<i32> {
        None
    }
}
