//! PLACEHOLDER: replaced by the Procgen implementation.
use super::{Actions, EnvError, EnvResult, Space, StepBatch, VecEnv};
pub const GAMES: [&str; 16] = [
    "bigfish",
    "bossfight",
    "caveflyer",
    "chaser",
    "climber",
    "coinrun",
    "dodgeball",
    "fruitbot",
    "heist",
    "jumper",
    "leaper",
    "maze",
    "miner",
    "ninja",
    "plunder",
    "starpilot",
];
#[derive(Debug, Clone, PartialEq)]
pub struct ProcgenConfig {
    pub game: String,
}
impl ProcgenConfig {
    pub fn parse(game: &str, _query: Option<&str>) -> EnvResult<Self> {
        Ok(ProcgenConfig { game: game.into() })
    }
    pub fn to_id_string(&self) -> String {
        format!("procgen:{}", self.game)
    }
}
#[derive(Debug)]
pub struct ProcgenVecEnv {
    batch: StepBatch,
    space: Space,
}
impl ProcgenVecEnv {
    pub fn new(_c: &ProcgenConfig, _n: usize, _t: usize) -> EnvResult<Self> {
        Err(EnvError::Native("placeholder".into()))
    }
}
impl VecEnv for ProcgenVecEnv {
    fn num_envs(&self) -> usize {
        0
    }
    fn observation_space(&self) -> &Space {
        &self.space
    }
    fn action_space(&self) -> &Space {
        &self.space
    }
    fn reset(&mut self, _seed: u64) -> EnvResult<&StepBatch> {
        Ok(&self.batch)
    }
    fn step(&mut self, _a: Actions<'_>) -> EnvResult<&StepBatch> {
        Ok(&self.batch)
    }
    fn batch(&self) -> &StepBatch {
        &self.batch
    }
}
