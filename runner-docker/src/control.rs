//! What a started process in the container offers, whichever path runs it (a plain
//! exec, `exec.rs`; the helper, `helper.rs`): the contract's [`runner_core::Control`]
//! (signal, wait, status; `Running` does the rest, stopping included) and what only a
//! container's process has ([`Started`]), reached from [`DockerRunning`].

use std::sync::Arc;

use async_trait::async_trait;
use runner_core::{Result, Running};

/// A started process, on either path.
#[async_trait]
pub(crate) trait Started: runner_core::Control {
    /// Its pid in the container, while it runs (see [`DockerRunning::find_pid`]).
    async fn find_pid(&self) -> Result<Option<u32>>;
    /// The engine's id of its exec, for a plain exec.
    fn exec_id(&self) -> Option<&str>;
    /// True when the helper runs it.
    fn via_helper(&self) -> bool;
}

/// A process started in a container: the contract's [`Running`] (through `Deref`),
/// plus what only a container's process has.
#[derive(Debug, Clone)]
pub struct DockerRunning {
    running: Running,
    started: Arc<dyn Started>,
}

impl DockerRunning {
    pub(crate) fn new(started: Arc<dyn Started>) -> DockerRunning {
        let control: Arc<dyn runner_core::Control> = started.clone();
        DockerRunning {
            running: Running::new(control),
            started,
        }
    }

    /// The pid of this process inside the container: the helper's word, or for a
    /// plain exec a scan of the container's /proc for the process that carries this
    /// exec's group token and was started from outside the container (works with an
    /// engine elsewhere too). `None` once it ended, or before its program runs.
    pub async fn find_pid(&self) -> Result<Option<u32>> {
        self.started.find_pid().await
    }

    /// The exec's id, for a plain exec.
    pub fn exec_id(&self) -> Option<&str> {
        self.started.exec_id()
    }

    /// True when the environment's helper runs this process (not a plain exec).
    pub fn via_helper(&self) -> bool {
        self.started.via_helper()
    }

    /// The contract's handle.
    pub fn running(&self) -> &Running {
        &self.running
    }
}

impl std::ops::Deref for DockerRunning {
    type Target = Running;

    fn deref(&self) -> &Running {
        &self.running
    }
}

impl From<DockerRunning> for Running {
    fn from(d: DockerRunning) -> Running {
        d.running
    }
}
