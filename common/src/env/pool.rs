//! A tiny fork-join pool for stepping env chunks: the calling thread runs chunk 0 and
//! `threads - 1` persistent workers run the others. A round neither allocates nor
//! takes a lock: workers spin briefly on an epoch counter, then park, so an idle pool
//! leaves the cores to the rest of the process (policy inference on an actor).

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use super::{EnvError, EnvResult};

/// How long a worker spins on the epoch before parking. Long enough to cover the gap
/// between two steps of a busy vector env, short enough not to steal an actor's core.
const SPIN: Duration = Duration::from_micros(50);

type Job = dyn Fn(usize) + Sync;

struct Inner {
    /// Bumped once per round; a worker runs the job when it sees a new value.
    epoch: AtomicU64,
    /// Workers still running the current round.
    remaining: AtomicUsize,
    /// The current round's job, with its lifetime erased. Written by `run` before the
    /// epoch is bumped and read by workers after they observe the bump.
    job: UnsafeCell<Option<*const Job>>,
    shutdown: AtomicBool,
    /// Per worker: set while the worker is (about to be) parked.
    sleeping: Vec<AtomicBool>,
    /// First panic message of the current round.
    panic: Mutex<Option<String>>,
}

// SAFETY: `job` is only written by the owner while no round is running (all workers
// have finished the previous one: `remaining == 0`) and only read by workers during a
// round; the epoch's Release/Acquire pair orders the write before the reads.
unsafe impl Sync for Inner {}
// SAFETY: as above; the raw pointer is only dereferenced during a round.
unsafe impl Send for Inner {}

/// A raw pointer into per-env rows that may cross to the pool's threads. A job
/// touches only the rows of the envs it steps, and no two chunks step the same env,
/// so no two threads touch the same row in a round.
pub(crate) struct Rows<T>(pub(crate) *mut T);
// Manual impls: a derive would require `T: Copy`.
impl<T> Clone for Rows<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Rows<T> {}
// SAFETY: only dereferenced inside `Pool::run`, on rows owned by one thread per round.
unsafe impl<T> Send for Rows<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Rows<T> {}

impl<T> Rows<T> {
    /// Pointer to element `i`. A method, so closures capture the whole `Rows`.
    pub(crate) fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

/// A fixed set of worker threads that run one job per round over chunk indices.
pub struct Pool {
    inner: Arc<Inner>,
    threads: Vec<(Thread, JoinHandle<()>)>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &(self.threads.len() + 1))
            .finish()
    }
}

impl Pool {
    /// A pool that runs `threads` chunks per round (the caller's thread included).
    pub fn new(threads: usize, name: &str) -> EnvResult<Pool> {
        if threads == 0 {
            return Err(EnvError::BadSettings(
                "thread count must be at least 1".into(),
            ));
        }
        let workers = threads - 1;
        let inner = Arc::new(Inner {
            epoch: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            shutdown: AtomicBool::new(false),
            sleeping: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            panic: Mutex::new(None),
        });
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let inner = Arc::clone(&inner);
            let handle = thread::Builder::new()
                .name(format!("{name}-{}", w + 1))
                .spawn(move || worker(&inner, w))
                .map_err(|e| EnvError::BadSettings(format!("cannot start env thread: {e}")))?;
            handles.push((handle.thread().clone(), handle));
        }
        Ok(Pool {
            inner,
            threads: handles,
        })
    }

    /// Number of chunks per round.
    pub fn threads(&self) -> usize {
        self.threads.len() + 1
    }

    /// Runs `job(c)` for every chunk `c` in `0..threads()`, chunk 0 on the calling
    /// thread, and returns when all have finished. A panic in any chunk becomes an
    /// error after every chunk has stopped.
    pub fn run(&self, job: &(dyn Fn(usize) + Sync)) -> EnvResult<()> {
        if self.threads.is_empty() {
            return catch_unwind(AssertUnwindSafe(|| job(0)))
                .map_err(|p| EnvError::WorkerPanicked(panic_message(&p)));
        }
        // SAFETY: no round is running (the previous `run` waited for `remaining == 0`),
        // so no worker reads `job` now. The pointer's lifetime is erased; it stays valid
        // because this function does not return (nor unwind: chunk 0 runs under
        // catch_unwind) before every worker has finished the round.
        unsafe {
            let ptr: *const Job =
                std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const Job>(job);
            *self.inner.job.get() = Some(ptr);
        }
        self.inner
            .remaining
            .store(self.threads.len(), Ordering::SeqCst);
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        for (w, (t, _)) in self.threads.iter().enumerate() {
            if self.inner.sleeping[w].load(Ordering::SeqCst) {
                t.unpark();
            }
        }
        let mine = catch_unwind(AssertUnwindSafe(|| job(0)));
        let start = Instant::now();
        while self.inner.remaining.load(Ordering::Acquire) != 0 {
            if start.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        if let Err(p) = mine {
            return Err(EnvError::WorkerPanicked(panic_message(&p)));
        }
        match self.inner.panic.lock() {
            Ok(mut g) => match g.take() {
                Some(msg) => Err(EnvError::WorkerPanicked(msg)),
                None => Ok(()),
            },
            Err(_) => Err(EnvError::WorkerPanicked("panic state poisoned".into())),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        for (t, h) in self.threads.drain(..) {
            t.unpark();
            let _ = h.join();
        }
    }
}

fn worker(inner: &Inner, w: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a new round: spin, then park.
        let start = Instant::now();
        let epoch = loop {
            let e = inner.epoch.load(Ordering::Acquire);
            if e != seen {
                break e;
            }
            if start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            inner.sleeping[w].store(true, Ordering::SeqCst);
            if inner.epoch.load(Ordering::SeqCst) == seen {
                thread::park();
            }
            inner.sleeping[w].store(false, Ordering::SeqCst);
        };
        seen = epoch;
        if inner.shutdown.load(Ordering::SeqCst) {
            return;
        }
        // SAFETY: the owner wrote `job` before bumping the epoch (Acquire above pairs
        // with its SeqCst increment) and keeps it alive until `remaining` reaches zero.
        let job = unsafe { (*inner.job.get()).map(|p| &*p) };
        if let Some(job) = job {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| job(w + 1))) {
                if let Ok(mut g) = inner.panic.lock() {
                    g.get_or_insert(panic_message(&p));
                }
            }
        }
        inner.remaining.fetch_sub(1, Ordering::Release);
    }
}

fn panic_message(p: &Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_runs_once_per_round() {
        let pool = Pool::new(3, "t").unwrap();
        let counts: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..1000 {
            pool.run(&|c| {
                counts[c].fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        }
        for c in &counts {
            assert_eq!(c.load(Ordering::Relaxed), 1000);
        }
    }

    #[test]
    fn parked_workers_wake_up() {
        let pool = Pool::new(2, "t").unwrap();
        let n = AtomicUsize::new(0);
        for _ in 0..3 {
            thread::sleep(Duration::from_millis(5));
            pool.run(&|_| {
                n.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        }
        assert_eq!(n.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn a_panicking_chunk_is_an_error_and_the_pool_keeps_working() {
        let pool = Pool::new(2, "t").unwrap();
        let e = pool
            .run(&|c| {
                if c == 1 {
                    panic!("boom in chunk 1");
                }
            })
            .unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
        assert!(pool.run(&|_| {}).is_ok());
    }

    #[test]
    fn zero_threads_is_rejected() {
        assert!(Pool::new(0, "t").is_err());
    }
}
