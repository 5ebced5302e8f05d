//! Semantics every vector env shares, checked on each family: same seed, same
//! trajectories whatever the thread count; an invalid action steps nothing; auto-reset
//! with episode statistics; the time limit truncates and does not terminate.

use rand::SeedableRng;
use volley_common::env::cartpole::CartPole;
use volley_common::env::threaded::ThreadedVecEnv;
use volley_common::env::{
    make_vec_env, Actions, EnvId, EnvRng, ObsBuf, RandomActions, VecEnv, VecEnvOptions,
};

const FAMILIES: [&str; 4] = ["CartPole-v1", "Hopper-v5", "platform", "procgen:coinrun"];

fn make(id: &str, num_envs: usize, threads: usize) -> Box<dyn VecEnv> {
    let id: EnvId = id.parse().expect("valid id");
    make_vec_env(&id, VecEnvOptions::new(num_envs, threads))
        .unwrap_or_else(|e| panic!("cannot build {id}: {e} (did deploy/setup.sh run?)"))
}

/// Observations, rewards and flags of `steps` random steps.
fn rollout(
    id: &str,
    threads: usize,
    seed: u64,
    steps: usize,
) -> (Vec<ObsBuf>, Vec<f32>, Vec<bool>) {
    let mut env = make(id, 6, threads);
    let mut rng = EnvRng::seed_from_u64(seed);
    let mut actions = RandomActions::new(env.action_space(), 6).expect("action space");
    let mut obs = vec![env.reset(seed).expect("reset").obs.clone()];
    let (mut rew, mut done) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        let b = env.step(actions.sample(&mut rng)).expect("step");
        obs.push(b.obs.clone());
        rew.extend_from_slice(&b.reward);
        done.extend((0..6).map(|i| b.done(i)));
    }
    (obs, rew, done)
}

#[test]
fn same_seed_same_trajectories_whatever_the_thread_count() {
    for id in FAMILIES {
        let a = rollout(id, 1, 11, 150);
        let b = rollout(id, 3, 11, 150);
        assert!(a == b, "{id}: 1 and 3 threads differ for the same seed");
        let c = rollout(id, 1, 12, 150);
        assert!(
            a.0 != c.0,
            "{id}: different seeds gave identical observations"
        );
    }
}

#[test]
fn an_invalid_action_is_an_error_and_steps_no_env() {
    for id in FAMILIES {
        let mut env = make(id, 4, 2);
        let before = env.reset(5).expect("reset").clone();
        let bad_len = match env.action_space() {
            volley_common::env::Space::Discrete { .. } => env.step(Actions::Discrete(&[0; 3])),
            _ => env.step(Actions::Continuous(&[0.0; 1])),
        };
        assert!(
            bad_len.is_err(),
            "{id}: a batch of the wrong size was accepted"
        );
        let bad_value = match env.action_space() {
            volley_common::env::Space::Discrete { n } => {
                env.step(Actions::Discrete(&[0, 0, *n as i64, 0]))
            }
            volley_common::env::Space::Box { shape, .. } => {
                let mut a = vec![0.0; 4 * shape.iter().product::<usize>()];
                a[1] = f32::NAN;
                env.step(Actions::Continuous(&a))
            }
            volley_common::env::Space::Parameterised { params } => {
                let dim: usize = params.iter().map(|p| p.low.len()).sum();
                let mut p = vec![1.0; 4 * dim];
                p[2] = f32::INFINITY;
                env.step(Actions::Parameterised {
                    choice: &[0; 4],
                    params: &p,
                })
            }
            other => panic!("unexpected action space {other:?}"),
        };
        let msg = bad_value.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("invalid action"), "{id}: {msg}");
        assert_eq!(
            env.batch().obs,
            before.obs,
            "{id}: a rejected batch changed the envs"
        );
    }
}

#[test]
fn episodes_end_reset_and_report_their_statistics() {
    // CartPole pushed always right falls over within a few dozen steps.
    let mut env = ThreadedVecEnv::new(vec![CartPole::default(); 3], 2).expect("env");
    env.reset(1).expect("reset");
    let mut steps = 0u32;
    let mut prev = env.batch().obs.clone();
    loop {
        steps += 1;
        let b = env.step(Actions::Discrete(&[1, 1, 1])).expect("step");
        if b.done(0) {
            assert!(b.terminated[0] && !b.truncated[0]);
            assert_eq!(b.episode_length[0], steps);
            assert_eq!(b.episode_return[0], steps as f32, "reward 1 per step");
            let last = &b.final_obs.as_f32().expect("f32")[0..4];
            let new = &b.obs.as_f32().expect("f32")[0..4];
            assert!(
                last[2].abs() > 0.2 || last[0].abs() > 2.4,
                "final obs is the fallen state"
            );
            assert!(
                new.iter().all(|v| v.abs() <= 0.05),
                "obs is the next episode's first"
            );
            assert_ne!(prev.as_f32().expect("f32")[0..4], *new);
            break;
        }
        prev = b.obs.clone();
        assert!(steps < 200, "cartpole pushed right should fall");
    }
}

#[test]
fn the_time_limit_truncates_without_terminating() {
    // Alternating pushes keep CartPole up for its 500-step limit from most starts.
    let mut env = ThreadedVecEnv::new(vec![CartPole::default(); 1], 1).expect("env");
    let mut truncated_seen = false;
    for seed in 0..20 {
        env.reset(seed).expect("reset");
        for t in 1..=500u32 {
            // A simple balancing controller: push towards the pole's lean.
            let o = env.batch().obs.as_f32().expect("f32").to_vec();
            let a = i64::from(o[2] + 0.5 * o[3] > 0.0);
            let b = env.step(Actions::Discrete(&[a])).expect("step");
            if b.done(0) {
                if t == 500 && !b.terminated[0] {
                    assert!(b.truncated[0]);
                    assert_eq!(b.episode_length[0], 500);
                    truncated_seen = true;
                }
                break;
            }
            assert!(!b.truncated[0]);
        }
    }
    assert!(truncated_seen, "no episode reached the 500-step limit");
}
