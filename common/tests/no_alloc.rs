//! Stepping a vector env allocates nothing: a counting global allocator watches a few
//! hundred steps of each family after warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::SeedableRng;
use volley_common::env::{make_vec_env, EnvId, EnvRng, RandomActions, VecEnvOptions};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn stepping_allocates_nothing() {
    for id in [
        "CartPole-v1",
        "Hopper-v5",
        "Ant-v5",
        "platform",
        "procgen:bigfish",
    ] {
        let parsed: EnvId = id.parse().expect("valid id");
        let mut env = make_vec_env(
            &parsed,
            VecEnvOptions {
                num_envs: 8,
                threads: 2,
                render: false,
            },
        )
        .unwrap_or_else(|e| panic!("cannot build {id}: {e} (did deploy/setup.sh run?)"));
        let mut rng = EnvRng::seed_from_u64(0);
        let mut actions: Vec<RandomActions> = (0..16)
            .map(|_| RandomActions::new(env.action_space(), 8).expect("action space"))
            .collect();
        for a in &mut actions {
            a.sample(&mut rng);
        }
        env.reset(0).expect("reset");
        for a in &actions {
            env.step(a.actions()).expect("step");
        }
        let before = ALLOCS.load(Ordering::SeqCst);
        for _ in 0..25 {
            for a in &actions {
                env.step(a.actions()).expect("step");
            }
        }
        let n = ALLOCS.load(Ordering::SeqCst) - before;
        assert_eq!(n, 0, "{id}: {n} allocations in 400 steps");
    }
}
