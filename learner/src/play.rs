//! Playing a trained agent: a run's checkpoint, unrolled in its env.
//!
//! [`Trained::load`] finds what a run's agent is built from (`agent.json`; for runs
//! made before it existed, the run's algorithm is built from its `config.toml`) and
//! the weights of a checkpoint: `best` (the best evaluation's weights), `latest`, or
//! the checkpoint of one update number. [`play`] runs `episodes` episodes at once, one
//! per env of one vector env, as the learner's evaluation does: the same env settings
//! (or an override), the same seed and step limit by default, greedy actions
//! (argmax, mean action) or the algorithm's own exploration (`stochastic`). So playing
//! the best checkpoint with the run's `eval.seed` and `eval.episodes` gives back the
//! returns its evaluation recorded.
//!
//! While it plays, a [`Watcher`] sees every step of the watched env's first episode
//! before its action is applied (the agent, the observation, the action, the env to
//! render), which is how videos and explanations are made; the transitions of every
//! episode can be kept as a [`volley_common::dataset::Transitions`] file.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tch::{Device, Kind, Tensor};
use volley_common::agent::{
    observation_shape, observations, ActionBatch, Agent, AgentRecipe, Mode, Progress,
};
use volley_common::checkpoint::CheckpointStore;
use volley_common::dataset::{ActionColumn, ObsColumn, Transitions};
use volley_common::env::{make_vec_env, EnvId, ObsBuf, Space, VecEnv, VecEnvOptions};

use crate::config::RunConfig;
use crate::runs::{self, FoundRun};

pub use crate::checkpoint::Which;

/// A run's trained agent: what it is built from and a checkpoint's weights.
#[derive(Debug, Clone)]
pub struct Trained {
    pub run: FoundRun,
    pub cfg: RunConfig,
    pub recipe: AgentRecipe,
    pub weights: Vec<u8>,
    /// `best`, `update-<n>`.
    pub checkpoint: String,
    /// Where the run stood when these weights were published (what exploration
    /// anneals by when playing stochastically).
    pub progress: Progress,
    /// The best checkpoint's evaluation (`eval.json`), when playing it.
    pub eval: Option<serde_json::Value>,
}

impl Trained {
    /// The agent of `run` at checkpoint `which`.
    pub fn load(run: &FoundRun, which: Which) -> Result<Trained> {
        let table = runs::read_config(&run.dir)?;
        let cfg = RunConfig::from_table(table)
            .with_context(|| format!("{}/config.toml", run.dir.display()))?;
        let store = CheckpointStore::new(run.dir.join("checkpoints"), usize::MAX);
        let shown = run.dir.display();
        let loaded = match which {
            Which::Best => store
                .load_best()
                .with_context(|| format!("cannot read the best checkpoint of {shown}"))?
                .with_context(|| {
                    format!("{shown} has no best checkpoint yet (no evaluation finished): use --checkpoint latest")
                })?,
            Which::Latest => store
                .load_latest()
                .with_context(|| format!("cannot read the latest checkpoint of {shown}"))?,
            Which::Update(n) => store.load_update(n)?,
        };
        let mut files = loaded.files;
        let weights = files
            .remove("weights.bin")
            .with_context(|| format!("checkpoint {} has no weights.bin", loaded.name))?;
        let (progress, eval) = match files.get("eval.json") {
            Some(b) => {
                let v: serde_json::Value =
                    serde_json::from_slice(b).context("bad eval.json in checkpoints/best")?;
                let p = Progress {
                    version: v["weights_version"].as_u64().unwrap_or(0),
                    steps: v["steps"].as_u64().unwrap_or(0),
                    episodes: 0,
                };
                (p, Some(v))
            }
            None => {
                let t: crate::checkpoint::TrainingState = files
                    .get("training.json")
                    .map(|b| serde_json::from_slice(b))
                    .transpose()
                    .context("bad training.json")?
                    .with_context(|| format!("checkpoint {} has no training.json", loaded.name))?;
                let c = t.counters;
                (
                    Progress {
                        version: c.version,
                        steps: c.steps,
                        episodes: c.episodes,
                    },
                    None,
                )
            }
        };
        let recipe = recipe_of(&run.dir, &cfg)?;
        Ok(Trained {
            run: run.clone(),
            cfg,
            recipe,
            weights,
            checkpoint: loaded.name,
            progress,
            eval,
        })
    }

    /// The env the run trained on, or `over`.
    pub fn env_id(&self, over: Option<&str>) -> Result<EnvId> {
        let id = over.unwrap_or(&self.cfg.env.id);
        id.parse()
            .with_context(|| format!("cannot play on env '{id}'"))
    }

    /// The agent for `num_envs` envs of these spaces, with this checkpoint's weights.
    pub fn agent(
        &self,
        obs: &Space,
        act: &Space,
        num_envs: usize,
        seed: u64,
    ) -> Result<Box<dyn Agent>> {
        let mut agent = self
            .recipe
            .build(obs, act, num_envs, seed, Device::Cpu)
            .with_context(|| {
                format!(
                    "cannot build the {} agent of {} for these spaces",
                    self.recipe.algorithm,
                    self.run.dir.display()
                )
            })?;
        agent
            .load_weights(&self.weights)
            .with_context(|| format!("checkpoint {} does not fit its agent", self.checkpoint))?;
        Ok(agent)
    }
}

/// What a run's agent is built from: its `agent.json`, else (runs made before it
/// existed) its algorithm built from `config.toml` on the CPU.
fn recipe_of(dir: &Path, cfg: &RunConfig) -> Result<AgentRecipe> {
    let path = dir.join(runs::AGENT);
    if path.is_file() {
        let text =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        return serde_json::from_slice(&text).with_context(|| format!("bad {}", path.display()));
    }
    let env_id: EnvId = cfg.env.id.parse()?;
    let probe = make_vec_env(&env_id, VecEnvOptions::new(1, 1))?;
    let built = crate::algo::build(crate::algo::BuildContext {
        cfg,
        observation_space: probe.observation_space(),
        action_space: probe.action_space(),
        device: Device::Cpu,
    })
    .with_context(|| {
        format!(
            "cannot rebuild the {} agent of {}",
            cfg.algorithm,
            dir.display()
        )
    })?;
    Ok(AgentRecipe {
        algorithm: cfg.algorithm.clone(),
        spec_json: built.spec_json,
        explore_json: built.explore_json,
    })
}

/// How to play.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// Episodes, played at once (one env each).
    pub episodes: usize,
    /// Seed of the envs (the run's `eval.seed` gives its evaluation's episodes).
    pub seed: u64,
    /// Env steps after which an unfinished episode ends with its return so far.
    pub max_steps: u32,
    pub mode: Mode,
    /// Another env id to play on (same spaces).
    pub env: Option<String>,
    /// Keep every episode's transitions.
    pub record: bool,
    /// Whether the watched env should render its own large frames (Procgen's
    /// 512x512; other envs render the same either way).
    pub render: bool,
}

impl PlayOptions {
    /// The run's evaluation settings: its seed, episodes and step limit, greedy.
    pub fn like_eval(cfg: &RunConfig) -> PlayOptions {
        PlayOptions {
            episodes: cfg.eval.episodes.max(1),
            seed: cfg.eval.seed,
            max_steps: cfg.eval.max_steps,
            mode: Mode::Greedy,
            env: None,
            record: false,
            render: false,
        }
    }
}

/// One step of the watched env, before its action is applied.
pub struct Moment<'a> {
    /// The step's index in the episode (0 is the first).
    pub step: u32,
    /// The return so far (before this step's reward).
    pub return_so_far: f64,
    /// The watched env's observation as the agent read it, `[1, *shape]`.
    pub obs: Tensor,
    /// The action taken for it (this env's row only).
    pub taken: ActionBatch,
    pub agent: &'a dyn Agent,
    /// The env, for its frame: `env.render(index)`.
    pub env: &'a mut dyn VecEnv,
    pub index: usize,
}

impl std::fmt::Debug for Moment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moment")
            .field("step", &self.step)
            .field("return_so_far", &self.return_so_far)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// What sees the watched env play.
pub trait Watcher {
    /// Before each action of the watched env's first episode.
    fn step(&mut self, moment: Moment<'_>) -> Result<()>;
    /// Before each action, the whole batch: `obs` `[N, *shape]` as the agent read it,
    /// the actions for it, and which envs are still in their first episode.
    fn batch(
        &mut self,
        _agent: &dyn Agent,
        _obs: &Tensor,
        _taken: &ActionBatch,
        _live: &[bool],
    ) -> Result<()> {
        Ok(())
    }
    /// Once it ended, with its return and length.
    fn end(&mut self, _return: f64, _length: u32) -> Result<()> {
        Ok(())
    }
}

/// One episode's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Episode {
    #[serde(rename = "return")]
    pub ret: f64,
    pub length: u32,
    /// It ended by the step limit of the play, not by the env.
    pub cut: bool,
}

/// What a play did.
#[derive(Debug, Clone)]
pub struct Played {
    pub env: EnvId,
    pub episodes: Vec<Episode>,
    pub transitions: Option<Transitions>,
}

impl Played {
    pub fn return_mean(&self) -> f64 {
        mean(self.episodes.iter().map(|e| e.ret))
    }

    pub fn return_std(&self) -> f64 {
        let m = self.return_mean();
        mean(self.episodes.iter().map(|e| (e.ret - m).powi(2))).sqrt()
    }

    pub fn length_mean(&self) -> f64 {
        mean(self.episodes.iter().map(|e| f64::from(e.length)))
    }
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

/// Plays `opts.episodes` episodes of `trained` (see the module docs); `watcher` sees
/// env 0's episode.
pub fn play(
    trained: &Trained,
    opts: &PlayOptions,
    mut watcher: Option<&mut dyn Watcher>,
) -> Result<Played> {
    if opts.episodes == 0 {
        bail!("play needs at least one episode");
    }
    let env_id = trained.env_id(opts.env.as_deref())?;
    let mut env = make_vec_env(
        &env_id,
        VecEnvOptions {
            render: opts.render,
            ..VecEnvOptions::new(opts.episodes, 1)
        },
    )
    .with_context(|| format!("cannot make {} envs of {env_id}", opts.episodes))?;
    let n = env.num_envs();
    let obs_space = env.observation_space().clone();
    let space = env.action_space().clone();
    let mut agent = trained.agent(&obs_space, &space, n, opts.seed)?;
    let shape = observation_shape(&obs_space);
    let obs_len = obs_space.flat_len();
    let mut record = opts.record.then(|| recorder(&obs_space, &space));
    let (mut act, mut clipped) = (ActionBatch::default(), Vec::new());
    env.reset(opts.seed)?;
    let mut done: Vec<Option<Episode>> = vec![None; n];
    let (mut ret, mut len) = (vec![0f64; n], vec![0u32; n]);
    for _ in 0..opts.max_steps {
        let obs = observations(&env.batch().obs, n, &shape)?;
        agent.act(&obs, &trained.progress, opts.mode, &mut act)?;
        if let Some(w) = watcher.as_deref_mut() {
            let live: Vec<bool> = done.iter().map(Option::is_none).collect();
            w.batch(&*agent, &obs, &act, &live)?;
        }
        if let Some(w) = watcher.as_deref_mut().filter(|_| done[0].is_none()) {
            let row = obs.f_narrow(0, 0, 1)?.f_to_kind(Kind::Float)?;
            w.step(Moment {
                step: len[0],
                return_so_far: ret[0],
                obs: row,
                taken: row_of(&act, 0, n),
                agent: &*agent,
                env: &mut *env,
                index: 0,
            })?;
        }
        let actions = act.env_actions(&space, &mut clipped)?;
        // What a recording keeps of this step: the observations before it and the
        // actions as the env takes them.
        let before = record
            .is_some()
            .then(|| (env.batch().obs.clone(), TakenRows::of(&actions)));
        let batch = env.step(actions)?;
        for i in 0..n {
            if done[i].is_some() {
                continue;
            }
            ret[i] += f64::from(batch.reward[i]);
            len[i] += 1;
            if let (Some(t), Some((before, taken_env))) = (record.as_mut(), before.as_ref()) {
                let next = if batch.done(i) && batch.has_final_obs {
                    &batch.final_obs
                } else {
                    &batch.obs
                };
                push_row(
                    t,
                    before,
                    next,
                    i,
                    obs_len,
                    taken_env,
                    batch.reward[i],
                    batch.terminated[i],
                    batch.truncated[i],
                    len[i] - 1,
                );
            }
            if batch.done(i) {
                // The env's own statistics, as the evaluation records them.
                done[i] = Some(Episode {
                    ret: f64::from(batch.episode_return[i]),
                    length: batch.episode_length[i],
                    cut: false,
                });
                if i == 0 {
                    if let Some(w) = watcher.as_deref_mut() {
                        w.end(ret[0], len[0])?;
                    }
                }
            }
        }
        if done.iter().all(Option::is_some) {
            break;
        }
    }
    let episodes: Vec<Episode> = done
        .iter()
        .enumerate()
        .map(|(i, d)| {
            d.unwrap_or(Episode {
                ret: ret[i],
                length: len[i],
                cut: true,
            })
        })
        .collect();
    if episodes[0].cut {
        if let Some(w) = watcher {
            w.end(ret[0], len[0])?;
        }
    }
    if let Some(t) = record.as_mut() {
        t.metadata.insert("env".into(), env_id.to_string());
        t.metadata
            .insert("observation_space".into(), obs_space.describe());
        t.metadata.insert("action_space".into(), space.describe());
        t.metadata
            .insert("run_id".into(), trained.run.record.id.clone());
        t.metadata
            .insert("run".into(), trained.run.record.name.clone());
        t.metadata
            .insert("algorithm".into(), trained.recipe.algorithm.clone());
        t.metadata
            .insert("checkpoint".into(), trained.checkpoint.clone());
        t.metadata
            .insert("mode".into(), mode_name(opts.mode).into());
        t.metadata.insert("seed".into(), opts.seed.to_string());
        order_by_episode(t);
    }
    Ok(Played {
        env: env_id,
        episodes,
        transitions: record,
    })
}

/// `greedy` or `stochastic`.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Greedy => "greedy",
        Mode::Explore => "stochastic",
    }
}

/// Row `i` of a batch of `n` actions.
fn row_of(act: &ActionBatch, i: usize, n: usize) -> ActionBatch {
    let slice_f = |v: &[f32]| {
        if v.is_empty() {
            Vec::new()
        } else {
            let w = v.len() / n.max(1);
            v[i * w..(i + 1) * w].to_vec()
        }
    };
    ActionBatch {
        discrete: act.discrete.get(i).map(|&a| vec![a]).unwrap_or_default(),
        continuous: slice_f(&act.continuous),
        params: slice_f(&act.params),
        env_params: slice_f(&act.env_params),
        logprobs: act.logprobs.get(i).map(|&a| vec![a]).unwrap_or_default(),
        values: act.values.get(i).map(|&a| vec![a]).unwrap_or_default(),
    }
}

/// The actions as the env took them, kept for the recording.
enum TakenRows {
    Discrete(Vec<i64>),
    Continuous(Vec<f32>),
    Parameterised(Vec<i64>, Vec<f32>),
}

impl TakenRows {
    fn of(a: &volley_common::env::Actions<'_>) -> TakenRows {
        use volley_common::env::Actions;
        match a {
            Actions::Discrete(d) => TakenRows::Discrete(d.to_vec()),
            Actions::Continuous(c) => TakenRows::Continuous(c.to_vec()),
            Actions::Parameterised { choice, params } => {
                TakenRows::Parameterised(choice.to_vec(), params.to_vec())
            }
        }
    }
}

/// An empty recording for these spaces.
fn recorder(obs: &Space, act: &Space) -> Transitions {
    let shape = observation_shape(obs).iter().map(|&d| d as usize).collect();
    let actions = match act {
        Space::Box { .. } => ActionColumn::Continuous {
            dim: act.flat_len(),
            values: Vec::new(),
        },
        Space::Parameterised { .. } => ActionColumn::Parameterised {
            choices: Vec::new(),
            params: act.flat_len(),
            values: Vec::new(),
        },
        _ => ActionColumn::Discrete(Vec::new()),
    };
    Transitions::new(shape, matches!(obs, Space::Image { .. }), actions)
}

#[allow(clippy::too_many_arguments)]
fn push_row(
    t: &mut Transitions,
    before: &ObsBuf,
    after: &ObsBuf,
    i: usize,
    obs_len: usize,
    taken: &TakenRows,
    reward: f32,
    terminated: bool,
    truncated: bool,
    step: u32,
) {
    let rows = |col: &mut ObsColumn, buf: &ObsBuf| match (col, buf) {
        (ObsColumn::F32(c), ObsBuf::F32(b)) => {
            c.extend_from_slice(&b[i * obs_len..(i + 1) * obs_len])
        }
        (ObsColumn::U8(c), ObsBuf::U8(b)) => {
            c.extend_from_slice(&b[i * obs_len..(i + 1) * obs_len])
        }
        _ => unreachable!("observation dtypes agree with the recorder's"),
    };
    rows(&mut t.obs, before);
    rows(&mut t.next_obs, after);
    match (&mut t.actions, taken) {
        (ActionColumn::Discrete(c), TakenRows::Discrete(a)) => c.push(a[i]),
        (ActionColumn::Continuous { dim, values }, TakenRows::Continuous(a)) => {
            values.extend_from_slice(&a[i * *dim..(i + 1) * *dim])
        }
        (
            ActionColumn::Parameterised {
                choices,
                params,
                values,
            },
            TakenRows::Parameterised(c, p),
        ) => {
            choices.push(c[i]);
            values.extend_from_slice(&p[i * *params..(i + 1) * *params]);
        }
        _ => unreachable!("action kinds agree with the recorder's"),
    }
    t.rewards.push(reward);
    t.terminated.push(terminated);
    t.truncated.push(truncated);
    t.episode.push(i as i64);
    t.step.push(i64::from(step));
}

/// Rows are recorded step by step across envs; the file keeps each episode's rows
/// together, in episode order.
fn order_by_episode(t: &mut Transitions) {
    let mut order: Vec<usize> = (0..t.len()).collect();
    order.sort_by_key(|&r| (t.episode[r], t.step[r]));
    let per = t.obs_shape.iter().product::<usize>();
    let pick_obs = |c: &ObsColumn| match c {
        ObsColumn::F32(v) => ObsColumn::F32(
            order
                .iter()
                .flat_map(|&r| v[r * per..(r + 1) * per].iter().copied())
                .collect(),
        ),
        ObsColumn::U8(v) => ObsColumn::U8(
            order
                .iter()
                .flat_map(|&r| v[r * per..(r + 1) * per].iter().copied())
                .collect(),
        ),
    };
    t.obs = pick_obs(&t.obs);
    t.next_obs = pick_obs(&t.next_obs);
    let rows_f = |v: &[f32], w: usize| -> Vec<f32> {
        order
            .iter()
            .flat_map(|&r| v[r * w..(r + 1) * w].iter().copied())
            .collect()
    };
    t.actions = match &t.actions {
        ActionColumn::Discrete(a) => ActionColumn::Discrete(order.iter().map(|&r| a[r]).collect()),
        ActionColumn::Continuous { dim, values } => ActionColumn::Continuous {
            dim: *dim,
            values: rows_f(values, *dim),
        },
        ActionColumn::Parameterised {
            choices,
            params,
            values,
        } => ActionColumn::Parameterised {
            choices: order.iter().map(|&r| choices[r]).collect(),
            params: *params,
            values: rows_f(values, *params),
        },
    };
    t.rewards = order.iter().map(|&r| t.rewards[r]).collect();
    t.terminated = order.iter().map(|&r| t.terminated[r]).collect();
    t.truncated = order.iter().map(|&r| t.truncated[r]).collect();
    t.episode = order.iter().map(|&r| t.episode[r]).collect();
    t.step = order.iter().map(|&r| t.step[r]).collect();
}
