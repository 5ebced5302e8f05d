//! The run config: one TOML file under `configs/` plus dotted overrides. The learner
//! owns it; actors receive what they need when they register.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Table;
use volley_common::algorithms::{is_algorithm, ALGORITHMS};
use volley_common::config::{apply_override, read_file, ConfigError};
use volley_common::reward::RewardConfig;

use crate::eval::EvalConfig;

/// Everything a run needs. The shared sections are fields; the algorithm's own
/// section (`[ppo]`, `[sac]`, ...) is kept as TOML in `sections` and read by
/// the algorithm's module (`crate::algo::<name>`), which also fills in its defaults
/// for the resolved config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunConfig {
    /// The algorithm this run trains: a name of `volley_common::algorithms`.
    pub algorithm: String,
    pub run: RunSection,
    pub env: EnvSection,
    pub rollout: RolloutSection,
    pub learner: LearnerSection,
    pub model: ModelSection,
    pub eval: EvalConfig,
    pub reward: RewardConfig,
    pub checkpoint: CheckpointSection,
    pub tracking: TrackingSection,
    pub imitation: ImitationSection,
    /// The algorithm's section, by algorithm name (at most the run's own).
    #[serde(flatten)]
    pub sections: Table,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            algorithm: "ppo".into(),
            run: RunSection::default(),
            env: EnvSection::default(),
            rollout: RolloutSection::default(),
            learner: LearnerSection::default(),
            model: ModelSection::default(),
            eval: EvalConfig::default(),
            reward: RewardConfig::default(),
            checkpoint: CheckpointSection::default(),
            tracking: TrackingSection::default(),
            imitation: ImitationSection::default(),
            sections: Table::new(),
        }
    }
}

impl RunConfig {
    /// Loads `path` (or the defaults) and applies the dotted overrides.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<RunConfig, ConfigError> {
        let mut table = match path {
            Some(p) => read_file(p)?,
            None => Table::new(),
        };
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        RunConfig::from_table(table)
    }

    /// A config from a TOML table: the shared sections are checked key by key (an
    /// unknown key is an error naming its dotted path); the algorithms' sections are
    /// kept for their modules.
    pub fn from_table(mut table: Table) -> Result<RunConfig, ConfigError> {
        let mut sections = Table::new();
        for name in ALGORITHMS {
            if let Some(v) = table.remove(*name) {
                if !v.is_table() {
                    return Err(ConfigError::Invalid(format!(
                        "'{name}' must be a section ([{name}]), not a value"
                    )));
                }
                sections.insert((*name).to_string(), v);
            }
        }
        let mut cfg: RunConfig = volley_common::config::from_table(table)?;
        // Keys no shared section has land in the flattened table: unknown keys.
        if let Some(k) = cfg.sections.keys().next() {
            return Err(ConfigError::UnknownKey(k.clone()));
        }
        cfg.sections = sections;
        Ok(cfg)
    }

    /// The algorithm's own section as given (empty when absent).
    pub fn algorithm_section(&self) -> Table {
        match self.sections.get(&self.algorithm) {
            Some(toml::Value::Table(t)) => t.clone(),
            _ => Table::new(),
        }
    }
}

/// Where a run is mirrored while it trains, besides its directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackingSection {
    /// Write TensorBoard event files into the run directory.
    pub tensorboard: bool,
    /// The MLflow tracking server the run is mirrored to (`http://host:5000`); empty
    /// for none. `MLFLOW_TRACKING_URI` is used when this is empty.
    pub mlflow_uri: String,
    /// The MLflow experiment the run goes into (created if missing).
    pub mlflow_experiment: String,
    /// Draw the run's figures into `plots/` of its run directory while it trains and
    /// at the end.
    pub plots: bool,
    /// Redraw them every this many evaluations (every 100 metrics lines when
    /// evaluation is off).
    pub plot_every_evals: u64,
    /// Runs or seed groups (`run.group`) of `run.dir`, by id, name or group name,
    /// drawn beside this run in `plots/compare` while it trains. One name may be
    /// given as a plain string (`tracking.compare=ppo-base`).
    #[serde(deserialize_with = "one_or_many")]
    pub compare: Vec<String>,
}

/// A list of strings, or one string as a list of one.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) if s.is_empty() => Vec::new(),
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl Default for TrackingSection {
    fn default() -> Self {
        TrackingSection {
            tensorboard: true,
            mlflow_uri: String::new(),
            mlflow_experiment: "volley".into(),
            plots: true,
            plot_every_evals: 5,
            compare: Vec::new(),
        }
    }
}

impl TrackingSection {
    /// The tracking server to mirror to: `mlflow_uri`, else `MLFLOW_TRACKING_URI`.
    pub fn mlflow(&self) -> Option<String> {
        let uri = if self.mlflow_uri.is_empty() {
            std::env::var("MLFLOW_TRACKING_URI").unwrap_or_default()
        } else {
            self.mlflow_uri.clone()
        };
        let uri = uri.trim().to_string();
        (!uri.is_empty()).then_some(uri)
    }
}

/// Learning from an expert: another run's policy and the demonstrations it recorded
/// (`volley-runs play RUN --record FILE`). Behaviour cloning trains on `dataset`;
/// DAgger asks `expert` for its labels. Whichever algorithm a run trains, a named
/// expert is evaluated at the start (the `eval` settings) and its return logged as the
/// reference the run is measured against.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImitationSection {
    /// The expert: a run id, name, unique prefix of either, or run directory (looked
    /// up under `run.dir`); empty: none.
    pub expert: String,
    /// Which of its checkpoints: `best` (empty means best), `latest` or an update
    /// number.
    pub expert_checkpoint: String,
    /// Demonstrations: a transitions file (`volley_common::dataset`); empty: none.
    pub dataset: String,
}

/// Checkpoints: how many are kept and what goes into them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointSection {
    /// Checkpoints kept (the newest); older ones are removed.
    pub keep: usize,
    /// Keep the replay buffer in checkpoints while its filled part fits this many
    /// bytes (0: never); a larger buffer is left out, said in the log, and refills
    /// after a resume.
    pub max_replay_bytes: u64,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection {
            keep: 3,
            max_replay_bytes: 4 << 30,
        }
    }
}

/// The run as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    /// The run's name, also its directory's; empty: `<algorithm>-<env>-<yyyymmdd-hhmmss>`.
    /// Each run also gets a unique id (`run.json`).
    pub name: String,
    /// The seed group the run belongs to (`deploy/local.sh --seeds N` sets it), so its
    /// runs can be compared as one; empty: none.
    pub group: String,
    /// Parent folder of run directories.
    pub dir: String,
    pub seed: u64,
    /// Env steps to train on before stopping (0 = until stopped).
    pub total_steps: u64,
    /// Checkpoint every this many weights versions (and at exit; 0: only at exit).
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
            group: String::new(),
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

impl ModelSection {
    /// The network kind for observations of `obs`: `auto` is the IMPALA CNN for
    /// images and an MLP for vectors.
    pub fn kind_for(&self, obs: &volley_common::env::Space) -> volley_common::nn::ModelKind {
        use volley_common::nn::ModelKind;
        let image = matches!(obs, volley_common::env::Space::Image { .. });
        match (self.kind.as_str(), image) {
            ("impala_cnn", _) | ("auto", true) => ModelKind::ImpalaCnn {
                depths: self.cnn_depths.clone(),
                fc: self.fc,
            },
            ("nature_cnn", _) => ModelKind::NatureCnn { fc: self.fc },
            _ => ModelKind::Mlp {
                hidden: self.hidden.clone(),
            },
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
        if !is_algorithm(&self.algorithm) {
            return Err(format!(
                "algorithm: {}",
                volley_common::algorithms::unknown(&self.algorithm)
            ));
        }
        if let Some(other) = self.sections.keys().find(|k| **k != self.algorithm) {
            return Err(format!(
                "[{other}] configures {other}, but this run trains {}: remove the section or set algorithm = \"{other}\"",
                self.algorithm
            ));
        }
        if self.tracking.plot_every_evals == 0 {
            return Err("tracking.plot_every_evals must be at least 1".into());
        }
        if let Some(uri) = self.tracking.mlflow() {
            if !(uri.starts_with("http://") || uri.starts_with("https://")) {
                return Err(format!(
                    "tracking.mlflow_uri (or MLFLOW_TRACKING_URI) = '{uri}': expected the http:// or https:// address of an MLflow tracking server, like http://127.0.0.1:5000"
                ));
            }
        }
        if !self.imitation.expert_checkpoint.is_empty() {
            self.imitation
                .expert_checkpoint
                .parse::<crate::checkpoint::Which>()
                .map_err(|e| format!("imitation.expert_checkpoint: {e}"))?;
        }
        if self.checkpoint.keep == 0 {
            return Err("checkpoint.keep must be at least 1".into());
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
        let mut seen = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let cfg = RunConfig::load(Some(&path), &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
            cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            // The file is named after its algorithm.
            assert!(name.starts_with(&format!("{}_", cfg.algorithm)), "{name}");
            seen.insert(cfg.algorithm.clone());
        }
        // Every algorithm ships a config.
        for a in ALGORITHMS {
            assert!(seen.contains(*a), "no config for {a}");
        }
    }

    #[test]
    fn overrides_apply_and_unknown_keys_are_named() {
        let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cfg = RunConfig::load(None, &o(&["ppo.lr=3e-4", "env.id=procgen:bigfish"])).unwrap();
        assert_eq!(cfg.algorithm_section()["lr"].as_float(), Some(3e-4));
        assert_eq!(cfg.env.id, "procgen:bigfish");
        cfg.validate().unwrap();
        let e = RunConfig::load(None, &o(&["envs.id=x"]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown config key 'envs'");
        let e = RunConfig::load(None, &o(&["run.seeed=3"]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown config key 'run.seeed'");
        let e = RunConfig::load(None, &o(&["ppo=3"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be a section"), "{e}");
        let bad = RunConfig::load(None, &o(&["env.id=Hopper-v9"])).unwrap();
        assert!(bad.validate().unwrap_err().contains("unknown env id"));
        // A section of another algorithm than the run's is refused, by name.
        let other = RunConfig::load(None, &o(&["sac.tau=0.01"])).unwrap();
        let e = other.validate().unwrap_err();
        assert!(
            e.contains("[sac] configures sac, but this run trains ppo"),
            "{e}"
        );
        let e = RunConfig::load(None, &o(&["algorithm=dqn9"]))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.contains("unknown algorithm 'dqn9'"), "{e}");
    }

    #[test]
    fn the_resolved_config_round_trips_through_toml() {
        let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cfg = RunConfig::load(
            None,
            &o(&["algorithm=sac", "sac.tau=0.01", "reward.death_penalty=-1"]),
        )
        .unwrap();
        let text = toml::to_string_pretty(&cfg).unwrap();
        let back = RunConfig::from_table(text.parse().unwrap()).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.reward.death_penalty, -1.0);
    }
}
