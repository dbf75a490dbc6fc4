//! Engines over ssh that cannot be used, each for its reason, as the user's own ssh
//! reports it: every one is `DockerError::EngineDown` with a typed
//! `Unreachable::Ssh` reason and ssh's words as its source, and leaves no process.
//! Its own test binary: it sets `RUNNER_SSH_COMMAND`.

use runner_docker::{DockerError, Engine, SshFailure, Unreachable};
use runner_tests::ssh_host::{processes_naming, SshHost};

async fn failure(endpoint: &str) -> (SshFailure, String) {
    let Err(e) = Engine::connect_to(endpoint).await else {
        panic!("{endpoint} connected");
    };
    let chain = runner_core::error_chain(&e);
    match e {
        DockerError::EngineDown {
            why: Unreachable::Ssh(failure),
            ..
        } => (failure, chain),
        _ => panic!("{endpoint}: not an ssh failure: {chain}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_ssh_failure_is_typed_and_leaves_nothing() {
    if !runner_tests::ssh_host::gate() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = SshHost::start(&dir.path().join("ssh"));
    std::env::set_var("RUNNER_SSH_COMMAND", host.ssh_command());

    // The host that works answers, and says what it is.
    let engine = Engine::connect_to(&SshHost::docker_host(SshHost::HOST))
        .await
        .unwrap();
    let about = engine.describe().await.unwrap();
    assert_eq!(about.name, "Docker Engine", "{about:?}");

    // The same host as a docker context (made by the docker CLI, current in its
    // config): found as the CLI finds it, and reached over ssh.
    let config = dir.path().join("docker-config");
    let made = std::process::Command::new("docker")
        .arg("--config")
        .arg(&config)
        .args(["context", "create", "remote-box", "--docker"])
        .arg(format!("host={}", SshHost::docker_host(SshHost::HOST)))
        .output()
        .unwrap();
    assert!(made.status.success(), "docker context create: {made:?}");
    std::fs::write(
        config.join("config.json"),
        r#"{"currentContext":"remote-box"}"#,
    )
    .unwrap();
    std::env::set_var("DOCKER_CONFIG", &config);
    std::env::remove_var("DOCKER_HOST");
    let endpoint = runner_docker::resolve_endpoint().unwrap();
    assert_eq!(endpoint.host, SshHost::docker_host(SshHost::HOST));
    let by_context = runner_docker::connect().await.unwrap();
    assert_eq!(by_context.describe().await.unwrap().name, "Docker Engine");
    drop(by_context);
    std::env::remove_var("DOCKER_CONFIG");

    // A port mapping answers on this machine's loopback, tunnelled through the helper
    // (the host's engine publishes on its own loopback, which is not ours): an HTTP
    // server in the container, 50 connections at once; the port is free again after.
    let port = runner_core::find_free_port().unwrap();
    let mut env = runner_docker::DockerEnvironment::with_client(
        Engine::connect_to(&SshHost::docker_host(SshHost::HOST))
            .await
            .unwrap(),
        runner_tests::foreign_engine::IMAGE,
        None,
        &format!("ssh-ports-{}", std::process::id()),
    )
    .await
    .unwrap();
    env.with_pause().with_port_mapping(port, 8080);
    runner_core::RunnerEnvironment::init(&env).await.unwrap();
    let server = runner_core::RunnerEnvironment::new_process(
        &env,
        "sh",
        &[
            "-c",
            "echo served-over-ssh > /tmp/index.html && exec httpd -f -p 8080 -h /tmp",
        ],
    )
    .await
    .unwrap()
    .start()
    .await
    .unwrap();
    let get = || async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    // The server takes a moment to listen.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !get().await.is_some_and(|b| b.contains("served-over-ssh")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the port never answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let clients: Vec<_> = (0..50).map(|_| tokio::spawn(get())).collect();
    for client in clients {
        let body = client.await.unwrap().unwrap_or_default();
        assert!(body.contains("served-over-ssh"), "{body}");
    }
    server.stop().await.unwrap();
    runner_core::RunnerEnvironment::shutdown(&env)
        .await
        .unwrap();
    // The environment's connections go with the last handle on it.
    drop((server, env));
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    assert_eq!(host.engine().runner_containers(), Vec::<String>::new());

    // A directory the host does not see (hidden by an empty tmpfs in its mount
    // namespace, as a directory of a laptop is from a build box), mounted besides the
    // project (which is synced: tests/sync_engine.rs), is a typed error at init, before
    // anything runs: no container left, no token left in it.
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("main.go"), "package main\n").unwrap();
    host.engine().hide(project.path());
    let mut env = runner_docker::DockerEnvironment::with_client(
        engine,
        runner_tests::foreign_engine::IMAGE,
        None,
        &format!("ssh-unseen-{}", std::process::id()),
    )
    .await
    .unwrap();
    env.with_pause().with_mount(project.path(), "/data");
    let err = runner_core::RunnerEnvironment::init(&env)
        .await
        .unwrap_err();
    let chain = runner_core::error_chain(&err);
    assert!(
        chain.contains("does not see") && chain.contains(&project.path().display().to_string()),
        "{chain}"
    );
    assert_eq!(host.engine().runner_containers(), Vec::<String>::new());
    let left: Vec<_> = std::fs::read_dir(project.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["main.go"]);
    runner_core::RunnerEnvironment::shutdown(&env)
        .await
        .unwrap();
    // Its connections (the client's pool) go with the environment.
    drop(env);
    // The same directory seen by this host's engine (it shares this host's files) is
    // mounted as before: the check is of the engine, not of the path.
    if runner_docker::docker_engine_running(std::time::Duration::from_secs(3)).await {
        let mut env = runner_docker::DockerEnvironment::new(
            runner_tests::foreign_engine::IMAGE,
            project.path(),
            &format!("ssh-seen-locally-{}", std::process::id()),
        )
        .await
        .unwrap();
        env.with_pause();
        runner_core::RunnerEnvironment::init(&env).await.unwrap();
        let out = runner_core::RunnerEnvironment::new_process(&env, "cat", &["main.go"])
            .await
            .unwrap()
            .output()
            .await
            .unwrap();
        assert_eq!(out.stdout, b"package main\n");
        runner_core::RunnerEnvironment::shutdown(&env)
            .await
            .unwrap();
    }

    for (alias, want) in [
        ("runner-test-unknown", SshFailure::UnknownHostKey),
        ("runner-test-changed", SshFailure::ChangedHostKey),
        ("runner-test-wrongkey", SshFailure::AuthenticationRefused),
        ("runner-test-nodocker", SshFailure::NoDockerThere),
        ("runner-test-down", SshFailure::RemoteEngineDown),
    ] {
        let (got, chain) = failure(&SshHost::docker_host(alias)).await;
        assert_eq!(got, want, "{alias}: {chain}");
        assert!(chain.contains(&format!("ssh://root@{alias}")), "{chain}");
    }
    // No host by that name at all: ssh's resolver says so.
    let (got, chain) = failure("ssh://root@runner-test-no-such-host.invalid").await;
    assert_eq!(got, SshFailure::HostUnreachable, "{chain}");
    // No ssh to run (a host not connected to before: a connection to one whose API
    // version is remembered makes no request until it is used).
    std::env::set_var("RUNNER_SSH_COMMAND", "/nonexistent/ssh");
    let (got, chain) = failure("ssh://root@runner-test-never-connected").await;
    assert_eq!(got, SshFailure::NotInstalled, "{chain}");
    // An address ssh cannot mean is refused before any ssh runs.
    for bad in ["ssh://me:secret@host", "ssh://host/some/path"] {
        let e = Engine::connect_to(bad).await.err().unwrap();
        assert!(
            matches!(e, DockerError::EngineDown { .. }),
            "{bad}: {}",
            runner_core::error_chain(&e)
        );
    }

    let config = dir.path().join("ssh").join("ssh_config");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !processes_naming(&config).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "ssh processes left: {:?}",
            processes_naming(&config)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
