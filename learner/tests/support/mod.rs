//! Helpers of the process tests: the built binaries, free ports, learners and actors
//! as child processes killed when dropped, their metrics and `metrics.jsonl`, and
//! the waiting helpers the learning tests share.

#![allow(dead_code)]

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The release or debug folder holding both binaries (next to this test's `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: build it first (cargo build --workspace --bins, as deploy/test.sh does)",
        p.display()
    );
    p
}

/// The seed of the learning runs: `VOLLEY_TEST_SEED`, default 1.
pub fn seed() -> u64 {
    std::env::var("VOLLEY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// A loopback port nothing listens on, for a child process to bind.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`), because a port
/// from `bind(0)` comes from that range and may be handed to some process's
/// outgoing connection between this check and the child's bind. Each call of one
/// test binary gets the next port from a start spread by process id, so the
/// threads of one binary never pick the same port.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.min(32_768));
    if high < low + 1000 {
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
    }
    let span = high - low;
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// A child process killed when dropped, so a failing test leaves nothing behind.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.0.id().to_string())
            .status();
    }
}

pub struct Run {
    pub dir: PathBuf,
    pub port: u16,
    pub metrics_port: u16,
    pub learner: Proc,
    /// Where the learner's stderr goes, when captured.
    pub log: Option<PathBuf>,
    /// Removes the run's temporary folder when the test ends.
    pub tmp: TempDir,
}

pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn start_learner(name: &str, extra: &[&str]) -> Run {
    start_learner_on(name, free_port(), extra)
}

pub fn start_learner_on(name: &str, port: u16, extra: &[&str]) -> Run {
    start_learner_with("ppo_cartpole.toml", name, port, extra)
}

/// A learner on `configs/<config>` with a run directory of its own, on CPU with one
/// torch thread; its stderr goes to the test's output and to `Run::log`.
pub fn start_learner_with(config: &str, name: &str, port: u16, extra: &[&str]) -> Run {
    let dir = std::env::temp_dir().join(format!("volley-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    let metrics_port = free_port();
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(config);
    let mut args: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "--device".into(),
        "cpu".into(),
        format!("learner.listen=127.0.0.1:{port}"),
        format!("learner.metrics_listen=127.0.0.1:{metrics_port}"),
        format!("run.dir={}", dir.display()),
        format!("run.name={name}"),
        "learner.torch_threads=1".into(),
        format!("run.seed={}", seed()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let log = dir.join(format!("{name}.learner.log"));
    let mut cmd = Command::new(bin("volley-learner"));
    cmd.args(&args);
    let run = Run {
        dir: dir.join(name),
        port,
        metrics_port,
        learner: spawn_logged(cmd, &log),
        log: Some(log),
        tmp: TempDir(dir),
    };
    wait_listening(run, "learner listening")
}

/// Waits until the run's learner accepts connections on its gRPC port; a learner
/// that exits first fails the test at once, with its exit status.
fn wait_listening(mut run: Run, what: &str) -> Run {
    let (port, learner) = (run.port, &mut run.learner.0);
    wait_for(Duration::from_secs(60), what, || {
        if let Ok(Some(status)) = learner.try_wait() {
            panic!("the learner exited ({status}) before {what}; its log is above");
        }
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    run
}

/// Resumes the run in `dir` on a fresh port, its stderr logged to `log`.
pub fn resume_learner(dir: &Path, tmp: TempDir, log: &Path, extra: &[&str]) -> Run {
    let (port, metrics_port) = (free_port(), free_port());
    resume_learner_on(dir, tmp, log, port, metrics_port, extra)
}

/// [`resume_learner`] on a given port.
pub fn resume_learner_on(
    dir: &Path,
    tmp: TempDir,
    log: &Path,
    port: u16,
    metrics_port: u16,
    extra: &[&str],
) -> Run {
    let mut cmd = Command::new(bin("volley-learner"));
    cmd.args([
        "--resume",
        &dir.display().to_string(),
        &format!("learner.listen=127.0.0.1:{port}"),
        &format!("learner.metrics_listen=127.0.0.1:{metrics_port}"),
    ])
    .args(extra);
    let run = Run {
        dir: dir.to_path_buf(),
        port,
        metrics_port,
        learner: spawn_logged(cmd, log),
        log: Some(log.to_path_buf()),
        tmp,
    };
    wait_listening(run, "resumed learner listening")
}

/// Starts `cmd` with its stderr copied line by line to the test's output and to the
/// file `log` (appended).
pub fn spawn_logged(mut cmd: Command, log: &Path) -> Proc {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start process");
    let err = child.stderr.take().expect("piped stderr");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("{line}");
            let _ = writeln!(file, "{line}");
        }
    });
    Proc(child)
}

/// What the run's learner wrote to stderr so far.
pub fn log_text(run: &Run) -> String {
    run.log
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

pub fn start_actor(run: &Run, id: &str, metrics_port: u16) -> Proc {
    start_actor_with(run, id, metrics_port, &[], Stdio::inherit())
}

pub fn start_actor_with(
    run: &Run,
    id: &str,
    metrics_port: u16,
    extra: &[&str],
    stderr: Stdio,
) -> Proc {
    let child = Command::new(bin("volley-actor"))
        .args([
            "run",
            "--learner",
            &format!("127.0.0.1:{}", run.port),
            "--actor-id",
            id,
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
            "--seed",
            &(seed() * 1000 + seed_of(id)).to_string(),
        ])
        .args(extra)
        .env_remove("VOLLEY_AUTH_TOKEN")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start actor");
    Proc(child)
}

/// A small number per actor id, so actors of one run explore differently.
pub fn seed_of(id: &str) -> u64 {
    id.bytes().map(u64::from).sum::<u64>() % 1000
}

pub fn wait_for(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lines of the run's metrics.jsonl.
pub fn updates(run: &Run) -> Vec<serde_json::Value> {
    updates_in(&run.dir)
}

pub fn updates_in(dir: &Path) -> Vec<serde_json::Value> {
    let Ok(f) = std::fs::File::open(dir.join("metrics.jsonl")) else {
        return Vec::new();
    };
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// The value of an unlabelled metric on a Prometheus endpoint.
pub fn metric(port: u16, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub fn labelled_metric(port: u16, name: &str, label: &str) -> Option<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub fn run_alive(run: &Run) -> bool {
    TcpStream::connect(("127.0.0.1", run.port)).is_ok()
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(
            start.elapsed() < limit,
            "process did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The greedy evaluations of a run so far: `(env steps, seconds, mean return)`.
pub fn evaluations(run: &Run) -> Vec<(u64, f64, f64)> {
    updates(run)
        .iter()
        .filter_map(|u| {
            Some((
                u["steps"].as_u64()?,
                u["time"].as_f64()?,
                u["eval_return_mean"].as_f64()?,
            ))
        })
        .collect()
}

/// Evaluations a learning test averages.
pub const LAST_K: usize = 3;

/// Waits until the mean of the last [`LAST_K`] evaluations reaches `target`; panics
/// with the evaluation curve when the learner stops first (its step budget) or
/// `limit` passes. Prints the curve either way, and returns the evaluations.
pub fn learns(run: &Run, what: &str, target: f64, limit: Duration) -> Vec<(u64, f64, f64)> {
    let start = Instant::now();
    loop {
        let ev = evaluations(run);
        let curve = || {
            ev.iter()
                .map(|(s, t, r)| format!("{s}:{r:.3}@{t:.0}s"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        if ev.len() >= LAST_K {
            let last = &ev[ev.len() - LAST_K..];
            let mean = last.iter().map(|e| e.2).sum::<f64>() / LAST_K as f64;
            if mean >= target {
                eprintln!(
                    "{what} (seed {}): mean of the last {LAST_K} evaluations {mean:.3} >= {target} at {} env steps, {:.0} s; evaluations (steps:return@time) {}",
                    seed(),
                    last[LAST_K - 1].0,
                    last[LAST_K - 1].1,
                    curve()
                );
                return ev;
            }
        }
        if !run_alive(run) || start.elapsed() > limit {
            panic!(
                "{what} (seed {}): the mean of the last {LAST_K} evaluations did not reach {target} within the budget ({:.0} s); evaluations (steps:return@time) {}",
                seed(),
                start.elapsed().as_secs_f64(),
                curve()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Gradient updates per env step since learning started, from the run's last
/// metrics.jsonl line.
pub fn replay_ratio(run: &Run) -> f64 {
    updates(run)
        .last()
        .and_then(|u| u["replay_ratio"].as_f64())
        .unwrap_or(0.0)
}

/// `volley-runs play <run dir> --json <args>`: the summary.
pub fn play_json(run: &Run, args: &[&str]) -> serde_json::Value {
    let out = Command::new(bin("volley-runs"))
        .arg("play")
        .arg(&run.dir)
        .arg("--json")
        .args(args)
        .output()
        .expect("run volley-runs play");
    assert!(
        out.status.success(),
        "volley-runs play failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("play prints a JSON summary")
}

/// The best checkpoint of `run`, played by `volley-runs play`: at the run's own
/// evaluation seed it gives back the returns its evaluation recorded (the same
/// episodes: greedy acting and the envs are deterministic); at another seed, with
/// twice the episodes, its mean return is within noise of the evaluation's (four
/// standard errors of the difference, plus 5% of the evaluation's mean for
/// evaluations with no spread).
pub fn plays_like_its_evaluation(run: &Run, what: &str) {
    let same = play_json(run, &[]);
    let returns = |v: &serde_json::Value, key: &str| -> Vec<f64> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no {key} in {v}"))
            .iter()
            .map(|x| x.as_f64().expect("a return is a number"))
            .collect()
    };
    let (played, evaluated) = (returns(&same, "returns"), returns(&same, "eval_returns"));
    assert_eq!(played.len(), evaluated.len(), "{what}: {same}");
    for (p, e) in played.iter().zip(&evaluated) {
        assert!(
            (p - e).abs() <= 1e-5 * e.abs().max(1.0),
            "{what}: played {played:?}, its evaluation recorded {evaluated:?}"
        );
    }
    let n = evaluated.len();
    let other = play_json(
        run,
        &["--seed", "424242", "--episodes", &(2 * n).to_string()],
    );
    let again = returns(&other, "returns");
    let stats = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0).max(1.0);
        (m, var / v.len() as f64)
    };
    let ((me, se2), (mp, sp2)) = (stats(&evaluated), stats(&again));
    let bound = 4.0 * (se2 + sp2).sqrt() + 0.05 * me.abs();
    eprintln!(
        "{what}: play at the evaluation's seed gave its {n} returns back; at another seed {} episodes mean {mp:.3} vs the evaluation's {me:.3} (bound {bound:.3})",
        again.len()
    );
    assert!(
        (mp - me).abs() <= bound,
        "{what}: played at another seed {mp:.3} (returns {again:?}), the evaluation {me:.3} ({evaluated:?}): more than {bound:.3} apart"
    );
}

/// The run's log once it holds every one of `wanted` (the learner's stderr reaches
/// the file through a copying thread, which may lag behind the port opening); panics
/// with the log after `limit`.
pub fn log_with(run: &Run, wanted: &[&str], limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = log_text(run);
        if wanted.iter().all(|w| text.contains(w)) {
            return text;
        }
        if start.elapsed() > limit {
            panic!("the learner's log does not say {wanted:?} within {limit:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
