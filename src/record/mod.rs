//! The records of a run: its directory and every file name in it, the summary,
//! metrics tables, confusion matrices, plots and checkpoints.

pub mod checkpoint;
pub mod confusion;
pub mod log;
pub mod plot;
pub mod run_dir;
pub(crate) mod sink;
pub mod summary;
pub mod mlflow;
pub mod table;
pub mod tensorboard;

/// The range test's `<stem>.csv` (step, lr, loss, smoothed_loss) and `<stem>.png` in `dir`.
pub fn write_lr_find(
    dir: &std::path::Path,
    stem: &str,
    title: &str,
    found: &crate::train::LrFind,
) -> anyhow::Result<()> {
    table::write_lr_find(&dir.join(format!("{stem}.csv")), found)?;
    plot::write_lr_find(&dir.join(format!("{stem}.png")), title, found)
}

/// The file stem of phase `p`'s range test in a run directory: `lr_find_<p + 1>_<name>`,
/// the name's characters other than letters, digits, `-` and `_` as `_`.
pub fn lr_find_stem(p: usize, name: &str) -> String {
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("{}{}_{name}", run_dir::RunDir::LR_FIND_PREFIX, p + 1)
}
