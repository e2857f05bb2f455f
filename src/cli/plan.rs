//! `runner plan`: the runs of a spec, nothing run.

use std::path::PathBuf;

use runner::Result;

use runner::config::experiment::describe_varying;
use runner::sweep::{Action, plan};

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
    runner::run::check(&exp)?;
    println!("{:<12} {:<10} {:>6}  varying", "run id", "completed", "epochs");
    let mut unreadable = None;
    for planned in &exp.runs {
        let (id, action) = plan(&planned.spec, &out);
        let done = match action {
            Action::Fetch(first) => {
                unreadable
                    .get_or_insert(format!("`{}` is not there yet: the first run {first}", planned.spec.data.source));
                "?"
            }
            Action::Unreadable(e) => {
                unreadable.get_or_insert(e);
                "?"
            }
            Action::Skip => "yes",
            Action::Run | Action::Resume(_) | Action::Busy(_) => "no",
        };
        let id = id.unwrap_or_else(|| "?".to_string());
        println!("{:<12} {:<10} {:>6}  {}", id, done, planned.spec.total_epochs(), describe_varying(&planned.varying));
    }
    println!("{} runs of {}", exp.runs.len(), exp.runs.first().map_or("", |r| r.spec.name.as_str()));
    if let Some(tpe) = &exp.tpe {
        println!(
            "then {} more trials of the TPE search, each proposed from the results of the trials before it",
            tpe.trials.saturating_sub(exp.runs.len())
        );
    }
    if let Some(e) = unreadable {
        println!("? : a run's id covers its data, which cannot be read: {e}");
    }
    Ok(())
}
