//! `volley-actor run`: registers with the learner and wires the parts together.
//!
//! The registration tells the actor everything about the run: the env, env count and
//! chunk length, the algorithm with its network spec and exploration settings, and
//! the reward shaping. The actor builds the vector env and the algorithm's
//! [`volley_common::agent::Agent`] from it, starts the network tasks on a tokio
//! runtime ([`crate::link`]) and runs the env loop on the calling thread
//! ([`crate::rollout`]). A stop signal ends the loop, the tasks and the process
//! cleanly; a learner that goes away is waited for with backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use metrics::counter;
use tch::Device;
use tokio::sync::mpsc;
use volley_common::agent::{build_agent, AgentContext};
use volley_common::env::{make_vec_env, EnvId, VecEnvOptions};
use volley_common::reward::{RewardConfig, Shaper};
use volley_common::telemetry as t;
use volley_proto::v1::{Chunk, RegisterRequest};
use volley_proto::PROTOCOL_VERSION;

use crate::link::{connect, sender_loop, weights_loop, Latest, Link};
use crate::rollout::{run_rollout, RolloutSettings};

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

/// Runs until `stop` is set. Returns an error only for problems retrying cannot fix
/// (bad config from the learner, a rejected registration, another run on the
/// learner's address).
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
    let mut env = make_vec_env(&env_id, VecEnvOptions::new(num_envs, threads))?;
    let mut agent = build_agent(
        &reply.algorithm,
        &AgentContext {
            spec_json: &reply.model_spec_json,
            explore_json: &reply.explore_json,
            observation_space: env.observation_space(),
            action_space: env.action_space(),
            num_envs,
            seed: opts.seed,
            device: Device::Cpu,
        },
    )
    .with_context(|| {
        format!(
            "cannot act for run {} ({} on {})",
            reply.run_id, reply.algorithm, reply.env_id
        )
    })?;
    let reward: RewardConfig = if reply.reward_json.is_empty() {
        RewardConfig::default()
    } else {
        serde_json::from_str(&reply.reward_json)
            .context("the learner sent reward shaping this actor cannot read")?
    };
    let mut shaper =
        Shaper::new(&reward, &env_id, num_envs, env.time_limit()).map_err(anyhow::Error::msg)?;

    let latest: Latest = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel::<Chunk>((reply.max_inflight as usize).saturating_sub(1).max(1));
    let link = Link::new(
        opts.learner.clone(),
        request,
        reply.clone(),
        client,
        Arc::clone(&stop),
    );
    let failure = Arc::clone(&link.failure);
    let weights_task = rt.spawn(weights_loop(link.clone(), Arc::clone(&latest)));
    let sender_task = rt.spawn(sender_loop(link, rx));

    let settings = RolloutSettings {
        steps: (reply.chunk_steps as usize).max(1),
        actor_id: opts.actor_id.clone(),
        seed: opts.seed,
        env_label: env_id.to_string(),
        no_send: opts.no_send,
    };
    let result = run_rollout(
        &mut *env,
        &mut *agent,
        &mut shaper,
        &latest,
        &tx,
        &settings,
        &stop,
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
