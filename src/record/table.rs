//! Per-epoch metrics and their tables (CSV and Parquet through polars; the report's
//! summary tables use polars too, in report.rs).

use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::{
    Column, CsvReadOptions, CsvWriter, DataFrame, DataType, ParquetReader, ParquetWriter, SerReader, SerWriter,
};

use crate::record::run_dir::RunDir;
use crate::sys::atomic::write_atomic;
use crate::train::metrics::{EpochRecord, Metric};

fn frame(rows: &[EpochRecord]) -> Result<DataFrame> {
    let mut columns = vec![
        Column::new("epoch".into(), rows.iter().map(|r| r.epoch as u32).collect::<Vec<_>>()),
        Column::new("phase".into(), rows.iter().map(|r| r.phase.as_str()).collect::<Vec<_>>()),
    ];
    for m in Metric::REPRODUCIBLE {
        columns.push(Column::new(m.name().into(), rows.iter().map(|r| m.of(r)).collect::<Vec<_>>()));
    }
    Ok(DataFrame::new(rows.len(), columns)?)
}

/// Writes `metrics.csv` and `metrics.parquet`, and the epochs' timing in
/// `timing.csv`, into `dir`, each atomically.
pub(crate) fn write_metrics(dir: &RunDir, rows: &[EpochRecord]) -> Result<()> {
    let mut timing = vec![
        Column::new("epoch".into(), rows.iter().map(|r| r.epoch as u32).collect::<Vec<_>>()),
        Column::new("phase".into(), rows.iter().map(|r| r.phase.as_str()).collect::<Vec<_>>()),
    ];
    for m in Metric::TIMING {
        // Milliseconds for the epoch's time, a tenth of an image for its throughput.
        let decimals = if m == Metric::Seconds { 3 } else { 1 };
        let values: Vec<String> = rows.iter().map(|r| format!("{:.*}", decimals, m.of(r))).collect();
        timing.push(Column::new(m.name().into(), values));
    }
    write_csv(&dir.timing(), timing, None)?;
    write_frame_to(&mut frame(rows)?, &dir.metrics_csv(), &dir.metrics_parquet())
}

/// The range test's steps as CSV: step, lr, loss, smoothed_loss.
pub(crate) fn write_lr_find(path: &Path, found: &crate::train::LrFind) -> Result<()> {
    let columns = vec![
        Column::new("step".into(), (1..=found.lrs.len() as u32).collect::<Vec<_>>()),
        Column::new("lr".into(), found.lrs.clone()),
        Column::new("loss".into(), found.losses.clone()),
        Column::new("smoothed_loss".into(), found.smoothed.clone()),
    ];
    write_csv(path, columns, None)
}

/// Writes `df` as `<dir>/<stem>.csv` and `<dir>/<stem>.parquet`, each atomically.
pub(crate) fn write_frame(df: &mut DataFrame, dir: &Path, stem: &str) -> Result<()> {
    write_frame_to(df, &dir.join(format!("{stem}.csv")), &dir.join(format!("{stem}.parquet")))
}

fn write_frame_to(df: &mut DataFrame, csv_path: &Path, parquet_path: &Path) -> Result<()> {
    write_frame_csv(df, csv_path, None)?;
    let mut parquet = Vec::new();
    ParquetWriter::new(&mut parquet).finish(df).with_context(|| format!("cannot format {}", parquet_path.display()))?;
    write_atomic(parquet_path, &parquet)
}

/// Writes a table given as its columns through polars' CSV writer, atomically;
/// floats with `decimals` digits after the point (all of them when `None`).
pub(crate) fn write_csv(path: &Path, columns: Vec<Column>, decimals: Option<usize>) -> Result<()> {
    let height = columns.first().map_or(0, Column::len);
    let mut df = DataFrame::new(height, columns).with_context(|| format!("cannot tabulate {}", path.display()))?;
    write_frame_csv(&mut df, path, decimals)
}

/// `df` as CSV at `path`, with a header, atomically; floats with `decimals` digits.
fn write_frame_csv(df: &mut DataFrame, path: &Path, decimals: Option<usize>) -> Result<()> {
    let mut csv = Vec::new();
    CsvWriter::new(&mut csv)
        .include_header(true)
        .with_float_precision(decimals)
        .finish(df)
        .with_context(|| format!("cannot format {}", path.display()))?;
    write_atomic(path, &csv)
}

/// Reads `metrics.parquet` back (used by tests and reports).
pub fn read_metrics(path: &Path) -> Result<DataFrame> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    ParquetReader::new(file).finish().with_context(|| format!("cannot read {}", path.display()))
}

/// A run's epochs from its `metrics.parquet` (timing columns are zero: they live in timing.csv).
pub(crate) fn read_records(path: &Path) -> Result<Vec<EpochRecord>> {
    records(&read_metrics(path)?).with_context(|| format!("unexpected columns in {}", path.display()))
}

/// Reads `metrics.csv` (a recorded run's text form, as verify compares it).
pub(crate) fn read_records_csv(path: &Path) -> Result<Vec<EpochRecord>> {
    let df = CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        .with_context(|| format!("cannot read {}", path.display()))?;
    records(&df).with_context(|| format!("unexpected columns in {}", path.display()))
}

fn records(df: &DataFrame) -> Result<Vec<EpochRecord>> {
    let f64s = |name: &str| -> Result<Vec<f64>> {
        let col = df.column(name)?.cast(&DataType::Float64)?;
        let ca = col.f64()?;
        Ok((0..ca.len()).map(|i| ca.get(i).unwrap_or(f64::NAN)).collect())
    };
    let epochs = df.column("epoch")?.cast(&DataType::UInt64)?;
    let epochs = epochs.u64()?;
    let epochs: Vec<usize> = (0..epochs.len()).map(|i| epochs.get(i).unwrap_or(0) as usize).collect();
    let phases = df.column("phase")?.cast(&DataType::String)?;
    let phases = phases.str()?;
    let phases: Vec<String> = (0..phases.len()).map(|i| phases.get(i).unwrap_or("").to_string()).collect();
    let columns = Metric::REPRODUCIBLE.map(|m| f64s(m.name())).into_iter().collect::<Result<Vec<_>>>()?;
    Ok((0..df.height())
        .map(|i| {
            let values: Vec<f64> = columns.iter().map(|c| c[i]).collect();
            EpochRecord::from_values(epochs[i], &phases[i], &Metric::REPRODUCIBLE, &values)
        })
        .collect())
}

/// metrics.csv, metrics.parquet and timing.csv, rewritten after every epoch (a diverged one too).
pub(crate) struct Tables;

impl crate::record::sink::Sink for Tables {
    fn epoch(&mut self, records: &mut crate::record::sink::Records, epoch: &crate::record::sink::Epoch) -> Result<()> {
        write_metrics(records.dir, epoch.rows)
    }
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
        write_metrics(&RunDir::at(dir.path()), &rows).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
        assert_eq!(csv.lines().next().unwrap(), "epoch,phase,lr,train_loss,train_acc,val_loss,val_acc");
        assert_eq!(csv.lines().count(), 4);
        let df = read_metrics(&dir.path().join("metrics.parquet")).unwrap();
        assert_eq!(df.height(), 3);
        let val = df.column("val_acc").unwrap().f64().unwrap();
        assert_eq!(val.get(2), Some(0.75));
        let timeless = |r: &EpochRecord| EpochRecord { seconds: 0.0, train_images_per_s: 0.0, ..r.clone() };
        let expected: Vec<EpochRecord> = rows.iter().map(timeless).collect();
        assert_eq!(read_records(&dir.path().join("metrics.parquet")).unwrap(), expected);
        assert_eq!(read_records_csv(&dir.path().join("metrics.csv")).unwrap(), expected);
    }
}
