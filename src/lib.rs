//! runner: declarative transfer learning on libtorch.
//!
//! A TOML spec names a pretrained backbone, what to freeze, a new head and a
//! schedule of phases; `runner run` turns it into a trained model, a metrics
//! table and learning curves.

pub mod archive;
pub mod atomic;
pub mod backbone;
pub mod catalog;
pub mod checkpoint;
pub mod confusion;
pub mod cuda;
pub mod data;
pub mod env;
pub mod experiment;
pub mod failpoint;
pub mod lock;
pub mod malloc;
pub mod optim;
pub mod plot;
pub mod predict;
pub mod report;
pub mod run;
pub mod spec;
pub mod sweep;
pub mod synth;
pub mod table;
pub mod train;
pub mod verify;
pub mod weights;
