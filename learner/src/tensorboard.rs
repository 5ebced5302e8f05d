//! TensorBoard event files in the run directory: every `metrics.jsonl` line is also
//! written as scalars, so `tensorboard --logdir runs` shows every run while it trains.
//! `metrics.jsonl` stays the record of a run; the event file is a copy for viewing.
//!
//! # File
//!
//! `events.out.tfevents.<unix seconds>.<hostname>` (a `.1`, `.2`, ... suffix if that
//! name exists), one per learner process: a resumed run adds a file to its
//! directory and TensorBoard merges the files of a directory in name order. The file
//! is a TFRecord file, a sequence of records
//!
//! ```text
//! u64 length (little-endian) | u32 masked CRC-32C of the 8 length bytes |
//! data (length bytes)        | u32 masked CRC-32C of data
//! ```
//!
//! with [`volley_common::crc32c::masked_crc32c`]; each record's data is one
//! serialised `Event` of `volley_proto::tensorboard` (the subset of TensorFlow's
//! `Event` / `Summary` messages, same field numbers). The first event carries only
//! `wall_time` and `file_version = "brain.Event:2"`; each later one `wall_time`
//! (Unix seconds), `step` and a `Summary` of `simple_value` scalars. Each write is
//! flushed, so TensorBoard sees a line as soon as `metrics.jsonl` does.
//!
//! # Tags
//!
//! The step of a line's scalars is its `steps` (env steps, CleanRL's `global_step`).
//! Null values (no episode finished yet, no evaluation since the last line) and
//! values that are not numbers are skipped. Keys become tags by these rules, in order:
//!
//! 1. CleanRL's name where it has one:
//!
//! | `metrics.jsonl` key | tag |
//! |---|---|
//! | `episode_return_mean` | `charts/episodic_return` |
//! | `episode_length_mean` | `charts/episodic_length` |
//! | `fps` | `charts/SPS` |
//! | `lr` | `charts/learning_rate` |
//! | `value_loss` | `losses/value_loss` |
//! | `policy_loss` | `losses/policy_loss` |
//! | `entropy` | `losses/entropy` |
//! | `approx_kl` | `losses/approx_kl` |
//! | `clip_fraction` | `losses/clipfrac` |
//! | `explained_variance` | `losses/explained_variance` |
//! | `qf1_loss` | `losses/qf1_loss` |
//! | `qf2_loss` | `losses/qf2_loss` |
//! | `actor_loss` | `losses/actor_loss` |
//! | `alpha` | `losses/alpha` |
//! | `alpha_loss` | `losses/alpha_loss` |
//! | `q_mean` | `losses/q_values` |
//! | `loss` (Double DQN) | `losses/td_loss` |
//! | `eval_return_mean` | `eval/episodic_return` |
//! | `eval_length_mean` | `eval/episodic_length` |
//!
//! 2. Accounting of the work rather than measures of the model goes under
//!    `volley/<key>`: the training loop's `updates_per_second`, `update_seconds`,
//!    `episodes`, `policy_lag_mean`, `chunks_dropped` (on-policy), `replay_size`,
//!    `replay_ratio` (replay), and PPO's `minibatch_steps` (minibatch steps its last
//!    update ran: fewer when a stop cut it short).
//! 3. Counters of the line itself are not scalars: `steps` (the step axis), `update`
//!    (gradient updates so far), `weights_version` (rounds of updates so far), `time`
//!    (TensorBoard's relative time axis shows it) and `eval_weights_version` (which
//!    version an evaluation scored).
//! 4. Every other key is a statistic of the algorithm's update and goes, as in
//!    CleanRL, under `losses/<key>`: `losses/grad_norm` (PPO, A2C), `losses/q_loss`
//!    (SAC, MP-DQN), `losses/param_loss` (MP-DQN), `losses/reward_loss`,
//!    `losses/punish_loss`, `losses/q_reward_mean`, `losses/q_punish_mean`
//!    (Split-Q). A new key that counts or times work belongs in rule 2, a new
//!    counter of the line in rule 3.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use volley_common::crc32c::masked_crc32c;
use volley_proto::tensorboard::{Event, Summary, Value};

/// The `file_version` of an event file's first record.
pub const FILE_VERSION: &str = "brain.Event:2";

/// `metrics.jsonl` keys with a tag of CleanRL's name (rule 1 of the module docs).
pub const CLEANRL_TAGS: &[(&str, &str)] = &[
    ("episode_return_mean", "charts/episodic_return"),
    ("episode_length_mean", "charts/episodic_length"),
    ("fps", "charts/SPS"),
    ("lr", "charts/learning_rate"),
    ("value_loss", "losses/value_loss"),
    ("policy_loss", "losses/policy_loss"),
    ("entropy", "losses/entropy"),
    ("approx_kl", "losses/approx_kl"),
    ("clip_fraction", "losses/clipfrac"),
    ("explained_variance", "losses/explained_variance"),
    ("qf1_loss", "losses/qf1_loss"),
    ("qf2_loss", "losses/qf2_loss"),
    ("actor_loss", "losses/actor_loss"),
    ("alpha", "losses/alpha"),
    ("alpha_loss", "losses/alpha_loss"),
    ("q_mean", "losses/q_values"),
    ("loss", "losses/td_loss"),
    ("eval_return_mean", "eval/episodic_return"),
    ("eval_length_mean", "eval/episodic_length"),
];

/// Keys that account for the work, tagged `volley/<key>` (rule 2).
pub const VOLLEY_KEYS: &[&str] = &[
    "updates_per_second",
    "update_seconds",
    "episodes",
    "policy_lag_mean",
    "chunks_dropped",
    "replay_size",
    "replay_ratio",
    "minibatch_steps",
];

/// Keys that are counters of the line, not scalars (rule 3).
pub const NOT_SCALARS: &[&str] = &[
    "steps",
    "update",
    "weights_version",
    "time",
    "eval_weights_version",
];

/// An event file that cannot be created or written.
#[derive(Debug, thiserror::Error)]
pub enum TensorboardError {
    #[error("cannot create a tensorboard event file in {dir}: {source}")]
    Create { dir: PathBuf, source: io::Error },
    #[error("cannot write tensorboard event file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The tag of a `metrics.jsonl` key, `None` for a key that is not a scalar (the
/// rules of the module docs).
pub fn tag(key: &str) -> Option<String> {
    if let Some((_, tag)) = CLEANRL_TAGS.iter().find(|(k, _)| *k == key) {
        return Some((*tag).to_string());
    }
    if VOLLEY_KEYS.contains(&key) {
        return Some(format!("volley/{key}"));
    }
    if NOT_SCALARS.contains(&key) {
        return None;
    }
    Some(format!("losses/{key}"))
}

/// The step (`steps`) and the tagged scalars of one `metrics.jsonl` line; `None`
/// when the line is not an object with a `steps` count.
pub fn scalars(line: &serde_json::Value) -> Option<(i64, Vec<(String, f32)>)> {
    let fields = line.as_object()?;
    let step = i64::try_from(fields.get("steps")?.as_u64()?).ok()?;
    let values = fields
        .iter()
        .filter_map(|(key, value)| Some((tag(key)?, value.as_f64()? as f32)))
        .collect();
    Some((step, values))
}

/// One TFRecord record framing `data`: length, its masked CRC, data, data's masked CRC.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Seconds since the Unix epoch, the events' `wall_time`.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// This machine's name for the file name: `/proc/sys/kernel/hostname` or
/// `$HOSTNAME`, reduced to `[A-Za-z0-9._-]`; `localhost` when neither is set.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// An open event file that scalars are appended to.
#[derive(Debug)]
pub struct EventWriter {
    /// The file, for messages.
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Creates a new event file in `dir` and writes its file-version record.
    pub fn create(dir: &Path) -> Result<EventWriter, TensorboardError> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let base = format!("events.out.tfevents.{secs}.{}", hostname());
        let mut n = 0u32;
        let (path, file) = loop {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(source) => {
                    return Err(TensorboardError::Create {
                        dir: dir.to_path_buf(),
                        source,
                    })
                }
            }
        };
        let mut writer = EventWriter {
            path,
            file: BufWriter::new(file),
        };
        writer.write(&Event {
            wall_time: unix_now(),
            file_version: FILE_VERSION.into(),
            ..Event::default()
        })?;
        Ok(writer)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `values` (tag, value) as the scalars of `step` at `wall_time` (Unix
    /// seconds), and flushes.
    pub fn write_scalars(
        &mut self,
        step: i64,
        wall_time: f64,
        values: &[(String, f32)],
    ) -> Result<(), TensorboardError> {
        let value = values
            .iter()
            .map(|(tag, v)| Value {
                tag: tag.clone(),
                simple_value: Some(*v),
            })
            .collect();
        self.write(&Event {
            wall_time,
            step,
            summary: Some(Summary { value }),
            ..Event::default()
        })
    }

    /// Appends one event as a record and flushes.
    fn write(&mut self, event: &Event) -> Result<(), TensorboardError> {
        let framed = record(&event.encode_to_vec());
        self.file
            .write_all(&framed)
            .and_then(|()| self.file.flush())
            .map_err(|source| TensorboardError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

/// The TensorBoard copy of a run's `metrics.jsonl` lines. A failure to create or
/// write the event file must not stop training: it is said once on stderr and the
/// run writes no more TensorBoard events.
#[derive(Debug, Default)]
pub struct Mirror {
    /// `None` when `[tracking] tensorboard` is off or after a failure.
    writer: Option<EventWriter>,
}

impl Mirror {
    /// A mirror writing into a new event file in `dir` if `enabled`.
    pub fn open(dir: &Path, enabled: bool) -> Mirror {
        if !enabled {
            return Mirror::default();
        }
        match EventWriter::create(dir) {
            Ok(w) => Mirror { writer: Some(w) },
            Err(e) => {
                Self::say_off(&e);
                Mirror::default()
            }
        }
    }

    /// Whether lines are still written.
    pub fn is_on(&self) -> bool {
        self.writer.is_some()
    }

    /// Writes the scalars of one `metrics.jsonl` line (see [`scalars`]).
    pub fn write_line(&mut self, line: &serde_json::Value) {
        let Some(writer) = &mut self.writer else {
            return;
        };
        let Some((step, values)) = scalars(line) else {
            return;
        };
        if let Err(e) = writer.write_scalars(step, unix_now(), &values) {
            Self::say_off(&e);
            self.writer = None;
        }
    }

    fn say_off(e: &TensorboardError) {
        volley_common::say!(
            "volley-learner: {e}; tensorboard events stop here for this run (metrics.jsonl keeps every line)"
        );
    }
}

impl crate::rundir::LineSink for Mirror {
    fn line(&mut self, line: &serde_json::Value) {
        // A key added to the metrics line needs a rule in `tag` (a tag or none).
        self.write_line(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use volley_common::testing::TempDir;

    /// A fresh folder for one test's event files, removed when the test ends.
    fn scratch() -> TempDir {
        TempDir::named("tensorboard-test")
    }

    /// The files in `dir`, sorted by name.
    fn event_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    /// Splits a file into its records' data, checking each length and both CRCs.
    fn read_records(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len_bytes = &bytes[at..at + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let len_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(len_crc, masked_crc32c(len_bytes), "length crc at {at}");
            let data = &bytes[at + 12..at + 12 + len];
            let data_crc =
                u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(data_crc, masked_crc32c(data), "data crc at {at}");
            out.push(data.to_vec());
            at += 16 + len;
        }
        assert_eq!(at, bytes.len(), "no trailing bytes");
        out
    }

    #[test]
    fn a_written_file_parses_back() {
        let dir = scratch();
        let mut w = EventWriter::create(&dir).unwrap();
        let name = w.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("events.out.tfevents.") && name.ends_with(&hostname()),
            "{name}"
        );
        let first = vec![
            ("charts/episodic_return".to_string(), 21.5f32),
            ("losses/clipfrac".to_string(), 0.0),
        ];
        w.write_scalars(1024, 1_700_000_000.25, &first).unwrap();
        w.write_scalars(2048, 1_700_000_001.5, &[("charts/SPS".to_string(), -3.0)])
            .unwrap();

        let bytes = std::fs::read(w.path()).unwrap();
        let records = read_records(&bytes);
        assert_eq!(records.len(), 3);
        let events: Vec<Event> = records
            .iter()
            .map(|r| Event::decode(r.as_slice()).unwrap())
            .collect();

        assert_eq!(events[0].file_version, "brain.Event:2");
        assert_eq!(events[0].step, 0);
        assert!(events[0].summary.is_none());
        assert!(events[0].wall_time > 1.6e9);

        assert_eq!(events[1].step, 1024);
        assert_eq!(events[1].wall_time, 1_700_000_000.25);
        assert!(events[1].file_version.is_empty());
        let values = &events[1].summary.as_ref().unwrap().value;
        assert_eq!(values.len(), 2);
        assert_eq!(values[0].tag, "charts/episodic_return");
        assert_eq!(values[0].simple_value, Some(21.5));
        // A zero is on the wire (presence), or TensorBoard would see no scalar.
        assert_eq!(values[1].tag, "losses/clipfrac");
        assert_eq!(values[1].simple_value, Some(0.0));

        assert_eq!(events[2].step, 2048);
        let values = &events[2].summary.as_ref().unwrap().value;
        assert_eq!(values[0].tag, "charts/SPS");
        assert_eq!(values[0].simple_value, Some(-3.0));
    }

    #[test]
    fn field_numbers_are_tensorflows() {
        // Event { wall_time (1, fixed64) = 1.0, step (2, varint) = 2,
        //         file_version (3, bytes) = "brain.Event:2" }
        let e = Event {
            wall_time: 1.0,
            step: 2,
            file_version: FILE_VERSION.into(),
            summary: None,
        };
        let mut want = vec![0x09, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F, 0x10, 0x02, 0x1A, 13];
        want.extend_from_slice(b"brain.Event:2");
        assert_eq!(e.encode_to_vec(), want);

        // Event { summary (5) { value (1) { tag (1) = "a", simple_value (2, fixed32) = 0 } } }
        let e = Event {
            summary: Some(Summary {
                value: vec![Value {
                    tag: "a".into(),
                    simple_value: Some(0.0),
                }],
            }),
            ..Event::default()
        };
        let value = [0x0A, 1, b'a', 0x15, 0, 0, 0, 0];
        let summary = [&[0x0A, value.len() as u8][..], &value].concat();
        let want = [&[0x2A, summary.len() as u8][..], &summary].concat();
        assert_eq!(e.encode_to_vec(), want);
    }

    #[test]
    fn record_framing_by_hand() {
        let data = b"123456789";
        let r = record(data);
        assert_eq!(r.len(), 8 + 4 + 9 + 4);
        assert_eq!(&r[..8], &[9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r[8..12], &masked_crc32c(&r[..8]).to_le_bytes());
        assert_eq!(&r[12..21], data);
        // masked_crc32c(b"123456789") = 0xC78AB0E5 (common/src/crc32c.rs).
        assert_eq!(&r[21..], &0xC78A_B0E5u32.to_le_bytes());
    }

    #[test]
    fn a_second_writer_adds_a_file() {
        let dir = scratch();
        let a = EventWriter::create(&dir).unwrap();
        let b = EventWriter::create(&dir).unwrap();
        assert_ne!(a.path(), b.path());
        assert_eq!(event_files(&dir).len(), 2);
    }

    #[test]
    fn tags_follow_the_table() {
        for (key, want) in CLEANRL_TAGS {
            assert_eq!(tag(key).as_deref(), Some(*want));
        }
        assert_eq!(tag("fps").as_deref(), Some("charts/SPS"));
        assert_eq!(tag("loss").as_deref(), Some("losses/td_loss"));
        assert_eq!(tag("q_mean").as_deref(), Some("losses/q_values"));
        assert_eq!(tag("clip_fraction").as_deref(), Some("losses/clipfrac"));
        assert_eq!(
            tag("eval_return_mean").as_deref(),
            Some("eval/episodic_return")
        );
        for key in VOLLEY_KEYS {
            assert_eq!(tag(key), Some(format!("volley/{key}")));
        }
        assert_eq!(tag("replay_ratio").as_deref(), Some("volley/replay_ratio"));
        for key in NOT_SCALARS {
            assert_eq!(tag(key), None, "{key}");
        }
        assert_eq!(tag("reward_loss").as_deref(), Some("losses/reward_loss"));
        assert_eq!(tag("grad_norm").as_deref(), Some("losses/grad_norm"));
        assert_eq!(tag("param_loss").as_deref(), Some("losses/param_loss"));
    }

    #[test]
    fn no_two_keys_share_a_tag() {
        let mut tags: Vec<String> = CLEANRL_TAGS
            .iter()
            .map(|(k, _)| k)
            .chain(VOLLEY_KEYS)
            .filter_map(|k| tag(k))
            .collect();
        let n = tags.len();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), n);
    }

    #[test]
    fn a_line_becomes_its_step_and_scalars() {
        let line = serde_json::json!({
            "update": 3,
            "steps": 3072,
            "time": 1.5,
            "fps": 2000.0,
            "episode_return_mean": null,
            "episodes": 0,
            "weights_version": 3,
            "policy_lag_mean": 0.5,
            "value_loss": 0.25,
            "eval_return_mean": null,
            "eval_weights_version": null,
            "note": "text",
        });
        let (step, mut values) = scalars(&line).unwrap();
        assert_eq!(step, 3072);
        values.sort_by(|a, b| a.0.cmp(&b.0));
        let want = [
            ("charts/SPS", 2000.0f32),
            ("losses/value_loss", 0.25),
            ("volley/episodes", 0.0),
            ("volley/policy_lag_mean", 0.5),
        ];
        let got: Vec<(&str, f32)> = values.iter().map(|(t, v)| (t.as_str(), *v)).collect();
        assert_eq!(got, want);
        assert!(scalars(&serde_json::json!({ "fps": 1.0 })).is_none());
        assert!(scalars(&serde_json::json!([1, 2])).is_none());
    }

    #[test]
    fn a_disabled_mirror_writes_nothing() {
        let dir = scratch();
        let mut m = Mirror::open(&dir, false);
        assert!(!m.is_on());
        m.write_line(&serde_json::json!({ "steps": 1, "fps": 1.0 }));
        assert!(event_files(&dir).is_empty());
    }

    #[test]
    fn a_mirror_writes_lines() {
        let dir = scratch();
        let mut m = Mirror::open(&dir, true);
        assert!(m.is_on());
        m.write_line(&serde_json::json!({ "steps": 10, "fps": 1.0 }));
        let files = event_files(&dir);
        assert_eq!(files.len(), 1);
        let records = read_records(&std::fs::read(&files[0]).unwrap());
        assert_eq!(records.len(), 2);
        let e = Event::decode(records[1].as_slice()).unwrap();
        assert_eq!(e.step, 10);
        assert_eq!(e.summary.unwrap().value[0].tag, "charts/SPS");
    }

    #[test]
    fn a_mirror_that_cannot_create_its_file_is_off() {
        let dir = scratch();
        let m = Mirror::open(&dir.join("no-such-dir"), true);
        assert!(!m.is_on());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_write_turns_the_mirror_off() {
        // Every write to /dev/full fails with ENOSPC.
        let file = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let mut m = Mirror {
            writer: Some(EventWriter {
                path: PathBuf::from("/dev/full"),
                file: BufWriter::new(file),
            }),
        };
        m.write_line(&serde_json::json!({ "steps": 1, "fps": 1.0 }));
        assert!(!m.is_on());
        // Later lines are not written and do not fail.
        m.write_line(&serde_json::json!({ "steps": 2, "fps": 1.0 }));
        assert!(!m.is_on());
    }
}
