//! Reward normalisation as Cobbe et al. 2020 and CleanRL do it (gym's
//! `NormalizeReward`): every env keeps the discounted return of its current episode,
//! `G = gamma G + r` (reset to 0 when the episode ends); one running variance of all
//! the run's `G`s scales every reward, `r / sqrt(var + 1e-8)`, and the result is
//! clipped to `[-clip, clip]`.
//!
//! One statistic for the whole run, over every env of every actor, kept in the
//! checkpoint: a new actor (a Kubernetes pod that replaced another) starts its envs'
//! returns at 0 and is scaled by the run's statistic, not a fresh one.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Added to the variance before the square root (gym's epsilon).
const REWARD_EPS: f64 = 1e-8;

/// Actors whose envs' returns are remembered; beyond it the longest unseen is
/// forgotten (its envs start again at 0 if it comes back).
const MAX_ACTORS: usize = 4096;

/// Running mean and variance of a stream of batches (Chan et al. parallel algorithm,
/// as gym's `RunningMeanStd`, starting from count 1e-4, mean 0, var 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningMeanStd {
    pub mean: f64,
    pub var: f64,
    pub count: f64,
}

impl Default for RunningMeanStd {
    fn default() -> Self {
        RunningMeanStd {
            mean: 0.0,
            var: 1.0,
            count: 1e-4,
        }
    }
}

impl RunningMeanStd {
    pub fn update(&mut self, batch: &[f64]) {
        if batch.is_empty() {
            return;
        }
        let bc = batch.len() as f64;
        let bm = batch.iter().sum::<f64>() / bc;
        let bv = batch.iter().map(|x| (x - bm) * (x - bm)).sum::<f64>() / bc;
        let delta = bm - self.mean;
        let tot = self.count + bc;
        let m2 = self.var * self.count + bv * bc + delta * delta * self.count * bc / tot;
        self.mean += delta * bc / tot;
        self.var = m2 / tot;
        self.count = tot;
    }

    fn is_valid(&self) -> bool {
        self.mean.is_finite()
            && self.var.is_finite()
            && self.var >= 0.0
            && self.count.is_finite()
            && self.count > 0.0
    }
}

/// The discounted returns of one actor's envs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ActorReturns {
    returns: Vec<f64>,
    /// When it was last used ([`RewardNormalizer::tick`]), for forgetting.
    last_used: u64,
}

/// The run's reward normaliser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardNormalizer {
    gamma: f64,
    clip: f64,
    rms: RunningMeanStd,
    /// Discounted return so far of each env's current episode, by actor id.
    actors: HashMap<String, ActorReturns>,
    /// Chunks normalised so far.
    tick: u64,
}

/// A bad input or state of the normaliser.
#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("bad reward-normaliser state: {0}")]
    BadState(String),
}

impl RewardNormalizer {
    pub fn new(gamma: f64, clip: f64) -> Self {
        RewardNormalizer {
            gamma,
            clip,
            rms: RunningMeanStd::default(),
            actors: HashMap::new(),
            tick: 0,
        }
    }

    /// The run's return statistics.
    pub fn stats(&self) -> &RunningMeanStd {
        &self.rms
    }

    /// Normalises a time-major `[steps, envs]` chunk of `actor`'s rewards in place, one
    /// time step at a time (add the step's rewards to the envs' returns, update the
    /// statistic with them, then scale and clip).
    pub fn normalize_chunk(
        &mut self,
        actor: &str,
        rewards: &mut [f32],
        terminated: &[bool],
        truncated: &[bool],
        (steps, envs): (usize, usize),
    ) -> Result<(), NormalizeError> {
        let n = steps * envs;
        if rewards.len() != n || terminated.len() != n || truncated.len() != n {
            return Err(NormalizeError::BadInput(format!(
                "reward chunk of {} / {} / {} elements, expected {steps} x {envs}",
                rewards.len(),
                terminated.len(),
                truncated.len()
            )));
        }
        self.tick += 1;
        if !self.actors.contains_key(actor) && self.actors.len() >= MAX_ACTORS {
            if let Some(oldest) = self
                .actors
                .iter()
                .min_by_key(|(_, a)| a.last_used)
                .map(|(k, _)| k.clone())
            {
                self.actors.remove(&oldest);
            }
        }
        let entry = self
            .actors
            .entry(actor.to_string())
            .or_insert_with(|| ActorReturns {
                returns: vec![0.0; envs],
                last_used: 0,
            });
        if entry.returns.len() != envs {
            entry.returns = vec![0.0; envs];
        }
        entry.last_used = self.tick;
        for t in 0..steps {
            let row = t * envs..(t + 1) * envs;
            for (g, &r) in entry.returns.iter_mut().zip(&rewards[row.clone()]) {
                *g = *g * self.gamma + f64::from(r);
            }
            self.rms.update(&entry.returns);
            let scale = 1.0 / (self.rms.var + REWARD_EPS).sqrt();
            for (e, r) in rewards[row].iter_mut().enumerate() {
                *r = (f64::from(*r) * scale).clamp(-self.clip, self.clip) as f32;
                let i = t * envs + e;
                if terminated[i] || truncated[i] {
                    entry.returns[e] = 0.0;
                }
            }
        }
        Ok(())
    }

    /// Checks a state read back from a checkpoint.
    pub fn check(&self) -> Result<(), NormalizeError> {
        let returns_ok = self
            .actors
            .values()
            .all(|a| a.returns.iter().all(|g| g.is_finite()));
        if !(self.gamma.is_finite() && self.clip.is_finite() && self.rms.is_valid() && returns_ok) {
            return Err(NormalizeError::BadState(
                "non-finite or negative statistics".into(),
            ));
        }
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
    fn follows_gym_for_one_actor() {
        let mut n = RewardNormalizer::new(0.9, 10.0);
        // Step 0: returns [1, 3]; rms from (1e-4, 0, 1) with batch mean 2, var 1.
        let mut r = vec![1.0, 3.0, 2.0, 1.0];
        let term = [false, true, false, false];
        n.normalize_chunk("a", &mut r, &term, &[false; 4], (2, 2))
            .unwrap();
        let mut rms = RunningMeanStd::default();
        rms.update(&[1.0, 3.0]);
        let s0 = (rms.var + 1e-8).sqrt();
        assert!(close(r[0], 1.0 / s0) && close(r[1], 3.0 / s0));
        // Step 1: env 1's return was reset after its terminal step.
        rms.update(&[0.9 * 1.0 + 2.0, 1.0]);
        let s1 = (rms.var + 1e-8).sqrt();
        assert!(close(r[2], 2.0 / s1) && close(r[3], 1.0 / s1));
        assert_eq!(n.stats(), &rms);
        // Clipping.
        let mut n = RewardNormalizer::new(0.99, 0.5);
        let mut r = vec![100.0];
        n.normalize_chunk("a", &mut r, &[false], &[false], (1, 1))
            .unwrap();
        assert_eq!(r[0], 0.5);
        assert!(n
            .normalize_chunk("a", &mut [0.0; 2], &[false; 2], &[false; 3], (1, 2))
            .is_err());
    }

    #[test]
    fn one_statistic_for_every_actor_and_a_new_actor_keeps_it() {
        let mut n = RewardNormalizer::new(0.9, 10.0);
        let mut rms = RunningMeanStd::default();
        let mut a = vec![1.0];
        n.normalize_chunk("a", &mut a, &[false], &[false], (1, 1))
            .unwrap();
        rms.update(&[1.0]);
        // Actor b's env starts at return 0 and updates the same statistic.
        let mut b = vec![4.0];
        n.normalize_chunk("b", &mut b, &[false], &[false], (1, 1))
            .unwrap();
        rms.update(&[4.0]);
        assert_eq!(n.stats(), &rms);
        assert!(close(b[0], 4.0 / (rms.var + 1e-8).sqrt()));
        // Actor a continues its own return: 0.9 * 1 + 1.
        let mut a = vec![1.0];
        n.normalize_chunk("a", &mut a, &[false], &[false], (1, 1))
            .unwrap();
        rms.update(&[1.9]);
        assert_eq!(n.stats(), &rms);
        // The state round-trips through JSON (the checkpoint) and is checked.
        let json = serde_json::to_string(&n).unwrap();
        let back: RewardNormalizer = serde_json::from_str(&json).unwrap();
        assert_eq!(back, n);
        back.check().unwrap();
        let mut bad = back;
        bad.rms.var = -1.0;
        assert!(bad.check().is_err());
    }
}
