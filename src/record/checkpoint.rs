//! `checkpoint.safetensors`: everything needed to continue a run exactly where
//! it stopped, after every epoch, in one file that is replaced atomically.
//!
//! Tensors: `model/<variable>` (every variable, BatchNorm statistics included),
//! `optim/<parameter>/<buffer>` and `optim/steps` (the current phase's optimizer),
//! and `metrics` (one f64 row per epoch so far, in [`Metric::ALL`] order).
//! The rest of the state is JSON in the file's metadata under `runner.state`.
//!
//! Random state needs no saving: every epoch reseeds the shuffling and
//! augmentation generator and libtorch's generator from (seed, epoch).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail};
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::config::spec::Monitor;
use crate::sys::atomic::with_temp_path;
use crate::sys::fetch::sha256_hex;
use crate::train::metrics::{EpochRecord, Metric};

const STATE_KEY: &str = "runner.state";
/// sha256 of each tensor's bytes, by name (absent from checkpoints written before this check).
const DIGESTS_KEY: &str = "runner.sha256";
const FORMAT: u32 = 1;

/// The best epoch so far by the monitored metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub epoch: usize,
    pub monitor: Monitor,
    pub value: f64,
}

/// Early stopping as Keras counts it: epochs since the monitored metric last
/// improved by more than `min_delta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopState {
    pub monitor: Monitor,
    pub patience: usize,
    pub min_delta: f64,
    /// The reference value improvements are measured against.
    pub best: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Epochs since the last improvement.
    pub wait: usize,
    /// The epochs after which patience ran out (one per phase at most with scope = "phase").
    pub stopped_after: Vec<usize>,
}

impl EarlyStopState {
    pub fn new(monitor: Monitor, patience: usize, min_delta: f64) -> Self {
        EarlyStopState { monitor, patience, min_delta, best: None, best_epoch: None, wait: 0, stopped_after: vec![] }
    }

    /// Counts one epoch; true when patience has run out.
    pub fn update(&mut self, epoch: usize, value: f64) -> bool {
        if self.monitor.improves(value, self.best, self.min_delta) {
            self.best = Some(value);
            self.best_epoch = Some(epoch);
            self.wait = 0;
            return false;
        }
        self.wait += 1;
        if self.wait >= self.patience {
            self.stopped_after.push(epoch);
            return true;
        }
        false
    }

    /// A new phase with fresh patience (scope = "phase").
    pub(crate) fn reset(&mut self) {
        self.best = None;
        self.best_epoch = None;
        self.wait = 0;
    }
}

/// Where a run stands after an epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub format: u32,
    pub run_id: String,
    /// sha256 of the canonical spec the run was started with.
    pub config_sha256: String,
    pub runner_version: String,
    pub threads: i32,
    /// Epochs completed, across phases.
    pub epoch: usize,
    /// The next epoch: its phase and how many epochs of that phase are done.
    pub next_phase: usize,
    pub next_phase_epoch: usize,
    /// All phases done, or stopped early: only the final evaluation is left.
    pub finished: bool,
    pub best: Option<Best>,
    pub early_stopping: Option<EarlyStopState>,
    /// The phase of each metrics row.
    pub row_phases: Vec<String>,
    /// fp16 loss scaling (absent in fp32 runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaler: Option<crate::train::optim::GradScaler>,
    /// The rates the range test found, by phase name (`optimizer.lr = "find"`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub found_lr: std::collections::BTreeMap<String, f64>,
}

impl TrainState {
    /// Moves past `epoch` (of phase `phase`), trained and recorded; `stop`: early stopping
    /// ended its phase. Returns whether the phase is over; the run is `finished` when it
    /// was the last, or when early stopping ends the whole run.
    pub(crate) fn advance(&mut self, epoch: usize, phase: &str, stop: bool, spec: &crate::config::spec::Spec) -> bool {
        let (p, phase_epoch) = (self.next_phase, self.next_phase_epoch);
        self.epoch = epoch;
        self.row_phases.push(phase.to_string());
        let phase_over = stop || phase_epoch + 1 == spec.phases[p].epochs;
        if phase_over {
            self.next_phase = p + 1;
            self.next_phase_epoch = 0;
            let scope = spec.early_stopping.as_ref().map(|e| e.scope);
            let run_scope = scope == Some(crate::config::spec::StopScope::Run);
            self.finished = self.next_phase == spec.phases.len() || (stop && run_scope);
        } else {
            self.next_phase_epoch = phase_epoch + 1;
        }
        phase_over
    }

    pub fn new(run_id: &str, config_sha256: &str, threads: i32) -> Self {
        TrainState {
            format: FORMAT,
            run_id: run_id.into(),
            config_sha256: config_sha256.into(),
            runner_version: env!("CARGO_PKG_VERSION").into(),
            threads,
            epoch: 0,
            next_phase: 0,
            next_phase_epoch: 0,
            finished: false,
            best: None,
            early_stopping: None,
            row_phases: vec![],
            scaler: None,
            found_lr: Default::default(),
        }
    }
}

pub struct Checkpoint {
    pub state: TrainState,
    pub rows: Vec<EpochRecord>,
    /// Variable name -> value.
    pub model: Vec<(String, Tensor)>,
    /// The optimizer's state ([`crate::train::optim::Optimizer::state_tensors`]); empty between phases.
    pub optimizer: Vec<(String, Tensor)>,
    /// The weight EMA's state, named `ema/...` (empty without `ema`).
    pub ema: Vec<(String, Tensor)>,
}

/// A CPU tensor as safetensors sees it; its bytes are copied only when written.
struct CpuView {
    tensor: Tensor,
    dtype: Dtype,
    shape: Vec<usize>,
}

impl CpuView {
    fn new(t: &Tensor) -> Result<Self> {
        let tensor = t.detach().to_device(Device::Cpu).contiguous();
        let dtype = Dtype::try_from(tensor.kind()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let shape = tensor.size().iter().map(|&d| d as usize).collect();
        Ok(CpuView { tensor, dtype, shape })
    }
}

impl View for &CpuView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let mut bytes = vec![0u8; self.data_len()];
        self.tensor.copy_data_u8(&mut bytes, self.tensor.numel());
        bytes.into()
    }
    fn data_len(&self) -> usize {
        self.tensor.numel() * self.tensor.kind().elt_size_in_bytes()
    }
}

fn metrics_tensor(rows: &[EpochRecord]) -> Tensor {
    let flat: Vec<f64> = rows.iter().flat_map(|r| Metric::ALL.map(|m| m.of(r))).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, Metric::ALL.len() as i64])
}

impl Checkpoint {
    /// Writes the checkpoint to `path` atomically: a kill at any moment leaves the previous one.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut views: Vec<(String, CpuView)> = vec![("metrics".into(), CpuView::new(&metrics_tensor(&self.rows))?)];
        for (name, t) in &self.model {
            views.push((format!("model/{name}"), CpuView::new(t)?));
        }
        for (name, t) in &self.optimizer {
            views.push((format!("optim/{name}"), CpuView::new(t)?));
        }
        for (name, t) in &self.ema {
            views.push((name.clone(), CpuView::new(t)?));
        }
        let state = serde_json::to_string(&self.state).context("cannot serialise the training state")?;
        // Each tensor's sha256, checked on resume: a tensor altered on disk is refused, not trained on.
        let digests: BTreeMap<&str, String> = views.iter().map(|(n, v)| (n.as_str(), sha256_hex(&v.data()))).collect();
        let digests = serde_json::to_string(&digests).context("cannot serialise the digests")?;
        let metadata = Some(HashMap::from([(STATE_KEY.to_string(), state), (DIGESTS_KEY.to_string(), digests)]));
        let bytes = safetensors::tensor::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), &metadata)
            .with_context(|| format!("cannot serialise {}", path.display()))?;
        let epoch = self.state.epoch;
        with_temp_path(path, |tmp| {
            use std::io::Write;
            let mut file = std::fs::File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            let (first, rest) = bytes.split_at(bytes.len() / 2);
            file.write_all(first)
                .and_then(|()| file.flush())
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            crate::sys::failpoint::hit(|| format!("checkpoint-{epoch}"));
            file.write_all(rest).with_context(|| format!("cannot write {}", tmp.display()))
        })
    }

    pub fn read(path: &Path) -> Result<Checkpoint> {
        let damaged = |what: String| {
            anyhow::anyhow!(
                "checkpoint {} is damaged ({what}); delete it, or rerun with --force to start the run over",
                path.display()
            )
        };
        let bytes = read_bounded(path).map_err(|e| damaged(format!("{e:#}")))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| damaged(format!("{e:?}")))?;
        let state_json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(STATE_KEY))
            .ok_or_else(|| damaged(format!("no {STATE_KEY} metadata")))?;
        let state: TrainState =
            serde_json::from_str(state_json).map_err(|e| damaged(format!("training state: {e}")))?;
        if state.format != FORMAT {
            bail!("checkpoint {} has format {}, this runner reads format {FORMAT}", path.display(), state.format);
        }
        let digests: Option<BTreeMap<String, String>> = match meta.metadata().as_ref().and_then(|m| m.get(DIGESTS_KEY))
        {
            Some(json) => Some(serde_json::from_str(json).map_err(|e| damaged(format!("digests: {e}")))?),
            None => None,
        };
        let file = SafeTensors::deserialize(&bytes).map_err(|e| damaged(format!("{e:?}")))?;
        if let Some(digests) = &digests {
            if digests.len() != file.len() {
                return Err(damaged(format!("{} tensors for {} digests", file.len(), digests.len())));
            }
            for (name, view) in file.tensors() {
                if digests.get(&name) != Some(&sha256_hex(view.data())) {
                    return Err(damaged(format!("tensor {name} does not match its sha256")));
                }
            }
        }
        let mut model = vec![];
        let mut optimizer = vec![];
        let mut ema = vec![];
        let mut metrics = None;
        for (name, view) in file.tensors() {
            let t: Tensor = view.try_into().map_err(|e| damaged(format!("{name}: {e}")))?;
            if let Some(var) = name.strip_prefix("model/") {
                model.push((var.to_string(), t));
            } else if let Some(key) = name.strip_prefix("optim/") {
                optimizer.push((key.to_string(), t));
            } else if name.starts_with("ema/") {
                ema.push((name.to_string(), t));
            } else if name == "metrics" {
                metrics = Some(t);
            } else {
                return Err(damaged(format!("unexpected tensor {name}")));
            }
        }
        model.sort_by(|a, b| a.0.cmp(&b.0));
        let metrics = metrics.ok_or_else(|| damaged("no metrics".into()))?;
        let n = state.row_phases.len();
        if metrics.size() != [n as i64, Metric::ALL.len() as i64] || metrics.kind() != Kind::Double {
            return Err(damaged(format!("metrics has shape {:?} for {n} epochs", metrics.size())));
        }
        let flat = Vec::<f64>::try_from(&metrics.flatten(0, -1)).map_err(|e| damaged(e.to_string()))?;
        let rows = flat
            .chunks(Metric::ALL.len())
            .zip(&state.row_phases)
            .enumerate()
            .map(|(i, (v, phase))| EpochRecord::from_values(i + 1, phase, &Metric::ALL, v))
            .collect();
        Ok(Checkpoint { state, rows, model, optimizer, ema })
    }
}

/// A checkpoint file's bytes: a regular file (not a device such as /dev/zero that a link
/// may point at), read no further than its size, which must fit in the memory available.
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("not a regular file");
    }
    let size = meta.len();
    if let Some(available) = crate::sys::memory::available_bytes().filter(|a| size > *a) {
        bail!("{size} bytes, more than the {available} bytes of memory available");
    }
    let mut bytes = Vec::with_capacity(size as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(size).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(bytes)
}

/// best.safetensors: the weights evaluation uses (the EMA's with `ema`), whenever an
/// epoch is the best so far.
pub(crate) struct BestWeights;

impl crate::record::sink::Sink for BestWeights {
    fn epoch(&mut self, records: &mut crate::record::sink::Records, epoch: &crate::record::sink::Epoch) -> Result<()> {
        if !epoch.improved || epoch.diverged {
            return Ok(());
        }
        let path = records.dir.best();
        let named = epoch.trainer.eval_variables();
        with_temp_path(&path, |tmp| {
            Tensor::write_safetensors(&named, tmp).with_context(|| format!("cannot write {}", tmp.display()))
        })
    }
}

/// checkpoint.safetensors after every good epoch: the state, the metrics rows, every
/// variable, the optimizer's state within a phase, and the EMA's.
pub(crate) struct Checkpoints;

impl crate::record::sink::Sink for Checkpoints {
    fn epoch(&mut self, records: &mut crate::record::sink::Records, epoch: &crate::record::sink::Epoch) -> Result<()> {
        if epoch.diverged {
            return Ok(());
        }
        let ck = Checkpoint {
            state: epoch.state.clone(),
            rows: epoch.rows.to_vec(),
            model: epoch.trainer.variables(),
            optimizer: if epoch.phase_over { vec![] } else { epoch.phase.optimizer_state() },
            ema: epoch.trainer.ema_state(),
        };
        ck.write(&records.dir.checkpoint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_stopping_counts_like_keras() {
        let mut es = EarlyStopState::new(Monitor::ValAcc, 2, 0.01);
        assert!(!es.update(1, 0.5));
        assert!(!es.update(2, 0.505)); // not by more than min_delta
        assert_eq!((es.wait, es.best), (1, Some(0.5)));
        assert!(!es.update(3, 0.6));
        assert!(!es.update(4, 0.6));
        assert!(es.update(5, f64::NAN));
        assert_eq!(es.stopped_after, [5]);
        assert_eq!(es.best_epoch, Some(3));
        let mut loss = EarlyStopState::new(Monitor::ValLoss, 1, 0.0);
        assert!(!loss.update(1, 1.0));
        assert!(!loss.update(2, 0.9));
        assert!(loss.update(3, 0.95));
    }

    #[test]
    fn round_trip_is_exact_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::record::run_dir::RunDir::at(dir.path()).checkpoint();
        let rows: Vec<EpochRecord> = (1..=2)
            .map(|e| EpochRecord {
                epoch: e,
                phase: format!("p{e}"),
                lr: 0.1 / e as f64,
                train_loss: f64::NAN,
                train_acc: 1.0 / 3.0,
                val_loss: 0.7,
                val_acc: 0.25,
                seconds: 1.5,
                train_images_per_s: 100.0,
            })
            .collect();
        let mut state = TrainState::new("abc", "sha", 2);
        state.row_phases = rows.iter().map(|r| r.phase.clone()).collect();
        state.epoch = 2;
        state.early_stopping = Some(EarlyStopState::new(Monitor::ValLoss, 3, 0.0));
        let w = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
        let ck = Checkpoint {
            state,
            rows: rows.clone(),
            model: vec![("a.weight".into(), w.shallow_clone())],
            optimizer: vec![("steps".into(), Tensor::from(7i64))],
            ema: vec![],
        };
        ck.write(&path).unwrap();
        let back = Checkpoint::read(&path).unwrap();
        assert!(back.model[0].1.equal(&w));
        assert_eq!(back.optimizer[0].1.int64_value(&[]), 7);
        assert_eq!(back.state.early_stopping, ck.state.early_stopping);
        assert_eq!(back.rows.len(), 2);
        assert!(back.rows[0].train_loss.is_nan());
        assert_eq!(back.rows[1].lr.to_bits(), rows[1].lr.to_bits());
        assert_eq!(back.rows[1].train_acc.to_bits(), rows[1].train_acc.to_bits());
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let bytes = std::fs::read(&path).unwrap();
        // One byte of the last tensor altered, the header intact: refused, not resumed from.
        let mut altered = bytes.clone();
        *altered.last_mut().unwrap() ^= 0x40;
        std::fs::write(&path, &altered).unwrap();
        let e = Checkpoint::read(&path).err().unwrap().to_string();
        assert!(e.contains("does not match its sha256") && e.contains("--force"), "{e}");

        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let e = Checkpoint::read(&path).err().unwrap().to_string();
        assert!(e.contains("is damaged") && e.contains("--force"), "{e}");

        // A link to a device that never ends (issue 29: read until the kernel killed runner).
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let e = Checkpoint::read(&path).err().unwrap().to_string();
        assert!(e.contains("is damaged (not a regular file)") && e.contains("--force"), "{e}");
        // A file larger than the memory available is refused before it is read (sparse: no disk used).
        std::fs::remove_file(&path).unwrap();
        let huge = crate::sys::memory::available_bytes().expect("Linux says") + (1 << 30);
        std::fs::File::create(&path).unwrap().set_len(huge).unwrap();
        let e = Checkpoint::read(&path).err().unwrap().to_string();
        assert!(e.contains("more than the") && e.contains("bytes of memory available"), "{e}");
    }
}
