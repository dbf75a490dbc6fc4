//! The task that owns a running child: it delivers signals, reaps the leader, clears
//! what is left of the group, unregisters it and publishes the exit status.
//!
//! Signals go through this task because it alone reaps the leader, and it signals the
//! group only the two ways [`Leader::signal_group`] allows (through the pidfd, or by
//! number while the leader is unreaped): a signal never reaches a reused group id.
//! Where signals need the zombie, the leader is reaped last, after the group is empty.

use std::sync::Arc;
use std::time::Duration;

use runner_core::{exit_channel, Error, ExitPublisher, ExitStatus, ExitWatch, Result, Signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::launch::Registration;
use crate::leader::Leader;

/// How long output forwarders get to finish after the group is gone. A grandchild
/// that left the group can hold the pipes open forever; past this we stop waiting (the
/// forwarders keep draining in the background, nothing is lost).
pub(crate) const PIPE_DRAIN_TIMEOUT: Duration = Duration::from_millis(250);
/// The pause between looks at a group whose members cannot be watched (a kernel
/// without pidfds).
const BLIND_PAUSE: Duration = Duration::from_millis(10);

/// State shared by a process handle, its waiters and its environment.
#[derive(Debug)]
pub(crate) struct Shared {
    pid: u32,
    grace: Duration,
    signals: mpsc::UnboundedSender<i32>,
    status: ExitWatch<Arc<std::io::Error>>,
}

impl Shared {
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
            .map_err(|e| Error::io("wait for the process", std::io::Error::new(e.kind(), e)))
    }

    pub(crate) fn signal(&self, signal: Signal) {
        // A closed channel means the supervisor is done: the process is gone.
        let _ = self.signals.send(signal.number());
    }
}

#[async_trait::async_trait]
impl runner_core::Control for Shared {
    fn is_finished(&self) -> bool {
        Shared::is_finished(self)
    }

    fn try_status(&self) -> Option<ExitStatus> {
        Shared::try_status(self)
    }

    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn grace(&self) -> Duration {
        self.grace
    }

    async fn signal(&self, signal: Signal) -> Result<()> {
        Shared::signal(self, signal);
        Ok(())
    }

    async fn wait(&self) -> Result<ExitStatus> {
        Shared::wait(self).await
    }
}

/// Everything the supervisor needs.
pub(crate) struct Supervised {
    pub(crate) leader: Leader,
    pub(crate) registration: Option<Registration>,
    pub(crate) forwarders: Vec<JoinHandle<()>>,
    pub(crate) grace: Duration,
    pub(crate) wait_on: Option<String>,
    /// The caller's terminal, taken back (foreground and modes) once the group ended.
    pub(crate) terminal: Option<crate::terminal::Terminal>,
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

/// Sends `sig` to the leader's group; a signal that asks it to end is followed by
/// SIGCONT, as a shell's `kill %job` and `timeout(1)` do: a stopped group would
/// otherwise keep it pending for ever.
fn deliver(leader: &Leader, sig: i32) {
    leader.signal_group(sig);
    if asks_to_end(sig) {
        leader.signal_group(nix::libc::SIGCONT);
    }
}

/// The signals that ask a process to end ([`runner_core::Signal::asks_to_end`]).
fn asks_to_end(sig: i32) -> bool {
    runner_core::Signal::from_number(sig).is_some_and(runner_core::Signal::asks_to_end)
}

async fn run(
    mut s: Supervised,
    pgid: i32,
    mut signals: mpsc::UnboundedReceiver<i32>,
    status_tx: ExitPublisher<Arc<std::io::Error>>,
) {
    let exited = loop {
        tokio::select! {
            biased;
            r = s.leader.exited() => break r,
            Some(sig) = signals.recv() => { deliver(&s.leader, sig); }
        }
    };
    // Where the group stays addressable through the leader's pidfd, the leader is
    // reaped at once; otherwise its zombie pins the group id until the group is
    // cleared, and it is reaped last. Either way no signal reaches a reused id.
    let exited = exited.map_err(Arc::new);
    let reap = |leader: &mut Leader| {
        exited
            .clone()
            .and_then(|()| leader.reap().map_err(Arc::new))
    };
    let early = s.leader.signals_outlive_reap().then(|| reap(&mut s.leader));
    // The leader is gone. A process named by `wait_on` keeps the run alive.
    if let Some(bin) = &s.wait_on {
        let mut watch = runner_core::WaitOnWatch::default();
        loop {
            let members = runner_reaper::running_members(pgid);
            let named: Vec<i32> = members
                .iter()
                .copied()
                .filter(|&pid| is_named(pid, bin))
                .collect();
            if !s.leader.signal_group(0) {
                break;
            }
            match watch.next(members.len(), named.len()) {
                runner_core::WaitOn::Over => break,
                runner_core::WaitOn::LookAgainAfter(pause) => tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    Some(sig) = signals.recv() => { deliver(&s.leader, sig); }
                },
                runner_core::WaitOn::Named => tokio::select! {
                    () = exits(&named) => {}
                    Some(sig) = signals.recv() => { deliver(&s.leader, sig); }
                },
            }
        }
    }
    clear_group(&s.leader, pgid, s.grace, &mut signals).await;
    let outcome = match early {
        Some(outcome) => outcome,
        None => reap(&mut s.leader),
    };
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
    if let Some(terminal) = s.terminal.take() {
        terminal.take_back();
    }
    status_tx.publish(outcome);
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// True when process `pid` runs `bin` (its executable's file name, or its command
/// name as the kernel keeps it).
fn is_named(pid: i32, bin: &str) -> bool {
    runner_core::os::runs_program(pid, bin)
}

/// Resolves once every process of `pids` has exited, woken by their exit
/// descriptors (pidfds, kqueues). A
/// process that cannot be watched (no pidfd on this kernel) makes it a short pause
/// instead, after which the caller looks again.
async fn exits(pids: &[i32]) {
    let mut fds = Vec::with_capacity(pids.len());
    let mut blind = false;
    for &pid in pids {
        // SAFETY: the AsyncFd owns the fresh descriptor and never replaces or closes it.
        let watched = runner_core::os::exit_fd(pid)
            .and_then(|fd| unsafe { tokio::io::unix::AsyncFd::register(fd).map_err(Into::into) });
        match watched {
            Ok(fd) => fds.push(fd),
            // Gone already.
            Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => {}
            Err(_) => blind = true,
        }
    }
    for fd in &fds {
        let _ = fd.readable().await;
    }
    if blind {
        tokio::time::sleep(BLIND_PAUSE).await;
    }
}

/// After the leader exits, whatever is left of its group is ours to end: SIGTERM, up
/// to `grace` for it to leave, then SIGKILL. A process that must outlive its parent
/// has to leave the group (`setsid`).
///
/// The kernel has no event for "the group emptied", so each round reads the process
/// table once to learn the members still running, then sleeps until each of them has
/// exited (their pidfds), the grace runs out or the caller sends a signal; the next
/// round's read confirms, and finds members forked meanwhile. A group that holds
/// nothing but its leader, the common case, costs one `pidfd_send_signal` and no
/// table read where the kernel groups pidfd signals.
async fn clear_group(
    leader: &Leader,
    pgid: i32,
    grace: Duration,
    signals: &mut mpsc::UnboundedReceiver<i32>,
) {
    let deadline = tokio::time::Instant::now() + grace;
    let mut termed = false;
    let mut killed = false;
    loop {
        // Signal 0 on a group of nothing but an unreaped leader still succeeds: the
        // table read decides then.
        if !leader.signal_group(0) {
            return;
        }
        let members = runner_reaper::running_members(pgid);
        if members.is_empty() {
            return;
        }
        if !termed {
            deliver(leader, nix::libc::SIGTERM);
            termed = true;
        }
        tokio::select! {
            () = exits(&members) => {}
            () = tokio::time::sleep_until(deadline), if !killed => {
                leader.signal_group(nix::libc::SIGKILL);
                killed = true;
            }
            Some(sig) = signals.recv() => {
                deliver(leader, sig);
                killed |= sig == nix::libc::SIGKILL;
            }
        }
    }
}
