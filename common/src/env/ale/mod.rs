//! Atari 2600 games through the Arcade Learning Environment (Bellemare et al. 2013, "The
//! Arcade Learning Environment: An Evaluation Platform for General Agents"; Machado et
//! al. 2018, "Revisiting the Arcade Learning Environment"), ALE 0.12.1.
//!
//! - [`ffi`]: `libvolley_ale.so`, loaded at run time: ALE's C++ library with volley's C
//!   shim (`deploy/ale/shim.cpp`) around `ale::ALEInterface`, built by `deploy/setup.sh`
//!   from the pinned ale-py sdist into `.deps/ale/` (ALE is GPL-2.0: nothing of it, ROMs
//!   included, is in volley's repository or binaries);
//! - [`roms`]: the ROMs in `.deps/ale/roms/`, by ale-py's snake-case game id;
//! - [`Emulator`]: one `ALEInterface`, one console and game, owned safely;
//! - [`options`]: `ALE/<Name>-v5` ids, their Gymnasium keyword arguments and the
//!   DQN-style preprocessing options ([`AtariConfig`]);
//! - [`AtariEnv`]: one game as an [`crate::env::Env`] with `u8` image observations,
//!   stepped in parallel by [`crate::env::threaded::ThreadedVecEnv`];
//! - [`preprocess`]: the frames of the DQN preprocessing (max-pool, area resize,
//!   frame stack);
//! - [`seed_sequence`]: NumPy's `SeedSequence`, through which ale-py seeds ALE.
//!
//! # How the v5 envs map onto these calls
//!
//! What ale-py 0.12.1's `ale_py/registration.py` and `ale_py/env.py` (`AtariEnv`) do,
//! and so what an `ALE/<Game>-v5` env built on [`Emulator`] has to do to match them:
//!
//! - **Ids**: `ALE/<Name>-v5` for every game of `roms/md5.json` except `combat`,
//!   `joust`, `maze_craze` and `warlords` (multi-player ROMs with no ALE game settings:
//!   they do not load). `<Name>` is Python's `id.title().replace("_", "")`: a letter is
//!   upper-cased after any non-letter, so `ms_pacman` is `MsPacman`, `up_n_down`
//!   `UpNDown`, `tic_tac_toe_3d` `TicTacToe3D`.
//! - **Making the env**: `setFloat("repeat_action_probability", 0.25)` (sticky actions),
//!   `setInt("max_num_frames_per_episode", 108000)` (30 minutes at 60 frames a second,
//!   27000 agent steps), ALE's own `frame_skip` left at 1, then the seed (below), then
//!   `loadROM` and, when given, `setMode(mode)` and `setDifficulty(difficulty)`:
//!   [`EmulatorConfig`] and [`Emulator::new`]. The action set is
//!   [`Emulator::minimal_action_set`] (9 actions for Ms. Pac-Man), or with
//!   `full_action_space` [`Emulator::legal_action_set`] (all 18; 9 for Lost Luggage and
//!   Skiing); an agent's action `a` is `action_set[a]`. Observations: `obs_type` `rgb`
//!   is [`Emulator::screen_rgb`], `grayscale` [`Emulator::screen_grayscale`], of the
//!   ROM's screen size: 210x160 for Ms. Pac-Man and 90 other games, 250x160 for ten
//!   (`pacman`, `mr_do`, `adventure`, ...), 214, 220 or 230 rows for three.
//! - **Seeding**: `reset(seed=s)` calls `seed_game(s)`: `np_seed, ale_seed =
//!   np.random.SeedSequence(s).generate_state(2)` (numpy's SeedSequence hash of `s`, two
//!   32-bit words), `setInt("random_seed", np.int32(ale_seed))` (the same bits, which
//!   ALE reads back as unsigned), then `load_game()` (`loadROM` again, mode and
//!   difficulty again). [`Emulator::seed`] with the word `ale_seed` does exactly that,
//!   so matching ale-py's trajectories takes numpy's SeedSequence computed from the
//!   user's seed. Without a seed `reset` keeps ALE's generator running: later episodes
//!   depend on earlier ones, as in ale-py.
//! - **Reset**: then always `reset_game()` ([`Emulator::reset_game`]: 60 no-op frames,
//!   the console's reset switch, the game's starting actions; it does not reseed). The
//!   observation is the screen after it, the info `lives`, `episode_frame_number` (0
//!   here) and `frame_number` (the frames `act` emulated since `loadROM`).
//! - **Step**: frameskip 4 with the rewards summed: `reward` is the sum of 4 calls of
//!   `act(action_set[a], 1.0)` ([`Emulator::act`]), one emulator frame each. Sticky
//!   actions are drawn per frame inside `act` (with probability 0.25 the console keeps
//!   its previous action for that frame) from ALE's generator, which `random_seed`
//!   seeded at `loadROM`. Once the episode is over `act` emulates nothing and returns
//!   0, so an episode that ends within the 4 frames sums only the frames before. Each
//!   `act` returns ALE's integer reward; ale-py sums them into a float. The observation
//!   is the screen after the last frame (v5 does no max-pooling: that is the
//!   preprocessing's job, on frames of its own skipping).
//! - **Terminated vs truncated**: `terminated = game_over(with_truncation=False)` (the
//!   game's own end, [`Emulator::game_over`]`(false)`) and `truncated =
//!   game_truncated()` (`episode_frame_number >= 108000`,
//!   [`Emulator::game_truncated`]); both can be true on the same step. The info after
//!   a step is `lives`, `episode_frame_number` and `frame_number`, as after a reset.

pub mod emulator;
pub mod env;
pub mod ffi;
pub mod options;
pub mod preprocess;
pub mod roms;
pub mod seed;

pub use emulator::{Emulator, EmulatorConfig, ACTION_NAMES, NUM_ACTIONS, RAM_BYTES};
pub use env::AtariEnv;
pub use options::{AtariConfig, ObsType, Preprocess};
pub use seed::{ale_seed, seed_sequence};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::env::EnvError;

    fn emu(game: &str, config: &EmulatorConfig) -> Emulator {
        Emulator::for_game(game, config)
            .unwrap_or_else(|e| panic!("cannot make ALE's {game}: {e} (did deploy/setup.sh run?)"))
    }

    /// The v5 settings with a seed.
    fn v5(seed: u32) -> EmulatorConfig {
        EmulatorConfig {
            repeat_action_probability: 0.25,
            max_num_frames_per_episode: 108_000,
            seed,
            ..EmulatorConfig::default()
        }
    }

    /// What an episode's first steps showed: per step the summed reward, the lives and
    /// the screen's CRC-32C.
    #[derive(Debug, PartialEq)]
    struct Trace {
        rewards: Vec<i32>,
        lives: Vec<i32>,
        screens: Vec<u32>,
        game_over_at: Option<usize>,
    }

    /// `steps` agent steps of 4 frames each, the action index drawn from a fixed
    /// generator over the minimal action set, resetting once the game is over.
    fn play(emu: &mut Emulator, steps: usize) -> Trace {
        let actions = emu.minimal_action_set().to_vec();
        let mut screen = vec![0u8; emu.height() * emu.width() * 3];
        let mut lcg: u64 = 12345;
        let mut t = Trace {
            rewards: Vec::new(),
            lives: Vec::new(),
            screens: Vec::new(),
            game_over_at: None,
        };
        for step in 0..steps {
            // Hold each action for 8 steps: long enough to move somewhere.
            if step % 8 == 0 {
                lcg = lcg
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
            }
            let a = actions[(lcg >> 33) as usize % actions.len()];
            let r: i32 = (0..4).map(|_| emu.act(a, 1.0).unwrap()).sum();
            emu.screen_rgb(&mut screen).unwrap();
            t.rewards.push(r);
            t.lives.push(emu.lives());
            t.screens.push(crate::crc32c::crc32c(&screen));
            if emu.game_over(true) {
                t.game_over_at.get_or_insert(step);
                emu.reset_game().unwrap();
            }
        }
        t
    }

    #[test]
    fn a_missing_library_names_the_setup_script() {
        let dir = std::env::temp_dir().join("volley-no-ale-here");
        let e = ffi::load(&dir).unwrap_err();
        assert!(matches!(e, EnvError::MissingDependency { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("libvolley_ale.so") && msg.contains("deploy/setup.sh"),
            "{msg}"
        );
        let e = roms::rom_path(&dir, "ms_pacman").unwrap_err();
        assert!(e.to_string().contains("deploy/setup.sh"), "{e}");
    }

    #[test]
    fn the_roms_of_the_sdist_are_there_by_game_id() {
        let dir = crate::deps::ale_dir();
        let games = roms::games(&dir).unwrap();
        assert_eq!(games.len(), 108, "{games:?}");
        for g in [
            "ms_pacman",
            "pong",
            "breakout",
            "space_invaders",
            "tic_tac_toe_3d",
        ] {
            assert!(roms::rom_path(&dir, g).unwrap().is_file(), "{g}");
        }
        let e = roms::rom_path(&dir, "ms_pac_man").unwrap_err();
        assert!(matches!(e, EnvError::UnknownEnv { .. }), "{e}");
        assert!(e.to_string().contains("ms_pacman"), "{e}");
        let e = roms::rom_path(&dir, "../ale/libvolley_ale").unwrap_err();
        assert!(matches!(e, EnvError::UnknownEnv { .. }), "{e}");
    }

    #[test]
    fn ms_pacman_plays_deterministically_per_seed() {
        let lib = ffi::load(&crate::deps::ale_dir()).unwrap();
        assert_eq!(lib.version, ffi::ALE_VERSION);

        let mut a = emu("ms_pacman", &v5(7));
        assert_eq!((a.height(), a.width()), (210, 160));
        assert_eq!(a.minimal_action_set(), &[0, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(a.legal_action_set(), &(0..18).collect::<Vec<u8>>()[..]);
        assert_eq!(a.get_float("repeat_action_probability").unwrap(), 0.25);
        assert_eq!(a.get_int("max_num_frames_per_episode").unwrap(), 108_000);
        a.reset_game().unwrap();
        assert_eq!(a.lives(), 3);
        assert_eq!(a.episode_frame_number(), 0);
        let t1 = play(&mut a, 1500);

        // Ms. Pac-Man pays 10 for a pellet, 50 for an energizer, 200 and up for ghosts.
        let total: i32 = t1.rewards.iter().sum();
        assert!(total >= 200, "total reward {total}");
        assert!(t1.rewards.iter().all(|r| r % 10 == 0), "{:?}", t1.rewards);
        // Lives are lost on the way (a random walk does not last 6000 frames).
        assert!(t1.lives.iter().any(|&l| l < 3), "{:?}", t1.lives);
        assert!(t1.game_over_at.is_some(), "no game over in 1500 steps");

        // The same seed and actions: the same rewards, lives and screens.
        let mut b = emu("ms_pacman", &v5(7));
        b.reset_game().unwrap();
        assert_eq!(play(&mut b, 1500), t1);

        // Another seed: the sticky actions differ, and so does the game.
        let mut c = emu("ms_pacman", &v5(8));
        c.reset_game().unwrap();
        let t3 = play(&mut c, 1500);
        assert_ne!(t3.screens, t1.screens);

        // Seeding a running emulator (ale-py's reset(seed=...)) starts over as a fresh one.
        c.seed(7).unwrap();
        c.reset_game().unwrap();
        assert_eq!((c.frame_number(), c.episode_frame_number()), (0, 0));
        assert_eq!(play(&mut c, 1500), t1);

        // Without sticky actions the seed changes nothing.
        let det = |seed| {
            let mut e = emu(
                "ms_pacman",
                &EmulatorConfig {
                    repeat_action_probability: 0.0,
                    ..v5(seed)
                },
            );
            e.reset_game().unwrap();
            play(&mut e, 300)
        };
        assert_eq!(det(1), det(2));
    }

    #[test]
    fn screens_settings_and_errors() {
        let mut e = emu("ms_pacman", &v5(1));
        e.reset_game().unwrap();
        let mut rgb = vec![0u8; 210 * 160 * 3];
        let mut gray = vec![0u8; 210 * 160];
        e.screen_rgb(&mut rgb).unwrap();
        e.screen_grayscale(&mut gray).unwrap();
        assert!(rgb.iter().any(|&v| v != 0) && gray.iter().any(|&v| v != 0));
        // Grayscale is the luminance of the same picture: equal RGB, equal gray.
        for (i, px) in rgb.chunks(3).enumerate().take(2000) {
            for (j, qx) in rgb.chunks(3).enumerate().take(2000) {
                if px == qx {
                    assert_eq!(gray[i], gray[j]);
                }
            }
        }
        assert!(e.screen_rgb(&mut gray).is_err());
        // Palette indices through the grayscale palette are the grayscale screen.
        let mut idx = vec![0u8; 210 * 160];
        e.screen_indices(&mut idx).unwrap();
        let palette = e.grayscale_palette().unwrap();
        let looked_up: Vec<u8> = idx.iter().map(|&i| palette[usize::from(i)]).collect();
        assert_eq!(looked_up, gray);
        assert!(
            idx.iter().all(|&i| i % 2 == 0),
            "the TIA draws even indices"
        );
        assert!(e.screen_indices(&mut rgb).is_err());
        assert_eq!(e.ram().unwrap().len(), RAM_BYTES);

        assert!(matches!(e.act(18, 1.0), Err(EnvError::InvalidAction(_))));
        let err = e.set_int("no_such_setting", 1).unwrap_err().to_string();
        assert!(err.contains("no_such_setting"), "{err}");
        let modes = e.available_modes().unwrap();
        assert!(!modes.is_empty());
        let err = e.set_mode(9999).unwrap_err().to_string();
        assert!(err.contains("mode"), "{err}");
        assert!(!e.available_difficulties().unwrap().is_empty());

        let lib = ffi::load(&crate::deps::ale_dir()).unwrap();
        let dir = std::env::temp_dir().join(format!("volley-ale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("ms_pacman.bin");
        std::fs::write(&fake, [0u8; 4096]).unwrap();
        let err = Emulator::new(lib, &fake, &v5(1)).unwrap_err().to_string();
        assert!(err.contains("not a game ALE supports"), "{err}");
        // A ROM of the sdist that ALE has no game settings for.
        let combat = roms::rom_path(&crate::deps::ale_dir(), "combat").unwrap();
        let err = Emulator::new(lib, &combat, &v5(1)).unwrap_err().to_string();
        assert!(err.contains("not a game ALE supports"), "{err}");
        let err = Emulator::new(lib, &dir.join("none.bin"), &v5(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no ROM file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_rom_with_game_settings_loads() {
        let dir = crate::deps::ale_dir();
        let lib = ffi::load(&dir).unwrap();
        let multiplayer = ["combat", "joust", "maze_craze", "warlords"];
        let (mut tall, mut narrow) = (Vec::new(), Vec::new());
        for game in roms::games(&dir).unwrap() {
            let rom = roms::rom_path(&dir, &game).unwrap();
            let made = Emulator::new(lib, &rom, &v5(0));
            if multiplayer.contains(&game.as_str()) {
                assert!(made.is_err(), "{game} loaded");
                continue;
            }
            let e = made.unwrap_or_else(|err| panic!("{game}: {err}"));
            assert_eq!(e.width(), 160, "{game}");
            assert!((210..=250).contains(&e.height()), "{game}: {}", e.height());
            if e.height() != 210 {
                tall.push(game.clone());
            }
            let (minimal, legal) = (e.minimal_action_set(), e.legal_action_set());
            if legal.len() < NUM_ACTIONS {
                narrow.push(game.clone());
            }
            assert!(!minimal.is_empty(), "{game}");
            assert!(
                legal.iter().all(|&a| usize::from(a) < NUM_ACTIONS),
                "{game}"
            );
            assert!(minimal.iter().all(|a| legal.contains(a)), "{game}");
        }
        assert_eq!(tall.len(), 13, "{tall:?}");
        assert!(tall.contains(&"pacman".to_string()), "{tall:?}");
        // Every game takes all 18 actions but two without a fire button, which take 9.
        assert_eq!(narrow, ["lost_luggage", "skiing"]);
    }

    #[test]
    fn episodes_are_truncated_at_max_num_frames_per_episode() {
        let mut e = emu(
            "pong",
            &EmulatorConfig {
                max_num_frames_per_episode: 400,
                ..v5(3)
            },
        );
        e.reset_game().unwrap();
        let mut frames = 0;
        while !e.game_over(true) {
            e.act(0, 1.0).unwrap();
            frames += 1;
            assert!(frames <= 400);
        }
        assert_eq!(frames, 400);
        assert!(e.game_truncated() && !e.game_over(false));
        assert_eq!(e.episode_frame_number(), 400);
        // Past the end ALE emulates nothing.
        assert_eq!(e.act(1, 1.0).unwrap(), 0);
        assert_eq!(e.episode_frame_number(), 400);
        e.reset_game().unwrap();
        assert!(!e.game_over(true));
        assert_eq!(e.episode_frame_number(), 0);
    }

    #[test]
    fn emulators_run_on_separate_threads() {
        let trace = |seed| {
            let mut e = emu("breakout", &v5(seed));
            e.reset_game().unwrap();
            play(&mut e, 400)
        };
        let here = trace(5);
        let there = std::thread::spawn(move || trace(5)).join().unwrap();
        assert_eq!(here, there);
        // An emulator made here can be moved to and used on another thread.
        let mut e = emu("breakout", &v5(5));
        e.reset_game().unwrap();
        let moved = std::thread::spawn(move || play(&mut e, 400))
            .join()
            .unwrap();
        assert_eq!(moved, here);
    }
}
