//! Native backend: exit status behaviour, tested from the outside with real processes.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{within, Fixture};
use runner_core::{Error, ExitStatus, Proc, RunnerEnvironment, Signal};

#[tokio::test]
async fn exit_codes_and_signals_are_statuses() {
    let fx = Fixture::new();
    let (mut p, _) = fx.sh("exit 3").await;
    assert_eq!(p.run().await.unwrap(), ExitStatus::Exited(3));
    let (mut p, _) = fx.sh("exit 0").await;
    assert!(p.run().await.unwrap().success());
    let (mut p, _) = fx.sh("kill -9 $$").await;
    assert_eq!(p.run().await.unwrap(), ExitStatus::Signaled(9));
    assert_eq!(p.try_status().unwrap().shell_code(), 137);
    assert!(fx.records().is_empty(), "{:?}", fx.records());
}

#[tokio::test]
async fn wait_is_idempotent_shared_and_cancel_safe() {
    let fx = Fixture::new();
    let (mut p, _) = fx.sh("read line; exit 4").await;
    let mut stdin = p.stdin_pipe().unwrap();
    p.start().await.unwrap();
    let p: Arc<dyn Proc> = Arc::from(p);
    assert!(p.is_running().await.unwrap());

    // A wait that is cancelled changes nothing.
    assert!(tokio::time::timeout(Duration::from_millis(50), p.wait())
        .await
        .is_err());

    let waiters: Vec<_> = (0..16)
        .map(|_| {
            let p = Arc::clone(&p);
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
    assert!(!p.is_running().await.unwrap());
    // Stopping or signalling an exited process is a no-op.
    p.stop().await.unwrap();
    p.signal(Signal::Kill).await.unwrap();
    assert_eq!(p.wait().await.unwrap(), ExitStatus::Exited(4));
}

#[tokio::test]
async fn lifecycle_errors_are_typed() {
    let fx = Fixture::new();
    let (mut p, _) = fx.sh("exit 0").await;
    assert!(matches!(p.wait().await, Err(Error::NotStarted)));
    assert!(matches!(
        p.signal(Signal::Terminate).await,
        Err(Error::NotStarted)
    ));
    assert!(!p.is_running().await.unwrap());
    p.stop().await.unwrap(); // never started: nothing to stop
    p.start().await.unwrap();
    assert!(matches!(p.start().await, Err(Error::AlreadyStarted)));
    assert!(matches!(
        p.stdin_pipe(),
        Err(Error::PipeUnavailable("stdin"))
    ));
    assert!(p.wait().await.unwrap().success());
    assert!(p.pid().unwrap() > 1);
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
    p.start().await.unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(out));
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
    p.signal(Signal::User1).await.unwrap();
    assert_eq!(within(10, p.wait()).await.unwrap(), ExitStatus::Exited(7));
}
