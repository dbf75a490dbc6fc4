//! A container's resource use from the engine's stats API, computed the way
//! `docker stats` does.

use bollard::models::ContainerStatsResponse;
use serde::Serialize;

/// A container's CPU and memory use at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerStats {
    /// CPU use over the engine's sampling window (about one second), in percent of
    /// one CPU (so up to `100 × online CPUs`).
    pub cpu_percent: f64,
    /// Memory in use, without the reclaimable page cache (as `docker stats` shows).
    pub memory_bytes: u64,
    /// The memory limit (the host's memory when the container has none).
    pub memory_limit_bytes: Option<u64>,
    /// Processes (tasks) in the container.
    pub pids: Option<u64>,
}

impl ContainerStats {
    /// Computes the figures from one stats response (which carries the previous
    /// sample as `precpu_stats`).
    pub(crate) fn from_response(r: &ContainerStatsResponse) -> ContainerStats {
        let total = |s: &Option<bollard::models::ContainerCpuStats>| {
            s.as_ref()
                .and_then(|c| c.cpu_usage.as_ref())
                .and_then(|u| u.total_usage)
                .unwrap_or(0)
        };
        let system = |s: &Option<bollard::models::ContainerCpuStats>| {
            s.as_ref().and_then(|c| c.system_cpu_usage).unwrap_or(0)
        };
        let cpu_delta = total(&r.cpu_stats).saturating_sub(total(&r.precpu_stats));
        let system_delta = system(&r.cpu_stats).saturating_sub(system(&r.precpu_stats));
        let cpus = r
            .cpu_stats
            .as_ref()
            .and_then(|c| {
                c.online_cpus.map(u64::from).or_else(|| {
                    c.cpu_usage
                        .as_ref()
                        .and_then(|u| u.percpu_usage.as_ref())
                        .map(|p| p.len() as u64)
                })
            })
            .unwrap_or(1)
            .max(1);
        let has_previous = system(&r.precpu_stats) > 0;
        let cpu_percent = if has_previous && system_delta > 0 {
            cpu_delta as f64 / system_delta as f64 * cpus as f64 * 100.0
        } else {
            0.0
        };
        let memory = r.memory_stats.as_ref();
        let usage = memory.and_then(|m| m.usage).unwrap_or(0);
        // cgroup v2 reports `inactive_file`, v1 `total_inactive_file`.
        let cache = memory
            .and_then(|m| m.stats.as_ref())
            .and_then(|s| {
                s.get("inactive_file")
                    .or_else(|| s.get("total_inactive_file"))
            })
            .copied()
            .unwrap_or(0);
        ContainerStats {
            cpu_percent,
            memory_bytes: usage.saturating_sub(cache),
            memory_limit_bytes: memory.and_then(|m| m.limit),
            pids: r.pids_stats.as_ref().and_then(|p| p.current),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerCpuStats, ContainerCpuUsage, ContainerMemoryStats, ContainerPidsStats,
    };

    fn cpu(total: u64, system: u64) -> ContainerCpuStats {
        ContainerCpuStats {
            cpu_usage: Some(ContainerCpuUsage {
                total_usage: Some(total),
                ..Default::default()
            }),
            system_cpu_usage: Some(system),
            online_cpus: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn computed_like_docker_stats() {
        let r = ContainerStatsResponse {
            cpu_stats: Some(cpu(1_500, 10_000)),
            precpu_stats: Some(cpu(1_000, 8_000)),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(10_000),
                limit: Some(1 << 30),
                stats: Some([("inactive_file".to_string(), 4_000)].into()),
                ..Default::default()
            }),
            pids_stats: Some(ContainerPidsStats {
                current: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = ContainerStats::from_response(&r);
        // 500 / 2000 of the system's time, on 2 CPUs.
        assert!((s.cpu_percent - 50.0).abs() < 1e-9, "{s:?}");
        assert_eq!(s.memory_bytes, 6_000);
        assert_eq!(s.memory_limit_bytes, Some(1 << 30));
        assert_eq!(s.pids, Some(3));
        // No previous sample: no CPU figure rather than a bogus one.
        let first = ContainerStatsResponse {
            cpu_stats: Some(cpu(1_500, 10_000)),
            ..Default::default()
        };
        assert_eq!(ContainerStats::from_response(&first).cpu_percent, 0.0);
    }
}
