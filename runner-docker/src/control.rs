//! What a started process in the container offers its [`crate::DockerProc`],
//! whichever path runs it (a plain exec, `exec.rs`; the helper, `helper.rs`): one
//! handle, so the process never branches on its path. Stopping is
//! [`runner_core::stop_gracefully`] over the [`Stoppable`] part, as on every backend.

use async_trait::async_trait;
use runner_core::{ExitStatus, Result, Stoppable};

/// A started process, on either path.
#[async_trait]
pub(crate) trait Control: Stoppable + std::fmt::Debug {
    /// Its status, once it ended and it could be observed.
    fn try_status(&self) -> Option<ExitStatus>;
    /// Its pid in the container, while it runs (see [`crate::DockerProc::find_pid`]).
    async fn find_pid(&self) -> Result<Option<u32>>;
    /// Gives its pseudo-terminal a new size (nothing without one).
    async fn resize(&self, rows: u16, cols: u16) -> Result<()>;
    /// The engine's id of its exec, for a plain exec.
    fn exec_id(&self) -> Option<&str>;
    /// True when the helper runs it.
    fn via_helper(&self) -> bool;
}
