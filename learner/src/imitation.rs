//! The expert of an imitation run: another volley run's trained policy
//! (`imitation.expert`, its `best` checkpoint unless `imitation.expert_checkpoint`
//! says otherwise), loaded on the learner, and the demonstrations file
//! (`imitation.dataset`) an expert recorded.
//!
//! At the start of a run that names an expert, the expert is played as the run's own
//! evaluation plays (the `eval` settings: same episodes, seed and step limit, greedy)
//! and its mean return logged, exported (`volley_imitation_expert_return`) and kept
//! in the run directory as `expert.json`: the reference an imitator is measured
//! against.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Device, Tensor};
use volley_common::agent::{ActionBatch, Agent, Mode, Progress};
use volley_common::dataset::Transitions;
use volley_common::env::Space;

use crate::config::RunConfig;
use crate::demos::Demos;
use crate::play::{self, PlayOptions, Trained, Which};
use crate::runs;

/// A loaded expert: the run it comes from and its agent.
pub struct Expert {
    pub trained: Trained,
    agent: Box<dyn Agent>,
    action_space: Space,
}

impl std::fmt::Debug for Expert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expert")
            .field("run", &self.trained.run.dir)
            .field("checkpoint", &self.trained.checkpoint)
            .finish()
    }
}

/// The trained agent `cfg.imitation.expert` names (its run's `best` checkpoint unless
/// `imitation.expert_checkpoint` says otherwise); `None` when it names none.
pub fn expert_run(cfg: &RunConfig) -> Result<Option<Trained>> {
    let name = cfg.imitation.expert.trim();
    if name.is_empty() {
        return Ok(None);
    }
    let which: Which = match cfg.imitation.expert_checkpoint.as_str() {
        "" => Which::Best,
        w => w.parse().map_err(anyhow::Error::msg)?,
    };
    let run = runs::resolve(Path::new(&cfg.run.dir), name)
        .with_context(|| format!("imitation.expert = '{name}': no such run"))?;
    let trained =
        Trained::load(&run, which).with_context(|| format!("imitation.expert = '{name}'"))?;
    Ok(Some(trained))
}

/// What the start-of-run measurement found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExpertReturn {
    pub run_id: String,
    pub run: String,
    pub checkpoint: String,
    pub env: String,
    pub episodes: usize,
    pub return_mean: f64,
    pub return_std: f64,
    pub returns: Vec<f64>,
}

impl Expert {
    /// The expert `cfg.imitation.expert` names (`None` when it names none), for an env
    /// of these spaces: its own env must observe and act in the same spaces.
    pub fn load(
        cfg: &RunConfig,
        obs: &Space,
        act: &Space,
        num_envs: usize,
    ) -> Result<Option<Expert>> {
        let Some(trained) = expert_run(cfg)? else {
            return Ok(None);
        };
        let name = cfg.imitation.expert.trim();
        let agent = trained
            .agent(obs, act, num_envs, cfg.run.seed)
            .with_context(|| {
                format!(
                    "imitation.expert = '{name}' ({} on {}) cannot act on {}: its spaces differ",
                    trained.recipe.algorithm, trained.cfg.env.id, cfg.env.id
                )
            })?;
        Ok(Some(Expert {
            trained,
            agent,
            action_space: act.clone(),
        }))
    }

    /// Plays the expert as `cfg`'s evaluation plays, on the expert's own env.
    pub fn measure(&self, cfg: &RunConfig) -> Result<ExpertReturn> {
        let opts = PlayOptions::like_eval(cfg);
        let played = play::play(&self.trained, &opts, None).with_context(|| {
            format!(
                "cannot evaluate the expert {}",
                self.trained.run.dir.display()
            )
        })?;
        Ok(ExpertReturn {
            run_id: self.trained.run.record.id.clone(),
            run: self.trained.run.record.name.clone(),
            checkpoint: self.trained.checkpoint.clone(),
            env: played.env.to_string(),
            episodes: played.episodes.len(),
            return_mean: played.return_mean(),
            return_std: played.return_std(),
            returns: played.episodes.iter().map(|e| e.ret).collect(),
        })
    }

    /// The expert's greedy actions for `obs` (`[N, *obs]`), as the env takes them
    /// (continuous: clipped to the bounds): `[N * A]` values.
    pub fn label(&mut self, obs: &Tensor) -> Result<Vec<f32>> {
        let mut out = ActionBatch::default();
        self.agent
            .act(obs, &self.trained.progress, Mode::Greedy, &mut out)
            .context("the expert could not act")?;
        let mut clipped = Vec::new();
        match out.env_actions(&self.action_space, &mut clipped)? {
            volley_common::env::Actions::Continuous(a) => Ok(a.to_vec()),
            _ => bail!("the expert's actions are not continuous"),
        }
    }

    /// Where the expert's weights were published.
    pub fn progress(&self) -> Progress {
        self.trained.progress
    }
}

/// The demonstrations of `cfg.imitation.dataset`, read and checked against the run's
/// env.
pub fn load_dataset(
    cfg: &RunConfig,
    obs: &Space,
    act: &Space,
    capacity: usize,
    device: Device,
) -> Result<Demos> {
    Ok(load_transitions(cfg, obs, act, capacity, device)?.0)
}

/// [`load_dataset`], and the file's transitions (rewards and episodes included).
pub fn load_transitions(
    cfg: &RunConfig,
    obs: &Space,
    act: &Space,
    capacity: usize,
    device: Device,
) -> Result<(Demos, Transitions)> {
    let path = cfg.imitation.dataset.trim();
    if path.is_empty() {
        bail!(
            "{} trains on demonstrations: set imitation.dataset to a transitions file (record one with volley-runs play EXPERT --record FILE)",
            cfg.algorithm
        );
    }
    let t = Transitions::read(Path::new(path))
        .with_context(|| format!("imitation.dataset = '{path}'"))?;
    let demos = Demos::from_file(&t, path, obs, act, capacity, device)
        .with_context(|| format!("imitation.dataset = '{path}'"))?;
    if let Some(env) = t.metadata.get("env").filter(|e| **e != cfg.env.id) {
        volley_common::say!(
            "volley-learner: imitation.dataset was recorded on {env}, this run trains on {}: their spaces match, so it is used",
            cfg.env.id
        );
    }
    Ok((demos, t))
}
