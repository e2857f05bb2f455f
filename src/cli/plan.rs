//! `runner plan`: the runs of a spec, nothing run.

use std::path::PathBuf;

use runner::Result;

use runner::config::experiment::describe_varying;

use super::{SetFlags, load};

#[derive(clap::Args)]
pub struct Args {
    pub spec: PathBuf,
    #[command(flatten)]
    pub set: SetFlags,
    /// Root of the run directories, to tell which runs are already complete.
    #[arg(long, default_value = "reports/runs")]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let Args { spec, set: SetFlags { set }, out } = args;
    let exp = load(&spec, &set)?;
    println!("{:<12} {:<10} {:>6}  varying", "run id", "completed", "epochs");
    let mut unreadable = None;
    for planned in &exp.runs {
        let identity = match runner::data::archive::pending(&planned.spec.data.source) {
            Some(first) => {
                unreadable
                    .get_or_insert(format!("`{}` is not there yet: the first run {first}", planned.spec.data.source));
                Err(anyhow::anyhow!("not downloaded yet"))
            }
            None => runner::run::identify(&planned.spec, false),
        };
        let (id, done) = match identity {
            Ok(id) => {
                let dir = runner::run::run_dir(&out, &planned.spec, &id);
                let done = runner::run::read_summary(&dir).is_some_and(|s| s.status == runner::run::Status::Completed);
                (id.run_id, if done { "yes" } else { "no" })
            }
            Err(e) => {
                unreadable.get_or_insert(format!("{e:#}"));
                ("?".to_string(), "?")
            }
        };
        println!("{:<12} {:<10} {:>6}  {}", id, done, planned.spec.total_epochs(), describe_varying(&planned.varying));
    }
    println!("{} runs of {}", exp.runs.len(), exp.runs.first().map_or("", |r| r.spec.name.as_str()));
    if let Some(e) = unreadable {
        println!("? : a run's id covers its data, which cannot be read: {e}");
    }
    Ok(())
}
