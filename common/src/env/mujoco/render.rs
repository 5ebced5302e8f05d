//! Frames of the MuJoCo tasks, drawn by MuJoCo's own OpenGL renderer (`mjv_updateScene`,
//! `mjr_render`, `mjr_readPixels` into the offscreen framebuffer) on a headless EGL context
//! ([`super::egl`]), as Gymnasium 1.4.0's `MujocoRenderer` draws `render_mode="rgb_array"`:
//! 480x480, the model's visual defaults (shadows, reflections, 4x multisampling), a scene of
//! at most 1000 geoms, fonts at 150%.
//!
//! Why not mujoco-rs's `renderer` feature: it renders headless on Linux too (glutin's EGL
//! device platform, no window), but its `MjrContext` and `MjRenderer` are `!Send` by design
//! (their GL objects must stay on the thread that made them), while an [`Env`] must be `Send`
//! ([`super::super::threaded::ThreadedVecEnv`] and the actor move envs between threads); it
//! also links glutin, winit's window-handle crates and a second `png`. Here the context is
//! made current inside each call and released before it returns, so an env with a renderer
//! stays `Send`, and libEGL is loaded at run time, so builds need nothing new.
//!
//! The camera. Gymnasium's v5 tasks render through a free camera (`mjCAMERA_FREE`,
//! azimuth 90: looking along +y at the robot's side) set up when the first frame is drawn:
//! `lookat` is the median of every geom's position, `distance` the model's extent, and then
//! the task's `DEFAULT_CAMERA_CONFIG` overrides them:
//!
//! | | distance | elevation | lookat |
//! |---|---|---|---|
//! | Hopper-v5 | 3.0 | -20 | (0, 0, 1.15) |
//! | HalfCheetah-v5 | 4.0 | -45 (MuJoCo's default) | median of the geom positions |
//! | Ant-v5 | 4.0 | -45 | median of the geom positions |
//!
//! Hopper's config also sets `trackbodyid = 2`, which a free camera ignores: in Gymnasium
//! the camera stays where it was set up and a running robot leaves the picture. Here the
//! camera follows the torso: `lookat` is Gymnasium's, computed at the model's reference
//! pose (`qpos0`), moved horizontally by how far the torso (body 1) is from where it is at
//! that pose (x for all three tasks, also y for Ant, which walks in the plane; the height
//! stays). At the start of an episode (the torso at its reference pose up to the reset
//! noise) the picture is Gymnasium's; later the robot stays in the middle.

use super::egl::GlContext;
use super::{ffi, MujocoTask, TORSO_BODY as TORSO};
use crate::env::{EnvError, EnvResult, Frame};

/// Gymnasium's `DEFAULT_SIZE` of MuJoCo frames.
pub const WIDTH: u32 = 480;
pub const HEIGHT: u32 = 480;
/// Gymnasium's `max_geom` for the scene.
const MAX_GEOM: i32 = 1000;

/// Gymnasium's camera of one task (its `DEFAULT_CAMERA_CONFIG` over `_init_camera`).
#[derive(Debug, Clone, Copy)]
struct CameraConfig {
    distance: f64,
    /// `None`: MuJoCo's default (-45).
    elevation: Option<f64>,
    /// `None`: the median of the geom positions.
    lookat: Option<[f64; 3]>,
    /// Whether the camera follows the torso in y as well as x.
    follow_y: bool,
}

fn camera_config(task: MujocoTask) -> CameraConfig {
    match task {
        MujocoTask::Hopper => CameraConfig {
            distance: 3.0,
            elevation: Some(-20.0),
            lookat: Some([0.0, 0.0, 1.15]),
            follow_y: false,
        },
        MujocoTask::HalfCheetah => CameraConfig {
            distance: 4.0,
            elevation: None,
            lookat: None,
            follow_y: false,
        },
        MujocoTask::Ant => CameraConfig {
            distance: 4.0,
            elevation: None,
            lookat: None,
            follow_y: true,
        },
    }
}

/// NumPy's median of `v` (the mean of the two middle values for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The camera's `lookat` at the reference pose and the torso's position there.
fn reference_view(
    model: &mujoco_rs::prelude::MjModel,
    cfg: &CameraConfig,
) -> EnvResult<([f64; 3], [f64; 3])> {
    let mut data = mujoco_rs::prelude::MjData::try_new(model)
        .map_err(|e| EnvError::Native(format!("mujoco could not allocate its data: {e}")))?;
    let m = model.ffi();
    let ngeom = usize::try_from(m.ngeom).unwrap_or(0);
    let nbody = usize::try_from(m.nbody).unwrap_or(0);
    if nbody <= TORSO {
        return Err(EnvError::Native("the model has no torso body".into()));
    }
    // SAFETY: a fresh mjData holds qpos0; mj_kinematics writes `xpos` (3 * nbody) and
    // `geom_xpos` (3 * ngeom), read below within those sizes.
    unsafe {
        let d = data.ffi_mut();
        ffi::mj_kinematics(m, d);
        let geoms = std::slice::from_raw_parts(d.geom_xpos, 3 * ngeom);
        let torso = std::slice::from_raw_parts(d.xpos.add(3 * TORSO), 3);
        let lookat = cfg.lookat.unwrap_or_else(|| {
            [0, 1, 2].map(|axis| median(geoms.iter().skip(axis).step_by(3).copied().collect()))
        });
        Ok((lookat, [torso[0], torso[1], torso[2]]))
    }
}

/// MuJoCo's scene and rendering context for one env, on its own GL context.
pub struct Renderer {
    /// The EGL context holding `context`'s GL objects; `drop` frees those with it current.
    gl: GlContext,
    scene: Box<ffi::mjvScene>,
    context: Box<ffi::mjrContext>,
    camera: ffi::mjvCamera,
    option: Box<ffi::mjvOption>,
    perturb: Box<ffi::mjvPerturb>,
    /// Gymnasium's `lookat` at the reference pose, and the torso's position there.
    lookat0: [f64; 3],
    torso0: [f64; 3],
    follow_y: bool,
    /// The OpenGL renderer and EGL display, for logs.
    about: String,
    /// `mjr_readPixels`' output, rows bottom to top.
    rgb: Vec<u8>,
}

// SAFETY: the scene's buffers are owned by this value alone; the GL objects of `context`
// live in `gl`'s EGL context, which is current only inside `&mut self` calls (see
// `GlContext`), so the renderer can move to another thread between calls.
unsafe impl Send for Renderer {}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("gl", &self.gl)
            .field("size", &(WIDTH, HEIGHT))
            .finish_non_exhaustive()
    }
}

impl Renderer {
    /// A renderer of `task` for `model`: an EGL context, MuJoCo's rendering context (the
    /// model's meshes and textures uploaded) and Gymnasium's camera.
    pub fn new(task: MujocoTask, model: &mujoco_rs::prelude::MjModel) -> EnvResult<Renderer> {
        let m = model.ffi();
        let (offw, offh) = (m.vis.global.offwidth, m.vis.global.offheight);
        if i64::from(offw) < i64::from(WIDTH) || i64::from(offh) < i64::from(HEIGHT) {
            // Gymnasium grows the model's buffer; the model here is shared and read-only.
            return Err(EnvError::Native(format!(
                "the model of {} has a {offw}x{offh} offscreen buffer, smaller than a \
                 {WIDTH}x{HEIGHT} frame",
                task.id()
            )));
        }
        let cfg = camera_config(task);
        let (lookat0, torso0) = reference_view(model, &cfg)?;
        let mut gl = GlContext::new(WIDTH, HEIGHT)?;
        // SAFETY: the default functions initialise every field of these plain C structs.
        let (camera, option, perturb) = unsafe {
            let mut camera = std::mem::MaybeUninit::<ffi::mjvCamera>::uninit();
            ffi::mjv_defaultCamera(camera.as_mut_ptr());
            let mut option = Box::<ffi::mjvOption>::new_uninit();
            ffi::mjv_defaultOption(option.as_mut_ptr());
            let mut perturb = Box::<ffi::mjvPerturb>::new_uninit();
            ffi::mjv_defaultPerturb(perturb.as_mut_ptr());
            (
                camera.assume_init(),
                option.assume_init(),
                perturb.assume_init(),
            )
        };
        let egl = gl.egl();
        let made = gl.with_current(|| -> EnvResult<_> {
            // SAFETY: the EGL context is current on this thread (checked first to be one
            // MuJoCo can use, so that mjr_makeContext does not end the process); the scene
            // and context are initialised by their default functions before use.
            unsafe {
                let about = egl.check_current_gl()?;
                let mut scene = Box::<ffi::mjvScene>::new_uninit();
                ffi::mjv_defaultScene(scene.as_mut_ptr());
                let mut scene = scene.assume_init();
                ffi::mjv_makeScene(m, &mut *scene, MAX_GEOM);
                let mut context = Box::<ffi::mjrContext>::new_uninit();
                ffi::mjr_defaultContext(context.as_mut_ptr());
                let mut context = context.assume_init();
                ffi::mjr_makeContext(m, &mut *context, ffi::mjtFontScale::mjFONTSCALE_150 as i32);
                ffi::mjr_setBuffer(ffi::mjtFramebuffer::mjFB_OFFSCREEN as i32, &mut *context);
                Ok((scene, context, about))
            }
        })?;
        let (scene, context, about) = made?;
        let mut camera = camera;
        camera.type_ = ffi::mjtCamera::mjCAMERA_FREE as i32;
        camera.fixedcamid = -1;
        camera.distance = cfg.distance;
        if let Some(e) = cfg.elevation {
            camera.elevation = e;
        }
        camera.lookat = lookat0;
        Ok(Renderer {
            gl,
            scene,
            context,
            camera,
            option,
            perturb,
            lookat0,
            torso0,
            follow_y: cfg.follow_y,
            about: format!("{about} ({})", egl.description()),
            rgb: vec![0; WIDTH as usize * HEIGHT as usize * 3],
        })
    }

    /// Which OpenGL renderer on which EGL display draws the frames.
    pub fn about(&self) -> &str {
        &self.about
    }

    /// The frame of the state in `d`, whose torso is at `torso` (its `xpos`). It shows
    /// the positions MuJoCo last computed, as Gymnasium's frames do: after `mj_step`, those
    /// at the start of the step's last substep.
    ///
    /// # Safety
    /// `m` and `d` are the live model this renderer was made for and a data of it.
    pub unsafe fn render(
        &mut self,
        m: *const ffi::mjModel,
        d: *mut ffi::mjData,
        torso: [f64; 3],
    ) -> EnvResult<Frame> {
        self.camera.lookat[0] = self.lookat0[0] + (torso[0] - self.torso0[0]);
        if self.follow_y {
            self.camera.lookat[1] = self.lookat0[1] + (torso[1] - self.torso0[1]);
        }
        let viewport = ffi::mjrRect {
            left: 0,
            bottom: 0,
            width: WIDTH as i32,
            height: HEIGHT as i32,
        };
        let Renderer {
            gl,
            scene,
            context,
            camera,
            option,
            perturb,
            rgb,
            ..
        } = self;
        gl.with_current(|| {
            // SAFETY: the GL context holding `context`'s objects is current; `m` and `d`
            // belong to the model the scene and context were made for (this function's
            // contract); `rgb` holds WIDTH * HEIGHT * 3 bytes, the viewport's size.
            unsafe {
                ffi::mjv_updateScene(
                    m,
                    d,
                    &**option,
                    &**perturb,
                    camera,
                    ffi::mjtCatBit::mjCAT_ALL as i32,
                    &mut **scene,
                );
                ffi::mjr_render(viewport, &mut **scene, &**context);
                ffi::mjr_readPixels(rgb.as_mut_ptr(), std::ptr::null_mut(), viewport, &**context);
            }
        })?;
        Frame::from_bottom_up(WIDTH, HEIGHT, &self.rgb)
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        let context = &mut self.context;
        // The GL objects need their context current; if it cannot be made current they go
        // with the context itself, which `gl` destroys next.
        // SAFETY: the context is current inside the closure.
        let _ = self
            .gl
            .with_current(|| unsafe { ffi::mjr_freeContext(&mut **context) });
        // SAFETY: the scene was made by mjv_makeScene and is freed once.
        unsafe { ffi::mjv_freeScene(&mut *self.scene) };
    }
}
