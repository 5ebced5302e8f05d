//! The state bytes every optimizer of this module saves ([`super::Adam`],
//! [`super::Rmsprop`]): its step count and its per-parameter buffers (moments, running
//! means), all little-endian:
//!
//! ```text
//! magic (4 bytes) | version u32 = 1 | step u64 | count u32
//! count x ( ndim u32 | ndim x dim u64 )   the parameters' shapes
//! total u64 | for each buffer: total x f32, parameters in order
//! ```

use tch::{Device, Tensor};

use super::{append_f32, tensor_from_f32_le, NnError, NnResult, Reader};

const VERSION: u32 = 1;

/// The state of `params` at `step` with `buffers` (each one tensor per parameter).
/// One device-to-host copy per buffer.
pub(crate) fn encode(
    magic: &[u8; 4],
    step: u64,
    params: &[Tensor],
    buffers: &[&[Tensor]],
) -> Vec<u8> {
    let _guard = tch::no_grad_guard();
    let total: usize = params.iter().map(|p| p.numel()).sum();
    let mut out = Vec::with_capacity(64 + 4 * buffers.len() * total);
    out.extend_from_slice(magic);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&step.to_le_bytes());
    out.extend_from_slice(&(params.len() as u32).to_le_bytes());
    for p in params {
        let size = p.size();
        out.extend_from_slice(&(size.len() as u32).to_le_bytes());
        for d in size {
            out.extend_from_slice(&(d as u64).to_le_bytes());
        }
    }
    out.extend_from_slice(&(total as u64).to_le_bytes());
    for b in buffers {
        if !b.is_empty() {
            let flat: Vec<Tensor> = b.iter().map(|t| t.view(-1)).collect();
            append_f32(&Tensor::cat(&flat, 0), &mut out);
        }
    }
    out
}

/// Restores a state of [`encode`] into `buffers`, each `(name, tensors, values must be
/// non-negative)`, for the same parameter shapes (`what` names the optimizer in
/// messages), and returns its step. Everything is checked first (magic,
/// version, shapes, lengths, finite values, signs): on error nothing changes.
pub(crate) fn decode(
    magic: &[u8; 4],
    what: &str,
    bytes: &[u8],
    params: &[Tensor],
    buffers: &mut [(&str, &mut [Tensor], bool)],
) -> NnResult<u64> {
    let shapes: Vec<Vec<i64>> = params.iter().map(|p| p.size()).collect();
    let (step, data) =
        check_header(magic, what, bytes, &shapes, buffers.len()).map_err(NnError::BadState)?;
    let total: i64 = shapes.iter().map(|s| s.iter().product::<i64>()).sum();
    let _guard = tch::no_grad_guard();
    let device = params.first().map(|p| p.device()).unwrap_or(Device::Cpu);
    let flat = tensor_from_f32_le(data, &[buffers.len() as i64 * total], device)?;
    for (i, (name, _, non_negative)) in buffers.iter().enumerate() {
        let part = flat.f_narrow(0, i as i64 * total, total)?;
        if !bool::try_from(part.f_isfinite()?.f_all()?)? {
            return Err(NnError::BadState(format!(
                "{what} {name} contain NaN or infinity"
            )));
        }
        if *non_negative && bool::try_from(part.f_lt(0.0)?.f_any()?)? {
            return Err(NnError::BadState(format!("negative {what} {name}")));
        }
    }
    let mut off = 0i64;
    for (_, tensors, _) in buffers.iter_mut() {
        for t in tensors.iter_mut() {
            let n = t.numel() as i64;
            t.f_copy_(&flat.f_narrow(0, off, n)?.f_view(t.size().as_slice())?)?;
            off += n;
        }
    }
    Ok(step)
}

fn check_header<'a>(
    magic: &[u8; 4],
    what: &str,
    bytes: &'a [u8],
    shapes: &[Vec<i64>],
    buffers: usize,
) -> Result<(u64, &'a [u8]), String> {
    let mut r = Reader::new(bytes);
    if r.take(4, "magic")? != magic {
        return Err(format!("not a volley {what} state (bad magic)"));
    }
    let version = r.u32("version")?;
    if version != VERSION {
        return Err(format!(
            "{what} state version {version}, this build reads {VERSION}"
        ));
    }
    let step = r.u64("step")?;
    let count = r.u32("parameter count")? as usize;
    if count != shapes.len() {
        return Err(format!(
            "state for {count} parameters, the optimizer has {}",
            shapes.len()
        ));
    }
    let mut total = 0u64;
    for (i, shape) in shapes.iter().enumerate() {
        let ndim = r.u32("rank")? as usize;
        if ndim != shape.len() {
            return Err(format!(
                "parameter {i} has rank {ndim}, expected shape {shape:?}"
            ));
        }
        for (j, &want) in shape.iter().enumerate() {
            let d = r.u64("dimension")?;
            if d != want as u64 {
                return Err(format!(
                    "parameter {i} dimension {j} is {d}, expected shape {shape:?}"
                ));
            }
        }
        total += shape.iter().product::<i64>() as u64;
    }
    let n = r.u64("element count")?;
    if n != total {
        return Err(format!(
            "{n} elements declared, the parameters have {total}"
        ));
    }
    let want = 4 * buffers as u64 * total;
    if r.remaining() as u64 != want {
        return Err(format!(
            "{what} data of {} bytes, expected {want}",
            r.remaining()
        ));
    }
    Ok((step, r.take(want as usize, "data")?))
}
