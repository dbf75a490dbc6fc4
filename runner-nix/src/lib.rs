//! The Nix backend: processes in a flake's dev shell.
//!
//! [`NixEnvironment`] wraps processes in `nix develop` until `init` materializes the
//! shell; then processes run directly with the shell's variables (its exported
//! scalars and whatever its shellHook exports) over the host's, cached on disk under
//! a fingerprint of the flake. Processes are the native backend's
//! [`NativeProc`](runner_native::NativeProc): same groups, ledger, stop and pipes.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cache;
mod environment;
mod error;
mod health;
mod install;
pub mod shell;

pub use environment::{
    default_cache_dir, EnvSource, Materialization, NixEnvironment, PINNED_CACHES,
};
pub use error::NixError;
pub use health::{check_nix_can_build, diagnose_stderr, CannotBuild, DAEMON_SOCKET};
pub use install::{check_nix_installed, is_nix_supported, nix_binary, nix_install_command};

/// The `NixProc` of the contract: the native process machinery in the shell's env.
pub type NixProc = runner_native::NativeProc;

/// The contract this crate implements, re-exported: depending on this crate alone is
/// enough to program against it.
pub use runner_core::{
    Backend, CaptureSink, EnvironmentVariable, Error, ExitStatus, Output, OutputSink, Proc,
    ProcOutput, Result, RunnerEnvironment, Signal, Stream,
};

/// `use runner_nix::prelude::*;`: the contract and this backend's environment.
pub mod prelude {
    pub use crate::NixEnvironment;
    pub use runner_core::prelude::*;
}
