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

fn run(cli: Cli) -> Result<()> {
    match cli.command {
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
            let r = tools::bench(&id, envs, threads, seconds)?;
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
            eprintln!("volley-actor: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
