//! Reward shaping: what a run trains on, as the `[reward]` section of its config
//! says. Actors apply it to the rewards (and terminal flags) of their chunks, as
//! Gymnasium wrappers would; episode returns in statistics, metrics and evaluations
//! stay the env's own.
//!
//! One step's reward `r` of an env becomes, in this order:
//!
//! 1. each named shaping function of the env (`reward.shaping = ["name", ...]`), in
//!    the order listed ([`named`]; per env family, see below);
//! 2. on a death: plus `reward.death_penalty` (negative to penalise dying, as the Ms.
//!    Pac-Man project does). A death is a lost life in games with lives (Atari: the
//!    game over that takes the last life is one too), else a step that terminates
//!    the episode (not a truncation);
//! 3. on a step that terminates the episode: plus `reward.length_bonus` times the
//!    steps left before the env's time limit (the MuJoCo imitation project's bonus:
//!    negative values penalise falling early in proportion to the episode it cost);
//! 4. times `reward.scale`;
//! 5. clipped to `[-reward.clip, reward.clip]` when `reward.clip` is set;
//! 6. Atari's training-only options of the env id ([`crate::env::ale::options`]):
//!    `reward_clip` makes it its sign (DQN's clipping), and `episodic_life` marks a
//!    lost life as terminal in the chunk (no bootstrap across it) while the game goes
//!    on.
//!
//! The defaults change nothing.
//!
//! # Named functions
//!
//! Atari (Ms. Pac-Man):
//!
//! - `ms_pacman_ghosts`: multiplies the reward of eating ghosts by
//!   `reward.ghost_multiplier`. Ms. Pac-Man pays 10 for a pellet, 50 for an energizer,
//!   200, 400, 800 and 1600 for the first to fourth ghost eaten on one energizer, and
//!   100, 200, 500, 700, 1000, 2000 and 5000 for the fruits (cherry to banana). A step
//!   of 4 frames sums what they paid: its pellets and energizers come to less than
//!   100 (at most a few pellets in 4 frames), so the part of the reward that is a
//!   multiple of 100 is what ghosts and fruits paid. When that part is a ghost's
//!   value (200, 400, 800 or 1600) it is multiplied. A strawberry also pays 200: the
//!   reward alone cannot tell it from a first ghost, and it is multiplied too.

use serde::{Deserialize, Serialize};

use crate::env::registry::Family;
use crate::env::{EnvId, StepBatch};

/// The `[reward]` section of a run config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    /// Multiplies every reward (after the terms below).
    pub scale: f64,
    /// Clip the shaped reward to `[-clip, clip]`; absent: no clipping.
    pub clip: Option<f64>,
    /// Added to the reward of a death: a lost life in games with lives, else a step
    /// that terminates its episode.
    pub death_penalty: f64,
    /// Added on termination, per step left before the env's time limit.
    pub length_bonus: f64,
    /// Named shaping functions of the env, applied first, in order.
    pub shaping: Vec<String>,
    /// What `ms_pacman_ghosts` multiplies a ghost's reward by.
    pub ghost_multiplier: f64,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            scale: 1.0,
            clip: None,
            death_penalty: 0.0,
            length_bonus: 0.0,
            shaping: Vec::new(),
            ghost_multiplier: 1.0,
        }
    }
}

impl RewardConfig {
    /// Whether this config leaves every reward as it is.
    pub fn is_identity(&self) -> bool {
        *self == RewardConfig::default()
    }

    /// Checks the values; `time_limit` is the env's, which `length_bonus` needs.
    pub fn validate(&self, env: &EnvId, time_limit: Option<u32>) -> Result<(), String> {
        let finite = [
            ("reward.scale", self.scale),
            ("reward.death_penalty", self.death_penalty),
            ("reward.length_bonus", self.length_bonus),
            ("reward.ghost_multiplier", self.ghost_multiplier),
        ];
        if let Some((k, v)) = finite.iter().find(|(_, v)| !v.is_finite()) {
            return Err(format!("{k} must be a finite number, got {v}"));
        }
        if let Some(c) = self.clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(format!("reward.clip must be > 0, got {c}"));
            }
        }
        if self.length_bonus != 0.0 && time_limit.is_none() {
            return Err(format!(
                "reward.length_bonus needs an env with a time limit, and {env} has none"
            ));
        }
        for name in &self.shaping {
            named(env, name)?;
        }
        if self.ghost_multiplier != 1.0 && !self.shaping.iter().any(|n| n == "ms_pacman_ghosts") {
            return Err(
                "reward.ghost_multiplier is used by the shaping function ms_pacman_ghosts: \
                 add reward.shaping = [\"ms_pacman_ghosts\"]"
                    .into(),
            );
        }
        Ok(())
    }
}

/// What a named shaping function sees of one env's step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// The reward so far (the env's, or the previous function's output).
    pub reward: f32,
    pub terminated: bool,
    pub truncated: bool,
    /// Steps of the episode so far, this one included.
    pub episode_step: u32,
    /// The step lost a life (games with lives).
    pub life_lost: bool,
}

/// A named shaping function: the step's reward after shaping, with the config's
/// parameters.
pub type ShapingFn = fn(&StepInfo, &RewardConfig) -> f32;

/// The shaping function `name` of `env`'s family, or an error listing the ones it
/// has.
pub fn named(env: &EnvId, name: &str) -> Result<ShapingFn, String> {
    let family = env.family().name();
    let table = functions_of(env.family());
    match table.iter().find(|(n, _)| *n == name) {
        Some((_, f)) => Ok(*f),
        None if table.is_empty() => Err(format!(
            "reward.shaping: {env} ({family}) has no named shaping functions; \
             reward.scale, reward.clip, reward.death_penalty and reward.length_bonus apply to every env"
        )),
        None => Err(format!(
            "reward.shaping: {env} has no function '{name}': it has {}",
            table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The named shaping functions of an env family: the per-env hook.
fn functions_of(family: Family) -> &'static [(&'static str, ShapingFn)] {
    match family {
        Family::Atari => &[("ms_pacman_ghosts", ms_pacman_ghosts)],
        Family::Procgen | Family::Mujoco | Family::Platform | Family::ClassicControl => &[],
    }
}

/// What Ms. Pac-Man pays for the first to fourth ghost eaten on one energizer.
pub const MS_PACMAN_GHOST_REWARDS: [i64; 4] = [200, 400, 800, 1600];

/// `ms_pacman_ghosts` (see the module doc): the ghost part of the reward times
/// `reward.ghost_multiplier`.
fn ms_pacman_ghosts(info: &StepInfo, cfg: &RewardConfig) -> f32 {
    let r = f64::from(info.reward);
    if r.fract() != 0.0 || r < 0.0 {
        return info.reward;
    }
    let total = r as i64;
    let (small, big) = (total % 100, total - total % 100);
    if MS_PACMAN_GHOST_REWARDS.contains(&big) {
        (small as f64 + big as f64 * cfg.ghost_multiplier) as f32
    } else {
        info.reward
    }
}

/// Applies a [`RewardConfig`] to the steps of a vector env.
#[derive(Debug, Clone)]
pub struct Shaper {
    cfg: RewardConfig,
    functions: Vec<ShapingFn>,
    time_limit: Option<u32>,
    /// Steps of each env's current episode.
    steps: Vec<u32>,
    /// Deaths are lost lives (the env has lives), not terminations.
    lives: bool,
    /// Atari's training-only options: a lost life is terminal; rewards become signs.
    episodic_life: bool,
    sign_clip: bool,
}

impl Shaper {
    /// A shaper for `num_envs` envs of `env` (time limit `time_limit`), after checking
    /// `cfg`.
    pub fn new(
        cfg: &RewardConfig,
        env: &EnvId,
        num_envs: usize,
        time_limit: Option<u32>,
    ) -> Result<Shaper, String> {
        cfg.validate(env, time_limit)?;
        let functions = cfg
            .shaping
            .iter()
            .map(|n| named(env, n))
            .collect::<Result<_, _>>()?;
        let (lives, episodic_life, sign_clip) = match env {
            EnvId::Atari(a) => (true, a.episodic_life, a.reward_clip),
            _ => (false, false, false),
        };
        Ok(Shaper {
            cfg: cfg.clone(),
            functions,
            time_limit,
            steps: vec![0; num_envs],
            lives,
            episodic_life,
            sign_clip,
        })
    }

    /// Whether training sees other terminal flags than the env's
    /// ([`Shaper::terminals`] differs from `batch.terminated`).
    pub fn changes_terminals(&self) -> bool {
        self.episodic_life
    }

    /// The terminal flags training sees for the last step of `batch`, into `out`:
    /// the env's, and with `episodic_life` every lost life too.
    pub fn terminals(&self, batch: &StepBatch, out: &mut Vec<bool>) {
        out.clear();
        out.extend(
            (0..batch.num_envs)
                .map(|i| batch.terminated[i] || (self.episodic_life && batch.life_lost[i])),
        );
    }

    /// The shaped rewards of the last step of `batch`, into `out` (`N` values).
    pub fn apply(&mut self, batch: &StepBatch, out: &mut Vec<f32>) {
        out.clear();
        for i in 0..batch.num_envs {
            self.steps[i] += 1;
            let mut info = StepInfo {
                reward: batch.reward[i],
                terminated: batch.terminated[i],
                truncated: batch.truncated[i],
                episode_step: self.steps[i],
                life_lost: batch.life_lost[i],
            };
            for f in &self.functions {
                info.reward = f(&info, &self.cfg);
            }
            let mut r = f64::from(info.reward);
            let died = if self.lives {
                info.life_lost
            } else {
                info.terminated
            };
            if died {
                r += self.cfg.death_penalty;
            }
            if info.terminated {
                if let Some(limit) = self.time_limit {
                    let left = limit.saturating_sub(info.episode_step);
                    r += self.cfg.length_bonus * f64::from(left);
                }
            }
            r *= self.cfg.scale;
            if let Some(c) = self.cfg.clip {
                r = r.clamp(-c, c);
            }
            if self.sign_clip {
                r = if r > 0.0 {
                    1.0
                } else if r < 0.0 {
                    -1.0
                } else {
                    0.0
                };
            }
            out.push(r as f32);
            if batch.done(i) {
                self.steps[i] = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(reward: &[f32], terminated: &[bool], truncated: &[bool]) -> StepBatch {
        let mut b = StepBatch::new(reward.len(), 1, false, true);
        b.reward = reward.to_vec();
        b.terminated = terminated.to_vec();
        b.truncated = truncated.to_vec();
        b
    }

    #[test]
    fn defaults_change_nothing_and_terms_apply_in_order() {
        let env: EnvId = "CartPole-v1".parse().unwrap();
        let mut s = Shaper::new(&RewardConfig::default(), &env, 2, Some(500)).unwrap();
        let mut out = Vec::new();
        s.apply(&batch(&[1.0, -2.5], &[false, true], &[false; 2]), &mut out);
        assert_eq!(out, vec![1.0, -2.5]);

        // Limit 10. Env 0 terminates at its 3rd step: 1 + (-1) + 0.5 * (10 - 3) = 3.5,
        // times 2 = 7, clipped to 5. Env 1 is truncated at its 3rd step: no terms.
        let cfg = RewardConfig {
            scale: 2.0,
            clip: Some(5.0),
            death_penalty: -1.0,
            length_bonus: 0.5,
            shaping: vec![],
            ghost_multiplier: 1.0,
        };
        let mut s = Shaper::new(&cfg, &env, 2, Some(10)).unwrap();
        let none = [false; 2];
        s.apply(&batch(&[1.0, 1.0], &none, &none), &mut out);
        assert_eq!(out, vec![2.0, 2.0]);
        s.apply(&batch(&[1.0, 1.0], &none, &none), &mut out);
        s.apply(
            &batch(&[1.0, 1.0], &[true, false], &[false, true]),
            &mut out,
        );
        assert_eq!(out, vec![5.0, 2.0]);
        // Both episodes restarted: env 0 dies at its first step, 1 - 1 + 0.5 * 9.
        s.apply(&batch(&[1.0, 1.0], &[true, false], &none), &mut out);
        assert_eq!(out, vec![5.0, 2.0]);
        let cfg = RewardConfig { clip: None, ..cfg };
        let mut s = Shaper::new(&cfg, &env, 1, Some(10)).unwrap();
        s.apply(&batch(&[1.0], &[true], &[false]), &mut out);
        assert_eq!(out, vec![2.0 * (1.0 - 1.0 + 0.5 * 9.0)]);
    }

    #[test]
    fn ms_pacman_ghosts_and_deaths_by_lives() {
        let env: EnvId = "ALE/MsPacman-v5".parse().unwrap();
        let cfg = RewardConfig {
            shaping: vec!["ms_pacman_ghosts".into()],
            ghost_multiplier: 3.0,
            death_penalty: -100.0,
            ..RewardConfig::default()
        };
        let mut s = Shaper::new(&cfg, &env, 1, None).unwrap();
        let mut out = Vec::new();
        let none = [false];
        // Pellets, an energizer, ghosts with and without a pellet in the same step,
        // fruits (100, 500, 700, ...) and a ghost plus a fruit are left alone.
        for (r, want) in [
            (10.0, 10.0),
            (50.0, 50.0),
            (200.0, 600.0),
            (210.0, 610.0),
            (1600.0, 4800.0),
            (860.0, 2460.0),
            (100.0, 100.0),
            (500.0, 500.0),
            (700.0, 700.0),
            (5000.0, 5000.0),
            (300.0, 300.0),
            (0.0, 0.0),
        ] {
            s.apply(&batch(&[r], &none, &none), &mut out);
            assert_eq!(out, vec![want], "reward {r}");
        }
        // A lost life is a death (the game goes on); a game over takes the last one.
        let mut b = batch(&[10.0], &none, &none);
        b.life_lost = vec![true];
        s.apply(&b, &mut out);
        assert_eq!(out, vec![-90.0]);
        b.terminated = vec![true];
        s.apply(&b, &mut out);
        assert_eq!(out, vec![-90.0], "one penalty for the last life");
        // Without lives the penalty is for terminating, as before.
        b.life_lost = vec![false];
        s.apply(&b, &mut out);
        assert_eq!(out, vec![10.0]);
        // The multiplier needs its function; other families have none.
        let e = Shaper::new(
            &RewardConfig {
                ghost_multiplier: 2.0,
                ..RewardConfig::default()
            },
            &env,
            1,
            None,
        )
        .unwrap_err();
        assert!(e.contains("ms_pacman_ghosts"), "{e}");
    }

    #[test]
    fn bad_settings_are_named() {
        let env: EnvId = "CartPole-v1".parse().unwrap();
        let bad =
            |cfg: RewardConfig, limit: Option<u32>| Shaper::new(&cfg, &env, 1, limit).unwrap_err();
        let e = bad(
            RewardConfig {
                clip: Some(0.0),
                ..RewardConfig::default()
            },
            None,
        );
        assert!(e.contains("reward.clip"), "{e}");
        let e = bad(
            RewardConfig {
                length_bonus: 1.0,
                ..RewardConfig::default()
            },
            None,
        );
        assert!(e.contains("time limit"), "{e}");
        let e = bad(
            RewardConfig {
                scale: f64::NAN,
                ..RewardConfig::default()
            },
            None,
        );
        assert!(e.contains("reward.scale"), "{e}");
        let e = bad(
            RewardConfig {
                shaping: vec!["ghosts".into()],
                ..RewardConfig::default()
            },
            Some(500),
        );
        assert!(e.contains("no named shaping functions"), "{e}");
    }
}
