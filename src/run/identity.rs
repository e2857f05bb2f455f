//! What a run is: its resolved spec and the exact files of its data, hashed into
//! the run id that names its directory.

use anyhow::Result;

use crate::config::spec::Spec;
use crate::data::{self, FileSplit, ManifestRow};
use crate::sys::fetch::sha256_hex;

/// What a run is: its resolved spec and the exact files of its data.
pub struct Identity {
    /// Short hash of the canonical spec and the manifest's sha256.
    pub(crate) run_id: String,
    pub(crate) files: FileSplit,
    pub(crate) manifest: Vec<ManifestRow>,
    pub(crate) manifest_sha256: String,
}

pub(crate) use crate::sys::numerics::NUMERICS_VERSION;

/// The id of a run of `spec` on the data whose manifest.csv has this sha256.
pub fn run_id(spec: &Spec, manifest_sha256: &str) -> String {
    let mut bytes = spec.canonical();
    bytes.push(b'\n');
    bytes.extend_from_slice(manifest_sha256.as_bytes());
    // Runs of version 1 (before the version existed) hashed nothing more: they all get new ids.
    bytes.extend_from_slice(format!("\nnumerics {NUMERICS_VERSION}").as_bytes());
    sha256_hex(&bytes)[..10].to_string()
}

/// The files of a spec's data: its source made a folder (downloaded, extracted), then split.
pub fn data_files(spec: &Spec) -> Result<FileSplit> {
    let root = data::archive::materialize(&spec.data.source)?;
    let (split, seed) = (&spec.data.split, spec.data.split_seed);
    let files = match &spec.data.labels {
        // A relative table is in the data folder, as fastai's `from_csv` takes it.
        Some(table) => data::discover_table(&root, &root.join(table), split, seed)?,
        None => data::discover(&root, split, seed)?,
    };
    match (spec.data.folds, spec.data.fold) {
        (Some(k), Some(fold)) => data::folds::select(files, k, fold, seed),
        _ => Ok(files),
    }
}

/// Finds a run's data and hashes every file of it (no decoding) to name the run.
pub(crate) fn identify(spec: &Spec) -> Result<Identity> {
    let files = data_files(spec)?;
    let manifest = data::manifest(&files)?;
    let manifest_sha256 = sha256_hex(data::manifest_csv(&manifest).as_bytes());
    Ok(Identity { run_id: run_id(spec, &manifest_sha256), files, manifest, manifest_sha256 })
}
