//! Why a process did not start: the one classification of a failed spawn, from the
//! step that failed and the system's error, shared by every backend that spawns
//! (native and Nix in the child of a `clone` or `posix_spawn`, Docker in its
//! in-container helper), so the same failure is the same typed [`Error`] everywhere.

use std::path::Path;

use crate::Error;

/// The step of a spawn that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartStage {
    /// Entering the working directory (`chdir`).
    Dir,
    /// Executing the program (`execve`).
    Program,
    /// Another step, as a "failed to ..." fragment: a new process group, the ledger
    /// record, the descriptors, a pseudo-terminal, signal dispositions.
    Other(&'static str),
}

/// What was being started when a spawn failed.
#[derive(Debug, Clone, Copy)]
pub struct StartFailure<'a> {
    /// The program as the caller named it.
    pub bin: &'a str,
    /// The path it was executed as (after the search on `PATH`).
    pub program: &'a Path,
    /// Where it was looked for, for a program that is not there.
    pub searched: &'a str,
    /// The working directory.
    pub dir: &'a Path,
}

impl StartFailure<'_> {
    /// The typed error for a failure at `stage` with the system's `source`: a missing
    /// program is [`Error::NotFound`], one that cannot be executed
    /// [`Error::NotExecutable`], a missing directory [`Error::DirNotFound`] or
    /// [`Error::NotADirectory`]; anything else an [`Error::Spawn`] naming the step
    /// over the system's error.
    pub fn error(&self, stage: StartStage, source: std::io::Error) -> Error {
        let errno = source.raw_os_error();
        let spawn = |action: String, source: std::io::Error| Error::Spawn {
            bin: self.bin.to_string(),
            source: std::io::Error::new(source.kind(), StageError { action, source }),
        };
        match stage {
            StartStage::Program => match errno {
                Some(libc::ENOENT) => Error::NotFound {
                    bin: self.bin.to_string(),
                    searched: Some(self.searched.to_string()),
                },
                Some(libc::EACCES | libc::ENOEXEC | libc::EISDIR) => Error::NotExecutable {
                    path: self.program.to_path_buf(),
                },
                _ => Error::Spawn {
                    bin: self.bin.to_string(),
                    source,
                },
            },
            StartStage::Dir => match errno {
                Some(libc::ENOENT) => Error::DirNotFound(self.dir.to_path_buf()),
                Some(libc::ENOTDIR) => Error::NotADirectory(self.dir.to_path_buf()),
                _ => spawn(
                    format!("enter the working directory `{}`", self.dir.display()),
                    source,
                ),
            },
            StartStage::Other(action) => spawn(action.to_string(), source),
        }
    }
}

/// What the child was doing when it failed, over the system's error.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action}")]
struct StageError {
    action: String,
    #[source]
    source: std::io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_and_errno_has_its_typed_error() {
        let f = StartFailure {
            bin: "tool",
            program: Path::new("/bin/tool"),
            searched: "PATH",
            dir: Path::new("/work"),
        };
        let os = std::io::Error::from_raw_os_error;
        assert!(matches!(
            f.error(StartStage::Program, os(libc::ENOENT)),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            f.error(StartStage::Program, os(libc::EACCES)),
            Error::NotExecutable { .. }
        ));
        assert!(matches!(
            f.error(StartStage::Dir, os(libc::ENOENT)),
            Error::DirNotFound(_)
        ));
        assert!(matches!(
            f.error(StartStage::Dir, os(libc::ENOTDIR)),
            Error::NotADirectory(_)
        ));
        // A pseudo-terminal that cannot be opened is not a missing program.
        let e = f.error(
            StartStage::Other("open a pseudo-terminal"),
            os(libc::ENOENT),
        );
        assert!(matches!(e, Error::Spawn { .. }), "{e:?}");
        assert!(crate::error_chain(&e).contains("failed to open a pseudo-terminal"));
    }
}
