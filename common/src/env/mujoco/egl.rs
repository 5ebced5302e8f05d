//! A headless OpenGL context on EGL, for MuJoCo's renderer: no window, no display server.
//!
//! `libEGL.so.1` is loaded at run time, so a machine without it builds and runs everything
//! else and only rendering fails, with an error that names `deploy/setup.sh`. The library is
//! opened `RTLD_GLOBAL`: MuJoCo's GL loader (`mjGladLoadGL`) looks `eglGetProcAddress` up in
//! the process's global symbols first, and only then walks the loaded libraries, where it
//! could pick a GLX `libGL` that another library (procgen's Qt) pulled in.
//!
//! One display per process, opened on first use and never terminated (terminating it would
//! destroy every env's context): the first EGL device that initialises and offers an OpenGL
//! pbuffer config (`EGL_EXT_platform_device`: a GPU driver's device first where there is one,
//! else Mesa's software device, llvmpipe), else Mesa's surfaceless platform
//! (`EGL_PLATFORM_SURFACELESS_MESA`). Each [`GlContext`] is one OpenGL context with a pbuffer
//! of the frame's size.
//!
//! Threads: an EGL context may be current on one thread at a time, and may move to another
//! thread once released. [`GlContext::with_current`] makes it current on the calling thread
//! for the length of one call and then puts back whatever was current before (usually
//! nothing), so the context is never left current anywhere and its owner can move between
//! threads.

use std::ffi::{c_char, c_void, CStr};
use std::sync::OnceLock;

use super::super::{EnvError, EnvResult};

type Display = *mut c_void;
type Config = *mut c_void;
type Context = *mut c_void;
type Surface = *mut c_void;
type Device = *mut c_void;
type Int = i32;
type Bool = u32;
type Enum = u32;

const NO_DISPLAY: Display = std::ptr::null_mut();
const NO_CONTEXT: Context = std::ptr::null_mut();
const NO_SURFACE: Surface = std::ptr::null_mut();
const FALSE: Bool = 0;

// EGL/egl.h and EGL/eglext.h.
const ALPHA_SIZE: Int = 0x3021;
const BLUE_SIZE: Int = 0x3022;
const GREEN_SIZE: Int = 0x3023;
const RED_SIZE: Int = 0x3024;
const DEPTH_SIZE: Int = 0x3025;
const STENCIL_SIZE: Int = 0x3026;
const SURFACE_TYPE: Int = 0x3033;
const NONE: Int = 0x3038;
const COLOR_BUFFER_TYPE: Int = 0x303F;
const RENDERABLE_TYPE: Int = 0x3040;
const VENDOR: Int = 0x3053;
const VERSION: Int = 0x3054;
const EXTENSIONS: Int = 0x3055;
const HEIGHT: Int = 0x3056;
const WIDTH: Int = 0x3057;
const DRAW: Int = 0x3059;
const READ: Int = 0x305A;
const RGB_BUFFER: Int = 0x308E;
const PBUFFER_BIT: Int = 0x0001;
const OPENGL_BIT: Int = 0x0008;
const OPENGL_API: Enum = 0x30A2;
const PLATFORM_DEVICE_EXT: Enum = 0x313F;
const PLATFORM_SURFACELESS_MESA: Enum = 0x31DD;

// GL/gl.h.
const GL_VENDOR: u32 = 0x1F00;
const GL_RENDERER: u32 = 0x1F01;
const GL_VERSION: u32 = 0x1F02;
const GL_EXTENSIONS: u32 = 0x1F03;

/// The library's soname, as Debian's `libegl1` (libglvnd) installs it.
pub const LIBRARY: &str = "libEGL.so.1";

type GetProcAddressFn = unsafe extern "C" fn(*const c_char) -> *mut c_void;
type GetErrorFn = unsafe extern "C" fn() -> Int;
type QueryStringFn = unsafe extern "C" fn(Display, Int) -> *const c_char;
type InitializeFn = unsafe extern "C" fn(Display, *mut Int, *mut Int) -> Bool;
type TerminateFn = unsafe extern "C" fn(Display) -> Bool;
type ChooseConfigFn = unsafe extern "C" fn(Display, *const Int, *mut Config, Int, *mut Int) -> Bool;
type BindApiFn = unsafe extern "C" fn(Enum) -> Bool;
type QueryApiFn = unsafe extern "C" fn() -> Enum;
type CreateContextFn = unsafe extern "C" fn(Display, Config, Context, *const Int) -> Context;
type CreatePbufferSurfaceFn = unsafe extern "C" fn(Display, Config, *const Int) -> Surface;
type MakeCurrentFn = unsafe extern "C" fn(Display, Surface, Surface, Context) -> Bool;
type GetCurrentContextFn = unsafe extern "C" fn() -> Context;
type GetCurrentSurfaceFn = unsafe extern "C" fn(Int) -> Surface;
type GetCurrentDisplayFn = unsafe extern "C" fn() -> Display;
type DestroyContextFn = unsafe extern "C" fn(Display, Context) -> Bool;
type DestroySurfaceFn = unsafe extern "C" fn(Display, Surface) -> Bool;
type QueryDevicesFn = unsafe extern "C" fn(Int, *mut Device, *mut Int) -> Bool;
type GetPlatformDisplayFn = unsafe extern "C" fn(Enum, *mut c_void, *const Int) -> Display;
type GlGetStringFn = unsafe extern "C" fn(u32) -> *const u8;

/// EGL's entry points.
struct Api {
    get_proc_address: GetProcAddressFn,
    get_error: GetErrorFn,
    query_string: QueryStringFn,
    initialize: InitializeFn,
    terminate: TerminateFn,
    choose_config: ChooseConfigFn,
    bind_api: BindApiFn,
    query_api: QueryApiFn,
    create_context: CreateContextFn,
    create_pbuffer_surface: CreatePbufferSurfaceFn,
    make_current: MakeCurrentFn,
    get_current_context: GetCurrentContextFn,
    get_current_surface: GetCurrentSurfaceFn,
    get_current_display: GetCurrentDisplayFn,
    destroy_context: DestroyContextFn,
    destroy_surface: DestroySurfaceFn,
}

impl Api {
    /// An extension's entry point, if the implementation has it.
    ///
    /// # Safety
    /// `F` is the function pointer type of `name`.
    unsafe fn extension<F: Copy>(&self, name: &CStr) -> Option<F> {
        // SAFETY: eglGetProcAddress takes any NUL-terminated name.
        let p = unsafe { (self.get_proc_address)(name.as_ptr()) };
        if p.is_null() {
            return None;
        }
        debug_assert_eq!(size_of::<F>(), size_of::<*mut c_void>());
        // SAFETY: per this function's contract, `p` is a function of type `F`.
        Some(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
    }

    /// A string of `display` (`NO_DISPLAY`: the client extensions), empty when there is none.
    fn string(&self, display: Display, name: Int) -> String {
        // SAFETY: eglQueryString returns null or a static NUL-terminated string.
        let p = unsafe { (self.query_string)(display, name) };
        if p.is_null() {
            // Clear the error a missing string leaves behind.
            // SAFETY: eglGetError has no preconditions.
            unsafe { (self.get_error)() };
            return String::new();
        }
        // SAFETY: non-null, NUL-terminated, owned by the library.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// The last EGL error, for messages.
    fn error(&self) -> String {
        // SAFETY: eglGetError has no preconditions.
        let e = unsafe { (self.get_error)() };
        format!("EGL error {e:#x}")
    }
}

/// The process's EGL display and the config every context uses.
pub struct Egl {
    /// Keeps the entry points valid; never dropped (lives in a static).
    _lib: libloading::Library,
    api: Api,
    display: Display,
    config: Config,
    /// Which display this is, for messages and tests.
    description: String,
}

// SAFETY: EGL implementations are required to be thread-safe, and a display and a config
// are handles valid on every thread; nothing here is mutated after initialisation.
unsafe impl Send for Egl {}
// SAFETY: as above.
unsafe impl Sync for Egl {}

impl std::fmt::Debug for Egl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egl")
            .field("display", &self.description)
            .finish_non_exhaustive()
    }
}

/// Why the display could not be opened: what is missing and where it was looked for, as
/// [`EnvError::MissingDependency`] reports it (naming `deploy/setup.sh`).
type OpenError = (String, String);

static EGL: OnceLock<Result<Egl, OpenError>> = OnceLock::new();

fn missing((what, path): &OpenError) -> EnvError {
    EnvError::MissingDependency {
        what: what.clone(),
        path: path.clone(),
    }
}

/// The process's display, opened on first use. A failure is remembered: later calls fail
/// at once with the same error.
pub fn egl() -> EnvResult<&'static Egl> {
    EGL.get_or_init(|| Egl::open(LIBRARY))
        .as_ref()
        .map_err(missing)
}

impl Egl {
    /// Which display renders: the EGL vendor and version and the device or platform.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The OpenGL vendor, renderer and version of the context current on this thread,
    /// checked against what MuJoCo's renderer needs (OpenGL 1.5 with
    /// `ARB_framebuffer_object` and `ARB_vertex_buffer_object`): MuJoCo ends the process
    /// when they are missing.
    ///
    /// # Safety
    /// One of this display's contexts is current on the calling thread (inside
    /// [`GlContext::with_current`]).
    pub unsafe fn check_current_gl(&self) -> EnvResult<String> {
        // SAFETY: glGetString has this type.
        let get: Option<GlGetStringFn> = unsafe { self.api.extension(c"glGetString") };
        let Some(get) = get else {
            return Err(EnvError::Native("EGL has no glGetString".into()));
        };
        let s = |name: u32| {
            // SAFETY: a current context answers glGetString with null or a static string.
            let p = unsafe { get(name) };
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: non-null and NUL-terminated.
                unsafe { CStr::from_ptr(p.cast()) }
                    .to_string_lossy()
                    .into_owned()
            }
        };
        let (vendor, renderer, version, extensions) = (
            s(GL_VENDOR),
            s(GL_RENDERER),
            s(GL_VERSION),
            s(GL_EXTENSIONS),
        );
        let about = format!("{vendor} {renderer}, OpenGL {version}");
        let number: Vec<u32> = version
            .split(|c: char| !c.is_ascii_digit())
            .take(2)
            .filter_map(|p| p.parse().ok())
            .collect();
        let at_least_1_5 =
            matches!(number.as_slice(), [major, minor] if (*major, *minor) >= (1, 5));
        let has = |e: &str| extensions.split_ascii_whitespace().any(|x| x == e);
        if !at_least_1_5 || !has("GL_ARB_framebuffer_object") || !has("GL_ARB_vertex_buffer_object")
        {
            return Err(EnvError::Native(format!(
                "MuJoCo's renderer needs OpenGL 1.5 with ARB_framebuffer_object and \
                 ARB_vertex_buffer_object; the EGL context has {about}"
            )));
        }
        Ok(about)
    }

    /// Loads `library` and opens a display (see the module docs).
    fn open(library: &str) -> Result<Egl, OpenError> {
        let no_lib = |e: String| {
            (
                format!("{library} (EGL, for rendering MuJoCo frames without a display)"),
                e,
            )
        };
        // SAFETY: loading libEGL runs its initialisers, which have no preconditions.
        let lib = unsafe { open_global(library) }.map_err(|e| no_lib(e.to_string()))?;
        let sym = |e: libloading::Error| no_lib(e.to_string());
        // SAFETY: the types are those of EGL 1.4's egl.h.
        let api = unsafe {
            Api {
                get_proc_address: *lib
                    .get::<GetProcAddressFn>(b"eglGetProcAddress\0")
                    .map_err(sym)?,
                get_error: *lib.get::<GetErrorFn>(b"eglGetError\0").map_err(sym)?,
                query_string: *lib.get::<QueryStringFn>(b"eglQueryString\0").map_err(sym)?,
                initialize: *lib.get::<InitializeFn>(b"eglInitialize\0").map_err(sym)?,
                terminate: *lib.get::<TerminateFn>(b"eglTerminate\0").map_err(sym)?,
                choose_config: *lib
                    .get::<ChooseConfigFn>(b"eglChooseConfig\0")
                    .map_err(sym)?,
                bind_api: *lib.get::<BindApiFn>(b"eglBindAPI\0").map_err(sym)?,
                query_api: *lib.get::<QueryApiFn>(b"eglQueryAPI\0").map_err(sym)?,
                create_context: *lib
                    .get::<CreateContextFn>(b"eglCreateContext\0")
                    .map_err(sym)?,
                create_pbuffer_surface: *lib
                    .get::<CreatePbufferSurfaceFn>(b"eglCreatePbufferSurface\0")
                    .map_err(sym)?,
                make_current: *lib.get::<MakeCurrentFn>(b"eglMakeCurrent\0").map_err(sym)?,
                get_current_context: *lib
                    .get::<GetCurrentContextFn>(b"eglGetCurrentContext\0")
                    .map_err(sym)?,
                get_current_surface: *lib
                    .get::<GetCurrentSurfaceFn>(b"eglGetCurrentSurface\0")
                    .map_err(sym)?,
                get_current_display: *lib
                    .get::<GetCurrentDisplayFn>(b"eglGetCurrentDisplay\0")
                    .map_err(sym)?,
                destroy_context: *lib
                    .get::<DestroyContextFn>(b"eglDestroyContext\0")
                    .map_err(sym)?,
                destroy_surface: *lib
                    .get::<DestroySurfaceFn>(b"eglDestroySurface\0")
                    .map_err(sym)?,
            }
        };
        let (display, config, description) = open_display(&api).map_err(|tried| {
            (
                "an EGL display with OpenGL (Mesa's libegl-mesa0 and libgl1-mesa-dri, or a GPU \
                 driver)"
                    .to_string(),
                format!("{library}: {tried}"),
            )
        })?;
        Ok(Egl {
            _lib: lib,
            api,
            display,
            config,
            description,
        })
    }
}

/// Opens `library` with `RTLD_NOW | RTLD_GLOBAL` (see the module docs).
///
/// # Safety
/// Runs the library's initialisers.
unsafe fn open_global(library: &str) -> Result<libloading::Library, libloading::Error> {
    #[cfg(unix)]
    {
        use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
        // SAFETY: per this function's contract.
        unsafe { Library::open(Some(library), RTLD_NOW | RTLD_GLOBAL) }.map(Into::into)
    }
    #[cfg(not(unix))]
    {
        // SAFETY: per this function's contract.
        unsafe { libloading::Library::new(library) }
    }
}

/// The attributes of the one config: 8-bit RGBA, 24-bit depth, 8-bit stencil, pbuffers,
/// desktop OpenGL. MuJoCo renders into its own offscreen framebuffer; the pbuffer only gives
/// the context a default framebuffer.
const CONFIG_ATTRIBS: [Int; 19] = [
    RED_SIZE,
    8,
    GREEN_SIZE,
    8,
    BLUE_SIZE,
    8,
    ALPHA_SIZE,
    8,
    DEPTH_SIZE,
    24,
    STENCIL_SIZE,
    8,
    COLOR_BUFFER_TYPE,
    RGB_BUFFER,
    SURFACE_TYPE,
    PBUFFER_BIT,
    RENDERABLE_TYPE,
    OPENGL_BIT,
    NONE,
];

/// Initialises `display` and picks its config, or says why not (and terminates it).
fn init_display(api: &Api, display: Display) -> Result<Config, String> {
    if display == NO_DISPLAY {
        return Err(format!("no display ({})", api.error()));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: `display` came from eglGetPlatformDisplay; the out pointers are valid.
    if unsafe { (api.initialize)(display, &mut major, &mut minor) } == FALSE {
        return Err(format!("eglInitialize failed ({})", api.error()));
    }
    let mut config: Config = std::ptr::null_mut();
    let mut n: Int = 0;
    // SAFETY: the attributes are NONE-terminated; room for one config.
    let ok =
        unsafe { (api.choose_config)(display, CONFIG_ATTRIBS.as_ptr(), &mut config, 1, &mut n) };
    if ok == FALSE || n < 1 || config.is_null() {
        let e = api.error();
        // SAFETY: `display` was initialised above and nothing was made on it.
        unsafe { (api.terminate)(display) };
        return Err(format!(
            "EGL {major}.{minor} has no OpenGL pbuffer config ({e})"
        ));
    }
    Ok(config)
}

/// The first display that works (see the module docs), or what was tried.
fn open_display(api: &Api) -> Result<(Display, Config, String), String> {
    let client = api.string(NO_DISPLAY, EXTENSIONS);
    let has = |ext: &str| client.split_ascii_whitespace().any(|e| e == ext);
    // SAFETY: the types are those of EGL_EXT_device_enumeration and EGL_EXT_platform_base.
    let (query_devices, platform_display) = unsafe {
        (
            api.extension::<QueryDevicesFn>(c"eglQueryDevicesEXT"),
            api.extension::<GetPlatformDisplayFn>(c"eglGetPlatformDisplayEXT"),
        )
    };
    let mut tried = Vec::new();
    let describe = |display: Display, what: &str| {
        format!(
            "{} EGL {} on {what}",
            api.string(display, VENDOR),
            api.string(display, VERSION)
        )
    };
    if let (true, Some(query), Some(get_display)) = (
        has("EGL_EXT_platform_device"),
        query_devices,
        platform_display,
    ) {
        let mut n: Int = 0;
        // SAFETY: a null array asks for the count.
        if unsafe { query(0, std::ptr::null_mut(), &mut n) } == FALSE {
            tried.push(format!("eglQueryDevicesEXT failed ({})", api.error()));
            n = 0;
        }
        let mut devices: Vec<Device> = vec![std::ptr::null_mut(); usize::try_from(n).unwrap_or(0)];
        if n > 0 {
            // SAFETY: `devices` has room for `n` handles.
            unsafe { query(n, devices.as_mut_ptr(), &mut n) };
            devices.truncate(usize::try_from(n).unwrap_or(0));
        }
        for (i, &device) in devices.iter().enumerate() {
            // SAFETY: `device` came from eglQueryDevicesEXT; no attributes.
            let display = unsafe { get_display(PLATFORM_DEVICE_EXT, device, std::ptr::null()) };
            match init_display(api, display) {
                Ok(config) => {
                    return Ok((display, config, describe(display, &format!("device {i}"))))
                }
                Err(e) => tried.push(format!("device {i}: {e}")),
            }
        }
        if devices.is_empty() {
            tried.push("no EGL devices".into());
        }
    }
    if let (true, Some(get_display)) = (has("EGL_MESA_platform_surfaceless"), platform_display) {
        // SAFETY: the surfaceless platform takes EGL_DEFAULT_DISPLAY (null); no attributes.
        let display = unsafe {
            get_display(
                PLATFORM_SURFACELESS_MESA,
                std::ptr::null_mut(),
                std::ptr::null(),
            )
        };
        match init_display(api, display) {
            Ok(config) => {
                return Ok((
                    display,
                    config,
                    describe(display, "the surfaceless platform"),
                ))
            }
            Err(e) => tried.push(format!("surfaceless platform: {e}")),
        }
    }
    if tried.is_empty() {
        tried.push(format!(
            "neither EGL_EXT_platform_device nor EGL_MESA_platform_surfaceless (client extensions: '{client}')"
        ));
    }
    Err(tried.join("; "))
}

/// What was current on this thread before [`GlContext::with_current`], put back after it.
struct Previous<'a> {
    api: &'a Api,
    bound_api: Enum,
    display: Display,
    draw: Surface,
    read: Surface,
    context: Context,
    /// The display to release our context from when nothing was current before.
    ours: Display,
}

impl Drop for Previous<'_> {
    fn drop(&mut self) {
        let a = self.api;
        // SAFETY: every handle was current on this thread when saved (or is a release); the
        // OpenGL API is bound, so a release releases our context.
        unsafe {
            if self.context == NO_CONTEXT {
                (a.make_current)(self.ours, NO_SURFACE, NO_SURFACE, NO_CONTEXT);
            }
            (a.bind_api)(self.bound_api);
            if self.context != NO_CONTEXT {
                (a.make_current)(self.display, self.draw, self.read, self.context);
            }
        }
    }
}

/// One OpenGL context and its pbuffer, destroyed on drop.
pub struct GlContext {
    egl: &'static Egl,
    context: Context,
    surface: Surface,
}

// SAFETY: an EGL context may be made current on any thread while it is current on no other.
// `with_current` (which takes `&mut self`) makes it current for one call and releases it
// before returning, so it is never current anywhere when the owner moves.
unsafe impl Send for GlContext {}

impl std::fmt::Debug for GlContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlContext")
            .field("display", &self.egl.description)
            .finish_non_exhaustive()
    }
}

impl GlContext {
    /// A context with a `width` x `height` pbuffer on the process's display.
    pub fn new(width: u32, height: u32) -> EnvResult<GlContext> {
        let egl = egl()?;
        let a = &egl.api;
        let native = |what: &str| EnvError::Native(format!("{what} ({})", a.error()));
        let (w, h) = (
            Int::try_from(width).unwrap_or(Int::MAX),
            Int::try_from(height).unwrap_or(Int::MAX),
        );
        let pbuffer = [WIDTH, w, HEIGHT, h, NONE];
        // SAFETY: the display and config are initialised; the attribute lists are
        // NONE-terminated; eglCreateContext makes a context of the API bound on this thread,
        // which is set to OpenGL here and put back after.
        unsafe {
            let before = (a.query_api)();
            if (a.bind_api)(OPENGL_API) == FALSE {
                return Err(native("EGL cannot bind the OpenGL API"));
            }
            let context = (a.create_context)(egl.display, egl.config, NO_CONTEXT, [NONE].as_ptr());
            (a.bind_api)(before);
            if context == NO_CONTEXT {
                return Err(native("eglCreateContext failed"));
            }
            let surface = (a.create_pbuffer_surface)(egl.display, egl.config, pbuffer.as_ptr());
            if surface == NO_SURFACE {
                (a.destroy_context)(egl.display, context);
                return Err(native("eglCreatePbufferSurface failed"));
            }
            Ok(GlContext {
                egl,
                context,
                surface,
            })
        }
    }

    /// The display this context is on.
    pub fn egl(&self) -> &'static Egl {
        self.egl
    }

    /// Runs `f` with this context current on the calling thread, then puts back what was
    /// current before (also when `f` panics).
    pub fn with_current<R>(&mut self, f: impl FnOnce() -> R) -> EnvResult<R> {
        let a = &self.egl.api;
        // SAFETY: the queries have no preconditions; the API is bound before the current
        // context is read, as EGL reports the context of the bound API.
        let previous = unsafe {
            let bound_api = (a.query_api)();
            (a.bind_api)(OPENGL_API);
            Previous {
                api: a,
                bound_api,
                display: (a.get_current_display)(),
                draw: (a.get_current_surface)(DRAW),
                read: (a.get_current_surface)(READ),
                context: (a.get_current_context)(),
                ours: self.egl.display,
            }
        };
        // SAFETY: our context and surface were made on this display; `&mut self` means no
        // other thread holds them.
        let ok =
            unsafe { (a.make_current)(self.egl.display, self.surface, self.surface, self.context) };
        if ok == FALSE {
            let e = EnvError::Native(format!("eglMakeCurrent failed ({})", a.error()));
            drop(previous);
            return Err(e);
        }
        let out = f();
        drop(previous);
        Ok(out)
    }
}

impl Drop for GlContext {
    fn drop(&mut self) {
        let (a, d) = (&self.egl.api, self.egl.display);
        // SAFETY: both were made on this display and are current nowhere (see `with_current`).
        unsafe {
            (a.destroy_surface)(d, self.surface);
            (a.destroy_context)(d, self.context);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_names_the_setup_script() {
        let e = missing(&Egl::open("libEGL-volley-not-here.so.1").unwrap_err());
        let msg = e.to_string();
        assert!(matches!(e, EnvError::MissingDependency { .. }), "{msg}");
        assert!(
            msg.contains("deploy/setup.sh") && msg.contains("libEGL-volley-not-here.so.1"),
            "{msg}"
        );
    }
}
