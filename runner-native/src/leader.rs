//! Waiting for a group leader we spawned, and signalling its group, without ever
//! reaching a process group that is not ours.
//!
//! The leader is watched through its exit descriptor ([`runner_core::os::exit_fd`]:
//! a pidfd on Linux, from `CLONE_PIDFD` or `pidfd_open`; a kqueue on macOS), which
//! becomes readable when the process exits. Its group is signalled in one of two
//! ways, and never otherwise:
//! - through the pidfd with `PIDFD_SIGNAL_PROCESS_GROUP` (Linux 6.9): the kernel
//!   resolves the group from the leader's own `struct pid`, which a reused number
//!   never shares, so this stays right after the leader is reaped (Linux only);
//! - by number (`killpg`) while the leader is not reaped: its zombie keeps its pid,
//!   which is the group id, from being handed to anyone else.
//!
//! Where exits cannot be watched (Linux before 5.3) a blocking thread waits with
//! `WNOWAIT`, which leaves the zombie in place just the same.

use std::io;
use std::os::fd::OwnedFd;
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
    /// The exit descriptor: a pidfd on Linux, a kqueue on macOS.
    Fd(AsyncFd<OwnedFd>),
    Thread(JoinHandle<io::Result<()>>),
}

impl Leader {
    /// Starts watching `pid`, a child of this process, through `pidfd` when the
    /// spawn gave one, else its exit descriptor. Needs a Tokio runtime.
    pub(crate) fn new(pid: i32, pidfd: Option<OwnedFd>) -> io::Result<Leader> {
        let pidfd = match pidfd {
            Some(fd) => Ok(fd),
            None => runner_core::os::exit_fd(pid),
        };
        let watch = match pidfd {
            // SAFETY: the AsyncFd owns the descriptor and never replaces or closes it.
            Ok(fd) => Watch::Fd(unsafe { AsyncFd::register(fd)? }),
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
            Watch::Fd(fd) => fd.readable().await.map(|_| ()),
            Watch::Thread(handle) => match handle.await {
                Ok(r) => r,
                Err(e) => Err(io::Error::other(e)),
            },
        }
    }

    /// True when the group can be signalled through the pidfd, so it stays
    /// addressable (and [`group_alive`](Self::group_alive) cheap) after the leader
    /// is reaped.
    pub(crate) fn signals_outlive_reap(&self) -> bool {
        matches!(&self.watch, Watch::Fd(fd) if group_signals_supported(fd.get_ref()))
    }

    /// Sends `sig` (0: only check) to the leader's process group, by one of the two
    /// ways in the module documentation. False when the group is gone, or can no
    /// longer be reached safely (reaped, no pidfd group signals).
    pub(crate) fn signal_group(&self, sig: i32) -> bool {
        #[cfg(target_os = "linux")]
        if let Watch::Fd(fd) = &self.watch {
            if group_signals_supported(fd.get_ref()) {
                return runner_core::os::signal_group_of(fd.get_ref(), sig).is_ok();
            }
        }
        if self.reaped {
            return false;
        }
        // SAFETY: a plain system call; the unreaped leader pins the group id.
        unsafe { libc::kill(-self.pid, sig) == 0 }
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

/// Blocks until child `pid` exits and reaps it; its raw wait status.
pub(crate) fn reap_blocking(pid: i32) -> Option<libc::c_int> {
    waitpid(pid, 0).ok().flatten()
}

/// Group signals through the exit descriptor are Linux's alone.
#[cfg(not(target_os = "linux"))]
fn group_signals_supported(_fd: &OwnedFd) -> bool {
    false
}

/// Whether this kernel signals a pidfd's process group
/// ([`runner_core::os::signal_group_of`]), probed once (signal 0, which only checks)
/// on the first leader's pidfd: an older kernel rejects it.
#[cfg(target_os = "linux")]
fn group_signals_supported(fd: &OwnedFd) -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // Lets the tests drive the older kernels' path (by number, zombie pinned).
        std::env::var_os("RUNNER_TEST_NO_PIDFD_GROUP_SIGNALS").is_none()
            && !matches!(
                runner_core::os::signal_group_of(fd, 0),
                Err(e) if e.kind() == io::ErrorKind::Unsupported
            )
    })
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
        let mut leader = Leader::new(pid, None).unwrap();
        assert!(matches!(leader.watch, Watch::Fd(_)));
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        leader.exited().await.unwrap();
        assert_eq!(leader.reap().unwrap(), ExitStatus::Signaled(9));
        std::mem::forget(child);
    }
}
