//! Locations of the native dependencies that `deploy/setup.sh` installs into `.deps/`.
//!
//! The build records the folder (`VOLLEY_DEPS_DIR`, set by the `.cargo/config.toml`
//! that setup writes); at run time the variable `VOLLEY_DEPS_DIR` overrides it, so
//! installed binaries can point elsewhere.

use std::path::PathBuf;

/// The `.deps/` folder: the run-time `VOLLEY_DEPS_DIR` if set, else the one recorded at
/// build time, else `.deps` under the current directory.
pub fn deps_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VOLLEY_DEPS_DIR") {
        return PathBuf::from(d);
    }
    match option_env!("VOLLEY_DEPS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(".deps"),
    }
}

/// Procgen's `libenv.so` and its `assets/` folder.
pub fn procgen_dir() -> PathBuf {
    deps_dir().join("procgen")
}

/// Gymnasium's MuJoCo XML models (`hopper.xml`, `half_cheetah.xml`, `ant.xml`).
pub fn mujoco_models_dir() -> PathBuf {
    deps_dir().join("gymnasium").join("assets")
}

/// ALE's shim library `libvolley_ale.so` (ALE built with `deploy/ale/shim.cpp`) and the
/// Atari ROMs in `roms/`.
pub fn ale_dir() -> PathBuf {
    deps_dir().join("ale")
}
