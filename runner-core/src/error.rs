//! The error type shared by every backend.

use std::path::PathBuf;

use crate::Backend;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while preparing, running or observing a process.
///
/// A process that runs and exits non-zero is *not* an error: that is an
/// [`ExitStatus`](crate::ExitStatus). An `Err` means we could not run or observe the
/// process at all.
///
/// Causes travel as [`source`](std::error::Error::source)s and are never also
/// written into the message, so a chain is printed once: use [`Error::chain`] (or
/// walk the sources) to show the whole story.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The binary is not on the environment's `PATH` (or the path does not exist).
    #[error("binary `{bin}` not found{}", in_where(.searched))]
    NotFound {
        /// The binary as the caller named it.
        bin: String,
        /// Where we looked (a `PATH` value or a container), if known.
        searched: Option<String>,
    },
    /// The binary exists but cannot be executed (no execute permission, a directory).
    #[error("`{}` is not executable", .path.display())]
    NotExecutable {
        /// The resolved path.
        path: PathBuf,
    },
    /// The working directory does not exist.
    #[error("working directory `{}` does not exist", .0.display())]
    DirNotFound(PathBuf),
    /// The working directory exists but is not a directory.
    #[error("working directory `{}` is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// An environment variable key was rejected.
    #[error("invalid environment variable key {key:?}: {reason}")]
    InvalidEnvKey {
        /// The rejected key.
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An environment variable value was rejected (it contains a NUL byte).
    #[error("invalid value for environment variable `{key}`: {reason}")]
    InvalidEnvValue {
        /// The variable's key.
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// `stdin_pipe` / `stdout_pipe` was called twice on one process.
    #[error("the {0} pipe was already taken")]
    PipeUnavailable(&'static str),
    /// The environment was shut down; it starts no new processes.
    #[error("the environment was shut down")]
    ShutDown,
    /// The operating system refused to start the process.
    #[error("failed to spawn `{bin}`")]
    Spawn {
        /// The binary we tried to start.
        bin: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Registering the process group in the reaper's ledger failed, so the process was
    /// not allowed to run its program. The source is the ledger's own error.
    #[error("failed to register the process group in the ledger")]
    Ledger(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Observing or signalling a process failed.
    #[error("failed to {action}")]
    Io {
        /// What we were doing, as a "failed to ..." fragment.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A backend-specific failure (engine down, evaluation failed, ...); the source is
    /// the backend's own error, which [`Error::downcast_backend`] gives back typed.
    #[error("{backend} backend")]
    Backend {
        /// The backend that failed.
        backend: Backend,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

fn in_where(searched: &Option<String>) -> String {
    match searched {
        Some(s) => format!(" (searched {s})"),
        None => String::new(),
    }
}

impl Error {
    /// Wraps an I/O error with a "failed to ..." fragment.
    pub fn io(action: &'static str, source: std::io::Error) -> Self {
        Error::Io { action, source }
    }

    /// Wraps a backend's own error.
    pub fn backend(
        backend: Backend,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }

    /// A ledger failure.
    pub fn ledger(source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Error::Ledger(source.into())
    }

    /// The backend's own error, typed, when this is a [`Error::Backend`] holding an `E`.
    pub fn downcast_backend<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            Error::Backend { source, .. } => source.downcast_ref::<E>(),
            _ => None,
        }
    }

    /// This error and every cause under it, joined by `: ` (how `runner` prints
    /// errors).
    pub fn chain(&self) -> String {
        chain(self)
    }

    /// The exit code a shell would use for this error when it stops a command from
    /// running: 127 for a missing binary, 126 for one that cannot be executed.
    pub fn shell_exit_code(&self) -> Option<i32> {
        match self {
            Error::NotFound { .. } => Some(127),
            Error::NotExecutable { .. } => Some(126),
            _ => None,
        }
    }
}

/// `error` and every cause under it, joined by `: `. A cause whose text its parent
/// already ends with (a wrapper that does interpolate) is not repeated.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !part.is_empty() && !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_prints_each_cause_once() {
        let e = Error::Spawn {
            bin: "x".into(),
            source: std::io::Error::from_raw_os_error(2),
        };
        assert_eq!(e.to_string(), "failed to spawn `x`");
        assert_eq!(
            e.chain(),
            format!(
                "failed to spawn `x`: {}",
                std::io::Error::from_raw_os_error(2)
            )
        );
        let e = Error::backend(crate::Backend::Nix, "nix is gone");
        assert_eq!(e.chain(), "nix backend: nix is gone");
        assert_eq!(e.downcast_backend::<std::io::Error>().map(|_| ()), None);
    }
}
