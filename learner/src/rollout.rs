//! The on-policy data source: whole chunks acted by recent weights, turned
//! into training batches.
//!
//! Per chunk: drop it if its weights are more than `rollout.max_policy_lag` versions
//! old (counted); normalise its rewards with the run's one running statistic when
//! the algorithm asks ([`crate::normalize`]); compute generalized advantages with
//! the behaviour values that came with it ([`gae`]); keep it until the batch holds
//! `batch_steps` env steps. Then the loop takes one [`RolloutBatch`] for one update.

use anyhow::{Context, Result};
use tch::{Device, Tensor};

use crate::normalize::RewardNormalizer;
use crate::validate::ValidChunk;

/// What an on-policy algorithm asks of its data.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSettings {
    /// Env steps per update.
    pub batch_steps: usize,
    /// Discount of the returns and of the reward normalisation.
    pub gamma: f64,
    /// GAE lambda (1: n-step returns to the end of the chunk).
    pub gae_lambda: f64,
    /// Divide rewards by the running std of the discounted return, then clip.
    pub norm_reward: bool,
    /// Clip of the normalised rewards.
    pub reward_clip: f64,
}

/// Inconsistent rollout inputs.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("bad input: {0}")]
    BadInput(String),
}

/// Generalized advantage estimation over a time-major chunk of `steps` x `envs`
/// (`docs/runtime.md`): returns `(advantages, returns)`, both `[steps * envs]`, with
/// `returns = advantages + values`.
///
/// With same-step auto-reset, the step after a finished episode belongs to the next
/// episode, so at an episode end the recursion is cut:
/// - `terminated[t]`: `delta = r - V(s_t)` (no bootstrap);
/// - `truncated[t]` (and not terminated): `delta = r + gamma * truncation_values[t] -
///   V(s_t)`, bootstrapping from the value of the final observation;
/// - otherwise `delta = r + gamma * V(s_{t+1}) - V(s_t)` and the advantage carries
///   `gamma * lambda` of the next one; after the last step `V(s_T)` is
///   `bootstrap_values`.
#[allow(clippy::too_many_arguments)]
pub fn gae(
    rewards: &[f32],
    values: &[f32],
    terminated: &[bool],
    truncated: &[bool],
    truncation_values: &[f32],
    bootstrap_values: &[f32],
    steps: usize,
    envs: usize,
    gamma: f64,
    lambda: f64,
) -> Result<(Vec<f32>, Vec<f32>), RolloutError> {
    let n = steps * envs;
    let lens = [
        ("rewards", rewards.len()),
        ("values", values.len()),
        ("terminated", terminated.len()),
        ("truncated", truncated.len()),
        ("truncation_values", truncation_values.len()),
    ];
    if let Some((name, len)) = lens.iter().find(|(_, l)| *l != n) {
        return Err(RolloutError::BadInput(format!(
            "gae: {name} has {len} elements, expected {steps} x {envs}"
        )));
    }
    if bootstrap_values.len() != envs {
        return Err(RolloutError::BadInput(format!(
            "gae: bootstrap_values has {} elements, expected {envs}",
            bootstrap_values.len()
        )));
    }
    let mut adv = vec![0f32; n];
    let mut ret = vec![0f32; n];
    for (e, &boot) in bootstrap_values.iter().enumerate() {
        let mut next_adv = 0f64;
        let mut next_value = f64::from(boot);
        for t in (0..steps).rev() {
            let i = t * envs + e;
            let r = f64::from(rewards[i]);
            let v = f64::from(values[i]);
            let a = if terminated[i] {
                r - v
            } else if truncated[i] {
                r + gamma * f64::from(truncation_values[i]) - v
            } else {
                r + gamma * next_value - v + gamma * lambda * next_adv
            };
            adv[i] = a as f32;
            ret[i] = (a + v) as f32;
            next_adv = a;
            next_value = v;
        }
    }
    Ok((adv, ret))
}

/// One update's data, flattened to `B = T * N` rows, on the training device.
#[derive(Debug)]
pub struct RolloutBatch {
    /// `[B, *obs]`, `u8` or `f32`.
    pub obs: Tensor,
    /// `[B]` integers (categorical) or `[B, dim]` floats (Gaussian).
    pub actions: Tensor,
    /// `[B]` behaviour log-probabilities.
    pub logprobs: Tensor,
    /// `[B]` behaviour values.
    pub values: Tensor,
    /// `[B]` GAE advantages.
    pub advantages: Tensor,
    /// `[B]` value targets (advantages + values).
    pub returns: Tensor,
}

impl RolloutBatch {
    /// Rows of the batch after checking that every field has them.
    pub fn rows(&self) -> Result<i64, RolloutError> {
        let b = self.obs.size().first().copied().unwrap_or(0);
        let fields = [
            ("actions", &self.actions),
            ("logprobs", &self.logprobs),
            ("values", &self.values),
            ("advantages", &self.advantages),
            ("returns", &self.returns),
        ];
        for (name, t) in fields {
            let s = t.size();
            let ok = match name {
                "actions" => s.first() == Some(&b) && s.len() <= 2,
                _ => s == [b],
            };
            if !ok {
                return Err(RolloutError::BadInput(format!(
                    "batch {name} has shape {s:?}, expected {b} rows"
                )));
            }
        }
        if b == 0 {
            return Err(RolloutError::BadInput("empty batch".into()));
        }
        Ok(b)
    }
}

/// A chunk after GAE, ready to be stacked into a batch (CPU tensors, `T * N` rows).
#[derive(Debug)]
struct Prepared {
    obs: Tensor,
    actions: Tensor,
    logprobs: Tensor,
    values: Tensor,
    advantages: Tensor,
    returns: Tensor,
}

/// What became of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Acted by weights more than `max_policy_lag` versions old: not trained on.
    Dropped,
    /// Kept for the next batch.
    Kept,
}

/// The on-policy source: the pending chunks of the next batch, the reward statistic
/// and the lag accounting.
#[derive(Debug)]
pub struct Rollouts {
    settings: RolloutSettings,
    max_lag: u64,
    normalizer: RewardNormalizer,
    pending: Vec<Prepared>,
    pending_rows: usize,
    /// Lags of the chunks kept since the last [`Rollouts::take_log`].
    lags: Vec<u64>,
    /// Chunks dropped since the last [`Rollouts::take_log`].
    dropped: u64,
}

impl Rollouts {
    pub fn new(settings: RolloutSettings, max_lag: u64) -> Rollouts {
        Rollouts {
            normalizer: RewardNormalizer::new(settings.gamma, settings.reward_clip),
            settings,
            max_lag,
            pending: Vec::new(),
            pending_rows: 0,
            lags: Vec::new(),
            dropped: 0,
        }
    }

    /// Takes a chunk acted by `chunk.policy_version` while the newest is `version`.
    pub fn ingest(&mut self, c: &ValidChunk, version: u64) -> Result<Ingested> {
        let lag = version.saturating_sub(c.policy_version);
        if lag > self.max_lag {
            self.dropped += 1;
            return Ok(Ingested::Dropped);
        }
        self.lags.push(lag);
        let (steps, envs) = (c.steps, c.num_envs);
        let mut rewards = c.rewards_f32();
        let (terminated, truncated) = (c.terminated_bools(), c.truncated_bools());
        if self.settings.norm_reward {
            self.normalizer.normalize_chunk(
                &c.actor_id,
                &mut rewards,
                &terminated,
                &truncated,
                (steps, envs),
            )?;
        }
        let values = c.values_f32();
        let (adv, ret) = gae(
            &rewards,
            &values,
            &terminated,
            &truncated,
            &c.truncation_values_f32(),
            &c.bootstrap_values_f32(),
            steps,
            envs,
            self.settings.gamma,
            self.settings.gae_lambda,
        )?;
        self.pending.push(Prepared {
            obs: c.obs_tensor(),
            actions: c.actions_tensor(),
            logprobs: Tensor::f_from_slice(&c.logprobs_f32())?,
            values: Tensor::f_from_slice(&values)?,
            advantages: Tensor::f_from_slice(&adv)?,
            returns: Tensor::f_from_slice(&ret)?,
        });
        self.pending_rows += steps * envs;
        Ok(Ingested::Kept)
    }

    /// Whether the pending chunks fill a batch.
    pub fn ready(&self) -> bool {
        self.pending_rows >= self.settings.batch_steps
    }

    /// The pending chunks as one batch on `device`, and its env steps.
    pub fn take_batch(&mut self, device: Device) -> Result<(RolloutBatch, u64)> {
        let cat = |f: fn(&Prepared) -> &Tensor, pending: &[Prepared]| -> Result<Tensor> {
            let parts: Vec<&Tensor> = pending.iter().map(f).collect();
            Ok(Tensor::f_cat(&parts, 0)?.f_to_device(device)?)
        };
        let p = &self.pending;
        let batch = RolloutBatch {
            obs: cat(|p| &p.obs, p)?,
            actions: cat(|p| &p.actions, p)?,
            logprobs: cat(|p| &p.logprobs, p)?,
            values: cat(|p| &p.values, p)?,
            advantages: cat(|p| &p.advantages, p)?,
            returns: cat(|p| &p.returns, p)?,
        };
        let rows = self.pending_rows as u64;
        self.pending.clear();
        self.pending_rows = 0;
        Ok((batch, rows))
    }

    /// The mean policy lag of the chunks kept and the chunks dropped since the last
    /// call, for the metrics line.
    pub fn take_log(&mut self) -> (f64, u64) {
        let lag = if self.lags.is_empty() {
            0.0
        } else {
            self.lags.iter().sum::<u64>() as f64 / self.lags.len() as f64
        };
        self.lags.clear();
        (lag, std::mem::take(&mut self.dropped))
    }

    /// What a checkpoint keeps: the reward statistic (pending chunks are not kept: a
    /// resumed run collects its next batch afresh).
    pub fn state(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(&self.normalizer)?)
    }

    /// Restores [`Rollouts::state`].
    pub fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        let n: RewardNormalizer = serde_json::from_value(state.clone())
            .context("bad reward-normaliser state in the checkpoint")?;
        n.check()?;
        self.normalizer = n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64) -> bool {
        (f64::from(a) - b).abs() < 1e-5
    }

    #[test]
    fn gae_terminal_truncated_and_chunk_end() {
        // One env, 4 steps: t=1 terminates, t=2 is truncated (final value 10), t=3 ends
        // the chunk (bootstrap 5). gamma 0.5, lambda 0.5.
        let (g, l) = (0.5, 0.5);
        let r = [1.0, 2.0, 3.0, 4.0];
        let v = [0.5, 1.0, 1.5, 2.0];
        let term = [false, true, false, false];
        let trunc = [false, false, true, false];
        let tv = [0.0, 0.0, 10.0, 0.0];
        let (adv, ret) = gae(&r, &v, &term, &trunc, &tv, &[5.0], 4, 1, g, l).unwrap();
        // t=3: 4 + 0.5*5 - 2 = 4.5
        // t=2: truncated: 3 + 0.5*10 - 1.5 = 6.5 (no carry from t=3)
        // t=1: terminated: 2 - 1 = 1
        // t=0: delta = 1 + 0.5*1.0 - 0.5 = 1.0; A = 1 + 0.25 * 1 = 1.25
        let want = [1.25, 1.0, 6.5, 4.5];
        for i in 0..4 {
            assert!(
                close(adv[i], want[i]),
                "adv[{i}] = {} != {}",
                adv[i],
                want[i]
            );
            assert!(close(ret[i], want[i] + v[i] as f64), "ret[{i}]");
        }
    }

    #[test]
    fn gae_is_time_major_and_matches_discounted_sums_with_lambda_one() {
        // Two envs, time-major rows; with lambda = 1 and no episode ends the return is
        // the discounted reward sum plus the discounted bootstrap.
        let (steps, envs) = (3, 2);
        let r = [1.0, 10.0, 2.0, 20.0, 3.0, 30.0];
        let v = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
        let none = [false; 6];
        let (_, ret) = gae(
            &r,
            &v,
            &none,
            &none,
            &[0.0; 6],
            &[7.0, 70.0],
            steps,
            envs,
            0.9,
            1.0,
        )
        .unwrap();
        let want0 = 1.0 + 0.9 * 2.0 + 0.81 * 3.0 + 0.729 * 7.0;
        let want1 = 10.0 + 0.9 * 20.0 + 0.81 * 30.0 + 0.729 * 70.0;
        assert!((f64::from(ret[0]) - want0).abs() < 1e-4);
        assert!((f64::from(ret[1]) - want1).abs() < 1e-3);
        // Terminated and truncated on the same step: termination wins.
        let (adv, _) = gae(
            &[1.0],
            &[0.5],
            &[true],
            &[true],
            &[9.0],
            &[9.0],
            1,
            1,
            0.9,
            0.9,
        )
        .unwrap();
        assert!(close(adv[0], 0.5));
        // Wrong lengths are errors.
        assert!(gae(
            &[1.0],
            &[0.5],
            &[true],
            &[true],
            &[9.0],
            &[],
            1,
            1,
            0.9,
            0.9
        )
        .is_err());
        assert!(gae(
            &[1.0, 2.0],
            &[0.5],
            &[true],
            &[true],
            &[9.0],
            &[0.0],
            1,
            1,
            0.9,
            0.9
        )
        .is_err());
    }
}
