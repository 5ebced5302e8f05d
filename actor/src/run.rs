//! `volley-actor run`: the actor's main loop.
//!
//! The env loop runs on the calling thread: batched CPU inference (tch, no_grad) picks
//! actions, the vector env steps, and every `chunk_steps` steps a chunk goes into a
//! bounded channel. A tokio runtime beside it carries the network: a sender task that
//! pushes chunks (the channel's bound plus the one push in flight is the actor's
//! credit: a slow learner blocks the env loop instead of growing memory) and a weights
//! task that keeps only the newest weights, which the env loop loads between steps.
//! Both tasks reconnect and re-register with exponential backoff when the learner goes
//! away; a stop signal ends the loop, the tasks and the process cleanly.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use metrics::{counter, gauge, histogram};
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};
use tokio::sync::mpsc;
use volley_common::env::{
    make_vec_env, EnvId, EnvRng, ObsBuf, RandomActions, Space, VecEnv, VecEnvOptions,
};
use volley_common::nn::mpdqn::{ExploreSettings, Explorer, MpdqnNet, MpdqnSpec};
use volley_common::nn::sac::{SacActor, SacSpec};
use volley_common::nn::{ModelSpec, Policy};
use volley_common::telemetry as t;
use volley_proto::v1::{Chunk, RegisterReply, RegisterRequest};
use volley_proto::{tensor, PROTOCOL_VERSION};

use crate::client::{Backoff, Client, ClientOptions};

/// Settings of `volley-actor run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Learner address, `host:port`.
    pub learner: String,
    pub actor_id: String,
    pub auth_token: String,
    /// Override the run's env threads (the env count is the run's: it fixes the
    /// shape of every chunk).
    pub threads: Option<usize>,
    /// Torch threads for inference.
    pub inference_threads: usize,
    /// Build chunks but do not send them: the baseline of the transport benchmark.
    pub no_send: bool,
    pub seed: u64,
}

/// What acts: a PPO policy (sampled actions, with their log-probs and values), a
/// SAC actor, which acts uniformly at random until the learner publishes its first
/// update (weights version 1), as in CleanRL's warm-up, or MP-DQN's networks with
/// epsilon-greedy choices and Ornstein-Uhlenbeck noise on the parameters.
enum Agent {
    Ppo(Policy),
    Sac {
        actor: SacActor,
        random: RandomActions,
        rng: EnvRng,
    },
    Mpdqn {
        net: MpdqnNet,
        explorer: Explorer,
        settings: ExploreSettings,
        /// The run's finished episodes when the newest weights were published.
        run_episodes: u64,
        /// Episodes this actor finished since those weights arrived.
        own_episodes: u64,
    },
}

impl Agent {
    fn load(&mut self, bytes: &[u8], episodes: u64) -> volley_common::nn::NnResult<()> {
        match self {
            Agent::Ppo(p) => p.load_bytes(bytes),
            Agent::Sac { actor, .. } => actor.load_bytes(bytes),
            Agent::Mpdqn {
                net,
                run_episodes,
                own_episodes,
                ..
            } => {
                net.load_bytes(bytes)?;
                *run_episodes = episodes;
                *own_episodes = 0;
                Ok(())
            }
        }
    }
}

/// The newest weights received (version, the learner's episode count, bytes), taken
/// by the env loop between steps.
type Latest = Arc<Mutex<Option<(u64, u64, Bytes)>>>;

/// Why the network tasks gave up (the learner now serves another run), if they did.
type Failure = Arc<Mutex<Option<String>>>;

/// Reconnects after the learner went away, checking it still serves the same run.
/// `None`: stop now (stopped, or the run changed: then `failure` says why and the
/// stop flag is set for the whole actor).
async fn reconnect(
    addr: &str,
    request: &RegisterRequest,
    stop: &AtomicBool,
    first: &RegisterReply,
    failure: &Failure,
) -> Option<Client> {
    match connect(addr, request, stop, Some(first)).await {
        Ok(Some((client, _))) => Some(client),
        Ok(None) => None,
        Err(e) => {
            volley_common::say!("volley-actor: {e:#}");
            if let Ok(mut f) = failure.lock() {
                f.get_or_insert(format!("{e:#}"));
            }
            stop.store(true, Ordering::SeqCst);
            None
        }
    }
}

/// Runs until `stop` is set. Returns an error only for problems retrying cannot fix
/// (bad config from the learner, a rejected registration).
pub fn run(opts: RunOptions, stop: Arc<AtomicBool>) -> Result<()> {
    tch::set_num_threads(opts.inference_threads.max(1) as i32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("volley-actor-net")
        .build()
        .context("cannot start the network runtime")?;
    let request = RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        actor_id: opts.actor_id.clone(),
        auth_token: opts.auth_token.clone(),
        env_id: String::new(),
        hostname: None,
    };
    let Some((client, reply)) = rt.block_on(connect(&opts.learner, &request, &stop, None))? else {
        return Ok(());
    };
    volley_common::say!(
        "volley-actor: {} registered with {} (run {}, {} on {}, weights v{})",
        opts.actor_id,
        opts.learner,
        reply.run_id,
        reply.algorithm,
        reply.env_id,
        reply.weights_version
    );
    counter!(t::RECONNECTS).increment(0);
    volley_common::telemetry::set_run_info(&reply.run_id, &reply.algorithm, &reply.env_id);
    let env_id: EnvId = reply
        .env_id
        .parse()
        .context("the learner sent an env id this actor cannot run")?;
    let num_envs = (reply.num_envs as usize).max(1);
    let threads = opts.threads.unwrap_or(reply.env_threads as usize).max(1);
    let steps = (reply.chunk_steps as usize).max(1);
    let mut env = make_vec_env(&env_id, VecEnvOptions { num_envs, threads })?;
    let unreadable = "the learner sent a model spec this actor cannot read";
    let mut agent = match reply.algorithm.as_str() {
        "ppo" => {
            let spec: ModelSpec =
                serde_json::from_str(&reply.model_spec_json).context(unreadable)?;
            Agent::Ppo(Policy::new(spec, Device::Cpu).context("cannot build the policy")?)
        }
        "sac" => {
            let spec: SacSpec = serde_json::from_str(&reply.model_spec_json).context(unreadable)?;
            Agent::Sac {
                actor: SacActor::new(spec, Device::Cpu).context("cannot build the sac actor")?,
                random: RandomActions::new(env.action_space(), num_envs)?,
                rng: EnvRng::seed_from_u64(opts.seed ^ 0x5ac),
            }
        }
        "mpdqn" => {
            let spec: MpdqnSpec =
                serde_json::from_str(&reply.model_spec_json).context(unreadable)?;
            let settings: ExploreSettings = serde_json::from_str(&reply.explore_json)
                .context("the learner sent exploration settings this actor cannot read")?;
            let explorer = settings.explorer(num_envs, spec.param_dim(), opts.seed ^ 0xd09);
            Agent::Mpdqn {
                net: MpdqnNet::new(spec, Device::Cpu)
                    .context("cannot build the mp-dqn networks")?,
                explorer,
                settings,
                run_episodes: 0,
                own_episodes: 0,
            }
        }
        other => bail!(
            "run {} trains {other}, which this actor does not act for (ppo, sac, mpdqn)",
            reply.run_id
        ),
    };

    let latest: Latest = Arc::new(Mutex::new(None));
    let version = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel::<Chunk>((reply.max_inflight as usize).saturating_sub(1).max(1));
    let failure: Failure = Arc::new(Mutex::new(None));
    let link = Link {
        addr: opts.learner.clone(),
        request: request.clone(),
        first: reply.clone(),
        // The network tasks watch the user's stop flag too: while the learner is away
        // they sit in reconnect loops, and a stop must end those (the env loop may be
        // blocked handing them a chunk).
        stop: Arc::clone(&stop),
        failure: Arc::clone(&failure),
        current: Arc::new(tokio::sync::Mutex::new((0, client.clone()))),
    };
    let weights_task = rt.spawn(weights_loop(
        link.clone(),
        (0, client.clone()),
        Arc::clone(&latest),
    ));
    let sender_task = rt.spawn(sender_loop(link, (0, client), rx));

    let result = env_loop(
        &mut *env, &mut agent, &latest, &version, &tx, steps, &env_id, &opts, &stop,
    );
    // Let the sender deliver what is queued (bounded by the timeout below).
    drop(tx);
    stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(5), sender_task).await;
        weights_task.abort();
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    if let Some(why) = failure.lock().ok().and_then(|f| f.clone()) {
        bail!(why);
    }
    result
}

/// What the network tasks need to reconnect.
#[derive(Clone)]
struct Link {
    addr: String,
    request: RegisterRequest,
    /// The first registration's answer: a reconnection must find the same run.
    first: RegisterReply,
    stop: Arc<AtomicBool>,
    failure: Failure,
    /// The connection both network tasks use, with a generation that counts
    /// reconnections: when both notice one outage, one reconnects and the other
    /// takes its client, so an outage is one reconnection and one registration.
    current: Arc<tokio::sync::Mutex<(u64, Client)>>,
}

/// A task's connection: its generation and client.
type Conn = (u64, Client);

impl Link {
    /// A working connection newer than `stale` (the one that failed): the other
    /// task's if it already reconnected, else a new one. `None`: stop.
    async fn reconnect(&self, stale: u64) -> Option<Conn> {
        let mut current = self.current.lock().await;
        if current.0 > stale {
            return Some(current.clone());
        }
        let client = reconnect(
            &self.addr,
            &self.request,
            &self.stop,
            &self.first,
            &self.failure,
        )
        .await?;
        *current = (current.0 + 1, client);
        Some(current.clone())
    }
}

/// Connects and registers, retrying with backoff while the learner is unreachable.
/// `Ok(None)`: stopped before a connection was made.
async fn connect(
    addr: &str,
    request: &RegisterRequest,
    stop: &AtomicBool,
    expect: Option<&RegisterReply>,
) -> Result<Option<(Client, RegisterReply)>> {
    let reconnect = expect.is_some();
    let mut backoff = Backoff::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        // The token travels with every call (register, pushes, the weights stream).
        let options = ClientOptions {
            auth_token: request.auth_token.clone(),
            ..ClientOptions::default()
        };
        match Client::connect_with(addr, options).await {
            Ok(client) => match client.register(request.clone()).await {
                Ok(reply) => {
                    if let Some(e) = expect {
                        counter!(t::RECONNECTS).increment(1);
                        volley_common::say!(
                            "volley-actor: reconnected to {addr} (weights v{})",
                            reply.weights_version
                        );
                        if (&reply.run_id, &reply.env_id, &reply.model_spec_json)
                            != (&e.run_id, &e.env_id, &e.model_spec_json)
                        {
                            bail!(
                                "the learner at {addr} now serves run '{}' ({}), not '{}' ({}): restart this actor to join it",
                                reply.run_id, reply.env_id, e.run_id, e.env_id
                            );
                        }
                    }
                    return Ok(Some((client, reply)));
                }
                Err(e) if !e.is_retryable() => bail!("the learner refused registration: {e}"),
                Err(e) => {
                    volley_common::say!("volley-actor: register with {addr} failed: {e}; retrying")
                }
            },
            Err(e) => {
                if !reconnect {
                    volley_common::say!(
                        "volley-actor: cannot reach the learner at {addr}: {e}; retrying"
                    );
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn sender_loop(link: Link, mut conn: Conn, mut rx: mpsc::Receiver<Chunk>) {
    while let Some(chunk) = rx.recv().await {
        let bytes = chunk_bytes(&chunk);
        loop {
            match conn.1.push(chunk.clone()).await {
                Ok(_) => {
                    counter!(t::CHUNKS_SENT).increment(1);
                    counter!(t::BYTES_OUT).increment(bytes);
                    break;
                }
                Err(e) if e.is_retryable() => {
                    volley_common::say!("volley-actor: lost the learner ({e}); reconnecting");
                    match link.reconnect(conn.0).await {
                        Some(c) => conn = c,
                        None => return,
                    }
                }
                Err(e) => {
                    // The learner judged this chunk invalid: keep going with the next.
                    volley_common::say!("volley-actor: chunk {} rejected: {e}", chunk.seq);
                    break;
                }
            }
        }
    }
}

fn chunk_bytes(c: &Chunk) -> u64 {
    [
        &c.obs,
        &c.actions,
        &c.logprobs,
        &c.values,
        &c.rewards,
        &c.terminated,
        &c.truncated,
        &c.truncation_values,
        &c.bootstrap_values,
        &c.next_obs,
        &c.action_params,
    ]
    .iter()
    .map(|t| t.as_ref().map_or(0, |t| t.data.len() as u64))
    .sum()
}

async fn weights_loop(link: Link, mut conn: Conn, latest: Latest) {
    // Waits between failed subscriptions, so a learner that refuses the stream is not
    // asked again in a tight loop.
    let mut backoff = Backoff::new();
    loop {
        // Always ask for the learner's current version (have = 0): after a resume
        // from an older checkpoint its versions may be lower than the one in use.
        match conn.1.subscribe_weights(&link.request.actor_id, 0).await {
            Ok(mut stream) => {
                backoff = Backoff::new();
                // Ends when the learner goes away or closes the stream.
                while let Ok(Some(w)) = stream.message().await {
                    counter!(t::BYTES_IN).increment(w.data.len() as u64);
                    if let Ok(mut l) = latest.lock() {
                        *l = Some((w.version, w.episodes, w.data));
                    }
                }
            }
            Err(e) => {
                volley_common::say!("volley-actor: weights subscription failed: {e}");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        if link.stop.load(Ordering::SeqCst) {
            return;
        }
        volley_common::say!("volley-actor: the weights stream ended; reconnecting");
        match link.reconnect(conn.0).await {
            Some(c) => conn = c,
            None => return,
        }
    }
}

/// Preallocated buffers of one chunk, time-major.
struct ChunkBuf {
    obs_u8: Vec<u8>,
    obs_f32: Vec<f32>,
    actions_i64: Vec<i64>,
    actions_f32: Vec<f32>,
    logprobs: Vec<f32>,
    values: Vec<f32>,
    rewards: Vec<f32>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    truncation_values: Vec<f32>,
    /// Off-policy (SAC, MP-DQN): the observation after each step (the final one where
    /// an episode ended).
    next_obs: Vec<f32>,
    /// MP-DQN: the parameters of every choice, `[-1, 1]` units, noise included.
    action_params: Vec<f32>,
    episode_returns: Vec<f32>,
    episode_lengths: Vec<u32>,
}

#[allow(clippy::too_many_arguments)]
fn env_loop(
    env: &mut dyn VecEnv,
    agent: &mut Agent,
    latest: &Latest,
    version: &AtomicU64,
    tx: &mpsc::Sender<Chunk>,
    steps: usize,
    env_id: &EnvId,
    opts: &RunOptions,
    stop: &AtomicBool,
) -> Result<()> {
    let n = env.num_envs();
    let obs_space = env.observation_space().clone();
    let obs_shape: Vec<i64> = match &obs_space {
        Space::Image {
            height,
            width,
            channels,
        } => vec![*height as i64, *width as i64, *channels as i64],
        s => vec![s.flat_len() as i64],
    };
    let obs_len = obs_space.flat_len();
    let act_space = env.action_space().clone();
    let act_dim = match &act_space {
        Space::Discrete { .. } => 0,
        s => s.flat_len(),
    };
    let env_label = env_id.to_string();
    let (low, high) = match &act_space {
        Space::Box { low, high, .. } => (low.clone(), high.clone()),
        _ => (Vec::new(), Vec::new()),
    };
    let mut clipped = vec![0f32; n * act_dim];
    // V(final observation) of the envs truncated in a step; 0 elsewhere.
    let mut tv = vec![0f32; n];

    // Wait for the first weights, so the first chunk is acted by a known version.
    let wait = Instant::now();
    while !load_latest(agent, latest, version)? {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        if wait.elapsed() > Duration::from_secs(60) {
            bail!("no weights from the learner after 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    env.reset(opts.seed)?;
    let mut seq = 0u64;
    let mut env_steps = 0u64;
    let mut last_rate = (Instant::now(), 0u64);
    while !stop.load(Ordering::SeqCst) {
        let mut buf = ChunkBuf {
            obs_u8: Vec::with_capacity(if matches!(obs_space, Space::Image { .. }) {
                steps * n * obs_len
            } else {
                0
            }),
            obs_f32: Vec::with_capacity(if matches!(obs_space, Space::Image { .. }) {
                0
            } else {
                steps * n * obs_len
            }),
            actions_i64: Vec::with_capacity(steps * n),
            actions_f32: Vec::with_capacity(steps * n * act_dim),
            logprobs: Vec::with_capacity(steps * n),
            values: Vec::with_capacity(steps * n),
            rewards: Vec::with_capacity(steps * n),
            terminated: Vec::with_capacity(steps * n),
            truncated: Vec::with_capacity(steps * n),
            truncation_values: Vec::with_capacity(steps * n),
            next_obs: Vec::new(),
            action_params: Vec::new(),
            episode_returns: Vec::new(),
            episode_lengths: Vec::new(),
        };
        // The version that acts on this whole chunk: weights change only between chunks
        // would waste freshness; between steps is allowed, so record the oldest.
        let chunk_version = version.load(Ordering::SeqCst);
        for _ in 0..steps {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let obs = obs_tensor(&env.batch().obs, n, &obs_shape);
            match &env.batch().obs {
                ObsBuf::U8(v) => buf.obs_u8.extend_from_slice(v),
                ObsBuf::F32(v) => buf.obs_f32.extend_from_slice(v),
            }
            let t0 = Instant::now();
            let batch = match agent {
                Agent::Ppo(policy) => {
                    let act = policy.act(&obs)?;
                    histogram!(t::INFERENCE_LATENCY).record(t0.elapsed().as_secs_f64());
                    buf.logprobs.extend(f32_vec(&act.logprob));
                    buf.values.extend(f32_vec(&act.value));
                    if act_dim == 0 {
                        let a: Vec<i64> =
                            Vec::<i64>::try_from(act.action.to_kind(Kind::Int64).flatten(0, -1))
                                .context("cannot read actions")?;
                        buf.actions_i64.extend_from_slice(&a);
                        env.step(volley_common::env::Actions::Discrete(&a))?
                    } else {
                        // The chunk keeps the sampled action (its log-prob is the
                        // behaviour's); the env gets it clipped to the action bounds.
                        let a = f32_vec(&act.action);
                        buf.actions_f32.extend_from_slice(&a);
                        for (j, (c, raw)) in clipped.iter_mut().zip(&a).enumerate() {
                            *c = raw.clamp(low[j % act_dim], high[j % act_dim]);
                        }
                        env.step(volley_common::env::Actions::Continuous(&clipped))?
                    }
                }
                Agent::Sac { actor, random, rng } => {
                    // Uniform random actions until the learner's first update.
                    if version.load(Ordering::SeqCst) == 0 {
                        if let volley_common::env::Actions::Continuous(a) = random.sample(rng) {
                            clipped.copy_from_slice(a);
                        }
                    } else {
                        let a = f32_vec(&actor.act(&obs)?);
                        histogram!(t::INFERENCE_LATENCY).record(t0.elapsed().as_secs_f64());
                        for (j, (c, raw)) in clipped.iter_mut().zip(&a).enumerate() {
                            *c = raw.clamp(low[j % act_dim], high[j % act_dim]);
                        }
                    }
                    buf.actions_f32.extend_from_slice(&clipped);
                    env.step(volley_common::env::Actions::Continuous(&clipped))?
                }
                Agent::Mpdqn {
                    net,
                    explorer,
                    settings,
                    run_episodes,
                    own_episodes,
                } => {
                    explorer.epsilon = settings.epsilon(*run_episodes + *own_episodes);
                    gauge!(t::EXPLORE_EPSILON).set(explorer.epsilon);
                    let Some(o) = env.batch().obs.as_f32() else {
                        bail!("mp-dqn needs vector observations");
                    };
                    let a = net.act(o, explorer)?;
                    histogram!(t::INFERENCE_LATENCY).record(t0.elapsed().as_secs_f64());
                    buf.actions_i64.extend_from_slice(&a.choice);
                    buf.action_params.extend_from_slice(&a.params);
                    env.step(volley_common::env::Actions::Parameterised {
                        choice: &a.choice,
                        params: &a.env_params,
                    })?
                }
            };
            buf.rewards.extend_from_slice(&batch.reward);
            buf.terminated.extend_from_slice(&batch.terminated);
            buf.truncated.extend_from_slice(&batch.truncated);
            match &*agent {
                Agent::Ppo(policy) => {
                    tv.fill(0.0);
                    if batch.has_final_obs && batch.truncated.iter().any(|&x| x) {
                        let fin = obs_tensor(&batch.final_obs, n, &obs_shape);
                        let v = f32_vec(&tch::no_grad(|| policy.value(&fin))?);
                        for i in 0..n {
                            if batch.truncated[i] {
                                tv[i] = v[i];
                            }
                        }
                    }
                    buf.truncation_values.extend_from_slice(&tv);
                }
                Agent::Sac { .. } | Agent::Mpdqn { .. } => {
                    let (Some(now), Some(last)) = (batch.obs.as_f32(), batch.final_obs.as_f32())
                    else {
                        bail!("off-policy runs need vector observations with final observations");
                    };
                    for i in 0..n {
                        let row = if batch.done(i) { last } else { now };
                        buf.next_obs
                            .extend_from_slice(&row[i * obs_len..(i + 1) * obs_len]);
                    }
                }
            }
            for (_, ret, len) in batch.finished_episodes() {
                if let Agent::Mpdqn { own_episodes, .. } = agent {
                    *own_episodes += 1;
                }
                buf.episode_returns.push(ret);
                buf.episode_lengths.push(len);
                histogram!(t::EPISODE_RETURN, "env" => env_label.clone()).record(f64::from(ret));
                histogram!(t::EPISODE_LENGTH, "env" => env_label.clone()).record(f64::from(len));
            }
            env_steps += n as u64;
            counter!(t::ENV_STEPS).increment(n as u64);
            // New weights between steps, without waiting for them.
            load_latest(agent, latest, version)?;
        }
        let bootstrap = match &*agent {
            Agent::Ppo(policy) => {
                let obs = obs_tensor(&env.batch().obs, n, &obs_shape);
                f32_vec(&tch::no_grad(|| policy.value(&obs))?)
            }
            Agent::Sac { .. } | Agent::Mpdqn { .. } => Vec::new(),
        };
        let chunk = build_chunk(
            buf,
            bootstrap,
            &opts.actor_id,
            chunk_version,
            seq,
            steps,
            n,
            &obs_shape,
            act_dim,
        )?;
        seq += 1;
        // Blocks while the learner is slow or away: that is the backpressure.
        if opts.no_send {
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

/// Loads the newest received weights, if any arrived since the last call.
fn load_latest(agent: &mut Agent, latest: &Latest, version: &AtomicU64) -> Result<bool> {
    let next = latest.lock().ok().and_then(|mut l| l.take());
    let Some((v, episodes, data)) = next else {
        return Ok(version.load(Ordering::SeqCst) > 0);
    };
    agent
        .load(&data, episodes)
        .context("the learner sent weights that do not fit the model")?;
    version.store(v, Ordering::SeqCst);
    gauge!(t::WEIGHTS_VERSION).set(v as f64);
    Ok(true)
}

fn obs_tensor(obs: &ObsBuf, n: usize, shape: &[i64]) -> Tensor {
    let mut dims = vec![n as i64];
    dims.extend_from_slice(shape);
    match obs {
        ObsBuf::U8(v) => Tensor::from_slice(v).view(dims.as_slice()),
        ObsBuf::F32(v) => Tensor::from_slice(v).view(dims.as_slice()),
    }
}

fn f32_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn build_chunk(
    b: ChunkBuf,
    bootstrap: Vec<f32>,
    actor_id: &str,
    policy_version: u64,
    seq: u64,
    steps: usize,
    n: usize,
    obs_shape: &[i64],
    act_dim: usize,
) -> Result<Chunk> {
    let mut obs_dims = vec![steps, n];
    obs_dims.extend(obs_shape.iter().map(|&d| d as usize));
    let tn = [steps, n];
    let obs = if b.obs_u8.is_empty() {
        tensor::from_vec(&obs_dims, b.obs_f32)?
    } else {
        tensor::from_vec(&obs_dims, b.obs_u8)?
    };
    let action_params = if b.action_params.is_empty() {
        None
    } else {
        let p = b.action_params.len() / (steps * n).max(1);
        Some(tensor::from_vec(&[steps, n, p], b.action_params)?)
    };
    let actions = if act_dim == 0 || !b.actions_i64.is_empty() {
        tensor::from_vec(&tn, b.actions_i64)?
    } else {
        tensor::from_vec(&[steps, n, act_dim], b.actions_f32)?
    };
    // Off-policy chunks (next_obs filled) leave out the on-policy tensors.
    let off_policy = !b.next_obs.is_empty();
    let on_policy = |v: Vec<f32>, shape: &[usize]| -> Result<Option<volley_proto::Tensor>> {
        Ok(if off_policy {
            None
        } else {
            Some(tensor::from_vec(shape, v)?)
        })
    };
    Ok(Chunk {
        protocol_version: PROTOCOL_VERSION,
        actor_id: actor_id.to_string(),
        policy_version,
        seq,
        obs: Some(obs),
        actions: Some(actions),
        logprobs: on_policy(b.logprobs, &tn)?,
        values: on_policy(b.values, &tn)?,
        rewards: Some(tensor::from_vec(&tn, b.rewards)?),
        terminated: Some(tensor::from_vec(&tn, b.terminated)?),
        truncated: Some(tensor::from_vec(&tn, b.truncated)?),
        truncation_values: on_policy(b.truncation_values, &tn)?,
        bootstrap_values: on_policy(bootstrap, &[n])?,
        next_obs: if off_policy {
            Some(tensor::from_vec(&obs_dims, b.next_obs)?)
        } else {
            None
        },
        action_params,
        episode_returns: b.episode_returns,
        episode_lengths: b.episode_lengths,
    })
}
