//! Files that are either wholly written or not there: write a temporary file
//! beside the target (through `tempfile`), flush it to disk, then rename it over
//! the target. A process killed in between leaves only a `.<name>.tmp<random>`
//! file, which the next start of the run removes.

use std::path::Path;

use anyhow::{Context, Result};

/// Runs `write` on a temporary path beside `path`, then moves the result into place.
/// On failure the temporary file is removed and `path` is left as it was.
pub(crate) fn with_temp_path(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_beside(path)?;
    write(tmp.path())?;
    std::fs::File::open(tmp.path())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", tmp.path().display()))?;
    tmp.persist(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// An empty temporary file beside `path` (`.<name>.tmp<random>`), removed when dropped
/// unless persisted over `path`.
pub(crate) fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Readable as any file the user makes (0666 less the umask), not tempfile's private 0600:
    // results on a shared filesystem or behind a web server are for the whole team.
    tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp"))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    with_temp_path(path, |tmp| std::fs::write(tmp, bytes).with_context(|| format!("cannot write {}", tmp.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        write_atomic(&path, b"old").unwrap();
        let err = with_temp_path(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            anyhow::bail!("disk full")
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["a.csv"]);
    }
}
