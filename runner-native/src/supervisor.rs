//! The task that owns a running child: it delivers signals, reaps the leader, clears
//! what is left of the group, unregisters it and publishes the exit status.
//!
//! Signals go through this task because it alone reaps the leader: while it handles a
//! signal request the leader has not been reaped, so its pid (and the group id) still
//! belong to us. A signal never reaches a reused pid.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal as NixSignal};
use nix::unistd::Pid;
use runner_core::{exit_channel, Error, ExitPublisher, ExitStatus, ExitWatch, Result, Signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::leader::Leader;
use crate::spawn::Registration;

/// How long output forwarders get to finish after the group is gone. A grandchild
/// that left the group can hold the pipes open forever; past this we stop waiting (the
/// forwarders keep draining in the background, nothing is lost).
pub(crate) const PIPE_DRAIN_TIMEOUT: Duration = Duration::from_millis(250);
/// How often we look whether a process group has emptied (no kernel event exists for
/// that unless we were the subreaper).
const GROUP_POLL: Duration = Duration::from_millis(10);

/// State shared by a process handle, its waiters and its environment.
#[derive(Debug)]
pub(crate) struct Shared {
    pid: u32,
    grace: Duration,
    signals: mpsc::UnboundedSender<i32>,
    status: ExitWatch,
}

impl Shared {
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn try_status(&self) -> Option<ExitStatus> {
        self.status.try_status()
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.status.is_finished()
    }

    pub(crate) async fn wait(&self) -> Result<ExitStatus> {
        self.status
            .wait()
            .await?
            .map_err(|msg| Error::io("wait for the process", std::io::Error::other(msg)))
    }

    pub(crate) fn signal(&self, signal: Signal) {
        // A closed channel means the supervisor is done: the process is gone.
        let _ = self.signals.send(signal.number());
    }

    /// SIGTERM, the grace period, SIGKILL; returns once the process is gone.
    pub(crate) async fn stop(&self) -> Result<()> {
        if self.is_finished() {
            return Ok(());
        }
        self.signal(Signal::Terminate);
        if tokio::time::timeout(self.grace, self.wait()).await.is_err() {
            self.signal(Signal::Kill);
        }
        self.wait().await.map(|_| ())
    }
}

/// Everything the supervisor needs.
pub(crate) struct Supervised {
    pub(crate) leader: Leader,
    pub(crate) registration: Option<Registration>,
    pub(crate) forwarders: Vec<JoinHandle<()>>,
    pub(crate) grace: Duration,
    pub(crate) wait_on: Option<String>,
}

/// Starts the supervisor task for a freshly spawned child.
pub(crate) fn supervise(s: Supervised) -> Arc<Shared> {
    let pid = s.leader.pid() as u32;
    let (sig_tx, sig_rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = exit_channel();
    let grace = s.grace;
    tokio::spawn(run(s, pid as i32, sig_rx, status_tx));
    Arc::new(Shared {
        pid,
        grace,
        signals: sig_tx,
        status: status_rx,
    })
}

async fn run(
    mut s: Supervised,
    pgid: i32,
    mut signals: mpsc::UnboundedReceiver<i32>,
    status_tx: ExitPublisher,
) {
    let exited = loop {
        tokio::select! {
            biased;
            r = s.leader.exited() => break r,
            Some(sig) = signals.recv() => { send_group(pgid, sig); }
        }
    };
    // The leader stays a zombie until this line, so every signal above reached our
    // group and nobody else's.
    let outcome = exited
        .and_then(|()| s.leader.reap())
        .map_err(|e| e.to_string());
    // The leader is gone. A process named by `wait_on` keeps the run alive.
    if let Some(bin) = &s.wait_on {
        while group_has_named(pgid, bin) {
            tokio::select! {
                _ = tokio::time::sleep(GROUP_POLL) => {}
                Some(sig) = signals.recv() => { send_group(pgid, sig); }
            }
        }
    }
    clear_group(pgid, s.grace, &mut signals).await;
    // Taken, not borrowed: the ledger handle goes before the status is published,
    // so a caller that drops its environment after `wait` also drops the spares.
    if let Some(reg) = s.registration.take() {
        if let Err(e) = reg.ledger.recycle_record(reg.pgid) {
            tracing::warn!(pgid, error = %e, "failed to remove the ledger record");
        }
    }
    let forwarders = futures_join(std::mem::take(&mut s.forwarders));
    if tokio::time::timeout(PIPE_DRAIN_TIMEOUT, forwarders)
        .await
        .is_err()
    {
        tracing::warn!(
            pgid,
            "output pipes still open after the process group ended: a process that left \
             the group holds them; not waiting for it"
        );
    }
    status_tx.publish(outcome);
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

fn send_group(pgid: i32, sig: i32) {
    let Ok(sig) = NixSignal::try_from(sig) else {
        return;
    };
    let _ = killpg(Pid::from_raw(pgid), sig);
}

fn group_alive(pgid: i32) -> bool {
    !matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}

/// Members of the group that still run (see [`runner_reaper::ledger::is_running`]).
fn group_members(pgid: i32) -> Vec<procfs::process::Process> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| p.ok())
        .filter(|p| {
            p.stat()
                .map(|s| s.pgrp == pgid && runner_reaper::ledger::is_running(&s))
                .unwrap_or(false)
        })
        .collect()
}

fn group_has_named(pgid: i32, bin: &str) -> bool {
    group_members(pgid).iter().any(|p| {
        p.exe()
            .ok()
            .and_then(|e| e.file_name().map(|n| n == bin))
            .unwrap_or(false)
            || p.stat().map(|s| s.comm == bin).unwrap_or(false)
    })
}

/// After the leader exits, whatever is left of its group is ours to end: SIGTERM, up
/// to `grace` for it to leave, then SIGKILL. A process that must outlive its parent
/// has to leave the group (`setsid`).
async fn clear_group(pgid: i32, grace: Duration, signals: &mut mpsc::UnboundedReceiver<i32>) {
    if !group_alive(pgid) {
        return;
    }
    send_group(pgid, nix::libc::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    let mut killed = false;
    loop {
        if group_members(pgid).is_empty() {
            return;
        }
        if !killed && tokio::time::Instant::now() >= deadline {
            send_group(pgid, nix::libc::SIGKILL);
            killed = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(GROUP_POLL) => {}
            Some(sig) = signals.recv() => {
                send_group(pgid, sig);
                killed |= sig == nix::libc::SIGKILL;
            }
        }
    }
}

/// The processes an environment started and that have not ended, so it can stop
/// them all (also those whose handles the caller dropped).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    procs: Mutex<Vec<Arc<Shared>>>,
}

impl Registry {
    pub(crate) fn add(&self, shared: &Arc<Shared>) {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        procs.retain(|s| !s.is_finished());
        procs.push(Arc::clone(shared));
    }

    pub(crate) async fn stop_all(&self) -> Result<()> {
        let live: Vec<Arc<Shared>> = {
            let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
            procs.retain(|s| !s.is_finished());
            procs.clone()
        };
        runner_core::join_all_first_error(live.into_iter().map(|p| async move { p.stop().await }))
            .await
    }
}
