//! PLACEHOLDER: replaced by the MuJoCo implementation.
use super::{ActionRef, Env, EnvError, EnvResult, EnvRng, Space, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MujocoTask {
    Hopper,
    HalfCheetah,
    Ant,
}
impl MujocoTask {
    pub const ALL: [MujocoTask; 3] = [MujocoTask::Hopper, MujocoTask::HalfCheetah, MujocoTask::Ant];
    pub fn id(self) -> &'static str {
        match self {
            MujocoTask::Hopper => "Hopper-v5",
            MujocoTask::HalfCheetah => "HalfCheetah-v5",
            MujocoTask::Ant => "Ant-v5",
        }
    }
}
#[derive(Debug)]
pub struct MujocoEnv;
impl MujocoEnv {
    pub fn batch(_task: MujocoTask, _n: usize) -> EnvResult<Vec<MujocoEnv>> {
        Err(EnvError::Native("placeholder".into()))
    }
}
impl Env for MujocoEnv {
    fn observation_space(&self) -> Space {
        Space::Discrete { n: 1 }
    }
    fn action_space(&self) -> Space {
        Space::Discrete { n: 1 }
    }
    fn max_episode_steps(&self) -> Option<u32> {
        None
    }
    fn reset(&mut self, _rng: &mut EnvRng, _obs: &mut [f32]) {}
    fn step(&mut self, _a: ActionRef<'_>, _rng: &mut EnvRng, _obs: &mut [f32]) -> Step {
        Step {
            reward: 0.0,
            terminated: true,
        }
    }
}
