//! Files that are either wholly written or not there: write a temporary file
//! beside the target, flush it to disk, then rename it over the target.

use std::path::Path;

use anyhow::{Context, Result};

/// Runs `write` on a temporary path beside `path`, then moves the result into place.
pub fn with_temp_path(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = write(&tmp).and_then(|()| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    with_temp_path(path, |tmp| std::fs::write(tmp, bytes).with_context(|| format!("cannot write {}", tmp.display())))
}
