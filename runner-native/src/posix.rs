//! The portable spawn path: `posix_spawn`, with the record written before the spawn.
//!
//! macOS has no `clone`, and a `vfork` child may not write files, so the child
//! cannot register itself. Instead the parent writes a *pending* record (the owner,
//! argv, cwd and the group's token, no pid yet) before `posix_spawn`, and completes
//! it into `<pgid>.json` with the leader's pid and start time once the spawn
//! returns. An owner that dies between the two leaves the pending record; the sweep
//! finds the group by its token (every process of the group that kept its
//! environment carries it). So no program of ours runs without a record here either.
//!
//! The child is set up by `posix_spawn` itself: `POSIX_SPAWN_SETPGROUP` (a new group,
//! led by the child), `POSIX_SPAWN_SETSIGMASK` (nothing blocked),
//! `POSIX_SPAWN_SETSIGDEF` (SIGPIPE back to its default; handled signals are reset
//! by `posix_spawn` and `exec`), `dup2` actions for 0, 1, 2 and the passed
//! descriptors, every other descriptor closed (`POSIX_SPAWN_CLOEXEC_DEFAULT` on
//! macOS, `closefrom` on glibc), and `chdir` into the working directory.

use std::io;
use std::mem::MaybeUninit;

use nix::libc::{self, c_int};
use runner_reaper::{Ledger, PreparedRecord};

use crate::launch::{CLaunch, Launch, Registration, SpawnError, Stage};
use crate::leader::Leader;

/// Spawns `c` through `posix_spawn` as the leader of a new process group, with the
/// pending record written first (see the module documentation).
pub(crate) fn spawn(
    c: &CLaunch,
    launch: &Launch<'_>,
    ledger: Option<Ledger>,
) -> Result<(Leader, Option<Registration>), SpawnError> {
    let mut record = match (&ledger, launch.token) {
        (Some(ledger), Some(token)) => Some(
            PreparedRecord::write_pending(ledger, launch.argv, launch.dir, token)
                .map_err(SpawnError::Ledger)?,
        ),
        (Some(_), None) => {
            return Err(SpawnError::Prepare(io::Error::other(
                "the portable spawn path registers a group by its token, and none was given",
            )))
        }
        (None, _) => None,
    };
    let pid = match posix_spawn(c) {
        Ok(pid) => pid,
        Err(source) => {
            if let Some(record) = record.as_mut() {
                record.abandon_pending();
            }
            let stage = if launch.dir.is_dir() {
                Stage::Exec
            } else {
                Stage::Dir
            };
            return Err(SpawnError::Child { stage, source });
        }
    };
    if let (Some(record), Some(ledger)) = (record.as_mut(), &ledger) {
        // Our unreaped child: its pid is its own until we reap it. A leader that has
        // already exited may not be readable any more (macOS drops a zombie's
        // details); its record then carries start time 0, which matches nothing.
        let start = runner_core::os::process(pid).map_or(0, |p| p.start_time);
        if let Err(e) = record.complete(pid, start) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            crate::leader::reap_blocking(pid);
            record.abandon_pending();
            let _ = ledger.remove_record(pid);
            return Err(SpawnError::Ledger(e));
        }
    }
    crate::launch::watch(pid, None, ledger)
}

/// `posix_spawn` of `c` as described in the module documentation; the child's pid.
fn posix_spawn(c: &CLaunch) -> io::Result<i32> {
    let mut actions = FileActions::new()?;
    let mut attr = Attr::new()?;
    for (target, &source) in c.stdio.iter().enumerate() {
        actions.dup2(source, target as c_int)?;
    }
    for &(source, target) in &c.pass {
        actions.dup2(source, target)?;
    }
    actions.close_others(c)?;
    actions.chdir(c)?;
    attr.set()?;
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the C strings and their
    // null-terminated arrays live in `c`, the actions and attributes were initialized.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            c.program.as_ptr(),
            actions.as_ptr(),
            attr.as_ptr(),
            c.argv_ptrs.as_ptr().cast(),
            c.envp_ptrs.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(pid)
}

fn check(rc: c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions(Box<MaybeUninit<libc::posix_spawn_file_actions_t>>);

impl FileActions {
    fn new() -> io::Result<FileActions> {
        let mut actions = Box::new(MaybeUninit::uninit());
        // SAFETY: initializes the boxed value in place.
        check(unsafe { libc::posix_spawn_file_actions_init(actions.as_mut_ptr()) })?;
        Ok(FileActions(actions))
    }

    fn as_ptr(&self) -> *const libc::posix_spawn_file_actions_t {
        self.0.as_ptr()
    }

    fn dup2(&mut self, source: c_int, target: c_int) -> io::Result<()> {
        // SAFETY: initialized in `new`.
        check(unsafe {
            libc::posix_spawn_file_actions_adddup2(self.0.as_mut_ptr(), source, target)
        })
    }

    fn close(&mut self, fd: c_int) -> io::Result<()> {
        // SAFETY: initialized in `new`.
        check(unsafe { libc::posix_spawn_file_actions_addclose(self.0.as_mut_ptr(), fd) })
    }

    /// Closes, after the `dup2`s, every descriptor but 0, 1, 2 and the passed targets:
    /// those between 3 and `floor` by number, the rest with `closefrom` (glibc). On
    /// macOS `POSIX_SPAWN_CLOEXEC_DEFAULT` (see [`Attr::set`]) closes them all.
    fn close_others(&mut self, c: &CLaunch) -> io::Result<()> {
        if cfg!(target_os = "macos") {
            return Ok(());
        }
        for fd in 3..c.floor {
            if c.pass.iter().all(|&(_, target)| target != fd) && is_open(fd) {
                self.close(fd)?;
            }
        }
        self.close_from(c.floor)
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn close_from(&mut self, from: c_int) -> io::Result<()> {
        // SAFETY: initialized in `new`.
        check(unsafe { libc::posix_spawn_file_actions_addclosefrom_np(self.0.as_mut_ptr(), from) })
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    fn close_from(&mut self, from: c_int) -> io::Result<()> {
        // Without `closefrom`: every descriptor open now, by number.
        let open: Vec<c_int> = std::fs::read_dir("/dev/fd")?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd >= from && is_open(fd))
            .collect();
        for fd in open {
            self.close(fd)?;
        }
        Ok(())
    }

    fn chdir(&mut self, c: &CLaunch) -> io::Result<()> {
        // SAFETY: initialized in `new`; the path lives in `c`, which outlives the spawn.
        check(unsafe {
            libc::posix_spawn_file_actions_addchdir_np(self.0.as_mut_ptr(), c.dir.as_ptr())
        })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(self.0.as_mut_ptr()) };
    }
}

/// True when `fd` is an open descriptor of this process.
fn is_open(fd: c_int) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// `posix_spawnattr_t`, destroyed on drop.
struct Attr(Box<MaybeUninit<libc::posix_spawnattr_t>>);

impl Attr {
    fn new() -> io::Result<Attr> {
        let mut attr = Box::new(MaybeUninit::uninit());
        // SAFETY: initializes the boxed value in place.
        check(unsafe { libc::posix_spawnattr_init(attr.as_mut_ptr()) })?;
        Ok(Attr(attr))
    }

    fn as_ptr(&self) -> *const libc::posix_spawnattr_t {
        self.0.as_ptr()
    }

    /// A new process group led by the child, no signal blocked, SIGPIPE (which Rust
    /// programs ignore) back to its default; on macOS every descriptor not named by
    /// a file action closed.
    fn set(&mut self) -> io::Result<()> {
        let attr = self.0.as_mut_ptr();
        #[cfg(target_os = "macos")]
        const CLOSE_THE_REST: c_int = libc::POSIX_SPAWN_CLOEXEC_DEFAULT;
        #[cfg(not(target_os = "macos"))]
        const CLOSE_THE_REST: c_int = 0;
        let flags = libc::POSIX_SPAWN_SETPGROUP
            | libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF
            | CLOSE_THE_REST;
        // SAFETY: `attr` was initialized in `new`; the signal sets are initialized
        // by sigemptyset before use.
        unsafe {
            let mut none = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(none.as_mut_ptr());
            let mut default = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(default.as_mut_ptr());
            libc::sigaddset(default.as_mut_ptr(), libc::SIGPIPE);
            check(libc::posix_spawnattr_setpgroup(attr, 0))?;
            check(libc::posix_spawnattr_setsigmask(attr, none.as_ptr()))?;
            check(libc::posix_spawnattr_setsigdefault(attr, default.as_ptr()))?;
            check(libc::posix_spawnattr_setflags(attr, flags as libc::c_short))
        }
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(self.0.as_mut_ptr()) };
    }
}
