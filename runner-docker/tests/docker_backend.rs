//! The Docker backend against a real dockerd and a locally built busybox image.

mod common;
use common::{docker_cli, docker_error, image, Cleanup};

use std::sync::Arc;
use std::time::Duration;

use runner_core::{CaptureSink, EnvironmentVariable, Error, ExitStatus, RunnerEnvironment};
use runner_docker::{docker_engine_running, DockerEnvironment, DockerError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Skips (loudly) without an engine, unless engines are required.
async fn engine() -> bool {
    let up = docker_engine_running(Duration::from_secs(3)).await;
    runner_core::testing::engine_gate("a Docker engine", up)
}

fn unique(name: &str) -> String {
    format!("test-{name}-{}", std::process::id())
}

async fn paused(name: &str, dir: &std::path::Path) -> (DockerEnvironment, Cleanup) {
    let mut env = DockerEnvironment::new(&image(), dir, &unique(name))
        .await
        .unwrap();
    env.with_pause();
    let guard = Cleanup(env.container_name().to_string());
    env.init().await.unwrap();
    (env, guard)
}

async fn output(env: &DockerEnvironment, script: &str) -> (ExitStatus, String, String) {
    let mut p = env.new_process("sh", &["-c", script]).await.unwrap();
    let cap = CaptureSink::new();
    p.with_output(cap.clone());
    let status = p.run().await.unwrap();
    (status, cap.stdout_string(), cap.stderr_string())
}

/// Records container `id` as created by runner, as runner's create does
/// (`<state dir>/created/<id>`): a container these tests make by hand stands for one
/// a runner made and then died.
fn recorded_as_created(id: &str, name: &str) {
    let dir = std::env::var_os("RUNNER_STATE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(runner_reaper::default_state_dir)
        .join("created");
    std::fs::create_dir_all(&dir).unwrap();
    let engine = runner_docker::resolve_endpoint().unwrap().host;
    std::fs::write(
        dir.join(id.trim()),
        format!(r#"{{"name":"{name}","engine":"{engine}"}}"#),
    )
    .unwrap();
}

fn containers_named(name: &str) -> usize {
    let out = docker_cli()
        .args(["ps", "-aq", "--filter", &format!("name={name}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test]
async fn execs_follow_the_proc_contract() {
    if !engine().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "from the host\n").unwrap();
    let (env, _guard) = paused("contract", dir.path()).await;

    let (status, out, err) = output(&env, "cat hello.txt; echo oops >&2; exit 3").await;
    assert_eq!(status, ExitStatus::Exited(3));
    assert_eq!(out, "from the host\n");
    assert_eq!(err, "oops\n");

    // Environment layering and append, as natively.
    let mut p = env
        .new_process("sh", &["-c", "echo $A:$B; echo $PATH"])
        .await
        .unwrap();
    p.with_env_vars(vec![EnvironmentVariable::new("A", "proc").unwrap()]);
    p.with_env_var_append(EnvironmentVariable::new("PATH", "/extra").unwrap(), ":");
    let cap = CaptureSink::new();
    p.with_output(cap.clone());
    assert!(p.run().await.unwrap().success());
    assert_eq!(cap.stdout_string(), "proc:\n/bin:/extra\n");

    // Binary stdin, half-closed on drop, and raw stdout.
    let mut p = env.new_process("cat", &[]).await.unwrap();
    let mut stdin = p.stdin_pipe().unwrap();
    let mut stdout = p.stdout_pipe().unwrap();
    let p = p.start().await.unwrap();
    let payload: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    let expected = payload.clone();
    let writer = tokio::spawn(async move {
        stdin.write_all(&payload).await.unwrap();
        drop(stdin);
    });
    let mut got = Vec::new();
    stdout.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert!(
        got == expected,
        "{} bytes back of {}",
        got.len(),
        expected.len()
    );
    assert!(p.wait().await.unwrap().success());

    // A missing binary is a typed error.
    let p = env.new_process("no-such-binary", &[]).await.unwrap();
    let r = p.run().await;
    assert!(
        matches!(r, Err(Error::NotFound { .. })),
        "missing binary: {r:?}"
    );
    assert!(matches!(
        env.with_binary("no-such-binary").await,
        Err(Error::NotFound { .. })
    ));
    env.with_binary("sh").await.unwrap();

    env.shutdown().await.unwrap();
    env.shutdown().await.unwrap();
    assert!(env.container_deleted().await.unwrap());
}

#[tokio::test]
async fn containers_are_reused_only_when_the_configuration_matches() {
    if !engine().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = unique("reuse");
    let _guard = Cleanup(runner_docker::container_name(&name, Some(dir.path())));
    let make = |extra: Option<&'static str>| {
        let name = name.clone();
        let dir = dir.path().to_path_buf();
        async move {
            let mut env = DockerEnvironment::new(&image(), &dir, &name).await.unwrap();
            env.with_pause();
            if let Some(v) = extra {
                env.with_env_vars(vec![EnvironmentVariable::new("EXTRA", v).unwrap()]);
            }
            env.init().await.unwrap();
            env
        }
    };
    let first = make(None).await;
    let second = make(None).await;
    assert_eq!(first.container_id(), second.container_id());
    let changed = make(Some("x")).await;
    assert_ne!(first.container_id(), changed.container_id());
    assert!(first.container_deleted().await.unwrap());
    let (_, out, _) = output(&changed, "echo $EXTRA").await;
    assert_eq!(out, "x\n");
    changed.shutdown().await.unwrap();
    assert!(!changed.is_container_present().await.unwrap());
}

#[tokio::test]
async fn bad_input_is_typed() {
    if !engine().await {
        return;
    }
    // An image that is not here cannot be pulled offline.
    let err = DockerEnvironment::new_headless("runner-test/does-not-exist:1", "x")
        .await
        .unwrap_err();
    match &err {
        Error::Backend { source, .. } => assert!(
            matches!(
                source.downcast_ref::<DockerError>(),
                Some(DockerError::ImageUnavailable { .. })
            ),
            "{err}"
        ),
        other => panic!("{other:?}"),
    }
    // A name Docker would reject is made valid.
    let mut env = DockerEnvironment::new_headless(&image(), &unique("we ird/name:ü"))
        .await
        .unwrap();
    env.with_pause();
    let _guard = Cleanup(env.container_name().to_string());
    env.init().await.unwrap();
    // A missing directory.
    assert!(matches!(
        DockerEnvironment::new(&image(), "/definitely/missing", "x").await,
        Err(Error::DirNotFound(_))
    ));
    // A container created but failing to start is removed, not leaked.
    let mut broken = DockerEnvironment::new_headless(&image(), &unique("broken"))
        .await
        .unwrap();
    broken.with_command(vec!["/no/such/program".into()]);
    let _g2 = Cleanup(broken.container_name().to_string());
    let err = broken.init().await.unwrap_err();
    assert!(
        err.chain().contains("failed to start the container"),
        "{}",
        err.chain()
    );
    assert!(!broken.is_container_present().await.unwrap());
    env.shutdown().await.unwrap();
}

#[tokio::test]
async fn container_removed_from_outside_ends_the_wait() {
    if !engine().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (env, _guard) = paused("removed", dir.path()).await;
    let p = env.new_process("sleep", &["60"]).await.unwrap();
    let p = p.start().await.unwrap();
    let id = env.container_id().unwrap();
    docker_cli().args(["rm", "-f", &id]).output().unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), p.wait())
        .await
        .unwrap();
    assert!(r.as_ref().map_or(true, |s| !s.success()), "{r:?}");
    assert!(!p.is_running());
    env.shutdown().await.unwrap();
}

#[tokio::test]
async fn twenty_concurrent_execs_and_a_long_line() {
    if !engine().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (env, _guard) = paused("concurrent", dir.path()).await;
    let env = Arc::new(env);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let env = Arc::clone(&env);
        set.spawn(async move { (i, output(&env, &format!("echo exec-{i}")).await) });
    }
    while let Some(r) = set.join_next().await {
        let (i, (status, out, _)) = r.unwrap();
        assert!(status.success());
        assert_eq!(out, format!("exec-{i}\n"));
    }
    let (status, out, _) = output(&env, "head -c 10485760 /dev/zero | tr '\\0' a; echo").await;
    assert!(status.success());
    assert_eq!(out.len(), 10 * 1024 * 1024 + 1);
    env.shutdown().await.unwrap();
    assert_eq!(containers_named(env.container_name()), 0);
}

#[tokio::test]
async fn init_errors_are_typed_and_leave_nothing() {
    if !engine().await {
        return;
    }
    // A mount of a missing host path: refused before anything is created.
    let mut env = DockerEnvironment::new_headless(&image(), &unique("mount"))
        .await
        .unwrap();
    env.with_pause()
        .with_mount("/definitely/missing/src", "/src");
    let _g1 = Cleanup(env.container_name().to_string());
    let err = env.init().await.unwrap_err();
    assert!(
        matches!(docker_error(&err), DockerError::MountSourceMissing(p) if p == std::path::Path::new("/definitely/missing/src")),
        "{err}"
    );
    assert!(!env.is_container_present().await.unwrap());
    assert!(!std::path::Path::new("/definitely/missing/src").exists());

    // A host port that is taken: typed, and nothing is left.
    {
        port_taken_is_typed().await;
    }

    // A container whose command exited: an exec says so instead of a bare 409.
    let mut env = DockerEnvironment::new_headless(&image(), &unique("exited"))
        .await
        .unwrap();
    env.with_command(vec!["true".into()]);
    let _g3 = Cleanup(env.container_name().to_string());
    env.init().await.unwrap();
    let id = env.container_id().unwrap();
    // `docker wait` returns when the container has stopped.
    let waited = docker_cli().args(["wait", &id]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&waited.stdout).trim(), "0");
    let p = env.new_process("echo", &["hi"]).await.unwrap();
    let err = p.run().await.unwrap_err();
    assert!(
        matches!(docker_error(&err), DockerError::NotRunning(c) if *c == id),
        "{err}"
    );
    env.shutdown().await.unwrap();
    assert!(!env.is_container_present().await.unwrap());
}

/// A host port that is taken on this machine (where runner binds a tunnelled port):
/// typed, and no container is made.
async fn port_taken_is_typed() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut env = DockerEnvironment::new_headless(&image(), &unique("port"))
        .await
        .unwrap();
    env.with_pause().with_port_mapping(port, 8080);
    let _g2 = Cleanup(env.container_name().to_string());
    let err = env.init().await.unwrap_err();
    assert!(
        matches!(docker_error(&err), DockerError::PortInUse { host_port, host_ip, .. } if *host_port == port && host_ip == "127.0.0.1"),
        "{err}"
    );
    assert!(!env.is_container_present().await.unwrap());
    drop(taken);
}

/// A port mapping reaches the container's port from this machine's loopback only,
/// tunnelled through the helper (the engine publishes nothing: the same on an engine
/// elsewhere, and on the Podman pass's, whose network namespace is its own); many
/// connections at once; the port is free again after shutdown.
#[tokio::test]
async fn published_ports_reach_the_container_on_loopback_only() {
    if !engine().await {
        return;
    }
    let port = runner_core::find_free_port().unwrap();
    let mut env = DockerEnvironment::new_headless(&image(), &unique("ports"))
        .await
        .unwrap();
    env.with_pause().with_port_mapping(port, 8080);
    let _g = Cleanup(env.container_name().to_string());
    env.init().await.unwrap();
    assert_eq!(env.port_mappings().len(), 1);
    let server = env
        .new_process(
            "sh",
            &[
                "-c",
                "echo served-from-container > /tmp/index.html && exec httpd -f -p 8080 -h /tmp",
            ],
        )
        .await
        .unwrap();
    let server = server.start().await.unwrap();
    // The server takes a moment to listen; the published port answers once it does.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let body = loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let _ = s
                .write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
                .await;
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf).await;
            if buf.contains("served-from-container") {
                break buf;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the published port never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        body.starts_with("HTTP/1.1 200") || body.starts_with("HTTP/1.0 200"),
        "{body}"
    );
    // 50 connections at once, each its own answer.
    let clients: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = String::new();
                s.read_to_string(&mut buf).await.unwrap();
                buf
            })
        })
        .collect();
    for client in clients {
        let body = client.await.unwrap();
        assert!(body.contains("served-from-container"), "{body}");
    }
    // Bound on 127.0.0.1 by runner, not on every interface, and not by the engine.
    assert_eq!(
        env.tunnelled_ports(),
        [(std::net::SocketAddr::from(([127, 0, 0, 1], port)), 8080)]
    );
    let out = docker_cli()
        .args(["port", env.container_name()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");
    server.stop().await.unwrap();
    env.shutdown().await.unwrap();
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

/// Waits (on writes, not a clock) until `cond` holds for the captured output.
async fn eventually(cap: &CaptureSink, cond: impl Fn(&str, &str) -> bool) {
    if tokio::time::timeout(Duration::from_secs(20), cap.wait_until(cond))
        .await
        .is_err()
    {
        panic!(
            "output never arrived: {:?} / {:?}",
            cap.stdout_string(),
            cap.stderr_string()
        );
    }
}

#[tokio::test]
async fn container_output_is_followed_from_this_start_only() {
    if !engine().await {
        return;
    }
    let name = unique("logs");
    let script =
        "trap 'exit 0' TERM; echo started; echo oops >&2; printf no-newline; sleep infinity & wait";
    let make = || async {
        let mut env = DockerEnvironment::new_headless(&image(), &name)
            .await
            .unwrap();
        env.with_command(vec!["sh".into(), "-c".into(), script.into()]);
        env
    };
    let first = CaptureSink::new();
    let mut env = make().await;
    env.with_output(first.clone());
    let _g = Cleanup(env.container_name().to_string());
    env.init().await.unwrap();
    eventually(&first, |out, err| {
        out.contains("started") && err == "oops\n"
    })
    .await;
    env.stop().await.unwrap();
    // The unterminated last line is delivered once the container stops.
    assert_eq!(first.stdout_string(), "started\nno-newline");

    // The same configuration reuses the stopped container and starts it again: the
    // new sink sees this start's output only, not the first run's.
    let second = CaptureSink::new();
    let mut env = make().await;
    env.with_output(second.clone());
    env.init().await.unwrap();
    eventually(&second, |out, _| out.contains("started")).await;
    env.shutdown().await.unwrap();
    assert_eq!(second.stdout_string(), "started\nno-newline");
    assert_eq!(second.stderr_string(), "oops\n");
    assert!(!env.is_container_present().await.unwrap());
}

#[tokio::test]
async fn find_pid_finds_each_execs_own_process() {
    if !engine().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The exec path's scan (through the helper the pid is known at start).
    let mut env = DockerEnvironment::new(&image(), dir.path(), &unique("findpid"))
        .await
        .unwrap();
    env.with_pause().with_exec_helper(false);
    let _guard = Cleanup(env.container_name().to_string());
    env.init().await.unwrap();
    // A near-miss with a longer argument must not match.
    let decoy = env.new_process("sleep", &["610"]).await.unwrap();
    let decoy = decoy.start().await.unwrap();
    let p = env.docker_process("sleep", &["61"]).unwrap();
    let p = p.start().await.unwrap();
    let pid = p.find_pid().await.unwrap().expect("a pid");
    let (_, cmdline, _) = output(&env, &format!("tr '\\0' ' ' < /proc/{pid}/cmdline")).await;
    assert_eq!(cmdline, "sleep 61 ");
    // Two execs of the very same argv: each finds its own process (by its token).
    let twin = env.docker_process("sleep", &["61"]).unwrap();
    let twin = twin.start().await.unwrap();
    let twin_pid = twin.find_pid().await.unwrap().expect("the twin's pid");
    assert_ne!(twin_pid, pid);
    assert_eq!(p.find_pid().await.unwrap(), Some(pid));
    twin.stop().await.unwrap();
    // A shell that executes its last command is still found, as that command.
    let shell = env.docker_process("sh", &["-c", "sleep 62"]).unwrap();
    let shell = shell.start().await.unwrap();
    let shell_pid = shell.find_pid().await.unwrap().expect("the shell's pid");
    let (_, cmdline, _) = output(&env, &format!("tr '\\0' ' ' < /proc/{shell_pid}/cmdline")).await;
    assert!(
        cmdline == "sleep 62 " || cmdline == "sh -c sleep 62 ",
        "{cmdline}"
    );
    shell.stop().await.unwrap();
    p.stop().await.unwrap();
    assert_eq!(p.find_pid().await.unwrap(), None);
    decoy.stop().await.unwrap();
    env.shutdown().await.unwrap();
}

#[tokio::test]
async fn stats_show_a_busy_container() {
    if !engine().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (env, _guard) = paused("stats", dir.path()).await;
    let busy = env
        .new_process("sh", &["-c", "while :; do :; done"])
        .await
        .unwrap();
    let busy = busy.start().await.unwrap();
    let stats = env.stats().await.unwrap();
    // A spinning shell uses most of a CPU; anything near zero would mean the figures
    // are wrong (a loaded CI machine still gives it a good share).
    assert!(stats.cpu_percent > 10.0, "{stats:?}");
    assert!(stats.memory_bytes > 0, "{stats:?}");
    assert!(stats.pids.unwrap_or(0) >= 2, "{stats:?}");
    busy.stop().await.unwrap();
    env.shutdown().await.unwrap();
    let err = env.stats().await.unwrap_err();
    assert!(
        matches!(docker_error(&err), DockerError::NoContainer(_)),
        "{err}"
    );
}

/// The container sweep never removes a live owner's container, not even one that is
/// created and not yet started (an ephemeral environment between its create and its
/// start); a dead owner's goes.
#[tokio::test]
async fn the_sweep_leaves_a_live_owners_unstarted_container_alone() {
    if !engine().await {
        return;
    }
    let runner_core::os::OwnerIdentity {
        pid: me,
        start_time: start,
    } = runner_core::os::owner_identity().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let create = |name: &str, session: &str| {
        let out = docker_cli()
            .args(["create", "--name", name])
            .args(["--label", "runner.owner=true"])
            .args(["--label", &format!("runner.session={session}")])
            .args(["--label", &format!("runner.host={host}")])
            .args(["--label", "runner.ephemeral=true"])
            .args([&image(), "sleep", "300"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            Cleanup(name.to_string()),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    let live = unique("sweep-live");
    let dead = unique("sweep-dead");
    let (_g1, id) = create(&live, &format!("{me}-{start}"));
    recorded_as_created(&id, &live);
    let (_g2, id) = create(&dead, &format!("{me}-{}", start + 1));
    recorded_as_created(&id, &dead);
    // The same labels on containers runner never made (by hand, or from an image a
    // user committed from a runner container: labels are inherited): never touched,
    // not even by `runner reap --all`, whatever their owner label says.
    let forged = unique("sweep-forged");
    let (_g3, _) = create(&forged, &format!("{me}-{}", start + 1));
    let report = runner_docker::reap_stale_containers(Duration::from_secs(30)).await;
    assert!(report.removed.contains(&dead), "{report}");
    assert!(!report.removed.contains(&live), "{report}");
    assert_eq!(containers_named(&live), 1);
    assert_eq!(containers_named(&dead), 0);
    let report = runner_docker::reap_containers(Duration::from_secs(30), true).await;
    assert!(
        !report.removed.contains(&forged) && !report.stopped.contains(&forged),
        "{report}"
    );
    assert_eq!(containers_named(&forged), 1);
    // Nor is it reused or replaced by an environment of that name.
    let dir = tempfile::tempdir().unwrap();
    let name = unique("adopt");
    let probe = DockerEnvironment::new(&image(), dir.path(), &name)
        .await
        .unwrap();
    let container = probe.container_name().to_string();
    let (_g4, _) = create(&container, &format!("{me}-{}", start + 1));
    let mut env = DockerEnvironment::new(&image(), dir.path(), &name)
        .await
        .unwrap();
    env.with_pause();
    let err = env.init().await.unwrap_err();
    assert!(
        matches!(docker_error(&err), DockerError::InUse { .. }),
        "{}",
        err.chain()
    );
    assert_eq!(containers_named(&container), 1);
}

/// Concurrent sweeps over the same dead owners' containers: each container removed
/// once, and no sweep reports an error for one another sweep is removing.
#[tokio::test]
async fn concurrent_sweeps_share_the_work_without_errors() {
    if !engine().await {
        return;
    }
    let runner_core::os::OwnerIdentity {
        pid: me,
        start_time: start,
    } = runner_core::os::owner_identity().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let mut names = Vec::new();
    let mut guards = Vec::new();
    for i in 0..6 {
        let name = unique(&format!("sweep-many-{i}"));
        let out = docker_cli()
            .args(["run", "-d", "--init", "--name", &name])
            .args(["--label", "runner.owner=true"])
            .args(["--label", &format!("runner.session={me}-{}", start + 1)])
            .args(["--label", &format!("runner.host={host}")])
            .args(["--label", "runner.ephemeral=true"])
            .args([&image(), "sleep", "300"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        recorded_as_created(&String::from_utf8_lossy(&out.stdout), &name);
        guards.push(Cleanup(name.clone()));
        names.push(name);
    }
    let sweeps = (0..3).map(|_| runner_docker::reap_stale_containers(Duration::from_secs(60)));
    let reports = futures_util::future::join_all(sweeps).await;
    for report in &reports {
        assert!(report.errors.is_empty(), "{report}");
    }
    for name in &names {
        let removed = reports.iter().filter(|r| r.removed.contains(name)).count();
        assert!(removed <= 1, "{name} removed {removed} times");
        assert_eq!(containers_named(name), 0);
    }
}

/// `stop` stops the container but keeps it known; `shutdown` after it still removes
/// it (it used to forget it and leak it).
#[tokio::test]
async fn stop_then_shutdown_removes_the_container() {
    if !engine().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut env, _guard) = paused("stop-shutdown", dir.path()).await;
    env.with_stop_grace(Duration::from_secs(1));
    let id = env.container_id().unwrap();
    env.stop().await.unwrap();
    assert!(!env.container_deleted().await.unwrap(), "stop removed it");
    assert_eq!(env.container_id(), Some(id));
    env.shutdown().await.unwrap();
    assert!(env.container_deleted().await.unwrap());
    assert!(!env.is_container_present().await.unwrap());
}

/// Two projects using one name get two containers; names that clean up to the same
/// text stay apart; a container another live process owns is never reused,
/// replaced or removed under it.
#[tokio::test]
async fn identities_never_collide_and_live_owners_keep_their_containers() {
    if !engine().await {
        return;
    }
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let name = unique("ident");
    let (first, _g1) = paused_named(&name, a.path()).await;
    let (second, _g2) = paused_named(&name, b.path()).await;
    assert_ne!(first.container_name(), second.container_name());
    assert_eq!(
        output(&first, "pwd").await.1.trim(),
        a.path().to_str().unwrap()
    );
    assert_eq!(
        output(&second, "pwd").await.1.trim(),
        b.path().to_str().unwrap()
    );
    let spaced = format!("{name} col");
    let slashed = format!("{name}/col");
    let (x, _g3) = paused_named(&spaced, a.path()).await;
    let (y, _g4) = paused_named(&slashed, a.path()).await;
    assert_ne!(x.container_name(), y.container_name());
    assert!(!x.container_deleted().await.unwrap());

    // A container by our name whose owner is another live process.
    let mut owner = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = owner.id() as i32;
    let start = runner_core::os::process(pid).unwrap().start_time;
    let taken = unique("taken");
    let probe = DockerEnvironment::new(&image(), a.path(), &taken)
        .await
        .unwrap();
    let container = probe.container_name().to_string();
    let _g5 = Cleanup(container.clone());
    let created = docker_cli()
        .args([
            "create",
            "--name",
            &container,
            "--label",
            "runner.owner=true",
        ])
        .args(["--label", &format!("runner.session={pid}-{start}")])
        .args(["--label", "runner.config=other", &image(), "sleep", "300"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    recorded_as_created(&String::from_utf8_lossy(&created.stdout), &container);
    let mut env = DockerEnvironment::new(&image(), a.path(), &taken)
        .await
        .unwrap();
    env.with_pause();
    let err = env.init().await.unwrap_err();
    assert!(
        matches!(docker_error(&err), DockerError::InUse { .. }),
        "{}",
        err.chain()
    );
    assert_eq!(
        containers_named(&container),
        1,
        "the owner's container is gone"
    );
    owner.kill().unwrap();
    owner.wait().unwrap();
    // Its owner gone, the container is ours to replace.
    env.init().await.unwrap();
    assert_eq!(output(&env, "echo ok").await.1, "ok\n");
    env.shutdown().await.unwrap();
    for e in [first, second, x, y] {
        e.shutdown().await.unwrap();
    }
}

async fn paused_named(name: &str, dir: &std::path::Path) -> (DockerEnvironment, Cleanup) {
    let mut env = DockerEnvironment::new(&image(), dir, name).await.unwrap();
    env.with_pause();
    let guard = Cleanup(env.container_name().to_string());
    env.init().await.unwrap();
    (env, guard)
}

/// The opt-ins: an entrypoint override, ports on all interfaces, the engine socket.
#[tokio::test]
async fn entrypoint_public_ports_and_the_engine_socket_are_opt_ins() {
    if !engine().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = runner_core::find_free_port().unwrap();
    let mut env = DockerEnvironment::new(&image(), dir.path(), &unique("optins"))
        .await
        .unwrap();
    env.with_pause()
        .with_entrypoint(Some(vec![
            "sh".into(),
            "-c".into(),
            "echo ran > /tmp/entrypoint; exec \"$@\"".into(),
            "entrypoint".into(),
        ]))
        .with_public_ports()
        .with_port_mapping(port, 8080)
        .with_docker_socket();
    let _guard = Cleanup(env.container_name().to_string());
    env.init().await.unwrap();
    assert_eq!(output(&env, "cat /tmp/entrypoint").await.1, "ran\n");
    assert!(output(&env, "test -S /var/run/docker.sock")
        .await
        .0
        .success());
    assert_eq!(env.port_mappings()[0].host_ip, "0.0.0.0");
    assert_eq!(
        env.tunnelled_ports(),
        [(std::net::SocketAddr::from(([0, 0, 0, 0], port)), 8080)]
    );
    // Without the opt-ins: loopback, no socket.
    let mut plain = DockerEnvironment::new(&image(), dir.path(), &unique("plain"))
        .await
        .unwrap();
    // A port of its own, found free (the next number may be anyone's: an outgoing
    // connection's ephemeral port took it once).
    let plain_port = loop {
        let p = runner_core::find_free_port().unwrap();
        if p != port {
            break p;
        }
    };
    plain.with_pause().with_port_mapping(plain_port, 8080);
    let _guard2 = Cleanup(plain.container_name().to_string());
    plain.init().await.unwrap();
    assert_eq!(plain.port_mappings()[0].host_ip, "127.0.0.1");
    assert!(!output(&plain, "test -e /var/run/docker.sock")
        .await
        .0
        .success());
    // A NUL byte in an argument is a typed error, not exit status 1.
    let p = plain.new_process("echo", &["a\0b"]).await.unwrap();
    match p.run().await {
        Err(Error::Spawn { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput)
        }
        other => panic!("{other:?}"),
    }
    env.shutdown().await.unwrap();
    plain.shutdown().await.unwrap();
}

/// A reusable container left by a dead owner and reused by a live one keeps the dead
/// owner's labels (labels are fixed at create): the live owner's claim keeps the
/// sweep from stopping or removing it; once released, the sweep stops it and keeps
/// it (reusable), and the sweep with `remove_reusable` removes it.
#[tokio::test]
async fn a_reused_container_is_kept_while_its_new_owner_lives() {
    if !engine().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = unique("claimed");
    // The configuration hash a container must carry to be reused, from a first run.
    let (first, _guard) = paused_named(&name, dir.path()).await;
    let container = first.container_name().to_string();
    let inspect = |format: &str| {
        let out = docker_cli()
            .args(["inspect", "--format", format, &container])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let config = inspect("{{index .Config.Labels \"runner.config\"}}");
    let host = inspect("{{index .Config.Labels \"runner.host\"}}");
    first.shutdown().await.unwrap();
    // Left behind by an owner that is dead now.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let created = docker_cli()
        .args(["run", "-d", "--name", &container, "--init"])
        .args([
            "--label",
            "runner.owner=true",
            "--label",
            &format!("runner.session={dead_pid}-1"),
        ])
        .args(["--label", &format!("runner.config={config}")])
        .args(["--label", &format!("runner.host={host}")])
        .args(["-v", &format!("{0}:{0}", dir.path().display())])
        .args([&image(), "sleep", "infinity"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    recorded_as_created(&String::from_utf8_lossy(&created.stdout), &container);
    let (second, _guard2) = paused_named(&name, dir.path()).await;
    let id = inspect("{{.Id}}");
    assert_eq!(
        second.container_id().as_deref(),
        Some(id.as_str()),
        "not reused"
    );
    let swept = runner_docker::reap_stale_containers(Duration::from_secs(30)).await;
    assert!(
        !swept.removed.contains(&container) && !swept.stopped.contains(&container),
        "{swept}"
    );
    assert_eq!(output(&second, "echo alive").await.1, "alive\n");
    // Released (its owner done with it, the container left in place): the next
    // sweep stops it and keeps it; `remove_reusable` removes it.
    drop(second);
    let claims = std::env::var_os("RUNNER_STATE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(runner_reaper::default_state_dir)
        .join("containers")
        .join(&container);
    let _ = std::fs::remove_dir_all(&claims);
    let swept = runner_docker::reap_stale_containers(Duration::from_secs(30)).await;
    assert!(swept.stopped.contains(&container), "{swept}");
    assert_eq!(containers_named(&container), 1);
    let swept = runner_docker::reap_containers(Duration::from_secs(30), true).await;
    assert!(swept.removed.contains(&container), "{swept}");
    assert_eq!(containers_named(&container), 0);
}

/// Users: the owner of the mounted directory (`with_host_user`) writes files the host
/// user owns; a user the image does not know is a typed error that leaves no
/// container behind.
#[tokio::test]
async fn users_are_the_hosts_or_a_typed_error() {
    if !engine().await {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(4321), Some(4322)).unwrap();
    let mut env = DockerEnvironment::new(&image(), dir.path(), &unique("hostuser"))
        .await
        .unwrap();
    env.with_pause().with_host_user();
    let _guard = Cleanup(env.container_name().to_string());
    env.init().await.unwrap();
    assert_eq!(output(&env, "id -u; id -g").await.1, "4321\n4322\n");
    assert!(output(&env, "echo x > written").await.0.success());
    let meta = std::fs::metadata(dir.path().join("written")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4321, 4322));
    env.shutdown().await.unwrap();

    let mut env = DockerEnvironment::new(&image(), dir.path(), &unique("nouser"))
        .await
        .unwrap();
    env.with_pause().with_user("no-such-user-here");
    let name = env.container_name().to_string();
    let _guard = Cleanup(name.clone());
    let err = env.init().await.unwrap_err();
    assert!(
        matches!(docker_error(&err), DockerError::NoSuchUser { user, .. } if user == "no-such-user-here"),
        "{}",
        err.chain()
    );
    assert_eq!(containers_named(&name), 0);
}

/// A platform the image lacks is a typed error naming it; nothing is left behind.
#[tokio::test]
async fn a_platform_the_image_lacks_is_a_typed_error() {
    if !engine().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut env = DockerEnvironment::new(&image(), dir.path(), &unique("platform"))
        .await
        .unwrap();
    env.with_pause().with_platform("linux/s390x");
    let name = env.container_name().to_string();
    let _guard = Cleanup(name.clone());
    let err = env.init().await.unwrap_err();
    assert!(
        matches!(docker_error(&err), DockerError::PlatformUnavailable { platform, .. } if platform == "linux/s390x"),
        "{}",
        err.chain()
    );
    assert_eq!(containers_named(&name), 0);

    // The image's own platform, as the engine names it or by its usual alias, runs.
    let own = match std::env::consts::ARCH {
        "x86_64" => ["linux/amd64", "linux/x86_64"],
        _ => ["linux/arm64", "linux/aarch64"],
    };
    for platform in own {
        let mut env = DockerEnvironment::new(&image(), dir.path(), &unique("platform-own"))
            .await
            .unwrap();
        env.with_pause().with_platform(platform);
        let _guard = Cleanup(env.container_name().to_string());
        env.init().await.unwrap();
        env.shutdown().await.unwrap();
    }
}

/// Cache volumes outlive their containers, carry runner's labels, and are removed by
/// `remove_cache_volumes` once no container uses them; a bad name is a typed error.
#[tokio::test]
async fn cache_volumes_persist_across_containers() {
    if !engine().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = unique("cache");
    let make = |name: String| {
        let dir = dir.path().to_path_buf();
        let cache = cache.clone();
        async move {
            let mut env = DockerEnvironment::new(&image(), &dir, &name).await.unwrap();
            env.with_pause().with_cache_volume(&cache, "/cache");
            let guard = Cleanup(env.container_name().to_string());
            env.init().await.unwrap();
            (env, guard)
        }
    };
    let (first, _g1) = make(unique("vol-a")).await;
    assert!(output(&first, "echo kept > /cache/f").await.0.success());
    first.shutdown().await.unwrap();
    let (second, _g2) = make(unique("vol-b")).await;
    assert_eq!(output(&second, "cat /cache/f").await.1, "kept\n");
    let volume = format!("runner-cache-{cache}");
    let label = docker_cli()
        .args([
            "volume",
            "inspect",
            "--format",
            "{{index .Labels \"runner.cache\"}}",
            &volume,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), cache);
    // In use: kept.
    let report = runner_docker::remove_cache_volumes().await;
    assert!(
        !report.removed.contains(&format!("volume {volume}")),
        "{report}"
    );
    second.shutdown().await.unwrap();
    let report = runner_docker::remove_cache_volumes().await;
    assert!(
        report.removed.contains(&format!("volume {volume}")),
        "{report}"
    );

    let mut bad = DockerEnvironment::new(&image(), dir.path(), &unique("badvol"))
        .await
        .unwrap();
    bad.with_pause().with_cache_volume("../escape", "/cache");
    let name = bad.container_name().to_string();
    let err = bad.init().await.unwrap_err();
    assert!(
        matches!(docker_error(&err), DockerError::InvalidVolumeName(n) if n == "../escape"),
        "{}",
        err.chain()
    );
    assert_eq!(containers_named(&name), 0);
}

/// `wait_on`: the run lasts while the named program is left in the process's group,
/// even after its own first process and its output are done; through the helper and
/// as plain execs.
#[tokio::test]
async fn wait_on_keeps_a_process_alive_for_the_named_process() {
    if !engine().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for helper in [true, false] {
        let mut env = DockerEnvironment::new(&image(), dir.path(), &unique("waiton"))
            .await
            .unwrap();
        env.with_pause().with_exec_helper(helper);
        let _guard = Cleanup(env.container_name().to_string());
        env.init().await.unwrap();
        assert_eq!(env.exec_helper().await.is_ok(), helper);
        let script = "sleep 2 >/dev/null 2>&1 </dev/null & echo started";
        let running = || async {
            output(
                &env,
                "for d in /proc/[0-9]*; do tr '\\0' ' ' < $d/cmdline 2>/dev/null; echo; done",
            )
            .await
            .1
            .lines()
            .any(|l| l.trim() == "sleep 2")
        };
        // Without wait_on the run ends with the shell; the sleep goes on.
        let mut p = env.new_process("sh", &["-c", script]).await.unwrap();
        p.with_output(Arc::new(runner_core::NullSink));
        assert!(p.run().await.unwrap().success());
        assert!(
            running().await,
            "the detached sleep should still run (helper: {helper})"
        );
        // With it, the run ends only once the sleep is gone.
        let mut p = env.new_process("sh", &["-c", script]).await.unwrap();
        p.with_output(Arc::new(runner_core::NullSink));
        p.wait_on("sleep");
        let t = std::time::Instant::now();
        assert!(p.run().await.unwrap().success());
        assert!(
            !running().await,
            "wait returned while the named process ran (helper: {helper})"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        // A stop ends the named process too, and the run with it.
        let mut p = env
            .new_process(
                "sh",
                &["-c", "sleep 300 >/dev/null 2>&1 </dev/null & echo started"],
            )
            .await
            .unwrap();
        p.with_output(Arc::new(runner_core::NullSink));
        p.wait_on("sleep");
        let p = p.start().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(p.is_running());
        p.stop().await.unwrap();
        assert!(!p.is_running());
        env.shutdown().await.unwrap();
    }
}

/// `init` dropped at any moment (before, during and after the engine's create and
/// start): `shutdown` removes whatever was made, nothing is left.
#[tokio::test]
async fn a_cancelled_init_leaves_no_container_after_shutdown() {
    if !engine().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // How long a whole init takes here, so the cancellations land all over it.
    let mut probe = DockerEnvironment::new(&image(), dir.path(), &unique("cancel-probe"))
        .await
        .unwrap();
    probe.with_pause().with_ephemeral();
    let _probe_guard = Cleanup(probe.container_name().to_string());
    let t = std::time::Instant::now();
    probe.init().await.unwrap();
    let whole = t.elapsed().as_micros() as u64;
    probe.shutdown().await.unwrap();
    let steps = 16u64;
    let mut left_mid_way = 0;
    for (i, micros) in (1..steps).map(|k| whole * k / steps).enumerate() {
        let mut env = DockerEnvironment::new(&image(), dir.path(), &unique(&format!("cancel{i}")))
            .await
            .unwrap();
        env.with_pause().with_ephemeral();
        let name = env.container_name().to_string();
        let _guard = Cleanup(name.clone());
        let cancelled = tokio::time::timeout(Duration::from_micros(micros), env.init())
            .await
            .is_err();
        // A container made and not yet finished when init was dropped.
        if cancelled && containers_named(&name) == 1 {
            left_mid_way += 1;
        }
        env.shutdown().await.unwrap();
        // The engine may still be finishing a create we no longer wait for; the
        // environment waited for it, so the name is free now.
        assert_eq!(containers_named(&name), 0, "cancelled after {micros} µs");
    }
    // The test reached the window it is about (a cancellation after the create).
    assert!(
        left_mid_way > 0,
        "no cancellation landed after the create (init: {whole} µs)"
    );
}
