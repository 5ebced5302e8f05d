//! A finished run sent to a tracking server after the fact.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{
    artifacts_of, metrics_of_line, millis, params_of, status_of, tags_of, Client, BATCH,
    PARAM_BATCH,
};
use crate::runs::Record;

/// What [`export`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub run_id: String,
    /// Whether the MLflow run was made now (else the one the record names was completed).
    pub created: bool,
    /// Metric values sent (those the MLflow run already held are not sent again).
    pub sent: usize,
    pub artifacts: usize,
}

/// Sends the run in `dir` (`record`, config `table`) to the server at `uri` after the
/// fact, as users send runs that trained offline or whose server went away: the MLflow
/// run the record names when the server has it (completed: only the metric values it
/// lacks are sent, so exporting twice sends nothing twice), else a new one in
/// `experiment`; then the params, tags, every `metrics.jsonl` value (timestamped by
/// its line's wall time), the artifacts and the status. Refuses a run still training
/// (its live mirror owns its MLflow run).
pub fn export(
    uri: &str,
    experiment: &str,
    dir: &Path,
    record: &Record,
    table: &toml::Table,
) -> Result<Exported> {
    use crate::runs::RunStatus;
    if record.status_now() == RunStatus::Running {
        bail!(
            "run {} is still training (pid {} on {}): export it once it has ended",
            record.name,
            record.pid,
            record.host
        );
    }
    let client = Client::new(uri)?;
    let existing = match &record.mlflow_run_id {
        Some(id) => match client.run_artifact_uri(id) {
            Ok(a) => Some((id.clone(), a)),
            Err(e) if e.to_string().contains("RESOURCE_DOES_NOT_EXIST") => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    let created = existing.is_none();
    let (id, artifact_uri) = match existing {
        Some(e) => e,
        None => {
            let exp = client.experiment(experiment)?;
            client.create_run(&exp, &record.name, millis(record.started), &tags_of(record))?
        }
    };
    if !created {
        client.log_batch(&id, &[], &[], &tags_of(record))?;
    }
    for chunk in params_of(table).chunks(PARAM_BATCH) {
        client.log_batch(&id, &[], chunk, &[])?;
    }
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    // Wall time restarts at 0 in each session; offset it by where the last one ended.
    let (mut offset, mut last_time) = (0.0f64, 0.0f64);
    let mut all = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {} is not JSON", path.display(), n + 1))?;
        let time = v["time"].as_f64().unwrap_or(last_time);
        if time < last_time {
            offset += last_time;
        }
        last_time = time;
        all.extend(metrics_of_line(&v, millis(record.started + offset + time)));
    }
    if !created {
        // What the run holds already, by key: (step, value) with multiplicity.
        let mut held: std::collections::HashMap<(String, i64, u64), usize> = Default::default();
        let mut keys: Vec<&str> = all.iter().map(|m| m.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            for (step, value) in client.metric_history(&id, key)? {
                *held
                    .entry((key.to_string(), step, value.to_bits()))
                    .or_default() += 1;
            }
        }
        all.retain(
            |m| match held.get_mut(&(m.key.clone(), m.step, m.value.to_bits())) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    false
                }
                _ => true,
            },
        );
    }
    for chunk in all.chunks(BATCH) {
        client.log_batch(&id, chunk, &[], &[])?;
    }
    let files = artifacts_of(dir);
    for (rel, file) in &files {
        client.upload(&artifact_uri, rel, file)?;
    }
    let end = record.ended.unwrap_or(record.updated);
    client.set_status(&id, status_of(record.status_now()), Some(millis(end)))?;
    Ok(Exported {
        run_id: id,
        created,
        sent: all.len(),
        artifacts: files.len(),
    })
}
