//! Everything a run needs, checked and loaded before anything is written: the
//! data, the weights, the model and the trainer; and the checks of a whole
//! experiment that need its data.

use std::path::PathBuf;

use anyhow::{Result, bail};
use tch::{Device, nn};

use super::identity::data_files;
use crate::config::experiment::Experiment;
use crate::config::spec::{Classes, Spec};
use crate::data::{self, Dataset};
use crate::error::SpecError;
use crate::model::{Classifier, weights};
use crate::train::{Parts, Trainer};

/// Everything a run needs, checked and loaded, with nothing written yet.
pub fn prepare(spec: &Spec, device: Device) -> Result<Trainer> {
    let files = data_files(spec)?;
    let manifest = data::manifest(&files)?;
    prepare_files(spec, &files, &manifest, device, None)
}

/// [`prepare`] for data already discovered and hashed (`manifest`), sharing plain feature caches through
/// `feature_store` when one is given.
pub(crate) fn prepare_files(
    spec: &Spec,
    files: &data::FileSplit,
    manifest: &[data::ManifestRow],
    device: Device,
    feature_store: Option<PathBuf>,
) -> Result<Trainer> {
    let backbone = spec.model.backbone;
    let source = weights::resolve(backbone, &spec.model.weights, spec.model.sha256.as_deref())?;
    if let Some(msg) = head_mismatch(spec, &files.classes) {
        bail!("model.head.classes: {msg}");
    }
    let data: Dataset = data::load(files, manifest, spec.data.image_size, spec.data.strict, spec.data.store)?;

    tch::manual_seed(spec.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let dropout = spec.model.head.dropout.unwrap_or(backbone.default_dropout());
    let hidden: Vec<i64> = spec.model.head.hidden.iter().map(|&h| h as i64).collect();
    let model = Classifier::with_hidden(
        backbone,
        &vs.root(),
        data.classes.len() as i64,
        dropout,
        &hidden,
        spec.model.head.init,
        spec.model.pool.unwrap_or_default(),
    );
    if let weights::WeightsSource::File(path) = &source {
        let entries = weights::read(path)?;
        weights::load_into(&mut vs, entries, Some(backbone.classifier_prefix()), path)?;
    }
    let feature_store_budget = super::feature_store_budget();
    Trainer::from_spec(spec, Parts { vs, model, data, feature_store, feature_store_budget })
}

/// Checks of the runs of an experiment that need the model's layers but not its data (`runner
/// plan` makes them too).
pub fn check(exp: &Experiment) -> Result<(), SpecError> {
    for (i, run) in exp.runs.iter().enumerate() {
        if let Some(msg) = lone_batch_problem(&run.spec) {
            let mut e = exp.source.error(&["data", "batch_size"], msg);
            if exp.runs.len() > 1 {
                e.message.push_str(&format!(" (run {} of the grid)", i + 1));
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Why `data.batch_size` cannot train a phase of `spec`, if it cannot: a batch of one image
/// has no batch statistics, so with BatchNorm layers training every batch would be left out.
fn lone_batch_problem(spec: &Spec) -> Option<String> {
    let backbone = spec.model.backbone;
    if spec.data.batch_size != 1 || !backbone.has_batchnorm() {
        return None;
    }
    let layers = backbone.layer_count();
    let schedule = crate::model::Schedule::new(&spec.phases, layers);
    let p = (0..spec.phases.len())
        .find(|&p| (0..spec.phases[p].epochs.max(1)).any(|e| schedule.plan(p, e).any_batch_statistics()))?;
    let phase = &spec.phases[p];
    Some(format!(
        "1 cannot train phase `{}`: its BatchNorm layers train on batch statistics, which a batch of one image \
         does not have (every batch would be left out); use 2 or more, or freeze them (freeze_up_to, batchnorm)",
        phase.name
    ))
}

/// Why `loss.class_weights` does not fit a dataset with these classes, if it does not.
fn weights_mismatch(spec: &Spec, classes: &[String]) -> Option<String> {
    match &spec.loss.class_weights {
        Some(crate::config::spec::ClassWeights::Given(w)) if w.len() != classes.len() => Some(format!(
            "expected {} weights, one per class of {} ({}), found {}",
            classes.len(),
            spec.data.source,
            classes.join(", "),
            w.len()
        )),
        _ => None,
    }
}

/// Why `model.head.classes` cannot fit a dataset with these classes, if it cannot.
fn head_mismatch(spec: &Spec, classes: &[String]) -> Option<String> {
    match spec.model.head.classes {
        Classes::Count(n) if n != classes.len() => Some(format!(
            "expected {} to match the {} class folders of {} ({}), found {n}",
            classes.len(),
            classes.len(),
            spec.data.source,
            classes.join(", ")
        )),
        _ => None,
    }
}

/// Checks of the runs of an experiment that need to look at their data, before any
/// run starts. Datasets that cannot be read are left for the run to report, and so are
/// those still to be downloaded or generated: a plan or a dry run fetches nothing.
pub fn preflight(exp: &Experiment) -> Result<(), SpecError> {
    check(exp)?;
    for (i, run) in exp.runs.iter().enumerate() {
        let spec = &run.spec;
        if crate::data::archive::needs_fetch(&spec.data.source) {
            continue;
        }
        let source = std::path::Path::new(&spec.data.source);
        let files = match data_files(spec) {
            Ok(files) => files,
            // A folder that is not there is the spec's mistake, found before any run starts.
            Err(e) if !source.exists() => return Err(exp.source.error(&["data", "source"], format!("{e:#}"))),
            Err(_) => continue,
        };
        let problems = [
            (&["model", "head", "classes"][..], head_mismatch(spec, &files.classes)),
            (&["loss", "class_weights"][..], weights_mismatch(spec, &files.classes)),
        ];
        if let Some((key, msg)) = problems.into_iter().find_map(|(k, m)| m.map(|m| (k, m))) {
            let mut e = exp.source.error(key, msg);
            if exp.runs.len() > 1 {
                e.message.push_str(&format!(" (run {} of the grid)", i + 1));
            }
            return Err(e);
        }
    }
    Ok(())
}

/// intra-op threads = `threads`, else `RUNNER_THREADS`, else cores; inter-op = 1.
/// Returns the intra-op count.
pub(super) fn configure_threads(threads: Option<i32>) -> i32 {
    static INTEROP: std::sync::Once = std::sync::Once::new();
    // libtorch accepts the inter-op count only once, before any parallel work.
    INTEROP.call_once(|| tch::set_num_interop_threads(1));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
    let threads = threads.filter(|n| *n > 0).unwrap_or_else(|| {
        std::env::var(crate::sys::env::THREADS).ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(cores)
    });
    tch::set_num_threads(threads);
    threads
}
