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

use tch::nn::{Path, VarStore};
use tch::{Device, Kind, Tensor};

use super::init::{orthogonal, GAIN_ACTOR, GAIN_CRITIC, GAIN_HIDDEN};
use super::spec::{ActionHead, ModelKind, ModelSpec};
use super::{weights, Linear, NnError, NnResult};

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

/// A 2-d convolution with square kernel, stride and padding.
#[derive(Debug)]
struct Conv {
    w: Tensor,
    b: Tensor,
    stride: i64,
    padding: i64,
}

impl Conv {
    fn forward(&self, x: &Tensor) -> NnResult<Tensor> {
        Ok(x.f_conv2d(
            &self.w,
            Some(&self.b),
            [self.stride; 2],
            [self.padding; 2],
            [1, 1],
            1,
        )?)
    }
}

/// IMPALA residual block: `x + conv1(relu(conv0(relu(x))))`.
#[derive(Debug)]
struct ResBlock {
    conv0: Conv,
    conv1: Conv,
}

/// IMPALA stack: conv, 3x3 stride-2 max-pool, two residual blocks.
#[derive(Debug)]
struct ConvSequence {
    conv: Conv,
    res0: ResBlock,
    res1: ResBlock,
}

impl ResBlock {
    fn forward(&self, x: &Tensor) -> NnResult<Tensor> {
        let y = self.conv0.forward(&x.f_relu()?)?;
        let y = self.conv1.forward(&y.f_relu()?)?;
        Ok(x.f_add(&y)?)
    }
}

impl ConvSequence {
    fn forward(&self, x: &Tensor) -> NnResult<Tensor> {
        let x = self.conv.forward(x)?;
        let x = x.f_max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)?;
        let x = self.res0.forward(&x)?;
        self.res1.forward(&x)
    }
}

#[derive(Debug)]
enum Torso {
    /// Shared CNN trunk ending in a ReLU feature vector.
    Impala {
        stacks: Vec<ConvSequence>,
        fc: Linear,
    },
    Nature {
        convs: Vec<Conv>,
        fc: Linear,
    },
    /// Separate tanh MLPs for the actor and the critic.
    Mlp {
        actor: Vec<Linear>,
        critic: Vec<Linear>,
    },
}

/// Creates the variables, in a fixed order, and remembers that order.
struct Builder<'a> {
    root: Path<'a>,
    device: Device,
    vars: Vec<(String, Tensor)>,
}

impl Builder<'_> {
    fn add(&mut self, path: &[&str], name: &str, t: Tensor) -> Tensor {
        let mut p = self.root.sub(path[0]);
        for s in &path[1..] {
            p = p.sub(*s);
        }
        let t = p.add(name, t, true);
        let mut full = path.join(".");
        full.push('.');
        full.push_str(name);
        self.vars.push((full, t.shallow_clone()));
        t
    }

    /// Weight and bias of a layer with `fan_in` inputs: orthogonal times `gain` and
    /// zero, or PyTorch's default (`kaiming_uniform_(a = sqrt 5)`: both uniform in
    /// `+-1/sqrt(fan_in)`) when `gain` is `None`.
    fn init(&self, dims: &[i64], gain: Option<f64>) -> NnResult<(Tensor, Tensor)> {
        let fan_in: i64 = dims[1..].iter().product();
        let opts = (Kind::Float, self.device);
        match gain {
            Some(g) => Ok((
                orthogonal(dims, g, self.device)?,
                Tensor::f_zeros([dims[0]], opts)?,
            )),
            None => {
                let bound = 1.0 / (fan_in as f64).sqrt();
                let w = Tensor::f_empty(dims, opts)?.f_uniform_(-bound, bound)?;
                let b = Tensor::f_empty([dims[0]], opts)?.f_uniform_(-bound, bound)?;
                Ok((w, b))
            }
        }
    }

    fn linear(
        &mut self,
        path: &[&str],
        din: i64,
        dout: i64,
        gain: Option<f64>,
    ) -> NnResult<Linear> {
        let (w, b) = self.init(&[dout, din], gain)?;
        Ok(Linear {
            w: self.add(path, "weight", w),
            b: self.add(path, "bias", b),
        })
    }

    /// A `k`x`k` convolution with `stride` and `padding`, given as `(k, stride, padding)`.
    fn conv(
        &mut self,
        path: &[&str],
        cin: i64,
        cout: i64,
        (k, stride, padding): (i64, i64, i64),
        gain: Option<f64>,
    ) -> NnResult<Conv> {
        let (w, b) = self.init(&[cout, cin, k, k], gain)?;
        Ok(Conv {
            w: self.add(path, "weight", w),
            b: self.add(path, "bias", b),
            stride,
            padding,
        })
    }
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
                let (mut h, mut w, mut c) = (
                    spec.obs_shape[0] as i64,
                    spec.obs_shape[1] as i64,
                    spec.obs_shape[2] as i64,
                );
                let mut stacks = Vec::new();
                for (i, &d) in depths.iter().enumerate() {
                    let d = d as i64;
                    let s = format!("stack{i}");
                    let s = s.as_str();
                    stacks.push(ConvSequence {
                        conv: b.conv(&["torso", s, "conv"], c, d, (3, 1, 1), None)?,
                        res0: ResBlock {
                            conv0: b.conv(&["torso", s, "res0", "conv0"], d, d, (3, 1, 1), None)?,
                            conv1: b.conv(&["torso", s, "res0", "conv1"], d, d, (3, 1, 1), None)?,
                        },
                        res1: ResBlock {
                            conv0: b.conv(&["torso", s, "res1", "conv0"], d, d, (3, 1, 1), None)?,
                            conv1: b.conv(&["torso", s, "res1", "conv1"], d, d, (3, 1, 1), None)?,
                        },
                    });
                    // max-pool 3x3, stride 2, padding 1
                    h = (h + 1) / 2;
                    w = (w + 1) / 2;
                    c = d;
                }
                let fc_dim = *fc as i64;
                let fc = b.linear(&["torso", "fc"], h * w * c, fc_dim, None)?;
                (Torso::Impala { stacks, fc }, fc_dim, fc_dim)
            }
            ModelKind::NatureCnn { fc } => {
                let (mut h, mut w) = (spec.obs_shape[0] as i64, spec.obs_shape[1] as i64);
                let mut c = spec.obs_shape[2] as i64;
                let mut convs = Vec::new();
                for (i, (cout, k, s)) in
                    [(32, 8, 4), (64, 4, 2), (64, 3, 1)].into_iter().enumerate()
                {
                    let name = format!("conv{i}");
                    convs.push(b.conv(&["torso", &name], c, cout, (k, s, 0), Some(GAIN_HIDDEN))?);
                    h = (h - k) / s + 1;
                    w = (w - k) / s + 1;
                    c = cout;
                }
                let fc_dim = *fc as i64;
                let fc = b.linear(&["torso", "fc"], h * w * c, fc_dim, Some(GAIN_HIDDEN))?;
                (Torso::Nature { convs, fc }, fc_dim, fc_dim)
            }
            ModelKind::Mlp { hidden } => {
                let din = spec.obs_len() as i64;
                let mut tower = |which: &str| -> NnResult<(Vec<Linear>, i64)> {
                    let mut layers = Vec::new();
                    let mut d = din;
                    for (i, &h) in hidden.iter().enumerate() {
                        let name = format!("{i}");
                        layers.push(b.linear(&[which, &name], d, h as i64, Some(GAIN_HIDDEN))?);
                        d = h as i64;
                    }
                    Ok((layers, d))
                };
                let (actor, da) = tower("actor")?;
                let (critic, dc) = tower("critic")?;
                (Torso::Mlp { actor, critic }, da, dc)
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

    /// Observations to the float tensor the torso reads: on the policy's device,
    /// scaled by 1/255 for `u8` specs (whatever the input dtype), NCHW for CNNs and
    /// [B, obs_len] for MLPs. Checks the shape: [B, *obs_shape].
    fn prep(&self, obs: &Tensor) -> NnResult<Tensor> {
        let size = obs.size();
        let want = &self.spec.obs_shape;
        let ok = size.len() == want.len() + 1
            && size[1..].iter().zip(want).all(|(&a, &b)| a == b as i64);
        if !ok {
            return Err(NnError::BadInput(format!(
                "observations of shape {size:?}, expected [B, {}]",
                want.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let x = obs.f_to_device(self.device())?.f_to_kind(Kind::Float)?;
        let x = if self.spec.obs_u8 {
            x.f_div_scalar(255.0)?
        } else {
            x
        };
        Ok(match self.torso {
            Torso::Mlp { .. } => x.f_view([size[0], -1])?,
            _ => x.f_permute([0, 3, 1, 2])?.f_contiguous()?,
        })
    }

    /// Actor-head output ([B, n] logits or [B, dim] means) and values [B].
    fn forward(&self, obs: &Tensor) -> NnResult<(Tensor, Tensor)> {
        let x = self.prep(obs)?;
        let (a, c) = match &self.torso {
            Torso::Impala { stacks, fc } => {
                let mut x = x;
                for s in stacks {
                    x = s.forward(&x)?;
                }
                let x = x.f_flatten(1, -1)?.f_relu()?;
                let f = fc.forward(&x)?.f_relu()?;
                (f.shallow_clone(), f)
            }
            Torso::Nature { convs, fc } => {
                let mut x = x;
                for c in convs {
                    x = c.forward(&x)?.f_relu()?;
                }
                let f = fc.forward(&x.f_flatten(1, -1)?)?.f_relu()?;
                (f.shallow_clone(), f)
            }
            Torso::Mlp { actor, critic } => {
                let mut a = x.shallow_clone();
                for l in actor {
                    a = l.forward(&a)?.f_tanh()?;
                }
                let mut c = x;
                for l in critic {
                    c = l.forward(&c)?.f_tanh()?;
                }
                (a, c)
            }
        };
        let head = self.actor_head.forward(&a)?;
        let value = self.critic_head.forward(&c)?.f_squeeze_dim(1)?;
        Ok((head, value))
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
        tch::set_num_threads(1);
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
        tch::set_num_threads(1);
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
