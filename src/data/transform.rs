//! The per-batch transforms of decoded images: torchvision's eval pipeline (center crop,
//! normalise) and the train-time augmentations, with torchvision's RandomResizedCrop box.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use super::augment;
use super::images::{Fetched, Read};
use crate::config::spec::Augment;

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

    /// What a training batch reads of its images: the whole images for a random resized
    /// crop, else the center crops.
    pub(crate) fn read(&self) -> Read {
        if self.augment.contains(&Augment::RandomResizedCrop) { Read::Whole } else { Read::Crops(self.size) }
    }

    /// Train pipeline on a batch read as [`Self::read`] says: the spec's augmentations (or
    /// the eval crop when none), then normalise.
    pub(crate) fn train(&self, pixels: Fetched, rng: &mut ChaCha8Rng, device: Device) -> Tensor {
        let images: Vec<Tensor> = match pixels {
            Fetched::Crops(crops) if self.augment.is_empty() => return self.eval(&crops, device),
            Fetched::Crops(crops) => (0..crops.size()[0]).map(|i| crops.get(i)).collect(),
            Fetched::Whole(images) => images,
        };
        let n = images.len() as i64;
        let mut out = Vec::with_capacity(images.len());
        for image in images {
            let img = image.to_device(device).to_kind(Kind::Float).unsqueeze(0);
            let (h, w) = (img.size()[2], img.size()[3]);
            let mut x = if self.augment.contains(&Augment::RandomResizedCrop) {
                let (y0, x0, bh, bw) = crop_box(h, w, rng);
                img.narrow(2, y0, bh).narrow(3, x0, bw).upsample_bilinear2d([self.size, self.size], false, None, None)
            } else {
                img
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

    /// Whole images (no crop) normalised, on `device`: the stored squares multi-crop
    /// views are cut from (normalising is per pixel, so a crop of it is the crop normalised).
    pub(crate) fn eval_whole(&self, images: &Tensor, device: Device) -> Tensor {
        self.normalize(&images.to_device(device))
    }

    fn normalize(&self, x: &Tensor) -> Tensor {
        let device = x.device();
        let on = |t: &Tensor| if t.device() == device { t.shallow_clone() } else { t.to_device(device) };
        (x.to_kind(Kind::Float) / 255.0 - on(&self.mean)) / on(&self.std)
    }
}

/// The random draws of a random resized crop, in the order torchvision's
/// `RandomResizedCrop.get_params` makes them.
pub trait CropDraws {
    /// The crop's share of the image's area, uniform in [0.08, 1).
    fn scale(&mut self) -> f64;
    /// The log of its aspect ratio (width / height), uniform in [ln 3/4, ln 4/3).
    fn log_ratio(&mut self) -> f64;
    /// An offset, uniform in 0..=`max`.
    fn offset(&mut self, max: i64) -> i64;
}

impl CropDraws for ChaCha8Rng {
    fn scale(&mut self) -> f64 {
        self.random_range(0.08..1.0)
    }

    fn log_ratio(&mut self) -> f64 {
        self.random_range((3.0f64 / 4.0).ln()..(4.0f64 / 3.0).ln())
    }

    fn offset(&mut self, max: i64) -> i64 {
        self.random_range(0..=max)
    }
}

/// torchvision's `RandomResizedCrop` box (scale 0.08..1, ratio 3/4..4/3) in an image of
/// `height` x `width`: (top, left, height, width). Ten tries at a box that fits, then the
/// center crop of the whole image clamped to the ratio range, as torchvision falls back.
pub fn crop_box(height: i64, width: i64, draws: &mut impl CropDraws) -> (i64, i64, i64, i64) {
    let area = (height * width) as f64;
    let (min_ratio, max_ratio) = (3.0f64 / 4.0, 4.0f64 / 3.0);
    for _ in 0..10 {
        let target = area * draws.scale();
        let ratio = draws.log_ratio().exp();
        let w = (target * ratio).sqrt().round() as i64;
        let h = (target / ratio).sqrt().round() as i64;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = draws.offset(height - h);
            return (top, draws.offset(width - w), h, w);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < min_ratio {
        (((width as f64) / min_ratio).round() as i64, width)
    } else if in_ratio > max_ratio {
        (height, ((height as f64) * max_ratio).round() as i64)
    } else {
        (height, width)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}
