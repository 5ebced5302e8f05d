//! An explained play: what `volley-runs explain` and the pipeline write while a
//! trained agent plays ([`Explainer`], a [`Watcher`] of [`crate::play::play`]).
//!
//! Into its folder (by default `<run>/explain/<checkpoint>/`):
//!
//! | file | what |
//! |---|---|
//! | `steps.jsonl` | one line per step of the watched episode (env 0): step, return so far, the action, and for vector observations every feature's importance and the most important one; for images the saliency maps' peak and maximum |
//! | `steps/step-NNNN.png` | vector observations: the env before the action beside the bar chart of importances, for the first `figures` steps |
//! | `importance.png` | vector observations: the mean importance of each feature over every step of every episode played |
//! | `saliency/step-NNNN.png` | images: the frame with its saliency overlaid, for the first `figures` steps |
//! | `episode.mp4` or `.gif` | the watched episode, its return and step drawn on each frame; with the saliency overlay for images |
//! | `summary.json` | the play's summary, the settings of the explanation, the mean importance per feature |

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;
use tch::Tensor;
use volley_common::agent::{ActionBatch, Agent};
use volley_common::env::{Frame, Space};

use super::{
    gradient_importance, gradient_saliency, overlay, perturbation_saliency, ChannelReduce, Overlay,
    Perturbation, SaliencyMap,
};
use crate::play::{Moment, Watcher};
use crate::plot::explain::{explanation, ExplanationFigure};
use crate::video::{VideoSink, VideoWriter};

/// Which saliency an image agent's explanation draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SaliencyKind {
    /// Greydanus et al.'s perturbation saliency: the policy map on `channel`, the
    /// value map (where there is one) on red.
    Perturbation,
    /// The gradient's magnitude, reduced over colour channels by `reduce`.
    Gradient,
}

/// How to explain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExplainOptions {
    /// Per-step figures (or saliency frames) for the first this many steps.
    pub figures: usize,
    pub saliency: SaliencyKind,
    pub reduce: ChannelReduce,
    pub overlay: Overlay,
    pub perturbation: Perturbation,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        ExplainOptions {
            figures: 100,
            saliency: SaliencyKind::Perturbation,
            reduce: ChannelReduce::Mean,
            overlay: Overlay {
                channel: 2,
                constant: 200.0,
                sigma: None,
            },
            perturbation: Perturbation::default(),
        }
    }
}

/// Writes an explained play's files (see the module docs) as it is played.
pub struct Explainer {
    out: PathBuf,
    opts: ExplainOptions,
    /// Feature names of vector observations (empty for images).
    names: Vec<String>,
    images: bool,
    title: String,
    steps: std::io::BufWriter<fs::File>,
    /// Sum of every live row's importance, and how many rows.
    importance_sum: Vec<f64>,
    importance_rows: u64,
    figures_written: usize,
    video: Option<VideoWriter>,
    /// Frames drawn on for the video: the env's frame upscaled to at least this
    /// height.
    min_height: u32,
    watched: Option<(f64, u32)>,
    /// Env 0's importance from the last [`Watcher::batch`] call (which comes just
    /// before [`Watcher::step`] for the same observations), so it is computed once.
    row0: Option<Vec<f32>>,
    /// The env's action space, for writing actions in words.
    action_space: Option<Space>,
}

impl std::fmt::Debug for Explainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Explainer")
            .field("out", &self.out)
            .field("images", &self.images)
            .finish_non_exhaustive()
    }
}

impl Explainer {
    /// Writes into `out` (created); `names` the features of vector observations
    /// (empty for images), `title` the figures' title.
    pub fn new(
        out: &Path,
        names: Vec<String>,
        images: bool,
        title: String,
        opts: ExplainOptions,
        video: Option<VideoWriter>,
    ) -> Result<Explainer> {
        fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let steps = fs::File::create(out.join("steps.jsonl"))
            .with_context(|| format!("cannot write {}/steps.jsonl", out.display()))?;
        Ok(Explainer {
            out: out.to_path_buf(),
            opts,
            importance_sum: vec![0.0; names.len()],
            names,
            images,
            title,
            steps: std::io::BufWriter::new(steps),
            importance_rows: 0,
            figures_written: 0,
            video,
            min_height: 256,
            watched: None,
            row0: None,
            action_space: None,
        })
    }

    /// Names the actions in figures by this space (parameterised choices by name).
    pub fn with_action_space(mut self, space: Space) -> Explainer {
        self.action_space = Some(space);
        self
    }

    /// The names for `n` features: the env's, or `obs[i]` when it has none.
    fn names_for(&mut self, n: usize) -> &[String] {
        if self.names.len() != n {
            self.names = (0..n).map(|i| format!("obs[{i}]")).collect();
            self.importance_sum = vec![0.0; n];
        }
        &self.names
    }

    /// The mean importance of each feature over every row seen.
    pub fn mean_importance(&self) -> Vec<(String, f64)> {
        let n = self.importance_rows.max(1) as f64;
        self.names
            .iter()
            .zip(&self.importance_sum)
            .map(|(name, s)| (name.clone(), s / n))
            .collect()
    }

    /// Finishes the video, writes `importance.png` and `summary.json` (`summary`, the
    /// play's, with the explanation's parts added) and returns both.
    pub fn finish(
        mut self,
        mut summary: serde_json::Value,
    ) -> Result<(Vec<PathBuf>, serde_json::Value)> {
        self.steps.flush()?;
        let mut files = vec![self.out.join("steps.jsonl")];
        if let Some(v) = self.video.take() {
            let info = v.finish()?;
            summary["video"] = json!({
                "path": info.path.display().to_string(),
                "frames": info.frames,
                "width": info.width,
                "height": info.height,
                "fps": info.fps,
            });
            files.push(info.path);
        }
        if !self.images && self.importance_rows > 0 {
            let mean = self.mean_importance();
            let values: Vec<f32> = mean.iter().map(|(_, v)| *v as f32).collect();
            let fig = ExplanationFigure {
                title: self.title.clone(),
                subtitle: format!(
                    "mean over {} decisions of {} episodes",
                    self.importance_rows, summary["episodes"]
                ),
                frame: None,
                names: &self.names,
                importance: &values,
                bars_title: "mean gradient feature importance".into(),
            };
            files.extend(explanation(&fig, &self.out.join("importance.png"))?);
            summary["importance_mean"] = mean
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        summary["explanation"] = json!({
            "figures": self.figures_written,
            "saliency": self.images.then_some(self.opts.saliency),
            "reduce": self.opts.reduce,
            "overlay": self.opts.overlay,
            "perturbation": self.opts.perturbation,
        });
        if let Some((r, l)) = self.watched {
            summary["watched"] = json!({"return": r, "length": l});
        }
        let path = self.out.join("summary.json");
        fs::write(&path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        files.push(path);
        Ok((files, summary))
    }

    /// The env's frame, upscaled (nearest) until it is at least `min_height` high.
    fn frame_of(&self, m: &mut Moment<'_>) -> Result<Frame> {
        let f = m.env.render(m.index)?;
        let factor = self.min_height.div_ceil(f.height.max(1)).max(1);
        Ok(if factor > 1 { f.upscaled(factor) } else { f })
    }

    fn saliency(&self, m: &Moment<'_>) -> Result<(SaliencyMap, Option<SaliencyMap>)> {
        Ok(match self.opts.saliency {
            SaliencyKind::Perturbation => {
                perturbation_saliency(m.agent, &m.obs, &m.taken, &self.opts.perturbation)?
            }
            SaliencyKind::Gradient => {
                let g = gradient_saliency(m.agent, &m.obs, &m.taken, self.opts.reduce)?;
                (g.into_iter().next().context("no saliency map")?, None)
            }
        })
    }
}

/// The action of a one-row batch in words: `1`, `[0.12, -0.50]`, `run(4.89)`.
pub fn describe_action(space: Option<&Space>, a: &ActionBatch) -> String {
    let list = |v: &[f32]| {
        let parts: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
        format!("[{}]", parts.join(", "))
    };
    match (space, a.discrete.first()) {
        (Some(Space::Parameterised { params }), Some(&c)) => {
            let c = c.max(0) as usize;
            let offset: usize = params.iter().take(c).map(|p| p.low.len()).sum();
            match params.get(c) {
                Some(p) => {
                    let mine = a
                        .env_params
                        .get(offset..offset + p.low.len())
                        .unwrap_or(&[]);
                    let parts: Vec<String> = mine.iter().map(|x| format!("{x:.2}")).collect();
                    format!("{}({})", p.name, parts.join(", "))
                }
                None => format!("choice {c}"),
            }
        }
        (_, Some(d)) if a.continuous.is_empty() => d.to_string(),
        _ => list(&a.continuous),
    }
}

/// The action of a one-row batch, as JSON.
fn action_json(a: &ActionBatch) -> serde_json::Value {
    if !a.env_params.is_empty() {
        json!({"choice": a.discrete.first(), "params": a.env_params})
    } else if !a.continuous.is_empty() {
        json!(a.continuous)
    } else {
        json!(a.discrete.first())
    }
}

impl Watcher for Explainer {
    fn batch(
        &mut self,
        agent: &dyn Agent,
        obs: &Tensor,
        taken: &ActionBatch,
        live: &[bool],
    ) -> Result<()> {
        if self.images {
            return Ok(());
        }
        let rows = gradient_importance(agent, obs, taken)?;
        self.row0 = rows.first().cloned();
        for (row, _) in rows.iter().zip(live).filter(|(_, &l)| l) {
            if self.importance_sum.len() != row.len() {
                self.names_for(row.len());
            }
            for (s, v) in self.importance_sum.iter_mut().zip(row) {
                *s += f64::from(*v);
            }
            self.importance_rows += 1;
        }
        Ok(())
    }

    fn step(&mut self, mut m: Moment<'_>) -> Result<()> {
        let mut line = json!({
            "step": m.step,
            "return_so_far": m.return_so_far,
            "action": action_json(&m.taken),
        });
        let figure = self.figures_written < self.opts.figures;
        let mut frame = if figure || self.video.is_some() {
            Some(self.frame_of(&mut m)?)
        } else {
            None
        };
        if self.images {
            let (pi, v) = self.saliency(&m)?;
            line["saliency"] = json!({
                "kind": self.opts.saliency,
                "policy_max": pi.max(),
                "policy_peak": pi.argmax(),
                "value_max": v.as_ref().map(SaliencyMap::max),
                "value_peak": v.as_ref().map(SaliencyMap::argmax),
            });
            if let Some(f) = frame.as_mut() {
                overlay(f, &pi, &self.opts.overlay)?;
                if let Some(v) = &v {
                    let red = Overlay {
                        channel: 0,
                        ..self.opts.overlay
                    };
                    overlay(f, v, &red)?;
                }
                if figure {
                    let dir = self.out.join("saliency");
                    fs::create_dir_all(&dir)?;
                    let path = dir.join(format!("step-{:04}.png", m.step));
                    crate::video::save_png(f, &path)?;
                    self.figures_written += 1;
                }
            }
        } else {
            let imp = match self.row0.take() {
                Some(row) => row,
                None => gradient_importance(m.agent, &m.obs, &m.taken)?.remove(0),
            };
            let names = self.names_for(imp.len()).to_vec();
            let top = imp
                .iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                .0;
            line["importance"] = names
                .iter()
                .zip(&imp)
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            line["top"] = json!(names[top]);
            if figure {
                let dir = self.out.join("steps");
                fs::create_dir_all(&dir)?;
                let fig = ExplanationFigure {
                    title: self.title.clone(),
                    subtitle: format!(
                        "step {}, action {}, return so far {:.4}; most important: {}",
                        m.step,
                        describe_action(self.action_space.as_ref(), &m.taken),
                        m.return_so_far,
                        names[top]
                    ),
                    frame: frame.as_ref(),
                    names: &names,
                    importance: &imp,
                    bars_title: "gradient feature importance of this decision".into(),
                };
                explanation(&fig, &dir.join(format!("step-{:04}.png", m.step)))?;
                self.figures_written += 1;
            }
        }
        if let (Some(v), Some(mut f)) = (self.video.as_mut(), frame) {
            let (step, ret) = (
                format!("step {}", m.step),
                format!("return {:.3}", m.return_so_far),
            );
            crate::video::annotate(&mut f, &[&step, &ret])?;
            v.push(&f)?;
        }
        writeln!(self.steps, "{line}")?;
        Ok(())
    }

    fn end(&mut self, ret: f64, length: u32) -> Result<()> {
        self.watched = Some((ret, length));
        Ok(())
    }
}
