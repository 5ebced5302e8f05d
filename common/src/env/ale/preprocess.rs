//! The frames of `preprocess=dqn`: the luminance of the last two screens of a step
//! (palette indices, through the emulator's grayscale palette) max-pooled, shrunk
//! by area interpolation (OpenCV's `INTER_AREA`, in fixed point) and stacked as
//! channels.

use super::options::Preprocess;

/// Area interpolation weights of one axis, `src` pixels onto `dst` (OpenCV's
/// `INTER_AREA` when shrinking): destination pixel `j` covers the source interval
/// `[j * s, (j + 1) * s)`, `s = src / dst`, and averages the pixels it overlaps,
/// each weighted by the overlap. Weights are fixed point ([`ONE`] is 1) and sum to
/// exactly [`ONE`] per destination pixel, so a flat image stays flat.
#[derive(Debug, Clone)]
pub(crate) struct AreaAxis {
    /// Per destination pixel: the first source pixel and the weights from it on.
    taps: Vec<(usize, [u32; MAX_TAPS])>,
}

/// Fixed-point one of the weights (16 bits).
const ONE: u32 = 1 << 16;
/// Source pixels one destination pixel can overlap (enough for shrinking by < 3).
const MAX_TAPS: usize = 4;

impl AreaAxis {
    pub(crate) fn new(src: usize, dst: usize) -> AreaAxis {
        let scale = src as f64 / dst as f64;
        let taps = (0..dst)
            .map(|j| {
                let (lo, hi) = (j as f64 * scale, (j + 1) as f64 * scale);
                let first = lo.floor() as usize;
                let mut w = [0u32; MAX_TAPS];
                let mut used = 0;
                for (k, wk) in w.iter_mut().enumerate() {
                    let i = first + k;
                    if i >= src || i as f64 >= hi {
                        break;
                    }
                    let overlap = (hi.min(i as f64 + 1.0) - lo.max(i as f64)).max(0.0);
                    *wk = (overlap / scale * f64::from(ONE)).round() as u32;
                    used = k + 1;
                }
                // Rounding leaves the sum a unit or two off: the largest weight
                // takes the difference.
                let sum: u32 = w.iter().sum();
                if let Some(big) = (0..used).max_by_key(|&k| w[k]) {
                    w[big] = (w[big] + ONE).saturating_sub(sum);
                }
                (first, w)
            })
            .collect();
        AreaAxis { taps }
    }

    /// Whether shrinking `src` pixels to `dst` fits [`MAX_TAPS`] taps.
    pub(crate) fn supported(src: usize, dst: usize) -> bool {
        dst > 0 && src >= dst && (src as f64 / dst as f64) < (MAX_TAPS - 1) as f64
    }
}

/// Shrinks `height x width` frames to `size x size` in fixed point, from the
/// max-pool of two screens of palette indices.
#[derive(Debug, Clone)]
struct Resize {
    width: usize,
    height: usize,
    /// Per source row: the destination rows it overlaps and its weight in each.
    row_weights: Vec<Vec<(usize, u32)>>,
    cols: AreaAxis,
    /// One source row's pooled luminance.
    row: Vec<u8>,
    /// Vertical pass: `size x width`, the pixel values times 2^16.
    tmp: Vec<u32>,
    size: usize,
}

impl Resize {
    fn new(height: usize, width: usize, size: usize) -> Resize {
        let mut row_weights = vec![Vec::new(); height];
        for (j, (first, wt)) in AreaAxis::new(height, size).taps.iter().enumerate() {
            for (k, &wk) in wt.iter().enumerate() {
                if wk > 0 && first + k < height {
                    row_weights[first + k].push((j, wk));
                }
            }
        }
        Resize {
            width,
            height,
            row_weights,
            cols: AreaAxis::new(width, size),
            row: vec![0; width],
            tmp: vec![0; size * width],
            size,
        }
    }

    /// Shrinks the luminance frame `src` into `dst`.
    #[cfg(test)]
    fn run(&mut self, src: &[u8], dst: &mut [u8]) {
        let identity: [u8; 256] = std::array::from_fn(|i| i as u8);
        self.run_max(src, src, &identity, dst);
    }

    /// Shrinks the pixel-wise maximum of the luminances (`gray`) of the palette
    /// indices `a` and `b` into `dst`. The vertical pass goes a source row at a time:
    /// the row is pooled once and added, whole (which vectorises), to the one or two
    /// destination rows it overlaps; the horizontal pass then runs on the `size` rows
    /// left.
    fn run_max(&mut self, a: &[u8], b: &[u8], gray: &[u8; 256], dst: &mut [u8]) {
        let (w, h, s) = (self.width, self.height, self.size);
        self.tmp.fill(0);
        for (y, weights) in self.row_weights.iter().enumerate().take(h) {
            let line = y * w..(y + 1) * w;
            for ((o, &ia), &ib) in self.row.iter_mut().zip(&a[line.clone()]).zip(&b[line]) {
                *o = gray[usize::from(ia)].max(gray[usize::from(ib)]);
            }
            for &(j, wk) in weights {
                let out = &mut self.tmp[j * w..(j + 1) * w];
                for (o, &p) in out.iter_mut().zip(&self.row) {
                    *o += u32::from(p) * wk;
                }
            }
        }
        for (row, out) in self.tmp.chunks_exact(w).zip(dst.chunks_exact_mut(s)) {
            for (o, (first, wt)) in out.iter_mut().zip(&self.cols.taps) {
                let first = *first;
                let taps = &row[first..(first + MAX_TAPS).min(w)];
                // 8.16 times 0.16 overflows u32: the rows are 8.8 for this pass.
                let acc: u32 = taps.iter().zip(wt).map(|(&t, &wk)| (t >> 8) * wk).sum();
                // 8.8 times 0.16 is 24 fractional bits; round half up.
                *o = ((acc + (1 << 23)) >> 24).min(255) as u8;
            }
        }
    }
}

/// The preprocessing's state: the last two screens of a step, the resizer and the
/// frame stack.
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    pub(crate) p: Preprocess,
    /// The screens of the step's last two frames (palette indices, full size).
    pub(crate) last: [Vec<u8>; 2],
    /// The luminance of each palette index (the emulator's grayscale palette).
    gray: [u8; 256],
    resize: Resize,
    /// `stack` frames of `size x size`, a ring; `head` is the newest.
    frames: Vec<u8>,
    head: usize,
}

impl Pipeline {
    pub(crate) fn new(p: Preprocess, height: usize, width: usize, gray: [u8; 256]) -> Pipeline {
        let n = height * width;
        Pipeline {
            p,
            last: [vec![0; n], vec![0; n]],
            gray,
            resize: Resize::new(height, width, p.screen_size),
            frames: vec![0; p.stack * p.screen_size * p.screen_size],
            head: 0,
        }
    }

    fn frame_len(&self) -> usize {
        self.p.screen_size * self.p.screen_size
    }

    /// Max-pools the two screens, shrinks the result and pushes it on the stack (or
    /// fills the stack with it).
    pub(crate) fn push(&mut self, fill: bool) {
        let n = self.frame_len();
        self.head = (self.head + 1) % self.p.stack;
        let [a, b] = &self.last;
        let newest = self.head * n..(self.head + 1) * n;
        self.resize
            .run_max(a, b, &self.gray, &mut self.frames[newest.clone()]);
        if fill {
            for c in (0..self.p.stack).filter(|&c| c != self.head) {
                self.frames.copy_within(newest.clone(), c * n);
            }
        }
    }

    /// The stack as `[size, size, stack]` (HWC), channel `c` the frame `stack - 1 - c`
    /// steps old.
    pub(crate) fn write(&self, obs: &mut [u8]) {
        let (n, k) = (self.frame_len(), self.p.stack);
        let frame = |c: usize| {
            let f = (self.head + 1 + c) % k;
            &self.frames[f * n..(f + 1) * n]
        };
        if k == 4 {
            // The usual stack: one 4-byte pixel at a time.
            let (f0, f1, f2, f3) = (frame(0), frame(1), frame(2), frame(3));
            for (px, o) in obs.chunks_exact_mut(4).enumerate() {
                o.copy_from_slice(&[f0[px], f1[px], f2[px], f3[px]]);
            }
            return;
        }
        for c in 0..k {
            let f = (self.head + 1 + c) % k;
            let frame = &self.frames[f * n..(f + 1) * n];
            for (px, &v) in frame.iter().enumerate() {
                obs[px * k + c] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_resize_averages_what_each_pixel_covers() {
        // An integer factor averages blocks exactly.
        let src: Vec<u8> = vec![0, 4, 8, 12, 2, 6, 10, 14, 100, 100, 0, 0, 100, 100, 0, 255];
        let mut r = Resize::new(4, 4, 2);
        let mut dst = [0u8; 4];
        r.run(&src, &mut dst);
        assert_eq!(dst, [3, 11, 100, 64]);
        // A fractional one: every output's weights sum to 1, so flat stays flat.
        for (src_n, dst_n) in [(210, 84), (160, 84), (250, 84), (230, 84)] {
            assert!(AreaAxis::supported(src_n, dst_n));
            let axis = AreaAxis::new(src_n, dst_n);
            for (first, w) in &axis.taps {
                assert_eq!(w.iter().sum::<u32>(), ONE, "{src_n}->{dst_n} at {first}");
            }
        }
        assert!(
            !AreaAxis::supported(210, 42),
            "shrinking by 5 needs more taps"
        );
        let mut r = Resize::new(210, 160, 84);
        let mut dst = vec![0u8; 84 * 84];
        r.run(&vec![77u8; 210 * 160], &mut dst);
        assert!(dst.iter().all(|&v| v == 77));
    }

    #[test]
    fn stacks_are_oldest_first_for_any_depth() {
        for k in [2, 3, 4] {
            let p = Preprocess {
                noop_max: 0,
                screen_size: 4,
                stack: k,
            };
            let identity: [u8; 256] = std::array::from_fn(|i| i as u8);
            let mut pipe = Pipeline::new(p, 8, 8, identity);
            let mut obs = vec![0u8; 16 * k];
            // Screens of value 10, then 20, 30, ...: each pushed as both last screens,
            // except that the max-pool must take the brighter of the two.
            pipe.last[0].fill(10);
            pipe.last[1].fill(0);
            pipe.push(true);
            pipe.write(&mut obs);
            assert!(
                obs.iter().all(|&v| v == 10),
                "k {k}: a reset fills the stack"
            );
            for step in 2..=5u8 {
                pipe.last[0].fill(step * 10);
                pipe.last[1].fill(step * 10 - 5);
                pipe.push(false);
            }
            pipe.write(&mut obs);
            for (c, px) in obs.chunks_exact(k).next().unwrap().iter().enumerate() {
                let want = (5 - (k - 1 - c) as u8) * 10;
                assert_eq!(*px, want, "k {k}, channel {c}");
            }
            for px in obs.chunks_exact(k) {
                assert_eq!(
                    px,
                    obs.chunks_exact(k).next().unwrap(),
                    "k {k}: flat frames"
                );
            }
        }
    }
}
