//! The figure of one explained decision: what the env looked like before the action
//! beside the gradient feature importance of each named feature, the most important
//! one highlighted.

use std::path::{Path, PathBuf};

use volley_common::env::Frame;

use super::draw::{self, Figure, Item, Panel, Picture};
use super::{PlotError, PlotResult};

/// What one explanation figure shows.
#[derive(Debug, Clone)]
pub struct ExplanationFigure<'a> {
    pub title: String,
    /// Under the title: the step, the action, the return so far.
    pub subtitle: String,
    /// The env before the action (none: the bars fill the figure).
    pub frame: Option<&'a Frame>,
    /// The features' names, in observation order.
    pub names: &'a [String],
    /// Each feature's importance in `[0, 1]`.
    pub importance: &'a [f32],
    /// Above the bars.
    pub bars_title: String,
}

const BARS: plotters::style::RGBColor = plotters::style::RGBColor(31, 119, 180);
const TOP: plotters::style::RGBColor = plotters::style::RGBColor(214, 39, 40);

/// Draws `fig` to `out` (see [`super::output_paths`]).
pub fn explanation(fig: &ExplanationFigure<'_>, out: &Path) -> PlotResult<Vec<PathBuf>> {
    if fig.names.len() != fig.importance.len() {
        return Err(PlotError::BadInput(format!(
            "{} feature names for {} importances",
            fig.names.len(),
            fig.importance.len()
        )));
    }
    let top = fig
        .importance
        .iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f32)>, (i, &v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        })
        .map(|(i, _)| i);
    let mut bars = Panel::new("importance (share of |d decision / d feature|)", "");
    bars.title = Some(fig.bars_title.clone());
    bars.categories = Some(fig.names.to_vec());
    bars.x_range = Some((0.0, 1.12));
    bars.items.push(Item::RowBars {
        values: fig.importance.iter().map(|&v| f64::from(v)).collect(),
        color: BARS,
        highlight: top.map(|t| (t, TOP)),
    });
    let rows = fig.names.len().max(4) as u32;
    let mut panels = Vec::new();
    if let Some(f) = fig.frame {
        let mut p = Panel::new("", "");
        p.title = Some("before the action".into());
        p.picture = Some(Picture {
            width: f.width,
            height: f.height,
            rgb: f.rgb.clone(),
        });
        panels.push(p);
    }
    panels.push(bars);
    let columns = panels.len();
    let figure = Figure {
        title: fig.title.clone(),
        subtitle: Some(fig.subtitle.clone()),
        legend: Vec::new(),
        panels,
        columns,
        size: (
            if columns == 2 { 1400 } else { 800 },
            (rows * 34 + 170).max(460),
        ),
    };
    draw::render(&figure, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figure_is_drawn_beside_its_frame_and_checks_its_input() {
        if super::super::font::find_font().is_err() {
            panic!("no font: run deploy/setup.sh (it installs fonts-dejavu-core)");
        }
        let dir = volley_common::testing::TempDir::new();
        let mut frame = Frame::filled(60, 40, [200, 220, 240]);
        frame.fill_rect(10, 10, 20, 30, [40, 70, 200]);
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let fig = ExplanationFigure {
            title: "t".into(),
            subtitle: "s".into(),
            frame: Some(&frame),
            names: &names,
            importance: &[0.2, 0.7, 0.1],
            bars_title: "importance".into(),
        };
        let out = dir.path().join("step.png");
        let files = explanation(&fig, &out).unwrap();
        assert_eq!(files, vec![out.clone()]);
        assert!(std::fs::metadata(&out).unwrap().len() > 1000);
        let bad = ExplanationFigure {
            importance: &[1.0],
            ..fig
        };
        assert!(explanation(&bad, &out).is_err());
    }
}
