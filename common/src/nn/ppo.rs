//! PPO's networks (Schulman et al. 2017): the actor-critic [`super::Policy`] built from
//! a [`super::ModelSpec`] (IMPALA CNN for Procgen as Cobbe et al. 2020, Nature CNN, or
//! CleanRL's 64-64 tanh MLPs; categorical or diagonal-Gaussian head).
//!
//! Acting ([`super::policy::ActorCriticAgent`]): while training, an action sampled
//! from the policy, with its log-probability (the behaviour log-probability PPO's
//! ratio is taken against) and the critic's value (for advantage estimation); when
//! greedy, the argmax or the mean. The update lives in `volley_learner::algo::ppo`.

use super::policy::ActorCriticAgent;
use super::NnResult;
use crate::agent::{Agent, AgentContext};

/// PPO's agent, from the [`super::ModelSpec`] JSON the learner sends.
pub fn agent(ctx: &AgentContext<'_>) -> NnResult<Box<dyn Agent>> {
    Ok(Box::new(ActorCriticAgent::from_context("ppo", ctx)?))
}
