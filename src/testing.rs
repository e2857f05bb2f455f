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
