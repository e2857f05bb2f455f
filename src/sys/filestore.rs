//! A folder of files kept within a size budget, least recently used first out: the
//! feature store's housekeeping. A file's modification time is its last use (a reader
//! touches it); files are written whole by their owners (`sys::atomic`), so a listing
//! sees only complete ones and temporaries (dot files) are left alone.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A store's folder: the environment variable `var` (a folder, or `off` for none), else
/// `<RUNNER_CACHE>/<name>`.
pub(crate) fn dir_from_env(var: &str, name: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(v) if v == "off" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => Some(crate::sys::fetch::cache_dir().join(name)),
    }
}

/// A store's size budget in bytes: the MiB in the environment variable `var`, else `default_mib`.
pub(crate) fn budget_from_env(var: &str, default_mib: u64) -> u64 {
    let mib = std::env::var(var).ok().and_then(|v| v.trim().parse::<u64>().ok());
    mib.unwrap_or(default_mib).saturating_mul(1 << 20)
}

/// One file of a store.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub path: PathBuf,
    pub bytes: u64,
    /// When it was last written or read.
    pub used: SystemTime,
}

/// The files of `dir` (none if it does not exist), least recently used first.
pub fn entries(dir: &Path) -> Vec<Entry> {
    let Ok(read) = std::fs::read_dir(dir) else { return vec![] };
    let mut out: Vec<Entry> = read
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            Some(Entry { path: e.path(), bytes: meta.len(), used: meta.modified().ok()? })
        })
        .collect();
    out.sort_by(|a, b| a.used.cmp(&b.used).then_with(|| a.path.cmp(&b.path)));
    out
}

/// Marks `path` as used now.
pub(crate) fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Removes the least recently used files of `dir` until it holds at most `budget` bytes,
/// never `keep` (the file just written). Returns what it removed.
pub fn evict(dir: &Path, budget: u64, keep: Option<&Path>) -> Vec<Entry> {
    let all = entries(dir);
    let mut total: u64 = all.iter().map(|e| e.bytes).sum();
    let mut removed = vec![];
    for e in all {
        if total <= budget {
            break;
        }
        if keep.is_some_and(|k| k == e.path) {
            continue;
        }
        if std::fs::remove_file(&e.path).is_ok() {
            total -= e.bytes;
            removed.push(e);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_least_recently_used_go_first_and_the_kept_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(1000);
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            let f = std::fs::File::options().append(true).open(&path).unwrap();
            f.set_modified(t0 + Duration::from_secs(10 * i as u64)).unwrap();
        }
        std::fs::write(dir.path().join(".tmp-partial"), vec![0u8; 1000]).unwrap();
        // Reading `a` makes it the most recently used.
        touch(&dir.path().join("a"));
        let names = |v: &[Entry]| {
            v.iter().map(|e| e.path.file_name().unwrap().to_string_lossy().into_owned()).collect::<Vec<_>>()
        };
        assert_eq!(names(&entries(dir.path())), ["b", "c", "d", "a"]);
        // 400 bytes over a 250-byte budget, `b` kept: `c` and `d` go.
        let removed = evict(dir.path(), 250, Some(&dir.path().join("b")));
        assert_eq!(names(&removed), ["c", "d"]);
        assert_eq!(names(&entries(dir.path())), ["b", "a"]);
        assert!(dir.path().join(".tmp-partial").exists(), "a temporary is not the store's to remove");
        assert!(evict(dir.path(), 1000, None).is_empty());
        assert!(entries(&dir.path().join("none")).is_empty());
    }
}
