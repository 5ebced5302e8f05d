//! What the workspace's tests share (public so that every crate's tests use the same
//! lock; nothing outside tests calls it).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// A fresh folder under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "volley-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("cannot create a temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
