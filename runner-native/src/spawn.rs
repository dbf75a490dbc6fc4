//! Spawning a process group leader behind a start gate.
//!
//! The child is forked, reports its pid through a pipe and then blocks (before
//! `exec`) until the parent has written the group's ledger record and opens the gate.
//! If the record cannot be written the gate is closed instead and the child exits
//! without running its program. If the parent dies while the child waits,
//! `PR_SET_PDEATHSIG` kills the child. So no program runs unregistered.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use runner_reaper::{Ledger, Record};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

/// errno the child reports when its gate is closed without opening.
const GATE_CLOSED: i32 = nix::libc::ECANCELED;

/// Why a gated spawn failed.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// The OS could not start the program.
    Spawn(io::Error),
    /// The ledger record could not be written; the program never ran.
    Ledger(String),
}

/// Where a group is registered, so the supervisor can remove the record.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub(crate) ledger: Ledger,
    pub(crate) pgid: i32,
}

/// Spawns `cmd` as the leader of a new process group. With a ledger, the group is
/// registered before the program runs.
pub(crate) async fn spawn_group(
    mut cmd: Command,
    ledger: Option<Ledger>,
    argv: Vec<String>,
    cwd: PathBuf,
) -> Result<(Child, Option<Registration>), SpawnError> {
    cmd.process_group(0);
    let Some(ledger) = ledger else {
        return cmd.spawn().map(|c| (c, None)).map_err(SpawnError::Spawn);
    };

    let (gate_r, gate_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| SpawnError::Spawn(e.into()))?;
    let (report_r, report_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| SpawnError::Spawn(e.into()))?;
    let parent = std::process::id();
    let (gate_fd, report_fd) = (gate_r.as_raw_fd(), report_w.as_raw_fd());
    let (gate_w_fd, report_r_fd) = (gate_w.as_raw_fd(), report_r.as_raw_fd());
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (getpid, getppid, prctl, read, write) on stack buffers.
    unsafe {
        cmd.pre_exec(move || child_gate(parent, [gate_w_fd, report_r_fd], gate_fd, report_fd));
    }
    // `spawn` returns only once the child has exec'd (or failed), which happens after
    // we open the gate; so it runs on a blocking thread while this task opens it. That
    // thread stays inside `spawn` until exec, which keeps PDEATHSIG meaningful.
    let spawner = tokio::task::spawn_blocking(move || {
        let result = cmd.spawn();
        drop((gate_r, report_w));
        result
    });

    let mut report = pipe::Receiver::from_owned_fd(report_r).map_err(SpawnError::Spawn)?;
    let mut pid_bytes = [0u8; 4];
    let registration = match report.read_exact(&mut pid_bytes).await {
        Ok(_) => {
            let pid = u32::from_ne_bytes(pid_bytes) as i32;
            let written = Record::for_group(pid, pid, argv, cwd)
                .and_then(|record| ledger.write_record(&record).map(|_| ()));
            match written {
                Ok(()) => {
                    open_gate(&gate_w);
                    Ok(Registration { ledger, pgid: pid })
                }
                Err(e) => {
                    close_gate(&gate_w);
                    Err(e.to_string())
                }
            }
        }
        // The child failed before reporting (e.g. chdir); `spawn` has the reason.
        Err(_) => Err(String::new()),
    };
    drop(gate_w);
    let spawned = spawner
        .await
        .map_err(|e| SpawnError::Spawn(io::Error::other(e)))?;
    match (spawned, registration) {
        (Ok(child), Ok(reg)) => Ok((child, Some(reg))),
        (Err(e), Err(msg)) if e.raw_os_error() == Some(GATE_CLOSED) && !msg.is_empty() => {
            Err(SpawnError::Ledger(msg))
        }
        (Err(e), Ok(reg)) => {
            let _ = reg.ledger.remove_record(reg.pgid);
            Err(SpawnError::Spawn(e))
        }
        (Err(e), Err(_)) => Err(SpawnError::Spawn(e)),
        // Cannot happen: a child that passed the gate had it opened by us.
        (Ok(mut child), Err(msg)) => {
            let _ = child.start_kill();
            Err(SpawnError::Ledger(msg))
        }
    }
}

fn open_gate(gate_w: &OwnedFd) {
    let _ = nix::unistd::write(gate_w, GATE_OPEN);
}

fn close_gate(gate_w: &OwnedFd) {
    let _ = nix::unistd::write(gate_w, b"0");
}

const GATE_OPEN: &[u8] = b"1";

/// Runs in the forked child before exec.
fn child_gate(parent: u32, parent_ends: [RawFd; 2], gate: RawFd, report: RawFd) -> io::Result<()> {
    use nix::libc;
    // SAFETY (whole body): raw system calls on fds this child owns, no allocation.
    unsafe {
        // Our copies of the parent's ends: without closing them, a parent that dies
        // would never let the gate read see end of file.
        for fd in parent_ends {
            libc::close(fd);
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        if libc::getppid() as u32 != parent {
            // The parent died before PDEATHSIG was armed.
            return Err(io::Error::from_raw_os_error(GATE_CLOSED));
        }
        let pid = (libc::getpid() as u32).to_ne_bytes();
        if libc::write(report, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
            return Err(io::Error::last_os_error());
        }
        let mut byte = 0u8;
        loop {
            let n = libc::read(gate, (&mut byte as *mut u8).cast(), 1);
            if n == 1 {
                if byte == GATE_OPEN[0] {
                    break;
                }
                return Err(io::Error::from_raw_os_error(GATE_CLOSED));
            }
            if n == 0 {
                return Err(io::Error::from_raw_os_error(GATE_CLOSED));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        // The program itself must not die with our spawning thread.
        if libc::prctl(libc::PR_SET_PDEATHSIG, 0 as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
