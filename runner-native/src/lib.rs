//! The native backend: processes run directly on the host.
//!
//! Every process leads its own process group (signals reach its children too), is
//! registered in the reaper's ledger before it runs its program, and is watched by a
//! supervisor task that reaps it, ends what is left of its group, unregisters it and
//! publishes its [`runner_core::ExitStatus`] to any number of waiters.
//!
//! ```no_run
//! use runner_native::prelude::*; // the contract and NativeEnvironment: one dependency
//!
//! # async fn demo() -> runner_native::Result<()> {
//! let env = NativeEnvironment::new(".")?;
//! let out = env.new_process("cargo", &["--version"]).await?.output().await?;
//! assert!(out.status.success());
//! println!("{}", out.stdout_lossy());
//! env.shutdown().await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

#[cfg(target_os = "linux")]
mod clone;
mod environment;
mod launch;
mod leader;
mod posix;
mod process;
mod resolve;
mod spawn;
#[cfg(target_os = "linux")]
mod stack;
mod supervisor;
mod terminal;
pub use terminal::Terminal;

pub use environment::{utf8_program, NativeEnvironment};

/// True when this process spawns through the portable path (`posix_spawn`, the
/// ledger record written before the spawn and completed after it): always on
/// macOS, and on Linux when `RUNNER_SPAWN=portable` was set when the first process
/// was spawned. Otherwise (Linux) the `clone` path, whose child writes its own record
/// before it runs the program.
pub fn uses_portable_spawn() -> bool {
    spawn::portable()
}
pub use process::{BaseEnv, NativeProc, ProcSpec};
/// The ledger a [`ProcSpec`] registers its group in, re-exported so that a backend
/// building specs (Nix) or a caller pointing processes at another state directory
/// needs no direct dependency on `runner-reaper`.
pub use runner_reaper::Ledger;
/// The variable that carries a spawned group's token (see the reaper's ledger).
pub use runner_reaper::GROUP_TOKEN_VAR;

/// The contract this crate implements, re-exported: depending on this crate alone is
/// enough to program against it.
pub use runner_core::{
    Backend, CaptureSink, EnvironmentVariable, Error, ExitStatus, Output, OutputSink, Proc,
    ProcOutput, Result, RunnerEnvironment, Signal, Stream,
};

/// `use runner_native::prelude::*;`: the contract and this backend's environment.
pub mod prelude {
    pub use crate::NativeEnvironment;
    pub use runner_core::prelude::*;
}
