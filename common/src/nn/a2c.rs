//! A2C's networks (Mnih et al. 2016, the synchronous form of A3C): the same
//! actor-critic [`super::Policy`] PPO uses, built from a [`super::ModelSpec`].
//!
//! Acting ([`super::policy::ActorCriticAgent`]): an action sampled from the policy and
//! the critic's value while training (A2C's loss recomputes the log-probability under
//! the current weights, so the behaviour log-probability travels only for the
//! statistics); the argmax or mean when greedy. The update lives in
//! `volley_learner::algo::a2c`.

use super::policy::ActorCriticAgent;
use super::NnResult;
use crate::agent::{Agent, AgentContext};

/// A2C's agent, from the [`super::ModelSpec`] JSON the learner sends.
pub fn agent(ctx: &AgentContext<'_>) -> NnResult<Box<dyn Agent>> {
    Ok(Box::new(ActorCriticAgent::from_context("a2c", ctx)?))
}
