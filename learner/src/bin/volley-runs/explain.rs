//! `volley-runs explain`: a run's trained agent played, recorded and explained.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use volley_common::env::Space;
use volley_learner::explain::session::{ExplainOptions, Explainer, SaliencyKind};
use volley_learner::explain::{ChannelReduce, Overlay, Perturbation};
use volley_learner::play;
use volley_learner::video::VideoWriter;

use super::play::{summary, PlayArgs};

/// `volley-runs explain` arguments.
#[derive(Debug, Args)]
pub struct ExplainCommand {
    #[command(flatten)]
    pub play: PlayArgs,
    /// The folder to write into (default: <run>/explain/<checkpoint>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The watched episode's video: mp4 (H.264 through ffmpeg), gif, or none.
    #[arg(long, default_value = "mp4")]
    pub video: String,
    /// Frames per second of the video (default: the env's real time, e.g. CartPole
    /// 50, Hopper 125, Procgen 15, Platform 2 actions per second; GIFs at most 50).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Per-step figures for the first this many steps.
    #[arg(long, default_value_t = 100)]
    pub figures: usize,
    /// Image observations: which saliency is drawn.
    #[arg(long, value_enum, default_value = "perturbation")]
    pub saliency: SaliencyKind,
    /// Gradient saliency: how a pixel's colour channels become one value.
    #[arg(long, value_enum, default_value = "mean")]
    pub reduce: ChannelReduce,
    /// The colour channel the policy saliency is added to: 0 red, 1 green, 2 blue
    /// (the value saliency goes on red).
    #[arg(long, default_value_t = 2)]
    pub channel: usize,
    /// What the saliency's maximum adds to the channel, 0..255.
    #[arg(long, default_value_t = 200.0)]
    pub constant: f32,
    /// A Gaussian filter of this many frame pixels on the saliency before drawing.
    #[arg(long)]
    pub sigma: Option<f64>,
    /// Perturbation saliency: a mask every this many pixels.
    #[arg(long, default_value_t = 5)]
    pub stride: usize,
    /// Keep every transition in this safetensors file.
    #[arg(long)]
    pub record: Option<PathBuf>,
}

/// Runs `volley-runs explain` and returns what it prints.
pub fn run(dir: &std::path::Path, cmd: &ExplainCommand) -> Result<String> {
    let (trained, mut opts) = cmd.play.resolve(dir)?;
    opts.record = cmd.record.is_some();
    opts.render = true;
    let out = cmd
        .out
        .clone()
        .unwrap_or_else(|| trained.run.dir.join("explain").join(&trained.checkpoint));
    let env_id = trained.env_id(opts.env.as_deref())?;
    let probe =
        volley_common::env::make_vec_env(&env_id, volley_common::env::VecEnvOptions::new(1, 1))?;
    let images = matches!(probe.observation_space(), Space::Image { .. });
    let action_space = probe.action_space().clone();
    drop(probe);
    let video = match cmd.video.as_str() {
        "none" => None,
        "mp4" | "gif" => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let fps = cmd.fps.unwrap_or_else(|| env_id.render_fps());
            Some(VideoWriter::create(
                out.join(format!("episode.{}", cmd.video)),
                Some(fps),
            )?)
        }
        other => bail!("--video {other}: expected mp4, gif or none"),
    };
    let options = ExplainOptions {
        figures: cmd.figures,
        saliency: cmd.saliency,
        reduce: cmd.reduce,
        overlay: Overlay {
            channel: cmd.channel,
            constant: cmd.constant,
            sigma: cmd.sigma,
        },
        perturbation: Perturbation {
            stride: cmd.stride,
            ..Perturbation::default()
        },
    };
    let title = format!(
        "{} ({} on {}), checkpoint {}",
        trained.run.record.name, trained.recipe.algorithm, env_id, trained.checkpoint
    );
    let mut explainer =
        Explainer::new(&out, env_id.feature_names(), images, title, options, video)?
            .with_action_space(action_space);
    let played = play::play(&trained, &opts, Some(&mut explainer))?;
    let mut s = summary(&trained, &opts, &played);
    if let (Some(path), Some(t)) = (&cmd.record, &played.transitions) {
        t.write(path)
            .with_context(|| format!("cannot write the transitions to {}", path.display()))?;
        s["transitions"] =
            serde_json::json!({"path": path.display().to_string(), "count": t.len()});
    }
    let (_, s) = explainer.finish(s)?;
    let mut text = String::new();
    for (i, e) in played.episodes.iter().enumerate() {
        text.push_str(&format!(
            "episode {i}: return {:.4}, length {}\n",
            e.ret, e.length
        ));
    }
    if let Some(m) = s.get("importance_mean").and_then(|m| m.as_object()) {
        let mut v: Vec<(&String, f64)> = m
            .iter()
            .map(|(k, v)| (k, v.as_f64().unwrap_or(0.0)))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        text.push_str("mean importance:");
        for (k, x) in v.iter().take(5) {
            text.push_str(&format!(" {k} {x:.3};"));
        }
        text.push('\n');
    }
    let uploaded = volley_learner::mlflow::upload_explanations(&trained.run, &trained.cfg, &out)?;
    if let Some(u) = uploaded {
        text.push_str(&format!("{u}\n"));
    }
    if let Some(v) = s.get("video").and_then(|v| v["path"].as_str()) {
        text.push_str(&format!("video: {v}\n"));
    }
    text.push_str(&format!(
        "explained {} (id {}) in {}\n",
        trained.run.record.name,
        trained.run.record.id,
        out.display()
    ));
    Ok(text)
}
