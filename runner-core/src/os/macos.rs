//! macOS: `proc_pidinfo`, `proc_listallpids`, `sysctl` and kqueue.
//!
//! Type-checked on Linux by `cargo xtask check-macos`; the logic above this layer
//! (the ledger, the sweeps, the portable spawn path) runs and is tested on Linux.

use std::ffi::CString;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use super::{ProcessInfo, Usage};
use crate::ProcessState;

/// `pbi_status` of a zombie (`SZOMB` in `<sys/proc.h>`).
const SZOMB: u32 = 5;

/// `proc_pidinfo(pid, flavor)` into a `T`, the C struct of that flavor.
fn pidinfo<T>(pid: i32, flavor: libc::c_int) -> io::Result<T> {
    let mut info = MaybeUninit::<T>::zeroed();
    let size = size_of::<T>() as libc::c_int;
    // SAFETY: the buffer is as large as the size we pass.
    let n = unsafe { libc::proc_pidinfo(pid, flavor, 0, info.as_mut_ptr().cast(), size) };
    if n != size {
        let e = io::Error::last_os_error();
        return Err(if n == 0 && e.raw_os_error() == Some(0) {
            io::Error::from_raw_os_error(libc::ESRCH)
        } else {
            e
        });
    }
    // SAFETY: the kernel filled the whole struct (plain C data, zeroed before).
    Ok(unsafe { info.assume_init() })
}

fn bsdinfo(pid: i32) -> io::Result<libc::proc_bsdinfo> {
    pidinfo(pid, libc::PROC_PIDTBSDINFO)
}

pub(super) fn process(pid: i32) -> io::Result<ProcessInfo> {
    let info = bsdinfo(pid)?;
    let state = match info.pbi_status {
        1 | 2 => ProcessState::Running,
        3 => ProcessState::InterruptibleSleep,
        4 => ProcessState::Stopped,
        SZOMB => ProcessState::Zombie,
        _ => ProcessState::Unknown,
    };
    Ok(ProcessInfo {
        pid,
        pgid: info.pbi_pgid as i32,
        start_time: info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec,
        state,
        running: info.pbi_status != SZOMB,
    })
}

pub(super) fn processes() -> Vec<ProcessInfo> {
    // SAFETY: a null buffer asks for the count.
    let count = unsafe { libc::proc_listallpids(std::ptr::null_mut(), 0) };
    if count <= 0 {
        return Vec::new();
    }
    // Room for processes started since the count.
    let mut pids = vec![0 as libc::pid_t; count as usize + 64];
    let bytes = (pids.len() * size_of::<libc::pid_t>()) as libc::c_int;
    // SAFETY: the buffer holds `bytes` bytes.
    let n = unsafe { libc::proc_listallpids(pids.as_mut_ptr().cast(), bytes) };
    pids.truncate(n.max(0) as usize);
    pids.into_iter()
        .filter(|&pid| pid > 0)
        .filter_map(|pid| process(pid).ok())
        .collect()
}

pub(super) fn usage(pid: i32) -> io::Result<Usage> {
    let info: libc::proc_taskinfo = pidinfo(pid, libc::PROC_PIDTASKINFO)?;
    // CPU times are in Mach absolute time units: nanoseconds on Intel, not on Apple
    // silicon.
    let (numer, denom) = timebase();
    let ticks = u128::from(info.pti_total_user + info.pti_total_system);
    let nanos = ticks * u128::from(numer) / u128::from(denom.max(1));
    Ok(Usage {
        cpu: Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64),
        rss_bytes: info.pti_resident_size,
    })
}

#[allow(deprecated)]
fn timebase() -> (u32, u32) {
    let mut tb = libc::mach_timebase_info { numer: 1, denom: 1 };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::mach_timebase_info(&mut tb) } != 0 {
        return (1, 1);
    }
    (tb.numer, tb.denom)
}

/// `sysctl(KERN_PROCARGS2)` of `pid`: `argc`, the exec path, NUL padding, `argc`
/// arguments, then the environment, each NUL-terminated.
fn procargs(pid: i32) -> Option<Vec<u8>> {
    let mut mib = [libc::CTL_KERN, libc::KERN_PROCARGS2, pid];
    let mut len: libc::size_t = 0;
    // SAFETY: a null buffer asks for the size.
    let rc = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            3,
            std::ptr::null_mut(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 || len < size_of::<libc::c_int>() {
        return None;
    }
    let mut buf = vec![0u8; len];
    // SAFETY: the buffer holds `len` bytes.
    let rc = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            3,
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 || len < size_of::<libc::c_int>() {
        return None;
    }
    buf.truncate(len);
    Some(buf)
}

/// What follows the exec path and its NUL padding in a `KERN_PROCARGS2` block.
fn after_exec_path(rest: &[u8]) -> Option<&[u8]> {
    let mut at = rest.iter().position(|b| *b == 0)?;
    while rest.get(at) == Some(&0) {
        at += 1;
    }
    Some(&rest[at..])
}

/// The environment block of `pid`, each entry NUL-terminated.
pub(super) fn environ(pid: i32) -> Option<Vec<u8>> {
    let buf = procargs(pid)?;
    let (argc, rest) = buf.split_at(size_of::<libc::c_int>());
    let argc = libc::c_int::from_ne_bytes(argc.try_into().ok()?).max(0) as usize;
    let mut strings = after_exec_path(rest)?.split(|b| *b == 0);
    for _ in 0..argc {
        strings.next()?;
    }
    let mut environ = Vec::new();
    for s in strings.take_while(|s| !s.is_empty()) {
        environ.extend_from_slice(s);
        environ.push(0);
    }
    Some(environ)
}

pub(super) fn signal_group_of(_fd: &OwnedFd, _sig: i32) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

pub(super) fn exit_fd(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: kqueue returns a new descriptor or -1.
    let kq = unsafe { libc::kqueue() };
    if kq < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `kq` is a fresh descriptor nobody else owns.
    let kq = unsafe { OwnedFd::from_raw_fd(kq) };
    use std::os::fd::AsRawFd;
    // SAFETY: FD_CLOEXEC on our own descriptor.
    unsafe { libc::fcntl(kq.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    let change = libc::kevent {
        ident: pid as libc::uintptr_t,
        filter: libc::EVFILT_PROC,
        flags: libc::EV_ADD | libc::EV_CLEAR,
        fflags: libc::NOTE_EXIT,
        data: 0,
        udata: std::ptr::null_mut(),
    };
    // SAFETY: one valid change, no events asked for.
    let rc = unsafe {
        libc::kevent(
            kq.as_raw_fd(),
            &change,
            1,
            std::ptr::null_mut(),
            0,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) && is_exited_child(pid) {
            // Our child that has already exited (a zombie) cannot be watched, but it
            // has exited: hand back a descriptor that is readable at once (a pipe
            // whose writer is closed).
            return exited_already();
        }
        return Err(e);
    }
    Ok(kq)
}

/// True when `pid` is a child of ours that has exited and is not reaped (asked with
/// `WNOWAIT`, so it stays unreaped).
fn is_exited_child(pid: i32) -> bool {
    let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
    // SAFETY: a valid out-pointer; WNOWAIT leaves the child as it is.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            info.as_mut_ptr(),
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: zeroed, then filled by the kernel when a child matched.
    rc == 0 && unsafe { info.assume_init() }.si_pid == pid
}

fn exited_already() -> io::Result<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: a valid array of two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors we own; the writer is closed at once.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(writer);
    use std::os::fd::AsRawFd;
    // SAFETY: FD_CLOEXEC on our own descriptor.
    unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(reader)
}

pub(super) fn boot_id() -> io::Result<String> {
    sysctl_string("kern.bootsessionuuid").ok_or_else(io::Error::last_os_error)
}

/// The arguments from `sysctl(KERN_PROCARGS2)`, NUL-terminated.
pub(super) fn cmdline(pid: i32) -> Option<Vec<u8>> {
    let buf = procargs(pid)?;
    let (argc, rest) = buf.split_at(size_of::<libc::c_int>());
    let argc = libc::c_int::from_ne_bytes(argc.try_into().ok()?).max(0) as usize;
    let args = after_exec_path(rest)?;
    let mut out = Vec::new();
    for arg in args.split(|b| *b == 0).take(argc) {
        out.extend_from_slice(arg);
        out.push(0);
    }
    Some(out)
}

pub(super) fn child_namespace_process(_pid: i32) -> Option<super::NamespacedProcess> {
    None
}

pub(super) fn pid_namespace() -> Option<u64> {
    None
}

pub(super) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer holds `buf.len()` bytes.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return String::new();
    }
    let name = buf.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(name).into_owned()
}

pub(super) fn kernel() -> Option<String> {
    sysctl_string("kern.osrelease").map(|r| format!("macOS (Darwin {r})"))
}

fn sysctl_string(name: &str) -> Option<String> {
    let name = CString::new(name).ok()?;
    let mut buf = [0u8; 256];
    let mut len: libc::size_t = buf.len();
    // SAFETY: the buffer holds `len` bytes.
    let rc = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return None;
    }
    let value = buf[..len.min(buf.len())].split(|b| *b == 0).next()?;
    Some(String::from_utf8_lossy(value).into_owned())
}

pub(super) fn runs_program(pid: i32, name: &str) -> bool {
    let mut path = [0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
    // SAFETY: the buffer holds `path.len()` bytes.
    let n = unsafe { libc::proc_pidpath(pid, path.as_mut_ptr().cast(), path.len() as u32) };
    if n > 0 {
        let path = &path[..n as usize];
        let file = path.rsplit(|b| *b == b'/').next().unwrap_or(path);
        if file == name.as_bytes() {
            return true;
        }
    }
    bsdinfo(pid).is_ok_and(|info| {
        let comm: Vec<u8> = info
            .pbi_comm
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        comm == name.as_bytes()
    })
}

pub(super) fn signal_group(pgid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: a plain system call.
    if unsafe { libc::killpg(pgid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
