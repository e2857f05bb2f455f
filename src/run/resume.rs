//! Continuing an interrupted run: which checkpoint may be resumed, and putting
//! its state back into the trainer.

use std::path::Path;

use anyhow::{Result, bail};
use tch::Tensor;

use super::RunOptions;
use super::identity::Identity;
use crate::config::spec::Spec;
use crate::record::checkpoint::{Checkpoint, TrainState};
use crate::record::run_dir::RunDir;
use crate::record::summary::{Status, Summary};
use crate::train::Trainer;
use crate::train::metrics::EpochRecord;

/// The checkpoint to resume from, if the run has one and may continue: an error when
/// it may not (no `--resume`, or another config wrote it).
pub(super) fn find_checkpoint(
    spec: &Spec,
    id: &Identity,
    dir: &RunDir,
    opts: &RunOptions,
    config_sha256: &str,
) -> Result<Option<Checkpoint>> {
    let checkpoint_path = dir.checkpoint();
    if checkpoint_path.exists() && !opts.force {
        let ck = Checkpoint::read(&checkpoint_path)?;
        if !opts.resume {
            bail!(
                "{} holds an interrupted run (checkpoint after epoch {} of {}): pass --resume to continue it, \
                 or --force to start it over",
                dir.display(),
                ck.state.epoch,
                spec.total_epochs()
            );
        }
        if ck.state.config_sha256 != config_sha256 || ck.state.run_id != id.run_id {
            bail!(
                "refusing to resume: {} was written by a different config (run {}, config sha256 {}); \
                 this spec is run {}. Use --force to start over",
                checkpoint_path.display(),
                ck.state.run_id,
                &ck.state.config_sha256[..12.min(ck.state.config_sha256.len())],
                id.run_id
            );
        }
        Ok(Some(ck))
    } else {
        if opts.resume && opts.refuse_changed_config && !opts.force && !dir.exists() {
            refuse_changed_config(&opts.out, spec)?;
        }
        Ok(None)
    }
}

/// `--resume` for a spec that has no run directory: if the same experiment has an
/// interrupted run of another config, say how its config differs instead of starting afresh.
fn refuse_changed_config(out: &Path, spec: &Spec) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out.join(&spec.name)) else { return Ok(()) };
    let mine = serde_json::to_value(spec)?;
    for entry in entries.flatten() {
        let dir = RunDir::at(entry.path());
        // Interrupted: a checkpoint, and neither completed nor diverged (a diverged run keeps its last one).
        let interrupted = dir.checkpoint().exists()
            && Summary::read(&dir).is_none_or(|s| {
                matches!(s.status, Status::Running | Status::Failed | Status::Interrupted | Status::Paused)
            });
        if !interrupted {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(dir.config()) else { continue };
        let Ok(theirs) = toml::from_str::<Spec>(&text) else { continue };
        let mut changes = vec![];
        diff_values("", &serde_json::to_value(&theirs)?, &mine, &mut changes);
        bail!(
            "refusing to resume: the interrupted run {} of `{}` has a different config ({}); resuming it with \
             this spec would mix two experiments. Restore the spec, or run without --resume to start a new run",
            dir.display(),
            spec.name,
            if changes.is_empty() { "its data changed".to_string() } else { changes.join(", ") }
        );
    }
    Ok(())
}

/// Dotted keys whose values differ, as `key: old -> new`.
fn diff_values(prefix: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    let key = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                diff_values(&key(k), a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_values(&key(&i.to_string()), x, y, out);
            }
        }
        (a, b) if a != b => out.push(format!("{prefix}: {a} -> {b}")),
        _ => {}
    }
}

/// A run's training state, its metrics rows and its current optimizer's state.
pub(super) type Restored = (TrainState, Vec<EpochRecord>, Vec<(String, Tensor)>);

/// Puts a checkpoint's state into the trainer; returns its state, metrics rows and optimizer state.
pub(super) fn restore(trainer: &mut Trainer, ck: Checkpoint) -> Result<Restored> {
    trainer.restore(&ck.model, ck.state.scaler.as_ref(), &ck.ema)?;
    Ok((ck.state, ck.rows, ck.optimizer))
}
