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
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod env;
mod error;
mod exit;
mod output;
mod port;
mod runtimes;
mod state;
mod status;
#[cfg(feature = "testing")]
pub mod testing;
mod tracked;
mod traits;

pub use env::{
    host_env, host_env_os, EnvEdit, EnvLayers, EnvironmentVariable, JoinPosition, OsEnv,
};
pub use error::chain as error_chain;
pub use error::{Error, Result};
pub use exit::{exit_channel, join_all_first_error, ExitPublisher, ExitWatch};
pub use output::{
    forward, CaptureSink, FnSink, ForwardReport, LineBuffer, NullSink, Output, OutputSink,
    StdioSink, Stream, WriterSink, MAX_CHUNK,
};
pub use port::{find_free_port, is_free_port, wait_for_port_unbound};
pub use runtimes::{check_for_runtimes, FoundRuntime, RuntimeReport, RuntimeRequirement};
pub use state::ProcessState;
pub use status::{ExitStatus, Signal};
pub use tracked::{Event, TrackedProcess};
pub use traits::{
    Backend, Proc, ProcOptions, ProcStdin, ProcStdout, RunnerEnvironment, DEFAULT_STOP_GRACE,
};
