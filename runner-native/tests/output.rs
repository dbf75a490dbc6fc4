//! Native backend: output behaviour, tested from the outside with real processes.
mod common;

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use common::{within, Fixture};
use runner_core::{CaptureSink, ExitStatus, OutputSink, RunnerEnvironment, Stream, MAX_CHUNK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn output_of_a_fast_exit_is_complete_without_trailing_newline() {
    let fx = Fixture::new();
    let (p, cap) = fx.sh("printf 'a\\nb'; printf 'err' >&2").await;
    assert!(p.run().await.unwrap().success());
    assert_eq!(cap.stdout(), b"a\nb");
    assert_eq!(cap.stderr(), b"err");
}

#[tokio::test]
async fn non_utf8_bytes_pass_through() {
    let fx = Fixture::new();
    let (p, cap) = fx.sh("printf '\\377\\376\\000x\\n'").await;
    assert!(p.run().await.unwrap().success());
    assert_eq!(cap.stdout(), b"\xff\xfe\x00x\n");
}

#[tokio::test]
async fn stdin_and_stdout_pipes_carry_raw_bytes_and_stderr_still_goes_to_the_sink() {
    let fx = Fixture::new();
    let (mut p, cap) = fx.sh("cat; echo done >&2").await;
    let mut stdin = p.stdin_pipe().unwrap();
    let mut stdout = p.stdout_pipe().unwrap();
    let p = p.start().await.unwrap();
    let payload: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let expected = payload.clone();
    let writer = tokio::spawn(async move {
        stdin.write_all(&payload).await.unwrap();
        stdin.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    stdout.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
    assert!(p.wait().await.unwrap().success());
    assert_eq!(cap.stderr(), b"done\n");
    assert!(cap.stdout().is_empty());
}

#[derive(Debug, Default)]
struct Counting {
    bytes: AtomicU64,
    largest: AtomicUsize,
    newlines: AtomicUsize,
}

impl OutputSink for Counting {
    fn write(&self, _: Stream, chunk: &[u8]) -> io::Result<()> {
        self.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        self.largest.fetch_max(chunk.len(), Ordering::Relaxed);
        self.newlines.fetch_add(
            chunk.iter().filter(|b| **b == b'\n').count(),
            Ordering::Relaxed,
        );
        Ok(())
    }
}

#[tokio::test]
async fn a_single_100_mib_line_arrives_whole_in_bounded_chunks() {
    let fx = Fixture::new();
    let sink = Arc::new(Counting::default());
    let mut p = fx
        .env
        .new_process(
            "sh",
            &["-c", "head -c 104857600 /dev/zero | tr '\\0' a; echo"],
        )
        .await
        .unwrap();
    p.with_output(sink.clone());
    assert!(within(120, p.run()).await.unwrap().success());
    assert_eq!(sink.bytes.load(Ordering::Relaxed), 100 * 1024 * 1024 + 1);
    assert_eq!(sink.newlines.load(Ordering::Relaxed), 1);
    assert!(sink.largest.load(Ordering::Relaxed) <= MAX_CHUNK);
}

#[derive(Debug)]
struct Broken;
impl OutputSink for Broken {
    fn write(&self, _: Stream, _: &[u8]) -> io::Result<()> {
        Err(io::Error::other("broken sink"))
    }
}

#[tokio::test]
async fn a_failing_sink_never_blocks_the_child() {
    let fx = Fixture::new();
    // 8 MiB is far more than a pipe holds: the child finishes only if we keep reading.
    let mut p = fx
        .env
        .new_process("sh", &["-c", "head -c 8388608 /dev/zero"])
        .await
        .unwrap();
    p.with_output(Arc::new(Broken));
    assert!(within(30, p.run()).await.unwrap().success());
}

#[tokio::test]
async fn a_grandchild_that_escapes_and_holds_stdout_does_not_hang_wait() {
    let fx = Fixture::new();
    let pidfile = fx.work().join("escaped.pid");
    let script = format!(
        "setsid sh -c 'echo $$ > {p}; exec sleep 30' & \
         while [ ! -s {p} ]; do sleep 0.01; done; echo leader-done",
        p = pidfile.display()
    );
    let (p, cap) = fx.sh(&script).await;
    let status = within(20, p.run()).await.unwrap();
    assert_eq!(status, ExitStatus::Exited(0));
    assert_eq!(cap.stdout_string(), "leader-done\n");
    // It left our group, so it is not ours to kill; the test cleans it up.
    let escaped = common::read_pid(&pidfile);
    assert!(common::pid_alive(escaped));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(escaped),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    assert!(fx.records().is_empty());
}

#[tokio::test]
async fn capture_sink_separates_streams() {
    let fx = Fixture::new();
    let cap = CaptureSink::new();
    let mut p = fx
        .env
        .new_process("sh", &["-c", "echo out; echo err >&2"])
        .await
        .unwrap();
    p.with_output(cap.clone());
    p.run().await.unwrap();
    assert_eq!(cap.stdout_string(), "out\n");
    assert_eq!(cap.stderr_string(), "err\n");
}
