//! Labels from a table (`data.labels`) instead of class folders: a CSV with a header and
//! the columns `path`, `label` and optionally `split`, as fastai's `from_csv` takes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{FileSplit, Sample, Skipped, check_nonempty, is_image, split_classes};

/// Which split a labels table's row names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Train,
    Val,
    Test,
}

/// One usable row of a labels table.
struct Row {
    path: PathBuf,
    label: String,
    part: Option<Part>,
}

/// Finds the classes and files a labels table names (`data.labels`, as fastai's
/// `from_csv` takes them): a CSV with a header and the columns `path` (relative to
/// `root`, the data folder) and `label`, and optionally `split` (`train`, `val` or
/// `test`; without it the `split` fractions divide each class, as for folders). The
/// classes are the labels, sorted. A row that cannot be used (no such file, not an
/// image, an empty label, an unknown split, a path listed twice) is skipped, reported
/// with its line like an unreadable image.
pub(crate) fn discover_table(root: &Path, table: &Path, split: &[f64], seed: u64) -> Result<FileSplit> {
    if !root.is_dir() {
        bail!("data folder {} not found", root.display());
    }
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(table)
        .with_context(|| format!("cannot read the labels table {}", table.display()))?;
    let headers = reader.headers().with_context(|| format!("cannot read the labels table {}", table.display()))?;
    let column = |name: &str| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let (Some(path_col), Some(label_col)) = (column("path"), column("label")) else {
        bail!(
            "{}: expected a header with the columns `path` and `label` (and optionally `split`), found {:?}",
            table.display(),
            headers.iter().collect::<Vec<_>>()
        );
    };
    let split_col = column("split");
    let name = table.file_name().map_or_else(|| table.display().to_string(), |n| n.to_string_lossy().into_owned());
    let (mut rows, mut skipped) = (vec![], vec![]);
    let mut seen: BTreeMap<PathBuf, u64> = BTreeMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                skipped.push(Skipped { path: String::new(), reason: format!("{name} line {line}: {e}") });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("").trim().to_string();
        let (path, label) = (field(Some(path_col)), field(Some(label_col)));
        let problem = table_row(root, &path, &label, split_col.map(|_| field(split_col)), &seen);
        match problem {
            Ok(row) => {
                seen.insert(row.path.clone(), line);
                rows.push(row);
            }
            Err(why) => skipped.push(Skipped { path, reason: format!("{name} line {line}: {why}") }),
        }
    }
    if rows.is_empty() {
        let first: Vec<&str> = skipped.iter().take(3).map(|s| s.reason.as_str()).collect();
        bail!("{}: no usable rows ({} skipped: {})", table.display(), skipped.len(), first.join("; "));
    }
    let out = if split_col.is_some() {
        parts_of(root, rows, skipped)
    } else {
        fractions_of(root, rows, split, seed, skipped)
    };
    check_nonempty(root, &out)?;
    Ok(out)
}

/// A labels table's row checked: its file (under `root`), label and split.
fn table_row(
    root: &Path,
    path: &str,
    label: &str,
    part: Option<String>,
    seen: &BTreeMap<PathBuf, u64>,
) -> std::result::Result<Row, String> {
    if path.is_empty() {
        return Err("no path".into());
    }
    if label.is_empty() {
        return Err(format!("{path} has an empty label"));
    }
    let file = root.join(path);
    if let Some(first) = seen.get(&file) {
        return Err(format!("{path} is listed again (first on line {first})"));
    }
    if !file.is_file() {
        return Err(format!("{path}: no such file under {}", root.display()));
    }
    if !is_image(&file) {
        return Err(format!("{path}: not a .jpg, .jpeg or .png file"));
    }
    let part = match part.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("train") => Some(Part::Train),
        Some("val" | "valid" | "validation") => Some(Part::Val),
        Some("test") => Some(Part::Test),
        Some(other) => return Err(format!("split `{other}`: expected train, val or test")),
    };
    Ok(Row { path: file, label: label.to_string(), part })
}

/// The labels of `rows`, sorted: the classes.
fn classes_of(rows: &[Row]) -> Vec<String> {
    rows.iter().map(|r| r.label.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect()
}

/// A table's rows split as its `split` column says.
fn parts_of(root: &Path, rows: Vec<Row>, unreachable: Vec<Skipped>) -> FileSplit {
    let classes = classes_of(&rows);
    let mut out =
        FileSplit { root: root.to_path_buf(), classes, train: vec![], val: vec![], test: vec![], unreachable };
    for row in rows {
        let class = out.classes.binary_search(&row.label).expect("a label of the rows");
        let sample = Sample { path: row.path, class };
        match row.part {
            Some(Part::Val) => out.val.push(sample),
            Some(Part::Test) => out.test.push(sample),
            _ => out.train.push(sample),
        }
    }
    out
}

/// A table's rows split per class by the `split` fractions, as a folder tree is.
fn fractions_of(root: &Path, rows: Vec<Row>, split: &[f64], seed: u64, unreachable: Vec<Skipped>) -> FileSplit {
    let mut tree: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for row in rows {
        tree.entry(row.label).or_default().push(row.path);
    }
    tree.values_mut().for_each(|files| files.sort());
    split_classes(root, tree, split, seed, unreachable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{discover, manifest};
    use crate::testing::touch_tree;

    /// Files `img/<name>.jpg` (contents irrelevant: discovery does not decode) and `labels.csv`.
    fn table_tree(root: &Path, files: usize, csv: &str) -> PathBuf {
        std::fs::create_dir_all(root.join("img")).unwrap();
        for i in 0..files {
            std::fs::write(root.join("img").join(format!("{i:02}.jpg")), b"x").unwrap();
        }
        std::fs::write(root.join("notes.txt"), b"x").unwrap();
        let table = root.join("labels.csv");
        std::fs::write(&table, csv).unwrap();
        table
    }

    #[test]
    fn a_labels_table_with_a_split_column_names_the_classes_and_splits() {
        let dir = tempfile::tempdir().unwrap();
        let csv = "path,label,split\nimg/00.jpg,dog,train\nimg/01.jpg,cat,train\nimg/02.jpg,dog,val\n\
                   img/03.jpg,cat,valid\nimg/04.jpg,cat,test\nimg/05.jpg,dog,train\n";
        let table = table_tree(dir.path(), 6, csv);
        let s = discover_table(dir.path(), &table, &[0.8, 0.2], 7).unwrap();
        assert_eq!(s.classes, ["cat", "dog"]);
        let names = |v: &[Sample]| -> Vec<(String, usize)> {
            v.iter().map(|x| (x.path.file_name().unwrap().to_string_lossy().into_owned(), x.class)).collect()
        };
        assert_eq!(names(&s.train), [("00.jpg".into(), 1), ("01.jpg".into(), 0), ("05.jpg".into(), 1)]);
        assert_eq!(names(&s.val), [("02.jpg".into(), 1), ("03.jpg".into(), 0)]);
        assert_eq!(names(&s.test), [("04.jpg".into(), 0)]);
        assert!(s.unreachable.is_empty(), "{:?}", s.unreachable);
        // The manifest covers the labels: a label changed is another manifest.
        let relabelled = table_tree(dir.path(), 6, &csv.replace("img/05.jpg,dog", "img/05.jpg,cat"));
        let again = discover_table(dir.path(), &relabelled, &[0.8, 0.2], 7).unwrap();
        assert_ne!(manifest(&s).unwrap(), manifest(&again).unwrap());
    }

    #[test]
    fn a_labels_table_without_a_split_column_is_split_like_folders() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("label,path\n");
        for i in 0..30 {
            csv.push_str(&format!("{},img/{i:02}.jpg\n", if i < 20 { "a" } else { "b" }));
        }
        let table = table_tree(dir.path(), 30, &csv);
        let s = discover_table(dir.path(), &table, &[0.8, 0.2], 7).unwrap();
        assert_eq!(s.classes, ["a", "b"]);
        assert_eq!(s.val.iter().filter(|x| x.class == 0).count(), 4);
        assert_eq!(s.val.iter().filter(|x| x.class == 1).count(), 2);
        assert_eq!(s.train.len() + s.val.len(), 30);
        // The same files as class folders split the same way.
        let folders = tempfile::tempdir().unwrap();
        for (i, x) in s.val.iter().enumerate() {
            assert!(x.path.starts_with(dir.path().join("img")), "{i}");
        }
        touch_tree(folders.path(), &[("a", 20), ("b", 10)]);
        let tree = discover(folders.path(), &[0.8, 0.2], 7).unwrap();
        assert_eq!(tree.val.len(), s.val.len());
    }

    #[test]
    fn bad_rows_of_a_labels_table_are_skipped_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let csv = "path,label,split\nimg/00.jpg,dog,train\nimg/01.jpg,cat,train\nimg/99.jpg,cat,train\n\
                   img/02.jpg,,train\nimg/03.jpg,cat,holdout\nimg/00.jpg,cat,val\nnotes.txt,cat,train\n\
                   ,dog,train\nimg/04.jpg,dog,val\nimg/05.jpg,cat,val\n";
        let table = table_tree(dir.path(), 6, csv);
        let s = discover_table(dir.path(), &table, &[0.8, 0.2], 7).unwrap();
        let reasons: Vec<&str> = s.unreachable.iter().map(|x| x.reason.as_str()).collect();
        assert_eq!(reasons.len(), 6, "{reasons:?}");
        let expect = [
            "labels.csv line 4: img/99.jpg: no such file",
            "labels.csv line 5: img/02.jpg has an empty label",
            "labels.csv line 6: split `holdout`: expected train, val or test",
            "labels.csv line 7: img/00.jpg is listed again (first on line 2)",
            "labels.csv line 8: notes.txt: not a .jpg, .jpeg or .png file",
            "labels.csv line 9: no path",
        ];
        for (got, want) in reasons.iter().zip(expect) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
        assert_eq!((s.train.len(), s.val.len()), (2, 2));
        // A table without the columns, or with no usable row, is an error naming the table.
        let bad = table_tree(dir.path(), 6, "file,class\nimg/00.jpg,dog\n");
        let e = discover_table(dir.path(), &bad, &[0.8, 0.2], 7).unwrap_err().to_string();
        assert!(e.contains("labels.csv") && e.contains("`path` and `label`"), "{e}");
        let none = table_tree(dir.path(), 6, "path,label\nimg/77.jpg,dog\n");
        let e = discover_table(dir.path(), &none, &[0.8, 0.2], 7).unwrap_err().to_string();
        assert!(e.contains("no usable rows (1 skipped: labels.csv line 2: img/77.jpg: no such file"), "{e}");
    }
}
