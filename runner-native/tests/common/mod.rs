//! Helpers shared by the native integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runner_core::{CaptureSink, Proc, RunnerEnvironment};
use runner_native::NativeEnvironment;
use tempfile::TempDir;

/// A temp dir to work in, a ledger inside it and an environment using both.
pub struct Fixture {
    pub tmp: TempDir,
    pub env: NativeEnvironment,
}

impl Fixture {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("work")).unwrap();
        let mut env = NativeEnvironment::new(tmp.path().join("work")).unwrap();
        env.with_state_dir(tmp.path().join("state"));
        Fixture { tmp, env }
    }

    pub fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }

    pub fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// The records in the ledger (not the lock, not spare files).
    pub fn records(&self) -> Vec<String> {
        self.files()
            .into_iter()
            .filter(|n| !n.starts_with('.') && n.ends_with(".json"))
            .collect()
    }

    /// Every file in the runs directory.
    pub fn files(&self) -> Vec<String> {
        match std::fs::read_dir(self.state().join("runs")) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// `sh -c script` with its output captured.
    pub async fn sh(&self, script: &str) -> (Box<dyn Proc>, Arc<CaptureSink>) {
        let mut p = self.env.new_process("sh", &["-c", script]).await.unwrap();
        let cap = CaptureSink::new();
        p.with_output(cap.clone());
        (p, cap)
    }
}

/// Fails the test instead of hanging it.
pub async fn within<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("timed out: the operation hung")
}

/// Returns once process `pid` has exited: woken by its exit descriptor (a pidfd), not
/// by looking again and again.
pub async fn exited(pid: i32) {
    let Ok(fd) = runner_core::os::exit_fd(pid) else {
        return; // already gone
    };
    // SAFETY: `fd` is ours alone and stays open while it is registered.
    let fd = unsafe { tokio::io::unix::AsyncFd::register(fd) }.unwrap();
    let _ = fd.readable().await.unwrap();
}

pub fn pid_alive(pid: i32) -> bool {
    runner_reaper::ledger::process_running(pid)
}

pub fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// True when the tests drive the portable spawn path (`RUNNER_SPAWN=portable`).
#[allow(dead_code)]
pub fn portable_spawn() -> bool {
    std::env::var_os("RUNNER_SPAWN").is_some_and(|v| v == "portable")
}
