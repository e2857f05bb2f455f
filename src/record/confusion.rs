//! Test-split evaluation: the confusion matrix and per-class precision, recall and F1.

use anyhow::Result;

use polars::prelude::Column;

use crate::record::run_dir::RunDir;
use crate::record::table;

/// `counts[t][p]`: images of true class `t` predicted as `p`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Confusion {
    pub classes: Vec<String>,
    pub counts: Vec<Vec<u64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClassScores {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

impl Confusion {
    pub fn new(classes: &[String], truth: &[i64], predicted: &[i64]) -> Self {
        let k = classes.len();
        let mut counts = vec![vec![0u64; k]; k];
        for (&t, &p) in truth.iter().zip(predicted) {
            counts[t as usize][p as usize] += 1;
        }
        Confusion { classes: classes.to_vec(), counts }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    pub(crate) fn accuracy(&self) -> f64 {
        let right: u64 = (0..self.classes.len()).map(|i| self.counts[i][i]).sum();
        right as f64 / self.total().max(1) as f64
    }

    /// Per class, as scikit-learn's classification_report computes them (0 where undefined).
    pub(crate) fn scores(&self) -> Vec<ClassScores> {
        let k = self.classes.len();
        (0..k)
            .map(|c| {
                let tp = self.counts[c][c] as f64;
                let support: u64 = self.counts[c].iter().sum();
                let predicted: u64 = (0..k).map(|t| self.counts[t][c]).sum();
                let ratio = |a: f64, b: u64| if b == 0 { 0.0 } else { a / b as f64 };
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
                ClassScores { class: self.classes[c].clone(), precision, recall, f1, support }
            })
            .collect()
    }

    /// `confusion.csv` (rows: true class, columns: predicted) and `test_metrics.csv`
    /// (per class, then the unweighted mean as `macro_avg`).
    pub fn write(&self, dir: &RunDir) -> Result<()> {
        let mut columns = vec![Column::new("true\\predicted".into(), self.classes.clone())];
        for (p, class) in self.classes.iter().enumerate() {
            let counts: Vec<u64> = self.counts.iter().map(|row| row[p]).collect();
            columns.push(Column::new(class.as_str().into(), counts));
        }
        table::write_csv(&dir.confusion_csv(), columns, None)?;

        let scores = self.scores();
        let k = scores.len().max(1) as f64;
        let mean = |f: fn(&ClassScores) -> f64| scores.iter().map(f).sum::<f64>() / k;
        let with_mean = |f: fn(&ClassScores) -> f64| scores.iter().map(f).chain([mean(f)]).collect::<Vec<f64>>();
        let columns = vec![
            Column::new(
                "class".into(),
                scores.iter().map(|s| s.class.as_str()).chain(["macro_avg"]).collect::<Vec<_>>(),
            ),
            Column::new("precision".into(), with_mean(|s| s.precision)),
            Column::new("recall".into(), with_mean(|s| s.recall)),
            Column::new("f1".into(), with_mean(|s| s.f1)),
            Column::new("support".into(), scores.iter().map(|s| s.support).chain([self.total()]).collect::<Vec<_>>()),
        ];
        table::write_csv(&dir.test_metrics(), columns, Some(6))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_a_hand_count() {
        let classes: Vec<String> = ["ant", "bee", "wasp"].iter().map(|s| s.to_string()).collect();
        // ant: 3 right, 1 as bee; bee: 2 right; wasp: 1 as ant, never predicted right.
        let truth = [0, 0, 0, 0, 1, 1, 2];
        let pred = [0, 0, 0, 1, 1, 1, 0];
        let c = Confusion::new(&classes, &truth, &pred);
        assert_eq!(c.counts, vec![vec![3, 1, 0], vec![0, 2, 0], vec![1, 0, 0]]);
        assert!((c.accuracy() - 5.0 / 7.0).abs() < 1e-12);
        let s = c.scores();
        assert!((s[0].precision - 0.75).abs() < 1e-12 && (s[0].recall - 0.75).abs() < 1e-12);
        assert!((s[1].precision - 2.0 / 3.0).abs() < 1e-12 && s[1].recall == 1.0);
        assert!((s[1].f1 - 0.8).abs() < 1e-12);
        assert_eq!((s[2].precision, s[2].recall, s[2].f1, s[2].support), (0.0, 0.0, 0.0, 1));

        let dir = tempfile::tempdir().unwrap();
        c.write(&RunDir::at(dir.path())).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("confusion.csv")).unwrap();
        assert_eq!(csv, "true\\predicted,ant,bee,wasp\nant,3,1,0\nbee,0,2,0\nwasp,1,0,0\n");
        let m = std::fs::read_to_string(dir.path().join("test_metrics.csv")).unwrap();
        assert!(m.contains("bee,0.666667,1.000000,0.800000,2\n"), "{m}");
        assert!(m.ends_with(",7\n"), "{m}");
    }
}
