//! A TPE search's trials, in order: each proposed from the results of the trials before it
//! (config/tpe.rs), run as a normal run (its own id: a rerun finds it completed and reads
//! its result back, so the search resumes where it stopped and proposes the same trials),
//! and recorded in the search's journal, `<out>/<experiment>/tpe_trials.csv`.

use std::path::Path;

use super::{Event, Row, SweepRun};
use crate::config::experiment::TpeTrials;
use crate::error::Error;
use crate::run::{self, RunOptions};

/// One finished trial of the journal.
pub(super) struct Trial {
    pub run_id: String,
    pub values: Vec<toml::Value>,
    pub value: f64,
    /// Inside halving: the epochs it was trained.
    pub epochs: Option<usize>,
}

/// Runs the search whose startup trials `first` is the first of, trial after trial.
pub(super) fn execute(
    first: &SweepRun,
    tpe: &TpeTrials,
    opts: &RunOptions,
    observe: &mut impl FnMut(Event),
) -> Vec<Row> {
    let monitor = first.planned.spec.monitor();
    let total = tpe.trials;
    let (mut history, mut journal, mut rows) = (vec![], vec![], vec![]);
    for t in 0..total {
        if crate::sys::signal::interrupted() {
            observe(Event::Interrupted { left: total - t, total });
            break;
        }
        let values = tpe.propose(t, &history, monitor.higher_is_better());
        let planned = match tpe.run(&values) {
            Ok(planned) => planned,
            Err(e) => {
                let error = Error::from(e);
                rows.push(super::search_failed(std::slice::from_ref(first), "TPE search", &error));
                observe(Event::SearchFailed(error));
                break;
            }
        };
        let run = SweepRun { planned, point: t + 1, points: total, halving: None, tpe: None, ..first.clone() };
        observe(Event::Starts { k: t, total, run: &run });
        let spec = &run.planned.spec;
        let mut run_id = None;
        let result = run::identify(spec).map_err(Error::from).and_then(|id| {
            run_id = Some(id.run_id.clone());
            run::execute_identified(spec, &id, opts)
        });
        let row = Row::of(&run, run_id.clone(), &result);
        // A trial that failed or diverged counts as no result, as Optuna leaves failed trials out.
        let value = result.as_ref().ok().and_then(|o| o.summary.best_value).unwrap_or(f64::NAN);
        let busy = matches!(result.as_ref().map_err(Error::cause), Err(Error::Busy { .. }));
        history.push((values.clone(), value));
        journal.push(Trial { run_id: run_id.unwrap_or_default(), values, value, epochs: None });
        observe(Event::Ended { run: &run, row: &row, result });
        rows.push(row);
        if busy {
            // The next proposal needs this trial's result: another process is running it.
            break;
        }
    }
    if let Err(e) = write_journal(&opts.out.join(&first.planned.spec.name), tpe, &journal, monitor.name()) {
        crate::sys::reporter::note(&format!("warning: cannot write the TPE journal: {e:#}"));
    }
    rows
}

/// `tpe_trials.csv`: trial, run id, each key's value, (inside halving) the epochs trained,
/// the monitored result (empty when none).
pub(super) fn write_journal(dir: &Path, tpe: &TpeTrials, trials: &[Trial], monitor: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let halving = trials.iter().any(|t| t.epochs.is_some());
    let epochs_column = if halving { "epochs," } else { "" };
    let mut text = format!("trial,run_id,{},{epochs_column}best_{monitor}\n", tpe.keys().join(","));
    for (t, trial) in trials.iter().enumerate() {
        let values: Vec<String> = trial.values.iter().map(|v| v.to_string().replace(',', ";")).collect();
        let value = if trial.value.is_finite() { trial.value.to_string() } else { String::new() };
        let epochs = trial.epochs.map(|e| format!("{e},")).unwrap_or_default();
        text.push_str(&format!("{},{},{},{epochs}{value}\n", t + 1, trial.run_id, values.join(",")));
    }
    crate::sys::atomic::write_atomic(&dir.join("tpe_trials.csv"), text.as_bytes())
}
