//! What a run's checkpoint holds, kept in the durable store of
//! [`volley_common::checkpoint`] (fsynced before the rename, a checksummed manifest,
//! names that sort past 10^8 updates, the previous one used when the newest is
//! damaged):
//!
//! - `weights.bin`: the weights actors act with;
//! - `state.bin`: the algorithm's whole state ([`crate::algo::Algorithm::state`]:
//!   networks, targets, optimizers, temperatures);
//! - `training.json`: the loop's state ([`TrainingState`]): counters, the on-policy
//!   reward statistic or the replay accounting;
//! - `replay.bin`: the replay buffer's filled rows, while they fit
//!   `checkpoint.max_replay_bytes`.
//!
//! The RNG streams of an update are derived from `run.seed` and the update counter
//! ([`crate::training`]), so the counters are the RNG state. The best evaluation's
//! weights and score are `checkpoints/best`, read back on resume.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use volley_common::checkpoint::CheckpointStore;

use crate::replay::ReplayAccounting;

/// Which checkpoint of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The best evaluation's weights (`checkpoints/best`).
    Best,
    /// The newest checkpoint that verifies.
    Latest,
    /// The checkpoint of this update number.
    Update(u64),
}

impl std::str::FromStr for Which {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "best" => Ok(Which::Best),
            "latest" => Ok(Which::Latest),
            n => n
                .parse()
                .map(Which::Update)
                .map_err(|_| format!("checkpoint '{s}' is not best, latest or an update number")),
        }
    }
}

/// The format of `training.json` this build writes and reads.
const FORMAT: u32 = 2;

/// Progress counters of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Gradient updates (on-policy: one per batch; replay algorithms: one per sampled
    /// batch).
    pub updates: u64,
    /// Env steps trained on (on-policy) or stored (replay).
    pub steps: u64,
    /// Weights version: one per publication.
    pub version: u64,
    /// Finished episodes received from actors.
    pub episodes: u64,
}

/// The training loop's state in a checkpoint (`training.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    pub format: u32,
    /// The algorithm that wrote it (a resume with another one is refused).
    pub algorithm: String,
    pub counters: Counters,
    /// On-policy runs: the reward statistic ([`crate::rollout::Rollouts::state`]).
    #[serde(default)]
    pub rollouts: Option<serde_json::Value>,
    /// Replay runs: the update accounting.
    #[serde(default)]
    pub replay: Option<ReplayAccounting>,
    /// Replay transitions at save time (kept in `replay.bin` or not).
    #[serde(default)]
    pub replay_len: u64,
}

/// A checkpoint to write.
#[derive(Debug)]
pub struct Snapshot<'a> {
    pub weights: &'a [u8],
    pub state: &'a [u8],
    pub training: TrainingState,
    /// The replay buffer's bytes, when they are kept.
    pub replay: Option<&'a [u8]>,
}

/// Writes `snapshot` as checkpoint `update-<updates>`.
pub fn save(store: &CheckpointStore, snapshot: &Snapshot<'_>) -> Result<()> {
    let training = serde_json::to_vec_pretty(&snapshot.training)?;
    let mut files: Vec<(&str, &[u8])> = vec![
        ("weights.bin", snapshot.weights),
        ("state.bin", snapshot.state),
        ("training.json", &training),
    ];
    if let Some(r) = snapshot.replay {
        files.push(("replay.bin", r));
    }
    store
        .save(snapshot.training.counters.updates, &files)
        .with_context(|| format!("cannot write a checkpoint in {}", store.dir().display()))?;
    Ok(())
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Restored {
    /// The checkpoint's folder name.
    pub name: String,
    pub weights: Vec<u8>,
    pub state: Vec<u8>,
    pub training: TrainingState,
    pub replay: Option<Vec<u8>>,
    /// Why newer checkpoints were refused (to log).
    pub refused: Vec<String>,
}

/// The newest checkpoint that verifies.
pub fn load_latest(store: &CheckpointStore) -> Result<Restored> {
    let loaded = store.load_latest()?;
    let name = loaded.name.clone();
    let mut files: BTreeMap<String, Vec<u8>> = loaded.files;
    let mut take = |f: &str| {
        files
            .remove(f)
            .with_context(|| format!("checkpoint {name} has no {f}"))
    };
    let training: TrainingState = serde_json::from_slice(&take("training.json")?)
        .with_context(|| format!("bad training.json in checkpoint {name}"))?;
    if training.format != FORMAT {
        bail!(
            "checkpoint {name} is of format {}, this volley reads {FORMAT}",
            training.format
        );
    }
    Ok(Restored {
        weights: take("weights.bin")?,
        state: take("state.bin")?,
        replay: files.remove("replay.bin"),
        training,
        refused: loaded.refused,
        name,
    })
}

impl TrainingState {
    /// A state of this build's format.
    pub fn new(algorithm: &str, counters: Counters) -> TrainingState {
        TrainingState {
            format: FORMAT,
            algorithm: algorithm.to_string(),
            counters,
            rollouts: None,
            replay: None,
            replay_len: 0,
        }
    }
}

/// Packs byte sections into one algorithm state:
///
/// ```text
/// magic (4 bytes) | version u32 = 1 | count u32 | count x ( len u64 | bytes )
/// ```
pub fn pack_state(magic: &[u8; 4], sections: &[&[u8]]) -> Vec<u8> {
    let total: usize = sections.iter().map(|s| 8 + s.len()).sum();
    let mut out = Vec::with_capacity(12 + total);
    out.extend_from_slice(magic);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for s in sections {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s);
    }
    out
}

/// The `count` sections of a [`pack_state`] state of `what` (for messages), checked
/// whole: magic, version, count, lengths, no trailing bytes.
pub fn unpack_state<'a>(
    magic: &[u8; 4],
    bytes: &'a [u8],
    count: usize,
    what: &str,
) -> Result<Vec<&'a [u8]>> {
    let mut pos = 0usize;
    let mut take = |n: usize, field: &str| -> Result<&'a [u8]> {
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= bytes.len())
            .with_context(|| format!("{what} state is truncated at its {field} (offset {pos})"))?;
        let s = &bytes[pos..end];
        pos = end;
        Ok(s)
    };
    if take(4, "magic")? != magic {
        bail!("not a {what} state (bad magic)");
    }
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let version = word(take(4, "version")?);
    if version != 1 {
        bail!("{what} state of version {version}, this build reads 1");
    }
    let n = word(take(4, "section count")?) as usize;
    if n != count {
        bail!("{what} state has {n} sections, expected {count}");
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut a = [0u8; 8];
        a.copy_from_slice(take(8, "section length")?);
        let len = usize::try_from(u64::from_le_bytes(a))
            .with_context(|| format!("{what} state section {i} is too long"))?;
        out.push(take(len, "section")?);
    }
    if pos != bytes.len() {
        bail!("{what} state has {} trailing bytes", bytes.len() - pos);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_sections_round_trip_and_damage_is_refused() {
        let packed = pack_state(b"TEST", &[b"abc", b"", b"de"]);
        let got = unpack_state(b"TEST", &packed, 3, "test").unwrap();
        assert_eq!(got, vec![&b"abc"[..], &b""[..], &b"de"[..]]);
        for cut in 0..packed.len() {
            assert!(unpack_state(b"TEST", &packed[..cut], 3, "test").is_err());
        }
        let mut longer = packed.clone();
        longer.push(0);
        assert!(unpack_state(b"TEST", &longer, 3, "test").is_err());
        assert!(unpack_state(b"XXXX", &packed, 3, "test").is_err());
        let e = unpack_state(b"TEST", &packed, 2, "test").unwrap_err();
        assert!(e.to_string().contains("3 sections, expected 2"), "{e}");
    }
}
