//! The platform seam: everything about processes that differs between Linux and
//! macOS, behind one small interface (nextest's `imp` pattern). Linux reads
//! `/proc` and watches exits through pidfds; macOS uses `proc_pidinfo`,
//! `sysctl(KERN_PROCARGS2)` and kqueue's `EVFILT_PROC`.
//!
//! The sweeps judge processes by an [`OwnerIdentity`]: a pid plus the process's
//! start time (clock ticks since boot on Linux, microseconds since the epoch on
//! macOS; only ever compared with values read on the same machine and boot, see
//! [`boot_id`]). A pid alone is never proof: pids are reused.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::time::Duration;

use crate::ProcessState;

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[path = "linux.rs"]
mod imp;

#[cfg(target_os = "macos")]
#[allow(unsafe_code)]
#[path = "macos.rs"]
mod imp;

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
compile_error!("runner supports Linux and macOS");

/// One process as the process table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process id.
    pub pid: i32,
    /// Its process group id.
    pub pgid: i32,
    /// Its start time, in the platform's unit (see the module documentation).
    pub start_time: u64,
    /// Its scheduler state.
    pub state: ProcessState,
    /// True while it runs: not a zombie, or only its main thread is one while other
    /// threads go on (Linux shows `Zl`; the process exits with its last thread).
    pub running: bool,
}

/// CPU time and memory of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// User plus system CPU time since the process started.
    pub cpu: Duration,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Reads one process; an error (usually `NotFound`) when there is no such process.
pub fn process(pid: i32) -> io::Result<ProcessInfo> {
    imp::process(pid)
}

/// Every process on the machine this user can see, from one read of the process
/// table (a process that exits during the read is left out).
pub fn processes() -> Vec<ProcessInfo> {
    imp::processes()
}

/// CPU time and resident memory of `pid`.
pub fn usage(pid: i32) -> io::Result<Usage> {
    imp::usage(pid)
}

/// True when the environment of `pid` holds exactly the entry `entry` (`KEY=value`
/// as bytes). False when it does not or cannot be read (another user's process).
pub fn environ_contains(pid: i32, entry: &[u8]) -> bool {
    imp::environ(pid).is_some_and(|environ| environ.split(|b| *b == 0).any(|e| e == entry))
}

/// A descriptor that turns readable once `pid` has exited (a zombie counts): a pidfd
/// on Linux, a kqueue watching `EVFILT_PROC`/`NOTE_EXIT` on macOS. `ESRCH` when
/// there is no such process; `ENOSYS` when this kernel cannot watch (Linux before
/// 5.3), and the caller falls back to looking again after a pause.
pub fn exit_fd(pid: i32) -> io::Result<OwnedFd> {
    imp::exit_fd(pid)
}

/// Sends `sig` (0: only check) to the process group of the process `exit_fd` names
/// (a descriptor from [`exit_fd`]), the group found by the kernel from that process
/// itself: `pidfd_send_signal` with `PIDFD_SIGNAL_PROCESS_GROUP` (Linux 6.9). A reused
/// number is never reached this way, even after the process was reaped. An error of
/// kind `Unsupported` where the kernel or the platform cannot (Linux before 6.9,
/// macOS); `ESRCH` when the group has no member left.
pub fn signal_group_of(exit_fd: &OwnedFd, sig: i32) -> io::Result<()> {
    imp::signal_group_of(exit_fd, sig)
}

/// The command line of `pid` (its arguments, each NUL-terminated), `None` when it
/// cannot be read.
pub fn cmdline(pid: i32) -> Option<Vec<u8>> {
    imp::cmdline(pid)
}

/// A process that lives in a pid namespace directly below this process's own (a
/// container's process, seen from the host its engine runs on), as the process table
/// shows it here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacedProcess {
    /// Its pid here.
    pub pid: i32,
    /// Its pid in its own pid namespace (the container's number for it).
    pub inner_pid: i64,
    /// Its start time, in the platform's unit.
    pub start_time: u64,
    /// The id of its session, numbered here.
    pub session: i32,
    /// Its control groups (`/proc/<pid>/cgroup`), one line per hierarchy.
    pub cgroups: String,
}

/// Process `pid` when it lives in a pid namespace exactly one level below ours: its
/// `NSpid` chain, read from a process table that is our own namespace's, is `pid`
/// here and one number in its own namespace. `None` for a process of our namespace,
/// of a deeper or unrelated one, one that is gone or changed while it was read, and
/// on macOS (no pid namespaces: an engine there runs in a VM, its pids are not ours).
pub fn child_namespace_process(pid: i32) -> Option<NamespacedProcess> {
    imp::child_namespace_process(pid)
}

/// The pid namespace this process lives in, as an identity that differs between
/// namespaces (the inode of `/proc/self/ns/pid` on Linux); `None` where there are no
/// pid namespaces (macOS) or it cannot be read. Pids and start times name a process
/// only within one namespace: an owner recorded in another is never judged from here.
pub fn pid_namespace() -> Option<u64> {
    // A process's own pid namespace never changes (entering another one moves only
    // its later children): read once.
    static NS: OnceLock<Option<u64>> = OnceLock::new();
    *NS.get_or_init(imp::pid_namespace)
}

/// True when process `pid` runs the program `name`: its executable's file name, or
/// its command name as the kernel keeps it.
pub fn runs_program(pid: i32, name: &str) -> bool {
    imp::runs_program(pid, name)
}

/// Sends signal `sig` to process group `pgid`. The caller must know the group is the
/// one it means (ids are reused once a group is empty).
pub fn signal_group(pgid: i32, sig: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    imp::signal_group(pgid, sig)
}

/// This host's name.
pub fn hostname() -> String {
    imp::hostname()
}

/// The operating system and kernel, e.g. `Linux 6.18.1` or `macOS (Darwin 24.1.0)`.
pub fn kernel() -> Option<String> {
    imp::kernel()
}

/// This boot's identity: `/proc/sys/kernel/random/boot_id` on Linux,
/// `kern.bootsessionuuid` on macOS. Start times compare only within one boot.
pub fn boot_id() -> io::Result<&'static str> {
    static BOOT: OnceLock<String> = OnceLock::new();
    if let Some(b) = BOOT.get() {
        return Ok(b);
    }
    let id = imp::boot_id()?;
    Ok(BOOT.get_or_init(|| id))
}

/// A process named so that a reused pid never passes for it: pid plus start time.
/// Owners of ledger records and of containers are judged by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerIdentity {
    /// The pid.
    pub pid: i32,
    /// The start time (see the module documentation).
    pub start_time: u64,
}

impl OwnerIdentity {
    /// True when the process this names still runs (same pid, same start time).
    pub fn is_alive(&self) -> bool {
        process_is(self.pid, self.start_time)
    }
}

/// The identity of this process. Read once per process (a forked child reads its own).
pub fn owner_identity() -> io::Result<OwnerIdentity> {
    static OWNER: OnceLock<OwnerIdentity> = OnceLock::new();
    let pid = std::process::id() as i32;
    if let Some(o) = OWNER.get().filter(|o| o.pid == pid) {
        return Ok(*o);
    }
    let owner = OwnerIdentity {
        pid,
        start_time: process(pid)?.start_time,
    };
    let _ = OWNER.set(owner);
    Ok(owner)
}

/// True when `pid` still runs and started at `start_time`: the process an identity
/// names, not a later one that reused the pid.
pub fn process_is(pid: i32, start_time: u64) -> bool {
    process(pid).is_ok_and(|p| p.start_time == start_time && p.running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn this_process_is_its_own_identity() {
        let me = owner_identity().unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(me.is_alive());
        let info = process(me.pid).unwrap();
        assert!(info.running);
        assert!(processes().iter().any(|p| *p == info || p.pid == me.pid));
        assert!(!process_is(me.pid, me.start_time + 1));
        assert!(!boot_id().unwrap().is_empty());
        assert!(usage(me.pid).unwrap().rss_bytes > 0);
    }

    #[test]
    fn environ_and_exit_fd_see_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("RUNNER_OS_TEST", "yes")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // The child may not have exec'd yet; its environment is set from exec on.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !environ_contains(pid, b"RUNNER_OS_TEST=yes") && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(environ_contains(pid, b"RUNNER_OS_TEST=yes"));
        assert!(!environ_contains(pid, b"RUNNER_OS_TEST=no"));
        let fd = exit_fd(pid).unwrap();
        let readable = |ms| {
            let mut p = [nix_free_pollfd(fd.as_raw_fd())];
            poll(&mut p, ms) > 0
        };
        assert!(!readable(0));
        child.kill().unwrap();
        assert!(readable(10_000));
        assert!(
            !process(pid).unwrap().running,
            "an unreaped child is a zombie"
        );
        child.wait().unwrap();
        assert!(process(pid).is_err());
    }

    fn nix_free_pollfd(fd: i32) -> libc::pollfd {
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }
    }

    #[allow(unsafe_code)]
    fn poll(fds: &mut [libc::pollfd], ms: i32) -> i32 {
        // SAFETY: a valid slice of pollfds.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) }
    }
}
