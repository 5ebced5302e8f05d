//! Adam (Kingma and Ba 2015) on plain tensors, computed as `torch.optim.Adam` does
//! (bias-corrected moments, `eps` added to the corrected square root), with the
//! learning rate given at every step (annealing) and a saveable state.
//!
//! State bytes, all little-endian:
//!
//! ```text
//! "VLYA" | version u32 = 1 | step u64 | count u32 | count x ( ndim u32 | ndim x dim u64 )
//! total u64 | m: total x f32 | v: total x f32
//! ```

use tch::{Kind, Tensor};

use super::{optim_state, NnResult};

const STATE_MAGIC: &[u8; 4] = b"VLYA";

/// Adam's constants. PPO uses `eps = 1e-5` (Cobbe et al. 2020, CleanRL).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamConfig {
    /// PyTorch's defaults.
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Adam over a fixed list of parameters.
#[derive(Debug)]
pub struct Adam {
    cfg: AdamConfig,
    /// The parameters (shallow clones of the model's variables), in a fixed order.
    params: Vec<Tensor>,
    /// First-moment estimates, one per parameter.
    m: Vec<Tensor>,
    /// Second-moment estimates, one per parameter.
    v: Vec<Tensor>,
    /// Steps taken: the exponent of the bias corrections.
    step: u64,
}

impl Adam {
    pub fn new(params: Vec<Tensor>, cfg: AdamConfig) -> NnResult<Adam> {
        let zeros = |p: &Tensor| -> NnResult<Tensor> {
            Ok(Tensor::f_zeros(
                p.size().as_slice(),
                (Kind::Float, p.device()),
            )?)
        };
        let m = params.iter().map(zeros).collect::<NnResult<Vec<_>>>()?;
        let v = params.iter().map(zeros).collect::<NnResult<Vec<_>>>()?;
        Ok(Adam {
            cfg,
            params,
            m,
            v,
            step: 0,
        })
    }

    pub fn config(&self) -> AdamConfig {
        self.cfg
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Zeroes every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// Scales the gradients so their global L2 norm is at most `max_norm`; returns the
    /// norm before clipping (a 0-d tensor on the parameters' device, no sync).
    pub fn clip_grad_norm(&self, max_norm: f64) -> NnResult<Tensor> {
        clip_grad_norm(&self.params, max_norm)
    }

    /// One Adam step with learning rate `lr` on every parameter that has a gradient.
    pub fn step(&mut self, lr: f64) -> NnResult<()> {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let AdamConfig { beta1, beta2, eps } = self.cfg;
        let t = self.step as f64;
        let bc1 = 1.0 - beta1.powf(t);
        let bc2 = 1.0 - beta2.powf(t);
        let step_size = lr / bc1;
        for ((p, m), v) in self.params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            // m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
            let _ = m.f_lerp_(&g, 1.0 - beta1)?;
            let _ = v.f_mul_scalar_(beta2)?;
            let _ = v.f_add_(&g.f_square()?.f_mul_scalar(1.0 - beta2)?)?;
            // p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
            let denom = v.f_sqrt()?.f_div_scalar(bc2.sqrt())?.f_add_scalar(eps)?;
            let _ = p.f_sub_(&m.f_div(&denom)?.f_mul_scalar(step_size)?)?;
        }
        Ok(())
    }

    /// Step count and moments as bytes (format in [`super::optim_state`]). Panics only
    /// if libtorch cannot copy its own tensors to the host.
    pub fn state_to_bytes(&self) -> Vec<u8> {
        optim_state::encode(STATE_MAGIC, self.step, &self.params, &[&self.m, &self.v])
    }

    /// Restores the step count and moments saved by [`Adam::state_to_bytes`] for the
    /// same parameter shapes. Everything is checked first: on error nothing changes.
    pub fn load_state_bytes(&mut self, bytes: &[u8]) -> NnResult<()> {
        self.step = optim_state::decode(
            STATE_MAGIC,
            "optimizer",
            bytes,
            &self.params,
            &mut [
                ("first moments", &mut self.m, false),
                ("second moments", &mut self.v, true),
            ],
        )?;
        Ok(())
    }
}

/// Scales the gradients of `params` so their global L2 norm is at most `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`); returns the norm before clipping as a 0-d tensor
/// (no host sync). Parameters without a gradient are ignored.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> NnResult<Tensor> {
    let _guard = tch::no_grad_guard();
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| p.grad())
        .filter(|g| g.defined())
        .collect();
    if grads.is_empty() {
        return Ok(Tensor::f_zeros([], (Kind::Float, tch::Device::Cpu))?);
    }
    let norms = grads
        .iter()
        .map(|g| g.f_norm())
        .collect::<Result<Vec<_>, _>>()?;
    let total = Tensor::f_stack(&norms, 0)?.f_norm()?;
    let coef = total
        .f_add_scalar(1e-6)?
        .f_reciprocal()?
        .f_mul_scalar(max_norm)?
        .f_clamp_max(1.0)?;
    for mut g in grads {
        let _ = g.f_mul_(&coef)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(values: &[f32]) -> Tensor {
        Tensor::from_slice(values).set_requires_grad(true)
    }

    #[test]
    fn two_steps_match_hand_computed_adam() {
        // loss = sum(g_i * p_i) gives gradient g; hand-computed torch.optim.Adam steps.
        let p = param(&[1.0, -2.0]);
        let cfg = AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-5,
        };
        let mut adam = Adam::new(vec![p.shallow_clone()], cfg).unwrap();
        let g = [0.5f64, -4.0];
        let (lr1, lr2) = (0.1f64, 0.05f64);
        // Step 1: m = 0.1 g, v = 0.001 g^2; mhat = g, vhat = g^2:
        //   p -= lr1 * g / (|g| + eps)
        // Step 2 (same g): m = 0.19 g, v = 0.001999 g^2; mhat = 0.19/0.19 g = g,
        //   vhat = g^2 again: p -= lr2 * g / (|g| + eps)
        let mut want = [1.0f64, -2.0];
        for lr in [lr1, lr2] {
            adam.zero_grad();
            let loss = (&p * Tensor::from_slice(&[g[0] as f32, g[1] as f32])).sum(Kind::Float);
            loss.backward();
            adam.step(lr).unwrap();
            for i in 0..2 {
                want[i] -= lr * g[i] / (g[i].abs() + 1e-5);
            }
        }
        for (i, w) in want.iter().enumerate() {
            assert!((p.double_value(&[i as i64]) - w).abs() < 1e-6, "{i}");
        }
        assert_eq!(adam.steps(), 2);

        // A third step with a different gradient, computed from the raw recursions.
        let g3 = [1.0f64, 2.0];
        let mut m = [0.0f64; 2];
        let mut v = [0.0f64; 2];
        for gi in [g, g, g3] {
            for i in 0..2 {
                m[i] = 0.9 * m[i] + 0.1 * gi[i];
                v[i] = 0.999 * v[i] + 0.001 * gi[i] * gi[i];
            }
        }
        let lr3 = 0.01;
        for i in 0..2 {
            let mhat = m[i] / (1.0 - 0.9f64.powi(3));
            let vhat = v[i] / (1.0 - 0.999f64.powi(3));
            want[i] -= lr3 * mhat / (vhat.sqrt() + 1e-5);
        }
        adam.zero_grad();
        (&p * Tensor::from_slice(&[1.0f32, 2.0]))
            .sum(Kind::Float)
            .backward();
        adam.step(lr3).unwrap();
        for (i, w) in want.iter().enumerate() {
            assert!((p.double_value(&[i as i64]) - w).abs() < 1e-6, "{i}");
        }
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let run = |adam: &mut Adam, p: &Tensor, steps: usize| {
            for k in 0..steps {
                adam.zero_grad();
                let target = Tensor::from_slice(&[k as f32, 1.0, -1.0]);
                (p - target).square().sum(Kind::Float).backward();
                adam.step(0.1).unwrap();
            }
        };
        let p1 = param(&[0.0, 0.0, 0.0]);
        let mut a1 = Adam::new(vec![p1.shallow_clone()], AdamConfig::default()).unwrap();
        run(&mut a1, &p1, 3);
        let state = a1.state_to_bytes();

        let p2 = param(&[0.0, 0.0, 0.0]);
        tch::no_grad(|| p2.shallow_clone().copy_(&p1));
        let mut a2 = Adam::new(vec![p2.shallow_clone()], AdamConfig::default()).unwrap();
        a2.load_state_bytes(&state).unwrap();
        assert_eq!(a2.steps(), 3);
        run(&mut a1, &p1, 2);
        run(&mut a2, &p2, 2);
        assert_eq!(
            Vec::<f32>::try_from(&p1).unwrap(),
            Vec::<f32>::try_from(&p2).unwrap()
        );

        // Bad input is an error and leaves the state alone.
        let before = a2.state_to_bytes();
        for cut in 0..state.len() {
            assert!(a2.load_state_bytes(&state[..cut]).is_err());
        }
        let mut nan = state.clone();
        let n = nan.len();
        nan[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(a2
            .load_state_bytes(&nan)
            .unwrap_err()
            .to_string()
            .contains("NaN"));
        let other = Adam::new(vec![param(&[0.0; 4])], AdamConfig::default()).unwrap();
        let e = a2.load_state_bytes(&other.state_to_bytes()).unwrap_err();
        assert!(e.to_string().contains("expected shape"), "{e}");
        assert_eq!(a2.state_to_bytes(), before);
    }

    #[test]
    fn clip_grad_norm_scales_to_max() {
        let a = param(&[0.0, 0.0]);
        let b = param(&[0.0]);
        let la = (&a * Tensor::from_slice(&[3.0f32, 0.0])).sum(Kind::Float);
        let lb = (&b * Tensor::from_slice(&[4.0f32])).sum(Kind::Float);
        (la + lb).backward();
        let n = clip_grad_norm(&[a.shallow_clone(), b.shallow_clone()], 1.0).unwrap();
        assert!((n.double_value(&[]) - 5.0).abs() < 1e-6);
        assert!((a.grad().double_value(&[0]) - 0.6).abs() < 1e-6);
        assert!((b.grad().double_value(&[0]) - 0.8).abs() < 1e-6);
        // Below the maximum nothing changes.
        let n = clip_grad_norm(&[a.shallow_clone(), b.shallow_clone()], 10.0).unwrap();
        assert!((n.double_value(&[]) - 1.0).abs() < 1e-5);
        assert!((a.grad().double_value(&[0]) - 0.6).abs() < 1e-5);
    }
}
