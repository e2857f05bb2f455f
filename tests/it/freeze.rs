//! A phase that freezes layers leaves their weights and BatchNorm statistics
//! bit-identical, and trains everything above them.

use std::collections::BTreeMap;

use runner::config::spec::Spec;
use runner::model::has_prefix;
use runner::run::prepare;
use runner::train::{Flow, Trainer};
use tch::{Device, Tensor};

/// Trains every epoch of phase `p` through the trainer's phase loop, as epoch `epoch` of `epoch`.
fn train(trainer: &mut Trainer, p: usize, epoch: usize) {
    let mut run = trainer.start_phase(p, 0);
    trainer.train_phase(&mut run, 0, epoch, epoch, |_| Ok(Flow::Continue)).unwrap();
}

fn snapshot(vs: &tch::nn::VarStore) -> BTreeMap<String, Tensor> {
    vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect()
}

#[test]
fn frozen_layers_are_bit_identical_after_a_phase() {
    let dir = tempfile::tempdir().unwrap();
    let data = crate::common::shapes(dir.path(), 2, 10);
    let spec = Spec::from_str_at(&crate::common::tiny_spec(&data), std::path::Path::new("tiny.toml")).unwrap();
    let mut trainer = prepare(&spec, Device::Cpu).unwrap();
    let layers = trainer.model().backbone.layers().to_vec();
    let frozen_prefixes: Vec<String> = layers[..10].iter().flat_map(|l| l.prefixes.clone()).collect();

    // Phase 2 of the spec: freeze_up_to = 10, SGD with momentum.
    let before = snapshot(trainer.vs());
    train(&mut trainer, 1, 1);
    let after = snapshot(trainer.vs());

    let (mut frozen, mut moved) = (0, 0);
    for (name, t) in &before {
        let same = t.equal(&after[name]);
        if frozen_prefixes.iter().any(|p| has_prefix(name, p)) {
            assert!(same, "frozen `{name}` changed");
            frozen += 1;
        } else if !same {
            moved += 1;
        }
    }
    // Weights, BatchNorm affine parameters and running statistics of 10 layers.
    assert!(frozen > 50, "only {frozen} frozen variables checked");
    for name in ["_blocks.12._bn1.running_mean", "_blocks.12._depthwise_conv.weight", "_conv_head.weight", "_fc.weight"]
    {
        assert!(!before[name].equal(&after[name]), "trainable `{name}` did not change");
    }
    assert!(moved > 20, "only {moved} trainable variables changed");

    // Phase 1: "all" freezes the whole backbone; only the head moves.
    let before = snapshot(trainer.vs());
    train(&mut trainer, 0, 2);
    let after = snapshot(trainer.vs());
    for (name, t) in &before {
        assert_eq!(t.equal(&after[name]), !name.starts_with("_fc."), "`{name}`");
    }
}

/// The BatchNorm policies: which running statistics may move in a phase.
/// Pretrained weights (fetched by scripts/test.sh), so that activations are
/// realistic: with random weights and inference-mode BatchNorm, ReLU6
/// saturates and no gradient reaches the backbone.
#[test]
fn batchnorm_policies() {
    let dir = tempfile::tempdir().unwrap();
    let data = crate::common::shapes(dir.path(), 2, 10);
    let text = crate::common::tiny_spec(&data).replace("weights = \"none\"", "weights = \"imagenet\"");
    let spec = Spec::from_str_at(&text, std::path::Path::new("tiny.toml")).unwrap();
    let moved = |policy: &str| {
        let mut spec = spec.clone();
        spec.phases[1].batchnorm = serde_json::from_value(serde_json::json!(policy)).unwrap();
        spec.phases[1].optimizer.lr = Some(1e-2.into());
        let mut trainer = prepare(&spec, Device::Cpu).unwrap();
        let before = snapshot(trainer.vs());
        train(&mut trainer, 1, 1);
        let after = snapshot(trainer.vs());
        let changed = |name: &str| !before[name].equal(&after[name]);
        (
            changed("_blocks.3._bn1.running_mean"),      // a frozen layer's statistics
            changed("_blocks.3._depthwise_conv.weight"), // a frozen layer's weights
            changed("_blocks.12._bn1.running_mean"),     // a trainable layer's statistics
            changed("_blocks.12._depthwise_conv.weight"),
        )
    };
    assert_eq!(moved("frozen"), (false, false, true, true));
    assert_eq!(moved("all_frozen"), (false, false, false, true));
    assert_eq!(moved("train"), (true, false, true, true));
}
