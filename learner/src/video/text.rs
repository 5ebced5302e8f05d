//! Text on frames: a few lines ("return 12.5", "step 37") in a corner, white on a
//! semi-opaque black box, drawn glyph by glyph with the plots' font
//! ([`crate::plot::font`], DejaVu Sans found at run time) and blended by coverage.
//!
//! The text's em is [`text_size`]`(frame height)`: a twentieth of the height, at
//! least 9 and at most 72 pixels; on a 600x400 frame a 20-pixel em, on 64x64 the
//! 9-pixel least, which is legible but fills a third of the frame with two lines.
//! Small frames are better upscaled first: [`upscaled_for_text`]`(frame,`
//! [`TEXT_MIN_HEIGHT`]`)` scales Procgen's 64x64 by 4 (nearest neighbour, the pixels
//! stay sharp) to 256x256, where the em is 12.8 pixels and two lines take a fifth of
//! the height. Lines wider than the frame are cut at its edge.

use std::borrow::Cow;

use ab_glyph::{point, Font, FontRef, Glyph, PxScale, ScaleFont};

use super::{check_frame, Frame, VideoError, VideoResult};
use crate::plot::font;

/// The height small frames are upscaled to before text is put on them
/// ([`upscaled_for_text`]).
pub const TEXT_MIN_HEIGHT: u32 = 256;

/// The text's colour.
const INK: [u8; 3] = [255, 255, 255];
/// The box's colour and opacity.
const BACKING: [u8; 3] = [0, 0, 0];
const BACKING_ALPHA: f32 = 0.6;

/// Which corner of the frame the text goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Corner {
    #[default]
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
}

/// The em of the text on a frame `height` pixels high: `height / 20`, from 9 to 72
/// pixels.
pub fn text_size(height: u32) -> f32 {
    (height as f32 / 20.0).clamp(9.0, 72.0)
}

/// `frame` scaled by the least whole factor that makes it at least `min_height`
/// pixels high (nearest neighbour); the frame itself when it already is.
pub fn upscaled_for_text(frame: &Frame, min_height: u32) -> Cow<'_, Frame> {
    if frame.height == 0 || frame.height >= min_height {
        Cow::Borrowed(frame)
    } else {
        Cow::Owned(frame.upscaled(min_height.div_ceil(frame.height)))
    }
}

/// Draws `lines` in the top left corner of `frame` (see the module docs).
pub fn annotate(frame: &mut Frame, lines: &[&str]) -> VideoResult<()> {
    annotate_at(frame, lines, Corner::TopLeft)
}

/// A line laid out: glyphs at their x from the line's start, and its advance.
struct Line {
    glyphs: Vec<Glyph>,
    width: f32,
}

/// Draws `lines` in `corner` of `frame`, one below the other, left-aligned on one box.
pub fn annotate_at(frame: &mut Frame, lines: &[&str], corner: Corner) -> VideoResult<()> {
    check_frame(frame)?;
    if lines.is_empty() {
        return Ok(());
    }
    let (_, bytes) = font::loaded().map_err(|e| VideoError::Font(e.to_string()))?;
    let font = FontRef::try_from_slice(bytes)
        .map_err(|e| VideoError::Font(format!("the font cannot be read: {e}")))?;
    let em = text_size(frame.height);
    let upem = font.units_per_em().unwrap_or(1000.0);
    // ab_glyph scales by ascent minus descent; this makes the em `em` pixels.
    let scale = PxScale::from(em * font.height_unscaled() / upem);
    let scaled = font.as_scaled(scale);
    let laid: Vec<Line> = lines.iter().map(|l| layout(&scaled, scale, l)).collect();

    let line_h = (scaled.ascent() - scaled.descent() + 0.1 * em).ceil() as i64;
    let pad = (0.35 * em).round().max(2.0) as i64;
    let margin = (0.3 * em).round().max(1.0) as i64;
    let text_w = laid.iter().map(|l| l.width).fold(0.0, f32::max).ceil() as i64;
    let box_w = text_w + 2 * pad;
    let box_h = laid.len() as i64 * line_h + 2 * pad - (0.1 * em).ceil() as i64;
    let (fw, fh) = (i64::from(frame.width), i64::from(frame.height));
    let x0 = match corner {
        Corner::TopLeft | Corner::BottomLeft => margin,
        Corner::TopRight | Corner::BottomRight => (fw - margin - box_w).max(0),
    };
    let y0 = match corner {
        Corner::TopLeft | Corner::TopRight => margin,
        Corner::BottomLeft | Corner::BottomRight => (fh - margin - box_h).max(0),
    };

    for y in y0.max(0)..(y0 + box_h).min(fh) {
        for x in x0.max(0)..(x0 + box_w).min(fw) {
            blend(frame, x, y, BACKING, BACKING_ALPHA);
        }
    }
    let ascent = scaled.ascent().round() as i64;
    for (i, line) in laid.into_iter().enumerate() {
        let baseline = (y0 + pad + i as i64 * line_h + ascent) as f32;
        let left = (x0 + pad) as f32;
        for mut glyph in line.glyphs {
            glyph.position = point(left + glyph.position.x, baseline);
            let Some(outline) = font.outline_glyph(glyph) else {
                continue;
            };
            let b = outline.px_bounds();
            let (bx, by) = (b.min.x as i64, b.min.y as i64);
            outline.draw(|gx, gy, coverage| {
                if coverage > 0.0 {
                    let (x, y) = (bx + i64::from(gx), by + i64::from(gy));
                    blend(frame, x, y, INK, coverage.min(1.0));
                }
            });
        }
    }
    Ok(())
}

/// Lays `text` out on one line with kerning.
fn layout<F: Font, S: ScaleFont<F>>(scaled: &S, scale: PxScale, text: &str) -> Line {
    let (glyphs, width) = font::lay_out(scaled, scale, text);
    Line { glyphs, width }
}

/// Mixes `rgb` into the pixel at `(x, y)` with opacity `alpha`; outside the frame
/// nothing happens.
fn blend(frame: &mut Frame, x: i64, y: i64, rgb: [u8; 3], alpha: f32) {
    if x < 0 || y < 0 || x >= i64::from(frame.width) || y >= i64::from(frame.height) {
        return;
    }
    let i = (y as usize * frame.width as usize + x as usize) * 3;
    for (c, &v) in frame.rgb[i..i + 3].iter_mut().zip(&rgb) {
        *c = (f32::from(*c) * (1.0 - alpha) + f32::from(v) * alpha).round() as u8;
    }
}
