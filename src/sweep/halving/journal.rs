//! The halving search's journal: one line per decision or result, appended under an
//! exclusive lock and never rewritten, replayed into the search's state by every worker; and
//! how a worker tells that another's job has lost its worker.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One line of the journal.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Entry {
    /// `start <trial> <rung> <pid> <host> <unix seconds>`
    Start { trial: usize, rung: usize, pid: u32, host: String, at: u64 },
    /// `done <trial> <rung> <value> <epochs trained> <final>`: its monitored value after
    /// the rung's budget; `final` when the run ended there (its last rung, or early stopping).
    Done { trial: usize, rung: usize, value: f64, epochs: usize, finished: bool },
    /// `propose <trial> [<value>,...]`: a TPE-proposed trial's values (a JSON array, in the
    /// space's order), written with its first start.
    Propose { trial: usize, values: Vec<toml::Value> },
}

impl Entry {
    pub(super) fn line(&self) -> String {
        match self {
            Entry::Start { trial, rung, pid, host, at } => format!("start {trial} {rung} {pid} {host} {at}\n"),
            Entry::Done { trial, rung, value, epochs, finished } => {
                format!("done {trial} {rung} {value:?} {epochs} {}\n", if *finished { "final" } else { "more" })
            }
            // JSON: one line whatever the values (TOML writes a string with a newline on several).
            Entry::Propose { trial, values } => {
                format!("propose {trial} {}\n", serde_json::to_string(values).expect("TOML values are JSON"))
            }
        }
    }

    pub(super) fn parse(line: &str) -> Option<Entry> {
        if let Some(rest) = line.strip_prefix("propose ") {
            let (trial, array) = rest.split_once(' ')?;
            let values = serde_json::from_str(array).ok()?;
            return Some(Entry::Propose { trial: trial.parse().ok()?, values });
        }
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
pub(super) struct State {
    /// (trial, rung) -> value, epochs trained, finished.
    pub(super) done: BTreeMap<(usize, usize), (f64, usize, bool)>,
    /// (trial, rung) -> the latest start's (pid, host, time), for jobs not done.
    pub(super) running: BTreeMap<(usize, usize), (u32, String, u64)>,
    /// Starts, in order: the decisions.
    pub(super) decisions: Vec<(usize, usize)>,
    /// Trial -> its TPE-proposed values (the first proposal, should a line repeat).
    pub(super) proposed: BTreeMap<usize, Vec<toml::Value>>,
}

impl Entry {
    pub(super) fn trial(&self) -> usize {
        match self {
            Entry::Start { trial, .. } | Entry::Done { trial, .. } | Entry::Propose { trial, .. } => *trial,
        }
    }
}

impl State {
    /// The state of a search of `trials` trials after `entries`; lines naming a trial the
    /// search does not have (a hand-edited journal, another search's) are left out.
    pub(super) fn replay(entries: &[Entry], trials: usize) -> State {
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
                Entry::Propose { trial, values } => {
                    s.proposed.entry(*trial).or_insert_with(|| values.clone());
                }
            }
        }
        s
    }

    pub(super) fn started(&self, trial: usize) -> bool {
        self.decisions.iter().any(|(t, _)| *t == trial)
    }

    /// The highest rung trial `t` has finished, and whether its run is over.
    pub(super) fn reached(&self, trial: usize) -> Option<(usize, bool)> {
        self.done.iter().filter(|((t, _), _)| *t == trial).map(|((_, r), (_, _, fin))| (*r, *fin)).max()
    }
}

/// Whether the job started by `(pid, host, at)` has lost its worker: this host's process
/// is gone or is another program now (its PID reused), or (another host) nobody has held
/// the run's lock for a minute since.
pub(super) fn orphaned((pid, host, at): &(u32, String, u64), lock_free: bool, me: &str, now: u64) -> bool {
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

/// The search's journal, opened for appending.
pub(super) struct Journal {
    pub(super) file: File,
    pub(super) path: PathBuf,
}

impl Journal {
    pub(super) fn open(path: &Path) -> Result<Journal> {
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
    pub(super) fn locked<T>(&mut self, f: impl FnOnce(&[Entry]) -> (Vec<Entry>, T)) -> Result<T> {
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

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(char::is_whitespace, "_"))
        .unwrap_or_else(|_| "unknown-host".into())
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Entry::Propose {
                trial: 12,
                values: vec![
                    toml::Value::Float(0.1 + 0.2),
                    toml::Value::Integer(-3),
                    toml::Value::String("a \"b\", c\n".into()),
                    toml::Value::Boolean(true),
                    toml::Value::Float(1e-7),
                ],
            },
        ] {
            assert_eq!(e.line().matches('\n').count(), 1, "one line: {}", e.line());
            assert_eq!(Entry::parse(e.line().trim()), Some(e));
        }
    }
}
