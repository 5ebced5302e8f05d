//! Uniform-random actions for any action space: the baseline policy of
//! `volley-actor random`, the load of the throughput benchmarks, and SAC's warm-up.

use rand::Rng;

use super::{Actions, EnvResult, EnvRng, Space};

/// Reusable buffers holding one batch of uniform-random actions.
#[derive(Debug, Clone)]
pub struct RandomActions {
    space: Space,
    num_envs: usize,
    discrete: Vec<i64>,
    continuous: Vec<f32>,
    /// Bounds of one env's continuous elements, flattened once.
    low: Vec<f32>,
    high: Vec<f32>,
}

impl RandomActions {
    /// Buffers for `num_envs` actions of `space` (which must be an action space).
    pub fn new(space: &Space, num_envs: usize) -> EnvResult<Self> {
        let (d, c) = match space {
            Space::Discrete { .. } => (num_envs, 0),
            Space::Box { .. } => (0, num_envs * space.flat_len()),
            Space::Parameterised { .. } => (num_envs, num_envs * space.flat_len()),
            Space::Image { .. } => {
                return Err(super::EnvError::BadSettings(
                    "an image space is not an action space".into(),
                ))
            }
        };
        let (low, high) = match space {
            Space::Box { low, high, .. } => (low.clone(), high.clone()),
            Space::Parameterised { params } => (
                params.iter().flat_map(|p| p.low.clone()).collect(),
                params.iter().flat_map(|p| p.high.clone()).collect(),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        Ok(RandomActions {
            low,
            high,
            space: space.clone(),
            num_envs,
            discrete: vec![0; d],
            continuous: vec![0.0; c],
        })
    }

    /// Draws a new batch: a uniform index for discrete choices, and a uniform value
    /// over each bound for continuous elements (the full range of every parameter for
    /// parameterised actions).
    pub fn sample(&mut self, rng: &mut EnvRng) -> Actions<'_> {
        match &self.space {
            Space::Discrete { n } => {
                for a in &mut self.discrete {
                    *a = rng.random_range(0..*n as i64);
                }
                Actions::Discrete(&self.discrete)
            }
            Space::Box { .. } => {
                fill_uniform(&mut self.continuous, &self.low, &self.high, rng);
                Actions::Continuous(&self.continuous)
            }
            Space::Parameterised { params } => {
                let k = params.len() as i64;
                for a in &mut self.discrete {
                    *a = rng.random_range(0..k);
                }
                fill_uniform(&mut self.continuous, &self.low, &self.high, rng);
                Actions::Parameterised {
                    choice: &self.discrete,
                    params: &self.continuous,
                }
            }
            Space::Image { .. } => unreachable!("rejected in new"),
        }
    }

    /// The last batch drawn.
    pub fn actions(&self) -> Actions<'_> {
        match &self.space {
            Space::Discrete { .. } => Actions::Discrete(&self.discrete),
            Space::Box { .. } => Actions::Continuous(&self.continuous),
            _ => Actions::Parameterised {
                choice: &self.discrete,
                params: &self.continuous,
            },
        }
    }

    pub fn num_envs(&self) -> usize {
        self.num_envs
    }
}

fn fill_uniform(out: &mut [f32], low: &[f32], high: &[f32], rng: &mut EnvRng) {
    let dim = low.len();
    for (j, v) in out.iter_mut().enumerate() {
        let (lo, hi) = (low[j % dim], high[j % dim]);
        // Unbounded elements (never the case for the registered envs) get a unit range.
        let (lo, hi) = if lo.is_finite() && hi.is_finite() {
            (lo, hi)
        } else {
            (-1.0, 1.0)
        };
        *v = if hi > lo {
            rng.random_range(lo..=hi)
        } else {
            lo
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::ParamBox;
    use rand::SeedableRng;

    #[test]
    fn samples_stay_in_their_space() {
        let mut rng = EnvRng::seed_from_u64(1);
        let space = Space::Box {
            shape: vec![2],
            low: vec![-1.0, 0.0],
            high: vec![1.0, 5.0],
        };
        let mut r = RandomActions::new(&space, 16).unwrap();
        for _ in 0..100 {
            let a = r.sample(&mut rng);
            a.validate(&space, 16).unwrap();
            let Actions::Continuous(v) = a else { panic!() };
            for p in v.chunks(2) {
                assert!((-1.0..=1.0).contains(&p[0]) && (0.0..=5.0).contains(&p[1]));
            }
        }
        let pspace = Space::Parameterised {
            params: vec![
                ParamBox {
                    name: "a".into(),
                    low: vec![0.0],
                    high: vec![30.0],
                },
                ParamBox {
                    name: "b".into(),
                    low: vec![0.0],
                    high: vec![720.0],
                },
            ],
        };
        let mut r = RandomActions::new(&pspace, 8).unwrap();
        let mut seen = [false; 2];
        for _ in 0..50 {
            let a = r.sample(&mut rng);
            a.validate(&pspace, 8).unwrap();
            let Actions::Parameterised { choice, params } = a else {
                panic!()
            };
            for (&c, p) in choice.iter().zip(params.chunks(2)) {
                seen[c as usize] = true;
                assert!(p[0] <= 30.0 && p[1] <= 720.0);
            }
        }
        assert_eq!(seen, [true, true]);
    }
}
