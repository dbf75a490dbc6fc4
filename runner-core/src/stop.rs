//! Stopping a process, written once for every backend: SIGTERM to its group, up to
//! the grace period for it to end, then SIGKILL, and return only once it is gone. A
//! backend supplies the three things that differ ([`Stoppable`]).

use std::time::Duration;

use async_trait::async_trait;

use crate::{Error, ExitStatus, Result, Signal};

/// What a backend's running process offers [`stop_gracefully`].
#[async_trait]
pub trait Stoppable: Send + Sync {
    /// True once its end was published.
    fn is_finished(&self) -> bool;
    /// Sends `signal` to its whole process group.
    async fn signal(&self, signal: Signal) -> Result<()>;
    /// Waits for its end.
    async fn wait(&self) -> Result<ExitStatus>;
}

/// SIGTERM, up to `grace`, SIGKILL; returns once the process has ended. Stopping an
/// ended process does nothing. How the process ended is not the stop's concern (a
/// program that turned out to be missing is gone too); an end that could not be
/// observed (an engine that went away) is the stop's error.
pub async fn stop_gracefully<P: Stoppable + ?Sized>(process: &P, grace: Duration) -> Result<()> {
    if process.is_finished() {
        return Ok(());
    }
    process.signal(Signal::Terminate).await?;
    if tokio::time::timeout(grace, process.wait()).await.is_err() {
        process.signal(Signal::Kill).await?;
    }
    match process.wait().await {
        Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
