//! RMSprop (Tieleman and Hinton 2012, Coursera lecture 6.5) on plain tensors, computed
//! as `torch.optim.RMSprop` with `momentum = 0` and `centered = False`:
//!
//! ```text
//! v = alpha v + (1 - alpha) g^2        (v starts at zero)
//! p = p - lr g / (sqrt(v) + eps)
//! ```
//!
//! `eps` is added outside the square root, as PyTorch does (TensorFlow adds it
//! inside). The learning rate is given at every step (annealing); the state is
//! saveable.
//!
//! State bytes, all little-endian (the layout of [`super::adam`] with one moment):
//!
//! ```text
//! "VLYR" | version u32 = 1 | step u64 | count u32 | count x ( ndim u32 | ndim x dim u64 )
//! total u64 | v: total x f32
//! ```

use tch::{Kind, Tensor};

use super::{clip_grad_norm, optim_state, NnResult};

const STATE_MAGIC: &[u8; 4] = b"VLYR";

/// RMSprop's constants. The defaults are PyTorch's (`alpha = 0.99`, `eps = 1e-8`);
/// A2C (Mnih et al. 2016, as Stable-Baselines3 runs it) uses `alpha = 0.99`,
/// `eps = 1e-5`, [`RmspropConfig::A2C`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmspropConfig {
    /// Decay of the running mean of squared gradients.
    pub alpha: f64,
    /// Added to the root of that mean, so a tiny gradient does not make a huge step.
    pub eps: f64,
}

impl RmspropConfig {
    /// A2C's constants (Stable-Baselines3: `alpha = 0.99`, `eps = 1e-5`).
    pub const A2C: RmspropConfig = RmspropConfig {
        alpha: 0.99,
        eps: 1e-5,
    };
}

impl Default for RmspropConfig {
    /// PyTorch's defaults.
    fn default() -> Self {
        RmspropConfig {
            alpha: 0.99,
            eps: 1e-8,
        }
    }
}

/// RMSprop over a fixed list of parameters.
#[derive(Debug)]
pub struct Rmsprop {
    /// The constants, fixed at construction.
    cfg: RmspropConfig,
    /// The parameters (shallow clones of the model's variables), in a fixed order.
    params: Vec<Tensor>,
    /// Running means of the squared gradients, one per parameter.
    v: Vec<Tensor>,
    /// Steps taken (saved with the state, for the caller's bookkeeping).
    step: u64,
}

impl Rmsprop {
    /// RMSprop over `params` (shallow clones of the model's variables) with zero
    /// running means.
    pub fn new(params: Vec<Tensor>, cfg: RmspropConfig) -> NnResult<Rmsprop> {
        let v = params
            .iter()
            .map(|p| -> NnResult<Tensor> {
                Ok(Tensor::f_zeros(
                    p.size().as_slice(),
                    (Kind::Float, p.device()),
                )?)
            })
            .collect::<NnResult<Vec<_>>>()?;
        Ok(Rmsprop {
            cfg,
            params,
            v,
            step: 0,
        })
    }

    /// The constants.
    pub fn config(&self) -> RmspropConfig {
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

    /// One RMSprop step with learning rate `lr` on every parameter that has a
    /// gradient.
    pub fn step(&mut self, lr: f64) -> NnResult<()> {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let RmspropConfig { alpha, eps } = self.cfg;
        for (p, v) in self.params.iter_mut().zip(&mut self.v) {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            // v = alpha v + (1 - alpha) g^2
            let _ = v.f_mul_scalar_(alpha)?;
            let _ = v.f_add_(&g.f_square()?.f_mul_scalar(1.0 - alpha)?)?;
            // p -= lr g / (sqrt(v) + eps)
            let denom = v.f_sqrt()?.f_add_scalar(eps)?;
            let _ = p.f_sub_(&g.f_div(&denom)?.f_mul_scalar(lr)?)?;
        }
        Ok(())
    }

    /// Step count and running means as bytes (format in [`super::optim_state`]).
    pub fn state_to_bytes(&self) -> Vec<u8> {
        optim_state::encode(STATE_MAGIC, self.step, &self.params, &[&self.v])
    }

    /// Restores the step count and running means saved by
    /// [`Rmsprop::state_to_bytes`] for the same parameter shapes. Everything is
    /// checked first: on error nothing changes.
    pub fn load_state_bytes(&mut self, bytes: &[u8]) -> NnResult<()> {
        self.step = optim_state::decode(
            STATE_MAGIC,
            "rmsprop",
            bytes,
            &self.params,
            &mut [("running means of squared gradients", &mut self.v, true)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(values: &[f32]) -> Tensor {
        Tensor::from_slice(values).set_requires_grad(true)
    }

    /// loss = sum(g_i * p_i), whose gradient is g.
    fn linear_step(opt: &mut Rmsprop, p: &Tensor, g: [f32; 2], lr: f64) {
        opt.zero_grad();
        (p * Tensor::from_slice(&g)).sum(Kind::Float).backward();
        opt.step(lr).unwrap();
    }

    #[test]
    fn two_steps_match_hand_computed_rmsprop() {
        let p = param(&[1.0, -2.0]);
        let unused = param(&[3.0]);
        let cfg = RmspropConfig {
            alpha: 0.9,
            eps: 1e-5,
        };
        let mut opt = Rmsprop::new(vec![p.shallow_clone(), unused.shallow_clone()], cfg).unwrap();
        // Step 1, g = (0.5, -4), lr 0.1: v = 0.1 g^2 = (0.025, 1.6),
        //   sqrt(v) = (0.1581139, 1.2649111):
        //   p = (1 - 0.05 / 0.1581239, -2 + 0.4 / 1.2649211) = (0.6837922, -1.6837747)
        linear_step(&mut opt, &p, [0.5, -4.0], 0.1);
        let want1 = [0.683_792_232_7, -1.683_774_734_0];
        for (i, w) in want1.iter().enumerate() {
            assert!(
                (p.double_value(&[i as i64]) - w).abs() < 1e-6,
                "step 1, {i}"
            );
        }
        // Step 2, g = (1, 2), lr 0.05: v = 0.9 (0.025, 1.6) + 0.1 (1, 4) = (0.1225, 1.84),
        //   sqrt(v) = (0.35, 1.3564660):
        //   p = (0.6837922 - 0.05 / 0.35001, -1.6837747 - 0.1 / 1.3564760)
        //     = (0.5409392, -1.7574952)
        linear_step(&mut opt, &p, [1.0, 2.0], 0.05);
        let want2 = [0.540_939_171_4, -1.757_495_168_6];
        for (i, w) in want2.iter().enumerate() {
            assert!(
                (p.double_value(&[i as i64]) - w).abs() < 1e-6,
                "step 2, {i}"
            );
        }
        assert_eq!(opt.steps(), 2);
        // A parameter without a gradient is left alone.
        assert_eq!(unused.double_value(&[0]), 3.0);
    }

    #[test]
    fn defaults_are_pytorchs() {
        assert_eq!(
            RmspropConfig::default(),
            RmspropConfig {
                alpha: 0.99,
                eps: 1e-8
            }
        );
        assert_eq!(RmspropConfig::A2C.eps, 1e-5);
        let opt = Rmsprop::new(vec![param(&[0.0])], RmspropConfig::A2C).unwrap();
        assert_eq!(opt.config(), RmspropConfig::A2C);
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let run = |opt: &mut Rmsprop, p: &Tensor, steps: usize| {
            for k in 0..steps {
                opt.zero_grad();
                let target = Tensor::from_slice(&[k as f32, 1.0, -1.0]);
                (p - target).square().sum(Kind::Float).backward();
                opt.step(0.01).unwrap();
            }
        };
        let p1 = param(&[0.0, 0.0, 0.0]);
        let mut o1 = Rmsprop::new(vec![p1.shallow_clone()], RmspropConfig::A2C).unwrap();
        run(&mut o1, &p1, 3);
        let state = o1.state_to_bytes();
        assert_eq!(&state[..4], b"VLYR");
        assert_eq!(state.len(), 4 + 4 + 8 + 4 + (4 + 8) + 8 + 3 * 4);

        let p2 = param(&[0.0, 0.0, 0.0]);
        tch::no_grad(|| p2.shallow_clone().copy_(&p1));
        let mut o2 = Rmsprop::new(vec![p2.shallow_clone()], RmspropConfig::A2C).unwrap();
        o2.load_state_bytes(&state).unwrap();
        assert_eq!(o2.steps(), 3);
        assert_eq!(o2.state_to_bytes(), state);
        run(&mut o1, &p1, 2);
        run(&mut o2, &p2, 2);
        assert_eq!(
            Vec::<f32>::try_from(&p1).unwrap(),
            Vec::<f32>::try_from(&p2).unwrap()
        );
    }

    #[test]
    fn bad_state_is_refused_and_changes_nothing() {
        let p = param(&[0.0, 0.0, 0.0]);
        let mut opt = Rmsprop::new(vec![p.shallow_clone()], RmspropConfig::default()).unwrap();
        opt.zero_grad();
        (&p - Tensor::from_slice(&[1.0f32, 2.0, 3.0]))
            .square()
            .sum(Kind::Float)
            .backward();
        opt.step(0.01).unwrap();
        let state = opt.state_to_bytes();
        let before = state.clone();

        for cut in 0..state.len() {
            assert!(opt.load_state_bytes(&state[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = state.clone();
        long.push(0);
        assert!(opt.load_state_bytes(&long).is_err());

        let n = state.len();
        let mut nan = state.clone();
        nan[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        let e = opt.load_state_bytes(&nan).unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
        let mut negative = state.clone();
        negative[n - 4..].copy_from_slice(&(-1.0f32).to_le_bytes());
        let e = opt.load_state_bytes(&negative).unwrap_err();
        assert!(e.to_string().contains("negative"), "{e}");

        let other = Rmsprop::new(vec![param(&[0.0; 4])], RmspropConfig::default()).unwrap();
        let e = opt.load_state_bytes(&other.state_to_bytes()).unwrap_err();
        assert!(e.to_string().contains("expected shape"), "{e}");
        let adam = super::super::Adam::new(vec![param(&[0.0; 3])], Default::default()).unwrap();
        let e = opt.load_state_bytes(&adam.state_to_bytes()).unwrap_err();
        assert!(e.to_string().contains("bad magic"), "{e}");

        assert_eq!(opt.state_to_bytes(), before);
        assert_eq!(opt.steps(), 1);
    }
}
