//! The distributed path with real processes on loopback: a learner and two actors
//! train PPO, actors follow advancing weights, an actor killed mid-run does not stop
//! the learner and rejoins when restarted, bad chunks are refused with the right
//! status while training goes on; within fixed budgets PPO solves CartPole-v1, SAC
//! learns Hopper-v5 at its replay ratio and MP-DQN learns Platform.

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use volley_proto::v1::volley_client::VolleyClient;
use volley_proto::v1::{Chunk, RegisterRequest};
use volley_proto::{tensor, PROTOCOL_VERSION};

/// The release or debug folder holding both binaries (next to this test's `deps/`).
fn bin(name: &str) -> PathBuf {
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process killed when dropped, so a failing test leaves nothing behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.0.id().to_string())
            .status();
    }
}

struct Run {
    dir: PathBuf,
    port: u16,
    metrics_port: u16,
    learner: Proc,
    /// Removes the run's temporary folder when the test ends.
    _tmp: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_learner(name: &str, extra: &[&str]) -> Run {
    start_learner_on(name, free_port(), extra)
}

fn start_learner_on(name: &str, port: u16, extra: &[&str]) -> Run {
    start_learner_with("ppo_cartpole.toml", name, port, extra)
}

/// A learner on `configs/<config>` with a run directory of its own, on CPU with one
/// torch thread.
fn start_learner_with(config: &str, name: &str, port: u16, extra: &[&str]) -> Run {
    let dir = std::env::temp_dir().join(format!("volley-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
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
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = Command::new(bin("volley-learner"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start learner");
    let run = Run {
        dir: dir.join(name),
        port,
        metrics_port,
        learner: Proc(child),
        _tmp: TempDir(dir),
    };
    wait_for(Duration::from_secs(60), "learner listening", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    run
}

fn start_actor(run: &Run, id: &str, metrics_port: u16) -> Proc {
    start_actor_with(run, id, metrics_port, &[], Stdio::inherit())
}

fn start_actor_with(run: &Run, id: &str, metrics_port: u16, extra: &[&str], stderr: Stdio) -> Proc {
    let child = Command::new(bin("volley-actor"))
        .args([
            "run",
            "--learner",
            &format!("127.0.0.1:{}", run.port),
            "--actor-id",
            id,
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .args(extra)
        .env_remove("VOLLEY_AUTH_TOKEN")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start actor");
    Proc(child)
}

fn wait_for(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
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
fn updates(run: &Run) -> Vec<serde_json::Value> {
    updates_in(&run.dir)
}

fn updates_in(dir: &Path) -> Vec<serde_json::Value> {
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
fn metric(port: u16, name: &str) -> Option<f64> {
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

fn labelled_metric(port: u16, name: &str, label: &str) -> Option<f64> {
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

#[test]
fn learner_and_actors_train_survive_a_killed_actor_and_refuse_bad_chunks() {
    let run = start_learner("runtime", &["ppo.batch_steps=512", "run.total_steps=0"]);
    let (m0, m1) = (free_port(), free_port());
    let _a0 = start_actor(&run, "actor-0", m0);
    let a1 = start_actor(&run, "actor-1", m1);

    // Several updates, and both actors follow the advancing weights.
    wait_for(Duration::from_secs(120), "3 updates", || {
        updates(&run).len() >= 3
    });
    wait_for(Duration::from_secs(60), "actors on weights v2+", || {
        metric(m0, "volley_weights_version").unwrap_or(0.0) >= 2.0
            && metric(m1, "volley_weights_version").unwrap_or(0.0) >= 2.0
    });
    assert_eq!(
        metric(run.metrics_port, "volley_connected_actors"),
        Some(2.0)
    );

    // Kill one actor hard: the learner keeps training on the other.
    a1.signal("KILL");
    drop(a1);
    let n = updates(&run).len();
    wait_for(Duration::from_secs(60), "updates after the kill", || {
        updates(&run).len() >= n + 3
    });
    assert!(run_alive(&run), "the learner stopped when an actor died");

    // Bad chunks: each refused with its status while training goes on.
    let codes = send_bad_chunks(run.port);
    assert_eq!(
        codes,
        vec![
            ("wrong shape", tonic::Code::InvalidArgument),
            ("wrong dtype", tonic::Code::InvalidArgument),
            ("truncated bytes", tonic::Code::InvalidArgument),
            ("nan reward", tonic::Code::InvalidArgument),
            ("unknown actor", tonic::Code::FailedPrecondition),
            ("old protocol", tonic::Code::FailedPrecondition),
        ]
    );
    for reason in [
        "shape",
        "dtype",
        "byte_length",
        "non_finite",
        "unknown_actor",
        "protocol_version",
    ] {
        let v = labelled_metric(
            run.metrics_port,
            "volley_chunks_rejected_total",
            &format!("reason=\"{reason}\""),
        );
        assert!(v.unwrap_or(0.0) >= 1.0, "no rejection counted for {reason}");
    }
    let n = updates(&run).len();
    wait_for(Duration::from_secs(60), "updates after bad chunks", || {
        updates(&run).len() >= n + 2
    });

    // The killed actor comes back under its id and follows the weights again.
    let m1b = free_port();
    let _a1 = start_actor(&run, "actor-1", m1b);
    let v_now = metric(m0, "volley_weights_version").unwrap_or(0.0);
    wait_for(
        Duration::from_secs(60),
        "restarted actor on current weights",
        || metric(m1b, "volley_weights_version").unwrap_or(0.0) >= v_now + 1.0,
    );
    wait_for(Duration::from_secs(30), "two actors connected", || {
        metric(run.metrics_port, "volley_connected_actors") == Some(2.0)
    });

    // SIGTERM: the learner stops cleanly and leaves a checkpoint.
    run.learner.signal("TERM");
    let mut learner = run.learner;
    let status = wait_exit(&mut learner.0, Duration::from_secs(30));
    assert!(status.success(), "learner exit status {status}");
    assert!(
        run.dir.join("checkpoints/latest").is_file(),
        "no final checkpoint"
    );
}

fn run_alive(run: &Run) -> bool {
    TcpStream::connect(("127.0.0.1", run.port)).is_ok()
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
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

/// Registers a probe actor and pushes one bad chunk of each kind; returns the codes.
fn send_bad_chunks(port: u16) -> Vec<(&'static str, tonic::Code)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async move {
        let mut c = VolleyClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        let reply = c
            .register(RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                actor_id: "probe".into(),
                auth_token: String::new(),
                env_id: String::new(),
                hostname: None,
            })
            .await
            .expect("register")
            .into_inner();
        let (t, n) = (reply.chunk_steps as usize, reply.num_envs as usize);
        let good = || Chunk {
            protocol_version: PROTOCOL_VERSION,
            actor_id: "probe".into(),
            policy_version: reply.weights_version,
            seq: 0,
            obs: Some(tensor::from_vec(&[t, n, 4], vec![0f32; t * n * 4]).expect("obs")),
            actions: Some(tensor::from_vec(&[t, n], vec![0i64; t * n]).expect("actions")),
            logprobs: Some(tensor::from_vec(&[t, n], vec![-0.7f32; t * n]).expect("lp")),
            values: Some(tensor::from_vec(&[t, n], vec![0f32; t * n]).expect("v")),
            rewards: Some(tensor::from_vec(&[t, n], vec![1f32; t * n]).expect("r")),
            terminated: Some(tensor::from_vec(&[t, n], vec![false; t * n]).expect("term")),
            truncated: Some(tensor::from_vec(&[t, n], vec![false; t * n]).expect("trunc")),
            truncation_values: Some(tensor::from_vec(&[t, n], vec![0f32; t * n]).expect("tv")),
            bootstrap_values: Some(tensor::from_vec(&[n], vec![0f32; n]).expect("bv")),
            episode_returns: vec![],
            episode_lengths: vec![],
            next_obs: None,
            action_params: None,
        };
        let mut cases: Vec<(&'static str, Chunk)> = Vec::new();
        let mut c1 = good();
        c1.obs = Some(tensor::from_vec(&[t, n, 5], vec![0f32; t * n * 5]).expect("obs"));
        cases.push(("wrong shape", c1));
        let mut c2 = good();
        c2.rewards = Some(tensor::from_vec(&[t, n], vec![1i32; t * n]).expect("r"));
        cases.push(("wrong dtype", c2));
        let mut c3 = good();
        if let Some(v) = c3.values.as_mut() {
            v.data = Bytes::copy_from_slice(&v.data[..v.data.len() - 3]);
        }
        cases.push(("truncated bytes", c3));
        let mut c4 = good();
        let mut r = vec![1f32; t * n];
        r[3] = f32::NAN;
        c4.rewards = Some(tensor::from_vec(&[t, n], r).expect("r"));
        cases.push(("nan reward", c4));
        let mut c5 = good();
        c5.actor_id = "nobody".into();
        cases.push(("unknown actor", c5));
        let mut c6 = good();
        c6.protocol_version = 0;
        cases.push(("old protocol", c6));
        let mut out = Vec::new();
        for (what, chunk) in cases {
            let code = match c.push_chunk(chunk).await {
                Ok(_) => tonic::Code::Ok,
                Err(s) => {
                    assert!(!s.message().is_empty(), "{what}: empty status message");
                    s.code()
                }
            };
            out.push((what, code));
        }
        out
    })
}

#[test]
fn ppo_solves_cartpole_through_the_distributed_path() {
    // Budget: run.total_steps of ppo_cartpole.toml; the learner stops there.
    let run = start_learner(
        "cartpole",
        &["run.return_window=20", "eval.every_updates=10"],
    );
    let _a0 = start_actor(&run, "actor-0", free_port());
    let _a1 = start_actor(&run, "actor-1", free_port());
    let start = Instant::now();
    let solved = loop {
        let ups = updates(&run);
        if let Some(u) = ups
            .iter()
            .find(|u| u["episode_return_mean"].as_f64().unwrap_or(0.0) >= 475.0)
        {
            break Some(u.clone());
        }
        if !run_alive(&run) || start.elapsed() > Duration::from_secs(600) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let last = updates(&run).last().cloned();
    let u = solved.unwrap_or_else(|| panic!("not solved within the budget; last update: {last:?}"));
    eprintln!(
        "cartpole solved at {} env steps, {:.0} s: mean return over the last 20 episodes {}",
        u["steps"],
        u["time"].as_f64().unwrap_or(0.0),
        u["episode_return_mean"]
    );
}

#[test]
fn a_run_with_an_auth_token_serves_only_actors_that_present_it() {
    let run = start_learner(
        "auth",
        &[
            "ppo.batch_steps=512",
            "run.total_steps=0",
            "learner.auth_token=s3cret",
        ],
    );
    // The right token: registration, chunks and the weight stream all work.
    let m0 = free_port();
    let _good = start_actor_with(
        &run,
        "actor-0",
        m0,
        &["--auth-token", "s3cret"],
        Stdio::inherit(),
    );
    wait_for(Duration::from_secs(120), "2 updates", || {
        updates(&run).len() >= 2
    });
    wait_for(Duration::from_secs(60), "actor on weights v2+", || {
        metric(m0, "volley_weights_version").unwrap_or(0.0) >= 2.0
    });
    // A wrong token: refused at registration, the actor exits with a clear error.
    let mut bad = start_actor_with(
        &run,
        "actor-1",
        free_port(),
        &["--auth-token", "wrong"],
        Stdio::piped(),
    );
    let status = wait_exit(&mut bad.0, Duration::from_secs(30));
    assert!(!status.success());
    let mut err = String::new();
    if let Some(mut e) = bad.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(err.contains("auth token"), "{err}");
    // The secret is not in the run directory.
    let saved = std::fs::read_to_string(run.dir.join("config.toml")).expect("config.toml");
    assert!(!saved.contains("s3cret"), "token written to config.toml");
    assert!(run_alive(&run));
}

#[test]
fn check_mode_validates_the_config_and_leaves_nothing_behind() {
    let dir = std::env::temp_dir().join(format!("volley-test-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _tmp = TempDir(dir.clone());
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/mpdqn_platform.toml");
    let run = |extra: &[&str]| {
        Command::new(bin("volley-learner"))
            .arg("--check")
            .arg("--config")
            .arg(&config)
            .arg(format!("run.dir={}", dir.display()))
            .args(extra)
            .output()
            .expect("run volley-learner --check")
    };
    let ok = run(&["learner.auth_token=s3cret"]);
    let (out, err) = (
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr),
    );
    assert!(ok.status.success(), "{err}");
    assert!(out.contains("algorithm = \"mpdqn\""), "{out}");
    assert!(!out.contains("s3cret"), "the token was printed");
    assert!(err.contains("config ok: mpdqn on platform"), "{err}");
    assert!(!dir.exists(), "--check created the run directory");
    let bad = run(&["mpdqn.lr=1"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("unknown config key 'mpdqn.lr'"), "{err}");
}

#[test]
fn a_stopped_run_resumes_from_its_checkpoint() {
    let run = start_learner(
        "resume",
        &[
            "ppo.batch_steps=512",
            "run.total_steps=0",
            "run.checkpoint_every=2",
        ],
    );
    let actor = start_actor(&run, "actor-0", free_port());
    wait_for(Duration::from_secs(120), "4 updates", || {
        updates(&run).len() >= 4
    });
    run.learner.signal("TERM");
    let dir = run.dir.clone();
    let tmp = run._tmp;
    let mut learner = run.learner;
    assert!(wait_exit(&mut learner.0, Duration::from_secs(30)).success());
    drop(actor);
    let before = updates_in(&dir);
    let last = before.last().cloned().expect("updates before the stop");
    let (steps, version) = (
        last["steps"].as_u64().unwrap_or(0),
        last["weights_version"].as_u64().unwrap_or(0),
    );

    // --resume: same run directory, counters and weights version carry on.
    let (port, metrics_port) = (free_port(), free_port());
    let child = Command::new(bin("volley-learner"))
        .args([
            "--resume",
            &dir.display().to_string(),
            &format!("learner.listen=127.0.0.1:{port}"),
            &format!("learner.metrics_listen=127.0.0.1:{metrics_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("resume learner");
    let resumed = Run {
        dir,
        port,
        metrics_port,
        learner: Proc(child),
        _tmp: tmp,
    };
    wait_for(Duration::from_secs(60), "resumed learner listening", || {
        run_alive(&resumed)
    });
    assert_eq!(
        metric(metrics_port, "volley_weights_version"),
        Some(version as f64)
    );
    let _actor = start_actor(&resumed, "actor-0", free_port());
    let n = before.len();
    wait_for(Duration::from_secs(120), "updates after resuming", || {
        updates(&resumed).len() >= n + 2
    });
    let next = &updates(&resumed)[n];
    assert_eq!(
        next["update"].as_u64(),
        Some(last["update"].as_u64().unwrap_or(0) + 1)
    );
    assert!(
        next["steps"].as_u64().unwrap_or(0) > steps,
        "steps restarted from zero: {next}"
    );
    assert_eq!(next["weights_version"].as_u64(), Some(version + 1));

    // A run whose step budget is spent: --resume says so and exits 0 without
    // training, and a port in use fails before anything is written.
    let mut learner = resumed.learner;
    learner.signal("TERM");
    assert!(wait_exit(&mut learner.0, Duration::from_secs(30)).success());
    let lines = updates_in(&resumed.dir).len();
    let mut done = Command::new(bin("volley-learner"))
        .args([
            "--resume",
            &resumed.dir.display().to_string(),
            "run.total_steps=1",
            &format!("learner.listen=127.0.0.1:{}", free_port()),
            &format!("learner.metrics_listen=127.0.0.1:{}", free_port()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("resume a finished run");
    assert!(wait_exit(&mut done, Duration::from_secs(60)).success());
    let mut err = String::new();
    if let Some(mut e) = done.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(err.contains("already reached run.total_steps"), "{err}");
    assert_eq!(updates_in(&resumed.dir).len(), lines, "it trained");

    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("addr").port();
    let parent = resumed.dir.parent().expect("run parent").to_path_buf();
    let mut clash = Command::new(bin("volley-learner"))
        .args([
            "--config",
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../configs/ppo_cartpole.toml")
                .display()
                .to_string(),
            "--device",
            "cpu",
            &format!("learner.listen=127.0.0.1:{busy_port}"),
            &format!("learner.metrics_listen=127.0.0.1:{}", free_port()),
            &format!("run.dir={}", parent.display()),
            "run.name=clash",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a learner on a busy port");
    assert!(!wait_exit(&mut clash, Duration::from_secs(60)).success());
    assert!(
        !parent.join("clash").exists(),
        "a run directory was left behind"
    );
    drop(busy);
}

#[test]
fn an_actor_stops_when_its_learner_comes_back_serving_another_run() {
    let run = start_learner("change-a", &["ppo.batch_steps=512", "run.total_steps=0"]);
    let port = run.port;
    let mut actor = Command::new(bin("volley-actor"))
        .args([
            "run",
            "--learner",
            &format!("127.0.0.1:{port}"),
            "--actor-id",
            "a0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start actor");
    wait_for(Duration::from_secs(60), "an update", || {
        !updates(&run).is_empty()
    });
    run.learner.signal("KILL");
    drop(run);
    // Another run on the same address: the actor must not feed it chunks of the old one.
    let other = start_learner_on("change-b", port, &["run.total_steps=0"]);
    let status = wait_exit(&mut actor, Duration::from_secs(60));
    let mut err = String::new();
    if let Some(mut e) = actor.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        !status.success(),
        "the actor kept running against another run"
    );
    assert!(err.contains("now serves run 'change-b'"), "{err}");
    drop(other);
}

/// Waits until an evaluation in metrics.jsonl reaches `target`, the learner exits or
/// `limit` passes; returns that line, or panics with the last line.
fn wait_for_eval(run: &Run, target: f64, limit: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let ups = updates(run);
        if let Some(u) = ups
            .iter()
            .find(|u| u["eval_return_mean"].as_f64().unwrap_or(f64::MIN) >= target)
        {
            return u.clone();
        }
        if !run_alive(run) || start.elapsed() > limit {
            let last = ups.last().cloned().unwrap_or_default();
            let evals: Vec<String> = ups
                .iter()
                .filter_map(|u| u["eval_return_mean"].as_f64())
                .map(|e| format!("{e:.3}"))
                .collect();
            panic!(
                "no evaluation reached {target} in {:.0} s; evaluations {evals:?}; last line: {last}",
                start.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One gradient update per env step since learning started, exactly (the run's
/// last metrics.jsonl line).
fn assert_one_update_per_step(run: &Run) {
    let last = updates(run).last().cloned().unwrap_or_default();
    let ratio = last["replay_ratio"].as_f64().unwrap_or(0.0);
    assert!(
        (ratio - 1.0).abs() < 0.01,
        "replay ratio {ratio}, target 1.0"
    );
}

#[test]
fn sac_learns_hopper_through_the_distributed_path_at_its_replay_ratio() {
    // sac_mujoco.toml with 128-wide hidden layers instead of 256: a third of the
    // update cost, so the learner runs about 200 updates/s on one CPU core instead of
    // 60-90 and the test stays within minutes; everything else (learning_starts 5000,
    // replay ratio 1, two actors) as shipped.
    let run = start_learner_with(
        "sac_mujoco.toml",
        "sac",
        free_port(),
        &[
            "run.total_steps=0",
            "sac.hidden=[128,128]",
            "eval.every_updates=100",
        ],
    );
    let m0 = free_port();
    let _a0 = start_actor(&run, "actor-0", m0);
    let _a1 = start_actor(&run, "actor-1", free_port());

    // Random Hopper scores about 18; SAC's deterministic policy must reach 500.
    let u = wait_for_eval(&run, 500.0, Duration::from_secs(600));
    eprintln!(
        "sac hopper: eval {} at {} env steps, {:.0} s",
        u["eval_return_mean"],
        u["steps"],
        u["time"].as_f64().unwrap_or(0.0)
    );
    assert_one_update_per_step(&run);
    assert!(metric(run.metrics_port, "volley_replay_size").unwrap_or(0.0) >= 5000.0);
    assert!(
        metric(m0, "volley_weights_version").unwrap_or(0.0) >= 1.0,
        "actor on v0"
    );
    assert!(run.dir.join("checkpoints/best/weights.bin").is_file());
}

#[test]
fn mpdqn_learns_platform_through_the_distributed_path() {
    // The shipped config (one update per env step, the reference's settings) with a
    // budget of 40k env steps, about 6000 episodes.
    let run = start_learner_with(
        "mpdqn_platform.toml",
        "mpdqn",
        free_port(),
        &["run.total_steps=40000", "eval.every_updates=250"],
    );
    let m0 = free_port();
    let _a0 = start_actor(&run, "actor-0", m0);

    // A uniform random policy scores about 0.16; the greedy policy (no epsilon, no
    // noise) must average 0.6 over the evaluation's 100 episodes.
    let u = wait_for_eval(&run, 0.6, Duration::from_secs(420));
    eprintln!(
        "mp-dqn platform: greedy {} at {} env steps, {} episodes, {:.0} s",
        u["eval_return_mean"],
        u["steps"],
        u["episodes"],
        u["time"].as_f64().unwrap_or(0.0)
    );
    assert_one_update_per_step(&run);
    // The actor anneals epsilon by the run's episodes.
    let eps = metric(m0, "volley_explore_epsilon").unwrap_or(1.0);
    assert!(eps < 0.5, "actor epsilon still {eps}");
    assert!(metric(run.metrics_port, "volley_mpdqn_q_loss").is_some());
    assert!(run.dir.join("checkpoints/best/weights.bin").is_file());
}
