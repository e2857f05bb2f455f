//! runner: declarative transfer learning on libtorch.
//!
//! A TOML spec names a pretrained backbone, what to freeze, a new head and a
//! schedule of phases; `runner run` turns it into a trained model, a metrics
//! table and learning curves.
//!
//! The modules are layers, declared here bottom first: each imports only from
//! those declared before it (docs/architecture.md; tests/it/architecture.rs checks
//! it, and rustfmt.toml keeps this order).

pub mod error;
#[cfg(test)]
mod testing;
pub mod sys;
pub mod config;
pub mod model;
pub mod data;
pub mod train;
pub mod record;
pub mod run;
pub mod predict;
pub mod report;
pub mod sweep;
pub mod verify;

pub use error::{Error, Result};

#[cfg(test)]
mod fuzz;
