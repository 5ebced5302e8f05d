//! The networks of Split Q-learning (Lin, Bouneffouf and Cecchi 2019, "Split Q
//! Learning: Reinforcement Learning with Two-Stream Rewards", arXiv 1906.11286) and
//! how actors act with them. The update lives in `volley_learner::algo::splitq`.
//!
//! [`SplitQNet`]: two [`QNetwork`]s of the same spec: `Q+`, which learns from the
//! positive part of the reward, and `Q-`, which learns from the negative part. The
//! agent acts on their sum, `argmax_a Q+(s, a) + Q-(s, a)`, epsilon-greedily over the
//! run's env steps as Double DQN does ([`super::ddqn::EpsilonGreedy`]).
//!
//! Weights travel as one blob in the format of [`super::weights`] (magic `VLYQ`),
//! `Q+`'s variables (named `positive.*`) then `Q-`'s (`negative.*`).

use tch::{Device, Tensor};

use super::ddqn::{polyak, ActionValues, EpsilonGreedyAgent, QNetwork, WEIGHTS_MAGIC};
use super::spec::ModelSpec;
use super::{weights, NnResult};
use crate::agent::{Agent, AgentContext};

/// The two Q streams.
#[derive(Debug)]
pub struct SplitQNet {
    /// `Q+`: the positive part of the reward.
    pub positive: QNetwork,
    /// `Q-`: the negative part of the reward.
    pub negative: QNetwork,
    /// Both networks' variables in byte order (shallow clones).
    vars: Vec<(String, Tensor)>,
}

impl SplitQNet {
    /// Fresh streams for `spec` (a categorical head) on `device`.
    pub fn new(spec: ModelSpec, device: Device) -> NnResult<SplitQNet> {
        let positive = QNetwork::named(spec.clone(), device, Some("positive"))?;
        let negative = QNetwork::named(spec, device, Some("negative"))?;
        let vars = positive
            .named_variables()
            .iter()
            .chain(negative.named_variables())
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        Ok(SplitQNet {
            positive,
            negative,
            vars,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        self.positive.spec()
    }

    /// `(Q+(s, .), Q-(s, .))`, each `[B, actions]`, with gradient.
    pub fn forward(&self, obs: &Tensor) -> NnResult<(Tensor, Tensor)> {
        Ok((self.positive.forward(obs)?, self.negative.forward(obs)?))
    }

    /// `Q+(s, .) + Q-(s, .)`, what the agent acts on.
    pub fn combined(&self, obs: &Tensor) -> NnResult<Tensor> {
        let (p, n) = self.forward(obs)?;
        Ok(p.f_add(&n)?)
    }

    /// Copies both streams of `other` (same spec): the hard target update.
    pub fn copy_from(&mut self, other: &SplitQNet) -> NnResult<()> {
        self.soft_update_from(other, 1.0)
    }

    /// Polyak averaging of both streams towards `other`.
    pub fn soft_update_from(&mut self, other: &SplitQNet, tau: f64) -> NnResult<()> {
        polyak(&mut self.vars, &other.vars, tau)
    }

    /// Both streams' variables as one blob.
    pub fn to_bytes(&self) -> Vec<u8> {
        weights::encode(WEIGHTS_MAGIC, &self.vars)
    }

    /// Replaces both streams with [`SplitQNet::to_bytes`] of a net with the same spec;
    /// checked first, on error unchanged.
    pub fn load_bytes(&mut self, bytes: &[u8]) -> NnResult<()> {
        weights::decode_into(WEIGHTS_MAGIC, bytes, &mut self.vars)
    }
}

impl ActionValues for SplitQNet {
    /// `Q+ + Q-`: what the agent acts on.
    fn action_values(&self, obs: &Tensor) -> NnResult<Tensor> {
        self.combined(obs)
    }

    fn load_weights(&mut self, bytes: &[u8]) -> NnResult<()> {
        self.load_bytes(bytes)
    }
}

/// Split-Q's agent: epsilon-greedy on `Q+ + Q-`.
pub fn agent(ctx: &AgentContext<'_>) -> NnResult<Box<dyn Agent>> {
    Ok(Box::new(EpsilonGreedyAgent::from_context(
        "splitq",
        ctx,
        SplitQNet::new,
        0x5917,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Space;
    use crate::nn::ModelKind;
    use tch::Kind;

    #[test]
    fn the_streams_sum_and_travel_as_one_blob() {
        let _torch = crate::testing::torch();
        tch::manual_seed(1);
        let spec = ModelSpec::for_spaces(
            ModelKind::Mlp { hidden: vec![8] },
            &Space::uniform_box(&[3], -1.0, 1.0),
            &Space::Discrete { n: 2 },
        )
        .unwrap();
        let a = SplitQNet::new(spec.clone(), Device::Cpu).unwrap();
        let mut b = SplitQNet::new(spec, Device::Cpu).unwrap();
        let obs = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
        let (p, n) = a.forward(&obs).unwrap();
        let sum = a.combined(&obs).unwrap();
        assert_eq!((sum - (p + n)).abs().max().double_value(&[]), 0.0);
        b.load_bytes(&a.to_bytes()).unwrap();
        assert_eq!(b.to_bytes(), a.to_bytes());
        // A single Q network's weights do not load into the pair.
        let single = a.positive.to_bytes();
        assert!(b.load_bytes(&single).is_err());
    }
}
