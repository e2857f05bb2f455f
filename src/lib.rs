//! runner: declarative transfer learning on libtorch.
//!
//! A TOML spec names a pretrained backbone, what to freeze, a new head and a
//! schedule of phases; `runner run` turns it into a trained model, a metrics
//! table and learning curves.
//!
//! The modules are layers, each importing only from those listed before it
//! (docs/architecture.md; tests/it/architecture.rs checks it).

pub mod config;
pub mod data;
pub mod error;
pub mod model;
pub mod predict;
pub mod record;
pub mod report;
pub mod run;
pub mod sweep;
pub mod sys;
pub mod train;
pub mod verify;

pub use error::{Error, Result};
