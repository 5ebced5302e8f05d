//! The env tools behind `volley-actor envs`, `random` and `bench`: a catalogue of env
//! ids, a uniform-random baseline and a vector-env throughput measurement.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::Serialize;
use volley_common::env::ale::AtariEnv;
use volley_common::env::procgen::{GAMES, OPTIONS};
use volley_common::env::registry::valid_ids;
use volley_common::env::{
    make_vec_env, Env, EnvId, EnvResult, EnvRng, RandomActions, VecEnv, VecEnvOptions,
};

/// One row of the env catalogue.
#[derive(Debug, Clone, Serialize)]
pub struct EnvEntry {
    pub id: String,
    pub family: &'static str,
    pub observation: String,
    pub action: String,
    /// Why the spaces could not be read (native library missing), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The catalogue: every env id with its spaces, and Procgen's options.
#[derive(Debug, Clone, Serialize)]
pub struct Catalogue {
    pub envs: Vec<EnvEntry>,
    pub procgen_games: Vec<&'static str>,
    pub procgen_options: Vec<ProcgenOption>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcgenOption {
    pub name: &'static str,
    pub description: &'static str,
}

/// Lists every env id; spaces are read from a one-env instance of each (all Procgen
/// games share theirs, so one instance serves for all 16).
pub fn catalogue() -> Catalogue {
    let mut procgen_spaces: Option<(String, String, Option<String>)> = None;
    let envs = valid_ids()
        .into_iter()
        .map(|id| {
            let parsed: EnvResult<EnvId> = id.parse();
            let family = parsed.as_ref().map(|p| p.family().name()).unwrap_or("?");
            let spaces = |p: &EnvId| match make_vec_env(
                p,
                VecEnvOptions {
                    num_envs: 1,
                    threads: 1,
                    render: false,
                },
            ) {
                Ok(env) => (
                    env.observation_space().describe(),
                    env.action_space().describe(),
                    None,
                ),
                Err(e) => (String::new(), String::new(), Some(e.to_string())),
            };
            let (observation, action, error) = match &parsed {
                Ok(p @ EnvId::Procgen(_)) => {
                    procgen_spaces.get_or_insert_with(|| spaces(p)).clone()
                }
                Ok(p) => spaces(p),
                Err(e) => (String::new(), String::new(), Some(e.to_string())),
            };
            EnvEntry {
                id,
                family,
                observation,
                action,
                error,
            }
        })
        .collect();
    Catalogue {
        envs,
        procgen_games: GAMES.to_vec(),
        procgen_options: OPTIONS
            .iter()
            .map(|&(name, description)| ProcgenOption { name, description })
            .collect(),
    }
}

/// Return and length statistics of a uniform-random policy.
#[derive(Debug, Clone, Serialize)]
pub struct RandomStats {
    pub env: String,
    pub episodes: usize,
    pub seed: u64,
    pub return_mean: f64,
    pub return_std: f64,
    pub length_mean: f64,
    pub length_std: f64,
}

/// Runs a uniform-random policy for `episodes` episodes on `num_envs` envs. Each env
/// contributes a fixed quota of episodes (counted from its first reset), so short
/// episodes are not over-represented as they would be by taking the first N to end.
pub fn random_policy(
    id: &EnvId,
    episodes: usize,
    seed: u64,
    num_envs: usize,
    threads: usize,
) -> EnvResult<RandomStats> {
    let num_envs = num_envs.clamp(1, episodes.max(1));
    let mut env = make_vec_env(id, VecEnvOptions::new(num_envs, threads))?;
    let quota: Vec<usize> = (0..num_envs)
        .map(|i| episodes / num_envs + usize::from(i < episodes % num_envs))
        .collect();
    let mut done = vec![0usize; num_envs];
    let mut returns = Vec::with_capacity(episodes);
    let mut lengths = Vec::with_capacity(episodes);
    let mut rng = EnvRng::seed_from_u64(seed ^ 0x0005_eed0_fac7_10a5);
    let mut actions = RandomActions::new(env.action_space(), num_envs)?;
    env.reset(seed)?;
    while returns.len() < episodes {
        let batch = env.step(actions.sample(&mut rng))?;
        for (i, ret, len) in batch.finished_episodes() {
            if done[i] < quota[i] {
                done[i] += 1;
                returns.push(f64::from(ret));
                lengths.push(f64::from(len));
            }
        }
    }
    let (return_mean, return_std) = mean_std(&returns);
    let (length_mean, length_std) = mean_std(&lengths);
    Ok(RandomStats {
        env: id.to_string(),
        episodes,
        seed,
        return_mean,
        return_std,
        length_mean,
        length_std,
    })
}

/// Mean and population standard deviation (numpy's default, ddof 0).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Throughput of a vector env under random actions.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub env: String,
    pub envs: usize,
    pub threads: usize,
    pub seconds: f64,
    /// Env steps taken (one per env per batch step).
    pub steps: u64,
    pub steps_per_sec: f64,
}

/// Distinct random action batches cycled through by the benchmark, so that drawing
/// actions does not count against the env.
const ACTION_BATCHES: usize = 64;

/// Steps `num_envs` envs on `threads` threads with random actions for about
/// `seconds`, after a short warm-up, and reports env steps per second.
pub fn bench(id: &EnvId, num_envs: usize, threads: usize, seconds: f64) -> EnvResult<BenchResult> {
    let mut env = make_vec_env(id, VecEnvOptions::new(num_envs, threads))?;
    let mut rng = EnvRng::seed_from_u64(7);
    let mut pool: Vec<RandomActions> = (0..ACTION_BATCHES)
        .map(|_| RandomActions::new(env.action_space(), num_envs))
        .collect::<EnvResult<_>>()?;
    for a in &mut pool {
        a.sample(&mut rng);
    }
    env.reset(0)?;
    let step_for = |env: &mut Box<dyn VecEnv>, d: Duration| -> EnvResult<(u64, Duration)> {
        let start = Instant::now();
        let mut batches = 0u64;
        while start.elapsed() < d {
            for a in &pool {
                env.step(a.actions())?;
            }
            batches += ACTION_BATCHES as u64;
        }
        Ok((batches, start.elapsed()))
    };
    step_for(&mut env, Duration::from_secs_f64((seconds * 0.1).min(1.0)))?;
    let (batches, elapsed) = step_for(&mut env, Duration::from_secs_f64(seconds))?;
    let steps = batches * num_envs as u64;
    Ok(BenchResult {
        env: id.to_string(),
        envs: num_envs,
        threads,
        seconds: elapsed.as_secs_f64(),
        steps,
        steps_per_sec: steps as f64 / elapsed.as_secs_f64(),
    })
}

/// The emulator's ceiling for an ALE id: `num_envs` bare ALE consoles on `threads`
/// threads calling `act` with random actions of the game's action set (a new one
/// every frame skip, the game reset when it is over), with no observation copied,
/// preprocessed or batched. Steps are frames over the id's frameskip, so the figure
/// compares with [`bench`] of the same id.
pub fn bench_emulator(
    id: &EnvId,
    num_envs: usize,
    threads: usize,
    seconds: f64,
) -> EnvResult<BenchResult> {
    let EnvId::Atari(cfg) = id else {
        return Err(volley_common::env::EnvError::BadSettings(format!(
            "--emulator measures ALE's bare emulator: {id} is not an ALE id"
        )));
    };
    let threads = threads.min(num_envs).max(1);
    let mut groups: Vec<Vec<AtariEnv>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..num_envs {
        let mut env = AtariEnv::new(cfg)?;
        env.seed(i as u64)?;
        groups[i % threads].push(env);
    }
    let skip = u64::from(cfg.frameskip);
    let run = |envs: &mut Vec<AtariEnv>, d: Duration| -> EnvResult<(u64, f64)> {
        let start = Instant::now();
        let mut rng = EnvRng::seed_from_u64(7);
        let mut frames = 0u64;
        for e in envs.iter_mut() {
            e.emulator_mut().reset_game()?;
        }
        while start.elapsed() < d {
            for e in envs.iter_mut() {
                let set = e.action_set();
                let a = set[rng.random_range(0..set.len())];
                let emu = e.emulator_mut();
                for _ in 0..skip {
                    emu.act(a, 1.0)?;
                }
                frames += skip;
                if emu.game_over(true) {
                    emu.reset_game()?;
                }
            }
        }
        Ok((frames, start.elapsed().as_secs_f64()))
    };
    let warm = Duration::from_secs_f64((seconds * 0.1).min(1.0));
    let measure = Duration::from_secs_f64(seconds);
    // Per thread: frames and the seconds they took; the rate is the sum of theirs.
    let per_thread = std::thread::scope(|scope| -> EnvResult<Vec<(u64, f64)>> {
        let handles: Vec<_> = groups
            .iter_mut()
            .map(|g| {
                scope.spawn(move || -> EnvResult<(u64, f64)> {
                    run(g, warm)?;
                    run(g, measure)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().map_err(|_| {
                    volley_common::env::EnvError::WorkerPanicked("an emulator thread".into())
                })?
            })
            .collect()
    })?;
    let steps: u64 = per_thread.iter().map(|(f, _)| f / skip).sum();
    let rate: f64 = per_thread.iter().map(|&(f, t)| (f / skip) as f64 / t).sum();
    let seconds = per_thread.iter().map(|p| p.1).fold(0.0, f64::max);
    Ok(BenchResult {
        env: format!("{id} (bare emulator)"),
        envs: num_envs,
        threads,
        seconds,
        steps,
        steps_per_sec: rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_is_numpy_population_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!((s - 1.118_033_988_749_895).abs() < 1e-12);
    }

    #[test]
    fn random_cartpole_matches_gymnasium_statistics() {
        // Gymnasium CartPole-v1 under uniform-random actions: mean length about 22
        // (return equals length), std about 12.
        let s = random_policy(&"CartPole-v1".parse().unwrap(), 2000, 3, 8, 2).unwrap();
        assert_eq!(s.episodes, 2000);
        assert_eq!(s.return_mean, s.length_mean);
        assert!((20.0..24.5).contains(&s.length_mean), "{s:?}");
        assert!((9.0..15.0).contains(&s.length_std), "{s:?}");
    }

    #[test]
    fn random_policy_is_reproducible() {
        let id: EnvId = "CartPole-v1".parse().unwrap();
        let a = random_policy(&id, 50, 9, 4, 1).unwrap();
        let b = random_policy(&id, 50, 9, 4, 2).unwrap();
        assert_eq!(a.return_mean, b.return_mean);
        assert_eq!(a.length_std, b.length_std);
    }
}
