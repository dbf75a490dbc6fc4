//! `DOCKER_HOST` over tcp, an engine that is down, and an engine that goes away in
//! the middle of an exec.
//!
//! The engine is reached through a tcp listener on 127.0.0.1 that this test runs in
//! front of the real engine's unix socket (a second listener of the same dockerd, as
//! `dockerd -H tcp://127.0.0.1:PORT` would give), so the test can also make the
//! engine vanish mid-exec by closing that listener and every connection through it.
//! This file is its own test binary because it sets `DOCKER_HOST` for the process.

mod common;
use common::{docker_error, image, Cleanup};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use runner_core::{CaptureSink, RunnerEnvironment};
use runner_docker::{docker_engine_running, DockerEnvironment, DockerError};
use tokio::net::{TcpListener, UnixStream};
use tokio::task::JoinHandle;

const ENGINE_SOCKET: &str = "/var/run/docker.sock";

/// A tcp listener forwarding every connection to the engine's unix socket.
struct TcpEngine {
    port: u16,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TcpEngine {
    async fn start() -> TcpEngine {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let conns = Arc::clone(&tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect(ENGINE_SOCKET).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
                conns.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        TcpEngine { port, tasks }
    }

    /// The engine goes away: the listener closes and every connection drops.
    async fn kill(&self) {
        let tasks: Vec<_> = self.tasks.lock().unwrap().drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

fn set_docker_host(value: &str) {
    // This binary's only test; nothing else reads the environment concurrently.
    std::env::set_var("DOCKER_HOST", value);
}

#[tokio::test]
async fn docker_host_over_tcp_engine_down_and_engine_gone_mid_exec() {
    let up = std::path::Path::new(ENGINE_SOCKET).exists()
        && docker_engine_running(Duration::from_secs(3)).await;
    if !runner_core::testing::engine_gate(&format!("a Docker engine on {ENGINE_SOCKET}"), up) {
        return;
    }

    // An engine that is down: a unix socket nobody listens on, and a closed tcp port.
    // Both are refused at once, well inside the ping's timeout.
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    for host in [
        format!("unix://{}", dir.path().join("none.sock").display()),
        format!("tcp://127.0.0.1:{closed_port}"),
    ] {
        set_docker_host(&host);
        let t = std::time::Instant::now();
        assert!(
            !docker_engine_running(Duration::from_secs(2)).await,
            "{host}"
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{host}");
        let err = DockerEnvironment::new_headless(&image(), "down")
            .await
            .unwrap_err();
        assert!(
            matches!(docker_error(&err), DockerError::EngineDown { .. }),
            "{host}: {err}"
        );
    }

    // DOCKER_HOST=tcp://127.0.0.1:PORT: the whole backend works over tcp.
    let tcp = TcpEngine::start().await;
    set_docker_host(&format!("tcp://127.0.0.1:{}", tcp.port));
    assert!(docker_engine_running(Duration::from_secs(3)).await);
    let mut env =
        DockerEnvironment::new_headless(&image(), &format!("test-tcp-{}", std::process::id()))
            .await
            .unwrap();
    env.with_pause();
    let _guard = Cleanup(env.container_name().to_string());
    env.init().await.unwrap();
    let mut p = env.new_process("echo", &["over tcp"]).await.unwrap();
    let cap = CaptureSink::new();
    p.with_output(cap.clone());
    assert!(p.run().await.unwrap().success());
    assert_eq!(cap.stdout_string(), "over tcp\n");

    // The engine goes away while a process runs: wait returns a typed error promptly
    // instead of hanging (EngineDown for an exec; HelperGone, the helper's stream
    // ended, through the helper), and is_running turns false.
    let long = env.new_process("sleep", &["60"]).await.unwrap();
    let long = long.start().await.unwrap();
    assert!(long.is_running());
    tcp.kill().await;
    let r = tokio::time::timeout(Duration::from_secs(30), long.wait())
        .await
        .expect("wait hung after the engine went away");
    let err = r.unwrap_err();
    assert!(
        matches!(
            docker_error(&err),
            DockerError::EngineDown { .. } | DockerError::HelperGone { .. }
        ),
        "{err}"
    );
    assert!(!long.is_running());
    // Shutting down without an engine says so; the guard removes the container.
    let err = env.shutdown().await.unwrap_err();
    assert!(
        matches!(docker_error(&err), DockerError::EngineDown { .. }),
        "{err}"
    );
}
