//! The statistics of the figures.
//!
//! Curves: [`moving_average`] (trailing), [`interpolate`] onto a grid, and
//! [`mean_band`]: the mean over runs with a 95% band of mean +- 1.96 standard errors
//! (normal approximation; with few runs it is optimistic, and with one run it is the
//! line itself).
//!
//! Aggregates across runs and tasks, after Agarwal et al. 2021, "Deep Reinforcement
//! Learning at the Edge of the Statistical Precipice" (the `rliable` library):
//! - [`iqm`]: the interquartile mean, `scipy.stats.trim_mean(scores, 0.25)` over
//!   every run of every task: the sorted scores lose `floor(0.25 n)` from each end
//!   (whole scores: with `n = 10` two go from each end, not 2.5) and the rest are
//!   averaged;
//! - [`score_profile`]: the performance profile, the fraction of all runs' scores
//!   above each threshold tau;
//! - their 95% intervals ([`iqm_interval`], [`score_profile`]) come from a stratified
//!   bootstrap ([`Bootstrap`]): each resample draws, for every task on its own, as
//!   many runs as there are with replacement; the interval is the 2.5th and 97.5th
//!   percentiles (linear interpolation, numpy's default) of the statistic over the
//!   resamples.

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::series::Series;
use super::{PlotError, PlotResult};

/// The trailing moving average over `window` points: point `i` is the mean of
/// points `i + 1 - window ..= i` (fewer at the start), so a smoothed curve never
/// looks ahead. A window of 0 or 1 returns the values.
pub fn moving_average(y: &[f64], window: usize) -> Vec<f64> {
    let window = window.max(1);
    let mut out = Vec::with_capacity(y.len());
    let mut sum = 0.0;
    for (i, v) in y.iter().enumerate() {
        sum += v;
        if i >= window {
            sum -= y[i - window];
        }
        out.push(sum / (i + 1).min(window) as f64);
    }
    out
}

/// `n` evenly spaced points from `lo` to `hi` (both included; `lo` alone if `n` is 1).
pub fn linspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![lo],
        _ => (0..n)
            .map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64)
            .collect(),
    }
}

/// Linear interpolation of the points `(x, y)` (`x` not decreasing) at each point of
/// `grid`: `None` outside `[x[0], x[last]]`. At an `x` logged twice, the later value.
pub fn interpolate(x: &[f64], y: &[f64], grid: &[f64]) -> Vec<Option<f64>> {
    let n = x.len().min(y.len());
    grid.iter()
        .map(|&g| {
            if n == 0 || g < x[0] || g > x[n - 1] {
                return None;
            }
            // The first point past g; g lies between it and the one before.
            let j = x[..n].partition_point(|&v| v <= g);
            if j == 0 {
                return Some(y[0]);
            }
            if j == n {
                return Some(y[n - 1]);
            }
            let (x0, x1, y0, y1) = (x[j - 1], x[j], y[j - 1], y[j]);
            Some(y0 + (y1 - y0) * (g - x0) / (x1 - x0))
        })
        .collect()
}

/// The mean and 95% half-width (1.96 standard errors of the mean, the standard
/// deviation with `n - 1`) of `values`; the half-width is 0 for one value.
pub fn mean_ci95(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, 1.96 * (var / n).sqrt())
}

/// Curves of several runs on one grid: the mean over runs with its 95% band.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// The grid.
    pub x: Vec<f64>,
    /// The mean over runs at each grid point.
    pub mean: Vec<f64>,
    /// Mean - 1.96 standard errors.
    pub lo: Vec<f64>,
    /// Mean + 1.96 standard errors.
    pub hi: Vec<f64>,
    /// How many runs.
    pub runs: usize,
}

/// Interpolates each curve onto `points` grid points over the range every curve
/// covers (from the latest first point to the earliest last point) and takes the
/// mean and its 95% band ([`mean_ci95`]) at each; `None` when the curves share no
/// range (or one is empty).
pub fn mean_band(curves: &[Series], points: usize) -> Option<Band> {
    let lo = curves
        .iter()
        .map(|c| c.x.first().copied())
        .try_fold(f64::NEG_INFINITY, |m, v| v.map(|v| m.max(v)))?;
    let hi = curves
        .iter()
        .map(|c| c.x.last().copied())
        .try_fold(f64::INFINITY, |m, v| v.map(|v| m.min(v)))?;
    if curves.is_empty() || hi < lo {
        return None;
    }
    let grid = linspace(lo, hi, if hi > lo { points.max(2) } else { 1 });
    let columns: Vec<Vec<Option<f64>>> = curves
        .iter()
        .map(|c| interpolate(&c.x, &c.y, &grid))
        .collect();
    let mut band = Band {
        x: Vec::with_capacity(grid.len()),
        mean: Vec::with_capacity(grid.len()),
        lo: Vec::with_capacity(grid.len()),
        hi: Vec::with_capacity(grid.len()),
        runs: curves.len(),
    };
    for (i, &g) in grid.iter().enumerate() {
        let at: Option<Vec<f64>> = columns.iter().map(|c| c[i]).collect();
        let Some(at) = at else { continue };
        let (m, h) = mean_ci95(&at);
        band.x.push(g);
        band.mean.push(m);
        band.lo.push(m - h);
        band.hi.push(m + h);
    }
    Some(band)
}

/// The mean of `values` without the `floor(proportion * n)` smallest and as many
/// largest (`scipy.stats.trim_mean`); NaN when nothing is left.
pub fn trimmed_mean(values: &[f64], proportion: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    trimmed_mean_sorted(&sorted, proportion)
}

/// [`trimmed_mean`] of values already sorted.
fn trimmed_mean_sorted(sorted: &[f64], proportion: f64) -> f64 {
    let n = sorted.len();
    let cut = (proportion * n as f64).floor() as usize;
    if 2 * cut >= n {
        return f64::NAN;
    }
    let kept = &sorted[cut..n - cut];
    kept.iter().sum::<f64>() / kept.len() as f64
}

/// The interquartile mean: [`trimmed_mean`] with 25% cut from each end.
pub fn iqm(values: &[f64]) -> f64 {
    trimmed_mean(values, 0.25)
}

/// The `q`-th percentile (0..=100) of sorted values, interpolating linearly between
/// the two nearest ranks (numpy's default); NaN for no values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let rank = (q / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
            let i = rank.floor() as usize;
            let j = (i + 1).min(n - 1);
            sorted[i] + (sorted[j] - sorted[i]) * (rank - i as f64)
        }
    }
}

/// The fraction of `values` strictly above `tau`.
pub fn fraction_above(values: &[f64], tau: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().filter(|&&v| v > tau).count() as f64 / values.len() as f64
}

/// Scores of one method: `runs` x `tasks`, one score per run of each task (e.g. each
/// run's final evaluation mean).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreMatrix {
    /// Row-major: run `r`, task `t` at `r * tasks + t`.
    values: Vec<f64>,
    /// Rows.
    runs: usize,
    /// Columns.
    tasks: usize,
}

impl ScoreMatrix {
    /// A matrix from its rows (one per run, one score per task each): at least one
    /// run and one task, every row as long, every score finite.
    pub fn new(rows: Vec<Vec<f64>>) -> PlotResult<ScoreMatrix> {
        let runs = rows.len();
        let tasks = rows.first().map_or(0, Vec::len);
        if runs == 0 || tasks == 0 {
            return Err(PlotError::BadInput(
                "a score matrix needs at least one run and one task".into(),
            ));
        }
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != tasks) {
            return Err(PlotError::BadInput(format!(
                "score matrix row {i} has {} scores, row 0 has {tasks}",
                r.len()
            )));
        }
        let values: Vec<f64> = rows.into_iter().flatten().collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(PlotError::BadInput(format!(
                "score of run {} task {} is not finite",
                i / tasks,
                i % tasks
            )));
        }
        Ok(ScoreMatrix {
            values,
            runs,
            tasks,
        })
    }

    /// A matrix of one task: one score per run.
    pub fn single_task(scores: Vec<f64>) -> PlotResult<ScoreMatrix> {
        ScoreMatrix::new(scores.into_iter().map(|s| vec![s]).collect())
    }

    /// The number of runs (rows).
    pub fn runs(&self) -> usize {
        self.runs
    }

    /// The number of tasks (columns).
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// Every score, row-major.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// The score of run `run` on task `task`.
    pub fn get(&self, run: usize, task: usize) -> Option<f64> {
        (run < self.runs && task < self.tasks).then(|| self.values[run * self.tasks + task])
    }

    /// Normalised scores `(s - low[t]) / (high[t] - low[t])` per task `t` (e.g. random
    /// and human scores, so that 0 is random and 1 human).
    pub fn normalized(&self, low: &[f64], high: &[f64]) -> PlotResult<ScoreMatrix> {
        if low.len() != self.tasks || high.len() != self.tasks {
            return Err(PlotError::BadInput(format!(
                "normalisation needs {} low and high scores, got {} and {}",
                self.tasks,
                low.len(),
                high.len()
            )));
        }
        if let Some(t) = (0..self.tasks).find(|&t| high[t] - low[t] == 0.0) {
            return Err(PlotError::BadInput(format!(
                "normalisation of task {t}: its low and high scores are equal"
            )));
        }
        let values = self
            .values
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let t = i % self.tasks;
                (s - low[t]) / (high[t] - low[t])
            })
            .collect();
        Ok(ScoreMatrix {
            values,
            runs: self.runs,
            tasks: self.tasks,
        })
    }

    /// A stratified resample into `out`: for each task, `runs` draws of its runs with
    /// replacement.
    fn resample<R: Rng>(&self, rng: &mut R, out: &mut Vec<f64>) {
        out.clear();
        out.resize(self.values.len(), 0.0);
        for t in 0..self.tasks {
            for r in 0..self.runs {
                let k = rng.random_range(0..self.runs);
                out[r * self.tasks + t] = self.values[k * self.tasks + t];
            }
        }
    }
}

/// The stratified bootstrap of the aggregates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bootstrap {
    /// Resamples.
    pub reps: usize,
    /// Coverage of the interval (0.95: the 2.5th to the 97.5th percentile).
    pub confidence: f64,
    /// The seed of the resampling (the same seed, the same interval).
    pub seed: u64,
}

impl Bootstrap {
    /// Resamples by default (rliable's for performance profiles).
    pub const DEFAULT_REPS: usize = 2000;
    /// The default coverage.
    pub const DEFAULT_CONFIDENCE: f64 = 0.95;
    /// The default seed.
    pub const DEFAULT_SEED: u64 = 0;

    /// The percentiles bounding the interval.
    fn bounds(&self) -> (f64, f64) {
        let tail = (1.0 - self.confidence.clamp(0.0, 1.0)) / 2.0 * 100.0;
        (tail, 100.0 - tail)
    }

    /// Runs `stat` on `reps` resamples of `m`, each returning `width` values, and
    /// returns the interval bounds of each.
    fn intervals<F>(&self, m: &ScoreMatrix, width: usize, mut stat: F) -> (Vec<f64>, Vec<f64>)
    where
        F: FnMut(&[f64], &mut [f64]),
    {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed);
        let reps = self.reps.max(1);
        let mut draws = vec![vec![0.0; reps]; width];
        let mut sample = Vec::new();
        let mut out = vec![0.0; width];
        for rep in 0..reps {
            m.resample(&mut rng, &mut sample);
            stat(&sample, &mut out);
            for (d, v) in draws.iter_mut().zip(&out) {
                d[rep] = *v;
            }
        }
        let (lo_q, hi_q) = self.bounds();
        draws
            .into_iter()
            .map(|mut d| {
                d.sort_by(f64::total_cmp);
                (percentile(&d, lo_q), percentile(&d, hi_q))
            })
            .unzip()
    }
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            reps: Self::DEFAULT_REPS,
            confidence: Self::DEFAULT_CONFIDENCE,
            seed: Self::DEFAULT_SEED,
        }
    }
}

/// A point estimate with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The statistic of the scores.
    pub point: f64,
    /// The interval's lower end.
    pub lo: f64,
    /// The interval's upper end.
    pub hi: f64,
}

/// The IQM of every score of `m` with its stratified bootstrap interval.
pub fn iqm_interval(m: &ScoreMatrix, bootstrap: &Bootstrap) -> Interval {
    let mut sorted = Vec::new();
    let (lo, hi) = bootstrap.intervals(m, 1, |sample, out| {
        sorted.clear();
        sorted.extend_from_slice(sample);
        sorted.sort_by(f64::total_cmp);
        out[0] = trimmed_mean_sorted(&sorted, 0.25);
    });
    Interval {
        point: iqm(m.values()),
        lo: lo[0],
        hi: hi[0],
    }
}

/// A performance profile with its confidence band.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The thresholds.
    pub tau: Vec<f64>,
    /// The fraction of scores above each threshold.
    pub fraction: Vec<f64>,
    /// The band's lower end at each threshold.
    pub lo: Vec<f64>,
    /// The band's upper end at each threshold.
    pub hi: Vec<f64>,
}

/// The performance profile of `m` (the fraction of all its scores above each `tau`,
/// rliable's score distribution) with stratified bootstrap bands.
pub fn score_profile(m: &ScoreMatrix, tau: &[f64], bootstrap: &Bootstrap) -> Profile {
    let mut sorted = Vec::new();
    let (lo, hi) = bootstrap.intervals(m, tau.len(), |sample, out| {
        sorted.clear();
        sorted.extend_from_slice(sample);
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        for (o, &t) in out.iter_mut().zip(tau) {
            let above = sorted.len() - sorted.partition_point(|&v| v <= t);
            *o = above as f64 / n;
        }
    });
    Profile {
        tau: tau.to_vec(),
        fraction: tau.iter().map(|&t| fraction_above(m.values(), t)).collect(),
        lo,
        hi,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn moving_average_is_trailing_with_short_windows_at_the_start() {
        let y = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(moving_average(&y, 3), vec![1.0, 1.5, 2.0, 3.0, 17.0 / 3.0]);
        assert_eq!(moving_average(&y, 1), y.to_vec());
        assert_eq!(moving_average(&y, 0), y.to_vec());
        assert_eq!(moving_average(&y, 10)[4], 4.0);
        assert!(moving_average(&[], 5).is_empty());
    }

    #[test]
    fn interpolation_onto_a_grid() {
        let x = [0.0, 10.0, 20.0];
        let y = [0.0, 100.0, 50.0];
        let got = interpolate(&x, &y, &[-1.0, 0.0, 2.5, 10.0, 15.0, 20.0, 21.0]);
        assert_eq!(
            got,
            vec![
                None,
                Some(0.0),
                Some(25.0),
                Some(100.0),
                Some(75.0),
                Some(50.0),
                None
            ]
        );
        assert_eq!(linspace(0.0, 1.0, 5), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(interpolate(&[], &[], &[0.0]), vec![None]);
    }

    #[test]
    fn the_band_covers_only_the_shared_range() {
        let a = Series {
            x: vec![0.0, 100.0],
            y: vec![0.0, 100.0],
        };
        let b = Series {
            x: vec![50.0, 200.0],
            y: vec![10.0, 160.0],
        };
        let band = mean_band(&[a, b], 3).unwrap();
        assert_eq!(band.x, vec![50.0, 75.0, 100.0]);
        // a: 50, 75, 100; b: 10, 35, 60.
        assert_eq!(band.mean, vec![30.0, 55.0, 80.0]);
        // Two values 40 apart: sd = 40 / sqrt(2), se = 20, half-width 39.2.
        assert!(close(band.hi[0] - band.mean[0], 39.2));
        assert!(close(band.mean[0] - band.lo[0], 39.2));
        let far = Series {
            x: vec![300.0, 400.0],
            y: vec![1.0, 1.0],
        };
        assert!(mean_band(&[band_series(&band), far], 10).is_none());
        assert!(mean_band(&[], 10).is_none());
    }

    fn band_series(b: &Band) -> Series {
        Series {
            x: b.x.clone(),
            y: b.mean.clone(),
        }
    }

    #[test]
    fn iqm_trims_whole_scores_like_scipy() {
        // n = 10: floor(2.5) = 2 from each end, the mean of the middle six.
        let v = [100.0, 0.0, 7.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0];
        assert!(close(iqm(&v), (2.0 + 3.0 + 4.0 + 5.0 + 6.0 + 7.0) / 6.0));
        // n = 5: floor(1.25) = 1 from each end.
        assert!(close(iqm(&[5.0, 1.0, 3.0, 100.0, -50.0]), 3.0));
        // n = 3: nothing trimmed.
        assert!(close(iqm(&[1.0, 2.0, 6.0]), 3.0));
        // n = 4: one from each end.
        assert!(close(iqm(&[1.0, 2.0, 4.0, 40.0]), 3.0));
        assert!(iqm(&[]).is_nan());
    }

    #[test]
    fn percentiles_interpolate_linearly() {
        let s = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&s, 0.0), 1.0);
        assert_eq!(percentile(&s, 50.0), 3.0);
        assert_eq!(percentile(&s, 100.0), 5.0);
        // rank 0.1 * 4 = 0.4.
        assert!(close(percentile(&s, 10.0), 1.4));
    }

    fn noisy_scores(runs: usize, tasks: usize, seed: u64) -> ScoreMatrix {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let rows = (0..runs)
            .map(|_| {
                (0..tasks)
                    .map(|t| t as f64 + rng.random_range(-1.0..1.0))
                    .collect()
            })
            .collect();
        ScoreMatrix::new(rows).unwrap()
    }

    #[test]
    fn the_iqm_interval_holds_the_iqm_repeats_for_a_seed_and_narrows_with_runs() {
        let b = Bootstrap::default();
        let few = noisy_scores(5, 3, 1);
        let i = iqm_interval(&few, &b);
        assert!(i.lo <= i.point && i.point <= i.hi, "{i:?}");
        assert!(i.hi > i.lo);
        assert_eq!(iqm_interval(&few, &b), i);
        let other = iqm_interval(&few, &Bootstrap { seed: 9, ..b });
        assert_ne!(other, i);
        let many = noisy_scores(80, 3, 1);
        let j = iqm_interval(&many, &b);
        assert!(j.lo <= j.point && j.point <= j.hi, "{j:?}");
        assert!(j.hi - j.lo < 0.5 * (i.hi - i.lo), "{i:?} {j:?}");
    }

    #[test]
    fn stratified_resamples_keep_each_task_in_its_column() {
        // Task 0 scores are 0..4, task 1 scores 100..104: a resample that mixed tasks
        // would put a score of one in the other's column.
        let m =
            ScoreMatrix::new((0..5).map(|r| vec![r as f64, 100.0 + r as f64]).collect()).unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut out = Vec::new();
        for _ in 0..50 {
            m.resample(&mut rng, &mut out);
            for r in 0..5 {
                assert!(out[r * 2] < 5.0 && out[r * 2 + 1] >= 100.0);
            }
        }
    }

    #[test]
    fn the_profile_counts_scores_strictly_above_tau() {
        let m = ScoreMatrix::new(vec![vec![0.0, 1.0], vec![2.0, 3.0]]).unwrap();
        let p = score_profile(&m, &[-1.0, 0.0, 1.5, 3.0], &Bootstrap::default());
        assert_eq!(p.fraction, vec![1.0, 0.75, 0.5, 0.0]);
        for i in 0..4 {
            assert!(p.lo[i] <= p.fraction[i] + 1e-12 && p.fraction[i] <= p.hi[i] + 1e-12);
        }
        // Every score is above -1 in every resample.
        assert_eq!((p.lo[0], p.hi[0]), (1.0, 1.0));
    }

    #[test]
    fn score_matrices_are_checked_and_normalised() {
        assert!(ScoreMatrix::new(vec![]).is_err());
        assert!(ScoreMatrix::new(vec![vec![1.0, 2.0], vec![1.0]]).is_err());
        assert!(ScoreMatrix::new(vec![vec![f64::NAN]]).is_err());
        let m = ScoreMatrix::new(vec![vec![10.0, 0.0], vec![20.0, 5.0]]).unwrap();
        let n = m.normalized(&[0.0, 0.0], &[20.0, 10.0]).unwrap();
        assert_eq!(n.values(), &[0.5, 0.0, 1.0, 0.5]);
        assert_eq!(n.get(1, 1), Some(0.5));
        assert_eq!(n.get(2, 0), None);
        assert!(m.normalized(&[0.0], &[1.0]).is_err());
        assert!(m.normalized(&[1.0, 0.0], &[1.0, 1.0]).is_err());
    }
}
