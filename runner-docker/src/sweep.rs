//! The container sweep: containers whose owner died, found by label only. It lives
//! beside the labels it reads (`names.rs`); owners are judged by the same identity
//! as the process sweep's (`runner_core::os::OwnerIdentity`).
//!
//! Only containers labelled `runner.owner` are looked at. One is removed when it was
//! created on this host (`runner.host`) by an owner that is dead (`runner.session` is
//! `<pid>-<start time>`: the pid is gone, a zombie, or alive with another start
//! time). A live owner's container is never touched, whatever its state (created
//! and not yet started, or stopped to be restarted). A container of another host, or
//! without the labels, is never touched. An engine that does not answer is reported,
//! not an error.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::names::{hostname, owner_alive, LABEL_HOST, LABEL_OWNER, LABEL_SESSION};
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};

/// What a container sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContainerSweepReport {
    /// Names of the containers removed.
    pub removed: Vec<String>,
    /// Labelled containers left alone (live owner, or another host).
    pub kept: usize,
    /// Why the engine could not be swept, when it could not.
    pub engine_unavailable: Option<String>,
    /// Removals that failed.
    pub errors: Vec<String>,
}

impl fmt::Display for ContainerSweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = &self.engine_unavailable {
            return writeln!(f, "containers not swept: {why}");
        }
        for name in &self.removed {
            writeln!(f, "removed container {name}")?;
        }
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        writeln!(
            f,
            "{} containers removed, {} kept",
            self.removed.len(),
            self.kept
        )
    }
}

/// Why a labelled container should go, or `None` to keep it.
fn verdict(labels: &HashMap<String, String>, host: &str) -> Option<&'static str> {
    if labels.get(LABEL_HOST).map(String::as_str) != Some(host) {
        return None;
    }
    // A live owner's container is never touched, whatever its state: one that is
    // created but not yet started, or stopped to be restarted, is still in use.
    match labels.get(LABEL_SESSION) {
        Some(session) if !owner_alive(session) => Some("owner is dead"),
        _ => None,
    }
}

/// Sweeps the engine `DOCKER_HOST` (or the local socket) points at.
pub async fn reap_stale_containers(deadline: Duration) -> ContainerSweepReport {
    let mut report = ContainerSweepReport::default();
    let sweep = async {
        let docker = match crate::connect().await {
            Ok(d) => d,
            Err(e) => {
                report.engine_unavailable = Some(e.to_string());
                return;
            }
        };
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![LABEL_OWNER.to_string()],
            )])),
            ..Default::default()
        };
        let list = match docker.list_containers(Some(options)).await {
            Ok(l) => l,
            Err(e) => {
                report.engine_unavailable = Some(e.to_string());
                return;
            }
        };
        let host = hostname();
        for c in list {
            let labels = c.labels.clone().unwrap_or_default();
            let name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
                .or(c.id.clone())
                .unwrap_or_default();
            let Some(_why) = verdict(&labels, &host) else {
                report.kept += 1;
                continue;
            };
            let Some(id) = c.id else { continue };
            let force = RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            match docker.remove_container(&id, Some(force)).await {
                Ok(()) => report.removed.push(name),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => report
                    .errors
                    .push(format!("failed to remove container {name}: {e}")),
            }
        }
    };
    if tokio::time::timeout(deadline, sweep).await.is_err() {
        report
            .errors
            .push("the container sweep stopped at its deadline".into());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::LABEL_EPHEMERAL;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn verdicts() {
        let runner_core::os::OwnerIdentity {
            pid: me,
            start_time: start,
        } = runner_core::os::owner_identity().unwrap();
        let live = format!("{me}-{start}");
        let reused = format!("{me}-{}", start + 1);
        let host = "h1";
        let base = |session: &str| labels(&[(LABEL_HOST, host), (LABEL_SESSION, session)]);
        assert_eq!(verdict(&base(&live), host), None);
        assert_eq!(verdict(&base(&reused), host), Some("owner is dead"));
        assert_eq!(verdict(&base("999999999-1"), host), Some("owner is dead"));
        assert_eq!(verdict(&base("garbage"), host), Some("owner is dead"));
        // Another host, or no host label: never touched.
        assert_eq!(verdict(&base(&reused), "h2"), None);
        assert_eq!(verdict(&labels(&[(LABEL_SESSION, "1-1")]), host), None);
        // Ephemeral or not, running or not: a live owner's container stays (it may be
        // created and not yet started); a dead owner's goes.
        let mut eph = base(&live);
        eph.insert(LABEL_EPHEMERAL.into(), "true".into());
        assert_eq!(verdict(&eph, host), None);
        let mut orphan = base(&reused);
        orphan.insert(LABEL_EPHEMERAL.into(), "true".into());
        assert_eq!(verdict(&orphan, host), Some("owner is dead"));
    }
}
