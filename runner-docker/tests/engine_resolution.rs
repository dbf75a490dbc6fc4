//! Finding the engine as the docker CLI does (contexts in a temporary
//! `DOCKER_CONFIG`, `DOCKER_CONTEXT`), and typed errors for each way an engine can be
//! unreachable. Its own test binary, one test: it sets the process's environment.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runner_docker::{connect, resolve_endpoint, DockerError, EndpointSource, Unreachable};
use sha2::{Digest, Sha256};
use tokio::net::{UnixListener, UnixStream};

/// A unix socket at `path` that forwards every connection to the engine's default
/// socket (a second endpoint of the same engine), counting connections.
fn proxy(path: &Path) -> Arc<AtomicUsize> {
    let listener = UnixListener::bind(path).unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                }
            });
        }
    });
    count
}

fn write_context(config: &Path, name: &str, host: &str) {
    let digest: String = Sha256::digest(name.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = config.join("contexts/meta").join(digest);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("meta.json"),
        format!(r#"{{"Name":"{name}","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{host}","SkipTLSVerify":false}}}}}}"#),
    )
    .unwrap();
}

fn why(e: &DockerError) -> Unreachable {
    match e {
        DockerError::EngineDown { why, .. } => *why,
        other => panic!("not EngineDown: {other:?}"),
    }
}

#[tokio::test]
async fn contexts_and_unreachable_engines() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    std::env::remove_var("DOCKER_HOST");
    std::env::remove_var("DOCKER_CONTEXT");
    std::env::set_var("DOCKER_CONFIG", &config);

    let engine = std::path::Path::new("/var/run/docker.sock").exists()
        && runner_docker::docker_engine_running(Duration::from_secs(3)).await;
    if runner_core::testing::engine_gate("a Docker engine (contexts)", engine) {
        let alt = tmp.path().join("alt.sock");
        let through = proxy(&alt);
        write_context(&config, "alt", &format!("unix://{}", alt.display()));
        // The docker CLI's current context.
        std::fs::write(config.join("config.json"), r#"{"currentContext":"alt"}"#).unwrap();
        let endpoint = resolve_endpoint().unwrap();
        assert_eq!(
            endpoint.source,
            EndpointSource::CurrentContext("alt".into())
        );
        let docker = connect().await.unwrap();
        docker.bollard().ping().await.unwrap();
        assert!(
            through.load(Ordering::SeqCst) > 0,
            "not through the context's socket"
        );
        // DOCKER_CONTEXT over config.json.
        std::fs::write(
            config.join("config.json"),
            r#"{"currentContext":"default"}"#,
        )
        .unwrap();
        std::env::set_var("DOCKER_CONTEXT", "alt");
        let before = through.load(Ordering::SeqCst);
        assert_eq!(
            resolve_endpoint().unwrap().source,
            EndpointSource::DockerContext("alt".into())
        );
        connect().await.unwrap().bollard().ping().await.unwrap();
        assert!(through.load(Ordering::SeqCst) > before);
        // A context that does not exist is an error naming it.
        std::env::set_var("DOCKER_CONTEXT", "no-such-context");
        match connect().await {
            Err(DockerError::Context(e)) => assert_eq!(e.name, "no-such-context"),
            other => panic!("{other:?}"),
        }
        std::env::remove_var("DOCKER_CONTEXT");
    }

    // Each way an engine can be unreachable is named, with the endpoint.
    let missing = tmp.path().join("missing.sock");
    std::env::set_var("DOCKER_HOST", format!("unix://{}", missing.display()));
    let err = connect().await.unwrap_err();
    assert_eq!(why(&err), Unreachable::SocketMissing, "{err}");
    assert!(err.to_string().contains("missing.sock"), "{err}");

    let stale = tmp.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    std::env::set_var("DOCKER_HOST", format!("unix://{}", stale.display()));
    let err = connect().await.unwrap_err();
    assert_eq!(why(&err), Unreachable::Refused, "{err}");

    // Accepts, never answers: bounded, not bollard's two minutes.
    let silent = tmp.path().join("silent.sock");
    let listener = UnixListener::bind(&silent).unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    std::env::set_var("DOCKER_HOST", format!("unix://{}", silent.display()));
    let started = Instant::now();
    let err = connect().await.unwrap_err();
    assert_eq!(why(&err), Unreachable::Timeout, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    held.abort();

    // An engine whose API is older than the backend needs (it answers `/version`
    // as Docker 1.12 did): a typed error naming the endpoint and the version.
    let old = tmp.path().join("old.sock");
    let listener = UnixListener::bind(&old).unwrap();
    let answering = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut c, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf).await;
            let body = r#"{"Version":"1.12.6","ApiVersion":"1.24","MinAPIVersion":"1.12"}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = c.write_all(answer.as_bytes()).await;
        }
    });
    std::env::set_var("DOCKER_HOST", format!("unix://{}", old.display()));
    match connect().await {
        Err(e @ DockerError::EngineTooOld { .. }) => {
            let text = e.to_string();
            assert!(text.contains("old.sock") && text.contains("1.24"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    answering.abort();

    // An engine that answers the handshake and the image inspect but never answers
    // the create: bounded, named, not the client's two minutes.
    let hangs = tmp.path().join("hangs.sock");
    let listener = UnixListener::bind(&hangs).unwrap();
    let engine = tokio::spawn(async move {
        while let Ok((c, _)) = listener.accept().await {
            tokio::spawn(serve_until_create(c));
        }
    });
    std::env::set_var("DOCKER_HOST", format!("unix://{}", hangs.display()));
    let started = Instant::now();
    let env = runner_docker::DockerEnvironment::new_headless("hangs:latest", "hangs")
        .await
        .unwrap();
    let err = runner_core::RunnerEnvironment::init(&env)
        .await
        .unwrap_err();
    let docker = err
        .downcast_backend::<DockerError>()
        .unwrap_or_else(|| panic!("{err:?}"));
    match docker {
        DockerError::EngineDown { why, action, .. } => {
            assert_eq!(
                (*why, *action),
                (Unreachable::Timeout, "create the container")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "{:?}",
        started.elapsed()
    );
    engine.abort();
    std::env::remove_var("DOCKER_HOST");
}

/// Answers a Docker API client on `c` (`/version`, `/_ping`, image inspect; 404
/// otherwise) until it asks to create a container, which it never answers.
async fn serve_until_create(mut c: UnixStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut pending = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        while pending.len() < end + 4 + length {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        pending.drain(..end + 4 + length);
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let (status, body) = if path.contains("/containers/create") {
            // Hold the connection open, never answer.
            std::future::pending::<()>().await;
            unreachable!()
        } else if path.ends_with("/version") {
            (
                "200 OK",
                r#"{"Version":"20.10.24","ApiVersion":"1.41","MinAPIVersion":"1.12"}"#.to_string(),
            )
        } else if path.ends_with("/_ping") {
            ("200 OK", "OK".to_string())
        } else if path.contains("/images/") && path.ends_with("/json") {
            (
                "200 OK",
                r#"{"Id":"sha256:0","Config":{"Env":["PATH=/bin"]}}"#.to_string(),
            )
        } else {
            (
                "404 Not Found",
                format!(r#"{{"message":"no {path} here"}}"#),
            )
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if c.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}
