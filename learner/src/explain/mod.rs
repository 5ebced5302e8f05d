//! Explanations of an agent's decisions, each a formula with its source.
//!
//! Every explanation starts from what the decision was read from
//! ([`volley_common::agent::Decision`]): the outputs `y_1 .. y_D` behind the action
//! (the chosen action's `Q(s, a)` or log-probability, or the action means), the
//! policy side `pi(s)` and the value side `V(s)` of the networks.
//!
//! - **Gradient feature importance** (vector observations), as the Platform project
//!   computes it, a GradCAM-like attribution (Selvaraju et al. 2017, "Grad-CAM"; the
//!   gradient of the decision's score with respect to the input, Simonyan, Vedaldi
//!   and Zisserman 2014, "Deep Inside Convolutional Networks"): per feature `j`,
//!   `a_j = sum_d |d y_d / d s_j|`, renormalised to `importance_j = a_j / sum_k a_k`,
//!   so that each is in `[0, 1]` and they sum to 1 (all 0 when the decision does not
//!   depend on the observation). [`gradient_importance`].
//! - **Gradient saliency** (pixel observations): the same `a` per pixel and colour
//!   channel, reduced over the channels by their mean or their max
//!   ([`ChannelReduce`]). [`gradient_saliency`].
//! - **Perturbation saliency** (Greydanus, Koul, Dodge and Fern 2018, "Visualizing
//!   and Understanding Atari Agents", arXiv 1711.00138): the image `I` is blurred
//!   around pixel `(i, j)`, `I' = I (1 - M_ij) + A(I) M_ij` with `M_ij` a Gaussian
//!   mask of standard deviation `mask_sigma` (5 pixels) peaking at 1 on `(i, j)` and
//!   `A(I)` the image blurred by a Gaussian of `blur_sigma` (3 pixels); the policy
//!   saliency is `S_pi(i, j) = 1/2 ||pi(I) - pi(I')||^2` and the value saliency
//!   `S_V(i, j) = 1/2 (V(I) - V(I'))^2`, on a grid of every `stride`-th pixel (5),
//!   interpolated bilinearly to the whole image. [`perturbation_saliency`].
//! - **Overlay** (as Greydanus et al. show it): a map is resized to the frame,
//!   optionally smoothed by a Gaussian filter of `sigma` frame pixels, divided by its
//!   maximum and added to one colour channel, `frame[c] += constant * S / max S`,
//!   clipped to 0..255. [`overlay`].
//!
//! [`session`] writes an explained play's files.

pub mod session;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};
use volley_common::agent::{to_f32_vec, ActionBatch, Agent};
use volley_common::env::Frame;

/// `sum_d |d y_d / d obs|`, the shape of `obs`, for the decision's outputs `y`.
fn input_gradient(agent: &dyn Agent, obs: &Tensor, taken: &ActionBatch) -> Result<Tensor> {
    let x = obs
        .f_to_kind(Kind::Float)?
        .f_detach()?
        .f_set_requires_grad(true)?;
    let decision = agent
        .decision(&x, taken)
        .context("the agent cannot show what its decision was read from")?;
    // Adding 0 * sum(x) keeps every output connected to x, so a decision that does
    // not depend on the observation has a zero gradient rather than none.
    let outputs = decision
        .outputs
        .f_add(&x.f_sum(Kind::Float)?.f_mul_scalar(0.0)?)?;
    let d = outputs.size().get(1).copied().unwrap_or(1);
    let mut total = x.f_zeros_like()?;
    for k in 0..d {
        let y = outputs.f_select(1, k)?.f_sum(Kind::Float)?;
        let g = Tensor::f_run_backward(&[y], &[&x], k + 1 < d, false)?;
        total = total.f_add(&g[0].f_abs()?)?;
    }
    Ok(total)
}

/// Each row's gradient feature importance (see the module docs): `obs` `[N, F]`
/// float observations in env units, `taken` the actions chosen for them.
pub fn gradient_importance(
    agent: &dyn Agent,
    obs: &Tensor,
    taken: &ActionBatch,
) -> Result<Vec<Vec<f32>>> {
    let size = obs.size();
    if size.len() != 2 {
        bail!("feature importance is for vector observations [N, F], got {size:?}");
    }
    let g = input_gradient(agent, obs, taken)?;
    let flat = to_f32_vec(&g)?;
    Ok(flat
        .chunks(size[1].max(1) as usize)
        .map(|row| normalise_sum(row.to_vec()))
        .collect())
}

/// `v / sum(v)`; zeros when the sum is 0 or not finite.
fn normalise_sum(mut v: Vec<f32>) -> Vec<f32> {
    let s: f32 = v.iter().sum();
    if s > 0.0 && s.is_finite() {
        v.iter_mut().for_each(|x| *x /= s);
    } else {
        v.iter_mut().for_each(|x| *x = 0.0);
    }
    v
}

/// How a pixel's colour channels become one saliency value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelReduce {
    #[default]
    Mean,
    Max,
}

/// A map of one value per pixel, rows top to bottom (the layout of [`Frame`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SaliencyMap {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

impl SaliencyMap {
    fn at(&self, x: usize, y: usize) -> f32 {
        self.values[y * self.width + x]
    }

    /// The largest value.
    pub fn max(&self) -> f32 {
        self.values.iter().copied().fold(0.0, f32::max)
    }

    /// Where the largest value is, `(x, y)`.
    pub fn argmax(&self) -> (usize, usize) {
        let i = self
            .values
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0;
        (i % self.width.max(1), i / self.width.max(1))
    }

    /// This map at another size, bilinearly (pixel centres aligned).
    pub fn resized(&self, width: usize, height: usize) -> SaliencyMap {
        let mut values = Vec::with_capacity(width * height);
        let sx = self.width as f32 / width.max(1) as f32;
        let sy = self.height as f32 / height.max(1) as f32;
        for y in 0..height {
            let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (self.height - 1) as f32);
            let (y0, ty) = (fy.floor() as usize, fy.fract());
            let y1 = (y0 + 1).min(self.height - 1);
            for x in 0..width {
                let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (self.width - 1) as f32);
                let (x0, tx) = (fx.floor() as usize, fx.fract());
                let x1 = (x0 + 1).min(self.width - 1);
                let top = self.at(x0, y0) * (1.0 - tx) + self.at(x1, y0) * tx;
                let bottom = self.at(x0, y1) * (1.0 - tx) + self.at(x1, y1) * tx;
                values.push(top * (1.0 - ty) + bottom * ty);
            }
        }
        SaliencyMap {
            width,
            height,
            values,
        }
    }
}

/// Gradient saliency of each image of `obs` `[N, H, W, C]` (0..255 units), reduced
/// over the colour channels by `reduce`; not normalised.
pub fn gradient_saliency(
    agent: &dyn Agent,
    obs: &Tensor,
    taken: &ActionBatch,
    reduce: ChannelReduce,
) -> Result<Vec<SaliencyMap>> {
    let size = obs.size();
    let [n, h, w, _c] = size[..] else {
        bail!("saliency is for images [N, H, W, C], got {size:?}");
    };
    let g = input_gradient(agent, obs, taken)?;
    let per_pixel = match reduce {
        ChannelReduce::Mean => g.f_mean_dim(&[3i64][..], false, Kind::Float)?,
        ChannelReduce::Max => g.f_amax(&[3i64][..], false)?,
    };
    let flat = to_f32_vec(&per_pixel)?;
    let (h, w) = (h as usize, w as usize);
    Ok(flat
        .chunks(h * w)
        .take(n as usize)
        .map(|v| SaliencyMap {
            width: w,
            height: h,
            values: v.to_vec(),
        })
        .collect())
}

/// The settings of [`perturbation_saliency`] (Greydanus et al.'s defaults).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Perturbation {
    /// Every this many pixels a mask is centred (the paper: 5).
    pub stride: usize,
    /// Standard deviation of the mask, in pixels (the paper: 5).
    pub mask_sigma: f64,
    /// Standard deviation of the blur that replaces the masked pixels (the paper: 3).
    pub blur_sigma: f64,
    /// Perturbed images per forward pass.
    pub batch: usize,
}

impl Default for Perturbation {
    fn default() -> Self {
        Perturbation {
            stride: 5,
            mask_sigma: 5.0,
            blur_sigma: 3.0,
            batch: 64,
        }
    }
}

/// Perturbation saliency of one image `obs` `[1, H, W, C]` (0..255 units): the policy
/// map and, where the agent has a value side, the value map; not normalised.
pub fn perturbation_saliency(
    agent: &dyn Agent,
    obs: &Tensor,
    taken: &ActionBatch,
    p: &Perturbation,
) -> Result<(SaliencyMap, Option<SaliencyMap>)> {
    let size = obs.size();
    let [1, h, w, c] = size[..] else {
        bail!("perturbation saliency takes one image [1, H, W, C], got {size:?}");
    };
    if p.stride == 0 || p.batch == 0 || p.mask_sigma <= 0.0 || p.blur_sigma < 0.0 {
        bail!("perturbation saliency needs stride and batch >= 1, mask_sigma > 0 and blur_sigma >= 0, got {p:?}");
    }
    let (h, w, c) = (h as usize, w as usize, c as usize);
    let image = to_f32_vec(obs)?;
    let blurred = blur_image(&image, w, h, c, p.blur_sigma);
    let _guard = tch::no_grad_guard();
    let base = agent
        .decision(&obs.f_to_kind(Kind::Float)?, taken)
        .context("the agent cannot show what its decision was read from")?;
    let base_policy = to_f32_vec(&base.policy)?;
    let base_value = base.value.as_ref().map(to_f32_vec).transpose()?;
    let centres: Vec<(usize, usize)> = (0..h)
        .step_by(p.stride)
        .flat_map(|i| (0..w).step_by(p.stride).map(move |j| (i, j)))
        .collect();
    let (gh, gw) = (h.div_ceil(p.stride), w.div_ceil(p.stride));
    let mut s_pi = Vec::with_capacity(centres.len());
    let mut s_v = Vec::with_capacity(centres.len());
    let two_var = 2.0 * p.mask_sigma * p.mask_sigma;
    for group in centres.chunks(p.batch) {
        let mut batch = Vec::with_capacity(group.len() * h * w * c);
        for &(ci, cj) in group {
            for y in 0..h {
                for x in 0..w {
                    let d2 = (y as f64 - ci as f64).powi(2) + (x as f64 - cj as f64).powi(2);
                    let m = (-d2 / two_var).exp() as f32;
                    for k in 0..c {
                        let i = (y * w + x) * c + k;
                        batch.push(image[i] * (1.0 - m) + blurred[i] * m);
                    }
                }
            }
        }
        let t = Tensor::f_from_slice(&batch)?.f_view([
            group.len() as i64,
            h as i64,
            w as i64,
            c as i64,
        ])?;
        let repeated = ActionBatch {
            discrete: taken
                .discrete
                .iter()
                .copied()
                .cycle()
                .take(group.len())
                .collect(),
            ..taken.clone()
        };
        let d = agent.decision(&t, &repeated)?;
        let pol = to_f32_vec(&d.policy)?;
        let k = base_policy.len();
        for row in pol.chunks(k.max(1)) {
            let e: f32 = row
                .iter()
                .zip(&base_policy)
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            s_pi.push(0.5 * e);
        }
        if let (Some(v0), Some(v)) = (&base_value, &d.value) {
            for v in to_f32_vec(v)? {
                s_v.push(0.5 * (v - v0[0]) * (v - v0[0]));
            }
        }
    }
    let grid = |values: Vec<f32>| {
        SaliencyMap {
            width: gw,
            height: gh,
            values,
        }
        .resized(w, h)
    };
    let value = (base_value.is_some()).then(|| grid(s_v));
    Ok((grid(s_pi), value))
}

/// A Gaussian kernel of standard deviation `sigma`, truncated at 4 sigma (scipy's
/// `gaussian_filter` default), summing to 1.
fn kernel(sigma: f64) -> Vec<f32> {
    let r = (4.0 * sigma).round().max(0.0) as i64;
    let k: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = k.iter().sum();
    k.iter().map(|v| (v / s) as f32).collect()
}

/// `values` (`h` rows of `w` pixels of `c` channels) filtered by a Gaussian of
/// `sigma` pixels, separably, with edges extended (scipy's `nearest` mode).
fn blur_image(values: &[f32], w: usize, h: usize, c: usize, sigma: f64) -> Vec<f32> {
    if sigma <= 0.0 {
        return values.to_vec();
    }
    let k = kernel(sigma);
    let r = (k.len() / 2) as i64;
    let pass = |src: &[f32], horizontal: bool| {
        let mut out = vec![0f32; src.len()];
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let mut acc = 0f32;
                    for (t, &kv) in k.iter().enumerate() {
                        let off = t as i64 - r;
                        let (sx, sy) = if horizontal {
                            ((x as i64 + off).clamp(0, w as i64 - 1) as usize, y)
                        } else {
                            (x, (y as i64 + off).clamp(0, h as i64 - 1) as usize)
                        };
                        acc += kv * src[(sy * w + sx) * c + ch];
                    }
                    out[(y * w + x) * c + ch] = acc;
                }
            }
        }
        out
    };
    pass(&pass(values, true), false)
}

/// How a saliency map is drawn on a frame (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Overlay {
    /// The colour channel the map is added to: 0 red, 1 green, 2 blue.
    pub channel: usize,
    /// What the map's maximum adds to the channel, in 0..255 units.
    pub constant: f32,
    /// A Gaussian filter of this many frame pixels applied to the resized map.
    pub sigma: Option<f64>,
}

/// Adds `map` to one channel of `frame` (see the module docs). A map that is zero
/// everywhere leaves the frame as it is.
pub fn overlay(frame: &mut Frame, map: &SaliencyMap, o: &Overlay) -> Result<()> {
    if o.channel > 2 {
        bail!(
            "saliency channel {} does not exist: 0 red, 1 green, 2 blue",
            o.channel
        );
    }
    let (w, h) = (frame.width as usize, frame.height as usize);
    let mut m = map.resized(w, h);
    if let Some(s) = o.sigma.filter(|s| *s > 0.0) {
        m.values = blur_image(&m.values, w, h, 1, s);
    }
    let max = m.max();
    if max <= 0.0 || !max.is_finite() {
        return Ok(());
    }
    for (i, v) in m.values.iter().enumerate() {
        let px = &mut frame.rgb[i * 3 + o.channel];
        *px = (f32::from(*px) + o.constant * v / max).clamp(0.0, 255.0) as u8;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;
    use volley_common::agent::{AgentContext, Mode, Progress};
    use volley_common::env::Space;
    use volley_common::nn::ddqn::QNetwork;
    use volley_common::nn::{ModelKind, ModelSpec};

    /// A Double DQN agent whose first layer reads only the inputs `keep` (flat
    /// indices): every other input's weights are zero.
    fn agent_reading(obs: &Space, keep: &[usize]) -> Box<dyn Agent> {
        let spec = ModelSpec::for_spaces(
            ModelKind::Mlp { hidden: vec![16] },
            obs,
            &Space::Discrete { n: 3 },
        )
        .unwrap();
        let q = QNetwork::new(spec.clone(), Device::Cpu).unwrap();
        {
            let _g = tch::no_grad_guard();
            let (_, w) = &q.named_variables()[0];
            let cols = w.size()[1] as usize;
            let mut mask = vec![0f32; cols];
            for &k in keep {
                mask[k] = 1.0;
            }
            let m = Tensor::from_slice(&mask).view([1, cols as i64]);
            w.shallow_clone().copy_(&(w * m));
        }
        let json = serde_json::to_string(&spec).unwrap();
        let explore = r#"{"epsilon_start": 0.0, "epsilon_final": 0.0, "epsilon_steps": 1}"#;
        let mut a = volley_common::agent::build_agent(
            "ddqn",
            &AgentContext {
                spec_json: &json,
                explore_json: explore,
                observation_space: obs,
                action_space: &Space::Discrete { n: 3 },
                num_envs: 1,
                seed: 0,
                device: Device::Cpu,
            },
        )
        .unwrap();
        a.load_weights(&q.to_bytes()).unwrap();
        a
    }

    fn act(agent: &mut dyn Agent, obs: &Tensor) -> ActionBatch {
        let mut out = ActionBatch::default();
        agent
            .act(obs, &Progress::default(), Mode::Greedy, &mut out)
            .unwrap();
        out
    }

    #[test]
    fn a_network_reading_one_feature_gives_it_all_the_importance() {
        let _torch = volley_common::testing::torch();
        tch::manual_seed(1);
        let space = Space::uniform_box(&[6], -1.0, 1.0);
        for k in [0, 4] {
            let mut a = agent_reading(&space, &[k]);
            let obs = Tensor::rand([5, 6], (Kind::Float, Device::Cpu));
            let taken = act(&mut *a, &obs);
            let imp = gradient_importance(&*a, &obs, &taken).unwrap();
            assert_eq!(imp.len(), 5);
            for row in imp {
                assert!((row[k] - 1.0).abs() < 1e-6, "{row:?}");
                let rest: f32 = row
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != k)
                    .map(|(_, v)| v)
                    .sum();
                assert!(rest < 1e-6, "{row:?}");
            }
        }
        // Reading two features shares the importance between them only.
        let mut a = agent_reading(&space, &[1, 2]);
        let obs = Tensor::rand([3, 6], (Kind::Float, Device::Cpu));
        let taken = act(&mut *a, &obs);
        for row in gradient_importance(&*a, &obs, &taken).unwrap() {
            assert!((row[1] + row[2] - 1.0).abs() < 1e-5, "{row:?}");
            assert!(row[1] > 0.0 && row[2] > 0.0, "{row:?}");
        }
    }

    /// An 8x8 RGB image space whose agent reads only the pixels of rows 1..3 and
    /// columns 5..7.
    fn region_agent() -> (Box<dyn Agent>, Vec<usize>) {
        let space = Space::Image {
            height: 8,
            width: 8,
            channels: 3,
        };
        let mut keep = Vec::new();
        for y in 1..3 {
            for x in 5..7 {
                for ch in 0..3 {
                    keep.push((y * 8 + x) * 3 + ch);
                }
            }
        }
        (agent_reading(&space, &keep), keep)
    }

    #[test]
    fn saliency_peaks_in_the_region_the_network_reads() {
        let _torch = volley_common::testing::torch();
        tch::manual_seed(2);
        let (mut a, _) = region_agent();
        let obs = (Tensor::rand([1, 8, 8, 3], (Kind::Float, Device::Cpu)) * 255.0).round();
        let taken = act(&mut *a, &obs);
        for reduce in [ChannelReduce::Mean, ChannelReduce::Max] {
            let g = &gradient_saliency(&*a, &obs, &taken, reduce).unwrap()[0];
            let (x, y) = g.argmax();
            assert!(
                (5..7).contains(&x) && (1..3).contains(&y),
                "{reduce:?} peak at {x},{y}"
            );
            // Outside the region: exactly zero.
            for yy in 0..8 {
                for xx in 0..8 {
                    if !((5..7).contains(&xx) && (1..3).contains(&yy)) {
                        assert_eq!(g.at(xx, yy), 0.0);
                    }
                }
            }
        }
        let p = Perturbation {
            stride: 1,
            mask_sigma: 1.0,
            blur_sigma: 2.0,
            batch: 16,
        };
        let (pi, v) = perturbation_saliency(&*a, &obs, &taken, &p).unwrap();
        let (x, y) = pi.argmax();
        assert!((4..8).contains(&x) && y < 4, "policy peak at {x},{y}");
        assert!(pi.max() > 0.0);
        let v = v.expect("Q-learners have a value side");
        let (x, y) = v.argmax();
        assert!((4..8).contains(&x) && y < 4, "value peak at {x},{y}");
        // Far from the region (the bottom-left corner) the image's change does not
        // reach what the network reads.
        assert!(pi.at(0, 7) < 1e-3 * pi.max(), "{}", pi.at(0, 7));
    }

    #[test]
    fn a_constant_network_has_no_saliency_and_draws_nothing() {
        let _torch = volley_common::testing::torch();
        tch::manual_seed(3);
        let (mut a, _) = region_agent();
        // A constant image: blurring changes nothing, so no saliency either way.
        let obs = Tensor::full([1, 8, 8, 3], 100.0, (Kind::Float, Device::Cpu));
        let taken = act(&mut *a, &obs);
        let (pi, v) = perturbation_saliency(&*a, &obs, &taken, &Perturbation::default()).unwrap();
        assert!(pi.max() < 1e-9, "{}", pi.max());
        assert!(v.unwrap().max() < 1e-9);
        // A network that reads nothing: zero everywhere, on any image.
        let space = Space::Image {
            height: 8,
            width: 8,
            channels: 3,
        };
        let mut blind = agent_reading(&space, &[]);
        let obs = (Tensor::rand([1, 8, 8, 3], (Kind::Float, Device::Cpu)) * 255.0).round();
        let taken = act(&mut *blind, &obs);
        let (pi, _) =
            perturbation_saliency(&*blind, &obs, &taken, &Perturbation::default()).unwrap();
        assert_eq!(pi.max(), 0.0);
        let g = gradient_saliency(&*blind, &obs, &taken, ChannelReduce::Max).unwrap();
        assert_eq!(g[0].max(), 0.0);
        let mut f = Frame::filled(16, 16, [10, 20, 30]);
        let before = f.clone();
        overlay(
            &mut f,
            &pi,
            &Overlay {
                channel: 2,
                constant: 200.0,
                sigma: Some(1.0),
            },
        )
        .unwrap();
        assert_eq!(f, before);
    }

    #[test]
    fn the_overlay_adds_the_normalised_map_to_one_channel() {
        let map = SaliencyMap {
            width: 2,
            height: 2,
            values: vec![0.0, 0.0, 0.0, 4.0],
        };
        let mut f = Frame::filled(4, 4, [10, 20, 30]);
        overlay(
            &mut f,
            &map,
            &Overlay {
                channel: 0,
                constant: 100.0,
                sigma: None,
            },
        )
        .unwrap();
        // The bottom-right quarter carries the map's peak: +100 on red there, green
        // and blue untouched everywhere, the top-left corner unchanged.
        assert_eq!(f.pixel(3, 3), [110, 20, 30]);
        assert_eq!(f.pixel(0, 0), [10, 20, 30]);
        assert!(f.rgb.chunks(3).all(|p| p[1] == 20 && p[2] == 30));
        assert!(overlay(
            &mut f,
            &map,
            &Overlay {
                channel: 3,
                constant: 1.0,
                sigma: None
            }
        )
        .is_err());
        let k = kernel(3.0);
        assert_eq!(k.len(), 25);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
