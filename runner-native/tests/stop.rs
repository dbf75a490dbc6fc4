//! Native backend: stop behaviour, tested from the outside with real processes.
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{pid_alive, read_pid, within, Fixture};
use runner_core::{Error, ExitStatus, Proc, RunnerEnvironment};
use tokio::io::AsyncBufReadExt;

async fn start_ready(fx: &Fixture, script: &str) -> Box<dyn Proc> {
    let mut p = fx.env.new_process("sh", &["-c", script]).await.unwrap();
    let out = p.stdout_pipe().unwrap();
    p.start().await.unwrap();
    let mut lines = tokio::io::BufReader::new(out).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    p
}

#[tokio::test]
async fn stop_terminates_a_cooperative_process_with_sigterm() {
    let fx = Fixture::new();
    let p = start_ready(&fx, "echo ready; exec sleep 30").await;
    within(10, p.stop()).await.unwrap();
    assert_eq!(p.try_status(), Some(ExitStatus::Signaled(15)));
    assert!(!p.is_running().await.unwrap());
    assert!(fx.records().is_empty());
}

#[tokio::test]
async fn stop_kills_a_process_that_ignores_sigterm_after_the_grace() {
    let fx = Fixture::new();
    let mut p = fx
        .env
        .new_process(
            "sh",
            &["-c", "trap '' TERM; echo ready; while :; do sleep 1; done"],
        )
        .await
        .unwrap();
    p.with_stop_grace(Duration::from_millis(300));
    let out = p.stdout_pipe().unwrap();
    p.start().await.unwrap();
    let mut lines = tokio::io::BufReader::new(out).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
    let began = Instant::now();
    within(10, p.stop()).await.unwrap();
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert_eq!(p.try_status(), Some(ExitStatus::Signaled(9)));
}

#[tokio::test]
async fn stop_from_one_task_while_others_wait() {
    let fx = Fixture::new();
    let p: Arc<dyn Proc> = Arc::from(start_ready(&fx, "echo ready; exec sleep 30").await);
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.wait().await.unwrap() })
        })
        .collect();
    let stoppers: Vec<_> = (0..3)
        .map(|_| {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.stop().await.unwrap() })
        })
        .collect();
    for s in stoppers {
        within(10, s).await.unwrap();
    }
    for w in waiters {
        assert_eq!(within(10, w).await.unwrap(), ExitStatus::Signaled(15));
    }
}

#[tokio::test]
async fn what_the_leader_leaves_in_its_group_is_ended() {
    let fx = Fixture::new();
    let pidfile = fx.work().join("bg.pid");
    let script = format!("sleep 30 & echo $! > {}", pidfile.display());
    let (mut p, _) = fx.sh(&script).await;
    assert!(within(20, p.run()).await.unwrap().success());
    let bg = read_pid(&pidfile);
    assert!(
        !pid_alive(bg),
        "background child {bg} outlived its group leader"
    );
    assert!(fx.records().is_empty());
}

#[tokio::test]
async fn wait_on_keeps_the_run_alive_for_the_named_process() {
    let fx = Fixture::new();
    let worker = fx.work().join("worker");
    std::fs::write(&worker, "#!/bin/sh\nsleep 0.3\necho finished\n").unwrap();
    std::fs::set_permissions(&worker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Without wait_on, the launcher's exit ends the worker before it finishes.
    let (mut p, cap) = fx.sh("./worker & exit 0").await;
    p.run().await.unwrap();
    assert_eq!(cap.stdout_string(), "");
    let (mut p, cap) = fx.sh("./worker & exit 0").await;
    p.wait_on("worker");
    assert!(within(20, p.run()).await.unwrap().success());
    assert_eq!(cap.stdout_string(), "finished\n");
}

#[tokio::test]
async fn shutdown_stops_everything_and_refuses_new_processes() {
    let fx = Fixture::new();
    let a = start_ready(&fx, "echo ready; exec sleep 30").await;
    let pid_a = a.pid().unwrap() as i32;
    // A process whose handle the caller dropped is still the environment's to stop.
    let b = start_ready(&fx, "echo ready; exec sleep 30").await;
    let pid_b = b.pid().unwrap() as i32;
    drop(b);
    assert_eq!(fx.records().len(), 2);
    within(20, fx.env.shutdown()).await.unwrap();
    assert!(!pid_alive(pid_a) && !pid_alive(pid_b));
    assert_eq!(a.try_status(), Some(ExitStatus::Signaled(15)));
    within(5, fx.env.shutdown()).await.unwrap();
    assert!(matches!(
        fx.env.new_process("true", &[]).await,
        Err(Error::ShutDown)
    ));
    // A supervisor retires the record before it publishes the status that shutdown
    // waits for: nothing is left by the time shutdown returns.
    assert!(fx.records().is_empty(), "{:?}", fx.records());
}

#[tokio::test]
async fn environment_stop_allows_restart() {
    let fx = Fixture::new();
    let a = start_ready(&fx, "echo ready; exec sleep 30").await;
    within(20, fx.env.stop()).await.unwrap();
    assert!(!a.is_running().await.unwrap());
    let mut again = fx.env.new_process("true", &[]).await.unwrap();
    assert!(again.run().await.unwrap().success());
}
