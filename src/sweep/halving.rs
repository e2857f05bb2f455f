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

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{Outcome, Row, SweepRun};
use crate::Error;
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

/// One line of the journal.
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    /// `start <trial> <rung> <pid> <host> <unix seconds>`
    Start { trial: usize, rung: usize, pid: u32, host: String, at: u64 },
    /// `done <trial> <rung> <value> <epochs trained> <final>`: its monitored value after
    /// the rung's budget; `final` when the run ended there (its last rung, or early stopping).
    Done { trial: usize, rung: usize, value: f64, epochs: usize, finished: bool },
}

impl Entry {
    fn line(&self) -> String {
        match self {
            Entry::Start { trial, rung, pid, host, at } => format!("start {trial} {rung} {pid} {host} {at}\n"),
            Entry::Done { trial, rung, value, epochs, finished } => {
                format!("done {trial} {rung} {value:?} {epochs} {}\n", if *finished { "final" } else { "more" })
            }
        }
    }

    fn parse(line: &str) -> Option<Entry> {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["start", t, r, pid, host, at] => Some(Entry::Start {
                trial: t.parse().ok()?,
                rung: r.parse().ok()?,
                pid: pid.parse().ok()?,
                host: host.to_string(),
                at: at.parse().ok()?,
            }),
            ["done", t, r, v, e, fin] => Some(Entry::Done {
                trial: t.parse().ok()?,
                rung: r.parse().ok()?,
                value: v.parse().ok()?,
                epochs: e.parse().ok()?,
                finished: *fin == "final",
            }),
            _ => None,
        }
    }
}

/// What the journal says so far.
#[derive(Debug, Default)]
struct State {
    /// (trial, rung) -> value, epochs trained, finished.
    done: BTreeMap<(usize, usize), (f64, usize, bool)>,
    /// (trial, rung) -> the latest start's (pid, host, time), for jobs not done.
    running: BTreeMap<(usize, usize), (u32, String, u64)>,
    /// Starts, in order: the decisions.
    decisions: Vec<(usize, usize)>,
}

impl Entry {
    fn trial(&self) -> usize {
        match self {
            Entry::Start { trial, .. } | Entry::Done { trial, .. } => *trial,
        }
    }
}

impl State {
    /// The state of a search of `trials` trials after `entries`; lines naming a trial the
    /// search does not have (a hand-edited journal, another search's) are left out.
    fn replay(entries: &[Entry], trials: usize) -> State {
        let mut s = State::default();
        for e in entries.iter().filter(|e| e.trial() < trials) {
            match e {
                Entry::Start { trial, rung, pid, host, at } => {
                    if !s.decisions.contains(&(*trial, *rung)) {
                        s.decisions.push((*trial, *rung));
                    }
                    if !s.done.contains_key(&(*trial, *rung)) {
                        s.running.insert((*trial, *rung), (*pid, host.clone(), *at));
                    }
                }
                Entry::Done { trial, rung, value, epochs, finished } => {
                    s.running.remove(&(*trial, *rung));
                    s.done.insert((*trial, *rung), (*value, *epochs, *finished));
                }
            }
        }
        s
    }

    fn started(&self, trial: usize) -> bool {
        self.decisions.iter().any(|(t, _)| *t == trial)
    }

    /// The highest rung trial `t` has finished, and whether its run is over.
    fn reached(&self, trial: usize) -> Option<(usize, bool)> {
        self.done.iter().filter(|((t, _), _)| *t == trial).map(|((_, r), (_, _, fin))| (*r, *fin)).max()
    }
}

/// The next job of a worker: a run to train to a rung, nothing yet (others are at work), or
/// nothing more.
#[derive(Debug, PartialEq)]
enum Job {
    Train { trial: usize, rung: usize },
    Wait,
    Done,
}

/// Whether the job started by `(pid, host, at)` has lost its worker: this host's process
/// is gone or is another program now (its PID reused), or (another host) nobody has held
/// the run's lock for a minute since.
fn orphaned((pid, host, at): &(u32, String, u64), lock_free: bool, me: &str, now: u64) -> bool {
    if host == me {
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(*pid as i32, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        // This process's own unfinished job (its run was busy elsewhere then) is free again
        // once nobody holds the run; so is one whose PID now belongs to another program.
        return !alive || (lock_free && (*pid == std::process::id() || is_other_program(*pid)));
    }
    lock_free && now.saturating_sub(*at) > 60
}

/// Whether process `pid` runs another program than this one (its PID was reused after the
/// worker died): its executable, or where that cannot be read (another user's process, a
/// sandbox) the file name of its argv[0]. Unknown (no /proc): false, the worker is trusted.
fn is_other_program(pid: u32) -> bool {
    let Ok(mine) = std::env::current_exe() else { return false };
    if let Ok(theirs) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        return theirs != mine;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let theirs = std::path::Path::new(std::ffi::OsStr::from_bytes(argv0)).file_name();
    theirs != mine.file_name()
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

/// The search's journal, opened for appending.
struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    fn open(path: &Path) -> Result<Journal> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("cannot open the search journal {}", path.display()))?;
        Ok(Journal { file, path: path.to_path_buf() })
    }

    /// Runs `f` on the entries so far under the journal's exclusive lock; appends what it returns.
    fn locked<T>(&mut self, f: impl FnOnce(&[Entry]) -> (Vec<Entry>, T)) -> Result<T> {
        let what = || format!("the search journal {}", self.path.display());
        self.file.lock().with_context(what)?;
        let result = (|| {
            let mut bytes = Vec::new();
            self.file.seek(SeekFrom::Start(0))?;
            self.file.read_to_end(&mut bytes)?;
            // A line that is not text (a damaged journal) parses as nothing, like any other.
            let entries: Vec<Entry> = String::from_utf8_lossy(&bytes).lines().filter_map(Entry::parse).collect();
            let (new, out) = f(&entries);
            for e in &new {
                self.file.write_all(e.line().as_bytes())?;
            }
            self.file.sync_data()?;
            Ok::<T, std::io::Error>(out)
        })();
        let _ = self.file.unlock();
        result.with_context(what)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(char::is_whitespace, "_"))
        .unwrap_or_else(|_| "unknown-host".into())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What one halving search did, for the sweep's summary.
pub struct Outcomes {
    pub rows: Vec<Row>,
    /// Epochs trained by the whole search (every worker), and what running every trial to
    /// the end would have cost.
    pub epochs: usize,
    pub grid_epochs: usize,
}

/// One worker's view of a halving search: its trials, their runs, the journal.
struct Worker<'a> {
    trials: &'a [SweepRun],
    ids: Vec<run::Identity>,
    totals: Vec<usize>,
    h: Halving,
    monitor: Monitor,
    journal: Journal,
    /// Where the trials share their feature caches (`RunOptions::feature_store`).
    store: PathBuf,
    host: String,
    opts: &'a RunOptions,
}

impl<'a> Worker<'a> {
    fn new(trials: &'a [SweepRun], h: Halving, opts: &'a RunOptions) -> crate::Result<Worker<'a>> {
        let ids: Vec<run::Identity> = trials.iter().map(|t| run::identify(&t.planned.spec)).collect::<Result<_>>()?;
        let totals = trials.iter().map(|t| t.planned.spec.total_epochs()).collect();
        let mut key_text = format!("{} {}", h.min_epochs, h.eta);
        for id in &ids {
            key_text.push(' ');
            key_text.push_str(&id.run_id);
        }
        let key = crate::sys::fetch::sha256_hex(key_text.as_bytes())[..10].to_string();
        let dir = opts.out.join(&trials[0].planned.spec.name);
        let journal = Journal::open(&dir.join(format!(".halving-{key}.journal")))?;
        let monitor = trials[0].planned.spec.monitor();
        // The runs' feature store when they have one; else one of the search's own.
        let store = opts.feature_store.clone().unwrap_or_else(|| dir.join(format!(".features-{key}")));
        Ok(Worker { trials, ids, totals, h, monitor, journal, store, host: hostname(), opts })
    }

    fn spec(&self, trial: usize) -> &'a crate::config::spec::Spec {
        &self.trials[trial].planned.spec
    }

    /// The next job, decided and recorded under the journal's lock.
    fn decide(&mut self) -> Result<Job> {
        let (h, totals, host, opts) = (self.h, &self.totals, self.host.clone(), self.opts);
        let (ids, name) = (&self.ids, &self.trials[0].planned.spec.name);
        let monitor = self.monitor;
        let better = move |a: f64, b: f64| monitor.improves(a, Some(b), 0.0);
        self.journal.locked(|entries| {
            let state = State::replay(entries, totals.len());
            let now = unix_now();
            let orphans: Vec<(usize, usize)> = state
                .running
                .iter()
                .filter(|((t, _), holder)| {
                    let lock_free = lock::holder_of(&lock::path(&opts.out, name, &ids[*t].run_id)).is_none();
                    orphaned(holder, lock_free, &host, now)
                })
                .map(|(k, _)| *k)
                .collect();
            let job = next_job(h, &state, totals, &better, &orphans);
            let new = match job {
                Job::Train { trial, rung } => {
                    vec![Entry::Start { trial, rung, pid: std::process::id(), host: host.clone(), at: now }]
                }
                _ => vec![],
            };
            (new, job)
        })
    }

    /// Trains `trial` to rung `rung`'s budget and records the result.
    fn train(&mut self, trial: usize, rung: usize) -> crate::Result<()> {
        let b = budget(self.h, rung, self.totals[trial]);
        crate::sys::reporter::status(&format!(
            "== trial {} of {} to {b} epochs (rung {rung}) {}",
            trial + 1,
            self.trials.len(),
            self.trials[trial].varying()
        ));
        let (spec, id) = (self.spec(trial), &self.ids[trial]);
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

    /// Each trial as it ended, for the sweep's table.
    fn rows(&self) -> Vec<Row> {
        (0..self.trials.len())
            .map(|t| {
                let (spec, id) = (self.spec(t), &self.ids[t]);
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
                    varying: self.trials[t].varying(),
                    note: summary.as_ref().map(|s| format!("{} of {} epochs", s.epochs, s.epochs_planned)),
                }
            })
            .collect()
    }
}

/// Runs the halving search over `trials` (the runs of one spec) until no job is left.
pub fn execute(trials: &[SweepRun], h: Halving, opts: &RunOptions) -> crate::Result<Outcomes> {
    let mut worker = Worker::new(trials, h, opts)?;
    let longest = worker.totals.iter().copied().max().unwrap_or(1);
    let rungs: Vec<String> = (0..=top_rung(h, longest)).map(|k| budget(h, k, longest).to_string()).collect();
    crate::sys::reporter::status(&format!(
        "halving search: {} trials, rungs of {} epochs (eta {}), by {}; journal {}",
        trials.len(),
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
    let trials = worker.totals.len();
    let state = worker.journal.locked(|entries| (vec![], State::replay(entries, trials)))?;
    let epochs = state.done.values().map(|(_, e, _)| e).sum();
    let grid_epochs = worker.totals.iter().sum();
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
    fn a_worker_whose_pid_went_to_another_program_is_gone() {
        let me = "this-host";
        // PID 1 is init, not runner: its job is free once nobody holds the run's lock.
        assert!(orphaned(&(1, me.into(), 0), true, me, 0));
        assert!(!orphaned(&(1, me.into(), 0), false, me, 0), "a held lock means the run is being trained");
        // A live process of another program, as a reused PID would be.
        let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        assert!(orphaned(&(other.id(), me.into(), 0), true, me, 0));
        other.kill().unwrap();
        other.wait().unwrap();
        assert!(orphaned(&(other.id(), me.into(), 0), false, me, 0), "a process that is gone");
        // This very program: trusted while it holds the lock.
        assert!(!orphaned(&(std::process::id(), me.into(), 0), false, me, 0));
        // Another host: a minute without the lock.
        assert!(!orphaned(&(1, "elsewhere".into(), 100), true, me, 130));
        assert!(orphaned(&(1, "elsewhere".into(), 100), true, me, 161));
    }

    #[test]
    fn journal_lines_round_trip() {
        for e in [
            Entry::Start { trial: 3, rung: 1, pid: 42, host: "node-1".into(), at: 1_700_000_000 },
            Entry::Done { trial: 3, rung: 1, value: 0.123456789, epochs: 2, finished: false },
            Entry::Done { trial: 0, rung: 2, value: f64::NEG_INFINITY, epochs: 0, finished: true },
        ] {
            assert_eq!(Entry::parse(e.line().trim()), Some(e));
        }
    }
}
