//! The networks of Double DQN (van Hasselt, Guez and Silver 2016, "Deep Reinforcement
//! Learning with Double Q-learning", arXiv 1509.06461) and how actors act with them.
//! The update lives in `volley_learner::algo::ddqn`.
//!
//! [`QNetwork`]: an encoder from a [`ModelSpec`] with a categorical head (the Nature
//! DQN CNN of Mnih et al. 2015 for pixels, 32 8x8/4, 64 4x4/2, 64 3x3/1 and 512
//! units; a ReLU MLP for vectors, CleanRL `dqn.py`'s 120-84; the IMPALA CNN too)
//! and one linear output per action, `Q(s, .)`. Layers keep PyTorch's default
//! initialisation (uniform in `+-1/sqrt(fan_in)`), as CleanRL's DQNs do.
//!
//! Acting ([`EpsilonGreedy`]): the argmax of `Q(s, .)`, replaced by a uniform random
//! action with probability epsilon, which falls linearly from `epsilon_start` to
//! `epsilon_final` over the run's first `epsilon_steps` env steps (CleanRL's
//! `linear_schedule`; the learner sends the run's step count with every weights
//! version). Greedy: the argmax alone.
//!
//! Weights travel as bytes in the format of [`super::weights`] with magic `VLYQ`.

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::spec::{ActionHead, ModelKind, ModelSpec};
use super::torso::{prep_obs, Activation, Builder, Encoder};
use super::{weights, Linear, NnError, NnResult};
use crate::agent::{
    chosen, to_i64_vec, ActionBatch, Agent, AgentContext, ChunkFields, Decision, Mode, Progress,
};

pub(crate) const WEIGHTS_MAGIC: &[u8; 4] = b"VLYQ";

/// `Q(s, .)`: an encoder and one output per action.
#[derive(Debug)]
pub struct QNetwork {
    spec: ModelSpec,
    /// Owns the variables.
    _vs: VarStore,
    /// Every variable in creation order with its name (the weights' byte order).
    vars: Vec<(String, Tensor)>,
    encoder: Encoder,
    head: Linear,
    device: Device,
}

impl QNetwork {
    /// A fresh network for `spec` (its head must be categorical) on `device`.
    pub fn new(spec: ModelSpec, device: Device) -> NnResult<QNetwork> {
        QNetwork::named(spec, device, None)
    }

    /// [`QNetwork::new`] with every variable name under `prefix` (`prefix.torso.0...`),
    /// for networks made of several Q networks.
    pub fn named(spec: ModelSpec, device: Device, prefix: Option<&str>) -> NnResult<QNetwork> {
        spec.validate()?;
        let ActionHead::Categorical { n } = spec.action else {
            return Err(NnError::BadSpec(
                "a q network needs a discrete action space".into(),
            ));
        };
        let vs = VarStore::new(device);
        let mut b = Builder {
            root: vs.root(),
            device,
            vars: Vec::new(),
        };
        let (encoder, feat) = match &spec.kind {
            ModelKind::ImpalaCnn { depths, fc } => {
                Encoder::impala(&mut b, "torso", &spec.obs_shape, depths, *fc)?
            }
            ModelKind::NatureCnn { fc } => {
                Encoder::nature(&mut b, "torso", &spec.obs_shape, *fc, None)?
            }
            ModelKind::Mlp { hidden } => Encoder::mlp(
                &mut b,
                "torso",
                spec.obs_len() as i64,
                hidden,
                None,
                Activation::Relu,
            )?,
        };
        let head = b.linear(&["q_head"], feat, n as i64, None)?;
        let mut vars = b.vars;
        if let Some(p) = prefix {
            for (name, _) in &mut vars {
                *name = format!("{p}.{name}");
            }
        }
        Ok(QNetwork {
            spec,
            _vs: vs,
            vars,
            encoder,
            head,
            device,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Number of actions.
    pub fn num_actions(&self) -> usize {
        match self.spec.action {
            ActionHead::Categorical { n } => n,
            ActionHead::Gaussian { dim } => dim,
        }
    }

    /// The trainable variables in their fixed order (shallow clones).
    pub fn parameters(&self) -> Vec<Tensor> {
        self.vars.iter().map(|(_, t)| t.shallow_clone()).collect()
    }

    /// Names and variables, in byte order.
    pub fn named_variables(&self) -> &[(String, Tensor)] {
        &self.vars
    }

    /// `Q(s, .)` `[B, actions]` for `[B, *obs_shape]` (or flat `[B, obs_len]`)
    /// observations, with gradient.
    pub fn forward(&self, obs: &Tensor) -> NnResult<Tensor> {
        let x = prep_obs(
            obs,
            &self.spec.obs_shape,
            self.spec.obs_u8,
            self.encoder.is_cnn(),
            self.device,
        )?;
        self.head.forward(&self.encoder.forward(&x)?)
    }

    /// Copies every variable of `other` (same spec): the hard target update.
    pub fn copy_from(&mut self, other: &QNetwork) -> NnResult<()> {
        self.soft_update_from(other, 1.0)
    }

    /// Polyak averaging towards `other`: `t <- tau t' + (1 - tau) t`.
    pub fn soft_update_from(&mut self, other: &QNetwork, tau: f64) -> NnResult<()> {
        polyak(&mut self.vars, &other.vars, tau)
    }

    /// Every variable as bytes (format in [`super::weights`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        weights::encode(WEIGHTS_MAGIC, &self.vars)
    }

    /// Replaces every variable with [`QNetwork::to_bytes`] of a network with the same
    /// spec; checked first, on error unchanged.
    pub fn load_bytes(&mut self, bytes: &[u8]) -> NnResult<()> {
        weights::decode_into(WEIGHTS_MAGIC, bytes, &mut self.vars)
    }
}

/// `t <- tau s + (1 - tau) t` for every pair of variables (same names and shapes).
pub(crate) fn polyak(
    target: &mut [(String, Tensor)],
    source: &[(String, Tensor)],
    tau: f64,
) -> NnResult<()> {
    let same = target.len() == source.len()
        && target
            .iter()
            .zip(source)
            .all(|((a, x), (b, y))| a == b && x.size() == y.size());
    if !same {
        return Err(NnError::BadInput(
            "target update between networks of different specs".into(),
        ));
    }
    let _guard = tch::no_grad_guard();
    for ((_, t), (_, s)) in target.iter_mut().zip(source) {
        let _ = t.f_lerp_(s, tau)?;
    }
    Ok(())
}

/// The exploration schedule actors receive: epsilon linear over the run's env steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpsilonSchedule {
    pub epsilon_start: f64,
    pub epsilon_final: f64,
    /// Env steps over which epsilon falls from start to final.
    pub epsilon_steps: u64,
}

impl EpsilonSchedule {
    /// Epsilon after `steps` env steps of the run (CleanRL's `linear_schedule`).
    pub fn epsilon(&self, steps: u64) -> f64 {
        if steps >= self.epsilon_steps {
            return self.epsilon_final;
        }
        let frac = steps as f64 / self.epsilon_steps as f64;
        self.epsilon_start + (self.epsilon_final - self.epsilon_start) * frac
    }

    /// Checks the ranges (the schedule may come from a peer).
    pub fn validate(&self) -> NnResult<()> {
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        if !unit(self.epsilon_start) || !unit(self.epsilon_final) {
            return Err(NnError::BadSpec(format!(
                "epsilon_start {} and epsilon_final {} must be in [0, 1]",
                self.epsilon_start, self.epsilon_final
            )));
        }
        Ok(())
    }
}

/// Epsilon-greedy choice over the greedy actions of a batch.
#[derive(Debug, Clone)]
pub struct EpsilonGreedy {
    pub schedule: EpsilonSchedule,
    rng: Xoshiro256PlusPlus,
    /// Epsilon of the last exploring call.
    last: Option<f64>,
}

impl EpsilonGreedy {
    pub fn new(schedule: EpsilonSchedule, seed: u64) -> EpsilonGreedy {
        EpsilonGreedy {
            schedule,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            last: None,
        }
    }

    /// The greedy actions `argmax_a q[b, a]` of `q` `[B, actions]`; while exploring,
    /// each replaced with probability epsilon(progress.steps) by a uniform action.
    pub fn choose(&mut self, q: &Tensor, progress: &Progress, mode: Mode) -> NnResult<Vec<i64>> {
        let n = q.size().get(1).copied().unwrap_or(0);
        let mut actions = to_i64_vec(&q.f_argmax(1, false)?)?;
        self.last = None;
        if mode == Mode::Explore && n > 0 {
            let eps = self.schedule.epsilon(progress.steps);
            for a in &mut actions {
                if self.rng.random::<f64>() < eps {
                    *a = self.rng.random_range(0..n);
                }
            }
            self.last = Some(eps);
        }
        Ok(actions)
    }

    /// Epsilon of the last exploring [`EpsilonGreedy::choose`].
    pub fn last_epsilon(&self) -> Option<f64> {
        self.last
    }
}

/// What an epsilon-greedy agent acts on: a network of action values.
pub trait ActionValues: Send + std::fmt::Debug {
    /// The values `[B, actions]` of a batch of observations (with gradient).
    fn action_values(&self, obs: &Tensor) -> NnResult<Tensor>;
    /// Replaces the network's weights (checked first: on error unchanged).
    fn load_weights(&mut self, bytes: &[u8]) -> NnResult<()>;
}

impl ActionValues for QNetwork {
    fn action_values(&self, obs: &Tensor) -> NnResult<Tensor> {
        self.forward(obs)
    }

    fn load_weights(&mut self, bytes: &[u8]) -> NnResult<()> {
        self.load_bytes(bytes)
    }
}

/// The agent of the Q-learning algorithms: epsilon-greedy on a network's action
/// values, epsilon by the run's env steps.
#[derive(Debug)]
pub struct EpsilonGreedyAgent<Q: ActionValues> {
    q: Q,
    explore: EpsilonGreedy,
}

impl<Q: ActionValues> EpsilonGreedyAgent<Q> {
    /// The agent of `algorithm` from the [`ModelSpec`] and [`EpsilonSchedule`] JSON the
    /// learner sends, its network built by `network`; `salt` sets its own random
    /// stream apart.
    pub fn from_context(
        algorithm: &str,
        ctx: &AgentContext<'_>,
        network: impl FnOnce(ModelSpec, Device) -> NnResult<Q>,
        salt: u64,
    ) -> NnResult<Self> {
        let spec: ModelSpec = ctx.spec(algorithm)?;
        let schedule: EpsilonSchedule = ctx.explore(algorithm)?;
        schedule.validate()?;
        Ok(EpsilonGreedyAgent {
            q: network(spec, ctx.device)?,
            explore: EpsilonGreedy::new(schedule, ctx.seed ^ salt),
        })
    }
}

impl<Q: ActionValues> Agent for EpsilonGreedyAgent<Q> {
    fn fields(&self) -> ChunkFields {
        ChunkFields {
            next_obs: true,
            ..ChunkFields::default()
        }
    }

    fn load_weights(&mut self, bytes: &[u8]) -> NnResult<()> {
        self.q.load_weights(bytes)
    }

    fn act(
        &mut self,
        obs: &Tensor,
        progress: &Progress,
        mode: Mode,
        out: &mut ActionBatch,
    ) -> NnResult<()> {
        let q = tch::no_grad(|| self.q.action_values(obs))?;
        out.discrete = self.explore.choose(&q, progress, mode)?;
        Ok(())
    }

    fn epsilon(&self) -> Option<f64> {
        self.explore.last_epsilon()
    }

    /// The chosen action's value; the value side is `max_a Q(s, a)`.
    fn decision(&self, obs: &Tensor, taken: &ActionBatch) -> NnResult<Decision> {
        let q = self.q.action_values(obs)?;
        let size = q.size();
        let a = chosen(taken, size[0], size[1], q.device())?;
        Ok(Decision {
            outputs: q.f_gather(1, &a, false)?,
            value: Some(q.f_amax(&[1i64][..], false)?),
            policy: q,
        })
    }
}

/// Double DQN's agent: epsilon-greedy on `Q(s, .)`.
pub fn agent(ctx: &AgentContext<'_>) -> NnResult<Box<dyn Agent>> {
    Ok(Box::new(EpsilonGreedyAgent::from_context(
        "ddqn",
        ctx,
        QNetwork::new,
        0xd0,
    )?))
}

/// `q[b, actions[b]]`, `[B]`, for values `q` `[B, actions]` and actions `[B]`.
pub fn gather_actions(q: &Tensor, actions: &Tensor) -> NnResult<Tensor> {
    Ok(q
        .f_gather(1, &actions.f_to_kind(Kind::Int64)?.f_unsqueeze(1)?, false)?
        .f_squeeze_dim(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Space;

    fn spec() -> ModelSpec {
        ModelSpec::for_spaces(
            ModelKind::Mlp {
                hidden: vec![16, 8],
            },
            &Space::uniform_box(&[4], -1.0, 1.0),
            &Space::Discrete { n: 3 },
        )
        .unwrap()
    }

    #[test]
    fn q_values_targets_and_weights() {
        let _torch = crate::testing::torch();
        tch::manual_seed(0);
        let q = QNetwork::new(spec(), Device::Cpu).unwrap();
        let mut t = QNetwork::new(spec(), Device::Cpu).unwrap();
        let obs = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
        assert_eq!(q.forward(&obs).unwrap().size(), vec![5, 3]);
        let diff = |a: &QNetwork, b: &QNetwork| {
            (a.forward(&obs).unwrap() - b.forward(&obs).unwrap())
                .abs()
                .max()
                .double_value(&[])
        };
        assert!(diff(&q, &t) > 0.0);
        t.copy_from(&q).unwrap();
        assert_eq!(diff(&q, &t), 0.0);
        let mut c = QNetwork::new(spec(), Device::Cpu).unwrap();
        c.load_bytes(&q.to_bytes()).unwrap();
        assert_eq!(diff(&q, &c), 0.0);
        assert!(c.load_bytes(&q.to_bytes()[..100]).is_err());
        let named = QNetwork::named(spec(), Device::Cpu, Some("positive")).unwrap();
        assert!(named.named_variables()[0].0.starts_with("positive.torso."));
        assert!(c.load_bytes(&named.to_bytes()).is_err());
        // Images need a discrete head and at least 36x36 for the Nature CNN.
        let image = Space::Image {
            height: 84,
            width: 84,
            channels: 4,
        };
        let cnn = ModelSpec::for_spaces(
            ModelKind::NatureCnn { fc: 32 },
            &image,
            &Space::Discrete { n: 6 },
        )
        .unwrap();
        let n = QNetwork::new(cnn, Device::Cpu).unwrap();
        let frames = Tensor::zeros([2, 84, 84, 4], (Kind::Uint8, Device::Cpu));
        assert_eq!(n.forward(&frames).unwrap().size(), vec![2, 6]);
        // Flat rows, as the replay stores them, are read too.
        assert_eq!(
            n.forward(&frames.view([2, -1])).unwrap().size(),
            vec![2, 6]
        );
    }

    #[test]
    fn epsilon_falls_linearly_over_the_run_steps() {
        let s = EpsilonSchedule {
            epsilon_start: 1.0,
            epsilon_final: 0.05,
            epsilon_steps: 1000,
        };
        assert_eq!(s.epsilon(0), 1.0);
        assert!((s.epsilon(500) - 0.525).abs() < 1e-12);
        assert_eq!(s.epsilon(1000), 0.05);
        assert_eq!(s.epsilon(5000), 0.05);
        // Exploring at epsilon 1 draws uniform actions; greedy never does.
        let mut e = EpsilonGreedy::new(s, 3);
        let q = Tensor::from_slice(&[0.0f32, 5.0, 1.0])
            .view([1, 3])
            .repeat([3000, 1]);
        let p = Progress::default();
        let acts = e.choose(&q, &p, Mode::Explore).unwrap();
        for a in 0..3 {
            let k = acts.iter().filter(|&&x| x == a).count();
            assert!((900..1100).contains(&k), "action {a} drawn {k} times");
        }
        assert_eq!(e.last_epsilon(), Some(1.0));
        let greedy = e.choose(&q, &p, Mode::Greedy).unwrap();
        assert!(greedy.iter().all(|&a| a == 1));
        assert_eq!(e.last_epsilon(), None);
        let late = Progress {
            steps: 10_000,
            ..p
        };
        let acts = e.choose(&q, &late, Mode::Explore).unwrap();
        let random = acts.iter().filter(|&&a| a != 1).count();
        // epsilon 0.05: 2/3 of the random draws miss action 1, about 100 of 3000.
        assert!((50..160).contains(&random), "{random} non-greedy actions");
    }
}
