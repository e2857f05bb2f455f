//! One process per run: an advisory lock file claims a run before anything of
//! it is read or written, so that workers sharing a filesystem (sweep shards,
//! two terminals, a cluster's array tasks) never run the same run twice.
//!
//! The lock is the kernel's (flock, which Linux maps to POSIX locks on NFS): it
//! goes away with the process that holds it, however that process ends, so a
//! killed worker never leaves a run claimed. The files live in `<out>/.locks/`,
//! apart from the run directories, and are never deleted: unlinking a lock file
//! while another process may be opening it would let two processes hold "the"
//! lock on two different files.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A held claim on a run; released when dropped (or when the process dies).
#[derive(Debug)]
pub(crate) struct RunLock {
    file: File,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Forget the holder before the kernel releases the lock with the file.
        let _ = self.file.set_len(0);
    }
}

pub(crate) enum Claim {
    Held(RunLock),
    /// Another process holds the lock; what it wrote about itself.
    Busy(String),
}

/// `<out>/.locks/<experiment>/<run id>.lock`.
pub fn path(out: &Path, experiment: &str, run_id: &str) -> PathBuf {
    out.join(".locks").join(experiment).join(format!("{run_id}.lock"))
}

/// Takes the lock at `path` if no other process holds it, without waiting.
pub(crate) fn claim(path: &Path) -> Result<Claim> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "an unknown host".into());
            let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "pid {} on {host} since {since}", std::process::id())?;
            Ok(Claim::Held(RunLock { file }))
        }
        Err(TryLockError::WouldBlock) => Ok(Claim::Busy(holder(&mut file))),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {} (does this filesystem support locks?)", path.display()))
        }
    }
}

/// Who holds the lock at `path`, if anyone does; takes nothing (for plans).
pub(crate) fn holder_of(path: &Path) -> Option<String> {
    let mut file = File::open(path).ok()?;
    match file.try_lock() {
        Ok(()) => None,
        Err(_) => Some(holder(&mut file)),
    }
}

fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim() {
        "" => "another process".to_string(),
        t => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_busy_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = path(dir.path(), "exp", "abc");
        let Claim::Held(first) = claim(&path).unwrap() else { panic!("the first claim must succeed") };
        match claim(&path).unwrap() {
            Claim::Busy(holder) => assert!(holder.contains(&format!("pid {}", std::process::id())), "{holder}"),
            Claim::Held(_) => panic!("a held lock was claimed twice"),
        }
        assert!(holder_of(&path).is_some());
        drop(first);
        assert_eq!(holder_of(&path), None);
        assert!(matches!(claim(&path).unwrap(), Claim::Held(_)));
    }
}
