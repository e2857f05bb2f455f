//! `runner data synth`: a synthetic ImageFolder dataset for demos and tests
//! that needs no download. Each class is a shape (circle, cross, ring, square,
//! triangle) drawn in a random colour at a random scale, position and rotation
//! on a textured, noisy background, with two smaller distractor shapes of any
//! class, saved as JPEG.

use std::f64::consts::PI;
use std::path::Path;

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

pub(crate) const SHAPES: [&str; 5] = ["circle", "cross", "ring", "square", "triangle"];

#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub classes: usize,
    pub per_class: usize,
    pub size: u32,
    pub seed: u64,
}

/// `runner data synth`'s defaults, which `data.source = "shapes"` generates too.
impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions { classes: 4, per_class: 150, size: 128, seed: 0 }
    }
}

/// Is the point (u, v), in shape coordinates (unit radius, centred), inside `shape`?
fn inside(shape: &str, u: f64, v: f64) -> bool {
    match shape {
        "circle" => u * u + v * v <= 1.0,
        "square" => u.abs() <= 0.8 && v.abs() <= 0.8,
        "triangle" => v <= 0.75 && v >= -0.9 + 1.65 * (u.abs() / 0.95) && u.abs() <= 0.95,
        "cross" => (u.abs() <= 0.3 && v.abs() <= 0.95) || (v.abs() <= 0.3 && u.abs() <= 0.95),
        "ring" => {
            let r2 = u * u + v * v;
            (0.4..=1.0).contains(&r2)
        }
        _ => false,
    }
}

/// A shape placed in the image: which, where, how big, turned how far, in what colour.
struct Placed {
    shape: &'static str,
    centre: (f64, f64),
    radius: f64,
    sin_cos: (f64, f64),
    colour: [f64; 3],
}

impl Placed {
    fn covers(&self, x: f64, y: f64) -> bool {
        let (sin, cos) = self.sin_cos;
        let (dx, dy) = ((x - self.centre.0) / self.radius, (y - self.centre.1) / self.radius);
        inside(self.shape, dx * cos + dy * sin, -dx * sin + dy * cos)
    }
}

/// Renders one image of `shape`: the largest shape in it is of that class; two
/// smaller distractors of any class are drawn underneath.
fn render(shape: &'static str, size: u32, rng: &mut ChaCha8Rng) -> image::RgbImage {
    let s = size as f64;
    // Background: two blended colours, stripes at a random angle and frequency, and noise.
    let base: [f64; 3] = std::array::from_fn(|_| rng.random_range(40.0..215.0));
    let other: [f64; 3] = std::array::from_fn(|_| rng.random_range(40.0..215.0));
    let (angle, freq) = (rng.random_range(0.0..PI), rng.random_range(2.0..9.0));
    let noise = rng.random_range(8.0..30.0);
    let place = |shape: &'static str, radius: f64, rng: &mut ChaCha8Rng| {
        // A colour that stands out from the background, by a random margin.
        let colour = std::array::from_fn(|c| {
            let bg = (base[c] + other[c]) / 2.0;
            if bg > 128.0 { rng.random_range(0.0..90.0) } else { rng.random_range(165.0..255.0) }
        });
        Placed {
            shape,
            centre: (rng.random_range(radius..s - radius), rng.random_range(radius..s - radius)),
            radius,
            sin_cos: rng.random_range(0.0..2.0 * PI).sin_cos(),
            colour,
        }
    };
    let mut shapes: Vec<Placed> = (0..2)
        .map(|_| {
            let distractor = SHAPES[rng.random_range(0..SHAPES.len())];
            let radius = s * rng.random_range(0.06..0.11);
            place(distractor, radius, rng)
        })
        .collect();
    let radius = s * rng.random_range(0.15..0.32);
    shapes.push(place(shape, radius, rng));
    image::RgbImage::from_fn(size, size, |x, y| {
        let (fx, fy) = (x as f64 / s, y as f64 / s);
        let t = 0.5 + 0.5 * ((fx * angle.cos() + fy * angle.sin()) * freq * 2.0 * PI).sin();
        let on_top = shapes.iter().rev().find(|p| p.covers(x as f64, y as f64));
        image::Rgb(std::array::from_fn(|c| {
            let value = on_top.map_or(base[c] * t + other[c] * (1.0 - t), |p| p.colour[c]);
            (value + rng.random_range(-noise..noise)).clamp(0.0, 255.0) as u8
        }))
    })
}

/// Writes `root/<shape>/<index>.jpg`. Refuses to write into a non-empty folder.
pub fn generate(root: &Path, opts: &SynthOptions) -> Result<usize> {
    if !(2..=SHAPES.len()).contains(&opts.classes) {
        bail!("--classes must be between 2 and {}, got {}", SHAPES.len(), opts.classes);
    }
    if opts.per_class == 0 || opts.size < 32 {
        bail!("--per-class must be at least 1 and --size at least 32");
    }
    if root.exists() && std::fs::read_dir(root).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; remove it or choose another --out", root.display());
    }
    let tmp = root.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    let jobs: Vec<(usize, usize)> = (0..opts.classes).flat_map(|c| (0..opts.per_class).map(move |i| (c, i))).collect();
    for shape in &SHAPES[..opts.classes] {
        std::fs::create_dir_all(tmp.join(shape)).with_context(|| format!("cannot create {}", tmp.display()))?;
    }
    jobs.par_iter().try_for_each(|&(c, i)| -> Result<()> {
        // One stream per image: the output does not depend on the thread count.
        let mut rng =
            ChaCha8Rng::seed_from_u64(opts.seed ^ ((c as u64) << 32 | i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let img = render(SHAPES[c], opts.size, &mut rng);
        let path = tmp.join(SHAPES[c]).join(format!("{i:04}.jpg"));
        let file = std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 90);
        enc.encode_image(&img).with_context(|| format!("cannot encode {}", path.display()))?;
        Ok(())
    })?;
    if root.exists() {
        std::fs::remove_dir(root).with_context(|| format!("cannot replace {}", root.display()))?;
    }
    std::fs::rename(&tmp, root).with_context(|| format!("cannot move {} into place", tmp.display()))?;
    Ok(jobs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_distinct_and_output_is_seeded() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SynthOptions { classes: 3, per_class: 2, size: 48, seed: 3 };
        assert_eq!(generate(&dir.path().join("a"), &opts).unwrap(), 6);
        assert_eq!(generate(&dir.path().join("b"), &opts).unwrap(), 6);
        let read = |p: &str| std::fs::read(dir.path().join(p)).unwrap();
        assert_eq!(read("a/ring/0001.jpg"), read("b/ring/0001.jpg"));
        assert_ne!(read("a/ring/0001.jpg"), read("a/ring/0000.jpg"));
        assert!(generate(&dir.path().join("a"), &opts).is_err(), "refuses a non-empty folder");
        // The shapes differ where it matters: the centre is inside a circle but not a ring.
        assert!(inside("circle", 0.0, 0.0) && !inside("ring", 0.0, 0.0));
    }
}
