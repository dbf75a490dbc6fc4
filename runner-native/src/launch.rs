//! What both spawn paths share (`clone.rs` and `posix.rs`, chosen by `spawn.rs`):
//! the launch request, the C strings for the program, argv, envp and directory, the
//! descriptors moved out of the way of the numbers the child gets them as, the
//! failure stages, the leader's watch and its ledger registration.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::libc::{self, c_char};
use runner_reaper::Ledger;

use crate::leader::Leader;

/// Where in the child a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
// The portable path reports only `Exec` and `Dir`; the others are the clone child's.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) enum Stage {
    /// The child exec'd its program.
    None = 0,
    /// `setpgid`: a new process group.
    Group = 1,
    /// Writing the ledger record.
    Record = 2,
    /// Setting up descriptors (`dup2`, `close_range`).
    Fds = 3,
    /// `chdir` into the working directory.
    Dir = 4,
    /// `execve` itself.
    Exec = 5,
    /// Resetting signal dispositions.
    Signals = 6,
    /// The parent's mark: still there when the parent wakes, the child died before
    /// it could exec or report (a signal, a fault).
    Died = 7,
}

impl Stage {
    #[cfg(target_os = "linux")]
    pub(crate) fn from_raw(raw: i32) -> Stage {
        match raw {
            0 => Stage::None,
            1 => Stage::Group,
            2 => Stage::Record,
            3 => Stage::Fds,
            4 => Stage::Dir,
            5 => Stage::Exec,
            6 => Stage::Signals,
            _ => Stage::Died,
        }
    }

    /// What the child was doing, as a "failed to ..." fragment.
    pub(crate) fn action(self) -> &'static str {
        match self {
            Stage::None => "start the program",
            Stage::Group => "start a new process group",
            Stage::Record => "write the ledger record",
            Stage::Fds => "set up the child's descriptors",
            Stage::Dir => "enter the working directory",
            Stage::Exec => "execute the program",
            Stage::Signals => "reset the child's signal handlers",
            Stage::Died => "start the program: the child died before exec",
        }
    }
}

/// Why a spawn failed.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// The parent could not prepare or spawn (no memory, a NUL byte, no descriptors).
    Prepare(io::Error),
    /// The child failed at `stage` with `source` (for [`Stage::Died`], how it died).
    Child { stage: Stage, source: io::Error },
    /// The ledger record could not be written; the program never ran.
    Ledger(runner_reaper::LedgerError),
    /// This process ignores SIGCHLD (or set `SA_NOCLDWAIT`): the kernel would reap
    /// our children on its own, so no exit status could be read and no exited leader
    /// would pin its process group id.
    AutoReap,
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
    /// `argv[0]` (the name the caller used) and the arguments, as the program gets
    /// them.
    pub(crate) exec_argv: &'a [std::ffi::OsString],
    /// The same as text, for the ledger record (non-UTF-8 bytes replaced).
    pub(crate) argv: &'a [String],
    /// The whole environment.
    pub(crate) env: &'a runner_core::OsEnv,
    /// The working directory.
    pub(crate) dir: &'a Path,
    /// The child's stdin, stdout and stderr.
    pub(crate) stdio: [BorrowedFd<'a>; 3],
    /// Descriptors passed on: (source, the number the child gets it as). Targets are
    /// 3 and above, sorted and unique.
    pub(crate) pass: &'a [(BorrowedFd<'a>, RawFd)],
    /// The group's token (in `env` too), for the record.
    pub(crate) token: Option<&'a str>,
    /// A terminal whose foreground group the new group becomes.
    pub(crate) foreground: Option<&'a crate::terminal::Terminal>,
}

/// What both paths hand the child, prepared by the parent: C strings (and the
/// null-terminated pointer arrays over them) and the descriptors, moved above every
/// number the child gets one as.
pub(crate) struct CLaunch {
    pub(crate) program: CString,
    pub(crate) dir: CString,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    pub(crate) argv_ptrs: Vec<*const c_char>,
    pub(crate) envp_ptrs: Vec<*const c_char>,
    /// Duplicates made to move a source above `floor`; closed after the spawn.
    _moved: Vec<Option<OwnedFd>>,
    /// The sources of the child's 0, 1 and 2.
    pub(crate) stdio: [RawFd; 3],
    /// (source, target) of each descriptor passed on; targets sorted.
    pub(crate) pass: Vec<(RawFd, RawFd)>,
    /// One above the highest number the child gets a descriptor as (3 at least).
    pub(crate) floor: RawFd,
    /// The terminal whose foreground group the child's group becomes (-1: none);
    /// read by the `clone` child (the portable path hands it over from the parent).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) foreground: RawFd,
}

impl CLaunch {
    pub(crate) fn new(launch: &Launch<'_>) -> io::Result<CLaunch> {
        let program = cstring(launch.program.as_os_str())?;
        let dir = cstring(launch.dir.as_os_str())?;
        let argv = launch
            .exec_argv
            .iter()
            .map(|a| cstring(a))
            .collect::<io::Result<Vec<_>>>()?;
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
            .collect::<io::Result<Vec<_>>>()?;
        let argv_ptrs = null_terminated(&argv);
        let envp_ptrs = null_terminated(&envp);
        // A `dup2` onto 0, 1, 2 or a passed descriptor's number must not clobber a
        // source that is itself one of them: sources below `floor` move above it
        // first.
        let floor = launch
            .pass
            .iter()
            .map(|(_, target)| target + 1)
            .max()
            .unwrap_or(3)
            .max(3);
        let all_sources: Vec<BorrowedFd<'_>> = launch
            .stdio
            .iter()
            .copied()
            .chain(launch.pass.iter().map(|(fd, _)| *fd))
            .collect();
        let moved = all_sources
            .iter()
            .map(|fd| above(*fd, floor))
            .collect::<io::Result<Vec<_>>>()?;
        let sources: Vec<RawFd> = moved
            .iter()
            .zip(&all_sources)
            .map(|(dup, fd)| dup.as_ref().map_or(fd.as_raw_fd(), |d| d.as_raw_fd()))
            .collect();
        let pass: Vec<(RawFd, RawFd)> = sources[3..]
            .iter()
            .zip(launch.pass)
            .map(|(src, (_, target))| (*src, *target))
            .collect();
        Ok(CLaunch {
            program,
            dir,
            _argv: argv,
            _envp: envp,
            argv_ptrs,
            envp_ptrs,
            _moved: moved,
            stdio: [sources[0], sources[1], sources[2]],
            pass,
            floor,
            foreground: launch.foreground.map_or(-1, |t| t.fd()),
        })
    }
}
/// group's id.
pub(crate) fn watch(
    pid: i32,
    pidfd: Option<OwnedFd>,
    ledger: Option<Ledger>,
) -> Result<(Leader, Option<Registration>), SpawnError> {
    match Leader::new(pid, pidfd) {
        Ok(leader) => Ok((
            leader,
            ledger.map(|ledger| Registration { ledger, pgid: pid }),
        )),
        Err(e) => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            crate::leader::reap_blocking(pid);
            if let Some(ledger) = &ledger {
                let _ = ledger.remove_record(pid);
            }
            Err(SpawnError::Prepare(e))
        }
    }
}

/// How a child that died before exec ended, from its raw wait status.
#[cfg(target_os = "linux")]
pub(crate) fn died_before_exec(status: Option<libc::c_int>) -> io::Error {
    let how = match status {
        Some(s) if libc::WIFSIGNALED(s) => format!("killed by signal {}", libc::WTERMSIG(s)),
        Some(s) if libc::WIFEXITED(s) => format!("exited with {}", libc::WEXITSTATUS(s)),
        _ => "its status could not be read".to_string(),
    };
    io::Error::other(format!(
        "the child died before it could run the program ({how})"
    ))
}

/// True when this process ignores SIGCHLD or set `SA_NOCLDWAIT`, so the kernel reaps
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

/// A close-on-exec duplicate numbered `floor` or above if `fd` is below `floor`.
fn above(fd: BorrowedFd<'_>, floor: RawFd) -> io::Result<Option<OwnedFd>> {
    if fd.as_raw_fd() >= floor {
        return Ok(None);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor nobody else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(dup) }))
}
