//! `runner verify RUN_DIR`: rerun a recorded run from its own config.toml and
//! compare the metrics it gives with the recorded metrics.csv, epoch by epoch.
//!
//! On the machine and thread count that recorded the run the numbers must be
//! equal to the last bit (the default, tolerance 0); elsewhere (another CPU,
//! another libtorch build) `--tolerance` allows an absolute difference. The rerun
//! goes to a scratch folder; the recorded run is never touched.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tch::Device;

use crate::config::spec::{Reproducibility, Spec};
use crate::record::run_dir::RunDir;
use crate::record::summary::{Status, Summary};
use crate::record::table;
use crate::run::{self, RunOptions, RunOutcome};
use crate::train::metrics::{EpochRecord, Metric};

pub struct VerifyOptions {
    /// Largest absolute difference accepted; 0: bit for bit.
    pub tolerance: f64,
    /// Where to rerun; `None`: the device the run recorded.
    pub device: Option<Device>,
    /// Keep the rerun's folder (printed) instead of removing it.
    pub keep: bool,
    /// The feature store the rerun may load the frozen part's output from (`None`: it
    /// computes everything).
    pub feature_store: Option<std::path::PathBuf>,
}

/// The first metric that differs by more than the tolerance.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub epoch: usize,
    pub phase: String,
    pub metric: &'static str,
    pub recorded: f64,
    pub rerun: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub epochs: usize,
    /// The largest absolute difference over every compared value.
    pub max_diff: f64,
    pub first_difference: Option<Difference>,
}

/// Compares two runs' epochs in order. Equal means the same bits (NaN equals NaN)
/// with `tolerance` 0, else an absolute difference of at most `tolerance`.
pub fn compare(recorded: &[EpochRecord], rerun: &[EpochRecord], tolerance: f64) -> Comparison {
    let mut max_diff: f64 = 0.0;
    let mut first = None;
    for (a, b) in recorded.iter().zip(rerun) {
        if a.epoch != b.epoch || a.phase != b.phase {
            first.get_or_insert(Difference {
                epoch: a.epoch,
                phase: format!("{} (rerun: epoch {} of {})", a.phase, b.epoch, b.phase),
                metric: "epoch",
                recorded: a.epoch as f64,
                rerun: b.epoch as f64,
            });
            continue;
        }
        for m in Metric::REPRODUCIBLE {
            let (name, x, y) = (m.name(), m.of(a), m.of(b));
            let same = x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
            let diff = if same {
                0.0
            } else if x.is_finite() && y.is_finite() {
                (x - y).abs()
            } else {
                f64::INFINITY
            };
            max_diff = max_diff.max(diff);
            let differs = if tolerance == 0.0 { !same } else { diff > tolerance };
            if differs && first.is_none() {
                first =
                    Some(Difference { epoch: a.epoch, phase: a.phase.clone(), metric: name, recorded: x, rerun: y });
            }
        }
    }
    if recorded.len() != rerun.len() && first.is_none() {
        let at = recorded.len().min(rerun.len());
        let row = recorded.get(at).or(rerun.get(at)).expect("the longer list has this row");
        first = Some(Difference {
            epoch: row.epoch,
            phase: row.phase.clone(),
            metric: "epochs",
            recorded: recorded.len() as f64,
            rerun: rerun.len() as f64,
        });
    }
    Comparison { epochs: recorded.len(), max_diff, first_difference: first }
}

fn short(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
}

/// What verifying one run found.
pub struct Verdict {
    pub dir: PathBuf,
    pub comparison: Comparison,
    /// The test accuracy, recorded and rerun, when the run has a test split.
    pub test_acc: Option<(f64, f64)>,
    pub passed: bool,
    pub lines: Vec<String>,
}

fn device_of(summary: &Summary) -> Result<Device> {
    if summary.device.starts_with("cuda") {
        crate::sys::cuda::load_cuda_backend();
        if !tch::Cuda::is_available() {
            bail!(
                "the run was recorded on {}, and no CUDA device is visible here: pass --device cpu \
                 with a --tolerance to compare across devices",
                summary.device
            );
        }
        Ok(Device::Cuda(0))
    } else {
        Ok(Device::Cpu)
    }
}

/// The `reproducibility` of the run recorded in `dir` ("machine" when its config cannot be
/// read: verifying it will say why).
pub fn reproducibility_of(dir: &Path) -> Reproducibility {
    let config = RunDir::at(dir).config();
    std::fs::read_to_string(&config)
        .ok()
        .and_then(|text| Spec::from_str_at(&text, &config).ok())
        .map_or(Reproducibility::Machine, |s| s.reproducibility)
}

/// Reruns the run recorded in `dir` and compares.
pub fn verify(dir: &Path, opts: &VerifyOptions) -> crate::Result<Verdict> {
    let dir = &RunDir::at(dir);
    let config = dir.config();
    let text = std::fs::read_to_string(&config).with_context(|| format!("cannot read {}", config.display()))?;
    let mut spec = Spec::from_str_at(&text, &config)?;
    // A run recorded before `data.split_seed` existed split its data by `seed`: the rerun
    // does too, so that its numbers compare (its id is new: the config names split_seed).
    let split_seed_recorded = toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|t| t.get("data")?.as_table()?.get("split_seed").cloned())
        .is_some();
    if !split_seed_recorded {
        spec.data.split_seed = spec.seed;
    }
    Ok(rerun_and_compare(dir, &spec, opts)?)
}

fn rerun_and_compare(dir: &RunDir, spec: &Spec, opts: &VerifyOptions) -> Result<Verdict> {
    let summary = Summary::read(dir).with_context(|| format!("no readable summary.json in {}", dir.display()))?;
    if summary.status != Status::Completed {
        bail!("{} did not complete (status {:?}): there is nothing to verify", dir.display(), summary.status);
    }
    let recorded = table::read_records_csv(&dir.metrics_csv())?;
    let device = match opts.device {
        Some(d) => d,
        None => device_of(&summary)?,
    };
    // Removed when dropped (also on a panic), unless --keep keeps it.
    let scratch = tempfile::Builder::new()
        .prefix(&format!("runner-verify-{}-", summary.run_id))
        .tempdir()
        .context("cannot make a scratch folder for the rerun")?;
    let run_opts = RunOptions {
        out: scratch.path().to_path_buf(),
        force: true,
        device,
        threads: Some(summary.threads),
        feature_store: opts.feature_store.clone(),
        ..RunOptions::default()
    };
    let lines = vec![format!(
        "{}: rerunning {} run {} ({} epochs) on {} with {} threads, as recorded by runner {}",
        dir.display(),
        summary.experiment,
        summary.run_id,
        summary.epochs,
        format!("{device:?}").to_lowercase(),
        summary.threads,
        summary.runner_version
    )];
    let result = run::execute(spec, &run_opts)
        .map_err(anyhow::Error::from)
        .and_then(|outcome| judge(dir, &summary, &recorded, &outcome, opts, lines));
    if !opts.keep {
        return result.with_context(|| format!("cannot verify {}", dir.display()));
    }
    let kept = format!("the rerun is kept in {}", scratch.keep().display());
    match result {
        Ok(mut verdict) => {
            verdict.lines.push(kept);
            Ok(verdict)
        }
        Err(e) => Err(e.context(kept).context(format!("cannot verify {}", dir.display()))),
    }
}

/// Compares a rerun with the recording: its run id, its metrics epoch by epoch, its test accuracy.
fn judge(
    dir: &RunDir,
    summary: &Summary,
    recorded: &[EpochRecord],
    outcome: &RunOutcome,
    opts: &VerifyOptions,
    mut lines: Vec<String>,
) -> Result<Verdict> {
    let rerun_summary = &outcome.summary;
    let mut passed = true;
    if rerun_summary.run_id != summary.run_id {
        passed = false;
        let why = why_another_id(rerun_summary, summary);
        lines.push(format!("  the rerun is run {}, not {}: {why}", rerun_summary.run_id, summary.run_id));
    }
    if rerun_summary.runner_version != summary.runner_version {
        lines.push(format!(
            "  note: recorded by runner {}, rerun by {}",
            summary.runner_version, rerun_summary.runner_version
        ));
    }
    let rerun = table::read_records_csv(&outcome.dir.metrics_csv())?;
    let comparison = compare(recorded, &rerun, opts.tolerance);
    let test_acc = summary.test_acc.zip(rerun_summary.test_acc);
    match &comparison.first_difference {
        None if comparison.max_diff == 0.0 => {
            lines.push(format!("  identical: every metric of {} epochs has the same bits", comparison.epochs))
        }
        None => lines.push(format!(
            "  within tolerance {}: {} epochs, largest difference {:.3e}",
            opts.tolerance, comparison.epochs, comparison.max_diff
        )),
        Some(d) => {
            passed = false;
            lines.push(format!(
                "  DIFFERS from epoch {} ({}): {} recorded {} rerun {} (difference {:.3e}, tolerance {})",
                d.epoch,
                d.phase,
                d.metric,
                d.recorded,
                d.rerun,
                (d.recorded - d.rerun).abs(),
                opts.tolerance
            ));
        }
    }
    if let Some((a, b)) = test_acc {
        let ok = if opts.tolerance == 0.0 { a.to_bits() == b.to_bits() } else { (a - b).abs() <= opts.tolerance };
        if !ok {
            passed = false;
        }
        lines.push(format!("  test_acc recorded {a} rerun {b}: {}", if ok { "same" } else { "DIFFERS" }));
    }
    passed &= same_outcome(dir, summary, outcome, opts.tolerance, &mut lines);
    lines.extend(machines(summary, rerun_summary, passed));
    Ok(Verdict { dir: dir.path().to_path_buf(), comparison, test_acc, passed, lines })
}

/// The machines of the record and of the rerun, and what differs between them; when the
/// numbers differ too, what that means for the run's reproducibility mode.
fn machines(recorded: &Summary, rerun: &Summary, passed: bool) -> Vec<String> {
    let Some(here) = &rerun.machine else { return vec![] };
    let Some(there) = &recorded.machine else {
        return vec![
            format!("  machine: the record does not say which machine made it; rerun on {}", here.describe()),
            "  (records made before runner kept summary.json's \"machine\" are bit-identical only on their own machine)"
                .into(),
        ];
    };
    let differences = there.differences(here);
    if differences.is_empty() {
        return vec![format!("  machine: the same as the record's: {}", here.describe())];
    }
    let mut lines = vec![
        format!("  machine: recorded on {}", there.describe()),
        format!("           rerun on    {}", here.describe()),
        format!("           they differ in: {}", differences.join("; ")),
    ];
    if !passed {
        lines.push(if there.reproducibility == "portable" {
            "  a portable run gives the same bits on any x86_64 processor with AVX2; that it does not here is a bug \
             (please report it with both machine lines)"
                .into()
        } else {
            "  a run with reproducibility = \"machine\" (the default) is bit-identical only on the same machine and \
             threads; compare with --tolerance, or record it with reproducibility = \"portable\""
                .into()
        });
    }
    lines
}

/// Beyond the metrics: the same best epoch and epoch count, and (when the recording
/// kept them) the same best weights, bit for bit with `tolerance` 0.
fn same_outcome(
    dir: &RunDir,
    summary: &Summary,
    outcome: &RunOutcome,
    tolerance: f64,
    lines: &mut Vec<String>,
) -> bool {
    let rerun = &outcome.summary;
    let mut same = true;
    if (rerun.best_epoch, rerun.epochs) != (summary.best_epoch, summary.epochs) {
        same = false;
        lines.push(format!(
            "  DIFFERS: best epoch {:?} of {} epochs recorded, {:?} of {} rerun",
            summary.best_epoch, summary.epochs, rerun.best_epoch, rerun.epochs
        ));
    }
    if dir.best().exists() {
        match weights_difference(&dir.best(), &outcome.dir.best(), tolerance) {
            Ok(None) => lines.push(format!("  best weights: the same{}", if tolerance == 0.0 { " bits" } else { "" })),
            Ok(Some(why)) => {
                same = false;
                lines.push(format!("  best weights DIFFER: {why}"));
            }
            Err(e) => {
                same = false;
                lines.push(format!("  best weights cannot be compared: {e:#}"));
            }
        }
    }
    same
}

/// How two weights files differ, if they do: bytes with `tolerance` 0, else the largest
/// absolute difference of any value.
fn weights_difference(recorded: &Path, rerun: &Path, tolerance: f64) -> Result<Option<String>> {
    if tolerance == 0.0 {
        let (a, b) = (std::fs::read(recorded)?, std::fs::read(rerun)?);
        return Ok((a != b).then(|| format!("{} and {} are not the same bytes", recorded.display(), rerun.display())));
    }
    let read = |p: &Path| -> Result<Vec<(String, tch::Tensor)>> {
        let mut named = tch::Tensor::read_safetensors(p).with_context(|| format!("cannot read {}", p.display()))?;
        named.sort_by(|x, y| x.0.cmp(&y.0));
        Ok(named)
    };
    let (a, b) = (read(recorded)?, read(rerun)?);
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        if na != nb || ta.size() != tb.size() {
            return Ok(Some(format!("{na} {:?} recorded, {nb} {:?} rerun", ta.size(), tb.size())));
        }
        let diff = (ta.to_kind(tch::Kind::Double) - tb.to_kind(tch::Kind::Double)).abs().max().double_value(&[]);
        if diff.is_nan() || diff > tolerance {
            return Ok(Some(format!("{na} differs by {diff:.3e}, over the tolerance {tolerance}")));
        }
    }
    Ok((a.len() != b.len()).then(|| format!("{} tensors recorded, {} rerun", a.len(), b.len())))
}

/// Why a rerun got another run id than the recording.
fn why_another_id(rerun_summary: &Summary, summary: &Summary) -> String {
    if rerun_summary.manifest_sha256 != summary.manifest_sha256 {
        format!(
            "its data differs from the recorded run's (manifest sha256 {} here, {} recorded)",
            short(&rerun_summary.manifest_sha256),
            short(&summary.manifest_sha256)
        )
    } else if rerun_summary.numerics_version != summary.numerics_version {
        format!(
            "runner's numerics version is {}, the recording's {}: the numbers are expected to differ \
             (record the run anew)",
            rerun_summary.numerics_version, summary.numerics_version
        )
    } else {
        "its config resolves differently here (changed spec defaults? a run recorded before \
         data.split_seed is rerun with split_seed = seed, the split it had, under a new id)"
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(vals: &[f64]) -> Vec<EpochRecord> {
        vals.iter()
            .enumerate()
            .map(|(i, &v)| EpochRecord {
                epoch: i + 1,
                phase: if i < 2 { "head".into() } else { "fine_tune".into() },
                lr: 1e-3,
                train_loss: v,
                train_acc: 0.5,
                val_loss: v,
                val_acc: 0.5,
                seconds: 0.0,
                train_images_per_s: 0.0,
            })
            .collect()
    }

    #[test]
    fn exact_is_bitwise_and_tolerance_is_absolute() {
        let a = rows(&[1.0, 0.5, 0.25]);
        assert_eq!(compare(&a, &a, 0.0).first_difference, None);
        let b = rows(&[1.0, 0.5, 0.25 + 1e-9]);
        let d = compare(&a, &b, 0.0).first_difference.unwrap();
        assert_eq!((d.epoch, d.metric, d.phase.as_str()), (3, "train_loss", "fine_tune"));
        assert_eq!(compare(&a, &b, 1e-6).first_difference, None);
        assert!((compare(&a, &b, 1e-6).max_diff - 1e-9).abs() < 1e-12);
        let nan = rows(&[1.0, f64::NAN]);
        assert_eq!(compare(&nan, &nan, 0.0).first_difference, None);
        assert!(compare(&nan, &rows(&[1.0, 0.5]), 1.0).first_difference.is_some());
    }

    #[test]
    fn a_missing_epoch_is_a_difference() {
        let d = compare(&rows(&[1.0, 0.5, 0.25]), &rows(&[1.0, 0.5]), 0.0).first_difference.unwrap();
        assert_eq!((d.epoch, d.metric), (3, "epochs"));
    }
}
