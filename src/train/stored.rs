//! Cached features as rows: held in memory (on the device), or read per batch from their
//! file in the feature store, so that a cache larger than memory, or one of a dataset too
//! large to hold, costs no memory. A store file is safetensors (`train`, `val`, f32 in the
//! standard layout, and `sha256`, the digest of both), written as the cache pass computes
//! it, a batch at a time, and renamed into place when whole; opening one reads it through
//! once and checks its digest, so a truncated or altered file is never used.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

/// A cache's values for one split, one row per image.
pub(super) enum Rows {
    Memory(Tensor),
    Stored(StoredRows),
}

impl Rows {
    pub(super) fn len(&self) -> i64 {
        match self {
            Rows::Memory(t) => t.size()[0],
            Rows::Stored(s) => s.rows,
        }
    }

    /// The bytes of all rows (float32).
    pub(super) fn bytes(&self) -> u64 {
        match self {
            Rows::Memory(t) => t.numel() as u64 * 4,
            Rows::Stored(s) => s.rows as u64 * s.row_bytes(),
        }
    }

    /// Where the rows come from: the device for rows in memory, the CPU for stored ones.
    pub(super) fn device(&self) -> Device {
        match self {
            Rows::Memory(t) => t.device(),
            Rows::Stored(_) => Device::Cpu,
        }
    }

    /// Rows `idx` (int64 on [`Self::device`]), in the standard layout.
    pub(super) fn select(&self, idx: &Tensor) -> Tensor {
        match self {
            Rows::Memory(t) => t.index_select(0, idx),
            Rows::Stored(s) => s.select(&Vec::<i64>::try_from(idx).expect("int64 row indices")),
        }
    }

    /// Rows `start..start + len`.
    pub(super) fn narrow(&self, start: i64, len: i64) -> Tensor {
        match self {
            Rows::Memory(t) => t.narrow(0, start, len),
            Rows::Stored(s) => s.range(start, len),
        }
    }

    /// Every row, in memory.
    pub(super) fn all(&self) -> Tensor {
        match self {
            Rows::Memory(t) => t.shallow_clone(),
            Rows::Stored(s) => s.range(0, s.rows),
        }
    }
}

/// Rows of a store file, read with positioned reads.
pub(super) struct StoredRows {
    file: File,
    /// The offset of the first row in the file.
    at: u64,
    rows: i64,
    /// One row's shape.
    shape: Vec<i64>,
}

impl StoredRows {
    fn row_bytes(&self) -> u64 {
        4 * self.shape.iter().product::<i64>() as u64
    }

    fn tensor(&self, bytes: &[u8], n: usize) -> Tensor {
        let mut size = vec![n as i64];
        size.extend(&self.shape);
        Tensor::from_data_size(bytes, &size, Kind::Float)
    }

    fn read(&self, buf: &mut [u8], offset: u64) {
        // The file was read through and checked when opened; a read failing now is the disk's.
        self.file.read_exact_at(buf, self.at + offset).expect("a feature-store file cannot be read");
    }

    fn select(&self, idx: &[i64]) -> Tensor {
        let rb = self.row_bytes();
        let mut buf = vec![0u8; rb as usize * idx.len()];
        for (chunk, &i) in buf.chunks_exact_mut(rb as usize).zip(idx) {
            self.read(chunk, i as u64 * rb);
        }
        self.tensor(&buf, idx.len())
    }

    fn range(&self, start: i64, len: i64) -> Tensor {
        let rb = self.row_bytes();
        let mut buf = vec![0u8; (rb * len as u64) as usize];
        self.read(&mut buf, start as u64 * rb);
        self.tensor(&buf, len as usize)
    }
}

/// What a store file's digest covers of one split: its shape, then its values.
fn shape_text(rows: i64, shape: &[i64]) -> String {
    let mut all = vec![rows];
    all.extend(shape);
    format!("{all:?}")
}

/// The header of a store file of `n` (train, val) rows of `shape`; padded to 8 bytes.
fn header(n: (i64, i64), shape: &[i64]) -> Vec<u8> {
    let bytes = |rows: i64| 4 * rows as u64 * shape.iter().product::<i64>() as u64;
    let (train, val) = (bytes(n.0), bytes(n.1));
    let dims = |rows: i64| std::iter::once(rows).chain(shape.iter().copied()).collect::<Vec<_>>();
    let json = serde_json::json!({
        "sha256": { "dtype": "U8", "shape": [32], "data_offsets": [train + val, train + val + 32] },
        "train": { "dtype": "F32", "shape": dims(n.0), "data_offsets": [0, train] },
        "val": { "dtype": "F32", "shape": dims(n.1), "data_offsets": [train, train + val] },
    });
    let mut text = json.to_string().into_bytes();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out
}

/// A store file being written, batch by batch: the train rows, then the val rows.
pub(super) struct Writer {
    tmp: tempfile::NamedTempFile,
    out: BufWriter<File>,
    hash: Sha256,
    n: (i64, i64),
    shape: Vec<i64>,
    written: i64,
}

impl Writer {
    /// A writer of the file `path` of `n` (train, val) rows of `shape`.
    pub(super) fn create(path: &Path, n: (i64, i64), shape: &[i64]) -> Result<Writer> {
        let dir = path.parent().expect("in the store");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = crate::sys::atomic::temp_beside(path)?;
        let mut out = BufWriter::with_capacity(1 << 20, tmp.reopen()?);
        out.write_all(&header(n, shape))?;
        let mut hash = Sha256::new();
        hash.update(shape_text(n.0, shape).as_bytes());
        Ok(Writer { tmp, out, hash, n, shape: shape.to_vec(), written: 0 })
    }

    /// The next rows (any device and kind, any layout): float32 values in the standard layout.
    pub(super) fn put(&mut self, rows: &Tensor) -> Result<()> {
        let t = rows.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        let len = t.size()[0];
        if self.written < self.n.0 && self.written + len > self.n.0 {
            bail!("a batch across the train and val rows");
        }
        let values = Vec::<f32>::try_from(t.flatten(0, -1))?;
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.hash.update(&bytes);
        self.out.write_all(&bytes)?;
        self.written += len;
        if self.written == self.n.0 {
            self.hash.update(shape_text(self.n.1, &self.shape).as_bytes());
        }
        Ok(())
    }

    /// Writes the digest and moves the file into place at `path`.
    pub(super) fn finish(mut self, path: &Path) -> Result<()> {
        if self.written != self.n.0 + self.n.1 {
            bail!("{} rows written of {}", self.written, self.n.0 + self.n.1);
        }
        if self.n.0 == 0 {
            self.hash.update(shape_text(self.n.1, &self.shape).as_bytes());
        }
        self.out.write_all(&self.hash.finalize())?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        self.tmp.persist(path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// The train and val rows of the store file at `path`, if it is whole: its header is one
/// a writer writes, its size is what the header says, and its values give back its digest.
pub(super) fn open(path: &Path) -> Option<(StoredRows, StoredRows)> {
    let file = File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0).ok()?;
    let len = u64::from_le_bytes(len);
    if len > 1 << 20 || 8 + len > size {
        return None;
    }
    let mut text = vec![0u8; len as usize];
    file.read_exact_at(&mut text, 8).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let dims = |name: &str| -> Option<Vec<i64>> {
        let t = json.get(name)?;
        (t.get("dtype")?.as_str()? == "F32").then_some(())?;
        t.get("shape")?.as_array()?.iter().map(|d| d.as_i64().filter(|d| *d >= 0)).collect()
    };
    let (train, val) = (dims("train")?, dims("val")?);
    if train.len() < 2 || train[1..] != val[1..] {
        return None;
    }
    let shape = train[1..].to_vec();
    if header((train[0], val[0]), &shape) != [&(len.to_le_bytes())[..], &text].concat() {
        return None;
    }
    let row = 4 * shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64))?;
    let data = row.checked_mul((train[0] + val[0]) as u64)?;
    if size != 8 + len + data + 32 {
        return None;
    }
    // Read through once: the values must give back the digest.
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).ok()?);
    std::io::copy(&mut (&mut reader).take(8 + len), &mut std::io::sink()).ok()?;
    let mut hash = Sha256::new();
    hash.update(shape_text(train[0], &shape).as_bytes());
    std::io::copy(&mut (&mut reader).take(row * train[0] as u64), &mut hash).ok()?;
    hash.update(shape_text(val[0], &shape).as_bytes());
    std::io::copy(&mut (&mut reader).take(row * val[0] as u64), &mut hash).ok()?;
    let mut stored = [0u8; 32];
    reader.read_exact(&mut stored).ok()?;
    if hash.finalize()[..] != stored {
        return None;
    }
    let at = 8 + len;
    let val_file = file.try_clone().ok()?;
    Some((
        StoredRows { file, at, rows: train[0], shape: shape.clone() },
        StoredRows { file: val_file, at: at + row * train[0] as u64, rows: val[0], shape },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_reads_back_row_by_row_and_tch_reads_it_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.safetensors");
        let train = Tensor::randn([7, 3, 2, 2], (Kind::Float, Device::Cpu));
        let val = Tensor::randn([3, 3, 2, 2], (Kind::Float, Device::Cpu));
        let mut w = Writer::create(&path, (7, 3), &[3, 2, 2]).unwrap();
        for part in [train.narrow(0, 0, 4), train.narrow(0, 4, 3), val.shallow_clone()] {
            w.put(&part).unwrap();
        }
        w.finish(&path).unwrap();
        let (t, v) = open(&path).unwrap();
        let (t, v) = (Rows::Stored(t), Rows::Stored(v));
        assert_eq!((t.len(), v.len()), (7, 3));
        assert_eq!(t.all(), train);
        assert_eq!(v.narrow(1, 2), val.narrow(0, 1, 2));
        let idx = Tensor::from_slice(&[6i64, 0, 3]);
        assert_eq!(t.select(&idx), train.index_select(0, &idx));
        // A safetensors file as tch writes one: the memory path can read it.
        let read = Tensor::read_safetensors(&path).unwrap();
        let get = |n: &str| read.iter().find(|(k, _)| k == n).unwrap().1.shallow_clone();
        assert_eq!((get("train"), get("val")), (train, val));

        // One value altered, or the file cut short: not opened.
        let bytes = std::fs::read(&path).unwrap();
        let mut altered = bytes.clone();
        altered[bytes.len() - 40] ^= 1;
        std::fs::write(&path, &altered).unwrap();
        assert!(open(&path).is_none());
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(open(&path).is_none());
        std::fs::write(&path, &bytes).unwrap();
        assert!(open(&path).is_some());
    }
}
