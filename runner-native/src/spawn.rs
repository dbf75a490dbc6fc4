//! Spawning a process group leader that is registered before it runs its program.
//!
//! The child is made the way `posix_spawn` makes it: `clone(CLONE_VM | CLONE_VFORK)`,
//! so no page table is copied and the parent sleeps until the child has called
//! `execve` (or died trying). Between the clone and the exec the child puts itself in
//! a new process group and writes its own ledger record: the parent prepares every
//! byte it can (the runs directory, the owner, argv, cwd, boot id) and the child adds
//! what only it knows (its pid, which is also its process group id, and its start time
//! from `/proc/self/stat`), writes a temporary file and renames it into place. If any
//! step fails the child does not exec: no program runs without a record, and there is
//! no window in which an owner crash could leave an unrecorded group.
//!
//! The child shares the parent's memory, so it runs only async-signal-safe system
//! calls on buffers allocated before the clone, never allocates, never takes a lock,
//! and reports a failure by writing into the parent's [`ChildCtx`], which the parent
//! reads once it wakes. Every signal is blocked around the clone and the child resets
//! every handled signal to its default before unblocking, so no handler of the parent
//! ever runs on the child's side.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::libc::{self, c_char, c_int, c_void};
use runner_reaper::{unborn_record_tail, Ledger};

use crate::leader::Leader;

/// Stack for the child between clone and exec: the record writer's buffers are on
/// the heap, the deepest frame is a 1 KiB read of `/proc/self/stat`.
const CHILD_STACK: usize = 64 * 1024;
/// One past the highest signal number on Linux.
const NSIG: c_int = 65;

/// Where in the child a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
enum Stage {
    None = 0,
    Group = 1,
    Record = 2,
    Fds = 3,
    Dir = 4,
    Exec = 5,
}

/// Why a spawn failed.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// The OS could not start the program (the error of `execve`, `chdir`, `clone`).
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

/// What to start.
pub(crate) struct Launch<'a> {
    /// The resolved program.
    pub(crate) program: &'a Path,
    /// `argv[0]` (the name the caller used) and the arguments.
    pub(crate) argv: &'a [String],
    /// The whole environment.
    pub(crate) env: &'a BTreeMap<String, String>,
    /// The working directory.
    pub(crate) dir: &'a Path,
    /// The child's stdin, stdout and stderr.
    pub(crate) stdio: [BorrowedFd<'a>; 3],
}

/// What the child reads and what it writes back, shared through `CLONE_VM`.
struct ChildCtx {
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    dir: *const c_char,
    stdio: [RawFd; 3],
    record: *mut ChildRecordWriter,
    /// Written by the child on failure.
    stage: i32,
    errno: i32,
}

/// Spawns `launch` as the leader of a new process group. With a ledger, the group is
/// registered before the program runs.
pub(crate) fn spawn_group(
    launch: Launch<'_>,
    ledger: Option<Ledger>,
) -> Result<(Leader, Option<Registration>), SpawnError> {
    let spawn_err = SpawnError::Spawn;
    let program = cstring(launch.program.as_os_str()).map_err(spawn_err)?;
    let dir = cstring(launch.dir.as_os_str()).map_err(spawn_err)?;
    let argv = launch
        .argv
        .iter()
        .map(|a| cstring(OsStr::new(a)))
        .collect::<io::Result<Vec<_>>>()
        .map_err(spawn_err)?;
    let envp = launch
        .env
        .iter()
        .map(|(k, v)| {
            let mut kv = Vec::with_capacity(k.len() + v.len() + 1);
            kv.extend_from_slice(k.as_bytes());
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstring(OsStr::from_bytes(&kv))
        })
        .collect::<io::Result<Vec<_>>>()
        .map_err(spawn_err)?;
    let argv_ptrs = null_terminated(&argv);
    let envp_ptrs = null_terminated(&envp);
    // dup2 onto 0, 1 and 2 must not clobber a source that is itself one of them.
    let moved = launch
        .stdio
        .map(above_stdio)
        .into_iter()
        .collect::<io::Result<Vec<_>>>()
        .map_err(spawn_err)?;
    let stdio: Vec<RawFd> = moved
        .iter()
        .zip(launch.stdio)
        .map(|(dup, fd)| dup.as_ref().map_or(fd.as_raw_fd(), |d| d.as_raw_fd()))
        .collect();

    let mut writer = match &ledger {
        Some(ledger) => {
            let ledger_err = |e: runner_reaper::LedgerError| SpawnError::Ledger(e.to_string());
            if !ledger.runs_dir().is_dir() {
                ledger.ensure_dir().map_err(ledger_err)?;
            }
            let rest = unborn_record_tail(launch.argv, launch.dir).map_err(ledger_err)?;
            Some(ChildRecordWriter::new(
                ledger,
                rest,
                ledger.take_spare().as_deref(),
            ))
        }
        None => None,
    };
    if let Some(w) = writer.as_mut() {
        w.mark_clone();
    }
    let mut ctx = ChildCtx {
        program: program.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        dir: dir.as_ptr(),
        stdio: [stdio[0], stdio[1], stdio[2]],
        record: writer
            .as_mut()
            .map_or(std::ptr::null_mut(), |w| w as *mut ChildRecordWriter),
        stage: Stage::None as i32,
        errno: 0,
    };
    // Uninitialized: only the child's frames ever write it.
    let mut stack: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(CHILD_STACK);
    // SAFETY: MaybeUninit needs no initialization.
    unsafe { stack.set_len(CHILD_STACK) };

    let pid = clone_vfork(&mut ctx, &mut stack).map_err(spawn_err)?;
    // SAFETY: the child has exec'd or exited; nothing else writes `ctx` now. Volatile
    // because the writes happened behind the compiler's back.
    let (stage, errno) = unsafe {
        (
            std::ptr::read_volatile(&ctx.stage),
            std::ptr::read_volatile(&ctx.errno),
        )
    };
    drop(moved);
    if stage != Stage::None as i32 {
        // The child has exited (status 127); reap it so no zombie is left.
        crate::leader::reap_blocking(pid);
        if let Some(spare) = writer.as_ref().and_then(ChildRecordWriter::leftover_spare) {
            let _ = std::fs::remove_file(spare);
        }
        let error = io::Error::from_raw_os_error(errno);
        return Err(match (stage, &ledger) {
            (s, Some(ledger)) if s == Stage::Record as i32 => SpawnError::Ledger(format!(
                "failed to write a record into `{}`: {error}",
                ledger.runs_dir().display()
            )),
            _ => SpawnError::Spawn(error),
        });
    }
    let leader = match Leader::new(pid) {
        Ok(leader) => leader,
        Err(e) => {
            // Running but unwatchable (out of descriptors?): end it rather than leave
            // a group nobody supervises.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            crate::leader::reap_blocking(pid);
            if let Some(ledger) = &ledger {
                let _ = ledger.remove_record(pid);
            }
            return Err(SpawnError::Spawn(e));
        }
    };
    Ok((
        leader,
        ledger.map(|ledger| Registration { ledger, pgid: pid }),
    ))
}

/// `clone(CLONE_VM | CLONE_VFORK)` with every signal blocked; returns the child's pid
/// once it has exec'd or failed.
fn clone_vfork(ctx: &mut ChildCtx, stack: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<i32> {
    // SAFETY: the stack outlives the child's use of it (the parent sleeps until the
    // exec); `child_main` only touches `ctx` and makes async-signal-safe calls.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        let pid = libc::clone(
            child_main,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (ctx as *mut ChildCtx).cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        Ok(pid)
    }
}

/// The child, between clone and exec. Returns only by `_exit`.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `ChildCtx`, which lives until the parent wakes.
    unsafe {
        let ctx = &mut *arg.cast::<ChildCtx>();
        reset_signal_handlers();
        if libc::setpgid(0, 0) != 0 {
            fail(ctx, Stage::Group);
        }
        let writer = ctx.record;
        if !writer.is_null() && !(*writer).write(libc::syscall(libc::SYS_getpid) as i32) {
            fail(ctx, Stage::Record);
        }
        for (target, source) in ctx.stdio.into_iter().enumerate() {
            if libc::dup2(source, target as c_int) < 0 {
                undo(ctx, Stage::Fds);
            }
        }
        if libc::chdir(ctx.dir) != 0 {
            undo(ctx, Stage::Dir);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(ctx.program, ctx.argv, ctx.envp);
        undo(ctx, Stage::Exec)
    }
}

/// Reports `stage` and the current errno to the parent and exits.
///
/// # Safety
/// Only for the child between clone and exec.
unsafe fn fail(ctx: &mut ChildCtx, stage: Stage) -> ! {
    std::ptr::write_volatile(&mut ctx.errno, *libc::__errno_location());
    std::ptr::write_volatile(&mut ctx.stage, stage as i32);
    libc::_exit(127)
}

/// As [`fail`], after taking back the record the child wrote.
///
/// # Safety
/// Only for the child between clone and exec.
unsafe fn undo(ctx: &mut ChildCtx, stage: Stage) -> ! {
    if !ctx.record.is_null() {
        let errno = *libc::__errno_location();
        (*ctx.record).discard();
        *libc::__errno_location() = errno;
    }
    fail(ctx, stage)
}

/// Every signal with a handler goes back to its default, and so does SIGPIPE, which
/// Rust programs ignore but their children should not. Other ignored signals stay
/// ignored, as `exec` would keep them.
///
/// # Safety
/// Only for the child between clone and exec, with every signal blocked.
unsafe fn reset_signal_handlers() {
    for sig in 1..NSIG {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut sa) != 0 {
            continue;
        }
        if sa.sa_sigaction == libc::SIG_DFL
            || (sa.sa_sigaction == libc::SIG_IGN && sig != libc::SIGPIPE)
        {
            continue;
        }
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &dfl, std::ptr::null_mut());
    }
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a NUL byte in {:?}", s.to_string_lossy()),
        )
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A close-on-exec duplicate numbered 3 or above if `fd` is 0, 1 or 2.
fn above_stdio(fd: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    if fd.as_raw_fd() > 2 {
        return Ok(None);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor nobody else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(dup) }))
}

/// The child's half of registration, prepared by the parent.
struct ChildRecordWriter {
    /// `<runs>/` as bytes.
    dir: Vec<u8>,
    /// The record's JSON after the fields the child fills in, without its `{`.
    rest: Vec<u8>,
    /// Scratch space for the JSON and the two paths; never grown in the child.
    json: Vec<u8>,
    tmp_path: Vec<u8>,
    path: Vec<u8>,
    /// A spare record file to overwrite (NUL-terminated), or empty.
    spare: Vec<u8>,
    /// Nanoseconds per clock tick (0: start times always come from `/proc`).
    ns_per_tick: u64,
    /// The boot-time clock tick read in the parent just before the clone.
    tick_before: Option<u64>,
}

impl ChildRecordWriter {
    /// `rest` is [`unborn_record_tail`]: the child writes its own values for the
    /// three leading fields, then `rest`.
    fn new(ledger: &Ledger, rest: Vec<u8>, spare: Option<&Path>) -> Self {
        let mut dir = ledger.runs_dir().as_os_str().as_encoded_bytes().to_vec();
        dir.push(b'/');
        ChildRecordWriter {
            json: Vec::with_capacity(rest.len() + 128),
            tmp_path: Vec::with_capacity(dir.len() + 40),
            path: Vec::with_capacity(dir.len() + 40),
            spare: spare
                .map(|p| {
                    let mut bytes = p.as_os_str().as_bytes().to_vec();
                    bytes.push(0);
                    bytes
                })
                .unwrap_or_default(),
            ns_per_tick: ns_per_tick(),
            tick_before: None,
            dir,
            rest,
        }
    }

    /// Reads the clock the child compares with; call last before the clone.
    fn mark_clone(&mut self) {
        self.tick_before = boottime_tick(self.ns_per_tick);
    }

    /// The spare file this writer was given, if the child left it where it was.
    fn leftover_spare(&self) -> Option<&OsStr> {
        let (_, path) = self.spare.split_last()?;
        Some(OsStr::from_bytes(path))
    }

    /// Runs in the child as `pid`; false (errno set) if the record is not in place.
    /// No allocation: every push stays within capacity.
    fn write(&mut self, pid: i32) -> bool {
        // SAFETY (whole body): raw system calls on buffers this child owns.
        unsafe {
            // The start time is the kernel's CLOCK_BOOTTIME at the clone, in clock
            // ticks. The parent read the clock just before the clone and we read it
            // now; when both fall in the same tick, so does the start. Otherwise (about
            // one spawn in a thousand) `/proc/self/stat` says, at several times the cost.
            let start = match boottime_tick(self.ns_per_tick) {
                Some(now) if Some(now) == self.tick_before => Some(now),
                _ => own_start_time(),
            };
            let Some(start) = start else {
                return false;
            };
            let mut num = [0u8; 20];
            self.json.clear();
            self.json.extend_from_slice(b"{\"pgid\":");
            self.json.extend_from_slice(decimal(pid as u64, &mut num));
            self.json.extend_from_slice(b",\"leader_pid\":");
            self.json.extend_from_slice(decimal(pid as u64, &mut num));
            self.json.extend_from_slice(b",\"leader_start_time\":");
            self.json.extend_from_slice(decimal(start, &mut num));
            self.json.push(b',');
            self.json.extend_from_slice(&self.rest);

            self.tmp_path.clear();
            self.tmp_path.extend_from_slice(&self.dir);
            self.tmp_path.extend_from_slice(b".child.");
            self.tmp_path
                .extend_from_slice(decimal(pid as u64, &mut num));
            self.tmp_path.extend_from_slice(b".tmp\0");
            self.path.clear();
            self.path.extend_from_slice(&self.dir);
            self.path.extend_from_slice(decimal(pid as u64, &mut num));
            self.path.extend_from_slice(b".json\0");

            // A spare is overwritten in place (no new inode); without one, or if it
            // is gone, a fresh temporary file.
            let mut from = self.spare.as_ptr();
            let mut fd = -1;
            if !self.spare.is_empty() {
                fd = libc::open(
                    from.cast(),
                    libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                );
            }
            if fd < 0 {
                from = self.tmp_path.as_ptr();
                fd = libc::open(
                    from.cast(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_TRUNC
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o600,
                );
                if fd < 0 {
                    return false;
                }
            }
            let old_len = libc::lseek(fd, 0, libc::SEEK_END);
            let mut off = 0;
            let mut ok = old_len >= 0;
            while ok && off < self.json.len() {
                let n = libc::pwrite(
                    fd,
                    self.json[off..].as_ptr().cast(),
                    self.json.len() - off,
                    off as libc::off_t,
                );
                if n < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                ok = n > 0;
                off += n.max(0) as usize;
            }
            // Shortening to a non-zero length, unlike truncating to zero, does not
            // make ext4 flush the file on close.
            if ok && old_len > off as libc::off_t {
                ok = libc::ftruncate(fd, off as libc::off_t) == 0;
            }
            libc::close(fd);
            if !ok || libc::rename(from.cast(), self.path.as_ptr().cast()) != 0 {
                libc::unlink(from.cast());
                return false;
            }
        }
        true
    }

    /// Removes the record [`write`](Self::write) put in place (the exec failed).
    fn discard(&self) {
        // SAFETY: `path` was NUL-terminated by `write`.
        unsafe {
            libc::unlink(self.path.as_ptr().cast());
        }
    }
}

/// Formats `n` in decimal into `buf`, returning the digits.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Nanoseconds per `/proc` clock tick, or 0 when the kernel's conversion is not a
/// plain division (a tick count that does not divide a second).
fn ns_per_tick() -> u64 {
    static NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NS.get_or_init(|| {
        // SAFETY: a plain libc query.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        match u64::try_from(hz) {
            Ok(hz) if hz > 0 && 1_000_000_000 % hz == 0 => 1_000_000_000 / hz,
            _ => 0,
        }
    })
}

/// `CLOCK_BOOTTIME` in clock ticks, as `/proc/<pid>/stat` counts start times.
/// Async-signal-safe (the vDSO or one system call).
fn boottime_tick(ns_per_tick: u64) -> Option<u64> {
    if ns_per_tick == 0 {
        return None;
    }
    // SAFETY: clock_gettime into a stack value.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) != 0 {
            return None;
        }
        ts
    };
    let ns = u64::try_from(ts.tv_sec).ok()? * 1_000_000_000 + u64::try_from(ts.tv_nsec).ok()?;
    Some(ns / ns_per_tick)
}

/// Field 22 of `/proc/self/stat`, read with raw system calls.
fn own_start_time() -> Option<u64> {
    let mut buf = [0u8; 1024];
    // SAFETY: raw open/read/close into a stack buffer.
    let len = unsafe {
        let fd = libc::open(
            c"/proc/self/stat".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        if n <= 0 {
            return None;
        }
        n as usize
    };
    parse_start_time(&buf[..len])
}

/// Parses the start time out of a `/proc/<pid>/stat` line (the command name may hold
/// spaces and parentheses, so fields are counted after the last `)`).
fn parse_start_time(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|b| *b == b')')?;
    // After ") " come fields 3.. ; start time is field 22, the 20th of them.
    let field = stat[close + 1..]
        .split(|b| *b == b' ')
        .filter(|f| !f.is_empty())
        .nth(19)?;
    let mut n: u64 = 0;
    for d in field {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner_reaper::Record;

    #[test]
    fn start_time_matches_procfs() {
        let me = std::process::id() as i32;
        let expected = procfs::process::Process::new(me)
            .unwrap()
            .stat()
            .unwrap()
            .starttime;
        assert_eq!(own_start_time(), Some(expected));
        let odd = b"12 (a) b (c) d) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0";
        assert_eq!(parse_start_time(odd), Some(4242));
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(1234567, &mut buf), b"1234567");
    }

    #[test]
    fn child_json_is_a_record() {
        let me = std::process::id() as i32;
        let template = Record::for_group(me, me, vec!["a \"q\"".into()], "/x y".into()).unwrap();
        let rest = unborn_record_tail(&template.argv, &template.cwd).unwrap();
        let json = format!(
            "{{\"pgid\":7,\"leader_pid\":7,\"leader_start_time\":9,{}",
            String::from_utf8(rest).unwrap()
        );
        let parsed: Record = serde_json::from_str(&json).unwrap();
        let expected = Record {
            pgid: 7,
            leader_pid: 7,
            leader_start_time: 9,
            ..template
        };
        assert_eq!(parsed, expected);
    }
}
