//! Every backbone against its reference implementation (torchvision), on
//! weights both sides compute from a formula (scripts/make_backbone_fixtures.py
//! wrote the expected values), plus output shapes and the flat layer lists.

use crate::common::formula_inputs;
use runner::config::spec::BatchNormPolicy;
use runner::config::spec::Pool;
use runner::model::{Backbone, Classifier};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor, nn};

/// Fills every variable from the fixture script's formula; returns the digest of the name listing.
fn formula_weights(vs: &nn::VarStore) -> (usize, String) {
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut listing = String::new();
    tch::no_grad(|| {
        for (k, name) in names.iter().enumerate() {
            let mut t = vars[*name].shallow_clone();
            let shape = t.size();
            let n = t.numel();
            let values: Vec<f32> = (0..n)
                .map(|j| {
                    let b = (0.37 * j as f64 + 0.11 * k as f64).sin();
                    let v = if name.ends_with("running_var") {
                        1.0 + 0.25 * b * b
                    } else if shape.len() == 1 && name.ends_with("weight") {
                        1.0 + 0.1 * b
                    } else if shape.len() == 1 {
                        0.1 * b
                    } else {
                        b * 2.0 / ((n as i64 / shape[0]) as f64).sqrt()
                    };
                    v as f32
                })
                .collect();
            t.copy_(&Tensor::from_slice(&values).view(shape.as_slice()));
            listing.push_str(&format!("{name} {shape:?}\n"));
        }
    });
    (names.len(), Sha256::digest(listing.as_bytes()).iter().map(|b| format!("{b:02x}")).collect())
}

/// The fixture's image side: 64, or four patches for a ViT (64 for ViT-B/16, 56 for DINOv2).
fn test_size(b: Backbone) -> usize {
    b.patch_size().map_or(64, |p| 4 * p as usize)
}

/// Every `step`-th value of fixture array `key` (rows flattened).
fn fixture_values(entry: &serde_json::Value, key: &str) -> Vec<f64> {
    let flat = |v: &serde_json::Value| match v.as_array() {
        Some(row) => row.iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>(),
        None => vec![v.as_f64().unwrap()],
    };
    entry[key].as_array().unwrap_or_else(|| panic!("fixture has no {key}")).iter().flat_map(flat).collect()
}

#[test]
fn logits_match_torchvision_on_formula_weights() {
    let fixture: serde_json::Value = serde_json::from_str(include_str!("../fixtures/backbones.json")).unwrap();
    // Every backbone but efficientnet_lite0, whose reference is not torchvision's
    // (tests/it/efficientnet_reference.rs): a new backbone is compared as soon as it is listed.
    for b in Backbone::ALL.into_iter().filter(|b| *b != Backbone::EfficientnetLite0) {
        let want = &fixture[b.name()];
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Classifier::new(b, &vs.root(), 1000, b.default_dropout());
        let (count, digest) = formula_weights(&vs);
        let has_running_stats = vs.variables().keys().any(|k| k.ends_with(".running_mean"));
        assert_eq!(has_running_stats, b.has_batchnorm(), "{b}: Backbone::has_batchnorm");
        assert_eq!(count as u64, want["entries"].as_u64().unwrap(), "{b}: number of state_dict entries");
        assert_eq!(digest, want["names_sha256"].as_str().unwrap(), "{b}: state_dict names and shapes");
        let x = formula_inputs(2, test_size(b));
        let logits = tch::no_grad(|| model.forward(&x, 0, BatchNormPolicy::AllFrozen, false)).to_kind(Kind::Double);
        assert_eq!(logits.size(), vec![2, 1000], "{b}: output shape");
        let got = logits.slice(1, 0, 1000, 10);
        let expected: Vec<f64> = want["every_10th"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        let expected = Tensor::from_slice(&expected).view([2, 100]);
        let max_abs = want["max_abs"].as_f64().unwrap();
        let rel = f64::try_from((&got - &expected).abs().max()).unwrap() / max_abs;
        println!("{b}: max abs error / max |logit| = {rel:.2e}");
        // The fixture was computed by PyTorch on another processor: float32 sums in another
        // order (AVX-512 or AVX2, Intel or AMD) move logits by about 1e-6 of the largest after
        // 20-50 layers (measured 5e-8 to 3.7e-6); a wrong layer is off by 1e-2 or more.
        assert!(rel < 1e-4, "{b}: relative error {rel:e}");
    }
}

#[test]
fn layer_lists_match_the_declared_counts_and_cover_every_parameter() {
    for b in Backbone::ALL {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Classifier::new(b, &vs.root(), 7, 0.0);
        let layers = model.backbone.layers();
        assert_eq!(layers.len(), b.layer_count(), "{b}");
        let prefixes: Vec<&String> = layers.iter().flat_map(|l| &l.prefixes).collect();
        for name in vs.variables().keys() {
            let in_layer = prefixes.iter().any(|p| runner::model::has_prefix(name, p));
            let in_head = runner::model::has_prefix(name, b.classifier_prefix());
            assert!(in_layer != in_head, "{b}: `{name}` must be in exactly one of a layer or the head");
        }
        // Shapes at a small size: the head sees (batch, classes).
        let out =
            tch::no_grad(|| model.forward(&formula_inputs(1, test_size(b)), 0, BatchNormPolicy::AllFrozen, false));
        assert_eq!(out.size(), vec![1, 7], "{b}");
    }
}

#[test]
fn the_new_backbones_train_two_phases_with_the_toolkit_and_print_their_layers_summary_and_predictions() {
    use crate::common::{only_run, runner, shapes, stderr, stdout, summary_json, tiny_spec};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = shapes(root, 2, 6);
    // (backbone, phase 2's freeze index, the new head's name, its input width)
    let cases = [
        (Backbone::ConvnextTiny, 19, "classifier.2", 768),
        (Backbone::ConvnextSmall, 37, "classifier.2", 768),
        (Backbone::MobilenetV3Small, 10, "classifier.3", 1024),
        (Backbone::MobilenetV3Large, 14, "classifier.3", 1280),
        (Backbone::EfficientnetB0, 14, "classifier.1", 1280),
        (Backbone::EfficientnetB1, 21, "classifier.1", 1280),
        (Backbone::EfficientnetB2, 21, "classifier.1", 1408),
        (Backbone::EfficientnetB3, 24, "classifier.1", 1536),
        (Backbone::EfficientnetV2S, 38, "classifier.1", 1280),
        (Backbone::VitB16, 12, "heads.head", 768),
        (Backbone::RegnetY800mf, 12, "fc", 784),
        // With `model.pool = "cls_mean"`: the head sees the class and mean patch tokens.
        (Backbone::Dinov2Vits14, 11, "head", 2 * 384),
        (Backbone::Dinov2Vitb14, 11, "head", 768),
    ];
    for (b, freeze, head, width) in cases {
        let name = b.name();
        let mut spec = tiny_spec(&data)
            .replace("name = \"tiny\"", &format!("name = \"{name}\""))
            .replace("efficientnet_lite0", name)
            .replace("freeze_up_to = 10", &format!("freeze_up_to = {freeze}"))
            // The toolkit on every backbone: weight EMA, label smoothing, layer-wise rates, TTA.
            .replace(
                "seed = 3\n",
                "seed = 3\nema = { decay = 0.9 }\n[loss]\nlabel_smoothing = 0.1\n[eval]\ntta = [\"hflip\"]\n",
            )
            .replace("momentum = 0.9 }", "momentum = 0.9, layer_decay = 0.8 }");
        if b.patch_size() == Some(14) {
            spec = spec.replace("image_size = 32", "image_size = 42");
        }
        if b == Backbone::Dinov2Vits14 {
            spec = spec.replace("weights = \"none\"", "weights = \"none\"\npool = \"cls_mean\"");
        }
        std::fs::write(root.join(format!("{name}.toml")), &spec).unwrap();
        let o = runner(root, &["run", &format!("{name}.toml"), "--out", "runs", "--quiet"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let run = only_run(&root.join("runs").join(name));
        let summary = summary_json(&run);
        assert_eq!((summary["status"].as_str(), summary["epochs"].as_u64()), (Some("completed"), Some(2)), "{name}");
        let log = std::fs::read_to_string(run.join("run.log")).unwrap();
        assert!(log.contains("phase 1 (head): trains on cached pooled features"), "{name}: {log}");
        assert!(log.contains(&format!("activations at layer {freeze} (")), "{name}: {log}");
        // The best weights hold the new head under the classifier's name.
        let best = tch::Tensor::read_safetensors(run.join("best.safetensors")).unwrap();
        let shape = best.iter().find(|(k, _)| *k == format!("{head}.weight")).map(|(_, t)| t.size());
        assert_eq!(shape, Some(vec![2, width]), "{name}");

        let o = runner(root, &["layers", name]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains(&format!("all {} layers", b.layer_count())), "{out}");
        let layer_norm_only = b.patch_size().is_some() || matches!(b, Backbone::ConvnextTiny | Backbone::ConvnextSmall);
        assert_eq!(out.contains("no running statistics"), layer_norm_only, "{out}");
        let o = runner(root, &["summary", &format!("{name}.toml")]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains(head), "{}", stdout(&o));
        // Predictions from the run's best weights (the head as trained, the pooling as specified).
        let image = data.join("circle/0000.jpg");
        let o = runner(root, &["predict", "--run", run.to_str().unwrap(), "--json", image.to_str().unwrap()]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let predictions: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let label = &predictions[0]["top"][0]["label"];
        assert!(summary["classes"].as_array().unwrap().contains(label), "{name}: {predictions}");
    }
    let bad = tiny_spec(&data).replace("efficientnet_lite0", "vit_b_16").replace("image_size = 32", "image_size = 40");
    let e = crate::common::spec_error(root, &bad);
    assert!(
        e.contains("`data.image_size`: vit_b_16 cuts images into 16x16 patches: expected a multiple of 16, found 40"),
        "{e}"
    );
    let bad = tiny_spec(&data).replace("weights = \"none\"", "weights = \"none\"\npool = \"cls_mean\"");
    let e = crate::common::spec_error(root, &bad);
    assert!(
        e.contains("spec.toml:12:1: `model.pool`: efficientnet_lite0 pools its last feature map by global average"),
        "{e}"
    );
}

#[test]
fn vit_position_embeddings_resize_as_torchvisions_interpolate_embeddings() {
    let fixture: serde_json::Value = serde_json::from_str(include_str!("../fixtures/backbones.json")).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = Classifier::new(Backbone::VitB16, &vs.root(), 1000, 0.0);
    formula_weights(&vs);
    let pos = vs.variables()["encoder.pos_embedding"].shallow_clone();
    for size in [96i64, 128] {
        let want = &fixture["vit_b_16_positions"][size.to_string()];
        let got = runner::model::interpolate_positions(&pos, size / 16).to_kind(Kind::Double);
        let shape: Vec<i64> = want["shape"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(got.size(), shape, "{size} px");
        let got = Vec::<f64>::try_from(got.flatten(0, -1).slice(0, 0, None, 97)).unwrap();
        let expected: Vec<f64> = want["every_97th"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(got.len(), expected.len());
        let err = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        println!("vit_b_16 positions at {size} px: max abs error {err:.2e}");
        // A bicubic resize of values of about 1: float32 rounding on any processor stays near
        // 1e-7 (measured 5e-10); a misplaced sample is off by 1e-2 or more.
        assert!(err < 1e-5, "{size} px: max abs error {err}");
    }
}

#[test]
fn dinov2_features_and_positions_match_the_reference() {
    let fixture: serde_json::Value = serde_json::from_str(include_str!("../fixtures/backbones.json")).unwrap();
    for b in [Backbone::Dinov2Vits14, Backbone::Dinov2Vitb14] {
        let want = &fixture[b.name()];
        let vs = nn::VarStore::new(Device::Cpu);
        // The pooled feature with `model.pool = "cls_mean"`: class token, then the mean patch token.
        let model = Classifier::with_hidden(b, &vs.root(), 1000, 0.0, &[], Default::default(), Pool::ClsMean);
        formula_weights(&vs);
        let x = formula_inputs(2, test_size(b));
        let features = tch::no_grad(|| model.features(&x, 0, BatchNormPolicy::AllFrozen, false)).to_kind(Kind::Double);
        let dim = model.backbone.feature_dim();
        assert_eq!(features.size(), vec![2, dim], "{b}: twice the width");
        let got = Vec::<f64>::try_from(features.slice(1, 0, None, 7).flatten(0, -1)).unwrap();
        let expected = fixture_values(want, "cls_mean_every_7th");
        assert_eq!(got.len(), expected.len(), "{b}");
        let err = got.iter().zip(&expected).map(|(a, e)| (a - e).abs()).fold(0.0, f64::max);
        let rel = err / want["cls_mean_max_abs"].as_f64().unwrap();
        println!("{b}: cls_mean features, max abs error / max |feature| = {rel:.2e}");
        // The fixture was computed by PyTorch on another processor: float32 sums in another
        // order (AVX-512 or AVX2, Intel or AMD) move logits by about 1e-6 of the largest after
        // 20-50 layers (measured 5e-8 to 3.7e-6); a wrong layer is off by 1e-2 or more.
        assert!(rel < 1e-4, "{b}: relative error {rel:e}");

        let prefix = "pos_embed";
        let pos = vs.variables()[prefix].shallow_clone();
        assert_eq!(pos.size(), vec![1, 37 * 37 + 1, dim / 2], "stored for 518 px as Meta's checkpoints");
        for size in [56i64, 98] {
            let want = &fixture[format!("{}_positions", b.name())][size.to_string()];
            let got = runner::model::interpolate_positions_dinov2(&pos, size / 14).to_kind(Kind::Double);
            let shape: Vec<i64> = want["shape"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
            assert_eq!(got.size(), shape, "{size} px");
            let got = Vec::<f64>::try_from(got.flatten(0, -1).slice(0, 0, None, 97)).unwrap();
            let expected = fixture_values(want, "every_97th");
            let err = got.iter().zip(&expected).map(|(a, e)| (a - e).abs()).fold(0.0, f64::max);
            println!("{b} positions at {size} px: max abs error {err:.2e}");
            // A bicubic resize of values of about 1: float32 rounding on any processor stays near
            // 1e-7 (measured 5e-10); a misplaced sample is off by 1e-2 or more.
            assert!(err < 1e-5, "{b} at {size} px: max abs error {err}");
            // A plain resize to the grid samples elsewhere: the offset matters.
            let plain = runner::model::interpolate_positions(&pos, size / 14).to_kind(Kind::Double);
            let plain = Vec::<f64>::try_from(plain.flatten(0, -1).slice(0, 0, None, 97)).unwrap();
            let off = plain.iter().zip(&expected).map(|(a, e)| (a - e).abs()).fold(0.0, f64::max);
            assert!(off > 1e-3, "{b}: torchvision's resize should not match DINOv2's ({off})");
        }
    }
}
