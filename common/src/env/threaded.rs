//! [`ThreadedVecEnv`]: a [`VecEnv`] over single-env simulators, stepped on a [`Pool`].
//!
//! Threads claim envs in small blocks from a shared counter, so uneven step costs
//! balance out; a thread writes only the rows of the envs it claimed. Every env has its
//! own random generator, so results do not depend on which thread stepped it.
//! Auto-reset, the time limit (truncation), episode statistics and lives live here, so
//! every simulator gets the same semantics. Observations are the env's element type
//! ([`Env::Obs`]: `f32` vectors or `u8` images).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rand::SeedableRng;

use super::pool::{Pool, Rows};
use super::{Actions, Env, EnvError, EnvResult, EnvRng, ObsBuf, ObsElem, Space, StepBatch, VecEnv};

/// One env and its bookkeeping.
struct Slot<E> {
    env: E,
    rng: EnvRng,
    /// Return and length of the running episode.
    ret: f64,
    len: u32,
    /// Lives at the start of the step (0 for envs without lives).
    lives: i32,
}

/// A vector of [`Env`]s stepped on worker threads.
pub struct ThreadedVecEnv<E: Env> {
    slots: Vec<Slot<E>>,
    batch: StepBatch,
    obs_space: Space,
    act_space: Space,
    max_steps: Option<u32>,
    /// Envs a thread takes at a time from `next`: threads claim blocks until none are
    /// left, so one slow env (many contacts) does not hold a whole chunk back.
    block: usize,
    /// Next unclaimed env of the current round.
    next: AtomicUsize,
    pool: Pool,
    /// Until the first reset (and after a failed step), stepping is an error.
    was_reset: bool,
    /// The first error of a round's envs (a native simulator's failure).
    failure: Mutex<Option<EnvError>>,
}

impl<E: Env> std::fmt::Debug for ThreadedVecEnv<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadedVecEnv")
            .field("num_envs", &self.slots.len())
            .field("threads", &self.pool.threads())
            .field("obs_space", &self.obs_space)
            .field("act_space", &self.act_space)
            .finish()
    }
}

impl<E: Env> ThreadedVecEnv<E> {
    /// Wraps `envs` (at least one) and steps them on `threads` threads (at most one per
    /// env; the caller's thread counts as one).
    pub fn new(envs: Vec<E>, threads: usize) -> EnvResult<Self> {
        let n = envs.len();
        if n == 0 {
            return Err(EnvError::BadSettings("need at least one env".into()));
        }
        if threads == 0 {
            return Err(EnvError::BadSettings(
                "thread count must be at least 1".into(),
            ));
        }
        let threads = threads.min(n);
        let obs_space = envs[0].observation_space();
        let act_space = envs[0].action_space();
        let max_steps = envs[0].max_episode_steps();
        let obs_len = obs_space.flat_len();
        let slots = envs
            .into_iter()
            .enumerate()
            .map(|(i, env)| Slot {
                env,
                rng: EnvRng::seed_from_u64(i as u64),
                ret: 0.0,
                len: 0,
                lives: 0,
            })
            .collect();
        let block = (n / (threads * 4)).max(1);
        Ok(ThreadedVecEnv {
            slots,
            batch: StepBatch::new(n, obs_len, E::Obs::U8, true),
            obs_space,
            act_space,
            max_steps,
            block,
            next: AtomicUsize::new(0),
            pool: Pool::new(threads, "volley-env")?,
            was_reset: false,
            failure: Mutex::new(None),
        })
    }

    /// The simulators, for tests and tools that inspect or set their state.
    pub fn envs_mut(&mut self) -> impl Iterator<Item = &mut E> {
        self.slots.iter_mut().map(|s| &mut s.env)
    }
}

/// The rows of `buf`, which `new` made of the env's element type.
fn obs_rows<T: ObsElem>(buf: &mut ObsBuf) -> EnvResult<&mut [T]> {
    T::rows(buf)
        .ok_or_else(|| EnvError::BadSettings("observation buffer of the wrong element type".into()))
}

impl<E: Env> VecEnv for ThreadedVecEnv<E> {
    fn num_envs(&self) -> usize {
        self.slots.len()
    }

    fn time_limit(&self) -> Option<u32> {
        self.max_steps
    }

    fn render(&mut self, index: usize) -> EnvResult<super::Frame> {
        let n = self.slots.len();
        let slot = self.slots.get_mut(index).ok_or_else(|| {
            EnvError::BadSettings(format!("no env {index} to render: there are {n}"))
        })?;
        slot.env.render()
    }

    fn observation_space(&self) -> &Space {
        &self.obs_space
    }

    fn action_space(&self) -> &Space {
        &self.act_space
    }

    fn reset(&mut self, seed: u64) -> EnvResult<&StepBatch> {
        self.was_reset = false;
        let obs_len = self.batch.obs_len;
        let obs = obs_rows::<E::Obs>(&mut self.batch.obs)?;
        for (i, ((slot, row), lives)) in self
            .slots
            .iter_mut()
            .zip(obs.chunks_exact_mut(obs_len))
            .zip(self.batch.lives.iter_mut())
            .enumerate()
        {
            let s = seed.wrapping_add(i as u64);
            slot.rng = EnvRng::seed_from_u64(s);
            slot.env.seed(s)?;
            slot.env.reset(&mut slot.rng, row)?;
            slot.ret = 0.0;
            slot.len = 0;
            slot.lives = slot.env.lives().unwrap_or(0);
            *lives = slot.lives;
        }
        self.batch.clear_step_flags();
        self.was_reset = true;
        Ok(&self.batch)
    }

    fn step(&mut self, actions: Actions<'_>) -> EnvResult<&StepBatch> {
        if !self.was_reset {
            return Err(EnvError::BadSettings(
                "step called before reset: reset the vector env first".into(),
            ));
        }
        let n = self.slots.len();
        actions.validate(&self.act_space, n)?;
        let dim = self.act_space.flat_len();
        let obs_len = self.batch.obs_len;
        let max_steps = self.max_steps;
        let slots = Rows(self.slots.as_mut_ptr());
        let obs = Rows(obs_rows::<E::Obs>(&mut self.batch.obs)?.as_mut_ptr());
        let final_obs = Rows(obs_rows::<E::Obs>(&mut self.batch.final_obs)?.as_mut_ptr());
        let reward = Rows(self.batch.reward.as_mut_ptr());
        let term = Rows(self.batch.terminated.as_mut_ptr());
        let trunc = Rows(self.batch.truncated.as_mut_ptr());
        let ep_ret = Rows(self.batch.episode_return.as_mut_ptr());
        let ep_len = Rows(self.batch.episode_length.as_mut_ptr());
        let lives = Rows(self.batch.lives.as_mut_ptr());
        let lost = Rows(self.batch.life_lost.as_mut_ptr());
        let (next, block, failure) = (&self.next, self.block, &self.failure);
        next.store(0, Ordering::Relaxed);
        let job = move |_: usize| loop {
            let start = next.fetch_add(block, Ordering::Relaxed);
            if start >= n {
                break;
            }
            for i in start..(start + block).min(n) {
                // SAFETY: the thread that claimed env `i` is the only one touching it
                // and row `i` of every buffer this round; all buffers have `n` rows
                // and live through the round.
                let stepped = unsafe {
                    let slot = &mut *slots.at(i);
                    let row = std::slice::from_raw_parts_mut(obs.at(i * obs_len), obs_len);
                    slot.env
                        .step(actions.get(i, dim), &mut slot.rng, row)
                        .and_then(|step| {
                            slot.ret += step.reward;
                            slot.len += 1;
                            let truncated =
                                step.truncated || max_steps.is_some_and(|m| slot.len >= m);
                            let now = slot.env.lives().unwrap_or(0);
                            *reward.at(i) = step.reward as f32;
                            *term.at(i) = step.terminated;
                            *trunc.at(i) = truncated;
                            *lives.at(i) = now;
                            *lost.at(i) = now < slot.lives;
                            slot.lives = now;
                            if step.terminated || truncated {
                                let last = std::slice::from_raw_parts_mut(
                                    final_obs.at(i * obs_len),
                                    obs_len,
                                );
                                last.copy_from_slice(row);
                                *ep_ret.at(i) = slot.ret as f32;
                                *ep_len.at(i) = slot.len;
                                slot.env.reset(&mut slot.rng, row)?;
                                slot.ret = 0.0;
                                slot.len = 0;
                                slot.lives = slot.env.lives().unwrap_or(0);
                            }
                            Ok(())
                        })
                };
                if let Err(e) = stepped {
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert(e);
                    }
                }
            }
        };
        self.batch.life_lost.fill(false);
        self.pool.run(&job)?;
        let failed = self.failure.lock().ok().and_then(|mut f| f.take());
        if let Some(e) = failed {
            // The batch is half stepped: a reset must come first.
            self.was_reset = false;
            return Err(e);
        }
        Ok(&self.batch)
    }

    fn batch(&self) -> &StepBatch {
        &self.batch
    }
}
