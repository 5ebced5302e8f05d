//! Conformance of Hopper-v5, HalfCheetah-v5 and Ant-v5 with Gymnasium 1.4.0 on MuJoCo
//! 3.17.0, against fixtures recorded by `fixtures/record_mujoco.sh`
//! (`fixtures/record_mujoco.py` documents what they hold).
//!
//! - single transitions: restore MuJoCo's full integration state (warm start included)
//!   and the reference x, step with the recorded action, compare observation, reward and
//!   terminated flag;
//! - reset observations for given `qpos`/`qvel`;
//! - a uniform-random policy's mean episode return and length, within a few standard
//!   errors of Gymnasium's.
//!
//! Tolerance of the exact comparisons: `|ours - gym| <= 1e-6 * |gym| + 1e-9`. Both sides
//! run the same MuJoCo build on the same state with the same `f64` controls (float32
//! actions widen exactly), and the rewards reproduce NumPy's summation order, so
//! everything but the observation's cast to `f32` agrees to the bit; that cast costs at
//! most 2^-24 (6e-8) relative, well inside 1e-6. The absolute floor of 1e-9 covers
//! values that are zero in exact arithmetic (resting velocities, contact forces), where
//! a relative bound means nothing; it is far below any scale a policy sees.
//!
//! Without the native dependencies every test here fails with a message that names
//! deploy/setup.sh.

use rand::{Rng, SeedableRng};
use serde::Deserialize;
use volley_common::env::mujoco::{MujocoEnv, MujocoTask, STATE_SPEC};
use volley_common::env::threaded::ThreadedVecEnv;
use volley_common::env::{ActionRef, Actions, Env, EnvRng, Space, VecEnv};

#[derive(Debug, Deserialize)]
struct Fixture {
    task: String,
    nq: usize,
    nv: usize,
    state_spec: i32,
    state_size: usize,
    #[serde(deserialize_with = "exact")]
    dt: f64,
    resets: Vec<Reset>,
    transitions: Vec<Transition>,
    random_policy: RandomPolicy,
}

#[derive(Debug, Deserialize)]
struct Reset {
    #[serde(deserialize_with = "exact_vec")]
    qpos: Vec<f64>,
    #[serde(deserialize_with = "exact_vec")]
    qvel: Vec<f64>,
    #[serde(deserialize_with = "exact_vec")]
    obs: Vec<f64>,
}

#[derive(Debug, Deserialize)]
struct Transition {
    #[serde(deserialize_with = "exact_vec")]
    state: Vec<f64>,
    #[serde(deserialize_with = "exact")]
    x_before: f64,
    #[serde(deserialize_with = "exact_vec")]
    action: Vec<f64>,
    #[serde(deserialize_with = "exact_vec")]
    obs: Vec<f64>,
    #[serde(deserialize_with = "exact")]
    reward: f64,
    terminated: bool,
}

/// A number the fixture writes as a string (Python's round-trip `repr`), parsed exactly:
/// serde_json's default number parser may be one ulp off.
fn parse_exact<E: serde::de::Error>(s: &str) -> Result<f64, E> {
    s.parse::<f64>()
        .map_err(|e| E::custom(format!("bad number '{s}': {e}")))
}

fn exact<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    parse_exact(&String::deserialize(d)?)
}

fn exact_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| parse_exact(s))
        .collect()
}

#[derive(Debug, Deserialize)]
struct RandomPolicy {
    episodes: usize,
    mean_return: f64,
    std_return: f64,
    mean_length: f64,
    std_length: f64,
}

const REL_TOL: f64 = 1e-6;
const ABS_TOL: f64 = 1e-9;

fn fixture(task: MujocoTask) -> Fixture {
    let text = match task {
        MujocoTask::Hopper => include_str!("fixtures/mujoco/hopper.json"),
        MujocoTask::HalfCheetah => include_str!("fixtures/mujoco/half_cheetah.json"),
        MujocoTask::Ant => include_str!("fixtures/mujoco/ant.json"),
    };
    let f: Fixture = serde_json::from_str(text).expect("fixture parses");
    assert_eq!(f.task, task.id());
    f
}

fn env(task: MujocoTask) -> MujocoEnv {
    match MujocoEnv::batch(task, 1) {
        Ok(mut v) => v.pop().expect("one env"),
        Err(e) => panic!("cannot build {}: {e}", task.id()),
    }
}

fn close(ours: f64, gym: f64) -> bool {
    (ours - gym).abs() <= REL_TOL * gym.abs() + ABS_TOL
}

/// Largest error relative to the tolerance (<= 1 passes), and where.
fn check_obs(what: &str, ours: &[f32], gym: &[f64]) -> f64 {
    assert_eq!(ours.len(), gym.len(), "{what}: observation length");
    let mut worst: f64 = 0.0;
    for (i, (&a, &b)) in ours.iter().zip(gym).enumerate() {
        let a = f64::from(a);
        assert!(close(a, b), "{what}: obs[{i}] is {a}, gymnasium {b}");
        worst = worst.max((a - b).abs() / (REL_TOL * b.abs() + ABS_TOL));
    }
    worst
}

fn check_transitions(task: MujocoTask) {
    let f = fixture(task);
    let mut env = env(task);
    let mut rng = EnvRng::seed_from_u64(0);
    let mut obs = vec![0.0f32; env.obs_len()];
    let (mut worst_obs, mut worst_reward, mut terminal) = (0.0f64, 0.0f64, 0);
    for (k, t) in f.transitions.iter().enumerate() {
        let what = format!("{} transition {k}", task.id());
        env.restore_state(&t.state, t.x_before)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let action: Vec<f32> = t.action.iter().map(|&a| a as f32).collect();
        for (&a, &b) in action.iter().zip(&t.action) {
            assert_eq!(
                f64::from(a),
                b,
                "{what}: fixture actions are float32 values"
            );
        }
        let step = env
            .step(ActionRef::Continuous(&action), &mut rng, &mut obs)
            .expect("step");
        worst_obs = worst_obs.max(check_obs(&what, &obs, &t.obs));
        assert!(
            close(step.reward, t.reward),
            "{what}: reward {} vs gymnasium {}",
            step.reward,
            t.reward
        );
        worst_reward = worst_reward.max((step.reward - t.reward).abs());
        assert_eq!(step.terminated, t.terminated, "{what}: terminated");
        terminal += usize::from(t.terminated);
    }
    eprintln!(
        "{}: {} transitions ({terminal} terminal) match; worst obs error {worst_obs:.3} of \
         the tolerance, worst reward error {worst_reward:e}",
        task.id(),
        f.transitions.len()
    );
}

#[test]
fn hopper_transitions_match_gymnasium() {
    check_transitions(MujocoTask::Hopper);
}

#[test]
fn half_cheetah_transitions_match_gymnasium() {
    check_transitions(MujocoTask::HalfCheetah);
}

#[test]
fn ant_transitions_match_gymnasium() {
    check_transitions(MujocoTask::Ant);
}

#[test]
fn fixtures_cover_terminations() {
    for task in [MujocoTask::Hopper, MujocoTask::Ant] {
        let f = fixture(task);
        let n = f.transitions.iter().filter(|t| t.terminated).count();
        assert!(n >= 2, "{}: only {n} terminal transitions", task.id());
        assert!(
            n < f.transitions.len(),
            "{}: no healthy transitions",
            task.id()
        );
    }
}

#[test]
fn reset_observations_match_gymnasium() {
    for task in MujocoTask::ALL {
        let f = fixture(task);
        let mut env = env(task);
        let mut obs = vec![0.0f32; env.obs_len()];
        for (k, r) in f.resets.iter().enumerate() {
            let what = format!("{} reset {k}", task.id());
            env.reset_to(&r.qpos, &r.qvel, &mut obs)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            check_obs(&what, &obs, &r.obs);
        }
    }
}

#[test]
fn sizes_and_spaces_match_gymnasium() {
    let dims = [
        (MujocoTask::Hopper, 11, 3),
        (MujocoTask::HalfCheetah, 17, 6),
        (MujocoTask::Ant, 105, 8),
    ];
    for (task, obs_len, act_dim) in dims {
        let f = fixture(task);
        let env = env(task);
        assert_eq!(env.obs_len(), obs_len, "{}", task.id());
        assert_eq!(env.qpos().len(), f.nq, "{}", task.id());
        assert_eq!(env.qvel().len(), f.nv, "{}", task.id());
        assert_eq!(f.state_spec, STATE_SPEC);
        assert_eq!(env.state_size(), f.state_size, "{}", task.id());
        assert_eq!(env.dt(), f.dt, "{}", task.id());
        assert_eq!(env.max_episode_steps(), Some(1000));
        match env.action_space() {
            Space::Box { shape, low, high } => {
                assert_eq!(shape, vec![act_dim]);
                assert!(low.iter().all(|&l| l == -1.0) && high.iter().all(|&h| h == 1.0));
            }
            other => panic!("{}: action space {other:?}", task.id()),
        }
        assert_eq!(
            env.observation_space(),
            Space::uniform_box(&[obs_len], f32::NEG_INFINITY, f32::INFINITY)
        );
    }
}

/// Returns and lengths of the first `episodes` episodes of a uniform-random policy on
/// one env (one env, so short episodes are not over-represented).
fn random_policy(task: MujocoTask, episodes: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let envs = MujocoEnv::batch(task, 1).unwrap_or_else(|e| panic!("{}: {e}", task.id()));
    let mut venv = ThreadedVecEnv::new(envs, 1).expect("vector env");
    let dim = venv.action_space().flat_len();
    let mut rng = EnvRng::seed_from_u64(seed);
    let mut action = vec![0.0f32; dim];
    venv.reset(seed).expect("reset");
    let (mut returns, mut lengths) = (Vec::new(), Vec::new());
    while returns.len() < episodes {
        for a in &mut action {
            *a = rng.random_range(-1.0f32..1.0);
        }
        let b = venv.step(Actions::Continuous(&action)).expect("step");
        if b.done(0) {
            returns.push(f64::from(b.episode_return[0]));
            lengths.push(f64::from(b.episode_length[0]));
        }
    }
    (returns, lengths)
}

fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Our mean is within 4.5 standard errors of the difference of two independent means
/// of Gymnasium's (a false alarm about once in 10^5 per comparison).
fn check_random_policy(task: MujocoTask, episodes: usize) {
    let gym = fixture(task).random_policy;
    let (returns, lengths) = random_policy(task, episodes, 7);
    for (what, ours, g_mean, g_std) in [
        ("return", &returns, gym.mean_return, gym.std_return),
        ("length", &lengths, gym.mean_length, gym.std_length),
    ] {
        let (mean, std) = mean_std(ours);
        let se = (g_std.powi(2) / gym.episodes as f64 + std.powi(2) / ours.len() as f64).sqrt();
        eprintln!(
            "{} random policy {what}: ours {mean:.3} ± {std:.3} ({} episodes), gymnasium \
             {g_mean:.3} ± {g_std:.3} ({} episodes), difference {:.2} standard errors",
            task.id(),
            ours.len(),
            gym.episodes,
            (mean - g_mean).abs() / se.max(f64::MIN_POSITIVE)
        );
        assert!(
            (mean - g_mean).abs() <= 4.5 * se + 1e-9,
            "{} random-policy mean {what} {mean} is more than 4.5 standard errors ({se}) from \
             gymnasium's {g_mean}",
            task.id()
        );
    }
}

#[test]
fn hopper_random_policy_matches_gymnasium() {
    check_random_policy(MujocoTask::Hopper, 1000);
}

#[test]
fn half_cheetah_random_policy_matches_gymnasium() {
    check_random_policy(MujocoTask::HalfCheetah, 20);
}

#[test]
fn ant_random_policy_matches_gymnasium() {
    check_random_policy(MujocoTask::Ant, 100);
}

/// Single-thread env steps per second against bare `mj_step` (`frame_skip` calls per env
/// step) on the same model and the very same trajectory: the same controls, and at the
/// env's resets the same `mj_resetData`, reset state and `mj_forward`. Best of three
/// alternating rounds. Run with `cargo test --release -p volley-common --test
/// conformance_mujoco -- --ignored --nocapture speed`.
#[test]
#[ignore]
fn speed_against_bare_mj_step() {
    use mujoco_rs::mujoco_c as ffi;
    use mujoco_rs::prelude::{MjData, MjModel};
    use std::time::Instant;

    const STEPS: usize = 30_000;
    const ACTIONS: usize = 4096;
    for task in MujocoTask::ALL {
        let mut env = env(task);
        let dim = env.action_space().flat_len();
        let mut rng = EnvRng::seed_from_u64(1);
        let actions: Vec<f32> = (0..dim * ACTIONS)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let action = |i: usize| &actions[(i % ACTIONS) * dim..(i % ACTIONS + 1) * dim];
        let mut obs = vec![0.0f32; env.obs_len()];
        let frame_skip = env.frame_skip();

        // The env's trajectory; with `record`, the reset states by step index.
        let mut run_env = |record: bool| {
            let mut rng = EnvRng::seed_from_u64(2);
            let mut resets: Vec<(usize, Vec<f64>, Vec<f64>)> = Vec::new();
            env.reset(&mut rng, &mut obs).expect("env call");
            if record {
                resets.push((0, env.qpos().to_vec(), env.qvel().to_vec()));
            }
            let mut len = 0u32;
            let start = Instant::now();
            for i in 0..STEPS {
                let s = env
                    .step(ActionRef::Continuous(action(i)), &mut rng, &mut obs)
                    .expect("env call");
                len += 1;
                if s.terminated || len >= 1000 {
                    env.reset(&mut rng, &mut obs).expect("env call");
                    if record {
                        resets.push((i + 1, env.qpos().to_vec(), env.qvel().to_vec()));
                    }
                    len = 0;
                }
            }
            (STEPS as f64 / start.elapsed().as_secs_f64(), resets)
        };
        let (_, resets) = run_env(true);

        let path = volley_common::deps::mujoco_models_dir().join(task.model_file());
        let model = std::sync::Arc::new(MjModel::from_xml(&path).expect("model loads"));
        let mut data = MjData::new(model.clone());
        let mut run_bare = || {
            let mut next = resets.iter().peekable();
            let start = Instant::now();
            for i in 0..STEPS {
                // SAFETY: `data` belongs to `model`, whose sizes bound every slice.
                unsafe {
                    let m = model.ffi();
                    let d = data.ffi_mut();
                    if let Some((_, qpos, qvel)) = next.next_if(|r| r.0 == i) {
                        ffi::mj_resetData(m, d);
                        std::slice::from_raw_parts_mut(d.qpos, qpos.len()).copy_from_slice(qpos);
                        std::slice::from_raw_parts_mut(d.qvel, qvel.len()).copy_from_slice(qvel);
                        ffi::mj_forward(m, d);
                    }
                    let ctrl = std::slice::from_raw_parts_mut(d.ctrl, dim);
                    for (c, &x) in ctrl.iter_mut().zip(action(i)) {
                        *c = f64::from(x);
                    }
                    for _ in 0..frame_skip {
                        ffi::mj_step(m, d);
                    }
                }
            }
            STEPS as f64 / start.elapsed().as_secs_f64()
        };
        let (mut best_env, mut best_bare) = (0.0f64, 0.0f64);
        for _ in 0..3 {
            best_env = best_env.max(run_env(false).0);
            best_bare = best_bare.max(run_bare());
        }
        eprintln!(
            "{}: env {best_env:.0} steps/s, bare mj_step x{frame_skip} {best_bare:.0} steps/s, \
             ratio {:.3} ({} episodes per run)",
            task.id(),
            best_env / best_bare,
            resets.len()
        );
    }
}
