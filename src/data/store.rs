//! The decoded-image store: every file of a dataset decoded once, its shorter side resized
//! to the stored side (its aspect kept), into one file under runner's cache, which every
//! run, grid point, search trial, `runner verify` and process on the machine (or on a
//! shared filesystem) reads per batch instead of decoding again.
//!
//! A store is named by what its pixels depend on: the sha256 of every distinct file (from
//! the manifest), the stored side, the decoder's version and the pixel limit. Files with
//! the same content are stored once, and any split of the same files (another seed, a
//! fold) reads the same store. One process builds it under a lock (`.locks/<key>.lock`,
//! the kernel's: it goes with its holder however that ends) while the others wait and then
//! read it; it is written beside its final name and renamed into place when whole, so a
//! store that exists is complete. A header and checksums guard it: a store that is
//! truncated or whose index was altered is rebuilt, never read, and an image whose pixels
//! do not match their checksum is decoded again from its file (and the store rebuilt by
//! the next run).
//!
//! Reading takes positioned reads (`pread`), not a memory map: mapped pages count in the
//! process's resident memory as they are touched (a 100k-image store would grow it by
//! gigabytes) and a file truncated under a map kills the reader with SIGBUS.
//!
//! The file: a 64-byte header, the pixels (CHW uint8, image after image), an index of
//! 32-byte entries (one per file, in sha256 order) and the reasons of the files that could
//! not be decoded. `data.store = "memory"` holds the same bytes in memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::{BadImage, Decoded, decode_file};
use crate::sys::reporter;

const MAGIC: [u8; 8] = *b"RUNRIMG\x01";
/// Bump with any change to the pixels the decoder gives for a file (library, resize,
/// rounding, layout): stores of an earlier version are then never found again.
pub(crate) const DECODER_VERSION: u32 = 1;
const HEADER: u64 = 64;
const ENTRY: usize = 32;
/// Files decoded in parallel at a time: the build holds only these in memory.
const CHUNK: usize = 256;

/// One file of the store: where its pixels are and their checksum, or (height 0) the
/// reason it could not be decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Entry {
    /// In the pixels (an image) or in the reasons (a file that could not be decoded).
    offset: u64,
    height: u32,
    width: u32,
    /// The file's own width and height.
    source: (u32, u32),
    /// Bytes: 3 x height x width for an image, the reason's length otherwise.
    len: u32,
    crc: u32,
}

impl Entry {
    fn is_image(&self) -> bool {
        self.height > 0
    }

    fn bytes(&self) -> [u8; ENTRY] {
        let mut b = [0u8; ENTRY];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        for (i, v) in [self.height, self.width, self.source.0, self.source.1, self.len, self.crc].iter().enumerate() {
            b[8 + 4 * i..12 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    fn parse(b: &[u8]) -> Entry {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Entry {
            offset: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            height: u32_at(8),
            width: u32_at(12),
            source: (u32_at(16), u32_at(20)),
            len: u32_at(24),
            crc: u32_at(28),
        }
    }
}

/// The name of the store of these files (their sha256s, sorted and distinct) at `side`.
pub(crate) fn key(sha256s: &[&str], side: u32) -> String {
    let mut h = Sha256::new();
    h.update(b"runner decoded images\n");
    h.update(format!("decoder {DECODER_VERSION} side {side} max pixels {}\n", super::max_image_pixels()));
    for s in sha256s {
        h.update(s.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Where the pixels are.
enum Body {
    Memory(Vec<u8>),
    Disk { file: File, path: PathBuf, damaged: AtomicBool },
}

/// The decoded files of a dataset: one entry per distinct file, in sha256 order.
pub(crate) struct Pixels {
    key: String,
    side: u32,
    entries: Vec<Entry>,
    reasons: Vec<u8>,
    /// Each entry's file, to decode again an image whose stored pixels are damaged.
    sources: Vec<PathBuf>,
    body: Body,
}

/// How [`Pixels::open_or_build`] got its store, for run.log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Got {
    /// Found complete.
    Found,
    /// Built by this process.
    Built,
    /// Built by another process while this one waited.
    Waited,
    /// Found damaged (truncated, altered) and built again.
    Rebuilt,
}

impl Pixels {
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn side(&self) -> u32 {
        self.side
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The stored (height, width) of entry `e`.
    pub(crate) fn dims(&self, e: usize) -> (u32, u32) {
        (self.entries[e].height, self.entries[e].width)
    }

    /// The file's own (width, height).
    pub(crate) fn source_size(&self, e: usize) -> (u32, u32) {
        self.entries[e].source
    }

    /// Why entry `e` could not be decoded, if it could not.
    pub(crate) fn failure(&self, e: usize) -> Option<String> {
        let entry = self.entries[e];
        if entry.is_image() {
            return None;
        }
        let bytes = &self.reasons[entry.offset as usize..][..entry.len as usize];
        Some(String::from_utf8_lossy(bytes).into_owned())
    }

    /// Where the store is, when it is on disk.
    pub(crate) fn path(&self) -> Option<&Path> {
        match &self.body {
            Body::Disk { path, .. } => Some(path),
            Body::Memory(_) => None,
        }
    }

    /// Runs `f` on the CHW pixels of image `e`.
    pub(crate) fn with_image<T>(&self, e: usize, f: impl FnOnce(&[u8]) -> T) -> T {
        let entry = self.entries[e];
        debug_assert!(entry.is_image());
        match &self.body {
            Body::Memory(data) => f(&data[entry.offset as usize..][..entry.len as usize]),
            Body::Disk { file, path, damaged } => {
                let mut buf = vec![0u8; entry.len as usize];
                let read = file.read_exact_at(&mut buf, HEADER + entry.offset);
                if read.is_ok() && crc32c::crc32c(&buf) == entry.crc {
                    return f(&buf);
                }
                // Never read what the store damaged: the file decoded again gives the same bytes.
                if !damaged.swap(true, Ordering::Relaxed) {
                    let _ = std::fs::remove_file(path);
                    reporter::note(&format!(
                        "warning: the image store {} is damaged (image {e} fails its checksum): its images are \
                         decoded again from their files where needed, and the store is removed for the next run \
                         to rebuild",
                        path.display()
                    ));
                }
                match decode_file(&self.sources[e], self.side) {
                    Ok(d) if crc32c::crc32c(&d.chw) == entry.crc => f(&d.chw),
                    _ => panic!(
                        "image {} changed while the run was reading it, and the image store {} is damaged",
                        self.sources[e].display(),
                        path.display()
                    ),
                }
            }
        }
    }

    /// The files `sources` (one per entry, in sha256 order) decoded into memory; from the
    /// store at `dir` when one is there already.
    pub(crate) fn in_memory(key: &str, sources: Vec<PathBuf>, side: u32, dir: Option<&Path>) -> Result<Pixels> {
        if let Some(found) = dir.and_then(|d| Pixels::open(&d.join(format!("{key}.img")), key, side, &sources)) {
            let Body::Disk { file, path, .. } = &found.body else { unreachable!("opened from disk") };
            let bytes = found.entries.iter().filter(|e| e.is_image()).map(|e| e.offset + e.len as u64).max();
            let mut data = vec![0u8; bytes.unwrap_or(0) as usize];
            file.read_exact_at(&mut data, HEADER).with_context(|| format!("cannot read {}", path.display()))?;
            let whole = found
                .entries
                .iter()
                .filter(|e| e.is_image())
                .all(|e| crc32c::crc32c(&data[e.offset as usize..][..e.len as usize]) == e.crc);
            if whole {
                crate::sys::filestore::touch(path);
                return Ok(Pixels { body: Body::Memory(data), ..found });
            }
        }
        let mut data: Vec<u8> = vec![];
        let mut builder = Builder::default();
        decode_each(&sources, side, |d| {
            // Memory the process may not have is an error to act on, not an abort.
            if let Ok(image) = &d
                && data.try_reserve(image.chw.len()).is_err()
            {
                bail!(
                    "data.store = \"memory\": the decoded images outgrow the memory this process may use \
                     ({} MiB held after {} of {} files); data.store = \"disk\" reads them from the image store",
                    data.len() >> 20,
                    builder.entries.len(),
                    sources.len()
                );
            }
            builder.add(d, &mut data)
        })?;
        Ok(Pixels {
            key: key.to_string(),
            side,
            entries: builder.entries,
            reasons: builder.reasons,
            sources,
            body: Body::Memory(data),
        })
    }

    /// The store of `sources` (one per entry, in sha256 order) in `dir`: opened when it is
    /// there and whole; otherwise built, under a lock, by this process or (while this one
    /// waits) another. The least recently used stores beyond `budget` bytes are removed.
    pub(crate) fn open_or_build(
        dir: &Path,
        key: &str,
        sources: Vec<PathBuf>,
        side: u32,
        budget: u64,
    ) -> Result<(Pixels, Got)> {
        let path = dir.join(format!("{key}.img"));
        if let Some(p) = Pixels::open(&path, key, side, &sources) {
            crate::sys::filestore::touch(&path);
            return Ok((p, Got::Found));
        }
        let locks = dir.join(".locks");
        std::fs::create_dir_all(&locks).with_context(|| format!("cannot create {}", locks.display()))?;
        let lock_path = locks.join(format!("{key}.lock"));
        let lock = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        let mut waited = false;
        if lock.try_lock().is_err() {
            reporter::note(&format!("waiting for another process to build the image store {}", path.display()));
            lock.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;
            waited = true;
        }
        if let Some(p) = Pixels::open(&path, key, side, &sources) {
            crate::sys::filestore::touch(&path);
            return Ok((p, if waited { Got::Waited } else { Got::Found }));
        }
        let damaged = path.exists();
        // Whatever is there under this name is damaged, and any temporary of it was left by
        // a builder that died: this process holds the lock.
        let _ = std::fs::remove_file(&path);
        remove_temporaries(dir, key);
        crate::sys::atomic::with_temp_path(&path, |tmp| write_store(tmp, key, &sources, side))?;
        crate::sys::filestore::evict(dir, budget, Some(&path));
        drop(lock);
        match Pixels::open(&path, key, side, &sources) {
            Some(p) => Ok((p, if damaged { Got::Rebuilt } else { Got::Built })),
            None => bail!("the image store {} just written does not read back", path.display()),
        }
    }

    /// The store at `path` if it is whole: its header names this key, side and number of
    /// files, its size is what the header says, and its index matches its checksum.
    fn open(path: &Path, key: &str, side: u32, sources: &[PathBuf]) -> Option<Pixels> {
        let file = File::open(path).ok()?;
        let size = file.metadata().ok()?.len();
        let mut header = [0u8; HEADER as usize];
        file.read_exact_at(&mut header, 0).ok()?;
        let u32_at = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
        let (count, data, reasons) = (u64_at(16), u64_at(24), u64_at(32));
        let ok = header[..8] == MAGIC
            && u32_at(8) == DECODER_VERSION
            && u32_at(12) == side
            && count == sources.len() as u64
            && header[40..56] == key_bytes(key);
        let index_at = HEADER.checked_add(data)?;
        let end = index_at.checked_add(count.checked_mul(ENTRY as u64)?)?.checked_add(reasons)?;
        if !ok || end != size {
            return None;
        }
        let mut meta = vec![0u8; (end - index_at) as usize];
        file.read_exact_at(&mut meta, index_at).ok()?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header[..56]), &meta);
        if crc != u32_at(56) {
            return None;
        }
        let (index, reasons) = meta.split_at(count as usize * ENTRY);
        let entries: Vec<Entry> = index.chunks_exact(ENTRY).map(Entry::parse).collect();
        let fits = |e: &Entry, within: u64| e.offset.checked_add(e.len as u64).is_some_and(|end| end <= within);
        let sound = entries.iter().all(|e| {
            if e.is_image() {
                e.len as u64 == 3 * e.height as u64 * e.width as u64 && fits(e, data)
            } else {
                fits(e, reasons.len() as u64)
            }
        });
        if !sound {
            return None;
        }
        Some(Pixels {
            key: key.to_string(),
            side,
            entries,
            reasons: reasons.to_vec(),
            sources: sources.to_vec(),
            body: Body::Disk { file, path: path.to_path_buf(), damaged: AtomicBool::new(false) },
        })
    }
}

fn key_bytes(key: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = key.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or(0);
    }
    out
}

/// The temporaries of store `key` that a killed builder left in `dir`.
fn remove_temporaries(dir: &Path, key: &str) {
    let prefix = format!(".{key}.img.tmp");
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The entries of a store being built, and how far its pixels and reasons go.
#[derive(Default)]
struct Builder {
    entries: Vec<Entry>,
    reasons: Vec<u8>,
    data: u64,
}

impl Builder {
    fn add(&mut self, decoded: std::result::Result<Decoded, BadImage>, out: &mut impl Write) -> Result<()> {
        match decoded {
            Ok(d) => {
                out.write_all(&d.chw)?;
                let len = d.chw.len() as u32;
                let (height, width) = (d.height, d.width);
                let crc = crc32c::crc32c(&d.chw);
                self.entries.push(Entry { offset: self.data, height, width, source: d.size, len, crc });
                self.data += len as u64;
            }
            Err(reason) => {
                let text = reason.to_string();
                let (offset, len) = (self.reasons.len() as u64, text.len() as u32);
                let crc = crc32c::crc32c(text.as_bytes());
                self.entries.push(Entry { offset, len, crc, ..Entry::default() });
                self.reasons.extend_from_slice(text.as_bytes());
            }
        }
        Ok(())
    }
}

/// Decodes `sources` in order, a chunk at a time in parallel, handing each result to `put`.
fn decode_each(
    sources: &[PathBuf],
    side: u32,
    mut put: impl FnMut(std::result::Result<Decoded, BadImage>) -> Result<()>,
) -> Result<()> {
    let bar = if sources.len() < 64 {
        ProgressBar::hidden()
    } else {
        reporter::bar(sources.len() as u64, reporter::Unit::Images, "decode")
    };
    for (k, chunk) in sources.chunks(CHUNK).enumerate() {
        let decoded: Vec<_> = chunk.par_iter().map(|p| decode_file(p, side)).collect();
        for d in decoded {
            put(d)?;
        }
        bar.inc(chunk.len() as u64);
        crate::sys::failpoint::hit(|| format!("image-store-chunk-{}", k + 1));
    }
    bar.finish_and_clear();
    Ok(())
}

/// Writes the store of `sources` to `path`: header last, once the rest is written.
fn write_store(path: &Path, key: &str, sources: &[PathBuf], side: u32) -> Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&[0u8; HEADER as usize])?;
    let mut builder = Builder::default();
    decode_each(sources, side, |d| builder.add(d, &mut out))?;
    let index: Vec<u8> = builder.entries.iter().flat_map(Entry::bytes).collect();
    out.write_all(&index)?;
    out.write_all(&builder.reasons)?;
    let file =
        out.into_inner().map_err(|e| e.into_error()).with_context(|| format!("cannot write {}", path.display()))?;
    let mut header = [0u8; HEADER as usize];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&DECODER_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&side.to_le_bytes());
    header[16..24].copy_from_slice(&(sources.len() as u64).to_le_bytes());
    header[24..32].copy_from_slice(&builder.data.to_le_bytes());
    header[32..40].copy_from_slice(&(builder.reasons.len() as u64).to_le_bytes());
    header[40..56].copy_from_slice(&key_bytes(key));
    let crc = crc32c::crc32c_append(crc32c::crc32c_append(crc32c::crc32c(&header[..56]), &index), &builder.reasons);
    header[56..60].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&header, 0).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The folder of the image store: `RUNNER_IMAGE_STORE` (a folder, or `off`), else
/// `<RUNNER_CACHE>/images`.
pub fn default_dir() -> Option<PathBuf> {
    crate::sys::filestore::dir_from_env(crate::sys::env::IMAGE_STORE, "images")
}

/// The image store's size budget in bytes (`RUNNER_IMAGE_STORE_MB`, default 100 GiB).
pub fn budget() -> u64 {
    crate::sys::filestore::budget_from_env(crate::sys::env::IMAGE_STORE_MB, 100 << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three images of other shapes and a file that is not one, sorted as a store's entries are.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = vec![];
        for (i, (w, h)) in [(40u32, 20u32), (20, 30), (24, 24)].iter().enumerate() {
            let path = dir.join(format!("{i}.png"));
            image::RgbImage::from_fn(*w, *h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, (i * 80) as u8]))
                .save(&path)
                .unwrap();
            out.push(path);
        }
        let bad = dir.join("3.jpg");
        std::fs::write(&bad, b"not an image").unwrap();
        out.push(bad);
        out
    }

    fn pixels_of(p: &Pixels) -> Vec<Option<Vec<u8>>> {
        (0..p.len()).map(|e| (p.failure(e).is_none()).then(|| p.with_image(e, |b| b.to_vec()))).collect()
    }

    #[test]
    fn a_store_reads_back_what_memory_holds_and_keeps_each_aspect() {
        let dir = tempfile::tempdir().unwrap();
        let sources = files(dir.path());
        let store = dir.path().join("store");
        let (disk, got) = Pixels::open_or_build(&store, "00ff", sources.clone(), 16, u64::MAX).unwrap();
        assert_eq!(got, Got::Built);
        let memory = Pixels::in_memory("00ff", sources.clone(), 16, None).unwrap();
        assert_eq!(pixels_of(&disk), pixels_of(&memory));
        // Shorter side 16, aspect kept: 40 x 20 -> 32 x 16 (w x h), 20 x 30 -> 16 x 24.
        assert_eq!((disk.dims(0), disk.dims(1), disk.dims(2)), ((16, 32), (24, 16), (16, 16)));
        assert_eq!(disk.source_size(1), (20, 30));
        assert_eq!(disk.failure(3).as_deref(), Some("not an image (unknown format)"));
        // A second open finds it; a memory load reads it instead of decoding.
        let (_, got) = Pixels::open_or_build(&store, "00ff", sources.clone(), 16, u64::MAX).unwrap();
        assert_eq!(got, Got::Found);
        let loaded = Pixels::in_memory("00ff", sources, 16, Some(&store)).unwrap();
        assert_eq!(pixels_of(&loaded), pixels_of(&memory));
        let names: Vec<String> =
            std::fs::read_dir(&store).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names.iter().filter(|n| !n.starts_with('.')).count(), 1, "{names:?}");
    }

    #[test]
    fn truncated_or_altered_stores_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let sources = files(dir.path());
        let store = dir.path().join("store");
        let (built, _) = Pixels::open_or_build(&store, "ab", sources.clone(), 16, u64::MAX).unwrap();
        let want = pixels_of(&built);
        let path = store.join("ab.img");
        let bytes = std::fs::read(&path).unwrap();

        // Cut short: rebuilt.
        std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
        let (p, got) = Pixels::open_or_build(&store, "ab", sources.clone(), 16, u64::MAX).unwrap();
        assert_eq!((got, pixels_of(&p)), (Got::Rebuilt, want.clone()));

        // An altered index: rebuilt.
        let mut altered = bytes.clone();
        let index_at = bytes.len() - 4 * ENTRY - "not an image (unknown format)".len();
        altered[index_at + 8] ^= 1;
        std::fs::write(&path, &altered).unwrap();
        let (p, got) = Pixels::open_or_build(&store, "ab", sources.clone(), 16, u64::MAX).unwrap();
        assert_eq!((got, pixels_of(&p)), (Got::Rebuilt, want.clone()));

        // Altered pixels: the index is whole, so the store opens; the damaged image is decoded
        // again from its file, and the store is removed for the next run to rebuild.
        let mut altered = bytes.clone();
        altered[HEADER as usize + 5] ^= 0xff;
        std::fs::write(&path, &altered).unwrap();
        let (p, got) = Pixels::open_or_build(&store, "ab", sources.clone(), 16, u64::MAX).unwrap();
        assert_eq!(got, Got::Found);
        assert_eq!(pixels_of(&p), want);
        assert!(!path.exists(), "a damaged store is removed");

        // Another key, side or file count is another store.
        std::fs::write(&path, &bytes).unwrap();
        assert!(Pixels::open(&path, "ab", 16, &sources).is_some());
        assert!(Pixels::open(&path, "ac", 16, &sources).is_none());
        assert!(Pixels::open(&path, "ab", 17, &sources).is_none());
        assert!(Pixels::open(&path, "ab", 16, &sources[..3]).is_none());
    }

    #[test]
    fn builders_of_one_store_wait_for_each_other_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let sources = files(dir.path());
        let store = dir.path().join("store");
        std::fs::create_dir_all(&store).unwrap();
        // What a builder killed halfway leaves.
        std::fs::write(store.join(".cd.img.tmpXYZ"), b"half").unwrap();
        let got: Vec<Got> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| Pixels::open_or_build(&store, "cd", sources.clone(), 16, u64::MAX).unwrap().1))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(got.iter().filter(|g| **g == Got::Built).count(), 1, "{got:?}");
        let names: Vec<String> =
            std::fs::read_dir(&store).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, [".locks", "cd.img"]);
    }
}
