//! Frames: what an env looks like, for videos, figures and explanations.
//!
//! A [`Frame`] is an 8-bit RGB image stored row by row from the top row down, each row
//! from left to right, three bytes (red, green, blue) per pixel: the layout of a PNG,
//! of ffmpeg's `rgb24` and of NumPy's `(height, width, 3)` `uint8` arrays that
//! Gymnasium's `render_mode="rgb_array"` returns. "Up" in the picture is up in the
//! world (MuJoCo's and OpenGL's bottom-up rows are flipped when the frame is made).

use super::{EnvError, EnvResult};

/// An RGB image, rows top to bottom (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// `height * width * 3` bytes.
    pub rgb: Vec<u8>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({}x{})", self.width, self.height)
    }
}

impl Frame {
    /// A frame of one colour.
    pub fn filled(width: u32, height: u32, rgb: [u8; 3]) -> Frame {
        let n = width as usize * height as usize;
        Frame {
            width,
            height,
            rgb: rgb.iter().copied().cycle().take(n * 3).collect(),
        }
    }

    /// A frame from its bytes, checked against its size.
    pub fn from_rgb(width: u32, height: u32, rgb: Vec<u8>) -> EnvResult<Frame> {
        let want = width as usize * height as usize * 3;
        if rgb.len() != want {
            return Err(EnvError::Native(format!(
                "a {width}x{height} RGB frame needs {want} bytes, got {}",
                rgb.len()
            )));
        }
        Ok(Frame { width, height, rgb })
    }

    /// A frame from rows stored bottom to top (OpenGL's and MuJoCo's read-back order).
    pub fn from_bottom_up(width: u32, height: u32, rgb: &[u8]) -> EnvResult<Frame> {
        let row = width as usize * 3;
        let mut flipped = Vec::with_capacity(rgb.len());
        for r in rgb.chunks_exact(row.max(1)).rev() {
            flipped.extend_from_slice(r);
        }
        Frame::from_rgb(width, height, flipped)
    }

    /// The pixel at column `x`, row `y` (0 is the top row).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Sets a pixel; outside the frame nothing happens.
    pub fn put(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if x < 0 || y < 0 || x >= i64::from(self.width) || y >= i64::from(self.height) {
            return;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        self.rgb[i..i + 3].copy_from_slice(&rgb);
    }

    /// Fills the axis-aligned rectangle `[x0, x1) x [y0, y1)` (pixels, clipped).
    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, rgb: [u8; 3]) {
        let (w, h) = (i64::from(self.width), i64::from(self.height));
        for y in y0.max(0)..y1.min(h) {
            for x in x0.max(0)..x1.min(w) {
                let i = (y as usize * self.width as usize + x as usize) * 3;
                self.rgb[i..i + 3].copy_from_slice(&rgb);
            }
        }
    }

    /// Fills the convex polygon with corners `pts` (pixel coordinates, any winding):
    /// every pixel whose centre is inside.
    pub fn fill_convex(&mut self, pts: &[(f64, f64)], rgb: [u8; 3]) {
        if pts.len() < 3 {
            return;
        }
        let (ymin, ymax) = pts.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
        let y0 = (ymin.floor() as i64).max(0);
        let y1 = (ymax.ceil() as i64).min(i64::from(self.height));
        for y in y0..y1 {
            let cy = y as f64 + 0.5;
            // Where the scan line crosses the polygon's edges.
            let (mut lo, mut hi) = (f64::MAX, f64::MIN);
            for (k, a) in pts.iter().enumerate() {
                let b = pts[(k + 1) % pts.len()];
                if (a.1 <= cy && b.1 > cy) || (b.1 <= cy && a.1 > cy) {
                    let x = a.0 + (cy - a.1) / (b.1 - a.1) * (b.0 - a.0);
                    lo = lo.min(x);
                    hi = hi.max(x);
                }
            }
            if lo > hi {
                continue;
            }
            for x in ((lo - 0.5).ceil() as i64).max(0)..=((hi - 0.5).floor() as i64) {
                self.put(x, y, rgb);
            }
        }
    }

    /// Fills the disc of radius `r` around `(cx, cy)` (pixel coordinates).
    pub fn fill_circle(&mut self, cx: f64, cy: f64, r: f64, rgb: [u8; 3]) {
        let (y0, y1) = ((cy - r).floor() as i64, (cy + r).ceil() as i64);
        let (x0, x1) = ((cx - r).floor() as i64, (cx + r).ceil() as i64);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                if dx * dx + dy * dy <= r * r {
                    self.put(x, y, rgb);
                }
            }
        }
    }

    /// This frame scaled by an integer factor (nearest neighbour): small observations
    /// (Procgen's 64x64) made visible.
    pub fn upscaled(&self, factor: u32) -> Frame {
        let f = factor.max(1);
        let (w, h) = (self.width * f, self.height * f);
        let mut rgb = Vec::with_capacity(w as usize * h as usize * 3);
        for y in 0..h {
            for x in 0..w {
                rgb.extend_from_slice(&self.pixel(x / f, y / f));
            }
        }
        Frame {
            width: w,
            height: h,
            rgb,
        }
    }
}

/// Writes `frame` as `<temp dir>/render/<name>` (a PNG), for looking at frames that tests
/// draw; returns the path.
#[cfg(test)]
pub(crate) fn save_png(frame: &Frame, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("render");
    std::fs::create_dir_all(&dir).expect("create the frames folder");
    let path = dir.join(name);
    let file = std::fs::File::create(&path).expect("create the png");
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), frame.width, frame.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().expect("png header");
    w.write_image_data(&frame.rgb).expect("png data");
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_run_top_down_and_bottom_up_input_is_flipped() {
        // Two rows: OpenGL gives the bottom row (blue) first.
        let gl = [0, 0, 255, 0, 0, 255, 255, 0, 0, 255, 0, 0];
        let f = Frame::from_bottom_up(2, 2, &gl).unwrap();
        assert_eq!(f.pixel(0, 0), [255, 0, 0]);
        assert_eq!(f.pixel(1, 1), [0, 0, 255]);
        assert!(Frame::from_rgb(2, 2, vec![0; 11]).is_err());
    }

    #[test]
    fn shapes_cover_the_pixels_inside_them() {
        let mut f = Frame::filled(20, 10, [255; 3]);
        f.fill_rect(2, 3, 5, 6, [0; 3]);
        assert_eq!(f.pixel(2, 3), [0; 3]);
        assert_eq!(f.pixel(4, 5), [0; 3]);
        assert_eq!(f.pixel(5, 5), [255; 3]);
        let mut g = Frame::filled(20, 20, [255; 3]);
        g.fill_convex(&[(10.0, 2.0), (18.0, 18.0), (2.0, 18.0)], [1, 2, 3]);
        assert_eq!(g.pixel(10, 10), [1, 2, 3]);
        assert_eq!(g.pixel(2, 3), [255; 3]);
        g.fill_circle(5.0, 5.0, 2.0, [9; 3]);
        assert_eq!(g.pixel(4, 4), [9; 3]);
        assert_eq!(g.pixel(0, 0), [255; 3]);
        let u = f.upscaled(3);
        assert_eq!((u.width, u.height), (60, 30));
        assert_eq!(u.pixel(6, 9), [0; 3]);
    }
}
