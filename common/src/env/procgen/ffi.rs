//! procgen's `libenv.so`, loaded at run time: the C ABI of gym3's `libenv.h`
//! (LIBENV_VERSION 1) and a safe owner of one `libenv_env`.
//!
//! The library stays loaded for the rest of the process once loaded: it reads its
//! assets folder only when the first env of the process is made, and it links Qt,
//! which must not be unloaded while its threads and statics are alive.

use std::ffi::{c_char, c_int, c_void};
use std::path::Path;
use std::sync::OnceLock;

use super::super::{EnvError, EnvResult};

const MAX_NAME_LEN: usize = 128;
const MAX_NDIM: usize = 16;

/// `enum libenv_dtype`.
pub const DTYPE_UINT8: c_int = 1;
pub const DTYPE_INT32: c_int = 2;

/// `enum libenv_space_name`.
pub const SPACE_OBSERVATION: c_int = 1;
pub const SPACE_ACTION: c_int = 2;
pub const SPACE_INFO: c_int = 3;

/// `struct libenv_tensortype` (212 bytes); `low` and `high` are 4-byte unions.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TensorType {
    pub name: [c_char; MAX_NAME_LEN],
    pub scalar_type: c_int,
    pub dtype: c_int,
    pub shape: [c_int; MAX_NDIM],
    pub ndim: c_int,
    pub low: u32,
    pub high: u32,
}

impl TensorType {
    fn zeroed() -> Self {
        TensorType {
            name: [0; MAX_NAME_LEN],
            scalar_type: 0,
            dtype: 0,
            shape: [0; MAX_NDIM],
            ndim: 0,
            low: 0,
            high: 0,
        }
    }

    pub fn name(&self) -> String {
        let bytes: Vec<u8> = self
            .name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn dims(&self) -> Vec<c_int> {
        let n = usize::try_from(self.ndim).unwrap_or(0).min(MAX_NDIM);
        self.shape[..n].to_vec()
    }
}

/// `struct libenv_option` (144 bytes).
#[repr(C)]
#[derive(Debug)]
pub struct LibenvOption {
    pub name: [c_char; MAX_NAME_LEN],
    pub dtype: c_int,
    pub count: c_int,
    pub data: *mut c_void,
}

/// `struct libenv_options`, passed by value to `libenv_make`.
#[repr(C)]
#[derive(Debug)]
pub struct LibenvOptions {
    pub items: *mut LibenvOption,
    pub count: c_int,
}

/// `struct libenv_buffers`: arrays of pointers indexed `space_idx * num_envs + env_idx`.
#[repr(C)]
#[derive(Debug)]
pub struct LibenvBuffers {
    pub ob: *mut *mut c_void,
    pub rew: *mut f32,
    pub first: *mut u8,
    pub info: *mut *mut c_void,
    pub ac: *mut *mut c_void,
}

type VersionFn = unsafe extern "C" fn() -> c_int;
type MakeFn = unsafe extern "C" fn(c_int, LibenvOptions) -> *mut c_void;
type TensorTypesFn = unsafe extern "C" fn(*mut c_void, c_int, *mut TensorType) -> c_int;
type SetBuffersFn = unsafe extern "C" fn(*mut c_void, *mut LibenvBuffers);
type EnvFn = unsafe extern "C" fn(*mut c_void);

/// The loaded library and its entry points.
pub struct Lib {
    /// Keeps the entry points below valid; never dropped (lives in a static).
    _lib: libloading::Library,
    make: MakeFn,
    tensortypes: TensorTypesFn,
    set_buffers: SetBuffersFn,
    observe: EnvFn,
    act: EnvFn,
    close: EnvFn,
}

impl std::fmt::Debug for Lib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lib").finish_non_exhaustive()
    }
}

static LIB: OnceLock<Lib> = OnceLock::new();

/// The library in `dir` (`libenv.so` and `assets/`), loaded on first use; both must
/// exist even when it is already loaded.
pub fn load(dir: &Path) -> EnvResult<&'static Lib> {
    let so = dir.join("libenv.so");
    let missing = |what: &str, path: &Path| EnvError::MissingDependency {
        what: what.to_string(),
        path: path.display().to_string(),
    };
    if !so.is_file() {
        return Err(missing("procgen's libenv.so", &so));
    }
    if !dir.join("assets").is_dir() {
        return Err(missing("procgen's assets folder", &dir.join("assets")));
    }
    let native =
        |e: libloading::Error| EnvError::Native(format!("cannot load {}: {e}", so.display()));
    // SAFETY: loading runs the library's static initialisers (Qt, the game registry),
    // which have no preconditions.
    let lib = unsafe { open(&so) }.map_err(native)?;
    // SAFETY: the symbol types are those of gym3's libenv.h, LIBENV_VERSION 1; the
    // version is checked before anything else is called.
    let loaded = unsafe {
        let version: VersionFn = *lib.get::<VersionFn>(b"libenv_version\0").map_err(native)?;
        let v = version();
        if v != 1 {
            return Err(EnvError::Native(format!(
                "{} has libenv version {v}, expected 1 (procgen 0.10.7)",
                so.display()
            )));
        }
        Lib {
            make: *lib.get::<MakeFn>(b"libenv_make\0").map_err(native)?,
            tensortypes: *lib
                .get::<TensorTypesFn>(b"libenv_get_tensortypes\0")
                .map_err(native)?,
            set_buffers: *lib
                .get::<SetBuffersFn>(b"libenv_set_buffers\0")
                .map_err(native)?,
            observe: *lib.get::<EnvFn>(b"libenv_observe\0").map_err(native)?,
            act: *lib.get::<EnvFn>(b"libenv_act\0").map_err(native)?,
            close: *lib.get::<EnvFn>(b"libenv_close\0").map_err(native)?,
            _lib: lib,
        }
    };
    // A concurrent loader may have won; its copy is the same refcounted handle.
    Ok(LIB.get_or_init(|| loaded))
}

/// Opens the library as gym3 does: `RTLD_NOW | RTLD_LOCAL`, plus `RTLD_DEEPBIND` on
/// Linux so that its bundled Qt and C++ runtime symbols win over any the process
/// already has (libtorch, another Qt).
///
/// # Safety
/// Runs the library's initialisers.
unsafe fn open(path: &Path) -> Result<libloading::Library, libloading::Error> {
    #[cfg(target_os = "linux")]
    {
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        /// glibc's `RTLD_DEEPBIND` (dlfcn.h).
        const RTLD_DEEPBIND: c_int = 0x0008;
        // SAFETY: per this function's contract.
        unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND) }.map(Into::into)
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: per this function's contract.
        unsafe { libloading::Library::new(path) }
    }
}

/// The value of one option.
#[derive(Debug, Clone)]
pub enum OptValue {
    /// UINT8, count = byte length, no NUL.
    Str(String),
    /// UINT8, count 1, 0 or 1.
    Bool(bool),
    /// INT32, count 1.
    Int(i32),
}

/// Options in the layout `libenv_make` reads; owns the data the items point to.
#[derive(Debug)]
pub struct OptionList {
    items: Vec<LibenvOption>,
    /// Backing storage of every item's `data` (boxed, so the addresses are stable).
    _data: Vec<Box<[u8]>>,
}

impl OptionList {
    pub fn new(opts: &[(&str, OptValue)]) -> EnvResult<Self> {
        let mut items = Vec::with_capacity(opts.len());
        let mut data: Vec<Box<[u8]>> = Vec::with_capacity(opts.len());
        for (name, value) in opts {
            if name.len() >= MAX_NAME_LEN {
                return Err(EnvError::Native(format!(
                    "option name '{name}' is too long"
                )));
            }
            let (dtype, count, mut bytes): (c_int, usize, Box<[u8]>) = match value {
                OptValue::Str(s) => (DTYPE_UINT8, s.len(), s.as_bytes().into()),
                OptValue::Bool(b) => (DTYPE_UINT8, 1, Box::new([u8::from(*b)])),
                OptValue::Int(i) => (DTYPE_INT32, 1, Box::new(i.to_ne_bytes())),
            };
            let count = c_int::try_from(count)
                .map_err(|_| EnvError::Native(format!("option '{name}' is too long")))?;
            let mut cname = [0 as c_char; MAX_NAME_LEN];
            for (d, s) in cname.iter_mut().zip(name.bytes()) {
                *d = s as c_char;
            }
            items.push(LibenvOption {
                name: cname,
                dtype,
                count,
                data: bytes.as_mut_ptr().cast(),
            });
            data.push(bytes);
        }
        Ok(OptionList { items, _data: data })
    }
}

/// Bytes of one 64x64x3 observation.
pub const OBS_BYTES: usize = 64 * 64 * 3;
/// Side of the full-size frames of `render_human` (procgen's `RENDER_RES`).
pub const RENDER_RES: usize = 512;
/// Bytes of one 512x512x3 `rgb` info.
pub const RENDER_BYTES: usize = RENDER_RES * RENDER_RES * 3;

/// Where envs write their steps: the first row of each buffer handed to
/// `libenv_set_buffers`; env `i` uses row `i` (observations: `OBS_BYTES` per row).
#[derive(Debug, Clone, Copy)]
pub struct EnvBuffers {
    /// 64x64x3 u8 observation.
    pub obs: *mut u8,
    pub reward: *mut f32,
    pub first: *mut u8,
    /// i32 action, read by `act`.
    pub action: *mut i32,
    pub prev_level_seed: *mut i32,
    pub prev_level_complete: *mut u8,
    pub level_seed: *mut i32,
    /// 512x512x3 u8 `rgb` info (`RENDER_BYTES` per row), for envs made with
    /// `render_human`; null for the others.
    pub rgb: *mut u8,
}

/// One `libenv_env` (one or more games), closed on drop.
pub struct Instance {
    lib: &'static Lib,
    env: *mut c_void,
}

// SAFETY: a libenv env made with num_threads=0 has no thread affinity: procgen itself
// steps games on arbitrary worker threads. An `Instance` is used by one thread at a time.
unsafe impl Send for Instance {}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("env", &self.env).finish()
    }
}

impl Instance {
    /// Makes `num` envs with `options` (already validated: the library aborts the process
    /// on a bad or unconsumed option) and checks its spaces; `render_human` says whether
    /// the options ask for the full-size `rgb` info.
    pub fn make(
        lib: &'static Lib,
        num: usize,
        options: &mut OptionList,
        render_human: bool,
    ) -> EnvResult<Instance> {
        let num =
            c_int::try_from(num).map_err(|_| EnvError::Native(format!("too many envs: {num}")))?;
        let count = c_int::try_from(options.items.len())
            .map_err(|_| EnvError::Native("too many options".into()))?;
        let opts = LibenvOptions {
            items: options.items.as_mut_ptr(),
            count,
        };
        // SAFETY: the items and their data live in `options` for the whole call; the
        // library copies what it keeps.
        let env = unsafe { (lib.make)(num, opts) };
        if env.is_null() {
            return Err(EnvError::Native("libenv_make returned null".into()));
        }
        let inst = Instance { lib, env };
        inst.check_spaces(render_human)?;
        Ok(inst)
    }

    fn types(&self, space: c_int) -> Vec<TensorType> {
        // SAFETY: a null output pointer asks for the count only.
        let n = unsafe { (self.lib.tensortypes)(self.env, space, std::ptr::null_mut()) };
        let mut out = vec![TensorType::zeroed(); usize::try_from(n).unwrap_or(0)];
        if !out.is_empty() {
            // SAFETY: `out` has room for the `n` types the library reported.
            unsafe { (self.lib.tensortypes)(self.env, space, out.as_mut_ptr()) };
        }
        out
    }

    /// The buffers of [`EnvBuffers`] assume procgen 0.10.7's spaces: check them.
    fn check_spaces(&self, render_human: bool) -> EnvResult<()> {
        let sig = |t: &TensorType| (t.name(), t.dtype, t.dims());
        let got = (
            self.types(SPACE_OBSERVATION)
                .iter()
                .map(sig)
                .collect::<Vec<_>>(),
            self.types(SPACE_ACTION).iter().map(sig).collect::<Vec<_>>(),
            self.types(SPACE_INFO).iter().map(sig).collect::<Vec<_>>(),
        );
        let mut infos = vec![
            ("prev_level_seed".to_string(), DTYPE_INT32, vec![]),
            ("prev_level_complete".to_string(), DTYPE_UINT8, vec![]),
            ("level_seed".to_string(), DTYPE_INT32, vec![]),
        ];
        if render_human {
            let side = RENDER_RES as c_int;
            infos.push(("rgb".to_string(), DTYPE_UINT8, vec![side, side, 3]));
        }
        let want = (
            vec![("rgb".to_string(), DTYPE_UINT8, vec![64, 64, 3])],
            vec![("action".to_string(), DTYPE_INT32, vec![])],
            infos,
        );
        if got != want {
            return Err(EnvError::Native(format!(
                "unexpected libenv spaces {got:?}: expected those of procgen 0.10.7"
            )));
        }
        Ok(())
    }

    /// Points the `num` games of this env at rows `0..num` of `bufs`; each game
    /// resets and writes its first observation (at once with num_threads=0, else on
    /// libenv's threads: call [`Instance::observe`] before reading).
    ///
    /// # Safety
    /// `num` is the count this env was made with, and rows `0..num` of every buffer in
    /// `bufs` stay valid, and are touched by nobody else while this env is stepped,
    /// until the env is dropped.
    pub unsafe fn set_buffers(&mut self, bufs: EnvBuffers, num: usize) {
        let mut ob: Vec<*mut c_void> = (0..num)
            .map(|i| bufs.obs.wrapping_add(i * OBS_BYTES).cast())
            .collect();
        let mut ac: Vec<*mut c_void> = (0..num)
            .map(|i| bufs.action.wrapping_add(i).cast())
            .collect();
        // Space-major: every env's prev_level_seed, then prev_level_complete, then
        // level_seed, then (render_human) rgb.
        let mut info: Vec<*mut c_void> = Vec::with_capacity(4 * num);
        info.extend((0..num).map(|i| bufs.prev_level_seed.wrapping_add(i).cast::<c_void>()));
        info.extend((0..num).map(|i| bufs.prev_level_complete.wrapping_add(i).cast::<c_void>()));
        info.extend((0..num).map(|i| bufs.level_seed.wrapping_add(i).cast::<c_void>()));
        if !bufs.rgb.is_null() {
            info.extend((0..num).map(|i| bufs.rgb.wrapping_add(i * RENDER_BYTES).cast::<c_void>()));
        }
        let mut b = LibenvBuffers {
            ob: ob.as_mut_ptr(),
            rew: bufs.reward,
            first: bufs.first,
            info: info.as_mut_ptr(),
            ac: ac.as_mut_ptr(),
        };
        // SAFETY: the pointer arrays are copied by the library during the call; the
        // buffers they point to are valid per this function's contract.
        unsafe { (self.lib.set_buffers)(self.env, &mut b) };
    }

    /// Waits until libenv's threads (if any) have finished the last reset or step, then,
    /// for envs made with `render_human`, draws every game's current state into its 512x512
    /// `rgb` info (procgen's `VecGame::observe`, which needs 1 MiB of the calling thread's
    /// stack for that).
    ///
    /// # Safety
    /// [`Instance::set_buffers`] was called and its buffers are still valid.
    pub unsafe fn observe(&mut self) {
        // SAFETY: per this function's contract.
        unsafe { (self.lib.observe)(self.env) };
    }

    /// Steps the games of an env made with `num_threads=0`: writes the next observations,
    /// rewards, first flags and infos (all but `rgb`) before returning, without waiting
    /// for or drawing anything else.
    ///
    /// # Safety
    /// [`Instance::set_buffers`] was called and its buffers are still valid; the env was
    /// made with `num_threads=0`.
    pub unsafe fn act(&mut self) {
        // SAFETY: per this function's contract.
        unsafe { (self.lib.act)(self.env) };
    }

    /// Steps every game with its action in the action buffer and writes the next
    /// observations, rewards, first flags and infos into the buffers; returns when
    /// they are written.
    ///
    /// # Safety
    /// [`Instance::set_buffers`] was called and its buffers are still valid.
    pub unsafe fn step(&mut self) {
        // SAFETY: per this function's contract.
        unsafe {
            (self.lib.act)(self.env);
            (self.lib.observe)(self.env);
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: `env` came from libenv_make and is closed exactly once; with
        // num_threads=0 no stepping thread can still touch the buffers.
        unsafe { (self.lib.close)(self.env) };
    }
}
