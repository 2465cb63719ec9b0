//! The output folder of a run, kept safe for the user's own files: it may not be, hold or lie
//! inside the input model; one run writes into it at a time (an exclusive lock naming its
//! holder); and a manifest (`.ti-xla-manifest.json`) lists every file and folder ti-xla wrote
//! there, so that `--overwrite` removes only those, and only once the new run has finished: the
//! previous run's files are set aside in `.ti-xla-previous/` while the new one runs, put back
//! when it fails, and deleted when it succeeds.
//!
//! Ownership is recorded by inventory: with the lock held, everything that appears in the
//! folder during a run (hidden names aside) was written by it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::io::atomic_file::write_atomic;

const MANIFEST: &str = ".ti-xla-manifest.json";
const LOCK: &str = ".ti-xla.lock";
const PREVIOUS: &str = ".ti-xla-previous";

/// `path` made absolute with `..` and symlinks resolved as far as it exists (the rest appended
/// as written), so a folder that does not exist yet can be compared with one that does.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("cannot read the current folder")?
            .join(path)
    };
    // `.` and `..` first (as the shell would for a path that does not exist yet), then the
    // longest existing prefix with its symlinks resolved.
    let mut lexical = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other.as_os_str()),
        }
    }
    let mut existing = lexical.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return Ok(rest.iter().rev().fold(real, |p, part| p.join(part)));
        }
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_owned());
                existing = parent.to_path_buf();
            }
            _ => return Ok(lexical),
        }
    }
}

/// Refuses an output folder that is, holds or lies inside `model` (a run would write over the
/// weights it reads).
pub fn check_outside(out: &Path, model: &Path, flag: &str) -> Result<()> {
    let (o, m) = (resolve(out)?, resolve(model)?);
    if o == m || o.starts_with(&m) || m.starts_with(&o) {
        let how = if o == m {
            "is"
        } else if o.starts_with(&m) {
            "lies inside"
        } else {
            "holds"
        };
        bail!(
            "{flag} {} {how} the model folder {}: ti-xla never writes into its input model; choose an output folder outside it",
            out.display(),
            model.display()
        );
    }
    Ok(())
}

/// Whether `a` and `b` are the same file (device and inode), e.g. a copy onto its own source.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// An exclusive lock on an output folder, held until dropped.
pub struct OutputLock {
    _file: File,
}

impl OutputLock {
    /// Creates `dir` and locks it; when another process holds the lock, says who.
    pub fn acquire(dir: &Path) -> Result<OutputLock> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(LOCK);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                bail!(
                    "another ti-xla run is writing to {} ({}); wait for it to finish or choose another --output-dir",
                    dir.display(),
                    if holder.is_empty() { "holder unknown" } else { holder }
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                bail!("cannot lock {}: {e}", path.display())
            }
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "this machine".into());
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        file.set_len(0)?;
        write!(
            file,
            "pid {} on {host}, started at unix time {since}",
            std::process::id()
        )?;
        file.flush()?;
        Ok(OutputLock { _file: file })
    }
}

/// What ti-xla wrote into an output folder, as paths relative to it.
pub struct RunManifest {
    dir: PathBuf,
    /// Paths the manifest listed when the run began.
    owned: BTreeSet<PathBuf>,
    /// Every path in the folder when the run began.
    inventory: BTreeSet<PathBuf>,
}

/// Every non-hidden file and folder under `dir`, relative to it.
fn walk(dir: &Path) -> BTreeSet<PathBuf> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .expect("under the root")
                .to_path_buf();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            out.insert(rel);
            if is_dir {
                go(root, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    go(dir, dir, &mut out);
    out
}

/// The paths the folder's manifest lists (no manifest: nothing there is ti-xla's).
fn listed(dir: &Path) -> Result<BTreeSet<PathBuf>> {
    let path = dir.join(MANIFEST);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(serde_json::from_str::<Vec<PathBuf>>(&text)
            .with_context(|| {
                format!(
                    "{} is damaged; delete it (ti-xla then treats every file there as yours)",
                    path.display()
                )
            })?
            .into_iter()
            .collect()),
        Err(_) => Ok(BTreeSet::new()),
    }
}

fn write_listed<'p>(dir: &Path, paths: impl IntoIterator<Item = &'p PathBuf>) -> Result<()> {
    let sorted: BTreeSet<&PathBuf> = paths.into_iter().collect();
    write_atomic(
        &dir.join(MANIFEST),
        serde_json::to_string_pretty(&sorted)?.as_bytes(),
    )
}

/// Fails when one of `rels` (relative to `dir`) exists and the manifest does not list it: for
/// a command that writes known names (`generate`), so `--overwrite` replaces only ti-xla's
/// files. Does not walk the folder (it may be a large one, such as `.`).
pub fn check_replaceable(dir: &Path, rels: &[PathBuf]) -> Result<()> {
    let owned = listed(dir)?;
    for rel in rels {
        let path = dir.join(rel);
        if path.exists() && !owned.contains(rel) {
            bail!(
                "{} exists and was not written by ti-xla (it is not in {MANIFEST}); move it away or choose another --output-dir",
                path.display()
            );
        }
    }
    Ok(())
}

/// Adds `rels` (relative to `dir`, just written) to the folder's manifest.
pub fn record(dir: &Path, rels: &[PathBuf]) -> Result<()> {
    let mut owned = listed(dir)?;
    owned.extend(rels.iter().cloned());
    write_listed(dir, owned.iter().filter(|p| dir.join(p).exists()))
}

impl RunManifest {
    /// Reads the folder's manifest (none: nothing there is ti-xla's) and takes its inventory.
    pub fn begin(dir: &Path) -> Result<RunManifest> {
        Ok(RunManifest {
            dir: dir.to_path_buf(),
            owned: listed(dir)?,
            inventory: walk(dir),
        })
    }

    /// Whether `rel` (relative to the folder) was written by ti-xla: listed in the manifest, or
    /// created by this run.
    pub fn owns(&self, rel: &Path) -> bool {
        self.owned.contains(rel) || !self.inventory.contains(rel)
    }

    /// Records what this run wrote so far: the listed paths that still exist and every new one.
    pub fn save(&self) -> Result<()> {
        self.claim(&[])
    }

    /// As `save`, and lists `rels` too before this run writes them, so that a run killed
    /// mid-write (SIGKILL, a second Ctrl-C) leaves files the next run knows as ti-xla's. A
    /// name that is the user's is not claimed.
    pub fn claim(&self, rels: &[PathBuf]) -> Result<()> {
        let now = walk(&self.dir);
        // Files set aside for a run that was interrupted are still ti-xla's.
        let aside = walk(&self.dir.join(PREVIOUS));
        let owned = now
            .iter()
            .chain(rels.iter())
            .filter(|p| self.owns(p))
            .chain(aside.iter().filter(|p| self.owned.contains(*p)));
        write_listed(&self.dir, owned)
    }

    /// Fails when `rel` exists and is not ti-xla's: a run never writes over a user's file.
    pub fn check_writable(&self, rel: &Path) -> Result<()> {
        if self.dir.join(rel).exists() && !self.owns(rel) {
            bail!(
                "{} exists and was not written by ti-xla; move it away or choose another --output-dir",
                self.dir.join(rel).display()
            );
        }
        Ok(())
    }

    /// Moves the files and folders ti-xla wrote among `roots` (top-level names) into
    /// `.ti-xla-previous/`; folders keep what is not ti-xla's in place.
    pub fn set_aside(&self, roots: &[PathBuf]) -> Result<SetAside> {
        let backup = self.dir.join(PREVIOUS);
        if backup.exists() {
            std::fs::remove_dir_all(&backup)
                .with_context(|| format!("cannot clear {}", backup.display()))?;
        }
        let mut moved = Vec::new();
        let files: Vec<&PathBuf> = self
            .inventory
            .iter()
            .filter(|p| self.owned.contains(*p) && roots.iter().any(|r| p.starts_with(r)))
            .filter(|p| self.dir.join(p).is_file())
            .collect();
        for rel in files {
            let (from, to) = (self.dir.join(rel), backup.join(rel));
            std::fs::create_dir_all(to.parent().expect("a file has a parent"))?;
            std::fs::rename(&from, &to)
                .with_context(|| format!("cannot set aside {}", from.display()))?;
            moved.push(rel.clone());
        }
        // The emptied folders ti-xla made go too, deepest first.
        let dirs: Vec<&PathBuf> = self
            .inventory
            .iter()
            .rev()
            .filter(|p| self.owned.contains(*p) && roots.iter().any(|r| p.starts_with(r)))
            .collect();
        for rel in dirs {
            let _ = std::fs::remove_dir(self.dir.join(rel));
        }
        Ok(SetAside {
            dir: self.dir.clone(),
            moved,
        })
    }
}

/// The previous run's files, set aside while a new run replaces them.
pub struct SetAside {
    dir: PathBuf,
    moved: Vec<PathBuf>,
}

impl SetAside {
    /// The new run succeeded: the previous files go.
    pub fn discard(self) -> Result<()> {
        let backup = self.dir.join(PREVIOUS);
        if backup.exists() {
            std::fs::remove_dir_all(&backup)
                .with_context(|| format!("cannot remove {}", backup.display()))?;
        }
        Ok(())
    }

    /// A resumed run continues the one that set the earlier run's files aside: they stay aside
    /// until it succeeds (`discard`), and a failure leaves them there (`restore` moves nothing).
    pub fn pending(dir: &Path) -> SetAside {
        SetAside {
            dir: dir.to_path_buf(),
            moved: Vec::new(),
        }
    }

    /// The new run failed: the previous files it moved come back (over any the new run wrote
    /// there); what an earlier, interrupted run set aside stays aside.
    pub fn restore(self) -> Result<()> {
        let backup = self.dir.join(PREVIOUS);
        for rel in &self.moved {
            let (from, to) = (backup.join(rel), self.dir.join(rel));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(&from, &to)
                .with_context(|| format!("cannot restore {}", to.display()))?;
        }
        // The emptied folders go, deepest first; a folder still holding files stays.
        let mut dirs: Vec<PathBuf> = walk(&backup).into_iter().collect();
        dirs.reverse();
        for rel in dirs {
            let _ = std::fs::remove_dir(backup.join(rel));
        }
        let _ = std::fs::remove_dir(&backup);
        Ok(())
    }
}

/// Whether an earlier run's files are set aside in the folder (an `--overwrite` run that did
/// not finish was replacing them).
pub fn has_previous(dir: &Path) -> bool {
    dir.join(PREVIOUS).is_dir()
}

/// The paths the folder's manifest lists as ti-xla's.
pub fn written_by_ti_xla(dir: &Path) -> Result<BTreeSet<PathBuf>> {
    listed(dir)
}

/// Puts back the files an `--overwrite` run set aside and did not replace (it was killed
/// before it finished), over the partial files of the killed run (ti-xla's own); returns
/// whether there were any. A file of the user's that took one's place meanwhile stays, and so
/// does the set-aside copy.
pub fn recover_previous(dir: &Path) -> Result<bool> {
    let backup = dir.join(PREVIOUS);
    if !backup.is_dir() {
        return Ok(false);
    }
    let owned = listed(dir)?;
    let files = walk(&backup);
    let mut kept = false;
    for rel in files.iter().filter(|p| backup.join(p).is_file()) {
        let to = dir.join(rel);
        if to.is_dir() || (to.exists() && !owned.contains(rel)) {
            kept = true;
            continue;
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(backup.join(rel), &to)
            .with_context(|| format!("cannot restore {}", to.display()))?;
    }
    if !kept {
        let _ = std::fs::remove_dir_all(&backup);
    }
    Ok(true)
}

/// Removes `.checkpoint-N.tmp-PID/` folders that a killed checkpoint save left behind (only
/// those whose process is gone).
pub fn remove_stale_checkpoint_tmp(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(".checkpoint-") else {
            continue;
        };
        let Some((step, pid)) = rest.split_once(".tmp-") else {
            continue;
        };
        let (Ok(_), Ok(pid)) = (step.parse::<u64>(), pid.parse::<u32>()) else {
            continue;
        };
        let alive = Path::new(&format!("/proc/{pid}")).exists() && pid != std::process::id();
        if !alive && entry.path().is_dir() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_handles_missing_tails_and_dots() {
        let tmp = std::env::temp_dir();
        let real = tmp.canonicalize().unwrap();
        assert_eq!(resolve(&tmp.join("a/b/../c")).unwrap(), real.join("a/c"));
        assert!(check_outside(&tmp.join("x"), &tmp.join("x/y"), "--output-dir").is_err());
        assert!(check_outside(&tmp.join("x/y/z"), &tmp.join("x/y"), "--output-dir").is_err());
        assert!(check_outside(&tmp.join("x/./y"), &tmp.join("x/y"), "--output-dir").is_err());
        assert!(check_outside(&tmp.join("x/z"), &tmp.join("x/y"), "--output-dir").is_ok());
    }
}
