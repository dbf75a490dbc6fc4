//! Observing a running process through the platform's process table ([`crate::os`]).

use std::time::{Duration, Instant};

use crate::{Error, ProcessState, Result};

/// A snapshot of a running service: its state, CPU and memory, or why we could not
/// read them.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The scheduler state.
    pub state: ProcessState,
    /// CPU use in percent of one core over the sampling window.
    pub cpu_percent: Option<f64>,
    /// Resident set size in bytes.
    pub memory_bytes: Option<u64>,
    /// Why a field could not be read.
    pub error: Option<String>,
}

/// A host process we observe by pid (read from the process table, never `ps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackedProcess {
    pid: i32,
}

impl TrackedProcess {
    /// Tracks `pid`.
    pub fn new(pid: u32) -> Self {
        TrackedProcess { pid: pid as i32 }
    }

    /// The tracked pid.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// The current state; `NotFound` when the pid is gone.
    pub fn state(&self) -> ProcessState {
        match crate::os::process(self.pid) {
            Ok(p) => p.state,
            Err(_) => ProcessState::NotFound,
        }
    }

    /// CPU use in percent of one core, measured over `window` (not a lifetime average).
    pub async fn cpu(&self, window: Duration) -> Result<f64> {
        let first = self.cpu_time()?;
        let started = Instant::now();
        tokio::time::sleep(window).await;
        let second = self.cpu_time()?;
        let elapsed = started.elapsed().as_secs_f64();
        if elapsed <= 0.0 {
            return Ok(0.0);
        }
        Ok(second.saturating_sub(first).as_secs_f64() / elapsed * 100.0)
    }

    /// Resident set size in bytes.
    pub fn memory(&self) -> Result<u64> {
        Ok(self.usage()?.rss_bytes)
    }

    /// State, CPU over `window` and memory in one [`Event`].
    pub async fn event(&self, window: Duration) -> Event {
        let state = self.state();
        let cpu = self.cpu(window).await;
        let mem = self.memory();
        let error = match (&cpu, &mem) {
            (Err(e), _) | (_, Err(e)) => Some(e.to_string()),
            _ => None,
        };
        Event {
            state,
            cpu_percent: cpu.ok(),
            memory_bytes: mem.ok(),
            error,
        }
    }

    fn cpu_time(&self) -> Result<Duration> {
        Ok(self.usage()?.cpu)
    }

    fn usage(&self) -> Result<crate::os::Usage> {
        crate::os::usage(self.pid).map_err(|_| {
            Error::io(
                "read the process's CPU and memory use",
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("process {} not found", self.pid),
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn busy_process_uses_cpu_idle_one_does_not() {
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let mut idle = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let b = TrackedProcess::new(busy.id());
        let i = TrackedProcess::new(idle.id());
        let busy_cpu = b.cpu(Duration::from_millis(300)).await.unwrap();
        let idle_cpu = i.cpu(Duration::from_millis(300)).await.unwrap();
        // Loose bounds: CI runs other tests on the same two cores.
        assert!(busy_cpu > 10.0, "busy loop used {busy_cpu}%");
        assert!(idle_cpu < 3.0, "sleep used {idle_cpu}%");
        assert!(b.memory().unwrap() > 0);
        assert_eq!(b.state(), ProcessState::Running);
        assert_eq!(i.state(), ProcessState::InterruptibleSleep);
        let ev = i.event(Duration::from_millis(10)).await;
        assert!(ev.error.is_none() && ev.memory_bytes.unwrap() > 0);
        busy.kill().unwrap();
        idle.kill().unwrap();
        busy.wait().unwrap();
        idle.wait().unwrap();
        assert_eq!(b.state(), ProcessState::NotFound);
        assert!(b.memory().is_err());
    }
}
