//! Dataset archives, extracted safely.
//!
//! An entry that would land outside the target (`..`, an absolute path) or is
//! a symbolic link is refused; the total uncompressed size and the number of
//! entries are capped, counting the bytes actually written (declared sizes can
//! lie); `__MACOSX/` and `.DS_Store` entries are skipped. Extraction goes into
//! a temporary folder beside the target and is renamed into place only when
//! complete, so a failure leaves nothing behind.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Far above any tutorial dataset (ImageNet's train set is about 150 GB).
        Limits { max_bytes: 256 << 30, max_entries: 5_000_000 }
    }
}

fn ignored(name: &str) -> bool {
    name.starts_with("__MACOSX/") || name.split('/').any(|p| p == ".DS_Store")
}

/// A relative path with no `..`, root or prefix components.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Extracts the zip at `archive` into `target` (which must not exist yet).
pub fn extract_zip(archive: &Path, target: &Path, limits: Limits) -> Result<()> {
    if target.exists() {
        bail!("{} already exists", target.display());
    }
    let file = std::fs::File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not a readable zip archive", archive.display()))?;
    if zip.len() > limits.max_entries {
        bail!("{} has {} entries, more than the limit of {}", archive.display(), zip.len(), limits.max_entries);
    }
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.partial{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| -> Result<()> {
        let mut written = 0u64;
        for i in 0..zip.len() {
            let mut entry =
                zip.by_index(i).with_context(|| format!("cannot read entry {i} of {}", archive.display()))?;
            let entry_name = entry.name().to_string();
            if ignored(&entry_name) {
                continue;
            }
            let Some(rel) = safe_relative(&entry_name) else {
                bail!("refusing entry `{entry_name}`: it would be written outside the target folder");
            };
            if entry.is_symlink() {
                bail!("refusing entry `{entry_name}`: symbolic links are not extracted");
            }
            let out = tmp.join(&rel);
            if entry.is_dir() {
                std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
                continue;
            }
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let mut f = std::fs::File::create(&out).with_context(|| format!("cannot write {}", out.display()))?;
            // Read at most one byte past the remaining budget, whatever the entry declares.
            let budget = limits.max_bytes - written;
            let n = std::io::copy(&mut (&mut entry).take(budget + 1), &mut f)
                .with_context(|| format!("cannot extract `{entry_name}`"))?;
            written += n;
            if n > budget {
                bail!(
                    "{} expands to more than {} bytes, the limit (a zip bomb?); stopped at `{entry_name}`",
                    archive.display(),
                    limits.max_bytes
                );
            }
            f.flush().with_context(|| format!("cannot write {}", out.display()))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => std::fs::rename(&tmp, target).with_context(|| format!("cannot move into {}", target.display())),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e.context(format!("cannot extract {}", archive.display())))
        }
    }
}

/// The folder a `data.source` names: a folder as is; a `.zip` extracted once
/// into `datasets/<name>/` (reused afterwards).
pub fn materialize(source: &str, quiet: bool) -> Result<PathBuf> {
    let path = Path::new(source);
    if source.to_ascii_lowercase().ends_with(".zip") {
        if !path.is_file() {
            bail!("data archive {source} not found");
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let target = Path::new("datasets").join(stem);
        if !target.is_dir() {
            if !quiet {
                eprintln!("extracting {source} into {}", target.display());
            }
            extract_zip(path, &target, Limits::default())?;
        }
        return Ok(single_top_folder(target));
    }
    Ok(path.to_path_buf())
}

/// Archives often hold one top folder (`hymenoptera_data/train/...`): use it.
fn single_top_folder(dir: PathBuf) -> PathBuf {
    let entries: Vec<_> = std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok()).collect()).unwrap_or_default();
    match entries.as_slice() {
        [only]
            if only.path().is_dir()
                && !["train", "val", "test"].contains(&only.file_name().to_string_lossy().as_ref()) =>
        {
            let inner = only.path();
            let has_layout = ["train", "val"].iter().all(|s| inner.join(s).is_dir());
            if has_layout { inner } else { dir }
        }
        _ => dir,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn make_zip(path: &Path, entries: &[(&str, &[u8])]) {
        let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        for (name, data) in entries {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn extracts_and_skips_mac_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("d.zip");
        make_zip(&zip, &[("a/x.jpg", b"1"), ("__MACOSX/a/._x.jpg", b"2"), ("a/.DS_Store", b"3")]);
        let target = dir.path().join("out");
        extract_zip(&zip, &target, Limits::default()).unwrap();
        assert_eq!(std::fs::read(target.join("a/x.jpg")).unwrap(), b"1");
        assert!(!target.join("__MACOSX").exists() && !target.join("a/.DS_Store").exists());
    }

    #[test]
    fn refuses_zip_slip_symlinks_and_bombs_leaving_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Zip slip: a relative path that climbs out, and an absolute one.
        for (i, evil) in
            ["../escaped.txt", "a/../../escaped.txt", "/tmp/runner-zip-slip-absolute.txt"].iter().enumerate()
        {
            let zip = root.join(format!("slip{i}.zip"));
            make_zip(&zip, &[("ok/file.txt", b"fine"), (evil, b"evil")]);
            let target = root.join(format!("t{i}"));
            let err = format!("{:#}", extract_zip(&zip, &target, Limits::default()).unwrap_err());
            assert!(err.contains("would be written outside the target folder"), "{err}");
            assert!(!target.exists(), "a failed extraction leaves no target");
        }
        assert!(!root.join("escaped.txt").exists() && !dir.path().parent().unwrap().join("escaped.txt").exists());
        assert!(!Path::new("/tmp/runner-zip-slip-absolute.txt").exists());

        // A symbolic link entry.
        let zip = root.join("link.zip");
        {
            let mut w = zip::ZipWriter::new(std::fs::File::create(&zip).unwrap());
            w.add_symlink("a/link", "/etc/passwd", SimpleFileOptions::default()).unwrap();
            w.finish().unwrap();
        }
        let err = format!("{:#}", extract_zip(&zip, &root.join("tl"), Limits::default()).unwrap_err());
        assert!(err.contains("symbolic links are not extracted"), "{err}");
        assert!(!root.join("tl").exists());

        // A bomb: 64 MiB of zeros compress to a few KiB; the cap is counted on bytes written.
        let zip = root.join("bomb.zip");
        {
            let mut w = zip::ZipWriter::new(std::fs::File::create(&zip).unwrap());
            w.start_file("zeros.bin", SimpleFileOptions::default()).unwrap();
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..64 {
                w.write_all(&zeros).unwrap();
            }
            w.finish().unwrap();
        }
        assert!(std::fs::metadata(&zip).unwrap().len() < 1 << 20);
        let err = format!(
            "{:#}",
            extract_zip(&zip, &root.join("tb"), Limits { max_bytes: 16 << 20, max_entries: 10 }).unwrap_err()
        );
        assert!(err.contains("a zip bomb?"), "{err}");
        assert!(!root.join("tb").exists());
        let leftovers: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // Too many entries.
        let zip = root.join("many.zip");
        let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
        make_zip(&zip, &names.iter().map(|n| (n.as_str(), &b"x"[..])).collect::<Vec<_>>());
        let err = format!(
            "{:#}",
            extract_zip(&zip, &root.join("tm"), Limits { max_bytes: 1 << 20, max_entries: 10 }).unwrap_err()
        );
        assert!(err.contains("has 20 entries, more than the limit of 10"), "{err}");
    }
}
