//! `volley-runs play`: a run's trained agent in its env.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use volley_common::agent::Mode;
use volley_learner::play::{self, PlayOptions, Played, Trained, Which};
use volley_learner::runs;

/// Which agent and how it plays.
#[derive(Debug, Args)]
pub struct PlayArgs {
    /// The run: its id, name, a prefix of either, or its directory.
    pub run: String,
    /// `best` (the best evaluation's weights), `latest`, or an update number.
    #[arg(long, default_value = "best")]
    pub checkpoint: Which,
    /// Episodes, played at once (default: the run's eval.episodes).
    #[arg(long)]
    pub episodes: Option<usize>,
    /// Env seed (default: the run's eval.seed, which replays its evaluation).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Step limit per episode (default: the run's eval.max_steps).
    #[arg(long)]
    pub max_steps: Option<u32>,
    /// Act with the algorithm's exploration (sampling, epsilon, noise) instead of
    /// greedily.
    #[arg(long)]
    pub stochastic: bool,
    /// Another env id with the same spaces (default: the run's env.id).
    #[arg(long)]
    pub env: Option<String>,
}

impl PlayArgs {
    /// The run's agent and the play settings these arguments ask for.
    pub fn resolve(&self, dir: &Path) -> Result<(Trained, PlayOptions)> {
        let found = runs::resolve(dir, &self.run)?;
        let trained = Trained::load(&found, self.checkpoint)?;
        let mut opts = PlayOptions::like_eval(&trained.cfg);
        if let Some(n) = self.episodes {
            opts.episodes = n;
        }
        if let Some(s) = self.seed {
            opts.seed = s;
        }
        if let Some(m) = self.max_steps {
            opts.max_steps = m;
        }
        if self.stochastic {
            opts.mode = Mode::Explore;
        }
        opts.env = self.env.clone();
        Ok((trained, opts))
    }
}

/// `volley-runs play` arguments.
#[derive(Debug, Args)]
pub struct PlayCommand {
    #[command(flatten)]
    pub play: PlayArgs,
    /// Keep every transition in this safetensors file (layout: volley_common::dataset).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Print only the JSON summary.
    #[arg(long)]
    pub json: bool,
}

/// The JSON summary of a play.
pub fn summary(trained: &Trained, opts: &PlayOptions, played: &Played) -> serde_json::Value {
    let mut v = json!({
        "run_id": trained.run.record.id,
        "run": trained.run.record.name,
        "dir": trained.run.dir.display().to_string(),
        "checkpoint": trained.checkpoint,
        "env": played.env.to_string(),
        "mode": play::mode_name(opts.mode),
        "seed": opts.seed,
        "episodes": played.episodes.len(),
        "return_mean": played.return_mean(),
        "return_std": played.return_std(),
        "length_mean": played.length_mean(),
        "returns": played.episodes.iter().map(|e| e.ret).collect::<Vec<_>>(),
        "lengths": played.episodes.iter().map(|e| e.length).collect::<Vec<_>>(),
        "cut": played.episodes.iter().filter(|e| e.cut).count(),
    });
    if let Some(e) = &trained.eval {
        v["eval_return_mean"] = e["eval_return_mean"].clone();
        v["eval_returns"] = e["eval_returns"].clone();
        v["eval_steps"] = e["steps"].clone();
    }
    v
}

/// Runs `volley-runs play` and returns what it prints.
pub fn run(dir: &Path, cmd: &PlayCommand) -> Result<String> {
    let (trained, mut opts) = cmd.play.resolve(dir)?;
    opts.record = cmd.record.is_some();
    let played = play::play(&trained, &opts, None)?;
    let mut text = String::new();
    if !cmd.json {
        for (i, e) in played.episodes.iter().enumerate() {
            text.push_str(&format!(
                "episode {i}: return {:.4}, length {}{}\n",
                e.ret,
                e.length,
                if e.cut {
                    " (cut at the step limit)"
                } else {
                    ""
                }
            ));
        }
    }
    let mut v = summary(&trained, &opts, &played);
    if let (Some(path), Some(t)) = (&cmd.record, &played.transitions) {
        t.write(path)
            .with_context(|| format!("cannot write the transitions to {}", path.display()))?;
        v["transitions"] = json!({"path": path.display().to_string(), "count": t.len()});
    }
    text.push_str(&serde_json::to_string(&v)?);
    text.push('\n');
    Ok(text)
}
