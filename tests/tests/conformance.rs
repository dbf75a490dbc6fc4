//! One conformance suite of the `Proc` / `RunnerEnvironment` contract, run unchanged
//! against every backend (obtained through the companion facade). A backend
//! difference is written down here as a documented, asserted exception.

use std::time::Duration;

use runner_companion::{new_companion_runner, Companion, CompanionOpts, CompanionRunner};
use runner_core::testing::engine_gate;
use runner_core::{Backend, CaptureSink, EnvironmentVariable, Error, ExitStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMAGE: &str = "runner-test/busybox:latest";

struct Fixture {
    tmp: tempfile::TempDir,
}

/// Keeps the ledger out of the real home when the suite runs under a bare
/// `cargo test` (the xtask sets `RUNNER_STATE_DIR` itself and checks it afterwards).
/// Every test calls this first, before anything reads the environment.
fn isolate_state() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUNNER_STATE_DIR").is_none() {
            std::env::set_var(
                "RUNNER_STATE_DIR",
                std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-state"),
            );
        }
    });
}

impl Fixture {
    fn new() -> Fixture {
        isolate_state();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("src/sub")).unwrap();
        std::fs::write(tmp.path().join("src/sub/file.txt"), "in sub\n").unwrap();
        Fixture { tmp }
    }

    fn src(&self) -> std::path::PathBuf {
        self.tmp.path().join("src")
    }

    fn opts(&self, backend: Backend) -> CompanionOpts {
        CompanionOpts {
            name: format!("conformance-{backend}-{}", std::process::id()),
            source_dir: self.src(),
            image: Some(IMAGE.into()),
            preferred_backend: Some(backend),
            user: None,
        }
    }

    fn write_flake(&self) {
        let system = format!("{}-linux", std::env::consts::ARCH);
        std::fs::write(
            self.tmp.path().join("registry.json"),
            r#"{"flakes":[],"version":2}"#,
        )
        .unwrap();
        std::fs::write(
            self.src().join("flake.nix"),
            format!(
                r#"{{ outputs = {{ self }}: {{ devShells.{system}.default = builtins.derivation {{
                    name = "conformance"; system = "{system}"; builder = "/bin/bash";
                    outputs = [ "out" ]; PATH = "/usr/bin:/bin"; }}; }}; }}"#
            ),
        )
        .unwrap();
    }
}

async fn run(c: &Companion, script: &str) -> (ExitStatus, String, String) {
    let mut p = c.new_process("sh", &["-c", script]).await.unwrap();
    let cap = CaptureSink::new();
    p.with_output(cap.clone());
    let status = p.run().await.unwrap();
    (status, cap.stdout_string(), cap.stderr_string())
}

/// The whole contract, against one backend whose source dir is `src`; `plain_exec`
/// for Docker without its in-container helper.
async fn suite(c: &Companion, src: &std::path::Path, plain_exec: bool) {
    let backend = c.backend();

    // Exit codes are statuses.
    assert_eq!(run(c, "exit 0").await.0, ExitStatus::Exited(0));
    assert_eq!(run(c, "exit 3").await.0, ExitStatus::Exited(3));

    // Killed by a signal. EXCEPTION (docker without its helper): the engine reports
    // an exec killed by a signal we did not send as the shell code 128+n; the shell
    // code is the same. Through the helper the status is exact.
    let killed = run(c, "kill -9 $$").await.0;
    match backend {
        Backend::Docker if plain_exec => assert_eq!(killed, ExitStatus::Exited(137)),
        _ => assert_eq!(killed, ExitStatus::Signaled(9)),
    }
    assert_eq!(killed.shell_code(), 137);

    // Output: stdout and stderr apart, exact bytes, no trailing newline needed.
    let (_, out, err) = run(c, "printf 'a\\nb'; printf 'e' >&2").await;
    assert_eq!((out.as_str(), err.as_str()), ("a\nb", "e"));

    // `output()`: status and both streams in one call, bytes as written.
    let out = c
        .new_process("sh", &["-c", "printf 'o\\377'; printf 'e' >&2; exit 4"])
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    assert_eq!(
        (out.status, out.stdout.as_slice(), out.stderr.as_slice()),
        (ExitStatus::Exited(4), &b"o\xff"[..], &b"e"[..])
    );

    // Arguments that are not UTF-8 (a path's bytes): passed exactly on the host; a
    // typed refusal where the backend takes text (Docker's exec API), never mangled.
    {
        use runner_core::RunnerEnvironmentExt;
        use std::os::unix::ffi::OsStrExt;
        let raw = std::ffi::OsStr::from_bytes(b"a\xffb");
        let made = c
            .runner_env()
            .command(
                "sh",
                [std::ffi::OsStr::new("-c"), "printf %s \"$0\"".as_ref(), raw],
            )
            .await;
        match backend {
            Backend::Docker => assert!(
                matches!(&made, Err(runner_core::Error::Spawn { source, .. })
                    if source.kind() == std::io::ErrorKind::InvalidInput),
                "{made:?}"
            ),
            _ => {
                let out = made.unwrap().output().await.unwrap();
                assert_eq!(out.stdout, b"a\xffb");
            }
        }
    }

    // stdin and raw stdout pipes.
    let mut p = c
        .new_process("sh", &["-c", "while read l; do echo got:$l; done"])
        .await
        .unwrap();
    let mut stdin = p.stdin_pipe().unwrap();
    let mut stdout = p.stdout_pipe().unwrap();
    let p = p.start().await.unwrap();
    stdin.write_all(b"one\ntwo\n").await.unwrap();
    drop(stdin);
    let mut got = String::new();
    stdout.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "got:one\ngot:two\n");
    assert!(p.wait().await.unwrap().success());

    // Env layering and append.
    let mut p = c
        .new_process("sh", &["-c", "echo $LAYER:$EXTRA"])
        .await
        .unwrap();
    p.with_env_vars(vec![EnvironmentVariable::new("LAYER", "proc").unwrap()]);
    p.with_env_var_append(EnvironmentVariable::new("EXTRA", "b").unwrap(), ",");
    p.with_env_var_append(EnvironmentVariable::new("EXTRA", "c").unwrap(), ",");
    let cap = CaptureSink::new();
    p.with_output(cap.clone());
    p.run().await.unwrap();
    assert_eq!(cap.stdout_string(), "proc:b,c\n");

    // Working dir: relative to the source dir, the same host path everywhere.
    let mut p = c
        .new_process("sh", &["-c", "pwd; cat file.txt"])
        .await
        .unwrap();
    p.with_dir(std::path::Path::new("sub"));
    let cap = CaptureSink::new();
    p.with_output(cap.clone());
    p.run().await.unwrap();
    assert_eq!(
        cap.stdout_string(),
        format!("{}/sub\nin sub\n", src.display())
    );

    // Stop with grace, waiters in many tasks, stop of an exited process.
    let mut p = c.new_process("sleep", &["30"]).await.unwrap();
    p.with_stop_grace(Duration::from_secs(5));
    let p = p.start().await.unwrap();
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.wait().await.unwrap() })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(20), p.stop())
        .await
        .unwrap()
        .unwrap();
    for w in waiters {
        assert_eq!(w.await.unwrap(), ExitStatus::Signaled(15));
    }
    p.stop().await.unwrap();
    assert_eq!(p.try_status(), Some(ExitStatus::Signaled(15)));
    assert!(!p.is_running());

    // A process that ignores SIGTERM is killed once the grace is over.
    let mut p = c
        .new_process(
            "sh",
            &["-c", "trap '' TERM; echo ready; while :; do sleep 1; done"],
        )
        .await
        .unwrap();
    p.with_stop_grace(Duration::from_millis(300));
    let mut out = p.stdout_pipe().unwrap();
    let p = p.start().await.unwrap();
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready).await.unwrap();
    assert!(p.is_running());
    tokio::time::timeout(Duration::from_secs(20), p.stop())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.try_status(), Some(ExitStatus::Signaled(9)));

    // Stop ends the whole process tree: a shell and the two children it waits for,
    // found afterwards by their exact command line wherever the backend runs them
    // (a command line of this run of the suite alone: a container's processes are
    // this host's too, and the suites of other backends run at the same time).
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let secs = 3001 + RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let sleeper = format!("sleep {secs}");
    let script = format!("{sleeper} & {sleeper} & echo ready; wait");
    let mut p = c.new_process("sh", &["-c", &script]).await.unwrap();
    p.with_stop_grace(Duration::from_secs(10));
    let mut out = p.stdout_pipe().unwrap();
    let p = p.start().await.unwrap();
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready).await.unwrap();
    let scan = "for d in /proc/[0-9]*; do tr '\\0' ' ' < $d/cmdline 2>/dev/null; echo; done";
    let count = |listing: &str| listing.lines().filter(|l| l.trim() == sleeper).count();
    let (_, before, _) = run(c, scan).await;
    assert_eq!(count(&before), 2, "{before}");
    tokio::time::timeout(Duration::from_secs(20), p.stop())
        .await
        .unwrap()
        .unwrap();
    let (_, after, _) = run(c, scan).await;
    assert_eq!(count(&after), 0, "a child outlived stop:\n{after}");

    // A missing binary is a typed error.
    let p = c.new_process("no-such-binary-xyz", &[]).await.unwrap();
    assert!(matches!(p.run().await, Err(Error::NotFound { .. })));

    // 1 MiB lines arrive whole.
    let (_, out, _) = run(c, "i=0; while [ $i -lt 3 ]; do head -c 1048576 /dev/zero | tr '\\0' x; echo; i=$((i+1)); done").await;
    assert_eq!(out.len(), 3 * (1024 * 1024 + 1));
    assert!(out.split('\n').take(3).all(|l| l.len() == 1024 * 1024));

    // Concurrency.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let mut p = c
            .new_process("sh", &["-c", &format!("echo {i}")])
            .await
            .unwrap();
        let cap = CaptureSink::new();
        p.with_output(cap.clone());
        set.spawn(async move { (i, p.run().await.unwrap(), cap.stdout_string()) });
    }
    while let Some(r) = set.join_next().await {
        let (i, status, out) = r.unwrap();
        assert!(status.success());
        assert_eq!(out, format!("{i}\n"));
    }
}

async fn check(fx: &Fixture, c: Companion, expected: Backend) {
    check_path(fx, c, expected, false).await
}

async fn check_path(fx: &Fixture, mut c: Companion, expected: Backend, plain_exec: bool) {
    assert_eq!(c.backend(), expected);
    c.with_pause();
    c.init().await.unwrap();
    suite(&c, &fx.src(), plain_exec).await;
    c.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn native_conforms() {
    let fx = Fixture::new();
    let c = new_companion_runner(fx.opts(Backend::Native))
        .await
        .unwrap();
    check(&fx, c, Backend::Native).await;
}

#[tokio::test(flavor = "current_thread")]
async fn nix_conforms() {
    let fx = Fixture::new();
    if !engine_gate("nix", runner_nix::check_nix_installed()) {
        return;
    }
    fx.write_flake();
    // The facade picks Nix for a flake dir, on auto and when asked.
    let mut auto = fx.opts(Backend::Nix);
    auto.preferred_backend = None;
    auto.image = None;
    assert_eq!(
        new_companion_runner(auto).await.unwrap().backend(),
        Backend::Nix
    );
    assert_eq!(
        new_companion_runner(fx.opts(Backend::Nix))
            .await
            .unwrap()
            .backend(),
        Backend::Nix
    );
    // The suite runs offline: no substituters, an empty registry, no sandbox.
    let registry = fx.tmp.path().join("registry.json");
    let mut nix = runner_nix::NixEnvironment::new(fx.src()).unwrap();
    nix.with_nix_option("substituters", "")
        .with_nix_option("flake-registry", registry.to_str().unwrap())
        .with_nix_option("sandbox", "false");
    check(&fx, Companion::from_nix(nix), Backend::Nix).await;
}

#[tokio::test(flavor = "current_thread")]
async fn docker_conforms() {
    let fx = Fixture::new();
    let up = runner_docker::docker_engine_running(Duration::from_secs(3)).await;
    if !engine_gate("a Docker engine", up) {
        return;
    }
    let c = new_companion_runner(fx.opts(Backend::Docker))
        .await
        .unwrap();
    check(&fx, c, Backend::Docker).await;
}

/// The same contract with every process a plain `docker exec` (the helper off).
#[tokio::test(flavor = "current_thread")]
async fn docker_conforms_with_plain_execs() {
    let fx = Fixture::new();
    let up = runner_docker::docker_engine_running(Duration::from_secs(3)).await;
    if !engine_gate("a Docker engine", up) {
        return;
    }
    let mut env = runner_docker::DockerEnvironment::new(
        IMAGE,
        fx.src(),
        &format!("conformance-plain-{}", std::process::id()),
    )
    .await
    .unwrap();
    env.with_exec_helper(false);
    check_path(&fx, Companion::from_docker(env), Backend::Docker, true).await;
}

/// The same contract on an engine whose pids are not this host's (a dockerd in pid,
/// mount and network namespaces of its own, as Docker Desktop, colima or a remote host
/// is), through the helper and with plain execs: every signal, stop and lookup goes
/// through the engine.
#[tokio::test(flavor = "current_thread")]
async fn docker_conforms_on_an_engine_elsewhere() {
    let fx = Fixture::new();
    let why = runner_tests::foreign_engine::unavailable();
    if let Some(why) = &why {
        eprintln!("foreign engine: {why}");
    }
    if !engine_gate("an engine in its own pid namespace", why.is_none()) {
        return;
    }
    let engine = runner_tests::foreign_engine::ForeignEngine::start(&fx.tmp.path().join("engine"));
    for plain_exec in [false, true] {
        let mut env = runner_docker::DockerEnvironment::with_client(
            engine.engine().await,
            IMAGE,
            Some(&fx.src()),
            &format!("conformance-elsewhere-{plain_exec}-{}", std::process::id()),
        )
        .await
        .unwrap();
        env.with_exec_helper(!plain_exec);
        check_path(
            &fx,
            Companion::from_docker(env),
            Backend::Docker,
            plain_exec,
        )
        .await;
    }
    assert_eq!(engine.runner_containers(), Vec::<String>::new());
}

#[tokio::test]
async fn auto_detection_and_unavailable_preferences() {
    let fx = Fixture::new();
    // Without an image and a flake, auto is native.
    let mut opts = fx.opts(Backend::Native);
    opts.preferred_backend = None;
    opts.image = None;
    let c = new_companion_runner(opts.clone()).await.unwrap();
    assert_eq!(c.backend(), Backend::Native);
    // With an image and an engine, Docker.
    if runner_docker::docker_engine_running(Duration::from_secs(3)).await {
        opts.image = Some(IMAGE.into());
        let c = new_companion_runner(opts.clone()).await.unwrap();
        assert_eq!(c.backend(), Backend::Docker);
        c.shutdown().await.unwrap();
        opts.image = None;
    }
    // Preferring what is not there is an error naming why.
    let mut nix = opts.clone();
    nix.preferred_backend = Some(Backend::Nix);
    let err = new_companion_runner(nix).await.unwrap_err();
    assert!(
        err.chain().contains("nix backend is unavailable"),
        "{}",
        err.chain()
    );
    let mut docker = opts.clone();
    docker.preferred_backend = Some(Backend::Docker);
    let err = new_companion_runner(docker).await.unwrap_err();
    assert!(
        err.chain().contains("no image was given"),
        "{}",
        err.chain()
    );
    // A standalone environment for a container runtime falls back to native.
    let env = runner_companion::resolve_standalone_environment(
        &fx.src(),
        runner_companion::RuntimeKind::Container,
    )
    .unwrap();
    assert_eq!(env.backend(), Backend::Native);
}

/// The companion's `user: Some("host")` runs the Docker backend as the owner of the
/// source directory.
#[tokio::test(flavor = "current_thread")]
async fn a_docker_companion_runs_as_the_source_directorys_owner() {
    let fx = Fixture::new();
    let up = runner_docker::docker_engine_running(Duration::from_secs(3)).await;
    if !engine_gate("a Docker engine", up) {
        return;
    }
    std::os::unix::fs::chown(fx.src(), Some(3456), Some(3457)).unwrap();
    let mut opts = fx.opts(Backend::Docker);
    opts.name = format!("conformance-user-{}", std::process::id());
    opts.user = Some("host".into());
    let mut c = new_companion_runner(opts).await.unwrap();
    c.with_pause();
    c.init().await.unwrap();
    assert_eq!(run(&c, "id -u; id -g").await.1, "3456\n3457\n");
    c.shutdown().await.unwrap();
}
