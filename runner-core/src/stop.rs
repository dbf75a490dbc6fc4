//! Stopping a process, written once for every backend: SIGTERM to its group, up to
//! the grace period for it to end, then SIGKILL, and return only once it is gone. A
//! backend supplies the things that differ ([`Stoppable`]). An environment keeps what
//! it started in a [`Registry`], which stops them all in parallel.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::{Error, ExitStatus, Result, Signal};

/// What a backend's running process offers [`stop_gracefully`].
#[async_trait]
pub trait Stoppable: Send + Sync {
    /// True once its end was published.
    fn is_finished(&self) -> bool;
    /// How long it gets between SIGTERM and SIGKILL.
    fn grace(&self) -> Duration;
    /// Sends `signal` to its whole process group.
    async fn signal(&self, signal: Signal) -> Result<()>;
    /// Waits for its end.
    async fn wait(&self) -> Result<ExitStatus>;
}

/// SIGTERM, up to its grace period, SIGKILL; returns once the process has ended. Stopping an
/// ended process does nothing. How the process ended is not the stop's concern (a
/// program that turned out to be missing is gone too); an end that could not be
/// observed (an engine that went away) is the stop's error.
pub async fn stop_gracefully<P: Stoppable + ?Sized>(process: &P) -> Result<()> {
    if process.is_finished() {
        return Ok(());
    }
    process.signal(Signal::Terminate).await?;
    if tokio::time::timeout(process.grace(), process.wait())
        .await
        .is_err()
    {
        process.signal(Signal::Kill).await?;
    }
    match process.wait().await {
        Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Every unfinished process an environment started, whether or not its handle was
/// dropped: what the environment's `stop` and `shutdown` end.
#[derive(Default)]
pub struct Registry {
    procs: Mutex<Vec<Arc<dyn Stoppable>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("Registry")
            .field("processes", &procs.len())
            .finish()
    }
}

impl Registry {
    /// Keeps `process` until it ended (finished ones are forgotten on the way).
    pub fn add(&self, process: Arc<dyn Stoppable>) {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        procs.retain(|p| !p.is_finished());
        procs.push(process);
    }

    /// Stops every unfinished process in parallel ([`stop_gracefully`]); the first
    /// error, once all have been stopped.
    pub async fn stop_all(&self) -> Result<()> {
        let live: Vec<Arc<dyn Stoppable>> = {
            let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
            procs.retain(|p| !p.is_finished());
            procs.clone()
        };
        crate::join_all_first_error(
            live.into_iter()
                .map(|p| async move { stop_gracefully(p.as_ref()).await }),
        )
        .await
    }
}
