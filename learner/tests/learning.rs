//! Learning through the distributed path: a learner and its actors as processes on
//! loopback, a shipped config, a fixed step budget. Each test passes when the mean of
//! the last 3 greedy evaluations (the learner's own, each over `eval.episodes`
//! episodes) reaches its target before the budget is spent; it prints the whole
//! evaluation curve. `VOLLEY_TEST_SEED=N` runs them on another seed.
//!
//! Targets: PPO, Double DQN and Split-Q solve CartPole-v1 (475 of 500), A2C reaches
//! 400, SAC 500 on Hopper-v5 (a random policy scores about 18), MP-DQN 0.6 on Platform
//! (random: about 0.15). The CartPole PPO and the Platform runs then play their best
//! checkpoint with `volley-runs play`, which must give back what their evaluation
//! recorded.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn ppo_solves_cartpole() {
    // Budget: run.total_steps of ppo_cartpole.toml (1M); the learner stops there.
    let run = start_learner("ppo-cartpole", &["eval.every_updates=10"]);
    let _a0 = start_actor(&run, "actor-0", free_port());
    let _a1 = start_actor(&run, "actor-1", free_port());
    learns(&run, "ppo cartpole", 475.0, Duration::from_secs(600));
    // The evaluator explains its decisions: a share per named feature, summing to 1.
    let shares: Vec<f64> = [
        "cart position",
        "cart velocity",
        "pole angle",
        "pole angular velocity",
    ]
    .iter()
    .map(|f| {
        labelled_metric(
            run.metrics_port,
            "volley_feature_importance",
            &format!("feature=\"{f}\""),
        )
        .unwrap_or_else(|| panic!("no volley_feature_importance for {f}"))
    })
    .collect();
    let total: f64 = shares.iter().sum();
    assert!(
        (total - 1.0).abs() < 1e-3,
        "feature importances {shares:?} sum to {total}"
    );
    plays_like_its_evaluation(&run, "ppo cartpole");
}

#[test]
fn a2c_reaches_400_on_cartpole() {
    // Budget: a2c_cartpole.toml's 500k steps.
    let run = start_learner_with("a2c_cartpole.toml", "a2c-cartpole", free_port(), &[]);
    let _a0 = start_actor(&run, "actor-0", free_port());
    let _a1 = start_actor(&run, "actor-1", free_port());
    learns(&run, "a2c cartpole", 400.0, Duration::from_secs(600));
}

#[test]
fn ddqn_solves_cartpole() {
    // Budget: ddqn_cartpole.toml's 150k steps.
    let run = start_learner_with("ddqn_cartpole.toml", "ddqn-cartpole", free_port(), &[]);
    let m0 = free_port();
    let _a0 = start_actor(&run, "actor-0", m0);
    learns(&run, "ddqn cartpole", 475.0, Duration::from_secs(600));
    assert!((replay_ratio(&run) - 0.25).abs() < 0.01, "replay ratio");
    // The actor anneals epsilon by the run's env steps (1 -> 0.05 over 20k).
    let eps = metric(m0, "volley_explore_epsilon").unwrap_or(1.0);
    assert!(eps < 0.06, "actor epsilon still {eps}");
}

#[test]
fn splitq_solves_cartpole() {
    // Budget: splitq_cartpole.toml's 150k steps (a death penalty of -1 gives the
    // negative stream its rewards).
    let run = start_learner_with("splitq_cartpole.toml", "splitq-cartpole", free_port(), &[]);
    let _a0 = start_actor(&run, "actor-0", free_port());
    learns(&run, "splitq cartpole", 475.0, Duration::from_secs(600));
    assert!(metric(run.metrics_port, "volley_splitq_punish_loss").is_some());
}

#[test]
fn sac_reaches_500_on_hopper_at_its_replay_ratio() {
    // sac_mujoco.toml with 128-wide hidden layers instead of 256: a third of the
    // update cost, so the learner runs about 200 updates/s on one CPU core instead of
    // 60-90 and the test stays within minutes; everything else (learning_starts 5000,
    // replay ratio 1, two actors) as shipped.
    let run = start_learner_with(
        "sac_mujoco.toml",
        "sac-hopper",
        free_port(),
        &[
            "run.total_steps=150000",
            "sac.hidden=[128,128]",
            "eval.every_updates=100",
        ],
    );
    let m0 = free_port();
    let _a0 = start_actor(&run, "actor-0", m0);
    let _a1 = start_actor(&run, "actor-1", free_port());
    learns(&run, "sac hopper", 500.0, Duration::from_secs(900));
    assert!((replay_ratio(&run) - 1.0).abs() < 0.01, "replay ratio");
    assert!(metric(run.metrics_port, "volley_replay_size").unwrap_or(0.0) >= 5000.0);
    assert!(run.dir.join("checkpoints/best/weights.bin").is_file());
}

#[test]
fn mpdqn_reaches_0_6_on_platform() {
    // The shipped config (one update per env step, the reference's settings) with a
    // budget of 60k env steps, about 9000 episodes.
    let run = start_learner_with(
        "mpdqn_platform.toml",
        "mpdqn-platform",
        free_port(),
        &["run.total_steps=60000", "eval.every_updates=250"],
    );
    let m0 = free_port();
    let _a0 = start_actor(&run, "actor-0", m0);
    // 100 greedy episodes per evaluation (no epsilon, no noise).
    learns(&run, "mpdqn platform", 0.6, Duration::from_secs(600));
    assert!((replay_ratio(&run) - 1.0).abs() < 0.01, "replay ratio");
    // The actor anneals epsilon by the run's episodes.
    let eps = metric(m0, "volley_explore_epsilon").unwrap_or(1.0);
    assert!(eps < 0.5, "actor epsilon still {eps}");
    assert!(metric(run.metrics_port, "volley_mpdqn_q_loss").is_some());
    plays_like_its_evaluation(&run, "mpdqn platform");
}
