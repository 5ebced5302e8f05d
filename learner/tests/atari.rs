//! The three Atari configs through the distributed path: a learner and an actor as
//! processes on loopback, each shipped config with a budget small enough for a CPU
//! (learning starts early, one evaluation of one game). Each run must train, store
//! its replay as frames (Double DQN, Split-Q), and report whole games with the game's
//! own score (multiples of 10 in Ms. Pac-Man, three lives long) in its episode
//! statistics and its evaluation, although it trains on lost lives as terminals (and
//! for Double DQN and PPO on clipped rewards). Needs deploy/setup.sh's ALE.

mod support;

use std::time::Duration;

use support::*;

/// Runs `config` until its first evaluation and its first finished training game,
/// then stops the learner; returns the run's metrics lines.
fn first_evaluation(config: &str, name: &str, extra: &[&str]) -> (Run, Vec<serde_json::Value>) {
    let mut args = vec![
        "run.total_steps=1000000",
        "eval.episodes=1",
        "eval.max_steps=4000",
    ];
    args.extend_from_slice(extra);
    let mut run = start_learner_with(config, name, free_port(), &args);
    let _actor = start_actor(&run, "actor-0", free_port());
    wait_for(
        Duration::from_secs(600),
        "a first evaluation and a finished game",
        || {
            let games = updates(&run)
                .iter()
                .any(|u| u["episode_return_mean"].as_f64().is_some());
            (games && !evaluations(&run).is_empty()) || !run_alive(&run)
        },
    );
    assert!(
        run_alive(&run),
        "{name}: the learner exited early:\n{}",
        log_text(&run)
    );
    run.learner.signal("INT");
    let status = wait_exit(&mut run.learner.0, Duration::from_secs(60));
    assert!(status.success(), "{name}: learner exit {status}");
    let lines = updates(&run);
    (run, lines)
}

/// Whole games at the game's own score. A random Ms. Pac-Man game lasts about 450
/// steps (`volley-actor random`: 454 +- 88 over 8 games), one of its three lives
/// about 150, so episodes of 300 steps and more are games, not lives; and clipped
/// rewards would sum to a few dozen, not hundreds.
fn raw_games(what: &str, lines: &[serde_json::Value]) {
    let last = lines
        .iter()
        .rev()
        .find(|u| u["episode_return_mean"].as_f64().is_some())
        .unwrap_or_else(|| panic!("{what}: no finished episode"));
    let ret = last["episode_return_mean"].as_f64().unwrap_or(0.0);
    let len = last["episode_length_mean"].as_f64().unwrap_or(0.0);
    assert!(
        ret >= 60.0,
        "{what}: training episodes return {ret}, not raw scores"
    );
    assert!(
        len >= 150.0,
        "{what}: episodes of {len} steps are not whole games"
    );
    let ev = lines
        .iter()
        .find_map(|u| u["eval_return_mean"].as_f64())
        .unwrap_or_else(|| panic!("{what}: no evaluation"));
    assert!(
        ev >= 10.0 && (ev / 10.0).fract() == 0.0,
        "{what}: evaluation return {ev} is not a Ms. Pac-Man score"
    );
    eprintln!("{what}: training games {ret:.1} over {len:.0} steps, evaluation {ev}");
}

#[test]
fn the_atari_configs_train_through_the_distributed_path() {
    let dqn = [
        "env.num_envs=4",
        "ddqn.buffer_size=20000",
        "ddqn.learning_starts=1024",
        "eval.every_updates=4",
    ];
    let (run, lines) = first_evaluation("ddqn_atari.toml", "ddqn-atari", &dqn);
    raw_games("ddqn atari", &lines);
    let log = log_text(&run);
    let line = log
        .lines()
        .find(|l| l.contains("replay of"))
        .unwrap_or_else(|| panic!("ddqn atari: no replay line in\n{log}"));
    assert!(line.contains("stacks of 4 frames"), "{line}");
    let bytes: f64 = line
        .split(" bytes a transition")
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("no bytes in {line}"));
    assert!(bytes < 1.1 * 7056.0 + 600.0, "{bytes} bytes a transition");
    assert!(
        lines.iter().any(|u| u["loss"].as_f64().is_some()),
        "no update"
    );

    let splitq = [
        "env.num_envs=4",
        "splitq.buffer_size=20000",
        "splitq.learning_starts=1024",
        "eval.every_updates=4",
    ];
    let (run, lines) = first_evaluation("splitq_atari.toml", "splitq-atari", &splitq);
    raw_games("splitq atari", &lines);
    // The death penalty is the negative stream's whole signal: it trained on it.
    assert!(metric_line(&lines, "punish_loss"), "no punish loss");
    drop(run);

    let ppo = ["ppo.batch_steps=512", "eval.every_updates=2"];
    let (_run, lines) = first_evaluation("ppo_atari.toml", "ppo-atari", &ppo);
    raw_games("ppo atari", &lines);
    assert!(metric_line(&lines, "policy_loss"), "no PPO update");
}

fn metric_line(lines: &[serde_json::Value], key: &str) -> bool {
    lines.iter().any(|u| u[key].as_f64().is_some())
}
