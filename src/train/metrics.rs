//! The per-epoch metrics: the one definition from which metrics.csv and
//! metrics.parquet, timing.csv, the checkpoint's metrics tensor, `runner verify`,
//! the monitored metric and run.log take their columns.

use serde::{Deserialize, Serialize};

use crate::config::spec::Monitor;

/// One epoch of a run. The epoch index runs across phases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub phase: String,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    /// Wall time of the epoch (training and validation). Timing is kept out of
    /// metrics.csv, which is byte-identical when a run is repeated.
    pub seconds: f64,
    pub train_images_per_s: f64,
}

/// A number an [`EpochRecord`] holds besides its epoch and phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metric {
    Lr,
    TrainLoss,
    TrainAcc,
    ValLoss,
    ValAcc,
    Seconds,
    TrainImagesPerS,
}

impl Metric {
    /// Every metric, in the order of the checkpoint's metrics tensor.
    pub const ALL: [Metric; 7] = [
        Metric::Lr,
        Metric::TrainLoss,
        Metric::TrainAcc,
        Metric::ValLoss,
        Metric::ValAcc,
        Metric::Seconds,
        Metric::TrainImagesPerS,
    ];
    /// What metrics.csv holds after `epoch,phase`: the numbers a rerun reproduces
    /// bit for bit, and the ones `runner verify` compares.
    pub(crate) const REPRODUCIBLE: [Metric; 5] =
        [Metric::Lr, Metric::TrainLoss, Metric::TrainAcc, Metric::ValLoss, Metric::ValAcc];
    /// What timing.csv holds after `epoch,phase`.
    pub(crate) const TIMING: [Metric; 2] = [Metric::Seconds, Metric::TrainImagesPerS];

    /// The column name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Lr => "lr",
            Metric::TrainLoss => "train_loss",
            Metric::TrainAcc => "train_acc",
            Metric::ValLoss => "val_loss",
            Metric::ValAcc => "val_acc",
            Metric::Seconds => "seconds",
            Metric::TrainImagesPerS => "train_images_per_s",
        }
    }

    /// This metric of `r`.
    pub fn of(self, r: &EpochRecord) -> f64 {
        match self {
            Metric::Lr => r.lr,
            Metric::TrainLoss => r.train_loss,
            Metric::TrainAcc => r.train_acc,
            Metric::ValLoss => r.val_loss,
            Metric::ValAcc => r.val_acc,
            Metric::Seconds => r.seconds,
            Metric::TrainImagesPerS => r.train_images_per_s,
        }
    }

    fn slot(self, r: &mut EpochRecord) -> &mut f64 {
        match self {
            Metric::Lr => &mut r.lr,
            Metric::TrainLoss => &mut r.train_loss,
            Metric::TrainAcc => &mut r.train_acc,
            Metric::ValLoss => &mut r.val_loss,
            Metric::ValAcc => &mut r.val_acc,
            Metric::Seconds => &mut r.seconds,
            Metric::TrainImagesPerS => &mut r.train_images_per_s,
        }
    }
}

impl From<Monitor> for Metric {
    fn from(m: Monitor) -> Metric {
        match m {
            Monitor::ValAcc => Metric::ValAcc,
            Monitor::ValLoss => Metric::ValLoss,
            Monitor::TrainAcc => Metric::TrainAcc,
            Monitor::TrainLoss => Metric::TrainLoss,
        }
    }
}

impl EpochRecord {
    /// A record of `epoch` in `phase` with these metrics (in `metrics` order); the
    /// metrics not given are 0.
    pub(crate) fn from_values(epoch: usize, phase: &str, metrics: &[Metric], values: &[f64]) -> EpochRecord {
        let mut r = EpochRecord {
            epoch,
            phase: phase.to_string(),
            lr: 0.0,
            train_loss: 0.0,
            train_acc: 0.0,
            val_loss: 0.0,
            val_acc: 0.0,
            seconds: 0.0,
            train_images_per_s: 0.0,
        };
        for (m, v) in metrics.iter().zip(values) {
            *m.slot(&mut r) = *v;
        }
        r
    }

    /// The value of the metric `monitor` watches.
    pub(crate) fn monitored(&self, monitor: Monitor) -> f64 {
        Metric::from(monitor).of(self)
    }

    /// The epoch's line in run.log and on stdout.
    pub(crate) fn log_line(&self, total_epochs: usize) -> String {
        format!(
            "epoch {:>3}/{total_epochs} {:<18} lr {:.1e}  train loss {:.4} acc {:.4}  val loss {:.4} acc {:.4}  \
             {:.1}s {:.0} img/s",
            self.epoch,
            self.phase,
            self.lr,
            self.train_loss,
            self.train_acc,
            self.val_loss,
            self.val_acc,
            self.seconds,
            self.train_images_per_s
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_round_trips_through_its_slot_and_the_lists_partition_them() {
        let values: Vec<f64> = (1..=7).map(f64::from).collect();
        let r = EpochRecord::from_values(4, "head", &Metric::ALL, &values);
        assert_eq!(Metric::ALL.map(|m| m.of(&r)).to_vec(), values);
        let names: Vec<&str> = Metric::REPRODUCIBLE.iter().chain(&Metric::TIMING).map(|m| m.name()).collect();
        assert_eq!(names, Metric::ALL.map(Metric::name));
        assert_eq!(r.monitored(Monitor::ValLoss), 4.0);
        assert_eq!(r.monitored(Monitor::TrainAcc), 3.0);
        assert!(r.log_line(9).starts_with("epoch   4/9 head "));
    }

    #[test]
    fn a_spec_monitors_a_metric_by_its_column_name() {
        for m in [Monitor::ValAcc, Monitor::ValLoss, Monitor::TrainAcc, Monitor::TrainLoss] {
            assert_eq!(Metric::from(m).name(), m.name());
        }
    }
}
