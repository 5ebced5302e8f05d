//! What the workspace's tests share (public so that every crate's tests use the same
//! lock; nothing outside tests calls it).

use std::sync::{Mutex, MutexGuard, PoisonError};

static TORCH: Mutex<()> = Mutex::new(());

/// libtorch's random generator is one per process, and the test harness runs tests
/// on several threads: a test that seeds it and expects the same draws twice (a
/// resumed update against the original) holds this guard so that no other test
/// draws in between. Every test that draws from it holds the guard too. Also sets
/// one intra-op thread, as those tests want.
pub fn torch() -> MutexGuard<'static, ()> {
    let guard = TORCH.lock().unwrap_or_else(PoisonError::into_inner);
    tch::set_num_threads(1);
    guard
}
