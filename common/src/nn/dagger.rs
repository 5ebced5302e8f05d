//! DAgger's acting (Ross, Gordon and Bagnell 2011, "A Reduction of Imitation Learning
//! and Structured Prediction to No-Regret Online Learning", algorithm 3.1): the
//! actors roll out the mixture `pi_i = beta_i pi* + (1 - beta_i) pi_hat_i`, each step
//! of each env taking the expert's action with probability `beta_i` and the learnt
//! policy's otherwise. Both act greedily (the expert as it is evaluated, the learnt
//! policy as it will be), so the states visited are the ones the learnt policy meets
//! at test time. Evaluation and play act with the learnt policy alone.
//!
//! The iteration `i` is the weights version the actor acts with: the learner
//! publishes one version per iteration (after retraining on the aggregated data), so
//! `beta_i` follows from the schedule in the exploration settings ([`DaggerExplore`])
//! and the version, with no state of its own.
//!
//! The learnt policy is SAC's squashed Gaussian actor (as behaviour cloning's); the
//! expert is any volley run's agent, built from its recipe ([`DaggerSpec::expert`]).
//! Every published weights blob carries both:
//!
//! ```text
//! "VLYD" | len u64 | policy weights | len u64 | expert weights
//! ```

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::sac::{SacAgent, SacSpec};
use super::{NnError, NnResult};
use crate::agent::{
    ActionBatch, Agent, AgentContext, AgentRecipe, ChunkFields, Decision, Mode, Progress,
};
use crate::env::EnvRng;

const MAGIC: &[u8; 4] = b"VLYD";

/// What DAgger's agent is built from: the learnt policy's network and the expert's
/// recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaggerSpec {
    pub policy: SacSpec,
    pub expert: AgentRecipe,
}

/// The mixture's schedule: `beta_i` of iteration `i` (0, 1, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaggerExplore {
    /// `inverse`: `1 / (1 + i)`; `exponential`: `beta_p^i` (Ross et al.'s
    /// `p^(i-1)` counted from 1); `first`: 1 at iteration 0, 0 after (the variant
    /// Ross et al. report works well in practice).
    pub beta: String,
    /// The base of `exponential`, in `(0, 1)`.
    pub beta_p: f64,
}

impl DaggerExplore {
    /// Checks the schedule's name and parameter.
    pub fn validate(&self) -> NnResult<()> {
        match self.beta.as_str() {
            "inverse" | "first" => Ok(()),
            "exponential" if self.beta_p > 0.0 && self.beta_p < 1.0 => Ok(()),
            "exponential" => Err(NnError::BadSpec(format!(
                "dagger.beta_p = {} must be in (0, 1) for the exponential schedule",
                self.beta_p
            ))),
            other => Err(NnError::BadSpec(format!(
                "dagger.beta = '{other}': expected inverse, exponential or first"
            ))),
        }
    }

    /// `beta_i`: the probability of the expert's action at iteration `i`.
    pub fn beta(&self, iteration: u64) -> f64 {
        match self.beta.as_str() {
            "exponential" => self.beta_p.powf(iteration as f64),
            "first" => f64::from(u8::from(iteration == 0)),
            _ => 1.0 / (1.0 + iteration as f64),
        }
    }
}

/// The parts of a DAgger weights blob.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DaggerWeights<'a> {
    pub policy: &'a [u8],
    pub expert: &'a [u8],
}

impl<'a> DaggerWeights<'a> {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.policy.len() + self.expert.len());
        out.extend_from_slice(MAGIC);
        for part in [self.policy, self.expert] {
            out.extend_from_slice(&(part.len() as u64).to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// Parses [`DaggerWeights::to_bytes`], checking every length.
    pub fn parse(bytes: &'a [u8]) -> NnResult<DaggerWeights<'a>> {
        let bad = |m: &str| NnError::BadWeights(format!("dagger weights: {m}"));
        let mut pos = 0usize;
        let mut take = |n: usize| -> NnResult<&'a [u8]> {
            let end = pos.checked_add(n).filter(|&e| e <= bytes.len());
            let end = end.ok_or_else(|| bad("truncated"))?;
            let s = &bytes[pos..end];
            pos = end;
            Ok(s)
        };
        if take(4)? != MAGIC {
            return Err(bad("bad magic"));
        }
        let len = |b: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a) as usize
        };
        let n = len(take(8)?);
        let policy = take(n)?;
        let n = len(take(8)?);
        let expert = take(n)?;
        if pos != bytes.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(DaggerWeights { policy, expert })
    }
}

/// The mixture's agent.
pub struct DaggerAgent {
    policy: SacAgent,
    expert: Box<dyn Agent>,
    schedule: DaggerExplore,
    rng: EnvRng,
    expert_out: ActionBatch,
}

impl std::fmt::Debug for DaggerAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaggerAgent")
            .field("schedule", &self.schedule)
            .finish()
    }
}

impl Agent for DaggerAgent {
    fn fields(&self) -> ChunkFields {
        ChunkFields::default()
    }

    fn load_weights(&mut self, bytes: &[u8]) -> NnResult<()> {
        let w = DaggerWeights::parse(bytes)?;
        // Each load is checked whole before it changes anything; the expert's part is
        // the same in every version of a run, so only a first load can leave it
        // loaded with the policy refused.
        self.expert.load_weights(w.expert)?;
        self.policy.load_weights(w.policy)
    }

    fn act(
        &mut self,
        obs: &Tensor,
        progress: &Progress,
        mode: Mode,
        out: &mut ActionBatch,
    ) -> NnResult<()> {
        self.policy.act(obs, progress, Mode::Greedy, out)?;
        let beta = self.schedule.beta(progress.version);
        if mode == Mode::Greedy || beta == 0.0 {
            return Ok(());
        }
        self.expert
            .act(obs, &Progress::default(), Mode::Greedy, &mut self.expert_out)?;
        if self.expert_out.continuous.len() != out.continuous.len() {
            return Err(NnError::BadInput(format!(
                "the expert gave {} action values, the policy {}",
                self.expert_out.continuous.len(),
                out.continuous.len()
            )));
        }
        let n = obs.size().first().copied().unwrap_or(0).max(1) as usize;
        let dim = out.continuous.len() / n;
        for i in 0..n {
            if self.rng.random::<f64>() < beta {
                out.continuous[i * dim..(i + 1) * dim]
                    .copy_from_slice(&self.expert_out.continuous[i * dim..(i + 1) * dim]);
            }
        }
        Ok(())
    }

    fn decision(&self, obs: &Tensor, taken: &ActionBatch) -> NnResult<Decision> {
        self.policy.decision(obs, taken)
    }
}

/// DAgger's agent, from the [`DaggerSpec`] and [`DaggerExplore`] JSON the learner
/// sends.
pub fn agent(ctx: &AgentContext<'_>) -> NnResult<Box<dyn Agent>> {
    let spec: DaggerSpec = ctx.spec("dagger")?;
    let schedule: DaggerExplore = ctx.explore("dagger")?;
    schedule.validate()?;
    let policy_json = serde_json::to_string(&spec.policy)
        .map_err(|e| NnError::BadSpec(format!("dagger policy spec: {e}")))?;
    let policy = SacAgent::new(
        &AgentContext {
            spec_json: &policy_json,
            explore_json: "",
            ..ctx.clone()
        },
        "dagger",
        false,
    )?;
    if spec.expert.algorithm == "dagger" {
        return Err(NnError::BadSpec(
            "a dagger expert must be another algorithm's agent".into(),
        ));
    }
    let expert = spec.expert.build(
        ctx.observation_space,
        ctx.action_space,
        ctx.num_envs,
        ctx.seed ^ 0xe4,
        ctx.device,
    )?;
    Ok(Box::new(DaggerAgent {
        policy,
        expert,
        schedule,
        rng: EnvRng::seed_from_u64(ctx.seed ^ 0xda),
        expert_out: ActionBatch::default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Space;
    use tch::{Device, Kind};

    fn sac_spec() -> SacSpec {
        SacSpec {
            obs_dim: 2,
            action_low: vec![-1.0],
            action_high: vec![1.0],
            hidden: vec![8],
        }
    }

    fn inverse() -> DaggerExplore {
        DaggerExplore {
            beta: "inverse".into(),
            beta_p: 0.5,
        }
    }

    /// An agent whose policy acts about +0.9 and whose expert acts about -0.9 (their
    /// output biases).
    fn mixture(seed: u64) -> Box<dyn Agent> {
        let _torch = crate::testing::torch();
        let spec = sac_spec();
        let recipe = AgentRecipe {
            algorithm: "sac".into(),
            spec_json: serde_json::to_string(&spec).unwrap(),
            explore_json: String::new(),
        };
        let spec_json = serde_json::to_string(&DaggerSpec {
            policy: spec.clone(),
            expert: recipe,
        })
        .unwrap();
        let explore_json = serde_json::to_string(&inverse()).unwrap();
        let obs = Space::Box {
            shape: vec![2],
            low: vec![-10.0; 2],
            high: vec![10.0; 2],
        };
        let act = Space::Box {
            shape: vec![1],
            low: vec![-1.0],
            high: vec![1.0],
        };
        let ctx = AgentContext {
            spec_json: &spec_json,
            explore_json: &explore_json,
            observation_space: &obs,
            action_space: &act,
            num_envs: 4,
            seed,
            device: Device::Cpu,
        };
        let mut agent = agent(&ctx).unwrap();
        let weights = |bias: f32| {
            let a = super::super::sac::SacActor::new(spec.clone(), Device::Cpu).unwrap();
            tch::no_grad(|| {
                for p in a.parameters() {
                    let _ = p.shallow_clone().zero_();
                }
                // Every 1-element bias, which includes the mean's: the action is
                // tanh(bias) whatever the observation.
                for p in a.parameters().iter().filter(|p| p.size() == vec![1]) {
                    let _ = p.shallow_clone().fill_(f64::from(bias));
                }
            });
            a.to_bytes()
        };
        let (p, e) = (weights(1.5), weights(-1.5));
        agent
            .load_weights(
                &DaggerWeights {
                    policy: &p,
                    expert: &e,
                }
                .to_bytes(),
            )
            .unwrap();
        agent
    }

    fn expert_share(agent: &mut dyn Agent, version: u64, mode: Mode) -> f64 {
        let obs = Tensor::zeros([4, 2], (Kind::Float, Device::Cpu));
        let mut out = ActionBatch::default();
        let progress = Progress {
            version,
            ..Progress::default()
        };
        let mut expert = 0usize;
        for _ in 0..500 {
            agent.act(&obs, &progress, mode, &mut out).unwrap();
            expert += out.continuous.iter().filter(|&&a| a < 0.0).count();
        }
        expert as f64 / 2000.0
    }

    #[test]
    fn the_mixture_takes_the_experts_action_with_probability_beta() {
        let mut a = mixture(7);
        // Version i acts with beta_i = 1 / (1 + i): 1, 1/2, 1/4, 1/10.
        for version in [0u64, 1, 3, 9] {
            let beta = 1.0 / (1.0 + version as f64);
            let share = expert_share(&mut *a, version, Mode::Explore);
            // 2000 draws: 4 standard deviations at beta = 0.5 is 0.045.
            assert!((share - beta).abs() < 0.045, "version {version}: expert share {share}, beta {beta}");
            // Evaluation acts with the learnt policy alone.
            assert_eq!(expert_share(&mut *a, version, Mode::Greedy), 0.0);
        }
    }

    #[test]
    fn schedules_follow_their_formulas_and_bad_ones_are_named() {
        let s = inverse();
        assert_eq!((s.beta(0), s.beta(1), s.beta(4)), (1.0, 0.5, 0.2));
        let e = DaggerExplore {
            beta: "exponential".into(),
            beta_p: 0.5,
        };
        assert_eq!((e.beta(0), e.beta(1), e.beta(3)), (1.0, 0.5, 0.125));
        let f = DaggerExplore {
            beta: "first".into(),
            beta_p: 0.5,
        };
        assert_eq!((f.beta(0), f.beta(1), f.beta(7)), (1.0, 0.0, 0.0));
        let bad = DaggerExplore {
            beta: "linear".into(),
            beta_p: 0.5,
        };
        assert!(bad.validate().unwrap_err().to_string().contains("dagger.beta = 'linear'"));
        let p = DaggerExplore { beta_p: 1.0, ..e };
        assert!(p.validate().unwrap_err().to_string().contains("dagger.beta_p"));
    }

    #[test]
    fn bad_weights_are_refused_and_change_nothing() {
        let mut a = mixture(1);
        let p = vec![0u8; 3];
        let bad = DaggerWeights {
            policy: &p,
            expert: &p,
        }
        .to_bytes();
        assert!(a.load_weights(&bad).is_err());
        assert!(a.load_weights(&bad[..bad.len() - 1]).is_err());
        assert!(DaggerWeights::parse(&[bad.as_slice(), &[0]].concat()).is_err());
        let share = expert_share(&mut *a, 1, Mode::Explore);
        assert!((share - 0.5).abs() < 0.045, "{share}");
    }
}
