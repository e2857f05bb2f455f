//! Helpers shared by unit tests of several layers (compiled only for tests). They live
//! here, below every layer, so that no layer's tests import another layer's test code
//! (tests/it/architecture.rs checks it).

/// PyTorch's numbers for the toolkit's keys (scripts/make_toolkit_fixtures.py).
pub(crate) fn toolkit_fixture() -> serde_json::Value {
    serde_json::from_str(include_str!("../tests/fixtures/toolkit.json")).expect("toolkit.json is JSON")
}

/// A JSON array of numbers.
pub(crate) fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().expect("an array").iter().map(|x| x.as_f64().expect("a number")).collect()
}

/// Class folders under `root`, each with `n` files named `000.jpg`, `001.jpg`, ... (contents
/// irrelevant: discovery does not decode).
pub(crate) fn touch_tree(root: &std::path::Path, classes: &[(&str, usize)]) {
    for (c, n) in classes {
        std::fs::create_dir_all(root.join(c)).unwrap();
        for i in 0..*n {
            std::fs::write(root.join(c).join(format!("{i:03}.jpg")), b"x").unwrap();
        }
    }
}
