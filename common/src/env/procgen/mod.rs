//! The 16 Procgen games (Cobbe et al. 2020, "Leveraging Procedural Generation to
//! Benchmark Reinforcement Learning") through procgen's own C library, `libenv.so`
//! from the procgen 0.10.7 wheel, loaded at run time.
//!
//! - [`options`]: ids (`procgen:starpilot?distribution_mode=easy&num_levels=200`), their
//!   options and defaults (those of procgen's Python `ProcgenGym3Env`);
//! - [`ffi`]: the libenv C ABI and the owner of one library env;
//! - [`ProcgenVecEnv`]: the [`VecEnv`].
//!
//! Layout: every env is its own single-game libenv instance made with `num_threads=0`,
//! stepped synchronously on a [`Pool`] whose threads take envs one at a time. libenv writes observations, rewards,
//! first flags and infos straight into the rows of the [`StepBatch`] (no copy). Env `i`
//! is made with `rand_seed = env_rand_seed(seed, i)`, so its levels depend only on the
//! reset seed and `i`, not on the number of envs or threads. libenv honours `rand_seed`
//! in every `libenv_make` of a process (it seeds each game's level-seed generator; only
//! the assets folder is read once per process), so `reset(seed)` re-makes every instance.
//!
//! Episode ends: libenv resets a game inside `act` and marks the next observation
//! `first`; the reward of that step is the last reward of the ended episode, and the
//! final frame is never rendered (`has_final_obs = false`). An end is a truncation when
//! the game's step counter reached its timeout (`Game::step`: `done |= cur_time >=
//! timeout`; 1000 steps for most games, see [`ProcgenConfig::timeout`]) without the
//! level being completed (`prev_level_complete`); otherwise it is a termination. A game
//! that dies on exactly its last allowed step is indistinguishable from a timeout and
//! counts as truncated.
//!
//! Frames ([`VecEnv::render`]): envs made with `render = true` ([`ProcgenVecEnv::with_render`],
//! `VecEnvOptions::render`) are made with libenv's `render_human` option, as procgen's Python
//! `ProcgenGym3Env(render_mode="rgb_array")` makes them, and `render(i)` returns the 512x512
//! antialiased drawing of game `i`'s current state (libenv's `rgb` info). libenv draws it in
//! `libenv_observe` for every game of an instance; here each env is its own instance and
//! `step` only calls `libenv_act`, so the drawing happens in `render(i)`, for game `i` alone,
//! from the state its current observation shows: stepping costs no more than without
//! `render` unless frames are asked for. Other envs return their 64x64 observation as the
//! frame. Drawing never changes a game's state, so trajectories are the same either way.

pub mod ffi;
pub mod options;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use ffi::{EnvBuffers, Instance, Lib, OptValue, OptionList};
pub use options::{DistributionMode, ProcgenConfig, GAMES, OPTIONS};

use super::pool::{Pool, Rows};
use super::{Actions, EnvError, EnvResult, Frame, ObsBuf, Space, StepBatch, VecEnv};

/// Observation side and channels of every game.
pub const RES: usize = 64;
const OBS_LEN: usize = ffi::OBS_BYTES;
/// procgen's 15 button combinations.
pub const NUM_ACTIONS: usize = 15;
/// Side of the full-size frames of envs made with `render`.
pub const RENDER_RES: usize = ffi::RENDER_RES;
/// Stack of the thread that draws a full-size frame: libenv's `observe` keeps a 1 MiB
/// drawing buffer on the stack, half of a Rust thread's default 2 MiB.
const DRAW_STACK: usize = 16 << 20;

/// The `rand_seed` env `i` is made with after `reset(seed)`: splitmix64 of the seed and
/// the index, cut to 31 bits (libenv takes a non-negative C int).
pub fn env_rand_seed(seed: u64, i: usize) -> i32 {
    let z = splitmix64(seed.wrapping_add(splitmix64(i as u64)));
    (z >> 33) as i32
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How the envs map onto libenv instances and threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One instance per env (`num_threads=0`), stepped on our [`Pool`].
    PerEnv,
    /// One instance holding every env, stepped by libenv's own `threads` threads
    /// (0 = synchronous). Kept for benchmarks: slower, and its levels depend on the
    /// number of envs.
    Native { threads: usize },
}

/// `num_envs` Procgen games of one config.
pub struct ProcgenVecEnv {
    /// Declared first so they are closed before the buffers they write into are freed.
    instances: Vec<Instance>,
    lib: &'static Lib,
    cfg: ProcgenConfig,
    /// The assets folder, with a trailing '/', as libenv wants it.
    resource_root: String,
    layout: Layout,
    batch: StepBatch,
    /// libenv's per-env buffers besides the batch: first flags, actions as i32, infos.
    first: Vec<u8>,
    actions: Vec<i32>,
    prev_level_seed: Vec<i32>,
    prev_level_complete: Vec<u8>,
    level_seed: Vec<i32>,
    /// Whether the instances were made with `render_human`.
    render: bool,
    /// libenv's `rgb` info of each env, 512x512x3 bytes per env, with `render` (else
    /// empty). Written by `libenv_observe`, which `render(i)` calls.
    frames: Vec<u8>,
    /// Running episode return and length, and steps since the game's last internal
    /// reset (differs from the length with `use_sequential_levels`).
    ret: Vec<f64>,
    len: Vec<u32>,
    level_steps: Vec<u32>,
    /// The game's time limit, for telling truncations from terminations.
    timeout: u32,
    obs_space: Space,
    act_space: Space,
    /// Next env to step in the current round, shared by the pool's threads.
    next: AtomicUsize,
    pool: Pool,
    /// Until the first reset, stepping is an error.
    was_reset: bool,
}

impl std::fmt::Debug for ProcgenVecEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcgenVecEnv")
            .field("id", &self.cfg.to_id_string())
            .field("num_envs", &self.batch.num_envs)
            .field("layout", &self.layout)
            .field("threads", &self.pool.threads())
            .finish()
    }
}

impl ProcgenVecEnv {
    /// `num_envs` games of `cfg` stepped on `threads` threads (the caller's included;
    /// at most one per env). Loads `libenv.so` from [`crate::deps::procgen_dir`].
    pub fn new(cfg: &ProcgenConfig, num_envs: usize, threads: usize) -> EnvResult<Self> {
        Self::with_layout(cfg, num_envs, threads, Layout::PerEnv, false)
    }

    /// [`ProcgenVecEnv::new`] with `render`: whether [`VecEnv::render`] draws full-size
    /// 512x512 frames (libenv's `render_human`; see the module docs) rather than returning
    /// the 64x64 observation. Costs 768 KiB per env; stepping costs the same.
    pub fn with_render(
        cfg: &ProcgenConfig,
        num_envs: usize,
        threads: usize,
        render: bool,
    ) -> EnvResult<Self> {
        Self::with_layout(cfg, num_envs, threads, Layout::PerEnv, render)
    }

    /// One libenv instance of `num_envs` games stepped by libenv's own
    /// `libenv_threads` threads (0: synchronous), as procgen's Python binding does.
    /// For benchmarks and conformance checks: slower than [`ProcgenVecEnv::new`], and
    /// env `i` is seeded from the reset seed (cut to 31 bits) and its position in
    /// the batch, exactly as `ProcgenGym3Env(rand_seed=seed)`.
    #[doc(hidden)]
    pub fn with_libenv_threads(
        cfg: &ProcgenConfig,
        num_envs: usize,
        libenv_threads: usize,
    ) -> EnvResult<Self> {
        Self::with_layout(
            cfg,
            num_envs,
            1,
            Layout::Native {
                threads: libenv_threads,
            },
            false,
        )
    }

    fn with_layout(
        cfg: &ProcgenConfig,
        num_envs: usize,
        threads: usize,
        layout: Layout,
        render: bool,
    ) -> EnvResult<Self> {
        if num_envs == 0 {
            return Err(EnvError::BadSettings("need at least one env".into()));
        }
        if threads == 0 {
            return Err(EnvError::BadSettings(
                "thread count must be at least 1".into(),
            ));
        }
        if num_envs > i32::MAX as usize {
            return Err(EnvError::BadSettings(format!("too many envs: {num_envs}")));
        }
        // Re-validate: the library aborts the process on a bad option.
        let query = cfg.to_id_string();
        let reparsed = query
            .split_once('?')
            .map(|(_, q)| ProcgenConfig::parse(&cfg.game, Some(q)))
            .unwrap_or_else(|| ProcgenConfig::parse(&cfg.game, None))?;
        if &reparsed != cfg {
            return Err(EnvError::BadOption {
                id: query,
                message: format!("inconsistent procgen config {cfg:?}"),
            });
        }
        let dir = crate::deps::procgen_dir();
        let lib = ffi::load(&dir)?;
        let mut root: PathBuf = dir.join("assets");
        root.push("");
        let resource_root = root
            .to_str()
            .ok_or_else(|| {
                EnvError::Native(format!(
                    "the procgen assets path {} is not valid UTF-8",
                    root.display()
                ))
            })?
            .to_string();
        let threads = match layout {
            Layout::PerEnv => threads.min(num_envs),
            Layout::Native { .. } => 1,
        };
        let n = num_envs;
        let mut env = ProcgenVecEnv {
            instances: Vec::with_capacity(n),
            lib,
            cfg: cfg.clone(),
            resource_root,
            layout,
            batch: StepBatch::new(n, OBS_LEN, true, false),
            first: vec![0; n],
            actions: vec![0; n],
            prev_level_seed: vec![0; n],
            prev_level_complete: vec![0; n],
            level_seed: vec![0; n],
            render,
            frames: if render {
                vec![0; n * ffi::RENDER_BYTES]
            } else {
                Vec::new()
            },
            ret: vec![0.0; n],
            len: vec![0; n],
            level_steps: vec![0; n],
            timeout: cfg.timeout(),
            obs_space: Space::Image {
                height: RES,
                width: RES,
                channels: 3,
            },
            act_space: Space::Discrete { n: NUM_ACTIONS },
            next: AtomicUsize::new(0),
            pool: Pool::new(threads, "volley-procgen")?,
            was_reset: false,
        };
        // Make the instances now, so that a broken installation fails here.
        env.make_instances(0)?;
        Ok(env)
    }

    /// The config these envs were made from.
    pub fn config(&self) -> &ProcgenConfig {
        &self.cfg
    }

    /// libenv's raw `first` flags of the last reset or step: 1 where the observation
    /// starts a new episode.
    pub fn first(&self) -> &[u8] {
        &self.first
    }

    /// The level seed each env is playing (libenv's `level_seed` info).
    pub fn level_seed(&self) -> &[i32] {
        &self.level_seed
    }

    /// Whether the level that ended in the last step was completed (libenv's
    /// `prev_level_complete` info).
    pub fn prev_level_complete(&self) -> &[u8] {
        &self.prev_level_complete
    }

    fn option_values(&self, rand_seed: i32, num_threads: usize) -> Vec<(&'static str, OptValue)> {
        let c = &self.cfg;
        // Every value was checked by `ProcgenConfig::parse` (levels fit in i32).
        let int = |v: u32| OptValue::Int(i32::try_from(v).unwrap_or(i32::MAX));
        vec![
            ("env_name", OptValue::Str(c.game.clone())),
            ("num_levels", int(c.num_levels)),
            ("start_level", int(c.start_level)),
            ("num_actions", OptValue::Int(NUM_ACTIONS as i32)),
            (
                "use_sequential_levels",
                OptValue::Bool(c.use_sequential_levels),
            ),
            ("debug_mode", OptValue::Int(0)),
            ("rand_seed", OptValue::Int(rand_seed)),
            (
                "num_threads",
                OptValue::Int(i32::try_from(num_threads).unwrap_or(i32::MAX)),
            ),
            ("render_human", OptValue::Bool(self.render)),
            ("resource_root", OptValue::Str(self.resource_root.clone())),
            ("center_agent", OptValue::Bool(c.center_agent)),
            (
                "use_generated_assets",
                OptValue::Bool(c.use_generated_assets),
            ),
            (
                "use_monochrome_assets",
                OptValue::Bool(c.use_monochrome_assets),
            ),
            ("restrict_themes", OptValue::Bool(c.restrict_themes)),
            ("use_backgrounds", OptValue::Bool(c.use_backgrounds)),
            ("paint_vel_info", OptValue::Bool(c.paint_vel_info)),
            (
                "distribution_mode",
                OptValue::Int(c.distribution_mode.c_value()),
            ),
        ]
    }

    /// Buffers of env `i` onwards.
    fn buffers_from(&mut self, i: usize) -> EnvBuffers {
        let obs = match &mut self.batch.obs {
            ObsBuf::U8(v) => v.as_mut_ptr(),
            // Built with `u8_obs = true` in `with_layout`.
            ObsBuf::F32(_) => unreachable!("procgen observations are u8"),
        };
        EnvBuffers {
            obs: obs.wrapping_add(i * OBS_LEN),
            reward: self.batch.reward.as_mut_ptr().wrapping_add(i),
            first: self.first.as_mut_ptr().wrapping_add(i),
            action: self.actions.as_mut_ptr().wrapping_add(i),
            prev_level_seed: self.prev_level_seed.as_mut_ptr().wrapping_add(i),
            prev_level_complete: self.prev_level_complete.as_mut_ptr().wrapping_add(i),
            level_seed: self.level_seed.as_mut_ptr().wrapping_add(i),
            rgb: if self.render {
                self.frames.as_mut_ptr().wrapping_add(i * ffi::RENDER_BYTES)
            } else {
                std::ptr::null_mut()
            },
        }
    }

    /// Closes the instances and makes new ones seeded from `seed`; each resets and
    /// writes its first observation.
    fn make_instances(&mut self, seed: u64) -> EnvResult<()> {
        self.was_reset = false;
        self.instances.clear();
        let n = self.batch.num_envs;
        match self.layout {
            Layout::PerEnv => {
                for i in 0..n {
                    let mut opts = OptionList::new(&self.option_values(env_rand_seed(seed, i), 0))?;
                    let mut inst = Instance::make(self.lib, 1, &mut opts, self.render)?;
                    let bufs = self.buffers_from(i);
                    // SAFETY: row `i` of every buffer is allocated once (never resized)
                    // and outlives the instance, which is dropped first; only this
                    // instance writes row `i`.
                    unsafe { inst.set_buffers(bufs, 1) };
                    self.instances.push(inst);
                }
            }
            Layout::Native { threads } => {
                let rand_seed = (seed & 0x7fff_ffff) as i32;
                let mut opts = OptionList::new(&self.option_values(rand_seed, threads))?;
                let mut inst = Instance::make(self.lib, n, &mut opts, self.render)?;
                let bufs = self.buffers_from(0);
                // SAFETY: every buffer has `n` rows, is never resized and outlives the
                // instance, which is dropped first.
                unsafe { inst.set_buffers(bufs, n) };
                // SAFETY: as above; waits for libenv's threads to finish the resets.
                unsafe { inst.observe() };
                self.instances.push(inst);
            }
        }
        Ok(())
    }
}

impl VecEnv for ProcgenVecEnv {
    fn num_envs(&self) -> usize {
        self.batch.num_envs
    }

    fn time_limit(&self) -> Option<u32> {
        Some(self.timeout)
    }

    /// With `render`: the 512x512 drawing of game `index`'s current state (what its
    /// current observation shows), drawn now. Without: its 64x64 observation.
    fn render(&mut self, index: usize) -> EnvResult<Frame> {
        let n = self.batch.num_envs;
        if index >= n {
            return Err(EnvError::BadSettings(format!(
                "no env {index} to render: there are {n}"
            )));
        }
        if !self.render {
            let Some(obs) = self.batch.obs.as_u8() else {
                unreachable!("procgen observations are u8")
            };
            let row = obs[index * OBS_LEN..(index + 1) * OBS_LEN].to_vec();
            return Frame::from_rgb(RES as u32, RES as u32, row);
        }
        // One instance of every env (made by `with_libenv_threads`) draws them all in the
        // `observe` that ends each reset and step: its frames are current already.
        if self.layout == Layout::PerEnv {
            let inst = &mut self.instances[index];
            std::thread::scope(|s| {
                std::thread::Builder::new()
                    .name("volley-procgen-draw".into())
                    .stack_size(DRAW_STACK)
                    // SAFETY: the instance's buffers are valid (set in `make_instances`); with
                    // num_threads=0 observe only draws game `index` into its `rgb` row, which
                    // nothing else touches while `self` is borrowed here.
                    .spawn_scoped(s, move || unsafe { inst.observe() })
                    .map_err(|e| EnvError::Native(format!("cannot start a drawing thread: {e}")))?
                    .join()
                    .map_err(|_| EnvError::WorkerPanicked("procgen's drawing thread".into()))
            })?;
        }
        let b = ffi::RENDER_BYTES;
        let rgb = self.frames[index * b..(index + 1) * b].to_vec();
        Frame::from_rgb(RENDER_RES as u32, RENDER_RES as u32, rgb)
    }

    fn observation_space(&self) -> &Space {
        &self.obs_space
    }

    fn action_space(&self) -> &Space {
        &self.act_space
    }

    fn reset(&mut self, seed: u64) -> EnvResult<&StepBatch> {
        self.make_instances(seed)?;
        self.batch.clear_step_flags();
        self.ret.fill(0.0);
        self.len.fill(0);
        self.level_steps.fill(0);
        self.was_reset = true;
        Ok(&self.batch)
    }

    fn step(&mut self, actions: Actions<'_>) -> EnvResult<&StepBatch> {
        if !self.was_reset {
            return Err(EnvError::BadSettings(
                "step called before reset: reset the vector env first".into(),
            ));
        }
        let n = self.batch.num_envs;
        actions.validate(&self.act_space, n)?;
        let Actions::Discrete(acts) = actions else {
            unreachable!("validated against a discrete space")
        };
        let (timeout, render) = (self.timeout, self.render);
        let insts = Rows(self.instances.as_mut_ptr());
        let act = Rows(self.actions.as_mut_ptr());
        let reward = Rows(self.batch.reward.as_mut_ptr());
        let first = Rows(self.first.as_mut_ptr());
        let complete = Rows(self.prev_level_complete.as_mut_ptr());
        let term = Rows(self.batch.terminated.as_mut_ptr());
        let trunc = Rows(self.batch.truncated.as_mut_ptr());
        let ep_ret = Rows(self.batch.episode_return.as_mut_ptr());
        let ep_len = Rows(self.batch.episode_length.as_mut_ptr());
        let ret = Rows(self.ret.as_mut_ptr());
        let len = Rows(self.len.as_mut_ptr());
        let level_steps = Rows(self.level_steps.as_mut_ptr());
        // Books one env's step after libenv wrote its row.
        let book = move |i: usize| {
            // SAFETY: only the calling thread touches row `i` this round; every buffer
            // has `n` rows.
            unsafe {
                let r = *reward.at(i);
                *ret.at(i) += f64::from(r);
                *len.at(i) += 1;
                *level_steps.at(i) += 1;
                let ended = *first.at(i) != 0;
                let completed = *complete.at(i) != 0;
                let truncated = ended && !completed && *level_steps.at(i) >= timeout;
                *term.at(i) = ended && !truncated;
                *trunc.at(i) = truncated;
                if ended {
                    *ep_ret.at(i) = *ret.at(i) as f32;
                    *ep_len.at(i) = *len.at(i);
                    *ret.at(i) = 0.0;
                    *len.at(i) = 0;
                    *level_steps.at(i) = 0;
                } else if completed {
                    // use_sequential_levels: the game moved on to the next level and
                    // restarted its step counter inside the same episode.
                    *level_steps.at(i) = 0;
                }
            }
        };
        match self.layout {
            Layout::PerEnv => {
                // Envs are handed out one at a time rather than in fixed chunks: a
                // worker that the OS delays (the machine is shared with inference and
                // learning) then holds up only the env it is stepping. Each env's
                // outcome does not depend on which thread steps it.
                let next = &self.next;
                next.store(0, Ordering::Relaxed);
                let job = move |_c: usize| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    // SAFETY: the counter hands index `i` to exactly one thread, which
                    // alone touches instance `i` and row `i` of every buffer this round;
                    // the instance's buffers are valid, and it was made with
                    // num_threads=0.
                    unsafe {
                        // In 0..15 after validation.
                        *act.at(i) = acts[i] as i32;
                        if render {
                            // Only the drawing is left to observe: `render(i)` does it.
                            (*insts.at(i)).act();
                        } else {
                            (*insts.at(i)).step();
                        }
                    }
                    book(i);
                };
                self.pool.run(&job)?;
            }
            Layout::Native { .. } => {
                for (a, &v) in self.actions.iter_mut().zip(acts) {
                    *a = v as i32;
                }
                // SAFETY: the one instance's buffers are valid; step waits for
                // libenv's threads before returning.
                unsafe { self.instances[0].step() };
                (0..n).for_each(book);
            }
        }
        Ok(&self.batch)
    }

    fn batch(&self) -> &StepBatch {
        &self.batch
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_names_the_setup_script() {
        let dir = std::env::temp_dir().join("volley-no-procgen-here");
        let e = ffi::load(&dir).unwrap_err();
        assert!(matches!(e, EnvError::MissingDependency { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("libenv.so") && msg.contains("deploy/setup.sh"),
            "{msg}"
        );
    }

    fn make(game: &str, n: usize, render: bool) -> ProcgenVecEnv {
        let cfg = ProcgenConfig::parse(game, None).unwrap();
        ProcgenVecEnv::with_render(&cfg, n, 2, render).unwrap_or_else(|e| {
            panic!("cannot build procgen:{game}: {e} (did deploy/setup.sh run?)")
        })
    }

    /// The 512x512 frame averaged over 8x8 blocks: a 64x64 picture.
    fn shrunk(f: &Frame) -> Vec<f64> {
        let k = RENDER_RES / RES;
        let mut out = vec![0.0; OBS_LEN];
        for y in 0..RENDER_RES {
            for x in 0..RENDER_RES {
                let p = f.pixel(x as u32, y as u32);
                for c in 0..3 {
                    out[((y / k) * RES + x / k) * 3 + c] += f64::from(p[c]) / (k * k) as f64;
                }
            }
        }
        out
    }

    fn correlation(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
        let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
        cov / (va * vb).sqrt()
    }

    fn as_f64(v: &[u8]) -> Vec<f64> {
        v.iter().map(|&x| f64::from(x)).collect()
    }

    fn mean_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len() as f64
    }

    fn obs_row(env: &ProcgenVecEnv, i: usize) -> &[u8] {
        &env.batch().obs.as_u8().unwrap()[i * OBS_LEN..(i + 1) * OBS_LEN]
    }

    #[test]
    fn full_size_frames_show_what_the_observation_shows() {
        let mut env = make("coinrun", 2, true);
        env.reset(3).unwrap();
        let first = env.render(0).unwrap();
        let t = std::time::Instant::now();
        let mut draws = 0u32;
        let mut prev: Vec<Vec<f64>> = (0..2).map(|i| as_f64(obs_row(&env, i))).collect();
        // Steps after which the screen changed enough to tell this observation from the last.
        let mut telling = 0;
        for step in 0..40usize {
            for (i, last) in prev.iter_mut().enumerate() {
                let f = env.render(i).unwrap();
                draws += 1;
                assert_eq!((f.width, f.height), (512, 512));
                let small = shrunk(&f);
                let obs = as_f64(obs_row(&env, i));
                let r = correlation(&small, &obs);
                assert!(r > 0.9, "step {step}, env {i}: correlation {r}");
                for c in 0..3 {
                    let mean =
                        |v: &[f64]| v.iter().skip(c).step_by(3).sum::<f64>() / (RES * RES) as f64;
                    let (m1, m2) = (mean(&small), mean(&obs));
                    assert!(
                        (m1 - m2).abs() < 8.0,
                        "step {step}, env {i}: channel {c} {m1} vs {m2}"
                    );
                }
                // The frame is of the state after the last step, not the one before.
                if mean_abs_diff(last, &obs) > 3.0 {
                    telling += 1;
                    let (now, before) = (mean_abs_diff(&small, &obs), mean_abs_diff(&small, last));
                    assert!(
                        now < before,
                        "step {step}, env {i}: {now} from now, {before} from before"
                    );
                }
                *last = obs;
            }
            // Run right (action 7) with jumps (action 5) now and then.
            let acts: Vec<i64> = (0..2)
                .map(|i| if (step + i) % 5 == 0 { 5 } else { 7 })
                .collect();
            env.step(Actions::Discrete(&acts)).unwrap();
        }
        assert!(telling >= 10, "only {telling} steps changed the screen");
        let per_draw = t.elapsed() / draws;
        // The pair to look at: the full-size frame and the observation of the same state.
        let big = env.render(0).unwrap();
        let obs = Frame::from_rgb(RES as u32, RES as u32, obs_row(&env, 0).to_vec()).unwrap();
        assert_ne!(first, big, "40 steps changed nothing on screen");
        let p512 = crate::env::render::save_png(&big, "procgen_512.png");
        let p64 = crate::env::render::save_png(&obs, "procgen_64.png");
        crate::env::render::save_png(&obs.upscaled(8), "procgen_64_x8.png");
        eprintln!(
            "procgen frames: {} and {}; {per_draw:?} per 512x512 frame",
            p512.display(),
            p64.display()
        );
        assert!(env.render(2).is_err(), "there is no env 2");
    }

    #[test]
    fn rendering_changes_no_trajectory_and_without_it_the_frame_is_the_observation() {
        let mut drawn = make("bigfish", 2, true);
        let mut plain = make("bigfish", 2, false);
        drawn.reset(11).unwrap();
        plain.reset(11).unwrap();
        for step in 0..60usize {
            for i in 0..2 {
                let f = plain.render(i).unwrap();
                assert_eq!((f.width, f.height), (64, 64));
                assert_eq!(f.rgb, obs_row(&plain, i), "step {step}, env {i}");
                if step % 3 == 0 {
                    drawn.render(i).unwrap();
                }
            }
            assert_eq!(drawn.batch().obs, plain.batch().obs, "step {step}");
            assert_eq!(drawn.batch().reward, plain.batch().reward, "step {step}");
            assert_eq!(drawn.first(), plain.first(), "step {step}");
            let acts: Vec<i64> = (0..2)
                .map(|i| ((step * 7 + i * 3) % NUM_ACTIONS) as i64)
                .collect();
            drawn.step(Actions::Discrete(&acts)).unwrap();
            plain.step(Actions::Discrete(&acts)).unwrap();
        }
    }

    #[test]
    fn rand_seeds_are_non_negative_and_distinct() {
        let seeds: Vec<i32> = (0..64).map(|i| env_rand_seed(7, i)).collect();
        assert!(seeds.iter().all(|&s| s >= 0));
        let mut sorted = seeds.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), seeds.len());
        assert_ne!(env_rand_seed(7, 0), env_rand_seed(8, 0));
    }
}
