//! The contract every `runner` backend implements.
//!
//! A [`RunnerEnvironment`] is a place processes run (the host, a Docker container, a
//! Nix dev shell); a [`Proc`] is one process in it. Callers program against these
//! two traits and let a facade pick the backend.
//!
//! This crate also holds what every backend shares: [`ExitStatus`] and [`Signal`],
//! [`ProcessState`] and [`TrackedProcess`], validated [`EnvironmentVariable`]s and
//! the layering rules in [`EnvLayers`], output forwarding ([`forward`] and the
//! [`OutputSink`]s), port helpers and [`check_for_runtimes`].
//!
//! Its [`os`] module is the platform seam (Linux and macOS): the process table, exit
//! watching, the boot id and the [`os::OwnerIdentity`] both sweeps judge owners by.
//! With `default-features = false` (no `contract` feature) the crate is that seam,
//! [`ProcessState`] and [`ExitStatus`] alone, with no async runtime: the ledger crate
//! builds on it so.
#![deny(missing_docs)]
// Unsafe code lives only in the platform seam (`os/linux.rs`, `os/macos.rs`).
#![deny(unsafe_code)]

#[cfg(feature = "contract")]
mod env;
#[cfg(feature = "contract")]
mod error;
#[cfg(feature = "contract")]
mod exit;
pub mod os;
#[cfg(feature = "contract")]
mod output;
#[cfg(feature = "contract")]
mod port;
#[cfg(feature = "contract")]
mod running;
#[cfg(feature = "contract")]
mod runtimes;
#[cfg(feature = "contract")]
mod start;
mod state;
mod status;
#[cfg(feature = "sync")]
pub mod sync;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "contract")]
mod tracked;
#[cfg(feature = "contract")]
mod traits;
#[cfg(feature = "contract")]
pub mod tunnel;

#[cfg(feature = "contract")]
pub use env::{
    host_env, host_env_os, EnvEdit, EnvLayers, EnvironmentVariable, JoinPosition, OsEnv,
};
#[cfg(feature = "contract")]
pub use error::chain as error_chain;
#[cfg(feature = "contract")]
pub use error::{Error, Result};
#[cfg(feature = "contract")]
pub use exit::{exit_channel, join_all_first_error, ExitPublisher, ExitWatch};
#[cfg(feature = "contract")]
pub use output::{
    forward, CaptureSink, FnSink, ForwardReport, LineBuffer, NullSink, Output, OutputSink,
    PassthroughSink, StdioSink, Stream, WriterSink, MAX_CHUNK,
};
#[cfg(feature = "contract")]
pub use port::{find_free_port, is_free_port, wait_for_port_unbound};
#[cfg(feature = "contract")]
pub use running::{stop_gracefully, Control, Registry, Running, WaitOn, WaitOnWatch};
#[cfg(feature = "contract")]
pub use runtimes::{check_for_runtimes, FoundRuntime, RuntimeReport, RuntimeRequirement};
#[cfg(feature = "contract")]
pub use start::{StartFailure, StartStage};
pub use state::ProcessState;
pub use status::{ExitStatus, Signal};
#[cfg(feature = "contract")]
pub use tracked::{Event, TrackedProcess};
#[cfg(feature = "contract")]
pub use traits::{
    Backend, Proc, ProcOptions, ProcOutput, ProcStdin, ProcStdout, RunnerEnvironment,
    RunnerEnvironmentExt, DEFAULT_STOP_GRACE,
};

/// The contract in one import: `use runner_core::prelude::*;` (each backend crate
/// and the companion re-export it as their own `prelude`, so one dependency
/// suffices).
#[cfg(feature = "contract")]
pub mod prelude {
    pub use crate::{
        Backend, CaptureSink, EnvironmentVariable, Error, ExitStatus, NullSink, Output, OutputSink,
        PassthroughSink, Proc, ProcOutput, ProcStdin, ProcStdout, Result, RunnerEnvironment,
        RunnerEnvironmentExt, Running, Signal, StdioSink, Stream,
    };
}
