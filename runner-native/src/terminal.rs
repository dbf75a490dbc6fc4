//! Handing a process the caller's terminal ([`Proc::with_terminal`]), as a shell
//! does: the child makes its new group the terminal's foreground group before it
//! runs its program (`clone` path) or the parent does right after the spawn
//! (portable path, then a SIGCONT in case the child already read the terminal and
//! was stopped for it); when the process ends, [`Terminal::take_back`] makes the
//! caller's group the foreground again and restores the modes saved at the start.
//! A caller doing job control (`runner run`'s Ctrl-Z) uses the same two moves.
//!
//! [`Proc::with_terminal`]: runner_core::Proc::with_terminal

use std::os::fd::RawFd;

use nix::libc;

/// The caller's terminal while a process has it.
#[derive(Debug)]
pub struct Terminal {
    fd: RawFd,
    modes: Option<libc::termios>,
}

impl Terminal {
    /// The caller's terminal when its stdin is one (`None` otherwise), with its
    /// modes saved.
    pub fn of_stdin() -> Option<Terminal> {
        let fd = 0;
        // SAFETY: isatty and tcgetattr read the descriptor's state into our struct.
        unsafe {
            if libc::isatty(fd) != 1 {
                return None;
            }
            let mut modes: libc::termios = std::mem::zeroed();
            let saved = (libc::tcgetattr(fd, &mut modes) == 0).then_some(modes);
            Some(Terminal { fd, modes: saved })
        }
    }

    /// The descriptor the child makes its foreground through.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// Makes group `pgid` the terminal's foreground group from the parent.
    pub fn hand_to(&self, pgid: i32) {
        with_sigttou_blocked(|| {
            // SAFETY: an ioctl on our own descriptor.
            unsafe { libc::tcsetpgrp(self.fd, pgid) };
        });
    }

    /// Makes the caller's group the foreground again and restores the saved modes.
    pub fn take_back(&self) {
        with_sigttou_blocked(|| {
            // SAFETY: ioctls on our own descriptor, with a termios tcgetattr filled.
            unsafe {
                libc::tcsetpgrp(self.fd, libc::getpgrp());
                if let Some(modes) = &self.modes {
                    libc::tcsetattr(self.fd, libc::TCSADRAIN, modes);
                }
            }
        });
    }
}

/// Runs `f` with SIGTTOU blocked on this thread: a process outside the terminal's
/// foreground group may then change the foreground group and the modes instead of
/// being stopped for it.
fn with_sigttou_blocked(f: impl FnOnce()) {
    let mut ttou = nix::sys::signal::SigSet::empty();
    ttou.add(nix::sys::signal::Signal::SIGTTOU);
    let old = ttou.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK);
    f();
    if let Ok(old) = old {
        let _ = old.thread_set_mask();
    }
}
