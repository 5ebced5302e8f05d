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
use volley_common::agent::AgentRecipe;
use volley_common::checkpoint::CheckpointStore;
use volley_common::config::apply_override;
use volley_common::env::{make_vec_env, EnvId, Space, VecEnvOptions};
use volley_learner::algo::Source;
use volley_learner::algo::{self, BuildContext};
use volley_learner::checkpoint;
use volley_learner::config::RunConfig;
use volley_learner::demos::{AggregateSettings, DemoSettings, Demos};
use volley_learner::eval::Evaluator;
use volley_learner::imitation::{self, Expert};
use volley_learner::replay::ObsFormat;
use volley_learner::rundir::RunDir;
use volley_learner::runs::{self, file_safe, timestamp, Record, Recorder, RunStatus};
use volley_learner::server::{self, RunInfo, ServerOptions, VolleyService};
use volley_learner::tracking::Tracking;
use volley_learner::training::{DataInputs, ObsLayout, Status, Training};
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
    /// Print `yes` when the config's algorithm trains on actors' data, `no` when the
    /// learner trains alone (behaviour cloning), and exit (deploy/local.sh asks).
    #[arg(long)]
    takes_actors: bool,
    /// Config overrides, key.path=value.
    overrides: Vec<String>,
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

/// The run's name: `run.name`, or `<algorithm>-<env>-<yyyymmdd-hhmmss>`.
fn run_name(cfg: &RunConfig) -> String {
    if !cfg.run.name.is_empty() {
        return cfg.run.name.clone();
    }
    let env = file_safe(cfg.env.id.split('?').next().unwrap_or("env"));
    format!("{}-{env}-{}", cfg.algorithm, timestamp(runs::now()))
}

/// What `Register` tells actors: the run's env, rollout settings, algorithm and model.
fn run_info(
    cfg: &RunConfig,
    run_id: &str,
    recipe: &AgentRecipe,
    fields: volley_common::agent::ChunkFields,
    obs: &Space,
    act: &Space,
) -> Result<RunInfo> {
    let algo = &cfg.algorithm;
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
    Ok(RunInfo {
        run_id: run_id.to_string(),
        algorithm: cfg.algorithm.clone(),
        model_spec_json: recipe.spec_json.clone(),
        env_id: cfg.env.id.clone(),
        num_envs: cfg.env.num_envs,
        env_threads: cfg.env.threads,
        chunk_steps: cfg.rollout.chunk_steps,
        max_inflight: cfg.rollout.max_inflight,
        obs_shape,
        obs_dtype,
        action: action_spec(act, algo)?,
        fields,
        explore_json: recipe.explore_json.clone(),
        reward_json: if cfg.reward.is_identity() {
            String::new()
        } else {
            serde_json::to_string(&cfg.reward)?
        },
    })
}

/// How the actions of `act` travel on the wire.
fn action_spec(act: &Space, algo: &str) -> Result<ActionSpec> {
    Ok(match act {
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
    })
}

/// Sets the stop flag when dropped: the training thread holds one, so however it
/// ends (done, an error, a panic) the server stops serving and the process exits.
struct StopOnExit(Arc<AtomicBool>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The message of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
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
    let (mut cfg, existing_dir) = match &cli.resume {
        Some(dir) => {
            let mut table = runs::read_config(dir)?;
            for o in &overrides {
                apply_override(&mut table, o)?;
            }
            (RunConfig::from_table(table)?, Some(dir.clone()))
        }
        None => (RunConfig::load(cli.config.as_deref(), &overrides)?, None),
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
    let probe = make_vec_env(
        &env_id,
        VecEnvOptions {
            num_envs: 1,
            threads: 1,
            render: false,
        },
    )
    .with_context(|| format!("cannot make env {env_id}"))?;
    let (obs_space, act_space) = (
        probe.observation_space().clone(),
        probe.action_space().clone(),
    );
    cfg.reward
        .validate(&env_id, probe.time_limit())
        .map_err(anyhow::Error::msg)?;
    // The algorithm (its config section resolved), and the agent actors and the
    // evaluation build from its spec: built here too, so a spec they cannot build
    // fails now.
    let built = algo::build(BuildContext {
        cfg: &cfg,
        observation_space: &obs_space,
        action_space: &act_space,
        device,
    })
    .with_context(|| format!("cannot build {} for {env_id}", cfg.algorithm))?;
    cfg.sections = toml::Table::from_iter([(
        cfg.algorithm.clone(),
        toml::Value::Table(built.section.clone()),
    )]);
    let recipe = AgentRecipe {
        algorithm: cfg.algorithm.clone(),
        spec_json: built.spec_json.clone(),
        explore_json: built.explore_json.clone(),
    };
    let fields = recipe
        .build(&obs_space, &act_space, 1, 0, Device::Cpu)
        .context("actors could not act with this model")?
        .fields();
    let layout = ObsLayout {
        obs: ObsFormat::of(&obs_space),
        action_width: action_spec(&act_space, &cfg.algorithm)?.replay_width(),
        final_obs: probe.batch().has_final_obs,
        frame_stack: env_id.frame_stack(),
    };
    drop(probe);
    let source = built.algorithm.source();
    if cli.takes_actors {
        println!("{}", if source.takes_actors() { "yes" } else { "no" });
        return Ok(());
    }
    if cli.check {
        let mut shown = cfg.clone();
        if !shown.learner.auth_token.is_empty() {
            shown.learner.auth_token = "<set, not shown>".into();
        }
        println!("{}", toml::to_string_pretty(&shown)?);
        volley_common::say!(
            "volley-learner: config ok: {} on {} (observations {}, actions {}), model {} bytes of weights",
            cfg.algorithm,
            env_id,
            obs_space.describe(),
            act_space.describe(),
            built.algorithm.actor_weights().len()
        );
        return Ok(());
    }
    let restored = match &existing_dir {
        Some(dir) => {
            let store = CheckpointStore::new(dir.join("checkpoints"), cfg.checkpoint.keep);
            Some(
                checkpoint::load_latest(&store)
                    .with_context(|| format!("cannot resume {}", dir.display()))?,
            )
        }
        None => None,
    };
    if let Some(r) = &restored {
        let total = cfg.run.total_steps;
        let steps = r.training.counters.steps;
        if total > 0 && steps >= total {
            volley_common::say!(
                "volley-learner: this run already reached run.total_steps = {total} ({steps} env steps); nothing to do (raise it with run.total_steps=N to train on)"
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
    let mut run_dir = match existing_dir {
        Some(d) => RunDir::open(d)?,
        None => {
            let record = Record::new(
                &run_name(&cfg),
                &cfg.run.group,
                &cfg.algorithm,
                &cfg.env.id,
                cfg.run.seed,
            );
            RunDir::create(Path::new(&cfg.run.dir), record, &cfg)?
        }
    };
    let recorder = run_dir.recorder();
    let (run_name, run_id) = {
        let r = recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (r.record().name.clone(), r.record().id.clone())
    };
    // TensorBoard, MLflow, the figures.
    run_dir.write_agent(&recipe)?;
    let tracking = Tracking::start(&cfg, &mut run_dir)?;
    let info = run_info(&cfg, &run_name, &recipe, fields, &obs_space, &act_space)?;
    // Behaviour cloning trains on imitation.dataset; DAgger starts from it when it is
    // given one, else from nothing.
    let given = !cfg.imitation.dataset.trim().is_empty();
    let demos = match &source {
        Source::Aggregate(s) if !given => {
            Some(Demos::new(&obs_space, &act_space, s.capacity, device)?)
        }
        Source::Demos(DemoSettings { capacity, .. })
        | Source::Aggregate(AggregateSettings { capacity, .. }) => Some(imitation::load_dataset(
            &cfg, &obs_space, &act_space, *capacity, device,
        )?),
        _ => None,
    };
    let expert = Expert::load(&cfg, &obs_space, &act_space, 1)?;
    if let Some(expert) = &expert {
        let r = expert.measure(&cfg)?;
        volley_common::say!(
            "volley-learner: expert {} (id {}, checkpoint {}): return {:.1} +- {:.1} over {} episodes of {}",
            r.run,
            r.run_id,
            r.checkpoint,
            r.return_mean,
            r.return_std,
            r.episodes,
            r.env
        );
        metrics::gauge!(volley_common::telemetry::EXPERT_RETURN).set(r.return_mean);
        run_dir.write_json("expert.json", &r)?;
    }

    let (chunk_tx, chunk_rx) = mpsc::channel(cfg.learner.queue_chunks);
    let (weights_tx, weights_rx) = watch::channel(None);
    let status = Arc::new(Mutex::new(Status::default()));
    let stop = volley_common::signals::stop_on_signals("volley-learner")?;
    let dir_shown = run_dir.path.display().to_string();
    let run_path = run_dir.path.clone();
    let mut training = Training::new(
        cfg.clone(),
        built.algorithm,
        DataInputs {
            layout,
            demos,
            expert,
        },
        device,
        run_dir,
        weights_tx,
        Arc::clone(&status),
    )?;
    if let Some(r) = restored {
        let name = r.name.clone();
        training.restore(r)?;
        let c = training.counters();
        volley_common::say!(
            "volley-learner: resumed {dir_shown} from checkpoint {name}: update {}, {} env steps, weights v{}",
            c.updates,
            c.steps,
            c.version
        );
    }
    if cfg.eval.every_updates > 0 || cfg.eval.at_start {
        training.set_evaluator(Evaluator::start(
            &env_id,
            &recipe,
            &cfg.eval,
            Some(&run_path),
        )?);
    }
    // Work before any data (imitation-seeded SAC's pretraining) ends before actors
    // are served, so that none waits for first weights meanwhile.
    set_torch_threads(cfg.learner.torch_threads);
    training.prepare()?;
    volley_common::say!(
        "volley-learner: run {} (id {}) in {} | {} on {} | device {:?} | grpc {} | metrics http://{}/metrics",
        run_name,
        run_id,
        dir_shown,
        cfg.algorithm,
        env_id,
        device,
        listen,
        metrics_addr
    );

    let train_stop = Arc::clone(&stop);
    let torch_threads = cfg.learner.torch_threads;
    let training = std::thread::Builder::new()
        .name("volley-train".into())
        .spawn(move || {
            let _stop = StopOnExit(Arc::clone(&train_stop));
            set_torch_threads(torch_threads);
            let r = training.run(chunk_rx, train_stop);
            if let Err(e) = &r {
                volley_common::say!("volley-learner: training failed: {e:#}; stopping");
            }
            r
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
            refuse_actors: (!source.takes_actors()).then(|| {
                format!(
                    "this run trains {} on the learner alone, from imitation.dataset: it takes no actors",
                    cfg.algorithm
                )
            }),
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
        .map_err(|payload| {
            anyhow::anyhow!("the training thread panicked: {}", panic_message(&*payload))
        })
        .and_then(|r| r.context("training failed"));
    let _ = status_line.join();
    let _ = memory.join();
    rt.shutdown_timeout(Duration::from_secs(2));
    let outcome = served.and(trained);
    let status = finish(&recorder, &dir_shown, cfg.run.total_steps, &outcome);
    tracking.finish(status);
    outcome
}

/// Writes how the session ended into the run's record, and says it with where the
/// best checkpoint is; returns the status.
fn finish(recorder: &Mutex<Recorder>, dir: &str, total: u64, outcome: &Result<()>) -> RunStatus {
    let mut rec = recorder
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let steps = rec.record().steps;
    let (status, error) = match outcome {
        Ok(()) if total > 0 && steps >= total => (RunStatus::Finished, None),
        Ok(()) => (RunStatus::Stopped, None),
        Err(e) => (RunStatus::Failed, Some(format!("{e:#}"))),
    };
    if let Err(e) = rec.end(status, error) {
        volley_common::say!("volley-learner: cannot write the run record: {e:#}");
    }
    let r = rec.record();
    let best = match &r.best {
        Some(b) => format!(
            "best checkpoint {dir}/checkpoints/best (eval return {:.3} at {} env steps)",
            b.eval_return_mean, b.steps
        ),
        None => "no evaluation yet".into(),
    };
    volley_common::say!(
        "volley-learner: run {} (id {}) {} after {} env steps, {:.0} s; {best}",
        r.name,
        r.id,
        status.name(),
        r.steps,
        r.wall_seconds
    );
    status
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
