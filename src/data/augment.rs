//! The image operations of torchvision's automatic augmentation policies
//! (`TrivialAugmentWide`, `RandAugment`), `ColorJitter` and `RandomErasing`, on one
//! image at a time: a float tensor [1, 3, H, W] holding uint8 values (0..=255).
//!
//! Each operation follows `torchvision.transforms.functional` on uint8 tensors, including
//! where it truncates or rounds back to uint8, so that the same operation at the same
//! magnitude gives the same pixels (checked against torchvision run on the same machine).
//! Every random draw comes from the epoch's own stream (seed, epoch), so reruns and
//! resumes see the same augmented images.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// An operation of the automatic augmentation policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Identity,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Brightness,
    Color,
    Contrast,
    Sharpness,
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
}

const OPS: [Op; 14] = [
    Op::Identity,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateX,
    Op::TranslateY,
    Op::Rotate,
    Op::Brightness,
    Op::Color,
    Op::Contrast,
    Op::Sharpness,
    Op::Posterize,
    Op::Solarize,
    Op::AutoContrast,
    Op::Equalize,
];

/// Magnitude bins of both policies (torchvision's default `num_magnitude_bins = 31`).
const BINS: usize = 31;

/// What magnitude bin `bin` of `op` means, and whether its sign is drawn, in
/// `TrivialAugmentWide` (`wide`) or `RandAugment` for an image of `w` x `h`.
fn magnitude(op: Op, bin: usize, wide: bool, w: i64, h: i64) -> (f64, bool) {
    let lin = |hi: f64| hi * bin as f64 / (BINS - 1) as f64;
    match op {
        Op::ShearX | Op::ShearY => (lin(if wide { 0.99 } else { 0.3 }), true),
        Op::TranslateX => (lin(if wide { 32.0 } else { 150.0 / 331.0 * w as f64 }), true),
        Op::TranslateY => (lin(if wide { 32.0 } else { 150.0 / 331.0 * h as f64 }), true),
        Op::Rotate => (lin(if wide { 135.0 } else { 30.0 }), true),
        Op::Brightness | Op::Color | Op::Contrast | Op::Sharpness => (lin(if wide { 0.99 } else { 0.9 }), true),
        Op::Posterize => {
            let step = if wide { 6.0 } else { 4.0 };
            (8.0 - (bin as f64 / ((BINS - 1) as f64 / step)).round(), false)
        }
        Op::Solarize => (255.0 - lin(255.0), false),
        Op::Identity | Op::AutoContrast | Op::Equalize => (0.0, false),
    }
}

/// `TrivialAugmentWide`: one operation, drawn uniformly, at a magnitude drawn uniformly.
pub(crate) fn trivial_augment(img: &Tensor, rng: &mut ChaCha8Rng) -> Tensor {
    let op = OPS[rng.random_range(0..OPS.len())];
    let bin = rng.random_range(0..BINS);
    let (h, w) = (img.size()[2], img.size()[3]);
    let (mut m, signed) = magnitude(op, bin, true, w, h);
    if signed && rng.random_bool(0.5) {
        m = -m;
    }
    apply(img, op, m)
}

/// `RandAugment(num_ops = n, magnitude = m)`: `n` operations drawn uniformly, each at bin `m`.
pub(crate) fn rand_augment(img: &Tensor, n: usize, m: usize, rng: &mut ChaCha8Rng) -> Tensor {
    let (h, w) = (img.size()[2], img.size()[3]);
    let mut x = img.shallow_clone();
    for _ in 0..n {
        let op = OPS[rng.random_range(0..OPS.len())];
        let (mut mag, signed) = magnitude(op, m.min(BINS - 1), false, w, h);
        if signed && rng.random_bool(0.5) {
            mag = -mag;
        }
        x = apply(&x, op, mag);
    }
    x
}

/// `ColorJitter(brightness, contrast, saturation, hue)`: factors drawn uniformly from
/// [max(0, 1 - b), 1 + b] (hue from [-h, h]), applied in a random order.
pub(crate) fn color_jitter(img: &Tensor, jitter: [f64; 4], rng: &mut ChaCha8Rng) -> Tensor {
    let mut order = [0usize, 1, 2, 3];
    order.shuffle(rng);
    let factors: Vec<Option<f64>> = jitter
        .iter()
        .enumerate()
        .map(|(i, &j)| {
            if j <= 0.0 {
                None
            } else if i == 3 {
                Some(rng.random_range(-j..=j))
            } else {
                Some(rng.random_range((1.0 - j).max(0.0)..=1.0 + j))
            }
        })
        .collect();
    let mut x = img.shallow_clone();
    for i in order {
        if let Some(f) = factors[i] {
            x = match i {
                0 => brightness(&x, f),
                1 => contrast(&x, f),
                2 => saturation(&x, f),
                _ => hue(&x, f),
            };
        }
    }
    x
}

/// `RandomErasing(p, scale = (0.02, 0.33), ratio = (0.3, 3.3), value = 0)` on a normalised
/// image [1, 3, H, W]: with probability `p`, a random box is set to 0.
pub(crate) fn random_erasing(img: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Tensor {
    if !rng.random_bool(p) {
        return img.shallow_clone();
    }
    let (h, w) = (img.size()[2], img.size()[3]);
    let area = (h * w) as f64;
    let (lo, hi) = (0.3f64.ln(), 3.3f64.ln());
    for _ in 0..10 {
        let erase = area * rng.random_range(0.02..0.33);
        let aspect = rng.random_range(lo..hi).exp();
        let (eh, ew) = ((erase * aspect).sqrt().round() as i64, (erase / aspect).sqrt().round() as i64);
        if !(eh < h && ew < w) {
            continue;
        }
        let (i, j) = (rng.random_range(0..=h - eh), rng.random_range(0..=w - ew));
        let out = img.copy();
        let _ = out.narrow(2, i, eh).narrow(3, j, ew).fill_(0.0);
        return out;
    }
    img.shallow_clone()
}

/// One operation at a signed magnitude, as torchvision's `_apply_op` applies it.
pub(crate) fn apply(img: &Tensor, op: Op, m: f64) -> Tensor {
    match op {
        Op::Identity => img.shallow_clone(),
        Op::ShearX => affine(img, 0.0, [0.0, 0.0], [m.atan().to_degrees(), 0.0], true),
        Op::ShearY => affine(img, 0.0, [0.0, 0.0], [0.0, m.atan().to_degrees()], true),
        Op::TranslateX => affine(img, 0.0, [m.trunc(), 0.0], [0.0, 0.0], false),
        Op::TranslateY => affine(img, 0.0, [0.0, m.trunc()], [0.0, 0.0], false),
        // F.rotate turns counter-clockwise: the affine of -angle.
        Op::Rotate => affine(img, -m, [0.0, 0.0], [0.0, 0.0], false),
        Op::Brightness => brightness(img, 1.0 + m),
        Op::Color => saturation(img, 1.0 + m),
        Op::Contrast => contrast(img, 1.0 + m),
        Op::Sharpness => sharpness(img, 1.0 + m),
        Op::Posterize => posterize(img, m as i64),
        Op::Solarize => img.where_self(&img.lt(m), &(-img + 255.0)),
        Op::AutoContrast => autocontrast(img),
        Op::Equalize => equalize(img),
    }
}

/// torchvision's `_blend` on uint8: ratio * a + (1 - ratio) * b, clamped and truncated.
fn blend(a: &Tensor, b: &Tensor, ratio: f64) -> Tensor {
    (a * ratio + b * (1.0 - ratio)).clamp(0.0, 255.0).floor()
}

/// `rgb_to_grayscale` on uint8 (ITU-R 601-2 luma, truncated), as [1, 1, H, W].
fn grayscale(img: &Tensor) -> Tensor {
    let c = |i| img.narrow(1, i, 1);
    (c(0) * 0.2989 + c(1) * 0.587 + c(2) * 0.114).floor()
}

fn brightness(img: &Tensor, f: f64) -> Tensor {
    blend(img, &img.zeros_like(), f)
}

fn saturation(img: &Tensor, f: f64) -> Tensor {
    blend(img, &grayscale(img), f)
}

fn contrast(img: &Tensor, f: f64) -> Tensor {
    let mean = grayscale(img).mean(Kind::Float);
    blend(img, &mean, f)
}

fn sharpness(img: &Tensor, f: f64) -> Tensor {
    let (h, w) = (img.size()[2], img.size()[3]);
    if h <= 2 || w <= 2 {
        return img.shallow_clone();
    }
    let kernel = Tensor::from_slice(&[1f32, 1., 1., 1., 5., 1., 1., 1., 1.]).view([1, 1, 3, 3]) / 13.0;
    let kernel = kernel.to_device(img.device()).expand([3, 1, 3, 3], false);
    let blurred = img.to_kind(Kind::Float).conv2d::<&Tensor>(&kernel, None, [1, 1], [0, 0], [1, 1], 3).round();
    let degenerate = img.copy();
    degenerate.narrow(2, 1, h - 2).narrow(3, 1, w - 2).copy_(&blurred);
    blend(img, &degenerate, f)
}

fn posterize(img: &Tensor, bits: i64) -> Tensor {
    let mask = -(1i64 << (8 - bits.clamp(0, 8)));
    img.to_kind(Kind::Int64).bitwise_and(mask).to_kind(img.kind())
}

fn autocontrast(img: &Tensor) -> Tensor {
    let lo = img.amin([2, 3], true);
    let hi = img.amax([2, 3], true);
    let flat = hi.eq_tensor(&lo);
    let scale = (&hi - &lo).reciprocal().multiply_scalar(255.0).where_self(&flat.logical_not(), &hi.ones_like());
    let lo = lo.where_self(&flat.logical_not(), &lo.zeros_like());
    ((img - lo) * scale).clamp(0.0, 255.0).floor()
}

fn equalize(img: &Tensor) -> Tensor {
    let channels: Vec<Tensor> = (0..3).map(|c| equalize_channel(&img.narrow(1, c, 1))).collect();
    Tensor::cat(&channels, 1)
}

/// torchvision's `_scale_channel`: the look-up table of histogram equalisation.
fn equalize_channel(chan: &Tensor) -> Tensor {
    let idx = chan.to_kind(Kind::Int64).flatten(0, -1);
    let hist = idx.bincount::<&Tensor>(None, 256);
    let counts = Vec::<i64>::try_from(&hist).unwrap_or_default();
    let nonzero: Vec<i64> = counts.iter().copied().filter(|&c| c != 0).collect();
    let step = nonzero[..nonzero.len().saturating_sub(1)].iter().sum::<i64>() / 255;
    if step == 0 {
        return chan.shallow_clone();
    }
    let mut lut = vec![0i64; 256];
    let mut cum = 0;
    for i in 0..255 {
        cum += counts[i];
        lut[i + 1] = ((cum + step / 2) / step).clamp(0, 255);
    }
    let lut = Tensor::from_slice(&lut).to_device(chan.device());
    lut.index_select(0, &idx).view(chan.size().as_slice()).to_kind(chan.kind())
}

/// torchvision's tensor `affine` with nearest interpolation and zero fill: the inverse
/// matrix of rotation `angle` (degrees), translation and shear (degrees) about the image
/// centre, or about its top-left corner with `corner` (what the policies' shears use).
fn affine(img: &Tensor, angle: f64, translate: [f64; 2], shear: [f64; 2], corner: bool) -> Tensor {
    let (h, w) = (img.size()[2], img.size()[3]);
    let (cx, cy) = if corner { (-(w as f64) * 0.5, -(h as f64) * 0.5) } else { (0.0, 0.0) };
    let (rot, sx, sy) = (angle.to_radians(), shear[0].to_radians(), shear[1].to_radians());
    let a = (rot - sy).cos() / sy.cos();
    let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
    let c = (rot - sy).sin() / sy.cos();
    let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
    let mut m = [d, -b, 0.0, -c, a, 0.0];
    let (tx, ty) = (translate[0], translate[1]);
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
    m[2] += cx;
    m[5] += cy;
    // The output grid in pixel coordinates about the centre, mapped through m rescaled to
    // grid_sample's [-1, 1], computed as torchvision's `_gen_affine_grid` does (float32, one
    // matrix product), so that nearest-neighbour ties fall the same way.
    let dev = img.device();
    let xs = Tensor::linspace(-(w as f64) * 0.5 + 0.5, w as f64 * 0.5 - 0.5, w, (Kind::Float, dev));
    let ys = Tensor::linspace(-(h as f64) * 0.5 + 0.5, h as f64 * 0.5 - 0.5, h, (Kind::Float, dev));
    let base = Tensor::stack(
        &[
            xs.view([1, w]).expand([h, w], false),
            ys.view([h, 1]).expand([h, w], false),
            Tensor::ones([h, w], (Kind::Float, dev)),
        ],
        -1,
    )
    .view([h * w, 3]);
    let theta = Tensor::from_slice(&m.map(|v| v as f32)).view([2, 3]).to_device(dev);
    let half = Tensor::from_slice(&[0.5 * w as f32, 0.5 * h as f32]).to_device(dev);
    let grid = base.matmul(&(theta.transpose(0, 1) / half)).view([1, h, w, 2]);
    // mode 1: nearest; padding 0: zeros; align_corners false.
    img.to_kind(Kind::Float).grid_sampler(&grid, 1, 0, false).round()
}

/// `adjust_hue` on uint8: to HSV (of the image / 255), hue shifted by `f` turns, back to
/// RGB, and to uint8 as `convert_image_dtype` does (times 255.999, truncated).
fn hue(img: &Tensor, f: f64) -> Tensor {
    let x = img / 255.0;
    let (r, g, b) = (x.narrow(1, 0, 1), x.narrow(1, 1, 1), x.narrow(1, 2, 1));
    let maxc = x.amax([1], true);
    let minc = x.amin([1], true);
    let eqc = maxc.eq_tensor(&minc);
    let cr = &maxc - &minc;
    let ones = maxc.ones_like();
    let s = &cr / maxc.where_self(&eqc.logical_not(), &ones);
    let cr_div = cr.where_self(&eqc.logical_not(), &ones);
    let rc = (&maxc - &r) / &cr_div;
    let gc = (&maxc - &g) / &cr_div;
    let bc = (&maxc - &b) / &cr_div;
    let hr = maxc.eq_tensor(&r).to_kind(Kind::Float) * (&bc - &gc);
    let hg = (maxc.eq_tensor(&g).logical_and(&maxc.ne_tensor(&r))).to_kind(Kind::Float) * (&rc - &bc + 2.0);
    let hb = (maxc.ne_tensor(&g).logical_and(&maxc.ne_tensor(&r))).to_kind(Kind::Float) * (&gc - &rc + 4.0);
    let hch = ((hr + hg + hb) / 6.0 + 1.0).fmod(1.0);
    let hch = (hch + f).remainder(1.0);
    // HSV back to RGB, as torchvision's `_hsv2rgb`.
    let v = maxc;
    let i = (&hch * 6.0).floor();
    let fr = &hch * 6.0 - &i;
    let i = i.to_kind(Kind::Int64).remainder(6);
    let p = (&v * (-&s + 1.0)).clamp(0.0, 1.0);
    let q = (&v * (-(&s * &fr) + 1.0)).clamp(0.0, 1.0);
    let t = (&v * (-(&s * (-&fr + 1.0)) + 1.0)).clamp(0.0, 1.0);
    let pick = |choices: [&Tensor; 6]| {
        let mut out = choices[5].shallow_clone();
        for (k, c) in choices.iter().enumerate().take(5) {
            out = c.where_self(&i.eq(k as i64), &out);
        }
        out
    };
    let r = pick([&v, &q, &p, &p, &t, &v]);
    let g = pick([&t, &v, &v, &q, &p, &p]);
    let b = pick([&p, &p, &t, &v, &v, &q]);
    (Tensor::cat(&[r, g, b], 1) * (256.0 - 1e-3)).clamp(0.0, 255.0).floor()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{floats, toolkit_fixture};

    /// The fixture's image: x[c, h, w] = (37 c + 11 h + 7 w + (h w mod 13) * 9) mod 256, 3 x 20 x 24.
    fn image() -> Tensor {
        let mut v = vec![];
        for c in 0..3i64 {
            for h in 0..20i64 {
                for w in 0..24i64 {
                    v.push(((37 * c + 11 * h + 7 * w + (h * w % 13) * 9) % 256) as f32);
                }
            }
        }
        Tensor::from_slice(&v).view([1, 3, 20, 24])
    }

    fn op(name: &str) -> Op {
        match name {
            "ShearX" => Op::ShearX,
            "ShearY" => Op::ShearY,
            "TranslateX" => Op::TranslateX,
            "TranslateY" => Op::TranslateY,
            "Rotate" => Op::Rotate,
            "Brightness" => Op::Brightness,
            "Color" => Op::Color,
            "Contrast" => Op::Contrast,
            "Sharpness" => Op::Sharpness,
            "Posterize" => Op::Posterize,
            "Solarize" => Op::Solarize,
            "AutoContrast" => Op::AutoContrast,
            "Equalize" => Op::Equalize,
            "Identity" => Op::Identity,
            _ => panic!("unknown op {name}"),
        }
    }

    /// torchvision's pixels for the fixture's image, computed on this machine: the test
    /// command's PyTorch (the torch venv of scripts/env.sh) runs
    /// `scripts/make_toolkit_fixtures.py --pixels`. Not a committed file: where a sampling
    /// coordinate falls on a pixel's edge, the processor's float32 path decides which pixel
    /// nearest-neighbour takes, for torchvision as for runner (15 of ShearY -0.2's 1440 pixels
    /// differ between an Intel and an AMD machine).
    fn torchvisions_pixels_here() -> serde_json::Value {
        let python = crate::sys::fetch::cache_dir().join("torch-venv/bin/python");
        assert!(
            python.is_file(),
            "{} is missing: run `source scripts/env.sh && runner_setup_torch` (scripts/test.sh does)",
            python.display()
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/make_toolkit_fixtures.py");
        let out = std::process::Command::new(&python).arg(script).arg("--pixels").output().expect("python runs");
        assert!(out.status.success(), "{script} --pixels failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("the script prints JSON")
    }

    #[test]
    fn every_operation_gives_torchvisions_pixels_on_this_machine() {
        let fixture = torchvisions_pixels_here();
        let x = image();
        for case in fixture["augment_ops"].as_array().unwrap() {
            let name = case["op"].as_str().unwrap();
            let m = case["magnitude"].as_f64().unwrap();
            let got = Vec::<f64>::try_from(&apply(&x, op(name), m).to_kind(Kind::Double).flatten(0, -1)).unwrap();
            let want = floats(&case["pixels"]);
            assert_eq!(got.len(), want.len(), "{name}");
            let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(differ, 0, "{name} {m}: {differ} of {} pixels differ from torchvision", got.len());
        }
        let jitter = &fixture["hue"];
        for case in jitter.as_array().unwrap() {
            let got =
                Vec::<f64>::try_from(&hue(&x, case["factor"].as_f64().unwrap()).to_kind(Kind::Double).flatten(0, -1))
                    .unwrap();
            let differ = got.iter().zip(floats(&case["pixels"])).filter(|(a, b)| **a != *b).count();
            assert_eq!(differ, 0, "adjust_hue {}", case["factor"]);
        }
    }

    #[test]
    fn policies_draw_from_the_epoch_stream_and_keep_the_value_range() {
        use rand::SeedableRng;
        let x = image();
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let a = trivial_augment(&x, &mut rng);
            let b = rand_augment(&a, 2, 9, &mut rng);
            let c = color_jitter(&b, [0.4, 0.4, 0.4, 0.1], &mut rng);
            random_erasing(&c, 1.0, &mut rng)
        };
        let (a, b) = (run(5), run(5));
        assert!(a.equal(&b), "the same stream, the same image");
        assert!(f64::try_from(a.min()).unwrap() >= 0.0 && f64::try_from(a.max()).unwrap() <= 255.0);
        assert_eq!(a.size(), x.size());
        // Erasing with p = 1 zeroes a box of 2-33% of the image.
        let zeros = f64::try_from(a.eq(0.0).to_kind(Kind::Float).mean(Kind::Float)).unwrap();
        assert!(zeros >= 0.02 * 0.9, "{zeros}");
    }

    #[test]
    fn random_erasing_erases_the_share_torchvision_erases() {
        use rand::SeedableRng;
        let fixture = toolkit_fixture();
        let case = &fixture["random_erasing"];
        let n = case["draws"].as_u64().unwrap() as usize;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let ones = Tensor::ones([1, 3, 20, 24], (Kind::Float, tch::Device::Cpu));
        let shares: Vec<f64> = (0..n)
            .map(|_| {
                f64::try_from(random_erasing(&ones, 1.0, &mut rng).eq(0.0).to_kind(Kind::Float).mean(Kind::Float))
                    .unwrap()
            })
            .collect();
        let mean = shares.iter().sum::<f64>() / n as f64;
        let sd = (shares.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
        let (want_mean, want_sd) = (case["mean_share"].as_f64().unwrap(), case["std_share"].as_f64().unwrap());
        // Two independent samples of 4000: their means differ by about sd * sqrt(2 / 4000) = 0.002.
        assert!((mean - want_mean).abs() < 0.01, "mean share erased {mean} vs torchvision {want_mean}");
        assert!((sd / want_sd - 1.0).abs() < 0.1, "spread {sd} vs torchvision {want_sd}");
    }
}
