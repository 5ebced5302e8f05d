//! The REST client of one MLflow tracking server.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::Metric;

/// Seconds a request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one tracking server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the server at `uri` (`http://host:port`, `https://...`).
    pub fn new(uri: &str) -> Result<Client> {
        let base = uri.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("tracking.mlflow_uri = '{uri}': expected an http:// or https:// address of an MLflow tracking server (mlflow server ...)");
        }
        let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
        Ok(Client { base, agent })
    }

    pub fn uri(&self) -> &str {
        &self.base
    }

    fn call(&self, method: &str, endpoint: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let req = self
            .agent
            .request(method, &url)
            .set("Content-Type", "application/json");
        let resp = match body {
            Some(b) => req.send_string(&b.to_string()),
            None => req.call(),
        };
        match resp {
            Ok(r) => {
                let text = r.into_string().context("reading the response")?;
                if text.trim().is_empty() {
                    return Ok(Value::Null);
                }
                serde_json::from_str(&text).with_context(|| format!("{endpoint}: not json: {text}"))
            }
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                bail!("{endpoint}: HTTP {code}: {}", text.trim())
            }
            Err(e) => bail!("{endpoint}: {e}"),
        }
    }

    /// The id of experiment `name`, created if it does not exist.
    pub fn experiment(&self, name: &str) -> Result<String> {
        let q = format!(
            "experiments/get-by-name?experiment_name={}",
            urlencode(name)
        );
        match self.call("GET", &q, None) {
            Ok(v) => {
                if let Some(id) = v["experiment"]["experiment_id"].as_str() {
                    return Ok(id.to_string());
                }
            }
            Err(e) if e.to_string().contains("RESOURCE_DOES_NOT_EXIST") => {}
            Err(e) => return Err(e),
        }
        let v = self.call("POST", "experiments/create", Some(&json!({ "name": name })))?;
        v["experiment_id"]
            .as_str()
            .map(str::to_string)
            .context("experiments/create answered without an experiment_id")
    }

    /// A new run of `experiment`; returns its id and artifact URI.
    pub fn create_run(
        &self,
        experiment: &str,
        name: &str,
        start_ms: i64,
        tags: &[(String, String)],
    ) -> Result<(String, String)> {
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let v = self.call(
            "POST",
            "runs/create",
            Some(&json!({
                "experiment_id": experiment,
                "run_name": name,
                "start_time": start_ms,
                "tags": tags,
            })),
        )?;
        let info = &v["run"]["info"];
        Ok((
            info["run_id"]
                .as_str()
                .context("runs/create answered without a run_id")?
                .to_string(),
            info["artifact_uri"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ))
    }

    /// The artifact URI of run `id` (which must exist).
    pub fn run_artifact_uri(&self, id: &str) -> Result<String> {
        let v = self.call("GET", &format!("runs/get?run_id={}", urlencode(id)), None)?;
        Ok(v["run"]["info"]["artifact_uri"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Every value of metric `key` of `run`, as `(step, value)`.
    pub fn metric_history(&self, run: &str, key: &str) -> Result<Vec<(i64, f64)>> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut q = format!(
                "metrics/get-history?run_id={}&metric_key={}&max_results=25000",
                urlencode(run),
                urlencode(key)
            );
            if !token.is_empty() {
                q.push_str(&format!("&page_token={}", urlencode(&token)));
            }
            let v = self.call("GET", &q, None)?;
            for m in v["metrics"].as_array().into_iter().flatten() {
                let value = match &m["value"] {
                    Value::String(s) => s.parse().unwrap_or(f64::NAN),
                    other => other.as_f64().unwrap_or(f64::NAN),
                };
                let step = match &m["step"] {
                    Value::String(s) => s.parse().unwrap_or(0),
                    other => other.as_i64().unwrap_or(0),
                };
                out.push((step, value));
            }
            match v["next_page_token"].as_str() {
                Some(t) if !t.is_empty() => token = t.to_string(),
                _ => return Ok(out),
            }
        }
    }

    /// Logs metrics, params and tags (each at most MLflow's limits per call).
    pub fn log_batch(
        &self,
        run: &str,
        metrics: &[Metric],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<()> {
        let metrics: Vec<Value> = metrics
            .iter()
            .map(|m| json!({"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}))
            .collect();
        let pairs = |v: &[(String, String)]| -> Vec<Value> {
            v.iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect()
        };
        self.call(
            "POST",
            "runs/log-batch",
            Some(&json!({"run_id": run, "metrics": metrics, "params": pairs(params), "tags": pairs(tags)})),
        )?;
        Ok(())
    }

    /// Sets the run's status (`RUNNING`, `FINISHED`, `FAILED`, `KILLED`).
    pub fn set_status(&self, run: &str, status: &str, end_ms: Option<i64>) -> Result<()> {
        let mut body = json!({"run_id": run, "status": status});
        if let Some(t) = end_ms {
            body["end_time"] = t.into();
        }
        self.call("POST", "runs/update", Some(&body))?;
        Ok(())
    }

    /// Uploads `file` as artifact `rel` (a relative path) of a run whose artifact URI
    /// is `artifact_uri`.
    pub fn upload(&self, artifact_uri: &str, rel: &str, file: &Path) -> Result<()> {
        let data =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        if let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") {
            let rest = rest.trim_start_matches('/');
            let url = format!(
                "{}/api/2.0/mlflow-artifacts/artifacts/{rest}/{}",
                self.base,
                rel.split('/').map(urlencode).collect::<Vec<_>>().join("/")
            );
            match self.agent.put(&url).send_bytes(&data) {
                Ok(_) => Ok(()),
                Err(ureq::Error::Status(code, r)) => {
                    bail!(
                        "uploading {rel}: HTTP {code}: {}",
                        r.into_string().unwrap_or_default().trim()
                    )
                }
                Err(e) => bail!("uploading {rel}: {e}"),
            }
        } else if let Some(root) = artifact_uri
            .strip_prefix("file://")
            .or_else(|| (!artifact_uri.contains("://")).then_some(artifact_uri))
        {
            let dst = Path::new(root).join(rel);
            if let Some(p) = dst.parent() {
                std::fs::create_dir_all(p)
                    .with_context(|| format!("cannot create {}", p.display()))?;
            }
            std::fs::write(&dst, data).with_context(|| format!("cannot write {}", dst.display()))
        } else {
            bail!(
                "artifact store {artifact_uri} is not one volley writes to: start the server with its artifact proxy (mlflow server, the default) or a local --default-artifact-root"
            )
        }
    }
}

/// Percent-encodes what URL paths and queries cannot carry as is.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_paths_encoded() {
        assert_eq!(urlencode("a b/c"), "a%20b%2Fc");
        assert!(Client::new("localhost:5000").is_err());
        assert!(Client::new("http://127.0.0.1:5000/").is_ok());
    }
}
