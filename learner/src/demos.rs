//! Demonstrations as a data source: observations and the expert's actions for them,
//! on the training device, sampled uniformly in minibatches.
//!
//! Behaviour cloning trains on a transitions file recorded from an expert
//! (`volley-runs play RUN --record FILE`, the format of `volley_common::dataset`),
//! checked against the run's env before anything is trained: a file of other shapes,
//! dtypes or action bounds is an error naming the field. The set is bounded by
//! `capacity` rows: a file with more is refused, and rows added later (DAgger's
//! aggregation) replace the oldest once it is full. Storage grows with the rows held
//! (doubling), so its memory is at most `capacity * (obs + action) * 4` bytes
//! whatever is added, and about the file's size for a file alone.

use anyhow::{bail, Result};
use rand::Rng;
use tch::{Device, Kind, Tensor};
use volley_common::dataset::{ActionColumn, ObsColumn, Transitions};
use volley_common::env::Space;

/// How the training loop feeds an algorithm from demonstrations.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoSettings {
    /// Rows per minibatch.
    pub batch_size: usize,
    /// Updates per round: each round publishes a new weights version (what
    /// `eval.every_updates` counts).
    pub updates_per_round: u64,
    /// Updates of the whole run; the run ends after them.
    pub total_updates: u64,
    /// Demonstrations kept at most.
    pub capacity: usize,
}

/// How the training loop runs DAgger's iterations on the distributed path: actors
/// roll out the current mixture, every state they visit is labelled by the expert on
/// the learner and added to the set, and after every `steps_per_iteration` env steps
/// the algorithm trains `updates_per_iteration` updates on the whole set and the next
/// iteration's version is published. The run ends after `iterations` iterations.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateSettings {
    /// Rows per minibatch.
    pub batch_size: usize,
    /// Labelled states kept at most (the oldest are replaced beyond).
    pub capacity: usize,
    pub steps_per_iteration: u64,
    pub updates_per_iteration: u64,
    pub iterations: u64,
    /// `beta_i` of each iteration (for the logs; the actors apply it).
    pub schedule: volley_common::nn::dagger::DaggerExplore,
}

/// One minibatch: `[B, obs]` observations and `[B, A]` actions.
#[derive(Debug)]
pub struct DemoBatch {
    pub obs: Tensor,
    pub actions: Tensor,
}

/// Demonstrations on the device (continuous actions, vector observations).
#[derive(Debug)]
pub struct Demos {
    obs: Tensor,
    actions: Tensor,
    obs_len: usize,
    action_dim: usize,
    capacity: usize,
    len: usize,
    /// The row the next added one goes to once full (the oldest).
    next: usize,
    /// Rows ever added (expert labels), replaced ones included.
    labels: u64,
    device: Device,
}

impl Demos {
    /// An empty set of `capacity` rows for these spaces.
    pub fn new(obs: &Space, act: &Space, capacity: usize, device: Device) -> Result<Demos> {
        let Space::Box { shape, .. } = obs else {
            bail!(
                "demonstrations need vector observations (a Box); the env observes {}",
                obs.describe()
            );
        };
        let Space::Box { low, .. } = act else {
            bail!(
                "demonstrations need continuous actions (a Box); the env acts in {}",
                act.describe()
            );
        };
        if capacity == 0 {
            bail!("a demonstration set of 0 rows");
        }
        let obs_len: usize = shape.iter().product();
        let action_dim = low.len();
        Ok(Demos {
            obs: Tensor::f_zeros([0, obs_len as i64], (Kind::Float, device))?,
            actions: Tensor::f_zeros([0, action_dim as i64], (Kind::Float, device))?,
            obs_len,
            action_dim,
            capacity,
            len: 0,
            next: 0,
            labels: 0,
            device,
        })
    }

    /// The transitions of `path` (already read), checked against the env's spaces.
    pub fn from_file(
        t: &Transitions,
        path: &str,
        obs: &Space,
        act: &Space,
        capacity: usize,
        device: Device,
    ) -> Result<Demos> {
        t.check_spaces(path, obs, act)?;
        if t.is_empty() {
            bail!("{path} holds no transitions");
        }
        if t.len() > capacity {
            bail!(
                "{path} holds {} transitions, over the {capacity} the set keeps (raise the algorithm's dataset_capacity)",
                t.len()
            );
        }
        let mut d = Demos::new(obs, act, capacity, device)?;
        let (ObsColumn::F32(o), ActionColumn::Continuous { values, .. }) = (&t.obs, &t.actions)
        else {
            bail!("{path}: checked columns of another kind");
        };
        d.push(o, values)?;
        Ok(d)
    }

    /// Adds rows (`obs` `[n * obs]`, `actions` `[n * A]`), replacing the oldest once
    /// full. Checked first: on error nothing is added.
    pub fn push(&mut self, obs: &[f32], actions: &[f32]) -> Result<()> {
        let n = obs.len() / self.obs_len.max(1);
        if obs.len() != n * self.obs_len || actions.len() != n * self.action_dim {
            bail!(
                "{} observation and {} action values are not rows of {} and {}",
                obs.len(),
                actions.len(),
                self.obs_len,
                self.action_dim
            );
        }
        if obs.iter().chain(actions).any(|v| !v.is_finite()) {
            bail!("a demonstration with a value that is not finite");
        }
        let _guard = tch::no_grad_guard();
        self.reserve(n)?;
        let mut at = 0usize;
        while at < n {
            // A contiguous run of rows up to the end of the buffer.
            let row = if self.len < self.capacity {
                self.len
            } else {
                self.next
            };
            let take = (n - at).min(self.capacity - row);
            let o = Tensor::f_from_slice(&obs[at * self.obs_len..(at + take) * self.obs_len])?
                .f_view([take as i64, self.obs_len as i64])?
                .f_to_device(self.device)?;
            let a = Tensor::f_from_slice(
                &actions[at * self.action_dim..(at + take) * self.action_dim],
            )?
            .f_view([take as i64, self.action_dim as i64])?
            .f_to_device(self.device)?;
            self.obs.f_narrow(0, row as i64, take as i64)?.f_copy_(&o)?;
            self.actions
                .f_narrow(0, row as i64, take as i64)?
                .f_copy_(&a)?;
            if self.len < self.capacity {
                self.len += take;
                self.next = self.len % self.capacity;
            } else {
                self.next = (row + take) % self.capacity;
            }
            at += take;
        }
        self.labels += n as u64;
        Ok(())
    }

    /// Rows of storage.
    fn allocated(&self) -> usize {
        self.obs.size().first().copied().unwrap_or(0) as usize
    }

    /// Grows the storage (doubling, up to `capacity`) to hold `n` more rows.
    fn reserve(&mut self, n: usize) -> Result<()> {
        let want = (self.len + n).min(self.capacity);
        let have = self.allocated();
        if want <= have {
            return Ok(());
        }
        let rows = want.max(2 * have).min(self.capacity);
        let grow = |t: &Tensor, width: usize| -> Result<Tensor> {
            let extra = Tensor::f_zeros(
                [(rows - have) as i64, width as i64],
                (Kind::Float, self.device),
            )?;
            Ok(Tensor::f_cat(&[t, &extra], 0)?)
        };
        self.obs = grow(&self.obs, self.obs_len)?;
        self.actions = grow(&self.actions, self.action_dim)?;
        Ok(())
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Where the rows are held.
    pub fn device(&self) -> Device {
        self.device
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows ever added, replaced ones included: the expert labels the run used.
    pub fn labels(&self) -> u64 {
        self.labels
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes the set takes on its device now.
    pub fn bytes(&self) -> usize {
        self.allocated() * (self.obs_len + self.action_dim) * 4
    }

    /// `batch` rows drawn uniformly with replacement.
    pub fn sample(&self, batch: usize, rng: &mut impl Rng) -> Result<DemoBatch> {
        self.rows(&self.sample_indices(batch, rng)?)
    }

    /// `batch` row indices drawn uniformly with replacement, on the set's device (to
    /// pick the same rows of a column kept beside the set).
    pub fn sample_indices(&self, batch: usize, rng: &mut impl Rng) -> Result<Tensor> {
        if self.len == 0 {
            bail!("no demonstrations to sample");
        }
        let idx: Vec<i64> = (0..batch)
            .map(|_| rng.random_range(0..self.len) as i64)
            .collect();
        Ok(Tensor::f_from_slice(&idx)?.f_to_device(self.device)?)
    }

    /// The rows at `idx` (indices below [`Demos::len`]).
    pub fn rows(&self, idx: &Tensor) -> Result<DemoBatch> {
        Ok(DemoBatch {
            obs: self.obs.f_index_select(0, idx)?,
            actions: self.actions.f_index_select(0, idx)?,
        })
    }

    /// Every row held, in storage order: `[len, obs]` and `[len, A]`.
    pub fn all(&self) -> Result<DemoBatch> {
        let n = self.len as i64;
        Ok(DemoBatch {
            obs: self.obs.f_narrow(0, 0, n)?,
            actions: self.actions.f_narrow(0, 0, n)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn spaces() -> (Space, Space) {
        let obs = Space::Box {
            shape: vec![2],
            low: vec![f32::NEG_INFINITY; 2],
            high: vec![f32::INFINITY; 2],
        };
        let act = Space::Box {
            shape: vec![1],
            low: vec![-1.0],
            high: vec![1.0],
        };
        (obs, act)
    }

    fn rows(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.reshape([-1])).unwrap()
    }

    #[test]
    fn aggregation_keeps_the_newest_capacity_rows_and_counts_every_label() {
        let (obs, act) = spaces();
        let mut d = Demos::new(&obs, &act, 3, Device::Cpu).unwrap();
        d.push(&[0.0, 0.0, 1.0, 1.0], &[0.0, 0.1]).unwrap();
        assert_eq!((d.len(), d.labels()), (2, 2));
        // Three more rows: the set is full after one, then the two oldest go.
        d.push(&[2.0, 2.0, 3.0, 3.0, 4.0, 4.0], &[0.2, 0.3, 0.4])
            .unwrap();
        assert_eq!((d.len(), d.labels()), (3, 5));
        let mut held = rows(&d.all().unwrap().actions);
        held.sort_by(f32::total_cmp);
        assert_eq!(held, vec![0.2, 0.3, 0.4]);
        // More rows than the whole capacity at once: the last 3 stay.
        d.push(&[5.0; 8], &[0.5, 0.6, 0.7, 0.8]).unwrap();
        let mut held = rows(&d.all().unwrap().actions);
        held.sort_by(f32::total_cmp);
        assert_eq!(held, vec![0.6, 0.7, 0.8]);
        assert_eq!(d.labels(), 9);
        // Rows that do not fit, or a NaN, add nothing.
        assert!(d.push(&[1.0; 3], &[0.0]).is_err());
        assert!(d.push(&[f32::NAN, 0.0], &[0.0]).is_err());
        assert_eq!(d.labels(), 9);
    }

    #[test]
    fn samples_are_rows_of_the_set() {
        let (obs, act) = spaces();
        let mut d = Demos::new(&obs, &act, 10, Device::Cpu).unwrap();
        d.push(&[1.0, 10.0, 2.0, 20.0], &[0.1, 0.2]).unwrap();
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let b = d.sample(64, &mut rng).unwrap();
        assert_eq!(b.obs.size(), vec![64, 2]);
        let o = rows(&b.obs);
        let a = rows(&b.actions);
        for i in 0..64 {
            // Each sampled observation comes with its own action.
            let want = if o[2 * i] == 1.0 { 0.1 } else { 0.2 };
            assert_eq!(a[i], want);
            assert_eq!(o[2 * i + 1], o[2 * i] * 10.0);
        }
    }

    #[test]
    fn a_set_needs_vector_observations_and_continuous_actions() {
        let (obs, _) = spaces();
        let e = Demos::new(&obs, &Space::Discrete { n: 3 }, 4, Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("continuous actions"), "{e}");
    }
}
