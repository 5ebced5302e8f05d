//! Runs as users find them: every run directory holds `run.json`, its record, next to
//! `config.toml`, `metrics.jsonl` and `checkpoints/`:
//!
//! ```json
//! {"format": 1, "id": "20261201-223344-3f9a1c", "name": "ppo-CartPole-v1-20261201-223344",
//!  "group": "", "algorithm": "ppo", "env": "CartPole-v1", "seed": 1,
//!  "status": "running", "started": 1796164610.0, "updated": 1796164655.2, "ended": null,
//!  "wall_seconds": 45.2, "steps": 20480, "sessions": 1, "host": "gpu-box-1", "pid": 4242,
//!  "error": null, "best": {"eval_return_mean": 500.0, "steps": 18432, "weights_version": 18},
//!  "mlflow_run_id": null}
//! ```
//!
//! The learner writes it when the run starts (or resumes: `sessions` counts them),
//! every few seconds while it trains (`updated` is the heartbeat), and when it ends:
//! `finished` (its step budget reached), `stopped` (a stop request: it can be
//! resumed) or `failed` (with the error). A record that still says `running` but
//! whose learner is gone (its pid is not alive on this host, or no heartbeat for 10
//! minutes) reads as `lost`. Written through a temporary file and a rename, so a
//! reader never sees half of one.
//!
//! [`find_runs`] lists the runs below a folder; [`resolve`] finds one by id, name,
//! id or name prefix, or path.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The file of a run's record in its directory.
pub const RECORD: &str = "run.json";
/// What a run's agent is built from ([`volley_common::agent::AgentRecipe`]).
pub const AGENT: &str = "agent.json";
const FORMAT: u32 = 1;
/// A running record older than this reads as lost.
const LOST_AFTER: Duration = Duration::from_secs(600);
/// The heartbeat is written at most this often.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// How a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Its learner is training it now.
    Running,
    /// It reached its step budget.
    Finished,
    /// It was asked to stop; `--resume` continues it.
    Stopped,
    /// It ended on an error (the record says which).
    Failed,
    /// Its record says running, but its learner is gone (killed, or the machine went
    /// down): resume it to continue from its newest checkpoint.
    Lost,
}

impl RunStatus {
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Stopped => "stopped",
            RunStatus::Failed => "failed",
            RunStatus::Lost => "lost",
        }
    }
}

/// The best evaluation so far, as `checkpoints/best/eval.json` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub eval_return_mean: f64,
    pub steps: u64,
    pub weights_version: u64,
}

/// A run's record (`run.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub format: u32,
    /// Unique: the start time and random hex digits.
    pub id: String,
    /// The run's name, also its directory's name (`run.name`).
    pub name: String,
    /// The seed group it belongs to (`run.group`; empty: none).
    #[serde(default)]
    pub group: String,
    pub algorithm: String,
    pub env: String,
    pub seed: u64,
    pub status: RunStatus,
    /// Unix seconds of the first start.
    pub started: f64,
    /// Unix seconds of the last write (the heartbeat).
    pub updated: f64,
    /// Unix seconds of the last end.
    #[serde(default)]
    pub ended: Option<f64>,
    /// Seconds the run has trained, over every session.
    pub wall_seconds: f64,
    /// Env steps trained on.
    pub steps: u64,
    /// Learner starts: 1, plus one per resume.
    pub sessions: u32,
    pub host: String,
    pub pid: u32,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub best: Option<Best>,
    /// The MLflow run this run is mirrored to, if any.
    #[serde(default)]
    pub mlflow_run_id: Option<String>,
}

/// Unix seconds now.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `yyyymmdd-hhmmss` (UTC) of unix seconds `t`.
pub fn timestamp(t: f64) -> String {
    let secs = t.max(0.0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A new run id: the start time and 6 random hex digits.
pub fn new_id(started: f64) -> String {
    use rand::Rng;
    let r: u32 = rand::rng().random_range(0..0x100_0000);
    format!("{}-{r:06x}", timestamp(started))
}

/// A file name made of `s` (letters, digits, `-`, `_`, `.`; anything else `-`).
pub fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl Record {
    /// The record of a new run, at its start.
    pub fn new(name: &str, group: &str, algorithm: &str, env: &str, seed: u64) -> Record {
        let t = now();
        Record {
            format: FORMAT,
            id: new_id(t),
            name: name.to_string(),
            group: group.to_string(),
            algorithm: algorithm.to_string(),
            env: env.to_string(),
            seed,
            status: RunStatus::Running,
            started: t,
            updated: t,
            ended: None,
            wall_seconds: 0.0,
            steps: 0,
            sessions: 1,
            host: hostname(),
            pid: std::process::id(),
            error: None,
            best: None,
            mlflow_run_id: None,
        }
    }

    /// Reads `dir/run.json`.
    pub fn read(dir: &Path) -> Result<Record> {
        let p = dir.join(RECORD);
        let text = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
        let r: Record = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a run record", p.display()))?;
        if r.format != FORMAT {
            bail!(
                "{} is of format {}, this volley reads {FORMAT}",
                p.display(),
                r.format
            );
        }
        Ok(r)
    }

    /// Writes `dir/run.json` through a temporary file and a rename.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(".run.json.tmp");
        let text = serde_json::to_vec_pretty(self)?;
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(RECORD))
            .with_context(|| format!("cannot write {}", dir.join(RECORD).display()))?;
        Ok(())
    }

    /// The status as it reads now: a running record whose learner is gone is lost.
    pub fn status_now(&self) -> RunStatus {
        if self.status != RunStatus::Running {
            return self.status;
        }
        let alive = if self.host == hostname() {
            Path::new("/proc").join(self.pid.to_string()).exists()
        } else {
            true
        };
        if !alive || now() - self.updated > LOST_AFTER.as_secs_f64() {
            RunStatus::Lost
        } else {
            RunStatus::Running
        }
    }
}

/// The learner's handle on its run's record: writes the heartbeat at most every few
/// seconds and the end state.
#[derive(Debug)]
pub struct Recorder {
    dir: PathBuf,
    record: Record,
    /// Wall seconds of earlier sessions.
    before: f64,
    session_start: Instant,
    last_write: Instant,
}

impl Recorder {
    /// Starts a session of the run in `dir` with `record` (new, or read back and
    /// resumed: its status back to running, one more session) and writes it.
    pub fn start(dir: &Path, mut record: Record, resumed: bool) -> Result<Recorder> {
        if resumed {
            record.sessions += 1;
            record.status = RunStatus::Running;
            record.error = None;
            record.ended = None;
            record.host = hostname();
            record.pid = std::process::id();
        }
        record.updated = now();
        record.write(dir)?;
        let t = Instant::now();
        Ok(Recorder {
            dir: dir.to_path_buf(),
            before: record.wall_seconds,
            record,
            session_start: t,
            last_write: t,
        })
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Records progress (env steps, the best evaluation); writes when the last write
    /// is a few seconds old.
    pub fn progress(&mut self, steps: u64, best: Option<Best>) -> Result<()> {
        self.record.steps = steps;
        if best.is_some() {
            self.record.best = best;
        }
        if self.last_write.elapsed() >= HEARTBEAT {
            self.flush()?;
        }
        Ok(())
    }

    /// Sets the MLflow run this run is mirrored to, and writes.
    pub fn set_mlflow_run(&mut self, id: &str) -> Result<()> {
        self.record.mlflow_run_id = Some(id.to_string());
        self.flush()
    }

    /// Writes the record now.
    pub fn flush(&mut self) -> Result<()> {
        self.record.wall_seconds = self.before + self.session_start.elapsed().as_secs_f64();
        self.record.updated = now();
        self.last_write = Instant::now();
        self.record.write(&self.dir)
    }

    /// Writes the end of the session: `status`, and the error of a failed one.
    pub fn end(&mut self, status: RunStatus, error: Option<String>) -> Result<()> {
        self.record.status = status;
        self.record.error = error;
        self.record.ended = Some(now());
        self.flush()
    }
}

/// A run found on disk: its directory and record (older runs without `run.json`
/// get one made from their `config.toml`).
#[derive(Debug, Clone)]
pub struct FoundRun {
    pub dir: PathBuf,
    pub record: Record,
}

/// A record for a run directory without `run.json` (written by an older volley), from
/// its config, its last metrics line and its best checkpoint; its status reads as
/// stopped.
fn record_from_config(dir: &Path) -> Result<Record> {
    let table = read_config(dir)?;
    let get = |section: &str, key: &str| -> Option<toml::Value> {
        table.get(section)?.as_table()?.get(key).cloned()
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let modified = std::fs::metadata(dir.join("config.toml"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    let last = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        })
        .unwrap_or_default();
    let best = std::fs::read(dir.join("checkpoints/best/eval.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            Some(Best {
                eval_return_mean: v["eval_return_mean"].as_f64()?,
                steps: v["steps"].as_u64().unwrap_or(0),
                weights_version: v["weights_version"].as_u64().unwrap_or(0),
            })
        });
    Ok(Record {
        format: FORMAT,
        id: String::new(),
        name,
        group: String::new(),
        algorithm: table
            .get("algorithm")
            .and_then(|v| v.as_str())
            .unwrap_or("ppo")
            .to_string(),
        env: get("env", "id")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        seed: get("run", "seed")
            .and_then(|v| v.as_integer())
            .unwrap_or(0)
            .max(0) as u64,
        status: RunStatus::Stopped,
        started: modified,
        updated: modified,
        ended: None,
        wall_seconds: last["time"].as_f64().unwrap_or(0.0),
        steps: last["steps"].as_u64().unwrap_or(0),
        sessions: 1,
        host: String::new(),
        pid: 0,
        error: None,
        best,
        mlflow_run_id: None,
    })
}

/// The resolved config of an existing run (its `config.toml`).
pub fn read_config(dir: &Path) -> Result<toml::Table> {
    let p = dir.join("config.toml");
    volley_common::config::read_file(&p).with_context(|| {
        format!(
            "{} is not a run directory (no readable config.toml)",
            dir.display()
        )
    })
}

/// Whether `dir` is a run directory (it has a config.toml).
pub fn is_run_dir(dir: &Path) -> bool {
    dir.join("config.toml").is_file()
}

/// The run in `dir`.
pub fn read_run(dir: &Path) -> Result<FoundRun> {
    let record = if dir.join(RECORD).is_file() {
        Record::read(dir)?
    } else {
        record_from_config(dir)?
    };
    Ok(FoundRun {
        dir: dir.to_path_buf(),
        record,
    })
}

/// The runs in `root` and the folders below it (two levels: `runs/<name>/` and
/// `runs/<group>/<name>/`), oldest first. Unreadable ones are returned as errors
/// beside them, so a listing can say which it skipped.
pub fn find_runs(root: &Path) -> Result<(Vec<FoundRun>, Vec<String>)> {
    if !root.is_dir() {
        bail!(
            "{} is not a folder of runs (set run.dir, or pass --dir)",
            root.display()
        );
    }
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    let visit =
        |dir: &Path, runs: &mut Vec<FoundRun>, skipped: &mut Vec<String>| match read_run(dir) {
            Ok(r) => runs.push(r),
            Err(e) => skipped.push(format!("{}: {e:#}", dir.display())),
        };
    if is_run_dir(root) {
        visit(root, &mut runs, &mut skipped);
    }
    for entry in
        std::fs::read_dir(root).with_context(|| format!("cannot read {}", root.display()))?
    {
        let Ok(entry) = entry else { continue };
        let p = entry.path();
        if !p.is_dir() {
            continue;
        }
        if is_run_dir(&p) {
            visit(&p, &mut runs, &mut skipped);
        } else if let Ok(inner) = std::fs::read_dir(&p) {
            for e in inner.flatten() {
                let q = e.path();
                if q.is_dir() && is_run_dir(&q) {
                    visit(&q, &mut runs, &mut skipped);
                }
            }
        }
    }
    runs.sort_by(|a, b| {
        a.record
            .started
            .total_cmp(&b.record.started)
            .then_with(|| a.record.name.cmp(&b.record.name))
    });
    Ok((runs, skipped))
}

/// The run `what` names, among the runs below `root`: a path to a run directory; or
/// an id, a name, an id prefix or a name prefix that only one run has.
pub fn resolve(root: &Path, what: &str) -> Result<FoundRun> {
    let as_path = Path::new(what);
    if is_run_dir(as_path) {
        return read_run(as_path);
    }
    let (runs, _) = find_runs(root)?;
    for exact in [
        |r: &Record, w: &str| r.id == w,
        |r: &Record, w: &str| r.name == w,
    ] {
        let hits: Vec<&FoundRun> = runs.iter().filter(|r| exact(&r.record, what)).collect();
        if hits.len() == 1 {
            return Ok(hits[0].clone());
        }
    }
    let hits: Vec<&FoundRun> = runs
        .iter()
        .filter(|r| {
            (!r.record.id.is_empty() && r.record.id.starts_with(what))
                || r.record.name.starts_with(what)
        })
        .collect();
    match hits.len() {
        1 => Ok(hits[0].clone()),
        0 => bail!(
            "no run in {} has the id or name '{what}' (volley-runs list --dir {} lists them)",
            root.display(),
            root.display()
        ),
        n => bail!(
            "'{what}' names {n} runs in {}: {}; give more of the id or name",
            root.display(),
            hits.iter()
                .map(|r| format!("{} ({})", r.record.name, r.record.id))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The runs of a seed group (`run.group`), or the one run `what` names.
pub fn resolve_group(root: &Path, what: &str) -> Result<Vec<FoundRun>> {
    let (runs, _) = find_runs(root)?;
    let group: Vec<FoundRun> = runs
        .into_iter()
        .filter(|r| !r.record.group.is_empty() && r.record.group == what)
        .collect();
    if !group.is_empty() {
        return Ok(group);
    }
    Ok(vec![resolve(root, what)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("volley-runs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn make_run(root: &Path, name: &str, group: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), "algorithm = \"ppo\"\n").unwrap();
        let mut r = Record::new(name, group, "ppo", "CartPole-v1", 1);
        r.status = RunStatus::Finished;
        r.write(&dir).unwrap();
        dir
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(0.0), "19700101-000000");
        // 2026-12-01 22:33:44 UTC
        assert_eq!(timestamp(1_796_164_424.0), "20261201-223344");
        assert_eq!(timestamp(951_782_400.0), "20000229-000000");
        let id = new_id(0.0);
        assert!(id.starts_with("19700101-000000-") && id.len() == 22, "{id}");
        assert_eq!(file_safe("procgen:starpilot?x=1"), "procgen-starpilot-x-1");
    }

    #[test]
    fn records_round_trip_and_a_dead_learner_reads_as_lost() {
        let root = tmp("record");
        let dir = root.join("a");
        std::fs::create_dir_all(&dir).unwrap();
        let r = Record::new("a", "", "sac", "Hopper-v5", 3);
        let mut rec = Recorder::start(&dir, r.clone(), false).unwrap();
        assert_eq!(Record::read(&dir).unwrap().status_now(), RunStatus::Running);
        rec.progress(100, None).unwrap();
        rec.end(RunStatus::Stopped, None).unwrap();
        let back = Record::read(&dir).unwrap();
        assert_eq!(
            (back.status, back.steps, back.id.clone()),
            (RunStatus::Stopped, 100, r.id.clone())
        );
        // Resumed: one more session, running again.
        let rec = Recorder::start(&dir, back, true).unwrap();
        assert_eq!(rec.record().sessions, 2);
        // A running record of a pid that does not exist here is lost.
        let mut dead = Record::read(&dir).unwrap();
        dead.pid = u32::MAX - 1;
        assert_eq!(dead.status_now(), RunStatus::Lost);
        std::fs::write(dir.join(RECORD), "{").unwrap();
        assert!(Record::read(&dir)
            .unwrap_err()
            .to_string()
            .contains("not a run record"));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn runs_are_found_by_id_name_prefix_path_and_group() {
        let root = tmp("find");
        let a = make_run(&root, "ppo-cartpole-seed1", "cartpole");
        make_run(&root, "ppo-cartpole-seed2", "cartpole");
        make_run(&root, "sac-hopper", "");
        // An older run without run.json still lists.
        let old = root.join("old-run");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(
            old.join("config.toml"),
            "algorithm = \"sac\"\n[env]\nid = \"Hopper-v5\"\n",
        )
        .unwrap();
        let (runs, skipped) = find_runs(&root).unwrap();
        assert_eq!(runs.len(), 4, "{skipped:?}");
        assert!(skipped.is_empty());
        let id = Record::read(&a).unwrap().id;
        assert_eq!(resolve(&root, &id).unwrap().dir, a);
        assert_eq!(resolve(&root, &id[..id.len() - 2]).unwrap().dir, a);
        assert_eq!(resolve(&root, "sac-h").unwrap().record.name, "sac-hopper");
        assert_eq!(resolve(&root, a.to_str().unwrap()).unwrap().dir, a);
        assert_eq!(resolve(&root, "old").unwrap().record.algorithm, "sac");
        let e = resolve(&root, "ppo-cartpole").unwrap_err().to_string();
        assert!(e.contains("names 2 runs"), "{e}");
        let e = resolve(&root, "nope").unwrap_err().to_string();
        assert!(e.contains("no run"), "{e}");
        assert_eq!(resolve_group(&root, "cartpole").unwrap().len(), 2);
        assert_eq!(resolve_group(&root, "sac-hopper").unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&root);
    }
}
