//! SAC update throughput: gradient updates per second of `Sac::update` (CleanRL's
//! `sac_continuous_action.py` update: twin-Q step, delayed actor and temperature steps,
//! Polyak targets) at batch 256 with the 256-256 MLPs, on Hopper-sized (11-d obs, 3-d
//! actions) and Ant-sized (105-d obs, 8-d actions) inputs, on the CPU and on CUDA when
//! libtorch sees a GPU. Sampling from a filled replay buffer is timed separately and
//! together with the update.
//!
//! `cargo bench -p volley-benches --bench sac_update [-- --seconds S] [--threads T]
//! [--cpu-only] [--cuda-only]`
//!
//! `benches/sac_update_torch.py` times the same update in PyTorch for comparison.

use std::time::Instant;

use anyhow::Result;
use tch::{Device, Kind, Tensor};
use volley_common::nn::sac::SacSpec;
use volley_learner::algo::sac::{Sac, SacConfig};
use volley_learner::replay::ReplayBuffer;

struct Row {
    case: &'static str,
    device: &'static str,
    updates_per_s: f64,
    sample_per_s: f64,
    both_per_s: f64,
}

/// Uniform row indices (SplitMix64; the bench crate does not depend on `rand`): what
/// `ReplayBuffer::sample` draws before its `gather`.
struct SplitMix(u64);

impl SplitMix {
    fn indices(&mut self, n: usize, below: u64) -> Vec<i64> {
        (0..n)
            .map(|_| {
                self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                ((z ^ (z >> 31)) % below) as i64
            })
            .collect()
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Calls `f` repeatedly for about `seconds` (after 10 warm-up calls); returns calls/s.
fn rate(seconds: f64, device: Device, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..10 {
        f()?;
    }
    sync(device);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..10 {
            f()?;
        }
        n += 10;
    }
    sync(device);
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn run(
    case: &'static str,
    obs_dim: usize,
    act_dim: usize,
    device: Device,
    seconds: f64,
) -> Result<Row> {
    tch::manual_seed(0);
    let cfg = SacConfig::default();
    let spec = SacSpec {
        obs_dim,
        action_low: vec![-1.0; act_dim],
        action_high: vec![1.0; act_dim],
        hidden: cfg.hidden.clone(),
    };
    let mut sac = Sac::new(spec, cfg.clone(), device)?;
    let rows = 100_000i64;
    let mut buf = ReplayBuffer::new(
        rows as usize,
        obs_dim,
        act_dim,
        cfg.buffer_max_bytes(),
        device,
    )?;
    let o = (Kind::Float, Device::Cpu);
    buf.push_batch(
        &Tensor::randn([rows, obs_dim as i64], o),
        &(Tensor::rand([rows, act_dim as i64], o) * 2.0 - 1.0),
        &Tensor::randn([rows], o),
        &Tensor::randn([rows, obs_dim as i64], o),
        &Tensor::rand([rows], o).lt(0.01).to_kind(Kind::Float),
    )?;
    let mut rng = SplitMix(0);
    let mut sample = |n: usize| buf.gather(&rng.indices(n, rows as u64));
    let batch = sample(cfg.batch_size)?;
    let updates_per_s = rate(seconds, device, || {
        sac.update(&batch)?;
        Ok(())
    })?;
    let sample_per_s = rate(seconds / 2.0, device, || {
        sample(cfg.batch_size)?;
        Ok(())
    })?;
    let both_per_s = rate(seconds, device, || {
        let b = sample(cfg.batch_size)?;
        sac.update(&b)?;
        Ok(())
    })?;
    Ok(Row {
        case,
        device: if device.is_cuda() { "cuda" } else { "cpu" },
        updates_per_s,
        sample_per_s,
        both_per_s,
    })
}

fn main() -> Result<()> {
    let a = volley_benches::BenchArgs::parse(5.0, 0);
    let devices = a.devices();
    let cases = [
        ("hopper-sized: 11-d obs, 3-d actions", 11, 3),
        ("ant-sized: 105-d obs, 8-d actions", 105, 8),
    ];
    let mut rows = Vec::new();
    for (name, obs, act) in cases.into_iter().filter(|c| a.wants(c.0)) {
        for &d in &devices {
            let r = run(name, obs, act, d, a.seconds)?;
            eprintln!(
                "{} on {}: {:.0} updates/s",
                r.case, r.device, r.updates_per_s
            );
            rows.push(r);
        }
    }
    println!(
        "\nSAC update throughput (batch 256, 256-256 MLPs, policy_frequency 2, autotune, \
         torch threads {})\n",
        tch::get_num_threads()
    );
    println!("| inputs | device | updates/s | samples/s (buffer) | sample + update /s |");
    println!("|---|---|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} |",
            r.case, r.device, r.updates_per_s, r.sample_per_s, r.both_per_s
        );
    }
    Ok(())
}
