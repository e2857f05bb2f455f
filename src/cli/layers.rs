//! `runner layers`: a backbone's flat layer list.

use anyhow::anyhow;
use runner::Result;
use tch::Device;

use runner::model::{Backbone, parameter_count};

#[derive(clap::Args)]
pub struct Args {
    /// Backbone name, e.g. efficientnet_lite0.
    pub backbone: String,
}

pub fn run(args: Args) -> Result<()> {
    let Args { backbone } = args;
    let Some(b) = Backbone::from_name(&backbone) else {
        let names: Vec<_> = Backbone::ALL.iter().map(|b| b.name()).collect();
        let hint = runner::config::spec::suggest(&backbone, &names)
            .map(|s| format!(", did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(anyhow!("unknown backbone `{backbone}`{hint} (known: {})", names.join(", ")).into());
    };
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let net = b.build(&vs.root());
    let width = net.layers().iter().map(|l| l.name.len()).max().unwrap_or(4).max(12);
    println!("{:>5}  {:<width$} {:>10}  batchnorm", "index", "name", "params");
    for (i, layer) in net.layers().iter().enumerate() {
        let params = parameter_count(&vs, &layer.prefixes);
        println!("{i:>5}  {:<width$} {params:>10}  {}", layer.name, if layer.has_batchnorm { "yes" } else { "no" });
    }
    println!("freeze_up_to = N freezes layers 0..N-1; \"all\" freezes all {} layers.", net.layers().len());
    if net.layers().iter().all(|l| !l.has_batchnorm) {
        println!(
            "{b} normalises with LayerNorm, which keeps no running statistics: a frozen layer is one whose \
             parameters do not train (and that runs without autograd); `batchnorm` has nothing to act on."
        );
    }
    Ok(())
}
