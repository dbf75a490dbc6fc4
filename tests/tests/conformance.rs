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

    fn opts(&self, backend: Backend, name: &str) -> CompanionOpts {
        CompanionOpts {
            name: format!("conformance-{backend}-{name}-{}", std::process::id()),
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

// The behaviours, each against one backend (`t`).

async fn exit_codes_are_statuses(t: &Target) {
    let c = &t.companion;
    // Exit codes are statuses.
    assert_eq!(run(c, "exit 0").await.0, ExitStatus::Exited(0));
    assert_eq!(run(c, "exit 3").await.0, ExitStatus::Exited(3));
}

async fn a_signal_is_a_status(t: &Target) {
    let c = &t.companion;
    let plain_exec = t.plain_exec;
    let backend = t.companion.backend();
    // Killed by a signal. EXCEPTION (docker without its helper): the engine reports
    // an exec killed by a signal we did not send as the shell code 128+n; the shell
    // code is the same. Through the helper the status is exact.
    let killed = run(c, "kill -9 $$").await.0;
    match backend {
        Backend::Docker if plain_exec => assert_eq!(killed, ExitStatus::Exited(137)),
        _ => assert_eq!(killed, ExitStatus::Signaled(9)),
    }
    assert_eq!(killed.shell_code(), 137);
}

async fn stdout_and_stderr_apart_exact_bytes(t: &Target) {
    let c = &t.companion;
    // Output: stdout and stderr apart, exact bytes, no trailing newline needed.
    let (_, out, err) = run(c, "printf 'a\\nb'; printf 'e' >&2").await;
    assert_eq!((out.as_str(), err.as_str()), ("a\nb", "e"));
}

async fn output_gives_the_status_and_both_streams(t: &Target) {
    let c = &t.companion;
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
}

async fn arguments_that_are_not_utf8(t: &Target) {
    let c = &t.companion;
    let backend = t.companion.backend();
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
}

async fn stdin_and_raw_stdout_pipes(t: &Target) {
    let c = &t.companion;
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
}

async fn env_layering_and_append(t: &Target) {
    let c = &t.companion;
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
}

async fn working_dir_relative_to_the_source_dir(t: &Target) {
    let c = &t.companion;
    let src = t.src.as_path();
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
}

async fn stop_with_grace_and_many_waiters(t: &Target) {
    let c = &t.companion;
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
}

async fn a_process_ignoring_sigterm_is_killed(t: &Target) {
    let c = &t.companion;
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
}

async fn stop_ends_the_whole_tree(t: &Target) {
    let c = &t.companion;
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
    // `ready` comes after both forks, not after both execs: a child may still be
    // the shell (or between the two programs) when the first look comes.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, before, _) = run(c, scan).await;
        if count(&before) == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the two sleeps never ran:\n{before}"
        );
    }
    tokio::time::timeout(Duration::from_secs(20), p.stop())
        .await
        .unwrap()
        .unwrap();
    let (_, after, _) = run(c, scan).await;
    assert_eq!(count(&after), 0, "a child outlived stop:\n{after}");
}

async fn a_missing_binary_is_typed(t: &Target) {
    let c = &t.companion;
    // A missing binary is a typed error.
    let p = c.new_process("no-such-binary-xyz", &[]).await.unwrap();
    let r = p.run().await;
    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
    // A program that writes what an engine writes when it cannot start one (Docker's
    // and Podman's words, short, then 127) is the program: its status, every byte.
    let words = "OCI runtime exec failed: exec: \"x\": executable file not found in $PATH";
    let podman = "Error: runc: exec failed: no such file or directory: OCI runtime attempted to invoke a command that was not found";
    for (script, out, err) in [
        (format!("printf '%s' '{words}' >&2; exit 127"), "", words),
        (format!("printf '%s' '{podman}'; exit 126"), podman, ""),
        (
            format!("printf 'OCI'; printf '{podman}\\n' >&2; exit 127"),
            "OCI",
            &*format!("{podman}\n"),
        ),
    ] {
        let (status, o, e) = run(c, &script).await;
        assert_eq!(
            (status.shell_code(), o.as_str(), e.as_str()),
            (if script.ends_with("126") { 126 } else { 127 }, out, err),
            "{script}"
        );
    }
}

async fn long_lines_arrive_whole(t: &Target) {
    let c = &t.companion;
    // 1 MiB lines arrive whole.
    let (_, out, _) = run(c, "i=0; while [ $i -lt 3 ]; do head -c 1048576 /dev/zero | tr '\\0' x; echo; i=$((i+1)); done").await;
    assert_eq!(out.len(), 3 * (1024 * 1024 + 1));
    assert!(out.split('\n').take(3).all(|l| l.len() == 1024 * 1024));
}

async fn concurrent_processes(t: &Target) {
    let c = &t.companion;
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

/// One backend, initialised, for one behaviour: its companion, its source dir, and
/// whether Docker runs plain execs (its helper off).
struct Target {
    companion: Companion,
    src: std::path::PathBuf,
    plain_exec: bool,
    _fx: Fixture,
}

impl Target {
    async fn new(fx: Fixture, mut companion: Companion, expected: Backend, plain: bool) -> Target {
        assert_eq!(companion.backend(), expected);
        companion.with_pause();
        companion.init().await.unwrap();
        Target {
            companion,
            src: fx.src(),
            plain_exec: plain,
            _fx: fx,
        }
    }

    /// Shuts the backend down (twice: idempotent).
    async fn finish(self) {
        self.companion.shutdown().await.unwrap();
        self.companion.shutdown().await.unwrap();
    }
}

async fn native(name: &str) -> Option<Target> {
    let fx = Fixture::new();
    let c = new_companion_runner(fx.opts(Backend::Native, name))
        .await
        .unwrap();
    Some(Target::new(fx, c, Backend::Native, false).await)
}

/// The nix suite runs offline, in a flake of its own (`_name`: every evaluation is
/// of that one flake).
async fn nix(_name: &str) -> Option<Target> {
    let fx = Fixture::new();
    if !engine_gate("nix", runner_nix::check_nix_installed()) {
        return None;
    }
    fx.write_flake();
    // The suite runs offline: no substituters, an empty registry, no sandbox.
    let registry = fx.tmp.path().join("registry.json");
    let mut nix = runner_nix::NixEnvironment::new(fx.src()).unwrap();
    nix.with_nix_option("substituters", "")
        .with_nix_option("flake-registry", registry.to_str().unwrap())
        .with_nix_option("sandbox", "false");
    Some(Target::new(fx, Companion::from_nix(nix), Backend::Nix, false).await)
}

async fn docker(name: &str) -> Option<Target> {
    let fx = Fixture::new();
    let up = runner_docker::docker_engine_running(Duration::from_secs(3)).await;
    if !engine_gate("a Docker engine", up) {
        return None;
    }
    let c = new_companion_runner(fx.opts(Backend::Docker, name))
        .await
        .unwrap();
    Some(Target::new(fx, c, Backend::Docker, false).await)
}

/// Docker with every process a plain `docker exec` (the helper off).
async fn docker_plain_exec(name: &str) -> Option<Target> {
    let fx = Fixture::new();
    let up = runner_docker::docker_engine_running(Duration::from_secs(3)).await;
    if !engine_gate("a Docker engine", up) {
        return None;
    }
    let mut env = runner_docker::DockerEnvironment::new(
        IMAGE,
        fx.src(),
        &format!("conformance-plain-{name}-{}", std::process::id()),
    )
    .await
    .unwrap();
    env.with_exec_helper(false);
    Some(Target::new(fx, Companion::from_docker(env), Backend::Docker, true).await)
}

/// One test per behaviour and backend, named `<backend>::<behaviour>`: a failure
/// names both, and never hides another behaviour.
macro_rules! conformance {
    ($backend:ident; $($behaviour:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "current_thread")]
                async fn $behaviour() {
                    let Some(t) = super::$backend(stringify!($behaviour)).await else {
                        return;
                    };
                    super::$behaviour(&t).await;
                    t.finish().await;
                }
            )*
        }
    };
}

/// Every behaviour of the contract, listed once: handed to macro `$m` after its own
/// arguments (`$m!(ARGS; behaviour, ...)`).
macro_rules! every_behaviour {
    ($m:ident, $($args:tt)*) => {
        $m! {$($args)*;
            exit_codes_are_statuses,
            a_signal_is_a_status,
            stdout_and_stderr_apart_exact_bytes,
            output_gives_the_status_and_both_streams,
            arguments_that_are_not_utf8,
            stdin_and_raw_stdout_pipes,
            env_layering_and_append,
            working_dir_relative_to_the_source_dir,
            stop_with_grace_and_many_waiters,
            a_process_ignoring_sigterm_is_killed,
            stop_ends_the_whole_tree,
            a_missing_binary_is_typed,
            long_lines_arrive_whole,
            concurrent_processes,
        }
    };
}

every_behaviour!(conformance, native);
every_behaviour!(conformance, nix);
every_behaviour!(conformance, docker);
every_behaviour!(conformance, docker_plain_exec);

/// Runs every behaviour against `$t`, each caught on its own: the failures, named
/// `$path::<behaviour>`.
macro_rules! caught {
    ($t:expr, $path:expr; $($behaviour:ident),* $(,)?) => {{
        use futures_util::FutureExt;
        let mut failed: Vec<String> = Vec::new();
        $(
            let outcome = std::panic::AssertUnwindSafe($behaviour($t)).catch_unwind().await;
            if outcome.is_err() {
                failed.push(format!("{}::{}", $path, stringify!($behaviour)));
            }
        )*
        failed
    }};
}

/// Every behaviour on the engine `connect` gives, through the helper and with plain
/// execs, each caught on its own: the failures, named `<path>::<behaviour>`.
async fn every_behaviour_on<F, Fut>(connect: F, label: &str) -> Vec<String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = runner_docker::Engine>,
{
    let mut failed = Vec::new();
    for plain_exec in [false, true] {
        let fx = Fixture::new();
        let mut env = runner_docker::DockerEnvironment::with_client(
            connect().await,
            IMAGE,
            Some(&fx.src()),
            &format!("conformance-{label}-{plain_exec}-{}", std::process::id()),
        )
        .await
        .unwrap();
        env.with_exec_helper(!plain_exec);
        let t = Target::new(fx, Companion::from_docker(env), Backend::Docker, plain_exec).await;
        let path = if plain_exec { "plain_exec" } else { "helper" };
        failed.extend(every_behaviour!(caught, &t, path));
        t.finish().await;
    }
    failed
}

/// The contract on an engine whose pids are not this host's (a dockerd in pid, mount
/// and network namespaces of its own, as Docker Desktop, colima or a remote host is),
/// through the helper and with plain execs: every signal, stop and lookup goes through
/// the engine. One engine for all behaviours (it takes seconds to start); each
/// behaviour is caught on its own and every failure is named.
#[tokio::test(flavor = "current_thread")]
async fn docker_elsewhere_conforms() {
    let why = runner_tests::foreign_engine::unavailable();
    if let Some(why) = &why {
        eprintln!("foreign engine: {why}");
    }
    if !engine_gate("an engine in its own pid namespace", why.is_none()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = runner_tests::foreign_engine::ForeignEngine::start(&dir.path().join("engine"));
    let failed = every_behaviour_on(|| engine.engine(), "elsewhere").await;
    assert_eq!(engine.runner_containers(), Vec::<String>::new());
    assert!(
        failed.is_empty(),
        "failed on the engine elsewhere: {failed:?}"
    );
}

/// The contract on an engine reached over ssh (`DOCKER_HOST=ssh://…`, the user's own
/// ssh running `docker system dial-stdio` there): a host whose pids, network and
/// engine are its own ([`runner_tests::ssh_host`]), through the helper and with plain
/// execs. No ssh process outlives the environments.
#[tokio::test(flavor = "current_thread")]
async fn docker_over_ssh_conforms() {
    if !runner_tests::ssh_host::gate() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = runner_tests::ssh_host::SshHost::start(&dir.path().join("ssh"));
    // Only this test of this binary reaches an engine over ssh.
    std::env::set_var("RUNNER_SSH_COMMAND", host.ssh_command());
    let endpoint =
        runner_tests::ssh_host::SshHost::docker_host(runner_tests::ssh_host::SshHost::HOST);
    let connect = || async {
        let engine = runner_docker::Engine::connect_to(&endpoint).await.unwrap();
        assert_eq!(engine.endpoint(), endpoint);
        engine
    };
    let failed = every_behaviour_on(connect, "ssh").await;
    assert_eq!(host.engine().runner_containers(), Vec::<String>::new());
    assert!(failed.is_empty(), "failed over ssh: {failed:?}");
    // Every ssh connection closed with its environment.
    let config = dir.path().join("ssh").join("ssh_config");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = runner_tests::ssh_host::processes_naming(&config);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ssh processes left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The facade picks Nix for a flake dir, on auto and when asked.
#[tokio::test(flavor = "current_thread")]
async fn the_facade_picks_nix_for_a_flake() {
    let fx = Fixture::new();
    if !engine_gate("nix", runner_nix::check_nix_installed()) {
        return;
    }
    fx.write_flake();
    let mut auto = fx.opts(Backend::Nix, "auto");
    auto.preferred_backend = None;
    auto.image = None;
    assert_eq!(
        new_companion_runner(auto).await.unwrap().backend(),
        Backend::Nix
    );
    assert_eq!(
        new_companion_runner(fx.opts(Backend::Nix, "asked"))
            .await
            .unwrap()
            .backend(),
        Backend::Nix
    );
}

#[tokio::test]
async fn auto_detection_and_unavailable_preferences() {
    let fx = Fixture::new();
    // Without an image and a flake, auto is native.
    let mut opts = fx.opts(Backend::Native, "auto");
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
    let mut opts = fx.opts(Backend::Docker, "host-user");
    opts.name = format!("conformance-user-{}", std::process::id());
    opts.user = Some("host".into());
    let mut c = new_companion_runner(opts).await.unwrap();
    c.with_pause();
    c.init().await.unwrap();
    assert_eq!(run(&c, "id -u; id -g").await.1, "3456\n3457\n");
    c.shutdown().await.unwrap();
}
