//! k-fold cross-validation: a dataset's train and val files pooled and dealt into k
//! stratified folds, one of which validates.

use anyhow::{Result, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::{FileSplit, Sample};

/// The files of fold `fold` of `k`: train and val pooled; each class's files, sorted by
/// path, shuffled by `seed` (a stream of its own, not the split's) and dealt into the folds
/// in turn, each class starting at the fold after the previous class's last, so that every
/// file is in exactly one fold and folds differ in size by at most one. The fold's files
/// validate, the others train; the test split is kept as it is. A class with fewer files
/// than folds is an error: some fold would have none of it to validate on.
pub(crate) fn select(files: FileSplit, k: usize, fold: usize, seed: u64) -> Result<FileSplit> {
    let FileSplit { root, classes, train, val, test, unreachable } = files;
    let mut pools: Vec<Vec<Sample>> = vec![vec![]; classes.len()];
    for s in train.into_iter().chain(val) {
        pools[s.class].push(s);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    let (mut train, mut val) = (vec![], vec![]);
    let mut next = 0;
    for (class, mut pool) in pools.into_iter().enumerate() {
        if pool.len() < k {
            bail!(
                "class `{}` has {} train and val image(s), fewer than data.folds = {k}: every fold needs one",
                classes[class],
                pool.len()
            );
        }
        pool.sort_by(|a, b| a.path.cmp(&b.path));
        pool.shuffle(&mut rng);
        for s in pool {
            if next % k == fold {
                val.push(s)
            } else {
                train.push(s)
            }
            next += 1;
        }
    }
    Ok(FileSplit { root, classes, train, val, test, unreachable })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn files(per_class: &[usize]) -> FileSplit {
        let mut train = vec![];
        let mut val = vec![];
        for (class, &n) in per_class.iter().enumerate() {
            for i in 0..n {
                let s = Sample { path: PathBuf::from(format!("c{class}/{i:03}.png")), class };
                if i % 4 == 0 { val.push(s) } else { train.push(s) }
            }
        }
        let test = vec![Sample { path: "t/0.png".into(), class: 0 }];
        let classes = (0..per_class.len()).map(|c| format!("c{c}")).collect();
        FileSplit { root: "/d".into(), classes, train, val, test, unreachable: vec![] }
    }

    #[test]
    fn every_file_validates_in_exactly_one_fold_and_folds_are_stratified() {
        let all = files(&[10, 7, 5]);
        let k = 3;
        let mut seen: Vec<PathBuf> = vec![];
        for fold in 0..k {
            let f = select(all.clone(), k, fold, 4).unwrap();
            assert_eq!(f.train.len() + f.val.len(), 22);
            assert_eq!(f.test, all.test, "the test split is left alone");
            // Sizes differ by at most one, overall and within each class.
            assert!((7..=8).contains(&f.val.len()), "fold {fold}: {} val files", f.val.len());
            for (class, n) in [(0, 10), (1, 7), (2, 5)] {
                let in_val = f.val.iter().filter(|s| s.class == class).count();
                assert!(in_val == n / k || in_val == n / k + 1, "class {class} has {in_val} in fold {fold}");
            }
            assert!(f.val.iter().all(|s| !f.train.contains(s)));
            seen.extend(f.val.iter().map(|s| s.path.clone()));
        }
        seen.sort();
        let mut expected: Vec<PathBuf> = all.train.iter().chain(&all.val).map(|s| s.path.clone()).collect();
        expected.sort();
        assert_eq!(seen, expected, "the folds' val files are every train and val file, once");
        // The same seed deals the same folds; another deals others.
        let again = select(all.clone(), k, 1, 4).unwrap();
        assert_eq!(again.val, select(all.clone(), k, 1, 4).unwrap().val);
        assert_ne!(again.val, select(all.clone(), k, 1, 5).unwrap().val);
    }

    #[test]
    fn a_class_smaller_than_the_folds_is_an_error_naming_it() {
        let err = select(files(&[10, 2]), 3, 0, 0).unwrap_err().to_string();
        assert!(err.contains("class `c1` has 2 train and val image(s), fewer than data.folds = 3"), "{err}");
    }
}
