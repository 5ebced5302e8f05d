//! The `volley-actor` command line.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use volley_actor::tools;
use volley_common::env::EnvId;

#[derive(Debug, Parser)]
#[command(
    name = "volley-actor",
    version,
    about = "volley's actor: environments, baselines and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Act for a training run: register with the learner, step envs, stream
    /// trajectories, follow its weights. Stops cleanly on SIGINT/SIGTERM.
    Run {
        /// Learner address, host:port.
        #[arg(long)]
        learner: String,
        /// This actor's id (default: hostname and process id).
        #[arg(long)]
        actor_id: Option<String>,
        /// Token the learner expects (learner.auth_token).
        #[arg(long, env = "VOLLEY_AUTH_TOKEN", default_value = "")]
        auth_token: String,
        /// Where to serve Prometheus metrics (e.g. 0.0.0.0:9101); none if absent.
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Env worker threads (default: the run's env.threads).
        #[arg(long)]
        threads: Option<usize>,
        /// Torch threads for policy inference.
        #[arg(long, default_value_t = 1)]
        inference_threads: usize,
        /// Seed of the envs (default: derived from the actor id).
        #[arg(long)]
        seed: Option<u64>,
        /// Build chunks but never send them (benchmark baseline for the transport).
        #[arg(long)]
        no_send: bool,
    },
    /// List the env ids, their spaces and Procgen's options.
    Envs {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a uniform-random policy and print episode statistics.
    ///
    /// Discrete actions are drawn uniformly, continuous ones uniformly within their
    /// bounds, Platform's parameter uniformly over its full range.
    Random {
        /// Env id, e.g. `Hopper-v5`, `procgen:starpilot?distribution_mode=hard`.
        #[arg(long)]
        env: String,
        /// Episodes to run.
        #[arg(long, default_value_t = 100)]
        episodes: usize,
        /// Seed of the envs and of the random actions.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Envs stepped together (each runs an equal share of the episodes).
        #[arg(long, default_value_t = 8)]
        envs: usize,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Measure vector-env throughput (env steps per second) under random actions.
    Bench {
        /// Env id.
        #[arg(long)]
        env: String,
        /// Envs in the vector.
        #[arg(long, default_value_t = 8)]
        envs: usize,
        /// Worker threads (the calling thread included).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Seconds to measure, after a short warm-up.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// ALE ids only: measure the bare emulator instead (random `act` calls on the
        /// consoles, nothing copied or preprocessed): the ceiling of the env.
        #[arg(long)]
        emulator: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn parse_env(id: &str) -> Result<EnvId> {
    id.parse::<EnvId>().map_err(anyhow::Error::from)
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string(v).context("cannot encode the result as json")?
    );
    Ok(())
}

fn default_actor_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "actor".into());
    format!("{host}-{}", std::process::id())
}

/// A seed per actor id, so actors of one run explore different trajectories.
fn seed_of(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            learner,
            actor_id,
            auth_token,
            metrics_listen,
            threads,
            inference_threads,
            seed,
            no_send,
        } => {
            let actor_id = actor_id.unwrap_or_else(default_actor_id);
            if let Some(addr) = metrics_listen {
                volley_common::telemetry::install_exporter(addr).map_err(anyhow::Error::msg)?;
            }
            let stop = volley_common::signals::stop_on_signals("volley-actor")?;
            let opts = volley_actor::run::RunOptions {
                seed: seed.unwrap_or_else(|| seed_of(&actor_id)),
                learner,
                actor_id,
                auth_token,
                threads,
                inference_threads,
                no_send,
            };
            volley_actor::run::run(opts, stop)
        }
        Command::Envs { json } => {
            let cat = tools::catalogue();
            if json {
                return print_json(&cat);
            }
            println!("{:<24} {:<16} {:<28} action", "id", "family", "observation");
            for e in &cat.envs {
                match &e.error {
                    None => println!(
                        "{:<24} {:<16} {:<28} {}",
                        e.id, e.family, e.observation, e.action
                    ),
                    Some(err) => println!("{:<24} {:<16} unavailable: {err}", e.id, e.family),
                }
            }
            println!("\nprocgen ids take options: procgen:<game>?name=value&name=value");
            for o in &cat.procgen_options {
                println!("  {:<24} {}", o.name, o.description);
            }
            Ok(())
        }
        Command::Random {
            env,
            episodes,
            seed,
            envs,
            threads,
            json,
        } => {
            anyhow::ensure!(episodes > 0, "--episodes must be at least 1");
            let id = parse_env(&env)?;
            let s = tools::random_policy(&id, episodes, seed, envs, threads)?;
            if json {
                return print_json(&s);
            }
            println!(
                "{}: {} episodes, return {:.4} +- {:.4}, length {:.2} +- {:.2}",
                s.env, s.episodes, s.return_mean, s.return_std, s.length_mean, s.length_std
            );
            Ok(())
        }
        Command::Bench {
            env,
            envs,
            threads,
            seconds,
            emulator,
            json,
        } => {
            anyhow::ensure!(
                envs > 0 && threads > 0,
                "--envs and --threads must be at least 1"
            );
            anyhow::ensure!(
                seconds > 0.0 && seconds.is_finite(),
                "--seconds must be a positive number"
            );
            let id = parse_env(&env)?;
            let r = if emulator {
                tools::bench_emulator(&id, envs, threads, seconds)?
            } else {
                tools::bench(&id, envs, threads, seconds)?
            };
            if json {
                return print_json(&r);
            }
            println!(
                "{}: {} envs, {} threads: {:.0} steps/s ({} steps in {:.2} s)",
                r.env, r.envs, r.threads, r.steps_per_sec, r.steps, r.seconds
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            volley_common::say!("volley-actor: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
