//! Acting: how an algorithm picks actions from observations, behind one trait.
//!
//! An [`Agent`] is built from what the learner sends an actor when it registers (the
//! algorithm's name, its network spec and exploration settings as JSON) by
//! [`build_agent`], which dispatches on the one list of algorithms
//! ([`crate::algorithms`]) to `volley_common::nn::<name>::agent`. The same agent acts
//! on the actors while training ([`Mode::Explore`]: sampling, epsilon-greedy, noise,
//! warm-up), in the learner's evaluation and when a trained agent is played
//! ([`Mode::Greedy`]: argmax, mean action, no noise).
//!
//! An agent also shows what its decisions were read from ([`Agent::decision`]): the
//! network outputs behind an action as differentiable functions of the observations,
//! which gradient feature importance and saliency maps explain.
//!
//! An agent also says which optional fields of a trajectory chunk its algorithm trains
//! on ([`ChunkFields`]): the learner requires exactly those and the actor fills
//! exactly those.

use tch::{Device, Kind, Tensor};

use crate::env::{Actions, ObsBuf, Space};
use crate::nn::{NnError, NnResult};

/// Where the run stands, as the learner sends it with every weights version (plus
/// what the actor itself did since): exploration schedules anneal by it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Weights version acting (0: the initial weights, before any update).
    pub version: u64,
    /// Env steps of the whole run so far.
    pub steps: u64,
    /// Finished episodes of the whole run so far.
    pub episodes: u64,
}

/// How to act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Training: the algorithm's exploration (sampling, epsilon, noise, warm-up).
    Explore,
    /// Evaluation and play: the best action by the current networks, no exploration.
    Greedy,
}

/// The optional chunk fields an algorithm trains on (every chunk carries
/// observations, actions, rewards, terminated and truncated flags and episode
/// statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkFields {
    /// `logprobs`: the behaviour log-probability of each action (PPO's ratio).
    pub logprobs: bool,
    /// `values`, `truncation_values`, `bootstrap_values`: the critic's values of the
    /// observations, of final observations where truncated, and after the last step
    /// (advantage estimation).
    pub values: bool,
    /// `next_obs`: the observation after each step (replay transitions).
    pub next_obs: bool,
}

/// One batch of actions, `N` envs, and what the chunk records of them. The buffers
/// are reused from step to step; an agent fills the ones its action space and
/// [`ChunkFields`] use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionBatch {
    /// `[N]` discrete actions, or the choices of parameterised actions.
    pub discrete: Vec<i64>,
    /// `[N * A]` continuous actions as the policy produced them: the chunk keeps these
    /// (a Gaussian policy's log-probability is of the unclipped sample), the env gets
    /// them clipped to the action bounds.
    pub continuous: Vec<f32>,
    /// `[N * P]` parameterised actions: every choice's parameters in `[-1, 1]` units,
    /// exploration noise included (what the chunk and the replay keep).
    pub params: Vec<f32>,
    /// `[N * P]` the same parameters in env units (what the env gets).
    pub env_params: Vec<f32>,
    /// `[N]` behaviour log-probabilities, when [`ChunkFields::logprobs`].
    pub logprobs: Vec<f32>,
    /// `[N]` values of the observations, when [`ChunkFields::values`].
    pub values: Vec<f32>,
}

impl ActionBatch {
    /// The actions as the env takes them: continuous actions clipped to the bounds of
    /// `space` into `clipped`, others as they are.
    pub fn env_actions<'a>(
        &'a self,
        space: &Space,
        clipped: &'a mut Vec<f32>,
    ) -> NnResult<Actions<'a>> {
        match space {
            Space::Discrete { .. } => Ok(Actions::Discrete(&self.discrete)),
            Space::Box { low, high, .. } => {
                let dim = low.len().max(1);
                clipped.clear();
                clipped.extend(
                    self.continuous
                        .iter()
                        .enumerate()
                        .map(|(j, v)| v.clamp(low[j % dim], high[j % dim])),
                );
                Ok(Actions::Continuous(clipped))
            }
            Space::Parameterised { .. } => Ok(Actions::Parameterised {
                choice: &self.discrete,
                params: &self.env_params,
            }),
            other => Err(NnError::BadSpec(format!(
                "{} is not an action space",
                other.describe()
            ))),
        }
    }
}

/// What a decision was read from, as differentiable functions of the observations it
/// was given (a float tensor; explanations ask for its gradient).
#[derive(Debug)]
pub struct Decision {
    /// `[N, D]`, the outputs the action was read from: the chosen action's value
    /// `Q(s, a)` for Q-learners (MP-DQN: with the parameter network's parameters), the
    /// chosen action's log-probability for categorical policies (`D = 1`), the action
    /// means for Gaussian and squashed-Gaussian policies (`D` = action dimensions).
    pub outputs: Tensor,
    /// `[N, K]`, the policy side of the networks: action values, logits or action
    /// means (Greydanus et al.'s policy saliency compares these).
    pub policy: Tensor,
    /// `[N]`, the value side where the agent has one: the critic's `V(s)` for
    /// actor-critics, `max_a Q(s, a)` for Q-learners; `None` for SAC's actor, whose
    /// critics stay on the learner.
    pub value: Option<Tensor>,
}

/// What acts for an algorithm: its networks (loaded with published weights) and its
/// exploration.
pub trait Agent: Send {
    /// The optional chunk fields the algorithm trains on.
    fn fields(&self) -> ChunkFields;

    /// Loads a published version of the weights. Checked first: on error the agent
    /// is unchanged.
    fn load_weights(&mut self, bytes: &[u8]) -> NnResult<()>;

    /// Actions for `obs` (`[N, *observation shape]`, `u8` images or `f32` vectors as
    /// the env gives them) into `out`, exploring by `progress` in [`Mode::Explore`].
    fn act(
        &mut self,
        obs: &Tensor,
        progress: &Progress,
        mode: Mode,
        out: &mut ActionBatch,
    ) -> NnResult<()>;

    /// The critic's values `[N]` of `obs`: for algorithms whose chunks carry values
    /// (final observations of truncated episodes, the observation after a chunk).
    fn values(&self, _obs: &Tensor) -> NnResult<Vec<f32>> {
        Err(NnError::BadInput(
            "this algorithm's agent has no critic".into(),
        ))
    }

    /// The probability of a uniform random action the last `act` used, for
    /// algorithms that explore epsilon-greedily.
    fn epsilon(&self) -> Option<f64> {
        None
    }

    /// What the actions `taken` for `obs` were read from ([`Decision`]), with
    /// gradient: `obs` is a float tensor of the observations in env units (images
    /// 0..255), `taken` what `act` returned for them.
    fn decision(&self, obs: &Tensor, taken: &ActionBatch) -> NnResult<Decision>;
}

/// The chosen discrete actions of `taken` as a `[N, 1]` index tensor on `device`,
/// checked against `n` rows and `k` actions.
pub fn chosen(taken: &ActionBatch, n: i64, k: i64, device: Device) -> NnResult<Tensor> {
    if taken.discrete.len() as i64 != n {
        return Err(NnError::BadInput(format!(
            "{} chosen actions for {n} observations",
            taken.discrete.len()
        )));
    }
    if let Some(a) = taken.discrete.iter().find(|&&a| !(0..k).contains(&a)) {
        return Err(NnError::BadInput(format!(
            "chosen action {a} is not one of the {k} actions"
        )));
    }
    Ok(Tensor::f_from_slice(&taken.discrete)?
        .f_view([n, 1])?
        .f_to_device(device)?)
}

/// What an agent is built from.
#[derive(Debug, Clone)]
pub struct AgentContext<'a> {
    /// The algorithm's network spec (JSON), as the learner sends it.
    pub spec_json: &'a str,
    /// The algorithm's exploration settings (JSON); empty when it has none.
    pub explore_json: &'a str,
    pub observation_space: &'a Space,
    pub action_space: &'a Space,
    /// Envs acted for at once (the `N` of every `act`).
    pub num_envs: usize,
    /// Seed of the agent's own randomness (epsilon draws, noise, warm-up actions).
    pub seed: u64,
    /// Where the networks live (actors: the CPU).
    pub device: Device,
}

impl AgentContext<'_> {
    /// Parses the spec JSON into `T`, with an error naming the algorithm.
    pub fn spec<T: serde::de::DeserializeOwned>(&self, algorithm: &str) -> NnResult<T> {
        serde_json::from_str(self.spec_json)
            .map_err(|e| NnError::BadSpec(format!("{algorithm} network spec: {e}")))
    }

    /// Parses the exploration JSON into `T`, with an error naming the algorithm.
    pub fn explore<T: serde::de::DeserializeOwned>(&self, algorithm: &str) -> NnResult<T> {
        serde_json::from_str(self.explore_json)
            .map_err(|e| NnError::BadSpec(format!("{algorithm} exploration settings: {e}")))
    }
}

/// Everything an agent of a run is built from, as a run's learner knows it (and a
/// `RegisterReply` carries it): the algorithm and its spec and exploration JSON. A run
/// directory keeps it as `agent.json`, so a trained agent can be played without the
/// learner.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct AgentRecipe {
    pub algorithm: String,
    pub spec_json: String,
    pub explore_json: String,
}

impl AgentRecipe {
    /// The agent for `num_envs` envs of these spaces.
    pub fn build(
        &self,
        observation_space: &Space,
        action_space: &Space,
        num_envs: usize,
        seed: u64,
        device: Device,
    ) -> NnResult<Box<dyn Agent>> {
        build_agent(
            &self.algorithm,
            &AgentContext {
                spec_json: &self.spec_json,
                explore_json: &self.explore_json,
                observation_space,
                action_space,
                num_envs,
                seed,
                device,
            },
        )
    }
}

macro_rules! agent_table {
    ($($name:ident),* $(,)?) => {
        /// The agent of `algorithm` (a name of [`crate::algorithms::ALGORITHMS`]).
        pub fn build_agent(algorithm: &str, ctx: &AgentContext<'_>) -> NnResult<Box<dyn Agent>> {
            match algorithm {
                $(stringify!($name) => crate::nn::$name::agent(ctx),)*
                other => Err(NnError::BadSpec(crate::algorithms::unknown(other))),
            }
        }
    };
}
crate::for_each_algorithm!(agent_table);

/// The shape of one observation as agents read it: `[H, W, C]` for images, `[len]`
/// for vectors.
pub fn observation_shape(space: &Space) -> Vec<i64> {
    match space {
        Space::Image {
            height,
            width,
            channels,
        } => vec![*height as i64, *width as i64, *channels as i64],
        s => vec![s.flat_len() as i64],
    }
}

/// `n` observations of a batch as a CPU tensor `[n, *shape]` (`Uint8` or `Float`).
pub fn observations(obs: &ObsBuf, n: usize, shape: &[i64]) -> NnResult<Tensor> {
    let mut dims = Vec::with_capacity(shape.len() + 1);
    dims.push(n as i64);
    dims.extend_from_slice(shape);
    let t = match obs {
        ObsBuf::U8(v) => Tensor::f_from_slice(v)?,
        ObsBuf::F32(v) => Tensor::f_from_slice(v)?,
    };
    Ok(t.f_view(dims.as_slice())?)
}

/// A float tensor's values as a flat vector (any device, any float kind).
pub fn to_f32_vec(t: &Tensor) -> NnResult<Vec<f32>> {
    let flat = t
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_flatten(0, -1)?;
    Ok(Vec::<f32>::try_from(&flat)?)
}

/// An integer tensor's values as a flat vector (any device).
pub fn to_i64_vec(t: &Tensor) -> NnResult<Vec<i64>> {
    let flat = t
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Int64)?
        .f_flatten(0, -1)?;
    Ok(Vec::<i64>::try_from(&flat)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuous_actions_reach_the_env_clipped_and_the_chunk_raw() {
        let space = Space::Box {
            shape: vec![2],
            low: vec![-1.0, 0.0],
            high: vec![1.0, 2.0],
        };
        let batch = ActionBatch {
            continuous: vec![1.5, -0.5, 0.25, 3.0],
            ..ActionBatch::default()
        };
        let mut clipped = Vec::new();
        match batch.env_actions(&space, &mut clipped).unwrap() {
            Actions::Continuous(a) => assert_eq!(a, &[1.0, 0.0, 0.25, 2.0]),
            _ => panic!("not continuous"),
        }
        assert_eq!(batch.continuous, vec![1.5, -0.5, 0.25, 3.0]);
        let image = Space::Image {
            height: 2,
            width: 2,
            channels: 3,
        };
        assert!(batch.env_actions(&image, &mut clipped).is_err());
    }

    #[test]
    fn every_listed_algorithm_has_an_agent_and_others_are_refused() {
        let obs = Space::Box {
            shape: vec![4],
            low: vec![-1.0; 4],
            high: vec![1.0; 4],
        };
        let ctx = AgentContext {
            spec_json: "{}",
            explore_json: "",
            observation_space: &obs,
            action_space: &Space::Discrete { n: 2 },
            num_envs: 1,
            seed: 0,
            device: Device::Cpu,
        };
        // An empty spec is refused by every algorithm with its own name in the error,
        // which shows the name reached its module.
        for name in crate::algorithms::ALGORITHMS {
            let err = build_agent(name, &ctx).err().expect("empty spec refused");
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        let err = build_agent("nope", &ctx).err().expect("unknown refused");
        assert!(
            err.to_string().contains("unknown algorithm 'nope'"),
            "{err}"
        );
    }
}
