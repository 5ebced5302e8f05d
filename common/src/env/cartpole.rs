//! CartPole-v1 as Gymnasium 1.x defines it (`gymnasium/envs/classic_control/cartpole.py`,
//! after Barto, Sutton and Anderson 1983): Euler integration with tau 0.02, reward 1
//! per step including the terminating one, termination when |x| > 2.4 or
//! |theta| > 12 degrees, truncation at 500 steps, reset state U(-0.05, 0.05).

use rand::Rng;

use super::{ActionRef, Env, EnvResult, EnvRng, Frame, Space, Step};

const GRAVITY: f64 = 9.8;
const MASS_CART: f64 = 1.0;
const MASS_POLE: f64 = 0.1;
const TOTAL_MASS: f64 = MASS_CART + MASS_POLE;
const LENGTH: f64 = 0.5; // half the pole's length
const POLE_MASS_LENGTH: f64 = MASS_POLE * LENGTH;
const FORCE_MAG: f64 = 10.0;
const TAU: f64 = 0.02;
const THETA_THRESHOLD: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
const X_THRESHOLD: f64 = 2.4;

/// The observation's features, in order, as Gymnasium documents them.
pub const FEATURES: [&str; 4] = [
    "cart position",
    "cart velocity",
    "pole angle",
    "pole angular velocity",
];

/// The cart-pole balancing task; state `[x, x_dot, theta, theta_dot]`.
#[derive(Debug, Clone, Default)]
pub struct CartPole {
    pub state: [f64; 4],
}

impl CartPole {
    fn write_obs(&self, obs: &mut [f32]) {
        for (o, s) in obs.iter_mut().zip(self.state) {
            *o = s as f32;
        }
    }
}

impl Env for CartPole {
    type Obs = f32;

    fn observation_space(&self) -> Space {
        let hi = [
            (X_THRESHOLD * 2.0) as f32,
            f32::MAX,
            (THETA_THRESHOLD * 2.0) as f32,
            f32::MAX,
        ];
        Space::Box {
            shape: vec![4],
            low: hi.iter().map(|h| -h).collect(),
            high: hi.to_vec(),
        }
    }

    fn action_space(&self) -> Space {
        Space::Discrete { n: 2 }
    }

    fn max_episode_steps(&self) -> Option<u32> {
        Some(500)
    }

    fn reset(&mut self, rng: &mut EnvRng, obs: &mut [f32]) -> EnvResult<()> {
        for s in &mut self.state {
            *s = rng.random_range(-0.05..0.05);
        }
        self.write_obs(obs);
        Ok(())
    }

    fn step(
        &mut self,
        action: ActionRef<'_>,
        _rng: &mut EnvRng,
        obs: &mut [f32],
    ) -> EnvResult<Step> {
        let push_right = matches!(action, ActionRef::Discrete(1));
        let [x, x_dot, theta, theta_dot] = self.state;
        let force = if push_right { FORCE_MAG } else { -FORCE_MAG };
        let (sin, cos) = theta.sin_cos();
        let temp = (force + POLE_MASS_LENGTH * theta_dot * theta_dot * sin) / TOTAL_MASS;
        let theta_acc = (GRAVITY * sin - cos * temp)
            / (LENGTH * (4.0 / 3.0 - MASS_POLE * cos * cos / TOTAL_MASS));
        let x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS;
        self.state = [
            x + TAU * x_dot,
            x_dot + TAU * x_acc,
            theta + TAU * theta_dot,
            theta_dot + TAU * theta_acc,
        ];
        self.write_obs(obs);
        let [x, _, theta, _] = self.state;
        Ok(Step {
            reward: 1.0,
            terminated: !(-X_THRESHOLD..=X_THRESHOLD).contains(&x)
                || !(-THETA_THRESHOLD..=THETA_THRESHOLD).contains(&theta),
            truncated: false,
        })
    }

    fn render(&mut self) -> EnvResult<Frame> {
        Ok(draw(&self.state))
    }
}

/// Gymnasium's drawing (`CartPoleEnv.render`, 600x400): a black cart on a black track
/// line, a tan pole on a blue-grey axle, the track's width of 4.8 at 125 pixels per
/// unit, the world's y axis up.
fn draw(state: &[f64; 4]) -> Frame {
    const W: f64 = 600.0;
    const H: f64 = 400.0;
    let scale = W / (X_THRESHOLD * 2.0);
    let (pole_w, pole_len) = (10.0, scale * (2.0 * LENGTH));
    let (cart_w, cart_h) = (50.0, 30.0);
    let axle_offset = cart_h / 4.0;
    let cart_y = 100.0;
    let cart_x = state[0] * scale + W / 2.0;
    // World pixels (y up) to frame pixels (y down).
    let px = |x: f64, y: f64| (x, H - y);
    let mut f = Frame::filled(W as u32, H as u32, [255, 255, 255]);
    let (l, r, t, b) = (-cart_w / 2.0, cart_w / 2.0, cart_h / 2.0, -cart_h / 2.0);
    let cart: Vec<(f64, f64)> = [(l, b), (l, t), (r, t), (r, b)]
        .iter()
        .map(|&(x, y)| px(x + cart_x, y + cart_y))
        .collect();
    f.fill_rect(
        0,
        (H - cart_y) as i64,
        W as i64,
        (H - cart_y) as i64 + 1,
        [0, 0, 0],
    );
    f.fill_convex(&cart, [0, 0, 0]);
    let (l, r, t, b) = (
        -pole_w / 2.0,
        pole_w / 2.0,
        pole_len - pole_w / 2.0,
        -pole_w / 2.0,
    );
    // pygame's Vector2.rotate_rad(-theta): the pole leans right for positive angles.
    let (sin, cos) = (-state[2]).sin_cos();
    let pole: Vec<(f64, f64)> = [(l, b), (l, t), (r, t), (r, b)]
        .iter()
        .map(|&(x, y)| {
            let (rx, ry) = (x * cos - y * sin, x * sin + y * cos);
            px(rx + cart_x, ry + cart_y + axle_offset)
        })
        .collect();
    f.fill_convex(&pole, [202, 152, 101]);
    let (ax, ay) = px(cart_x, cart_y + axle_offset);
    f.fill_circle(ax, ay, pole_w / 2.0, [129, 132, 203]);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// One step from a fixed state, computed by hand from Gymnasium's equations.
    #[test]
    fn one_euler_step_matches_hand_computation() {
        let mut env = CartPole {
            state: [0.01, 0.02, 0.03, 0.04],
        };
        let mut rng = EnvRng::seed_from_u64(0);
        let mut obs = [0.0f32; 4];
        let s = env
            .step(ActionRef::Discrete(1), &mut rng, &mut obs)
            .unwrap();
        // temp = (10 + 0.05 * 0.0016 * sin(0.03)) / 1.1
        let (sin, cos) = 0.03f64.sin_cos();
        let temp = (10.0 + 0.05 * 0.04 * 0.04 * sin) / 1.1;
        let ta = (9.8 * sin - cos * temp) / (0.5 * (4.0 / 3.0 - 0.1 * cos * cos / 1.1));
        let xa = temp - 0.05 * ta * cos / 1.1;
        let want = [
            0.01 + 0.02 * 0.02,
            0.02 + 0.02 * xa,
            0.03 + 0.02 * 0.04,
            0.04 + 0.02 * ta,
        ];
        for (a, b) in env.state.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{a} vs {b}");
        }
        assert_eq!(s.reward, 1.0);
        assert!(!s.terminated);
    }

    #[test]
    fn leaving_the_track_terminates() {
        let mut env = CartPole {
            state: [2.399, 1.0, 0.0, 0.0],
        };
        let mut rng = EnvRng::seed_from_u64(0);
        let mut obs = [0.0f32; 4];
        let s = env
            .step(ActionRef::Discrete(1), &mut rng, &mut obs)
            .unwrap();
        assert!(s.terminated);
        assert_eq!(s.reward, 1.0);
    }

    #[test]
    fn the_drawing_puts_the_cart_where_the_state_says() {
        let pole = [202, 152, 101];
        let f = draw(&[0.0, 0.0, 0.0, 0.0]);
        assert_eq!((f.width, f.height), (600, 400));
        // Cart centre (300, 300); the upright pole above it; background elsewhere.
        assert_eq!(f.pixel(300, 300), [0, 0, 0]);
        assert_eq!(f.pixel(300, 250), pole);
        assert_eq!(f.pixel(100, 100), [255, 255, 255]);
        // One unit right is 125 pixels right; a positive angle leans the pole right.
        let g = draw(&[1.0, 0.0, 0.2, 0.0]);
        assert_eq!(g.pixel(425, 300), [0, 0, 0]);
        assert_eq!(g.pixel(300, 310), [255, 255, 255]);
        assert_eq!(g.pixel(441, 215), pole);
    }
}
