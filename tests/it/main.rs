//! The integration tests: one crate (one link of libtorch and polars), a module per area.

mod common;

mod architecture;
mod backbones;
mod bad_data;
mod cache;
mod calibration;
mod cli;
mod datasets_url;
mod efficientnet_reference;
mod freeze;
mod lr_find;
mod hostile;
mod replicates;
mod report;
mod resume;
mod search;
mod slurm;
mod spec_cli;
mod store;
mod sweep;
mod toolkit;
mod tracking;
mod tutorials;
mod verify;
mod weights_files;
mod weights_url;
