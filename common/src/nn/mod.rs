//! Policy networks on tch (libtorch), shared by the actor (inference) and the learner
//! (training).
//!
//! - [`spec`]: [`ModelSpec`], the serialisable description of a network that the learner
//!   sends to every actor at registration;
//! - [`policy`]: [`Policy`], the actor-critic built from a spec (IMPALA CNN, Nature CNN
//!   or MLP torso; categorical or diagonal-Gaussian head), with sampling, greedy actions,
//!   evaluation for the loss, and its weights as bytes;
//! - [`adam`]: [`Adam`] on plain tensors, with per-step learning rate, global grad-norm
//!   clipping and a saveable state;
//! - [`rmsprop`]: [`Rmsprop`] as `torch.optim.RMSprop` (no momentum, not centered),
//!   for A2C, with the same per-step learning rate, clipping and saveable state;
//! - [`torso`]: the encoders several networks share (IMPALA CNN, Nature CNN, MLPs);
//! - [`init`]: orthogonal initialisation (Saxe et al. 2014) as `torch.nn.init.orthogonal_`;
//! - one module per algorithm of the list in [`crate::algorithms`] (`nn::<name>`),
//!   with its networks and the [`crate::agent::Agent`] actors act with; each module's
//!   own docs say which paper it follows.

pub mod adam;
pub mod init;
mod optim_state;
pub mod policy;
pub mod rmsprop;
pub mod spec;
pub mod torso;
pub mod weights;

// One module per algorithm, `nn::<name>`, declared by the one list
// (`crate::algorithms`): its networks and its `agent` constructor.
macro_rules! algorithm_modules {
    ($($name:ident),* $(,)?) => { $(pub mod $name;)* };
}
crate::for_each_algorithm!(algorithm_modules);

pub use adam::{clip_grad_norm, Adam, AdamConfig};
pub use policy::{Act, Policy};
pub use rmsprop::{Rmsprop, RmspropConfig};
pub use spec::{ActionHead, ModelKind, ModelSpec};

/// Errors of the network layer. Every one is recoverable: bad weights, a bad spec or a
/// tensor of the wrong shape is reported, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error("bad model spec: {0}")]
    BadSpec(String),
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("bad weights: {0}")]
    BadWeights(String),
    #[error("bad optimizer state: {0}")]
    BadState(String),
    #[error("torch error: {0}")]
    Torch(#[from] tch::TchError),
}

pub type NnResult<T> = Result<T, NnError>;

/// A little-endian byte reader over untrusted input: every read checks the length and
/// reports what was being read.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!(
                "truncated input: {what} needs {n} bytes at offset {}, only {} left",
                self.pos,
                self.buf.len() - self.pos
            )),
        }
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Appends the raw little-endian `f32` data of a float tensor (any device) to `out`.
/// Uses tch's panicking calls: copying a valid tensor to the host fails only if
/// libtorch itself is broken (a lost CUDA context).
pub(crate) fn append_f32(t: &tch::Tensor, out: &mut Vec<u8>) {
    let t = t
        .to_device(tch::Device::Cpu)
        .to_kind(tch::Kind::Float)
        .contiguous();
    let n = t.numel();
    let start = out.len();
    out.resize(start + 4 * n, 0);
    t.copy_data_u8(&mut out[start..], n);
    if cfg!(target_endian = "big") {
        for c in out[start..].chunks_exact_mut(4) {
            c.reverse();
        }
    }
}

/// A float tensor of `shape` on `device` from raw little-endian `f32` bytes (length
/// already checked by the caller).
pub(crate) fn tensor_from_f32_le(
    bytes: &[u8],
    shape: &[i64],
    device: tch::Device,
) -> NnResult<tch::Tensor> {
    let t = if cfg!(target_endian = "big") {
        let swapped: Vec<u8> = bytes
            .chunks_exact(4)
            .flat_map(|c| [c[3], c[2], c[1], c[0]])
            .collect();
        tch::Tensor::f_from_data_size(&swapped, shape, tch::Kind::Float)?
    } else {
        tch::Tensor::f_from_data_size(bytes, shape, tch::Kind::Float)?
    };
    Ok(t.f_to_device(device)?)
}

/// A linear layer `y = x W^T + b`, shared by every network of this module.
#[derive(Debug)]
pub(crate) struct Linear {
    pub(crate) w: tch::Tensor,
    pub(crate) b: tch::Tensor,
}

impl Linear {
    pub(crate) fn forward(&self, x: &tch::Tensor) -> NnResult<tch::Tensor> {
        Ok(x.f_linear(&self.w, Some(&self.b))?)
    }
}
