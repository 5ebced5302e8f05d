//! PPO update throughput: one `Ppo::update` (epochs x minibatches Adam steps) on a
//! random batch, for the IMPALA CNN on 64x64x3 `u8` observations (Procgen, 15 actions)
//! and the 64-64 MLP on 11-d observations (Hopper, 3-d Gaussian actions), on the CPU and
//! on CUDA when libtorch sees a GPU.
//!
//! `cargo bench -p volley-benches --bench ppo_update [-- --updates N] [--threads T]
//! [--cpu-only] [--cuda-only]`
//!
//! Also the cost of the weights broadcast: `Policy::to_bytes` / `load_bytes`.
//!
//! "rows/s" is batch rows (env steps) consumed per second of update; "samples/s" counts
//! each row once per epoch (forward + backward passes per second).

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Result;
use tch::{Device, Kind, Tensor};
use volley_common::env::Space;
use volley_common::nn::{ModelKind, ModelSpec, Policy};
use volley_learner::algo::ppo::{Ppo, PpoConfig};
use volley_learner::rollout::RolloutBatch as Batch;

struct Case {
    name: &'static str,
    spec: ModelSpec,
    /// Batch rows on the CPU and on CUDA.
    rows_cpu: i64,
    rows_cuda: i64,
}

fn cases() -> Result<Vec<Case>> {
    let img = Space::Image {
        height: 64,
        width: 64,
        channels: 3,
    };
    let impala = ModelSpec::for_spaces(ModelKind::impala(), &img, &Space::Discrete { n: 15 })?;
    let vec = Space::uniform_box(&[11], -10.0, 10.0);
    let act = Space::uniform_box(&[3], -1.0, 1.0);
    let mlp = ModelSpec::for_spaces(ModelKind::mlp64(), &vec, &act)?;
    Ok(vec![
        Case {
            name: "impala_cnn 64x64x3 u8, 15 actions",
            spec: impala,
            rows_cpu: 2048,
            rows_cuda: 16384,
        },
        Case {
            name: "mlp 64-64, 11-d obs, 3-d gaussian",
            spec: mlp,
            rows_cpu: 16384,
            rows_cuda: 16384,
        },
    ])
}

fn random_batch(spec: &ModelSpec, rows: i64, device: Device) -> Batch {
    let mut obs_shape = vec![rows];
    obs_shape.extend(spec.obs_shape.iter().map(|&d| d as i64));
    let obs = if spec.obs_u8 {
        Tensor::randint(256, obs_shape.as_slice(), (Kind::Uint8, device))
    } else {
        Tensor::randn(obs_shape.as_slice(), (Kind::Float, device))
    };
    let actions = match spec.action {
        volley_common::nn::ActionHead::Categorical { n } => {
            Tensor::randint(n as i64, [rows], (Kind::Int64, device))
        }
        volley_common::nn::ActionHead::Gaussian { dim } => {
            Tensor::randn([rows, dim as i64], (Kind::Float, device))
        }
    };
    let f = |scale: f64| Tensor::randn([rows], (Kind::Float, device)) * scale;
    Batch {
        obs,
        actions,
        logprobs: f(0.1) - 2.0,
        values: f(1.0),
        advantages: f(1.0),
        returns: f(1.0),
    }
}

struct Row {
    case: &'static str,
    device: &'static str,
    rows: i64,
    seconds: f64,
    epochs: usize,
}

fn run(case: &Case, device: Device, rows: i64, updates: usize) -> Result<Row> {
    tch::manual_seed(0);
    let cfg = PpoConfig {
        batch_steps: rows as usize,
        ..PpoConfig::default()
    };
    let epochs = cfg.epochs;
    let mut ppo = Ppo::new(case.spec.clone(), cfg, device)?;
    let batch = random_batch(&case.spec, rows, device);
    // Warm-up (allocator, cuDNN autotuning).
    ppo.update(&batch, 1e-4, &AtomicBool::new(false))?;
    if device.is_cuda() {
        tch::Cuda::synchronize(0);
    }
    let start = Instant::now();
    for _ in 0..updates {
        ppo.update(&batch, 1e-4, &AtomicBool::new(false))?;
    }
    if device.is_cuda() {
        tch::Cuda::synchronize(0);
    }
    let seconds = start.elapsed().as_secs_f64() / updates as f64;
    Ok(Row {
        case: case.name,
        device: if device.is_cuda() { "cuda" } else { "cpu" },
        rows,
        seconds,
        epochs,
    })
}

fn main() -> Result<()> {
    let a = volley_benches::BenchArgs::parse(0.0, 3);
    let devices = a.devices();
    let mut rows = Vec::new();
    for case in cases()?.into_iter().filter(|c| a.wants(c.name)) {
        for &d in &devices {
            let n = if d.is_cuda() {
                case.rows_cuda
            } else {
                case.rows_cpu
            };
            let r = run(&case, d, n, a.updates)?;
            eprintln!("{} on {}: {:.3} s per update", r.case, r.device, r.seconds);
            rows.push(r);
        }
    }
    println!("\nWeights as bytes (CPU, mean of 20)\n");
    println!("| model | params | bytes | to_bytes ms | load_bytes ms |");
    println!("|---|---:|---:|---:|---:|");
    for case in cases()?.into_iter().filter(|c| a.wants(c.name)) {
        let mut p = Policy::new(case.spec.clone(), Device::Cpu)?;
        let t = Instant::now();
        let mut bytes = Vec::new();
        for _ in 0..20 {
            bytes = p.to_bytes();
        }
        let save = t.elapsed().as_secs_f64() / 20.0;
        let t = Instant::now();
        for _ in 0..20 {
            p.load_bytes(&bytes)?;
        }
        let load = t.elapsed().as_secs_f64() / 20.0;
        println!(
            "| {} | {} | {} | {:.2} | {:.2} |",
            case.name,
            p.num_params(),
            bytes.len(),
            save * 1e3,
            load * 1e3
        );
    }

    let cfg = PpoConfig::default();
    println!(
        "\nPPO update throughput ({} epochs x {} minibatches, torch threads {})\n",
        cfg.epochs,
        cfg.minibatches,
        tch::get_num_threads()
    );
    println!("| model | device | batch rows | s/update | rows/s | samples/s |");
    println!("|---|---|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.3} | {:.0} | {:.0} |",
            r.case,
            r.device,
            r.rows,
            r.seconds,
            r.rows as f64 / r.seconds,
            (r.rows as f64 * r.epochs as f64) / r.seconds
        );
    }
    Ok(())
}
