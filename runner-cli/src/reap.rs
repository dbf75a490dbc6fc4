//! `runner reap`: the sweeps, and what they removed (text or `--json`).

use crate::{print_json, print_out};

/// `runner reap --json` (schema 1).
#[derive(Debug, serde::Serialize)]
struct ReapReport {
    schema: u32,
    /// The process-group sweep (runner-reaper's `SweepReport`).
    process_groups: runner_reaper::SweepReport,
    /// The container sweep.
    containers: runner_docker::ContainerSweepReport,
    /// Cache volumes removed (with `--volumes`).
    volumes: Option<runner_docker::ContainerSweepReport>,
}

pub(crate) async fn reap(all: bool, volumes: bool, json: bool) -> i32 {
    let groups = tokio::task::spawn_blocking(|| {
        runner_reaper::reap_stale_process_groups(std::time::Duration::from_secs(30))
    })
    .await
    .unwrap_or_default();
    let containers = runner_docker::reap_containers(std::time::Duration::from_secs(30), all).await;
    let removed = match volumes {
        true => Some(runner_docker::remove_cache_volumes().await),
        false => None,
    };
    let failed = !groups.errors.is_empty()
        || !containers.errors.is_empty()
        || removed.as_ref().is_some_and(|r| !r.errors.is_empty());
    if json {
        print_json(&ReapReport {
            schema: 1,
            process_groups: groups,
            containers,
            volumes: removed,
        });
    } else {
        print_out(&groups.to_string());
        print_out(&containers.to_string());
        if let Some(removed) = &removed {
            print_out(&removed.to_string());
        }
    }
    i32::from(failed)
}
