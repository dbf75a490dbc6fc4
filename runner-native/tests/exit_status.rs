//! Native backend: exit status behaviour, tested from the outside with real processes.
mod common;

use std::time::Duration;

use common::{within, Fixture};
use runner_core::{Error, ExitStatus, RunnerEnvironment, Signal};

#[tokio::test]
async fn exit_codes_and_signals_are_statuses() {
    let fx = Fixture::new();
    let (p, _) = fx.sh("exit 3").await;
    assert_eq!(p.run().await.unwrap(), ExitStatus::Exited(3));
    let (p, _) = fx.sh("exit 0").await;
    assert!(p.run().await.unwrap().success());
    let (p, _) = fx.sh("kill -9 $$").await;
    let p = p.start().await.unwrap();
    assert_eq!(p.wait().await.unwrap(), ExitStatus::Signaled(9));
    assert_eq!(p.try_status().unwrap().shell_code(), 137);
    assert!(fx.records().is_empty(), "{:?}", fx.records());
}

#[tokio::test]
async fn wait_is_idempotent_shared_and_cancel_safe() {
    let fx = Fixture::new();
    let (mut p, _) = fx.sh("read line; exit 4").await;
    let mut stdin = p.stdin_pipe().unwrap();
    let p = p.start().await.unwrap();
    assert!(p.is_running());

    // A wait that is cancelled changes nothing.
    assert!(tokio::time::timeout(Duration::from_millis(50), p.wait())
        .await
        .is_err());

    let waiters: Vec<_> = (0..16)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.wait().await.unwrap() })
        })
        .collect();
    use tokio::io::AsyncWriteExt;
    stdin.write_all(b"go\n").await.unwrap();
    drop(stdin);
    for w in waiters {
        assert_eq!(within(10, w).await.unwrap(), ExitStatus::Exited(4));
    }
    // After the exit, the same answer, again and again.
    assert_eq!(p.wait().await.unwrap(), ExitStatus::Exited(4));
    assert_eq!(p.wait().await.unwrap(), ExitStatus::Exited(4));
    assert!(!p.is_running());
    // Stopping or signalling an exited process is a no-op.
    p.stop().await.unwrap();
    p.signal(Signal::Kill).await.unwrap();
    assert_eq!(p.wait().await.unwrap(), ExitStatus::Exited(4));
}

/// What cannot happen is ruled out by the types (no wait before start, no second
/// start: `start` consumes the request and returns the `Running`); what can happen
/// is a typed error.
#[tokio::test]
async fn lifecycle_errors_are_typed() {
    let fx = Fixture::new();
    let (mut p, _) = fx.sh("exit 0").await;
    let _stdin = p.stdin_pipe().unwrap();
    assert!(matches!(
        p.stdin_pipe(),
        Err(Error::PipeUnavailable("stdin"))
    ));
    let p = p.start().await.unwrap();
    assert!(p.pid().unwrap() > 1);
    assert!(p.wait().await.unwrap().success());
    assert!(!p.is_running());
    // Stopping or signalling what ended does nothing.
    p.stop().await.unwrap();
    p.signal(Signal::Terminate).await.unwrap();
}

#[tokio::test]
async fn signal_reaches_the_whole_group() {
    let fx = Fixture::new();
    // USR1 to the group ends the `sleep` child and runs the shell's trap.
    let mut p = fx
        .env
        .new_process(
            "sh",
            &["-c", "trap 'exit 7' USR1; sleep 30 & echo ready; wait"],
        )
        .await
        .unwrap();
    let out = p.stdout_pipe().unwrap();
    let p = p.start().await.unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(out));
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
    p.signal(Signal::User1).await.unwrap();
    assert_eq!(within(10, p.wait()).await.unwrap(), ExitStatus::Exited(7));
}
