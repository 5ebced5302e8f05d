//! Behaviour cloning's network: SAC's squashed Gaussian actor
//! ([`super::sac::SacActor`], built from a [`SacSpec`]), so that a cloned policy acts
//! as a SAC policy does (greedy: the squashed mean; exploring: a sample, with no
//! warm-up of random actions) and its weights are a SAC actor's, which imitation-seeded
//! SAC can start from. The learner-side fit is `volley_learner::algo::bc`.

use super::sac::SacAgent;
pub use super::sac::SacSpec as BcSpec;
use super::NnResult;
use crate::agent::{Agent, AgentContext};

/// The cloned policy's agent, from the [`BcSpec`] JSON the learner sends.
pub fn agent(ctx: &AgentContext<'_>) -> NnResult<Box<dyn Agent>> {
    Ok(Box::new(SacAgent::new(ctx, "bc", false)?))
}
