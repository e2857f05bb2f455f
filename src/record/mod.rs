//! The records of a run: metrics tables, confusion matrices, plots and
//! checkpoints, written into the run directory.

pub mod checkpoint;
pub mod confusion;
pub mod plot;
pub mod table;
