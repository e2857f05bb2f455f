//! Files from an http(s) URL (weights, dataset archives): downloaded once into the per-user cache,
//! checked against a sha256 (given in the spec, or the hex prefix torchvision
//! puts in its file names), and kept only when the check passes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use sha2::{Digest, Sha256};

/// The per-user cache: `$RUNNER_CACHE`, else `$XDG_CACHE_HOME/runner`, else `~/.cache/runner`.
pub(crate) fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(crate::sys::env::CACHE).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("runner")
}

/// sha256 of bytes, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, as lowercase hex.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The hex digits after the last `-` of a file name (`resnet18-f37072fd.pth` -> `f37072fd`).
pub(crate) fn name_hash_prefix(file: &str) -> Option<&str> {
    let stem = file.split('.').next()?;
    let (_, hex) = stem.rsplit_once('-')?;
    (hex.len() >= 8 && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())).then_some(hex)
}

/// The cache file for `url`: `<cache>/weights/<last path segment>`.
pub(crate) fn cache_path(cache: &Path, url: &str) -> Result<PathBuf> {
    let file = url.split(['?', '#']).next().unwrap_or(url).rsplit('/').next().unwrap_or("");
    if file.is_empty() || file.starts_with('.') {
        bail!("cannot tell a file name from the URL {url}");
    }
    Ok(cache.join("weights").join(file))
}

/// What the file's sha256 must be (or start with): the spec's, else the name's prefix.
fn expected_sha256<'a>(path: &'a Path, sha256: Option<&'a str>) -> Option<&'a str> {
    sha256.or_else(|| path.file_name().and_then(|n| n.to_str()).and_then(name_hash_prefix))
}

fn check(path: &Path, expected: Option<&str>) -> Result<()> {
    if let Some(want) = expected {
        let got = sha256_file(path)?;
        if !got.starts_with(&want.to_ascii_lowercase()) {
            bail!("sha256 mismatch: the file has {got}, expected {want}");
        }
    }
    Ok(())
}

/// Returns the cached file for `url`, downloading it first when it is not cached.
pub fn fetch(url: &str, sha256: Option<&str>, cache: &Path) -> Result<PathBuf> {
    let path = cache_path(cache, url)?;
    let expected = expected_sha256(&path, sha256);
    fetch_to(url, expected, &path)?;
    Ok(path)
}

/// Downloads `url` to `path` unless it is there already; checks it against `expected` either way.
pub(crate) fn fetch_to(url: &str, expected: Option<&str>, path: &Path) -> Result<()> {
    let path = path.to_path_buf();
    if path.is_file() {
        check(&path, expected).with_context(|| {
            format!("cached file {} does not match; delete it to download it again", path.display())
        })?;
        return Ok(());
    }
    let dir = path.parent().expect("cache path has a folder");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let part = path.with_extension("part");
    let result = download(url, &part).and_then(|()| check(&part, expected));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        bail!("cannot get {url}: {e:#}. Download the file by hand and put it at {}", path.display());
    }
    std::fs::rename(&part, &path).with_context(|| format!("cannot move the download into {}", path.display()))?;
    Ok(())
}

fn download(url: &str, to: &Path) -> Result<()> {
    let mut response = ureq::get(url).call().map_err(|e| anyhow::anyhow!("{e}"))?;
    let len =
        response.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let bar = crate::sys::reporter::bar(len.unwrap_or(0), crate::sys::reporter::Unit::Bytes, "download");
    let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
    let mut file = std::fs::File::create(to).with_context(|| format!("cannot write {}", to.display()))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).context("download interrupted")?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).with_context(|| format!("cannot write {}", to.display()))?;
        total += n as u64;
        bar.set_position(total);
    }
    bar.finish_and_clear();
    if let Some(len) = len
        && len != total
    {
        bail!("download ended after {total} of {len} bytes");
    }
    file.sync_all().with_context(|| format!("cannot write {}", to.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_names_carry_a_hash_prefix() {
        assert_eq!(name_hash_prefix("resnet18-f37072fd.pth"), Some("f37072fd"));
        assert_eq!(name_hash_prefix("vgg16_bn-6c64b313.pth"), Some("6c64b313"));
        assert_eq!(name_hash_prefix("model.safetensors"), None);
        assert_eq!(name_hash_prefix("my-weights.pth"), None);
    }
}
