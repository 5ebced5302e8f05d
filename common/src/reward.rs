//! Reward shaping: what a run trains on, as the `[reward]` section of its config
//! says. Actors apply it to the rewards of their chunks, as a Gymnasium reward
//! wrapper would; episode returns in statistics, metrics and evaluations stay the
//! env's own.
//!
//! One step's reward `r` of an env becomes, in this order:
//!
//! 1. each named shaping function of the env (`reward.shaping = ["name", ...]`), in
//!    the order listed ([`named`]; per env family: Atari's ghost multiplier arrives
//!    with the Atari env);
//! 2. on a step that terminates the episode (not a truncation): plus
//!    `reward.death_penalty` (negative to penalise dying, as the Ms. Pac-Man project
//!    does), plus `reward.length_bonus` times the steps left before the env's time
//!    limit (the MuJoCo imitation project's bonus: negative values penalise falling
//!    early in proportion to the episode it cost);
//! 3. times `reward.scale`;
//! 4. clipped to `[-reward.clip, reward.clip]` when `reward.clip` is set.
//!
//! The defaults change nothing.

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
    /// Added to the reward of a step that terminates its episode.
    pub death_penalty: f64,
    /// Added on termination, per step left before the env's time limit.
    pub length_bonus: f64,
    /// Named shaping functions of the env, applied first, in order.
    pub shaping: Vec<String>,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            scale: 1.0,
            clip: None,
            death_penalty: 0.0,
            length_bonus: 0.0,
            shaping: Vec::new(),
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
}

/// A named shaping function: the step's reward after shaping.
pub type ShapingFn = fn(&StepInfo) -> f32;

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

/// The named shaping functions of an env family: the per-env hook. No family has one
/// yet; Atari's ghost multiplier arrives with the Atari env.
fn functions_of(family: Family) -> &'static [(&'static str, ShapingFn)] {
    match family {
        Family::Procgen | Family::Mujoco | Family::Platform | Family::ClassicControl => &[],
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
        Ok(Shaper {
            cfg: cfg.clone(),
            functions,
            time_limit,
            steps: vec![0; num_envs],
        })
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
            };
            for f in &self.functions {
                info.reward = f(&info);
            }
            let mut r = f64::from(info.reward);
            if info.terminated {
                r += self.cfg.death_penalty;
                if let Some(limit) = self.time_limit {
                    let left = limit.saturating_sub(info.episode_step);
                    r += self.cfg.length_bonus * f64::from(left);
                }
            }
            r *= self.cfg.scale;
            if let Some(c) = self.cfg.clip {
                r = r.clamp(-c, c);
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
