//! Errors of the Nix backend.

use std::path::PathBuf;

use crate::CannotBuild;

/// What can go wrong with a Nix dev shell.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NixError {
    /// No `nix` binary on `PATH`.
    #[error("nix is not installed (install it with: {install})")]
    NotInstalled {
        /// The suggested install command.
        install: &'static str,
    },
    /// nix is installed, but its setup makes every build fail (see [`CannotBuild`]).
    #[error("nix is installed but cannot build")]
    CannotBuild(#[source] CannotBuild),
    /// The directory has no `flake.nix`.
    #[error("no flake.nix in `{}`", .0.display())]
    NoFlake(PathBuf),
    /// Evaluating or building the dev shell failed (and no cached env was there to
    /// fall back on).
    #[error("failed to evaluate the dev shell of `{}` (nix exited with {status}):\n{stderr}", .dir.display())]
    Evaluation {
        /// The flake directory.
        dir: PathBuf,
        /// How nix exited.
        status: String,
        /// What nix printed on stderr.
        stderr: String,
    },
    /// `nix print-dev-env --json` printed something we could not understand.
    #[error("failed to parse the dev shell description: {0}")]
    Parse(String),
    /// Running the shell's hook to capture its environment failed.
    #[error("failed to run the dev shell's shellHook: {0}")]
    ShellHook(String),
}

impl From<NixError> for runner_core::Error {
    fn from(e: NixError) -> Self {
        runner_core::Error::backend(runner_core::Backend::Nix, e)
    }
}
