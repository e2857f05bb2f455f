//! The spec's unit tests: parsing, defaults, validation and error locations.

use super::*;

const SPEC: &str = r#"
name = "t"
[data]
source = "d"
[model]
backbone = "efficientnet_lite0"
[[phases]]
name = "a"
epochs = 2
freeze_up_to = "all"
optimizer = { kind = "rmsprop", lr = 1e-3 }
[[phases]]
name = "b"
epochs = 1
freeze_up_to = 10
optimizer = { kind = "rmsprop", lr_factor = 0.1 }
"#;

fn parse(text: &str) -> Result<Spec, SpecError> {
    Spec::from_str_at(text, Path::new("t.toml"))
}

#[test]
fn defaults_fill_in_and_lr_factor_resolves() {
    let s = parse(SPEC).unwrap();
    assert_eq!(s.data.image_size, 224);
    assert_eq!(s.data.batch_size, 32);
    assert_eq!(s.model.weights, "imagenet");
    assert_eq!(s.model.head.classes, Classes::Auto);
    assert_eq!(s.phases[1].freeze_up_to, FreezeUpTo::Count(10));
    let lrs = crate::model::Schedule::new(&s.phases, 18);
    assert!((lrs.base_lr(1) - 1e-4).abs() < 1e-12);
    assert_eq!(s.total_epochs(), 3);
}

#[test]
fn schedule_keys_are_checked() {
    let e =
        parse(&SPEC.replace("freeze_up_to = 10\n", "freeze_up_to = 10\nschedule = { kind = \"step\" }\n")).unwrap_err();
    assert_eq!(e.key, "phases.1.schedule.step_size");
    let e = parse(&SPEC.replace("freeze_up_to = 10\n", "freeze_up_to = 10\nbatchnorm = \"froze\"\n")).unwrap_err();
    assert_eq!(e.message, "unknown value \"froze\", did you mean \"frozen\"?");
}

#[test]
fn run_id_ignores_key_order_and_explicit_defaults() {
    let id = parse(SPEC).unwrap().config_id();
    assert_eq!(id.len(), 10);
    let reordered = SPEC.replace(
        "name = \"t\"\n[data]\nsource = \"d\"",
        "name = \"t\"\n[data]\nbatch_size = 32\nsource = \"d\"\nimage_size = 224",
    );
    assert_eq!(parse(&reordered).unwrap().config_id(), id);
    let changed = SPEC.replace("epochs = 2", "epochs = 3");
    assert_ne!(parse(&changed).unwrap().config_id(), id);
    // The resolved TOML parses back to the same spec.
    let s = parse(SPEC).unwrap();
    assert_eq!(parse(&s.to_toml()).unwrap(), s);
}

#[test]
fn errors_name_the_key_and_its_line() {
    let e = parse(&SPEC.replace("lr_factor = 0.1", "lr_factr = 0.1")).unwrap_err();
    assert_eq!(e.key, "phases.1.optimizer.lr_factr");
    assert_eq!(e.line_col, Some((16, 33)));
    assert_eq!(e.message, "unknown key `lr_factr`, did you mean `lr_factor`?");

    let e = parse(&SPEC.replace("lr = 1e-3", "lr_factor = 0.5")).unwrap_err();
    assert_eq!(e.key, "phases.0.optimizer.lr_factor");
    assert!(e.message.contains("first phase"), "{}", e.message);

    let e = parse(&SPEC.replace("kind = \"rmsprop\", lr = 1e-3", "kind = \"rmsprob\", lr = 1e-3")).unwrap_err();
    assert_eq!(e.key, "phases.0.optimizer.kind");
    assert_eq!(e.message, "unknown value \"rmsprob\", did you mean \"rmsprop\"?");

    let e = parse("name = \"t\"\n[data\n").unwrap_err();
    assert_eq!(e.line_col, Some((2, 6)));
    assert!(e.message.starts_with("invalid TOML"), "{}", e.message);

    let e = parse(&SPEC.replace("backbone = \"efficientnet_lite0\"", "backbone = \"resnet19\"")).unwrap_err();
    assert_eq!(e.to_string(), "t.toml:6:1: `model.backbone`: unknown value \"resnet19\", did you mean \"resnet18\"?");
}

#[test]
fn momentum_is_refused_where_the_optimizer_has_none_and_new_keys_keep_old_ids() {
    let e = parse(&SPEC.replace("{ kind = \"rmsprop\", lr = 1e-3 }", "{ kind = \"lion\", lr = 1e-4, momentum = 0.9 }"))
        .unwrap_err();
    assert_eq!(e.key, "phases.0.optimizer.momentum");
    assert!(e.message.contains("momentum is for kind = \"sgd\" or \"rmsprop\"; lion keeps"), "{}", e.message);
    let lamb = parse(&SPEC.replace("kind = \"rmsprop\", lr = 1e-3", "kind = \"lamb\", lr = 1e-3")).unwrap();
    assert_eq!(lamb.phases[0].optimizer.kind, OptimizerKind::Lamb);
    // Keys at their defaults stay out of the canonical form (old runs keep their ids) and are
    // written out in config.toml.
    let plain = parse(SPEC).unwrap();
    let spelled = parse(&SPEC.replace(
        "{ kind = \"rmsprop\", lr = 1e-3 }",
        "{ kind = \"rmsprop\", lr = 1e-3, decay_norm_and_bias = false }",
    ))
    .unwrap();
    assert_eq!(plain.canonical(), spelled.canonical());
    let written = plain.to_toml();
    for key in ["decay_norm_and_bias = false", "split_seed = 0", "calibrate = \"none\"", "cache = \"auto\""] {
        assert!(written.contains(key), "{key} in {written}");
    }
    assert!(!String::from_utf8(plain.canonical()).unwrap().contains("split_seed"));
}
