//! The `volley-learner` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tch::Device;
use tokio::sync::{mpsc, watch};
use volley_common::config::{apply_override, from_table, load};
use volley_common::env::{make_vec_env, EnvId, Space, VecEnvOptions};
use volley_common::nn::sac::SacSpec;
use volley_common::nn::{ModelKind, ModelSpec};
use volley_learner::checkpoint::{self, Counters};
use volley_learner::config::{Algorithm, RunConfig};
use volley_learner::eval::{EvalNet, Evaluator};
use volley_learner::mpdqn::Mpdqn;
use volley_learner::offpolicy::{OffPolicyAlgorithm, OffPolicyTrainer};
use volley_learner::ppo::Ppo;
use volley_learner::rundir::RunDir;
use volley_learner::sac::Sac;
use volley_learner::server::{self, RunInfo, ServerOptions, VolleyService};
use volley_learner::trainer::{Status, Trainer};
use volley_learner::validate::ActionSpec;
use volley_proto::DType;

#[derive(Debug, Parser)]
#[command(
    name = "volley-learner",
    version,
    about = "volley's learner: serves actors over gRPC and trains on their trajectories",
    after_help = "Overrides are dotted config keys: ppo.lr=3e-4 env.id=procgen:bigfish env.num_envs=16"
)]
struct Cli {
    /// Run config (TOML), e.g. configs/ppo_procgen.toml; defaults apply without one.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in this directory from its newest checkpoint.
    #[arg(long, conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Where to train: auto (CUDA when present), cpu or cuda (same as learner.device=).
    #[arg(long)]
    device: Option<String>,
    /// Check the config, the env and the model, print the resolved config, and exit:
    /// no ports, no run directory.
    #[arg(long)]
    check: bool,
    /// Config overrides, key.path=value.
    overrides: Vec<String>,
}

/// The algorithm a run trains, with its networks.
enum Learner {
    Ppo(Box<Ppo>, std::collections::HashMap<String, Vec<u8>>),
    OffPolicy(Box<dyn OffPolicyAlgorithm>),
}

impl Learner {
    /// Bytes of the weights actors receive.
    fn weights_len(&self) -> usize {
        match self {
            Learner::Ppo(ppo, _) => ppo.policy().to_bytes().len(),
            Learner::OffPolicy(algo) => algo.actor_weights().len(),
        }
    }
}

/// Sets torch's intra-op threads for the calling thread: with OpenMP the setting is
/// per thread, so the training thread must make it itself (0: torch's default).
fn set_torch_threads(n: usize) {
    if n > 0 {
        tch::set_num_threads(n as i32);
    }
}

fn resolve_device(want: &str) -> Result<Device> {
    match want {
        "cpu" => Ok(Device::Cpu),
        "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        "cuda" => bail!("learner.device = cuda, but no CUDA device is available (use auto or cpu)"),
        _ => Ok(Device::cuda_if_available()),
    }
}

fn model_kind(cfg: &RunConfig, obs: &Space) -> ModelKind {
    let m = &cfg.model;
    let image = matches!(obs, Space::Image { .. });
    match (m.kind.as_str(), image) {
        ("impala_cnn", _) | ("auto", true) => ModelKind::ImpalaCnn {
            depths: m.cnn_depths.clone(),
            fc: m.fc,
        },
        ("nature_cnn", _) => ModelKind::NatureCnn { fc: m.fc },
        _ => ModelKind::Mlp {
            hidden: m.hidden.clone(),
        },
    }
}

fn run_id(cfg: &RunConfig) -> String {
    if !cfg.run.name.is_empty() {
        return cfg.run.name.clone();
    }
    let env: String = cfg
        .env
        .id
        .split('?')
        .next()
        .unwrap_or("env")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{}-{env}-{secs}", cfg.algorithm.name())
}

/// What `Register` tells actors: the run's env, rollout settings and model.
fn run_info(
    cfg: &RunConfig,
    run_id: &str,
    model_spec_json: String,
    explore_json: String,
    obs: &Space,
    act: &Space,
) -> Result<RunInfo> {
    let algo = cfg.algorithm.name();
    let (obs_shape, obs_dtype) = match obs {
        Space::Image {
            height,
            width,
            channels,
        } => (vec![*height, *width, *channels], DType::U8),
        Space::Box { shape, .. } => (shape.clone(), DType::F32),
        other => bail!(
            "observation space {} is not supported by {algo}",
            other.describe()
        ),
    };
    let action = match act {
        Space::Discrete { n } => ActionSpec::Discrete { n: *n as u32 },
        Space::Box { .. } => ActionSpec::Continuous {
            dim: act.flat_len() as u32,
        },
        Space::Parameterised { params } => ActionSpec::Parameterised {
            choices: params.len() as u32,
            params: act.flat_len() as u32,
        },
        other => bail!(
            "action space {} is not supported by {algo}",
            other.describe()
        ),
    };
    Ok(RunInfo {
        run_id: run_id.to_string(),
        algorithm: cfg.algorithm.name().to_string(),
        model_spec_json,
        env_id: cfg.env.id.clone(),
        num_envs: cfg.env.num_envs,
        env_threads: cfg.env.threads,
        chunk_steps: cfg.rollout.chunk_steps,
        max_inflight: cfg.rollout.max_inflight,
        obs_shape,
        obs_dtype,
        action,
        off_policy: cfg.algorithm.off_policy(),
        explore_json,
    })
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            volley_common::say!("volley-learner: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut overrides = cli.overrides.clone();
    if let Some(d) = &cli.device {
        overrides.push(format!("learner.device={d}"));
    }
    // A new run's directory is created only once the config, the env and the model
    // have been checked, so a mistake leaves nothing behind.
    let (cfg, existing_dir, resumed) = match &cli.resume {
        Some(dir) => {
            let mut table = RunDir::read_config(dir)?;
            for o in &overrides {
                apply_override(&mut table, o)?;
            }
            let cfg: RunConfig = from_table(table)?;
            let loaded = checkpoint::load_latest(dir)?;
            (cfg, Some(RunDir::open(dir.clone())?), Some(loaded))
        }
        None => {
            let cfg: RunConfig = load(cli.config.as_deref(), &overrides)?;
            (cfg, None, None)
        }
    };
    cfg.validate().map_err(anyhow::Error::msg)?;
    // The token may come from the environment (so `ps` does not show it); the run
    // directory's config.toml never holds it.
    let auth_token = match std::env::var("VOLLEY_AUTH_TOKEN") {
        Ok(t) if !t.is_empty() && cfg.learner.auth_token.is_empty() => t,
        _ => cfg.learner.auth_token.clone(),
    };
    let device = resolve_device(&cfg.learner.device)?;
    set_torch_threads(cfg.learner.torch_threads);
    tch::manual_seed(cfg.run.seed as i64);

    // The spaces come from one env of the run's id: the learner checks the id and its
    // native library before any actor connects.
    let env_id: EnvId = cfg.env.id.parse()?;
    let (obs_space, act_space) = {
        let probe = make_vec_env(
            &env_id,
            VecEnvOptions {
                num_envs: 1,
                threads: 1,
            },
        )
        .with_context(|| format!("cannot make env {env_id}"))?;
        (
            probe.observation_space().clone(),
            probe.action_space().clone(),
        )
    };
    // The algorithm's networks (resumed if asked), the spec actors build theirs from,
    // and what evaluation acts with.
    let mut counters = Counters::default();
    let resumed_at = resumed.as_ref().map(|l| l.counters);
    let (model_spec_json, explore_json, eval_net, learner) = match cfg.algorithm {
        Algorithm::Ppo => {
            let spec = ModelSpec::for_spaces(model_kind(&cfg, &obs_space), &obs_space, &act_space)?;
            let mut ppo = Ppo::new(spec.clone(), cfg.ppo.clone(), device)?;
            let mut normalizers = Default::default();
            if let Some(l) = resumed {
                ppo.load_weights(&l.weights)
                    .context("checkpoint weights do not fit the model")?;
                ppo.load_optimizer_state(&l.optimizer)
                    .context("checkpoint optimizer state does not fit the model")?;
                counters = l.counters;
                normalizers = l.normalizers;
            }
            (
                serde_json::to_string(&spec)?,
                String::new(),
                EvalNet::Policy(spec),
                Learner::Ppo(Box::new(ppo), normalizers),
            )
        }
        Algorithm::Sac => {
            let spec = SacSpec::for_spaces(&obs_space, &act_space, cfg.sac.hidden.clone())?;
            let mut sac = Sac::new(spec.clone(), cfg.sac.clone(), device)?;
            if let Some(l) = resumed {
                sac.load_state_bytes(&l.optimizer)
                    .context("checkpoint state does not fit the sac networks")?;
                counters = l.counters;
            }
            (
                serde_json::to_string(&spec)?,
                String::new(),
                EvalNet::Sac(spec),
                Learner::OffPolicy(Box::new(sac)),
            )
        }
        Algorithm::Mpdqn => {
            let spec = cfg.mpdqn.spec_for(&obs_space, &act_space)?;
            let mut mpdqn = Mpdqn::new(spec.clone(), cfg.mpdqn.clone(), device)?;
            if let Some(l) = resumed {
                mpdqn
                    .load_state_bytes(&l.optimizer)
                    .context("checkpoint state does not fit the mp-dqn networks")?;
                counters = l.counters;
            }
            (
                serde_json::to_string(&spec)?,
                serde_json::to_string(&cfg.mpdqn.explore_settings())?,
                EvalNet::Mpdqn(spec),
                Learner::OffPolicy(Box::new(mpdqn)),
            )
        }
    };
    if cli.check {
        let mut shown = cfg.clone();
        if !shown.learner.auth_token.is_empty() {
            shown.learner.auth_token = "<set, not shown>".into();
        }
        println!("{}", toml::to_string_pretty(&shown)?);
        volley_common::say!(
            "volley-learner: config ok: {} on {} (observations {}, actions {}), model {} bytes of weights",
            cfg.algorithm.name(),
            env_id,
            obs_space.describe(),
            act_space.describe(),
            learner.weights_len()
        );
        return Ok(());
    }
    if let Some(c) = resumed_at {
        let total = cfg.run.total_steps;
        if total > 0 && c.steps >= total {
            volley_common::say!(
                "volley-learner: this run already reached run.total_steps = {total} ({} env steps); nothing to do (raise it with run.total_steps=N to train on)",
                c.steps
            );
            return Ok(());
        }
    }
    // Both ports are taken before the run directory exists, so a port in use leaves
    // nothing behind.
    let listen: std::net::SocketAddr = cfg.learner.listen.parse()?;
    let grpc_listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen} (learner.listen)"))?;
    grpc_listener.set_nonblocking(true)?;
    let metrics_addr = cfg.learner.metrics_listen.parse()?;
    volley_common::telemetry::install_exporter(metrics_addr).map_err(anyhow::Error::msg)?;
    let run_dir = match existing_dir {
        Some(d) => d,
        None => RunDir::create(Path::new(&cfg.run.dir), &run_id(&cfg), &cfg)?,
    };
    if let Some(c) = resumed_at {
        volley_common::say!(
            "volley-learner: resumed {} at update {}, {} env steps",
            run_dir.path.display(),
            c.updates,
            c.steps
        );
    }

    let run_name = run_dir
        .path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    volley_common::say!(
        "volley-learner: run {} in {} | {} on {} | device {:?} | grpc {} | metrics http://{}/metrics",
        run_name,
        run_dir.path.display(),
        cfg.algorithm.name(),
        env_id,
        device,
        listen,
        metrics_addr
    );

    let info = run_info(
        &cfg,
        &run_name,
        model_spec_json,
        explore_json,
        &obs_space,
        &act_space,
    )?;
    let (chunk_tx, chunk_rx) = mpsc::channel(cfg.learner.queue_chunks);
    let (weights_tx, weights_rx) = watch::channel(None);
    let status = Arc::new(Mutex::new(Status::default()));
    let stop = volley_common::signals::stop_on_signals("volley-learner")?;

    let evaluator = if cfg.eval.every_updates > 0 {
        Some(Evaluator::start(&env_id, &eval_net, &cfg.eval)?)
    } else {
        None
    };
    let train_stop = Arc::clone(&stop);
    let status2 = Arc::clone(&status);
    let thread = std::thread::Builder::new().name("volley-train".into());
    let torch_threads = cfg.learner.torch_threads;
    let train: Box<dyn FnOnce() -> Result<()> + Send> = match learner {
        Learner::Ppo(ppo, normalizers) => {
            let mut trainer = Trainer::new(
                cfg.clone(),
                *ppo,
                device,
                run_dir,
                counters,
                weights_tx,
                status2,
            );
            trainer.restore_normalizers(normalizers)?;
            if let Some(e) = evaluator {
                trainer.set_evaluator(e);
            }
            Box::new(move || trainer.run(chunk_rx, train_stop))
        }
        Learner::OffPolicy(algo) => {
            let mut trainer = OffPolicyTrainer::new(
                cfg.clone(),
                algo,
                device,
                run_dir,
                counters,
                weights_tx,
                status2,
            )?;
            if let Some(e) = evaluator {
                trainer.set_evaluator(e);
            }
            Box::new(move || trainer.run(chunk_rx, train_stop))
        }
    };
    let training = thread.spawn(move || {
        set_torch_threads(torch_threads);
        train()
    })?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("volley-learner-net")
        .build()?;
    let service = VolleyService::new(
        info,
        ServerOptions {
            auth_token,
            ..Default::default()
        },
        chunk_tx,
        weights_rx,
    );
    let memory = volley_learner::memory::spawn_reporter(
        matches!(device, Device::Cuda(_)),
        Duration::from_secs(5),
        Arc::clone(&stop),
    )?;
    let status_line = status_printer(
        Arc::clone(&status),
        service.clone(),
        Arc::clone(&stop),
        cfg.run.status_every_secs,
    );
    let server_stop = Arc::clone(&stop);
    let served = rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(grpc_listener)
            .with_context(|| format!("cannot serve on {listen} (learner.listen)"))?;
        server::serve(listener, service, async move {
            while !server_stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .context("the gRPC server failed")
    });
    stop.store(true, Ordering::SeqCst);
    let trained = training
        .join()
        .map_err(|_| anyhow::anyhow!("the training thread panicked"))?;
    let _ = status_line.join();
    let _ = memory.join();
    rt.shutdown_timeout(Duration::from_secs(2));
    served?;
    trained
}

/// Prints the status line every `every` seconds until `stop`: on a terminal it
/// rewrites one line, elsewhere it prints one line per interval.
fn status_printer(
    status: Arc<Mutex<Status>>,
    service: VolleyService,
    stop: Arc<AtomicBool>,
    every: f64,
) -> std::thread::JoinHandle<()> {
    use std::io::IsTerminal;
    std::thread::spawn(move || {
        let tty = std::io::stderr().is_terminal();
        let every = Duration::from_secs_f64(every.max(0.2));
        let mut last = std::time::Instant::now();
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            if last.elapsed() < every {
                continue;
            }
            last = std::time::Instant::now();
            let Ok(mut s) = status.lock().map(|s| s.clone()) else {
                return;
            };
            s.actors = service.connected_actors();
            let ret = s.return_mean.map_or("-".to_string(), |r| format!("{r:.2}"));
            let line = format!(
                "steps {} trained, {} received | fps {:.0} | return {} | updates {} | weights v{} | actors {} | dropped {}",
                s.steps, s.received, s.fps, ret, s.updates, s.version, s.actors, s.dropped
            );
            if tty {
                volley_common::say_inline!("\r\x1b[2K{line}");
            } else {
                volley_common::say!("{line}");
            }
        }
        if tty {
            volley_common::say!();
        }
    })
}
