//! The networks of MP-DQN (Bester, James and Konidaris 2019, "Multi-Pass Q-Networks for
//! Deep Reinforcement Learning with Parameterised Action Spaces", arXiv 1905.04388), as
//! the reference implementation cycraig/MP-DQN (`agents/pdqn.py`,
//! `agents/pdqn_multipass.py`, `run_platform_pdqn.py`) builds them, and what an actor
//! needs to act with them. The update lives in the learner (`volley_learner::mpdqn`).
//!
//! P-DQN (Xiong et al. 2018) splits a parameterised action `(k, x_k)` between two
//! networks: the parameter network `x(s)` proposes the parameters of every choice, and
//! the Q network scores every choice `Q(s, x)_k`. Fed all parameters at once, `Q_k`
//! also depends on the parameters of the *other* choices, which are irrelevant to it.
//! MP-DQN removes that dependence with `K` passes: copy `k` of the input is
//! `[s, 0, .., x_k, .., 0]` (only choice `k`'s slice filled), the `K` copies go through
//! the network as one batch of `K * B` rows, and `Q_k` is output `k` of copy `k`.
//! [`MpdqnSpec::multipass`] `= false` gives plain P-DQN (one pass, all parameters), for
//! comparison.
//!
//! Everything inside the networks is in `[-1, 1]` units: states are scaled from their
//! box (`2 (s - low) / (high - low) - 1`, the reference's `ScaledStateWrapper`) and so
//! are the parameters (`ScaledParameterisedActionWrapper`); [`MpdqnNet::scale_params`]
//! and [`MpdqnNet::unscale_params`] convert to and from env units.
//!
//! Networks (reference defaults, hidden `[128]` ReLU):
//!
//! - parameter network: hidden layers Kaiming-normal (ReLU gain, fan-in) with zero
//!   biases, an output layer `N(0, 1e-4)` with zero bias, plus a frozen passthrough
//!   `Linear(state -> params)` with zero weights and bias = the initial parameters
//!   (Platform: `[3, 10, 400]`) scaled to `[-1, 1]`; the passthrough is never trained;
//! - Q network: input `[s, x]`, hidden layers Kaiming-normal with zero biases, output
//!   layer PyTorch's default weight init (`U(+-1/sqrt(fan_in))`) with zero bias.
//!
//! Acting ([`MpdqnNet::act`], [`Explorer`]): epsilon-greedy over the choice (uniform
//! choice with probability epsilon, else `argmax_k Q_k(s, x(s))`), then
//! Ornstein-Uhlenbeck noise (theta 0.15, sigma 1e-4) added to the chosen choice's
//! parameters only; the other choices keep `x(s)`. The reference explores with OU
//! noise instead of uniform random parameters (`use_ornstein_noise=True`).
//!
//! Weights travel as bytes ([`MpdqnNet::to_bytes`], [`MpdqnNet::load_bytes`]), in the
//! layout of `Policy::to_bytes` with its own magic:
//!
//! ```text
//! "VLYM" | version u32 = 1 | count u32
//! count x ( name_len u32 | name (utf-8) | ndim u32 | ndim x dim u64 )
//! total u64 (number of f32) | total x f32, variables in the order above
//! ```

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::{weights, Linear, NnError, NnResult};
use crate::agent::{
    chosen, to_f32_vec, ActionBatch, Agent, AgentContext, ChunkFields, Decision, Mode, Progress,
};
use crate::env::Space;

const WEIGHTS_MAGIC: &[u8; 4] = b"VLYM";

/// Hidden layers of both networks in the reference (`--layers [128,]`).
pub const DEFAULT_HIDDEN: [i64; 1] = [128];
/// Initial parameters of run, hop and leap in env units (`run_platform_pdqn.py`).
pub const PLATFORM_INITIAL_PARAMS: [f32; 3] = [3.0, 10.0, 400.0];
/// Observation elements MP-DQN reads on Platform: the 9 scaled state features, not the
/// sub-step count in element 9 (the reference drops it).
pub const PLATFORM_STATE_FEATURES: usize = 9;
/// Standard deviation of the parameter network's output-layer weights.
const PARAM_OUT_INIT_STD: f64 = 1e-4;

// ---------------------------------------------------------------------------------
// Spec
// ---------------------------------------------------------------------------------

/// What the networks look like; built from the env's spaces ([`MpdqnSpec::for_spaces`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MpdqnSpec {
    /// Elements of one observation as the env gives it.
    pub obs_len: usize,
    /// Bounds of the state features the networks read: the first `state_low.len()`
    /// observation elements, scaled from `[low, high]` to `[-1, 1]`.
    pub state_low: Vec<f32>,
    pub state_high: Vec<f32>,
    /// Number of parameters of each choice, in choice order.
    pub param_sizes: Vec<usize>,
    /// Bounds of every parameter in env units, concatenated in choice order.
    pub param_low: Vec<f32>,
    pub param_high: Vec<f32>,
    /// Hidden layer widths of both networks.
    pub hidden: Vec<i64>,
    /// Parameters (env units) the passthrough layer's bias starts the parameter
    /// network at; `None` starts at the middle of every range (zero bias).
    pub initial_params: Option<Vec<f32>>,
    /// MP-DQN's `K` passes; `false` is plain P-DQN (one pass with all parameters).
    pub multipass: bool,
}

impl MpdqnSpec {
    /// A spec for a `Box` observation space of which the first `state_features`
    /// elements are the state, and a `Parameterised` action space. Hidden `[128]`,
    /// multi-pass, no initial parameters: set the fields to change them.
    pub fn for_spaces(obs: &Space, action: &Space, state_features: usize) -> NnResult<Self> {
        let (obs_len, low, high) = match obs {
            Space::Box { shape, low, high } => (shape.iter().product::<usize>(), low, high),
            other => {
                return Err(NnError::BadSpec(format!(
                    "mp-dqn needs a box observation space, got {}",
                    other.describe()
                )))
            }
        };
        if state_features == 0 || state_features > obs_len {
            return Err(NnError::BadSpec(format!(
                "state_features must be in 1..={obs_len}, got {state_features}"
            )));
        }
        let Space::Parameterised { params } = action else {
            return Err(NnError::BadSpec(format!(
                "mp-dqn needs a parameterised action space, got {}",
                action.describe()
            )));
        };
        let spec = MpdqnSpec {
            obs_len,
            state_low: low[..state_features].to_vec(),
            state_high: high[..state_features].to_vec(),
            param_sizes: params.iter().map(|p| p.low.len()).collect(),
            param_low: params.iter().flat_map(|p| p.low.iter().copied()).collect(),
            param_high: params.iter().flat_map(|p| p.high.iter().copied()).collect(),
            hidden: DEFAULT_HIDDEN.to_vec(),
            initial_params: None,
            multipass: true,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The reference's Platform setup: 9 state features, `[3, 10, 400]` initial
    /// parameters, hidden `[128]`, multi-pass.
    pub fn platform() -> Self {
        use crate::env::platform::{OBS_LEN, PARAMETERS_MAX};
        MpdqnSpec {
            obs_len: OBS_LEN,
            state_low: vec![0.0; PLATFORM_STATE_FEATURES],
            state_high: vec![1.0; PLATFORM_STATE_FEATURES],
            param_sizes: vec![1; PARAMETERS_MAX.len()],
            param_low: vec![0.0; PARAMETERS_MAX.len()],
            param_high: PARAMETERS_MAX.iter().map(|&h| h as f32).collect(),
            hidden: DEFAULT_HIDDEN.to_vec(),
            initial_params: Some(PLATFORM_INITIAL_PARAMS.to_vec()),
            multipass: true,
        }
    }

    /// Number of state features the networks read.
    pub fn state_dim(&self) -> usize {
        self.state_low.len()
    }

    /// Number of discrete choices `K`.
    pub fn num_choices(&self) -> usize {
        self.param_sizes.len()
    }

    /// Total number of parameters `P` (all choices).
    pub fn param_dim(&self) -> usize {
        self.param_sizes.iter().sum()
    }

    /// Offset of each choice's parameters, plus the total at the end (`K + 1` values).
    pub fn param_offsets(&self) -> Vec<usize> {
        let mut v = Vec::with_capacity(self.param_sizes.len() + 1);
        let mut acc = 0;
        v.push(0);
        for s in &self.param_sizes {
            acc += s;
            v.push(acc);
        }
        v
    }

    /// Checks sizes and bounds; specs come from configs and from the network.
    pub fn validate(&self) -> NnResult<()> {
        let bad = |m: String| Err(NnError::BadSpec(m));
        let s = self.state_dim();
        if s == 0 || s > self.obs_len || self.state_high.len() != s {
            return bad(format!(
                "state bounds of {} and {} features for observations of {}",
                s,
                self.state_high.len(),
                self.obs_len
            ));
        }
        let ordered = |lo: &[f32], hi: &[f32]| {
            lo.iter()
                .zip(hi)
                .all(|(l, h)| l.is_finite() && h.is_finite() && l < h)
        };
        if !ordered(&self.state_low, &self.state_high) {
            return bad("state bounds must be finite with low < high".into());
        }
        if self.param_sizes.is_empty() || self.param_sizes.contains(&0) {
            return bad(format!(
                "every choice needs at least one parameter, got sizes {:?}",
                self.param_sizes
            ));
        }
        let p = self.param_dim();
        if self.param_low.len() != p || self.param_high.len() != p {
            return bad(format!(
                "{p} parameters but {} low and {} high bounds",
                self.param_low.len(),
                self.param_high.len()
            ));
        }
        if !ordered(&self.param_low, &self.param_high) {
            return bad("parameter bounds must be finite with low < high".into());
        }
        if self.hidden.iter().any(|&h| h <= 0) {
            return bad(format!("hidden widths must be >= 1, got {:?}", self.hidden));
        }
        if let Some(init) = &self.initial_params {
            if init.len() != p {
                return bad(format!(
                    "{} initial parameters for {p} parameters",
                    init.len()
                ));
            }
            let inside = init
                .iter()
                .zip(self.param_low.iter().zip(&self.param_high))
                .all(|(v, (l, h))| l <= v && v <= h);
            if !inside {
                return bad(format!(
                    "initial parameters {init:?} outside the bounds {:?}..{:?}",
                    self.param_low, self.param_high
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Networks
// ---------------------------------------------------------------------------------

/// How a layer's weight starts; biases start at zero except the passthrough's.
#[derive(Debug, Clone, Copy)]
enum Init {
    /// `kaiming_normal_(nonlinearity="relu")`: `N(0, 2 / fan_in)`.
    KaimingNormal,
    /// PyTorch's `nn.Linear` default: `U(+-1/sqrt(fan_in))`.
    TorchDefault,
    /// `N(0, std^2)`.
    Normal(f64),
    /// Zero (the frozen passthrough).
    Zero,
}

/// The parameter network `x(s)` and the Q network `Q(s, x)` of MP-DQN (or P-DQN),
/// with the scaling between env units and the networks' `[-1, 1]` units.
#[derive(Debug)]
pub struct MpdqnNet {
    spec: MpdqnSpec,
    device: Device,
    /// Parameter network: hidden layers, then the output layer.
    param_hidden: Vec<Linear>,
    param_out: Linear,
    /// Frozen `Linear(state -> params)` added to the parameter network's output.
    passthrough: Linear,
    /// Q network: hidden layers, then one output per choice.
    q_hidden: Vec<Linear>,
    q_out: Linear,
    /// Every variable in creation order with its name (the weights' byte order):
    /// the parameter network's (passthrough last), then the Q network's.
    vars: Vec<(String, Tensor)>,
    /// How many of `vars` belong to the parameter network.
    param_net_vars: usize,
    /// `[K, P]`: row `k` is 1 on choice `k`'s parameter slice, 0 elsewhere.
    pass_mask: Tensor,
    /// State scaling `s * state_mul + state_add` (`[S]` each).
    state_mul: Tensor,
    state_add: Tensor,
}

impl MpdqnNet {
    /// Fresh networks for `spec` on `device`, initialised as the reference does.
    pub fn new(spec: MpdqnSpec, device: Device) -> NnResult<MpdqnNet> {
        spec.validate()?;
        let s = spec.state_dim() as i64;
        let p = spec.param_dim() as i64;
        let k = spec.num_choices() as i64;
        let opts = (Kind::Float, device);
        let mut vars: Vec<(String, Tensor)> = Vec::new();
        let mut layer = |name: String, din: i64, dout: i64, init: Init, trainable: bool| {
            let w = match init {
                Init::KaimingNormal => {
                    Tensor::f_randn([dout, din], opts)?.f_mul_scalar((2.0 / din as f64).sqrt())?
                }
                Init::TorchDefault => {
                    let bound = 1.0 / (din as f64).sqrt();
                    Tensor::f_empty([dout, din], opts)?.f_uniform_(-bound, bound)?
                }
                Init::Normal(std) => Tensor::f_randn([dout, din], opts)?.f_mul_scalar(std)?,
                Init::Zero => Tensor::f_zeros([dout, din], opts)?,
            };
            let w = w.f_set_requires_grad(trainable)?;
            let b = Tensor::f_zeros([dout], opts)?.f_set_requires_grad(trainable)?;
            vars.push((format!("{name}.weight"), w.shallow_clone()));
            vars.push((format!("{name}.bias"), b.shallow_clone()));
            Ok::<Linear, NnError>(Linear { w, b })
        };

        let mut param_hidden = Vec::new();
        let mut din = s;
        for (i, &h) in spec.hidden.iter().enumerate() {
            param_hidden.push(layer(
                format!("param.hidden{i}"),
                din,
                h,
                Init::KaimingNormal,
                true,
            )?);
            din = h;
        }
        let param_out = layer(
            "param.out".into(),
            din,
            p,
            Init::Normal(PARAM_OUT_INIT_STD),
            true,
        )?;
        let passthrough = layer("param.passthrough".into(), s, p, Init::Zero, false)?;
        let mut q_hidden = Vec::new();
        let mut din = s + p;
        for (i, &h) in spec.hidden.iter().enumerate() {
            q_hidden.push(layer(
                format!("q.hidden{i}"),
                din,
                h,
                Init::KaimingNormal,
                true,
            )?);
            din = h;
        }
        let q_out = layer("q.out".into(), din, k, Init::TorchDefault, true)?;
        let param_net_vars = 2 * (spec.hidden.len() + 2);

        if let Some(init) = &spec.initial_params {
            let scaled = scale_params_with(&spec, init);
            let _guard = tch::no_grad_guard();
            passthrough
                .b
                .shallow_clone()
                .f_copy_(&Tensor::from_slice(&scaled).f_to_device(device)?)?;
        }

        let offsets = spec.param_offsets();
        let mut mask = vec![0f32; (k * p) as usize];
        for c in 0..spec.num_choices() {
            for j in offsets[c]..offsets[c + 1] {
                mask[c * p as usize + j] = 1.0;
            }
        }
        let pass_mask = Tensor::from_slice(&mask)
            .f_view([k, p])?
            .f_to_device(device)?;
        let (mul, add): (Vec<f32>, Vec<f32>) = spec
            .state_low
            .iter()
            .zip(&spec.state_high)
            .map(|(&l, &h)| (2.0 / (h - l), -2.0 * l / (h - l) - 1.0))
            .unzip();
        Ok(MpdqnNet {
            state_mul: Tensor::from_slice(&mul).f_to_device(device)?,
            state_add: Tensor::from_slice(&add).f_to_device(device)?,
            spec,
            device,
            param_hidden,
            param_out,
            passthrough,
            q_hidden,
            q_out,
            vars,
            param_net_vars,
            pass_mask,
        })
    }

    pub fn spec(&self) -> &MpdqnSpec {
        &self.spec
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The parameter network's trainable variables (the passthrough is frozen).
    pub fn param_net_parameters(&self) -> Vec<Tensor> {
        self.vars[..self.param_net_vars]
            .iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(_, t)| t.shallow_clone())
            .collect()
    }

    /// The Q network's variables (all trainable).
    pub fn q_net_parameters(&self) -> Vec<Tensor> {
        self.vars[self.param_net_vars..]
            .iter()
            .map(|(_, t)| t.shallow_clone())
            .collect()
    }

    /// Names and shapes of every variable, in byte order.
    pub fn variable_shapes(&self) -> Vec<(String, Vec<i64>)> {
        self.vars
            .iter()
            .map(|(n, t)| (n.clone(), t.size()))
            .collect()
    }

    pub fn num_params(&self) -> usize {
        self.vars.iter().map(|(_, t)| t.numel()).sum()
    }

    /// The passthrough layer's `(weight, bias)` (frozen; for inspection).
    pub fn passthrough(&self) -> (&Tensor, &Tensor) {
        (&self.passthrough.w, &self.passthrough.b)
    }

    /// `[B, obs_len]` observations (env units) to `[B, S]` states in `[-1, 1]`.
    pub fn states(&self, obs: &Tensor) -> NnResult<Tensor> {
        let size = obs.size();
        if size.len() != 2 || size[1] != self.spec.obs_len as i64 {
            return Err(NnError::BadInput(format!(
                "observations must be [batch, {}], got {size:?}",
                self.spec.obs_len
            )));
        }
        let s = obs
            .f_to_kind(Kind::Float)?
            .f_narrow(1, 0, self.spec.state_dim() as i64)?;
        Ok(s.f_mul(&self.state_mul)?.f_add(&self.state_add)?)
    }

    /// The parameter network: `[B, S]` scaled states to `[B, P]` parameters in
    /// `[-1, 1]` units (not clamped, as in the reference).
    pub fn param_forward(&self, states: &Tensor) -> NnResult<Tensor> {
        let mut x = states.shallow_clone();
        for l in &self.param_hidden {
            x = l.forward(&x)?.f_relu()?;
        }
        let out = self.param_out.forward(&x)?;
        Ok(out.f_add(&self.passthrough.forward(states)?)?)
    }

    /// The Q network: `[B, S]` scaled states and `[B, P]` scaled parameters of every
    /// choice to `[B, K]` values. Multi-pass: copy `k` of `[s, 0_P]` holds only choice
    /// `k`'s slice of `params`; the `K` copies run as one batch of `K * B` rows and
    /// `Q[:, k]` is column `k` of rows `k B .. (k + 1) B`. P-DQN: one pass on `[s, params]`.
    pub fn q_forward(&self, states: &Tensor, params: &Tensor) -> NnResult<Tensor> {
        let b = states.size()[0];
        let k = self.spec.num_choices() as i64;
        let p = self.spec.param_dim() as i64;
        if params.size() != [b, p] {
            return Err(NnError::BadInput(format!(
                "parameters must be [{b}, {p}], got {:?}",
                params.size()
            )));
        }
        if !self.spec.multipass {
            return self.q_mlp(&Tensor::f_cat(&[states, params], 1)?);
        }
        // [K, 1, P] * [1, B, P]: copy k keeps only choice k's slice.
        let passes = self
            .pass_mask
            .f_unsqueeze(1)?
            .f_mul(&params.f_unsqueeze(0)?)?
            .f_reshape([k * b, p])?;
        let x = Tensor::f_cat(&[&states.f_repeat([k, 1])?, &passes], 1)?;
        let out = self.q_mlp(&x)?.f_view([k, b, k])?;
        // out[k, b, k] for every (b, k): the diagonal over dims 0 and 2, as [B, K].
        Ok(out.f_diagonal(0, 0, 2)?)
    }

    fn q_mlp(&self, x: &Tensor) -> NnResult<Tensor> {
        let mut x = x.shallow_clone();
        for l in &self.q_hidden {
            x = l.forward(&x)?.f_relu()?;
        }
        self.q_out.forward(&x)
    }

    /// Parameters in env units (`[.., P]`, last dim) to `[-1, 1]` units.
    pub fn scale_params(&self, params: &[f32]) -> Vec<f32> {
        scale_params_with(&self.spec, params)
    }

    /// Parameters in `[-1, 1]` units (rows of `P`) to env units, clamped to the bounds.
    pub fn unscale_params(&self, scaled: &[f32]) -> Vec<f32> {
        let p = self.spec.param_dim();
        scaled
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let (l, h) = (self.spec.param_low[i % p], self.spec.param_high[i % p]);
                (l + (x + 1.0) * 0.5 * (h - l)).clamp(l, h)
            })
            .collect()
    }

    /// Greedy actions for `[N, obs_len]` observations (env units, row-major):
    /// `argmax_k Q_k(s, x(s))` with the parameters `x(s)`, no exploration.
    pub fn act_greedy(&self, obs: &[f32]) -> NnResult<MpdqnAction> {
        let (choice, params) = self.greedy(obs)?;
        let env_params = self.unscale_params(&params);
        Ok(MpdqnAction {
            choice,
            params,
            env_params,
        })
    }

    /// Exploratory actions for `[N, obs_len]` observations with the explorer's epsilon
    /// and OU noise (one OU process per env): with probability epsilon a uniform
    /// choice, else the greedy one; then OU noise on the chosen choice's parameters.
    pub fn act(&self, obs: &[f32], explorer: &mut Explorer) -> NnResult<MpdqnAction> {
        let (mut choice, mut params) = self.greedy(obs)?;
        let n = choice.len();
        let p = self.spec.param_dim();
        if explorer.num_envs != n || explorer.param_dim != p {
            return Err(NnError::BadInput(format!(
                "explorer is for {} envs x {} parameters, got {n} x {p}",
                explorer.num_envs, explorer.param_dim
            )));
        }
        let k = self.spec.num_choices();
        let offsets = self.spec.param_offsets();
        for (i, c) in choice.iter_mut().enumerate() {
            if explorer.rng.random::<f64>() < explorer.epsilon {
                *c = explorer.rng.random_range(0..k) as i64;
            }
            let noise = explorer.sample(i);
            let kc = *c as usize;
            for j in offsets[kc]..offsets[kc + 1] {
                params[i * p + j] += noise[j] as f32;
            }
        }
        let env_params = self.unscale_params(&params);
        Ok(MpdqnAction {
            choice,
            params,
            env_params,
        })
    }

    fn greedy(&self, obs: &[f32]) -> NnResult<(Vec<i64>, Vec<f32>)> {
        let len = self.spec.obs_len;
        if obs.is_empty() || obs.len() % len != 0 {
            return Err(NnError::BadInput(format!(
                "{} observation values is not a whole number of rows of {len}",
                obs.len()
            )));
        }
        let _guard = tch::no_grad_guard();
        let o = Tensor::from_slice(obs)
            .f_view([(obs.len() / len) as i64, len as i64])?
            .f_to_device(self.device)?;
        let s = self.states(&o)?;
        let x = self.param_forward(&s)?;
        let q = self.q_forward(&s, &x)?;
        let choice = Vec::<i64>::try_from(&q.f_argmax(1, false)?.f_to_device(Device::Cpu)?)?;
        let params = Vec::<f32>::try_from(&x.f_to_device(Device::Cpu)?.f_view(-1)?)?;
        Ok((choice, params))
    }

    /// Copies every variable of `other` (same spec) into this network.
    pub fn copy_from(&mut self, other: &MpdqnNet) -> NnResult<()> {
        self.soft_update_from(other, 1.0, 1.0)
    }

    /// Polyak averaging towards `other` (same spec): `t <- tau t' + (1 - tau) t`, with
    /// `tau_q` for the Q network and `tau_param` for the parameter network.
    pub fn soft_update_from(
        &mut self,
        other: &MpdqnNet,
        tau_q: f64,
        tau_param: f64,
    ) -> NnResult<()> {
        if self.variable_shapes() != other.variable_shapes() {
            return Err(NnError::BadInput(
                "soft update between networks of different specs".into(),
            ));
        }
        let _guard = tch::no_grad_guard();
        for (i, ((_, t), (_, s))) in self.vars.iter_mut().zip(&other.vars).enumerate() {
            let tau = if i < self.param_net_vars {
                tau_param
            } else {
                tau_q
            };
            let _ = t.f_lerp_(s, tau)?;
        }
        Ok(())
    }

    /// Every variable as bytes (format in [`super::weights`]): what an actor needs.
    pub fn to_bytes(&self) -> Vec<u8> {
        weights::encode(WEIGHTS_MAGIC, &self.vars)
    }

    /// Replaces every variable with the values in `bytes` (from [`MpdqnNet::to_bytes`]
    /// of a network with the same spec). Checks format, names, shapes, length and
    /// finiteness first: on error the network is unchanged.
    pub fn load_bytes(&mut self, bytes: &[u8]) -> NnResult<()> {
        weights::decode_into(WEIGHTS_MAGIC, bytes, &mut self.vars)
    }
}

fn scale_params_with(spec: &MpdqnSpec, params: &[f32]) -> Vec<f32> {
    let p = spec.param_dim();
    params
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (l, h) = (spec.param_low[i % p], spec.param_high[i % p]);
            2.0 * (v - l) / (h - l) - 1.0
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Acting
// ---------------------------------------------------------------------------------

/// One action per env.
#[derive(Debug, Clone, PartialEq)]
pub struct MpdqnAction {
    /// `[N]` chosen choice indices.
    pub choice: Vec<i64>,
    /// `[N * P]` parameters of every choice in `[-1, 1]` units, exploration noise
    /// included: what the replay stores and the Q update reads.
    pub params: Vec<f32>,
    /// `[N * P]` the same in env units, clamped to the bounds: what the env gets.
    pub env_params: Vec<f32>,
}

/// Exploration state of an actor: epsilon, one Ornstein-Uhlenbeck process per env
/// over all `P` parameters, and the random generator.
#[derive(Debug, Clone)]
pub struct Explorer {
    /// Probability of a uniform random choice; the caller anneals it per episode
    /// ([`linear_epsilon`]).
    pub epsilon: f64,
    /// OU mean reversion (0.15).
    pub theta: f64,
    /// OU noise scale (1e-4).
    pub sigma: f64,
    num_envs: usize,
    param_dim: usize,
    /// `[N * P]` OU state, mean 0.
    ou: Vec<f64>,
    rng: Xoshiro256PlusPlus,
}

impl Explorer {
    pub fn new(num_envs: usize, param_dim: usize, theta: f64, sigma: f64, seed: u64) -> Self {
        Explorer {
            epsilon: 1.0,
            theta,
            sigma,
            num_envs,
            param_dim,
            ou: vec![0.0; num_envs * param_dim],
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    /// Sets every OU process back to its mean (the reference never does).
    pub fn reset_noise(&mut self) {
        self.ou.fill(0.0);
    }

    /// Advances env `i`'s OU process one step, `x += theta (0 - x) + sigma N(0, 1)`,
    /// and returns its new state (`P` values).
    fn sample(&mut self, i: usize) -> &[f64] {
        let p = self.param_dim;
        let (theta, sigma) = (self.theta, self.sigma);
        let x = &mut self.ou[i * p..(i + 1) * p];
        for v in x.iter_mut() {
            let z: f64 = self.rng.sample(StandardNormal);
            *v += -theta * *v + sigma * z;
        }
        x
    }
}

/// An actor's exploration settings, sent by the learner when the actor registers:
/// epsilon annealed linearly over the run's finished episodes, and the
/// Ornstein-Uhlenbeck noise on the chosen parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExploreSettings {
    pub epsilon_start: f64,
    pub epsilon_final: f64,
    /// Episodes over which epsilon anneals.
    pub epsilon_episodes: u64,
    pub ou_theta: f64,
    pub ou_sigma: f64,
}

impl ExploreSettings {
    /// Epsilon after `episode` finished episodes of the run.
    pub fn epsilon(&self, episode: u64) -> f64 {
        linear_epsilon(
            episode,
            self.epsilon_start,
            self.epsilon_final,
            self.epsilon_episodes,
        )
    }

    /// Exploration state for `num_envs` envs, at the epsilon of episode 0.
    pub fn explorer(&self, num_envs: usize, param_dim: usize, seed: u64) -> Explorer {
        let mut e = Explorer::new(num_envs, param_dim, self.ou_theta, self.ou_sigma, seed);
        e.epsilon = self.epsilon(0);
        e
    }
}

/// Epsilon after `episode` finished episodes: linear from `start` to `end` over
/// `episodes` episodes, then `end` (the reference's `end_episode`).
pub fn linear_epsilon(episode: u64, start: f64, end: f64, episodes: u64) -> f64 {
    if episode >= episodes {
        end
    } else {
        start - (start - end) * (episode as f64 / episodes as f64)
    }
}

/// MP-DQN's agent: while training, epsilon-greedy over the choice with epsilon annealed
/// by the run's finished episodes, and Ornstein-Uhlenbeck noise on the chosen
/// parameters; when greedy, the best choice with the parameter network's parameters.
#[derive(Debug)]
pub struct MpdqnAgent {
    net: MpdqnNet,
    explorer: Explorer,
    settings: ExploreSettings,
    /// Whether the last `act` explored (its epsilon is then the gauge's).
    explored: bool,
}

impl Agent for MpdqnAgent {
    fn fields(&self) -> ChunkFields {
        ChunkFields {
            next_obs: true,
            ..ChunkFields::default()
        }
    }

    fn load_weights(&mut self, bytes: &[u8]) -> NnResult<()> {
        self.net.load_bytes(bytes)
    }

    fn act(
        &mut self,
        obs: &Tensor,
        progress: &Progress,
        mode: Mode,
        out: &mut ActionBatch,
    ) -> NnResult<()> {
        let flat = to_f32_vec(obs)?;
        let a = match mode {
            Mode::Explore => {
                self.explorer.epsilon = self.settings.epsilon(progress.episodes);
                self.net.act(&flat, &mut self.explorer)?
            }
            Mode::Greedy => self.net.act_greedy(&flat)?,
        };
        self.explored = mode == Mode::Explore;
        out.discrete = a.choice;
        out.params = a.params;
        out.env_params = a.env_params;
        Ok(())
    }

    fn epsilon(&self) -> Option<f64> {
        self.explored.then_some(self.explorer.epsilon)
    }

    /// The chosen choice's value `Q_k(s, x(s))` with the parameter network's
    /// parameters (the gradient flows through both networks); the value side is
    /// `max_k Q_k(s, x(s))`.
    fn decision(&self, obs: &Tensor, taken: &ActionBatch) -> NnResult<Decision> {
        let obs = obs.f_view([obs.size().first().copied().unwrap_or(0), -1])?;
        let s = self.net.states(&obs.f_to_device(self.net.device())?)?;
        let q = self.net.q_forward(&s, &self.net.param_forward(&s)?)?;
        let size = q.size();
        let a = chosen(taken, size[0], size[1], q.device())?;
        Ok(Decision {
            outputs: q.f_gather(1, &a, false)?,
            value: Some(q.f_amax(&[1i64][..], false)?),
            policy: q,
        })
    }
}

/// MP-DQN's agent, from the [`MpdqnSpec`] and [`ExploreSettings`] JSON the learner
/// sends.
pub fn agent(ctx: &AgentContext<'_>) -> NnResult<Box<dyn Agent>> {
    let spec: MpdqnSpec = ctx.spec("mpdqn")?;
    let settings: ExploreSettings = ctx.explore("mpdqn")?;
    let explorer = settings.explorer(ctx.num_envs, spec.param_dim(), ctx.seed ^ 0xd09);
    Ok(Box::new(MpdqnAgent {
        net: MpdqnNet::new(spec, ctx.device)?,
        explorer,
        settings,
        explored: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(multipass: bool) -> MpdqnNet {
        let mut spec = MpdqnSpec::platform();
        spec.multipass = multipass;
        MpdqnNet::new(spec, Device::Cpu).unwrap()
    }

    fn obs(n: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::rand([n, 10], (Kind::Float, Device::Cpu))
    }

    /// Max |a - b| over two tensors.
    fn diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn multipass_q_k_depends_only_on_its_own_parameters() {
        let _torch = crate::testing::torch();
        for multipass in [true, false] {
            tch::manual_seed(1);
            let net = net(multipass);
            let s = net.states(&obs(16, 2)).unwrap();
            let x = Tensor::rand([16, 3], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
            let q = net.q_forward(&s, &x).unwrap();
            assert_eq!(q.size(), [16, 3]);
            for k in 0..3i64 {
                // Perturb every parameter except choice k's.
                let mask = Tensor::ones([1, 3], (Kind::Float, Device::Cpu));
                let _ = mask.narrow(1, k, 1).fill_(0.0);
                let noise = Tensor::rand([16, 3], (Kind::Float, Device::Cpu)) - 0.5;
                let x_other = &x + &noise * &mask;
                let q_other = net.q_forward(&s, &x_other).unwrap();
                let own_col = diff(&q.select(1, k), &q_other.select(1, k));
                // Perturb only choice k's parameter.
                let x_own = &x + noise * (1.0 - &mask);
                let q_own = net.q_forward(&s, &x_own).unwrap();
                let own_change = diff(&q.select(1, k), &q_own.select(1, k));
                assert!(own_change > 1e-3, "Q_{k} ignores its own parameter");
                if multipass {
                    assert_eq!(own_col, 0.0, "MP-DQN: Q_{k} moved with other parameters");
                } else {
                    assert!(
                        own_col > 1e-3,
                        "P-DQN: Q_{k} should depend on other choices' parameters"
                    );
                }
            }
        }
    }

    #[test]
    fn multipass_equals_k_separate_passes() {
        let _torch = crate::testing::torch();
        tch::manual_seed(3);
        let net = net(true);
        let s = net.states(&obs(5, 4)).unwrap();
        let x = Tensor::rand([5, 3], (Kind::Float, Device::Cpu));
        let q = net.q_forward(&s, &x).unwrap();
        for k in 0..3i64 {
            let xk = Tensor::zeros([5, 3], (Kind::Float, Device::Cpu));
            xk.narrow(1, k, 1).copy_(&x.narrow(1, k, 1));
            let full = net.q_mlp(&Tensor::cat(&[&s, &xk], 1)).unwrap();
            assert!(diff(&full.select(1, k), &q.select(1, k)) < 1e-6);
        }
    }

    #[test]
    fn passthrough_starts_at_the_initial_parameters() {
        let _torch = crate::testing::torch();
        tch::manual_seed(5);
        let net = net(true);
        let (w, b) = net.passthrough();
        assert_eq!(w.size(), [3, 9]);
        assert_eq!(w.abs().max().double_value(&[]), 0.0);
        assert!(!w.requires_grad() && !b.requires_grad());
        // [3, 10, 400] over [30, 720, 430] scaled to [-1, 1].
        let want = [
            2.0 * 3.0 / 30.0 - 1.0,
            2.0 * 10.0 / 720.0 - 1.0,
            2.0 * 400.0 / 430.0 - 1.0,
        ];
        for (i, w) in want.iter().enumerate() {
            assert!((b.double_value(&[i as i64]) - w).abs() < 1e-6);
        }
        // Output-layer weights ~ N(0, 1e-4): the net starts at the initial parameters.
        let x = net
            .param_forward(&net.states(&obs(64, 6)).unwrap())
            .unwrap();
        for (i, w) in want.iter().enumerate() {
            let col = x.select(1, i as i64);
            assert!((col - *w).abs().max().double_value(&[]) < 0.01);
        }
        let a = net.act_greedy(&[0.5; 10]).unwrap();
        for (got, want) in a.env_params.iter().zip(PLATFORM_INITIAL_PARAMS) {
            assert!(
                (got - want).abs() < 0.01 * want.max(1.0) * 4.0,
                "{got} {want}"
            );
        }
        // Trainable: hidden + out of the parameter net; passthrough excluded.
        assert_eq!(net.param_net_parameters().len(), 4);
        assert_eq!(net.q_net_parameters().len(), 4);
        // Kaiming normal: std sqrt(2 / fan_in) on the Q net's first layer (9 + 3 inputs).
        let w0 = &net.q_net_parameters()[0];
        assert_eq!(w0.size(), [128, 12]);
        let std = w0.std(true).double_value(&[]);
        assert!((std / (2.0f64 / 12.0).sqrt() - 1.0).abs() < 0.1, "{std}");
    }

    #[test]
    fn scaling_round_trips_and_clamps() {
        let _torch = crate::testing::torch();
        let net = net(true);
        let env = [15.0f32, 0.0, 430.0, 0.0, 720.0, 215.0];
        let scaled = net.scale_params(&env);
        assert_eq!(scaled, vec![0.0, -1.0, 1.0, -1.0, 1.0, 0.0]);
        assert_eq!(net.unscale_params(&scaled), env.to_vec());
        assert_eq!(
            net.unscale_params(&[2.0, -3.0, 0.0]),
            vec![30.0, 0.0, 215.0]
        );
        let s = net
            .states(
                &Tensor::from_slice(&[0.0f32, 1.0, 0.5, 0.25, 0., 0., 0., 0., 0., 7.0])
                    .view([1, 10]),
            )
            .unwrap();
        assert_eq!(
            Vec::<f32>::try_from(s.view(-1)).unwrap()[..4],
            [-1.0, 1.0, 0.0, -0.5]
        );
        assert!(net
            .states(&Tensor::zeros([2, 9], (Kind::Float, Device::Cpu)))
            .is_err());
    }

    #[test]
    fn soft_update_uses_the_two_rates() {
        let _torch = crate::testing::torch();
        tch::manual_seed(7);
        let mut target = net(true);
        let online = net(true);
        let before: Vec<Tensor> = target.vars.iter().map(|(_, t)| t.detach().copy()).collect();
        target.soft_update_from(&online, 0.1, 0.001).unwrap();
        for (i, (((name, t), (_, s)), b)) in target
            .vars
            .iter()
            .zip(&online.vars)
            .zip(&before)
            .enumerate()
        {
            let tau = if i < target.param_net_vars {
                0.001
            } else {
                0.1
            };
            let want = s * tau + b * (1.0 - tau);
            assert!(diff(t, &want) < 1e-6, "{name}");
        }
        target.copy_from(&online).unwrap();
        assert_eq!(target.to_bytes(), online.to_bytes());
    }

    #[test]
    fn explorer_is_greedy_at_zero_epsilon_and_adds_ou_on_the_chosen_slice() {
        let _torch = crate::testing::torch();
        tch::manual_seed(8);
        let net = net(true);
        let o: Vec<f32> = Vec::<f32>::try_from(obs(4, 9).view(-1)).unwrap();
        let greedy = net.act_greedy(&o).unwrap();
        let mut ex = Explorer::new(4, 3, 0.15, 1e-4, 1);
        ex.epsilon = 0.0;
        let a = net.act(&o, &mut ex).unwrap();
        assert_eq!(a.choice, greedy.choice);
        for i in 0..4 {
            for j in 0..3 {
                let d = (a.params[i * 3 + j] - greedy.params[i * 3 + j]).abs();
                if j == a.choice[i] as usize {
                    assert!(d > 0.0 && d < 1e-3);
                } else {
                    assert_eq!(d, 0.0);
                }
            }
        }
        ex.epsilon = 1.0;
        let mut counts = [0usize; 3];
        for _ in 0..300 {
            for c in net.act(&o, &mut ex).unwrap().choice {
                counts[c as usize] += 1;
            }
        }
        assert!(counts.iter().all(|&c| c > 300), "{counts:?}");
        assert!(net.act(&o[..5], &mut ex).is_err());
        assert_eq!(linear_epsilon(0, 1.0, 0.01, 1000), 1.0);
        assert!((linear_epsilon(500, 1.0, 0.01, 1000) - 0.505).abs() < 1e-12);
        assert_eq!(linear_epsilon(5000, 1.0, 0.01, 1000), 0.01);
    }

    #[test]
    fn weights_round_trip_and_bad_input_errors() {
        let _torch = crate::testing::torch();
        tch::manual_seed(10);
        let a = net(true);
        let mut b = net(true);
        assert_ne!(a.to_bytes(), b.to_bytes());
        let bytes = a.to_bytes();
        b.load_bytes(&bytes).unwrap();
        assert_eq!(b.to_bytes(), bytes);
        for cut in [0, 3, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(b.load_bytes(&bytes[..cut]).is_err());
        }
        let mut nan = bytes.clone();
        let n = nan.len();
        nan[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(b.load_bytes(&nan).is_err());
        let mut spec = MpdqnSpec::platform();
        spec.hidden = vec![64];
        let other = MpdqnNet::new(spec, Device::Cpu).unwrap();
        assert!(b.load_bytes(&other.to_bytes()).is_err());
        assert_eq!(b.to_bytes(), bytes);
    }

    #[test]
    fn spec_from_platform_spaces_matches_the_reference_setup() {
        let _torch = crate::testing::torch();
        use crate::env::platform::Platform;
        use crate::env::Env;
        let env = Platform::new();
        let mut spec =
            MpdqnSpec::for_spaces(&env.observation_space(), &env.action_space(), 9).unwrap();
        spec.initial_params = Some(PLATFORM_INITIAL_PARAMS.to_vec());
        assert_eq!(spec, MpdqnSpec::platform());
        assert!(MpdqnSpec::for_spaces(&env.observation_space(), &env.action_space(), 11).is_err());
        assert!(MpdqnSpec::for_spaces(&env.action_space(), &env.action_space(), 9).is_err());
        spec.initial_params = Some(vec![1.0, 2.0]);
        assert!(spec.validate().is_err());
    }
}
