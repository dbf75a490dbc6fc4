//! Exit statuses and the signals a caller can send.

use std::fmt;

/// How a process ended. A non-zero code is a status, never an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// The process exited with this code.
    Exited(i32),
    /// The process was terminated by this signal number.
    Signaled(i32),
}

impl ExitStatus {
    /// True for `Exited(0)`.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Exited(0))
    }

    /// The exit code, if the process exited normally.
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited(c) => Some(*c),
            ExitStatus::Signaled(_) => None,
        }
    }

    /// The terminating signal, if the process was killed by one.
    pub fn signal(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited(_) => None,
            ExitStatus::Signaled(s) => Some(*s),
        }
    }

    /// The code a shell reports: the exit code, or 128 + the signal number.
    pub fn shell_code(&self) -> i32 {
        match self {
            ExitStatus::Exited(c) => *c,
            ExitStatus::Signaled(s) => 128 + s,
        }
    }
}

impl From<std::process::ExitStatus> for ExitStatus {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(c), _) => ExitStatus::Exited(c),
            (None, Some(s)) => ExitStatus::Signaled(s),
            // Neither code nor signal: a stopped/continued report, which `wait` never
            // returns. Treat it as an abnormal exit rather than inventing success.
            (None, None) => ExitStatus::Exited(-1),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exit code {c}"),
            ExitStatus::Signaled(s) => match Signal::from_number(*s) {
                Some(sig) => write!(f, "killed by {sig}"),
                None => write!(f, "killed by signal {s}"),
            },
        }
    }
}

/// A signal a caller can deliver to a process (group). Numbers are Linux's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// SIGHUP (1)
    Hangup,
    /// SIGINT (2)
    Interrupt,
    /// SIGQUIT (3)
    Quit,
    /// SIGKILL (9)
    Kill,
    /// SIGUSR1 (10)
    User1,
    /// SIGUSR2 (12)
    User2,
    /// SIGPIPE (13): what a process writing into a pipe nobody reads gets.
    Pipe,
    /// SIGTERM (15)
    Terminate,
    /// SIGCONT (18): a stopped process runs again.
    Continue,
}

impl Signal {
    /// The Linux signal number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Hangup => 1,
            Signal::Interrupt => 2,
            Signal::Quit => 3,
            Signal::Kill => 9,
            Signal::User1 => 10,
            Signal::User2 => 12,
            Signal::Pipe => 13,
            Signal::Terminate => 15,
            Signal::Continue => 18,
        }
    }

    /// The signal with this Linux number, if it is one we expose.
    pub fn from_number(n: i32) -> Option<Signal> {
        Some(match n {
            1 => Signal::Hangup,
            2 => Signal::Interrupt,
            3 => Signal::Quit,
            9 => Signal::Kill,
            10 => Signal::User1,
            12 => Signal::User2,
            13 => Signal::Pipe,
            15 => Signal::Terminate,
            18 => Signal::Continue,
            _ => return None,
        })
    }

    /// True for the signals that ask a process to end (SIGTERM, SIGINT, SIGHUP,
    /// SIGQUIT): a stopped process acts on them only once continued, so every
    /// backend follows them with SIGCONT.
    pub fn asks_to_end(self) -> bool {
        matches!(
            self,
            Signal::Terminate | Signal::Interrupt | Signal::Hangup | Signal::Quit
        )
    }

    /// The conventional name, e.g. `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hangup => "SIGHUP",
            Signal::Interrupt => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Kill => "SIGKILL",
            Signal::User1 => "SIGUSR1",
            Signal::User2 => "SIGUSR2",
            Signal::Pipe => "SIGPIPE",
            Signal::Terminate => "SIGTERM",
            Signal::Continue => "SIGCONT",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_codes() {
        assert_eq!(ExitStatus::Exited(3).shell_code(), 3);
        assert_eq!(ExitStatus::Signaled(9).shell_code(), 137);
        assert!(ExitStatus::Exited(0).success());
        assert!(!ExitStatus::Signaled(15).success());
        assert_eq!(ExitStatus::Signaled(15).to_string(), "killed by SIGTERM");
    }

    #[test]
    fn signal_numbers_round_trip() {
        for s in [
            Signal::Hangup,
            Signal::Interrupt,
            Signal::Quit,
            Signal::Kill,
            Signal::User1,
            Signal::User2,
            Signal::Pipe,
            Signal::Terminate,
            Signal::Continue,
        ] {
            assert_eq!(Signal::from_number(s.number()), Some(s));
        }
        assert_eq!(Signal::from_number(31), None);
    }
}
