//! Spawning a process group leader that is registered before it runs its program.
//!
//! Two paths, one contract (a new process group led by the program, only the
//! descriptors asked for, handled signals and SIGPIPE back to their defaults, a
//! record in the ledger before any program of the group can outlive its owner):
//! - Linux: `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`, the child writes its own
//!   record between clone and exec (`clone.rs`): no program ever runs unregistered.
//! - portable (macOS always; Linux with `RUNNER_SPAWN=portable`): `posix_spawn` with
//!   `POSIX_SPAWN_SETPGROUP`, the parent writes a *pending* record keyed by the
//!   group's token before the spawn and completes it with the pid after
//!   (`posix.rs`); a sweep finds the group of a pending record by that token.
//!
//! Both share what the parent prepares here: C strings for the program, argv, envp
//! and directory, and the descriptors moved out of the way of the numbers the child
//! gets them as.

use nix::libc;
use runner_reaper::Ledger;

use crate::launch::{CLaunch, Launch, Registration, SpawnError};
use crate::leader::Leader;

/// Which spawn path this process uses: the portable one on macOS, and on Linux when
/// `RUNNER_SPAWN=portable` (read once per process; tests and benchmarks drive the
/// portable path on Linux with it).
pub(crate) fn portable() -> bool {
    static PORTABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PORTABLE.get_or_init(|| {
        cfg!(not(target_os = "linux"))
            || std::env::var_os("RUNNER_SPAWN").is_some_and(|v| v == "portable")
    })
}

/// Spawns `launch` as the leader of a new process group. With a ledger, the group is
/// registered before the program can outlive its owner (see the module
/// documentation for the two paths).
pub(crate) fn spawn_group(
    launch: Launch<'_>,
    ledger: Option<Ledger>,
) -> Result<(Leader, Option<Registration>), SpawnError> {
    if sigchld_auto_reaps() {
        return Err(SpawnError::AutoReap);
    }
    let c = CLaunch::new(&launch).map_err(SpawnError::Prepare)?;
    #[cfg(target_os = "linux")]
    if !portable() {
        // The child took the terminal itself before its exec.
        return crate::clone::spawn(&c, launch.argv, launch.dir, launch.token, ledger);
    }
    let spawned = crate::posix::spawn(&c, &launch, ledger)?;
    if let Some(terminal) = launch.foreground {
        let pgid = spawned.0.pid();
        terminal.hand_to(pgid);
        // A child that read the terminal before it was its foreground was stopped.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
    Ok(spawned)
}

/// Starts watching the running leader `pid` (its pidfd when the spawn gave one). A
/// leader that cannot be watched (out of descriptors?) is ended rather than left to
/// a group nobody supervises: it is our unreaped child, so its pid is still its
/// its children itself.
fn sigchld_auto_reaps() -> bool {
    // SAFETY: a query into a zeroed struct.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut sa) != 0 {
            return false;
        }
        sa.sa_sigaction == libc::SIG_IGN || sa.sa_flags & libc::SA_NOCLDWAIT != 0
    }
}
