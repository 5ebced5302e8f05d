//! The Platform domain with parameterised actions (Masson, Ranchod and Konidaris 2016,
//! "Reinforcement Learning with Parameterized Actions", AAAI), as the reference
//! implementation cycraig/gym-platform (`gym_platform/envs/platform_env.py`, registered
//! as `Platform-v0` with `max_episode_steps=200`) defines it.
//!
//! The agent runs along three platforms (x in [0, 250], [475, 750], [985, 1035]), past two
//! enemies that patrol the first two, and jumps the gaps. An action is a choice among
//! `run`, `hop` and `leap` with one continuous parameter each, clipped to [0, 30],
//! [0, 720] and [0, 430]. Run applies power for 20 sub-steps of `DT = 0.05`; hop and leap
//! call `jump_to(dx, dy0)` with `dy0` 35 and 25 and then let the agent fall until it
//! lands (or the episode ends). The reward of a step is the distance the agent moved in x
//! divided by 1035, so the best return is 1. The episode terminates when the agent falls
//! below the platforms, touches an enemy or reaches x = 1035.
//!
//! Observation: a 10-element `f32` box,
//!
//! | index | feature | scaling |
//! |---|---|---|
//! | 0 | agent x | (x + 20) / 1055 |
//! | 1 | agent x velocity | / 100 |
//! | 2 | x of the enemy on the agent's side (enemy 2 once x > 475) | / 1035 |
//! | 3 | that enemy's x velocity | (dx + 30) / 60 |
//! | 4 | width of the current platform | / 275 |
//! | 5 | width of the next platform (0 on the last) | / 275 |
//! | 6 | gap to the next platform (0 on the last) | / 235 |
//! | 7 | left x of the current platform | / 1035 |
//! | 8 | height difference to the next platform (always 0) | / 1 |
//! | 9 | number of sub-steps the last action took (0 after reset) | none |
//!
//! Elements 0..9 are the original's scaled state, element 9 the second member of its
//! `(state, steps)` tuple observation.
//!
//! Randomness enters only through [`Noise`] (the original's `np_random.normal` calls:
//! the enemy's speed jitter, the agent's velocity noise and the two jump noises); reset is
//! deterministic. [`EnvRng`] is the production source; the conformance test replays the
//! draws recorded from the original.

use rand::Rng;
use rand_distr::StandardNormal;

use super::{ActionRef, Env, EnvError, EnvResult, EnvRng, Frame, ParamBox, Space, Step};

// Platform constants (`Constants` in the original).
const PLATFORM_HEIGHT: f64 = 40.0;
const WIDTH1: f64 = 250.0;
const WIDTH2: f64 = 275.0;
const WIDTH3: f64 = 50.0;
const GAP1: f64 = 225.0;
const GAP2: f64 = 235.0;
const TOTAL_WIDTH: f64 = WIDTH1 + WIDTH2 + WIDTH3 + GAP1 + GAP2;
const MAX_PLATFORM_WIDTH: f64 = WIDTH2;
const MAX_GAP: f64 = GAP2;
const MAX_HEIGHT: f64 = 1.0;

// Enemy and player constants (both are 20 x 30 boxes).
const ENEMY_SPEED: f64 = 30.0;
const ENEMY_NOISE: f64 = 0.5;
const PLAYER_NOISE: f64 = ENEMY_NOISE;
const SIZE_X: f64 = 20.0;
const SIZE_Y: f64 = 30.0;

// Action constants.
const DT: f64 = 0.05;
const MAX_DX: f64 = 100.0;
const MAX_DY: f64 = 200.0;
const MAX_DX_ON: f64 = 70.0;
const MAX_DDX: f64 = (MAX_DX - MAX_DX_ON) / DT;
const MAX_DDY: f64 = MAX_DY / DT;
const LEAP_DEV: f64 = 1.0;
const HOP_DEV: f64 = 1.0;
const VELOCITY_DECAY: f64 = 0.99;
const GRAVITY: f64 = 9.8;
const HOP_DY0: f64 = 35.0;
const LEAP_DY0: f64 = 25.0;

/// Upper bounds of the parameters of run, hop and leap (the lower bounds are 0).
pub const PARAMETERS_MAX: [f64; 3] = [30.0, 720.0, 430.0];
/// Names of the choices, in choice order.
pub const ACTION_NAMES: [&str; 3] = ["run", "hop", "leap"];
/// Length of the observation.
pub const OBS_LEN: usize = 10;

/// The observation's features, in order (the table above).
pub const FEATURES: [&str; OBS_LEN] = [
    "player x",
    "player x velocity",
    "enemy x",
    "enemy x velocity",
    "platform width",
    "next platform width",
    "gap to next platform",
    "platform left x",
    "height difference",
    "sub-steps of last action",
];

/// The drawing's size: the reference's window (`SCREEN_WIDTH = TOTAL_WIDTH`,
/// `SCREEN_HEIGHT = 300`).
pub const FRAME_SIZE: (u32, u32) = (1035, 300);
/// The reference draws the world 50 pixels above the window's bottom edge.
const FRAME_LIFT: f64 = 50.0;
const SKY: [u8; 3] = [196, 222, 242];
const LEDGE: [u8; 3] = [120, 84, 52];
const LEDGE_TOP: [u8; 3] = [86, 150, 64];
const ENEMY: [u8; 3] = [200, 40, 40];
const PLAYER: [u8; 3] = [40, 70, 200];

/// `state + SHIFT` then `/ SCALE` gives the scaled features.
const SHIFT: [f64; 9] = [SIZE_X, 0.0, 0.0, ENEMY_SPEED, 0.0, 0.0, 0.0, 0.0, 0.0];
const SCALE: [f64; 9] = [
    TOTAL_WIDTH + SIZE_X,
    MAX_DX,
    TOTAL_WIDTH,
    2.0 * ENEMY_SPEED,
    MAX_PLATFORM_WIDTH,
    MAX_PLATFORM_WIDTH,
    MAX_GAP,
    TOTAL_WIDTH,
    MAX_HEIGHT,
];

/// A fixed platform: left x, width (all stand at y = 0 and are 40 high).
#[derive(Debug, Clone, Copy)]
struct Ledge {
    x: f64,
    width: f64,
}

const PLATFORMS: [Ledge; 3] = [
    Ledge {
        x: 0.0,
        width: WIDTH1,
    },
    Ledge {
        x: GAP1 + WIDTH1,
        width: WIDTH2,
    },
    Ledge {
        x: GAP1 + WIDTH1 + GAP2 + WIDTH2,
        width: WIDTH3,
    },
];
/// The platforms' lowest y (all are at 0).
const LOWER_BOUND: f64 = 0.0;
/// The right edge of the last platform: the goal.
const RIGHT_BOUND: f64 = PLATFORMS[2].x + PLATFORMS[2].width;

/// The source of the env's random draws, in the order the original makes them.
pub trait Noise {
    /// One draw of `N(0, std^2)`, as the original's `np_random.normal(0.0, std)`.
    fn normal(&mut self, std: f64) -> f64;
}

impl Noise for EnvRng {
    fn normal(&mut self, std: f64) -> f64 {
        let z: f64 = self.sample(StandardNormal);
        std * z
    }
}

/// The three choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Run,
    Hop,
    Leap,
}

impl Action {
    /// The choice with index `i` of the action space.
    pub fn from_index(i: usize) -> Option<Action> {
        match i {
            0 => Some(Action::Run),
            1 => Some(Action::Hop),
            2 => Some(Action::Leap),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// An enemy patrolling one platform; its y is always the platform's top.
#[derive(Debug, Clone, Copy)]
struct Enemy {
    /// The platform it patrols.
    platform: Ledge,
    x: f64,
    dx: f64,
}

impl Enemy {
    fn new(platform: Ledge) -> Self {
        Enemy {
            platform,
            x: platform.width + platform.x - SIZE_X,
            dx: -ENEMY_SPEED,
        }
    }

    /// `Enemy.update`: turn at the ends, jitter the speed, move.
    fn update<N: Noise + ?Sized>(&mut self, dt: f64, noise: &mut N) {
        let left = self.platform.x;
        let right = self.platform.x + self.platform.width - SIZE_X;
        if !(left < self.x && self.x < right) {
            self.dx *= -1.0;
        }
        self.dx += noise.normal(ENEMY_NOISE * dt);
        self.dx = clip(self.dx, -ENEMY_SPEED, ENEMY_SPEED);
        self.x += self.dx * dt;
        self.x = clip(self.x, left, right);
    }
}

/// The Platform domain; see the module doc.
#[derive(Debug, Clone)]
pub struct Platform {
    /// Agent position (x, y): its lower-left corner.
    pos: [f64; 2],
    /// Agent velocity (x, y).
    vel: [f64; 2],
    /// The enemies of the first and second platform.
    enemies: [Enemy; 2],
    /// Agent x at the start of the running step, for the reward.
    xpos: f64,
    /// Sub-steps the last action took (observation element 9).
    substeps: u32,
}

impl Default for Platform {
    fn default() -> Self {
        Self::new()
    }
}

/// `np.clip` of a scalar.
fn clip(v: f64, lo: f64, hi: f64) -> f64 {
    v.max(lo).min(hi)
}

/// Python's `max(v, 0.0)`: `v` unless `0.0 > v`.
fn py_max0(v: f64) -> f64 {
    if 0.0 > v {
        0.0
    } else {
        v
    }
}

/// `_colliding`: whether two boxes overlap (strictly).
fn colliding(pos: [f64; 2], other_pos: [f64; 2], other_size: [f64; 2]) -> bool {
    let pre = [other_pos[0] - SIZE_X, other_pos[1] - SIZE_Y];
    let post = [other_pos[0] + other_size[0], other_pos[1] + other_size[1]];
    pre[0] < pos[0] && pre[1] < pos[1] && pos[0] < post[0] && pos[1] < post[1]
}

impl Platform {
    /// An env at the start of an episode.
    pub fn new() -> Self {
        Platform {
            pos: [0.0, PLATFORM_HEIGHT],
            vel: [0.0, 0.0],
            enemies: [Enemy::new(PLATFORMS[0]), Enemy::new(PLATFORMS[1])],
            xpos: 0.0,
            substeps: 0,
        }
    }

    /// Starts a new episode (`PlatformEnv.reset`; draws nothing).
    pub fn reset_state(&mut self) {
        *self = Platform::new();
    }

    /// One action (`PlatformEnv.step`): `param` is clipped to the choice's bounds, then
    /// sub-steps run until the action is over or the episode ends.
    pub fn step_with<N: Noise + ?Sized>(
        &mut self,
        action: Action,
        param: f64,
        noise: &mut N,
    ) -> Step {
        let param = clip(param, 0.0, PARAMETERS_MAX[action.index()]);
        let mut steps = 0u32;
        let mut difft = 1.0;
        self.xpos = self.pos[0];
        loop {
            let (reward, terminal) = self.update(action, param, noise);
            let running = match action {
                Action::Run => {
                    difft -= DT;
                    difft > 0.0
                }
                Action::Hop | Action::Leap => !self.on_platforms(),
            };
            steps += 1;
            if terminal || !running {
                self.substeps = steps;
                return Step {
                    reward,
                    terminated: terminal,
                    truncated: false,
                };
            }
        }
    }

    /// The observation in `f64`: the nine scaled features (`get_state`) and the
    /// sub-step count of the last action.
    pub fn features(&self) -> [f64; OBS_LEN] {
        let x = self.pos[0];
        let enemy = &self.enemies[self.enemy_index()];
        let (wd1, wd2, gap, pos) = if x < WIDTH1 + GAP1 {
            (WIDTH1, WIDTH2, GAP1, 0.0)
        } else if x < WIDTH1 + GAP1 + WIDTH2 + GAP2 {
            (WIDTH2, WIDTH3, GAP2, WIDTH1 + GAP1)
        } else {
            (WIDTH3, 0.0, 0.0, WIDTH1 + GAP1 + WIDTH2 + GAP2)
        };
        let state = [x, self.vel[0], enemy.x, enemy.dx, wd1, wd2, gap, pos, 0.0];
        let mut out = [0.0; OBS_LEN];
        for (o, ((s, shift), scale)) in out.iter_mut().zip(state.iter().zip(SHIFT).zip(SCALE)) {
            *o = (s + shift) / scale;
        }
        out[9] = f64::from(self.substeps);
        out
    }

    fn write_obs(&self, obs: &mut [f32]) {
        for (o, f) in obs.iter_mut().zip(self.features()) {
            *o = f as f32;
        }
    }

    /// The enemy the agent faces: the second once past the second platform's left edge.
    fn enemy_index(&self) -> usize {
        usize::from(self.pos[0] > PLATFORMS[1].x)
    }

    /// `_update`: one sub-step; returns the step's reward so far and whether it ended.
    fn update<N: Noise + ?Sized>(
        &mut self,
        action: Action,
        param: f64,
        noise: &mut N,
    ) -> (f64, bool) {
        // _perform_action
        if self.on_platforms() {
            match action {
                Action::Run => self.run(param, DT, noise),
                Action::Hop => self.jump_to(param, HOP_DY0, HOP_DEV, noise),
                Action::Leap => self.jump_to(param, LEAP_DY0, LEAP_DEV, noise),
            }
        } else {
            self.accelerate([0.0, -GRAVITY], DT, noise); // fall
        }
        if self.on_platforms() {
            self.vel[0] = clip(self.vel[0], 0.0, MAX_DX_ON); // ground_bound
        }
        let e = self.enemy_index();
        // Player.update
        self.pos[0] += self.vel[0] * DT;
        self.pos[1] += self.vel[1] * DT;
        self.pos[0] = clip(self.pos[0], 0.0, TOTAL_WIDTH);
        self.vel[0] *= VELOCITY_DECAY;
        self.enemies[e].update(DT, noise);
        for p in PLATFORMS {
            if colliding(self.pos, [p.x, 0.0], [p.width, PLATFORM_HEIGHT]) {
                self.decollide(p);
                self.vel[0] = 0.0;
            }
        }
        let reward = (self.pos[0] - self.xpos) / RIGHT_BOUND;
        self.terminal_check(reward)
    }

    /// `_terminal_check`: falling, touching an enemy, or reaching the goal (which pays
    /// the rest of the way from the step's start).
    fn terminal_check(&self, reward: f64) -> (f64, bool) {
        let mut end = self.pos[1] < LOWER_BOUND + PLATFORM_HEIGHT;
        let right = self.pos[0] >= RIGHT_BOUND;
        for enemy in &self.enemies {
            let at = [enemy.x, PLATFORM_HEIGHT];
            if colliding(self.pos, at, [SIZE_X, SIZE_Y]) {
                end = true;
            }
        }
        if right {
            return ((RIGHT_BOUND - self.xpos) / RIGHT_BOUND, true);
        }
        (reward, end)
    }

    fn on_platforms(&self) -> bool {
        PLATFORMS.iter().any(|p| {
            let d = self.pos[0] - p.x;
            -SIZE_X <= d && d <= p.width && self.pos[1] - 0.0 == PLATFORM_HEIGHT
        })
    }

    /// `Player.accelerate`.
    fn accelerate<N: Noise + ?Sized>(&mut self, accel: [f64; 2], dt: f64, noise: &mut N) {
        let ax = clip(accel[0], -MAX_DDX, MAX_DDX);
        let ay = clip(accel[1], -MAX_DDY, MAX_DDY);
        self.vel[0] += ax * dt;
        self.vel[1] += ay * dt;
        self.vel[0] -= noise.normal(PLAYER_NOISE * dt).abs();
        self.vel[0] = clip(self.vel[0], -MAX_DX, MAX_DX);
        self.vel[1] = clip(self.vel[1], -MAX_DY, MAX_DY);
        self.vel[0] = py_max0(self.vel[0]);
    }

    /// `Player.run`.
    fn run<N: Noise + ?Sized>(&mut self, power: f64, dt: f64, noise: &mut N) {
        if dt > 0.0 {
            self.accelerate([power / dt, 0.0], dt, noise);
        }
    }

    /// `Player.jump_to`: the take-off velocity that would cover `diffx`, with noise.
    fn jump_to<N: Noise + ?Sized>(&mut self, diffx: f64, dy0: f64, dev: f64, noise: &mut N) {
        let time = 2.0 * dy0 / GRAVITY + 1.0;
        let dx0 = diffx / time - self.vel[0];
        let dx0 = clip(dx0, -MAX_DDX, MAX_DY - dy0);
        let (nx, ny) = if dev > 0.0 {
            let a = noise.normal(dev);
            let b = noise.normal(dev);
            (-a.abs(), -b.abs())
        } else {
            (0.0, 0.0)
        };
        let acceleration = [dx0 + nx, dy0 + ny];
        self.accelerate([acceleration[0] / DT, acceleration[1] / DT], DT, noise);
    }

    /// `Player.decollide`: shift the agent out of a platform along the shorter way.
    fn decollide(&mut self, other: Ledge) {
        let (ox, oy) = (other.x, 0.0);
        let pre = [ox - SIZE_X, oy - SIZE_Y];
        let post = [ox + other.width, oy + PLATFORM_HEIGHT];
        let [x, y] = self.pos;
        let mut newx = x;
        let mut newy = y;
        if x < ox {
            newx = pre[0];
        } else if x > post[0] - SIZE_X {
            newx = post[0];
        }
        if y < oy {
            newy = pre[1];
        } else if y > post[1] - SIZE_Y {
            newy = post[1];
        }
        if newx == x {
            self.vel[1] = 0.0;
            self.pos[1] = newy;
        } else if newy == y || (x - newx).abs() < (y - newy).abs() {
            self.vel[0] = 0.0;
            self.pos[0] = newx;
        } else {
            self.vel[1] = 0.0;
            self.pos[1] = newy;
        }
    }
}

impl Env for Platform {
    type Obs = f32;

    fn observation_space(&self) -> Space {
        let mut low = vec![0.0f32; OBS_LEN];
        let mut high = vec![1.0f32; OBS_LEN];
        low[9] = 0.0;
        // The original declares the step count Discrete(200).
        high[9] = 200.0;
        Space::Box {
            shape: vec![OBS_LEN],
            low,
            high,
        }
    }

    fn action_space(&self) -> Space {
        Space::Parameterised {
            params: ACTION_NAMES
                .iter()
                .zip(PARAMETERS_MAX)
                .map(|(name, hi)| ParamBox {
                    name: (*name).into(),
                    low: vec![0.0],
                    high: vec![hi as f32],
                })
                .collect(),
        }
    }

    fn max_episode_steps(&self) -> Option<u32> {
        Some(200)
    }

    fn reset(&mut self, _rng: &mut EnvRng, obs: &mut [f32]) -> EnvResult<()> {
        self.reset_state();
        self.write_obs(obs);
        Ok(())
    }

    /// Takes the chosen parameter (each choice has one, so choice `k` reads
    /// `params[k]`).
    ///
    /// An action that is not a parameterised one with a choice in `0..3` and three
    /// parameters is an error (the vector env validates actions against the action
    /// space first, so it does not get here).
    fn step(
        &mut self,
        action: ActionRef<'_>,
        rng: &mut EnvRng,
        obs: &mut [f32],
    ) -> EnvResult<Step> {
        let decoded = match action {
            ActionRef::Parameterised { choice, params } if params.len() == 3 => {
                Action::from_index(choice).map(|a| (a, params[choice]))
            }
            _ => None,
        };
        let Some((act, param)) = decoded else {
            return Err(EnvError::InvalidAction(format!(
                "platform takes a parameterised action with a choice in 0..3 and 3 parameters, got {action:?}"
            )));
        };
        let step = self.step_with(act, f64::from(param), rng);
        self.write_obs(obs);
        Ok(step)
    }

    /// The reference's picture (`_draw_render_state`) in flat colours instead of its
    /// sprites: a 1035x300 window with the world's y axis up and lifted 50 pixels,
    /// brown platforms (40 high, a green top) with sky in the gaps, red enemies and
    /// the blue player, all 20x30 boxes whose lower-left corner is their position.
    fn render(&mut self) -> EnvResult<Frame> {
        let (w, h) = FRAME_SIZE;
        let mut f = Frame::filled(w, h, SKY);
        // World (x, y) to frame rows: y up, lifted.
        let row = |y: f64| (f64::from(h) - (y + FRAME_LIFT)).round() as i64;
        let rect = |f: &mut Frame, x: f64, y: f64, dx: f64, dy: f64, c: [u8; 3]| {
            f.fill_rect(
                x.round() as i64,
                row(y + dy),
                (x + dx).round() as i64,
                row(y),
                c,
            );
        };
        for p in PLATFORMS {
            rect(&mut f, p.x, LOWER_BOUND, p.width, PLATFORM_HEIGHT, LEDGE);
            rect(&mut f, p.x, PLATFORM_HEIGHT - 4.0, p.width, 4.0, LEDGE_TOP);
        }
        for e in &self.enemies {
            rect(&mut f, e.x, PLATFORM_HEIGHT, SIZE_X, SIZE_Y, ENEMY);
        }
        rect(&mut f, self.pos[0], self.pos[1], SIZE_X, SIZE_Y, PLAYER);
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Draws nothing but zeros.
    struct Quiet;
    impl Noise for Quiet {
        fn normal(&mut self, _std: f64) -> f64 {
            0.0
        }
    }

    #[test]
    fn geometry_and_reset_observation() {
        assert_eq!(TOTAL_WIDTH, 1035.0);
        assert_eq!(RIGHT_BOUND, 1035.0);
        assert_eq!(PLATFORMS[1].x, 475.0);
        assert_eq!(PLATFORMS[2].x, 985.0);
        let env = Platform::new();
        assert_eq!(env.enemies[0].x, 230.0);
        assert_eq!(env.enemies[1].x, 730.0);
        let f = env.features();
        let want = [
            20.0 / 1055.0,
            0.0,
            230.0 / 1035.0,
            0.0,
            250.0 / 275.0,
            1.0,
            225.0 / 235.0,
            0.0,
            0.0,
            0.0,
        ];
        assert_eq!(f, want);
    }

    #[test]
    fn run_takes_twenty_sub_steps_and_pays_progress() {
        let mut env = Platform::new();
        let s = env.step_with(Action::Run, 30.0, &mut Quiet);
        assert_eq!(env.substeps, 20);
        assert!(!s.terminated);
        assert!((s.reward - env.pos[0] / 1035.0).abs() < 1e-15);
        assert!(env.pos[0] > 60.0, "{}", env.pos[0]);
    }

    #[test]
    fn parameters_are_clipped() {
        let mut a = Platform::new();
        let mut b = Platform::new();
        let sa = a.step_with(Action::Leap, 1e6, &mut Quiet);
        let sb = b.step_with(Action::Leap, 430.0, &mut Quiet);
        assert_eq!(sa, sb);
        assert_eq!(a.features(), b.features());
        let mut c = Platform::new();
        let mut d = Platform::new();
        assert_eq!(
            c.step_with(Action::Run, -5.0, &mut Quiet),
            d.step_with(Action::Run, 0.0, &mut Quiet)
        );
    }

    #[test]
    fn walking_off_the_first_platform_falls() {
        let mut env = Platform::new();
        let mut rng = EnvRng::seed_from_u64(3);
        let mut last = None;
        for _ in 0..10 {
            let s = env.step_with(Action::Run, 30.0, &mut rng);
            last = Some(s);
            if s.terminated {
                break;
            }
        }
        let s = last.expect("at least one step");
        // Either the first enemy or the gap ends it, well before the goal.
        assert!(s.terminated);
        assert!(env.pos[0] < 475.0);
    }

    #[test]
    fn env_trait_writes_the_observation() {
        let mut env = Platform::new();
        let mut rng = EnvRng::seed_from_u64(1);
        let mut obs = [f32::NAN; OBS_LEN];
        env.reset(&mut rng, &mut obs).unwrap();
        assert_eq!(obs[9], 0.0);
        let params = [30.0f32, 0.0, 0.0];
        env.step(
            ActionRef::Parameterised {
                choice: 0,
                params: &params,
            },
            &mut rng,
            &mut obs,
        )
        .unwrap();
        assert_eq!(obs[9], 20.0);
        for (o, f) in obs.iter().zip(env.features()) {
            assert_eq!(*o, f as f32);
        }
        assert_eq!(env.action_space().flat_len(), 3);
        assert_eq!(env.observation_space().flat_len(), OBS_LEN);
    }

    /// Uniform-random policy statistics against REFERENCE.md (mean return about 0.155,
    /// about 2.2 steps), with a tolerance of four standard errors plus the rounding of
    /// the reference numbers.
    #[test]
    fn uniform_random_policy_matches_the_reference_statistics() {
        let (ret, len) = random_policy_stats(5000, 42);
        let tol_r = 4.0 * ret.1 + 0.0005;
        let tol_l = 4.0 * len.1 + 0.05;
        assert!(
            (ret.0 - 0.155).abs() < tol_r,
            "mean return {} +- {}",
            ret.0,
            ret.1
        );
        assert!(
            (len.0 - 2.2).abs() < tol_l,
            "mean length {} +- {}",
            len.0,
            len.1
        );
    }

    /// (mean, standard error) of the return and the length of `n` uniform-random
    /// episodes, capped at 200 steps.
    fn random_policy_stats(n: usize, seed: u64) -> ((f64, f64), (f64, f64)) {
        let mut env = Platform::new();
        let mut rng = EnvRng::seed_from_u64(seed);
        let mut rets = Vec::with_capacity(n);
        let mut lens = Vec::with_capacity(n);
        for _ in 0..n {
            env.reset_state();
            let (mut ret, mut len) = (0.0, 0u32);
            while len < 200 {
                let k = rng.random_range(0..3);
                let p = rng.random_range(0.0..PARAMETERS_MAX[k] as f32);
                let s = env.step_with(
                    Action::from_index(k).expect("k < 3"),
                    f64::from(p),
                    &mut rng,
                );
                ret += s.reward;
                len += 1;
                if s.terminated {
                    break;
                }
            }
            rets.push(ret);
            lens.push(f64::from(len));
        }
        (mean_se(&rets), mean_se(&lens))
    }

    fn mean_se(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
        (m, (var / n).sqrt())
    }

    #[test]
    fn the_drawing_shows_platforms_gaps_enemies_and_the_player() {
        let mut env = Platform::new();
        let f = env.render().unwrap();
        assert_eq!((f.width, f.height), FRAME_SIZE);
        // Platforms fill rows 210..250; the first gap (x 250..475) is sky.
        assert_eq!(f.pixel(100, 230), LEDGE);
        assert_eq!(f.pixel(300, 230), SKY);
        assert_eq!(f.pixel(1000, 230), LEDGE);
        // The player stands on the first platform at x 0..20, rows 180..210; the
        // enemies start at the right ends of the first two platforms.
        assert_eq!(f.pixel(10, 195), PLAYER);
        assert_eq!(f.pixel(240, 195), ENEMY);
        assert_eq!(f.pixel(740, 195), ENEMY);
        assert_eq!(f.pixel(100, 100), SKY);
        let mut rng = EnvRng::seed_from_u64(0);
        let mut obs = [0.0; OBS_LEN];
        env.step(
            ActionRef::Parameterised {
                choice: 0,
                params: &[20.0, 0.0, 0.0],
            },
            &mut rng,
            &mut obs,
        )
        .unwrap();
        let g = env.render().unwrap();
        assert_ne!(f, g, "the player moved");
    }
}
