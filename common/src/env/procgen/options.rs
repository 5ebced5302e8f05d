//! Procgen ids and their options: parsing `procgen:<game>?opt=value&...`, the canonical
//! id, and the values handed to `libenv_make`.
//!
//! Names and defaults follow procgen's Python `ProcgenGym3Env` (procgen 0.10.7,
//! `procgen/env.py`), including its `exploration` distribution mode, which exists only
//! in Python: hard mode on one fixed level per game.

use super::super::{query, EnvError, EnvResult};

/// The 16 games, in procgen's order.
pub const GAMES: [&str; 16] = [
    "bigfish",
    "bossfight",
    "caveflyer",
    "chaser",
    "climber",
    "coinrun",
    "dodgeball",
    "fruitbot",
    "heist",
    "jumper",
    "leaper",
    "maze",
    "miner",
    "ninja",
    "plunder",
    "starpilot",
];

/// Every option a Procgen id takes, with a short description and its default, for
/// `volley-actor envs`.
pub const OPTIONS: &[(&str, &str)] = &[
    (
        "distribution_mode",
        "level distribution: easy, hard, extreme, memory or exploration (default hard, as in procgen's ProcgenGym3Env)",
    ),
    ("num_levels", "number of distinct levels, 0 = unlimited (default 0)"),
    ("start_level", "seed of the first level (default 0)"),
    (
        "use_sequential_levels",
        "a completed level continues into the next one instead of ending the episode (default false)",
    ),
    ("center_agent", "centre the view on the agent (default true)"),
    ("use_backgrounds", "draw background images (default true)"),
    (
        "use_monochrome_assets",
        "draw monochrome rectangles instead of sprites (default false)",
    ),
    ("restrict_themes", "use a single theme per game (default false)"),
    (
        "use_generated_assets",
        "use procedurally generated sprites (default false)",
    ),
    (
        "paint_vel_info",
        "paint the agent's velocity in the top-left corner (default false)",
    ),
];

/// `EXPLORATION_LEVEL_SEEDS` of procgen's `env.py`: the one level each game plays in
/// exploration mode.
const EXPLORATION_LEVEL_SEEDS: [(&str, u32); 8] = [
    ("coinrun", 1949448038),
    ("caveflyer", 1259048185),
    ("leaper", 1318677581),
    ("jumper", 1434825276),
    ("maze", 158988835),
    ("heist", 876640971),
    ("climber", 1561126160),
    ("ninja", 1123500215),
];

/// Games that support extreme mode (`Game::parse_options` in procgen's `game.cpp`).
const EXTREME_GAMES: [&str; 4] = ["chaser", "dodgeball", "leaper", "starpilot"];
/// Games that support memory mode (same source).
const MEMORY_GAMES: [&str; 6] = ["caveflyer", "dodgeball", "heist", "jumper", "maze", "miner"];

/// Procgen's level distributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistributionMode {
    Easy,
    Hard,
    Extreme,
    Memory,
    /// Python-only: hard mode restricted to one level per game.
    Exploration,
}

impl DistributionMode {
    pub const ALL: [DistributionMode; 5] = [
        DistributionMode::Easy,
        DistributionMode::Hard,
        DistributionMode::Extreme,
        DistributionMode::Memory,
        DistributionMode::Exploration,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DistributionMode::Easy => "easy",
            DistributionMode::Hard => "hard",
            DistributionMode::Extreme => "extreme",
            DistributionMode::Memory => "memory",
            DistributionMode::Exploration => "exploration",
        }
    }

    /// The `distribution_mode` integer of the C library (`DistributionMode` in
    /// `game.h`); exploration is hard mode.
    pub fn c_value(self) -> i32 {
        match self {
            DistributionMode::Easy => 0,
            DistributionMode::Hard | DistributionMode::Exploration => 1,
            DistributionMode::Extreme => 2,
            DistributionMode::Memory => 10,
        }
    }

    /// The games that support this mode.
    pub fn games(self) -> Vec<&'static str> {
        match self {
            DistributionMode::Easy | DistributionMode::Hard => GAMES.to_vec(),
            DistributionMode::Extreme => EXTREME_GAMES.to_vec(),
            DistributionMode::Memory => MEMORY_GAMES.to_vec(),
            DistributionMode::Exploration => EXPLORATION_LEVEL_SEEDS.iter().map(|p| p.0).collect(),
        }
    }
}

/// A parsed Procgen id: the game and every option, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcgenConfig {
    /// One of [`GAMES`].
    pub game: String,
    pub distribution_mode: DistributionMode,
    /// Distinct levels, 0 for unlimited. Set by exploration mode, which forbids it.
    pub num_levels: u32,
    /// Seed of the first level. Set by exploration mode, which forbids it.
    pub start_level: u32,
    pub use_sequential_levels: bool,
    pub center_agent: bool,
    pub use_backgrounds: bool,
    pub use_monochrome_assets: bool,
    pub restrict_themes: bool,
    pub use_generated_assets: bool,
    pub paint_vel_info: bool,
}

impl ProcgenConfig {
    /// The defaults of procgen's `ProcgenGym3Env` for `game` (not checked).
    pub fn new(game: &str) -> Self {
        ProcgenConfig {
            game: game.to_string(),
            distribution_mode: DistributionMode::Hard,
            num_levels: 0,
            start_level: 0,
            use_sequential_levels: false,
            center_agent: true,
            use_backgrounds: true,
            use_monochrome_assets: false,
            restrict_themes: false,
            use_generated_assets: false,
            paint_vel_info: false,
        }
    }

    /// Parses the game and query of `procgen:<game>?<query>`.
    pub fn parse(game: &str, query: Option<&str>) -> EnvResult<Self> {
        let id = match query {
            Some(q) => format!("procgen:{game}?{q}"),
            None => format!("procgen:{game}"),
        };
        if !GAMES.contains(&game) {
            return Err(EnvError::UnknownEnv {
                id,
                valid: GAMES
                    .iter()
                    .map(|g| format!("procgen:{g}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let bad = |message: String| EnvError::BadOption {
            id: id.clone(),
            message,
        };
        let mut cfg = ProcgenConfig::new(game);
        let given = query::pairs(query).map_err(bad)?;
        for &(key, value) in &given {
            let flag = |v: &str| query::flag(key, v).map_err(bad);
            let level = |v: &str| query::int(key, v, 0).map_err(bad);
            match key {
                "distribution_mode" => {
                    cfg.distribution_mode = DistributionMode::ALL
                        .into_iter()
                        .find(|m| m.name() == value)
                        .ok_or_else(|| {
                            bad(format!(
                                "bad value '{value}' for distribution_mode: valid values are {}",
                                DistributionMode::ALL.map(|m| m.name()).join(", ")
                            ))
                        })?;
                }
                "num_levels" => cfg.num_levels = level(value)?,
                "start_level" => cfg.start_level = level(value)?,
                "use_sequential_levels" => cfg.use_sequential_levels = flag(value)?,
                "center_agent" => cfg.center_agent = flag(value)?,
                "use_backgrounds" => cfg.use_backgrounds = flag(value)?,
                "use_monochrome_assets" => cfg.use_monochrome_assets = flag(value)?,
                "restrict_themes" => cfg.restrict_themes = flag(value)?,
                "use_generated_assets" => cfg.use_generated_assets = flag(value)?,
                "paint_vel_info" => cfg.paint_vel_info = flag(value)?,
                other => {
                    let valid: Vec<&str> = OPTIONS.iter().map(|o| o.0).collect();
                    let hint = if other == "seed" || other == "rand_seed" {
                        " (the seed is the argument of reset, not an option)"
                    } else {
                        ""
                    };
                    return Err(bad(format!(
                        "unknown option '{other}'{hint}: valid options are {}",
                        valid.join(", ")
                    )));
                }
            }
        }
        let mode = cfg.distribution_mode;
        if !mode.games().contains(&game) {
            return Err(bad(format!(
                "{game} does not support distribution_mode={}: games that do are {}",
                mode.name(),
                mode.games().join(", ")
            )));
        }
        if mode == DistributionMode::Exploration {
            for key in ["num_levels", "start_level"] {
                if given.iter().any(|(k, _)| *k == key) {
                    return Err(bad(format!(
                        "distribution_mode=exploration sets {key} itself (one fixed level): remove {key}"
                    )));
                }
            }
            cfg.num_levels = 1;
            cfg.start_level = exploration_level(game).unwrap_or(0);
        }
        if u64::from(cfg.start_level) + u64::from(cfg.num_levels) > i32::MAX as u64 {
            return Err(bad(format!(
                "start_level + num_levels must not exceed {} (got {} + {})",
                i32::MAX,
                cfg.start_level,
                cfg.num_levels
            )));
        }
        Ok(cfg)
    }

    /// The canonical id: `procgen:<game>?distribution_mode=<mode>` followed by every other
    /// option that differs from its default, in [`OPTIONS`] order. The mode is always
    /// written because libraries disagree on its default (gym3: hard, C library and
    /// EnvPool: easy). Parses back to the same config.
    pub fn to_id_string(&self) -> String {
        let default = ProcgenConfig::new(&self.game);
        let mut id = format!(
            "procgen:{}?distribution_mode={}",
            self.game,
            self.distribution_mode.name()
        );
        let mut push = |k: &str, v: String| {
            id.push('&');
            id.push_str(k);
            id.push('=');
            id.push_str(&v);
        };
        if self.distribution_mode != DistributionMode::Exploration {
            if self.num_levels != default.num_levels {
                push("num_levels", self.num_levels.to_string());
            }
            if self.start_level != default.start_level {
                push("start_level", self.start_level.to_string());
            }
        }
        let flags = [
            (
                "use_sequential_levels",
                self.use_sequential_levels,
                default.use_sequential_levels,
            ),
            ("center_agent", self.center_agent, default.center_agent),
            (
                "use_backgrounds",
                self.use_backgrounds,
                default.use_backgrounds,
            ),
            (
                "use_monochrome_assets",
                self.use_monochrome_assets,
                default.use_monochrome_assets,
            ),
            (
                "restrict_themes",
                self.restrict_themes,
                default.restrict_themes,
            ),
            (
                "use_generated_assets",
                self.use_generated_assets,
                default.use_generated_assets,
            ),
            (
                "paint_vel_info",
                self.paint_vel_info,
                default.paint_vel_info,
            ),
        ];
        for (k, v, d) in flags {
            if v != d {
                push(k, v.to_string());
            }
        }
        id
    }

    /// Steps after which procgen ends an episode by its time limit (`timeout` in
    /// `game.cpp` and the games that override it).
    pub fn timeout(&self) -> u32 {
        match self.game.as_str() {
            "bigfish" => 6000,
            "bossfight" | "plunder" => 4000,
            "leaper" | "maze" => 500,
            "jumper" if self.distribution_mode == DistributionMode::Memory => 2000,
            _ => 1000,
        }
    }
}

fn exploration_level(game: &str) -> Option<u32> {
    EXPLORATION_LEVEL_SEEDS
        .iter()
        .find(|p| p.0 == game)
        .map(|p| p.1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn err(game: &str, q: &str) -> String {
        match ProcgenConfig::parse(game, Some(q)) {
            Ok(c) => panic!("{game}?{q} parsed to {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_follow_procgen_gym3_env() {
        let c = ProcgenConfig::parse("starpilot", None).unwrap();
        assert_eq!(c, ProcgenConfig::new("starpilot"));
        assert_eq!(c.distribution_mode, DistributionMode::Hard);
        assert!(c.center_agent && c.use_backgrounds && !c.paint_vel_info);
        assert_eq!(c.to_id_string(), "procgen:starpilot?distribution_mode=hard");
    }

    #[test]
    fn every_option_parses_and_round_trips() {
        let q = "distribution_mode=easy&num_levels=200&start_level=7&use_sequential_levels=true\
                 &center_agent=false&use_backgrounds=0&use_monochrome_assets=1&restrict_themes=true\
                 &use_generated_assets=true&paint_vel_info=true";
        let c = ProcgenConfig::parse("coinrun", Some(q)).unwrap();
        assert_eq!(c.distribution_mode, DistributionMode::Easy);
        assert_eq!((c.num_levels, c.start_level), (200, 7));
        assert!(c.use_sequential_levels && !c.center_agent && !c.use_backgrounds);
        assert!(c.use_monochrome_assets && c.restrict_themes && c.use_generated_assets);
        assert!(c.paint_vel_info);
        let id = c.to_id_string();
        let (base, query) = id.split_once('?').unwrap();
        let game = base.strip_prefix("procgen:").unwrap();
        assert_eq!(ProcgenConfig::parse(game, Some(query)).unwrap(), c);
        let again =
            ProcgenConfig::parse("starpilot", Some("num_levels=200&distribution_mode=hard"))
                .unwrap()
                .to_id_string();
        assert_eq!(
            again,
            "procgen:starpilot?distribution_mode=hard&num_levels=200"
        );
    }

    #[test]
    fn exploration_mode_is_hard_mode_on_one_level() {
        let c = ProcgenConfig::parse("coinrun", Some("distribution_mode=exploration")).unwrap();
        assert_eq!(c.distribution_mode.c_value(), 1);
        assert_eq!((c.num_levels, c.start_level), (1, 1949448038));
        assert_eq!(
            c.to_id_string(),
            "procgen:coinrun?distribution_mode=exploration"
        );
        let e = err("starpilot", "distribution_mode=exploration");
        assert!(
            e.contains("does not support distribution_mode=exploration"),
            "{e}"
        );
        assert!(e.contains("coinrun") && e.contains("ninja"), "{e}");
        let e = err("maze", "distribution_mode=exploration&num_levels=5");
        assert!(e.contains("sets num_levels itself"), "{e}");
    }

    #[test]
    fn bad_options_name_the_problem_and_the_valid_values() {
        let e = err("starpilot", "distribution_mode=medium");
        assert!(
            e.contains("'medium'") && e.contains("easy, hard, extreme, memory, exploration"),
            "{e}"
        );
        let e = err("starpilot", "num_level=3");
        assert!(
            e.contains("unknown option 'num_level'") && e.contains("num_levels"),
            "{e}"
        );
        let e = err("starpilot", "seed=3");
        assert!(e.contains("argument of reset"), "{e}");
        let e = err("starpilot", "num_levels=-1");
        assert!(e.contains("bad value '-1' for num_levels"), "{e}");
        let e = err("starpilot", "paint_vel_info=yes");
        assert!(e.contains("true, false"), "{e}");
        let e = err("starpilot", "paint_vel_info");
        assert!(e.contains("has no value"), "{e}");
        let e = err("starpilot", "num_levels=1&num_levels=2");
        assert!(e.contains("given twice"), "{e}");
        let e = err("coinrun", "distribution_mode=extreme");
        assert!(e.contains("chaser, dodgeball, leaper, starpilot"), "{e}");
        let e = err("coinrun", "start_level=2147483647&num_levels=2");
        assert!(e.contains("must not exceed"), "{e}");
        let e = ProcgenConfig::parse("starpilots", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown env id 'procgen:starpilots'") && e.contains("procgen:bigfish"),
            "{e}"
        );
    }

    #[test]
    fn timeouts_follow_the_games() {
        let t = |g: &str, q: Option<&str>| ProcgenConfig::parse(g, q).unwrap().timeout();
        assert_eq!(t("starpilot", None), 1000);
        assert_eq!(t("bigfish", None), 6000);
        assert_eq!(t("maze", None), 500);
        assert_eq!(t("jumper", None), 1000);
        assert_eq!(t("jumper", Some("distribution_mode=memory")), 2000);
    }
}
