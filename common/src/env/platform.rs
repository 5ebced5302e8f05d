//! PLACEHOLDER: replaced by the Platform implementation.
use super::{ActionRef, Env, EnvRng, Space, Step};
#[derive(Debug, Clone, Default)]
pub struct Platform;
impl Platform {
    pub fn new() -> Self {
        Platform
    }
}
impl Env for Platform {
    fn observation_space(&self) -> Space {
        Space::Discrete { n: 1 }
    }
    fn action_space(&self) -> Space {
        Space::Discrete { n: 1 }
    }
    fn max_episode_steps(&self) -> Option<u32> {
        Some(200)
    }
    fn reset(&mut self, _rng: &mut EnvRng, _obs: &mut [f32]) {}
    fn step(&mut self, _a: ActionRef<'_>, _rng: &mut EnvRng, _obs: &mut [f32]) -> Step {
        Step {
            reward: 0.0,
            terminated: true,
        }
    }
}
