//! Checkpoints: weights, optimizer state, reward-normaliser state and counters,
//! written into `checkpoints/update-<n>/` through a temporary folder and a rename, so a
//! crash never leaves a half-written checkpoint; `checkpoints/latest` names the newest.
//! The three newest are kept.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::rundir::RunDir;

const KEEP: usize = 3;

/// Progress counters of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub updates: u64,
    /// Env steps trained on.
    pub steps: u64,
    /// Weights version (one per update).
    pub version: u64,
    /// Finished episodes received from actors (checkpoints from before this
    /// counter read as 0).
    #[serde(default)]
    pub episodes: u64,
}

/// A checkpoint read back from disk.
#[derive(Debug)]
pub struct Loaded {
    pub weights: Vec<u8>,
    pub optimizer: Vec<u8>,
    pub counters: Counters,
    pub normalizers: HashMap<String, Vec<u8>>,
}

/// Writes a checkpoint: the weights actors use, the algorithm's full training state
/// (optimizers; for SAC also critics and targets), counters and reward statistics.
pub fn save(
    run: &RunDir,
    weights: &[u8],
    training_state: &[u8],
    counters: &Counters,
    normalizers: &HashMap<String, Vec<u8>>,
) -> Result<()> {
    let dir = run.checkpoints();
    let name = format!("update-{:08}", counters.updates);
    let tmp = dir.join(format!(".tmp-{name}"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    fs::write(tmp.join("weights.bin"), weights)?;
    fs::write(tmp.join("optimizer.bin"), training_state)?;
    fs::write(
        tmp.join("counters.json"),
        serde_json::to_vec_pretty(counters)?,
    )?;
    let norms: HashMap<&String, String> = normalizers.iter().map(|(k, v)| (k, hex(v))).collect();
    fs::write(tmp.join("normalizers.json"), serde_json::to_vec(&norms)?)?;
    let final_dir = dir.join(&name);
    let _ = fs::remove_dir_all(&final_dir);
    fs::rename(&tmp, &final_dir)?;
    let latest_tmp = dir.join(".latest.tmp");
    fs::write(&latest_tmp, &name)?;
    fs::rename(&latest_tmp, dir.join("latest"))?;
    prune(&dir)?;
    Ok(())
}

/// Keeps `weights` as `checkpoints/best/` (weights.bin and eval.json), replacing the
/// previous best through a temporary folder and a rename.
pub fn save_best(run: &RunDir, weights: &[u8], eval: &serde_json::Value) -> Result<()> {
    let dir = run.checkpoints();
    let tmp = dir.join(".tmp-best");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    fs::write(tmp.join("weights.bin"), weights)?;
    fs::write(tmp.join("eval.json"), serde_json::to_vec_pretty(eval)?)?;
    let best = dir.join("best");
    let _ = fs::remove_dir_all(&best);
    fs::rename(&tmp, &best)?;
    Ok(())
}

fn prune(dir: &Path) -> Result<()> {
    let mut all: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("update-"))
        .collect();
    all.sort();
    for old in all.iter().take(all.len().saturating_sub(KEEP)) {
        fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}

/// Reads the newest checkpoint of a run directory.
pub fn load_latest(run_path: &Path) -> Result<Loaded> {
    let dir = run_path.join("checkpoints");
    let name = fs::read_to_string(dir.join("latest")).with_context(|| {
        format!(
            "{} has no checkpoint to resume from (no checkpoints/latest)",
            run_path.display()
        )
    })?;
    let ck = dir.join(name.trim());
    let read = |f: &str| {
        fs::read(ck.join(f)).with_context(|| format!("cannot read {}", ck.join(f).display()))
    };
    let counters: Counters = serde_json::from_slice(&read("counters.json")?)
        .with_context(|| format!("bad counters.json in {}", ck.display()))?;
    let norms: HashMap<String, String> = serde_json::from_slice(&read("normalizers.json")?)
        .with_context(|| format!("bad normalizers.json in {}", ck.display()))?;
    let normalizers = norms
        .into_iter()
        .map(|(k, v)| unhex(&v).map(|b| (k, b)))
        .collect::<Option<_>>()
        .with_context(|| format!("bad normalizers.json in {}", ck.display()))?;
    Ok(Loaded {
        weights: read("weights.bin")?,
        optimizer: read("optimizer.bin")?,
        counters,
        normalizers,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let b = vec![0u8, 1, 254, 255, 16];
        assert_eq!(unhex(&hex(&b)), Some(b));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
