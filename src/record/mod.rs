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
