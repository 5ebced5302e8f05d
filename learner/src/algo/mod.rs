//! The learner side of an algorithm, behind one trait.
//!
//! An [`Algorithm`] owns its networks, targets and optimizers on the training device.
//! The one training loop ([`crate::training`]) feeds it from the data source it
//! names ([`Source`]): on-policy rollouts (whole chunks acted by recent weights, with
//! advantages computed, [`crate::rollout`]), replay (transitions sampled from a
//! buffer at a replay ratio, [`crate::replay`]), an expert's demonstrations
//! ([`crate::demos`]) or the actors' states labelled by an expert. Everything else
//! (the queue, policy lag, episode statistics, the status line, `metrics.jsonl`,
//! weight publishing, evaluation, checkpoints) is the loop's, the same for every
//! algorithm.
//!
//! Each algorithm is one module `algo::<name>`, declared with the list of
//! `volley_common::algorithms`, opening with the paper it implements and its
//! hyperparameters with the paper's defaults, and exposing
//! `build(BuildContext) -> anyhow::Result<Built>`. Its networks and acting live in
//! `volley_common::nn::<name>`. `docs/adding-an-algorithm.md` lists the files a new
//! algorithm touches.

use std::sync::atomic::AtomicBool;

use anyhow::Result;
use tch::Device;
use toml::Table;
use volley_common::config::ConfigError;
use volley_common::env::Space;

use crate::config::RunConfig;
use crate::demos::{AggregateSettings, DemoBatch, DemoSettings};
use crate::replay::{ReplayBatch, ReplaySettings};
use crate::rollout::{RolloutBatch, RolloutSettings};

macro_rules! algorithm_table {
    ($($name:ident),* $(,)?) => {
        $(pub mod $name;)*

        /// Builds the algorithm `ctx.cfg.algorithm` (a name of the list).
        pub fn build(ctx: BuildContext<'_>) -> Result<Built> {
            match ctx.cfg.algorithm.as_str() {
                $(stringify!($name) => $name::build(ctx),)*
                other => anyhow::bail!(volley_common::algorithms::unknown(other)),
            }
        }
    };
}
volley_common::for_each_algorithm!(algorithm_table);

/// What an algorithm is built from.
#[derive(Debug)]
pub struct BuildContext<'a> {
    /// The run's config: the shared sections (model, env, run) and the algorithm's own
    /// section ([`RunConfig::algorithm_section`]).
    pub cfg: &'a RunConfig,
    pub observation_space: &'a Space,
    pub action_space: &'a Space,
    /// Where to train.
    pub device: Device,
}

impl BuildContext<'_> {
    /// The algorithm's section parsed into its config `T` (defaults for missing keys);
    /// an unknown key is named by its dotted path (`ppo.lr`).
    pub fn section<T>(&self) -> Result<T>
    where
        T: serde::de::DeserializeOwned + serde::Serialize + Default,
    {
        let name = &self.cfg.algorithm;
        volley_common::config::from_table(self.cfg.algorithm_section()).map_err(|e| match e {
            ConfigError::UnknownKey(k) => ConfigError::UnknownKey(format!("{name}.{k}")).into(),
            other => anyhow::anyhow!("[{name}]: {other}"),
        })
    }
}

/// A built algorithm and what the run needs to know of it.
pub struct Built {
    pub algorithm: Box<dyn Algorithm>,
    /// The algorithm's resolved section (every key, defaults filled in), written to
    /// the run's `config.toml`.
    pub section: Table,
    /// The network spec actors build their agent from (JSON).
    pub spec_json: String,
    /// The exploration settings actors receive (JSON); empty when there are none.
    pub explore_json: String,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("spec_json", &self.spec_json)
            .field("explore_json", &self.explore_json)
            .finish()
    }
}

/// `config` as a TOML table, for [`Built::section`].
pub fn section_of<T: serde::Serialize>(config: &T) -> Result<Table> {
    match toml::Value::try_from(config)? {
        toml::Value::Table(t) => Ok(t),
        other => anyhow::bail!("an algorithm config encoded as {}", other.type_str()),
    }
}

/// The data source the training loop feeds an algorithm from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// On-policy: whole chunks, dropped when acted more than `rollout.max_policy_lag`
    /// versions ago, with advantages, one update per `batch_steps` env steps.
    Rollouts(RolloutSettings),
    /// Off-policy: transitions in a replay buffer, `replay_ratio` updates per env
    /// step once it holds `learning_starts`.
    Replay(ReplaySettings),
    /// Supervised: minibatches of an expert's demonstrations (`imitation.dataset`),
    /// `updates_per_round` updates a version until `total_updates`; no actors.
    Demos(DemoSettings),
    /// Dataset aggregation: actors roll out, the expert (`imitation.expert`) labels
    /// every state they visit on the learner, and the algorithm trains on minibatches
    /// of all labelled states, `updates_per_iteration` after each iteration's steps.
    Aggregate(AggregateSettings),
}

impl Source {
    /// Whether actors feed this source (a demonstrations run trains alone).
    pub fn takes_actors(&self) -> bool {
        !matches!(self, Source::Demos(_))
    }
}

/// One update's data.
#[derive(Debug)]
pub enum Batch<'a> {
    Rollout(&'a RolloutBatch),
    Replay(&'a ReplayBatch),
    Demos(&'a DemoBatch),
}

impl<'a> Batch<'a> {
    fn kind(&self) -> &'static str {
        match self {
            Batch::Rollout(_) => "a rollout",
            Batch::Replay(_) => "replay",
            Batch::Demos(_) => "demonstrations",
        }
    }

    /// The rollout batch, or an error naming the algorithm that got another kind.
    pub fn rollout(&self, algorithm: &str) -> Result<&'a RolloutBatch> {
        match self {
            Batch::Rollout(b) => Ok(b),
            other => anyhow::bail!("{algorithm} trains on rollouts, got {}", other.kind()),
        }
    }

    /// The replay batch, or an error naming the algorithm that got another kind.
    pub fn replay(&self, algorithm: &str) -> Result<&'a ReplayBatch> {
        match self {
            Batch::Replay(b) => Ok(b),
            other => anyhow::bail!("{algorithm} trains on replay, got {}", other.kind()),
        }
    }

    /// The demonstrations, or an error naming the algorithm that got another kind.
    pub fn demos(&self, algorithm: &str) -> Result<&'a DemoBatch> {
        match self {
            Batch::Demos(b) => Ok(b),
            other => anyhow::bail!("{algorithm} trains on demonstrations, got {}", other.kind()),
        }
    }
}

/// What an update may look at besides its batch.
#[derive(Debug)]
pub struct UpdateContext<'a> {
    /// Env steps of the run so far (learning-rate schedules).
    pub steps: u64,
    /// `run.total_steps` (0: none).
    pub total_steps: u64,
    /// Updates done before this one.
    pub updates: u64,
    /// Set when the learner is asked to stop: a long update (several epochs of
    /// minibatches) ends at its next minibatch.
    pub stop: &'a AtomicBool,
}

/// One update's statistics, by name: logged in `metrics.jsonl` and exported as the
/// gauge `volley_<algorithm>_<name>` (`lr` also as `volley_learning_rate`, `q_mean` as
/// `volley_q_mean`).
pub type Stats = Vec<(&'static str, f64)>;

/// The learner side of an algorithm.
pub trait Algorithm: Send {
    /// The data source it trains on.
    fn source(&self) -> Source;

    /// Called once before the loop publishes its first weights: `fresh` when the run
    /// starts from nothing, not from a checkpoint. Work a run does before any data
    /// (imitation-seeded SAC's pretraining) goes here, not in `build`, which
    /// `--check` runs too.
    fn start(&mut self, _fresh: bool) -> Result<()> {
        Ok(())
    }

    /// One update on `batch`.
    fn update(&mut self, batch: &Batch<'_>, ctx: &UpdateContext<'_>) -> Result<Stats>;

    /// The weights actors act with (and evaluation evaluates).
    fn actor_weights(&self) -> Vec<u8>;

    /// Everything needed to continue training as if never stopped: networks, target
    /// networks, optimizers, temperatures, the algorithm's own counters.
    fn state(&self) -> Vec<u8>;

    /// Restores [`Algorithm::state`] of an algorithm built from the same config.
    /// Checked first: on error nothing changes.
    fn load_state(&mut self, bytes: &[u8]) -> Result<()>;

    /// Names and descriptions of the statistics [`Algorithm::update`] returns.
    fn stats_help(&self) -> &'static [(&'static str, &'static str)];
}
