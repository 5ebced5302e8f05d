//! Observation and action spaces, and the validation of action batches against them.

use serde::Serialize;

use super::{EnvError, EnvResult};

/// The space of one environment's observations or actions.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Space {
    /// One integer in `0..n`.
    Discrete { n: usize },
    /// A dense `f32` vector (row-major `shape`) with per-element bounds; unbounded
    /// elements use infinities.
    Box {
        shape: Vec<usize>,
        low: Vec<f32>,
        high: Vec<f32>,
    },
    /// A `u8` image stored height x width x channels (HWC).
    Image {
        height: usize,
        width: usize,
        channels: usize,
    },
    /// A discrete choice among `params.len()` actions, each with its own continuous
    /// parameters (Masson et al. 2016). Batches carry the parameters of every choice
    /// concatenated in choice order; the env reads only the chosen slice.
    Parameterised { params: Vec<ParamBox> },
}

/// Bounds of the continuous parameters of one choice of a parameterised space.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamBox {
    /// Name of the choice as the env documents it (`run`, `hop`, `leap`).
    pub name: String,
    pub low: Vec<f32>,
    pub high: Vec<f32>,
}

impl Space {
    /// A box with the same bounds on every element.
    pub fn uniform_box(shape: &[usize], low: f32, high: f32) -> Space {
        let n = shape.iter().product();
        Space::Box {
            shape: shape.to_vec(),
            low: vec![low; n],
            high: vec![high; n],
        }
    }

    /// Number of scalar elements of one value of this space in a flat buffer: the
    /// number of `f32` (box, parameterised: all parameters), `u8` (image) or one for
    /// discrete.
    pub fn flat_len(&self) -> usize {
        match self {
            Space::Discrete { .. } => 1,
            Space::Box { shape, .. } => shape.iter().product(),
            Space::Image {
                height,
                width,
                channels,
            } => height * width * channels,
            Space::Parameterised { params } => params.iter().map(|p| p.low.len()).sum(),
        }
    }

    /// Offset of each choice's parameters in the concatenated parameter vector.
    pub fn param_offsets(&self) -> Vec<usize> {
        match self {
            Space::Parameterised { params } => params
                .iter()
                .scan(0, |acc, p| {
                    let o = *acc;
                    *acc += p.low.len();
                    Some(o)
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Short human form, for `volley-actor envs` and errors.
    pub fn describe(&self) -> String {
        match self {
            Space::Discrete { n } => format!("Discrete({n})"),
            Space::Box { shape, low, high } => {
                let lo = low.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = high.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                format!("Box({shape:?}, [{}, {}])", short(lo), short(hi))
            }
            Space::Image {
                height,
                width,
                channels,
            } => format!("Image({height}x{width}x{channels} u8)"),
            Space::Parameterised { params } => {
                let parts: Vec<String> = params
                    .iter()
                    .map(|p| format!("{}{:?}..{:?}", p.name, p.low, p.high))
                    .collect();
                format!("Parameterised({})", parts.join(", "))
            }
        }
    }
}

/// A batch of actions, one per env, in flat buffers.
#[derive(Debug, Clone, Copy)]
pub enum Actions<'a> {
    /// One index per env.
    Discrete(&'a [i64]),
    /// `num_envs * dim` values, env-major.
    Continuous(&'a [f32]),
    /// One choice per env and `num_envs * total_params` parameters (every choice's
    /// parameters concatenated, as in [`Space::Parameterised`]).
    Parameterised {
        choice: &'a [i64],
        params: &'a [f32],
    },
}

/// One env's action, as a single env sees it.
#[derive(Debug, Clone, Copy)]
pub enum ActionRef<'a> {
    Discrete(i64),
    Continuous(&'a [f32]),
    /// The chosen index and the parameters of *every* choice.
    Parameterised {
        choice: usize,
        params: &'a [f32],
    },
}

impl<'a> Actions<'a> {
    /// The action of env `i`; call only after [`Actions::validate`].
    pub fn get(&self, i: usize, dim: usize) -> ActionRef<'a> {
        match *self {
            Actions::Discrete(a) => ActionRef::Discrete(a[i]),
            Actions::Continuous(a) => ActionRef::Continuous(&a[i * dim..(i + 1) * dim]),
            Actions::Parameterised { choice, params } => ActionRef::Parameterised {
                choice: choice[i] as usize,
                params: &params[i * dim..(i + 1) * dim],
            },
        }
    }

    /// Checks the whole batch against `space` before any env sees it: the right
    /// kind and length, indices in range, every value finite. Continuous values
    /// outside the bounds are allowed (envs clip them, as their references do).
    pub fn validate(&self, space: &Space, num_envs: usize) -> EnvResult<()> {
        let bad = |msg: String| Err(EnvError::InvalidAction(msg));
        match (self, space) {
            (Actions::Discrete(a), Space::Discrete { n }) => {
                if a.len() != num_envs {
                    return bad(format!(
                        "expected {num_envs} discrete actions (one per env), got {}",
                        a.len()
                    ));
                }
                if let Some((i, v)) = a.iter().enumerate().find(|(_, &v)| v < 0 || v >= *n as i64) {
                    return bad(format!(
                        "action {v} of env {i} is out of range: valid actions are 0..{n}"
                    ));
                }
                Ok(())
            }
            (Actions::Continuous(a), Space::Box { shape, .. }) => {
                let dim: usize = shape.iter().product();
                if a.len() != num_envs * dim {
                    return bad(format!(
                        "expected {} continuous values ({num_envs} envs x {dim}), got {}",
                        num_envs * dim,
                        a.len()
                    ));
                }
                check_finite(a, dim)
            }
            (Actions::Parameterised { choice, params }, Space::Parameterised { params: boxes }) => {
                let dim = space.flat_len();
                if choice.len() != num_envs || params.len() != num_envs * dim {
                    return bad(format!(
                        "expected {num_envs} choices and {} parameters ({num_envs} envs x {dim}), got {} and {}",
                        num_envs * dim,
                        choice.len(),
                        params.len()
                    ));
                }
                let k = boxes.len() as i64;
                if let Some((i, v)) = choice.iter().enumerate().find(|(_, &v)| v < 0 || v >= k) {
                    return bad(format!(
                        "choice {v} of env {i} is out of range: valid choices are 0..{k}"
                    ));
                }
                check_finite(params, dim)
            }
            (a, s) => bad(format!(
                "a {} action batch does not fit the action space {}",
                a.kind(),
                s.describe()
            )),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Actions::Discrete(_) => "discrete",
            Actions::Continuous(_) => "continuous",
            Actions::Parameterised { .. } => "parameterised",
        }
    }
}

/// A bound as people read it: `inf`, `3.4e38`, `0.21`.
fn short(v: f32) -> String {
    if v.is_finite() && v.abs() >= 1e6 {
        format!("{v:.1e}")
    } else {
        format!("{v}")
    }
}

fn check_finite(values: &[f32], dim: usize) -> EnvResult<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(p) => Err(EnvError::InvalidAction(format!(
            "action value {} of env {} (element {}) is not finite",
            values[p],
            p / dim.max(1),
            p % dim.max(1)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discrete_out_of_range_and_wrong_length_are_rejected() {
        let s = Space::Discrete { n: 2 };
        assert!(Actions::Discrete(&[0, 1]).validate(&s, 2).is_ok());
        let e = Actions::Discrete(&[0, 2]).validate(&s, 2).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        assert!(Actions::Discrete(&[-1, 0]).validate(&s, 2).is_err());
        assert!(Actions::Discrete(&[0]).validate(&s, 2).is_err());
        assert!(Actions::Continuous(&[0.0, 0.0]).validate(&s, 2).is_err());
    }

    #[test]
    fn continuous_non_finite_is_rejected_but_out_of_bounds_is_not() {
        let s = Space::uniform_box(&[2], -1.0, 1.0);
        assert!(Actions::Continuous(&[5.0, -5.0]).validate(&s, 1).is_ok());
        let e = Actions::Continuous(&[0.0, f32::NAN])
            .validate(&s, 1)
            .unwrap_err();
        assert!(e.to_string().contains("not finite"), "{e}");
        assert!(Actions::Continuous(&[f32::INFINITY, 0.0])
            .validate(&s, 1)
            .is_err());
        assert!(Actions::Continuous(&[0.0; 3]).validate(&s, 1).is_err());
    }

    #[test]
    fn parameterised_layout_and_checks() {
        let pb = |n: &str, hi: f32| ParamBox {
            name: n.into(),
            low: vec![0.0],
            high: vec![hi],
        };
        let s = Space::Parameterised {
            params: vec![pb("a", 1.0), pb("b", 2.0), pb("c", 3.0)],
        };
        assert_eq!(s.flat_len(), 3);
        assert_eq!(s.param_offsets(), vec![0, 1, 2]);
        let ok = Actions::Parameterised {
            choice: &[2],
            params: &[0.0, 1.0, 2.0],
        };
        assert!(ok.validate(&s, 1).is_ok());
        match ok.get(0, 3) {
            ActionRef::Parameterised { choice, params } => {
                assert_eq!(choice, 2);
                assert_eq!(params, &[0.0, 1.0, 2.0]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let bad = Actions::Parameterised {
            choice: &[3],
            params: &[0.0; 3],
        };
        assert!(bad.validate(&s, 1).is_err());
        let nan = Actions::Parameterised {
            choice: &[0],
            params: &[0.0, f32::NAN, 0.0],
        };
        assert!(nan.validate(&s, 1).is_err());
    }
}
