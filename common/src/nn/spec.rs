//! [`ModelSpec`]: what network to build, as the learner tells its actors (JSON).

use serde::{Deserialize, Serialize};

use super::{NnError, NnResult};
use crate::env::Space;

/// The torso of the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelKind {
    /// IMPALA CNN (Espeholt et al. 2018), as used for Procgen by Cobbe et al. 2020: per
    /// depth a 3x3 conv, a 3x3 stride-2 max-pool and two residual blocks; then ReLU, a
    /// `fc`-unit linear layer and ReLU. Shared by the actor and critic heads.
    ImpalaCnn { depths: Vec<usize>, fc: usize },
    /// Nature DQN encoder (Mnih et al. 2015): 32 8x8/4, 64 4x4/2, 64 3x3/1 convs, then a
    /// `fc`-unit linear layer; ReLU everywhere. Shared by both heads.
    NatureCnn { fc: usize },
    /// Separate actor and critic MLPs with tanh hidden layers (CleanRL `ppo.py` and
    /// `ppo_continuous_action.py`).
    Mlp { hidden: Vec<usize> },
}

impl ModelKind {
    /// The IMPALA CNN of Cobbe et al. 2020: depths [16, 32, 32], 256 units.
    pub fn impala() -> Self {
        ModelKind::ImpalaCnn {
            depths: vec![16, 32, 32],
            fc: 256,
        }
    }

    /// The 64-64 tanh MLP of CleanRL.
    pub fn mlp64() -> Self {
        ModelKind::Mlp {
            hidden: vec![64, 64],
        }
    }
}

/// The action distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionHead {
    /// One of `n` actions; actions are `i64` of shape [B].
    Categorical { n: usize },
    /// Diagonal Gaussian with a state-independent log-std parameter (CleanRL
    /// continuous PPO); actions are `f32` of shape [B, dim], unbounded (envs clip).
    Gaussian { dim: usize },
}

/// A network: torso, observation layout and action head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub kind: ModelKind,
    /// Shape of one observation as the env produces it (HWC for images).
    pub obs_shape: Vec<usize>,
    /// Observations are `u8` images: converted to float and divided by 255 inside the
    /// network, and permuted HWC -> CHW for the CNN torsos.
    pub obs_u8: bool,
    pub action: ActionHead,
}

/// Upper bound on any single dimension of a spec, to refuse absurd specs from a peer
/// before allocating.
const MAX_DIM: usize = 1 << 20;

impl ModelSpec {
    /// The spec for an env's observation and action spaces.
    pub fn for_spaces(kind: ModelKind, obs: &Space, action: &Space) -> NnResult<ModelSpec> {
        let (obs_shape, obs_u8) = match obs {
            Space::Image {
                height,
                width,
                channels,
            } => (vec![*height, *width, *channels], true),
            Space::Box { shape, .. } => (shape.clone(), false),
            other => {
                return Err(NnError::BadSpec(format!(
                    "observation space {} is not supported by the policy networks",
                    other.describe()
                )))
            }
        };
        let action = match action {
            Space::Discrete { n } => ActionHead::Categorical { n: *n },
            Space::Box { shape, .. } => ActionHead::Gaussian {
                dim: shape.iter().product(),
            },
            other => {
                return Err(NnError::BadSpec(format!(
                    "action space {} is not supported by the policy networks",
                    other.describe()
                )))
            }
        };
        let spec = ModelSpec {
            kind,
            obs_shape,
            obs_u8,
            action,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks that a network can be built from this spec (it may come from a peer).
    pub fn validate(&self) -> NnResult<()> {
        let bad = |m: String| Err(NnError::BadSpec(m));
        if self.obs_shape.is_empty() || self.obs_shape.len() > 4 {
            return bad(format!(
                "observation shape {:?} must have 1 to 4 dimensions",
                self.obs_shape
            ));
        }
        if self.obs_shape.iter().any(|&d| d == 0 || d > MAX_DIM) || self.obs_len() > MAX_DIM * 4 {
            return bad(format!(
                "observation shape {:?} has an empty or oversized dimension",
                self.obs_shape
            ));
        }
        match &self.action {
            ActionHead::Categorical { n } if *n == 0 || *n > MAX_DIM => {
                return bad(format!("categorical head with {n} actions"))
            }
            ActionHead::Gaussian { dim } if *dim == 0 || *dim > MAX_DIM => {
                return bad(format!("gaussian head with {dim} dimensions"))
            }
            _ => {}
        }
        match &self.kind {
            ModelKind::ImpalaCnn { depths, fc } => {
                self.check_image("impala_cnn")?;
                if depths.is_empty() || depths.iter().any(|&d| d == 0 || d > 4096) {
                    return bad(format!("impala_cnn depths {depths:?}"));
                }
                if *fc == 0 || *fc > 65536 {
                    return bad(format!("impala_cnn fc {fc}"));
                }
            }
            ModelKind::NatureCnn { fc } => {
                self.check_image("nature_cnn")?;
                let (h, w) = (self.obs_shape[0], self.obs_shape[1]);
                if h < 36 || w < 36 {
                    return bad(format!(
                        "nature_cnn needs images of at least 36x36, got {h}x{w}"
                    ));
                }
                if *fc == 0 || *fc > 65536 {
                    return bad(format!("nature_cnn fc {fc}"));
                }
            }
            ModelKind::Mlp { hidden } => {
                if hidden.iter().any(|&h| h == 0 || h > 65536) {
                    return bad(format!("mlp hidden sizes {hidden:?}"));
                }
            }
        }
        Ok(())
    }

    fn check_image(&self, what: &str) -> NnResult<()> {
        if self.obs_shape.len() != 3 {
            return Err(NnError::BadSpec(format!(
                "{what} needs HWC image observations, got shape {:?}",
                self.obs_shape
            )));
        }
        Ok(())
    }

    /// Elements of one observation.
    pub fn obs_len(&self) -> usize {
        self.obs_shape.iter().product()
    }

    /// Elements of one action in a flat buffer (1 for categorical).
    pub fn action_len(&self) -> usize {
        match self.action {
            ActionHead::Categorical { .. } => 1,
            ActionHead::Gaussian { dim } => dim,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_spaces_and_json_round_trip() {
        let obs = Space::Image {
            height: 64,
            width: 64,
            channels: 3,
        };
        let spec =
            ModelSpec::for_spaces(ModelKind::impala(), &obs, &Space::Discrete { n: 15 }).unwrap();
        assert_eq!(spec.obs_shape, vec![64, 64, 3]);
        assert!(spec.obs_u8);
        assert_eq!(spec.action, ActionHead::Categorical { n: 15 });
        let json = serde_json::to_string(&spec).unwrap();
        let back: ModelSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);

        let obs = Space::uniform_box(&[11], -1.0, 1.0);
        let act = Space::uniform_box(&[3], -1.0, 1.0);
        let spec = ModelSpec::for_spaces(ModelKind::mlp64(), &obs, &act).unwrap();
        assert_eq!(spec.action, ActionHead::Gaussian { dim: 3 });
        assert!(!spec.obs_u8);
    }

    #[test]
    fn bad_specs_are_errors() {
        let vec_obs = Space::uniform_box(&[4], -1.0, 1.0);
        let d = Space::Discrete { n: 2 };
        assert!(ModelSpec::for_spaces(ModelKind::impala(), &vec_obs, &d).is_err());
        assert!(ModelSpec::for_spaces(ModelKind::mlp64(), &d, &d).is_err());
        assert!(
            ModelSpec::for_spaces(ModelKind::mlp64(), &vec_obs, &Space::Discrete { n: 0 }).is_err()
        );
        let small = Space::Image {
            height: 16,
            width: 16,
            channels: 3,
        };
        assert!(ModelSpec::for_spaces(ModelKind::NatureCnn { fc: 512 }, &small, &d).is_err());
        assert!(serde_json::from_str::<ModelSpec>(
            r#"{"kind":{"type":"mlp","hidden":[8]},"obs_shape":[4],"obs_u8":false,"action":{"type":"categorical","n":2},"extra":1}"#
        )
        .is_err());
    }
}
