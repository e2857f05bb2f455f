//! Weight files as PyTorch writes them (tests/fixtures/tiny_*.pth, from
//! scripts/make_pickle_fixtures.py), hostile and broken ones, and files that do
//! not fit the model.

use std::collections::BTreeMap;
use std::path::Path;

use runner::model::weights::{load_into, read};
use tch::{Device, Kind, Tensor, nn};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn entries(file: &str) -> BTreeMap<String, Tensor> {
    read(&Path::new(FIXTURES).join(file)).unwrap().into_iter().collect()
}

#[test]
fn zip_and_legacy_torch_save_files_read_the_same() {
    for file in ["tiny_zip.pth", "tiny_legacy.pth"] {
        let sd = entries(file);
        assert_eq!(sd.len(), 4, "{file}");
        let conv = Vec::<f32>::try_from(sd["conv.weight"].flatten(0, -1)).unwrap();
        assert_eq!(conv, (0..8).map(|i| i as f32 / 8.0).collect::<Vec<_>>(), "{file}");
        assert_eq!(sd["conv.weight"].size(), vec![2, 1, 2, 2]);
        // A transposed view is rebuilt from its storage, offset and strides.
        let fc = Vec::<f32>::try_from(sd["fc.weight"].contiguous().flatten(0, -1)).unwrap();
        assert_eq!(fc, vec![-2.5, 0.5, -1.5, 1.5, -0.5, 2.5], "{file}");
        assert_eq!(sd["bn.num_batches_tracked"].kind(), Kind::Int64);
        assert_eq!(i64::try_from(&sd["bn.num_batches_tracked"]).unwrap(), 7);
    }
}

#[test]
fn hostile_and_broken_files_get_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = std::fs::read(Path::new(FIXTURES).join("tiny_legacy.pth")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // A legacy header (magic number, protocol 1001, system info), then an object pickle calling os.system.
        (
            "evil.pth",
            [
                &b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."[..],
                b"\x80\x02M\xe9\x03.\x80\x02}.",
                b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R.",
            ]
            .concat(),
            "refusing global `os.system`",
        ),
        ("truncated.pth", legacy[..legacy.len() - 40].to_vec(), "truncated"),
        ("magic.pth", [&[0x80u8, 0x02, b'K', 0x05, b'.'][..], &legacy[20..]].concat(), "bad magic number"),
        ("empty.pth", vec![], "not a safetensors, .pth or legacy torch.save file"),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = format!("{:#}", read(&path).unwrap_err());
        assert!(err.contains(expected), "{name}: {err}");
        assert!(err.contains(name), "{name}: the error names the file: {err}");
    }
}

#[test]
fn a_file_that_does_not_fit_lists_the_mismatches() {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let _conv = (&root / "conv").zeros("weight", &[2, 1, 2, 2]);
    let _fc = (&root / "fc").zeros("weight", &[3, 3]);
    let _extra = (&root / "other").zeros("bias", &[4]);
    let path = Path::new(FIXTURES).join("tiny_zip.pth");
    let err = load_into(&mut vs, read(&path).unwrap(), None, &path).unwrap_err().to_string();
    assert!(err.contains("do not match the model (3 problems)"), "{err}");
    assert!(err.contains("`fc.weight` has shape [3, 2] in the file, [3, 3] in the model"), "{err}");
    assert!(err.contains("`other.bias` missing from the file"), "{err}");
    assert!(err.contains("`bn.running_mean` in the file has no place in the model"), "{err}");
    // Nothing was copied: the matching `conv.weight` is still zero.
    assert_eq!(f64::try_from(vs.variables()["conv.weight"].abs().sum(Kind::Double)).unwrap(), 0.0);
}
