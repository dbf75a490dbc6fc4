//! The container sweep: containers whose owner died. It lives beside the labels and
//! records it reads (`names.rs`); owners are judged by the same identity as the
//! process sweep's (`runner_core::os::OwnerIdentity`).
//!
//! Only containers labelled `runner.owner` are looked at, only those runner created
//! (their id recorded in `names::created`: labels alone are inherited and forgeable),
//! only those created on this host (`runner.host`) whose owner is dead (`runner.session` is
//! `<pid>-<start time>`: the pid is gone, a zombie, or alive with another start
//! time) and that no live process claims (`names::claims`: a later owner that
//! reused it). Of those, ephemeral ones (`runner.ephemeral`) are removed and
//! reusable ones are stopped and kept, for the next run to reuse (a dev database);
//! [`reap_containers`] with `remove_reusable` removes both (`runner reap --all`).
//! A live owner's container is never touched, whatever its state (created and not
//! yet started, or stopped to be restarted). A container of another host, or
//! without the labels, is never touched. An engine that does not answer is
//! reported, not an error.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::names::{
    claims, created, hostname, owner_alive, LABEL_EPHEMERAL, LABEL_HOST, LABEL_OWNER, LABEL_SESSION,
};

/// What a container sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContainerSweepReport {
    /// Names of the containers removed.
    pub removed: Vec<String>,
    /// Names of the reusable containers of dead owners that were stopped and kept.
    pub stopped: Vec<String>,
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
        for name in &self.stopped {
            writeln!(
                f,
                "stopped reusable container {name} (kept; `runner reap --all` removes it)"
            )?;
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

/// What the sweep does to a labelled container.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    Stop,
    Remove,
}

fn verdict(
    labels: &HashMap<String, String>,
    name: &str,
    host: &str,
    remove_reusable: bool,
) -> Verdict {
    if labels.get(LABEL_HOST).map(String::as_str) != Some(host) {
        return Verdict::Keep;
    }
    // A live owner's container is never touched, whatever its state: one that is
    // created but not yet started, or stopped to be restarted, is still in use; so
    // is one a live process reused (its claim).
    let owner_dead = labels
        .get(LABEL_SESSION)
        .is_some_and(|session| !owner_alive(session));
    if !owner_dead || !claims::live_claimants(name).is_empty() {
        return Verdict::Keep;
    }
    if remove_reusable || labels.get(LABEL_EPHEMERAL).map(String::as_str) == Some("true") {
        Verdict::Remove
    } else {
        Verdict::Stop
    }
}

/// Sweeps the engine `DOCKER_HOST` (or the local socket) points at: dead owners'
/// ephemeral containers are removed, their reusable ones stopped and kept.
pub async fn reap_stale_containers(deadline: Duration) -> ContainerSweepReport {
    // Only containers recorded as created here can be removed: with no record there
    // is nothing to ask the engine (what a start-up sweep costs then: one directory
    // listing).
    if !created::any() {
        return ContainerSweepReport::default();
    }
    reap_containers(deadline, false).await
}

/// [`reap_stale_containers`], removing dead owners' reusable containers too when
/// `remove_reusable` (`runner reap --all`).
pub async fn reap_containers(deadline: Duration, remove_reusable: bool) -> ContainerSweepReport {
    let mut report = ContainerSweepReport::default();
    let sweep = async {
        let engine = match crate::connect().await {
            Ok(engine) => engine,
            Err(e) => {
                report.engine_unavailable = Some(e.to_string());
                return;
            }
        };
        let listed = std::time::SystemTime::now();
        let list = match engine.containers_labelled(LABEL_OWNER).await {
            Ok(l) => l,
            Err(e) => {
                report.engine_unavailable = Some(e.to_string());
                return;
            }
        };
        let ids: Vec<String> = list.iter().filter_map(|c| c.id.clone()).collect();
        crate::names::created::prune(engine.endpoint(), &ids, listed);
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
            let Some(id) = c.id else { continue };
            // Only what runner itself created: a label is inherited by a committed
            // image's containers and can be written by anyone.
            let action = if created::is_ours(&id) {
                verdict(&labels, &name, &host, remove_reusable)
            } else {
                Verdict::Keep
            };
            if action == Verdict::Keep {
                report.kept += 1;
                continue;
            }
            if action == Verdict::Stop {
                report.kept += 1;
                let running = c.state.as_ref().is_some_and(|s| {
                    matches!(s, bollard::models::ContainerSummaryStateEnum::RUNNING)
                });
                if running {
                    match engine.stop_container(&id, None).await {
                        Ok(()) => report.stopped.push(name),
                        // Stopped or removed meanwhile (another sweep): done.
                        Err(e) if e.is_missing() || e.is_conflict() || e.is_unchanged() => {}
                        Err(e) => report.errors.push(format!("{name}: {e}")),
                    }
                }
                continue;
            }
            match engine.remove_container(&id).await {
                // Podman answers every concurrent removal of one container with
                // success (Docker answers all but one 409): the sweep whose unlink
                // took the record reports it.
                Ok(()) => {
                    if created::forget(&id) {
                        report.removed.push(name);
                    }
                }
                // Gone, or being removed by another sweep at the same moment: not
                // ours to report, and not an error.
                Err(e) if e.is_missing() || e.is_conflict() => {}
                Err(e) => report.errors.push(format!("{name}: {e}")),
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

/// Removes runner's cache volumes (labelled `runner.cache`) that no container uses
/// (`runner reap --volumes`); their names, and why others were left.
pub async fn remove_cache_volumes() -> ContainerSweepReport {
    let mut report = ContainerSweepReport::default();
    let engine = match crate::connect().await {
        Ok(engine) => engine,
        Err(e) => {
            report.engine_unavailable = Some(runner_core::error_chain(&e));
            return report;
        }
    };
    let volumes = match engine.volumes_labelled(crate::container::LABEL_CACHE).await {
        Ok(v) => v,
        Err(e) => {
            report.engine_unavailable = Some(e.to_string());
            return report;
        }
    };
    for v in volumes {
        match engine.remove_volume(&v.name).await {
            Ok(()) => report.removed.push(format!("volume {}", v.name)),
            // In use by a container: kept.
            Err(e) if e.is_conflict() => report.kept += 1,
            Err(e) => report.errors.push(format!("volume {}: {e}", v.name)),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let n = "runner-verdict-test-unclaimed";
        let base = |session: &str| labels(&[(LABEL_HOST, host), (LABEL_SESSION, session)]);
        assert_eq!(verdict(&base(&live), n, host, false), Verdict::Keep);
        // A dead owner's reusable container is stopped and kept, unless all go.
        assert_eq!(verdict(&base(&reused), n, host, false), Verdict::Stop);
        assert_eq!(verdict(&base(&reused), n, host, true), Verdict::Remove);
        assert_eq!(verdict(&base("999999999-1"), n, host, false), Verdict::Stop);
        assert_eq!(verdict(&base("garbage"), n, host, false), Verdict::Stop);
        // Another host, or no host label: never touched.
        assert_eq!(verdict(&base(&reused), n, "h2", true), Verdict::Keep);
        assert_eq!(
            verdict(&labels(&[(LABEL_SESSION, "1-1")]), n, host, true),
            Verdict::Keep
        );
        // Ephemeral or not, running or not: a live owner's container stays (it may be
        // created and not yet started); a dead owner's ephemeral one goes.
        let mut eph = base(&live);
        eph.insert(LABEL_EPHEMERAL.into(), "true".into());
        assert_eq!(verdict(&eph, n, host, true), Verdict::Keep);
        let mut orphan = base(&reused);
        orphan.insert(LABEL_EPHEMERAL.into(), "true".into());
        assert_eq!(verdict(&orphan, n, host, false), Verdict::Remove);
    }
}
