//! `runner summary`: shapes, parameters and the freeze plan per layer.

use std::path::Path;

use anyhow::anyhow;
use runner::Result;
use tch::{Device, Tensor};

use runner::config::spec::{Classes, PhaseSpec};
use runner::model::{Backbone, FreezePlan, Schedule, parameter_count};

use super::{SetFlags, load, truncate};

#[derive(clap::Args)]
pub struct Args {
    /// A spec file (its first run) or a backbone name.
    pub target: String,
    #[command(flatten)]
    pub set: SetFlags,
    /// Input size for a backbone name (a spec uses its data.image_size).
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(i64).range(32..=runner::config::spec::MAX_IMAGE_SIZE as i64))]
    pub image_size: i64,
}

pub fn run(args: Args) -> Result<()> {
    let Args { target, set: SetFlags { set }, image_size } = args;
    summary(&target, &set, image_size)
}

/// What `runner summary` shows: a backbone at an input size with a head, and the phases of a spec.
struct Target {
    backbone: Backbone,
    size: i64,
    classes: i64,
    hidden: Vec<i64>,
    pool: runner::config::spec::Pool,
    phases: Vec<PhaseSpec>,
}

/// A backbone name, or a spec file (its first run) with its `--set` overrides.
fn target(target: &str, set: &[String], image_size: i64) -> Result<Target> {
    if let Some(backbone) = Backbone::from_name(target) {
        super::check_patch_size(backbone, image_size as u32)?;
        return Ok(Target {
            backbone,
            size: image_size,
            classes: 1000,
            hidden: vec![],
            pool: Default::default(),
            phases: vec![],
        });
    }
    let path = Path::new(target);
    if !path.exists() && !target.ends_with(".toml") {
        let names: Vec<_> = Backbone::ALL.iter().map(|b| b.name()).collect();
        return Err(anyhow!("`{target}` is neither a spec file nor a backbone ({})", names.join(", ")).into());
    }
    let exp = load(path, set)?;
    if exp.runs.len() > 1 {
        println!("(showing the first of {} runs of the grid)", exp.runs.len());
    }
    let spec = exp.runs[0].spec.clone();
    let classes = match spec.model.head.classes {
        Classes::Count(n) => n as i64,
        Classes::Auto => match runner::run::data_files(&spec) {
            Ok(files) => files.classes.len() as i64,
            Err(_) => {
                println!("(data.source not readable: the head is shown with 2 classes)");
                2
            }
        },
    };
    let hidden = spec.model.head.hidden.iter().map(|&h| h as i64).collect();
    Ok(Target {
        backbone: spec.model.backbone,
        size: spec.data.image_size as i64,
        classes,
        hidden,
        pool: spec.model.pool.unwrap_or_default(),
        phases: spec.phases,
    })
}

/// `runner summary`: what torchsummary prints, plus the freeze plan of each phase.
fn summary(target_name: &str, set: &[String], image_size: i64) -> Result<()> {
    let Target { backbone, size, classes, hidden, pool, phases } = target(target_name, set, image_size)?;
    // With layer-wise rates, a trainable layer shows its learning rate instead of "trainable".
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let model =
        runner::model::Classifier::with_hidden(backbone, &vs.root(), classes, 0.0, &hidden, Default::default(), pool);
    let layers = model.backbone.layers();
    let schedule = Schedule::new(&phases, layers.len());
    let trainable = |p: usize, layer: Option<usize>| {
        if !schedule.layer_wise(p) {
            return "trainable".to_string();
        }
        let lr = schedule.base_lr(p) * schedule.scale(p, layer);
        if lr.is_nan() { "lr found by the range test".to_string() } else { format!("lr {lr:.2e}") }
    };
    let plans: Vec<FreezePlan> = (0..phases.len()).map(|p| schedule.plan(p, 0)).collect();
    print!("{:>5}  {:<16} {:<20} {:>10}  {:<3}", "index", "layer", "output shape", "params", "bn");
    for p in &phases {
        print!("  {:<12}", truncate(&p.name, 12));
    }
    println!();
    let mut x = Tensor::zeros([1, 3, size, size], (tch::Kind::Float, Device::Cpu));
    let mut total = 0;
    let mut trainable_params = vec![0i64; phases.len()];
    tch::no_grad(|| {
        for (i, layer) in layers.iter().enumerate() {
            x = model.backbone.forward_layer(i, &x, runner::model::Mode::Infer);
            let params = parameter_count(&vs, &layer.prefixes);
            total += params;
            print!(
                "{i:>5}  {:<16} {:<20} {params:>10}  {:<3}",
                truncate(&layer.name, 16),
                format!("{:?}", x.size()),
                if layer.has_batchnorm { "yes" } else { "" }
            );
            for (p, plan) in plans.iter().enumerate() {
                let state = if plan.is_frozen(i) { "frozen".to_string() } else { trainable(p, Some(i)) };
                if !plan.is_frozen(i) {
                    trainable_params[p] += params;
                }
                print!("  {state:<12}");
            }
            println!();
        }
        let head = model.head(&model.finish(&x), false);
        let params = parameter_count(&vs, &[backbone.classifier_prefix().to_string()]);
        total += params;
        print!(
            "{:>5}  {:<16} {:<20} {params:>10}  {:<3}",
            "",
            format!("head {}", backbone.classifier_prefix()),
            format!("{:?}", head.size()),
            ""
        );
        for (p, t) in trainable_params.iter_mut().enumerate() {
            *t += params;
            print!("  {:<12}", trainable(p, None));
        }
        println!();
    });
    println!("total parameters: {total}");
    for (p, t) in phases.iter().zip(&trainable_params) {
        println!("phase {}: {t} trainable ({:.1}%)", p.name, 100.0 * *t as f64 / total.max(1) as f64);
    }
    Ok(())
}
