//! Pretrained weights: finding them, reading them (safetensors, zip-format
//! `.pth`, legacy `torch.save`) and copying them into a model by name.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use tch::{Tensor, nn};

use super::pickle;
use crate::model::{Backbone, has_prefix};
use crate::sys::fetch::{self as download, cache_dir, sha256_file};

/// What `model.weights` asks for, resolved to a file (or to random initialisation).
#[derive(Debug, Clone, PartialEq)]
pub enum WeightsSource {
    None,
    File(PathBuf),
}

/// Resolves `model.weights` for `backbone` to a file, downloading URLs into the
/// cache (checked against `sha256`, or the hex prefix in the file's name).
pub fn resolve(backbone: Backbone, weights: &str, sha256: Option<&str>) -> Result<WeightsSource> {
    let cache = cache_dir();
    match weights {
        "none" => Ok(WeightsSource::None),
        "imagenet" => {
            let default = backbone.default_weights();
            let path = cache.join("weights").join(default.file);
            if let Some(url) = backbone.weights_url() {
                return download::fetch(&url, sha256.or(default.sha256_prefix), &cache)
                    .map(WeightsSource::File)
                    .map_err(|e| anyhow::anyhow!("{e:#}, or set model.weights to a local file"));
            }
            if !path.is_file() {
                bail!(
                    "pretrained weights for `{backbone}` are not in the cache folder {}: expected {}; {}; \
                     or set model.weights to a local file",
                    path.parent().map(|p| p.display().to_string()).unwrap_or_default(),
                    default.file,
                    default.fetch_hint
                );
            }
            let got = sha256_file(&path)?;
            if let Some(want) = sha256.or(default.sha256_prefix)
                && !got.starts_with(want)
            {
                bail!(
                    "pretrained weights {} are corrupt (sha256 {got} does not start with {want}); delete the file and \
                     fetch it again: {}",
                    path.display(),
                    default.fetch_hint
                );
            }
            Ok(WeightsSource::File(path))
        }
        url if url.starts_with("http://") || url.starts_with("https://") => download::fetch(url, sha256, &cache)
            .map(WeightsSource::File)
            .map_err(|e| anyhow::anyhow!("{e:#}, or set model.weights to a local file")),
        path => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!("weights file {} not found", path.display());
            }
            if let Some(want) = sha256 {
                let got = sha256_file(&path)?;
                if !got.starts_with(want) {
                    bail!("weights file {} has sha256 {got}, expected {want}", path.display());
                }
            }
            Ok(WeightsSource::File(path))
        }
    }
}

/// Reads a weights file into (name, tensor) pairs, whatever its format.
pub fn read(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let mut head = [0u8; 9];
    let (n, len) = std::fs::File::open(path)
        .and_then(|mut f| Ok((f.read(&mut head)?, f.metadata()?.len())))
        .with_context(|| format!("cannot read weights file {}", path.display()))?;
    let head = &head[..n];
    // safetensors: an 8-byte little-endian header length, then the JSON header. Checked
    // before the pickle's 0x80: a header length whose low byte is 0x80 starts with it too.
    let safetensors = n == 9
        && head[8] == b'{'
        && u64::from_le_bytes(head[..8].try_into().expect("8 bytes")).checked_add(8).is_some_and(|end| end <= len);
    let entries = if safetensors {
        Tensor::read_safetensors(path).with_context(|| format!("cannot read safetensors file {}", path.display()))?
    } else if head.starts_with(b"PK") {
        let file = std::fs::File::open(path).with_context(|| format!("cannot read weights file {}", path.display()))?;
        pickle::read_zip_state_dict(std::io::BufReader::new(file))
            .with_context(|| format!("cannot read zip-format weights {}", path.display()))?
    } else if head.first() == Some(&0x80) {
        let data = std::fs::read(path).with_context(|| format!("cannot read weights file {}", path.display()))?;
        pickle::read_legacy_state_dict(&data).with_context(|| format!("cannot read weights file {}", path.display()))?
    } else {
        Tensor::read_safetensors(path)
            .with_context(|| format!("{} is not a safetensors, .pth or legacy torch.save file", path.display()))?
    };
    Ok(entries)
}

/// Entries of a reference state_dict that have no variable here on purpose.
fn ignorable(name: &str, skip: Option<&str>) -> bool {
    name.ends_with(".num_batches_tracked") || skip.is_some_and(|p| has_prefix(name, p))
}

/// Copies `entries` into the variables of `vs` by name. Variables under
/// `skip` (the replaced classifier) are left as initialised. Every other
/// variable must be present with the same shape; the error lists the first
/// mismatches either way.
pub fn load_into(
    vs: &mut nn::VarStore,
    entries: Vec<(String, Tensor)>,
    skip: Option<&str>,
    origin: &Path,
) -> Result<()> {
    let vars = vs.variables();
    let file: BTreeMap<String, Tensor> = entries.into_iter().filter(|(n, _)| !ignorable(n, skip)).collect();
    let wanted: BTreeSet<&String> = vars.keys().filter(|n| !skip.is_some_and(|p| has_prefix(n, p))).collect();
    let mut problems = vec![];
    for name in &wanted {
        match file.get(*name) {
            None => problems.push(format!("`{name}` missing from the file")),
            Some(t) if t.size() != vars[*name].size() => problems.push(format!(
                "`{name}` has shape {:?} in the file, {:?} in the model",
                t.size(),
                vars[*name].size()
            )),
            Some(_) => {}
        }
    }
    for name in file.keys().filter(|n| !wanted.contains(n)) {
        problems.push(format!("`{name}` in the file has no place in the model"));
    }
    if !problems.is_empty() {
        let shown: Vec<_> = problems.iter().take(5).cloned().collect();
        bail!(
            "weights {} do not match the model ({} problems): {}{}",
            origin.display(),
            problems.len(),
            shown.join("; "),
            if problems.len() > 5 { "; ..." } else { "" }
        );
    }
    tch::no_grad(|| {
        for name in wanted {
            let mut var = vars[name].shallow_clone();
            var.copy_(&file[name].to_kind(var.kind()));
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_safetensors_header_length_ending_in_0x80_is_not_taken_for_a_pickle() {
        // A header of 0x180 bytes: the file starts with 0x80, as a pickle does.
        let mut header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_vec();
        header.resize(0x180, b' ');
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&header);
        file.extend_from_slice(&2.5f32.to_le_bytes());
        assert_eq!(file[0], 0x80);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("best.safetensors");
        std::fs::write(&path, &file).unwrap();
        let entries = read(&path).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].0.as_str(), entries[0].1.double_value(&[0])), ("w", 2.5));
    }
}
