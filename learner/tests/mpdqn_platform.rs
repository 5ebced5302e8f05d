//! Learning test: MP-DQN (`Mpdqn::update`) on Platform, in process (no gRPC), with the
//! training loop of the reference `run_platform_pdqn.py`: one env, epsilon annealed
//! linearly per episode from 1 to 0.01 over 1000 episodes, OU noise on the chosen
//! parameters, a uniform replay of 10000 transitions, updates from the 500th
//! transition on, one update per env step; every hyperparameter at its reference
//! default. After `EPISODES` training episodes the greedy policy (no epsilon, no noise)
//! must average a return of at least 0.6 over `EVAL_EPISODES` episodes (a uniform
//! random policy scores about 0.16, the reference reports 0.987 after 20000 episodes).
//!
//! The run is deterministic for a seed on a given machine (one torch thread, seeded
//! env, explorer and replay sampling). The greedy return of a single run swings from
//! evaluation to evaluation, and some seeds are still stuck at the second gap (about
//! 0.45) after 3000 episodes: over seeds 1 to 10 the final greedy returns were 0.998,
//! 0.654, 0.873, 0.433, 0.951, 0.463, 0.902, 1.000, 1.000 and 0.449. Seed 1 stays above
//! 0.8 from episode 1000 on. `MPDQN_SEED`, `MPDQN_EPISODES`, `MPDQN_EVAL_EVERY` (print
//! a 100-episode greedy evaluation every so many episodes) and `MPDQN_PDQN` (any value:
//! plain P-DQN) override the defaults for such sweeps.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Tensor};
use volley_common::env::{make_vec_env, Actions, EnvId, VecEnv, VecEnvOptions};
use volley_common::nn::mpdqn::MpdqnNet;
use volley_learner::mpdqn::{Mpdqn, MpdqnBatch, MpdqnConfig};

const SEED: u64 = 1;
const EPISODES: u64 = 3000;
const EVAL_EPISODES: usize = 200;
const TARGET: f64 = 0.6;

/// A uniform replay of the last `capacity` transitions (the test's own; the learner's
/// replay lives elsewhere).
struct Replay {
    capacity: usize,
    obs_len: usize,
    param_dim: usize,
    next: usize,
    len: usize,
    obs: Vec<f32>,
    choice: Vec<i64>,
    params: Vec<f32>,
    reward: Vec<f32>,
    next_obs: Vec<f32>,
    terminated: Vec<f32>,
}

impl Replay {
    fn new(capacity: usize, obs_len: usize, param_dim: usize) -> Self {
        Replay {
            capacity,
            obs_len,
            param_dim,
            next: 0,
            len: 0,
            obs: vec![0.0; capacity * obs_len],
            choice: vec![0; capacity],
            params: vec![0.0; capacity * param_dim],
            reward: vec![0.0; capacity],
            next_obs: vec![0.0; capacity * obs_len],
            terminated: vec![0.0; capacity],
        }
    }

    fn push(
        &mut self,
        obs: &[f32],
        choice: i64,
        params: &[f32],
        reward: f32,
        next_obs: &[f32],
        terminated: bool,
    ) {
        let (i, o, p) = (self.next, self.obs_len, self.param_dim);
        self.obs[i * o..(i + 1) * o].copy_from_slice(obs);
        self.choice[i] = choice;
        self.params[i * p..(i + 1) * p].copy_from_slice(params);
        self.reward[i] = reward;
        self.next_obs[i * o..(i + 1) * o].copy_from_slice(next_obs);
        self.terminated[i] = if terminated { 1.0 } else { 0.0 };
        self.next = (i + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
    }

    fn sample(&self, n: usize, rng: &mut StdRng) -> MpdqnBatch {
        let (o, p) = (self.obs_len, self.param_dim);
        let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..self.len)).collect();
        let rows = |src: &[f32], w: usize| -> Tensor {
            let mut v = Vec::with_capacity(n * w);
            for &i in &idx {
                v.extend_from_slice(&src[i * w..(i + 1) * w]);
            }
            Tensor::from_slice(&v).view([n as i64, w as i64])
        };
        let col =
            |src: &[f32]| Tensor::from_slice(&idx.iter().map(|&i| src[i]).collect::<Vec<_>>());
        MpdqnBatch {
            obs: rows(&self.obs, o),
            choice: Tensor::from_slice(&idx.iter().map(|&i| self.choice[i]).collect::<Vec<_>>()),
            params: rows(&self.params, p),
            reward: col(&self.reward),
            next_obs: rows(&self.next_obs, o),
            terminated: col(&self.terminated),
        }
    }
}

/// Mean undiscounted return of the greedy policy over `episodes` episodes.
fn evaluate(
    net: &MpdqnNet,
    env: &mut dyn VecEnv,
    episodes: usize,
    seed: u64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut obs = env.reset(seed)?.obs.as_f32().ok_or("f32 obs")?.to_vec();
    let mut returns = Vec::with_capacity(episodes);
    while returns.len() < episodes {
        let a = net.act_greedy(&obs)?;
        let batch = env.step(Actions::Parameterised {
            choice: &a.choice,
            params: &a.env_params,
        })?;
        for (_, ret, _) in batch.finished_episodes() {
            returns.push(f64::from(ret));
        }
        obs.copy_from_slice(batch.obs.as_f32().ok_or("f32 obs")?);
    }
    Ok(returns.iter().sum::<f64>() / returns.len() as f64)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn mpdqn_learns_platform() -> Result<(), Box<dyn std::error::Error>> {
    tch::set_num_threads(1);
    let seed = env_u64("MPDQN_SEED", SEED);
    let episodes = env_u64("MPDQN_EPISODES", EPISODES);
    let eval_every = env_u64("MPDQN_EVAL_EVERY", 0);
    tch::manual_seed(seed as i64);
    let started = Instant::now();
    let id: EnvId = "platform".parse()?;
    let opts = VecEnvOptions {
        num_envs: 1,
        threads: 1,
    };
    let mut env = make_vec_env(&id, opts)?;
    let mut eval_env = make_vec_env(&id, opts)?;
    let cfg = MpdqnConfig {
        multipass: std::env::var("MPDQN_PDQN").is_err(),
        ..MpdqnConfig::default()
    };
    let mut agent = Mpdqn::for_spaces(
        cfg.clone(),
        env.observation_space(),
        env.action_space(),
        Device::Cpu,
    )?;
    let spec = agent.net().spec().clone();
    let (obs_len, param_dim) = (spec.obs_len, spec.param_dim());
    let mut explorer = cfg.explorer(1, param_dim, seed);
    let mut replay = Replay::new(cfg.replay_size, obs_len, param_dim);
    let mut rng = StdRng::seed_from_u64(seed);

    let mut obs = env.reset(seed)?.obs.as_f32().ok_or("f32 obs")?.to_vec();
    let mut next_obs = vec![0f32; obs_len];
    let (mut episode, mut steps, mut updates) = (0u64, 0usize, 0usize);
    let mut recent = Vec::new();
    let mut last_stats = None;
    while episode < episodes {
        let a = agent.net().act(&obs, &mut explorer)?;
        let batch = env.step(Actions::Parameterised {
            choice: &a.choice,
            params: &a.env_params,
        })?;
        steps += 1;
        let done = batch.done(0);
        let src = if done && batch.has_final_obs {
            batch.final_obs.as_f32().ok_or("f32 final obs")?
        } else {
            batch.obs.as_f32().ok_or("f32 obs")?
        };
        next_obs.copy_from_slice(&src[..obs_len]);
        replay.push(
            &obs,
            a.choice[0],
            &a.params,
            batch.reward[0],
            &next_obs,
            batch.terminated[0],
        );
        if done {
            recent.push(batch.episode_return[0]);
            episode += 1;
            explorer.epsilon = cfg.epsilon(episode);
        }
        obs.copy_from_slice(batch.obs.as_f32().ok_or("f32 obs")?);
        if steps >= cfg.batch_size && steps >= cfg.learning_starts {
            last_stats = Some(agent.update(&replay.sample(cfg.batch_size, &mut rng))?);
            updates += 1;
        }
        if done && eval_every > 0 && episode % eval_every == 0 {
            let mean = recent.iter().sum::<f32>() / recent.len() as f32;
            recent.clear();
            let greedy = evaluate(agent.net(), eval_env.as_mut(), 100, seed + episode)?;
            eprintln!(
                "episode {episode} steps {steps} eps {:.3} train {mean:.3} greedy {greedy:.3} {:?} {:.1}s",
                explorer.epsilon,
                last_stats,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let train_secs = started.elapsed().as_secs_f64();
    let mean = evaluate(
        agent.net(),
        eval_env.as_mut(),
        EVAL_EPISODES,
        seed + 1_000_000,
    )?;
    eprintln!(
        "mp-dqn platform seed {seed}: {episodes} episodes, {steps} steps, {updates} updates in {train_secs:.1}s; greedy mean return {mean:.3} over {EVAL_EPISODES} episodes ({:.1}s total)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        mean >= TARGET,
        "greedy mean return {mean:.3} < {TARGET} after {episodes} episodes"
    );
    Ok(())
}
