//! Durable checkpoints in a run's `checkpoints/` folder. The store does not know what
//! the files mean: the caller hands it named byte strings and gets the same bytes
//! back, verified, or a refusal that says what is wrong.
//!
//! Layout:
//!
//! ```text
//! checkpoints/
//!   update-000000000120/    one folder per checkpoint, named by its update count
//!     weights.bin ...       the caller's files
//!     manifest.json         every file with its length and CRC-32C, written last
//!   latest                  the name of the newest checkpoint, one line of text
//!   best -> best-7          a relative symlink to the best checkpoint's folder
//!   best-7/                 files and manifest.json, as an update folder
//! ```
//!
//! `manifest.json` (the checksum is [`crate::crc32c`], as 8 lowercase hex digits):
//!
//! ```json
//! {"format": 1, "files": [{"name": "weights.bin", "len": 4096, "crc32c": "e3069283"}]}
//! ```
//!
//! Writing: the files go into `.tmp-<name>`, each synced to disk, then the manifest,
//! then the folder itself is synced and renamed to its final name, and the checkpoints
//! folder is synced so the rename survives a power loss. Only then does `latest` move
//! to it (written as `.latest.tmp`, synced, renamed over `latest`, folder synced). A
//! crash at any point leaves the previous checkpoint and `latest` intact, and at worst
//! a `.tmp-*` folder that the next save removes.
//!
//! Names: update folders are `update-<n>` with `n` written in 12 digits; runs of
//! older volleys wrote 8 (`update-00000042`). Both are read, and every ordering
//! (pruning, falling back) is by the parsed number, never by the string, so
//! `update-000100000000` comes after `update-99999999`.
//!
//! Reading: the checkpoint `latest` names is verified (manifest present and valid,
//! every file it lists present with its length and checksum, file names without path
//! separators or `..`); if it fails, the next older one by number, and so on. When
//! `latest` is missing or names no checkpoint folder, the newest by number is tried
//! first. Refusals of newer checkpoints come back with the one that loaded, for the
//! caller to log.
//!
//! The best checkpoint is replaced atomically: its new folder `best-<n+1>` is written
//! like an update folder, then the symlink `best` is swapped to it with a rename, then
//! the older `best-*` folders are removed. Readers can open `checkpoints/best/<file>`
//! at any time. [`CheckpointStore::save`] and [`CheckpointStore::save_best`] touch
//! disjoint names, so they may run on two threads; two saves of one kind at once may
//! not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crc32c::crc32c;

/// The file in every checkpoint folder that lists the others.
pub const MANIFEST: &str = "manifest.json";
/// The manifest format this build writes and reads.
const MANIFEST_FORMAT: u32 = 1;
/// The file naming the newest checkpoint.
const LATEST: &str = "latest";
/// Where `latest` is written before its rename.
const LATEST_TMP: &str = ".latest.tmp";
/// The symlink to the best checkpoint's folder.
const BEST: &str = "best";
/// Where the new `best` symlink is made before its rename.
const BEST_TMP_LINK: &str = ".best.tmp";
/// Prefix of folders being written.
const TMP_PREFIX: &str = ".tmp-";
/// The folder the best checkpoint is written into before its rename.
const BEST_TMP_DIR: &str = ".tmp-best";
/// Prefix of update checkpoint folders.
const UPDATE_PREFIX: &str = "update-";
/// Prefix of best checkpoint folders.
const BEST_PREFIX: &str = "best-";

/// Errors of the checkpoint store.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file system operation failed.
    #[error("cannot {op} {}: {source}{}", .path.display(), io_hint(.source))]
    Io {
        /// What was being done, e.g. "create the checkpoints folder".
        op: &'static str,
        /// The file or folder it was done to.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The caller's list of files cannot be saved as a checkpoint.
    #[error("cannot save a checkpoint: {0}")]
    BadFiles(String),
    /// A checkpoint failed verification; the message names the checkpoint, the file
    /// and the problem.
    #[error("{0}")]
    Corrupt(String),
    /// There are checkpoints, but none verifies.
    #[error(
        "no checkpoint in {} verifies: {}; restore one from a backup or start a new run",
        dir.display(),
        refused.join("; ")
    )]
    AllRefused {
        /// The checkpoints folder.
        dir: PathBuf,
        /// Why each checkpoint was refused, newest first.
        refused: Vec<String>,
    },
    /// The checkpoints folder holds no checkpoint at all.
    #[error("{} has no checkpoint to resume from; start a new run instead", dir.display())]
    NoCheckpoint {
        /// The checkpoints folder.
        dir: PathBuf,
    },
}

/// The result of checkpoint operations.
pub type CheckpointResult<T> = Result<T, CheckpointError>;

/// The checkpoints of one run: where they live and how many update checkpoints to
/// keep.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    /// The run's `checkpoints/` folder (created by the first save).
    dir: PathBuf,
    /// How many `update-*` folders survive pruning (at least 1).
    keep: usize,
}

/// A verified checkpoint read back from disk.
pub struct Loaded {
    /// The folder it was read from (`checkpoints/best` for the best checkpoint).
    pub path: PathBuf,
    /// Its name: `update-<n>` or `best`.
    pub name: String,
    /// The update count in its name; `None` for the best checkpoint.
    pub updates: Option<u64>,
    /// Every file the manifest lists, by name, with its verified contents.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Why newer checkpoints were passed over, newest first (empty when the newest
    /// loaded), for the caller to log.
    pub refused: Vec<String>,
}

impl fmt::Debug for Loaded {
    /// File sizes instead of their bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes: BTreeMap<&str, usize> = self
            .files
            .iter()
            .map(|(k, v)| (k.as_str(), v.len()))
            .collect();
        f.debug_struct("Loaded")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("updates", &self.updates)
            .field("file_sizes", &sizes)
            .field("refused", &self.refused)
            .finish()
    }
}

/// `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// [`MANIFEST_FORMAT`] when written.
    format: u32,
    /// Every file of the checkpoint but the manifest.
    files: Vec<ManifestEntry>,
}

/// One file of a checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct ManifestEntry {
    /// File name inside the checkpoint folder.
    name: String,
    /// Length in bytes.
    len: u64,
    /// CRC-32C of the contents, 8 lowercase hex digits.
    crc32c: String,
}

impl CheckpointStore {
    /// A store in `dir` (a run's `checkpoints/` folder) keeping the `keep` newest
    /// update checkpoints; `keep` 0 is taken as 1. Touches nothing on disk.
    pub fn new(dir: PathBuf, keep: usize) -> Self {
        CheckpointStore {
            dir,
            keep: keep.max(1),
        }
    }

    /// The checkpoints folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes checkpoint `update-<updates, 12 digits>` holding `files`, durably (see
    /// the module docs), replacing a checkpoint of that name, points `latest` at it
    /// and removes the update folders beyond the `keep` newest by number (never the
    /// one just written). Returns its folder. An error after the rename (moving
    /// `latest`, pruning) leaves the new checkpoint on disk.
    pub fn save(&self, updates: u64, files: &[(&str, &[u8])]) -> CheckpointResult<PathBuf> {
        check_files(files)?;
        let name = update_name(updates);
        self.create_dir()?;
        self.remove_stale_tmp()?;
        let tmp = self.dir.join(format!("{TMP_PREFIX}{name}"));
        write_folder(&tmp, files)?;
        let path = self.dir.join(&name);
        // A folder cannot be renamed over a non-empty one: an older checkpoint of the
        // same name goes first (until the rename, `latest` falls back to an older one).
        remove_entry(&path)?;
        rename(&tmp, &path)?;
        sync_dir(&self.dir)?;

        let latest_tmp = self.dir.join(LATEST_TMP);
        write_synced(&latest_tmp, format!("{name}\n").as_bytes())?;
        rename(&latest_tmp, &self.dir.join(LATEST))?;
        sync_dir(&self.dir)?;

        self.prune(&name)?;
        Ok(path)
    }

    /// The newest checkpoint that verifies, starting from the one `latest` names (or
    /// the newest by number when `latest` names none); newer ones that do not
    /// verify are reported in [`Loaded::refused`].
    pub fn load_latest(&self) -> CheckpointResult<Loaded> {
        match fs::metadata(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CheckpointError::NoCheckpoint {
                    dir: self.dir.clone(),
                })
            }
            Err(e) => return Err(io_err("read the checkpoints folder", &self.dir)(e)),
            Ok(_) => {}
        }
        let mut order = self.list_numbered(UPDATE_PREFIX)?;
        let mut refused = Vec::new();
        match fs::read_to_string(self.dir.join(LATEST)) {
            Ok(text) => {
                let name = text.trim();
                match parse_numbered(name, UPDATE_PREFIX) {
                    Some(n) if self.dir.join(name).is_dir() => {
                        let key = (n, name.to_string());
                        order.retain(|k| *k < key);
                        order.insert(0, key);
                    }
                    _ => refused.push(format!(
                        "latest names {name:?}, which is not a checkpoint folder; trying the newest by number"
                    )),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => refused.push(format!(
                "cannot read latest ({e}); trying the newest checkpoint by number"
            )),
        }
        if order.is_empty() {
            return Err(CheckpointError::NoCheckpoint {
                dir: self.dir.clone(),
            });
        }
        for (n, name) in order {
            let path = self.dir.join(&name);
            match verify(&path, &name) {
                Ok(files) => {
                    return Ok(Loaded {
                        path,
                        name,
                        updates: Some(n),
                        files,
                        refused,
                    })
                }
                Err(msg) => refused.push(msg),
            }
        }
        Err(CheckpointError::AllRefused {
            dir: self.dir.clone(),
            refused,
        })
    }

    /// The checkpoint of update `n`, verified; an error naming the ones there are
    /// when it is not kept.
    pub fn load_update(&self, n: u64) -> CheckpointResult<Loaded> {
        let order = match fs::metadata(&self.dir) {
            Ok(_) => self.list_numbered(UPDATE_PREFIX)?,
            Err(_) => Vec::new(),
        };
        let Some((_, name)) = order.iter().find(|(k, _)| *k == n) else {
            let kept: Vec<String> = order.iter().map(|(k, _)| k.to_string()).collect();
            return Err(CheckpointError::Corrupt(format!(
                "no checkpoint of update {n} in {}: kept are {}",
                self.dir.display(),
                if kept.is_empty() {
                    "none".to_string()
                } else {
                    kept.join(", ")
                }
            )));
        };
        let path = self.dir.join(name);
        let files = verify(&path, name).map_err(CheckpointError::Corrupt)?;
        Ok(Loaded {
            path,
            name: name.clone(),
            updates: Some(n),
            files,
            refused: Vec::new(),
        })
    }

    /// Replaces the best checkpoint atomically with `files` (see the module docs).
    /// Returns `checkpoints/best`, the path readers use.
    pub fn save_best(&self, files: &[(&str, &[u8])]) -> CheckpointResult<PathBuf> {
        check_files(files)?;
        self.create_dir()?;
        let tmp = self.dir.join(BEST_TMP_DIR);
        write_folder(&tmp, files)?;
        let olds = self.list_numbered(BEST_PREFIX)?;
        let n = olds
            .iter()
            .map(|(n, _)| n.saturating_add(1))
            .max()
            .unwrap_or(1);
        let folder = format!("{BEST_PREFIX}{n}");
        rename(&tmp, &self.dir.join(&folder))?;
        sync_dir(&self.dir)?;

        let best = self.dir.join(BEST);
        // Older volleys kept `best` as a real folder; a symlink cannot be renamed over
        // one, so it goes before the first swap.
        match fs::symlink_metadata(&best) {
            Ok(m) if !m.file_type().is_symlink() => remove_entry(&best)?,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", &best)(e)),
        }
        let link_tmp = self.dir.join(BEST_TMP_LINK);
        remove_entry(&link_tmp)?;
        std::os::unix::fs::symlink(&folder, &link_tmp)
            .map_err(io_err("create the symlink", &link_tmp))?;
        rename(&link_tmp, &best)?;
        sync_dir(&self.dir)?;

        for (_, old) in olds {
            remove_entry(&self.dir.join(old))?;
        }
        Ok(best)
    }

    /// The best checkpoint, verified (no fallback); `Ok(None)` when there is none yet.
    pub fn load_best(&self) -> CheckpointResult<Option<Loaded>> {
        let best = self.dir.join(BEST);
        match fs::symlink_metadata(&best) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("inspect", &best)(e)),
            Ok(_) => {}
        }
        if let Err(e) = fs::metadata(&best) {
            let target = fs::read_link(&best)
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "?".into());
            return Err(CheckpointError::Corrupt(format!(
                "checkpoint best: the symlink points to {target}, which cannot be opened ({e}); save a new best checkpoint"
            )));
        }
        let files = verify(&best, BEST).map_err(CheckpointError::Corrupt)?;
        Ok(Some(Loaded {
            path: best,
            name: BEST.into(),
            updates: None,
            files,
            refused: Vec::new(),
        }))
    }

    fn create_dir(&self) -> CheckpointResult<()> {
        fs::create_dir_all(&self.dir).map_err(io_err("create the checkpoints folder", &self.dir))
    }

    /// Removes what an interrupted [`CheckpointStore::save`] left behind (the best
    /// checkpoint's temporary folder belongs to [`CheckpointStore::save_best`]).
    fn remove_stale_tmp(&self) -> CheckpointResult<()> {
        for name in self.entry_names()? {
            if name.starts_with(TMP_PREFIX) && name != BEST_TMP_DIR {
                remove_entry(&self.dir.join(name))?;
            }
        }
        Ok(())
    }

    /// Keeps the `keep` newest update folders by number, and `just_written`.
    fn prune(&self, just_written: &str) -> CheckpointResult<()> {
        for (i, (_, name)) in self.list_numbered(UPDATE_PREFIX)?.iter().enumerate() {
            if i >= self.keep && name != just_written {
                remove_entry(&self.dir.join(name))?;
            }
        }
        Ok(())
    }

    /// The folders named `<prefix><number>`, newest (highest number) first.
    fn list_numbered(&self, prefix: &str) -> CheckpointResult<Vec<(u64, String)>> {
        let mut found: Vec<(u64, String)> = self
            .entry_names()?
            .into_iter()
            .filter_map(|name| parse_numbered(&name, prefix).map(|n| (n, name)))
            .filter(|(_, name)| fs::symlink_metadata(self.dir.join(name)).is_ok_and(|m| m.is_dir()))
            .collect();
        found.sort_by(|a, b| b.cmp(a));
        Ok(found)
    }

    /// The names of the entries of the checkpoints folder (names that are not UTF-8
    /// are none of the store's).
    fn entry_names(&self) -> CheckpointResult<Vec<String>> {
        let op = "list the checkpoints folder";
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(op, &self.dir))? {
            let entry = entry.map_err(io_err(op, &self.dir))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }
}

/// `update-<updates>` in 12 digits.
fn update_name(updates: u64) -> String {
    format!("{UPDATE_PREFIX}{updates:012}")
}

/// The number of `<prefix><digits>`, any number of digits.
fn parse_numbered(name: &str, prefix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Why `name` cannot be a file of a checkpoint folder, if it cannot.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.contains('/') || name.contains('\\') {
        Some("it contains a path separator")
    } else if name.contains("..") || name == "." {
        Some("it contains a dot-dot or is a dot")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else if name == MANIFEST {
        Some("manifest.json is the store's own")
    } else {
        None
    }
}

/// Checks the caller's file names: each safe and none twice.
fn check_files(files: &[(&str, &[u8])]) -> CheckpointResult<()> {
    let mut seen = BTreeSet::new();
    for (name, _) in files {
        if let Some(problem) = name_problem(name) {
            return Err(CheckpointError::BadFiles(format!(
                "file name {name:?} is not allowed ({problem}); use a plain file name"
            )));
        }
        if !seen.insert(*name) {
            return Err(CheckpointError::BadFiles(format!(
                "file name {name:?} is given twice; give each file once"
            )));
        }
    }
    Ok(())
}

/// Writes `files` and their manifest into a fresh folder `tmp`, every file and the
/// folder synced.
fn write_folder(tmp: &Path, files: &[(&str, &[u8])]) -> CheckpointResult<()> {
    remove_entry(tmp)?;
    fs::create_dir(tmp).map_err(io_err("create the folder", tmp))?;
    let mut entries = Vec::with_capacity(files.len());
    for (name, data) in files {
        write_synced(&tmp.join(name), data)?;
        entries.push(ManifestEntry {
            name: (*name).to_string(),
            len: data.len() as u64,
            crc32c: format!("{:08x}", crc32c(data)),
        });
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        files: entries,
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| CheckpointError::BadFiles(format!("cannot encode the manifest: {e}")))?;
    write_synced(&tmp.join(MANIFEST), &text)?;
    sync_dir(tmp)
}

/// Verifies the checkpoint folder `path` called `name` and reads its files; on
/// failure, the message naming the checkpoint, the file and the problem.
fn verify(path: &Path, name: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let text = match fs::read(path.join(MANIFEST)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "checkpoint {name} has no {MANIFEST} (written by an older volley or interrupted)"
            ))
        }
        Err(e) => return Err(format!("checkpoint {name}: cannot read {MANIFEST}: {e}")),
    };
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| format!("checkpoint {name}: {MANIFEST} is not a valid manifest ({e})"))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(format!(
            "checkpoint {name}: {MANIFEST} has format {}, this volley reads format {MANIFEST_FORMAT}",
            manifest.format
        ));
    }
    let mut files = BTreeMap::new();
    for entry in manifest.files {
        let file = entry.name;
        if let Some(problem) = name_problem(&file) {
            return Err(format!(
                "checkpoint {name}: {MANIFEST} lists the file name {file:?}, which is not allowed ({problem})"
            ));
        }
        if files.contains_key(&file) {
            return Err(format!("checkpoint {name}: {MANIFEST} lists {file} twice"));
        }
        let want_crc = parse_crc(&entry.crc32c).ok_or_else(|| {
            format!(
                "checkpoint {name}: {MANIFEST} has the malformed checksum {:?} for {file}",
                entry.crc32c
            )
        })?;
        let data = match fs::read(path.join(&file)) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(format!("checkpoint {name}: {file} is missing"))
            }
            Err(e) => return Err(format!("checkpoint {name}: cannot read {file}: {e}")),
        };
        let len = data.len() as u64;
        if len < entry.len {
            return Err(format!(
                "checkpoint {name}: {file} is truncated ({len} bytes, manifest says {})",
                entry.len
            ));
        }
        if len > entry.len {
            return Err(format!(
                "checkpoint {name}: {file} is longer than written ({len} bytes, manifest says {})",
                entry.len
            ));
        }
        if crc32c(&data) != want_crc {
            return Err(format!(
                "checkpoint {name}: {file} does not match its checksum"
            ));
        }
        files.insert(file, data);
    }
    Ok(files)
}

/// A checksum as the manifest writes it: 8 hex digits.
fn parse_crc(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// Writes `data` to a new file at `path` and syncs it to disk.
fn write_synced(path: &Path, data: &[u8]) -> CheckpointResult<()> {
    let mut f = File::create(path).map_err(io_err("create", path))?;
    f.write_all(data).map_err(io_err("write", path))?;
    f.sync_all().map_err(io_err("sync", path))
}

/// Syncs a folder, making the creations, renames and removals in it durable.
fn sync_dir(path: &Path) -> CheckpointResult<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync the folder", path))
}

/// Renames `from` to `to`, replacing a file or symlink (or an empty folder) there.
fn rename(from: &Path, to: &Path) -> CheckpointResult<()> {
    fs::rename(from, to).map_err(|source| CheckpointError::Io {
        op: "rename",
        path: from.to_path_buf(),
        source: io::Error::new(source.kind(), format!("to {}: {source}", to.display())),
    })
}

/// Removes a file, symlink (not its target) or folder with its contents; nothing
/// there is fine.
fn remove_entry(path: &Path) -> CheckpointResult<()> {
    let result = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    result.map_err(io_err("remove", path))
}

/// What to do about an I/O error, when its kind says (after a "; ").
fn io_hint(e: &io::Error) -> &'static str {
    use io::ErrorKind as K;
    match e.kind() {
        K::AlreadyExists | K::NotADirectory | K::IsADirectory => {
            "; something of another kind is in the way: move it aside"
        }
        K::PermissionDenied | K::ReadOnlyFilesystem => "; check that the run directory is writable",
        K::StorageFull => "; free some disk space",
        _ => "",
    }
}

/// Wraps an I/O error with what was being done and to which path.
fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::TempDir;

    trait Store {
        fn store(&self, keep: usize) -> CheckpointStore;
    }

    impl Store for TempDir {
        fn store(&self, keep: usize) -> CheckpointStore {
            CheckpointStore::new(self.join("checkpoints"), keep)
        }
    }

    fn weights(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn save_two(store: &CheckpointStore, updates: u64, seed: u8) -> PathBuf {
        let w = weights(seed, 4096);
        let s = weights(seed.wrapping_add(1), 100);
        store
            .save(updates, &[("weights.bin", &w), ("state.bin", &s)])
            .unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn update_dirs(dir: &Path) -> Vec<String> {
        names(dir)
            .into_iter()
            .filter(|n| n.starts_with("update-"))
            .collect()
    }

    #[test]
    fn round_trip() {
        let tmp = TempDir::new();
        let store = tmp.store(3);
        let w = weights(7, 4096);
        let path = store
            .save(120, &[("weights.bin", &w), ("empty.bin", &[])])
            .unwrap();
        assert_eq!(path, store.dir().join("update-000000000120"));
        assert_eq!(
            names(store.dir()),
            ["latest", "update-000000000120"].map(String::from)
        );
        assert_eq!(
            fs::read_to_string(store.dir().join("latest")).unwrap(),
            "update-000000000120\n"
        );
        assert_eq!(
            names(&path),
            ["empty.bin", "manifest.json", "weights.bin"].map(String::from)
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(path.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["format"], 1);
        assert_eq!(manifest["files"][0]["name"], "weights.bin");
        assert_eq!(manifest["files"][0]["len"], 4096);
        assert_eq!(
            manifest["files"][0]["crc32c"],
            format!("{:08x}", crc32c(&w))
        );

        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded.name, "update-000000000120");
        assert_eq!(loaded.path, path);
        assert_eq!(loaded.updates, Some(120));
        assert_eq!(loaded.files.len(), 2);
        assert_eq!(loaded.files["weights.bin"], w);
        assert!(loaded.files["empty.bin"].is_empty());
        assert!(loaded.refused.is_empty());
        assert!(format!("{loaded:?}").contains("4096"));

        // Saving the same update again replaces it.
        let w2 = weights(8, 10);
        store.save(120, &[("weights.bin", &w2)]).unwrap();
        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded.files.len(), 1);
        assert_eq!(loaded.files["weights.bin"], w2);
    }

    #[test]
    fn truncated_file_falls_back_to_the_previous_checkpoint() {
        let tmp = TempDir::new();
        let store = tmp.store(3);
        save_two(&store, 100, 1);
        let newest = save_two(&store, 120, 2);
        let w = fs::read(newest.join("weights.bin")).unwrap();
        fs::write(newest.join("weights.bin"), &w[..812]).unwrap();

        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded.updates, Some(100));
        assert_eq!(loaded.files["weights.bin"], weights(1, 4096));
        assert_eq!(
            loaded.refused,
            ["checkpoint update-000000000120: weights.bin is truncated (812 bytes, manifest says 4096)"]
        );

        // A longer file is refused as well, and a missing one.
        let mut long = w.clone();
        long.push(0);
        fs::write(newest.join("weights.bin"), &long).unwrap();
        let r = store.load_latest().unwrap().refused;
        assert!(r[0].contains("weights.bin is longer"), "{r:?}");
        fs::remove_file(newest.join("weights.bin")).unwrap();
        let r = store.load_latest().unwrap().refused;
        assert_eq!(
            r,
            ["checkpoint update-000000000120: weights.bin is missing"]
        );
    }

    #[test]
    fn flipped_byte_fails_the_checksum() {
        let tmp = TempDir::new();
        let store = tmp.store(3);
        let older = save_two(&store, 100, 1);
        let newest = save_two(&store, 120, 2);
        let mut s = fs::read(newest.join("state.bin")).unwrap();
        s[50] ^= 0x10;
        fs::write(newest.join("state.bin"), &s).unwrap();

        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded.updates, Some(100));
        assert_eq!(
            loaded.refused,
            ["checkpoint update-000000000120: state.bin does not match its checksum"]
        );

        // When no checkpoint verifies, the error lists every refusal.
        fs::write(older.join("weights.bin"), b"x").unwrap();
        let e = store.load_latest().unwrap_err();
        let CheckpointError::AllRefused { refused, .. } = &e else {
            panic!("{e}");
        };
        assert_eq!(refused.len(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("update-000000000120: state.bin does not match"),
            "{msg}"
        );
        assert!(
            msg.contains("update-000000000100: weights.bin is truncated"),
            "{msg}"
        );
    }

    #[test]
    fn missing_or_bad_manifest_is_refused() {
        let tmp = TempDir::new();
        let store = tmp.store(3);
        save_two(&store, 100, 1);
        let newest = save_two(&store, 120, 2);
        fs::remove_file(newest.join("manifest.json")).unwrap();
        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded.updates, Some(100));
        assert_eq!(
            loaded.refused,
            ["checkpoint update-000000000120 has no manifest.json (written by an older volley or interrupted)"]
        );

        fs::write(
            newest.join("manifest.json"),
            b"{\"format\": 1, \"files\": [",
        )
        .unwrap();
        let r = store.load_latest().unwrap().refused;
        assert!(
            r[0].contains("manifest.json is not a valid manifest"),
            "{r:?}"
        );

        let evil = format!(
            r#"{{"format": 1, "files": [{{"name": "../escape", "len": 1, "crc32c": "{:08x}"}}]}}"#,
            crc32c(b"x")
        );
        fs::write(newest.join("manifest.json"), evil).unwrap();
        let r = store.load_latest().unwrap().refused;
        assert!(
            r[0].contains("\"../escape\", which is not allowed"),
            "{r:?}"
        );

        let bad_crc =
            r#"{"format": 1, "files": [{"name": "state.bin", "len": 100, "crc32c": "zz"}]}"#;
        fs::write(newest.join("manifest.json"), bad_crc).unwrap();
        let r = store.load_latest().unwrap().refused;
        assert!(
            r[0].contains("malformed checksum \"zz\" for state.bin"),
            "{r:?}"
        );

        fs::write(
            newest.join("manifest.json"),
            r#"{"format": 2, "files": []}"#,
        )
        .unwrap();
        let r = store.load_latest().unwrap().refused;
        assert!(r[0].contains("has format 2"), "{r:?}");
    }

    #[test]
    fn names_past_1e8_order_and_prune_numerically() {
        let tmp = TempDir::new();
        let store = tmp.store(2);
        // A folder an older volley wrote: 8 digits, no manifest. As a string it sorts
        // after every 12-digit name; as a number it is the oldest.
        fs::create_dir_all(store.dir().join("update-99999990")).unwrap();
        fs::write(store.dir().join("update-99999990/weights.bin"), b"old").unwrap();
        save_two(&store, 99_999_999, 1);
        assert_eq!(
            update_dirs(store.dir()),
            ["update-000099999999", "update-99999990"]
        );
        save_two(&store, 100_000_000, 2);
        assert_eq!(
            fs::read_to_string(store.dir().join("latest"))
                .unwrap()
                .trim(),
            "update-000100000000"
        );
        assert_eq!(
            update_dirs(store.dir()),
            ["update-000099999999", "update-000100000000"]
        );
        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded.updates, Some(100_000_000));
        assert_eq!(loaded.name, "update-000100000000");

        // A legacy folder whose string sorts after newer 12-digit names is pruned.
        let tmp = TempDir::new();
        let store = tmp.store(2);
        fs::create_dir_all(store.dir().join("update-00000042")).unwrap();
        save_two(&store, 100, 1);
        save_two(&store, 200, 2);
        assert_eq!(
            update_dirs(store.dir()),
            ["update-000000000100", "update-000000000200"]
        );
    }

    #[test]
    fn prune_keeps_the_newest_and_never_the_one_just_written() {
        let tmp = TempDir::new();
        let store = tmp.store(3);
        for u in 1..=5 {
            save_two(&store, u, u as u8);
        }
        assert_eq!(
            update_dirs(store.dir()),
            [
                "update-000000000003",
                "update-000000000004",
                "update-000000000005"
            ]
        );
        // A resumed run saving below the newest keeps what it just wrote.
        let store = tmp.store(1);
        save_two(&store, 2, 9);
        assert_eq!(
            update_dirs(store.dir()),
            ["update-000000000002", "update-000000000005"]
        );
        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded.updates, Some(2));
        assert_eq!(loaded.files["weights.bin"], weights(9, 4096));
    }

    #[test]
    fn without_latest_the_newest_by_number_loads() {
        let tmp = TempDir::new();
        let store = tmp.store(3);
        // A valid checkpoint under an 8-digit name, which sorts after the newer one
        // as a string.
        save_two(&store, 99_999_999, 1);
        fs::rename(
            store.dir().join("update-000099999999"),
            store.dir().join("update-99999999"),
        )
        .unwrap();
        save_two(&store, 100_000_000, 2);
        fs::remove_file(store.dir().join("latest")).unwrap();
        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded.updates, Some(100_000_000));
        assert!(loaded.refused.is_empty());

        // `latest` naming a folder that does not exist: the same, with a note.
        fs::write(store.dir().join("latest"), "update-000999999999\n").unwrap();
        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded.updates, Some(100_000_000));
        assert_eq!(loaded.refused.len(), 1);
        assert!(loaded.refused[0].contains("update-000999999999"));

        // `latest` naming the older one: it is taken, not the newest by number.
        fs::write(store.dir().join("latest"), "update-99999999").unwrap();
        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded.name, "update-99999999");
        assert_eq!(loaded.updates, Some(99_999_999));
    }

    #[test]
    fn no_checkpoint_at_all() {
        let tmp = TempDir::new();
        let store = tmp.store(3);
        let e = store.load_latest().unwrap_err();
        assert!(matches!(e, CheckpointError::NoCheckpoint { .. }), "{e}");
        assert!(e.to_string().contains("has no checkpoint to resume from"));
        fs::create_dir_all(store.dir()).unwrap();
        let e = store.load_latest().unwrap_err();
        assert!(matches!(e, CheckpointError::NoCheckpoint { .. }), "{e}");
        assert!(store.load_best().unwrap().is_none());
    }

    #[test]
    fn best_is_replaced_through_its_symlink() {
        let tmp = TempDir::new();
        let store = tmp.store(3);
        // An older volley's best: a real folder.
        fs::create_dir_all(store.dir().join("best")).unwrap();
        fs::write(store.dir().join("best/weights.bin"), b"legacy").unwrap();

        let best = store
            .save_best(&[("weights.bin", b"first"), ("eval.json", b"{}")])
            .unwrap();
        assert_eq!(best, store.dir().join("best"));
        assert_eq!(fs::read_link(&best).unwrap(), Path::new("best-1"));
        assert_eq!(fs::read(best.join("weights.bin")).unwrap(), b"first");

        store.save_best(&[("weights.bin", b"second")]).unwrap();
        assert_eq!(fs::read_link(&best).unwrap(), Path::new("best-2"));
        assert_eq!(names(store.dir()), ["best", "best-2"].map(String::from));
        assert_eq!(fs::read(best.join("weights.bin")).unwrap(), b"second");
        assert!(!best.join("eval.json").exists());

        let loaded = store.load_best().unwrap().unwrap();
        assert_eq!(loaded.name, "best");
        assert_eq!(loaded.updates, None);
        assert_eq!(loaded.files.len(), 1);
        assert_eq!(loaded.files["weights.bin"], b"second");

        // Best does not disturb the update checkpoints, nor they it.
        save_two(&store, 7, 7);
        assert_eq!(store.load_latest().unwrap().updates, Some(7));
        assert!(store.dir().join("best-2").is_dir());

        // A corrupt best is an error, not a fallback.
        fs::write(store.dir().join("best-2/weights.bin"), b"sec0nd").unwrap();
        let e = store.load_best().unwrap_err();
        assert_eq!(
            e.to_string(),
            "checkpoint best: weights.bin does not match its checksum"
        );
        fs::remove_dir_all(store.dir().join("best-2")).unwrap();
        let e = store.load_best().unwrap_err();
        assert!(e.to_string().contains("points to best-2"), "{e}");
    }

    #[test]
    fn stale_temporary_folders_are_removed_on_save() {
        let tmp = TempDir::new();
        let store = tmp.store(3);
        let stale = store.dir().join(".tmp-update-000000000005");
        fs::create_dir_all(&stale).unwrap();
        fs::write(stale.join("weights.bin"), b"half").unwrap();
        fs::write(store.dir().join(".latest.tmp"), b"update-0000").unwrap();
        save_two(&store, 6, 6);
        assert_eq!(
            names(store.dir()),
            ["latest", "update-000000000006"].map(String::from)
        );
    }

    #[test]
    fn bad_file_names_are_refused_before_writing() {
        let tmp = TempDir::new();
        let store = tmp.store(3);
        for bad in ["", "a/b", "..", "x..y", "manifest.json", "."] {
            let e = store.save(1, &[(bad, b"x")]).unwrap_err();
            assert!(matches!(e, CheckpointError::BadFiles(_)), "{bad}: {e}");
            let e = store.save_best(&[(bad, b"x")]).unwrap_err();
            assert!(matches!(e, CheckpointError::BadFiles(_)), "{bad}: {e}");
        }
        let e = store.save(1, &[("a", b"x"), ("a", b"y")]).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        assert!(!store.dir().exists());
    }

    #[test]
    fn checkpoints_path_that_is_a_file_is_an_error() {
        let tmp = TempDir::new();
        let store = tmp.store(3);
        fs::write(store.dir(), b"not a folder").unwrap();
        for e in [
            store.save(1, &[("weights.bin", b"x")]).unwrap_err(),
            store.save_best(&[("weights.bin", b"x")]).unwrap_err(),
        ] {
            assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
            let msg = e.to_string();
            assert!(msg.contains(&store.dir().display().to_string()), "{msg}");
            assert!(
                msg.starts_with("cannot create the checkpoints folder"),
                "{msg}"
            );
        }
        let e = store.load_latest().unwrap_err();
        assert!(
            e.to_string().contains(&store.dir().display().to_string()),
            "{e}"
        );
    }
}
