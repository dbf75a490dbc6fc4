//! Native backend: stop behaviour, tested from the outside with real processes.
mod common;

use std::time::{Duration, Instant};

use common::{exited, pid_alive, read_pid, within, Fixture};
use runner_core::{Error, ExitStatus, RunnerEnvironment, Running};
use tokio::io::AsyncBufReadExt;

async fn start_ready(fx: &Fixture, script: &str) -> Running {
    let mut p = fx.env.new_process("sh", &["-c", script]).await.unwrap();
    let out = p.stdout_pipe().unwrap();
    let p = p.start().await.unwrap();
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
    assert!(!p.is_running());
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
    let p = p.start().await.unwrap();
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
    let p = start_ready(&fx, "echo ready; exec sleep 30").await;
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.wait().await.unwrap() })
        })
        .collect();
    let stoppers: Vec<_> = (0..3)
        .map(|_| {
            let p = p.clone();
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
    let (p, _) = fx.sh(&script).await;
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
    let (p, cap) = fx.sh("./worker & exit 0").await;
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
    assert!(!a.is_running());
    let again = fx.env.new_process("true", &[]).await.unwrap();
    assert!(again.run().await.unwrap().success());
}

/// Dropping a `run` future ends the process it started (as a cancelled context does
/// in the Go original); dropping a `Running` leaves it running unless `kill_on_drop`
/// was asked for, and the environment still ends it.
#[tokio::test]
async fn cancellation_says_what_it_does() {
    let fx = Fixture::new();
    let pidfile = fx.work().join("run.pid");
    let script = format!("echo $$ > {}; exec sleep 30", pidfile.display());
    let (p, _) = fx.sh(&script).await;
    let run = tokio::spawn(async move { p.run().await });
    let appeared = async {
        while std::fs::read_to_string(&pidfile).map_or(true, |t| !t.ends_with('\n')) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    within(10, appeared).await;
    let pid = read_pid(&pidfile);
    assert!(pid_alive(pid));
    run.abort();
    let _ = run.await;
    within(10, exited(pid)).await;

    // A dropped `Running` keeps its process; with `kill_on_drop` it goes.
    let kept = start_ready(&fx, "echo ready; exec sleep 30").await;
    let kept_pid = kept.pid().unwrap() as i32;
    drop(kept);
    let killed = start_ready(&fx, "echo ready; exec sleep 30").await;
    let killed_pid = killed.pid().unwrap() as i32;
    killed.kill_on_drop(true);
    drop(killed);
    within(10, exited(killed_pid)).await;
    // Dropped before, it would have been stopped by now the same way: it was not.
    assert!(pid_alive(kept_pid), "a dropped Running ended its process");
    within(20, fx.env.shutdown()).await.unwrap();
    assert!(!pid_alive(kept_pid));
    assert!(fx.records().is_empty(), "{:?}", fx.records());
}
