//! Recorded transitions: what a played agent did, in a file other tools read.
//!
//! The file is a [safetensors](https://huggingface.co/docs/safetensors) file: an 8-byte
//! little-endian header length, a JSON header naming each tensor's dtype, shape and
//! byte range, then the tensors' bytes (row-major, little-endian). Python reads it with
//! `safetensors.numpy.load_file(path)` (or ten lines of NumPy: the header is JSON),
//! PyTorch with `safetensors.torch.load_file`, and volley with
//! [`Transitions::read`]. `T` transitions, in episode order:
//!
//! | tensor | dtype | shape | what |
//! |---|---|---|---|
//! | `obs` | `F32` (vectors) or `U8` (images, `H, W, C`) | `[T, *obs]` | observation before the action |
//! | `next_obs` | as `obs` | `[T, *obs]` | observation after it (for the last step of an episode: its final observation where the env gives one, else the next episode's first) |
//! | `actions` | `I64` discrete and parameterised (the choice); `F32` continuous | `[T]` or `[T, A]` | the action taken, as the env took it (continuous: clipped to the bounds) |
//! | `params` | `F32` | `[T, P]` | parameterised actions only: every choice's parameters in env units |
//! | `rewards` | `F32` | `[T]` | the env's reward (not shaped) |
//! | `terminated`, `truncated` | `U8` (0/1) | `[T]` | how the step ended the episode |
//! | `episode` | `I64` | `[T]` | the episode's index in the file |
//! | `step` | `I64` | `[T]` | the step's index in its episode |
//!
//! The header's `__metadata__` holds `format` (`volley-transitions/1`), `env`,
//! `observation_space` and `action_space` (volley's descriptions, e.g.
//! `Box(shape=[4])`, `Discrete(2)`) and whatever the recorder adds (`run_id`,
//! `algorithm`, `checkpoint`).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use crate::env::Space;

/// The `format` a file declares.
pub const FORMAT: &str = "volley-transitions/1";

/// Errors reading or writing a transitions file.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path} is not a transitions file: {message}")]
    Format { path: String, message: String },
    #[error("{path}: field '{field}' {message}")]
    Field {
        path: String,
        field: String,
        message: String,
    },
}

/// Observations of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub enum ObsColumn {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

impl ObsColumn {
    fn len(&self) -> usize {
        match self {
            ObsColumn::F32(v) => v.len(),
            ObsColumn::U8(v) => v.len(),
        }
    }
}

/// Actions of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionColumn {
    /// `[T]` action indices.
    Discrete(Vec<i64>),
    /// `[T, dim]` actions.
    Continuous { dim: usize, values: Vec<f32> },
    /// `[T]` choices and `[T, params]` parameters.
    Parameterised {
        choices: Vec<i64>,
        params: usize,
        values: Vec<f32>,
    },
}

/// `T` transitions (see the module docs for the file layout).
#[derive(Debug, Clone, PartialEq)]
pub struct Transitions {
    /// The shape of one observation.
    pub obs_shape: Vec<usize>,
    pub obs: ObsColumn,
    pub next_obs: ObsColumn,
    pub actions: ActionColumn,
    pub rewards: Vec<f32>,
    pub terminated: Vec<bool>,
    pub truncated: Vec<bool>,
    pub episode: Vec<i64>,
    pub step: Vec<i64>,
    /// The header's `__metadata__` (strings).
    pub metadata: BTreeMap<String, String>,
}

impl Transitions {
    /// No transitions yet, for observations of `obs_shape` (`u8` images or `f32`).
    pub fn new(obs_shape: Vec<usize>, u8_obs: bool, actions: ActionColumn) -> Transitions {
        let col = || {
            if u8_obs {
                ObsColumn::U8(Vec::new())
            } else {
                ObsColumn::F32(Vec::new())
            }
        };
        Transitions {
            obs_shape,
            obs: col(),
            next_obs: col(),
            actions,
            rewards: Vec::new(),
            terminated: Vec::new(),
            truncated: Vec::new(),
            episode: Vec::new(),
            step: Vec::new(),
            metadata: BTreeMap::new(),
        }
    }

    /// Number of transitions.
    pub fn len(&self) -> usize {
        self.rewards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }

    fn obs_len(&self) -> usize {
        self.obs_shape.iter().product()
    }

    /// The first `n` transitions (all of them when there are fewer): a dataset of a
    /// given number of expert labels.
    pub fn first(&self, n: usize) -> Transitions {
        let n = n.min(self.len());
        let w = self.obs_len();
        let obs = |c: &ObsColumn| match c {
            ObsColumn::F32(v) => ObsColumn::F32(v[..n * w].to_vec()),
            ObsColumn::U8(v) => ObsColumn::U8(v[..n * w].to_vec()),
        };
        let actions = match &self.actions {
            ActionColumn::Discrete(v) => ActionColumn::Discrete(v[..n].to_vec()),
            ActionColumn::Continuous { dim, values } => ActionColumn::Continuous {
                dim: *dim,
                values: values[..n * dim].to_vec(),
            },
            ActionColumn::Parameterised {
                choices,
                params,
                values,
            } => ActionColumn::Parameterised {
                choices: choices[..n].to_vec(),
                params: *params,
                values: values[..n * params].to_vec(),
            },
        };
        Transitions {
            obs_shape: self.obs_shape.clone(),
            obs: obs(&self.obs),
            next_obs: obs(&self.next_obs),
            actions,
            rewards: self.rewards[..n].to_vec(),
            terminated: self.terminated[..n].to_vec(),
            truncated: self.truncated[..n].to_vec(),
            episode: self.episode[..n].to_vec(),
            step: self.step[..n].to_vec(),
            metadata: self.metadata.clone(),
        }
    }

    /// Checks that every column has `T` rows of the right width.
    pub fn validate(&self) -> Result<(), String> {
        let t = self.len();
        let per = self.obs_len();
        for (name, col) in [("obs", &self.obs), ("next_obs", &self.next_obs)] {
            if col.len() != t * per {
                return Err(format!(
                    "{name} has {} values, {t} transitions of {per} need {}",
                    col.len(),
                    t * per
                ));
            }
        }
        let rows = |name: &str, n: usize| {
            if n == t {
                Ok(())
            } else {
                Err(format!("{name} has {n} rows, expected {t}"))
            }
        };
        rows("terminated", self.terminated.len())?;
        rows("truncated", self.truncated.len())?;
        rows("episode", self.episode.len())?;
        rows("step", self.step.len())?;
        match &self.actions {
            ActionColumn::Discrete(a) => rows("actions", a.len()),
            ActionColumn::Continuous { dim, values } => rows("actions", values.len() / dim.max(&1))
                .and_then(|()| {
                    (values.len() == t * dim).then_some(()).ok_or_else(|| {
                        format!("actions have {} values, expected {}", values.len(), t * dim)
                    })
                }),
            ActionColumn::Parameterised {
                choices,
                params,
                values,
            } => rows("actions", choices.len()).and_then(|()| {
                (values.len() == t * params).then_some(()).ok_or_else(|| {
                    format!(
                        "params have {} values, expected {}",
                        values.len(),
                        t * params
                    )
                })
            }),
        }
    }

    /// Checks that the transitions fit an env of these spaces: the observations' shape
    /// and dtype, the actions' kind and width, and (continuous) every action finite
    /// and inside the bounds. The error names the field and what the env has.
    pub fn check_spaces(&self, path: &str, obs: &Space, act: &Space) -> Result<(), DatasetError> {
        let field = |name: &str, message: String| DatasetError::Field {
            path: path.to_string(),
            field: name.into(),
            message,
        };
        let (want_shape, want_u8) = match obs {
            Space::Box { shape, .. } => (shape.clone(), false),
            Space::Image {
                height,
                width,
                channels,
            } => (vec![*height, *width, *channels], true),
            other => {
                return Err(field(
                    "obs",
                    format!("cannot hold observations of {}", other.describe()),
                ))
            }
        };
        let got_u8 = matches!(self.obs, ObsColumn::U8(_));
        if self.obs_shape != want_shape || got_u8 != want_u8 {
            let dtype = |u8: bool| if u8 { "U8" } else { "F32" };
            return Err(field(
                "obs",
                format!(
                    "is {} {:?} per transition, but the env observes {} ({} {:?}): the file was recorded on another env",
                    dtype(got_u8),
                    self.obs_shape,
                    obs.describe(),
                    dtype(want_u8),
                    want_shape
                ),
            ));
        }
        match (&self.actions, act) {
            (ActionColumn::Discrete(a), Space::Discrete { n }) => {
                if let Some((i, v)) = a
                    .iter()
                    .enumerate()
                    .find(|(_, &v)| v < 0 || v as usize >= *n)
                {
                    return Err(field(
                        "actions",
                        format!("row {i} is action {v}, but the env has {n} actions"),
                    ));
                }
            }
            (ActionColumn::Continuous { dim, values }, Space::Box { low, high, .. }) => {
                if *dim != low.len() {
                    return Err(field(
                        "actions",
                        format!(
                            "has {dim} values per action, but the env's actions are {}",
                            act.describe()
                        ),
                    ));
                }
                for (k, v) in values.iter().enumerate() {
                    let j = k % dim;
                    if !v.is_finite() || *v < low[j] || *v > high[j] {
                        return Err(field(
                            "actions",
                            format!(
                                "row {} dimension {j} is {v}, outside the env's bounds [{}, {}]",
                                k / dim,
                                low[j],
                                high[j]
                            ),
                        ));
                    }
                }
            }
            (ActionColumn::Parameterised { params, .. }, Space::Parameterised { .. })
                if *params == act.flat_len() => {}
            (have, _) => {
                let kind = match have {
                    ActionColumn::Discrete(_) => "discrete".to_string(),
                    ActionColumn::Continuous { dim, .. } => format!("continuous ({dim} values)"),
                    ActionColumn::Parameterised { params, .. } => {
                        format!("parameterised ({params} parameters)")
                    }
                };
                return Err(field(
                    "actions",
                    format!("are {kind}, but the env's actions are {}", act.describe()),
                ));
            }
        }
        if let Some(i) = self.rewards.iter().position(|r| !r.is_finite()) {
            return Err(field("rewards", format!("row {i} is not finite")));
        }
        Ok(())
    }

    /// Writes the file (to a temporary name first, so a failure leaves no half file).
    pub fn write(&self, path: &Path) -> Result<(), DatasetError> {
        let shown = path.display().to_string();
        self.validate().map_err(|message| DatasetError::Format {
            path: shown.clone(),
            message,
        })?;
        let t = self.len();
        let mut obs_shape = vec![t];
        obs_shape.extend(&self.obs_shape);
        let mut parts: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = Vec::new();
        let obs_col = |c: &ObsColumn| match c {
            ObsColumn::F32(v) => ("F32", le_f32(v)),
            ObsColumn::U8(v) => ("U8", v.clone()),
        };
        let (dt, b) = obs_col(&self.obs);
        parts.push(("obs", dt, obs_shape.clone(), b));
        let (dt, b) = obs_col(&self.next_obs);
        parts.push(("next_obs", dt, obs_shape, b));
        match &self.actions {
            ActionColumn::Discrete(a) => parts.push(("actions", "I64", vec![t], le_i64(a))),
            ActionColumn::Continuous { dim, values } => {
                parts.push(("actions", "F32", vec![t, *dim], le_f32(values)))
            }
            ActionColumn::Parameterised {
                choices,
                params,
                values,
            } => {
                parts.push(("actions", "I64", vec![t], le_i64(choices)));
                parts.push(("params", "F32", vec![t, *params], le_f32(values)));
            }
        }
        parts.push(("rewards", "F32", vec![t], le_f32(&self.rewards)));
        let flags = |v: &[bool]| v.iter().map(|&b| u8::from(b)).collect::<Vec<u8>>();
        parts.push(("terminated", "U8", vec![t], flags(&self.terminated)));
        parts.push(("truncated", "U8", vec![t], flags(&self.truncated)));
        parts.push(("episode", "I64", vec![t], le_i64(&self.episode)));
        parts.push(("step", "I64", vec![t], le_i64(&self.step)));
        let mut header = serde_json::Map::new();
        let mut meta = self.metadata.clone();
        meta.insert("format".into(), FORMAT.into());
        header.insert("__metadata__".into(), json!(meta));
        let mut offset = 0usize;
        for (name, dtype, shape, bytes) in &parts {
            header.insert(
                (*name).into(),
                json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
            );
            offset += bytes.len();
        }
        let mut head =
            serde_json::to_vec(&Value::Object(header)).map_err(|e| DatasetError::Io {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        // The format pads the header with spaces to a multiple of 8 bytes.
        while head.len() % 8 != 0 {
            head.push(b' ');
        }
        let tmp = path.with_extension("safetensors.tmp");
        let io = |e: std::io::Error| DatasetError::Io {
            path: shown.clone(),
            message: e.to_string(),
        };
        let mut f = std::io::BufWriter::new(fs::File::create(&tmp).map_err(io)?);
        f.write_all(&(head.len() as u64).to_le_bytes())
            .map_err(io)?;
        f.write_all(&head).map_err(io)?;
        for (_, _, _, bytes) in &parts {
            f.write_all(bytes).map_err(io)?;
        }
        f.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
        fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a file written by [`Transitions::write`] (or by anything that writes the
    /// layout of the module docs), checking every field's dtype and shape.
    pub fn read(path: &Path) -> Result<Transitions, DatasetError> {
        let shown = path.display().to_string();
        let bytes = fs::read(path).map_err(|e| DatasetError::Io {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let bad = |message: String| DatasetError::Format {
            path: shown.clone(),
            message,
        };
        if bytes.len() < 8 {
            return Err(bad("shorter than its 8-byte header length".into()));
        }
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        if n > bytes.len() - 8 {
            return Err(bad(format!(
                "header of {n} bytes in a file of {}",
                bytes.len()
            )));
        }
        let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n])
            .map_err(|e| bad(format!("its header is not JSON: {e}")))?;
        let data = &bytes[8 + n..];
        let metadata: BTreeMap<String, String> = header
            .get("__metadata__")
            .and_then(|m| serde_json::from_value(m.clone()).ok())
            .unwrap_or_default();
        let field = |name: &str, message: String| DatasetError::Field {
            path: shown.clone(),
            field: name.into(),
            message,
        };
        let tensor = |name: &str| -> Result<(String, Vec<usize>, &[u8]), DatasetError> {
            let h = header
                .get(name)
                .ok_or_else(|| field(name, "is missing".into()))?;
            let dtype = h["dtype"].as_str().unwrap_or_default().to_string();
            let shape: Vec<usize> = serde_json::from_value(h["shape"].clone())
                .map_err(|_| field(name, "has no shape".into()))?;
            let off: Vec<usize> = serde_json::from_value(h["data_offsets"].clone())
                .map_err(|_| field(name, "has no data_offsets".into()))?;
            let (a, b) = match off[..] {
                [a, b] if a <= b && b <= data.len() => (a, b),
                _ => {
                    return Err(field(
                        name,
                        format!(
                            "has data_offsets {off:?} outside the {} data bytes",
                            data.len()
                        ),
                    ))
                }
            };
            let width = match dtype.as_str() {
                "F32" => 4,
                "I64" => 8,
                "U8" => 1,
                other => {
                    return Err(field(
                        name,
                        format!("has dtype {other}, expected F32, I64 or U8"),
                    ))
                }
            };
            if shape.iter().product::<usize>() * width != b - a {
                return Err(field(
                    name,
                    format!(
                        "shape {shape:?} of {dtype} does not fit its {} bytes",
                        b - a
                    ),
                ));
            }
            Ok((dtype, shape, &data[a..b]))
        };
        let want = |name: &str, dtype: &str, got: &str| {
            if got == dtype {
                Ok(())
            } else {
                Err(field(name, format!("has dtype {got}, expected {dtype}")))
            }
        };
        let (obs_dtype, obs_shape, obs_bytes) = tensor("obs")?;
        let t = *obs_shape
            .first()
            .ok_or_else(|| field("obs", "has no rows".into()))?;
        let obs_col = |name: &str, dtype: &str, b: &[u8]| match dtype {
            "F32" => Ok(ObsColumn::F32(from_le_f32(b))),
            "U8" => Ok(ObsColumn::U8(b.to_vec())),
            other => Err(field(
                name,
                format!("has dtype {other}, expected F32 or U8"),
            )),
        };
        let obs = obs_col("obs", &obs_dtype, obs_bytes)?;
        let (nd, ns, nb) = tensor("next_obs")?;
        if nd != obs_dtype || ns != obs_shape {
            return Err(field(
                "next_obs",
                format!("is {nd} {ns:?}, but obs is {obs_dtype} {obs_shape:?}"),
            ));
        }
        let next_obs = obs_col("next_obs", &nd, nb)?;
        let rows = |name: &str, shape: &[usize]| {
            if shape.first() == Some(&t) {
                Ok(())
            } else {
                Err(field(
                    name,
                    format!("has shape {shape:?}, expected {t} rows like obs"),
                ))
            }
        };
        let (ad, ashape, ab) = tensor("actions")?;
        rows("actions", &ashape)?;
        let actions = match (ad.as_str(), header.contains_key("params")) {
            ("I64", false) => ActionColumn::Discrete(from_le_i64(ab)),
            ("I64", true) => {
                let (pd, ps, pb) = tensor("params")?;
                want("params", "F32", &pd)?;
                rows("params", &ps)?;
                ActionColumn::Parameterised {
                    choices: from_le_i64(ab),
                    params: ps.get(1).copied().unwrap_or(0),
                    values: from_le_f32(pb),
                }
            }
            ("F32", _) => ActionColumn::Continuous {
                dim: ashape.get(1).copied().unwrap_or(1),
                values: from_le_f32(ab),
            },
            (other, _) => {
                return Err(field(
                    "actions",
                    format!("has dtype {other}, expected I64 or F32"),
                ))
            }
        };
        let column = |name: &str, dtype: &str| -> Result<&[u8], DatasetError> {
            let (d, s, b) = tensor(name)?;
            want(name, dtype, &d)?;
            rows(name, &s)?;
            Ok(b)
        };
        let rewards = from_le_f32(column("rewards", "F32")?);
        let terminated = column("terminated", "U8")?
            .iter()
            .map(|&b| b != 0)
            .collect();
        let truncated = column("truncated", "U8")?.iter().map(|&b| b != 0).collect();
        let episode = from_le_i64(column("episode", "I64")?);
        let step = from_le_i64(column("step", "I64")?);
        let out = Transitions {
            obs_shape: obs_shape[1..].to_vec(),
            obs,
            next_obs,
            actions,
            rewards,
            terminated,
            truncated,
            episode,
            step,
            metadata,
        };
        out.validate().map_err(bad)?;
        Ok(out)
    }
}

fn le_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn le_i64(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_le_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

fn from_le_i64(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Transitions {
        let mut t = Transitions::new(
            vec![2],
            false,
            ActionColumn::Parameterised {
                choices: vec![0, 2, 1],
                params: 3,
                values: (0..9).map(|i| i as f32).collect(),
            },
        );
        t.obs = ObsColumn::F32(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        t.next_obs = ObsColumn::F32(vec![2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        t.rewards = vec![0.1, 0.2, 0.3];
        t.terminated = vec![false, false, true];
        t.truncated = vec![false; 3];
        t.episode = vec![0; 3];
        t.step = vec![0, 1, 2];
        t.metadata.insert("env".into(), "Platform-v0".into());
        t
    }

    #[test]
    fn a_written_file_reads_back_the_same() {
        let dir = crate::testing::TempDir::new();
        let p = dir.path().join("t.safetensors");
        let t = sample();
        t.write(&p).unwrap();
        let back = Transitions::read(&p).unwrap();
        assert_eq!(back.metadata["format"], FORMAT);
        assert_eq!(back.metadata["env"], "Platform-v0");
        let mut want = t.clone();
        want.metadata.insert("format".into(), FORMAT.into());
        assert_eq!(back, want);
        // The header is 8-byte aligned JSON, as the format asks.
        let bytes = fs::read(&p).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let h: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        assert_eq!(h["obs"]["shape"], json!([3, 2]));
        assert_eq!(h["params"]["dtype"], "F32");
    }

    #[test]
    fn the_first_n_transitions_are_a_valid_dataset() {
        let t = sample();
        let head = t.first(2);
        assert_eq!(head.len(), 2);
        head.validate().unwrap();
        assert_eq!(head.rewards, t.rewards[..2]);
        assert_eq!(head.step, t.step[..2]);
        assert_eq!(t.first(100), t);
        assert!(t.first(0).is_empty());
    }

    #[test]
    fn a_file_for_other_spaces_is_an_error_naming_the_field() {
        let mut t = Transitions::new(
            vec![2],
            false,
            ActionColumn::Continuous {
                dim: 2,
                values: vec![0.5, -0.5, 1.0, 2.0],
            },
        );
        t.obs = ObsColumn::F32(vec![0.0; 4]);
        t.next_obs = ObsColumn::F32(vec![0.0; 4]);
        t.rewards = vec![1.0, 1.0];
        t.terminated = vec![false; 2];
        t.truncated = vec![false; 2];
        t.episode = vec![0; 2];
        t.step = vec![0, 1];
        let obs = |n: usize| Space::Box {
            shape: vec![n],
            low: vec![f32::NEG_INFINITY; n],
            high: vec![f32::INFINITY; n],
        };
        let act = |n: usize, high: f32| Space::Box {
            shape: vec![n],
            low: vec![-1.0; n],
            high: vec![high; n],
        };
        let err = |o: &Space, a: &Space| {
            t.check_spaces("d.safetensors", o, a)
                .unwrap_err()
                .to_string()
        };
        assert!(t.check_spaces("d", &obs(2), &act(2, 2.0)).is_ok());
        let e = err(&obs(3), &act(2, 2.0));
        assert!(
            e.contains("field 'obs'") && e.contains("[2]") && e.contains("[3]"),
            "{e}"
        );
        let e = err(&obs(2), &act(3, 2.0));
        assert!(
            e.contains("field 'actions'") && e.contains("2 values per action"),
            "{e}"
        );
        // Row 1's second value (2.0) is outside [-1, 1].
        let e = err(&obs(2), &act(2, 1.0));
        assert!(e.contains("row 1 dimension 1 is 2"), "{e}");
        let e = err(&obs(2), &Space::Discrete { n: 4 });
        assert!(e.contains("are continuous (2 values)"), "{e}");
        let image = Space::Image {
            height: 2,
            width: 1,
            channels: 1,
        };
        assert!(err(&image, &act(2, 2.0)).contains("U8"));
    }

    #[test]
    fn a_bad_file_is_an_error_naming_the_field() {
        let dir = crate::testing::TempDir::new();
        let p = dir.path().join("t.safetensors");
        let mut t = sample();
        t.rewards.push(1.0);
        assert!(t.write(&p).is_err(), "inconsistent columns are refused");
        assert!(!p.exists() && !p.with_extension("safetensors.tmp").exists());
        sample().write(&p).unwrap();
        // Break the rewards' dtype in the header (F32 -> I64, the same length).
        let mut bytes = fs::read(&p).unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let r = text.find("\"rewards\":").unwrap();
        let at = r + text[r..].find("F32").unwrap();
        bytes[at..at + 3].copy_from_slice(b"I64");
        fs::write(&p, &bytes).unwrap();
        let e = Transitions::read(&p).unwrap_err().to_string();
        assert!(e.contains("'rewards'"), "{e}");
        fs::write(&p, b"nonsense").unwrap();
        assert!(Transitions::read(&p).is_err());
    }
}
