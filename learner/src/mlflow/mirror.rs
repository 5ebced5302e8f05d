//! The live mirror of a run: a thread of its own between the training loop and the
//! tracking server.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use metrics::{counter, gauge};
use serde_json::Value;
use volley_common::telemetry as t;

use super::{
    metrics_of_line, millis, params_of, tags_of, Client, Metric, BATCH, MAX_PENDING, PARAM_BATCH,
};
use crate::runs::Record;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
