//! `libvolley_ale.so`, loaded at run time: the C ABI of `deploy/ale/shim.cpp` (ABI 2)
//! around ALE's `ale::ALEInterface`, which `deploy/setup.sh` builds from the ale-py sdist.
//!
//! The library stays loaded for the rest of the process once loaded (it lives in a
//! static), so the entry points below are valid for `'static`.

use std::ffi::{c_char, c_int, c_void};
use std::path::Path;
use std::sync::OnceLock;

use super::super::{EnvError, EnvResult};

/// The shim's file name in the ALE folder.
pub const LIB_NAME: &str = "libvolley_ale.so";
/// `VOLLEY_ALE_ABI` of the shim this code was written against.
pub const ABI_VERSION: c_int = 2;
/// The ALE version `deploy/setup.sh` pins (ale-py's sdist version).
pub const ALE_VERSION: &str = "0.12.1";

/// An `ALEInterface` handle of the shim.
pub type Handle = *mut c_void;

type AbiFn = unsafe extern "C" fn() -> c_int;
type VersionFn = unsafe extern "C" fn() -> *const c_char;
type NewFn = unsafe extern "C" fn() -> Handle;
type FreeFn = unsafe extern "C" fn(Handle);
type ErrorFn = unsafe extern "C" fn(Handle) -> *const c_char;
type SetIntFn = unsafe extern "C" fn(Handle, *const c_char, c_int) -> c_int;
type SetFloatFn = unsafe extern "C" fn(Handle, *const c_char, f32) -> c_int;
type SetStringFn = unsafe extern "C" fn(Handle, *const c_char, *const c_char) -> c_int;
type GetIntFn = unsafe extern "C" fn(Handle, *const c_char, *mut c_int) -> c_int;
type GetFloatFn = unsafe extern "C" fn(Handle, *const c_char, *mut f32) -> c_int;
type PathFn = unsafe extern "C" fn(Handle, *const c_char) -> c_int;
type IntArgFn = unsafe extern "C" fn(Handle, c_int) -> c_int;
type QueryFn = unsafe extern "C" fn(Handle) -> c_int;
type ActFn = unsafe extern "C" fn(Handle, c_int, f32) -> c_int;
type BufFn = unsafe extern "C" fn(Handle, *mut u8, usize) -> c_int;
type ListFn = unsafe extern "C" fn(Handle, *mut c_int, c_int) -> c_int;

/// The loaded library and its entry points (see `deploy/ale/shim.cpp` for each).
pub struct Lib {
    /// Keeps the entry points below valid; never dropped (lives in a static).
    _lib: libloading::Library,
    /// ALE's version string, as the library reports it.
    pub version: String,
    pub new: NewFn,
    pub free: FreeFn,
    pub last_error: ErrorFn,
    pub set_int: SetIntFn,
    pub set_float: SetFloatFn,
    pub set_bool: SetIntFn,
    pub set_string: SetStringFn,
    pub get_int: GetIntFn,
    pub get_float: GetFloatFn,
    pub load_rom: PathFn,
    pub seed: IntArgFn,
    pub reset_game: QueryFn,
    pub act: ActFn,
    pub game_over: IntArgFn,
    pub game_truncated: QueryFn,
    pub lives: QueryFn,
    pub frame_number: QueryFn,
    pub episode_frame_number: QueryFn,
    pub screen_width: QueryFn,
    pub screen_height: QueryFn,
    pub screen_rgb: BufFn,
    pub screen_grayscale: BufFn,
    pub screen_indices: BufFn,
    pub grayscale_palette: BufFn,
    pub ram: BufFn,
    pub minimal_action_set: ListFn,
    pub legal_action_set: ListFn,
    pub available_modes: ListFn,
    pub available_difficulties: ListFn,
    pub set_mode: IntArgFn,
    pub set_difficulty: IntArgFn,
}

impl std::fmt::Debug for Lib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lib")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

static LIB: OnceLock<Lib> = OnceLock::new();

/// The shim in `dir` (`libvolley_ale.so`), loaded on first use; the file must exist
/// even when it is already loaded.
pub fn load(dir: &Path) -> EnvResult<&'static Lib> {
    let so = dir.join(LIB_NAME);
    if !so.is_file() {
        return Err(EnvError::MissingDependency {
            what: format!("ALE's shim {LIB_NAME}"),
            path: so.display().to_string(),
        });
    }
    if let Some(lib) = LIB.get() {
        return Ok(lib);
    }
    let native =
        |e: libloading::Error| EnvError::Native(format!("cannot load {}: {e}", so.display()));
    // SAFETY: loading runs the static initialisers of ALE and the C++ runtime, which
    // have no preconditions. The shim exports only its own C functions.
    let lib = unsafe { libloading::Library::new(&so) }.map_err(native)?;
    // SAFETY: the symbol types are those of deploy/ale/shim.cpp at VOLLEY_ALE_ABI 2; the
    // ABI version is checked before anything else is called.
    let loaded = unsafe {
        let abi: AbiFn = *lib
            .get::<AbiFn>(b"volley_ale_abi_version\0")
            .map_err(native)?;
        let v = abi();
        if v != ABI_VERSION {
            return Err(EnvError::Native(format!(
                "{} has shim ABI {v}, expected {ABI_VERSION}: run deploy/setup.sh again to rebuild it",
                so.display()
            )));
        }
        let version: VersionFn = *lib
            .get::<VersionFn>(b"volley_ale_version\0")
            .map_err(native)?;
        let version = std::ffi::CStr::from_ptr(version())
            .to_string_lossy()
            .into_owned();
        macro_rules! sym {
            ($ty:ty, $name:literal) => {
                *lib.get::<$ty>(concat!($name, "\0").as_bytes())
                    .map_err(native)?
            };
        }
        Lib {
            version,
            new: sym!(NewFn, "volley_ale_new"),
            free: sym!(FreeFn, "volley_ale_free"),
            last_error: sym!(ErrorFn, "volley_ale_last_error"),
            set_int: sym!(SetIntFn, "volley_ale_set_int"),
            set_float: sym!(SetFloatFn, "volley_ale_set_float"),
            set_bool: sym!(SetIntFn, "volley_ale_set_bool"),
            set_string: sym!(SetStringFn, "volley_ale_set_string"),
            get_int: sym!(GetIntFn, "volley_ale_get_int"),
            get_float: sym!(GetFloatFn, "volley_ale_get_float"),
            load_rom: sym!(PathFn, "volley_ale_load_rom"),
            seed: sym!(IntArgFn, "volley_ale_seed"),
            reset_game: sym!(QueryFn, "volley_ale_reset_game"),
            act: sym!(ActFn, "volley_ale_act"),
            game_over: sym!(IntArgFn, "volley_ale_game_over"),
            game_truncated: sym!(QueryFn, "volley_ale_game_truncated"),
            lives: sym!(QueryFn, "volley_ale_lives"),
            frame_number: sym!(QueryFn, "volley_ale_frame_number"),
            episode_frame_number: sym!(QueryFn, "volley_ale_episode_frame_number"),
            screen_width: sym!(QueryFn, "volley_ale_screen_width"),
            screen_height: sym!(QueryFn, "volley_ale_screen_height"),
            screen_rgb: sym!(BufFn, "volley_ale_screen_rgb"),
            screen_grayscale: sym!(BufFn, "volley_ale_screen_grayscale"),
            screen_indices: sym!(BufFn, "volley_ale_screen_indices"),
            grayscale_palette: sym!(BufFn, "volley_ale_grayscale_palette"),
            ram: sym!(BufFn, "volley_ale_ram"),
            minimal_action_set: sym!(ListFn, "volley_ale_minimal_action_set"),
            legal_action_set: sym!(ListFn, "volley_ale_legal_action_set"),
            available_modes: sym!(ListFn, "volley_ale_available_modes"),
            available_difficulties: sym!(ListFn, "volley_ale_available_difficulties"),
            set_mode: sym!(IntArgFn, "volley_ale_set_mode"),
            set_difficulty: sym!(IntArgFn, "volley_ale_set_difficulty"),
            _lib: lib,
        }
    };
    // A concurrent loader may have won; its copy is the same refcounted handle.
    Ok(LIB.get_or_init(|| loaded))
}
