//! The backends the figures are drawn on: plotters' bitmap and SVG backends, with
//! text measured, and on bitmaps drawn, by the figure's font glyph by glyph.
//!
//! plotters 0.3.7 draws `ab_glyph` text without each glyph's left side bearing and
//! measures it at a larger size than its SVG backend writes, so PNG letters are
//! spaced unevenly and layouts computed for one file do not fit the other. Here both
//! use one size (an em of `size / 1.24` pixels, the SVG backend's `font-size`) and
//! one anchoring (the SVG backend's: a top anchor puts the baseline 0.76 em below
//! it, a centre anchor half the x-height); everything else goes to the inner
//! backend unchanged.

use ab_glyph::{point, Font, FontRef, Glyph, PxScale, ScaleFont};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};

use super::{PlotError, PlotResult};

/// plotters' ratio of a text style's size to the em it writes in SVG files.
const SIZE_PER_EM: f64 = 1.24;
/// Where a top-anchored baseline lies below the anchor, in ems (as in the SVG files).
const TOP_BASELINE_EM: f32 = 0.76;

/// A backend with text laid out by the figure's font.
pub(crate) struct FontBackend<B> {
    /// The backend that draws.
    inner: B,
    /// The font.
    font: FontRef<'static>,
    /// Draw text as pixels (bitmaps); else leave it to `inner` (SVG text elements).
    raster: bool,
}

impl<B> std::fmt::Debug for FontBackend<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FontBackend")
            .field("raster", &self.raster)
            .finish_non_exhaustive()
    }
}

/// A line of text laid out: each glyph with its pen position, and the advance.
struct Line {
    /// Glyphs at their x from the start of the line, on the baseline.
    glyphs: Vec<Glyph>,
    /// The advance of the whole line.
    width: f32,
    /// Ascent above the baseline (positive).
    ascent: f32,
    /// Descent below the baseline (negative).
    descent: f32,
    /// The em in pixels.
    em: f32,
}

impl<B: DrawingBackend> FontBackend<B> {
    /// Wraps `inner`; `bytes` is a TrueType font, `raster` whether to draw text as
    /// pixels.
    pub fn new(inner: B, bytes: &'static [u8], raster: bool) -> PlotResult<Self> {
        let font = FontRef::try_from_slice(bytes)
            .map_err(|e| PlotError::Font(format!("the font cannot be read: {e}")))?;
        Ok(FontBackend {
            inner,
            font,
            raster,
        })
    }

    /// Lays out `text` at a plotters text size.
    fn layout(&self, text: &str, size: f64) -> Line {
        let em = (size / SIZE_PER_EM) as f32;
        let upem = self.font.units_per_em().unwrap_or(1000.0);
        let scale = PxScale::from(em * self.font.height_unscaled() / upem);
        let scaled = self.font.as_scaled(scale);
        let (glyphs, x) = super::font::lay_out(&scaled, scale, text);
        Line {
            glyphs,
            width: x,
            ascent: scaled.ascent(),
            descent: scaled.descent(),
            em,
        }
    }

    /// The x-height of the font at `line`'s scale (the ink top of "x").
    fn x_height(&self, line: &Line) -> f32 {
        let scale = line
            .glyphs
            .first()
            .map_or(PxScale::from(line.em), |g| g.scale);
        let x = self
            .font
            .glyph_id('x')
            .with_scale_and_position(scale, point(0.0, 0.0));
        self.font
            .outline_glyph(x)
            .map_or(0.5 * line.em, |o| -o.px_bounds().min.y)
    }
}

impl<B: DrawingBackend> DrawingBackend for FontBackend<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<TStyle: BackendTextStyle>(
        &self,
        text: &str,
        style: &TStyle,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let line = self.layout(text, style.size());
        Ok((
            line.width.ceil() as u32,
            (line.ascent - line.descent).ceil() as u32,
        ))
    }

    fn draw_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        if !self.raster {
            return self.inner.draw_text(text, style, pos);
        }
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let line = self.layout(text, style.size());
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -line.width / 2.0,
            HPos::Right => -line.width,
        };
        let baseline = match anchor.v_pos {
            VPos::Top => TOP_BASELINE_EM * line.em,
            VPos::Center => 0.5 * self.x_height(&line),
            VPos::Bottom => -0.5 * self.x_height(&line),
        };
        let transform = style.transform();
        let (w, h) = self.get_size();
        let mut pixels = Vec::new();
        for mut glyph in line.glyphs {
            glyph.position = point(glyph.position.x + dx, baseline);
            let Some(outline) = self.font.outline_glyph(glyph) else {
                continue;
            };
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                if coverage > 0.0 {
                    let x = bounds.min.x as i32 + gx as i32;
                    let y = bounds.min.y as i32 + gy as i32;
                    pixels.push((transform.transform(x, y), coverage.min(1.0)));
                }
            });
        }
        for ((x, y), coverage) in pixels {
            let (x, y) = (pos.0 + x, pos.1 + y);
            if x >= 0 && y >= 0 && x < w as i32 && y < h as i32 {
                let c = BackendColor {
                    alpha: color.alpha * f64::from(coverage),
                    rgb: color.rgb,
                };
                self.inner.draw_pixel((x, y), c)?;
            }
        }
        Ok(())
    }
}
