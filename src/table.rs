//! Per-epoch metrics and their tables. Polars stays inside this module.

use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::{Column, CsvWriter, DataFrame, ParquetReader, ParquetWriter, SerReader, SerWriter};
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;

/// One row of metrics.csv: one epoch. The epoch index runs across phases.
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

fn frame(rows: &[EpochRecord]) -> Result<DataFrame> {
    let col_f64 =
        |name: &str, f: fn(&EpochRecord) -> f64| Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>());
    let df = DataFrame::new(
        rows.len(),
        vec![
            Column::new("epoch".into(), rows.iter().map(|r| r.epoch as u32).collect::<Vec<_>>()),
            Column::new("phase".into(), rows.iter().map(|r| r.phase.as_str()).collect::<Vec<_>>()),
            col_f64("lr", |r| r.lr),
            col_f64("train_loss", |r| r.train_loss),
            col_f64("train_acc", |r| r.train_acc),
            col_f64("val_loss", |r| r.val_loss),
            col_f64("val_acc", |r| r.val_acc),
        ],
    )?;
    Ok(df)
}

/// Writes `metrics.csv` and `metrics.parquet`, and the epochs' timing in
/// `timing.csv`, into `dir`, each atomically.
pub fn write_metrics(dir: &Path, rows: &[EpochRecord]) -> Result<()> {
    let mut timing = String::from("epoch,phase,seconds,train_images_per_s\n");
    for r in rows {
        timing.push_str(&format!(
            "{},{},{:.3},{:.1}\n",
            r.epoch,
            crate::data::csv_field(&r.phase),
            r.seconds,
            r.train_images_per_s
        ));
    }
    write_atomic(&dir.join("timing.csv"), timing.as_bytes())?;
    let mut df = frame(rows)?;
    let mut csv = Vec::new();
    CsvWriter::new(&mut csv).include_header(true).finish(&mut df).context("cannot format metrics.csv")?;
    write_atomic(&dir.join("metrics.csv"), &csv)?;
    let mut parquet = Vec::new();
    ParquetWriter::new(&mut parquet).finish(&mut df).context("cannot format metrics.parquet")?;
    write_atomic(&dir.join("metrics.parquet"), &parquet)?;
    Ok(())
}

/// Reads `metrics.parquet` back (used by tests and reports).
pub fn read_metrics(path: &Path) -> Result<DataFrame> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    ParquetReader::new(file).finish().with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_parquet_hold_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<EpochRecord> = (1..=3)
            .map(|e| EpochRecord {
                epoch: e,
                phase: if e < 3 { "head".into() } else { "fine_tune".into() },
                lr: 1e-3,
                train_loss: 1.0 / e as f64,
                train_acc: 0.5,
                val_loss: 0.9,
                val_acc: 0.25 * e as f64,
                seconds: 1.5,
                train_images_per_s: 10.0,
            })
            .collect();
        write_metrics(dir.path(), &rows).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
        assert_eq!(csv.lines().next().unwrap(), "epoch,phase,lr,train_loss,train_acc,val_loss,val_acc");
        assert_eq!(csv.lines().count(), 4);
        let df = read_metrics(&dir.path().join("metrics.parquet")).unwrap();
        assert_eq!(df.height(), 3);
        let val = df.column("val_acc").unwrap().f64().unwrap();
        assert_eq!(val.get(2), Some(0.75));
    }
}
