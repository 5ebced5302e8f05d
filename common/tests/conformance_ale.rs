//! Conformance of volley's `ALE/<Game>-v5` envs with ale-py's own.
//!
//! The fixtures under `tests/fixtures/ale/` were recorded by
//! `tests/fixtures/record_ale.sh` with `gymnasium.make("ALE/<Name>-v5", ...)` (ale-py
//! 0.12.1, gymnasium 1.4.0): `reset(seed=seed)`, uniform random actions (stored), and on
//! every episode's end `reset()` without a seed, as Gymnasium's auto-reset does. Per
//! step they hold the reward, terminated, truncated, `info`'s lives and frame numbers
//! and the CRC-32 of the observation, per reset the same for its observation, plus two
//! full frames of Ms. Pac-Man. These tests replay the actions and require byte-identical
//! observations and equal rewards, flags and lives, through the vector env (auto-reset
//! inside `step`) and, for the frame numbers the vector env does not show, through
//! [`Emulator`] driven the way ale-py's `AtariEnv` drives ALE. `seed_sequence.json`
//! holds numpy's `SeedSequence` words, which ale-py seeds ALE with. The tests need
//! `deploy/setup.sh` to have built libvolley_ale.so and installed the ROMs.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use volley_common::env::ale::{seed_sequence, Emulator, EmulatorConfig};
use volley_common::env::{
    make_vec_env, Actions, EnvId, ObsBuf, Space, StepBatch, VecEnv, VecEnvOptions,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ale")
}

/// Fails (never skips) when the native library or the ROMs are missing.
fn require_deps() {
    let dir = volley_common::deps::ale_dir();
    let so = dir.join("libvolley_ale.so");
    assert!(
        so.is_file(),
        "ALE's libvolley_ale.so is missing ({}): run deploy/setup.sh first",
        so.display()
    );
    let rom = dir.join("roms").join("ms_pacman.bin");
    assert!(
        rom.is_file(),
        "the Atari ROMs are missing ({}): run deploy/setup.sh first",
        rom.display()
    );
}

/// zlib's CRC-32 (what the recorder stores), table-driven: the frames are 100 KB.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc = (crc >> 8) ^ TABLE[((crc ^ u32::from(b)) & 0xFF) as usize];
    }
    !crc
}

#[derive(Debug, Clone, Copy)]
struct ResetRec {
    crc32: u32,
    lives: i32,
    episode_frame_number: i32,
    frame_number: i32,
}

#[derive(Debug, Clone, Copy)]
struct StepRec {
    action: i64,
    reward: f32,
    terminated: bool,
    truncated: bool,
    lives: i32,
    episode_frame_number: i32,
    frame_number: i32,
    crc32: u32,
}

impl StepRec {
    fn ended(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// One fixture: `resets[k]` starts episode `k`, whose steps are `steps[k]`.
#[derive(Debug)]
struct Fixture {
    name: String,
    fx: Value,
    id: String,
    seed: u64,
    obs_len: usize,
    num_actions: usize,
    resets: Vec<ResetRec>,
    steps: Vec<Vec<StepRec>>,
    /// Steps of episode 0 whose full observation is in `frames` (0: its reset).
    frame_steps: Vec<usize>,
    frames: Vec<u8>,
}

fn int(v: &Value, what: &str) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("{what} is not an integer: {v}"))
}

fn load(name: &str) -> Fixture {
    let path = fixtures().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let fx: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        fx["ale_py"], "0.12.1",
        "{name}: recorded with another ale-py"
    );
    assert_eq!(
        fx["gymnasium"], "1.4.0",
        "{name}: recorded with another gymnasium"
    );
    let fields: Vec<&str> = fx["step_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let col = |f: &str| fields.iter().position(|&x| x == f).unwrap();
    let (ca, cr, cte, ctr, cl, ce, cf, cc) = (
        col("action"),
        col("reward"),
        col("terminated"),
        col("truncated"),
        col("lives"),
        col("episode_frame_number"),
        col("frame_number"),
        col("crc32"),
    );
    let resets = fx["resets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| ResetRec {
            crc32: int(&r["crc32"], "crc32") as u32,
            lives: int(&r["lives"], "lives") as i32,
            episode_frame_number: int(&r["episode_frame_number"], "episode_frame_number") as i32,
            frame_number: int(&r["frame_number"], "frame_number") as i32,
        })
        .collect::<Vec<_>>();
    let steps = fx["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ep| {
            ep.as_array()
                .unwrap()
                .iter()
                .map(|s| StepRec {
                    action: int(&s[ca], "action"),
                    reward: s[cr].as_f64().unwrap() as f32,
                    terminated: int(&s[cte], "terminated") == 1,
                    truncated: int(&s[ctr], "truncated") == 1,
                    lives: int(&s[cl], "lives") as i32,
                    episode_frame_number: int(&s[ce], "episode_frame_number") as i32,
                    frame_number: int(&s[cf], "frame_number") as i32,
                    crc32: int(&s[cc], "crc32") as u32,
                })
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>();
    assert_eq!(resets.len(), steps.len(), "{name}: one reset per episode");
    // Every episode but the last ends on its last step, and none earlier.
    for (k, ep) in steps.iter().enumerate() {
        for (t, s) in ep.iter().enumerate() {
            let last = t + 1 == ep.len();
            if !last || k + 1 == steps.len() {
                assert!(!s.ended() || last, "{name}: episode {k} ends at step {t}");
            } else {
                assert!(
                    s.ended(),
                    "{name}: episode {k} does not end on its last step"
                );
            }
        }
    }
    let obs_len = fx["obs_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .product();
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
    assert_eq!(
        frames.len(),
        frame_steps.len() * obs_len,
        "{name}: frames.bin size"
    );
    Fixture {
        name: name.to_string(),
        id: fx["id"].as_str().unwrap().to_string(),
        seed: fx["seed"].as_u64().unwrap(),
        num_actions: fx["num_actions"].as_u64().unwrap() as usize,
        obs_len,
        resets,
        steps,
        frame_steps,
        frames,
        fx,
    }
}

impl Fixture {
    fn frame(&self, t: usize) -> Option<&[u8]> {
        let k = self.frame_steps.iter().position(|&s| s == t)?;
        Some(&self.frames[k * self.obs_len..(k + 1) * self.obs_len])
    }

    /// The fixture's own seed words against numpy's, then the port's.
    fn check_seed_words(&self) {
        let np_seed = self.fx["np_seed"].as_u64().unwrap() as u32;
        let random_seed = self.fx["random_seed"].as_u64().unwrap() as u32;
        assert_eq!(
            seed_sequence(self.seed, 2),
            [np_seed, random_seed],
            "{}: SeedSequence({}).generate_state(2), ALE's random_seed word",
            self.name,
            self.seed
        );
    }
}

fn u8_row(buf: &ObsBuf, i: usize, len: usize) -> &[u8] {
    let ObsBuf::U8(v) = buf else {
        panic!("ALE observations are u8")
    };
    &v[i * len..(i + 1) * len]
}

/// Compares the step `env` just took with the recorded one (the observation the step
/// returned: `final_obs` when the episode ended).
fn check_step(fx: &Fixture, b: &StepBatch, row: usize, k: usize, t: usize, s: &StepRec) {
    let name = &fx.name;
    assert_eq!(
        b.reward[row], s.reward,
        "{name}: reward, episode {k} step {t}"
    );
    assert_eq!(
        b.terminated[row], s.terminated,
        "{name}: terminated, episode {k} step {t}"
    );
    assert_eq!(
        b.truncated[row], s.truncated,
        "{name}: truncated, episode {k} step {t}"
    );
    assert_eq!(b.lives[row], s.lives, "{name}: lives, episode {k} step {t}");
    let obs = if s.ended() {
        assert!(
            b.has_final_obs,
            "{name}: ALE envs keep the final observation"
        );
        u8_row(&b.final_obs, row, fx.obs_len)
    } else {
        u8_row(&b.obs, row, fx.obs_len)
    };
    if k == 0 {
        if let Some(want) = fx.frame(t + 1) {
            assert!(
                obs == want,
                "{name}: full observation (frames.bin), episode {k} step {t}"
            );
        }
    }
    assert_eq!(
        crc32(obs),
        s.crc32,
        "{name}: observation (crc32), episode {k} step {t}"
    );
}

/// Replays the fixture through the vector env `ALE/<Name>-v5?...`.
fn check_case(name: &str) {
    require_deps();
    let fx = load(name);
    fx.check_seed_words();
    let id: EnvId = fx
        .id
        .parse()
        .unwrap_or_else(|e| panic!("{name}: cannot parse {}: {e}", fx.id));
    let mut env: Box<dyn VecEnv> = make_vec_env(&id, VecEnvOptions::new(1, 1)).unwrap();
    assert_eq!(
        env.action_space(),
        &Space::Discrete { n: fx.num_actions },
        "{name}: action space"
    );
    assert_eq!(
        env.observation_space().flat_len(),
        fx.obs_len,
        "{name}: observation size"
    );

    let b = env.reset(fx.seed).unwrap();
    assert_eq!(b.obs_len, fx.obs_len, "{name}: obs_len");
    let r0 = fx.resets[0];
    let obs = u8_row(&b.obs, 0, fx.obs_len);
    if let Some(want) = fx.frame(0) {
        assert!(
            obs == want,
            "{name}: full observation (frames.bin) after reset(seed)"
        );
    }
    assert_eq!(
        crc32(obs),
        r0.crc32,
        "{name}: observation (crc32) after reset(seed)"
    );
    assert_eq!(b.lives[0], r0.lives, "{name}: lives after reset(seed)");

    for (k, ep) in fx.steps.iter().enumerate() {
        let mut ret = 0.0f32;
        for (t, s) in ep.iter().enumerate() {
            let b = env.step(Actions::Discrete(&[s.action])).unwrap();
            check_step(&fx, b, 0, k, t, s);
            ret += s.reward;
            if s.ended() {
                assert_eq!(
                    b.episode_length[0] as usize,
                    ep.len(),
                    "{name}: episode_length, episode {k} step {t}"
                );
                assert_eq!(
                    b.episode_return[0], ret,
                    "{name}: episode_return, episode {k} step {t}"
                );
                // The auto-reset (no reseeding) matches ale-py's reset() without seed.
                if let Some(r) = fx.resets.get(k + 1) {
                    assert_eq!(
                        crc32(u8_row(&b.obs, 0, fx.obs_len)),
                        r.crc32,
                        "{name}: observation (crc32) after the auto-reset of episode {} (step {t})",
                        k + 1
                    );
                }
            }
        }
    }
}

fn count_life_losses(fx: &Fixture, ep: usize) -> usize {
    let mut lives = fx.resets[ep].lives;
    let mut lost = 0;
    for s in &fx.steps[ep] {
        if s.lives < lives && !s.ended() {
            lost += 1;
        }
        lives = s.lives;
    }
    lost
}

/// The main fixtures play a whole first episode: lives lost, then the game over.
fn check_game_over_fixture(name: &str) {
    let fx = load(name);
    assert!(
        fx.steps.len() >= 2,
        "{name}: the fixture has no second episode"
    );
    let last = fx.steps[0].last().unwrap();
    assert!(
        last.terminated && !last.truncated,
        "{name}: the first episode does not end in a game over"
    );
    assert!(
        count_life_losses(&fx, 0) > 0,
        "{name}: no life lost before the game over"
    );
}

#[test]
fn ms_pacman_matches_ale_py() {
    check_game_over_fixture("ms_pacman");
    check_case("ms_pacman");
}

#[test]
fn breakout_matches_ale_py() {
    check_game_over_fixture("breakout");
    check_case("breakout");
}

#[test]
fn space_invaders_matches_ale_py() {
    check_game_over_fixture("space_invaders");
    check_case("space_invaders");
}

#[test]
fn ms_pacman_grayscale_matches_ale_py() {
    check_case("ms_pacman_grayscale");
}

#[test]
fn breakout_full_action_space_matches_ale_py() {
    check_case("breakout_full_action_space");
}

#[test]
fn space_invaders_mode_and_difficulty_match_ale_py() {
    check_case("space_invaders_mode3_difficulty1");
}

#[test]
fn breakout_without_sticky_actions_or_frameskip_matches_ale_py() {
    check_case("breakout_no_sticky_frameskip1");
}

const ALL: [&str; 7] = [
    "ms_pacman",
    "breakout",
    "space_invaders",
    "ms_pacman_grayscale",
    "breakout_full_action_space",
    "space_invaders_mode3_difficulty1",
    "breakout_no_sticky_frameskip1",
];

/// The same fixtures on [`Emulator`] driven as ale-py's `AtariEnv` drives ALE (see
/// `volley_common::env::ale`): this also checks the frame numbers, which the vector
/// env does not show.
#[test]
fn the_emulator_driven_like_ale_py_matches_including_frame_numbers() {
    require_deps();
    for name in ALL {
        let fx = load(name);
        fx.check_seed_words();
        let st = &fx.fx["settings"];
        let game = fx.fx["game"].as_str().unwrap();
        let random_seed = fx.fx["random_seed"].as_u64().unwrap() as u32;
        let opt = |v: &Value| v.as_u64().map(|m| m as u32);
        let config = EmulatorConfig {
            repeat_action_probability: st["repeat_action_probability"].as_f64().unwrap() as f32,
            max_num_frames_per_episode: int(
                &st["max_num_frames_per_episode"],
                "max_num_frames_per_episode",
            ) as i32,
            seed: random_seed,
            mode: opt(&st["mode"]),
            difficulty: opt(&st["difficulty"]),
        };
        let frameskip = int(&st["frameskip"], "frameskip") as usize;
        let grayscale = match st["obs_type"].as_str().unwrap() {
            "rgb" => false,
            "grayscale" => true,
            other => panic!("{name}: obs_type {other}"),
        };
        let mut e = Emulator::for_game(game, &config)
            .unwrap_or_else(|err| panic!("{name}: cannot make ALE's {game}: {err}"));
        let want_set: Vec<u8> = fx.fx["action_set"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_u64().unwrap() as u8)
            .collect();
        let set = if st["full_action_space"].as_bool().unwrap() {
            e.legal_action_set().to_vec()
        } else {
            e.minimal_action_set().to_vec()
        };
        assert_eq!(set, want_set, "{name}: action set");
        assert_eq!(set.len(), fx.num_actions, "{name}: number of actions");
        let ids = |key: &str| -> Vec<u32> {
            fx.fx[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_u64().unwrap() as u32)
                .collect()
        };
        assert_eq!(
            e.available_modes().unwrap(),
            ids("available_modes"),
            "{name}: available modes"
        );
        assert_eq!(
            e.available_difficulties().unwrap(),
            ids("available_difficulties"),
            "{name}: available difficulties"
        );
        let mut screen = vec![0u8; fx.obs_len];
        let mut observe = |e: &Emulator| -> u32 {
            if grayscale {
                e.screen_grayscale(&mut screen).unwrap();
            } else {
                e.screen_rgb(&mut screen).unwrap();
            }
            crc32(&screen)
        };
        let check_reset = |e: &Emulator, crc: u32, k: usize| {
            let r = fx.resets[k];
            assert_eq!(crc, r.crc32, "{name}: observation (crc32), reset {k}");
            assert_eq!(e.lives(), r.lives, "{name}: lives, reset {k}");
            assert_eq!(
                e.episode_frame_number(),
                r.episode_frame_number,
                "{name}: episode_frame_number, reset {k}"
            );
            assert_eq!(
                e.frame_number(),
                r.frame_number,
                "{name}: frame_number, reset {k}"
            );
        };
        // reset(seed=seed): seed_game (random_seed), load_game, reset_game.
        e.seed(random_seed).unwrap();
        e.reset_game().unwrap();
        let crc = observe(&e);
        check_reset(&e, crc, 0);
        for (k, ep) in fx.steps.iter().enumerate() {
            for (t, s) in ep.iter().enumerate() {
                let a = set[s.action as usize];
                let mut reward = 0.0f32;
                for _ in 0..frameskip {
                    reward += e.act(a, 1.0).unwrap() as f32;
                }
                let what = |f: &str| format!("{name}: {f}, episode {k} step {t}");
                assert_eq!(reward, s.reward, "{}", what("reward"));
                assert_eq!(e.game_over(false), s.terminated, "{}", what("terminated"));
                assert_eq!(e.game_truncated(), s.truncated, "{}", what("truncated"));
                assert_eq!(e.lives(), s.lives, "{}", what("lives"));
                assert_eq!(
                    e.episode_frame_number(),
                    s.episode_frame_number,
                    "{}",
                    what("episode_frame_number")
                );
                assert_eq!(e.frame_number(), s.frame_number, "{}", what("frame_number"));
                assert_eq!(observe(&e), s.crc32, "{}", what("observation (crc32)"));
                if s.ended() && k + 1 < fx.resets.len() {
                    // reset() without a seed: ALE's generator runs on.
                    e.reset_game().unwrap();
                    let crc = observe(&e);
                    check_reset(&e, crc, k + 1);
                }
            }
        }
    }
}

#[test]
fn seed_sequence_matches_numpy() {
    let path = fixtures().join("seed_sequence.json");
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vectors = fx["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 12);
    for v in vectors {
        let seed = v["seed"].as_u64().unwrap();
        for n in [2usize, 4, 8] {
            let want: Vec<u32> = v[format!("state{n}").as_str()]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(
                seed_sequence(seed, n),
                want,
                "SeedSequence({seed}).generate_state({n})"
            );
        }
    }
}

/// Env `i` of a vector env is seeded with `seed + i`: env 1 of `reset(seed - 1)` plays
/// the fixture's episode, while env 0 plays another.
#[test]
fn env_i_is_seeded_with_seed_plus_i() {
    require_deps();
    let fx = load("ms_pacman");
    let id: EnvId = fx.id.parse().unwrap();
    let mut env: Box<dyn VecEnv> = make_vec_env(&id, VecEnvOptions::new(2, 2)).unwrap();
    let b = env.reset(fx.seed - 1).unwrap();
    assert_eq!(
        crc32(u8_row(&b.obs, 1, fx.obs_len)),
        fx.resets[0].crc32,
        "ms_pacman: observation (crc32) of env 1 after reset"
    );
    let mut differs = false;
    for (t, s) in fx.steps[0].iter().enumerate() {
        let b = env.step(Actions::Discrete(&[s.action, s.action])).unwrap();
        check_step(&fx, b, 1, 0, t, s);
        let env0 = if b.terminated[0] || b.truncated[0] {
            &b.final_obs
        } else {
            &b.obs
        };
        differs |= crc32(u8_row(env0, 0, fx.obs_len)) != s.crc32;
    }
    // Sticky actions drawn from another seed: env 0's game goes elsewhere.
    assert!(
        differs,
        "ms_pacman: env 0 (seed {}) played env 1's game",
        fx.seed - 1
    );
}

/// `reset(seed)` in the middle of an episode starts over as ale-py's `reset(seed=...)`
/// does (the generator reseeded, the ROM reloaded).
#[test]
fn reset_with_the_same_seed_replays_the_episode() {
    require_deps();
    let fx = load("space_invaders");
    let id: EnvId = fx.id.parse().unwrap();
    let mut env: Box<dyn VecEnv> = make_vec_env(&id, VecEnvOptions::new(1, 1)).unwrap();
    for round in 0..2 {
        let b = env.reset(fx.seed).unwrap();
        assert_eq!(
            crc32(u8_row(&b.obs, 0, fx.obs_len)),
            fx.resets[0].crc32,
            "space_invaders: observation (crc32) after reset(seed), round {round}"
        );
        for (t, s) in fx.steps[0].iter().take(120).enumerate() {
            let b = env.step(Actions::Discrete(&[s.action])).unwrap();
            check_step(&fx, b, 0, 0, t, s);
        }
    }
}
