//! Transport throughput: synthetic actors push procgen-sized chunks (64 envs x 16
//! steps of 64x64x3 u8 observations, about 12.6 MB) over loopback gRPC to an
//! in-process learner service that validates them and hands them to a task that only
//! drains the queue. Prints chunks/s and MB/s of tensor payload for 1, 2 and 4
//! concurrent clients (each its own connection, each with 2 pushes in flight, as
//! `rollout.max_inflight` allows).
//!
//! `cargo bench -p volley-benches --bench transport [-- --seconds S] [--envs N]
//! [--steps T] [--inflight K] [--clients 1,2,4]`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use volley_actor::client::Client;
use volley_learner::server::{serve, RunInfo, ServerOptions, VolleyService};
use volley_learner::validate::ActionSpec;
use volley_proto::tensor::from_vec;
use volley_proto::{Chunk, DType, RegisterRequest, PROTOCOL_VERSION};

struct Args {
    seconds: f64,
    envs: usize,
    steps: usize,
    inflight: usize,
    clients: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 3.0,
        envs: 64,
        steps: 16,
        inflight: 2,
        clients: vec![1, 2, 4],
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut usize_arg = |d: usize| it.next().and_then(|v| v.parse().ok()).unwrap_or(d);
        match x.as_str() {
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.seconds),
            "--envs" => a.envs = usize_arg(a.envs),
            "--steps" => a.steps = usize_arg(a.steps),
            "--inflight" => a.inflight = usize_arg(a.inflight).max(1),
            "--clients" => {
                let clients: Vec<usize> = it
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|c| c.parse().ok())
                    .collect();
                if !clients.is_empty() {
                    a.clients = clients;
                }
            }
            _ => {} // cargo passes --bench
        }
    }
    a
}

const OBS: [usize; 3] = [64, 64, 3];
const ACTIONS: u32 = 15;

fn run_info(a: &Args) -> RunInfo {
    RunInfo {
        run_id: "bench".into(),
        algorithm: "ppo".into(),
        model_spec_json: "{}".into(),
        env_id: "procgen:starpilot".into(),
        num_envs: a.envs,
        env_threads: 1,
        chunk_steps: a.steps,
        max_inflight: a.inflight,
        obs_shape: OBS.to_vec(),
        obs_dtype: DType::U8,
        action: ActionSpec::Discrete { n: ACTIONS },
        fields: volley_common::agent::ChunkFields {
            logprobs: true,
            values: true,
            next_obs: false,
        },
        explore_json: String::new(),
        reward_json: String::new(),
    }
}

fn chunk(a: &Args, actor_id: &str) -> Result<Chunk> {
    let (t, n) = (a.steps, a.envs);
    let tn = [t, n];
    let obs: Vec<u8> = (0..t * n * OBS.iter().product::<usize>())
        .map(|i| (i % 251) as u8)
        .collect();
    Ok(Chunk {
        protocol_version: PROTOCOL_VERSION,
        actor_id: actor_id.into(),
        policy_version: 0,
        seq: 0,
        obs: Some(from_vec(&[t, n, OBS[0], OBS[1], OBS[2]], obs)?),
        actions: Some(from_vec(
            &tn,
            (0..t * n).map(|i| (i % 15) as i64).collect(),
        )?),
        logprobs: Some(from_vec(&tn, vec![-2.7f32; t * n])?),
        values: Some(from_vec(&tn, vec![0.1f32; t * n])?),
        rewards: Some(from_vec(&tn, vec![0.0f32; t * n])?),
        terminated: Some(from_vec(&tn, vec![false; t * n])?),
        truncated: Some(from_vec(&tn, vec![false; t * n])?),
        truncation_values: Some(from_vec(&tn, vec![0.0f32; t * n])?),
        bootstrap_values: Some(from_vec(&[n], vec![0.0f32; n])?),
        episode_returns: vec![],
        episode_lengths: vec![],
        next_obs: None,
        action_params: None,
    })
}

struct Measured {
    clients: usize,
    chunks_per_sec: f64,
    mb_per_sec: f64,
    chunk_mb: f64,
}

async fn measure(a: &Args, clients: usize) -> Result<Measured> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (queue_tx, mut queue_rx) = mpsc::channel(8);
    let (_weights_tx, weights_rx) = watch::channel(None);
    let service = VolleyService::new(run_info(a), ServerOptions::default(), queue_tx, weights_rx);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, service, async {
        let _ = stop_rx.await;
    }));

    // The "trainer": takes chunks and drops them.
    let chunks = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let drainer = {
        let (chunks, bytes) = (Arc::clone(&chunks), Arc::clone(&bytes));
        tokio::spawn(async move {
            while let Some(c) = queue_rx.recv().await {
                chunks.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(c.payload_bytes as u64, Ordering::Relaxed);
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let mut pushers = Vec::new();
    let mut chunk_mb = 0.0;
    for c in 0..clients {
        let actor_id = format!("bench-{c}");
        let client = Client::connect(&addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        client
            .register(RegisterRequest {
                actor_id: actor_id.clone(),
                ..RegisterRequest::default()
            })
            .await?;
        let template = chunk(a, &actor_id)?;
        chunk_mb = prost::Message::encoded_len(&template) as f64 / 1e6;
        for _ in 0..a.inflight {
            let (client, template, stop) = (client.clone(), template.clone(), Arc::clone(&stop));
            pushers.push(tokio::spawn(async move {
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut chunk = template.clone();
                    chunk.seq = seq;
                    seq += 1;
                    client.push(chunk).await?;
                }
                anyhow::Ok(())
            }));
        }
    }

    tokio::time::sleep(Duration::from_millis(500)).await; // warm up
    let (c0, b0, t0) = (
        chunks.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs_f64(a.seconds)).await;
    let (c1, b1, elapsed) = (
        chunks.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
        t0.elapsed(),
    );

    stop.store(true, Ordering::Relaxed);
    for p in pushers {
        p.await??;
    }
    let _ = stop_tx.send(());
    server.await??;
    drainer.await?;
    let secs = elapsed.as_secs_f64();
    Ok(Measured {
        clients,
        chunks_per_sec: (c1 - c0) as f64 / secs,
        mb_per_sec: (b1 - b0) as f64 / 1e6 / secs,
        chunk_mb,
    })
}

fn main() -> Result<()> {
    let a = args();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for &clients in &a.clients {
        rows.push(rt.block_on(measure(&a, clients))?);
    }
    println!(
        "\ntransport: loopback gRPC, {} envs x {} steps of {}x{}x{} u8 per chunk, {} in flight per client, {threads} cores, {:.1} s per row\n",
        a.envs, a.steps, OBS[0], OBS[1], OBS[2], a.inflight, a.seconds
    );
    println!("| clients | chunk MB | chunks/s | payload MB/s |");
    println!("|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.2} | {:.1} | {:.0} |",
            r.clients, r.chunk_mb, r.chunks_per_sec, r.mb_per_sec
        );
    }
    Ok(())
}
