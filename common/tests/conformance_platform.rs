//! Conformance of the Platform env with the original gym-platform
//! (cycraig/gym-platform, `gym_platform/envs/platform_env.py`).
//!
//! `fixtures/platform/episodes.json` holds episodes of the original recorded by
//! `fixtures/record_platform.py`: per step the action, the scaled state, the sub-step
//! count, the reward, the terminal flag, and every `np_random.normal` draw in order with
//! its call site. The test feeds the same draws to the Rust env and asks for the same
//! observations and rewards to 1e-12 relative and the same terminal flags.
//! `fixtures/platform/random_policy.json` holds the original's uniform-random-policy
//! statistics, compared with the Rust env's own.
//!
//! Floats in the fixtures are strings (Python's shortest round-trip repr), parsed with
//! `str::parse`, which is exact.

use rand::{Rng, SeedableRng};
use serde_json::Value;
use volley_common::env::platform::{Action, Noise, Platform, OBS_LEN, PARAMETERS_MAX};
use volley_common::env::threaded::ThreadedVecEnv;
use volley_common::env::{Actions, EnvRng, VecEnv};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/platform");

fn load(name: &str) -> Value {
    let path = format!("{FIXTURES}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

fn num(v: &Value) -> f64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("expected a float string, got {v}"));
    s.parse().unwrap_or_else(|e| panic!("bad float {s:?}: {e}"))
}

fn array(v: &Value) -> &[Value] {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
}

fn nums(v: &[Value]) -> Vec<f64> {
    v.iter().map(num).collect()
}

/// Replays the draws of one recorded step, checking each call's standard deviation
/// against the call site the original logged.
struct Replay {
    kinds: Vec<char>,
    draws: Vec<f64>,
    next: usize,
    /// Where we are, for messages.
    at: String,
}

impl Noise for Replay {
    fn normal(&mut self, std: f64) -> f64 {
        let i = self.next;
        assert!(
            i < self.draws.len(),
            "{}: the env asked for draw {} (std {std}) but the original made {}",
            self.at,
            i + 1,
            self.draws.len()
        );
        let want = match self.kinds[i] {
            'j' => 1.0,
            'p' | 'e' => 0.5 * 0.05,
            k => panic!("unknown draw kind {k:?}"),
        };
        assert_eq!(
            std, want,
            "{}: draw {i} ({}) has std {std}, the original used {want}",
            self.at, self.kinds[i]
        );
        self.next += 1;
        self.draws[i]
    }
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

#[test]
fn episodes_match_the_original_draw_for_draw() {
    let fixture = load("episodes.json");
    let episodes = array(&fixture["episodes"]);
    assert!(episodes.len() >= 30, "expected at least 30 episodes");
    let mut env = Platform::new();
    let (mut steps, mut goals, mut exact) = (0, 0, 0usize);
    let mut values = 0usize;
    for (e, ep) in episodes.iter().enumerate() {
        env.reset_state();
        let reset_obs = nums(&array(&ep["reset_obs"])[..9]);
        for (i, want) in reset_obs.iter().enumerate() {
            assert_eq!(env.features()[i], *want, "episode {e} reset obs {i}");
        }
        let mut ret = 0.0;
        for (t, st) in array(&ep["steps"]).iter().enumerate() {
            let at = format!("episode {e} ({}) step {t}", ep["policy"]);
            let choice = st["choice"].as_u64().expect("choice") as usize;
            let params = nums(array(&st["params"]));
            // The Rust env receives f32 parameters; the recorder gave the original
            // float64 copies of float32 values.
            let param = params[choice] as f32;
            assert_eq!(f64::from(param), params[choice], "{at}: parameter not f32");
            let mut noise = Replay {
                kinds: st["kinds"].as_str().expect("kinds").chars().collect(),
                draws: st["draws"]
                    .as_str()
                    .expect("draws")
                    .split_whitespace()
                    .map(|s| s.parse().expect("draw"))
                    .collect(),
                next: 0,
                at: at.clone(),
            };
            assert_eq!(noise.kinds.len(), noise.draws.len(), "{at}");
            let action = Action::from_index(choice).expect("choice in 0..3");
            let step = env.step_with(action, f64::from(param), &mut noise);
            assert_eq!(
                noise.next,
                noise.draws.len(),
                "{at}: the env made {} draws, the original {}",
                noise.next,
                noise.draws.len()
            );
            let obs = array(&st["obs"]);
            let got = env.features();
            for (i, want) in nums(&obs[..9]).iter().enumerate() {
                assert!(
                    close(got[i], *want),
                    "{at}: obs {i} is {} want {want}",
                    got[i]
                );
                exact += usize::from(got[i] == *want);
                values += 1;
            }
            let substeps: f64 = obs[9].as_str().expect("substeps").parse().expect("int");
            assert_eq!(got[9], substeps, "{at}: sub-steps");
            let reward = num(&st["reward"]);
            assert!(
                close(step.reward, reward),
                "{at}: reward {} want {reward}",
                step.reward
            );
            exact += usize::from(step.reward == reward);
            values += 1;
            assert_eq!(
                step.terminated,
                st["terminal"].as_bool().expect("terminal"),
                "{at}"
            );
            ret += step.reward;
            steps += 1;
        }
        assert!(close(ret, num(&ep["return"])), "episode {e} return");
        goals += usize::from(ep["goal"].as_bool().expect("goal"));
    }
    assert!(goals >= 3, "the fixture should hold goal-reaching episodes");
    // Same arithmetic in the same order: everything is bit-identical.
    assert_eq!(
        exact,
        values,
        "{} of {values} values differ in the last bits",
        values - exact
    );
    eprintln!(
        "{} episodes, {steps} steps, {goals} reach the goal",
        episodes.len()
    );
}

/// The Rust env's uniform-random-policy statistics against the original's, within four
/// standard errors of the difference.
#[test]
fn uniform_random_policy_matches_the_original_statistics() {
    let stats = load("random_policy.json");
    let f = |k: &str| stats[k].as_f64().unwrap_or_else(|| panic!("{k} missing"));
    let n_py = f("episodes");
    let mut env = Platform::new();
    let mut rng = EnvRng::seed_from_u64(2016);
    let n = 5000;
    let (mut rets, mut lens) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        env.reset_state();
        let (mut ret, mut len) = (0.0, 0u32);
        while len < 200 {
            let k = rng.random_range(0..3usize);
            let p = rng.random_range(0.0..PARAMETERS_MAX[k] as f32);
            let action = Action::from_index(k).expect("k < 3");
            let s = env.step_with(action, f64::from(p), &mut rng);
            ret += s.reward;
            len += 1;
            if s.terminated {
                break;
            }
        }
        rets.push(ret);
        lens.push(f64::from(len));
    }
    for (what, v, m_py, sd_py) in [
        ("return", &rets, f("mean_return"), f("std_return")),
        ("length", &lens, f("mean_length"), f("std_length")),
    ] {
        let nf = v.len() as f64;
        let m = v.iter().sum::<f64>() / nf;
        let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (nf - 1.0);
        let se = (var / nf + sd_py * sd_py / n_py).sqrt();
        eprintln!("mean {what}: rust {m:.4}, original {m_py:.4} (se of the difference {se:.4})");
        assert!(
            (m - m_py).abs() < 4.0 * se,
            "mean {what}: rust {m}, original {m_py}"
        );
    }
}

/// Through the vector env: the layout of the observation, auto-reset after the end.
#[test]
fn runs_in_the_threaded_vector_env() {
    let envs = (0..4).map(|_| Platform::new()).collect();
    let mut venv = ThreadedVecEnv::new(envs, 2).expect("vec env");
    let b = venv.reset(7).expect("reset");
    let obs = b.obs.as_f32().expect("f32 obs");
    assert_eq!(obs.len(), 4 * OBS_LEN);
    assert_eq!(obs[9], 0.0);
    let params = [30.0f32, 720.0, 430.0].repeat(4);
    let mut ended = 0;
    for _ in 0..20 {
        let b = venv
            .step(Actions::Parameterised {
                choice: &[0, 1, 2, 0],
                params: &params,
            })
            .expect("step");
        ended += b.finished_episodes().count();
    }
    assert!(ended > 0, "some episodes end within 20 steps");
    let bad = venv.step(Actions::Parameterised {
        choice: &[3, 0, 0, 0],
        params: &params,
    });
    assert!(bad.is_err());
}
