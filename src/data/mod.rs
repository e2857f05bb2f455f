//! ImageFolder datasets: discovery, the train/val split, decoding once into
//! memory, and the per-batch transforms (torchvision's eval pipeline
//! Resize(size / 0.875) + CenterCrop(size) + Normalize, and train-time
//! augmentation on the decoded pixels).
//!
//! Each image is decoded and resized once, in parallel, and kept as uint8;
//! epochs only crop, flip and normalise. Files that cannot be decoded are
//! skipped and reported, never fatal.

pub mod archive;
pub(crate) mod augment;
pub(crate) mod folds;
mod images;
mod labels;
mod transform;
pub mod store;
pub mod synth;

pub use self::images::Images;
pub(crate) use self::images::{Fetched, Read, in_order};
use self::store::{Got, Pixels};
pub(crate) use self::transform::Transform;
pub use self::transform::{CropDraws, crop_box};
pub use crate::config::spec::StoreMode;

pub(crate) use self::labels::discover_table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fast_image_resize as fir;
use indicatif::{ParallelProgressIterator, ProgressBar};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tch::Tensor;

const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];
/// torchvision's eval pipeline resizes to size / 0.875 (256 for 224) before the center crop.
const CROP_RATIO: f64 = 0.875;

/// One image file and its class index.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub path: PathBuf,
    pub class: usize,
}

/// The files of a dataset, split, before decoding.
#[derive(Debug, Clone)]
pub struct FileSplit {
    /// The folder the files are under (manifest paths are relative to it).
    pub root: PathBuf,
    pub classes: Vec<String>,
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
    /// A held-out test split: a `test/` folder, or the third `data.split` fraction.
    pub test: Vec<Sample>,
    /// What the walk of the folders could not follow (dangling links, link loops,
    /// unreadable folders): reported with the files that cannot be decoded.
    pub unreachable: Vec<Skipped>,
}

/// One line of manifest.csv: a file that went into a run, and its content hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestRow {
    pub path: String,
    pub class: String,
    pub split: &'static str,
    pub sha256: String,
}

/// A file that was left out, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// The images of one split, read from the decoded-image store (or its copy in memory),
/// and their labels.
pub struct Split {
    pub images: Images,
    pub labels: Tensor,
    /// Each image's path as manifest.csv has it (relative to the data folder).
    pub paths: Vec<String>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Dataset {
    pub classes: Vec<String>,
    pub train: Split,
    pub val: Split,
    /// Empty when the data has no test split.
    pub test: Split,
    pub skipped: Vec<Skipped>,
    /// Original (width, height) of every decoded file.
    pub sizes: Vec<(u32, u32)>,
    /// Where the decoded images are and why, for run.log.
    pub store: String,
}

pub(super) fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Class folders of `root`, sorted by name, each with its image files sorted by path.
fn class_files(root: &Path, unreachable: &mut Vec<Skipped>) -> Result<BTreeMap<String, Vec<PathBuf>>> {
    let mut classes = BTreeMap::new();
    let entries = std::fs::read_dir(root).with_context(|| format!("cannot read data folder {}", root.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read data folder {}", root.display()))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !path.is_dir() || name.starts_with('.') {
            continue;
        }
        let mut files: Vec<PathBuf> = vec![];
        for e in walkdir::WalkDir::new(&path).follow_links(true) {
            match e {
                Ok(e) if e.file_type().is_file() && is_image(e.path()) => files.push(e.into_path()),
                Ok(_) => {}
                Err(err) => {
                    let at = path_text(err.path().unwrap_or(&path));
                    let reason = match err.loop_ancestor() {
                        Some(a) => format!("a link loop (back to {})", a.display()),
                        None => format!("unreachable: {}", err.io_error().map_or(err.to_string(), |e| e.to_string())),
                    };
                    unreachable.push(Skipped { path: at, reason });
                }
            }
        }
        files.sort();
        classes.insert(name, files);
    }
    Ok(classes)
}

/// Finds the classes and files under `root`: `train/` and `val/` (and
/// optionally `test/`) subfolders when they exist, else one class-per-folder
/// tree split by the `split` fractions ([train, val] or [train, val, test]),
/// stratified per class and seeded.
pub fn discover(root: &Path, split: &[f64], seed: u64) -> Result<FileSplit> {
    if !root.is_dir() {
        bail!(
            "data folder {} not found; {}",
            root.display(),
            crate::data::archive::missing_folder_hint(&root.to_string_lossy())
        );
    }
    let (train_dir, val_dir, test_dir) = (root.join("train"), root.join("val"), root.join("test"));
    if train_dir.is_dir() && val_dir.is_dir() {
        let mut unreachable = vec![];
        let train = class_files(&train_dir, &mut unreachable)?;
        let classes: Vec<String> = train.keys().cloned().collect();
        let flatten = |dir: &Path, m: BTreeMap<String, Vec<PathBuf>>| -> Result<Vec<Sample>> {
            let mut out = vec![];
            for (name, files) in m {
                let Some(class) = classes.iter().position(|c| *c == name) else {
                    bail!("class `{name}` is in {} but not in {}", dir.display(), train_dir.display());
                };
                out.extend(files.into_iter().map(|path| Sample { path, class }));
            }
            Ok(out)
        };
        let val = flatten(&val_dir, class_files(&val_dir, &mut unreachable)?)?;
        let test =
            if test_dir.is_dir() { flatten(&test_dir, class_files(&test_dir, &mut unreachable)?)? } else { vec![] };
        let out = FileSplit {
            root: root.to_path_buf(),
            train: flatten(&train_dir, train)?,
            val,
            test,
            classes: classes.clone(),
            unreachable,
        };
        check_nonempty(root, &out)?;
        return Ok(out);
    }
    let mut unreachable = vec![];
    let tree = class_files(root, &mut unreachable)?;
    let out = split_classes(root, tree, split, seed, unreachable);
    check_nonempty(root, &out)?;
    Ok(out)
}

/// One tree of classes (each with its files, sorted) split by the `split` fractions
/// ([train, val] or [train, val, test]), stratified per class and seeded.
pub(super) fn split_classes(
    root: &Path,
    tree: BTreeMap<String, Vec<PathBuf>>,
    split: &[f64],
    seed: u64,
    unreachable: Vec<Skipped>,
) -> FileSplit {
    let classes: Vec<String> = tree.keys().cloned().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut val, mut test) = (vec![], vec![], vec![]);
    for (class, (_, mut files)) in tree.into_iter().enumerate() {
        files.shuffle(&mut rng);
        let n = files.len();
        let take = |f: f64| if n >= 2 && f > 0.0 { ((n as f64 * f).round() as usize).max(1) } else { 0 };
        let n_val = take(split[1]).min(n.saturating_sub(1));
        let n_test = take(split.get(2).copied().unwrap_or(0.0)).min(n.saturating_sub(1 + n_val));
        for (i, path) in files.into_iter().enumerate() {
            let s = Sample { path, class };
            if i < n_val {
                val.push(s)
            } else if i < n_val + n_test {
                test.push(s)
            } else {
                train.push(s)
            }
        }
    }
    FileSplit { root: root.to_path_buf(), classes, train, val, test, unreachable }
}

pub(super) fn check_nonempty(root: &Path, fs: &FileSplit) -> Result<()> {
    if fs.classes.is_empty() || fs.train.is_empty() {
        bail!(
            "no images found in {}: expected one folder per class holding .jpg/.jpeg/.png files \
             (optionally under train/ and val/)",
            root.display()
        );
    }
    if fs.classes.len() < 2 {
        bail!("{} holds only one class ({}); classification needs at least 2", root.display(), fs.classes[0]);
    }
    if fs.val.is_empty() {
        bail!("no validation images in {}: add images, or a val/ folder", root.display());
    }
    Ok(())
}

/// Side of the stored square: the eval resize for `image_size`.
pub fn resize_side(image_size: u32) -> u32 {
    (image_size as f64 / CROP_RATIO).round() as u32
}

/// A decoded file: its CHW uint8 pixels at the stored size (shorter side `side`, aspect
/// kept) and its own size.
pub(crate) struct Decoded {
    pub chw: Vec<u8>,
    pub height: u32,
    pub width: u32,
    /// The file's (width, height).
    pub size: (u32, u32),
}

/// Decodes one file (any mode: grayscale, palette, RGBA, 16-bit and CMYK become
/// RGB), resizes its shorter side to `side` (antialiased bilinear, as PIL and
/// torchvision do) and center-crops it square: [3, side, side] CHW bytes.
pub fn decode(path: &Path, side: u32) -> std::result::Result<Vec<u8>, BadImage> {
    let d = decode_file(path, side)?;
    let (y0, x0) = (((d.height - side) / 2) as usize, ((d.width - side) / 2) as usize);
    let mut out = Vec::with_capacity(3 * (side * side) as usize);
    crop_chw(&d.chw, (d.height as usize, d.width as usize), (y0, x0), side as usize, &mut out);
    Ok(out)
}

/// Appends to `out` the square of `size` at (`y0`, `x0`) of a CHW image of (`height`, `width`).
pub(super) fn crop_chw(
    chw: &[u8],
    (height, width): (usize, usize),
    (y0, x0): (usize, usize),
    size: usize,
    out: &mut Vec<u8>,
) {
    for c in 0..3 {
        let plane = &chw[c * height * width..][..height * width];
        for y in y0..y0 + size {
            out.extend_from_slice(&plane[y * width + x0..][..size]);
        }
    }
}

/// Whether a JPEG ends before its image does: no EOI marker (FF D9) after the
/// last start-of-scan (FF DA). Entropy-coded data cannot hold either marker, and
/// an embedded thumbnail's markers come before the main image's scans.
fn jpeg_truncated(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        None => true,
        Some(i) => !bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]),
    }
}

/// Why an image file was skipped (the reason skipped.csv records).
#[derive(Debug, thiserror::Error)]
pub enum BadImage {
    #[error("unreadable: {0}")]
    Unreadable(#[from] std::io::Error),
    #[error("empty file")]
    Empty,
    #[error("not an image (unknown format)")]
    UnknownFormat,
    #[error("corrupt or truncated Jpeg: no end-of-image marker after the last scan")]
    TruncatedJpeg,
    #[error("corrupt or truncated {format:?}: {source}")]
    Corrupt { format: image::ImageFormat, source: image::ImageError },
    #[error("image has no pixels")]
    NoPixels,
    #[error("image of {width} x {height} pixels is over the limit of {limit} pixels (RUNNER_MAX_IMAGE_PIXELS)")]
    TooLarge { width: u32, height: u32, limit: u64 },
    #[error("cannot resize: {0}")]
    Resize(String),
}

/// [`crate::sys::env::MAX_IMAGE_PIXELS`], else 89,478,485 (PIL's `Image.MAX_IMAGE_PIXELS`).
/// Read once per process: it is asked for every image decoded.
fn max_image_pixels() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| crate::sys::env::limit(crate::sys::env::MAX_IMAGE_PIXELS, 89_478_485))
}

pub(crate) fn decode_file(path: &Path, side: u32) -> std::result::Result<Decoded, BadImage> {
    let bytes = std::fs::read(path)?;
    if bytes.is_empty() {
        return Err(BadImage::Empty);
    }
    let format = image::guess_format(&bytes).map_err(|_| BadImage::UnknownFormat)?;
    // The JPEG decoder fills a cut-off scan with grey rather than failing, as PIL does.
    if format == image::ImageFormat::Jpeg && jpeg_truncated(&bytes) {
        return Err(BadImage::TruncatedJpeg);
    }
    let reader = || image::ImageReader::with_format(std::io::Cursor::new(&bytes), format);
    // The header alone says how large the image is: a decompression bomb is refused before decoding.
    let (width, height) = reader().into_dimensions().map_err(|source| BadImage::Corrupt { format, source })?;
    let limit = max_image_pixels();
    if u64::from(width) * u64::from(height) > limit {
        return Err(BadImage::TooLarge { width, height, limit });
    }
    let mut limits = image::Limits::no_limits();
    // 16-bit RGBA is 8 bytes a pixel; the decoder's own buffers stay within the same bound.
    limits.max_alloc = Some(limit.saturating_mul(8).max(64 << 20));
    let mut reader = reader();
    reader.limits(limits);
    let img = reader.decode().map_err(|source| BadImage::Corrupt { format, source })?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(BadImage::NoPixels);
    }
    let scale = side as f64 / w.min(h) as f64;
    let (nw, nh) = (((w as f64 * scale).round() as u32).max(side), ((h as f64 * scale).round() as u32).max(side));
    let rgb = img.into_rgb8();
    let src = fir::images::Image::from_vec_u8(w, h, rgb.into_raw(), fir::PixelType::U8x3)
        .map_err(|e| BadImage::Resize(e.to_string()))?;
    // The whole image, its shorter side to `side`: torchvision's Resize(side).
    let mut dst = fir::images::Image::new(nw, nh, fir::PixelType::U8x3);
    // Bilinear convolution with a support scaled to the reduction: PIL's antialiased BILINEAR.
    let options = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear));
    fir::Resizer::new().resize(&src, &mut dst, &options).map_err(|e| BadImage::Resize(e.to_string()))?;
    let hwc = dst.buffer();
    let plane = (nw * nh) as usize;
    let mut chw = vec![0u8; 3 * plane];
    let (r, rest) = chw.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, p) in hwc.chunks_exact(3).enumerate() {
        r[i] = p[0];
        g[i] = p[1];
        b[i] = p[2];
    }
    Ok(Decoded { chw, height: nh, width: nw, size: (w, h) })
}

/// Decodes a discovered dataset (`manifest`: its rows, in the files' split order, give each
/// file's sha256), or reads it from the decoded-image store as `store` says. With
/// `strict`, any file that cannot be decoded is an error instead of a skip.
pub fn load(
    files: &FileSplit,
    manifest: &[ManifestRow],
    image_size: u32,
    strict: bool,
    store: StoreMode,
) -> Result<Dataset> {
    let side = resize_side(image_size);
    let splits = [&files.train, &files.val, &files.test];
    if manifest.len() != splits.iter().map(|s| s.len()).sum::<usize>() {
        bail!("the manifest has {} rows for {} files", manifest.len(), splits.iter().map(|s| s.len()).sum::<usize>());
    }
    // One entry per distinct content, in sha256 order: any split of these files reads the same store.
    let samples = splits.iter().flat_map(|s| s.iter());
    let mut distinct: Vec<(&str, &Path)> =
        manifest.iter().zip(samples).map(|(row, s)| (row.sha256.as_str(), s.path.as_path())).collect();
    distinct.sort_by(|a, b| a.0.cmp(b.0));
    distinct.dedup_by(|a, b| a.0 == b.0);
    let key = store::key(&distinct.iter().map(|d| d.0).collect::<Vec<_>>(), side);
    let sources: Vec<PathBuf> = distinct.iter().map(|d| d.1.to_path_buf()).collect();
    let (pixels, note) = pixels(store, &key, sources, side)?;
    let pixels = std::sync::Arc::new(pixels);
    let entry = |sha: &str| distinct.binary_search_by(|d| d.0.cmp(sha)).expect("every file has an entry");

    let (mut skipped, mut sizes) = (files.unreachable.clone(), vec![]);
    let mut rows = manifest.iter();
    let mut split_of = |samples: &[Sample]| -> Split {
        let (mut ids, mut labels, mut paths) = (vec![], vec![], vec![]);
        for (sample, row) in samples.iter().zip(rows.by_ref()) {
            let e = entry(&row.sha256);
            match pixels.failure(e) {
                Some(reason) => skipped.push(Skipped { path: path_text(&sample.path), reason }),
                None => {
                    ids.push(e as u32);
                    labels.push(sample.class as i64);
                    paths.push(row.path.clone());
                    sizes.push(pixels.source_size(e));
                }
            }
        }
        let images = Images { pixels: pixels.clone(), ids: ids.into() };
        Split { images, labels: Tensor::from_slice(&labels), paths }
    };
    let (train, val, test) = (split_of(&files.train), split_of(&files.val), split_of(&files.test));
    let dataset = Dataset { classes: files.classes.clone(), train, val, test, skipped, sizes, store: note };
    check_usable(files, &dataset, strict)?;
    Ok(dataset)
}

/// The decoded images of `sources` as `mode` says, and run.log's line on where they are
/// and why.
fn pixels(mode: StoreMode, key: &str, sources: Vec<PathBuf>, side: u32) -> Result<(Pixels, String)> {
    let dir = store::default_dir();
    let memory = |sources: Vec<PathBuf>, why: String| -> Result<(Pixels, String)> {
        let p = Pixels::in_memory(key, sources, side, dir.as_deref())?;
        Ok((p, format!("images: decoded images held in memory ({why})")))
    };
    let Some(dir) = dir.as_deref() else {
        return match mode {
            StoreMode::Disk => bail!("data.store = \"disk\" needs the image store, but RUNNER_IMAGE_STORE=off"),
            _ => memory(sources, format!("data.store = \"{}\", RUNNER_IMAGE_STORE=off", mode.name())),
        };
    };
    if mode == StoreMode::Memory {
        return memory(sources, "data.store = \"memory\"".into());
    }
    match Pixels::open_or_build(dir, key, sources.clone(), side, store::budget()) {
        Ok((p, got)) => {
            let how = match got {
                Got::Found => "built by an earlier run",
                Got::Built => "built by this run",
                Got::Waited => "built by another process while this one waited",
                Got::Rebuilt => "rebuilt by this run: the stored one was damaged",
            };
            let path = p.path().map(|p| p.display().to_string()).unwrap_or_default();
            Ok((
                p,
                format!("images: read per batch from the image store {path} ({how}; data.store = \"{}\")", mode.name()),
            ))
        }
        Err(e) if mode == StoreMode::Auto => memory(sources, format!("the image store cannot be used: {e:#}")),
        Err(e) => Err(e),
    }
}

/// Refuses a dataset a run cannot use: unusable files under `data.strict`, a class
/// without a usable training image, no usable validation image.
fn check_usable(files: &FileSplit, dataset: &Dataset, strict: bool) -> Result<()> {
    if strict && !dataset.skipped.is_empty() {
        let first: Vec<String> = dataset.skipped.iter().take(3).map(|s| format!("{} ({})", s.path, s.reason)).collect();
        bail!(
            "data.strict is set and {} files cannot be used: {}{}",
            dataset.skipped.len(),
            first.join("; "),
            if dataset.skipped.len() > 3 { "; ..." } else { "" }
        );
    }
    let counts = dataset.train.labels.bincount::<Tensor>(None, files.classes.len() as i64);
    let counts = Vec::<i64>::try_from(&counts).unwrap_or_default();
    if let Some(c) = counts.iter().position(|n| *n == 0) {
        bail!(
            "class `{}` has no usable training image ({} files skipped in all)",
            files.classes[c],
            dataset.skipped.len()
        );
    }
    if dataset.val.is_empty() {
        bail!("no usable validation image ({} files skipped)", dataset.skipped.len());
    }
    Ok(())
}

/// A bar over `len` files: none for a few (they take no time).
fn progress(len: usize, what: &str) -> ProgressBar {
    if len < 64 {
        return ProgressBar::hidden();
    }
    crate::sys::reporter::bar(len as u64, crate::sys::reporter::Unit::Images, what)
}

/// Every file of a discovered dataset with its sha256 (hashed in parallel), in split order.
pub fn manifest(files: &FileSplit) -> Result<Vec<ManifestRow>> {
    let all: Vec<(&'static str, &Sample)> = [("train", &files.train), ("val", &files.val), ("test", &files.test)]
        .into_iter()
        .flat_map(|(what, samples)| samples.iter().map(move |s| (what, s)))
        .collect();
    let bar = progress(all.len(), "hash");
    let rows = all
        .par_iter()
        .progress_with(bar.clone())
        .map(|(split, sample)| -> Result<ManifestRow> {
            let mut f =
                std::fs::File::open(&sample.path).with_context(|| format!("cannot read {}", sample.path.display()))?;
            let mut h = Sha256::new();
            std::io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", sample.path.display()))?;
            let rel = sample.path.strip_prefix(&files.root).unwrap_or(&sample.path);
            Ok(ManifestRow {
                path: path_text(rel),
                class: files.classes[sample.class].clone(),
                split,
                sha256: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
            })
        })
        .collect();
    bar.finish_and_clear();
    rows
}

/// A path as text for manifest.csv and skipped.csv: as it is when it is UTF-8, its other
/// bytes as `%XX` otherwise (and `%` itself then as `%25`), so that two file names never
/// read the same.
pub(crate) fn path_text(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    if let Ok(s) = std::str::from_utf8(bytes) {
        return s.to_string();
    }
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(&chunk.valid().replace('%', "%25"));
        for b in chunk.invalid() {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// manifest.csv: what the run was trained and evaluated on. Formatted here by hand, not
/// by a CSV library: its bytes are hashed into the run id, so they must never change.
pub(crate) fn manifest_csv(rows: &[ManifestRow]) -> String {
    let mut csv = String::from("path,class,split,sha256\n");
    for r in rows {
        csv.push_str(&format!("{},{},{},{}\n", csv_field(&r.path), csv_field(&r.class), r.split, r.sha256));
    }
    csv
}

/// Quotes a CSV field when it needs it.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::touch_tree;

    #[test]
    fn non_utf8_names_stay_distinct_as_text() {
        use std::os::unix::ffi::OsStrExt;
        let a = Path::new(std::ffi::OsStr::from_bytes(b"cats/\xff.png"));
        let b = Path::new(std::ffi::OsStr::from_bytes(b"cats/\xfe.png"));
        assert_eq!(path_text(a), "cats/%FF.png");
        assert_ne!(path_text(a), path_text(b));
        assert_eq!(path_text(Path::new("cats/100%.png")), "cats/100%.png");
        assert_eq!(path_text(Path::new(std::ffi::OsStr::from_bytes(b"100%\xff"))), "100%25%FF");
    }

    #[test]
    fn split_is_stratified_seeded_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        touch_tree(dir.path(), &[("b", 10), ("a", 20)]);
        let s = discover(dir.path(), &[0.8, 0.2], 7).unwrap();
        assert_eq!(s.classes, vec!["a", "b"]);
        assert_eq!(s.val.iter().filter(|x| x.class == 0).count(), 4);
        assert_eq!(s.val.iter().filter(|x| x.class == 1).count(), 2);
        assert_eq!(s.train.len() + s.val.len(), 30);
        let again = discover(dir.path(), &[0.8, 0.2], 7).unwrap();
        assert_eq!(s.val, again.val);
        let other = discover(dir.path(), &[0.8, 0.2], 8).unwrap();
        assert_ne!(s.val, other.val);
    }

    #[test]
    fn empty_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cats")).unwrap();
        let err = discover(dir.path(), &[0.8, 0.2], 0).unwrap_err().to_string();
        assert!(err.starts_with("no images found in"), "{err}");
    }

    #[test]
    fn broken_files_are_skipped_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        for class in ["a", "b"] {
            for split in ["train", "val"] {
                std::fs::create_dir_all(dir.path().join(split).join(class)).unwrap();
            }
            let good = dir.path().join("train").join(class).join("good.png");
            image::RgbImage::from_pixel(40, 20, image::Rgb([10, 200, 30])).save(&good).unwrap();
            let square = dir.path().join("val").join(class).join("sq.png");
            image::RgbImage::from_pixel(20, 20, image::Rgb([1, 2, 3])).save(square).unwrap();
        }
        std::fs::write(dir.path().join("train/a/empty.jpg"), b"").unwrap();
        std::fs::write(dir.path().join("train/a/text.jpg"), b"hello").unwrap();
        let files = discover(dir.path(), &[0.5, 0.5], 0).unwrap();
        let rows = manifest(&files).unwrap();
        let data = load(&files, &rows, 14, false, StoreMode::Memory).unwrap();
        assert_eq!(data.train.len() + data.val.len(), 4);
        let mut reasons: Vec<(String, String)> =
            data.skipped.iter().map(|s| (s.path.clone(), s.reason.clone())).collect();
        reasons.sort();
        let root = dir.path().display();
        assert_eq!(
            reasons,
            [
                (format!("{root}/train/a/empty.jpg"), "empty file".to_string()),
                (format!("{root}/train/a/text.jpg"), "not an image (unknown format)".to_string())
            ]
        );
        // Side 16 for 14 px: the 40 x 20 image is stored at 32 x 16; its center crop is green.
        let all = [&data.train, &data.val];
        let (split, i) = all
            .iter()
            .flat_map(|s| (0..s.len()).map(move |i| (*s, i)))
            .find(|(s, i)| s.images.dims(*i) == (16, 32))
            .expect("the wide image");
        let crop = split.images.crops(&[i as i64], 14);
        assert_eq!(crop.size(), vec![1, 3, 14, 14]);
        assert_eq!(i64::try_from(crop.get(0).get(1).get(7).get(7)).unwrap(), 200);
        let mut sizes = data.sizes.clone();
        sizes.sort();
        assert_eq!(sizes, vec![(20, 20), (20, 20), (40, 20), (40, 20)]);
    }

    #[test]
    fn crops_are_the_old_stored_squares_center_crops() {
        // Before the store kept each image's aspect, an image was kept as the center square of
        // its shorter side and cropped again: a crop of the whole image at the sum of both offsets.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.png");
        image::RgbImage::from_fn(61, 37, |x, y| image::Rgb([(x * 4) as u8, (y * 6) as u8, ((x + y) * 2) as u8]))
            .save(&path)
            .unwrap();
        let side = resize_side(20);
        let square = decode(&path, side).unwrap();
        let s = side as i64;
        let square = Tensor::from_slice(&square).view([1, 3, s, s]);
        let off = (s - 20) / 2;
        let old = square.narrow(2, off, 20).narrow(3, off, 20);
        let files = FileSplit {
            root: dir.path().to_path_buf(),
            classes: vec!["a".into(), "b".into()],
            train: vec![Sample { path: path.clone(), class: 0 }, Sample { path: path.clone(), class: 1 }],
            val: vec![Sample { path: path.clone(), class: 1 }],
            test: vec![],
            unreachable: vec![],
        };
        let rows = manifest(&files).unwrap();
        let data = load(&files, &rows, 20, false, StoreMode::Memory).unwrap();
        assert_eq!(data.train.images.crops(&[0], 20), old);
    }
}
