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
pub(crate) struct Limits {
    pub max_bytes: u64,
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Far above any tutorial dataset (ImageNet's train set is about 150 GB).
        Limits { max_bytes: 256 << 30, max_entries: 5_000_000 }
    }
}

/// How much one zip entry may expand by default (`RUNNER_MAX_ZIP_EXPANSION`). Deflate's
/// best is about 1000:1 (long runs of one byte); images, already compressed, hardly
/// shrink, and text a few times.
const MAX_EXPANSION: u64 = 200;

/// Bytes free to an unprivileged user on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statvfs struct to fill.
    (unsafe { libc::statvfs(path.as_ptr(), &mut stat) } == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
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

/// Extracts the zip at `archive` into `target`, replacing what is there only once the
/// extraction is complete.
pub(crate) fn extract_zip(archive: &Path, target: &Path, limits: Limits) -> Result<()> {
    let file = std::fs::File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not a readable zip archive", archive.display()))?;
    if zip.len() > limits.max_entries {
        bail!("{} has {} entries, more than the limit of {}", archive.display(), zip.len(), limits.max_entries);
    }
    build_atomically(target, archive, |tmp| {
        // Never more than the disk can take (less a margin for everything else on it).
        let max_bytes = limits.max_bytes.min(free_bytes(tmp).map_or(u64::MAX, |f| f.saturating_sub(1 << 30)));
        let limits = Limits { max_bytes, ..limits };
        let expansion = crate::sys::env::limit(crate::sys::env::MAX_ZIP_EXPANSION, MAX_EXPANSION);
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
            // An entry that inflates more than deflate's best ratio on real files is a bomb.
            let cap = entry.compressed_size().saturating_mul(expansion).saturating_add(1 << 20).min(budget + 1);
            let n = std::io::copy(&mut (&mut entry).take(cap), &mut f)
                .with_context(|| format!("cannot extract `{entry_name}`"))?;
            written += n;
            if n == cap && n <= budget {
                bail!(
                    "refusing `{entry_name}` of {}: it expands more than {expansion} times (a zip bomb?; \
                     RUNNER_MAX_ZIP_EXPANSION raises the limit)",
                    archive.display()
                );
            }
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
    })
}

/// Fills `target` by running `fill` on a temporary folder beside it, renamed into
/// place only on success; on failure the temporary folder is removed.
fn build_atomically(target: &Path, archive: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Removed when dropped: on failure, on a panic, or when the rename fails.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial"))
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a temporary folder in {}", parent.display()))?;
    fill(tmp.path()).with_context(|| format!("cannot unpack {}", archive.display()))?;
    // A stale extraction (of another archive of the same name) is moved aside into a
    // folder of its own, removed when dropped.
    let _aside = if target.is_dir() {
        let aside = tempfile::Builder::new()
            .prefix(&format!(".{name}.stale"))
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a temporary folder in {}", parent.display()))?;
        // Another process may have moved it first: then there is nothing to move.
        let _ = std::fs::rename(target, aside.path().join("old"));
        Some(aside)
    } else {
        None
    };
    let moved = std::fs::rename(tmp.path(), target);
    match moved {
        Ok(()) => {
            let _ = tmp.keep();
            Ok(())
        }
        // Another process extracted the same archive meanwhile: its copy is as good as ours,
        // and ours goes with `tmp`.
        Err(_) if target.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot move into {}", target.display())),
    }
}

/// Where the extraction of a user's archive into `datasets/<stem>/` records which archive
/// it came from: `datasets/.<stem>.source`, outside the data folder.
fn source_record(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(".{name}.source"))
}

/// An archive's size and modification time, and its sha256 when known: what tells a
/// reused extraction's archive from another of the same name.
#[derive(Debug, PartialEq)]
struct ArchiveStamp {
    size: u64,
    modified: u128,
    sha256: String,
}

impl ArchiveStamp {
    fn quick(archive: &Path) -> Result<(u64, u128)> {
        let meta = std::fs::metadata(archive).with_context(|| format!("cannot read {}", archive.display()))?;
        let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        Ok((meta.len(), modified.map_or(0, |d| d.as_nanos())))
    }

    fn read(record: &Path) -> Option<ArchiveStamp> {
        let text = std::fs::read_to_string(record).ok()?;
        let mut it = text.split_whitespace();
        Some(ArchiveStamp {
            size: it.next()?.parse().ok()?,
            modified: it.next()?.parse().ok()?,
            sha256: it.next()?.into(),
        })
    }

    fn write(&self, record: &Path) -> Result<()> {
        crate::sys::atomic::write_atomic(
            record,
            format!("{} {} {}\n", self.size, self.modified, self.sha256).as_bytes(),
        )
    }
}

/// `datasets/<stem>/` holding `archive` extracted: reused when it was extracted from the
/// same bytes (same size and time, else the same sha256), extracted anew otherwise.
fn extract_user_archive(archive: &Path, target: &Path) -> Result<()> {
    let record = source_record(target);
    let (size, modified) = ArchiveStamp::quick(archive)?;
    let recorded = ArchiveStamp::read(&record);
    let mut digest = None;
    if target.is_dir()
        && let Some(r) = &recorded
    {
        if (r.size, r.modified) == (size, modified) {
            return Ok(());
        }
        let sha256 = crate::sys::fetch::sha256_file(archive)?;
        if r.sha256 == sha256 {
            return ArchiveStamp { size, modified, sha256 }.write(&record);
        }
        digest = Some(sha256);
    }
    if target.is_dir() {
        crate::sys::reporter::note(&format!(
            "{} was extracted from {}; extracting it again",
            target.display(),
            if recorded.is_some() { "another archive of the same name" } else { "an archive runner cannot identify" }
        ));
    }
    // Hashed once: above when a recorded extraction had to be checked, else here.
    let sha256 = match digest {
        Some(d) => d,
        None => crate::sys::fetch::sha256_file(archive)?,
    };
    unpack(archive, target)?;
    ArchiveStamp { size, modified, sha256 }.write(&record)
}

/// A dataset runner knows by name: where its archive is and how it is laid out.
struct Known {
    name: &'static str,
    url: &'static str,
    /// sha256 of the archive, where known; otherwise the first download's is recorded and checked after.
    sha256: Option<&'static str>,
    /// Folder names the tutorials give this data, for the hint when such a folder is missing.
    folders: &'static [&'static str],
}

const KNOWN: &[Known] = &[
    // The PyTorch transfer-learning tutorial's ants and bees: train/ and val/.
    Known {
        name: "hymenoptera",
        url: "https://download.pytorch.org/tutorial/hymenoptera_data.zip",
        sha256: None,
        folders: &["hymenoptera_data"],
    },
    // The TensorFlow tutorial's Microsoft PetImages (Cat/, Dog/), which holds corrupt files.
    Known {
        name: "cats_vs_dogs",
        url: "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip",
        sha256: None,
        folders: &["cats_and_dogs", "catsanddogs", "PetImages", "kagglecatsanddogs", "dogs_vs_cats"],
    },
    // CIFAR-10, binary version, turned into an ImageFolder (train/ from the data batches, val/ from the test batch).
    // sha256 as TensorFlow Datasets records it for this URL (170,052,171 bytes).
    Known {
        name: "cifar10",
        url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        sha256: Some("c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
        folders: &[],
    },
];

pub(crate) fn known_names() -> Vec<&'static str> {
    KNOWN.iter().map(|k| k.name).collect()
}

/// The URL of a known dataset; `RUNNER_DATASETS_MIRROR` replaces everything before the file name.
fn known_url(k: &Known) -> String {
    match std::env::var(crate::sys::env::DATASETS_MIRROR) {
        Ok(mirror) if !mirror.is_empty() => {
            format!("{}/{}", mirror.trim_end_matches('/'), k.url.rsplit('/').next().unwrap_or(k.name))
        }
        _ => k.url.to_string(),
    }
}

/// Downloads `url` into the dataset cache once. The first download's sha256 is
/// recorded beside it (`<file>.sha256`) and every later use checks it.
fn fetch_archive(url: &str, sha256: Option<&str>) -> Result<PathBuf> {
    let cache = crate::sys::fetch::cache_dir().join("datasets");
    let file = url.split(['?', '#']).next().unwrap_or(url).rsplit('/').next().unwrap_or("");
    if file.is_empty() {
        bail!("cannot tell a file name from the URL {url}");
    }
    let path = cache.join(file);
    let record = cache.join(format!("{file}.sha256"));
    let recorded = std::fs::read_to_string(&record).ok().map(|s| s.trim().to_string());
    let expected = sha256.map(str::to_string).or(recorded);
    crate::sys::fetch::fetch_to(url, expected.as_deref(), &path)?;
    if expected.is_none() {
        let digest = crate::sys::fetch::sha256_file(&path)?;
        crate::sys::atomic::write_atomic(&record, format!("{digest}\n").as_bytes())?;
    }
    Ok(path)
}

/// The synthetic dataset runner makes itself (`data.source = "shapes"`): the images
/// `runner data synth` writes with its defaults, generated into `datasets/shapes/` on
/// first use, so the quickstart runs on a fresh machine with nothing downloaded.
pub(crate) const SHAPES: &str = "shapes";

/// What the first run does before it can read `source`, when its data is not there
/// yet: download a known dataset or an archive URL, or generate the synthetic shapes.
/// Plans say so instead of doing it.
pub(crate) fn pending(source: &str) -> Option<&'static str> {
    if source == SHAPES {
        return (!Path::new("datasets").join(SHAPES).is_dir()).then_some("generates its data first");
    }
    if KNOWN.iter().any(|k| k.name == source) {
        return (!Path::new("datasets").join(source).is_dir()).then_some("downloads its data first");
    }
    let lower = source.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return None;
    }
    let name = source.split(['?', '#']).next().unwrap_or("").rsplit('/').next().unwrap_or("");
    let stem = archive_stem(name).unwrap_or("");
    (stem.is_empty() || !Path::new("datasets").join(stem).is_dir()).then_some("downloads its data first")
}

/// The folder name under `datasets/` that archive `name` extracts into: its name without
/// `.zip`/`.tar.gz`, which must be a plain folder name (not empty, no leading dot).
fn archive_stem(name: &str) -> Result<&str> {
    let stem = name.trim_end_matches(".zip").trim_end_matches(".ZIP").trim_end_matches(".tar.gz");
    if stem.is_empty() || stem.starts_with('.') || stem.contains(['/', '\\']) {
        bail!("cannot name a folder under datasets/ after the archive `{name}`: give it a plain name, e.g. data.zip");
    }
    Ok(stem)
}

/// Whether [`materialize`] would download or generate something for `source`.
pub(crate) fn needs_fetch(source: &str) -> bool {
    pending(source).is_some()
}

/// The folder a `data.source` names: a folder as is; a `.zip` (a local file, an
/// http(s) URL, or a known dataset's name) extracted once into `datasets/<name>/`;
/// `shapes` generated once into `datasets/shapes/`.
pub fn materialize(source: &str) -> Result<PathBuf> {
    if source == SHAPES {
        let target = Path::new("datasets").join(SHAPES);
        if !target.is_dir() {
            crate::sys::reporter::note(&format!("generating the synthetic shapes dataset into {}", target.display()));
            crate::data::synth::generate(&target, &crate::data::synth::SynthOptions::default())?;
        }
        return Ok(target);
    }
    if let Some(k) = KNOWN.iter().find(|k| k.name == source) {
        let target = Path::new("datasets").join(k.name);
        if !target.is_dir() {
            let archive = fetch_archive(&known_url(k), known_sha256(k)?.as_deref())?;
            unpack(&archive, &target)?;
        }
        return Ok(data_root(target));
    }
    let lower = source.to_ascii_lowercase();
    let remote = lower.starts_with("http://") || lower.starts_with("https://");
    if remote || lower.ends_with(".zip") || lower.ends_with(".tar.gz") {
        let archive = if remote { fetch_archive(source, None)? } else { PathBuf::from(source) };
        if !archive.is_file() {
            bail!("data archive {source} not found");
        }
        let name = archive.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let stem = archive_stem(&name)?;
        let target = Path::new("datasets").join(stem);
        extract_user_archive(&archive, &target)?;
        return Ok(data_root(target));
    }
    Ok(PathBuf::from(source))
}

/// What to tell a user whose data folder `source` does not exist: the named source
/// whose folder it looks like (which would fetch it), else the kinds of source there are.
pub(crate) fn missing_folder_hint(source: &str) -> String {
    let norm = |s: &str| s.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_ascii_lowercase();
    let folder = norm(&Path::new(source).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let named = KNOWN.iter().map(|k| (k.name, k.folders)).chain([(SHAPES, &[][..])]);
    let mut names = vec![];
    for (name, folders) in named {
        if !folder.is_empty()
            && std::iter::once(name).chain(folders.iter().copied()).any(|f| folder.starts_with(&norm(f)))
        {
            return format!("set data.source = \"{name}\" and runner fetches it into datasets/{name}/ on first use");
        }
        names.push(name);
    }
    format!(
        "data.source takes a folder of class folders (or of train/ and val/ folders), a .zip file or its http(s) \
         URL, or the name of a dataset runner fetches: {}",
        names.join(", ")
    )
}

/// The sha256 a known dataset's archive must have: `RUNNER_DATASETS_SHA256`'s entry for
/// it (`name=hex,...`, for a mirror that serves other bytes under the same file name),
/// else the pinned one, else none (the first download's is recorded).
fn known_sha256(k: &Known) -> Result<Option<String>> {
    let Ok(list) = std::env::var(crate::sys::env::DATASETS_SHA256) else { return Ok(k.sha256.map(str::to_string)) };
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, hex)) = entry.split_once('=') else {
            bail!("RUNNER_DATASETS_SHA256: `{entry}` is not NAME=SHA256");
        };
        if !KNOWN.iter().any(|k| k.name == name.trim()) {
            bail!("RUNNER_DATASETS_SHA256: `{name}` is not a known dataset ({})", known_names().join(", "));
        }
        let hex = hex.trim().to_ascii_lowercase();
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("RUNNER_DATASETS_SHA256: the sha256 for `{name}` must be 64 hex digits");
        }
        if name.trim() == k.name {
            return Ok(Some(hex));
        }
    }
    Ok(k.sha256.map(str::to_string))
}

fn unpack(archive: &Path, target: &Path) -> Result<()> {
    crate::sys::reporter::note(&format!("extracting {} into {}", archive.display(), target.display()));
    let name = archive.to_string_lossy().to_ascii_lowercase();
    if name.ends_with("cifar-10-binary.tar.gz") {
        cifar10_to_image_folder(archive, target)
    } else if name.ends_with(".zip") {
        extract_zip(archive, target, Limits::default())
    } else {
        bail!("{}: only .zip archives (and CIFAR-10's binary .tar.gz) are supported", archive.display())
    }
}

/// Archives often wrap the data in one folder (`hymenoptera_data/`, `PetImages/`):
/// descend while a folder holds exactly one subfolder (files beside it, such as
/// a licence, are ignored), stopping at a train/val layout.
fn data_root(mut dir: PathBuf) -> PathBuf {
    loop {
        if ["train", "val"].iter().all(|s| dir.join(s).is_dir()) {
            return dir;
        }
        let subdirs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default();
        match subdirs.as_slice() {
            [only] => dir = only.clone(),
            _ => return dir,
        }
    }
}

/// CIFAR-10's binary batches (`<label byte><1024 R><1024 G><1024 B>` per image)
/// as PNG files in train/<class>/ and val/<class>/, written atomically.
pub(crate) fn cifar10_to_image_folder(archive: &Path, target: &Path) -> Result<()> {
    const RECORD: usize = 1 + 3 * 32 * 32;
    let file = std::fs::File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    build_atomically(target, archive, |tmp| {
        let mut classes: Vec<String> = vec![];
        let mut batches: Vec<(String, Vec<u8>)> = vec![];
        for entry in tar.entries().context("cannot read the CIFAR-10 archive")? {
            let mut entry = entry.context("cannot read the CIFAR-10 archive")?;
            let path = entry.path().context("bad entry name")?.to_string_lossy().into_owned();
            let file = path.rsplit('/').next().unwrap_or("").to_string();
            if file == "batches.meta.txt" {
                let mut text = String::new();
                entry.read_to_string(&mut text).context("cannot read batches.meta.txt")?;
                classes = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
            } else if file.ends_with(".bin") && (file.starts_with("data_batch_") || file == "test_batch.bin") {
                if entry.size() > 64 << 20 {
                    bail!("{file} is larger than a CIFAR-10 batch can be");
                }
                let mut data = vec![];
                entry.read_to_end(&mut data).with_context(|| format!("cannot read {file}"))?;
                batches.push((file, data));
            }
        }
        if classes.len() != 10 || batches.is_empty() {
            bail!("not the CIFAR-10 binary archive: batches.meta.txt with 10 classes and the .bin batches are needed");
        }
        batches.sort();
        for (file, data) in &batches {
            if data.len() % RECORD != 0 {
                bail!("{file}: its size is not a whole number of records");
            }
            let split = if file == "test_batch.bin" { "val" } else { "train" };
            for (i, rec) in data.chunks(RECORD).enumerate() {
                let label = rec[0] as usize;
                let class = classes.get(label).with_context(|| format!("{file}: record {i} has label {label}"))?;
                let img = image::RgbImage::from_fn(32, 32, |x, y| {
                    let p = (y * 32 + x) as usize;
                    image::Rgb([rec[1 + p], rec[1 + 1024 + p], rec[1 + 2048 + p]])
                });
                let dir = tmp.join(split).join(class);
                std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                let stem = file.trim_end_matches(".bin");
                img.save(dir.join(format!("{stem}_{i:05}.png"))).context("cannot write a CIFAR-10 image")?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    #[test]
    fn plans_know_which_sources_would_download() {
        assert!(!needs_fetch("datasets/shapes"));
        assert!(!needs_fetch("local.zip"));
        assert!(needs_fetch("https://data.example/sets/never-extracted-9f3a.zip?x=1"));
        assert!(needs_fetch("https://data.example/"));
    }

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

    #[test]
    fn two_extractions_of_one_archive_at_once_both_succeed_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("d.zip");
        let entries: Vec<(String, Vec<u8>)> =
            (0..200).map(|i| (format!("c{}/{i}.jpg", i % 2), vec![7u8; 4096])).collect();
        let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        make_zip(&zip, &refs);
        let target = dir.path().join("out");
        std::thread::scope(|s| {
            let runs: Vec<_> = (0..2).map(|_| s.spawn(|| extract_zip(&zip, &target, Limits::default()))).collect();
            for r in runs {
                r.join().unwrap().unwrap();
            }
        });
        assert_eq!(std::fs::read_dir(target.join("c0")).unwrap().count(), 100);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn archive_names_that_make_no_folder_are_refused() {
        assert_eq!(archive_stem("hymenoptera_data.zip").unwrap(), "hymenoptera_data");
        for bad in [".zip", "...zip", ".hidden.zip", ".tar.gz"] {
            assert!(archive_stem(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_entry_that_inflates_like_a_bomb_is_refused_early() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("zeros.zip");
        let mut w = zip::ZipWriter::new(std::fs::File::create(&zip).unwrap());
        let deflated = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        w.start_file("a/zeros.png", deflated).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..64 {
            w.write_all(&chunk).unwrap();
        }
        w.finish().unwrap();
        assert!(std::fs::metadata(&zip).unwrap().len() < 1 << 20);
        let err = format!("{:#}", extract_zip(&zip, &dir.path().join("out"), Limits::default()).unwrap_err());
        assert!(err.contains("expands more than 200 times"), "{err}");
        assert!(!dir.path().join("out").exists());
        assert!(free_bytes(dir.path()).is_some_and(|b| b > 0));
    }
}
