//! The run config: one TOML file under `configs/` plus dotted overrides. The learner
//! owns it; actors receive what they need when they register.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::eval::EvalConfig;
use crate::mpdqn::MpdqnConfig;
use crate::ppo::PpoConfig;
use crate::sac::SacConfig;

/// The algorithm a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Ppo,
    Sac,
    Mpdqn,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Ppo => "ppo",
            Algorithm::Sac => "sac",
            Algorithm::Mpdqn => "mpdqn",
        }
    }

    /// Off-policy algorithms train from a replay buffer of transitions.
    pub fn off_policy(self) -> bool {
        matches!(self, Algorithm::Sac | Algorithm::Mpdqn)
    }
}

/// Everything a run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub algorithm: Algorithm,
    pub run: RunSection,
    pub env: EnvSection,
    pub rollout: RolloutSection,
    pub learner: LearnerSection,
    pub model: ModelSection,
    pub eval: EvalConfig,
    pub ppo: PpoConfig,
    pub sac: SacConfig,
    pub mpdqn: MpdqnConfig,
}

/// The run as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    /// Run id; empty: `<algorithm>-<env>-<timestamp>`.
    pub name: String,
    /// Parent folder of run directories.
    pub dir: String,
    pub seed: u64,
    /// Env steps to train on before stopping (0 = until stopped).
    pub total_steps: u64,
    /// Checkpoint every this many updates (and at exit).
    pub checkpoint_every: u64,
    /// Seconds between console status lines.
    pub status_every_secs: f64,
    /// Finished episodes averaged in the logged episode return and length.
    pub return_window: usize,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            name: String::new(),
            dir: "runs".into(),
            seed: 1,
            total_steps: 25_000_000,
            checkpoint_every: 50,
            status_every_secs: 2.0,
            return_window: 100,
        }
    }
}

/// The environments every actor runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvSection {
    /// Env id, e.g. `procgen:starpilot?distribution_mode=easy`, `Hopper-v5`.
    pub id: String,
    /// Envs per actor.
    pub num_envs: usize,
    /// Env worker threads per actor.
    pub threads: usize,
}

impl Default for EnvSection {
    fn default() -> Self {
        EnvSection {
            id: "procgen:starpilot?distribution_mode=easy".into(),
            num_envs: 32,
            threads: 2,
        }
    }
}

/// How actors cut and send trajectories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutSection {
    /// Steps per chunk (T).
    pub chunk_steps: usize,
    /// Chunks an actor may have sent but not yet had acknowledged.
    pub max_inflight: usize,
    /// Chunks acted on by weights more than this many versions old are dropped.
    pub max_policy_lag: u64,
}

impl Default for RolloutSection {
    fn default() -> Self {
        RolloutSection {
            chunk_steps: 64,
            max_inflight: 2,
            max_policy_lag: 2,
        }
    }
}

/// The learner process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearnerSection {
    /// gRPC address to listen on.
    pub listen: String,
    /// Prometheus `/metrics` address.
    pub metrics_listen: String,
    /// `auto` (CUDA when present), `cpu` or `cuda`.
    pub device: String,
    /// Capacity of the queue between the gRPC handlers and the training thread.
    pub queue_chunks: usize,
    /// Token actors must present; empty: none (then `VOLLEY_AUTH_TOKEN` of the
    /// learner's environment, if set). Never written to the run directory.
    pub auth_token: String,
    /// Torch intra-op threads on CPU (0: torch's default).
    pub torch_threads: usize,
    /// Take chunks and train on nothing: a transport benchmark's learner.
    pub ingest_only: bool,
}

impl Default for LearnerSection {
    fn default() -> Self {
        LearnerSection {
            listen: "0.0.0.0:50051".into(),
            metrics_listen: "0.0.0.0:9100".into(),
            device: "auto".into(),
            queue_chunks: 16,
            auth_token: String::new(),
            torch_threads: 0,
            ingest_only: false,
        }
    }
}

/// The policy network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// `auto` (IMPALA CNN for images, MLP for vectors), `impala_cnn`, `nature_cnn`, `mlp`.
    pub kind: String,
    /// MLP hidden layer widths.
    pub hidden: Vec<usize>,
    /// IMPALA CNN stack depths.
    pub cnn_depths: Vec<usize>,
    /// Width of the CNNs' fully connected layer.
    pub fc: usize,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            kind: "auto".into(),
            hidden: vec![64, 64],
            cnn_depths: vec![16, 32, 32],
            fc: 256,
        }
    }
}

impl RunConfig {
    /// Checks what serde cannot: parseable addresses and env id, sizes at least 1.
    pub fn validate(&self) -> Result<(), String> {
        self.env
            .id
            .parse::<volley_common::env::EnvId>()
            .map_err(|e| format!("env.id: {e}"))?;
        for (k, v) in [
            ("learner.listen", &self.learner.listen),
            ("learner.metrics_listen", &self.learner.metrics_listen),
        ] {
            v.parse::<SocketAddr>()
                .map_err(|e| format!("{k} = '{v}' is not an address like 0.0.0.0:50051: {e}"))?;
        }
        for (k, v) in [
            ("env.num_envs", self.env.num_envs),
            ("env.threads", self.env.threads),
            ("rollout.chunk_steps", self.rollout.chunk_steps),
            ("rollout.max_inflight", self.rollout.max_inflight),
            ("learner.queue_chunks", self.learner.queue_chunks),
            ("run.return_window", self.run.return_window),
            ("eval.episodes", self.eval.episodes),
        ] {
            if v == 0 {
                return Err(format!("{k} must be at least 1"));
            }
        }
        match self.algorithm {
            Algorithm::Ppo => self.ppo.validate().map_err(|e| format!("ppo: {e}"))?,
            Algorithm::Sac => self.sac.validate().map_err(|e| format!("sac: {e}"))?,
            Algorithm::Mpdqn => self.mpdqn.validate().map_err(|e| format!("mpdqn: {e}"))?,
        }
        if !["auto", "cpu", "cuda"].contains(&self.learner.device.as_str()) {
            return Err(format!(
                "learner.device = '{}': expected auto, cpu or cuda",
                self.learner.device
            ));
        }
        if !["auto", "impala_cnn", "nature_cnn", "mlp"].contains(&self.model.kind.as_str()) {
            return Err(format!(
                "model.kind = '{}': expected auto, impala_cnn, nature_cnn or mlp",
                self.model.kind
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn shipped_configs_parse_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        for (name, algorithm) in [
            ("ppo_procgen.toml", Algorithm::Ppo),
            ("ppo_mujoco.toml", Algorithm::Ppo),
            ("ppo_cartpole.toml", Algorithm::Ppo),
            ("sac_mujoco.toml", Algorithm::Sac),
            ("mpdqn_platform.toml", Algorithm::Mpdqn),
        ] {
            let cfg: RunConfig = volley_common::config::load(Some(&dir.join(name)), &[])
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.algorithm, algorithm, "{name}");
        }
    }

    #[test]
    fn overrides_apply_and_unknown_keys_are_named() {
        let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cfg: RunConfig =
            volley_common::config::load(None, &o(&["ppo.lr=3e-4", "env.id=procgen:bigfish"]))
                .unwrap();
        assert_eq!(cfg.ppo.lr, 3e-4);
        assert_eq!(cfg.env.id, "procgen:bigfish");
        let e = volley_common::config::load::<RunConfig>(None, &o(&["ppo.learning_rate=1"]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown config key 'ppo.learning_rate'");
        let e = volley_common::config::load::<RunConfig>(None, &o(&["envs.id=x"]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown config key 'envs'");
        let bad: RunConfig = volley_common::config::load(None, &o(&["env.id=Hopper-v9"])).unwrap();
        assert!(bad.validate().unwrap_err().contains("unknown env id"));
    }
}
