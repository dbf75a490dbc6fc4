//! A started process: [`Running`], one type for every backend, which owns waiting,
//! signalling and stopping, written once. A backend supplies only what differs, as a
//! [`Control`] (signal its group, wait for its end, its pid, its terminal's size).
//!
//! [`Proc`](crate::Proc) is the request: configured with `&mut self`, consumed by
//! `start`, which returns a `Running` (tokio's `Command` and `Child`). A `Running` is
//! cheap to clone; every clone sees the same process. Dropping every clone leaves the
//! process running (the environment's `stop` and `shutdown` still end it) unless
//! [`Running::kill_on_drop`] was asked for; dropping a `run` or `output` future ends
//! its process.
//!
//! Stopping is SIGTERM to the group, up to the grace period for it to end, then
//! SIGKILL, returning only once it is gone ([`stop_gracefully`]). An environment keeps
//! what it started in a [`Registry`], which stops them all in parallel.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::{Error, ExitStatus, Result, Signal};

/// What a backend's started process offers [`Running`].
#[async_trait]
pub trait Control: Send + Sync + std::fmt::Debug + 'static {
    /// True once its end was published.
    fn is_finished(&self) -> bool;
    /// Its status, once it ended and the end could be observed.
    fn try_status(&self) -> Option<ExitStatus>;
    /// How long it gets between SIGTERM and SIGKILL.
    fn grace(&self) -> Duration;
    /// Sends `signal` to its whole process group (nothing once it ended).
    async fn signal(&self, signal: Signal) -> Result<()>;
    /// Waits for its end: idempotent and cancel-safe.
    async fn wait(&self) -> Result<ExitStatus>;
    /// Its host pid (the group leader's), when the backend has one.
    fn pid(&self) -> Option<u32> {
        None
    }
    /// Tells a pseudo-terminal of its own the caller's window size.
    async fn resize_terminal(&self, rows: u16, cols: u16) -> Result<()> {
        let _ = (rows, cols);
        Ok(())
    }
    /// The backend's own type, for its extras ([`Running::control`]).
    fn as_any(&self) -> &dyn Any;
}

/// SIGTERM, up to its grace period, SIGKILL; returns once the process has ended.
/// Stopping an ended process does nothing. How the process ended is not the stop's
/// concern (a program that turned out to be missing is gone too); an end that could
/// not be observed (an engine that went away) is the stop's error.
pub async fn stop_gracefully<P: Control + ?Sized>(process: &P) -> Result<()> {
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

/// A started process. Clone it freely: every clone is the same process.
#[derive(Debug, Clone)]
pub struct Running {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    control: Arc<dyn Control>,
    kill_on_drop: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.kill_on_drop.load(Ordering::SeqCst) || self.control.is_finished() {
            return;
        }
        stop_in_background(Arc::clone(&self.control));
    }
}

/// Stops `control` on the current runtime, when there is one (a drop outside any
/// runtime leaves it to the environment's `stop`).
fn stop_in_background(control: Arc<dyn Control>) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = stop_gracefully(control.as_ref()).await;
        });
    }
}

impl Running {
    /// The started process behind `control`.
    pub fn new(control: Arc<dyn Control>) -> Running {
        Running {
            inner: Arc::new(Inner {
                control,
                kill_on_drop: AtomicBool::new(false),
            }),
        }
    }

    /// Waits for the process to exit. Idempotent and cancel-safe: any number of
    /// callers, before or after the exit, get the same status.
    pub async fn wait(&self) -> Result<ExitStatus> {
        self.inner.control.wait().await
    }

    /// The exit status if the process already exited, without waiting.
    pub fn try_status(&self) -> Option<ExitStatus> {
        self.inner.control.try_status()
    }

    /// True until the process's end was observed.
    pub fn is_running(&self) -> bool {
        !self.inner.control.is_finished()
    }

    /// Delivers one signal to the process's group. A no-op once it exited.
    pub async fn signal(&self, signal: Signal) -> Result<()> {
        self.inner.control.signal(signal).await
    }

    /// SIGTERM to the whole group, the grace period, then SIGKILL; returns once the
    /// process is gone. A no-op on a process that already exited.
    pub async fn stop(&self) -> Result<()> {
        stop_gracefully(self.inner.control.as_ref()).await
    }

    /// The host pid of the process (its group's leader), when the backend has one.
    pub fn pid(&self) -> Option<u32> {
        self.inner.control.pid()
    }

    /// Tells a process started with a pseudo-terminal of its own (Docker) that the
    /// caller's window is now `rows` by `cols`; a no-op otherwise (native and nix
    /// processes have the caller's terminal, and the kernel tells them).
    pub async fn resize_terminal(&self, rows: u16, cols: u16) -> Result<()> {
        self.inner.control.resize_terminal(rows, cols).await
    }

    /// Stops the process when the last clone of this handle is dropped (tokio's
    /// `kill_on_drop`); by default it keeps running until it ends or its environment
    /// stops it.
    pub fn kill_on_drop(&self, kill: bool) -> &Self {
        self.inner.kill_on_drop.store(kill, Ordering::SeqCst);
        self
    }

    /// The backend's own control, for what only that backend has.
    pub fn control<T: 'static>(&self) -> Option<&T> {
        self.inner.control.as_any().downcast_ref::<T>()
    }
}

/// Stops its process if dropped before [`disarm`](Self::disarm): what makes dropping a
/// `run` or `output` future end the process it started.
#[derive(Debug)]
pub(crate) struct StopOnDrop(Option<Running>);

impl StopOnDrop {
    pub(crate) fn new(running: &Running) -> StopOnDrop {
        StopOnDrop(Some(running.clone()))
    }

    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(running) = self.0.take() {
            if running.is_running() {
                stop_in_background(Arc::clone(&running.inner.control));
            }
        }
    }
}

/// Every unfinished process an environment started, whether or not its handles were
/// dropped: what the environment's `stop` and `shutdown` end.
#[derive(Default)]
pub struct Registry {
    procs: Mutex<Vec<Arc<dyn Control>>>,
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
    pub fn add(&self, process: Arc<dyn Control>) {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        procs.retain(|p| !p.is_finished());
        procs.push(process);
    }

    /// Stops every unfinished process in parallel ([`stop_gracefully`]); the first
    /// error, once all have been stopped.
    pub async fn stop_all(&self) -> Result<()> {
        let live: Vec<Arc<dyn Control>> = {
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

/// What a `wait_on` run does after one look at its process group, written once for
/// the backends that watch the group from here (native, a proven local container):
/// the run is over when no member runs the named program and either no member is
/// left or the unnamed ones had their moment (a member forked just before the leader
/// exited may not have executed its program yet: 25 looks, 20 ms apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOn {
    /// The run is over.
    Over,
    /// Look again after this pause: unnamed members may still become the program.
    LookAgainAfter(Duration),
    /// A member runs the program: wait for it (its exit, or a pause of the caller's).
    Named,
}

/// The state of a `wait_on` run's watch over its group ([`WaitOn`]).
#[derive(Debug, Clone)]
pub struct WaitOnWatch {
    settle: u32,
}

impl Default for WaitOnWatch {
    fn default() -> Self {
        WaitOnWatch { settle: 25 }
    }
}

impl WaitOnWatch {
    /// What to do after a look that found `members` running in the group, `named` of
    /// them running the program.
    pub fn next(&mut self, members: usize, named: usize) -> WaitOn {
        if named > 0 {
            return WaitOn::Named;
        }
        if members == 0 || self.settle == 0 {
            return WaitOn::Over;
        }
        self.settle -= 1;
        WaitOn::LookAgainAfter(Duration::from_millis(20))
    }
}
