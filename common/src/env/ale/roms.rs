//! The Atari ROMs of the ale-py sdist, which `deploy/setup.sh` copies into
//! `.deps/ale/roms/`: `<game>.bin` for each game id in snake case (ale-py's ids:
//! `ms_pacman`, `pong`, `breakout`, ...), and `md5.json`, the map from file name to MD5
//! that ale-py's `roms.get_all_rom_ids` lists the games from (108). ALE itself checks a
//! ROM's MD5 when it loads it; four of them (`combat`, `joust`, `maze_craze`,
//! `warlords`, multi-player games) have no ALE game settings and do not load.

use std::path::{Path, PathBuf};

use super::super::{EnvError, EnvResult};

/// The ROMs folder inside the ALE folder.
pub fn roms_dir(ale_dir: &Path) -> PathBuf {
    ale_dir.join("roms")
}

/// The game ids whose ROMs the folder holds, sorted: the keys of `md5.json` without
/// `.bin`.
pub fn games(ale_dir: &Path) -> EnvResult<Vec<String>> {
    let index = roms_dir(ale_dir).join("md5.json");
    let text = std::fs::read_to_string(&index).map_err(|_| EnvError::MissingDependency {
        what: "the Atari ROMs' index md5.json".into(),
        path: index.display().to_string(),
    })?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| EnvError::Native(format!("cannot read {}: {e}", index.display())))?;
    let mut games: Vec<String> = map
        .keys()
        .filter_map(|k| k.strip_suffix(".bin").map(str::to_string))
        .collect();
    games.sort();
    Ok(games)
}

/// The ROM file of `game` (a snake-case id such as `ms_pacman`).
pub fn rom_path(ale_dir: &Path, game: &str) -> EnvResult<PathBuf> {
    let known = games(ale_dir)?;
    if !known.iter().any(|g| g == game) {
        return Err(EnvError::UnknownEnv {
            id: game.to_string(),
            valid: format!("the ALE games {}", known.join(", ")),
        });
    }
    let path = roms_dir(ale_dir).join(format!("{game}.bin"));
    if !path.is_file() {
        return Err(EnvError::MissingDependency {
            what: format!("the ROM of {game}"),
            path: path.display().to_string(),
        });
    }
    Ok(path)
}
