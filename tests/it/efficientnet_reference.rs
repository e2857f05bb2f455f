//! The loaded efficientnet_lite0 ImageNet weights give the reference
//! implementation's logits. The expected values come from
//! scripts/make_fixtures.py (PyTorch + efficientnet-lite-pytorch); the inputs
//! are recomputed here from the same formula, so no Python is needed.

use crate::common::formula_inputs;
use runner::config::spec::BatchNormPolicy;
use runner::model::weights;
use runner::model::{Backbone, Classifier};
use tch::{Device, Kind, Tensor, nn};

#[test]
fn pretrained_logits_match_the_reference() {
    let path = match weights::resolve(Backbone::EfficientnetLite0, "imagenet", None) {
        Ok(weights::WeightsSource::File(p)) => p,
        other => panic!("the pretrained weights are needed (scripts/test.sh fetches them): {other:?}"),
    };
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/efficientnet_lite0_logits.json")).expect("fixture parses");

    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = Classifier::new(Backbone::EfficientnetLite0, &vs.root(), 1000, 0.2);
    // Keep the original 1000-class `_fc` this time: nothing is skipped.
    weights::load_into(&mut vs, weights::read(&path).unwrap(), None, &path).unwrap();

    for case in fixture["cases"].as_array().unwrap() {
        let (batch, size) = (case["batch"].as_u64().unwrap() as usize, case["size"].as_u64().unwrap() as usize);
        let expected: Vec<f64> = case["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        let expected = Tensor::from_slice(&expected).view([batch as i64, 1000]);
        let got = tch::no_grad(|| model.forward(&formula_inputs(batch, size), 0, BatchNormPolicy::AllFrozen, false))
            .to_kind(Kind::Double);
        let rel = f64::try_from((&got - &expected).abs().max()).unwrap() / f64::try_from(expected.abs().max()).unwrap();
        println!("efficientnet_lite0 at {size}px: max abs error / max |logit| = {rel:.2e}");
        // The fixture was computed by PyTorch on another processor: float32 sums in another
        // order (AVX-512 or AVX2, Intel or AMD) move logits by about 1e-6 of the largest after
        // 20-50 layers (measured 5e-8 to 3.7e-6); a wrong layer is off by 1e-2 or more.
        assert!(rel < 1e-4, "{size}px: max abs error relative to max |logit| is {rel:e}");
        let top5: Vec<i64> = Vec::try_from(got.topk(5, 1, true, true).1.flatten(0, -1)).unwrap();
        let want: Vec<i64> = case["top5"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()))
            .collect();
        assert_eq!(top5, want, "{size}px top-5 classes");
    }
}
