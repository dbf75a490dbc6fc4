//! What runner started, and the sweep that cleans up after an owner that died.
//!
//! The [`ledger`] holds one record per process group; backends write a record before
//! the group's leader runs its program and remove it when the group ends.
#![deny(missing_docs)]

pub mod ledger;
mod prepared;
pub mod sweep;

pub use ledger::{
    carries_token, default_state_dir, new_group_token, remove_record, write_record, Ledger,
    LedgerError, Record, GROUP_TOKEN_VAR, RECORD_SCHEMA,
};
pub use prepared::PreparedRecord;
pub use sweep::{
    ledger_needs_sweep, reap_stale_process_groups, running_members, ReapedGroup, SetAside,
    SweepReport, SWEEP_GRACE,
};
