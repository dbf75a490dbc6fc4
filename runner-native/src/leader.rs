//! Waiting for a group leader we spawned, without reaping it before we choose to.
//!
//! The leader is watched through a pidfd, which becomes readable when the process
//! exits. Until [`Leader::reap`] runs, the exited leader is a zombie whose pid (and
//! process group id) nobody else can be given, so the supervisor can still signal
//! the group safely. On kernels without `pidfd_open` (before 5.3) a blocking thread
//! waits with `WNOWAIT`, which leaves the zombie in place just the same.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;

use nix::libc;
use runner_core::ExitStatus;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

/// A child we spawned and have not reaped.
#[derive(Debug)]
pub(crate) struct Leader {
    pid: i32,
    watch: Watch,
    reaped: bool,
}

#[derive(Debug)]
enum Watch {
    Pidfd(AsyncFd<OwnedFd>),
    Thread(JoinHandle<io::Result<()>>),
}

impl Leader {
    /// Starts watching `pid`, a child of this process. Needs a Tokio runtime.
    pub(crate) fn new(pid: i32) -> io::Result<Leader> {
        let watch = match pidfd_open(pid) {
            // SAFETY: the AsyncFd owns the pidfd and never replaces or closes it.
            Ok(fd) => Watch::Pidfd(unsafe { AsyncFd::register(fd)? }),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                Watch::Thread(tokio::task::spawn_blocking(move || wait_exited(pid)))
            }
            Err(e) => return Err(e),
        };
        Ok(Leader {
            pid,
            watch,
            reaped: false,
        })
    }

    /// The leader's pid.
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Resolves once the leader has exited (it is not reaped). Cancel-safe.
    pub(crate) async fn exited(&mut self) -> io::Result<()> {
        match &mut self.watch {
            Watch::Pidfd(fd) => fd.readable().await.map(|_| ()),
            Watch::Thread(handle) => match handle.await {
                Ok(r) => r,
                Err(e) => Err(io::Error::other(e)),
            },
        }
    }

    /// Reaps the leader after [`exited`](Self::exited) and returns how it ended.
    pub(crate) fn reap(&mut self) -> io::Result<ExitStatus> {
        let status = waitpid(self.pid, 0)?.unwrap_or(0);
        self.reaped = true;
        Ok(ExitStatus::from(std::process::ExitStatus::from_raw(status)))
    }
}

impl Drop for Leader {
    /// A leader dropped unreaped (its supervisor was cancelled with the runtime) is
    /// reaped when it exits, so it never stays a zombie.
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // Reaped now, or not ours to reap (ECHILD): done.
        if !matches!(waitpid(self.pid, libc::WNOHANG), Ok(None)) {
            return;
        }
        let pid = self.pid;
        let _ = std::thread::Builder::new()
            .name("runner-reap".into())
            .spawn(move || reap_blocking(pid));
    }
}

/// Blocks until child `pid` exits and reaps it, ignoring the status.
pub(crate) fn reap_blocking(pid: i32) {
    let _ = waitpid(pid, 0);
}

/// `waitpid`, retried on EINTR; the raw wait status, or `None` when `WNOHANG` found
/// the child still running.
fn waitpid(pid: i32, flags: libc::c_int) -> io::Result<Option<libc::c_int>> {
    loop {
        let mut status = 0;
        // SAFETY: a plain system call with a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, flags) };
        if rc >= 0 {
            return Ok((rc != 0).then_some(status));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Blocks until child `pid` has exited, leaving it unreaped.
fn wait_exited(pid: i32) -> io::Result<()> {
    loop {
        // SAFETY: a plain system call with a valid out-pointer.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open returns a new close-on-exec descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback for kernels without pidfd, driven directly.
    #[tokio::test]
    async fn thread_watch_leaves_the_zombie_until_reaped() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut leader = Leader {
            pid,
            watch: Watch::Thread(tokio::task::spawn_blocking(move || wait_exited(pid))),
            reaped: false,
        };
        leader.exited().await.unwrap();
        // Exited but not reaped: the pid is still ours, as a zombie.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        assert!(stat.contains(") Z "), "{stat}");
        assert_eq!(leader.reap().unwrap(), ExitStatus::Exited(7));
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        std::mem::forget(child);
    }

    #[tokio::test]
    async fn pidfd_watch_reports_a_signal() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut leader = Leader::new(pid).unwrap();
        assert!(matches!(leader.watch, Watch::Pidfd(_)));
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        leader.exited().await.unwrap();
        assert_eq!(leader.reap().unwrap(), ExitStatus::Signaled(9));
        std::mem::forget(child);
    }
}
