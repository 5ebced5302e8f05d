//! [`AtariEnv`]: one `ALE/<Name>-v5` env on an [`Emulator`], with v5's semantics (see
//! the module doc of [`super`]) and, with `preprocess=dqn`, the DQN-style
//! preprocessing of [`super::options`].

use rand::Rng;

use super::options::{AtariConfig, ObsType, Preprocess};
use super::seed::ale_seed;
use super::{Emulator, EmulatorConfig};
use crate::env::{ActionRef, Env, EnvError, EnvResult, EnvRng, Frame, Space, Step};

/// Area interpolation weights of one axis, `src` pixels onto `dst` (OpenCV's
/// `INTER_AREA` when shrinking): destination pixel `j` covers the source interval
/// `[j * s, (j + 1) * s)`, `s = src / dst`, and averages the pixels it overlaps,
/// each weighted by the overlap. Weights are fixed point ([`ONE`] is 1) and sum to
/// exactly [`ONE`] per destination pixel, so a flat image stays flat.
#[derive(Debug, Clone)]
struct AreaAxis {
    /// Per destination pixel: the first source pixel and the weights from it on.
    taps: Vec<(usize, [u32; MAX_TAPS])>,
}

/// Fixed-point one of the weights (16 bits).
const ONE: u32 = 1 << 16;
/// Source pixels one destination pixel can overlap (enough for shrinking by < 3).
const MAX_TAPS: usize = 4;

impl AreaAxis {
    fn new(src: usize, dst: usize) -> AreaAxis {
        let scale = src as f64 / dst as f64;
        let taps = (0..dst)
            .map(|j| {
                let (lo, hi) = (j as f64 * scale, (j + 1) as f64 * scale);
                let first = lo.floor() as usize;
                let mut w = [0u32; MAX_TAPS];
                let mut used = 0;
                for (k, wk) in w.iter_mut().enumerate() {
                    let i = first + k;
                    if i >= src || i as f64 >= hi {
                        break;
                    }
                    let overlap = (hi.min(i as f64 + 1.0) - lo.max(i as f64)).max(0.0);
                    *wk = (overlap / scale * f64::from(ONE)).round() as u32;
                    used = k + 1;
                }
                // Rounding leaves the sum a unit or two off: the largest weight
                // takes the difference.
                let sum: u32 = w.iter().sum();
                if let Some(big) = (0..used).max_by_key(|&k| w[k]) {
                    w[big] = (w[big] + ONE).saturating_sub(sum);
                }
                (first, w)
            })
            .collect();
        AreaAxis { taps }
    }

    fn supported(src: usize, dst: usize) -> bool {
        dst > 0 && src >= dst && (src as f64 / dst as f64) < (MAX_TAPS - 1) as f64
    }
}

/// Shrinks `height x width` grayscale frames to `size x size` in fixed point.
#[derive(Debug, Clone)]
struct Resize {
    width: usize,
    height: usize,
    rows: AreaAxis,
    cols: AreaAxis,
    /// Vertical pass: `size x width`, the pixel values times 256.
    tmp: Vec<u32>,
    size: usize,
}

impl Resize {
    fn new(height: usize, width: usize, size: usize) -> Resize {
        Resize {
            width,
            height,
            rows: AreaAxis::new(height, size),
            cols: AreaAxis::new(width, size),
            tmp: vec![0; size * width],
            size,
        }
    }

    /// Vertical pass first (whole rows at a time, which vectorises), then the
    /// horizontal one on the `size` rows left.
    fn run(&mut self, src: &[u8], dst: &mut [u8]) {
        let (w, h, s) = (self.width, self.height, self.size);
        for (out, (first, wt)) in self.tmp.chunks_exact_mut(w).zip(&self.rows.taps) {
            out.fill(0);
            for (k, &wk) in wt.iter().enumerate() {
                let y = first + k;
                if wk == 0 || y >= h {
                    continue;
                }
                for (o, &px) in out.iter_mut().zip(&src[y * w..(y + 1) * w]) {
                    *o += u32::from(px) * wk;
                }
            }
            // 0.16 to 8.8 fixed point.
            for o in out.iter_mut() {
                *o >>= 8;
            }
        }
        for (row, out) in self.tmp.chunks_exact(w).zip(dst.chunks_exact_mut(s)) {
            for (o, (first, wt)) in out.iter_mut().zip(&self.cols.taps) {
                let first = *first;
                let taps = &row[first..(first + MAX_TAPS).min(w)];
                let acc: u32 = taps.iter().zip(wt).map(|(&t, &wk)| t * wk).sum();
                // 8.8 times 0.16 is 24 fractional bits; round half up.
                *o = ((acc + (1 << 23)) >> 24).min(255) as u8;
            }
        }
    }
}

/// The preprocessing's state: the last two screens of a step, the resizer and the
/// frame stack.
#[derive(Debug, Clone)]
struct Pipeline {
    p: Preprocess,
    /// The screens of the step's last two frames (grayscale, full size).
    last: [Vec<u8>; 2],
    pooled: Vec<u8>,
    resize: Resize,
    /// `stack` frames of `size x size`, a ring; `head` is the newest.
    frames: Vec<u8>,
    head: usize,
}

impl Pipeline {
    fn new(p: Preprocess, height: usize, width: usize) -> Pipeline {
        let n = height * width;
        Pipeline {
            p,
            last: [vec![0; n], vec![0; n]],
            pooled: vec![0; n],
            resize: Resize::new(height, width, p.screen_size),
            frames: vec![0; p.stack * p.screen_size * p.screen_size],
            head: 0,
        }
    }

    fn frame_len(&self) -> usize {
        self.p.screen_size * self.p.screen_size
    }

    /// Max-pools the two screens, shrinks the result and pushes it on the stack (or
    /// fills the stack with it).
    fn push(&mut self, fill: bool) {
        for ((o, &a), &b) in self.pooled.iter_mut().zip(&self.last[0]).zip(&self.last[1]) {
            *o = a.max(b);
        }
        let n = self.frame_len();
        self.head = (self.head + 1) % self.p.stack;
        let (pooled, resize) = (&self.pooled, &mut self.resize);
        resize.run(pooled, &mut self.frames[self.head * n..(self.head + 1) * n]);
        if fill {
            let (h, k) = (self.head, self.p.stack);
            let newest = self.frames[h * n..(h + 1) * n].to_vec();
            for c in (0..k).filter(|&c| c != h) {
                self.frames[c * n..(c + 1) * n].copy_from_slice(&newest);
            }
        }
    }

    /// The stack as `[size, size, stack]` (HWC), channel `c` the frame `stack - 1 - c`
    /// steps old.
    fn write(&self, obs: &mut [u8]) {
        let (n, k) = (self.frame_len(), self.p.stack);
        for c in 0..k {
            let f = (self.head + 1 + c) % k;
            let frame = &self.frames[f * n..(f + 1) * n];
            for (px, &v) in frame.iter().enumerate() {
                obs[px * k + c] = v;
            }
        }
    }
}

/// One Atari game as an [`Env`] with `u8` image observations.
pub struct AtariEnv {
    cfg: AtariConfig,
    emu: Emulator,
    /// ALE action of each agent action.
    actions: Vec<u8>,
    obs_space: Space,
    pipeline: Option<Pipeline>,
}

impl std::fmt::Debug for AtariEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtariEnv")
            .field("id", &self.cfg.to_id_string())
            .field("actions", &self.actions.len())
            .finish()
    }
}

impl AtariEnv {
    /// The env of `cfg` (its emulator seeded with 0 until [`Env::seed`]).
    pub fn new(cfg: &AtariConfig) -> EnvResult<AtariEnv> {
        let econf = EmulatorConfig {
            repeat_action_probability: cfg.repeat_action_probability,
            max_num_frames_per_episode: cfg.max_num_frames_per_episode as i32,
            seed: ale_seed(0),
            mode: cfg.mode,
            difficulty: cfg.difficulty,
        };
        let emu = Emulator::for_game(&cfg.game, &econf).map_err(|e| match e {
            EnvError::Native(m) if cfg.mode.is_some() || cfg.difficulty.is_some() => {
                EnvError::BadOption {
                    id: cfg.to_id_string(),
                    message: m,
                }
            }
            other => other,
        })?;
        let actions = if cfg.full_action_space {
            emu.legal_action_set().to_vec()
        } else {
            emu.minimal_action_set().to_vec()
        };
        let (h, w) = (emu.height(), emu.width());
        if let Some(p) = cfg.preprocess {
            if !(AreaAxis::supported(h, p.screen_size) && AreaAxis::supported(w, p.screen_size)) {
                return Err(EnvError::BadOption {
                    id: cfg.to_id_string(),
                    message: format!(
                        "screen_size {} cannot shrink the {h}x{w} screen: it must be at most {} \
                         and more than a third of {}",
                        p.screen_size,
                        h.min(w),
                        h.max(w)
                    ),
                });
            }
        }
        let (obs_space, pipeline) = match cfg.preprocess {
            Some(p) => (
                Space::Image {
                    height: p.screen_size,
                    width: p.screen_size,
                    channels: p.stack,
                },
                Some(Pipeline::new(p, h, w)),
            ),
            None => (
                Space::Image {
                    height: h,
                    width: w,
                    channels: match cfg.obs_type {
                        ObsType::Rgb => 3,
                        ObsType::Grayscale => 1,
                    },
                },
                None,
            ),
        };
        Ok(AtariEnv {
            cfg: cfg.clone(),
            emu,
            actions,
            obs_space,
            pipeline,
        })
    }

    /// `n` envs of `cfg`.
    pub fn batch(cfg: &AtariConfig, n: usize) -> EnvResult<Vec<AtariEnv>> {
        (0..n).map(|_| AtariEnv::new(cfg)).collect()
    }

    /// The ALE actions the agent's actions stand for.
    pub fn action_set(&self) -> &[u8] {
        &self.actions
    }

    pub fn emulator(&self) -> &Emulator {
        &self.emu
    }

    /// The console itself, for tools that drive it directly (the emulator benchmark).
    pub fn emulator_mut(&mut self) -> &mut Emulator {
        &mut self.emu
    }

    fn screen(&self, obs: &mut [u8]) -> EnvResult<()> {
        match self.cfg.obs_type {
            ObsType::Rgb => self.emu.screen_rgb(obs),
            ObsType::Grayscale => self.emu.screen_grayscale(obs),
        }
    }
}

impl Env for AtariEnv {
    type Obs = u8;

    fn observation_space(&self) -> Space {
        self.obs_space.clone()
    }

    fn action_space(&self) -> Space {
        Space::Discrete {
            n: self.actions.len(),
        }
    }

    /// ALE truncates by frames (`max_num_frames_per_episode`), reported per step.
    fn max_episode_steps(&self) -> Option<u32> {
        None
    }

    fn seed(&mut self, seed: u64) -> EnvResult<()> {
        self.emu.seed(ale_seed(seed))
    }

    fn reset(&mut self, rng: &mut EnvRng, obs: &mut [u8]) -> EnvResult<()> {
        self.emu.reset_game()?;
        let Some(pipe) = self.pipeline.as_mut() else {
            return self.screen(obs);
        };
        // AtariPreprocessing.reset: 1..=noop_max no-op frames, starting over if the
        // game ends in them; the first frame is not pooled with anything.
        let noops = if pipe.p.noop_max > 0 {
            rng.random_range(1..=pipe.p.noop_max)
        } else {
            0
        };
        for _ in 0..noops {
            self.emu.act(self.actions[0], 1.0)?;
            if self.emu.game_over(true) {
                self.emu.reset_game()?;
            }
        }
        self.emu.screen_grayscale(&mut pipe.last[0])?;
        pipe.last[1].fill(0);
        pipe.push(true);
        pipe.write(obs);
        Ok(())
    }

    fn step(
        &mut self,
        action: ActionRef<'_>,
        _rng: &mut EnvRng,
        obs: &mut [u8],
    ) -> EnvResult<Step> {
        let a = match action {
            ActionRef::Discrete(a) => usize::try_from(a).ok().and_then(|a| self.actions.get(a)),
            _ => None,
        };
        let Some(&a) = a else {
            return Err(EnvError::InvalidAction(format!(
                "{} takes an action in 0..{}, got {action:?}",
                self.cfg.to_id_string(),
                self.actions.len()
            )));
        };
        let skip = self.cfg.frameskip as usize;
        let mut reward = 0i64;
        match self.pipeline.as_mut() {
            None => {
                for _ in 0..skip {
                    reward += i64::from(self.emu.act(a, 1.0)?);
                }
                self.screen(obs)?;
            }
            Some(pipe) => {
                // AtariPreprocessing.step: the screens of the last two frames are
                // max-pooled; an episode that ends early stops the frames, and its
                // last screen is taken for both (Gymnasium keeps stale screens there).
                for t in 0..skip {
                    reward += i64::from(self.emu.act(a, 1.0)?);
                    if self.emu.game_over(true) {
                        self.emu.screen_grayscale(&mut pipe.last[0])?;
                        let [first, second] = &mut pipe.last;
                        second.copy_from_slice(first);
                        break;
                    }
                    if t + 2 == skip {
                        self.emu.screen_grayscale(&mut pipe.last[1])?;
                    } else if t + 1 == skip {
                        self.emu.screen_grayscale(&mut pipe.last[0])?;
                    }
                }
                if skip == 1 {
                    let [first, second] = &mut pipe.last;
                    second.copy_from_slice(first);
                }
                pipe.push(false);
                pipe.write(obs);
            }
        }
        Ok(Step {
            reward: reward as f64,
            terminated: self.emu.game_over(false),
            truncated: self.emu.game_truncated(),
        })
    }

    fn render(&mut self) -> EnvResult<Frame> {
        let (w, h) = (self.emu.width(), self.emu.height());
        let mut rgb = vec![0u8; w * h * 3];
        self.emu.screen_rgb(&mut rgb)?;
        Frame::from_rgb(w as u32, h as u32, rgb)
    }

    fn lives(&self) -> Option<i32> {
        Some(self.emu.lives())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::env::{make_vec_env, Actions, EnvId, ObsBuf, VecEnvOptions};
    use crate::reward::{RewardConfig, Shaper};

    #[test]
    fn area_resize_averages_what_each_pixel_covers() {
        // An integer factor averages blocks exactly.
        let src: Vec<u8> = vec![0, 4, 8, 12, 2, 6, 10, 14, 100, 100, 0, 0, 100, 100, 0, 255];
        let mut r = Resize::new(4, 4, 2);
        let mut dst = [0u8; 4];
        r.run(&src, &mut dst);
        assert_eq!(dst, [3, 11, 100, 64]);
        // A fractional one: every output's weights sum to 1, so flat stays flat.
        for (src_n, dst_n) in [(210, 84), (160, 84), (250, 84), (230, 84)] {
            assert!(AreaAxis::supported(src_n, dst_n));
            let axis = AreaAxis::new(src_n, dst_n);
            for (first, w) in &axis.taps {
                assert_eq!(w.iter().sum::<u32>(), ONE, "{src_n}->{dst_n} at {first}");
            }
        }
        assert!(
            !AreaAxis::supported(210, 42),
            "shrinking by 5 needs more taps"
        );
        let mut r = Resize::new(210, 160, 84);
        let mut dst = vec![0u8; 84 * 84];
        r.run(&vec![77u8; 210 * 160], &mut dst);
        assert!(dst.iter().all(|&v| v == 77));
    }

    fn u8s(b: &ObsBuf) -> &[u8] {
        b.as_u8().unwrap()
    }

    /// Channel `c` of a `[84, 84, k]` stack.
    fn channel(obs: &[u8], k: usize, c: usize) -> Vec<u8> {
        obs.iter().skip(c).step_by(k).copied().collect()
    }

    #[test]
    fn dqn_preprocessing_stacks_pooled_84x84_frames() {
        let id: EnvId = "ALE/MsPacman-v5?preprocess=dqn".parse().unwrap();
        let mut env = make_vec_env(&id, VecEnvOptions::new(2, 2)).unwrap();
        assert_eq!(
            env.observation_space(),
            &Space::Image {
                height: 84,
                width: 84,
                channels: 4
            }
        );
        assert_eq!(env.action_space(), &Space::Discrete { n: 9 });
        let b = env.reset(3).unwrap();
        let first = u8s(&b.obs)[..84 * 84 * 4].to_vec();
        // A reset fills the stack with its first frame.
        for c in 1..4 {
            assert_eq!(channel(&first, 4, c), channel(&first, 4, 0));
        }
        assert!(first.iter().any(|&v| v > 0), "the maze shows");
        let mut prev = first;
        let mut lcg = 9u64;
        let mut shifted = 0;
        for _ in 0..200 {
            lcg = lcg.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let a = [((lcg >> 33) % 9) as i64, ((lcg >> 40) % 9) as i64];
            let b = env.step(Actions::Discrete(&a)).unwrap();
            let now = u8s(&b.obs)[..84 * 84 * 4].to_vec();
            if !b.done(0) {
                // The stack moves by one frame: the newest is new, the others shift.
                for c in 0..3 {
                    assert_eq!(channel(&now, 4, c), channel(&prev, 4, c + 1));
                }
                shifted += 1;
            }
            prev = now;
        }
        assert!(shifted > 100);
    }

    #[test]
    fn lives_and_the_training_only_options() {
        let id: EnvId = "ALE/MsPacman-v5?preprocess=dqn".parse().unwrap();
        let mut env = make_vec_env(&id, VecEnvOptions::new(1, 1)).unwrap();
        let shaper_cfg = RewardConfig::default();
        let mut shaper = Shaper::new(&shaper_cfg, &id, 1, env.time_limit()).unwrap();
        assert!(shaper.changes_terminals());
        let b = env.reset(5).unwrap();
        assert_eq!(b.lives[0], 3);
        let (mut shaped, mut terms) = (Vec::new(), Vec::new());
        let (mut raw, mut lost, mut clipped_sum) = (0f64, 0, 0f64);
        let mut lcg = 1u64;
        let mut game = None;
        for step in 0..5000 {
            if step % 8 == 0 {
                lcg = lcg.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(7);
            }
            let a = [((lcg >> 33) % 9) as i64];
            let b = env.step(Actions::Discrete(&a)).unwrap();
            shaper.apply(b, &mut shaped);
            shaper.terminals(b, &mut terms);
            raw += f64::from(b.reward[0]);
            clipped_sum += f64::from(shaped[0]);
            assert!(
                [0.0, 1.0].contains(&shaped[0]),
                "reward_clip: {}",
                shaped[0]
            );
            assert_eq!(shaped[0] > 0.0, b.reward[0] > 0.0);
            if b.life_lost[0] {
                lost += 1;
                // Terminal for training; the game goes on unless it is over.
                assert!(terms[0]);
                assert_eq!(b.terminated[0], b.lives[0] == 0, "lives {}", b.lives[0]);
            } else {
                assert_eq!(terms[0], b.terminated[0]);
            }
            if b.done(0) {
                // The episode statistics are the whole game's raw score.
                assert_eq!(f64::from(b.episode_return[0]), raw);
                game = Some((b.episode_length[0], step + 1));
                break;
            }
        }
        let (len, steps) = game.expect("a random walk ends its game in 5000 steps");
        assert_eq!(len as usize, steps);
        assert_eq!(lost, 3, "three lives lost in one game");
        assert!(raw > clipped_sum, "raw {raw} vs clipped {clipped_sum}");
        // Without the options, training sees the env's own flags and rewards.
        let plain: EnvId = "ALE/MsPacman-v5?preprocess=dqn&episodic_life=false&reward_clip=false"
            .parse()
            .unwrap();
        let s = Shaper::new(&shaper_cfg, &plain, 1, None).unwrap();
        assert!(!s.changes_terminals());
    }

    #[test]
    fn v5_frames_are_the_screen_and_bad_settings_are_named() {
        let id: EnvId = "ALE/Pong-v5?obs_type=grayscale".parse().unwrap();
        let mut env = make_vec_env(&id, VecEnvOptions::new(1, 1)).unwrap();
        assert_eq!(
            env.observation_space(),
            &Space::Image {
                height: 210,
                width: 160,
                channels: 1
            }
        );
        env.reset(0).unwrap();
        let f = env.render(0).unwrap();
        assert_eq!((f.width, f.height), (160, 210));
        // A mode the game does not have is the user's error, named.
        let id: EnvId = "ALE/MsPacman-v5?mode=99".parse().unwrap();
        let e = match make_vec_env(&id, VecEnvOptions::new(1, 1)) {
            Ok(_) => panic!("mode 99 accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("mode") && e.contains("MsPacman"), "{e}");
        // Stepping out of the action set is refused before any env steps.
        let id: EnvId = "ALE/Breakout-v5".parse().unwrap();
        let mut env = make_vec_env(&id, VecEnvOptions::new(1, 1)).unwrap();
        env.reset(0).unwrap();
        let e = env.step(Actions::Discrete(&[4])).unwrap_err().to_string();
        assert!(e.contains("invalid action"), "{e}");
    }
}
