//! How a process in the container ended, as both of its paths (a plain exec and the
//! helper) publish it: the one type they share, and its one mapping to the
//! contract's `Error`. A module of its own so the two paths never import each other
//! for it.

use runner_core::{Error, ExitStatus, ExitWatch};

use crate::DockerError;

/// Why a process's end could not be observed.
#[derive(Debug, Clone)]
pub(crate) enum ExecFailure {
    /// The program does not exist in the container.
    NotFound,
    /// The engine failed (or went away) while we watched.
    Docker(DockerError),
}

/// The status `watch` publishes for a process running `bin`, as `Proc::wait` returns
/// it: a missing program is `Error::NotFound`, an engine failure the backend's error.
pub(crate) async fn wait(
    watch: &ExitWatch<ExecFailure>,
    bin: &str,
) -> runner_core::Result<ExitStatus> {
    match watch.wait().await? {
        Ok(s) => Ok(s),
        Err(ExecFailure::NotFound) => Err(Error::NotFound {
            bin: bin.to_string(),
            searched: Some("the container's PATH".into()),
        }),
        Err(ExecFailure::Docker(e)) => Err(e.into()),
    }
}
