//! Encoders shared by the networks of several algorithms: the IMPALA CNN (Espeholt et
//! al. 2018, as Cobbe et al. 2020 use it for Procgen), the Nature DQN CNN (Mnih et al.
//! 2015) and MLPs, with the [`Builder`] that creates their variables in a fixed,
//! named order (the order of the weights bytes, [`super::weights`]).

use tch::nn::Path;
use tch::{Device, Kind, Tensor};

use super::init::orthogonal;
use super::{Linear, NnError, NnResult};

/// A 2-d convolution with square kernel, stride and padding.
#[derive(Debug)]
pub(crate) struct Conv {
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
pub(crate) struct ResBlock {
    conv0: Conv,
    conv1: Conv,
}

impl ResBlock {
    fn forward(&self, x: &Tensor) -> NnResult<Tensor> {
        let y = self.conv0.forward(&x.f_relu()?)?;
        let y = self.conv1.forward(&y.f_relu()?)?;
        Ok(x.f_add(&y)?)
    }
}

/// IMPALA stack: conv, 3x3 stride-2 max-pool, two residual blocks.
#[derive(Debug)]
pub(crate) struct ConvSequence {
    conv: Conv,
    res0: ResBlock,
    res1: ResBlock,
}

impl ConvSequence {
    fn forward(&self, x: &Tensor) -> NnResult<Tensor> {
        let x = self.conv.forward(x)?;
        let x = x.f_max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)?;
        let x = self.res0.forward(&x)?;
        self.res1.forward(&x)
    }
}

/// The nonlinearity of an MLP's hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    Tanh,
    Relu,
}

/// An encoder from prepared observations ([`prep_obs`]) to a feature vector.
#[derive(Debug)]
pub(crate) enum Encoder {
    /// Conv stacks, then ReLU, a fully connected layer and ReLU.
    Impala {
        stacks: Vec<ConvSequence>,
        fc: Linear,
    },
    /// Three ReLU convs, then a fully connected layer and ReLU.
    Nature { convs: Vec<Conv>, fc: Linear },
    /// Hidden layers with `activation` after each (no layers: the identity).
    Mlp {
        layers: Vec<Linear>,
        activation: Activation,
    },
}

impl Encoder {
    /// The IMPALA CNN for `[H, W, C]` images under `prefix` (PyTorch's default init,
    /// as `ppo_procgen.py`). Returns it with its feature width.
    pub(crate) fn impala(
        b: &mut Builder<'_>,
        prefix: &str,
        obs_shape: &[usize],
        depths: &[usize],
        fc: usize,
    ) -> NnResult<(Encoder, i64)> {
        let (mut h, mut w, mut c) = (
            obs_shape[0] as i64,
            obs_shape[1] as i64,
            obs_shape[2] as i64,
        );
        let mut stacks = Vec::new();
        for (i, &d) in depths.iter().enumerate() {
            let d = d as i64;
            let s = format!("stack{i}");
            let s = s.as_str();
            stacks.push(ConvSequence {
                conv: b.conv(&[prefix, s, "conv"], c, d, (3, 1, 1), None)?,
                res0: ResBlock {
                    conv0: b.conv(&[prefix, s, "res0", "conv0"], d, d, (3, 1, 1), None)?,
                    conv1: b.conv(&[prefix, s, "res0", "conv1"], d, d, (3, 1, 1), None)?,
                },
                res1: ResBlock {
                    conv0: b.conv(&[prefix, s, "res1", "conv0"], d, d, (3, 1, 1), None)?,
                    conv1: b.conv(&[prefix, s, "res1", "conv1"], d, d, (3, 1, 1), None)?,
                },
            });
            // max-pool 3x3, stride 2, padding 1
            h = (h + 1) / 2;
            w = (w + 1) / 2;
            c = d;
        }
        let fc_dim = fc as i64;
        let fc = b.linear(&[prefix, "fc"], h * w * c, fc_dim, None)?;
        Ok((Encoder::Impala { stacks, fc }, fc_dim))
    }

    /// The Nature DQN CNN (32 8x8/4, 64 4x4/2, 64 3x3/1, then `fc` units) for
    /// `[H, W, C]` images under `prefix`; `gain` `None` is PyTorch's default init.
    pub(crate) fn nature(
        b: &mut Builder<'_>,
        prefix: &str,
        obs_shape: &[usize],
        fc: usize,
        gain: Option<f64>,
    ) -> NnResult<(Encoder, i64)> {
        let (mut h, mut w) = (obs_shape[0] as i64, obs_shape[1] as i64);
        let mut c = obs_shape[2] as i64;
        let mut convs = Vec::new();
        for (i, (cout, k, s)) in [(32, 8, 4), (64, 4, 2), (64, 3, 1)].into_iter().enumerate() {
            let name = format!("conv{i}");
            convs.push(b.conv(&[prefix, &name], c, cout, (k, s, 0), gain)?);
            h = (h - k) / s + 1;
            w = (w - k) / s + 1;
            c = cout;
        }
        if h < 1 || w < 1 {
            return Err(NnError::BadSpec(format!(
                "nature_cnn needs images of at least 36x36, got {}x{}",
                obs_shape[0], obs_shape[1]
            )));
        }
        let fc_dim = fc as i64;
        let fc = b.linear(&[prefix, "fc"], h * w * c, fc_dim, gain)?;
        Ok((Encoder::Nature { convs, fc }, fc_dim))
    }

    /// An MLP `din -> hidden[0] -> ...` with layers named `prefix.<i>`.
    pub(crate) fn mlp(
        b: &mut Builder<'_>,
        prefix: &str,
        din: i64,
        hidden: &[usize],
        gain: Option<f64>,
        activation: Activation,
    ) -> NnResult<(Encoder, i64)> {
        let mut layers = Vec::new();
        let mut d = din;
        for (i, &h) in hidden.iter().enumerate() {
            let name = format!("{i}");
            layers.push(b.linear(&[prefix, &name], d, h as i64, gain)?);
            d = h as i64;
        }
        Ok((Encoder::Mlp { layers, activation }, d))
    }

    /// Whether the encoder reads NCHW images (else `[B, features]`).
    pub(crate) fn is_cnn(&self) -> bool {
        !matches!(self, Encoder::Mlp { .. })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> NnResult<Tensor> {
        match self {
            Encoder::Impala { stacks, fc } => {
                let mut x = x.shallow_clone();
                for s in stacks {
                    x = s.forward(&x)?;
                }
                let x = x.f_flatten(1, -1)?.f_relu()?;
                Ok(fc.forward(&x)?.f_relu()?)
            }
            Encoder::Nature { convs, fc } => {
                let mut x = x.shallow_clone();
                for c in convs {
                    x = c.forward(&x)?.f_relu()?;
                }
                Ok(fc.forward(&x.f_flatten(1, -1)?)?.f_relu()?)
            }
            Encoder::Mlp { layers, activation } => {
                let mut x = x.shallow_clone();
                for l in layers {
                    x = l.forward(&x)?;
                    x = match activation {
                        Activation::Tanh => x.f_tanh()?,
                        Activation::Relu => x.f_relu()?,
                    };
                }
                Ok(x)
            }
        }
    }
}

/// Observations to the float tensor an encoder reads: on `device`, scaled by 1/255
/// when the spec's observations are `u8` images (whatever the input dtype), NCHW for
/// CNNs and `[B, obs_len]` for MLPs. Accepts `[B, *obs_shape]` and the flat
/// `[B, obs_len]` the replay buffer stores.
pub(crate) fn prep_obs(
    obs: &Tensor,
    obs_shape: &[usize],
    obs_u8: bool,
    cnn: bool,
    device: Device,
) -> NnResult<Tensor> {
    let size = obs.size();
    let len: usize = obs_shape.iter().product();
    let full = size.len() == obs_shape.len() + 1
        && size[1..]
            .iter()
            .zip(obs_shape)
            .all(|(&a, &b)| a == b as i64);
    let flat = size.len() == 2 && size[1] == len as i64;
    if !full && !flat {
        return Err(NnError::BadInput(format!(
            "observations of shape {size:?}, expected [B, {}]",
            obs_shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let x = obs.f_to_device(device)?.f_to_kind(Kind::Float)?;
    let x = if obs_u8 { x.f_div_scalar(255.0)? } else { x };
    if cnn {
        let mut dims = vec![size[0]];
        dims.extend(obs_shape.iter().map(|&d| d as i64));
        Ok(x.f_view(dims.as_slice())?
            .f_permute([0, 3, 1, 2])?
            .f_contiguous()?)
    } else {
        Ok(x.f_view([size[0], -1])?)
    }
}

/// Creates the variables of a network in a fixed order and remembers that order
/// (with dotted names) for the weights bytes.
pub(crate) struct Builder<'a> {
    pub(crate) root: Path<'a>,
    pub(crate) device: Device,
    pub(crate) vars: Vec<(String, Tensor)>,
}

impl Builder<'_> {
    pub(crate) fn add(&mut self, path: &[&str], name: &str, t: Tensor) -> Tensor {
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

    pub(crate) fn linear(
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
