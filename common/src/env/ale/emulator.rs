//! [`Emulator`]: one `ale::ALEInterface` (one Atari console with one game), owned safely.

use std::ffi::{c_int, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::super::{EnvError, EnvResult};
use super::ffi::{self, Handle, Lib};
use super::roms;

/// ALE's 18 joystick actions (`ale::Action` 0..18, ale-py's `Action` names), in this
/// order.
pub const ACTION_NAMES: [&str; NUM_ACTIONS] = [
    "NOOP",
    "FIRE",
    "UP",
    "RIGHT",
    "LEFT",
    "DOWN",
    "UPRIGHT",
    "UPLEFT",
    "DOWNRIGHT",
    "DOWNLEFT",
    "UPFIRE",
    "RIGHTFIRE",
    "LEFTFIRE",
    "DOWNFIRE",
    "UPRIGHTFIRE",
    "UPLEFTFIRE",
    "DOWNRIGHTFIRE",
    "DOWNLEFTFIRE",
];
/// The number of joystick actions.
pub const NUM_ACTIONS: usize = 18;
/// Bytes of the console's RAM.
pub const RAM_BYTES: usize = 128;

/// The settings an [`Emulator`] is made with: ALE reads them when it loads the ROM.
#[derive(Debug, Clone, PartialEq)]
pub struct EmulatorConfig {
    /// Sticky actions (Machado et al. 2018): the chance, each frame, that the console
    /// keeps the previous action instead of the one given. ALE's default, and v5's: 0.25.
    pub repeat_action_probability: f32,
    /// Frames after which an episode is truncated; 0 never (ALE's default; v5: 108000).
    pub max_num_frames_per_episode: i32,
    /// ALE's `random_seed` (the sticky-action generator), as a bit pattern: ale-py passes
    /// `np.int32` of a 32-bit word, which ALE reads back as unsigned.
    pub seed: u32,
    /// The game mode, `None` for the game's default.
    pub mode: Option<u32>,
    /// The difficulty switches, `None` for the game's default.
    pub difficulty: Option<u32>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            repeat_action_probability: 0.25,
            max_num_frames_per_episode: 0,
            seed: 0,
            mode: None,
            difficulty: None,
        }
    }
}

/// One `ALEInterface` with a loaded game, freed on drop.
///
/// Not `Sync`: ALE's calls are not thread-safe on one console. Separate emulators are
/// independent and may run on separate threads.
pub struct Emulator {
    lib: &'static Lib,
    h: Handle,
    rom: PathBuf,
    width: usize,
    height: usize,
    minimal: Vec<u8>,
    legal: Vec<u8>,
}

// SAFETY: an ALEInterface has no thread affinity (ale-py's vector env steps each one on
// a worker thread of its pool); an `Emulator` is used by one thread at a time (`&mut`
// for everything that changes it, and it is not `Sync`).
unsafe impl Send for Emulator {}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("rom", &self.rom)
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

fn cstring(s: &str) -> EnvResult<CString> {
    CString::new(s).map_err(|_| EnvError::Native(format!("'{s}' holds a NUL byte")))
}

impl Emulator {
    /// The emulator of `game` (ale-py's snake-case id, `ms_pacman`) from the ALE folder
    /// `deploy/setup.sh` installed ([`crate::deps::ale_dir`]).
    pub fn for_game(game: &str, config: &EmulatorConfig) -> EnvResult<Emulator> {
        let dir = crate::deps::ale_dir();
        let lib = ffi::load(&dir)?;
        let rom = roms::rom_path(&dir, game)?;
        Emulator::new(lib, &rom, config)
    }

    /// An emulator running the ROM at `rom` with `config`, its game reset (`loadROM`
    /// resets it; ale-py still calls `reset_game` before the first episode).
    pub fn new(lib: &'static Lib, rom: &Path, config: &EmulatorConfig) -> EnvResult<Emulator> {
        // SAFETY: no preconditions; null means failure.
        let h = unsafe { (lib.new)() };
        if h.is_null() {
            return Err(EnvError::Native("volley_ale_new returned null".into()));
        }
        let mut emu = Emulator {
            lib,
            h,
            rom: rom.to_path_buf(),
            width: 0,
            height: 0,
            minimal: Vec::new(),
            legal: Vec::new(),
        };
        emu.set_float(
            "repeat_action_probability",
            config.repeat_action_probability,
        )?;
        emu.set_int(
            "max_num_frames_per_episode",
            config.max_num_frames_per_episode,
        )?;
        emu.set_int("random_seed", config.seed as i32)?;
        emu.load_rom()?;
        if let Some(m) = config.mode {
            emu.set_mode(m)?;
        }
        if let Some(d) = config.difficulty {
            emu.set_difficulty(d)?;
        }
        Ok(emu)
    }

    /// The last failure's message of this handle.
    fn error(&self, what: &str) -> EnvError {
        // SAFETY: the handle is live; the string is valid until the next call on it and
        // copied at once.
        let msg = unsafe { CStr::from_ptr((self.lib.last_error)(self.h)) }
            .to_string_lossy()
            .trim_end()
            .to_string();
        EnvError::Native(format!("ALE {what} ({}): {msg}", self.rom.display()))
    }

    fn check(&self, rc: c_int, what: &str) -> EnvResult<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// Sets an integer setting of ALE (`setInt`); it takes effect at the next
    /// [`Emulator::load_rom`]. An unknown key is an error.
    pub fn set_int(&mut self, key: &str, value: i32) -> EnvResult<()> {
        let k = cstring(key)?;
        // SAFETY: the handle is live; the key is a NUL-terminated string for the call.
        let rc = unsafe { (self.lib.set_int)(self.h, k.as_ptr(), value) };
        self.check(rc, &format!("setInt {key}"))
    }

    /// Sets a float setting (`setFloat`); see [`Emulator::set_int`].
    pub fn set_float(&mut self, key: &str, value: f32) -> EnvResult<()> {
        let k = cstring(key)?;
        // SAFETY: as in `set_int`.
        let rc = unsafe { (self.lib.set_float)(self.h, k.as_ptr(), value) };
        self.check(rc, &format!("setFloat {key}"))
    }

    /// Sets a boolean setting (`setBool`); see [`Emulator::set_int`].
    pub fn set_bool(&mut self, key: &str, value: bool) -> EnvResult<()> {
        let k = cstring(key)?;
        // SAFETY: as in `set_int`.
        let rc = unsafe { (self.lib.set_bool)(self.h, k.as_ptr(), c_int::from(value)) };
        self.check(rc, &format!("setBool {key}"))
    }

    /// Sets a string setting (`setString`); see [`Emulator::set_int`].
    pub fn set_string(&mut self, key: &str, value: &str) -> EnvResult<()> {
        let (k, v) = (cstring(key)?, cstring(value)?);
        // SAFETY: as in `set_int`; both strings live for the call.
        let rc = unsafe { (self.lib.set_string)(self.h, k.as_ptr(), v.as_ptr()) };
        self.check(rc, &format!("setString {key}"))
    }

    /// An integer setting (`getInt`; -1 for a key ALE does not have).
    pub fn get_int(&self, key: &str) -> EnvResult<i32> {
        let k = cstring(key)?;
        let mut out: c_int = 0;
        // SAFETY: the handle is live; `out` is a valid place for one int.
        let rc = unsafe { (self.lib.get_int)(self.h, k.as_ptr(), &mut out) };
        self.check(rc, &format!("getInt {key}"))?;
        Ok(out)
    }

    /// A float setting (`getFloat`; -1 for a key ALE does not have).
    pub fn get_float(&self, key: &str) -> EnvResult<f32> {
        let k = cstring(key)?;
        let mut out = 0f32;
        // SAFETY: as in `get_int`.
        let rc = unsafe { (self.lib.get_float)(self.h, k.as_ptr(), &mut out) };
        self.check(rc, &format!("getFloat {key}"))?;
        Ok(out)
    }

    /// Loads the ROM again with the current settings (`loadROM`), as the settings need
    /// to take effect; the game is reset, and mode and difficulty are the game's
    /// defaults again.
    pub fn load_rom(&mut self) -> EnvResult<()> {
        let path = CString::new(self.rom.as_os_str().as_bytes()).map_err(|_| {
            EnvError::Native(format!("ROM path {} holds a NUL byte", self.rom.display()))
        })?;
        // SAFETY: the handle is live; the path is a NUL-terminated string for the call.
        let rc = unsafe { (self.lib.load_rom)(self.h, path.as_ptr()) };
        self.check(rc, "loadROM")?;
        self.after_load()
    }

    /// What a loaded ROM fixes: the screen size and the action sets.
    fn after_load(&mut self) -> EnvResult<()> {
        // SAFETY: the handle is live and has a ROM.
        let (w, h) = unsafe {
            (
                (self.lib.screen_width)(self.h),
                (self.lib.screen_height)(self.h),
            )
        };
        self.width = usize::try_from(w).unwrap_or(0);
        self.height = usize::try_from(h).unwrap_or(0);
        self.minimal = self
            .list(self.lib.minimal_action_set, "getMinimalActionSet")?
            .into_iter()
            .map(|a| a as u8)
            .collect();
        self.legal = self
            .list(self.lib.legal_action_set, "getLegalActionSet")?
            .into_iter()
            .map(|a| a as u8)
            .collect();
        Ok(())
    }

    fn list(
        &self,
        f: unsafe extern "C" fn(Handle, *mut c_int, c_int) -> c_int,
        what: &str,
    ) -> EnvResult<Vec<u32>> {
        let mut out = vec![0 as c_int; 64];
        loop {
            let cap = c_int::try_from(out.len()).unwrap_or(c_int::MAX);
            // SAFETY: the handle is live; `out` has room for `cap` ints.
            let n = unsafe { f(self.h, out.as_mut_ptr(), cap) };
            let n = usize::try_from(n).map_err(|_| self.error(what))?;
            if n <= out.len() {
                out.truncate(n);
                return Ok(out.into_iter().map(|v| v as u32).collect());
            }
            out.resize(n, 0);
        }
    }

    /// Seeds ALE's generator and loads the ROM again, keeping mode and difficulty, as
    /// ale-py's `AtariEnv.reset(seed=...)` does (`seed_game` then `load_game`); the
    /// seeded episode starts at the next [`Emulator::reset_game`].
    pub fn seed(&mut self, seed: u32) -> EnvResult<()> {
        // SAFETY: the handle is live and has a ROM.
        let rc = unsafe { (self.lib.seed)(self.h, seed as i32) };
        self.check(rc, "seed")?;
        self.after_load()
    }

    /// Starts a new episode (`reset_game`): ALE's 60 no-op frames, the console's reset
    /// and the game's own starting actions.
    pub fn reset_game(&mut self) -> EnvResult<()> {
        // SAFETY: the handle is live and has a ROM.
        let rc = unsafe { (self.lib.reset_game)(self.h) };
        self.check(rc, "reset_game")
    }

    /// One emulator frame with `action` (an `ale::Action`, `0..18`) and the paddle
    /// strength (1 for joystick games); returns the frame's reward. Sticky actions apply
    /// per frame; after the episode is over ALE emulates nothing and returns 0.
    pub fn act(&mut self, action: u8, paddle_strength: f32) -> EnvResult<i32> {
        if usize::from(action) >= NUM_ACTIONS {
            return Err(EnvError::InvalidAction(format!(
                "ALE action {action} is not below {NUM_ACTIONS}"
            )));
        }
        // SAFETY: the handle is live and has a ROM; the action is a player-A action.
        Ok(unsafe { (self.lib.act)(self.h, c_int::from(action), paddle_strength) })
    }

    /// Whether the episode is over: the game ended, or (`with_truncation`) it was cut.
    pub fn game_over(&self, with_truncation: bool) -> bool {
        // SAFETY: the handle is live.
        unsafe { (self.lib.game_over)(self.h, c_int::from(with_truncation)) != 0 }
    }

    /// Whether the episode was cut (`max_num_frames_per_episode` reached).
    pub fn game_truncated(&self) -> bool {
        // SAFETY: the handle is live.
        unsafe { (self.lib.game_truncated)(self.h) != 0 }
    }

    /// The lives left, as the game's ROM settings read them from RAM.
    pub fn lives(&self) -> i32 {
        // SAFETY: the handle is live.
        unsafe { (self.lib.lives)(self.h) }
    }

    /// Frames emulated since the ROM was loaded.
    pub fn frame_number(&self) -> i32 {
        // SAFETY: the handle is live.
        unsafe { (self.lib.frame_number)(self.h) }
    }

    /// Frames emulated since the episode began.
    pub fn episode_frame_number(&self) -> i32 {
        // SAFETY: the handle is live.
        unsafe { (self.lib.episode_frame_number)(self.h) }
    }

    /// Screen width in pixels (160).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Screen height in pixels (210 for most games).
    pub fn height(&self) -> usize {
        self.height
    }

    /// The screen as `height x width x 3` RGB bytes, row-major, into `dst` (exactly that long).
    pub fn screen_rgb(&self, dst: &mut [u8]) -> EnvResult<()> {
        self.screen(dst, 3, self.lib.screen_rgb, "getScreenRGB")
    }

    /// The screen as `height x width` luminance bytes into `dst` (exactly that long).
    pub fn screen_grayscale(&self, dst: &mut [u8]) -> EnvResult<()> {
        self.screen(dst, 1, self.lib.screen_grayscale, "getScreenGrayscale")
    }

    /// The screen as `height x width` palette indices (what the TIA drew) into `dst`
    /// (exactly that long); [`Emulator::grayscale_palette`] turns them into
    /// [`Emulator::screen_grayscale`]'s bytes.
    pub fn screen_indices(&self, dst: &mut [u8]) -> EnvResult<()> {
        self.screen(dst, 1, self.lib.screen_indices, "getScreen")
    }

    /// The luminance [`Emulator::screen_grayscale`] gives each palette index.
    pub fn grayscale_palette(&self) -> EnvResult<[u8; 256]> {
        let mut out = [0u8; 256];
        // SAFETY: the handle is live; `out` has the 256 bytes the shim writes.
        let rc = unsafe { (self.lib.grayscale_palette)(self.h, out.as_mut_ptr(), out.len()) };
        self.check(rc, "grayscale palette")?;
        Ok(out)
    }

    fn screen(
        &self,
        dst: &mut [u8],
        channels: usize,
        f: unsafe extern "C" fn(Handle, *mut u8, usize) -> c_int,
        what: &str,
    ) -> EnvResult<()> {
        let want = self.width * self.height * channels;
        if dst.len() != want {
            return Err(EnvError::Native(format!(
                "ALE {what}: buffer of {} bytes, expected {want}",
                dst.len()
            )));
        }
        // SAFETY: the handle is live; `dst` has exactly the bytes the shim writes.
        let rc = unsafe { f(self.h, dst.as_mut_ptr(), dst.len()) };
        self.check(rc, what)
    }

    /// The console's 128 bytes of RAM.
    pub fn ram(&self) -> EnvResult<[u8; RAM_BYTES]> {
        let mut out = [0u8; RAM_BYTES];
        // SAFETY: the handle is live; `out` has the 128 bytes the shim writes.
        let rc = unsafe { (self.lib.ram)(self.h, out.as_mut_ptr(), out.len()) };
        self.check(rc, "getRAM")?;
        Ok(out)
    }

    /// The game's minimal action set (`getMinimalActionSet`), as `ale::Action`s.
    pub fn minimal_action_set(&self) -> &[u8] {
        &self.minimal
    }

    /// The legal action set (`getLegalActionSet`): all 18 actions but for a game that
    /// declares some illegal (Lost Luggage and Skiing, without fire: 9).
    pub fn legal_action_set(&self) -> &[u8] {
        &self.legal
    }

    /// The game's modes (`getAvailableModes`).
    pub fn available_modes(&self) -> EnvResult<Vec<u32>> {
        self.list(self.lib.available_modes, "getAvailableModes")
    }

    /// The game's difficulties (`getAvailableDifficulties`).
    pub fn available_difficulties(&self) -> EnvResult<Vec<u32>> {
        self.list(self.lib.available_difficulties, "getAvailableDifficulties")
    }

    /// Sets the mode (`setMode`), from the next [`Emulator::reset_game`]; a mode the game
    /// does not have is an error.
    pub fn set_mode(&mut self, mode: u32) -> EnvResult<()> {
        let m = c_int::try_from(mode)
            .map_err(|_| EnvError::Native(format!("ALE mode {mode} is out of range")))?;
        // SAFETY: the handle is live and has a ROM.
        let rc = unsafe { (self.lib.set_mode)(self.h, m) };
        self.check(rc, &format!("setMode {mode}"))
    }

    /// Sets the difficulty (`setDifficulty`), from the next [`Emulator::reset_game`]; a
    /// difficulty the game does not have is an error.
    pub fn set_difficulty(&mut self, difficulty: u32) -> EnvResult<()> {
        let d = c_int::try_from(difficulty).map_err(|_| {
            EnvError::Native(format!("ALE difficulty {difficulty} is out of range"))
        })?;
        // SAFETY: the handle is live and has a ROM.
        let rc = unsafe { (self.lib.set_difficulty)(self.h, d) };
        self.check(rc, &format!("setDifficulty {difficulty}"))
    }

    /// The ROM file this emulator runs.
    pub fn rom(&self) -> &Path {
        &self.rom
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // SAFETY: the handle came from volley_ale_new and is freed exactly once.
        unsafe { (self.lib.free)(self.h) };
    }
}
