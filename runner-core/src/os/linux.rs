//! Linux: `/proc` through procfs, pidfds.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use procfs::process::Stat;
use procfs::FromRead;

use super::{ProcessInfo, Usage};
use crate::ProcessState;

/// `/proc/<pid>/stat`, read with one open (procfs's `Process` opens the process's
/// directory first, which costs a path walk more per process).
fn stat(pid: i32) -> io::Result<Stat> {
    Stat::from_file(format!("/proc/{pid}/stat")).map_err(|e| match e {
        procfs::ProcError::NotFound(_) => io::Error::from_raw_os_error(libc::ESRCH),
        procfs::ProcError::PermissionDenied(_) => io::Error::from_raw_os_error(libc::EPERM),
        other => io::Error::other(other),
    })
}

fn info(stat: &Stat) -> ProcessInfo {
    ProcessInfo {
        pid: stat.pid,
        pgid: stat.pgrp,
        start_time: stat.starttime,
        state: ProcessState::from_letter(stat.state),
        running: stat.state != 'Z' || stat.num_threads > 1,
    }
}

pub(super) fn process(pid: i32) -> io::Result<ProcessInfo> {
    stat(pid).map(|s| info(&s))
}

pub(super) fn processes() -> Vec<ProcessInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    read_stats(&pids)
}

/// The processes of `pids` that still exist. Each read costs the kernel some
/// microseconds, so a long list is split across the machine's cores (up to four).
fn read_stats(pids: &[i32]) -> Vec<ProcessInfo> {
    const PER_THREAD: usize = 64;
    let read = |pids: &[i32]| -> Vec<ProcessInfo> {
        pids.iter().filter_map(|&pid| process(pid).ok()).collect()
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(4).min(pids.len() / PER_THREAD).max(1);
    if threads == 1 {
        return read(pids);
    }
    let mut chunks = pids.chunks(pids.len().div_ceil(threads));
    let mine = chunks.next().unwrap_or_default();
    std::thread::scope(|s| {
        let others: Vec<_> = chunks.map(|c| s.spawn(move || read(c))).collect();
        let mut all = read(mine);
        for other in others {
            // A reader that panicked read nothing we can use; callers look again.
            all.extend(other.join().unwrap_or_default());
        }
        all
    })
}

pub(super) fn usage(pid: i32) -> io::Result<Usage> {
    let stat = stat(pid)?;
    let ticks = procfs::ticks_per_second().max(1);
    let cpu_ticks = stat.utime + stat.stime;
    Ok(Usage {
        cpu: Duration::from_secs(cpu_ticks / ticks)
            + Duration::from_nanos((cpu_ticks % ticks) * 1_000_000_000 / ticks),
        rss_bytes: stat.rss * procfs::page_size(),
    })
}

/// `pidfd_send_signal`'s flag for the target's whole process group (Linux 6.9).
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

pub(super) fn signal_group_of(fd: &OwnedFd, sig: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a descriptor the caller owns; no siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            PIDFD_SIGNAL_PROCESS_GROUP,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS) => Err(io::Error::new(io::ErrorKind::Unsupported, e)),
        _ => Err(e),
    }
}

pub(super) fn environ(pid: i32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

pub(super) fn exit_fd(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open returns a new close-on-exec descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub(super) fn boot_id() -> io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string())
}

pub(super) fn cmdline(pid: i32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline")).ok()
}

pub(super) fn pid_namespace() -> Option<u64> {
    // "pid:[4026531836]"
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let link = link.to_str()?;
    link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

pub(super) fn child_namespace_process(pid: i32) -> Option<super::NamespacedProcess> {
    // Our /proc must be our own pid namespace's (a process in `unshare --pid` without
    // its own /proc reads its parent's table, where numbers are not ours to signal).
    let ours = std::fs::read_link("/proc/self").ok()?;
    if ours.to_str()?.parse::<u32>().ok()? != std::process::id() {
        return None;
    }
    let before = stat(pid).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let chain: Vec<i64> = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))?
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    let [here, inner_pid] = chain[..] else {
        return None;
    };
    if here != i64::from(pid) {
        return None;
    }
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    // The same process throughout: not one that exited and whose pid came back.
    let after = stat(pid).ok()?;
    (after.starttime == before.starttime).then_some(super::NamespacedProcess {
        pid,
        inner_pid,
        start_time: before.starttime,
        session: before.session,
        cgroups,
    })
}

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

pub(super) fn kernel() -> Option<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    Some(format!("Linux {}", release.trim()))
}

pub(super) fn runs_program(pid: i32, name: &str) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .is_some_and(|exe| exe.file_name().is_some_and(|n| n == name))
        || std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
}

pub(super) fn signal_group(pgid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: a plain system call.
    if unsafe { libc::killpg(pgid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
