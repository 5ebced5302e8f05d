//! What the workspace's tests share (public so that every crate's tests use the same
//! lock; nothing outside tests calls it).

use std::path::{Path, PathBuf};
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

/// A fresh folder under the system temp dir, removed on drop (unless made by
/// [`TempDir::kept`]). Derefs to its path.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    pub fn new() -> TempDir {
        TempDir::named("test")
    }

    /// A fresh folder whose name starts `volley-<name>-` (to tell tests' folders
    /// apart while one runs).
    pub fn named(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "volley-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("cannot create a temp dir");
        TempDir { path, keep: false }
    }

    /// A folder the caller chose (to look at what a test wrote), created if missing
    /// and left in place on drop.
    pub fn kept(path: PathBuf) -> TempDir {
        std::fs::create_dir_all(&path).expect("cannot create the folder");
        TempDir { path, keep: true }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
