//! [`AtariEnv`]: one `ALE/<Name>-v5` env on an [`Emulator`], with v5's semantics (see
//! the module doc of [`super`]) and, with `preprocess=dqn`, the DQN-style
//! preprocessing of [`super::options`] ([`super::preprocess`] draws its frames).

use rand::Rng;

use super::options::{AtariConfig, ObsType};
use super::preprocess::{AreaAxis, Pipeline};
use super::seed::ale_seed;
use super::{Emulator, EmulatorConfig};
use crate::env::{ActionRef, Env, EnvError, EnvResult, EnvRng, Frame, Space, Step};

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
                Some(Pipeline::new(p, h, w, emu.grayscale_palette()?)),
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
        // The first screen pooled with itself is the screen.
        self.emu.screen_indices(&mut pipe.last[0])?;
        let [first, second] = &mut pipe.last;
        second.copy_from_slice(first);
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
                        self.emu.screen_indices(&mut pipe.last[0])?;
                        let [first, second] = &mut pipe.last;
                        second.copy_from_slice(first);
                        break;
                    }
                    if t + 2 == skip {
                        self.emu.screen_indices(&mut pipe.last[1])?;
                    } else if t + 1 == skip {
                        self.emu.screen_indices(&mut pipe.last[0])?;
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
