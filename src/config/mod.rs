//! The configuration layer: what a user writes and what runner makes of it,
//! with no tensors. The backbone catalogue (names, layer counts, default
//! weights), the spec types with their validation and located errors, and the
//! expansion of a spec file into runs (defaults, grid, search trials, overrides).

pub(crate) mod catalog;
pub mod experiment;
pub mod search;
pub mod spec;
