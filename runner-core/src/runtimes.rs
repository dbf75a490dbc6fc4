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
    /// The first non-empty line the version command printed, if it printed one.
    pub version: Option<String>,
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

/// Looks every requirement up on `PATH` and asks the found ones for their version.
pub async fn check_for_runtimes(requirements: &[RuntimeRequirement]) -> RuntimeReport {
    let mut report = RuntimeReport::default();
    for req in requirements {
        match which::which(&req.binary) {
            Ok(path) => {
                let args = req
                    .version_args
                    .clone()
                    .unwrap_or_else(|| vec!["--version".to_string()]);
                let version = tokio::process::Command::new(&path)
                    .args(&args)
                    .stdin(Stdio::null())
                    .kill_on_drop(true)
                    .output()
                    .await
                    .ok()
                    .and_then(|out| {
                        let text = [out.stdout, out.stderr].concat();
                        String::from_utf8_lossy(&text)
                            .lines()
                            .map(str::trim)
                            .find(|l| !l.is_empty())
                            .map(str::to_string)
                    });
                report.found.push(FoundRuntime {
                    name: req.name.clone(),
                    path,
                    version,
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
