//! Weights from a URL, against a loopback HTTP server: download into the
//! cache, cache hit, checksum mismatch, server down.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use runner::sys::fetch::fetch;
use sha2::{Digest, Sha256};

/// Serves `body` under any path ending in `name`.
fn serve(name: &str, body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    crate::common::serve_files([(name.to_string(), body)].into())
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn downloads_once_then_hits_the_cache() {
    let body: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let prefix = &hex(&body)[..8];
    let (base, hits) = serve(&format!("tiny-{prefix}.pth"), body.clone());
    let cache = tempfile::tempdir().unwrap();
    // torchvision-style name: the sha256 prefix in the file name is checked.
    let url = format!("{base}/models/tiny-{prefix}.pth");
    let path = fetch(&url, None, cache.path()).unwrap();
    assert_eq!(path, cache.path().join(format!("weights/tiny-{prefix}.pth")));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(fetch(&url, None, cache.path()).unwrap(), path);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "a cached file is not downloaded again");
}

#[test]
fn a_checksum_mismatch_deletes_the_download_and_fails() {
    let body = b"not the weights you asked for".to_vec();
    let (base, _) = crate::common::serve_files(
        [("w.safetensors".to_string(), body.clone()), ("resnet18-f37072fd.pth".to_string(), body)].into(),
    );
    let cache = tempfile::tempdir().unwrap();
    let url = format!("{base}/w.safetensors");
    let err = fetch(&url, Some("0123456789abcdef"), cache.path()).unwrap_err().to_string();
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(err.contains(&format!("put it at {}", cache.path().join("weights/w.safetensors").display())), "{err}");
    let left: Vec<_> = std::fs::read_dir(cache.path().join("weights")).unwrap().collect();
    assert!(left.is_empty(), "nothing is left in the cache: {left:?}");
    // The name's own prefix is checked too.
    let err = fetch(&format!("{base}/resnet18-f37072fd.pth"), None, cache.path()).unwrap_err().to_string();
    assert!(err.contains("expected f37072fd"), "{err}");
}

#[test]
fn server_down_says_where_to_put_the_file() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cache = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/models/resnet18-f37072fd.pth");
    let err = fetch(&url, None, cache.path()).unwrap_err().to_string();
    assert!(err.starts_with(&format!("cannot get {url}: ")), "{err}");
    assert!(
        err.ends_with(&format!(
            "Download the file by hand and put it at {}",
            cache.path().join("weights/resnet18-f37072fd.pth").display()
        )),
        "{err}"
    );
}
