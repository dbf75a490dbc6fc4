//! Helpers for runner's cross-crate tests (see `tests/`).

pub mod foreign_engine;
pub mod registry;
pub mod ssh_host;
