//! Shared pieces of volley's benchmarks: the bare-physics ceiling of the MuJoCo tasks
//! and the table every benchmark prints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use mujoco_rs::prelude::*;
use volley_common::deps;

/// Steps per second of the bare MuJoCo loop on one model: `threads` threads, each
/// with its own `MjData`, each "env step" writing a pseudo-random control and calling
/// `mj_step` `frame_skip` times, and `mj_resetData` every `episode_len` env steps so
/// that the physics sees states like those of real episodes (mostly upright bodies,
/// not a robot lying on the floor). Returns env steps per second summed over threads.
pub fn mj_step_ceiling(
    xml: &str,
    frame_skip: usize,
    episode_len: usize,
    threads: usize,
    seconds: f64,
) -> Result<f64> {
    volley_common::env::mujoco::keep_logs_off_disk();
    let path = deps::mujoco_models_dir().join(xml);
    let model = Arc::new(MjModel::from_xml(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot load {}: {e:?} (run deploy/setup.sh)",
            path.display()
        )
    })?);
    let episode_len = episode_len.max(1);
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let model = Arc::clone(&model);
                s.spawn(move || {
                    let mut data = MjData::new(model);
                    let nu = data.ctrl().len();
                    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ t as u64;
                    let deadline = Duration::from_secs_f64(seconds);
                    let start = Instant::now();
                    let mut steps = 0u64;
                    while start.elapsed() < deadline {
                        for _ in 0..64 {
                            let ctrl = data.ctrl_mut();
                            for c in ctrl.iter_mut().take(nu) {
                                // xorshift: cheap enough not to count against physics
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                *c = (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
                            }
                            for _ in 0..frame_skip {
                                data.step();
                            }
                            data.rne_post_constraint();
                            steps += 1;
                            if steps % episode_len as u64 == 0 {
                                data.reset();
                                data.forward();
                            }
                        }
                    }
                    (steps, start.elapsed())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map(|(n, d)| (n as f64 / d.as_secs_f64()) as u64)
                    .unwrap_or(0)
            })
            .sum()
    });
    Ok(total as f64)
}

/// Command-line options the benchmarks share (cargo adds `--bench`, ignored):
/// `--seconds S`, `--updates N`, `--threads T`, `--cpu-only`, `--cuda-only`,
/// `--only SUBSTRING`.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    pub seconds: f64,
    pub updates: usize,
    /// Torch threads (None: torch's default).
    pub threads: Option<i32>,
    pub cpu: bool,
    pub cuda: bool,
    /// Run only the cases whose name contains this.
    pub only: Option<String>,
}

impl BenchArgs {
    /// Parses the process arguments over the given defaults.
    pub fn parse(seconds: f64, updates: usize) -> BenchArgs {
        let mut a = BenchArgs {
            seconds,
            updates,
            threads: None,
            cpu: true,
            cuda: true,
            only: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(x) = it.next() {
            match x.as_str() {
                "--seconds" => {
                    a.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.seconds)
                }
                "--updates" => {
                    a.updates = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.updates)
                }
                "--threads" => a.threads = it.next().and_then(|v| v.parse().ok()),
                "--cpu-only" => a.cuda = false,
                "--cuda-only" => a.cpu = false,
                "--only" => a.only = it.next(),
                _ => {}
            }
        }
        a
    }

    /// The torch devices to measure on (`--cpu-only`, `--cuda-only`), after applying
    /// `--threads`; CUDA is skipped, with a note, where libtorch has none.
    pub fn devices(&self) -> Vec<tch::Device> {
        if let Some(t) = self.threads {
            tch::set_num_threads(t);
        }
        let mut devices = Vec::new();
        if self.cpu {
            devices.push(tch::Device::Cpu);
        }
        if self.cuda {
            if tch::Cuda::is_available() {
                devices.push(tch::Device::Cuda(0));
            } else {
                eprintln!("cuda: not available to libtorch in this build, skipped");
            }
        }
        devices
    }

    /// Whether a case named `name` is selected by `--only`.
    pub fn wants(&self, name: &str) -> bool {
        self.only.as_ref().is_none_or(|o| name.contains(o.as_str()))
    }
}

/// One row of a benchmark table.
#[derive(Debug, Clone)]
pub struct Row {
    pub what: String,
    pub envs: usize,
    pub threads: usize,
    pub steps_per_sec: f64,
    /// Name and value of the reference measured in the same run, if any.
    pub reference: Option<(String, f64)>,
}

/// Prints rows as a Markdown table (ratios against their same-run references).
pub fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}\n");
    println!("| env | envs | threads | volley steps/s | reference | reference steps/s | ratio |");
    println!("|---|---:|---:|---:|---|---:|---:|");
    for r in rows {
        match &r.reference {
            Some((name, v)) => println!(
                "| {} | {} | {} | {:.0} | {} | {:.0} | {:.2}x |",
                r.what,
                r.envs,
                r.threads,
                r.steps_per_sec,
                name,
                v,
                r.steps_per_sec / v
            ),
            None => println!(
                "| {} | {} | {} | {:.0} | | | |",
                r.what, r.envs, r.threads, r.steps_per_sec
            ),
        }
    }
}
