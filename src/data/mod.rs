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
mod labels;
pub mod synth;

pub(crate) use self::labels::discover_table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fast_image_resize as fir;
use indicatif::{ParallelProgressIterator, ProgressBar};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::config::spec::Augment;

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

/// Decoded images of one split: uint8 [N, 3, R, R] with R = resize side, and labels.
pub struct Split {
    pub images: Tensor,
    pub labels: Tensor,
}

impl Split {
    fn empty(side: u32) -> Split {
        let s = side as i64;
        Split {
            images: Tensor::zeros([0, 3, s, s], (Kind::Uint8, Device::Cpu)),
            labels: Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
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

/// A decoded file: CHW uint8 pixels of the stored square and the original size.
pub(crate) struct Decoded {
    pub chw: Vec<u8>,
    pub size: (u32, u32),
}

/// Decodes one file (any mode: grayscale, palette, RGBA, 16-bit and CMYK become
/// RGB), resizes its shorter side to `side` (antialiased bilinear, as PIL and
/// torchvision do) and center-crops it square.
pub fn decode(path: &Path, side: u32) -> std::result::Result<Vec<u8>, BadImage> {
    decode_file(path, side).map(|d| d.chw)
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
    // Resize the whole image, then take the center square: torchvision's Resize + CenterCrop.
    let mut dst = fir::images::Image::new(nw, nh, fir::PixelType::U8x3);
    // Bilinear convolution with a support scaled to the reduction: PIL's antialiased BILINEAR.
    let options = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear));
    fir::Resizer::new().resize(&src, &mut dst, &options).map_err(|e| BadImage::Resize(e.to_string()))?;
    let hwc = dst.buffer();
    let (x0, y0) = (((nw - side) / 2) as usize, ((nh - side) / 2) as usize);
    let (s, row) = (side as usize, nw as usize * 3);
    let mut chw = vec![0u8; 3 * s * s];
    let (r, rest) = chw.split_at_mut(s * s);
    let (g, b) = rest.split_at_mut(s * s);
    for y in 0..s {
        let line = &hwc[(y0 + y) * row + x0 * 3..][..s * 3];
        for (x, p) in line.chunks_exact(3).enumerate() {
            r[y * s + x] = p[0];
            g[y * s + x] = p[1];
            b[y * s + x] = p[2];
        }
    }
    Ok(Decoded { chw, size: (w, h) })
}

/// A bar over `len` files: none for a few (they take no time).
fn progress(len: usize, what: &str) -> ProgressBar {
    if len < 64 {
        return ProgressBar::hidden();
    }
    crate::sys::reporter::bar(len as u64, crate::sys::reporter::Unit::Images, what)
}

/// What decoding one split gives: its tensors, the files left out, and sizes.
struct Loaded {
    split: Split,
    skipped: Vec<Skipped>,
    sizes: Vec<(u32, u32)>,
}

/// Decodes `samples` in parallel.
fn load_split(samples: &[Sample], side: u32, what: &'static str) -> Loaded {
    let bar = progress(samples.len(), what);
    let decoded: Vec<_> = samples.par_iter().progress_with(bar.clone()).map(|s| decode_file(&s.path, side)).collect();
    bar.finish_and_clear();
    let s = side as i64;
    let mut pixels = Vec::with_capacity(samples.len() * (3 * s * s) as usize);
    let mut out = Loaded { split: Split::empty(side), skipped: vec![], sizes: vec![] };
    let mut labels = vec![];
    for (sample, result) in samples.iter().zip(decoded) {
        match result {
            Ok(d) => {
                pixels.extend_from_slice(&d.chw);
                labels.push(sample.class as i64);
                out.sizes.push(d.size);
            }
            Err(reason) => out.skipped.push(Skipped { path: path_text(&sample.path), reason: reason.to_string() }),
        }
    }
    let n = labels.len() as i64;
    out.split = Split { images: Tensor::from_slice(&pixels).view([n, 3, s, s]), labels: Tensor::from_slice(&labels) };
    out
}

/// Decodes a discovered dataset into memory. With `strict`, any file that
/// cannot be decoded is an error instead of a skip.
pub fn load(files: &FileSplit, image_size: u32, strict: bool) -> Result<Dataset> {
    let side = resize_side(image_size);
    let mut dataset = Dataset {
        classes: files.classes.clone(),
        train: Split::empty(side),
        val: Split::empty(side),
        test: Split::empty(side),
        skipped: files.unreachable.clone(),
        sizes: vec![],
    };
    for (what, samples) in [("train", &files.train), ("val", &files.val), ("test", &files.test)] {
        let loaded = load_split(samples, side, what);
        dataset.skipped.extend(loaded.skipped);
        dataset.sizes.extend(loaded.sizes);
        match what {
            "train" => dataset.train = loaded.split,
            "val" => dataset.val = loaded.split,
            _ => dataset.test = loaded.split,
        }
    }
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
    Ok(dataset)
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

/// Turns stored uint8 images into a normalised float batch of `size` x `size`.
pub(crate) struct Transform {
    pub(crate) size: i64,
    pub(crate) augment: Vec<Augment>,
    pub(crate) mean: Tensor,
    pub(crate) std: Tensor,
}

impl Transform {
    pub fn new(size: u32, augment: &[Augment], mean: [f32; 3], std: [f32; 3]) -> Self {
        Transform {
            size: size as i64,
            augment: augment.to_vec(),
            mean: Tensor::from_slice(&mean).view([1, 3, 1, 1]),
            std: Tensor::from_slice(&std).view([1, 3, 1, 1]),
        }
    }

    /// Eval pipeline: center crop and normalise.
    pub(crate) fn eval(&self, images: &Tensor, device: Device) -> Tensor {
        let side = images.size()[2];
        let off = (side - self.size) / 2;
        let x = images.narrow(2, off, self.size).narrow(3, off, self.size);
        self.normalize(&x.to_device(device))
    }

    /// Train pipeline: the spec's augmentations (or the eval crop when none), then normalise.
    pub fn train(&self, images: &Tensor, rng: &mut ChaCha8Rng, device: Device) -> Tensor {
        if self.augment.is_empty() {
            return self.eval(images, device);
        }
        let n = images.size()[0];
        let side = images.size()[2];
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let img = images.get(i).to_device(device).to_kind(Kind::Float).unsqueeze(0);
            let mut x = if self.augment.contains(&Augment::RandomResizedCrop) {
                let (y0, x0, h, w) = random_resized_crop(side, side, rng);
                img.narrow(2, y0, h).narrow(3, x0, w).upsample_bilinear2d([self.size, self.size], false, None, None)
            } else {
                let off = (side - self.size) / 2;
                img.narrow(2, off, self.size).narrow(3, off, self.size)
            };
            if self.augment.contains(&Augment::Hflip) && rng.random_bool(0.5) {
                x = x.flip([3]);
            }
            x = self.policies(x, rng);
            out.push(x);
        }
        let x = self.normalize(&Tensor::cat(&out, 0));
        match self.augment.iter().find_map(|a| if let Augment::RandomErasing { p } = a { Some(*p) } else { None }) {
            Some(p) => {
                let erased: Vec<Tensor> = (0..n).map(|i| augment::random_erasing(&x.narrow(0, i, 1), p, rng)).collect();
                Tensor::cat(&erased, 0)
            }
            None => x,
        }
    }

    /// The colour and geometry policies of the list, in its order, on one image of uint8
    /// values (rounded first: a resized crop is not whole numbers).
    fn policies(&self, x: Tensor, rng: &mut ChaCha8Rng) -> Tensor {
        let mut x = x;
        let mut rounded = false;
        for a in &self.augment {
            let needs =
                matches!(a, Augment::TrivialAugment | Augment::RandAugment { .. } | Augment::ColorJitter { .. });
            if needs && !rounded {
                x = x.round();
                rounded = true;
            }
            x = match *a {
                Augment::TrivialAugment => augment::trivial_augment(&x, rng),
                Augment::RandAugment { n, m } => augment::rand_augment(&x, n, m, rng),
                Augment::ColorJitter { brightness, contrast, saturation, hue } => {
                    augment::color_jitter(&x, [brightness, contrast, saturation, hue], rng)
                }
                _ => x,
            };
        }
        x
    }

    fn normalize(&self, x: &Tensor) -> Tensor {
        let device = x.device();
        let on = |t: &Tensor| if t.device() == device { t.shallow_clone() } else { t.to_device(device) };
        (x.to_kind(Kind::Float) / 255.0 - on(&self.mean)) / on(&self.std)
    }
}

/// torchvision's RandomResizedCrop box (scale 0.08..1, ratio 3/4..4/3): (top, left, height, width).
fn random_resized_crop(height: i64, width: i64, rng: &mut ChaCha8Rng) -> (i64, i64, i64, i64) {
    let area = (height * width) as f64;
    let (lr0, lr1) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(0.08..1.0);
        let ratio = rng.random_range(lr0..lr1).exp();
        let w = (target * ratio).sqrt().round() as i64;
        let h = (target / ratio).sqrt().round() as i64;
        if 0 < w && w <= width && 0 < h && h <= height {
            return (rng.random_range(0..=height - h), rng.random_range(0..=width - w), h, w);
        }
    }
    (0, 0, height, width)
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
        let good = dir.path().join("good.png");
        image::RgbImage::from_pixel(40, 20, image::Rgb([10, 200, 30])).save(&good).unwrap();
        std::fs::write(dir.path().join("empty.jpg"), b"").unwrap();
        std::fs::write(dir.path().join("text.jpg"), b"hello").unwrap();
        let samples: Vec<Sample> = ["good.png", "empty.jpg", "text.jpg"]
            .iter()
            .map(|f| Sample { path: dir.path().join(f), class: 0 })
            .collect();
        let files = FileSplit {
            root: dir.path().to_path_buf(),
            classes: vec!["a".into()],
            train: samples.clone(),
            val: vec![],
            test: vec![],
            unreachable: vec![],
        };
        let loaded = load_split(&samples, 16, "train");
        assert_eq!(loaded.split.len(), 1);
        assert_eq!(loaded.split.images.size(), vec![1, 3, 16, 16]);
        assert_eq!(i64::try_from(loaded.split.images.get(0).get(1).get(8).get(8)).unwrap(), 200);
        assert_eq!(manifest(&files).unwrap()[0].path, "good.png");
        assert_eq!(loaded.sizes, vec![(40, 20)]);
        assert_eq!(loaded.skipped.len(), 2);
        assert_eq!(loaded.skipped[0].reason, "empty file");
        assert_eq!(loaded.skipped[1].reason, "not an image (unknown format)");
    }
}
