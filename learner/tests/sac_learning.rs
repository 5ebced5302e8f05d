//! Learning smoke test: SAC (`Sac::update` on a `ReplayBuffer`) on Hopper-v5 collected
//! in process from the vector env (no gRPC), with CleanRL's `sac_continuous_action.py`
//! settings except smaller networks and a shorter warm-up, so it runs in minutes on two
//! CPU cores: one env, uniform random actions first, then one gradient update per env
//! step (batch 256, gamma 0.99, tau 0.005, policy lr 3e-4, Q lr 1e-3, delayed actor
//! steps, automatic temperature). Random actions score about 18 on Hopper; after the
//! step budget the deterministic policy must clearly beat that.

use std::time::Instant;

use rand::SeedableRng;
use tch::{Device, Tensor};
use volley_common::env::{make_vec_env, Actions, EnvId, EnvRng, VecEnvOptions};
use volley_common::nn::sac::SacSpec;
use volley_learner::replay::ReplayBuffer;
use volley_learner::sac::{Sac, SacConfig, UpdateBudget};

const SEED: u64 = 1;
/// Env steps in all, the first `LEARNING_STARTS` with random actions.
const TOTAL_STEPS: u64 = 12_000;
const LEARNING_STARTS: u64 = 2_000;
const HIDDEN: [usize; 2] = [64, 64];
/// Deterministic evaluation episodes at the end.
const EVAL_EPISODES: usize = 5;
/// Mean evaluation return to reach (random actions: about 18).
const TARGET: f64 = 150.0;

fn to_vec(t: &Tensor) -> Result<Vec<f32>, tch::TchError> {
    Vec::<f32>::try_from(t.f_reshape([-1])?)
}

#[test]
fn sac_learns_hopper() -> Result<(), Box<dyn std::error::Error>> {
    tch::set_num_threads(1);
    tch::manual_seed(SEED as i64);
    let started = Instant::now();
    let id: EnvId = "Hopper-v5".parse()?;
    let opts = VecEnvOptions {
        num_envs: 1,
        threads: 1,
    };
    let mut env = make_vec_env(&id, opts)?;
    let cfg = SacConfig {
        learning_starts: LEARNING_STARTS,
        buffer_size: TOTAL_STEPS as usize,
        hidden: HIDDEN.to_vec(),
        ..SacConfig::default()
    };
    let spec = SacSpec::for_spaces(
        env.observation_space(),
        env.action_space(),
        cfg.hidden.clone(),
    )?;
    let (obs_dim, act_dim) = (spec.obs_dim, spec.action_dim());
    let mut sac = Sac::new(spec, cfg.clone(), Device::Cpu)?;
    let mut buf = ReplayBuffer::new(
        cfg.buffer_size,
        obs_dim,
        act_dim,
        cfg.buffer_max_bytes(),
        Device::Cpu,
    )?;
    let mut rng = EnvRng::seed_from_u64(SEED);
    let mut budget = UpdateBudget::default();

    let mut obs: Vec<f32> = env
        .reset(SEED)?
        .obs
        .as_f32()
        .ok_or("hopper observations are f32")?
        .to_vec();
    let mut returns: Vec<f32> = Vec::new();
    let mut last = None;
    for step in 0..TOTAL_STEPS {
        let act = if cfg.random_phase(step) {
            to_vec(&sac.actor.act_random(1)?)?
        } else {
            let o = Tensor::from_slice(&obs).view([1, obs_dim as i64]);
            to_vec(&sac.actor.act(&o)?)?
        };
        let sb = env.step(Actions::Continuous(&act))?;
        buf.push_env_step(&obs, &act, sb)?;
        if sb.terminated[0] || sb.truncated[0] {
            returns.push(sb.episode_return[0]);
        }
        obs.copy_from_slice(sb.obs.as_f32().ok_or("hopper observations are f32")?);
        if !cfg.random_phase(step) {
            for _ in 0..budget.add_steps(1, cfg.replay_ratio) {
                last = Some(sac.update(&buf.sample(cfg.batch_size, &mut rng)?)?);
            }
        }
    }
    let train_secs = started.elapsed().as_secs_f64();

    // Deterministic evaluation on a fresh env.
    let mut eval = make_vec_env(&id, opts)?;
    let mut o = eval
        .reset(SEED + 1000)?
        .obs
        .as_f32()
        .ok_or("hopper observations are f32")?
        .to_vec();
    let mut eval_returns = Vec::new();
    while eval_returns.len() < EVAL_EPISODES {
        let a = to_vec(
            &sac.actor
                .act_deterministic(&Tensor::from_slice(&o).view([1, -1]))?,
        )?;
        let sb = eval.step(Actions::Continuous(&a))?;
        if sb.terminated[0] || sb.truncated[0] {
            eval_returns.push(f64::from(sb.episode_return[0]));
        }
        o.copy_from_slice(sb.obs.as_f32().ok_or("hopper observations are f32")?);
    }
    let mean_eval = eval_returns.iter().sum::<f64>() / eval_returns.len() as f64;
    let random: Vec<f32> = returns.iter().take(20).copied().collect();
    let mean_random =
        random.iter().map(|&r| f64::from(r)).sum::<f64>() / random.len().max(1) as f64;
    let tail: Vec<f32> = returns.iter().rev().take(10).copied().collect();
    eprintln!(
        "sac hopper: {} episodes in {TOTAL_STEPS} steps, {} updates in {train_secs:.1} s; \
         first 20 (random) mean {mean_random:.1}; last 10 {tail:?}; eval {eval_returns:?} \
         mean {mean_eval:.1}; last stats {last:?}; total {:.1} s",
        returns.len(),
        sac.updates(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        mean_eval >= TARGET,
        "mean deterministic return {mean_eval:.1} after {TOTAL_STEPS} steps, needed {TARGET}"
    );
    Ok(())
}
