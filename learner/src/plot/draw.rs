//! What the figures are made of, and how they are drawn on either backend.
//!
//! A [`Figure`] is a title, a legend strip under it and a grid of [`Panel`]s; a
//! panel holds [`Item`]s (lines, markers, bands, bars, vertical lines, horizontal
//! intervals) in data coordinates. The charts build figures from data; this module
//! alone talks to plotters, and draws the same figure to PNG and SVG. The legend is
//! drawn outside the panels, so it never hides data.

use std::fs;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::backend::FontBackend;
use super::font::{self, FAMILY};
use super::{PlotError, PlotResult};

/// Series colours (the "tableau 10" palette).
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of series `i`.
pub(crate) fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Text sizes in pixels.
const TITLE_SIZE: u32 = 22;
const SUBTITLE_SIZE: u32 = 15;
const PANEL_TITLE_SIZE: u32 = 16;
const DESC_SIZE: u32 = 15;
const TICK_SIZE: u32 = 13;
const LEGEND_SIZE: u32 = 14;
/// Height of one legend row.
const LEGEND_ROW: u32 = 24;
/// Width of a legend entry's sample.
const LEGEND_SAMPLE: i32 = 26;

/// How tick labels are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ticks {
    /// Four significant digits; k, M, G past 10,000.
    Number,
    /// Integers with k, M, G (env steps).
    Count,
    /// Whole numbers only (counts); other ticks unlabelled.
    Integer,
}

/// What a legend entry's sample looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// A line.
    Line,
    /// A faint line.
    FaintLine,
    /// A line with a marker on it.
    LineMarker,
    /// A marker alone.
    Dot,
    /// A dashed line.
    Dashed,
    /// A filled box.
    Box,
}

/// One entry of the legend strip.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LegendEntry {
    /// The text.
    pub label: String,
    /// The series' colour.
    pub color: RGBColor,
    /// Its sample.
    pub mark: Mark,
}

/// What a panel draws, in data coordinates.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    /// A polyline.
    Line {
        points: Vec<(f64, f64)>,
        color: RGBColor,
        width: u32,
        alpha: f64,
    },
    /// Filled circles.
    Markers {
        points: Vec<(f64, f64)>,
        color: RGBColor,
        radius: u32,
    },
    /// The area between two curves on one abscissa.
    Band {
        x: Vec<f64>,
        lo: Vec<f64>,
        hi: Vec<f64>,
        color: RGBColor,
        alpha: f64,
    },
    /// Bars `(x0, x1, height)` from 0.
    Bars {
        bars: Vec<(f64, f64, f64)>,
        color: RGBColor,
    },
    /// A dashed vertical line across the panel.
    VLine { x: f64, color: RGBColor },
    /// A dashed horizontal line across the panel (a reference value).
    HLine { y: f64, color: RGBColor },
    /// One horizontal bar per row of the panel's categories, from 0 to its value,
    /// labelled with the value; `highlight` drawn in its own colour.
    RowBars {
        values: Vec<f64>,
        color: RGBColor,
        highlight: Option<(usize, RGBColor)>,
    },
    /// A horizontal interval on row `row` (rows are the panel's categories, from the
    /// top) with a tick at `point`.
    Interval {
        row: usize,
        lo: f64,
        hi: f64,
        point: f64,
        color: RGBColor,
    },
}

impl Item {
    /// The data points that must be in view.
    fn extent(&self) -> Vec<(f64, f64)> {
        match self {
            Item::Line { points, .. } | Item::Markers { points, .. } => points.clone(),
            Item::Band { x, lo, hi, .. } => x
                .iter()
                .zip(lo)
                .map(|(&x, &y)| (x, y))
                .chain(x.iter().zip(hi).map(|(&x, &y)| (x, y)))
                .collect(),
            Item::Bars { bars, .. } => bars
                .iter()
                .flat_map(|&(x0, x1, h)| [(x0, 0.0), (x1, h)])
                .collect(),
            Item::VLine { x, .. } => vec![(*x, f64::NAN)],
            Item::HLine { y, .. } => vec![(f64::NAN, *y)],
            Item::RowBars { values, .. } => values
                .iter()
                .enumerate()
                .flat_map(|(i, &v)| [(0.0, i as f64), (v, i as f64)])
                .collect(),
            Item::Interval {
                row, lo, hi, point, ..
            } => {
                let r = *row as f64;
                vec![(*lo, r), (*hi, r), (*point, r)]
            }
        }
    }
}

/// One chart of a figure.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Panel {
    /// Its caption, above it.
    pub title: Option<String>,
    /// The x axis' description, with its unit.
    pub x_desc: String,
    /// The y axis' description.
    pub y_desc: String,
    /// The x tick labels.
    pub x_ticks: Ticks,
    /// The y tick labels.
    pub y_ticks: Ticks,
    /// A fixed x range (else the data's, padded).
    pub x_range: Option<(f64, f64)>,
    /// Start the x axis at 0 (env steps, wall time) when no data lie below it.
    pub x_from_zero: bool,
    /// Padding of the data's x range, as a fraction of it.
    pub x_pad: f64,
    /// A fixed y range (else the data's, padded).
    pub y_range: Option<(f64, f64)>,
    /// Row labels, top to bottom, for [`Item::Interval`] panels (no numeric y axis).
    pub categories: Option<Vec<String>>,
    /// What it draws, in order (later items on top).
    pub items: Vec<Item>,
    /// A picture instead of axes and items (an env's frame), scaled to fit.
    pub picture: Option<Picture>,
}

/// An RGB image (rows top to bottom) a panel shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Panel {
    /// An empty panel with these axis descriptions.
    pub fn new(x_desc: impl Into<String>, y_desc: impl Into<String>) -> Panel {
        Panel {
            title: None,
            x_desc: x_desc.into(),
            y_desc: y_desc.into(),
            x_ticks: Ticks::Number,
            y_ticks: Ticks::Number,
            x_range: None,
            x_from_zero: false,
            x_pad: 0.02,
            y_range: None,
            categories: None,
            items: Vec::new(),
            picture: None,
        }
    }

    /// The x and y ranges to draw.
    fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let points: Vec<(f64, f64)> = self.items.iter().flat_map(Item::extent).collect();
        let span = |vals: Vec<f64>, pad: f64| {
            let (lo, hi) = vals
                .into_iter()
                .filter(|v| v.is_finite())
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(v), hi.max(v))
                });
            if !lo.is_finite() {
                return (0.0, 1.0);
            }
            if hi - lo <= f64::EPSILON * lo.abs().max(1.0) {
                let d = (lo.abs() * 0.05).max(0.5);
                return (lo - d, hi + d);
            }
            let p = (hi - lo) * pad;
            (lo - p, hi + p)
        };
        let x = self.x_range.unwrap_or_else(|| {
            let (lo, hi) = span(points.iter().map(|p| p.0).collect(), self.x_pad);
            if self.x_from_zero && points.iter().all(|p| p.0 >= 0.0) {
                (0.0, hi)
            } else {
                (lo, hi)
            }
        });
        let y = match (&self.categories, self.y_range) {
            (Some(c), _) => (-0.6, c.len().max(1) as f64 - 0.4),
            (None, Some(r)) => r,
            (None, None) => span(points.iter().map(|p| p.1).collect(), 0.05),
        };
        (x, y)
    }
}

/// A whole figure.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Figure {
    /// The title, on top.
    pub title: String,
    /// A smaller line under it.
    pub subtitle: Option<String>,
    /// The legend strip under the title (none when empty).
    pub legend: Vec<LegendEntry>,
    /// The panels, row by row.
    pub panels: Vec<Panel>,
    /// Panels per row.
    pub columns: usize,
    /// Pixels (SVG: user units).
    pub size: (u32, u32),
}

/// The files a figure goes to: `out` itself when it ends in `.png` or `.svg`
/// (any case), else `out.png` and `out.svg` (the suffixes appended to the name).
pub fn output_paths(out: &Path) -> Vec<PathBuf> {
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") | Some("svg") => vec![out.to_path_buf()],
        _ => ["png", "svg"]
            .iter()
            .map(|e| {
                let mut name = out.as_os_str().to_owned();
                name.push(".");
                name.push(e);
                PathBuf::from(name)
            })
            .collect(),
    }
}

/// A plotters error, as text.
#[derive(Debug)]
pub(crate) struct DrawError(String);

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for DrawError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        DrawError(e.to_string())
    }
}

/// Draws `fig` to each of [`output_paths`]`(out)` and returns them.
pub(crate) fn render(fig: &Figure, out: &Path) -> PlotResult<Vec<PathBuf>> {
    let (_, font) = font::loaded()?;
    let paths = output_paths(out);
    for path in &paths {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| PlotError::Draw {
                path: path.clone(),
                message: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        let svg = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
        let drawn = if svg {
            let backend = FontBackend::new(SVGBackend::new(path, fig.size), font, false)?;
            let root = backend.into_drawing_area();
            draw_figure(fig, &root).and_then(|()| root.present().map_err(DrawError::from))
        } else {
            let backend = FontBackend::new(BitMapBackend::new(path, fig.size), font, true)?;
            let root = backend.into_drawing_area();
            draw_figure(fig, &root).and_then(|()| root.present().map_err(DrawError::from))
        };
        drawn.map_err(|DrawError(message)| PlotError::Draw {
            path: path.clone(),
            message,
        })?;
    }
    Ok(paths)
}

/// A text style of the figure's font.
fn text(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&BLACK)
}

/// Draws the title, the legend and the panels.
fn draw_figure<DB: DrawingBackend>(
    fig: &Figure,
    root: &DrawingArea<DB, Shift>,
) -> Result<(), DrawError> {
    root.fill(&WHITE)?;
    let (w, _) = root.dim_in_pixel();
    let mut top = 10 + TITLE_SIZE as i32;
    root.draw_text(
        &fig.title,
        &text(TITLE_SIZE).pos(Pos::new(HPos::Center, VPos::Top)),
        (w as i32 / 2, 8),
    )?;
    if let Some(sub) = &fig.subtitle {
        root.draw_text(
            sub,
            &text(SUBTITLE_SIZE)
                .color(&RGBColor(70, 70, 70))
                .pos(Pos::new(HPos::Center, VPos::Top)),
            (w as i32 / 2, top + 4),
        )?;
        top += SUBTITLE_SIZE as i32 + 6;
    }
    top += 6;
    let (_, rest) = root.split_vertically(top);
    let rest = if fig.legend.is_empty() {
        rest
    } else {
        let rows = legend_rows(&rest, &fig.legend)?;
        let (strip, below) = rest.split_vertically(rows.len() as u32 * LEGEND_ROW + 6);
        draw_legend(&strip, &fig.legend, &rows)?;
        below
    };
    let columns = fig.columns.max(1);
    let rows = fig.panels.len().div_ceil(columns).max(1);
    let areas = rest.split_evenly((rows, columns));
    for (panel, area) in fig.panels.iter().zip(&areas) {
        draw_panel(panel, area)?;
    }
    Ok(())
}

/// The legend entries of each row of the strip, wrapped to its width.
fn legend_rows<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
) -> Result<Vec<Vec<(usize, u32)>>, DrawError> {
    let (w, _) = area.dim_in_pixel();
    let style = text(LEGEND_SIZE);
    let mut rows: Vec<Vec<(usize, u32)>> = vec![Vec::new()];
    let mut used = 0u32;
    for (i, e) in entries.iter().enumerate() {
        let (tw, _) = area.estimate_text_size(&e.label, &style)?;
        let width = LEGEND_SAMPLE as u32 + 6 + tw + 22;
        if used + width > w.saturating_sub(20) && !rows.last().is_some_and(Vec::is_empty) {
            rows.push(Vec::new());
            used = 0;
        }
        if let Some(r) = rows.last_mut() {
            r.push((i, width));
        }
        used += width;
    }
    Ok(rows)
}

/// Draws the legend strip, each row centred.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    rows: &[Vec<(usize, u32)>],
) -> Result<(), DrawError> {
    let (w, _) = area.dim_in_pixel();
    let style = text(LEGEND_SIZE).pos(Pos::new(HPos::Left, VPos::Center));
    for (r, row) in rows.iter().enumerate() {
        let total: u32 = row.iter().map(|(_, w)| w).sum();
        let mut x = (w as i32 - total as i32) / 2;
        let y = r as i32 * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2;
        for &(i, width) in row {
            let e = &entries[i];
            let (x0, x1) = (x, x + LEGEND_SAMPLE);
            match e.mark {
                Mark::Line => area.draw(&PathElement::new(
                    vec![(x0, y), (x1, y)],
                    e.color.stroke_width(2),
                ))?,
                Mark::FaintLine => area.draw(&PathElement::new(
                    vec![(x0, y), (x1, y)],
                    e.color.mix(0.3).stroke_width(1),
                ))?,
                Mark::LineMarker => {
                    area.draw(&PathElement::new(
                        vec![(x0, y), (x1, y)],
                        e.color.stroke_width(2),
                    ))?;
                    area.draw(&Circle::new(((x0 + x1) / 2, y), 4, e.color.filled()))?;
                }
                Mark::Dot => area.draw(&Circle::new(((x0 + x1) / 2, y), 4, e.color.filled()))?,
                Mark::Dashed => {
                    for k in 0..3 {
                        let a = x0 + k * 10;
                        area.draw(&PathElement::new(
                            vec![(a, y), ((a + 6).min(x1), y)],
                            e.color.stroke_width(2),
                        ))?;
                    }
                }
                Mark::Box => area.draw(&Rectangle::new(
                    [(x0, y - 6), (x1, y + 6)],
                    e.color.mix(0.35).filled(),
                ))?,
            }
            area.draw_text(&e.label, &style, (x1 + 6, y))?;
            x += width as i32;
        }
    }
    Ok(())
}

/// A tick label.
pub(crate) fn tick_label(v: f64, ticks: Ticks) -> String {
    let a = v.abs();
    if a >= 1e4 || (ticks == Ticks::Count && a >= 1e3) {
        let (d, unit) = if a >= 1e9 {
            (1e9, "G")
        } else if a >= 1e6 {
            (1e6, "M")
        } else {
            (1e3, "k")
        };
        let scaled = v / d;
        let decimals = (2 - scaled.abs().log10().floor() as i32).clamp(0, 2) as usize;
        return format!("{}{unit}", trim(&format!("{scaled:.decimals$}")));
    }
    if ticks == Ticks::Count {
        return format!("{}", v.round() + 0.0);
    }
    if ticks == Ticks::Integer {
        if (v - v.round()).abs() > 1e-9 || v < -0.5 {
            return String::new();
        }
        return format!("{}", v.round() + 0.0);
    }
    if a == 0.0 || a < 1e-12 {
        return "0".into();
    }
    if a < 1e-3 {
        return format!("{v:.1e}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    trim(&format!("{v:.decimals$}"))
}

/// A value with three significant digits (k, M, G past 10,000).
pub(crate) fn short_number(v: f64) -> String {
    let a = v.abs();
    if !(1e-3..1e4).contains(&a) {
        return tick_label(v, Ticks::Number);
    }
    let decimals = (2 - a.log10().floor() as i32).clamp(0, 5) as usize;
    trim(&format!("{v:.decimals$}"))
}

/// Drops trailing zeros (and a trailing point) of a decimal number.
fn trim(s: &str) -> String {
    if s.contains('.') {
        let t = s.trim_end_matches('0').trim_end_matches('.');
        if t == "-0" {
            "0".into()
        } else {
            t.into()
        }
    } else {
        s.into()
    }
}

/// Draws one panel: caption, axes, mesh, items.
fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, Shift>,
) -> Result<(), DrawError> {
    if let Some(p) = &panel.picture {
        return draw_picture(panel.title.as_deref(), p, area);
    }
    let ((x0, x1), (y0, y1)) = panel.ranges();
    let tick = text(TICK_SIZE);
    // The y label area holds the tick labels and the rotated description.
    let (y_labels, label_style) = match &panel.categories {
        Some(c) => (c.clone(), text(LEGEND_SIZE)),
        None => (
            [y0, y1, (y0 + y1) / 2.0]
                .iter()
                .map(|&v| tick_label(v, panel.y_ticks))
                .collect::<Vec<_>>(),
            tick.clone(),
        ),
    };
    let mut widest = 0;
    for l in &y_labels {
        widest = widest.max(area.estimate_text_size(l, &label_style)?.0);
    }
    let desc_room = if panel.y_desc.is_empty() {
        0
    } else {
        DESC_SIZE + 10
    };
    let mut builder = ChartBuilder::on(area);
    builder
        .margin_top(6)
        .margin_bottom(12)
        .margin_left(6)
        .margin_right(18)
        .x_label_area_size(TICK_SIZE + DESC_SIZE + 22)
        .y_label_area_size(widest + desc_room + 14);
    if let Some(t) = &panel.title {
        builder.caption(t, text(PANEL_TITLE_SIZE));
    }
    let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1)?;
    let x_fmt = |v: &f64| tick_label(*v, panel.x_ticks);
    let y_fmt = |v: &f64| tick_label(*v, panel.y_ticks);
    {
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(panel.x_desc.as_str())
            .y_desc(panel.y_desc.as_str())
            .axis_desc_style(text(DESC_SIZE))
            .label_style(tick.clone())
            .x_labels(7)
            .y_labels(6)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .bold_line_style(RGBColor(215, 215, 215).stroke_width(1))
            .light_line_style(TRANSPARENT)
            .axis_style(RGBColor(90, 90, 90));
        if panel.categories.is_some() {
            mesh.disable_y_mesh().y_labels(0);
        }
        mesh.draw()?;
    }
    for item in &panel.items {
        match item {
            Item::Line {
                points,
                color,
                width,
                alpha,
            } => {
                chart.draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.mix(*alpha).stroke_width(*width),
                ))?;
            }
            Item::Markers {
                points,
                color,
                radius,
            } => {
                chart.draw_series(
                    points
                        .iter()
                        .map(|&p| Circle::new(p, *radius, color.filled())),
                )?;
            }
            Item::Band {
                x,
                lo,
                hi,
                color,
                alpha,
            } => {
                let mut outline: Vec<(f64, f64)> =
                    x.iter().copied().zip(hi.iter().copied()).collect();
                outline.extend(x.iter().copied().zip(lo.iter().copied()).rev());
                if outline.len() >= 3 {
                    chart.draw_series(std::iter::once(Polygon::new(
                        outline,
                        color.mix(*alpha).filled(),
                    )))?;
                }
            }
            Item::Bars { bars, color } => {
                chart.draw_series(bars.iter().map(|&(a, b, h)| {
                    Rectangle::new([(a, 0.0), (b, h)], color.mix(0.55).filled())
                }))?;
                chart.draw_series(
                    bars.iter().map(|&(a, b, h)| {
                        Rectangle::new([(a, 0.0), (b, h)], color.stroke_width(1))
                    }),
                )?;
            }
            Item::VLine { x, color } => {
                chart.draw_series(DashedLineSeries::new(
                    vec![(*x, y0), (*x, y1)],
                    7,
                    5,
                    color.stroke_width(2),
                ))?;
            }
            Item::HLine { y, color } => {
                chart.draw_series(DashedLineSeries::new(
                    vec![(x0, *y), (x1, *y)],
                    7,
                    5,
                    color.stroke_width(2),
                ))?;
            }
            Item::RowBars {
                values,
                color,
                highlight,
            } => {
                for (i, &v) in values.iter().enumerate() {
                    let y = row_y(panel, i);
                    let c = match highlight {
                        Some((h, hc)) if *h == i => *hc,
                        _ => *color,
                    };
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(0.0, y - 0.32), (v, y + 0.32)],
                        c.mix(0.75).filled(),
                    )))?;
                    chart.draw_series(std::iter::once(
                        EmptyElement::at((v, y))
                            + Text::new(
                                format!("{v:.3}"),
                                (5, 0),
                                text(TICK_SIZE).pos(Pos::new(HPos::Left, VPos::Center)),
                            ),
                    ))?;
                }
            }
            Item::Interval {
                row,
                lo,
                hi,
                point,
                color,
            } => {
                let y = row_y(panel, *row);
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(*lo, y), (*hi, y)],
                    color.mix(0.45).stroke_width(16),
                )))?;
                chart.draw_series(std::iter::once(
                    EmptyElement::at((*point, y))
                        + Rectangle::new([(-1, -11), (1, 11)], BLACK.filled()),
                ))?;
                let label = format!(
                    "{} [{}, {}]",
                    short_number(*point),
                    short_number(*lo),
                    short_number(*hi)
                );
                chart.draw_series(std::iter::once(
                    EmptyElement::at((*point, y))
                        + Text::new(
                            label,
                            (0, -14),
                            text(TICK_SIZE).pos(Pos::new(HPos::Center, VPos::Bottom)),
                        ),
                ))?;
            }
        }
    }
    if let Some(categories) = &panel.categories {
        // Row labels right-aligned left of the plotting area, where the numeric
        // labels would be.
        let base = area.get_base_pixel();
        let style = text(LEGEND_SIZE).pos(Pos::new(HPos::Right, VPos::Center));
        for (i, c) in categories.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(x0, row_y(panel, i)));
            area.draw_text(c, &style, (px - base.0 - 8, py - base.1))?;
        }
    }
    Ok(())
}

/// A picture panel: the caption on top, the image below it scaled (nearest
/// neighbour, aspect kept) to the largest size that fits, centred.
fn draw_picture<DB: DrawingBackend>(
    title: Option<&str>,
    p: &Picture,
    area: &DrawingArea<DB, Shift>,
) -> Result<(), DrawError> {
    let (w, h) = area.dim_in_pixel();
    let mut top = 6;
    if let Some(t) = title {
        area.draw_text(
            t,
            &text(PANEL_TITLE_SIZE).pos(Pos::new(HPos::Center, VPos::Top)),
            (w as i32 / 2, top),
        )?;
        top += PANEL_TITLE_SIZE as i32 + 8;
    }
    if p.width == 0 || p.height == 0 {
        return Ok(());
    }
    let room_w = w.saturating_sub(12) as f64;
    let room_h = (h as i32 - top - 6).max(1) as f64;
    let scale = (room_w / f64::from(p.width)).min(room_h / f64::from(p.height));
    let (sw, sh) = (
        ((f64::from(p.width) * scale) as u32).max(1),
        ((f64::from(p.height) * scale) as u32).max(1),
    );
    let mut buf = Vec::with_capacity(sw as usize * sh as usize * 3);
    for y in 0..sh {
        let sy = ((f64::from(y) / scale) as u32).min(p.height - 1);
        for x in 0..sw {
            let sx = ((f64::from(x) / scale) as u32).min(p.width - 1);
            let i = (sy as usize * p.width as usize + sx as usize) * 3;
            buf.extend_from_slice(&p.rgb[i..i + 3]);
        }
    }
    let x0 = (w as i32 - sw as i32) / 2;
    let element = BitMapElement::with_owned_buffer((x0, top), (sw, sh), buf)
        .ok_or_else(|| DrawError("picture buffer of the wrong size".into()))?;
    area.draw(&element)?;
    area.draw(&Rectangle::new(
        [(x0 - 1, top - 1), (x0 + sw as i32, top + sh as i32)],
        RGBColor(90, 90, 90).stroke_width(1),
    ))?;
    Ok(())
}

/// The y coordinate of row `row` of a category panel (row 0 on top).
fn row_y(panel: &Panel, row: usize) -> f64 {
    let n = panel.categories.as_ref().map_or(1, Vec::len);
    (n - 1 - row.min(n.saturating_sub(1))) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_follow_the_extension() {
        assert_eq!(
            output_paths(Path::new("a/b.png")),
            vec![PathBuf::from("a/b.png")]
        );
        assert_eq!(
            output_paths(Path::new("a/b.SVG")),
            vec![PathBuf::from("a/b.SVG")]
        );
        assert_eq!(
            output_paths(Path::new("a/curve.v2")),
            vec![
                PathBuf::from("a/curve.v2.png"),
                PathBuf::from("a/curve.v2.svg")
            ]
        );
        assert_eq!(
            output_paths(Path::new("curve")),
            vec![PathBuf::from("curve.png"), PathBuf::from("curve.svg")]
        );
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(150_000.0, Ticks::Count), "150k");
        assert_eq!(tick_label(1_250_000.0, Ticks::Count), "1.25M");
        assert_eq!(tick_label(148_480.0, Ticks::Count), "148k");
        assert_eq!(tick_label(12_500.0, Ticks::Count), "12.5k");
        assert_eq!(tick_label(2_000.0, Ticks::Count), "2k");
        assert_eq!(tick_label(500.0, Ticks::Count), "500");
        assert_eq!(tick_label(0.30000000000000004, Ticks::Number), "0.3");
        assert_eq!(tick_label(-0.0, Ticks::Number), "0");
        assert_eq!(tick_label(487.26, Ticks::Number), "487.3");
        assert_eq!(tick_label(2.0, Ticks::Integer), "2");
        assert_eq!(tick_label(2.5, Ticks::Integer), "");
        assert_eq!(tick_label(-1.0, Ticks::Integer), "");
        assert_eq!(tick_label(0.00012, Ticks::Number), "1.2e-4");
        assert_eq!(tick_label(25_000.0, Ticks::Number), "25k");
        assert_eq!(short_number(0.98276), "0.983");
        assert_eq!(short_number(487.26), "487");
        assert_eq!(short_number(1.5), "1.5");
    }
}
