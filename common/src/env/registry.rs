//! Env ids as users write them, and the one constructor of vector envs.
//!
//! | id | family |
//! |---|---|
//! | `procgen:<game>[?opt=value&...]` | the 16 Procgen games, options as in procgen's Python API |
//! | `Hopper-v5`, `HalfCheetah-v5`, `Ant-v5` | Gymnasium's MuJoCo v5 tasks |
//! | `platform` | the parameterised-action Platform domain |
//! | `CartPole-v1` | classic control, for smoke and learning tests |
//! | `ALE/<Name>-v5[?opt=value&...]` | Atari 2600 games through ALE, Gymnasium's v5 options and the DQN preprocessing ([`super::ale::options`]) |

use std::fmt;
use std::str::FromStr;

use super::ale::{AtariConfig, AtariEnv};
use super::cartpole::CartPole;
use super::mujoco::{MujocoEnv, MujocoTask};
use super::platform::Platform;
use super::procgen::{ProcgenConfig, ProcgenVecEnv, GAMES};
use super::threaded::ThreadedVecEnv;
use super::{Env, EnvError, EnvResult, VecEnv};

/// A parsed env id.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvId {
    Procgen(ProcgenConfig),
    Mujoco(MujocoTask),
    Platform,
    CartPole,
    Atari(AtariConfig),
}

/// Families of envs, for listings and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Procgen,
    Mujoco,
    Platform,
    ClassicControl,
    Atari,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Procgen => "procgen",
            Family::Mujoco => "mujoco",
            Family::Platform => "platform",
            Family::ClassicControl => "classic-control",
            Family::Atari => "atari",
        }
    }
}

impl EnvId {
    /// The names of the observation's features, in order, for vector observations
    /// (empty for images): what feature importance is reported by.
    pub fn feature_names(&self) -> Vec<String> {
        let named = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        match self {
            EnvId::CartPole => named(&super::cartpole::FEATURES),
            EnvId::Platform => named(&super::platform::FEATURES),
            EnvId::Mujoco(task) => super::mujoco::feature_names(*task),
            EnvId::Procgen(_) | EnvId::Atari(_) => Vec::new(),
        }
    }

    /// Frames per second at which an episode plays in real time: Gymnasium's
    /// `metadata["render_fps"]` (CartPole 50; MuJoCo `1 / dt`: Hopper 125,
    /// HalfCheetah and Ant 20), Procgen's 15 (gym3's interactive default) and
    /// Platform's 2 (one frame per action, each about half a second of the game) and
    /// Atari's 60 frames a second over the frames a step takes (15 for v5).
    pub fn render_fps(&self) -> f64 {
        match self {
            EnvId::CartPole => 50.0,
            EnvId::Mujoco(task) => match task {
                MujocoTask::Hopper => 125.0,
                _ => 20.0,
            },
            EnvId::Procgen(_) => 15.0,
            EnvId::Platform => 2.0,
            EnvId::Atari(c) => c.steps_per_second(),
        }
    }

    /// Observations that are stacks of this many frames as channels (Atari's
    /// `preprocess=dqn`), newest last: consecutive ones share all but one frame.
    pub fn frame_stack(&self) -> Option<usize> {
        match self {
            EnvId::Atari(c) => c.preprocess.map(|p| p.stack).filter(|&k| k > 1),
            _ => None,
        }
    }

    pub fn family(&self) -> Family {
        match self {
            EnvId::Procgen(_) => Family::Procgen,
            EnvId::Mujoco(_) => Family::Mujoco,
            EnvId::Platform => Family::Platform,
            EnvId::CartPole => Family::ClassicControl,
            EnvId::Atari(_) => Family::Atari,
        }
    }
}

impl fmt::Display for EnvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvId::Procgen(c) => write!(f, "{}", c.to_id_string()),
            EnvId::Mujoco(t) => write!(f, "{}", t.id()),
            EnvId::Platform => write!(f, "platform"),
            EnvId::CartPole => write!(f, "CartPole-v1"),
            EnvId::Atari(c) => write!(f, "{}", c.to_id_string()),
        }
    }
}

/// Every valid id without options, for error messages and listings.
pub fn valid_ids() -> Vec<String> {
    let mut ids: Vec<String> = GAMES.iter().map(|g| format!("procgen:{g}")).collect();
    ids.extend(MujocoTask::ALL.iter().map(|t| t.id().to_string()));
    ids.push("platform".into());
    ids.push("CartPole-v1".into());
    ids.extend(AtariConfig::valid_ids());
    ids
}

impl FromStr for EnvId {
    type Err = EnvError;

    fn from_str(s: &str) -> EnvResult<EnvId> {
        let s = s.trim();
        let (base, query) = match s.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (s, None),
        };
        if let Some(game) = base.strip_prefix("procgen:") {
            return ProcgenConfig::parse(game, query).map(EnvId::Procgen);
        }
        if base.starts_with("ALE/") {
            return AtariConfig::parse(base, query).map(EnvId::Atari);
        }
        let id = match base {
            "platform" => EnvId::Platform,
            "CartPole-v1" => EnvId::CartPole,
            other => match MujocoTask::ALL.iter().find(|t| t.id() == other) {
                Some(t) => EnvId::Mujoco(*t),
                None => {
                    return Err(EnvError::UnknownEnv {
                        id: s.to_string(),
                        valid: valid_ids().join(", "),
                    })
                }
            },
        };
        if query.is_some_and(|q| !q.is_empty()) {
            return Err(EnvError::BadOption {
                id: s.to_string(),
                message: format!("'{base}' takes no options (only procgen and ALE ids do)"),
            });
        }
        Ok(id)
    }
}

/// How many envs to run, on how many threads, and how they draw frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VecEnvOptions {
    pub num_envs: usize,
    /// Worker threads, the caller's included.
    pub threads: usize,
    /// Procgen only: make the games with libenv's `render_human`, so that
    /// [`VecEnv::render`] draws 512x512 frames instead of returning the 64x64 observation
    /// (see [`super::procgen`]). The other envs always draw full-size frames and ignore it.
    /// Off by default ([`VecEnvOptions::new`]).
    pub render: bool,
}

impl VecEnvOptions {
    /// `num_envs` envs on `threads` threads, `render` off.
    pub fn new(num_envs: usize, threads: usize) -> Self {
        VecEnvOptions {
            num_envs,
            threads,
            render: false,
        }
    }
}

fn threaded<E: Env>(envs: Vec<E>, threads: usize) -> EnvResult<Box<dyn VecEnv>> {
    Ok(Box::new(ThreadedVecEnv::new(envs, threads)?))
}

/// Builds the vector env for `id`.
pub fn make_vec_env(id: &EnvId, opts: VecEnvOptions) -> EnvResult<Box<dyn VecEnv>> {
    if opts.num_envs == 0 {
        return Err(EnvError::BadSettings("num_envs must be at least 1".into()));
    }
    if opts.threads == 0 {
        return Err(EnvError::BadSettings("threads must be at least 1".into()));
    }
    let n = opts.num_envs;
    match id {
        EnvId::Procgen(cfg) => Ok(Box::new(ProcgenVecEnv::with_render(
            cfg,
            n,
            opts.threads,
            opts.render,
        )?)),
        EnvId::Mujoco(task) => threaded(MujocoEnv::batch(*task, n)?, opts.threads),
        EnvId::Platform => threaded((0..n).map(|_| Platform::new()).collect(), opts.threads),
        EnvId::CartPole => threaded(vec![CartPole::default(); n], opts.threads),
        EnvId::Atari(cfg) => threaded(AtariEnv::batch(cfg, n)?, opts.threads),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_print_back() {
        for id in [
            "Hopper-v5",
            "HalfCheetah-v5",
            "Ant-v5",
            "platform",
            "CartPole-v1",
        ] {
            assert_eq!(id.parse::<EnvId>().unwrap().to_string(), id);
        }
        let p: EnvId = "procgen:starpilot".parse().unwrap();
        assert_eq!(p.family(), Family::Procgen);
    }

    #[test]
    fn unknown_id_lists_the_valid_ones() {
        let e = "Hopper-v4".parse::<EnvId>().unwrap_err().to_string();
        assert!(e.contains("unknown env id 'Hopper-v4'"), "{e}");
        for v in ["Hopper-v5", "procgen:starpilot", "platform", "CartPole-v1"] {
            assert!(e.contains(v), "{e} should list {v}");
        }
    }

    #[test]
    fn options_on_non_procgen_ids_are_rejected() {
        let e = "CartPole-v1?x=1".parse::<EnvId>().unwrap_err().to_string();
        assert!(e.contains("takes no options"), "{e}");
    }
}
