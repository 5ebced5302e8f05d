//! Runs mirrored to an MLflow tracking server over its REST API (`/api/2.0/mlflow`),
//! as the projects volley replaces log their runs: the flattened config as params,
//! every `metrics.jsonl` value as a metric at its env step, tags (volley's run id and
//! name, algorithm, env, seed, group, git commit), the status at the end, and
//! artifacts (the config, `run.json`, `metrics.jsonl`, the best checkpoint, plots).
//!
//! Live ([`Mirror`]): a thread of its own talks to the server, so a tracking server
//! that is down or slow never stops or slows training. The training loop hands it
//! metrics through a bounded channel without waiting (what does not fit is dropped
//! and counted); the thread sends them in batches of up to 1000, retries failures
//! with a growing backoff, keeps at most [`MAX_PENDING`] values waiting, and counts
//! what it sent, retried and dropped (`volley_mlflow_*`). At the end it gets a few
//! seconds to send the rest, the status and the artifacts, and says what it could
//! not send; the run directory stays the source of truth, and `volley-runs
//! mlflow-export` sends a finished run there after the fact ([`export`]).
//!
//! - `client.rs`: the REST client; `mirror.rs`: the live mirror; `export.rs`: a run
//!   sent after the fact.
//!
//! Endpoints used: `experiments/get-by-name`, `experiments/create`, `runs/create`,
//! `runs/get`, `runs/log-batch`, `runs/update`, and for artifacts the server's proxy
//! (`mlflow-artifacts:` URIs, `PUT /api/2.0/mlflow-artifacts/artifacts/...`) or a local
//! `file:` artifact root.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::runs::Record;

mod client;
mod export;
mod mirror;

pub use client::Client;
pub use export::{export, Exported};
pub use mirror::{Lines, Mirror, Report};

/// Metric values waiting to be sent, at most; beyond it the oldest are dropped.
pub const MAX_PENDING: usize = 200_000;
/// Values per `log-batch` request (MLflow's limit).
const BATCH: usize = 1000;
/// Params per `log-batch` request (MLflow's limit).
const PARAM_BATCH: usize = 100;
/// MLflow refuses longer param values.
const MAX_PARAM_LEN: usize = 6000;

/// One metric value.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    /// Unix milliseconds.
    pub timestamp: i64,
    pub step: i64,
}

/// Unix milliseconds of unix seconds `t`.
fn millis(t: f64) -> i64 {
    (t * 1000.0) as i64
}

/// The metrics of one `metrics.jsonl` line: every finite number but the step counter,
/// at the line's env steps.
pub fn metrics_of_line(line: &Value, timestamp: i64) -> Vec<Metric> {
    let step = line["steps"].as_i64().unwrap_or(0);
    let Some(map) = line.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter(|(k, _)| k.as_str() != "steps")
        .filter_map(|(k, v)| {
            let value = v.as_f64()?;
            value.is_finite().then(|| Metric {
                key: k.clone(),
                value,
                timestamp,
                step,
            })
        })
        .collect()
}

/// A TOML table flattened into `(dotted key, value)` params (the auth token left out;
/// arrays as their TOML text; values cut to MLflow's limit).
pub fn params_of(table: &toml::Table) -> Vec<(String, String)> {
    fn walk(prefix: &str, t: &toml::Table, out: &mut Vec<(String, String)>) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(inner) => walk(&key, inner, out),
                _ if key == "learner.auth_token" => {}
                toml::Value::String(s) => out.push((key, s.clone())),
                other => out.push((key, other.to_string())),
            }
        }
    }
    let mut out = Vec::new();
    walk("", table, &mut out);
    for (_, v) in &mut out {
        if v.len() > MAX_PARAM_LEN {
            let mut end = MAX_PARAM_LEN;
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            v.truncate(end);
        }
    }
    out
}

/// The commit of the checkout volley runs from, if it is one.
fn git_commit() -> Option<String> {
    if let Ok(c) = std::env::var("VOLLEY_GIT_COMMIT") {
        return Some(c);
    }
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(exe.parent()?)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| s.len() >= 7)
}

/// The tags of a run.
pub fn tags_of(record: &Record) -> Vec<(String, String)> {
    let mut tags = vec![
        ("mlflow.runName".to_string(), record.name.clone()),
        ("volley.run_id".to_string(), record.id.clone()),
        ("volley.run_name".to_string(), record.name.clone()),
        ("volley.algorithm".to_string(), record.algorithm.clone()),
        ("volley.env".to_string(), record.env.clone()),
        ("volley.seed".to_string(), record.seed.to_string()),
    ];
    if !record.group.is_empty() {
        tags.push(("volley.group".into(), record.group.clone()));
    }
    if let Some(c) = git_commit() {
        tags.push(("mlflow.source.git.commit".into(), c));
    }
    tags
}

/// The files of a run directory that go to MLflow as artifacts, as `(artifact path,
/// file)`: the config, the record, the metrics log, the best checkpoint and plots.
pub fn artifacts_of(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for f in ["config.toml", "run.json", "metrics.jsonl"] {
        if dir.join(f).is_file() {
            out.push((f.to_string(), dir.join(f)));
        }
    }
    for sub in ["checkpoints/best", "plots"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            let mut files: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for p in files {
                if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                    let base = if sub == "plots" { "plots" } else { "best" };
                    out.push((format!("{base}/{n}"), p.clone()));
                }
            }
        }
    }
    out
}

/// Sends the files of an explanation folder (`dir`, below the run directory) to the
/// run's MLflow run as artifacts under the same relative path, when the run was
/// tracked (its record names an MLflow run and a tracking server is configured).
/// Returns what it did in words; an unreachable server is said, not an error (the
/// files are on disk).
pub fn upload_explanations(
    run: &crate::runs::FoundRun,
    cfg: &crate::config::RunConfig,
    dir: &Path,
) -> anyhow::Result<Option<String>> {
    let (Some(id), Some(uri)) = (run.record.mlflow_run_id.as_deref(), cfg.tracking.mlflow()) else {
        return Ok(None);
    };
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let send = || -> anyhow::Result<usize> {
        let client = Client::new(&uri)?;
        let artifacts = client.run_artifact_uri(id)?;
        for f in &files {
            let rel = f.strip_prefix(&run.dir).unwrap_or(f);
            client.upload(&artifacts, &rel.to_string_lossy(), f)?;
        }
        Ok(files.len())
    };
    Ok(Some(match send() {
        Ok(n) => format!("mlflow: {n} files sent to run {id} at {uri}"),
        Err(e) => format!("mlflow: the explanation was not sent to run {id} at {uri} ({e:#}); the files are on disk"),
    }))
}

/// MLflow's status for how a run ended.
pub fn status_of(status: crate::runs::RunStatus) -> &'static str {
    use crate::runs::RunStatus;
    match status {
        RunStatus::Running => "RUNNING",
        RunStatus::Finished => "FINISHED",
        RunStatus::Failed => "FAILED",
        RunStatus::Stopped | RunStatus::Lost => "KILLED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_become_metrics_and_configs_params() {
        let line = json!({"steps": 2048, "update": 2, "policy_loss": 0.5, "eval_return_mean": null,
                          "explained_variance": f64::NAN, "note": "x"});
        let mut m = metrics_of_line(&line, 7);
        m.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(
            (m[0].key.as_str(), m[0].value, m[0].step, m[0].timestamp),
            ("policy_loss", 0.5, 2048, 7)
        );
        let table: toml::Table = "algorithm = \"ppo\"\n[run]\nseed = 3\n[learner]\nauth_token = \"s3cret\"\n[model]\nhidden = [64, 64]\n"
            .parse()
            .unwrap();
        let p = params_of(&table);
        assert!(p.contains(&("run.seed".into(), "3".into())));
        assert!(p.contains(&("model.hidden".into(), "[64, 64]".into())));
        assert!(p.contains(&("algorithm".into(), "ppo".into())));
        assert!(!p.iter().any(|(k, _)| k.contains("auth_token")), "{p:?}");
    }
}
