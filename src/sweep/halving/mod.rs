//! `[search] method = "halving"`: asynchronous successive halving (ASHA, Li et al. 2020)
//! with epochs as the resource, run by `runner sweep`.
//!
//! Every trial first trains `min_epochs` epochs (rung 0). Trial `i` moves from rung `k` to
//! rung `k + 1` (`min_epochs x eta^(k+1)` epochs, at most its spec's total) once it ranks in
//! the best `floor(n / eta)` of the `n` trials that have finished rung `k`, by the monitored
//! metric (`early_stopping.monitor`, val_acc by default; its best value so far). A promoted
//! trial resumes from its checkpoint (paused at the rung's budget), so no epoch is trained
//! twice. A free worker promotes where it can, highest rung first, and starts a new trial
//! otherwise, so no worker waits for a rung to fill.
//!
//! Workers share nothing but the filesystem: every decision is taken under an exclusive
//! lock on the search's journal (`<out>/<experiment>/.halving-<key>.journal`, appended to,
//! never rewritten), which records each job's start and its result. A killed search
//! restarts from the journal: the unfinished job of a dead worker is taken over first (its
//! run resumes from its checkpoint), and then the same rule meets the same results, so
//! the decisions are the same.
//!
//! With `sampler = "tpe"` a new trial's values are proposed by TPE (config/tpe.rs) when it
//! starts, from every trial's result so far (`ranked`), and journalled with its start.

mod journal;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use journal::{Entry, Journal, State, hostname, orphaned, unix_now};

use super::{Outcome, Row, SweepRun};
use crate::Error;
use crate::config::experiment::TpeTrials;
use crate::config::search::Halving;
use crate::config::spec::Monitor;
use crate::record::summary::{Status, Summary};
use crate::run::{self, RunOptions, lock};

/// A trial's epochs at rung `k`: `min_epochs x eta^k`, at most `total`.
fn budget(h: Halving, k: usize, total: usize) -> usize {
    let mut b = h.min_epochs;
    for _ in 0..k {
        b = b.saturating_mul(h.eta);
    }
    b.min(total)
}

/// A trial's last rung: the first whose budget is its total.
fn top_rung(h: Halving, total: usize) -> usize {
    (0..).find(|&k| budget(h, k, total) >= total).expect("budgets grow to the total")
}

/// The next job of a worker: a run to train to a rung, nothing yet (others are at work), or
/// nothing more.
#[derive(Debug, PartialEq)]
enum Job {
    Train { trial: usize, rung: usize },
    Wait,
    Done,
}

/// The ASHA rule. `totals[i]` is trial i's epochs in all, `better(a, b)` whether value a
/// beats b, `orphans` the running jobs whose worker is gone.
fn next_job(
    h: Halving,
    state: &State,
    totals: &[usize],
    better: &dyn Fn(f64, f64) -> bool,
    orphans: &[(usize, usize)],
) -> Job {
    if let Some(&(trial, rung)) = orphans.first() {
        return Job::Train { trial, rung };
    }
    let top = totals.iter().map(|&t| top_rung(h, t)).max().unwrap_or(0);
    for k in (0..top).rev() {
        // The trials that finished rung k, best first (ties: the lower trial).
        let mut at_k: Vec<(usize, f64)> =
            state.done.iter().filter(|((_, r), _)| *r == k).map(|((t, _), (v, _, _))| (*t, *v)).collect();
        at_k.sort_by(|a, b| {
            // A trial without a value (NaN: it had no best epoch) ranks below every other.
            if a.1.is_nan() || b.1.is_nan() {
                return a.1.is_nan().cmp(&b.1.is_nan()).then(a.0.cmp(&b.0));
            }
            if better(a.1, b.1) {
                std::cmp::Ordering::Less
            } else if better(b.1, a.1) {
                std::cmp::Ordering::Greater
            } else {
                a.0.cmp(&b.0)
            }
        });
        let promotable = at_k.len() / h.eta;
        for &(t, _) in at_k.iter().take(promotable) {
            let promoted = state.decisions.contains(&(t, k + 1));
            let over = state.reached(t).is_some_and(|(_, fin)| fin);
            if !promoted && !over && k < top_rung(h, totals[t]) {
                return Job::Train { trial: t, rung: k + 1 };
            }
        }
    }
    if let Some(t) = (0..totals.len()).find(|&t| !state.started(t)) {
        return Job::Train { trial: t, rung: 0 };
    }
    if state.running.is_empty() { Job::Done } else { Job::Wait }
}

/// Fuzzing: a journal's bytes replayed for a search of 9 trials of 9 epochs, and the next
/// job decided from it, as a worker does. A value, never a panic.
#[cfg(test)]
pub(crate) fn fuzz_journal(bytes: &[u8]) {
    let entries: Vec<Entry> = String::from_utf8_lossy(bytes).lines().filter_map(Entry::parse).collect();
    let totals = [9; 9];
    let state = State::replay(&entries, totals.len());
    let h = Halving { min_epochs: 1, eta: 3 };
    let orphans: Vec<(usize, usize)> = state.running.keys().copied().take(1).collect();
    let _ = next_job(h, &state, &totals, &|a, b| a > b, &[]);
    let _ = next_job(h, &state, &totals, &|a, b| a < b, &orphans);
}

/// What one halving search did, for the sweep's summary.
pub struct Outcomes {
    pub rows: Vec<Row>,
    /// Epochs trained by the whole search (every worker), and what running every trial to
    /// the end would have cost.
    pub epochs: usize,
    pub grid_epochs: usize,
}

/// The trials with a result, best first, as Optuna's `TPESampler` ranks trials under a
/// pruner: those whose run is over (their last rung, or early stopping) by their value,
/// then the others by the epochs they reached (more first) and their value there. A trial
/// counts from its first rung's result. One without a finite value (failed, diverged, or no
/// best epoch) ranks below every other: Optuna leaves failed trials out, but a region that
/// diverges is what TPE should learn to avoid (bench/tpe.py --halving).
fn ranked(h: Halving, state: &State, totals: &[usize], better: &dyn Fn(f64, f64) -> bool) -> Vec<usize> {
    let mut last: BTreeMap<usize, (usize, f64, bool)> = BTreeMap::new();
    for (&(t, r), &(v, _, fin)) in &state.done {
        if last.get(&t).is_none_or(|&(seen, _, _)| r > seen) {
            last.insert(t, (r, v, fin));
        }
    }
    let mut order: Vec<(usize, usize, f64, bool)> = last
        .into_iter()
        .map(|(t, (r, v, fin))| (t, budget(h, r, totals.get(t).copied().unwrap_or(0)), v, fin))
        .collect();
    order.sort_by(|a, b| {
        let by_value = || {
            if better(a.2, b.2) {
                std::cmp::Ordering::Less
            } else if better(b.2, a.2) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        };
        let failed = (!a.2.is_finite()).cmp(&!b.2.is_finite());
        if failed.is_ne() || !a.2.is_finite() {
            return failed.then(a.0.cmp(&b.0));
        }
        let over = b.3.cmp(&a.3);
        let further = if a.3 && b.3 { std::cmp::Ordering::Equal } else { b.1.cmp(&a.1) };
        over.then(further).then_with(by_value).then(a.0.cmp(&b.0))
    });
    order.into_iter().map(|(t, ..)| t).collect()
}

/// A search's trials as far as they are known: all of them for random draws; with TPE the
/// startup trials and those proposed so far (the journal's `propose` lines).
struct Trials {
    runs: Vec<SweepRun>,
    ids: Vec<run::Identity>,
    /// Each known trial's values in the space's order (TPE only).
    values: Vec<Vec<toml::Value>>,
    /// Epochs in all, per trial of the whole search (0 for a trial not known yet).
    totals: Vec<usize>,
    tpe: Option<Arc<TpeTrials>>,
}

impl Trials {
    fn new(trials: &[SweepRun], tpe: Option<Arc<TpeTrials>>) -> crate::Result<Trials> {
        let count = tpe.as_ref().map_or(trials.len(), |t| t.trials.max(trials.len()));
        let mut known = Trials { runs: vec![], ids: vec![], values: vec![], totals: vec![0; count], tpe };
        for run in trials {
            let t = known.runs.len();
            // A startup trial's values: TPE's proposal before any result is random search's draw.
            let values = known.tpe.as_ref().map(|tpe| tpe.propose_ranked(t, &[])).unwrap_or_default();
            known.add(run.clone(), values)?;
        }
        Ok(known)
    }

    fn add(&mut self, run: SweepRun, values: Vec<toml::Value>) -> crate::Result<()> {
        let id = run::identify(&run.planned.spec)?;
        self.totals[self.runs.len()] = run.planned.spec.total_epochs();
        self.ids.push(id);
        self.values.push(values);
        self.runs.push(run);
        Ok(())
    }

    /// Knows trial `t` and those before it: from the journal's proposals (a trial without
    /// one, in a damaged journal, takes the random draw).
    fn learn(&mut self, t: usize, proposed: &BTreeMap<usize, Vec<toml::Value>>) -> crate::Result<()> {
        let Some(tpe) = self.tpe.clone() else { return Ok(()) };
        while self.runs.len() <= t && self.runs.len() < self.totals.len() {
            let k = self.runs.len();
            let values = proposed.get(&k).cloned().unwrap_or_else(|| tpe.propose_ranked(k, &[]));
            let planned = tpe.run(&values)?;
            let first = &self.runs[0];
            let run = SweepRun { planned, point: k + 1, points: self.totals.len(), ..first.clone() };
            self.add(run, values)?;
        }
        Ok(())
    }
}

/// One worker's view of a halving search: its trials, their runs, the journal.
struct Worker<'a> {
    trials: Trials,
    h: Halving,
    monitor: Monitor,
    journal: Journal,
    /// Where the trials share their feature caches (`RunOptions::feature_store`).
    store: PathBuf,
    host: String,
    opts: &'a RunOptions,
}

impl<'a> Worker<'a> {
    fn new(
        trials: &[SweepRun],
        h: Halving,
        tpe: Option<Arc<TpeTrials>>,
        opts: &'a RunOptions,
    ) -> crate::Result<Worker<'a>> {
        let trials = Trials::new(trials, tpe)?;
        let mut key_text = format!("{} {}", h.min_epochs, h.eta);
        if let Some(tpe) = &trials.tpe {
            let s = tpe.settings;
            key_text.push_str(&format!(" tpe {} {} {}", tpe.trials, s.startup_trials, s.candidates));
        }
        for id in &trials.ids {
            key_text.push(' ');
            key_text.push_str(&id.run_id);
        }
        let key = crate::sys::fetch::sha256_hex(key_text.as_bytes())[..10].to_string();
        let first = &trials.runs[0].planned.spec;
        let dir = opts.out.join(&first.name);
        let journal = Journal::open(&dir.join(format!(".halving-{key}.journal")))?;
        let monitor = first.monitor();
        // The runs' feature store when they have one; else one of the search's own.
        let store = opts.feature_store.clone().unwrap_or_else(|| dir.join(format!(".features-{key}")));
        Ok(Worker { trials, h, monitor, journal, store, host: hostname(), opts })
    }

    fn spec(&self, trial: usize) -> &crate::config::spec::Spec {
        &self.trials.runs[trial].planned.spec
    }

    /// The next job, decided and recorded under the journal's lock. A new trial of a TPE
    /// search is proposed here, from the results so far, and its values journalled.
    fn decide(&mut self) -> crate::Result<Job> {
        let (h, host, opts) = (self.h, self.host.clone(), self.opts);
        let name = self.trials.runs[0].planned.spec.name.clone();
        let monitor = self.monitor;
        let better = move |a: f64, b: f64| monitor.improves(a, Some(b), 0.0);
        let trials = &mut self.trials;
        self.journal.locked(|entries| {
            let state = State::replay(entries, trials.totals.len());
            let started = state.decisions.iter().map(|(t, _)| *t).max();
            if let Some(Err(e)) = started.map(|t| trials.learn(t, &state.proposed)) {
                return (vec![], Err(e));
            }
            let now = unix_now();
            let orphans: Vec<(usize, usize)> = state
                .running
                .iter()
                .filter(|((t, _), holder)| {
                    let lock_free = lock::holder_of(&lock::path(&opts.out, &name, &trials.ids[*t].run_id)).is_none();
                    orphaned(holder, lock_free, &host, now)
                })
                .map(|(k, _)| *k)
                .collect();
            let job = next_job(h, &state, &trials.totals, &better, &orphans);
            let mut new = vec![];
            if let Job::Train { trial, rung } = job {
                if trial >= trials.runs.len() {
                    let tpe = trials.tpe.clone().expect("only TPE leaves trials unknown");
                    let order = ranked(h, &state, &trials.totals, &better);
                    let observed: Vec<&[toml::Value]> = order.iter().map(|&t| trials.values[t].as_slice()).collect();
                    let values = tpe.propose_ranked(trial, &observed);
                    let proposed = BTreeMap::from([(trial, values.clone())]);
                    if let Err(e) = trials.learn(trial, &proposed) {
                        return (vec![], Err(e));
                    }
                    new.push(Entry::Propose { trial, values });
                }
                new.push(Entry::Start { trial, rung, pid: std::process::id(), host: host.clone(), at: now });
            }
            (new, Ok(job))
        })?
    }

    /// Trains `trial` to rung `rung`'s budget and records the result.
    fn train(&mut self, trial: usize, rung: usize) -> crate::Result<()> {
        let b = budget(self.h, rung, self.trials.totals[trial]);
        crate::sys::reporter::status(&format!(
            "== trial {} of {} to {b} epochs (rung {rung}) {}",
            trial + 1,
            self.trials.totals.len(),
            self.trials.runs[trial].varying()
        ));
        let (spec, id) = (self.spec(trial), &self.trials.ids[trial]);
        let before = Summary::read(&run::run_dir(&self.opts.out, spec, id)).map_or(0, |s| s.epochs);
        let opts = RunOptions {
            resume: true,
            stop_after: Some(b),
            feature_store: Some(self.store.clone()),
            ..self.opts.clone()
        };
        let done = match run::execute_identified(spec, id, &opts) {
            Ok(outcome) => {
                let s = &outcome.summary;
                let finished = s.status == Status::Completed;
                let epochs = s.epochs.saturating_sub(before);
                crate::sys::reporter::status(&format!(
                    "   {} {}: {} {} after {} epochs ({epochs} trained now)",
                    if finished { "completed" } else { "paused" },
                    s.run_id,
                    self.monitor.name(),
                    s.best_value.map_or("n/a".into(), |v| format!("{v:.4}")),
                    s.epochs
                ));
                Entry::Done { trial, rung, value: s.best_value.unwrap_or(f64::NAN), epochs, finished }
            }
            Err(e) => match e.cause() {
                // Someone else runs it now; decide again shortly.
                Error::Busy { .. } => {
                    std::thread::sleep(Duration::from_millis(500));
                    return Ok(());
                }
                Error::Interrupted { .. } => return Err(e),
                _ => {
                    // A failed trial ranks last at this rung and is not tried again.
                    crate::sys::reporter::error(&crate::sys::redact::credentials(&format!("{e:#}")));
                    let value = if self.monitor.higher_is_better() { f64::NEG_INFINITY } else { f64::INFINITY };
                    Entry::Done { trial, rung, value, epochs: 0, finished: true }
                }
            },
        };
        Ok(self.journal.locked(|_| (vec![done], ()))?)
    }

    /// `tpe_trials.csv`, as a sequential TPE search writes it, with each trial's epochs: its
    /// result is the monitored value at the last rung it reached.
    fn write_tpe_journal(&self, tpe: &TpeTrials, state: &State) {
        let journal: Vec<super::tpe::Trial> = (0..self.trials.runs.len())
            .map(|t| {
                let last = state.done.range((t, 0)..=(t, usize::MAX)).next_back().map(|(_, d)| *d);
                super::tpe::Trial {
                    run_id: self.trials.ids[t].run_id.clone(),
                    values: self.trials.values[t].clone(),
                    value: last.map_or(f64::NAN, |(v, _, _)| v),
                    epochs: Some(state.done.range((t, 0)..=(t, usize::MAX)).map(|(_, (_, e, _))| e).sum()),
                }
            })
            .collect();
        let dir = self.opts.out.join(&self.trials.runs[0].planned.spec.name);
        if let Err(e) = super::tpe::write_journal(&dir, tpe, &journal, self.monitor.name()) {
            crate::sys::reporter::note(&format!("warning: cannot write the TPE journal: {e:#}"));
        }
    }

    /// Each trial as it ended, for the sweep's table.
    fn rows(&self) -> Vec<Row> {
        (0..self.trials.runs.len())
            .map(|t| {
                let (spec, id) = (self.spec(t), &self.trials.ids[t]);
                let summary = Summary::read(&run::run_dir(&self.opts.out, spec, id));
                let outcome = match summary.as_ref().map(|s| s.status) {
                    Some(Status::Completed) => Outcome::Completed,
                    Some(Status::Paused) => Outcome::Pruned,
                    Some(Status::Diverged) => Outcome::Diverged,
                    _ => Outcome::Failed,
                };
                Row {
                    experiment: spec.name.clone(),
                    run_id: Some(id.run_id.clone()),
                    outcome,
                    best_val_acc: summary.as_ref().and_then(|s| s.best_val_acc),
                    best_epoch: summary.as_ref().and_then(|s| s.best_epoch),
                    wall_s: summary.as_ref().map(|s| s.wall_s),
                    varying: self.trials.runs[t].varying(),
                    note: summary.as_ref().map(|s| format!("{} of {} epochs", s.epochs, s.epochs_planned)),
                }
            })
            .collect()
    }
}

/// Runs the halving search over `trials` (the runs of one spec; with `tpe`, its startup
/// trials, the rest proposed as they start) until no job is left.
pub fn execute(
    trials: &[SweepRun],
    h: Halving,
    tpe: Option<Arc<TpeTrials>>,
    opts: &RunOptions,
) -> crate::Result<Outcomes> {
    let mut worker = Worker::new(trials, h, tpe, opts)?;
    let longest = worker.trials.totals.iter().copied().max().unwrap_or(1);
    let rungs: Vec<String> = (0..=top_rung(h, longest)).map(|k| budget(h, k, longest).to_string()).collect();
    let sampler = match &worker.trials.tpe {
        Some(tpe) => format!(" (TPE after {} random)", tpe.settings.startup_trials.min(tpe.trials)),
        None => String::new(),
    };
    crate::sys::reporter::status(&format!(
        "halving search: {} trials{sampler}, rungs of {} epochs (eta {}), by {}; journal {}",
        worker.trials.totals.len(),
        rungs.join(", "),
        h.eta,
        worker.monitor.name(),
        worker.journal.path.display()
    ));
    let mut waited = Instant::now();
    loop {
        if crate::sys::signal::interrupted() {
            return Err(Error::Interrupted {
                what: "the search journal keeps every decision; run the sweep again".into(),
            });
        }
        match worker.decide()? {
            Job::Done => break,
            Job::Wait => {
                if waited.elapsed() > Duration::from_secs(30) {
                    crate::sys::reporter::status("   waiting for other workers' trials");
                    waited = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Job::Train { trial, rung } => worker.train(trial, rung)?,
        }
    }
    if worker.opts.feature_store.is_none() {
        let _ = std::fs::remove_dir_all(&worker.store);
    }
    let trials = worker.trials.totals.len();
    let state = worker.journal.locked(|entries| (vec![], State::replay(entries, trials)))?;
    let epochs = state.done.values().map(|(_, e, _)| e).sum();
    let grid_epochs = worker.trials.totals.iter().sum();
    if let Some(tpe) = &worker.trials.tpe {
        worker.write_tpe_journal(tpe, &state);
    }
    crate::sys::reporter::status(&format!(
        "halving search: {epochs} epochs trained in all; every trial to the end would take {grid_epochs}"
    ));
    Ok(Outcomes { rows: worker.rows(), epochs, grid_epochs })
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Halving = Halving { min_epochs: 1, eta: 3 };

    fn done(state: &mut State, trial: usize, rung: usize, value: f64) {
        state.decisions.push((trial, rung));
        state.done.insert((trial, rung), (value, 1, false));
    }

    #[test]
    fn budgets_grow_by_eta_up_to_the_total() {
        assert_eq!((0..4).map(|k| budget(H, k, 9)).collect::<Vec<_>>(), [1, 3, 9, 9]);
        assert_eq!(top_rung(H, 9), 2);
        assert_eq!(top_rung(H, 5), 2, "1, 3, then 5");
        assert_eq!(top_rung(Halving { min_epochs: 2, eta: 2 }, 8), 2);
    }

    #[test]
    fn new_trials_start_until_a_rung_has_eta_results_then_the_best_moves_on() {
        let totals = [9; 9];
        let higher = |a: f64, b: f64| a > b;
        let mut s = State::default();
        assert_eq!(next_job(H, &s, &totals, &higher, &[]), Job::Train { trial: 0, rung: 0 });
        done(&mut s, 0, 0, 0.5);
        done(&mut s, 1, 0, 0.7);
        assert_eq!(next_job(H, &s, &totals, &higher, &[]), Job::Train { trial: 2, rung: 0 });
        done(&mut s, 2, 0, 0.6);
        // Three results at rung 0: the best of them (trial 1) is promoted.
        assert_eq!(next_job(H, &s, &totals, &higher, &[]), Job::Train { trial: 1, rung: 1 });
        s.decisions.push((1, 1));
        s.running.insert((1, 1), (1, "h".into(), 0));
        // Nothing else to promote: a new trial.
        assert_eq!(next_job(H, &s, &totals, &higher, &[]), Job::Train { trial: 3, rung: 0 });
        // A lower metric is better for a loss: trial 0 would be the one.
        let lower = |a: f64, b: f64| a < b;
        let mut s2 = State::default();
        for (t, v) in [(0, 0.5), (1, 0.7), (2, 0.6)] {
            done(&mut s2, t, 0, v);
        }
        assert_eq!(next_job(H, &s2, &totals, &lower, &[]), Job::Train { trial: 0, rung: 1 });
    }

    #[test]
    fn the_end_waits_for_running_jobs_and_orphans_come_first() {
        let totals = [3; 3];
        let higher = |a: f64, b: f64| a > b;
        let mut s = State::default();
        for (t, v) in [(0, 0.5), (1, 0.7)] {
            done(&mut s, t, 0, v);
        }
        s.decisions.push((2, 0));
        s.running.insert((2, 0), (1, "h".into(), 0));
        assert_eq!(next_job(H, &s, &totals, &higher, &[]), Job::Wait);
        assert_eq!(next_job(H, &s, &totals, &higher, &[(2, 0)]), Job::Train { trial: 2, rung: 0 });
        s.running.clear();
        done(&mut s, 2, 0, 0.6);
        // Trial 1 goes on to 3 epochs (its last rung); after that, nothing is left.
        assert_eq!(next_job(H, &s, &totals, &higher, &[]), Job::Train { trial: 1, rung: 1 });
        s.decisions.push((1, 1));
        s.done.insert((1, 1), (0.8, 2, true));
        assert_eq!(next_job(H, &s, &totals, &higher, &[]), Job::Done);
    }

    #[test]
    fn a_damaged_or_foreign_journal_neither_panics_nor_blocks() {
        let totals = [3; 3];
        let higher = |a: f64, b: f64| a > b;
        // Lines naming trials the search does not have are left out.
        let foreign = [
            Entry::Start { trial: 0, rung: 0, pid: 1, host: "h".into(), at: 0 },
            Entry::Start { trial: 99, rung: 0, pid: 1, host: "h".into(), at: 0 },
            Entry::Done { trial: 99, rung: 0, value: 0.9, epochs: 1, finished: false },
            Entry::Done { trial: 0, rung: 0, value: 0.5, epochs: 1, finished: false },
        ];
        let s = State::replay(&foreign, 3);
        assert_eq!(s.done.len(), 1);
        assert!(s.running.is_empty());
        assert_eq!(next_job(H, &s, &totals, &higher, &[]), Job::Train { trial: 1, rung: 0 });
        // Trials without a value (NaN) rank last, whatever their number.
        let totals = [9; 12];
        let mut s = State::default();
        for t in 0..12 {
            done(&mut s, t, 0, if t % 2 == 0 { f64::NAN } else { t as f64 / 100.0 });
        }
        assert_eq!(next_job(H, &s, &totals, &higher, &[]), Job::Train { trial: 11, rung: 1 });
        let mut all_nan = State::default();
        for t in 0..3 {
            done(&mut all_nan, t, 0, f64::NAN);
        }
        assert_eq!(next_job(H, &all_nan, &[9; 3], &higher, &[]), Job::Train { trial: 0, rung: 1 });
        // A byte that is not UTF-8 spoils its line only.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut bytes = Entry::Done { trial: 0, rung: 0, value: 0.5, epochs: 1, finished: false }.line().into_bytes();
        bytes.extend_from_slice(b"done 1 0 0.\xff7 1 more\n");
        bytes.extend_from_slice(
            Entry::Done { trial: 2, rung: 0, value: 0.6, epochs: 1, finished: false }.line().as_bytes(),
        );
        std::fs::write(&path, bytes).unwrap();
        let mut journal = Journal::open(&path).unwrap();
        let trials = journal.locked(|e| (vec![], e.iter().map(Entry::trial).collect::<Vec<_>>())).unwrap();
        assert_eq!(trials, [0, 2]);
    }

    #[test]
    fn tpe_ranks_trials_that_went_further_first_then_by_value() {
        let totals = [9; 6];
        let higher = |a: f64, b: f64| a > b;
        let mut s = State::default();
        // Rung 0 for all; trials 1 and 4 reached rung 1; trial 4 ended there (early stopping).
        for (t, v) in [(0, 0.9), (1, 0.5), (2, 0.7), (3, f64::NAN), (4, 0.2), (5, f64::NEG_INFINITY)] {
            done(&mut s, t, 0, v);
        }
        done(&mut s, 1, 1, 0.6);
        done(&mut s, 4, 1, 0.3);
        s.done.insert((4, 1), (0.3, 2, true));
        // Over first (trial 4), then further (trial 1, 3 epochs), then by value at rung 0;
        // no value and failed trials last, in trial order. A later result moves a trial up.
        assert_eq!(ranked(H, &s, &totals, &higher), [4, 1, 0, 2, 3, 5]);
        done(&mut s, 0, 1, 0.95);
        assert_eq!(ranked(H, &s, &totals, &higher), [4, 0, 1, 2, 3, 5]);
        let lower = |a: f64, b: f64| a < b;
        assert_eq!(ranked(H, &s, &totals, &lower), [4, 1, 0, 2, 3, 5], "at rung 1 the lower value goes first");
        // A proposal line is kept once, the first one.
        let entries = [
            Entry::Propose { trial: 2, values: vec![toml::Value::Integer(1)] },
            Entry::Propose { trial: 2, values: vec![toml::Value::Integer(5)] },
        ];
        assert_eq!(State::replay(&entries, 3).proposed[&2], [toml::Value::Integer(1)]);
    }
}
