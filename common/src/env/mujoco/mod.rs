//! Gymnasium's MuJoCo locomotion tasks with their v5 semantics, exactly: Hopper-v5,
//! HalfCheetah-v5 and Ant-v5 as `gymnasium/envs/mujoco/{hopper,half_cheetah,ant}_v5.py`
//! and `mujoco_env.py` of Gymnasium 1.4.0 define them, on the MuJoCo physics engine
//! (Todorov, Erez and Tassa 2012, "MuJoCo: A physics engine for model-based control").
//! The tasks: Hopper after Erez, Tassa and Todorov 2011 ("Infinite-horizon model predictive
//! control for periodic tasks with contacts"), HalfCheetah after Wawrzynski 2009 ("A cat-like
//! robot real-time learning to run"), Ant after Schulman et al. 2016 ("High-dimensional
//! continuous control using generalized advantage estimation").
//!
//! One step, as Gymnasium does it: `ctrl = action` (no clipping here; MuJoCo clamps `ctrl`
//! to the actuators' `ctrlrange` itself, while the control cost sees the raw action), then
//! `mj_step` `frame_skip` times, then `mj_rnePostConstraint` (only Ant reads what it
//! computes, `cfrc_ext`, so the other two skip it: it changes no state). The x velocity is
//! the change of `qpos[0]` (Ant: of the torso's `xpos[0]`, body 1, as MuJoCo last computed
//! it) over `dt = timestep * frame_skip`.
//!
//! | | Hopper-v5 | HalfCheetah-v5 | Ant-v5 |
//! |---|---|---|---|
//! | frame_skip, dt | 4, 0.008 | 5, 0.05 | 5, 0.05 |
//! | observation | `qpos[1:]`, `clip(qvel, ±10)` (11) | `qpos[1:]`, `qvel` (17) | `qpos[2:]`, `qvel`, `clip(cfrc_ext[1:], ±1)` (105) |
//! | reward | `vx + healthy - 1e-3 ‖a‖²` | `vx - 0.1 ‖a‖²` | `vx + healthy - 0.5 ‖a‖² - 5e-4 ‖clip(cfrc_ext, ±1)‖²` |
//! | terminated | not healthy | never | not healthy |
//! | reset noise | qpos, qvel `U(±5e-3)` | qpos `U(±0.1)`, qvel `0.1 N(0, 1)` | as HalfCheetah |
//!
//! Healthy (v5 pays the healthy reward of 1 only while healthy): Hopper `0.7 < z`,
//! `-0.2 < angle < 0.2` and every element of `(qpos[2:], qvel)` in `(-100, 100)`; Ant
//! every `qpos`, `qvel` finite and `0.2 <= z <= 1.0`. Episodes are truncated after 1000
//! steps by [`super::threaded::ThreadedVecEnv`] ([`Env::max_episode_steps`]).
//!
//! Rounding, to match Gymnasium bit for bit where it is cheap: Gymnasium computes the
//! control cost of a `float32` action in `float32` (NumPy 2 keeps `weight * np.sum(a**2)`
//! in the action's dtype), so [`numpy_sum`] reproduces NumPy's summation order and the
//! cost is rounded as NumPy rounds it. Observations are computed in `f64` and cast to
//! `f32`; rewards are `f64`.
//!
//! Reset: `mj_resetData`, then `qpos = qpos0 + noise`, `qvel = noise` and `mj_forward`
//! (Gymnasium's `set_state`). The noise comes from the env's own [`EnvRng`], so the
//! streams differ from NumPy's while the distributions are the same.
//!
//! Frames ([`Env::render`]): 480x480, drawn by MuJoCo's own OpenGL renderer on a headless
//! EGL context made on the env's first `render` call and freed with the env ([`render`]
//! has the camera and why mujoco-rs's renderer is not used; [`egl`] the context). Rendering
//! needs `libEGL.so.1` and an OpenGL driver (Mesa's software llvmpipe will do); where they
//! are missing only `render` fails, naming `deploy/setup.sh`. [`feature_names`] names the
//! observation elements.

mod egl;
mod features;
mod render;

pub use features::{feature_names, ANT_BODIES};
pub use render::{HEIGHT as FRAME_HEIGHT, WIDTH as FRAME_WIDTH};

use std::fmt;
use std::ops::Add;
use std::path::Path;
use std::sync::Arc;

use mujoco_rs::mujoco_c as ffi;
use mujoco_rs::prelude::{MjData, MjModel};
use rand::Rng;
use rand_distr::StandardNormal;

use super::{ActionRef, Env, EnvError, EnvResult, EnvRng, Space, Step};
use crate::deps;

/// Gymnasium's `TimeLimit` for all three tasks.
const MAX_EPISODE_STEPS: u32 = 1000;
/// The body whose x position Ant's velocity is measured from (Gymnasium's `main_body=1`,
/// the torso).
const ANT_MAIN_BODY: usize = 1;
/// The torso's body id in all three models, which the camera follows.
const TORSO_BODY: usize = 1;
/// MuJoCo's full integration state: time, qpos, qvel, act, history, warm start, ctrl,
/// applied forces, equality flags, mocap, user data and plugin state
/// (`mjSTATE_INTEGRATION`).
pub const STATE_SPEC: i32 = ffi::mjtState::mjSTATE_INTEGRATION as i32;

/// One of Gymnasium's MuJoCo v5 tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MujocoTask {
    Hopper,
    HalfCheetah,
    Ant,
}

impl MujocoTask {
    pub const ALL: [MujocoTask; 3] = [MujocoTask::Hopper, MujocoTask::HalfCheetah, MujocoTask::Ant];

    /// The Gymnasium id.
    pub fn id(self) -> &'static str {
        match self {
            MujocoTask::Hopper => "Hopper-v5",
            MujocoTask::HalfCheetah => "HalfCheetah-v5",
            MujocoTask::Ant => "Ant-v5",
        }
    }

    /// File name of the model under [`deps::mujoco_models_dir`].
    pub fn model_file(self) -> &'static str {
        match self {
            MujocoTask::Hopper => "hopper.xml",
            MujocoTask::HalfCheetah => "half_cheetah.xml",
            MujocoTask::Ant => "ant.xml",
        }
    }

    /// Gymnasium's constructor defaults for this task.
    fn params(self) -> Params {
        match self {
            MujocoTask::Hopper => Params {
                frame_skip: 4,
                skipped_qpos: 1,
                ctrl_cost_weight: 1e-3,
                reset_noise_scale: 5e-3,
                normal_qvel_noise: false,
            },
            MujocoTask::HalfCheetah => Params {
                frame_skip: 5,
                skipped_qpos: 1,
                ctrl_cost_weight: 0.1,
                reset_noise_scale: 0.1,
                normal_qvel_noise: true,
            },
            MujocoTask::Ant => Params {
                frame_skip: 5,
                skipped_qpos: 2,
                ctrl_cost_weight: 0.5,
                reset_noise_scale: 0.1,
                normal_qvel_noise: true,
            },
        }
    }
}

/// The constructor arguments of a Gymnasium v5 task that volley uses (their defaults).
#[derive(Debug, Clone, Copy)]
struct Params {
    /// `mj_step` calls per env step.
    frame_skip: usize,
    /// Leading `qpos` elements left out of the observation (the x, or x and y, position).
    skipped_qpos: usize,
    /// Weight of the squared action norm in the reward (as Gymnasium's Python float).
    ctrl_cost_weight: f64,
    /// Half-width of the uniform `qpos` noise (and of the `qvel` noise for Hopper), or
    /// the standard deviation of the normal `qvel` noise.
    reset_noise_scale: f64,
    /// Whether `qvel` noise is normal (HalfCheetah, Ant) rather than uniform (Hopper).
    normal_qvel_noise: bool,
}

// Gymnasium's remaining constants, shared where the tasks share them.
const HEALTHY_REWARD: f64 = 1.0;
const HOPPER_HEALTHY_Z_MIN: f64 = 0.7;
const HOPPER_HEALTHY_ANGLE: f64 = 0.2;
const HOPPER_HEALTHY_STATE: f64 = 100.0;
const HOPPER_QVEL_CLIP: f64 = 10.0;
const ANT_HEALTHY_Z: (f64, f64) = (0.2, 1.0);
const ANT_CONTACT_FORCE_CLIP: f64 = 1.0;
const ANT_CONTACT_COST_WEIGHT: f64 = 5e-4;

/// One simulator of a Gymnasium MuJoCo v5 task. Envs made by [`MujocoEnv::batch`] share
/// one compiled model.
pub struct MujocoEnv {
    task: MujocoTask,
    /// The task's Gymnasium constants.
    params: Params,
    /// The simulation state, holding a reference to the batch's shared model.
    data: MjData<Arc<MjModel>>,
    /// The model's sizes, read once: positions, velocities, actuators, bodies.
    nq: usize,
    nv: usize,
    nu: usize,
    nbody: usize,
    /// `timestep * frame_skip`, computed as Gymnasium computes it.
    dt: f64,
    /// `ctrl_cost_weight` as the `float32` NumPy turns it into.
    ctrl_cost_weight_f32: f32,
    /// Elements of one observation.
    obs_len: usize,
    /// The x coordinate the next step measures its velocity from: `qpos[0]`, or for Ant
    /// the torso's `xpos[0]` as MuJoCo last computed it.
    x_before: f64,
    /// Elements of MuJoCo's integration state ([`STATE_SPEC`]).
    state_size: usize,
    /// Bounds of the action space: the actuators' `ctrlrange`, as Gymnasium builds it.
    action_low: Vec<f32>,
    action_high: Vec<f32>,
    /// MuJoCo's renderer and its GL context, made by the first `render` call.
    renderer: Option<render::Renderer>,
}

impl fmt::Debug for MujocoEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MujocoEnv")
            .field("task", &self.task.id())
            .field("nq", &self.nq)
            .field("nv", &self.nv)
            .field("nu", &self.nu)
            .field("obs_len", &self.obs_len)
            .finish()
    }
}

/// Checks the linked MuJoCo and loads the task's model from `models_dir`.
fn load_model(task: MujocoTask, models_dir: &Path) -> EnvResult<MjModel> {
    // SAFETY: mj_version only reads a constant of the loaded library.
    let linked = unsafe { ffi::mj_version() };
    if u32::try_from(linked).ok() != Some(ffi::mjVERSION_HEADER) {
        return Err(EnvError::MissingDependency {
            what: format!(
                "MuJoCo {} (the linked library is version {linked})",
                ffi::mjVERSION_HEADER
            ),
            path: deps::deps_dir().join("mujoco").display().to_string(),
        });
    }
    let path = models_dir.join(task.model_file());
    if !path.is_file() {
        return Err(EnvError::MissingDependency {
            what: format!("the Gymnasium model of {}", task.id()),
            path: path.display().to_string(),
        });
    }
    keep_logs_off_disk();
    MjModel::from_xml(&path)
        .map_err(|e| EnvError::Native(format!("mujoco could not load {}: {e}", path.display())))
}

/// Stops MuJoCo's default log handler from writing `MUJOCO_LOG.TXT` into the working
/// directory of every process that loads a model (half_cheetah.xml triggers a
/// deprecation warning on each load); messages still reach the console. Runs once per
/// process, before the first model is loaded.
pub fn keep_logs_off_disk() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let config = mujoco_rs::prelude::log_config().with_logto_file(false);
        // SAFETY: every model in this process is loaded after this call (load_model and
        // the benchmarks call it first), so no MuJoCo object exists yet on any thread,
        // and `Once` keeps other callers waiting until it returns.
        unsafe { mujoco_rs::prelude::set_log_config(config) };
    });
}

fn usize_of(n: i64, what: &str) -> EnvResult<usize> {
    usize::try_from(n).map_err(|_| EnvError::Native(format!("model has a negative {what}: {n}")))
}

impl MujocoEnv {
    /// `n` envs of `task`, sharing one model loaded from [`deps::mujoco_models_dir`].
    /// Each must be reset before it is stepped.
    pub fn batch(task: MujocoTask, n: usize) -> EnvResult<Vec<MujocoEnv>> {
        MujocoEnv::batch_from_dir(task, n, &deps::mujoco_models_dir())
    }

    /// [`MujocoEnv::batch`] with the model taken from `models_dir` (which holds
    /// Gymnasium's `hopper.xml`, `half_cheetah.xml` and `ant.xml`).
    pub fn batch_from_dir(
        task: MujocoTask,
        n: usize,
        models_dir: &Path,
    ) -> EnvResult<Vec<MujocoEnv>> {
        let model = Arc::new(load_model(task, models_dir)?);
        (0..n)
            .map(|_| MujocoEnv::new(task, model.clone()))
            .collect()
    }

    /// One env of `task` on an already loaded model (which must be the task's model).
    fn new(task: MujocoTask, model: Arc<MjModel>) -> EnvResult<MujocoEnv> {
        let params = task.params();
        let m = model.ffi();
        let nq = usize_of(m.nq, "nq")?;
        let nv = usize_of(m.nv, "nv")?;
        let nu = usize_of(m.nu, "nu")?;
        let nbody = usize_of(m.nbody, "nbody")?;
        // What the indexing below relies on: x, z and angle (or x, y, z) in qpos, a torso
        // body (Ant's main body, the camera's), and sums short enough for `numpy_sum`.
        let too_small = nq < 3 || nbody <= ANT_MAIN_BODY.max(TORSO_BODY);
        if too_small || nu == 0 || nu > PAIRWISE_BLOCK || 6 * nbody > PAIRWISE_BLOCK {
            return Err(EnvError::Native(format!(
                "the model of {} does not have the expected shape (nq {nq}, nu {nu}, nbody {nbody})",
                task.id()
            )));
        }
        let dt = m.opt.timestep * params.frame_skip as f64;
        // SAFETY: a compiled model holds `2 * nu` ctrlrange values.
        let range = unsafe { std::slice::from_raw_parts(m.actuator_ctrlrange, 2 * nu) };
        let action_low = range.iter().step_by(2).map(|&v| v as f32).collect();
        let action_high = range.iter().skip(1).step_by(2).map(|&v| v as f32).collect();
        // SAFETY: mj_stateSize only reads the model's sizes.
        let state_size = unsafe { ffi::mj_stateSize(m, STATE_SPEC) };
        let state_size = usize_of(state_size.into(), "state size")?;
        let mut obs_len = nq - params.skipped_qpos + nv;
        if task == MujocoTask::Ant {
            obs_len += 6 * (nbody - 1);
        }
        let data = MjData::try_new(model)
            .map_err(|e| EnvError::Native(format!("mujoco could not allocate its data: {e}")))?;
        let mut env = MujocoEnv {
            task,
            params,
            data,
            nq,
            nv,
            nu,
            nbody,
            dt,
            ctrl_cost_weight_f32: params.ctrl_cost_weight as f32,
            obs_len,
            x_before: 0.0,
            state_size,
            action_low,
            action_high,
            renderer: None,
        };
        env.x_before = env.current_x();
        Ok(env)
    }

    pub fn task(&self) -> MujocoTask {
        self.task
    }

    /// The name of every observation element, in order (see [`feature_names`]).
    pub fn feature_names(&self) -> Vec<String> {
        feature_names(self.task)
    }

    /// Which OpenGL renderer on which EGL display draws this env's frames, once the first
    /// frame was drawn.
    pub fn render_device(&self) -> Option<&str> {
        self.renderer.as_ref().map(render::Renderer::about)
    }

    /// Elements of one observation.
    pub fn obs_len(&self) -> usize {
        self.obs_len
    }

    /// `timestep * frame_skip`: the simulated time of one env step.
    pub fn dt(&self) -> f64 {
        self.dt
    }

    /// `mj_step` calls per env step.
    pub fn frame_skip(&self) -> usize {
        self.params.frame_skip
    }

    /// Elements of [`MujocoEnv::integration_state`].
    pub fn state_size(&self) -> usize {
        self.state_size
    }

    /// The model the env simulates (shared by its batch).
    pub fn model(&self) -> &MjModel {
        self.data.model()
    }

    /// Current `qpos`.
    pub fn qpos(&self) -> &[f64] {
        // SAFETY: mjData holds `nq` positions for the life of `self.data`.
        unsafe { std::slice::from_raw_parts(self.data.ffi().qpos, self.nq) }
    }

    /// Current `qvel`.
    pub fn qvel(&self) -> &[f64] {
        // SAFETY: mjData holds `nv` velocities for the life of `self.data`.
        unsafe { std::slice::from_raw_parts(self.data.ffi().qvel, self.nv) }
    }

    /// The x coordinate the next step measures its velocity from.
    pub fn x_before(&self) -> f64 {
        self.x_before
    }

    /// Gymnasium's `set_state`: writes `qpos` and `qvel` (nothing else: warm start, time
    /// and controls stay as they are) and runs `mj_forward`.
    pub fn set_state(&mut self, qpos: &[f64], qvel: &[f64]) -> EnvResult<()> {
        if qpos.len() != self.nq || qvel.len() != self.nv {
            return Err(EnvError::BadSettings(format!(
                "set_state needs {} qpos and {} qvel values, got {} and {}",
                self.nq,
                self.nv,
                qpos.len(),
                qvel.len()
            )));
        }
        let (q, v, _) = self.state_mut();
        q.copy_from_slice(qpos);
        v.copy_from_slice(qvel);
        self.forward();
        Ok(())
    }

    /// `reset` with given `qpos` and `qvel` instead of random noise: `mj_resetData`, then
    /// [`MujocoEnv::set_state`], then the observation.
    pub fn reset_to(&mut self, qpos: &[f64], qvel: &[f64], obs: &mut [f32]) -> EnvResult<()> {
        self.reset_data();
        self.set_state(qpos, qvel)?;
        self.write_obs(obs);
        Ok(())
    }

    /// MuJoCo's full integration state ([`STATE_SPEC`], `mj_getState`), which with
    /// [`MujocoEnv::x_before`] is everything a step depends on besides the action.
    pub fn integration_state(&self) -> Vec<f64> {
        let mut state = vec![0.0; self.state_size];
        // SAFETY: `state` holds `mj_stateSize(m, STATE_SPEC)` elements; model and data
        // belong together.
        unsafe {
            ffi::mj_getState(
                self.data.model().ffi(),
                self.data.ffi(),
                state.as_mut_ptr(),
                STATE_SPEC,
            )
        };
        state
    }

    /// Restores a state taken by [`MujocoEnv::integration_state`] (or by Python's
    /// `mujoco.mj_getState` with `mjSTATE_INTEGRATION`) and the x coordinate the next step
    /// measures its velocity from (for Ant the torso's `xpos[0]` as MuJoCo last computed
    /// it, which is not part of MuJoCo's state). Derived quantities are left stale, as
    /// after `mj_step`: the next step recomputes them.
    pub fn restore_state(&mut self, state: &[f64], x_before: f64) -> EnvResult<()> {
        if state.len() != self.state_size {
            return Err(EnvError::BadSettings(format!(
                "an integration state of {} has {} elements, got {}",
                self.task.id(),
                self.state_size,
                state.len()
            )));
        }
        let (m, d) = self.raw();
        // SAFETY: `state` has the size `mj_setState` reads for STATE_SPEC; `m` and `d`
        // are this env's live model and data.
        unsafe { ffi::mj_setState(m, d, state.as_ptr(), STATE_SPEC) };
        self.x_before = x_before;
        Ok(())
    }

    /// Raw model and data pointers for the FFI calls.
    fn raw(&mut self) -> (*const ffi::mjModel, *mut ffi::mjData) {
        let m: *const ffi::mjModel = self.data.model().ffi();
        // SAFETY: the pointer is used only for MuJoCo calls that keep mjData's
        // invariants (stepping, resetting, writing qpos/qvel/ctrl within their sizes).
        let d: *mut ffi::mjData = unsafe { self.data.ffi_mut() };
        (m, d)
    }

    fn reset_data(&mut self) {
        let (m, d) = self.raw();
        // SAFETY: `m` and `d` are this env's live model and data.
        unsafe { ffi::mj_resetData(m, d) };
    }

    /// The data's `qpos` and `qvel` to write a new state into, and the model's `qpos0`.
    fn state_mut(&mut self) -> (&mut [f64], &mut [f64], &[f64]) {
        let (nq, nv) = (self.nq, self.nv);
        let qpos0 = self.data.model().ffi().qpos0;
        // SAFETY: mjData holds `nq` positions and `nv` velocities in distinct arena
        // arrays and the model `nq` default positions; the slices borrow `self`
        // mutably, so nothing else reaches them while they live.
        unsafe {
            let d = self.data.ffi_mut();
            (
                std::slice::from_raw_parts_mut(d.qpos, nq),
                std::slice::from_raw_parts_mut(d.qvel, nv),
                std::slice::from_raw_parts(qpos0, nq),
            )
        }
    }

    /// `mj_forward` after a new state was written, and the new reference x.
    fn forward(&mut self) {
        let (m, d) = self.raw();
        // SAFETY: `m` and `d` are this env's live model and data.
        unsafe { ffi::mj_forward(m, d) };
        self.x_before = self.current_x();
    }

    /// The x coordinate the velocity is measured from, as it is now.
    fn current_x(&self) -> f64 {
        let d = self.data.ffi();
        // SAFETY: `qpos` has nq >= 3 elements and `xpos` 3 * nbody with nbody > 1 for Ant
        // (checked in `new`).
        unsafe {
            match self.task {
                MujocoTask::Ant => *d.xpos.add(3 * ANT_MAIN_BODY),
                _ => *d.qpos,
            }
        }
    }

    /// Writes the observation of the current state.
    fn write_obs(&self, obs: &mut [f32]) {
        let d = self.data.ffi();
        let skip = self.params.skipped_qpos;
        // SAFETY: mjData holds `nq` positions, `nv` velocities and `6 * nbody` external
        // forces for the life of `self.data`.
        let (qpos, qvel, cfrc) = unsafe {
            (
                std::slice::from_raw_parts(d.qpos, self.nq),
                std::slice::from_raw_parts(d.qvel, self.nv),
                std::slice::from_raw_parts(d.cfrc_ext, 6 * self.nbody),
            )
        };
        let (pos_out, rest) = obs.split_at_mut(self.nq - skip);
        let (vel_out, force_out) = rest.split_at_mut(self.nv);
        for (o, &q) in pos_out.iter_mut().zip(&qpos[skip..]) {
            *o = q as f32;
        }
        match self.task {
            MujocoTask::Hopper => {
                for (o, &v) in vel_out.iter_mut().zip(qvel) {
                    *o = v.clamp(-HOPPER_QVEL_CLIP, HOPPER_QVEL_CLIP) as f32;
                }
            }
            MujocoTask::HalfCheetah | MujocoTask::Ant => {
                for (o, &v) in vel_out.iter_mut().zip(qvel) {
                    *o = v as f32;
                }
            }
        }
        if self.task == MujocoTask::Ant {
            for (o, &f) in force_out.iter_mut().zip(&cfrc[6..]) {
                *o = f.clamp(-ANT_CONTACT_FORCE_CLIP, ANT_CONTACT_FORCE_CLIP) as f32;
            }
        }
    }

    /// Gymnasium's `is_healthy` of the current state.
    fn is_healthy(&self) -> bool {
        let (qpos, qvel) = (self.qpos(), self.qvel());
        match self.task {
            MujocoTask::Hopper => {
                let (z, angle) = (qpos[1], qpos[2]);
                let in_range = |s: &f64| -HOPPER_HEALTHY_STATE < *s && *s < HOPPER_HEALTHY_STATE;
                qpos[2..].iter().all(in_range)
                    && qvel.iter().all(in_range)
                    && HOPPER_HEALTHY_Z_MIN < z
                    && z < f64::INFINITY
                    && -HOPPER_HEALTHY_ANGLE < angle
                    && angle < HOPPER_HEALTHY_ANGLE
            }
            MujocoTask::HalfCheetah => true,
            MujocoTask::Ant => {
                let z = qpos[2];
                qpos.iter().chain(qvel).all(|s| s.is_finite())
                    && ANT_HEALTHY_Z.0 <= z
                    && z <= ANT_HEALTHY_Z.1
            }
        }
    }

    /// Ant's contact cost: `5e-4 * sum(clip(cfrc_ext, ±1)^2)` over every body (the world
    /// body's row is zero), summed in NumPy's order.
    fn contact_cost(&self) -> f64 {
        // SAFETY: mjData holds `6 * nbody` external forces.
        let cfrc = unsafe { std::slice::from_raw_parts(self.data.ffi().cfrc_ext, 6 * self.nbody) };
        let sq = cfrc.iter().map(|&f| {
            let c = f.clamp(-ANT_CONTACT_FORCE_CLIP, ANT_CONTACT_FORCE_CLIP);
            c * c
        });
        ANT_CONTACT_COST_WEIGHT * numpy_sum(sq, cfrc.len())
    }

    /// Gymnasium's `control_cost` of a `float32` action: `weight * np.sum(np.square(a))`,
    /// all in `float32`.
    fn ctrl_cost(&self, action: &[f32]) -> f64 {
        let s = numpy_sum(action.iter().map(|&a| a * a), action.len());
        f64::from(self.ctrl_cost_weight_f32 * s)
    }
}

impl Env for MujocoEnv {
    type Obs = f32;

    /// The current state as Gymnasium's `render_mode="rgb_array"` draws it, with the camera
    /// following the torso (see [`render`]). The first call makes the GL context.
    fn render(&mut self) -> EnvResult<super::Frame> {
        if self.renderer.is_none() {
            self.renderer = Some(render::Renderer::new(self.task, self.data.model())?);
        }
        let d = self.data.ffi();
        // SAFETY: mjData holds `3 * nbody` body positions and nbody > 1 (checked in `new`).
        let torso = unsafe { std::slice::from_raw_parts(d.xpos.add(3 * TORSO_BODY), 3) };
        let torso = [torso[0], torso[1], torso[2]];
        let (m, d) = self.raw();
        let Some(renderer) = self.renderer.as_mut() else {
            unreachable!("made above")
        };
        // SAFETY: `m` and `d` are this env's live model, the one the renderer was made for,
        // and its data.
        unsafe { renderer.render(m, d, torso) }
    }

    fn observation_space(&self) -> Space {
        Space::uniform_box(&[self.obs_len], f32::NEG_INFINITY, f32::INFINITY)
    }

    fn action_space(&self) -> Space {
        Space::Box {
            shape: vec![self.nu],
            low: self.action_low.clone(),
            high: self.action_high.clone(),
        }
    }

    fn max_episode_steps(&self) -> Option<u32> {
        Some(MAX_EPISODE_STEPS)
    }

    fn reset(&mut self, rng: &mut EnvRng, obs: &mut [f32]) -> EnvResult<()> {
        self.reset_data();
        let scale = self.params.reset_noise_scale;
        let normal_qvel = self.params.normal_qvel_noise;
        let (qpos, qvel, qpos0) = self.state_mut();
        for (q, &q0) in qpos.iter_mut().zip(qpos0) {
            *q = q0 + rng.random_range(-scale..scale);
        }
        for v in qvel.iter_mut() {
            *v = if normal_qvel {
                scale * rng.sample::<f64, _>(StandardNormal)
            } else {
                rng.random_range(-scale..scale)
            };
        }
        self.forward();
        self.write_obs(obs);
        Ok(())
    }

    fn step(
        &mut self,
        action: ActionRef<'_>,
        _rng: &mut EnvRng,
        obs: &mut [f32],
    ) -> EnvResult<Step> {
        let action: &[f32] = match action {
            ActionRef::Continuous(a) => a,
            // Not reachable after validation against the box action space.
            _ => &[],
        };
        let (nu, frame_skip) = (self.nu, self.params.frame_skip);
        let (m, d) = self.raw();
        // SAFETY: mjData holds `nu` controls; `m` and `d` are this env's live model and
        // data, and no slice into `d` is alive across the MuJoCo calls.
        unsafe {
            let ctrl = std::slice::from_raw_parts_mut((*d).ctrl, nu);
            for (i, c) in ctrl.iter_mut().enumerate() {
                *c = f64::from(action.get(i).copied().unwrap_or(0.0));
            }
            for _ in 0..frame_skip {
                ffi::mj_step(m, d);
            }
            if self.task == MujocoTask::Ant {
                ffi::mj_rnePostConstraint(m, d);
            }
        }
        let x_after = self.current_x();
        let x_velocity = (x_after - self.x_before) / self.dt;
        self.x_before = x_after;
        self.write_obs(obs);
        let ctrl_cost = self.ctrl_cost(action);
        Ok(match self.task {
            MujocoTask::Hopper => {
                let healthy = self.is_healthy();
                let healthy_reward = if healthy { HEALTHY_REWARD } else { 0.0 };
                Step {
                    reward: (x_velocity + healthy_reward) - ctrl_cost,
                    terminated: !healthy,
                    truncated: false,
                }
            }
            MujocoTask::HalfCheetah => Step {
                reward: x_velocity - ctrl_cost,
                terminated: false,
                truncated: false,
            },
            MujocoTask::Ant => {
                let healthy = self.is_healthy();
                let healthy_reward = if healthy { HEALTHY_REWARD } else { 0.0 };
                Step {
                    reward: (x_velocity + healthy_reward) - (ctrl_cost + self.contact_cost()),
                    terminated: !healthy,
                    truncated: false,
                }
            }
        })
    }
}

/// Longest run NumPy's pairwise summation adds without splitting it (`PW_BLOCKSIZE`).
const PAIRWISE_BLOCK: usize = 128;

/// The sum of `n <= 128` values in the order NumPy's `np.sum` adds a contiguous array
/// (`pairwise_sum` in NumPy's `loops_utils.h`): below 8 values one running sum from
/// zero; from 8, eight running sums over the leading multiple of 8, combined as
/// `((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))`, then the rest added one by one.
fn numpy_sum<T, I>(values: I, n: usize) -> T
where
    T: Copy + Default + Add<Output = T>,
    I: Iterator<Item = T>,
{
    debug_assert!(n <= PAIRWISE_BLOCK);
    if n < 8 {
        return values.fold(T::default(), |s, v| s + v);
    }
    let blocked = n - n % 8;
    let tree = |r: &[T; 8]| ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    let mut r = [T::default(); 8];
    let mut sum = T::default();
    for (i, v) in values.enumerate() {
        if i < 8 {
            r[i] = v;
        } else if i < blocked {
            r[i % 8] = r[i % 8] + v;
        } else {
            // The rest is added one by one onto the tree's sum.
            if i == blocked {
                sum = tree(&r);
            }
            sum = sum + v;
        }
    }
    if blocked == n {
        sum = tree(&r);
    }
    sum
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::env::Frame;

    fn env(task: MujocoTask) -> MujocoEnv {
        match MujocoEnv::batch(task, 1) {
            Ok(mut v) => v.pop().expect("one env"),
            Err(e) => panic!("cannot build {}: {e}", task.id()),
        }
    }

    #[test]
    fn numpy_sum_follows_numpys_order() {
        // Values from NumPy 2.3: `np.sum(np.square(a))` differs from a running sum for both.
        let a: [f32; 8] = [
            0.358_363_06,
            0.740_177,
            -0.545_362_95,
            0.790_896_5,
            0.744_390_96,
            -0.962_965_55,
            0.414_991_14,
            -0.997_600_6,
        ];
        assert_eq!(numpy_sum(a.iter().map(|x| x * x), 8), 4.248_069_3_f32);
        let running = a.iter().fold(0.0f32, |s, x| s + x * x);
        assert_ne!(running, 4.248_069_3_f32);
        let b: [f64; 19] = [
            0.0763, -0.3135, -0.2619, -0.251, 0.9749, 0.2655, 0.3486, -0.3401, 0.3598, -0.7541,
            -0.8965, 0.7004, -0.9822, 0.9575, 0.654, 0.5704, -0.9038, -0.5851, 0.6997,
        ];
        assert_eq!(
            numpy_sum(b.iter().map(|x| x * x), 19),
            7.769_573_829_999_999
        );
        // Fewer than 8: a running sum from zero.
        assert_eq!(numpy_sum([1.0f32, 2.0, 3.0].into_iter(), 3), 6.0);
    }

    #[test]
    fn missing_models_name_the_setup_script() {
        let dir = std::env::temp_dir().join("volley-no-such-models-dir");
        let e =
            MujocoEnv::batch_from_dir(MujocoTask::Hopper, 2, &dir).expect_err("no models there");
        assert!(matches!(e, EnvError::MissingDependency { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("deploy/setup.sh") && msg.contains("hopper.xml"),
            "{msg}"
        );
    }

    #[test]
    fn batch_shares_one_model() {
        let envs = MujocoEnv::batch(MujocoTask::Ant, 3).unwrap_or_else(|e| panic!("{e}"));
        let first: *const MjModel = envs[0].model();
        assert!(envs.iter().all(|e| std::ptr::eq(e.model(), first)));
    }

    /// Mean and standard deviation.
    fn stats(x: &[f64]) -> (f64, f64) {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        (
            mean,
            (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt(),
        )
    }

    #[test]
    fn reset_noise_has_gymnasiums_ranges() {
        const RESETS: usize = 2000;
        for task in MujocoTask::ALL {
            let mut env = env(task);
            let p = task.params();
            let scale = p.reset_noise_scale;
            // SAFETY: a compiled model holds `nq` default positions.
            let qpos0 =
                unsafe { std::slice::from_raw_parts(env.model().ffi().qpos0, env.nq) }.to_vec();
            let mut rng = EnvRng::seed_from_u64(3);
            let mut obs = vec![0.0f32; env.obs_len()];
            let (mut dq, mut dv) = (Vec::new(), Vec::new());
            for _ in 0..RESETS {
                env.reset(&mut rng, &mut obs).unwrap();
                dq.extend(env.qpos().iter().zip(&qpos0).map(|(q, q0)| q - q0));
                dv.extend_from_slice(env.qvel());
                // The observation is the layout of the state just set.
                let skip = p.skipped_qpos;
                for (o, q) in obs.iter().zip(&env.qpos()[skip..]) {
                    assert_eq!(*o, *q as f32);
                }
                assert_eq!(env.integration_state()[0], 0.0, "time restarts at zero");
            }
            let what = task.id();
            // Uniform noise in [-scale, scale): within range, standard deviation scale/sqrt(3).
            // (Rounding in qpos0 + noise may reach the bound by an ulp.)
            let tol = 1e-12;
            assert!(
                dq.iter().all(|d| d.abs() <= scale + tol),
                "{what}: qpos noise range"
            );
            let (m, s) = stats(&dq);
            assert!(m.abs() < 0.05 * scale, "{what}: qpos noise mean {m}");
            assert!(
                (s / (scale / 3f64.sqrt()) - 1.0).abs() < 0.03,
                "{what}: qpos noise std {s}"
            );
            let (m, s) = stats(&dv);
            assert!(m.abs() < 0.05 * scale, "{what}: qvel noise mean {m}");
            if p.normal_qvel_noise {
                assert!((s / scale - 1.0).abs() < 0.03, "{what}: qvel noise std {s}");
                assert!(
                    dv.iter().any(|v| v.abs() > 2.0 * scale),
                    "{what}: normal tails"
                );
            } else {
                assert!(
                    dv.iter().all(|v| v.abs() <= scale),
                    "{what}: qvel noise range"
                );
                assert!(
                    (s / (scale / 3f64.sqrt()) - 1.0).abs() < 0.03,
                    "{what}: qvel std {s}"
                );
            }
        }
    }

    #[test]
    fn reset_clears_the_previous_episode() {
        let mut a = env(MujocoTask::Hopper);
        let mut b = env(MujocoTask::Hopper);
        let mut obs_a = vec![0.0f32; a.obs_len()];
        let mut obs_b = vec![0.0f32; b.obs_len()];
        let mut rng = EnvRng::seed_from_u64(5);
        a.reset(&mut rng, &mut obs_a).unwrap();
        for _ in 0..30 {
            a.step(
                ActionRef::Continuous(&[1.0, -1.0, 0.5]),
                &mut rng,
                &mut obs_a,
            )
            .unwrap();
        }
        // The same noise on a used and a fresh env gives the same state, warm start included.
        a.reset(&mut EnvRng::seed_from_u64(9), &mut obs_a).unwrap();
        b.reset(&mut EnvRng::seed_from_u64(9), &mut obs_b).unwrap();
        assert_eq!(obs_a, obs_b);
        assert_eq!(a.integration_state(), b.integration_state());
        assert_eq!(a.x_before(), b.x_before());
    }

    /// Pixels that show the robot or its reflection: Gymnasium's geoms are orange-brown
    /// (red over green over blue), the floor black or grey-green, the sky blue-grey.
    fn robot_pixels(f: &Frame) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for y in 0..f.height {
            for x in 0..f.width {
                let [r, g, b] = f.pixel(x, y).map(i32::from);
                if r > 60 && r > g + 20 && g > b + 10 {
                    out.push((x, y));
                }
            }
        }
        out
    }

    /// The robot's pixel count and mean column as a fraction of the width.
    fn robot_column(f: &Frame) -> (usize, f64) {
        let px = robot_pixels(f);
        let n = px.len().max(1);
        let mean = px.iter().map(|p| f64::from(p.0)).sum::<f64>() / n as f64;
        (px.len(), mean / f64::from(f.width))
    }

    fn distinct_colours(f: &Frame) -> usize {
        let mut c: Vec<&[u8]> = f.rgb.chunks_exact(3).collect();
        c.sort_unstable();
        c.dedup();
        c.len()
    }

    /// Pixels that differ between two frames of one size.
    fn differing(a: &Frame, b: &Frame) -> usize {
        a.rgb
            .chunks_exact(3)
            .zip(b.rgb.chunks_exact(3))
            .filter(|(p, q)| p != q)
            .count()
    }

    fn mean_rgb(f: &Frame, rows: std::ops::Range<u32>) -> [f64; 3] {
        let mut sum = [0.0; 3];
        let mut n = 0.0;
        for y in rows {
            for x in 0..f.width {
                let p = f.pixel(x, y);
                for c in 0..3 {
                    sum[c] += f64::from(p[c]);
                }
                n += 1.0;
            }
        }
        sum.map(|s| s / n)
    }

    fn render(env: &mut MujocoEnv) -> Frame {
        env.render()
            .unwrap_or_else(|e| panic!("{} cannot render: {e}", env.task().id()))
    }

    fn assert_robot_centred(f: &Frame, what: &str) {
        let (n, col) = robot_column(f);
        assert!(n > 2000, "{what}: only {n} robot pixels");
        assert!(
            (0.4..0.6).contains(&col),
            "{what}: robot at {col} of the width"
        );
    }

    #[test]
    fn hopper_frames_show_sky_floor_and_the_robot_in_the_middle() {
        let mut env = env(MujocoTask::Hopper);
        let mut obs = vec![0.0f32; env.obs_len()];
        env.reset(&mut EnvRng::seed_from_u64(1), &mut obs).unwrap();
        let t = std::time::Instant::now();
        let f = render(&mut env);
        let first = t.elapsed();
        let path = crate::env::render::save_png(&f, "hopper.png");
        assert_eq!((f.width, f.height), (480, 480));
        assert!(
            distinct_colours(&f) > 1000,
            "{} colours",
            distinct_colours(&f)
        );
        // Sky (the blue-grey gradient skybox) at the top: blue over red, no checker.
        let top = mean_rgb(&f, 0..10);
        assert!(top[2] > top[0] + 10.0 && top[2] > 40.0, "top rows {top:?}");
        // The checkered floor at the bottom: both black and light squares.
        let (mut dark, mut light) = (0, 0);
        for y in 400..480 {
            for x in 0..480 {
                let p = f.pixel(x, y);
                let lum = (u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2])) / 3;
                dark += usize::from(lum < 50);
                light += usize::from(lum > 150);
            }
        }
        assert!(
            dark > 5000 && light > 5000,
            "floor: {dark} dark, {light} light pixels"
        );
        assert_robot_centred(&f, "hopper at reset");
        // The same state draws the same picture.
        let t = std::time::Instant::now();
        let again = render(&mut env);
        let later = t.elapsed();
        assert!(again == f, "{} pixels differ", differing(&again, &f));
        eprintln!(
            "hopper: {} ({}); first frame {first:?}, next {later:?}",
            path.display(),
            env.render_device().unwrap_or("?")
        );
    }

    #[test]
    fn frames_follow_the_state_and_the_camera_follows_the_torso() {
        let mut env = env(MujocoTask::Hopper);
        let mut obs = vec![0.0f32; env.obs_len()];
        let mut rng = EnvRng::seed_from_u64(2);
        env.reset(&mut rng, &mut obs).unwrap();
        let f0 = render(&mut env);
        for _ in 0..15 {
            env.step(ActionRef::Continuous(&[1.0, -1.0, 1.0]), &mut rng, &mut obs)
                .unwrap();
        }
        let f1 = render(&mut env);
        assert!(
            differing(&f0, &f1) > 2000,
            "{} pixels differ",
            differing(&f0, &f1)
        );
        // Five metres along x: a fixed camera would show no robot; this one follows.
        let (mut qpos, qvel) = (env.qpos().to_vec(), env.qvel().to_vec());
        qpos[0] += 5.0;
        env.set_state(&qpos, &qvel)
            .unwrap_or_else(|e| panic!("{e}"));
        let f2 = render(&mut env);
        assert_robot_centred(&f2, "hopper 5 m along");
        let (n1, _) = robot_column(&f1);
        let (n2, _) = robot_column(&f2);
        assert!(
            n1.abs_diff(n2) < n1 / 5,
            "same pose, {n1} vs {n2} robot pixels"
        );
        // The robot is drawn alike, the floor under it moved.
        assert!(differing(&f1, &f2) > 2000, "the floor did not move");
    }

    #[test]
    fn envs_render_on_any_thread_and_apart() {
        let mut a = env(MujocoTask::Hopper);
        let mut b = env(MujocoTask::Hopper);
        let mut obs = vec![0.0f32; a.obs_len()];
        a.reset(&mut EnvRng::seed_from_u64(3), &mut obs).unwrap();
        b.reset(&mut EnvRng::seed_from_u64(4), &mut obs).unwrap();
        for _ in 0..10 {
            b.step(
                ActionRef::Continuous(&[-1.0, 1.0, -1.0]),
                &mut EnvRng::seed_from_u64(0),
                &mut obs,
            )
            .unwrap();
        }
        // Both at once, each on its own thread, then each again on this thread.
        let (fa, fb) = std::thread::scope(|s| {
            let ta = s.spawn(|| render(&mut a));
            let tb = s.spawn(|| render(&mut b));
            (ta.join().expect("thread a"), tb.join().expect("thread b"))
        });
        assert!(render(&mut a) == fa, "a differs across threads");
        assert!(render(&mut b) == fb, "b differs across threads");
        assert!(differing(&fa, &fb) > 1000);
        // Dropped on another thread than the one that made its context.
        std::thread::spawn(move || drop(a))
            .join()
            .expect("drop thread");
    }

    #[test]
    fn every_task_renders_through_the_vector_env() {
        use crate::env::threaded::ThreadedVecEnv;
        use crate::env::{Actions, VecEnv};
        for task in MujocoTask::ALL {
            let envs = MujocoEnv::batch(task, 2).unwrap_or_else(|e| panic!("{e}"));
            let mut venv = ThreadedVecEnv::new(envs, 2).unwrap_or_else(|e| panic!("{e}"));
            venv.reset(7).unwrap_or_else(|e| panic!("{e}"));
            let before = venv
                .render(1)
                .unwrap_or_else(|e| panic!("{}: {e}", task.id()));
            let dim = venv.action_space().flat_len();
            let actions: Vec<f32> = (0..2 * dim)
                .map(|i| if i % 2 == 0 { 0.8 } else { -0.8 })
                .collect();
            for _ in 0..10 {
                venv.step(Actions::Continuous(&actions))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            let f = venv
                .render(1)
                .unwrap_or_else(|e| panic!("{}: {e}", task.id()));
            let path = crate::env::render::save_png(&f, &format!("{}.png", task.id()));
            assert_eq!((f.width, f.height), (FRAME_WIDTH, FRAME_HEIGHT));
            assert!(distinct_colours(&f) > 1000, "{}: not a picture", task.id());
            assert_robot_centred(&f, task.id());
            assert!(
                differing(&before, &f) > 500,
                "{}: the steps did not show",
                task.id()
            );
            assert!(venv.render(2).is_err(), "there is no env 2");
            eprintln!("{}: {}", task.id(), path.display());
        }
    }

    #[test]
    fn feature_names_cover_the_observation() {
        for task in MujocoTask::ALL {
            let e = env(task);
            let names = e.feature_names();
            assert_eq!(names.len(), e.obs_len(), "{}", task.id());
            let mut unique = names.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), names.len(), "{}: names repeat", task.id());
        }
        // Ant's body labels start with the model's body names where bodies have one.
        let ant = env(MujocoTask::Ant);
        let m = ant.model().ffi();
        assert_eq!(usize::try_from(m.nbody).ok(), Some(ANT_BODIES.len() + 1));
        for (i, label) in ANT_BODIES.iter().enumerate() {
            // SAFETY: body ids 1..nbody are valid; mj_id2name returns null or a NUL-terminated
            // name owned by the model.
            let name = unsafe {
                let p = ffi::mj_id2name(m, ffi::mjtObj::mjOBJ_BODY as i32, (i + 1) as i32);
                if p.is_null() {
                    String::new()
                } else {
                    std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            assert!(
                label.starts_with(&name),
                "body {}: {label} vs {name}",
                i + 1
            );
        }
        let names = feature_names(MujocoTask::Ant);
        assert_eq!(
            names[27],
            "external torque x on the torso (cfrc_ext, clipped to ±1)"
        );
        assert!(names[104].contains("force z on the ankle_4"));
        assert_eq!(feature_names(MujocoTask::Hopper)[1], "angle of the torso");
    }

    #[test]
    fn bad_state_lengths_are_errors() {
        let mut e = env(MujocoTask::HalfCheetah);
        assert!(e.set_state(&[0.0; 3], &[0.0; 9]).is_err());
        assert!(e.restore_state(&[0.0; 5], 0.0).is_err());
        let s = e.integration_state();
        assert!(e.restore_state(&s, 0.0).is_ok());
    }
}
