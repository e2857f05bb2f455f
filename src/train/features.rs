//! Feature caching: when the frozen layers of a phase run in inference mode and its
//! inputs are not augmented, what they compute for an image is the same every epoch. The
//! phase then computes it once (pooled features when the whole backbone is frozen, the
//! activations at the freeze boundary otherwise), for the train and val images, and
//! trains the rest on it. With `data.cache_views`, augmented views are cached the same
//! way. Plain caches are kept in a feature store on disk (`RunOptions::feature_store`), named
//! by a hash of everything they depend on, for the runs that follow: grid points, reruns,
//! a halving search's trials, other processes.

use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use super::Trainer;
use super::autocast::Autocast;
use super::stored::{Rows, Writer};
use crate::config::spec::{Augment, BatchNormPolicy, CacheMode};
use crate::data::{Fetched, Read, Split};
use crate::sys::reporter::{self, Unit};

/// The output of a phase's frozen prefix for every train and val image.
pub(super) struct FeatureCache {
    /// The first layer not covered: the phase's freeze index.
    pub(super) start: usize,
    /// `views` x train images: view `v` of image `i` at row `v * n + i`.
    pub(super) train: Rows,
    pub(super) val: Rows,
    pub(super) views: Views,
}

/// Which inputs a cache holds for the train images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Views {
    /// The unaugmented images (no augmentation): exact.
    Plain,
    /// `augment = ["hflip"]`: each image and its mirror; an epoch picks one per image
    /// with the very draws the full forward would make, so the cache is exact.
    Mirrored,
    /// This many augmented views drawn once; an epoch picks one per image at random.
    Sampled(usize),
}

impl Views {
    fn count(self) -> usize {
        match self {
            Views::Plain => 1,
            Views::Mirrored => 2,
            Views::Sampled(k) => k,
        }
    }
}

/// The random stream that draws cached view `v` (far from the epochs' streams).
fn view_rng(seed: u64, v: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(u64::MAX - v as u64);
    rng
}

/// Default memory for a feature cache: 4 GiB (`RUNNER_FEATURE_CACHE_MB` overrides it),
/// and on the CPU at most half the memory available.
pub(super) fn cache_budget_bytes(device: Device) -> u64 {
    if let Some(mb) = std::env::var(crate::sys::env::FEATURE_CACHE_MB).ok().and_then(|v| v.parse::<u64>().ok()) {
        return mb << 20;
    }
    let budget = 4u64 << 30;
    if device.is_cuda() {
        return budget;
    }
    crate::sys::memory::available_bytes().map_or(budget, |bytes| budget.min(bytes / 2))
}

impl Trainer {
    /// The cache of a phase freezing `frozen` layers, or why it has none; and the log's note.
    pub(super) fn cache_for(&mut self, frozen: usize, bn: BatchNormPolicy) -> (Option<FeatureCache>, String) {
        match self.cache_blocker(frozen, bn) {
            Some(reason) => (None, format!("full forward every epoch ({reason})")),
            None => self.build_cache(frozen),
        }
    }

    /// Why a phase freezing `frozen` layers cannot train on cached activations, if it cannot.
    fn cache_blocker(&self, frozen: usize, bn: BatchNormPolicy) -> Option<&'static str> {
        if self.cache == CacheMode::Off {
            Some("data.cache = \"off\"")
        } else if frozen == 0 {
            Some("nothing is frozen")
        } else if self.mixing.is_on() {
            Some("the batches are mixed (data.mixup, data.cutmix): the frozen layers see new images every epoch")
        } else if !self.transform.augment.is_empty() && self.cache_views == 0 {
            Some("the inputs are augmented; data.cache_views = K would cache K augmented views")
        } else if bn == BatchNormPolicy::Train {
            Some("batchnorm = \"train\" updates the frozen layers' statistics")
        } else {
            None
        }
    }

    /// Runs the frozen prefix over every train and val image once, into the feature store
    /// when there is one (read from it per batch), else into memory if it fits the budget.
    /// In the same pass it keeps the activations at the freeze indices of later phases
    /// that lie below this one (`later_boundaries`), so the next phase need not recompute them.
    fn build_cache(&mut self, frozen: usize) -> (Option<FeatureCache>, String) {
        let what = self.cached_what(frozen);
        let views = self.views();
        if views != Views::Plain {
            return self.build_view_cache(frozen, views, &what);
        }
        if let Some((train, val)) = self.stash.remove(&frozen) {
            let note = format!("trains on the {} cached by an earlier pass", what);
            return (
                Some(FeatureCache { start: frozen, train: Rows::Memory(train), val: Rows::Memory(val), views }),
                note,
            );
        }
        // What every depth's key shares, hashed once (the images above all).
        let inputs = self.feature_store.as_ref().map(|_| self.inputs_digest());
        let stored = self
            .feature_store
            .as_ref()
            .zip(inputs.as_deref())
            .map(|(dir, inputs)| dir.join(format!("{}.safetensors", self.feature_key(frozen, inputs))));
        if let Some(path) = &stored
            && let Some((train, val)) = self.open_stored(path)
        {
            let note = format!("trains on the {what} of the feature store ({})", path.display());
            return (Some(FeatureCache { start: frozen, train, val, views }), note);
        }
        let images = self.data.train.len() + self.data.val.len();
        if self.data.train.is_empty() {
            return (None, "full forward every epoch (no train images)".into());
        }
        let mut ks: Vec<usize> = self.later_boundaries.iter().copied().filter(|&k| k > 0 && k < frozen).collect();
        ks.push(frozen);
        ks.sort_unstable();
        ks.dedup();
        let probe = self.model.frozen_prefixes(&self.first_image(), &ks);
        let per_image: Vec<u64> = probe.iter().map(|t| (t.numel() * 4) as u64).collect();
        let bytes = per_image[ks.len() - 1] * images as u64;
        let within = |budget: u64| per_image.iter().sum::<u64>() * images as u64 <= budget;
        if let Some((path, inputs)) = stored.as_ref().zip(inputs.as_deref())
            && bytes <= self.feature_store_budget
        {
            let ks = if within(self.feature_store_budget) { ks } else { vec![frozen] };
            return self.build_stored(frozen, &ks, &probe, path, inputs);
        }
        let budget = cache_budget_bytes(self.device);
        if bytes > budget {
            return (
                None,
                format!(
                    "full forward every epoch: the {} of {images} images need {} MiB, over the cache budget of \
                     {} MiB (RUNNER_FEATURE_CACHE_MB)",
                    what,
                    bytes >> 20,
                    budget >> 20
                ),
            );
        }
        if !within(budget) {
            ks = vec![frozen];
        }
        let bar = reporter::bar(images as u64, Unit::Images, &format!("caching {what}"));
        let run = |split: &Split| self.prefix_outputs(split, &ks, &probe, &bar);
        let (mut train, mut val) = Autocast::run(self.autocast(), || (run(&self.data.train), run(&self.data.val)));
        bar.finish_and_clear();
        let (t, v) = (train.pop().expect("one"), val.pop().expect("one"));
        let cache = FeatureCache { start: frozen, train: Rows::Memory(t), val: Rows::Memory(v), views };
        for ((k, t), v) in ks.iter().zip(train).zip(val) {
            self.stash.insert(*k, (t, v));
        }
        let note = format!("trains on cached {} of {images} images ({:.1} MiB)", what, bytes as f64 / (1 << 20) as f64);
        (Some(cache), note)
    }

    /// The cache pass into the feature store: the frozen prefix's outputs at depths `ks` for
    /// every train and val image, written as computed to their files (`path` for `frozen`),
    /// then the cache read from there.
    fn build_stored(
        &mut self,
        frozen: usize,
        ks: &[usize],
        probe: &[Tensor],
        path: &std::path::Path,
        inputs: &[u8],
    ) -> (Option<FeatureCache>, String) {
        let what = self.cached_what(frozen);
        let images = self.data.train.len() + self.data.val.len();
        let paths: Vec<std::path::PathBuf> = ks
            .iter()
            .map(|&k| {
                if k == frozen {
                    path.to_path_buf()
                } else {
                    path.with_file_name(format!("{}.safetensors", self.feature_key(k, inputs)))
                }
            })
            .collect();
        let bar = reporter::bar(images as u64, Unit::Images, &format!("caching {what}"));
        let written = self.write_pass(ks, probe, &paths, &bar);
        bar.finish_and_clear();
        if let Err(e) = written {
            return (None, format!("full forward every epoch: the feature store cannot be written: {e:#}"));
        }
        if let Some(dir) = path.parent() {
            crate::sys::filestore::evict(dir, self.feature_store_budget, Some(path));
        }
        match self.open_stored(path) {
            Some((train, val)) => {
                let mib = (train.bytes() + val.bytes()) as f64 / (1 << 20) as f64;
                let note = format!(
                    "trains on cached {what} of {images} images ({mib:.1} MiB); kept in the feature store, read per batch"
                );
                (Some(FeatureCache { start: frozen, train, val, views: Views::Plain }), note)
            }
            None => (
                None,
                format!("full forward every epoch: the feature store file {} does not read back", path.display()),
            ),
        }
    }

    /// One pass of the frozen prefix over the train and then the val images, each depth of
    /// `ks` written to its file of `paths`.
    fn write_pass(
        &self,
        ks: &[usize],
        probe: &[Tensor],
        paths: &[std::path::PathBuf],
        bar: &ProgressBar,
    ) -> anyhow::Result<()> {
        let n = (self.data.train.len() as i64, self.data.val.len() as i64);
        let mut writers = probe
            .iter()
            .zip(paths)
            .map(|(p, path)| Writer::create(path, n, &p.size()[1..]))
            .collect::<anyhow::Result<Vec<Writer>>>()?;
        Autocast::run(self.autocast(), || -> anyhow::Result<()> {
            for split in [&self.data.train, &self.data.val] {
                for x in self.eval_inputs(split) {
                    for (w, out) in writers.iter_mut().zip(self.model.frozen_prefixes(&x, ks)) {
                        w.put(&out)?;
                    }
                    bar.inc(x.size()[0] as u64);
                }
            }
            Ok(())
        })?;
        for (w, path) in writers.into_iter().zip(paths) {
            w.finish(path)?;
        }
        Ok(())
    }

    /// A stored cache's train and val rows, if the file is there and whole: read per batch
    /// from the file, or on CUDA, where they fit the cache budget, in device memory in the
    /// trainer's layout.
    fn open_stored(&self, path: &std::path::Path) -> Option<(Rows, Rows)> {
        let (train, val) = super::stored::open(path)?;
        crate::sys::filestore::touch(path);
        let (train, val) = (Rows::Stored(train), Rows::Stored(val));
        if !self.device.is_cuda() || train.bytes() + val.bytes() > cache_budget_bytes(self.device) {
            return Some((train, val));
        }
        let on = |r: &Rows| Rows::Memory(self.layout(r.all().to_device(self.device)));
        Some((on(&train), on(&val)))
    }

    /// What every plain cache of this trainer depends on whatever its depth, hashed: the
    /// train and val images and their transform, the precision, layout, device and thread
    /// count, the machine's arithmetic paths and the numerics version (so a stored cache has
    /// the bits this run would compute), and runner's version.
    fn inputs_digest(&self) -> Vec<u8> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let mut add = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        add(b"runner feature cache");
        add(env!("CARGO_PKG_VERSION").as_bytes());
        let (precision, threads) = (self.precision.name(), tch::get_num_threads());
        add(format!("{precision} {} {:?} {threads}", self.channels_last, self.device).as_bytes());
        // The store outlives the process: the paths libtorch computes on (processor, ISA,
        // ATen's kernels, oneDNN, MKL; a portable run's pinned ones) are part of the bits.
        add(crate::sys::numerics::Machine::here("").describe().as_bytes());
        add(&crate::sys::numerics::NUMERICS_VERSION.to_le_bytes());
        let floats = |t: &Tensor| Vec::<f32>::try_from(t.to_device(Device::Cpu).flatten(0, -1)).unwrap_or_default();
        add(format!("{} {:?} {:?}", self.transform.size, floats(&self.transform.mean), floats(&self.transform.std))
            .as_bytes());
        // The images: their store's name (a hash of the files' contents and the decoding) and entries.
        for split in [&self.data.train, &self.data.val] {
            add(&split.images.identity());
        }
        h.finalize().to_vec()
    }

    /// The store key of a plain cache at layer `k`: `inputs` ([`Self::inputs_digest`]) and
    /// every variable of the layers below `k` (the weights as they are now, whatever
    /// trained them), hashed.
    fn feature_key(&self, k: usize, inputs: &[u8]) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let mut add = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        add(inputs);
        add(&(k as u64).to_le_bytes());
        let layers = self.model.backbone.layers();
        let vars = self.vs.variables();
        let mut names: Vec<&String> = vars
            .keys()
            .filter(|n| {
                layers[..k.min(layers.len())].iter().any(|l| l.prefixes.iter().any(|p| crate::model::has_prefix(n, p)))
            })
            .collect();
        names.sort();
        for name in names {
            let t = vars[name].to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
            add(name.as_bytes());
            add(&Vec::<f32>::try_from(t.flatten(0, -1))
                .unwrap_or_default()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>());
        }
        h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// The first train image as the network sees it in evaluation: a probe of the shapes.
    fn first_image(&self) -> Tensor {
        let Fetched::Crops(crops) = self.data.train.images.fetch(&[0], Read::Crops(self.transform.size)) else {
            unreachable!("crops were read")
        };
        self.layout(self.transform.eval(&crops, self.device))
    }

    /// What a cache at layer `k` holds, for the log.
    fn cached_what(&self, k: usize) -> String {
        let layers = self.model.backbone.layers();
        if k >= layers.len() {
            "pooled features".to_string()
        } else {
            format!("activations at layer {k} ({})", layers[k].name)
        }
    }

    /// The frozen prefix's outputs at depths `ks` for every image of `split` (fp32,
    /// in the trainer's layout); `probe` gives the shapes for an empty split.
    fn prefix_outputs(&self, split: &Split, ks: &[usize], probe: &[Tensor], bar: &ProgressBar) -> Vec<Tensor> {
        let mut parts: Vec<Vec<Tensor>> = ks.iter().map(|_| vec![]).collect();
        for x in self.eval_inputs(split) {
            let outs = self.model.frozen_prefixes(&x, ks);
            for (part, out) in parts.iter_mut().zip(outs) {
                part.push(out.to_kind(Kind::Float));
            }
            bar.inc(x.size()[0] as u64);
        }
        parts
            .into_iter()
            .zip(probe)
            .map(|(p, pr)| self.layout(if p.is_empty() { pr.narrow(0, 0, 0) } else { Tensor::cat(&p, 0) }))
            .collect()
    }

    /// What a cache of the current phase holds for the train images.
    fn views(&self) -> Views {
        match self.transform.augment.as_slice() {
            [] => Views::Plain,
            [Augment::Hflip] if self.cache_views >= 2 => Views::Mirrored,
            _ => Views::Sampled(self.cache_views.max(1)),
        }
    }

    /// A cache of `views` of every train image (and the plain val images) at layer `frozen`.
    /// Sampled views are drawn from their own random streams, apart from the epochs'.
    fn build_view_cache(&mut self, frozen: usize, views: Views, what: &str) -> (Option<FeatureCache>, String) {
        let (n_train, n_val) = (self.data.train.len(), self.data.val.len());
        if n_train == 0 {
            return (None, "full forward every epoch (no train images)".into());
        }
        let probe = self.model.frozen_prefix(&self.first_image(), frozen);
        let per_image = (probe.numel() * 4) as u64;
        let k = views.count();
        let bytes = per_image * (k * n_train + n_val) as u64;
        let budget = cache_budget_bytes(self.device);
        if bytes > budget {
            return (
                None,
                format!(
                    "full forward every epoch: {k} views of the {what} of {n_train} train images need {} MiB, over \
                     the cache budget of {} MiB (RUNNER_FEATURE_CACHE_MB)",
                    bytes >> 20,
                    budget >> 20
                ),
            );
        }
        let bar =
            reporter::bar((k * n_train + n_val) as u64, Unit::Images, &format!("caching {k} views of the {what}"));
        let prefix = |x: Tensor| self.model.frozen_prefix(&self.layout(x), frozen);
        let pass = |split: &Split, read: Read, input: &dyn Fn(Fetched) -> Tensor| -> Tensor {
            let batches = crate::data::in_order(split.len(), self.batch_size);
            let mut parts = vec![];
            for (pixels, b) in split.images.prefetch(batches.clone(), read).zip(&batches) {
                parts.push(prefix(input(pixels)).to_kind(Kind::Float));
                bar.inc(b.len() as u64);
            }
            if parts.is_empty() { probe.narrow(0, 0, 0) } else { Tensor::cat(&parts, 0) }
        };
        let crops = Read::Crops(self.transform.size);
        let eval = |pixels: Fetched| match pixels {
            Fetched::Crops(c) => self.transform.eval(&c, self.device),
            Fetched::Whole(_) => unreachable!("crops were read"),
        };
        let (train, val) = Autocast::run(self.autocast(), || {
            let mut train = vec![];
            for v in 0..k {
                let rng = std::cell::RefCell::new(view_rng(self.seed, v));
                train.push(match views {
                    Views::Mirrored if v == 1 => pass(&self.data.train, crops, &|p| eval(p).flip([3])),
                    Views::Mirrored => pass(&self.data.train, crops, &eval),
                    _ => pass(&self.data.train, self.transform.read(), &|p| {
                        self.transform.train(p, &mut rng.borrow_mut(), self.device)
                    }),
                });
            }
            let val = pass(&self.data.val, crops, &eval);
            (self.layout(Tensor::cat(&train, 0)), self.layout(val))
        });
        bar.finish_and_clear();
        let kind = match views {
            Views::Mirrored => "2 exact views (as is and mirrored)".to_string(),
            _ => format!("{k} augmented views drawn once"),
        };
        let note = format!(
            "trains on cached {what} of {kind} of {n_train} train images ({:.1} MiB)",
            bytes as f64 / (1 << 20) as f64
        );
        (Some(FeatureCache { start: frozen, train: Rows::Memory(train), val: Rows::Memory(val), views }), note)
    }
}

/// With a cache of several views: the row of the view each image of `order` trains
/// on this epoch (None for a plain cache). Mirrored views take the draws the full
/// forward's hflip takes, in the same order.
pub(super) fn view_picks(cache: &FeatureCache, order: &[i64], rng: &mut ChaCha8Rng) -> Option<Tensor> {
    if cache.views == Views::Plain {
        return None;
    }
    let n = order.len() as i64;
    let picks: Vec<i64> = order
        .iter()
        .map(|&i| {
            let v = match cache.views {
                Views::Mirrored => rng.random_bool(0.5) as i64,
                _ => rng.random_range(0..cache.views.count() as i64),
            };
            v * n + i
        })
        .collect();
    Some(Tensor::from_slice(&picks))
}
