//! `ALE/<Name>-v5` ids and their options, as Gymnasium and EnvPool users write them.
//!
//! `ALE/MsPacman-v5` is ale-py's v5 env; a query string sets its keyword arguments and
//! the preprocessing:
//!
//! | option | values | default | as in |
//! |---|---|---|---|
//! | `obs_type` | `rgb`, `grayscale` | `rgb` | ale-py |
//! | `frameskip` | `1..` | 4 | ale-py (rewards summed over the frames) |
//! | `repeat_action_probability` | `0..=1` | 0.25 | ale-py (sticky actions) |
//! | `full_action_space` | bool | false | ale-py (18 actions, else the game's minimal set) |
//! | `mode`, `difficulty` | the game's | the game's default | ale-py |
//! | `max_num_frames_per_episode` | `0..` (0: none) | 108000 | ale-py (truncation) |
//! | `preprocess` | `none`, `dqn` | `none` | Gymnasium's `AtariPreprocessing` + `FrameStackObservation`, EnvPool |
//! | `noop_max` | `0..` | 30 with `dqn` | `AtariPreprocessing(noop_max)` |
//! | `screen_size` | `1..` | 84 with `dqn` | `AtariPreprocessing(screen_size)` |
//! | `stack` | `1..` | 4 with `dqn` | `FrameStackObservation(stack_size)` |
//! | `episodic_life` | bool | true with `dqn` | EnvPool's `episodic_life`: training only |
//! | `reward_clip` | bool | true with `dqn` | EnvPool's `reward_clip` (the reward's sign): training only |
//!
//! `preprocess=dqn` is the DQN-style preprocessing of Mnih et al. 2015 as Gymnasium's
//! `AtariPreprocessing` does it on a v5 env made with `frameskip=1`: a random number
//! of no-op frames in `1..=noop_max` after each reset, `frameskip` frames per step
//! with the rewards summed and the last two frames max-pooled, grayscale, resized to
//! `screen_size` square (area interpolation), and the last `stack` frames stacked as
//! channels (`[84, 84, 4]`, newest last; a reset fills the stack with its first
//! frame). Sticky actions stay at 0.25 (v5), unlike NoFrameskip-v4 setups.
//!
//! `episodic_life` and `reward_clip` change what the run trains on, not the env:
//! actors mark a lost life as terminal and clip rewards to their sign in the chunks
//! they send ([`crate::reward::Shaper`]); evaluations, episode statistics and metrics
//! see whole games and raw scores.

use super::super::{query, EnvError, EnvResult};

/// The ALE games of ale-py 0.12.1's ROMs, by snake-case id: the keys of
/// `roms/md5.json` except the four multi-player ROMs ALE cannot load (`combat`,
/// `joust`, `maze_craze`, `warlords`).
pub const GAMES: [&str; 104] = [
    "adventure",
    "air_raid",
    "alien",
    "amidar",
    "assault",
    "asterix",
    "asteroids",
    "atlantis",
    "atlantis2",
    "backgammon",
    "bank_heist",
    "basic_math",
    "battle_zone",
    "beam_rider",
    "berzerk",
    "blackjack",
    "bowling",
    "boxing",
    "breakout",
    "carnival",
    "casino",
    "centipede",
    "chopper_command",
    "crazy_climber",
    "crossbow",
    "darkchambers",
    "defender",
    "demon_attack",
    "donkey_kong",
    "double_dunk",
    "earthworld",
    "elevator_action",
    "enduro",
    "entombed",
    "et",
    "fishing_derby",
    "flag_capture",
    "freeway",
    "frogger",
    "frostbite",
    "galaxian",
    "gopher",
    "gravitar",
    "hangman",
    "haunted_house",
    "hero",
    "human_cannonball",
    "ice_hockey",
    "jamesbond",
    "journey_escape",
    "kaboom",
    "kangaroo",
    "keystone_kapers",
    "king_kong",
    "klax",
    "koolaid",
    "krull",
    "kung_fu_master",
    "laser_gates",
    "lost_luggage",
    "mario_bros",
    "miniature_golf",
    "montezuma_revenge",
    "mr_do",
    "ms_pacman",
    "name_this_game",
    "othello",
    "pacman",
    "phoenix",
    "pitfall",
    "pitfall2",
    "pong",
    "pooyan",
    "private_eye",
    "qbert",
    "riverraid",
    "road_runner",
    "robotank",
    "seaquest",
    "sir_lancelot",
    "skiing",
    "solaris",
    "space_invaders",
    "space_war",
    "star_gunner",
    "superman",
    "surround",
    "tennis",
    "tetris",
    "tic_tac_toe_3d",
    "time_pilot",
    "trondead",
    "turmoil",
    "tutankham",
    "up_n_down",
    "venture",
    "video_checkers",
    "video_chess",
    "video_cube",
    "video_pinball",
    "wizard_of_wor",
    "word_zapper",
    "yars_revenge",
    "zaxxon",
];

/// ale-py's env name of a game id: Python's `id.title().replace("_", "")`, which
/// upper-cases a letter after any non-letter (`ms_pacman` `MsPacman`, `tic_tac_toe_3d`
/// `TicTacToe3D`, `atlantis2` `Atlantis2`).
pub fn env_name(game: &str) -> String {
    let mut out = String::with_capacity(game.len());
    let mut prev_letter = false;
    for c in game.chars() {
        if c.is_ascii_alphabetic() {
            out.push(if prev_letter {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            });
            prev_letter = true;
        } else {
            if c != '_' {
                out.push(c);
            }
            prev_letter = false;
        }
    }
    out
}

/// Observations of the v5 env.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObsType {
    /// The screen, `[H, W, 3]`.
    Rgb,
    /// ALE's grayscale screen, `[H, W, 1]`.
    Grayscale,
}

impl ObsType {
    pub fn name(self) -> &'static str {
        match self {
            ObsType::Rgb => "rgb",
            ObsType::Grayscale => "grayscale",
        }
    }
}

/// The DQN-style preprocessing (`preprocess=dqn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preprocess {
    /// No-op frames after a reset: a uniform draw in `1..=noop_max` (0: none).
    pub noop_max: u32,
    /// Side of the square grayscale frame.
    pub screen_size: usize,
    /// Frames stacked as channels.
    pub stack: usize,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            noop_max: 30,
            screen_size: 84,
            stack: 4,
        }
    }
}

/// A parsed `ALE/<Name>-v5` id.
#[derive(Debug, Clone, PartialEq)]
pub struct AtariConfig {
    /// ale-py's snake-case game id (`ms_pacman`).
    pub game: String,
    pub obs_type: ObsType,
    /// Emulator frames per step.
    pub frameskip: u32,
    pub repeat_action_probability: f32,
    pub full_action_space: bool,
    pub mode: Option<u32>,
    pub difficulty: Option<u32>,
    pub max_num_frames_per_episode: u32,
    pub preprocess: Option<Preprocess>,
    /// Training only: a lost life ends the episode in the chunks actors send.
    pub episodic_life: bool,
    /// Training only: rewards clipped to their sign in the chunks actors send.
    pub reward_clip: bool,
}

impl AtariConfig {
    /// The v5 defaults for `game`.
    pub fn new(game: &str) -> AtariConfig {
        AtariConfig {
            game: game.to_string(),
            obs_type: ObsType::Rgb,
            frameskip: 4,
            repeat_action_probability: 0.25,
            full_action_space: false,
            mode: None,
            difficulty: None,
            max_num_frames_per_episode: 108_000,
            preprocess: None,
            episodic_life: false,
            reward_clip: false,
        }
    }

    /// Every valid id without options.
    pub fn valid_ids() -> impl Iterator<Item = String> {
        GAMES.iter().map(|g| format!("ALE/{}-v5", env_name(g)))
    }

    /// Parses `name` (the part between `ALE/` and `-v5`, as in `ALE/<name>-v5`) and
    /// its options.
    pub fn parse(base: &str, query: Option<&str>) -> EnvResult<AtariConfig> {
        let id = match query {
            Some(q) => format!("{base}?{q}"),
            None => base.to_string(),
        };
        let unknown = || EnvError::UnknownEnv {
            id: id.clone(),
            valid: format!(
                "ALE/<Game>-v5 for the ALE games {}",
                GAMES
                    .iter()
                    .map(|g| env_name(g))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let name = base
            .strip_prefix("ALE/")
            .and_then(|n| n.strip_suffix("-v5"))
            .ok_or_else(unknown)?;
        let game = GAMES
            .iter()
            .find(|g| env_name(g) == name)
            .ok_or_else(unknown)?;
        let bad = |message: String| EnvError::BadOption {
            id: id.clone(),
            message,
        };
        let mut cfg = AtariConfig::new(game);
        let (mut noop_max, mut screen_size, mut stack) = (None, None, None);
        let (mut episodic_life, mut reward_clip, mut preprocess) = (None, None, false);
        let given = query::pairs(query).map_err(bad)?;
        for &(key, value) in &given {
            let flag = || query::flag(key, value).map_err(bad);
            let int = |min: u32| query::int(key, value, min).map_err(bad);
            match key {
                "obs_type" => {
                    cfg.obs_type = match value {
                        "rgb" => ObsType::Rgb,
                        "grayscale" => ObsType::Grayscale,
                        "ram" => {
                            return Err(bad(
                                "obs_type=ram is not supported: use rgb or grayscale".into()
                            ))
                        }
                        _ => {
                            return Err(bad(format!(
                                "bad value '{value}' for obs_type: valid values are rgb, grayscale"
                            )))
                        }
                    }
                }
                "frameskip" => cfg.frameskip = int(1)?,
                "repeat_action_probability" => {
                    cfg.repeat_action_probability = value
                        .parse::<f32>()
                        .ok()
                        .filter(|p| (0.0..=1.0).contains(p))
                        .ok_or_else(|| {
                            bad(format!(
                                "bad value '{value}' for repeat_action_probability: expected a number in 0..=1"
                            ))
                        })?
                }
                "full_action_space" => cfg.full_action_space = flag()?,
                "mode" => cfg.mode = Some(int(0)?),
                "difficulty" => cfg.difficulty = Some(int(0)?),
                "max_num_frames_per_episode" => cfg.max_num_frames_per_episode = int(0)?,
                "preprocess" => {
                    preprocess = match value {
                        "dqn" => true,
                        "none" => false,
                        _ => {
                            return Err(bad(format!(
                                "bad value '{value}' for preprocess: valid values are none, dqn"
                            )))
                        }
                    }
                }
                "noop_max" => noop_max = Some(int(0)?),
                "screen_size" => screen_size = Some(int(1)? as usize),
                "stack" => stack = Some(int(1)? as usize),
                "episodic_life" => episodic_life = Some(flag()?),
                "reward_clip" => reward_clip = Some(flag()?),
                _ => {
                    return Err(bad(format!(
                        "unknown option '{key}': valid options are obs_type, frameskip, \
                         repeat_action_probability, full_action_space, mode, difficulty, \
                         max_num_frames_per_episode, preprocess, noop_max, screen_size, stack, \
                         episodic_life, reward_clip"
                    )))
                }
            }
        }
        if preprocess {
            if given.iter().any(|(k, _)| *k == "obs_type") && cfg.obs_type != ObsType::Grayscale {
                return Err(bad(
                    "preprocess=dqn works on grayscale frames: drop obs_type=rgb".into(),
                ));
            }
            let d = Preprocess::default();
            cfg.obs_type = ObsType::Grayscale;
            cfg.preprocess = Some(Preprocess {
                noop_max: noop_max.unwrap_or(d.noop_max),
                screen_size: screen_size.unwrap_or(d.screen_size),
                stack: stack.unwrap_or(d.stack),
            });
            cfg.episodic_life = episodic_life.unwrap_or(true);
            cfg.reward_clip = reward_clip.unwrap_or(true);
        } else {
            let only = [
                ("noop_max", noop_max.is_some()),
                ("screen_size", screen_size.is_some()),
                ("stack", stack.is_some()),
            ];
            if let Some((k, _)) = only.iter().find(|(_, given)| *given) {
                return Err(bad(format!("{k} needs preprocess=dqn")));
            }
            cfg.episodic_life = episodic_life.unwrap_or(false);
            cfg.reward_clip = reward_clip.unwrap_or(false);
        }
        Ok(cfg)
    }

    /// The id with the options that differ from the defaults, which parses back to
    /// this config.
    pub fn to_id_string(&self) -> String {
        let mut id = format!("ALE/{}-v5", env_name(&self.game));
        let mut opts: Vec<String> = Vec::new();
        let d = AtariConfig::new(&self.game);
        if let Some(p) = self.preprocess {
            opts.push("preprocess=dqn".into());
            let dp = Preprocess::default();
            if p.noop_max != dp.noop_max {
                opts.push(format!("noop_max={}", p.noop_max));
            }
            if p.screen_size != dp.screen_size {
                opts.push(format!("screen_size={}", p.screen_size));
            }
            if p.stack != dp.stack {
                opts.push(format!("stack={}", p.stack));
            }
        } else if self.obs_type != d.obs_type {
            opts.push(format!("obs_type={}", self.obs_type.name()));
        }
        if self.frameskip != d.frameskip {
            opts.push(format!("frameskip={}", self.frameskip));
        }
        if self.repeat_action_probability != d.repeat_action_probability {
            opts.push(format!(
                "repeat_action_probability={}",
                self.repeat_action_probability
            ));
        }
        if self.full_action_space {
            opts.push("full_action_space=true".into());
        }
        if let Some(m) = self.mode {
            opts.push(format!("mode={m}"));
        }
        if let Some(v) = self.difficulty {
            opts.push(format!("difficulty={v}"));
        }
        if self.max_num_frames_per_episode != d.max_num_frames_per_episode {
            opts.push(format!(
                "max_num_frames_per_episode={}",
                self.max_num_frames_per_episode
            ));
        }
        let dqn = self.preprocess.is_some();
        if self.episodic_life != dqn {
            opts.push(format!("episodic_life={}", self.episodic_life));
        }
        if self.reward_clip != dqn {
            opts.push(format!("reward_clip={}", self.reward_clip));
        }
        if !opts.is_empty() {
            id.push('?');
            id.push_str(&opts.join("&"));
        }
        id
    }

    /// Agent steps a second at the console's 60 frames a second (15 for v5).
    pub fn steps_per_second(&self) -> f64 {
        60.0 / f64::from(self.frameskip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_ale_pys() {
        assert_eq!(env_name("ms_pacman"), "MsPacman");
        assert_eq!(env_name("up_n_down"), "UpNDown");
        assert_eq!(env_name("tic_tac_toe_3d"), "TicTacToe3D");
        assert_eq!(env_name("atlantis2"), "Atlantis2");
        assert_eq!(env_name("et"), "Et");
        // Every name maps back to one game.
        for g in GAMES {
            let n = env_name(g);
            assert_eq!(GAMES.iter().filter(|h| env_name(h) == n).count(), 1, "{n}");
        }
    }

    #[test]
    fn ids_parse_with_v5_defaults_and_print_back() {
        let c = AtariConfig::parse("ALE/MsPacman-v5", None).unwrap();
        assert_eq!(c, AtariConfig::new("ms_pacman"));
        assert_eq!(c.to_id_string(), "ALE/MsPacman-v5");
        for id in [
            "ALE/Breakout-v5?full_action_space=true",
            "ALE/SpaceInvaders-v5?mode=3&difficulty=1",
            "ALE/Pong-v5?obs_type=grayscale&frameskip=1&repeat_action_probability=0",
            "ALE/MsPacman-v5?preprocess=dqn",
            "ALE/MsPacman-v5?preprocess=dqn&noop_max=0&stack=2&reward_clip=false",
            "ALE/MsPacman-v5?episodic_life=true",
        ] {
            let (b, q) = id.split_once('?').unwrap();
            let c = AtariConfig::parse(b, Some(q)).unwrap();
            assert_eq!(c.to_id_string(), id);
        }
        let d = AtariConfig::parse("ALE/MsPacman-v5", Some("preprocess=dqn")).unwrap();
        assert_eq!(d.preprocess, Some(Preprocess::default()));
        assert_eq!(d.obs_type, ObsType::Grayscale);
        assert!(d.episodic_life && d.reward_clip);
    }

    #[test]
    fn bad_ids_and_options_say_what_to_write() {
        let e = AtariConfig::parse("ALE/MsPacMan-v5", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("MsPacman") && e.contains("ALE/<Game>-v5"), "{e}");
        let e = AtariConfig::parse("ALE/Combat-v5", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown env id"), "{e}");
        let cases = [
            ("obs_type=ram", "not supported"),
            ("obs_type=rgbx", "valid values are rgb, grayscale"),
            ("frameskip=0", "expected an integer in 1.."),
            ("repeat_action_probability=1.5", "0..=1"),
            ("full_action_space=yes", "valid values are"),
            ("stack=4", "needs preprocess=dqn"),
            ("preprocess=dqn&obs_type=rgb", "grayscale"),
            ("mode", "has no value"),
            ("mode=1&mode=2", "given twice"),
            ("sticky=1", "unknown option 'sticky'"),
        ];
        for (q, want) in cases {
            let e = AtariConfig::parse("ALE/MsPacman-v5", Some(q))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{q}: {e}");
        }
    }
}
