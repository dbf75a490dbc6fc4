//! Processes through runner's helper in the container (`runner-shim`): the same
//! contract as execs with exact exits, a reader that does not read stalling only its
//! own process, a typed error when the helper dies, the helper bind-mounted where
//! the engine sees this machine's files (so an image without /tmp and a read-only
//! root get it too), and each fallback to plain execs (turned off, an image of
//! another architecture, the helper gone).

mod common;
use common::{docker_cli, docker_error, image, on_podman, Cleanup};

use std::time::Duration;

use runner_core::{CaptureSink, Error, ExitStatus, Proc, RunnerEnvironment};
use runner_docker::{docker_engine_running, DockerEnvironment, DockerError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn engine() -> bool {
    let up = docker_engine_running(Duration::from_secs(3)).await;
    runner_core::testing::engine_gate("a Docker engine", up)
}

async fn env_of(image: &str, name: &str, helper: bool) -> (DockerEnvironment, Cleanup) {
    let mut env =
        DockerEnvironment::new_headless(image, &format!("helper-{name}-{}", std::process::id()))
            .await
            .unwrap();
    env.with_pause().with_exec_helper(helper);
    let guard = Cleanup(env.container_name().to_string());
    env.init().await.unwrap();
    (env, guard)
}

async fn run(env: &DockerEnvironment, script: &str) -> (ExitStatus, String, String, bool) {
    let mut p = env.docker_process("sh", &["-c", script]).unwrap();
    let cap = CaptureSink::new();
    p.with_output(cap.clone());
    let p = p.start().await.unwrap();
    let status = p.wait().await.unwrap();
    (
        status,
        cap.stdout_string(),
        cap.stderr_string(),
        p.via_helper(),
    )
}

#[tokio::test]
async fn processes_run_through_the_helper() {
    if !engine().await {
        return;
    }
    let (env, _guard) = env_of(&image(), "contract", true).await;
    let helper_pid = env.exec_helper().await.expect("the helper runs");
    assert!(helper_pid > 1);

    let (status, out, err, helped) = run(&env, "echo hi; printf e >&2; exit 3").await;
    assert!(helped);
    assert_eq!(
        (status, out.as_str(), err.as_str()),
        (ExitStatus::Exited(3), "hi\n", "e")
    );
    // Exact: a signal the process got is a signal, not the shell's 128+n.
    assert_eq!(run(&env, "kill -TERM $$").await.0, ExitStatus::Signaled(15));

    // The pid in the container is known at start, no /proc scan.
    let p = env.docker_process("sleep", &["1000"]).unwrap();
    let p = p.start().await.unwrap();
    let pid = p.find_pid().await.unwrap().unwrap();
    let (_, listing, _, _) = run(&env, &format!("cat /proc/{pid}/cmdline | tr '\\0' ' '")).await;
    assert_eq!(listing.trim(), "sleep 1000");
    p.signal(runner_core::Signal::Interrupt).await.unwrap();
    assert_eq!(p.wait().await.unwrap(), ExitStatus::Signaled(2));

    // stdin and a raw stdout pipe.
    let mut p = env.docker_process("cat", &[]).unwrap();
    let mut stdin = p.stdin_pipe().unwrap();
    let mut stdout = p.stdout_pipe().unwrap();
    let p = p.start().await.unwrap();
    stdin.write_all(b"through the helper\n").await.unwrap();
    drop(stdin);
    let mut got = String::new();
    stdout.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "through the helper\n");
    assert_eq!(p.wait().await.unwrap(), ExitStatus::Exited(0));

    // With the engine on this host (and a user allowed to open the helper's
    // descriptors, as root is), a stdout pipe is the process's own pipe: no byte goes
    // through the engine's stream. Its "pipe:[inode]" is one of our descriptors.
    let mut p = env
        .docker_process(
            "sh",
            &["-c", "readlink /proc/$$/fd/1; head -c 20000000 /dev/zero"],
        )
        .unwrap();
    let mut stdout = p.stdout_pipe().unwrap();
    let p = p.start().await.unwrap();
    let mut first = Vec::new();
    while !first.ends_with(b"\n") {
        let mut b = [0u8; 1];
        stdout.read_exact(&mut b).await.unwrap();
        first.push(b[0]);
    }
    let link = String::from_utf8(first).unwrap();
    let ours = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|l| l.to_string_lossy() == link.trim());
    // This host's engines (the local dockerd; the Podman pass's service shares this
    // host's pids and files) hand a root owner the helper's pipe itself.
    let local_root = (std::env::var_os("DOCKER_HOST").is_none() || on_podman())
        && std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    assert!(link.starts_with("pipe:["), "{link}");
    assert_eq!(ours, local_root, "{link} among our descriptors");
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).await.unwrap();
    assert!(rest.len() == 20_000_000 && rest.iter().all(|&b| b == 0));
    assert_eq!(p.wait().await.unwrap(), ExitStatus::Exited(0));

    // Likewise requests go straight into the helper's stdin pipe, not through the
    // engine's relay: we hold a writer of it.
    let (_, helper_stdin, _, _) = run(&env, &format!("readlink /proc/{helper_pid}/fd/0")).await;
    let helper_stdin = helper_stdin.trim();
    assert!(helper_stdin.starts_with("pipe:["), "{helper_stdin}");
    let held = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|l| l.to_string_lossy() == helper_stdin);
    assert_eq!(held, local_root, "{helper_stdin} among our descriptors");
    // And its answers come back through a pipe of its own that we read.
    let (_, helper_fds, _, _) = run(
        &env,
        &format!("for f in /proc/{helper_pid}/fd/*; do readlink $f; done"),
    )
    .await;
    let ours: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
    let answers = helper_fds
        .lines()
        .any(|l| l.starts_with("pipe:[") && l != helper_stdin && ours.iter().any(|o| o == l));
    assert_eq!(answers, local_root, "the helper's pipes: {helper_fds}");

    // Bad input: typed, as on every path.
    let p = env.docker_process("no-such-program", &[]).unwrap();
    assert!(matches!(p.start().await, Err(Error::NotFound { .. })));
    let mut p = env.docker_process("true", &[]).unwrap();
    p.with_dir(std::path::Path::new("/no/such/dir"));
    assert!(matches!(p.start().await, Err(Error::DirNotFound(_))));

    // A process whose output nobody reads holds back only itself.
    let mut unread = env
        .docker_process("head", &["-c", "50000000", "/dev/zero"])
        .unwrap();
    let _pipe = unread.stdout_pipe().unwrap();
    let unread = unread.start().await.unwrap();
    let (status, out, _, _) = run(&env, "echo still here").await;
    assert_eq!(
        (status, out.as_str()),
        (ExitStatus::Exited(0), "still here\n")
    );
    assert!(unread.is_running());
    unread.stop().await.unwrap();

    // Many at once, each exact.
    let runs = (0..20).map(|i| {
        let env = &env;
        async move { run(env, &format!("exit {i}")).await.0 }
    });
    let statuses = futures_util::future::join_all(runs).await;
    for (i, s) in statuses.into_iter().enumerate() {
        assert_eq!(s, ExitStatus::Exited(i as i32));
    }
    env.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_dead_helper_is_a_typed_error_and_execs_take_over() {
    if !engine().await {
        return;
    }
    let (env, _guard) = env_of(&image(), "dies", true).await;
    let helper_pid = env.exec_helper().await.unwrap();
    let sleeper = env.docker_process("sleep", &["1000"]).unwrap();
    let sleeper = sleeper.start().await.unwrap();
    // A tree as well: a shell waiting for a child of its own.
    let tree = env
        .docker_process("sh", &["-c", "sleep 1001 & wait"])
        .unwrap();
    let tree = tree.start().await.unwrap();
    // The helper killed from inside the container.
    let p = env
        .docker_process("kill", &["-9", &helper_pid.to_string()])
        .unwrap();
    let _ = p.run().await;
    let err = tokio::time::timeout(Duration::from_secs(30), sleeper.wait())
        .await
        .expect("the wait ends")
        .unwrap_err();
    assert!(
        matches!(docker_error(&err), DockerError::HelperGone { .. }),
        "{err:?}"
    );
    // It says what happened: not "the container stopped", which it did not.
    assert!(
        err.chain()
            .to_string()
            .contains("the helper in the container ended"),
        "{}",
        err.chain()
    );
    assert!(tree.wait().await.is_err());
    assert!(!sleeper.is_running() && !tree.is_running());
    assert!(env.exec_helper().await.is_err());
    // Nothing it ran runs on: processes reported ended are ended.
    let (_, listing, _, _) = run(
        &env,
        "for d in /proc/[0-9]*; do tr '\\0' ' ' < $d/cmdline 2>/dev/null; echo; done",
    )
    .await;
    assert!(
        !listing.contains("sleep 1000") && !listing.contains("sleep 1001"),
        "{listing}"
    );
    let (status, out, _, helped) = run(&env, "echo plain").await;
    assert_eq!(
        (status, out.as_str(), helped),
        (ExitStatus::Exited(0), "plain\n", false)
    );
    env.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_the_helper_processes_are_plain_execs() {
    if !engine().await {
        return;
    }
    // Turned off.
    let (env, _guard) = env_of(&image(), "off", false).await;
    assert!(env.exec_helper().await.unwrap_err().contains("turned off"));
    let (status, out, _, helped) = run(&env, "echo exec").await;
    assert_eq!(
        (status, out.as_str(), helped),
        (ExitStatus::Exited(0), "exec\n", false)
    );
    // The exec path's exception: a signal it did not send is the shell's code.
    assert_eq!(run(&env, "kill -TERM $$").await.0, ExitStatus::Exited(143));
    env.shutdown().await.unwrap();

    // An image without /tmp: the helper cannot be copied; the reason is kept.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("busybox");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "sleep", "true"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let no_tmp = format!("runner-test/no-tmp-{}:latest", std::process::id());
    let imported = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{}' -c . | docker import --change 'ENV PATH=/bin' - {no_tmp}",
            root.display()
        ))
        .output()
        .unwrap();
    assert!(imported.status.success(), "{imported:?}");
    struct RemoveImage(String);
    impl Drop for RemoveImage {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", &self.0])
                .output();
        }
    }
    let _image = RemoveImage(no_tmp.clone());
    // This engine sees this machine's files: the helper is bind-mounted read-only
    // from runner's state directory (nothing copied, so no /tmp needed), and runs.
    // (An engine elsewhere gets it copied into /tmp: the conformance suite's engine
    // elsewhere and over ssh.)
    let (env, _guard2) = env_of(&no_tmp, "no-tmp", true).await;
    assert!(
        env.exec_helper().await.is_ok(),
        "the helper in an image without /tmp"
    );
    let (status, out, _, helped) =
        run(&env, "echo helped; set -- /.runner-helper-*; [ -e \"$1\" ] && echo mounted; [ -d /tmp ] || echo no-tmp").await;
    assert_eq!(
        (status, out.as_str(), helped),
        (ExitStatus::Exited(0), "helped\nmounted\nno-tmp\n", true)
    );
    env.shutdown().await.unwrap();

    // A read-only root filesystem: the mounted helper runs there too.
    let mut env =
        DockerEnvironment::new_headless(&image(), &format!("helper-ro-{}", std::process::id()))
            .await
            .unwrap();
    env.with_pause().with_read_only_root();
    let _guard3 = Cleanup(env.container_name().to_string());
    env.init().await.unwrap();
    assert!(
        env.exec_helper().await.is_ok(),
        "the helper on a read-only root"
    );
    let (status, out, _, helped) =
        run(&env, "echo read-only; touch /x 2>/dev/null || echo ro").await;
    assert_eq!(
        (status, out.as_str(), helped),
        (ExitStatus::Exited(0), "read-only\nro\n", true)
    );
    env.shutdown().await.unwrap();

    // An image of another architecture (here only its metadata says arm64, so its
    // programs still run): the helper is not tried.
    let other = format!("runner-test/other-arch-{}:latest", std::process::id());
    let _image2 = RemoveImage(other.clone());
    let saved = tempfile::tempdir().unwrap();
    let save = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker save '{}' | tar -C '{}' -x",
            image(),
            saved.path().display()
        ))
        .output()
        .unwrap();
    assert!(save.status.success(), "{save:?}");
    let manifest_path = saved.path().join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let config_name = manifest[0]["Config"].as_str().unwrap().to_string();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved.path().join(&config_name)).unwrap()).unwrap();
    let ours = config["architecture"].as_str().unwrap().to_string();
    let foreign = if ours == "arm64" { "amd64" } else { "arm64" };
    config["architecture"] = foreign.into();
    std::fs::remove_file(saved.path().join(&config_name)).unwrap();
    std::fs::write(saved.path().join("other.json"), config.to_string()).unwrap();
    manifest[0]["Config"] = "other.json".into();
    manifest[0]["RepoTags"] = serde_json::json!([other]);
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let _ = std::fs::remove_file(saved.path().join("repositories"));
    let load = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{}' -c . | docker load",
            saved.path().display()
        ))
        .output()
        .unwrap();
    assert!(load.status.success(), "{load:?}");
    let (env, _guard4) = env_of(&other, "arch", true).await;
    let why = env.exec_helper().await.unwrap_err();
    assert!(why.contains(&format!("built for {foreign}")), "{why}");
    let (status, out, _, helped) = run(&env, "echo emulated").await;
    assert_eq!(
        (status, out.as_str(), helped),
        (ExitStatus::Exited(0), "emulated\n", false)
    );
    env.shutdown().await.unwrap();
}

/// `KEY=VALUE` lines as a map.
fn env_map(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A process through the helper gets the environment `docker exec` gives in the same
/// container (HOME, HOSTNAME, the image's and ours), and TERM with a terminal: the
/// helper once passed PATH alone, and gopls, htop and every tool reading `~` failed.
#[tokio::test]
async fn a_helped_process_gets_what_docker_exec_gives() {
    if !engine().await {
        return;
    }
    let (env, _guard) = env_of(&image(), "environ", true).await;
    let (status, helped, _, via_helper) = run(&env, "env").await;
    assert!(via_helper && status.success());
    let out = docker_cli()
        .args(["exec", env.container_name(), "env"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let helped = env_map(&helped);
    let exec = env_map(&String::from_utf8_lossy(&out.stdout));
    // Podman's exec sets no HOSTNAME (the helper's process has it: more, never less).
    let given: &[&str] = if on_podman() {
        &["HOME", "PATH"]
    } else {
        &["HOME", "HOSTNAME", "PATH"]
    };
    for &key in given {
        assert!(
            exec.contains_key(key),
            "docker exec gave no {key}: {exec:?}"
        );
    }
    for (key, value) in &exec {
        assert_eq!(
            helped.get(key),
            Some(value),
            "{key}: {helped:?} against {exec:?}"
        );
    }

    let mut p = env
        .docker_process("sh", &["-c", "echo \"TERM=$TERM\""])
        .unwrap();
    let cap = CaptureSink::new();
    p.with_output(cap.clone());
    p.with_terminal();
    let p = p.start().await.unwrap();
    assert!(p.wait().await.unwrap().success());
    assert!(
        cap.stdout_string().contains("TERM=xterm"),
        "{}",
        cap.stdout_string()
    );
}

/// A language server in the container that checks its editor's `processId` the way
/// vscode-languageserver-node does (`kill(pid, 0)`, again 3 s later) finds it alive,
/// through the helper and as a plain exec: the editor's pid, which does not exist in
/// the container, is replaced by one that lives as long as the session. Such
/// servers exited 3 s after `initialize`.
#[tokio::test]
async fn a_language_servers_process_id_lives_in_the_container() {
    if !engine().await {
        return;
    }
    const SERVER: &str = r#"IFS= read -r header
len=$(printf %s "$header" | tr -dc 0-9)
IFS= read -r blank
body=$(head -c "$len")
pid=$(printf %s "$body" | sed -n 's/.*"processId":\([0-9]*\).*/\1/p')
if kill -0 "$pid" 2>/dev/null; then state=alive; else state=gone; fi
reply="{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"parent\":\"$state\"}}"
printf 'Content-Length: %s\r\n\r\n%s' "${#reply}" "$reply"
sleep 3
kill -0 "$pid" 2>/dev/null"#;
    for helper in [true, false] {
        let (env, _guard) = env_of(&image(), &format!("lsp-{helper}"), helper).await;
        let mut p = env.docker_process("sh", &["-c", SERVER]).unwrap();
        let mut stdin = p.stdin_pipe().unwrap();
        let mut stdout = p.stdout_pipe().unwrap();
        let p = p.start().await.unwrap();
        assert_eq!(p.via_helper(), helper);
        // The editor's own pid: alive here, absent in the container.
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"processId":{},"rootUri":null,"capabilities":{{}}}}}}"#,
            std::process::id()
        );
        let message = format!("Content-Length: {}\r\n\r\n{body}", body.len());
        stdin.write_all(message.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains("}}") {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server said {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.contains(r#""parent":"alive""#),
            "helper {helper}: {got}"
        );
        // Past the server's next check, with the session still open.
        assert_eq!(
            p.wait().await.unwrap(),
            ExitStatus::Exited(0),
            "helper {helper}"
        );
        drop(stdin);
    }
}

/// The helper starts processes itself (`posix_spawn`, not `fork`): each program is
/// still found and run as `execvp` would run it, on the process's own `PATH`, a
/// script without `#!` through `/bin/sh`, a file that cannot run a typed error, and
/// every signal at its default (the helper itself ignores SIGPIPE).
#[tokio::test]
async fn a_helped_process_starts_as_execvp_would() {
    if !engine().await {
        return;
    }
    let (env, _guard) = env_of(&image(), "execvp", true).await;
    let (status, _, err, helped) = run(
        &env,
        "mkdir -p /tmp/own/bin /tmp/work && printf 'echo scripted $1 in $(pwd)\\n' > /tmp/own/bin/plain \
         && chmod 755 /tmp/own/bin/plain && printf x > /tmp/own/bin/noexec && printf x > /tmp/own/bin/true \
         && chmod 644 /tmp/own/bin/noexec /tmp/own/bin/true",
    )
    .await;
    assert!(helped);
    assert_eq!(status, ExitStatus::Exited(0), "{err}");
    let path = |dirs: &str| vec![runner_core::EnvironmentVariable::new("PATH", dirs).unwrap()];

    // Found on the process's own PATH, in the working directory asked for.
    let mut p = env.docker_process("plain", &["arg"]).unwrap();
    p.with_env_vars(path("/no/such:/tmp/own/bin:/bin"));
    p.with_dir(std::path::Path::new("/tmp/work"));
    let cap = CaptureSink::new();
    p.with_output(cap.clone());
    let status = p.start().await.unwrap().wait().await.unwrap();
    assert_eq!(
        (status, cap.stdout_string().as_str()),
        (ExitStatus::Exited(0), "scripted arg in /tmp/work\n"),
        "{}",
        cap.stderr_string()
    );

    // A file that is not executable is passed over on PATH (as execvp does: the
    // next directory's runs), and is a typed error when nothing else is found or
    // when named; a program found nowhere is NotFound.
    let mut p = env.docker_process("true", &[]).unwrap();
    p.with_env_vars(path("/tmp/own/bin:/bin"));
    assert_eq!(
        p.start().await.unwrap().wait().await.unwrap(),
        ExitStatus::Exited(0)
    );
    for (program, dirs) in [
        ("noexec", "/tmp/own/bin:/bin"),
        ("/tmp/own/bin/noexec", "/bin"),
    ] {
        let mut p = env.docker_process(program, &[]).unwrap();
        p.with_env_vars(path(dirs));
        let started = p.start().await;
        assert!(
            matches!(started, Err(Error::NotExecutable { .. })),
            "{program}: {started:?}"
        );
    }
    let mut p = env.docker_process("nowhere", &[]).unwrap();
    p.with_env_vars(path("/tmp/own/bin:/bin"));
    assert!(matches!(p.start().await, Err(Error::NotFound { .. })));

    // Default dispositions: SIGPIPE ends a shell that sends it to itself.
    let (status, out, _, _) = run(&env, "kill -PIPE $$; echo survived").await;
    assert_eq!((status, out.as_str()), (ExitStatus::Signaled(13), ""));
}
