//! Process states as the kernel reports them.

use std::fmt;

/// The scheduler state of a process, parsed from the state letter in
/// `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProcessState {
    /// A letter we do not know.
    #[default]
    Unknown,
    /// No such process.
    NotFound,
    /// `R`: running or runnable.
    Running,
    /// `S`: sleeping, interruptible.
    InterruptibleSleep,
    /// `D`: sleeping, uninterruptible (usually I/O).
    UninterruptibleSleep,
    /// `T`: stopped by a job-control signal.
    Stopped,
    /// `Z`: exited, not yet reaped by its parent.
    Zombie,
    /// `X` / `x`: dead.
    Dead,
    /// `t`: stopped by a debugger.
    TracingStop,
    /// `I`: idle kernel thread.
    Idle,
    /// `P`: parked.
    Parked,
    /// `W`: waking (or paging on very old kernels).
    Waking,
}

impl ProcessState {
    /// Parses the state letter of `/proc/<pid>/stat`.
    pub fn from_letter(c: char) -> ProcessState {
        match c {
            'R' => ProcessState::Running,
            'S' => ProcessState::InterruptibleSleep,
            'D' => ProcessState::UninterruptibleSleep,
            'T' => ProcessState::Stopped,
            'Z' => ProcessState::Zombie,
            'X' | 'x' => ProcessState::Dead,
            't' => ProcessState::TracingStop,
            'I' => ProcessState::Idle,
            'P' => ProcessState::Parked,
            'W' => ProcessState::Waking,
            _ => ProcessState::Unknown,
        }
    }

    /// True while the process exists and has not exited (not a zombie, not dead).
    pub fn is_alive(&self) -> bool {
        !matches!(
            self,
            ProcessState::NotFound | ProcessState::Zombie | ProcessState::Dead
        )
    }
}

impl fmt::Display for ProcessState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProcessState::Unknown => "unknown",
            ProcessState::NotFound => "not found",
            ProcessState::Running => "running",
            ProcessState::InterruptibleSleep => "sleeping",
            ProcessState::UninterruptibleSleep => "disk sleep",
            ProcessState::Stopped => "stopped",
            ProcessState::Zombie => "zombie",
            ProcessState::Dead => "dead",
            ProcessState::TracingStop => "tracing stop",
            ProcessState::Idle => "idle",
            ProcessState::Parked => "parked",
            ProcessState::Waking => "waking",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_letter_maps() {
        let cases = [
            ('R', ProcessState::Running, "running"),
            ('S', ProcessState::InterruptibleSleep, "sleeping"),
            ('D', ProcessState::UninterruptibleSleep, "disk sleep"),
            ('T', ProcessState::Stopped, "stopped"),
            ('Z', ProcessState::Zombie, "zombie"),
            ('X', ProcessState::Dead, "dead"),
            ('x', ProcessState::Dead, "dead"),
            ('t', ProcessState::TracingStop, "tracing stop"),
            ('I', ProcessState::Idle, "idle"),
            ('P', ProcessState::Parked, "parked"),
            ('W', ProcessState::Waking, "waking"),
            ('?', ProcessState::Unknown, "unknown"),
        ];
        for (letter, state, text) in cases {
            assert_eq!(ProcessState::from_letter(letter), state, "{letter}");
            assert_eq!(state.to_string(), text);
        }
        assert_eq!(ProcessState::NotFound.to_string(), "not found");
        assert!(!ProcessState::Zombie.is_alive());
        assert!(ProcessState::InterruptibleSleep.is_alive());
    }
}
