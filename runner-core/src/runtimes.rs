//! Checking that the tools a project needs are installed.

use std::path::PathBuf;
use std::process::Stdio;

use serde::Serialize;

/// A tool a project needs, e.g. `go` with `version` as the version argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRequirement {
    /// A display name ("Go", "Python").
    pub name: String,
    /// The binary to look up on `PATH`.
    pub binary: String,
    /// The arguments that print its version (`--version` when `None`).
    pub version_args: Option<Vec<String>>,
}

impl RuntimeRequirement {
    /// A requirement whose binary answers `--version`.
    pub fn new(name: impl Into<String>, binary: impl Into<String>) -> Self {
        RuntimeRequirement {
            name: name.into(),
            binary: binary.into(),
            version_args: None,
        }
    }
}

/// A runtime that was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundRuntime {
    /// The requirement's name.
    pub name: String,
    /// Where the binary is.
    pub path: PathBuf,
    /// The first non-empty line the version command printed, when it succeeded.
    pub version: Option<String>,
    /// Why the version command failed, when it did (a rustup proxy without a
    /// toolchain, a binary that does not know the flag): its first line, or how it
    /// ended. The binary is there, but may not work.
    pub version_error: Option<String>,
}

/// The result of [`check_for_runtimes`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuntimeReport {
    /// Runtimes present on `PATH`.
    pub found: Vec<FoundRuntime>,
    /// Names of the runtimes that are missing.
    pub missing: Vec<String>,
}

impl RuntimeReport {
    /// True when nothing is missing.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// How long a version command may take.
const VERSION_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// The first non-empty line of `text`, trimmed.
fn first_line(text: &[u8]) -> Option<String> {
    String::from_utf8_lossy(text)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// Looks every requirement up on `PATH` and asks the found ones for their version:
/// a version only from a command that succeeded, else why it failed.
pub async fn check_for_runtimes(requirements: &[RuntimeRequirement]) -> RuntimeReport {
    let mut report = RuntimeReport::default();
    for req in requirements {
        match which::which(&req.binary) {
            Ok(path) => {
                let args = req
                    .version_args
                    .clone()
                    .unwrap_or_else(|| vec!["--version".to_string()]);
                let probe = tokio::process::Command::new(&path)
                    .args(&args)
                    .stdin(Stdio::null())
                    .kill_on_drop(true)
                    .output();
                let (version, version_error) =
                    match tokio::time::timeout(VERSION_DEADLINE, probe).await {
                        Ok(Ok(out)) => {
                            let first = first_line(&[out.stdout, out.stderr].concat());
                            if out.status.success() {
                                (first, None)
                            } else {
                                let how = crate::ExitStatus::from(out.status);
                                let why = first
                                    .map_or_else(|| how.to_string(), |l| format!("{how}: {l}"));
                                (None, Some(why))
                            }
                        }
                        Ok(Err(e)) => (None, Some(e.to_string())),
                        Err(_) => (
                            None,
                            Some(format!("no answer within {} s", VERSION_DEADLINE.as_secs())),
                        ),
                    };
                report.found.push(FoundRuntime {
                    name: req.name.clone(),
                    path,
                    version,
                    version_error,
                });
            }
            Err(_) => report.missing.push(req.name.clone()),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_found_and_missing() {
        let report = check_for_runtimes(&[
            RuntimeRequirement::new("Shell", "sh"),
            RuntimeRequirement {
                name: "Coreutils".into(),
                binary: "ls".into(),
                version_args: Some(vec!["--version".into()]),
            },
            RuntimeRequirement::new("Nothing", "definitely-not-a-runtime-xyz"),
        ])
        .await;
        assert_eq!(report.missing, vec!["Nothing".to_string()]);
        assert_eq!(report.found.len(), 2);
        let ls = &report.found[1];
        assert!(ls.version.as_deref().unwrap().contains("ls"), "{ls:?}");
        assert!(!report.is_complete());
    }
}
