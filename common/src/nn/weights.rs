//! The byte format every network's weights travel and are checkpointed in:
//!
//! ```text
//! magic (4 bytes) | version u32 = 1 | count u32
//! count x ( name_len u32 | name (utf-8) | ndim u32 | ndim x dim u64 )
//! total u64 (number of f32) | total x f32, variables in the order above
//! ```
//!
//! all little-endian. A network lists its variables in a fixed order (the order it
//! creates them), so two networks built from the same spec exchange weights; the
//! magic tells the network families apart (`VLYW`: policies, SAC; `VLYM`: MP-DQN).

use tch::Tensor;

use super::{append_f32, tensor_from_f32_le, NnError, NnResult, Reader};

const VERSION: u32 = 1;

/// Every variable as bytes. One device-to-host copy.
pub(crate) fn encode(magic: &[u8; 4], vars: &[(String, Tensor)]) -> Vec<u8> {
    let _guard = tch::no_grad_guard();
    let total: usize = vars.iter().map(|(_, t)| t.numel()).sum();
    let mut out = Vec::with_capacity(64 + vars.len() * 64 + 4 * total);
    out.extend_from_slice(magic);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
    for (name, t) in vars {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        let size = t.size();
        out.extend_from_slice(&(size.len() as u32).to_le_bytes());
        for d in size {
            out.extend_from_slice(&(d as u64).to_le_bytes());
        }
    }
    out.extend_from_slice(&(total as u64).to_le_bytes());
    let flat: Vec<Tensor> = vars.iter().map(|(_, t)| t.view(-1)).collect();
    append_f32(&Tensor::cat(&flat, 0), &mut out);
    out
}

/// Replaces every variable with the values in `bytes`. Checks the format, names,
/// shapes, length and that every value is finite before changing anything: on error
/// the variables are unchanged.
pub(crate) fn decode_into(
    magic: &[u8; 4],
    bytes: &[u8],
    vars: &mut [(String, Tensor)],
) -> NnResult<()> {
    let data = check_header(magic, bytes, vars).map_err(NnError::BadWeights)?;
    let total: usize = vars.iter().map(|(_, t)| t.numel()).sum();
    let device = vars
        .first()
        .map(|(_, t)| t.device())
        .unwrap_or(tch::Device::Cpu);
    let _guard = tch::no_grad_guard();
    let flat = tensor_from_f32_le(data, &[total as i64], device)?;
    if !bool::try_from(flat.f_isfinite()?.f_all()?)? {
        return Err(NnError::BadWeights(
            "weights contain NaN or infinity".into(),
        ));
    }
    let mut off = 0i64;
    for (_, t) in vars.iter_mut() {
        let n = t.numel() as i64;
        t.f_copy_(&flat.f_narrow(0, off, n)?.f_view(t.size().as_slice())?)?;
        off += n;
    }
    Ok(())
}

/// Parses the header against the expected variables; returns the data section
/// (exactly 4 bytes per parameter).
fn check_header<'a>(
    magic: &[u8; 4],
    bytes: &'a [u8],
    vars: &[(String, Tensor)],
) -> Result<&'a [u8], String> {
    let mut r = Reader::new(bytes);
    if r.take(4, "magic")? != magic {
        return Err(format!(
            "not weights of this network (magic {:?}, expected {:?})",
            String::from_utf8_lossy(&bytes[..bytes.len().min(4)]),
            String::from_utf8_lossy(magic)
        ));
    }
    let version = r.u32("version")?;
    if version != VERSION {
        return Err(format!(
            "weights format version {version}, this build reads {VERSION}"
        ));
    }
    let count = r.u32("variable count")? as usize;
    if count != vars.len() {
        return Err(format!("{count} variables, the model has {}", vars.len()));
    }
    let mut total: u64 = 0;
    for (i, (name, t)) in vars.iter().enumerate() {
        let len = r.u32("name length")? as usize;
        let got = r.take(len, "name")?;
        if got != name.as_bytes() {
            return Err(format!(
                "variable {i} is '{}', the model's is '{name}'",
                String::from_utf8_lossy(got)
            ));
        }
        let shape = t.size();
        let ndim = r.u32("rank")? as usize;
        if ndim != shape.len() {
            return Err(format!(
                "variable '{name}' has rank {ndim}, the model's has shape {shape:?}"
            ));
        }
        let mut dims = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            dims.push(r.u64("dimension")?);
        }
        if dims.iter().zip(&shape).any(|(&a, &b)| a != b as u64) {
            return Err(format!(
                "variable '{name}' has shape {dims:?}, the model's is {shape:?}"
            ));
        }
        total += shape.iter().product::<i64>() as u64;
    }
    let n = r.u64("parameter count")?;
    if n != total {
        return Err(format!("{n} parameters declared, the model has {total}"));
    }
    if r.remaining() as u64 != 4 * total {
        return Err(format!(
            "data section of {} bytes, expected {} ({total} f32)",
            r.remaining(),
            4 * total
        ));
    }
    r.take(4 * total as usize, "data")
}
