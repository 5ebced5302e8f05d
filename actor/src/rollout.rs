//! The env loop: the algorithm's [`Agent`] acts on a batch of observations (batched
//! CPU inference), the vector env steps, the rewards are shaped as the run says
//! ([`Shaper`]: rewards, and for Atari's `episodic_life` the terminal flags), and every
//! `T` steps the chunk goes into a bounded channel to the
//! sender task.
//!
//! Weights change only between chunks: every step of a chunk is acted by the version
//! the chunk names (`policy_version`), so the learner's lag accounting is exact and
//! PPO's ratio is taken against the policy that acted. A chunk carries the optional
//! fields its algorithm trains on ([`ChunkFields`]) and no others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use metrics::{counter, gauge, histogram};
use tokio::sync::mpsc;
use volley_common::agent::{
    observation_shape, observations, ActionBatch, Agent, ChunkFields, Mode, Progress,
};
use volley_common::env::{ObsBuf, Space, VecEnv};
use volley_common::reward::Shaper;
use volley_common::telemetry as t;
use volley_proto::v1::Chunk;
use volley_proto::{tensor, PROTOCOL_VERSION};

use crate::link::{Latest, Published};

/// What the env loop needs besides the env and the agent.
#[derive(Debug, Clone)]
pub(crate) struct RolloutSettings {
    /// Steps per chunk (T).
    pub steps: usize,
    pub actor_id: String,
    /// Seed of the env reset.
    pub seed: u64,
    /// The env id, for the episode metrics' label.
    pub env_label: String,
    /// Build chunks but drop them: the transport benchmark's baseline.
    pub no_send: bool,
}

/// One chunk's buffers, time-major.
#[derive(Debug, Default)]
struct ChunkBuf {
    obs_u8: Vec<u8>,
    obs_f32: Vec<f32>,
    actions_i64: Vec<i64>,
    actions_f32: Vec<f32>,
    action_params: Vec<f32>,
    logprobs: Vec<f32>,
    values: Vec<f32>,
    rewards: Vec<f32>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    truncation_values: Vec<f32>,
    /// The observation after each step (the episode's final one where it ended and
    /// the env has it).
    next_u8: Vec<u8>,
    next_f32: Vec<f32>,
    bootstrap_values: Vec<f32>,
    episode_returns: Vec<f32>,
    episode_lengths: Vec<u32>,
}

impl ChunkBuf {
    /// Buffers sized for a chunk of `rows = T * N` steps, so building one copies each
    /// observation once.
    fn for_chunk(rows: usize, obs: (usize, bool), act_dim: usize, fields: ChunkFields) -> Self {
        let (obs_len, image) = obs;
        let per = |on: bool, n: usize| if on { n } else { 0 };
        ChunkBuf {
            obs_u8: Vec::with_capacity(per(image, rows * obs_len)),
            obs_f32: Vec::with_capacity(per(!image, rows * obs_len)),
            next_u8: Vec::with_capacity(per(image && fields.next_obs, rows * obs_len)),
            next_f32: Vec::with_capacity(per(!image && fields.next_obs, rows * obs_len)),
            actions_i64: Vec::with_capacity(rows),
            actions_f32: Vec::with_capacity(rows * act_dim),
            action_params: Vec::new(),
            logprobs: Vec::with_capacity(per(fields.logprobs, rows)),
            values: Vec::with_capacity(per(fields.values, rows)),
            rewards: Vec::with_capacity(rows),
            terminated: Vec::with_capacity(rows),
            truncated: Vec::with_capacity(rows),
            truncation_values: Vec::with_capacity(per(fields.values, rows)),
            bootstrap_values: Vec::new(),
            episode_returns: Vec::new(),
            episode_lengths: Vec::new(),
        }
    }
}

fn push_rows(src: &ObsBuf, rows: std::ops::Range<usize>, u8s: &mut Vec<u8>, f32s: &mut Vec<f32>) {
    match src {
        ObsBuf::U8(v) => u8s.extend_from_slice(&v[rows]),
        ObsBuf::F32(v) => f32s.extend_from_slice(&v[rows]),
    }
}

/// Takes the newest published weights into `agent`, if any arrived.
fn take_latest(agent: &mut dyn Agent, latest: &Latest) -> Result<Option<Progress>> {
    let next = latest.lock().ok().and_then(|mut l| l.take());
    let Some(Published { progress, data }) = next else {
        return Ok(None);
    };
    agent
        .load_weights(&data)
        .context("the learner sent weights that do not fit the model")?;
    gauge!(t::WEIGHTS_VERSION).set(progress.version as f64);
    Ok(Some(progress))
}

/// Runs until `stop` is set or the sender task goes away.
pub(crate) fn run_rollout(
    env: &mut dyn VecEnv,
    agent: &mut dyn Agent,
    shaper: &mut Shaper,
    latest: &Latest,
    tx: &mpsc::Sender<Chunk>,
    settings: &RolloutSettings,
    stop: &AtomicBool,
) -> Result<()> {
    let n = env.num_envs();
    let fields = agent.fields();
    let obs_space = env.observation_space().clone();
    let act_space = env.action_space().clone();
    let shape = observation_shape(&obs_space);
    let obs_len = obs_space.flat_len();
    let act_dim = match &act_space {
        Space::Discrete { .. } => 0,
        s => s.flat_len(),
    };
    let steps = settings.steps;

    // Wait for the first weights, so the first chunk is acted by a known version.
    let wait = Instant::now();
    let mut acting = loop {
        if let Some(p) = take_latest(agent, latest)? {
            break p;
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        if wait.elapsed() > Duration::from_secs(60) {
            bail!("no weights from the learner after 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    env.reset(settings.seed)?;
    // Steps and episodes of this actor since the acting weights were published: the
    // run's progress is the learner's at publication plus these.
    let (mut own_steps, mut own_episodes) = (0u64, 0u64);
    let mut act = ActionBatch::default();
    let (mut clipped, mut shaped, mut tv) = (Vec::new(), Vec::new(), vec![0f32; n]);
    let mut terminals = Vec::new();
    let mut seq = 0u64;
    let mut env_steps = 0u64;
    let mut last_rate = (Instant::now(), 0u64);
    while !stop.load(Ordering::SeqCst) {
        if let Some(p) = take_latest(agent, latest)? {
            acting = p;
            own_steps = 0;
            own_episodes = 0;
        }
        let image = matches!(obs_space, Space::Image { .. });
        let mut buf = ChunkBuf::for_chunk(steps * n, (obs_len, image), act_dim, fields);
        for _ in 0..steps {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let obs = observations(&env.batch().obs, n, &shape)?;
            push_rows(
                &env.batch().obs,
                0..n * obs_len,
                &mut buf.obs_u8,
                &mut buf.obs_f32,
            );
            let progress = Progress {
                version: acting.version,
                steps: acting.steps + own_steps,
                episodes: acting.episodes + own_episodes,
            };
            let t0 = Instant::now();
            agent.act(&obs, &progress, Mode::Explore, &mut act)?;
            histogram!(t::INFERENCE_LATENCY).record(t0.elapsed().as_secs_f64());
            if let Some(eps) = agent.epsilon() {
                gauge!(t::EXPLORE_EPSILON).set(eps);
            }
            match &act_space {
                Space::Discrete { .. } => buf.actions_i64.extend_from_slice(&act.discrete),
                Space::Parameterised { .. } => {
                    buf.actions_i64.extend_from_slice(&act.discrete);
                    buf.action_params.extend_from_slice(&act.params);
                }
                _ => buf.actions_f32.extend_from_slice(&act.continuous),
            }
            if fields.logprobs {
                buf.logprobs.extend_from_slice(&act.logprobs);
            }
            if fields.values {
                buf.values.extend_from_slice(&act.values);
            }
            let batch = env.step(act.env_actions(&act_space, &mut clipped)?)?;
            shaper.apply(batch, &mut shaped);
            buf.rewards.extend_from_slice(&shaped);
            if shaper.changes_terminals() {
                // Atari's episodic_life: a lost life ends the episode for training.
                shaper.terminals(batch, &mut terminals);
                buf.terminated.extend_from_slice(&terminals);
            } else {
                buf.terminated.extend_from_slice(&batch.terminated);
            }
            buf.truncated.extend_from_slice(&batch.truncated);
            if fields.values {
                // V(final observation) of the envs truncated in this step, 0 elsewhere
                // (and where the env has no final observation: Procgen).
                tv.fill(0.0);
                if batch.has_final_obs && batch.truncated.iter().any(|&x| x) {
                    let fin = observations(&batch.final_obs, n, &shape)?;
                    let v = agent.values(&fin)?;
                    for i in (0..n).filter(|&i| batch.truncated[i]) {
                        tv[i] = v[i];
                    }
                }
                buf.truncation_values.extend_from_slice(&tv);
            }
            if fields.next_obs {
                for i in 0..n {
                    let rows = i * obs_len..(i + 1) * obs_len;
                    let src = if batch.done(i) && batch.has_final_obs {
                        &batch.final_obs
                    } else {
                        &batch.obs
                    };
                    push_rows(src, rows, &mut buf.next_u8, &mut buf.next_f32);
                }
            }
            for (_, ret, len) in batch.finished_episodes() {
                own_episodes += 1;
                buf.episode_returns.push(ret);
                buf.episode_lengths.push(len);
                let label = settings.env_label.clone();
                histogram!(t::EPISODE_RETURN, "env" => label.clone()).record(f64::from(ret));
                histogram!(t::EPISODE_LENGTH, "env" => label).record(f64::from(len));
            }
            own_steps += n as u64;
            env_steps += n as u64;
            counter!(t::ENV_STEPS).increment(n as u64);
        }
        if fields.values {
            let obs = observations(&env.batch().obs, n, &shape)?;
            buf.bootstrap_values = agent.values(&obs)?;
        }
        let chunk = build_chunk(
            buf,
            fields,
            (&settings.actor_id, acting.version, seq),
            (steps, n),
            &shape,
            act_dim,
            &act_space,
        )?;
        seq += 1;
        // Blocks while the learner is slow or away: that is the backpressure.
        if settings.no_send {
            drop(chunk);
        } else if tx.blocking_send(chunk).is_err() {
            break;
        }
        let (t_last, s_last) = last_rate;
        let dt = t_last.elapsed().as_secs_f64();
        if dt >= 1.0 {
            gauge!(t::ENV_STEPS_PER_SEC).set((env_steps - s_last) as f64 / dt);
            last_rate = (Instant::now(), env_steps);
        }
    }
    Ok(())
}

/// The wire chunk of `b`: the tensors every chunk has, and the optional ones of
/// `fields`.
fn build_chunk(
    b: ChunkBuf,
    fields: ChunkFields,
    (actor_id, policy_version, seq): (&str, u64, u64),
    (steps, n): (usize, usize),
    obs_shape: &[i64],
    act_dim: usize,
    act_space: &Space,
) -> Result<Chunk> {
    let mut obs_dims = vec![steps, n];
    obs_dims.extend(obs_shape.iter().map(|&d| d as usize));
    let tn = [steps, n];
    let image = |u8s: Vec<u8>, f32s: Vec<f32>| -> Result<volley_proto::Tensor> {
        Ok(if u8s.is_empty() {
            tensor::from_vec(&obs_dims, f32s)?
        } else {
            tensor::from_vec(&obs_dims, u8s)?
        })
    };
    let (actions, action_params) = match act_space {
        Space::Discrete { .. } => (tensor::from_vec(&tn, b.actions_i64)?, None),
        Space::Parameterised { .. } => {
            let p = act_dim;
            (
                tensor::from_vec(&tn, b.actions_i64)?,
                Some(tensor::from_vec(&[steps, n, p], b.action_params)?),
            )
        }
        _ => (tensor::from_vec(&[steps, n, act_dim], b.actions_f32)?, None),
    };
    let optional =
        |on: bool, v: Vec<f32>, shape: &[usize]| -> Result<Option<volley_proto::Tensor>> {
            Ok(if on {
                Some(tensor::from_vec(shape, v)?)
            } else {
                None
            })
        };
    Ok(Chunk {
        protocol_version: PROTOCOL_VERSION,
        actor_id: actor_id.to_string(),
        policy_version,
        seq,
        obs: Some(image(b.obs_u8, b.obs_f32)?),
        actions: Some(actions),
        logprobs: optional(fields.logprobs, b.logprobs, &tn)?,
        values: optional(fields.values, b.values, &tn)?,
        rewards: Some(tensor::from_vec(&tn, b.rewards)?),
        terminated: Some(tensor::from_vec(&tn, b.terminated)?),
        truncated: Some(tensor::from_vec(&tn, b.truncated)?),
        truncation_values: optional(fields.values, b.truncation_values, &tn)?,
        bootstrap_values: optional(fields.values, b.bootstrap_values, &[n])?,
        next_obs: if fields.next_obs {
            Some(image(b.next_u8, b.next_f32)?)
        } else {
            None
        },
        action_params,
        episode_returns: b.episode_returns,
        episode_lengths: b.episode_lengths,
    })
}
