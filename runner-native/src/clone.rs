//! Linux's spawn path: a process group leader that registers itself before it runs
//! its program.
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
//! and reports a failure (the stage and errno) by writing into the parent's
//! [`ChildCtx`], which the parent reads once it wakes. It runs on its own `mmap`ed
//! stack below a `PROT_NONE` guard page (one per thread, reused), so an overflow
//! faults in the child instead of writing over the parent's heap.
//!
//! Signals: every signal, glibc's internal ones included, is blocked around the clone
//! with the raw `rt_sigprocmask`. The child first leaves the owner's process group
//! (`setpgid`), so job-control signals aimed at the owner's group stop reaching it,
//! then discards the SIGTSTP/SIGTTIN/SIGTTOU that arrived before (setting a signal to
//! "ignore" drops its pending instances) and resets every handled signal to its
//! default, so no handler of the parent runs on the child's side and no pending stop
//! signal can freeze a child that the parent sleeps on. A child that dies before
//! `execve` (a signal pending at the unmask, a fault) is a spawn error, never a
//! started process.
//!
//! Descriptors: the child keeps only 0, 1 and 2 and the descriptors the caller passed
//! on explicitly; everything else, close-on-exec or not (descriptors the owner itself
//! inherited from a shell or an IDE included), is closed with `close_range`.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::libc::{self, c_char, c_int, c_void};
use runner_reaper::{Ledger, PreparedRecord};

use crate::launch::{died_before_exec, CLaunch, Registration, SpawnError, Stage};
use crate::leader::Leader;
use crate::stack::ChildStack;

/// What the child reads and what it writes back, shared through `CLONE_VM`.
struct ChildCtx {
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    dir: *const c_char,
    stdio: [RawFd; 3],
    /// (source, target) of each descriptor passed on; targets sorted.
    pass: *const (RawFd, RawFd),
    pass_len: usize,
    record: *mut PreparedRecord,
    /// The terminal whose foreground group the child's group becomes (-1: none).
    foreground: RawFd,
    /// [`Stage::Died`] until the child reports; written by the child.
    stage: i32,
    errno: i32,
}

/// Spawns `launch` as the leader of a new process group. With a ledger, the group is
/// Spawns `c` as the leader of a new process group, registered (with a ledger)
/// by the child itself before it runs the program.
pub(crate) fn spawn(
    c: &CLaunch,
    argv: &[String],
    dir: &std::path::Path,
    token: Option<&str>,
    ledger: Option<Ledger>,
) -> Result<(Leader, Option<Registration>), SpawnError> {
    let prep = SpawnError::Prepare;
    let mut writer = match &ledger {
        Some(ledger) => {
            // The runs directory is checked on every spawn, as the sweep checks it:
            // one that is not ours (or a symlink) is refused here too, so nothing runs
            // that the sweep could never reap.
            Some(PreparedRecord::prepare(ledger, argv, dir, token).map_err(SpawnError::Ledger)?)
        }
        None => None,
    };
    if let Some(w) = writer.as_mut() {
        w.mark_clone();
    }
    let mut ctx = ChildCtx {
        program: c.program.as_ptr(),
        argv: c.argv_ptrs.as_ptr(),
        envp: c.envp_ptrs.as_ptr(),
        dir: c.dir.as_ptr(),
        stdio: c.stdio,
        pass: c.pass.as_ptr(),
        pass_len: c.pass.len(),
        record: writer
            .as_mut()
            .map_or(std::ptr::null_mut(), |w| w as *mut PreparedRecord),
        foreground: c.foreground,
        stage: Stage::Died as i32,
        errno: 0,
    };

    let (pid, pidfd) = ChildStack::with(|stack| clone_vfork(&mut ctx, stack)).map_err(prep)?;
    // SAFETY: the child has exec'd or exited; nothing else writes `ctx` now. Volatile
    // because the writes happened behind the compiler's back.
    let (stage, errno) = unsafe {
        (
            Stage::from_raw(std::ptr::read_volatile(&ctx.stage)),
            std::ptr::read_volatile(&ctx.errno),
        )
    };
    if stage != Stage::None {
        // The child has exited (status 127, or killed); reap it so no zombie is left,
        // and take back whatever it left in the runs directory.
        let status = crate::leader::reap_blocking(pid);
        if let (Some(w), Some(ledger)) = (writer.as_ref(), &ledger) {
            w.clean_up_after(pid);
            let _ = ledger.remove_record(pid);
        }
        let source = match stage {
            Stage::Died => died_before_exec(status),
            _ if errno == 0 => io::Error::other("the child reported no error number"),
            _ => io::Error::from_raw_os_error(errno),
        };
        return Err(match (stage, &ledger) {
            (Stage::Record, Some(ledger)) => SpawnError::Ledger(runner_reaper::LedgerError::Io {
                action: "write a record into",
                path: ledger.runs_dir().to_path_buf(),
                source,
            }),
            _ => SpawnError::Child { stage, source },
        });
    }
    crate::launch::watch(pid, pidfd, ledger)
}

/// The kernel's signal set: one bit per signal, as `rt_sigprocmask` and `rt_sigaction`
/// take it (64 signals on Linux; 128 on MIPS).
type KernelSigset = [u64; 2];

/// The size the kernel expects for [`KernelSigset`]: one bit per signal up to the
/// platform's highest (`SIGRTMAX`).
fn kernel_sigset_size() -> usize {
    (libc::SIGRTMAX() as usize).div_ceil(64) * 8
}

/// `rt_sigprocmask(SIG_SETMASK)` without glibc's filter (which keeps its internal
/// signals unblocked). Async-signal-safe.
///
/// # Safety
/// Plain system call; `new` and `old` must be valid for the kernel's sigset size.
unsafe fn raw_setmask(new: &KernelSigset, old: *mut KernelSigset) -> c_int {
    libc::syscall(
        libc::SYS_rt_sigprocmask,
        libc::SIG_SETMASK,
        new as *const KernelSigset,
        old,
        kernel_sigset_size(),
    ) as c_int
}

/// `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)` with every signal blocked; returns the
/// child's pid and its pidfd once it has exec'd or failed. Kernels before 5.2 refuse
/// `CLONE_PIDFD`; then the clone is repeated without it and the caller opens a pidfd.
fn clone_vfork(ctx: &mut ChildCtx, stack: &mut ChildStack) -> io::Result<(i32, Option<OwnedFd>)> {
    static NO_CLONE_PIDFD: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);
    let all: KernelSigset = [u64::MAX; 2];
    let mut old: KernelSigset = [0; 2];
    // SAFETY: both sets are valid for the size given.
    if unsafe { raw_setmask(&all, &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let top = stack.top();
    let result;
    loop {
        let with_pidfd = !NO_CLONE_PIDFD.load(std::sync::atomic::Ordering::Relaxed);
        let mut pidfd: c_int = -1;
        let flags = libc::CLONE_VM
            | libc::CLONE_VFORK
            | libc::SIGCHLD
            | if with_pidfd { libc::CLONE_PIDFD } else { 0 };
        // SAFETY: the stack outlives the child's use of it (the parent sleeps until
        // the exec); `child_main` only touches `ctx` and makes async-signal-safe calls;
        // with CLONE_PIDFD the kernel writes the pidfd into `pidfd`.
        let pid = unsafe {
            libc::clone(
                child_main,
                top,
                flags,
                (ctx as *mut ChildCtx).cast(),
                &mut pidfd as *mut c_int,
            )
        };
        if pid < 0 {
            let e = io::Error::last_os_error();
            if with_pidfd && e.raw_os_error() == Some(libc::EINVAL) {
                NO_CLONE_PIDFD.store(true, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            result = Err(e);
        } else {
            // SAFETY: with CLONE_PIDFD, a fresh close-on-exec descriptor we own.
            let fd = (with_pidfd && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
            result = Ok((pid, fd));
        }
        break;
    }
    // SAFETY: restores the mask saved above.
    unsafe { raw_setmask(&old, std::ptr::null_mut()) };
    result
}

/// The child, between clone and exec. Returns only by `_exit`.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `ChildCtx`, which lives until the parent wakes.
    unsafe {
        let ctx = &mut *arg.cast::<ChildCtx>();
        // First leave the owner's process group: from here on, a SIGTSTP (or any
        // signal) aimed at that group no longer reaches this child.
        if libc::setpgid(0, 0) != 0 {
            fail(ctx, Stage::Group);
        }
        // The caller's terminal: our group becomes its foreground before the program
        // can read it (every signal is blocked here, SIGTTOU included, so this
        // background process may). A failure leaves the program in the background.
        if ctx.foreground >= 0 {
            libc::tcsetpgrp(
                ctx.foreground,
                libc::syscall(libc::SYS_getpid) as libc::pid_t,
            );
        }
        if !reset_signal_handlers() {
            fail(ctx, Stage::Signals);
        }
        let writer = ctx.record;
        if !writer.is_null() && !(*writer).write_in_child(libc::syscall(libc::SYS_getpid) as i32) {
            fail(ctx, Stage::Record);
        }
        for (target, source) in ctx.stdio.into_iter().enumerate() {
            if libc::dup2(source, target as c_int) < 0 {
                undo(ctx, Stage::Fds);
            }
        }
        let pass = std::slice::from_raw_parts(ctx.pass, ctx.pass_len);
        for &(source, target) in pass {
            if libc::dup2(source, target) < 0 {
                undo(ctx, Stage::Fds);
            }
        }
        if !close_others(pass) {
            undo(ctx, Stage::Fds);
        }
        if libc::chdir(ctx.dir) != 0 {
            undo(ctx, Stage::Dir);
        }
        let none: KernelSigset = [0; 2];
        raw_setmask(&none, std::ptr::null_mut());
        // A signal that was pending kills the child here, with the stage still
        // `Died`: the parent reports it as a failed spawn.
        std::ptr::write_volatile(&mut ctx.stage, Stage::None as i32);
        libc::execve(ctx.program, ctx.argv, ctx.envp);
        undo(ctx, Stage::Exec)
    }
}

/// Closes every descriptor from 3 up except the targets in `pass` (sorted).
///
/// # Safety
/// Only for the child between clone and exec (its descriptor table is its own).
unsafe fn close_others(pass: &[(RawFd, RawFd)]) -> bool {
    let mut low: u32 = 3;
    for &(_, target) in pass {
        let target = target as u32;
        if target > low && !close_range(low, target - 1) {
            return false;
        }
        low = low.max(target + 1);
    }
    close_range(low, u32::MAX)
}

/// `close_range(low, high)`; on kernels before 5.9, a loop of `close` up to the
/// descriptor limit.
///
/// # Safety
/// Only for the child between clone and exec.
unsafe fn close_range(low: u32, high: u32) -> bool {
    if libc::syscall(libc::SYS_close_range, low, high, 0) == 0 {
        return true;
    }
    if *libc::__errno_location() != libc::ENOSYS {
        return false;
    }
    let mut limit: libc::rlimit = std::mem::zeroed();
    let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
        limit.rlim_cur.min(1 << 20) as u32
    } else {
        1 << 16
    };
    for fd in low..=high.min(max) {
        libc::close(fd as c_int);
    }
    true
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
        (*ctx.record).discard_in_child();
        *libc::__errno_location() = errno;
    }
    fail(ctx, stage)
}

/// Every signal with a handler goes back to its default, and so does SIGPIPE, which
/// Rust programs ignore but their children should not. Other ignored signals stay
/// ignored, as `exec` would keep them. The job-control stops are set to "ignore"
/// first, which discards any that arrived while the child was still in the owner's
/// process group. Raw `rt_sigaction`, so glibc's internal signals are reset too.
///
/// # Safety
/// Only for the child between clone and exec, with every signal blocked.
unsafe fn reset_signal_handlers() -> bool {
    // The kernel's `struct sigaction` starts with the handler on every architecture,
    // and all zeroes means SIG_DFL with no flags and an empty mask. Four words cover
    // its size everywhere.
    type KernelSigaction = [usize; 4];
    let size = kernel_sigset_size();
    let action = |sig: c_int, new: *const KernelSigaction, old: *mut KernelSigaction| {
        libc::syscall(libc::SYS_rt_sigaction, sig, new, old, size) == 0
    };
    let dfl: KernelSigaction = [0; 4];
    let mut ign: KernelSigaction = [0; 4];
    ign[0] = libc::SIG_IGN;
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // One system call sets the new disposition and returns the old one.
        let stop = matches!(sig, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU);
        let mut old: KernelSigaction = [0; 4];
        if !action(sig, if stop { &ign } else { &dfl }, &mut old) {
            // Not a signal this kernel knows.
            continue;
        }
        let was_ignored = old[0] == libc::SIG_IGN;
        let keep_ignored = was_ignored && sig != libc::SIGPIPE;
        let restore = match (stop, keep_ignored) {
            // A stop signal goes from "ignore" (which discarded any pending one) to
            // its default, unless the parent ignores it.
            (true, false) => Some(&dfl),
            // Ignored signals stay ignored, as `exec` would keep them (all signals
            // are blocked, so none arrived while the default was in place).
            (false, true) => Some(&ign),
            _ => None,
        };
        if let Some(restore) = restore {
            if !action(sig, restore, std::ptr::null_mut()) {
                return false;
            }
        }
    }
    true
}
