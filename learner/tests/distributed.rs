//! The distributed path with real processes on loopback: a learner and two actors
//! train PPO, actors follow advancing weights, an actor killed mid-run does not stop
//! the learner and rejoins when restarted, bad chunks are refused with the right
//! status while training goes on, an auth token keeps other clients out, `--check`
//! leaves nothing behind, and an actor stops when its learner's address serves
//! another run. Failures, stops and resumes are in `resume.rs`; learning in
//! `learning.rs`.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use support::*;
use volley_proto::v1::volley_client::VolleyClient;
use volley_proto::v1::{Chunk, RegisterRequest};
use volley_proto::{tensor, PROTOCOL_VERSION};

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
