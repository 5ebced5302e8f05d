//! Orthogonal initialisation (Saxe et al. 2014), computed as
//! `torch.nn.init.orthogonal_` does: QR of a standard-normal matrix (transposed when it
//! is wide), signs fixed by the diagonal of R so the result is uniformly distributed,
//! then scaled by `gain`. Biases start at zero (CleanRL `layer_init`).

use tch::{Device, Kind, Tensor};

use super::NnResult;

/// ReLU gain, for hidden layers (`torch.nn.init.calculate_gain("relu")`).
pub const GAIN_HIDDEN: f64 = std::f64::consts::SQRT_2;
/// Gain of the actor head: near-uniform initial policy.
pub const GAIN_ACTOR: f64 = 0.01;
/// Gain of the critic head.
pub const GAIN_CRITIC: f64 = 1.0;

/// A `dims`-shaped (at least 2-d; trailing dims flattened) orthogonal matrix times `gain`.
pub fn orthogonal(dims: &[i64], gain: f64, device: Device) -> NnResult<Tensor> {
    let rows = dims.first().copied().unwrap_or(0);
    let cols: i64 = dims.iter().skip(1).product();
    if dims.len() < 2 || rows == 0 || cols == 0 {
        return Err(super::NnError::BadSpec(format!(
            "orthogonal init needs a non-empty matrix, got {dims:?}"
        )));
    }
    let _guard = tch::no_grad_guard();
    // QR on the CPU in f64: deterministic for a seed whatever the device.
    let a = Tensor::f_randn([rows, cols], (Kind::Double, Device::Cpu))?;
    let a = if rows < cols { a.f_transpose(0, 1)? } else { a };
    let (q, r) = Tensor::f_linalg_qr(&a, "reduced")?;
    let q = q.f_mul(&r.f_diag(0)?.f_sign()?)?;
    let q = if rows < cols { q.f_transpose(0, 1)? } else { q };
    let w = (q * gain)
        .f_contiguous()?
        .f_view(dims)?
        .f_to_kind(Kind::Float)?
        .f_to_device(device)?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_or_columns_are_orthonormal_times_gain() {
        tch::manual_seed(0);
        for (dims, gain) in [
            (vec![8i64, 3], 2.0f64),
            (vec![3, 8], 0.5),
            (vec![4, 2, 3, 3], 1.0),
        ] {
            let w = orthogonal(&dims, gain, Device::Cpu).unwrap();
            assert_eq!(w.size(), dims);
            let m = w.view([dims[0], -1]).to_kind(Kind::Double);
            let (r, c) = (m.size()[0], m.size()[1]);
            // The smaller side is orthonormal (scaled by gain^2).
            let g = if r >= c {
                m.tr().matmul(&m)
            } else {
                m.matmul(&m.tr())
            };
            let n = r.min(c);
            let eye = Tensor::eye(n, (Kind::Double, Device::Cpu)) * (gain * gain);
            let err = (g - eye).abs().max().double_value(&[]);
            assert!(err < 1e-5, "{dims:?}: {err}");
        }
    }
}
