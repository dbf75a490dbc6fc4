//! Helpers for runner's cross-crate tests (see `tests/`).

pub mod registry;
