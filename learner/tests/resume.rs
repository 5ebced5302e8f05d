//! Failing, stopping and resuming, with real processes on loopback:
//!
//! - a learner whose checkpoint directory stops being writable exits non-zero with a
//!   message naming it, while its actors keep retrying and rejoin the run once it is
//!   resumed;
//! - a stop request during a long update ends the update at its next minibatch and
//!   the final checkpoint is written within seconds;
//! - a stopped run resumes whole: counters and weights version carry on, a damaged
//!   newest checkpoint is refused by name and the previous one used; SAC and MP-DQN
//!   keep their replay buffer, their replay ratio and their best score.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

/// The `training.json` of the run's newest checkpoint.
fn latest_training(dir: &Path) -> serde_json::Value {
    let ck = dir.join("checkpoints");
    let name = std::fs::read_to_string(ck.join("latest")).expect("checkpoints/latest");
    let text = std::fs::read(ck.join(name.trim()).join("training.json")).expect("training.json");
    serde_json::from_slice(&text).expect("training.json is json")
}

/// The score of `checkpoints/best`, if there is one.
fn best_score(dir: &Path) -> Option<f64> {
    let text = std::fs::read(dir.join("checkpoints/best/eval.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v["eval_return_mean"].as_f64()
}

/// Stops the learner with SIGTERM and checks it exits cleanly within `limit`;
/// returns how long it took and its directory and temporary folder.
fn stop(run: Run, limit: Duration) -> (Duration, std::path::PathBuf, TempDir, std::path::PathBuf) {
    let start = Instant::now();
    run.learner.signal("TERM");
    let mut learner = run.learner;
    let status = wait_exit(&mut learner.0, limit);
    assert!(status.success(), "learner exit status {status}");
    let log = run.log.expect("a logged learner");
    (start.elapsed(), run.dir, run.tmp, log)
}

#[test]
fn a_learner_that_cannot_write_checkpoints_exits_non_zero_and_its_actors_wait() {
    let run = start_learner(
        "unwritable",
        &[
            "ppo.batch_steps=512",
            "run.total_steps=0",
            "run.checkpoint_every=1",
        ],
    );
    let m0 = free_port();
    let mut actor = start_actor(&run, "actor-0", m0);
    wait_for(Duration::from_secs(120), "2 updates", || {
        updates(&run).len() >= 2
    });
    // The checkpoint directory becomes a file: the next checkpoint cannot be written
    // (as root too).
    let ck = run.dir.join("checkpoints");
    let saved = run.dir.join("checkpoints.saved");
    std::fs::rename(&ck, &saved).expect("move checkpoints away");
    std::fs::write(&ck, b"not a directory").expect("a file in its place");
    let broke = Instant::now();
    let mut learner = run.learner;
    let status = wait_exit(&mut learner.0, Duration::from_secs(60));
    let took = broke.elapsed();
    assert!(!status.success(), "the learner exited with {status}");
    let log = std::fs::read_to_string(run.log.as_ref().expect("log")).unwrap_or_default();
    assert!(
        log.contains("training failed") && log.contains(&ck.display().to_string()),
        "the message does not name the checkpoint directory:\n{log}"
    );
    eprintln!("unwritable checkpoints: the learner exited {took:?} after the directory broke");
    assert!(took < Duration::from_secs(20), "exit took {took:?}");

    // The actor waits for its learner, as for a restart.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        actor.0.try_wait().expect("actor status").is_none(),
        "the actor exited with its learner"
    );
    // Repaired and resumed on the same address, the run gets the actor back.
    std::fs::remove_file(&ck).expect("remove the file");
    std::fs::rename(&saved, &ck).expect("restore checkpoints");
    let before = updates_in(&run.dir).len();
    let resumed = resume_learner_on(
        &run.dir,
        run.tmp,
        run.log.as_ref().expect("log"),
        run.port,
        run.metrics_port,
        &[],
    );
    wait_for(
        Duration::from_secs(90),
        "updates from the waiting actor",
        || updates(&resumed).len() >= before + 2,
    );
    drop(resumed);
}

#[test]
fn a_stop_during_a_long_update_ends_it_at_the_next_minibatch() {
    // One batch of 512 steps, trained for 50000 epochs of 4 minibatches: an update of
    // minutes on one CPU thread.
    let run = start_learner(
        "long-update",
        &[
            "ppo.batch_steps=512",
            "ppo.epochs=50000",
            "run.total_steps=0",
            "eval.every_updates=0",
        ],
    );
    let _actor = start_actor(&run, "actor-0", free_port());
    wait_for(Duration::from_secs(60), "a batch", || {
        metric(run.metrics_port, "volley_chunks_accepted_total").unwrap_or(0.0) >= 1.0
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(updates(&run).is_empty(), "the update finished already");
    let (took, dir, _tmp, _log) = stop(run, Duration::from_secs(30));
    eprintln!("stop during an update: the learner exited {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(5), "the stop took {took:?}");
    // The interrupted update counts, with the minibatches it ran, and the final
    // checkpoint holds it.
    let lines = updates_in(&dir);
    let last = lines.last().expect("the interrupted update is logged");
    let steps = last["minibatch_steps"].as_f64().unwrap_or(0.0);
    assert!((1.0..50000.0 * 4.0).contains(&steps), "{last}");
    assert_eq!(
        latest_training(&dir)["counters"]["updates"].as_u64(),
        Some(1)
    );
}

#[test]
fn a_stopped_run_resumes_whole_and_skips_a_damaged_checkpoint() {
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
    let (_, dir, tmp, log) = stop(run, Duration::from_secs(30));
    drop(actor);
    let before = updates_in(&dir);
    let last = before.last().cloned().expect("updates before the stop");
    let (steps, version) = (
        last["steps"].as_u64().unwrap_or(0),
        last["weights_version"].as_u64().unwrap_or(0),
    );

    // --resume: same run directory, counters and weights version carry on.
    let resumed = resume_learner(&dir, tmp, &log, &[]);
    // The gRPC port opens first; the metrics exporter answers a moment later.
    wait_for(
        Duration::from_secs(10),
        "the resumed weights version on /metrics",
        || metric(resumed.metrics_port, "volley_weights_version").is_some(),
    );
    assert_eq!(
        metric(resumed.metrics_port, "volley_weights_version"),
        Some(version as f64)
    );
    let actor = start_actor(&resumed, "actor-0", free_port());
    let n = before.len();
    wait_for(Duration::from_secs(120), "updates after resuming", || {
        updates(&resumed).len() >= n + 3
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

    // The newest checkpoint damaged on disk: refused by name, the previous one used.
    let (_, dir, tmp, log) = stop(resumed, Duration::from_secs(30));
    drop(actor);
    let ck = dir.join("checkpoints");
    let newest = std::fs::read_to_string(ck.join("latest")).expect("latest");
    let newest = newest.trim().to_string();
    let state = ck.join(&newest).join("state.bin");
    let len = std::fs::metadata(&state).expect("state.bin").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&state)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncate state.bin");
    let mut previous: Vec<String> = std::fs::read_dir(&ck)
        .expect("checkpoints")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("update-") && *n != newest)
        .collect();
    previous.sort();
    let previous = previous.pop().expect("an older checkpoint");
    let again = resume_learner(&dir, tmp, &log, &[]);
    log_with(
        &again,
        &[
            &format!("checkpoint {newest}: state.bin is truncated"),
            &format!("from checkpoint {previous}"),
        ],
        Duration::from_secs(10),
    );

    // A run whose step budget is spent: --resume says so and exits 0 without
    // training, and a port in use fails before anything is written.
    let (_, dir, _tmp, _) = stop(again, Duration::from_secs(30));
    let lines = updates_in(&dir).len();
    let mut done = std::process::Command::new(bin("volley-learner"))
        .args([
            "--resume",
            &dir.display().to_string(),
            "run.total_steps=1",
            &format!("learner.listen=127.0.0.1:{}", free_port()),
            &format!("learner.metrics_listen=127.0.0.1:{}", free_port()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("resume a finished run");
    assert!(wait_exit(&mut done, Duration::from_secs(60)).success());
    let mut err = String::new();
    if let Some(mut e) = done.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(err.contains("already reached run.total_steps"), "{err}");
    assert_eq!(updates_in(&dir).len(), lines, "it trained");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("addr").port();
    let parent = dir.parent().expect("run parent").to_path_buf();
    let mut clash = std::process::Command::new(bin("volley-learner"))
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
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start a learner on a busy port");
    assert!(!wait_exit(&mut clash, Duration::from_secs(60)).success());
    assert!(
        !parent.join("clash").exists(),
        "a run directory was left behind"
    );
    drop(busy);
}

/// Trains a replay algorithm until its buffer holds `fill` transitions and it has
/// evaluated `evals` times, stops it, resumes it and checks that the replay buffer,
/// the replay ratio and the best score carry on (and, with `epsilon_below`, that
/// the resumed actor explores with the annealed epsilon, not the first one).
fn replay_resumes(
    config: &str,
    name: &str,
    extra: &[&str],
    (fill, evals): (u64, usize),
    epsilon_below: Option<f64>,
) {
    let run = start_learner_with(config, name, free_port(), extra);
    let actor = start_actor(&run, "actor-0", free_port());
    wait_for(Duration::from_secs(300), "the buffer filling", || {
        let ups = updates(&run);
        let size = ups
            .last()
            .and_then(|u| u["replay_size"].as_u64())
            .unwrap_or(0);
        size >= fill && evaluations(&run).len() >= evals
    });
    let (_, dir, tmp, log) = stop(run, Duration::from_secs(30));
    drop(actor);
    let before = updates_in(&dir);
    let training = latest_training(&dir);
    let kept = training["replay_len"].as_u64().expect("replay_len");
    assert!(kept >= fill, "{training}");
    let best_before = best_score(&dir).expect("a best checkpoint");
    let evals_before = before
        .iter()
        .filter(|u| u["eval_return_mean"].is_number())
        .count();

    let resumed = resume_learner(&dir, tmp, &log, &[]);
    log_with(
        &resumed,
        &[&format!("replay buffer restored: {kept} transitions")],
        Duration::from_secs(10),
    );
    let m0 = free_port();
    let _actor = start_actor(&resumed, "actor-0", m0);
    let n = before.len();
    wait_for(
        Duration::from_secs(300),
        "updates and evaluations after resuming",
        || {
            let ups = updates(&resumed);
            ups.len() >= n + 5
                && ups
                    .iter()
                    .filter(|u| u["eval_return_mean"].is_number())
                    .count()
                    > evals_before
        },
    );
    let after = updates(&resumed);
    // The buffer carries on from what it held (it does not refill from zero): the
    // first round after the resume adds a chunk or two to it.
    let first = after[n]["replay_size"].as_u64().unwrap_or(0);
    assert!(
        first >= kept && first - kept <= 64,
        "replay size {first} after a resume that kept {kept}"
    );
    // One update per env step since learning started, across the stop.
    let ratio = replay_ratio(&resumed);
    assert!((ratio - 1.0).abs() < 0.01, "replay ratio {ratio}");
    // The best checkpoint is the best of every evaluation, before and after: a worse
    // first evaluation after the resume did not replace it.
    let later: Vec<f64> = after[n..]
        .iter()
        .filter_map(|u| u["eval_return_mean"].as_f64())
        .collect();
    let want = later.iter().copied().fold(best_before, f64::max);
    let best_after = best_score(&dir).expect("a best checkpoint");
    assert_eq!(
        best_after, want,
        "best {best_before} before, evaluations after {later:?}"
    );
    let eps = metric(m0, "volley_explore_epsilon");
    if let Some(below) = epsilon_below {
        let e = eps.unwrap_or(1.0);
        assert!(e < below, "the resumed actor explores with epsilon {e}");
    }
    eprintln!(
        "{name}: epsilon after the resume {eps:?}; kept {kept} transitions; after the resume replay {first}, ratio {ratio:.4}, best {best_before:.3} -> {best_after:.3} (evaluations after: {later:?})"
    );
}

#[test]
fn mpdqn_resumes_with_its_replay_buffer_ratio_and_best_score() {
    replay_resumes(
        "mpdqn_platform.toml",
        "mpdqn-resume",
        &[
            "run.total_steps=0",
            "eval.every_updates=40",
            "eval.episodes=20",
            "run.checkpoint_every=100",
        ],
        (2000, 2),
        // About 900 episodes before the stop: epsilon (1 -> 0.01 over 1000 episodes)
        // is near 0.1, where a run that forgot its episodes would be back at 1.
        Some(0.5),
    );
}

#[test]
fn sac_resumes_with_its_replay_buffer_ratio_and_best_score() {
    replay_resumes(
        "sac_mujoco.toml",
        "sac-resume",
        &[
            "run.total_steps=0",
            "sac.hidden=[64,64]",
            "sac.learning_starts=1000",
            "sac.buffer_size=20000",
            "eval.every_updates=40",
            "eval.episodes=4",
            "eval.max_steps=200",
            "run.checkpoint_every=100",
        ],
        (2500, 2),
        None,
    );
}
