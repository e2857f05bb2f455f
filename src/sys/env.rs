//! Every environment variable that configures runner itself, in one table. Spec keys come
//! as `RUNNER_SPEC__DATA__BATCH_SIZE=16` (see experiment.rs); a name in this table never is one.

/// The per-user cache (libtorch, weights, datasets, tools); default `~/.cache/runner`.
pub(crate) const CACHE: &str = "RUNNER_CACHE";
/// Intra-op threads; default the machine's cores.
pub(crate) const THREADS: &str = "RUNNER_THREADS";
/// Fetch known datasets' archives from `<URL>/<file name>` instead of their hosts.
pub(crate) const DATASETS_MIRROR: &str = "RUNNER_DATASETS_MIRROR";
/// `name=sha256,...`: the digests a mirror's archives have, in place of the pinned ones.
pub(crate) const DATASETS_SHA256: &str = "RUNNER_DATASETS_SHA256";
/// `0`/`1`: channels-last memory (default: on the CPU, and on CUDA for convolutional backbones).
pub(crate) const CHANNELS_LAST: &str = "RUNNER_CHANNELS_LAST";
/// The feature cache's memory budget in MiB.
pub(crate) const FEATURE_CACHE_MB: &str = "RUNNER_FEATURE_CACHE_MB";
/// The folder where frozen features are kept for later runs, or `off`; default
/// `<RUNNER_CACHE>/features`.
pub(crate) const FEATURE_STORE: &str = "RUNNER_FEATURE_STORE";
/// The feature store's size budget in MiB (default 10,240); the least recently used go first.
pub(crate) const FEATURE_STORE_MB: &str = "RUNNER_FEATURE_STORE_MB";
/// The folder of the decoded-image store, or `off`; default `<RUNNER_CACHE>/images`.
pub(crate) const IMAGE_STORE: &str = "RUNNER_IMAGE_STORE";
/// The image store's size budget in MiB (default 102,400); the least recently used go first.
pub(crate) const IMAGE_STORE_MB: &str = "RUNNER_IMAGE_STORE_MB";
/// The most pixels an image file may decode to (default 89,478,485, PIL's limit); larger
/// files are skipped as decompression bombs.
pub(crate) const MAX_IMAGE_PIXELS: &str = "RUNNER_MAX_IMAGE_PIXELS";
/// The most a zip entry of a dataset may expand (default 200 times).
pub(crate) const MAX_ZIP_EXPANSION: &str = "RUNNER_MAX_ZIP_EXPANSION";
/// The most runs one spec's grid may expand into (default 10,000).
pub(crate) const MAX_GRID_RUNS: &str = "RUNNER_MAX_GRID_RUNS";
/// `system`: glibc's own malloc settings instead of runner's.
pub(crate) const MALLOC: &str = "RUNNER_MALLOC";
/// An MLflow tracking server's URL, for specs without `[tracking] mlflow`.
pub(crate) const MLFLOW_URI: &str = "RUNNER_MLFLOW_URI";
/// Set (to `portable`) in a process restarted with libtorch's paths pinned (sys/numerics.rs).
pub(crate) const NUMERICS_PINNED: &str = "RUNNER_NUMERICS_PINNED";
/// Tests only: stop at the named point and wait to be killed (failpoint.rs).
pub(crate) const FAILPOINT: &str = "RUNNER_FAILPOINT";
/// Tests only: the file a failpoint creates when it is reached.
pub(crate) const FAILPOINT_MARKER: &str = "RUNNER_FAILPOINT_MARKER";

/// Every variable above.
pub const ALL: &[&str] = &[
    CACHE,
    THREADS,
    DATASETS_MIRROR,
    DATASETS_SHA256,
    CHANNELS_LAST,
    FEATURE_CACHE_MB,
    FEATURE_STORE,
    FEATURE_STORE_MB,
    IMAGE_STORE,
    IMAGE_STORE_MB,
    MAX_IMAGE_PIXELS,
    MAX_ZIP_EXPANSION,
    MAX_GRID_RUNS,
    MALLOC,
    MLFLOW_URI,
    NUMERICS_PINNED,
    FAILPOINT,
    FAILPOINT_MARKER,
];

/// The settings whose value is checked at start, with what they take.
const CHECKED: &[(&str, Kind)] = &[
    (THREADS, Kind::Positive),
    (CHANNELS_LAST, Kind::ZeroOrOne),
    (FEATURE_CACHE_MB, Kind::Whole),
    (FEATURE_STORE_MB, Kind::Whole),
    (IMAGE_STORE_MB, Kind::Whole),
    (MAX_IMAGE_PIXELS, Kind::Positive),
    (MAX_ZIP_EXPANSION, Kind::Positive),
    (MAX_GRID_RUNS, Kind::Positive),
];

#[derive(Clone, Copy)]
enum Kind {
    Positive,
    Whole,
    ZeroOrOne,
}

/// Every runner setting in the environment that holds a value it cannot take, named with
/// what it takes: such a value is refused at start rather than ignored.
pub fn check() -> Result<(), String> {
    for (name, kind) in CHECKED {
        let Some(raw) = std::env::var_os(name) else { continue };
        let value = raw.to_string_lossy();
        let v = value.trim();
        let ok = match kind {
            Kind::Positive => v.parse::<u64>().is_ok_and(|n| n > 0),
            Kind::Whole => v.parse::<u64>().is_ok(),
            Kind::ZeroOrOne => v == "0" || v == "1",
        };
        if !ok {
            let expected = match kind {
                Kind::Positive => "a whole number of 1 or more",
                Kind::Whole => "a whole number",
                Kind::ZeroOrOne => "0 or 1",
            };
            return Err(format!("{name}: expected {expected}, found {value:?}"));
        }
    }
    if let Some(uri) = std::env::var_os(MLFLOW_URI).filter(|u| !u.is_empty()) {
        let uri = uri.to_string_lossy();
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(format!(
                "{MLFLOW_URI}: expected an http(s) URL of a tracking server, found {:?}",
                crate::sys::redact::credentials(&uri)
            ));
        }
    }
    Ok(())
}

/// A limit: the positive integer in variable `name`, else `default`.
pub(crate) fn limit(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

/// Whether `name` configures runner (and so is not a spec key).
pub(crate) fn is_setting(name: &str) -> bool {
    ALL.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_docs_name_every_user_facing_variable() {
        let docs = include_str!("../../docs/spec.md");
        for name in ALL.iter().filter(|n| !n.starts_with("RUNNER_FAILPOINT")) {
            assert!(docs.contains(&format!("`{name}")), "docs/spec.md does not mention {name}");
        }
        assert!(is_setting("RUNNER_CACHE") && !is_setting("RUNNER_SPEC__DATA__BATCH_SIZE"));
    }
}
