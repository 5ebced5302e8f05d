//! The actor-critic [`Policy`]: a torso from the [`ModelSpec`] (IMPALA CNN, Nature CNN
//! or MLP), a categorical or diagonal-Gaussian actor head and a scalar critic head.
//!
//! Initialisation follows CleanRL: the heads are orthogonal with gain 0.01 (actor) and
//! 1 (critic), zero biases (`layer_init`). The Nature CNN and MLP hidden layers are
//! orthogonal with gain sqrt(2) (`ppo_atari.py`, `ppo.py`); the IMPALA CNN torso keeps
//! PyTorch's default init, as `ppo_procgen.py` (and train-procgen's TF defaults) do:
//! orthogonal sqrt(2) through its six residual blocks inflates the features about 8x
//! (initial values near -25 on random images), and clipped value loss then needs
//! many updates to pull the critic back.
//!
//! Weights travel as bytes ([`Policy::to_bytes`], [`Policy::load_bytes`]):
//!
//! ```text
//! "VLYW" | version u32 = 1 | count u32
//! count x ( name_len u32 | name (utf-8) | ndim u32 | ndim x dim u64 )
//! total u64 (number of f32) | total x f32, variables in the order above
//! ```
//!
//! all little-endian. Variables are in a fixed order (the order the network creates
//! them), so two policies built from the same spec exchange weights.

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::init::{GAIN_ACTOR, GAIN_CRITIC, GAIN_HIDDEN};
use super::spec::{ActionHead, ModelKind, ModelSpec};
use super::torso::{prep_obs, Activation, Builder, Encoder};
use super::{weights, Linear, NnError, NnResult};
use crate::agent::{
    chosen, to_f32_vec, to_i64_vec, ActionBatch, Agent, AgentContext, ChunkFields, Decision, Mode,
    Progress,
};

const WEIGHTS_MAGIC: &[u8; 4] = b"VLYW";
/// ln(2 pi) / 2, for Gaussian log-densities.
const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_7;

/// One sampled (or greedy) action per observation, with what the learner needs later.
#[derive(Debug)]
pub struct Act {
    /// `i64` [B] (categorical) or `f32` [B, dim] (Gaussian).
    pub action: Tensor,
    /// `f32` [B]: log-probability of `action` under the policy that chose it.
    pub logprob: Tensor,
    /// `f32` [B]: the critic's value of the observation.
    pub value: Tensor,
}

/// The torso: one encoder both heads read (CNNs), or one MLP per head.
#[derive(Debug)]
enum Torso {
    Shared(Encoder),
    Split { actor: Encoder, critic: Encoder },
}

/// An actor-critic network built from a [`ModelSpec`], on one device.
#[derive(Debug)]
pub struct Policy {
    spec: ModelSpec,
    /// Owns the variables (and lets callers use tch's helpers on them).
    vs: VarStore,
    /// Every variable in creation order: the order of the weights bytes and of
    /// [`Policy::parameters`].
    vars: Vec<(String, Tensor)>,
    torso: Torso,
    actor_head: Linear,
    critic_head: Linear,
    /// Gaussian head only: state-independent log standard deviation, [1, dim].
    log_std: Option<Tensor>,
}

impl Policy {
    /// Builds a freshly initialised network (tch's global generator: seed it with
    /// `tch::manual_seed` for reproducible weights).
    pub fn new(spec: ModelSpec, device: Device) -> NnResult<Policy> {
        spec.validate()?;
        let vs = VarStore::new(device);
        let mut b = Builder {
            root: vs.root(),
            device,
            vars: Vec::new(),
        };
        let (torso, feat_actor, feat_critic) = match &spec.kind {
            ModelKind::ImpalaCnn { depths, fc } => {
                let (e, d) = Encoder::impala(&mut b, "torso", &spec.obs_shape, depths, *fc)?;
                (Torso::Shared(e), d, d)
            }
            ModelKind::NatureCnn { fc } => {
                let (e, d) =
                    Encoder::nature(&mut b, "torso", &spec.obs_shape, *fc, Some(GAIN_HIDDEN))?;
                (Torso::Shared(e), d, d)
            }
            ModelKind::Mlp { hidden } => {
                let din = spec.obs_len() as i64;
                let g = Some(GAIN_HIDDEN);
                let (actor, da) = Encoder::mlp(&mut b, "actor", din, hidden, g, Activation::Tanh)?;
                let (critic, dc) =
                    Encoder::mlp(&mut b, "critic", din, hidden, g, Activation::Tanh)?;
                (Torso::Split { actor, critic }, da, dc)
            }
        };
        let out = match spec.action {
            ActionHead::Categorical { n } => n as i64,
            ActionHead::Gaussian { dim } => dim as i64,
        };
        let actor_head = b.linear(&["actor_head"], feat_actor, out, Some(GAIN_ACTOR))?;
        let critic_head = b.linear(&["critic_head"], feat_critic, 1, Some(GAIN_CRITIC))?;
        let log_std = match spec.action {
            ActionHead::Gaussian { dim } => {
                let z = Tensor::f_zeros([1, dim as i64], (Kind::Float, device))?;
                Some(b.add(&["actor_log_std"], "value", z))
            }
            ActionHead::Categorical { .. } => None,
        };
        let vars = b.vars;
        Ok(Policy {
            spec,
            vs,
            vars,
            torso,
            actor_head,
            critic_head,
            log_std,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// The trainable variables in their fixed order (shallow clones: updating them
    /// updates the policy). Hand these to [`super::Adam`].
    pub fn parameters(&self) -> Vec<Tensor> {
        self.vars.iter().map(|(_, t)| t.shallow_clone()).collect()
    }

    /// Variable names and shapes in their fixed order.
    pub fn variable_shapes(&self) -> Vec<(String, Vec<i64>)> {
        self.vars
            .iter()
            .map(|(n, t)| (n.clone(), t.size()))
            .collect()
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.vars.iter().map(|(_, t)| t.numel()).sum()
    }

    /// Observations as the torso reads them ([`prep_obs`]).
    fn prep(&self, obs: &Tensor) -> NnResult<Tensor> {
        let cnn = match &self.torso {
            Torso::Shared(e) => e.is_cnn(),
            Torso::Split { .. } => false,
        };
        prep_obs(
            obs,
            &self.spec.obs_shape,
            self.spec.obs_u8,
            cnn,
            self.device(),
        )
    }

    /// Actor-head output ([B, n] logits or [B, dim] means) and values [B].
    fn forward(&self, obs: &Tensor) -> NnResult<(Tensor, Tensor)> {
        let x = self.prep(obs)?;
        let (a, c) = match &self.torso {
            Torso::Shared(e) => {
                let f = e.forward(&x)?;
                (f.shallow_clone(), f)
            }
            Torso::Split { actor, critic } => (actor.forward(&x)?, critic.forward(&x)?),
        };
        let head = self.actor_head.forward(&a)?;
        let value = self.critic_head.forward(&c)?.f_squeeze_dim(1)?;
        Ok((head, value))
    }

    /// The actor head's output (`[B, n]` logits or `[B, dim]` means) and the
    /// critic's values `[B]`, with gradient (explanations differentiate these).
    pub fn heads(&self, obs: &Tensor) -> NnResult<(Tensor, Tensor)> {
        self.forward(obs)
    }

    /// Samples an action for each observation (no gradient).
    pub fn act(&self, obs: &Tensor) -> NnResult<Act> {
        let _guard = tch::no_grad_guard();
        let (head, value) = self.forward(obs)?;
        let (action, logprob) = match &self.log_std {
            None => {
                let logp = head.f_log_softmax(-1, Kind::Float)?;
                let action = logp.f_exp()?.f_multinomial(1, true)?;
                let logprob = logp.f_gather(1, &action, false)?.f_squeeze_dim(1)?;
                (action.f_squeeze_dim(1)?, logprob)
            }
            Some(log_std) => {
                let noise = head.f_randn_like()?;
                let action = head.f_add(&noise.f_mul(&log_std.f_exp()?)?)?;
                let logprob = gaussian_logprob(&head, log_std, &action)?;
                (action, logprob)
            }
        };
        Ok(Act {
            action,
            logprob,
            value,
        })
    }

    /// The most likely action (argmax / mean) for each observation (no gradient).
    pub fn act_greedy(&self, obs: &Tensor) -> NnResult<Act> {
        let _guard = tch::no_grad_guard();
        let (head, value) = self.forward(obs)?;
        let (action, logprob) = match &self.log_std {
            None => {
                let logp = head.f_log_softmax(-1, Kind::Float)?;
                let action = logp.f_argmax(-1, true)?;
                let logprob = logp.f_gather(1, &action, false)?.f_squeeze_dim(1)?;
                (action.f_squeeze_dim(1)?, logprob)
            }
            Some(log_std) => {
                let logprob = gaussian_logprob(&head, log_std, &head)?;
                (head, logprob)
            }
        };
        Ok(Act {
            action,
            logprob,
            value,
        })
    }

    /// Log-probabilities of `actions`, entropies and values, with gradient: the terms
    /// of the PPO loss. `actions` are [B] integers (categorical) or [B, dim] floats.
    pub fn evaluate(&self, obs: &Tensor, actions: &Tensor) -> NnResult<(Tensor, Tensor, Tensor)> {
        let batch = obs.size().first().copied().unwrap_or(-1);
        let (head, value) = self.forward(obs)?;
        let asize = actions.size();
        match (&self.log_std, &self.spec.action) {
            (None, ActionHead::Categorical { n }) => {
                if asize != [batch] {
                    return Err(NnError::BadInput(format!(
                        "categorical actions of shape {asize:?}, expected [{batch}]"
                    )));
                }
                let a = actions
                    .f_to_device(self.device())?
                    .f_to_kind(Kind::Int64)?
                    .f_clamp(0, *n as i64 - 1)?
                    .f_unsqueeze(1)?;
                let logp = head.f_log_softmax(-1, Kind::Float)?;
                let logprob = logp.f_gather(1, &a, false)?.f_squeeze_dim(1)?;
                let entropy = logp
                    .f_exp()?
                    .f_mul(&logp)?
                    .f_sum_dim_intlist(-1, false, Kind::Float)?
                    .f_neg()?;
                Ok((logprob, entropy, value))
            }
            (Some(log_std), ActionHead::Gaussian { dim }) => {
                if asize != [batch, *dim as i64] {
                    return Err(NnError::BadInput(format!(
                        "gaussian actions of shape {asize:?}, expected [{batch}, {dim}]"
                    )));
                }
                let a = actions.f_to_device(self.device())?.f_to_kind(Kind::Float)?;
                let logprob = gaussian_logprob(&head, log_std, &a)?;
                // Entropy of N(mu, sigma) per dimension: 1/2 + ln(2 pi)/2 + ln sigma.
                let entropy = log_std
                    .f_add_scalar(0.5 + HALF_LOG_2PI)?
                    .f_sum_dim_intlist(-1, false, Kind::Float)?
                    .f_expand([batch], false)?;
                Ok((logprob, entropy, value))
            }
            _ => Err(NnError::BadSpec("head and spec disagree".into())),
        }
    }

    /// The critic's values [B] (no gradient).
    pub fn value(&self, obs: &Tensor) -> NnResult<Tensor> {
        let _guard = tch::no_grad_guard();
        Ok(self.forward(obs)?.1)
    }

    /// Every variable as bytes (format in [`super::weights`]). One device-to-host copy.
    pub fn to_bytes(&self) -> Vec<u8> {
        weights::encode(WEIGHTS_MAGIC, &self.vars)
    }

    /// Replaces every variable with the values in `bytes` (from [`Policy::to_bytes`] of
    /// a policy with the same spec). Checks the format, names, shapes, length and that
    /// every value is finite before changing anything: on error the policy is unchanged.
    pub fn load_bytes(&mut self, bytes: &[u8]) -> NnResult<()> {
        weights::decode_into(WEIGHTS_MAGIC, bytes, &mut self.vars)
    }
}

/// The agent of the actor-critic algorithms (PPO and those that share its network):
/// while exploring, an action
/// sampled from the policy with its log-probability and the critic's value; when
/// greedy, the most likely action (argmax or mean).
#[derive(Debug)]
pub struct ActorCriticAgent {
    policy: Policy,
}

impl ActorCriticAgent {
    /// The agent of `algorithm` from its [`ModelSpec`] JSON.
    pub fn from_context(algorithm: &str, ctx: &AgentContext<'_>) -> NnResult<Self> {
        let spec: ModelSpec = ctx.spec(algorithm)?;
        Ok(ActorCriticAgent {
            policy: Policy::new(spec, ctx.device)?,
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

impl Agent for ActorCriticAgent {
    fn fields(&self) -> ChunkFields {
        ChunkFields {
            logprobs: true,
            values: true,
            next_obs: false,
        }
    }

    fn load_weights(&mut self, bytes: &[u8]) -> NnResult<()> {
        self.policy.load_bytes(bytes)
    }

    fn act(
        &mut self,
        obs: &Tensor,
        _progress: &Progress,
        mode: Mode,
        out: &mut ActionBatch,
    ) -> NnResult<()> {
        let act = match mode {
            Mode::Explore => self.policy.act(obs)?,
            Mode::Greedy => self.policy.act_greedy(obs)?,
        };
        out.logprobs = to_f32_vec(&act.logprob)?;
        out.values = to_f32_vec(&act.value)?;
        match self.policy.spec().action {
            ActionHead::Categorical { .. } => out.discrete = to_i64_vec(&act.action)?,
            ActionHead::Gaussian { .. } => out.continuous = to_f32_vec(&act.action)?,
        }
        Ok(())
    }

    fn values(&self, obs: &Tensor) -> NnResult<Vec<f32>> {
        to_f32_vec(&self.policy.value(obs)?)
    }

    /// Categorical: the chosen action's log-probability; Gaussian: the means.
    fn decision(&self, obs: &Tensor, taken: &ActionBatch) -> NnResult<Decision> {
        let (head, value) = self.policy.heads(obs)?;
        let outputs = match self.policy.spec().action {
            ActionHead::Categorical { n } => {
                let rows = head.size()[0];
                let a = chosen(taken, rows, n as i64, head.device())?;
                head.f_log_softmax(-1, Kind::Float)?
                    .f_gather(1, &a, false)?
            }
            ActionHead::Gaussian { .. } => head.shallow_clone(),
        };
        Ok(Decision {
            outputs,
            policy: head,
            value: Some(value),
        })
    }
}

/// Log-density of `action` under N(mean, exp(log_std)^2), summed over the last dim.
fn gaussian_logprob(mean: &Tensor, log_std: &Tensor, action: &Tensor) -> NnResult<Tensor> {
    let z = action.f_sub(mean)?.f_mul(&log_std.f_neg()?.f_exp()?)?;
    let lp = z
        .f_square()?
        .f_mul_scalar(-0.5)?
        .f_sub(log_std)?
        .f_sub_scalar(HALF_LOG_2PI)?;
    Ok(lp.f_sum_dim_intlist(-1, false, Kind::Float)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ModelKind;

    fn mlp_spec(action: ActionHead) -> ModelSpec {
        ModelSpec {
            kind: ModelKind::Mlp {
                hidden: vec![16, 16],
            },
            obs_shape: vec![5],
            obs_u8: false,
            action,
        }
    }

    #[test]
    fn weights_round_trip_and_bad_input_errors() {
        let _torch = crate::testing::torch();
        tch::manual_seed(1);
        let spec = mlp_spec(ActionHead::Gaussian { dim: 2 });
        let a = Policy::new(spec.clone(), Device::Cpu).unwrap();
        let mut b = Policy::new(spec.clone(), Device::Cpu).unwrap();
        let obs = Tensor::randn([7, 5], (Kind::Float, Device::Cpu));
        let va = a.value(&obs).unwrap();
        assert!(
            va.f_sub(&b.value(&obs).unwrap())
                .unwrap()
                .abs()
                .max()
                .double_value(&[])
                > 0.0
        );
        let bytes = a.to_bytes();
        assert_eq!(&bytes[..4], WEIGHTS_MAGIC);
        b.load_bytes(&bytes).unwrap();
        assert_eq!(b.to_bytes(), bytes);
        let vb = b.value(&obs).unwrap();
        assert_eq!(va.f_sub(&vb).unwrap().abs().max().double_value(&[]), 0.0);

        let before = b.to_bytes();
        let expect_err = |b: &mut Policy, bad: &[u8], needle: &str| {
            let e = b.load_bytes(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "'{e}' should mention '{needle}'");
        };
        expect_err(&mut b, &[], "truncated");
        expect_err(&mut b, b"XXXX", "magic");
        expect_err(&mut b, &bytes[..bytes.len() - 1], "data section");
        let mut longer = bytes.clone();
        longer.push(0);
        expect_err(&mut b, &longer, "data section");
        let mut v2 = bytes.clone();
        v2[4] = 2;
        expect_err(&mut b, &v2, "version");
        let mut renamed = bytes.clone();
        // First name starts after magic, version, count and the name length.
        renamed[16] ^= 0x20;
        expect_err(&mut b, &renamed, "variable 0");
        let mut nan = bytes.clone();
        let n = nan.len();
        nan[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        expect_err(&mut b, &nan, "NaN");
        // Every truncation is an error, never a panic.
        for cut in 0..bytes.len() {
            assert!(b.load_bytes(&bytes[..cut]).is_err());
        }
        // Another architecture is rejected by name or shape.
        let other = Policy::new(mlp_spec(ActionHead::Gaussian { dim: 3 }), Device::Cpu).unwrap();
        expect_err(&mut b, &other.to_bytes(), "shape");
        let cat = Policy::new(mlp_spec(ActionHead::Categorical { n: 2 }), Device::Cpu).unwrap();
        assert!(b.load_bytes(&cat.to_bytes()).is_err());
        // Failed loads left the policy unchanged.
        assert_eq!(b.to_bytes(), before);
    }

    #[test]
    fn impala_takes_u8_hwc_images() {
        tch::set_num_threads(2);
        tch::manual_seed(2);
        let spec = ModelSpec {
            kind: ModelKind::impala(),
            obs_shape: vec![64, 64, 3],
            obs_u8: true,
            action: ActionHead::Categorical { n: 15 },
        };
        let p = Policy::new(spec, Device::Cpu).unwrap();
        // 3 stacks of (conv + 4 res convs) x (w, b) + fc + 2 heads.
        assert_eq!(p.parameters().len(), 3 * 5 * 2 + 2 + 4);
        // 64 -> 32 -> 16 -> 8: the fc layer reads 8 * 8 * 32 features.
        let fc = p
            .variable_shapes()
            .into_iter()
            .find(|(n, _)| n == "torso.fc.weight");
        assert_eq!(fc.map(|(_, s)| s), Some(vec![256, 8 * 8 * 32]));
        let obs = Tensor::randint(256, [4, 64, 64, 3], (Kind::Uint8, Device::Cpu));
        let act = p.act(&obs).unwrap();
        assert_eq!(act.action.size(), vec![4]);
        assert_eq!(act.action.kind(), Kind::Int64);
        assert_eq!(act.logprob.size(), vec![4]);
        assert_eq!(act.value.size(), vec![4]);
        // Near-uniform initial policy (actor head gain 0.01).
        let lp = act.logprob.abs().f_sub_scalar((15f64).ln()).unwrap();
        assert!(lp.abs().max().double_value(&[]) < 0.05);
        // Modest initial values (PyTorch-default torso, critic gain 1).
        assert!(act.value.abs().max().double_value(&[]) < 3.0);
        let (logprob, entropy, value) = p.evaluate(&obs, &act.action).unwrap();
        assert!(
            logprob
                .f_sub(&act.logprob)
                .unwrap()
                .abs()
                .max()
                .double_value(&[])
                < 1e-5
        );
        assert!(
            value
                .f_sub(&act.value)
                .unwrap()
                .abs()
                .max()
                .double_value(&[])
                < 1e-5
        );
        assert!((entropy.mean(Kind::Float).double_value(&[]) - 15f64.ln()).abs() < 0.05);
        assert!(logprob.requires_grad());
        // The same images as f32 give the same values (both scaled by 1/255).
        let v32 = p.value(&obs.to_kind(Kind::Float)).unwrap();
        assert!(v32.f_sub(&act.value).unwrap().abs().max().double_value(&[]) < 1e-5);
        let e = p.act(&Tensor::zeros([4, 3, 64, 64], (Kind::Uint8, Device::Cpu)));
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("expected [B, 64, 64, 3]"));
        let g = p.act_greedy(&obs).unwrap();
        assert_eq!(g.action.size(), vec![4]);
    }

    #[test]
    fn nature_cnn_and_gaussian_head() {
        let _torch = crate::testing::torch();
        tch::manual_seed(3);
        let spec = ModelSpec {
            kind: ModelKind::NatureCnn { fc: 32 },
            obs_shape: vec![84, 84, 4],
            obs_u8: true,
            action: ActionHead::Categorical { n: 6 },
        };
        let p = Policy::new(spec, Device::Cpu).unwrap();
        let obs = Tensor::zeros([2, 84, 84, 4], (Kind::Uint8, Device::Cpu));
        assert_eq!(p.act(&obs).unwrap().action.size(), vec![2]);

        let p = Policy::new(mlp_spec(ActionHead::Gaussian { dim: 3 }), Device::Cpu).unwrap();
        let obs = Tensor::randn([6, 5], (Kind::Float, Device::Cpu));
        let act = p.act(&obs).unwrap();
        assert_eq!(act.action.size(), vec![6, 3]);
        let (logprob, entropy, _) = p.evaluate(&obs, &act.action).unwrap();
        assert!(
            logprob
                .f_sub(&act.logprob)
                .unwrap()
                .abs()
                .max()
                .double_value(&[])
                < 1e-5
        );
        // log_std = 0: entropy 3 * (1/2 + ln(2 pi)/2).
        let want = 3.0 * (0.5 + HALF_LOG_2PI);
        assert!((entropy.double_value(&[0]) - want).abs() < 1e-5);
        // Greedy action is the mean, with log-density -3 ln(2 pi)/2.
        let g = p.act_greedy(&obs).unwrap();
        assert!((g.logprob.double_value(&[0]) + 3.0 * HALF_LOG_2PI).abs() < 1e-5);
        assert!(p
            .evaluate(&obs, &Tensor::zeros([6], (Kind::Int64, Device::Cpu)))
            .is_err());
    }
}
