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
//! Endpoints used: `experiments/get-by-name`, `experiments/create`, `runs/create`,
//! `runs/get`, `runs/log-batch`, `runs/update`, and for artifacts the server's proxy
//! (`mlflow-artifacts:` URIs, `PUT /api/2.0/mlflow-artifacts/artifacts/...`) or a local
//! `file:` artifact root.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use metrics::{counter, gauge};
use serde_json::{json, Value};
use volley_common::telemetry as t;

use crate::runs::Record;

/// Metric values waiting to be sent, at most; beyond it the oldest are dropped.
pub const MAX_PENDING: usize = 200_000;
/// Values per `log-batch` request (MLflow's limit).
const BATCH: usize = 1000;
/// Params per `log-batch` request (MLflow's limit).
const PARAM_BATCH: usize = 100;
/// MLflow refuses longer param values.
const MAX_PARAM_LEN: usize = 6000;
/// Seconds a request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One metric value.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    /// Unix milliseconds.
    pub timestamp: i64,
    pub step: i64,
}

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

/// What the mirror thread was told.
enum Msg {
    Metrics(Vec<Metric>),
    Finish {
        status: &'static str,
        artifacts: Vec<(String, PathBuf)>,
    },
}

/// What the mirror did, said at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub run_id: Option<String>,
    pub sent: u64,
    /// Metric values never sent (dropped over the bounds, or left when time ran out).
    pub unsent: u64,
    pub failures: u64,
    pub artifacts: usize,
    /// Whether the status reached the server.
    pub ended: bool,
    pub last_error: Option<String>,
}

/// What the training loop holds of a [`Mirror`]: hands it lines, never waits.
#[derive(Debug, Clone)]
pub struct Lines {
    tx: Sender<Msg>,
    /// Values dropped because the channel was full.
    dropped: Arc<AtomicU64>,
    /// Values in the channel.
    queued: Arc<AtomicU64>,
}

impl Lines {
    /// Hands one `metrics.jsonl` line over without waiting; dropped (and counted) when
    /// the mirror is that far behind.
    pub fn log_line(&self, line: &Value) {
        let m = metrics_of_line(line, millis(crate::runs::now()));
        let n = m.len() as u64;
        if self.tx.try_send(Msg::Metrics(m)).is_ok() {
            self.queued.fetch_add(n, Ordering::Relaxed);
        } else {
            self.dropped.fetch_add(n, Ordering::Relaxed);
            counter!(t::MLFLOW_DROPPED).increment(n);
        }
    }
}

impl crate::rundir::LineSink for Lines {
    fn line(&mut self, line: &Value) {
        self.log_line(line);
    }
}

/// The live mirror of a run to a tracking server.
#[derive(Debug)]
pub struct Mirror {
    lines: Lines,
    /// The mirror thread's account, updated as it goes.
    report: Arc<Mutex<Report>>,
    thread: std::thread::JoinHandle<()>,
    uri: String,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Metrics(m) => write!(f, "Metrics({})", m.len()),
            Msg::Finish { status, .. } => write!(f, "Finish({status})"),
        }
    }
}

/// Failed attempts the end allows before it gives up on the server.
const FINISH_ATTEMPTS: u32 = 3;

impl Mirror {
    /// Starts mirroring the run of `record` (config `table`) to the server at `uri`,
    /// into `experiment`; a resumed run continues its MLflow run
    /// (`record.mlflow_run_id`). Only the address is checked here: the server is
    /// reached from the mirror's thread, which calls `on_open` with the MLflow run id
    /// once the run exists there.
    pub fn start(
        uri: &str,
        experiment: &str,
        record: &Record,
        table: &toml::Table,
        on_open: impl Fn(&str) + Send + 'static,
    ) -> Result<Mirror> {
        let client = Client::new(uri)?;
        let (tx, rx) = bounded::<Msg>(4096);
        let report = Arc::new(Mutex::new(Report::default()));
        let queued = Arc::new(AtomicU64::new(0));
        counter!(t::MLFLOW_SENT).increment(0);
        counter!(t::MLFLOW_ERRORS).increment(0);
        counter!(t::MLFLOW_DROPPED).increment(0);
        let job = MirrorJob {
            client,
            experiment: experiment.to_string(),
            record: record.clone(),
            params: params_of(table),
            tags: tags_of(record),
            on_open: Box::new(on_open),
            queued: Arc::clone(&queued),
            shared: Arc::clone(&report),
            report: Report::default(),
            pending: VecDeque::new(),
            opened: None,
        };
        let thread = std::thread::Builder::new()
            .name("volley-mlflow".into())
            .spawn(move || job.run(rx))?;
        Ok(Mirror {
            lines: Lines {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
                queued,
            },
            report,
            thread,
            uri: uri.to_string(),
        })
    }

    /// The MLflow run id, once known.
    pub fn run_id(&self) -> Option<String> {
        self.report.lock().ok().and_then(|r| r.run_id.clone())
    }

    /// The handle the training loop logs lines through.
    pub fn lines(&self) -> Lines {
        self.lines.clone()
    }

    /// Hands one line over without waiting (see [`Lines::log_line`]).
    pub fn log_line(&self, line: &Value) {
        self.lines.log_line(line)
    }

    /// Ends the mirror: the rest of the metrics, then `artifacts` and `status`, within
    /// `limit` (and at most a few failed attempts); then says what it did and what it
    /// could not. A thread still waiting on a server after `limit` is left to end with
    /// the process.
    pub fn finish(
        self,
        status: &'static str,
        artifacts: Vec<(String, PathBuf)>,
        limit: Duration,
    ) -> Report {
        let Mirror {
            lines,
            report,
            thread,
            uri,
        } = self;
        let start = Instant::now();
        let _ = lines
            .tx
            .send_timeout(Msg::Finish { status, artifacts }, limit);
        while !thread.is_finished() && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(20));
        }
        let timed_out = !thread.is_finished();
        let mut r = report.lock().map(|r| r.clone()).unwrap_or_default();
        // Dropped at the channel, and still in it (a thread that never took them).
        r.unsent += lines.dropped.load(Ordering::Relaxed) + lines.queued.load(Ordering::Relaxed);
        if timed_out {
            r.last_error = Some(format!(
                "the server did not take everything within {} s",
                limit.as_secs()
            ));
        }
        let id = r.run_id.clone().unwrap_or_else(|| "-".into());
        if r.unsent == 0 && r.ended && r.last_error.is_none() {
            volley_common::say!(
                "volley-learner: mlflow: run {id} at {uri}: {} values, {} artifacts, status {status}",
                r.sent,
                r.artifacts
            );
        } else {
            volley_common::say!(
                "volley-learner: mlflow: run {id} at {uri}: {} values sent, {} not sent, {} artifacts, status {}, {} failed requests (last: {}); the run directory has everything: send it with `volley-runs mlflow-export`",
                r.sent,
                r.unsent,
                r.artifacts,
                if r.ended { status } else { "not sent" },
                r.failures,
                r.last_error.as_deref().unwrap_or("-")
            );
        }
        r
    }
}

/// The mirror thread's state.
struct MirrorJob {
    client: Client,
    experiment: String,
    record: Record,
    params: Vec<(String, String)>,
    tags: Vec<(String, String)>,
    on_open: Box<dyn Fn(&str) + Send>,
    /// Values in the channel (see [`Lines`]).
    queued: Arc<AtomicU64>,
    /// Where [`Mirror`] reads the account.
    shared: Arc<Mutex<Report>>,
    report: Report,
    /// Values taken from the channel, not yet sent (at most [`MAX_PENDING`]).
    pending: VecDeque<Metric>,
    /// The MLflow run id and artifact URI, once the run exists there.
    opened: Option<(String, String)>,
}

impl MirrorJob {
    /// Creates (or finds) the run and logs its params and tags.
    fn open(&self) -> Result<(String, String)> {
        if let Some(id) = &self.record.mlflow_run_id {
            let uri = self.client.run_artifact_uri(id)?;
            self.client.set_status(id, "RUNNING", None)?;
            return Ok((id.clone(), uri));
        }
        let exp = self.client.experiment(&self.experiment)?;
        let (id, uri) = self.client.create_run(
            &exp,
            &self.record.name,
            millis(self.record.started),
            &self.tags,
        )?;
        for chunk in self.params.chunks(PARAM_BATCH) {
            self.client.log_batch(&id, &[], chunk, &[])?;
        }
        Ok((id, uri))
    }

    fn take(&mut self, msg: Msg, finish: &mut Option<(&'static str, Vec<(String, PathBuf)>)>) {
        match msg {
            Msg::Metrics(m) => {
                self.queued.fetch_sub(m.len() as u64, Ordering::Relaxed);
                self.pending.extend(m);
            }
            Msg::Finish { status, artifacts } => *finish = Some((status, artifacts)),
        }
        while self.pending.len() > MAX_PENDING {
            self.pending.pop_front();
            self.report.unsent += 1;
            counter!(t::MLFLOW_DROPPED).increment(1);
        }
    }

    /// Opens the run if it is not yet, then sends what is pending.
    fn send(&mut self) -> Result<()> {
        if self.opened.is_none() {
            let opened = self.open()?;
            self.report.run_id = Some(opened.0.clone());
            (self.on_open)(&opened.0);
            self.opened = Some(opened);
        }
        let id = self
            .opened
            .as_ref()
            .map(|o| o.0.clone())
            .unwrap_or_default();
        while !self.pending.is_empty() {
            let n = self.pending.len().min(BATCH);
            let batch: Vec<Metric> = self.pending.iter().take(n).cloned().collect();
            self.client.log_batch(&id, &batch, &[], &[])?;
            self.pending.drain(..n);
            self.report.sent += n as u64;
            counter!(t::MLFLOW_SENT).increment(n as u64);
            self.publish();
        }
        Ok(())
    }

    fn fail(&mut self, e: anyhow::Error) {
        self.report.failures += 1;
        counter!(t::MLFLOW_ERRORS).increment(1);
        if self.report.last_error.is_none() {
            volley_common::say!("volley-learner: mlflow: {e:#}; retrying (training goes on)");
        }
        self.report.last_error = Some(format!("{e:#}"));
    }

    /// Makes the account visible to [`Mirror`] and the pending gauge.
    fn publish(&self) {
        gauge!(t::MLFLOW_PENDING).set(self.pending.len() as f64);
        if let Ok(mut r) = self.shared.lock() {
            *r = Report {
                unsent: self.report.unsent + self.pending.len() as u64,
                ..self.report.clone()
            };
        }
    }

    /// Sends what arrives until told to finish, backing off while the server fails;
    /// then the rest, the artifacts and the status, with a few attempts at most.
    fn run(mut self, rx: Receiver<Msg>) {
        let mut backoff = Duration::from_millis(500);
        let mut next_try = Instant::now();
        let mut finish: Option<(&'static str, Vec<(String, PathBuf)>)> = None;
        let mut finish_failures = 0;
        loop {
            if finish.is_none() {
                let wait = next_try
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(200));
                match rx.recv_timeout(wait) {
                    Ok(msg) => self.take(msg, &mut finish),
                    Err(RecvTimeoutError::Timeout) => {}
                    // The learner went away without a word: end the run as killed.
                    Err(RecvTimeoutError::Disconnected) => finish = Some(("KILLED", Vec::new())),
                }
            }
            while let Ok(msg) = rx.try_recv() {
                self.take(msg, &mut finish);
            }
            self.publish();
            if finish.is_none() && Instant::now() < next_try {
                continue;
            }
            match self.send() {
                Ok(()) => {
                    backoff = Duration::from_millis(500);
                    next_try = Instant::now() + Duration::from_secs(1);
                }
                Err(e) => {
                    self.fail(e);
                    self.publish();
                    if finish.is_some() {
                        finish_failures += 1;
                        if finish_failures >= FINISH_ATTEMPTS {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(500) * finish_failures);
                    } else {
                        next_try = Instant::now() + backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                    continue;
                }
            }
            if let Some((status, artifacts)) = finish.take() {
                let Some((id, uri)) = self.opened.clone() else {
                    return;
                };
                for (rel, file) in &artifacts {
                    match self.client.upload(&uri, rel, file) {
                        Ok(()) => self.report.artifacts += 1,
                        Err(e) => self.fail(e),
                    }
                    self.publish();
                }
                match self
                    .client
                    .set_status(&id, status, Some(millis(crate::runs::now())))
                {
                    Ok(()) => self.report.ended = true,
                    Err(e) => self.fail(e),
                }
                self.publish();
                return;
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(urlencode("a b/c"), "a%20b%2Fc");
        assert!(Client::new("localhost:5000").is_err());
    }

    #[test]
    fn a_server_that_is_not_there_costs_the_caller_nothing() {
        // A port nothing listens on: the mirror retries in its thread; handing it lines
        // returns at once, and the end says what was not sent.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let rec = Record::new("t", "", "ppo", "CartPole-v1", 1);
        let m = Mirror::start(
            &format!("http://127.0.0.1:{port}"),
            "volley",
            &rec,
            &toml::Table::new(),
            |_| {},
        )
        .unwrap();
        let start = Instant::now();
        for i in 0..1000 {
            m.log_line(&json!({"steps": i, "policy_loss": 0.1}));
        }
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        let r = m.finish("FINISHED", Vec::new(), Duration::from_secs(2));
        assert_eq!(r.sent, 0);
        assert_eq!(r.unsent, 1000, "{r:?}");
        assert!(r.failures >= 1, "{r:?}");
        assert!(!r.ended);
    }

    #[test]
    fn a_server_that_never_answers_costs_the_caller_at_most_the_end_limit() {
        // Accepts connections and says nothing: every request waits for its timeout in
        // the mirror's thread, never in the caller's.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = std::thread::spawn(move || {
            let mut conns = Vec::new();
            for c in listener.incoming().take(4).flatten() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_secs(5));
        });
        let rec = Record::new("t", "", "ppo", "CartPole-v1", 1);
        let m = Mirror::start(
            &format!("http://127.0.0.1:{port}"),
            "volley",
            &rec,
            &toml::Table::new(),
            |_| {},
        )
        .unwrap();
        let start = Instant::now();
        // More lines than the channel holds: the rest are dropped and counted.
        for i in 0..5000 {
            m.log_line(&json!({"steps": i, "policy_loss": 0.1}));
        }
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        let start = Instant::now();
        let r = m.finish("FINISHED", Vec::new(), Duration::from_secs(1));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(r.sent, 0);
        assert_eq!(r.unsent, 5000, "{r:?}");
        assert!(r.last_error.is_some(), "{r:?}");
        drop(held);
    }
}
