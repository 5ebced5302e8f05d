//! Conformance of `ProcgenVecEnv` with procgen's own Python binding.
//!
//! The fixtures under `tests/fixtures/procgen/` were recorded by
//! `tests/fixtures/record_procgen.sh` with `procgen.ProcgenGym3Env` (procgen 0.10.7):
//! fixed seeds and actions, and per step and env the reward, the `first` flag,
//! `prev_level_complete` and the CRC-32 of the observation (plus a few full frames).
//! These tests replay the actions and require byte-identical observations and equal
//! rewards and flags. They need `deploy/setup.sh` to have installed libenv.so.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;
use volley_common::env::procgen::{env_rand_seed, ProcgenConfig, ProcgenVecEnv, GAMES};
use volley_common::env::{Actions, EnvError, EnvId, VecEnv};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/procgen")
}

/// Fails (never skips) when the native library is missing.
fn require_deps() {
    let so = volley_common::deps::procgen_dir().join("libenv.so");
    assert!(
        so.is_file(),
        "procgen's libenv.so is missing ({}): run deploy/setup.sh first",
        so.display()
    );
}

fn config(id: &str) -> ProcgenConfig {
    match id.parse::<EnvId>().unwrap() {
        EnvId::Procgen(c) => c,
        other => panic!("not a procgen id: {other}"),
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn rows<T>(v: &Value, key: &str, f: impl Fn(&Value) -> T) -> Vec<Vec<T>> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(&f).collect())
        .collect()
}

fn check_case(name: &str) {
    require_deps();
    let path = fixtures().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    let fx: Value = serde_json::from_str(&text).unwrap();
    let id = fx["id"].as_str().unwrap();
    let n = fx["num_envs"].as_u64().unwrap() as usize;
    let seed = fx["seed"].as_u64().unwrap();
    let layout = fx["layout"].as_str().unwrap();
    let cfg = config(id);
    let rewards = rows(&fx, "reward", |x| x.as_f64().unwrap() as f32);
    let firsts = rows(&fx, "first", |x| x.as_u64().unwrap() as u8);
    let completes = rows(&fx, "prev_level_complete", |x| x.as_u64().unwrap() as u8);
    let crcs = rows(&fx, "crc32", |x| x.as_u64().unwrap() as u32);
    let actions: Vec<Vec<i64>> = fx["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap()
                .chars()
                .map(|c| i64::from(c.to_digit(16).unwrap()))
                .collect()
        })
        .collect();
    let frame_steps: Vec<usize> = fx["frame_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let frames = if frame_steps.is_empty() {
        Vec::new()
    } else {
        std::fs::read(fixtures().join(format!("{name}.frames.bin"))).unwrap()
    };

    let mut env = match layout {
        "per_env" => {
            let rand_seeds: Vec<i64> = fx["rand_seeds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect();
            for (i, &s) in rand_seeds.iter().enumerate() {
                assert_eq!(i64::from(env_rand_seed(seed, i)), s, "rand seed of env {i}");
            }
            // Two threads: the chunks must not change anything.
            ProcgenVecEnv::new(&cfg, n, 2).unwrap()
        }
        "batched" => ProcgenVecEnv::with_libenv_threads(&cfg, n, 2).unwrap(),
        other => panic!("unknown layout {other}"),
    };
    let timeout = cfg.timeout();
    let mut since_first = vec![0u32; n];
    let mut since_level = vec![0u32; n];
    let (mut terminations, mut truncations) = (0, 0);
    env.reset(seed).unwrap();
    for t in 0..=actions.len() {
        if t > 0 {
            let b = env.step(Actions::Discrete(&actions[t - 1])).unwrap();
            // Expected flags, from the recorded first/prev_level_complete.
            for i in 0..n {
                since_first[i] += 1;
                since_level[i] += 1;
                let ended = firsts[t][i] == 1;
                let completed = completes[t][i] == 1;
                let truncated = ended && !completed && since_level[i] >= timeout;
                assert_eq!(
                    b.truncated[i], truncated,
                    "{name}: truncated, step {t} env {i}"
                );
                assert_eq!(
                    b.terminated[i],
                    ended && !truncated,
                    "{name}: terminated, step {t} env {i}"
                );
                if ended {
                    assert_eq!(b.episode_length[i], since_first[i], "{name}: length");
                    since_first[i] = 0;
                    since_level[i] = 0;
                    if truncated {
                        truncations += 1;
                    } else {
                        terminations += 1;
                    }
                } else if completed {
                    since_level[i] = 0;
                }
            }
        }
        let b = env.batch();
        assert!(!b.has_final_obs);
        assert_eq!(
            env.first(),
            &firsts[t][..],
            "{name}: first flags at step {t}"
        );
        assert_eq!(
            env.prev_level_complete(),
            &completes[t][..],
            "{name}: prev_level_complete at step {t}"
        );
        assert_eq!(b.reward, rewards[t], "{name}: rewards at step {t}");
        let obs = b.obs.as_u8().unwrap();
        for i in 0..n {
            let row = &obs[i * b.obs_len..(i + 1) * b.obs_len];
            if let Some(k) = frame_steps.iter().position(|&s| s == t) {
                if i == 0 {
                    let want = &frames[k * b.obs_len..(k + 1) * b.obs_len];
                    assert!(
                        row == want,
                        "{name}: full frame of env 0 differs at step {t}"
                    );
                }
            }
            assert_eq!(
                crc32(row),
                crcs[t][i],
                "{name}: observation of env {i} differs at step {t}"
            );
        }
    }
    eprintln!("{name}: {terminations} terminations, {truncations} truncations");
    if name == "maze_exploration" || name == "coinrun_easy" {
        assert!(truncations > 0, "{name} should exercise a timeout");
    }
}

#[test]
fn starpilot_easy_matches_procgen() {
    check_case("starpilot_easy");
}

#[test]
fn bigfish_easy_matches_procgen() {
    check_case("bigfish_easy");
}

#[test]
fn coinrun_easy_matches_procgen_including_timeouts() {
    check_case("coinrun_easy");
}

#[test]
fn starpilot_hard_with_options_matches_procgen() {
    check_case("starpilot_hard_options");
}

#[test]
fn maze_exploration_matches_procgen() {
    check_case("maze_exploration");
}

#[test]
fn climber_generated_assets_and_sequential_levels_match_procgen() {
    check_case("climber_assets_sequential");
}

#[test]
fn dodgeball_extreme_batched_matches_procgen() {
    check_case("dodgeball_extreme_batched");
}

#[test]
fn jumper_memory_batched_matches_procgen() {
    check_case("jumper_memory_batched");
}

fn run(env: &mut ProcgenVecEnv, seed: u64, steps: usize) -> Vec<u32> {
    let n = env.num_envs();
    let mut out = Vec::new();
    let b = env.reset(seed).unwrap();
    out.extend(b.obs.as_u8().unwrap().chunks(b.obs_len).map(crc32));
    for t in 0..steps {
        let a: Vec<i64> = (0..n).map(|i| ((t * 7 + i * 3) % 15) as i64).collect();
        let b = env.step(Actions::Discrete(&a)).unwrap();
        out.extend(b.obs.as_u8().unwrap().chunks(b.obs_len).map(crc32));
        out.extend(b.reward.iter().map(|r| r.to_bits()));
    }
    out
}

#[test]
fn same_seed_same_trajectories_whatever_the_thread_count() {
    require_deps();
    let cfg = config("procgen:bigfish?distribution_mode=easy");
    let mut one = ProcgenVecEnv::new(&cfg, 6, 1).unwrap();
    let mut two = ProcgenVecEnv::new(&cfg, 6, 2).unwrap();
    let a = run(&mut one, 11, 60);
    assert_eq!(a, run(&mut two, 11, 60));
    // A second reset with the same seed replays the same levels.
    assert_eq!(a, run(&mut one, 11, 60));
    assert_ne!(a, run(&mut one, 12, 60));
}

#[test]
fn every_game_and_mode_makes_and_steps() {
    require_deps();
    let modes = ["easy", "hard", "extreme", "memory", "exploration"];
    for game in GAMES {
        for mode in modes {
            let id = format!("procgen:{game}?distribution_mode={mode}");
            let Ok(EnvId::Procgen(cfg)) = id.parse::<EnvId>() else {
                continue;
            };
            let mut env = ProcgenVecEnv::new(&cfg, 2, 1).unwrap();
            env.reset(0).unwrap();
            for _ in 0..5 {
                env.step(Actions::Discrete(&[4, 7])).unwrap();
            }
        }
    }
}

#[test]
fn invalid_actions_never_reach_the_library() {
    require_deps();
    let cfg = config("procgen:starpilot");
    let mut env = ProcgenVecEnv::new(&cfg, 2, 1).unwrap();
    let e = env.step(Actions::Discrete(&[0, 0])).unwrap_err();
    assert!(e.to_string().contains("before reset"), "{e}");
    env.reset(0).unwrap();
    for bad in [&[0i64, 15][..], &[-1, 0], &[0]] {
        let e = env.step(Actions::Discrete(bad)).unwrap_err();
        assert!(matches!(e, EnvError::InvalidAction(_)), "{e}");
    }
    let e = env.step(Actions::Continuous(&[0.0, 0.0])).unwrap_err();
    assert!(matches!(e, EnvError::InvalidAction(_)), "{e}");
    assert!(env.step(Actions::Discrete(&[14, 0])).is_ok());
}

#[test]
fn spaces_and_registry() {
    require_deps();
    let id: EnvId = "procgen:coinrun?distribution_mode=easy".parse().unwrap();
    let opts = volley_common::env::VecEnvOptions {
        num_envs: 3,
        threads: 2,
        render: false,
    };
    let env = volley_common::env::make_vec_env(&id, opts).unwrap();
    assert_eq!(env.observation_space().describe(), "Image(64x64x3 u8)");
    assert_eq!(env.action_space().describe(), "Discrete(15)");
    assert_eq!(env.num_envs(), 3);
}

/// Throughput with uniform random actions: `cargo test --release -p volley-common
/// --test conformance_procgen -- --ignored --nocapture throughput`.
#[test]
#[ignore = "benchmark"]
fn throughput() {
    require_deps();
    let n = 64;
    let steps = 1500;
    let mut rng = 0x1234_5678_u64;
    let acts: Vec<Vec<i64>> = (0..steps)
        .map(|_| {
            (0..n)
                .map(|_| {
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((rng >> 33) % 15) as i64
                })
                .collect()
        })
        .collect();
    let layouts = std::env::var("PROCGEN_BENCH_LAYOUTS").unwrap_or_else(|_| "per_env".into());
    for game in ["starpilot", "bigfish", "coinrun"] {
        let cfg = config(&format!("procgen:{game}?distribution_mode=easy"));
        for layout in layouts.split(',') {
            for threads in [1usize, 2] {
                let mut env = match layout {
                    "per_env" => ProcgenVecEnv::new(&cfg, n, threads).unwrap(),
                    // libenv's own threads: 0 (synchronous) for 1, else `threads`.
                    _ => {
                        let t = if threads == 1 { 0 } else { threads };
                        ProcgenVecEnv::with_libenv_threads(&cfg, n, t).unwrap()
                    }
                };
                let t0 = Instant::now();
                env.reset(0).unwrap();
                let reset_s = t0.elapsed().as_secs_f64();
                for a in &acts[..100] {
                    env.step(Actions::Discrete(a)).unwrap();
                }
                let t0 = Instant::now();
                for a in &acts[100..] {
                    env.step(Actions::Discrete(a)).unwrap();
                }
                let sps = ((steps - 100) * n) as f64 / t0.elapsed().as_secs_f64();
                eprintln!(
                    "{game} easy, {n} envs, {layout}, {threads} thread(s): {:.1}k steps/s (reset {:.0} ms)",
                    sps / 1000.0,
                    reset_s * 1000.0
                );
            }
        }
    }
}
