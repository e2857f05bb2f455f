//! The images of a split, read as batches from the decoded-image store (or its copy in
//! memory): their center crops, or the whole images for a random resized crop. A reader
//! thread reads the next batches while the current one trains.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use tch::Tensor;

use super::store::Pixels;

/// Batches read ahead of the one being used.
const AHEAD: usize = 2;

/// The images of a split: entries of a store.
#[derive(Clone)]
pub struct Images {
    pub(super) pixels: Arc<Pixels>,
    pub(super) ids: Arc<[u32]>,
}

/// What a batch reads of its images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// The center crops of this side: the eval pipeline's Resize + CenterCrop.
    Crops(i64),
    /// The whole stored images (shorter side the stored side, aspect kept).
    Whole,
}

/// A batch as read: uint8 [B, 3, S, S] crops, or B whole images [3, H, W].
pub(crate) enum Fetched {
    Crops(Tensor),
    Whole(Vec<Tensor>),
}

impl Images {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The stored side: every image's shorter side.
    pub fn side(&self) -> u32 {
        self.pixels.side()
    }

    /// The stored (height, width) of image `i`.
    pub fn dims(&self, i: usize) -> (u32, u32) {
        self.pixels.dims(self.ids[i] as usize)
    }

    /// What these images' pixels are, for keys of what is computed from them: the
    /// store's name (a hash of the files' contents and the decoding) and the entries.
    pub(crate) fn identity(&self) -> Vec<u8> {
        let mut out = self.pixels.key().as_bytes().to_vec();
        out.extend(self.ids.iter().flat_map(|e| e.to_le_bytes()));
        out
    }

    /// The center crops of `size` of images `idx`: uint8 [B, 3, size, size]. The offsets are
    /// those of the stored square of the shorter side (centered, rounded down) and of the
    /// crop within it (likewise): torchvision's Resize + CenterCrop up to its rounding of odd
    /// margins.
    pub(crate) fn crops(&self, idx: &[i64], size: i64) -> Tensor {
        let s = size as usize;
        let side = self.side() as usize;
        let mut out = Vec::with_capacity(idx.len() * 3 * s * s);
        for &i in idx {
            let e = self.ids[i as usize] as usize;
            let (h, w) = self.pixels.dims(e);
            let (h, w) = (h as usize, w as usize);
            let (y0, x0) = ((h - side) / 2 + (side - s) / 2, (w - side) / 2 + (side - s) / 2);
            self.pixels.with_image(e, |chw| super::crop_chw(chw, (h, w), (y0, x0), s, &mut out));
        }
        Tensor::from_slice(&out).view([idx.len() as i64, 3, size, size])
    }

    /// The whole stored images `idx`, each uint8 [3, H, W].
    pub(crate) fn whole(&self, idx: &[i64]) -> Vec<Tensor> {
        idx.iter()
            .map(|&i| {
                let e = self.ids[i as usize] as usize;
                let (h, w) = self.pixels.dims(e);
                self.pixels.with_image(e, |chw| Tensor::from_slice(chw).view([3, h as i64, w as i64]))
            })
            .collect()
    }

    /// Images `idx` as `read` says.
    pub(crate) fn fetch(&self, idx: &[i64], read: Read) -> Fetched {
        match read {
            Read::Crops(size) => Fetched::Crops(self.crops(idx, size)),
            Read::Whole => Fetched::Whole(self.whole(idx)),
        }
    }

    /// The batches `batches` (image indices), read in order by a thread of their own a few
    /// batches ahead of their use.
    pub(crate) fn prefetch(&self, batches: Vec<Vec<i64>>, read: Read) -> Prefetch {
        let (tx, rx) = sync_channel(AHEAD);
        let images = self.clone();
        let thread = std::thread::Builder::new()
            .name("runner-read".into())
            .spawn(move || {
                for b in batches {
                    if tx.send(images.fetch(&b, read)).is_err() {
                        break;
                    }
                }
            })
            .expect("a thread starts");
        Prefetch { rx: Some(rx), thread: Some(thread) }
    }
}

/// Consecutive batches of `batch` over `n` images: 0.., batch.., ...
pub(crate) fn in_order(n: usize, batch: usize) -> Vec<Vec<i64>> {
    (0..n as i64).collect::<Vec<_>>().chunks(batch.max(1)).map(<[i64]>::to_vec).collect()
}

/// Batches being read ahead by their thread (see [`Images::prefetch`]).
pub(crate) struct Prefetch {
    rx: Option<Receiver<Fetched>>,
    thread: Option<JoinHandle<()>>,
}

impl Iterator for Prefetch {
    type Item = Fetched;

    fn next(&mut self) -> Option<Fetched> {
        let got = self.rx.as_ref()?.recv().ok();
        if got.is_none() {
            // The reader ended: all read, or it failed (its panic goes on here).
            self.rx = None;
            if let Some(Err(panic)) = self.thread.take().map(JoinHandle::join) {
                std::panic::resume_unwind(panic);
            }
        }
        got
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Closing the channel stops the reader at its next batch.
        self.rx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
