//! The `runner` binary, driven the way a user drives it.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Output, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

struct Cli {
    tmp: tempfile::TempDir,
}

impl Cli {
    fn new() -> Self {
        Cli {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(common::runner_bin());
        c.args(args)
            .env("RUNNER_STATE_DIR", self.tmp.path().join("state"))
            .env("HOME", self.tmp.path())
            .current_dir(self.tmp.path());
        c
    }

    /// `runner ARGS` with an offline nix configuration and a cache of its own.
    fn nix_cmd(&self, nix_config: &str, args: &[&str]) -> Command {
        let mut c = self.cmd(args);
        c.env("NIX_CONFIG", nix_config)
            .env("XDG_CACHE_HOME", self.tmp.path().join("cache"));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Ledger records and spare record files left in the runs directory: `runner`
    /// must leave neither.
    fn records(&self) -> usize {
        std::fs::read_dir(self.tmp.path().join("state/runs"))
            .map(|rd| {
                rd.filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    let name = name.to_string_lossy();
                    name.ends_with(".json") || name.starts_with(".spare-")
                })
                .count()
            })
            .unwrap_or(0)
    }
}

#[test]
fn echo_hello_streams_and_exits_zero() {
    let cli = Cli::new();
    let out = cli.run(&["run", "--", "echo", "hello"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"hello\n");
    assert_eq!(cli.records(), 0);
}

#[test]
fn exit_codes_follow_the_child() {
    let cli = Cli::new();
    let out = cli.run(&["run", "-q", "--", "sh", "-c", "echo oops >&2; exit 42"]);
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(out.stderr, b"oops\n");
    let out = cli.run(&["run", "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(out.status.code(), Some(137));
}

#[test]
fn missing_and_non_executable_commands() {
    let cli = Cli::new();
    let out = cli.run(&["run", "--", "no-such-command-xyz"]);
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-command-xyz") && err.contains("not found"),
        "{err}"
    );

    std::fs::write(cli.tmp.path().join("plain"), "echo hi\n").unwrap();
    let out = cli.run(&["run", "--", "./plain"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not executable"));
}

#[test]
fn bad_flags_and_missing_dir_exit_2() {
    let cli = Cli::new();
    let out = cli.run(&["run", "--nope", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
    let out = cli.run(&["run", "--dir", "/definitely/missing", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let out = cli.run(&["run", "-e", "NOEQUALS", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let out = cli.run(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    // One style: clap's usage errors and runner's own, plain without a terminal.
    let out = cli.run(&["run", "--nope", "--", "true"]);
    assert!(out
        .stderr
        .starts_with(b"runner: error: unexpected argument"));
    // Flags that contradict the backend are usage errors too.
    for args in [
        &["run", "--backend", "native", "--image", "x", "--", "true"][..],
        &["run", "--backend", "nix", "-p", "8080:80", "--", "true"],
        &["run", "--backend", "native", "--user", "host", "--", "true"],
        &["run", "--backend", "docker", "--", "true"],
    ] {
        let out = cli.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("runner: error: "), "{err}");
    }
}

/// `auto` is the default and says what it chose and why, unless -q; -v and
/// RUNNER_LOG/RUST_LOG show the libraries' events.
#[test]
fn decisions_are_said_aloud_and_logs_are_there_on_request() {
    let cli = Cli::new();
    let out = cli.run(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "runner: note: backend native (no --image and no flake.nix; -q hides this)\n"
    );
    let out = cli.run(&["run", "-q", "--", "true"]);
    assert!(out.stderr.is_empty());
    // An image with no engine to run it: said, and the command runs on the host.
    let out = cli
        .cmd(&["run", "--image", "busybox", "--", "echo", "ran"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runner: warning: --image busybox given, but no Docker engine answers at unix:///nonexistent/docker.sock"),
        "{err}"
    );
    assert_eq!(out.stdout, b"ran\n");
    // Logs: -v shows the decision as an event; RUST_LOG and RUNNER_LOG filter.
    let out = cli.run(&["-v", "run", "-q", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runner: info: runner: backend chosen"),
        "{err}"
    );
    for var in ["RUST_LOG", "RUNNER_LOG"] {
        let out = cli
            .cmd(&["run", "-q", "--", "true"])
            .env(var, "runner=info")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("backend chosen"), "{var}: {err}");
    }
    let out = cli
        .cmd(&["run", "-q", "--", "true"])
        .env("RUST_LOG", "runner_docker=info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `doctor --json` and `reap --json`: one JSON object each, in the README's schema.
#[test]
fn doctor_and_reap_speak_json() {
    let cli = Cli::new();
    let out = cli.run(&["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema"], 1);
    let names: Vec<&str> = doc["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    // An engine that answers gets its checks (the init; rootless engines their user).
    if docker_available() {
        assert_eq!(
            names,
            ["native", "docker", "docker-init", "docker-helper", "nix"]
        );
    } else {
        assert_eq!(names, ["native", "docker", "docker-helper", "nix"]);
    }
    assert_eq!(doc["backends"][0]["available"], true);
    assert!(doc["backends"][1]["detail"].is_string());
    assert!(doc["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["name"].is_string() && r["found"].is_boolean()));
    let out = cli.run(&["reap", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let reap: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reap["schema"], 1);
    assert_eq!(reap["process_groups"]["reaped"], serde_json::json!([]));
    assert!(reap["containers"]["removed"].is_array());
    assert!(reap["volumes"].is_null());
}

#[test]
fn env_and_dir_flags() {
    let cli = Cli::new();
    std::fs::create_dir(cli.tmp.path().join("sub")).unwrap();
    let out = cli.run(&[
        "run",
        "--dir",
        "sub",
        "-e",
        "A=1=2",
        "-e",
        "B=two",
        "--",
        "sh",
        "-c",
        "echo $A $B; pwd",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("1=2 two"));
    assert!(lines.next().unwrap().ends_with("/sub"));
}

#[test]
fn stdin_streams_to_the_child() {
    let cli = Cli::new();
    let mut child = cli
        .cmd(&[
            "run",
            "--",
            "sh",
            "-c",
            "while read l; do echo got:$l; done",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // Interactive: each line comes back before the next is sent.
    for word in ["one", "two"] {
        writeln!(stdin, "{word}").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, format!("got:{word}\n"));
    }
    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

fn start_ready(
    cli: &Cli,
    script: &str,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    start_ready_with(cli, &[], script)
}

/// `runner run [flags] -- sh -c script`, once the script printed `ready`.
fn start_ready_with(
    cli: &Cli,
    flags: &[&str],
    script: &str,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut args = vec!["run"];
    args.extend_from_slice(flags);
    args.extend(["--", "sh", "-c", script]);
    start_ready_args(cli, &args)
}

/// `runner ARGS` in a process group of its own, once its command printed `ready`.
fn start_ready_args(
    cli: &Cli,
    args: &[&str],
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    start_ready_stdin(cli, args, Stdio::null())
}

/// [`start_ready_args`] with `stdin` for runner's stdin (a pipe stays in the child).
fn start_ready_stdin(
    cli: &Cli,
    args: &[&str],
    stdin: Stdio,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    use std::os::unix::process::CommandExt;
    let mut child = cli
        .cmd(args)
        .process_group(0)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (child, stdout)
}

#[test]
fn sigterm_is_forwarded_to_the_group() {
    let cli = Cli::new();
    let (mut child, _out) = start_ready(&cli, "trap 'exit 42' TERM; sleep 30 & echo ready; wait");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(42));
    assert_eq!(cli.records(), 0);
}

#[test]
fn sigint_kills_a_default_child_and_exits_130() {
    let cli = Cli::new();
    let (mut child, _out) = start_ready(&cli, "echo ready; exec sleep 30");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
}

#[test]
fn reap_reports_an_empty_ledger() {
    let cli = Cli::new();
    let out = cli.run(&["reap"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 reaped"));
}

/// A flake in `cli`'s directory whose dev shell puts a `uname` of its own on PATH and
/// runs `hook`; and the offline nix configuration to use it with.
fn write_flake(cli: &Cli, hook: &str) -> (std::path::PathBuf, String) {
    let flake = cli.tmp.path().join("flake");
    let tools = cli.tmp.path().join("tools");
    std::fs::create_dir_all(&flake).unwrap();
    std::fs::create_dir_all(&tools).unwrap();
    let tool = tools.join("uname");
    std::fs::write(&tool, "#!/bin/sh\necho shell-uname\n").unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let system = format!("{}-linux", std::env::consts::ARCH);
    std::fs::write(
        flake.join("flake.nix"),
        format!(
            r#"{{ outputs = {{ self }}: {{ devShells.{system}.default = builtins.derivation {{
                name = "cli-shell"; system = "{system}"; builder = "/bin/bash";
                outputs = [ "out" ]; PATH = "{}"; GREETING = "hi";
                shellHook = "{hook}"; }}; }}; }}"#,
            tools.display()
        ),
    )
    .unwrap();
    let nix_config = offline_nix_config(cli.tmp.path());
    (flake, nix_config)
}

/// Running processes whose command line is exactly `argv`.
fn running_with_argv(argv: &[&str]) -> Vec<i32> {
    let mut wanted: Vec<u8> = Vec::new();
    for a in argv {
        wanted.extend_from_slice(a.as_bytes());
        wanted.push(0);
    }
    runner_core::os::processes()
        .into_iter()
        .filter(|p| p.running)
        .filter(|p| runner_core::os::cmdline(p.pid).is_some_and(|c| c == wanted))
        .map(|p| p.pid)
        .collect()
}

/// SIGTERM while `init` materializes the dev shell (its hook is running): runner
/// cancels the setup, ends what it started and exits 143, leaving nothing behind.
#[test]
fn a_signal_during_nix_setup_cancels_it_and_leaves_nothing() {
    if !nix_available() {
        return;
    }
    let cli = Cli::new();
    // The hook says it runs through a FIFO, which the test waits on (an event).
    let fifo = cli.tmp.path().join("hook-started");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let started = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let (flake, nix_config) = write_flake(
        &cli,
        &format!(
            "echo started > {}; sleep 7.25; export HOOKED=yes",
            fifo.display()
        ),
    );
    let mut child = cli
        .nix_cmd(
            &nix_config,
            &[
                "run",
                "--backend",
                "nix",
                "--dir",
                flake.to_str().unwrap(),
                "--",
                "true",
            ],
        )
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let hook = ["sleep", "7.25"];
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&started),
        nix::poll::PollFlags::POLLIN,
    )];
    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(60_000u16)).unwrap();
    assert_eq!(
        ready,
        1,
        "the shell hook never ran (runner: {:?})",
        child.try_wait()
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_or_kill(&mut child, 20, "runner signalled during nix setup");
    assert_eq!(status.code(), Some(143));
    assert_eq!(running_with_argv(&hook), Vec::<i32>::new());
    assert_eq!(cli.records(), 0);
}

#[test]
fn nix_backend_runs_in_the_dev_shell_with_the_same_exit_rules() {
    if !nix_available() {
        return;
    }
    let cli = Cli::new();
    let (flake, nix_config) = write_flake(&cli, "export HOOKED=yes");
    let run = |args: &[&str]| {
        cli.nix_cmd(&nix_config, args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let dir = flake.to_str().unwrap();
    let out = run(&[
        "run",
        "--backend",
        "nix",
        "--dir",
        dir,
        "--",
        "sh",
        "-c",
        "echo $GREETING $HOOKED; uname",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hi yes\nshell-uname\n");
    // The materialized shell was cached in the user's cache directory (one entry,
    // with its GC root: a nix profile and its generation).
    let mut cached: Vec<String> = std::fs::read_dir(cli.tmp.path().join("cache/runner/nix"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cached.sort();
    assert_eq!(
        cached
            .iter()
            .map(|n| n.rsplit_once('.').map_or("", |(_, ext)| ext))
            .collect::<Vec<_>>(),
        ["json", "profile", "profile-1-link"]
    );
    let out = run(&[
        "run",
        "--backend",
        "nix",
        "--dir",
        dir,
        "--",
        "sh",
        "-c",
        "exit 9",
    ]);
    assert_eq!(out.status.code(), Some(9));
    let out = run(&[
        "run",
        "--backend",
        "nix",
        "--dir",
        dir,
        "--",
        "not-in-the-shell",
    ]);
    assert_eq!(out.status.code(), Some(127));
    // auto picks nix for a flake directory.
    let out = run(&["run", "--backend", "auto", "--dir", dir, "--", "uname"]);
    assert_eq!(out.stdout, b"shell-uname\n");
    // A broken flake: the last good cached shell runs, with a warning naming nix's
    // error.
    std::fs::write(flake.join("flake.nix"), "{ this is not nix").unwrap();
    let out = run(&["run", "--backend", "nix", "--dir", dir, "--", "uname"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"shell-uname\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "runner: warning: dev shell evaluation failed; using the last good cached env"
        ) && err.contains("syntax error"),
        "{err}"
    );
    assert_eq!(cli.records(), 0);
}

#[test]
fn nix_backend_errors_name_the_reason() {
    let cli = Cli::new();
    // No flake.nix (checked whether or not nix is installed).
    let out = cli
        .cmd(&["run", "--backend", "nix", "--", "true"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nix is not installed"));
    if which_nix() {
        let out = cli.run(&["run", "--backend", "nix", "--", "true"]);
        assert_eq!(out.status.code(), Some(125));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no flake.nix"));
    }
}

/// The flags of every backend a behaviour is checked on: native always, docker when
/// an engine runs.
fn backend_flags() -> Vec<Vec<&'static str>> {
    let mut backends = vec![vec![]];
    if docker_available() {
        backends.push(vec!["--backend", "docker", "--image", IMAGE]);
    }
    backends
}

fn runner_containers(pid: u32) -> usize {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("name=runner-run-{pid}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// `-p HOST:CONTAINER` on the docker backend: the port answers on this machine's
/// loopback (tunnelled through the helper) and runner says so, unless `-q`.
#[test]
fn a_tunnelled_port_answers_and_is_said_aloud() {
    if !docker_available() {
        return;
    }
    let cli = Cli::new();
    let port = runner_core::find_free_port().unwrap();
    let mapping = format!("{port}:8080");
    // The command serves one request (busybox nc) and ends.
    let server = "printf 'HTTP/1.0 200 OK\\r\\n\\r\\nthrough the tunnel' | nc -l -p 8080";
    for quiet in [false, true] {
        let mut args = vec![
            "run",
            "--backend",
            "docker",
            "--image",
            IMAGE,
            "-p",
            &mapping,
        ];
        if quiet {
            args.push("-q");
        }
        args.extend(["--", "sh", "-c", server]);
        let mut child = cli
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let body = loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                let mut body = String::new();
                let _ = std::io::Read::read_to_string(&mut s, &mut body);
                if body.contains("through the tunnel") {
                    break body;
                }
            }
            // runner ended, or the time is up: what it said is the answer.
            let ended = child.try_wait().unwrap().is_some();
            if ended || std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the port never answered (runner {}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert!(body.starts_with("HTTP/1.0 200"), "{body}");
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let err = String::from_utf8_lossy(&out.stderr);
        let note = format!(
            "runner: note: 127.0.0.1:{port} reaches the container's port 8080 through runner's helper"
        );
        assert_eq!(err.contains(&note), !quiet, "quiet {quiet}: {err}");
    }
}

/// `runner run` on an engine over ssh that does not see the project (an empty tmpfs
/// over it in the engine's mount namespace): the project is synced, said aloud
/// (unless `-q`); the command reads what is here, and what it writes there (a code
/// generator's output) is here once `runner run` has returned.
#[test]
fn a_project_the_engine_does_not_see_is_synced_by_runner_run() {
    use runner_tests::ssh_host::SshHost;
    if !runner_tests::ssh_host::gate() {
        return;
    }
    let cli = Cli::new();
    let host = SshHost::start(&cli.tmp.path().join("ssh"));
    let project = cli.tmp.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("schema.txt"), "user\n").unwrap();
    host.engine().hide(&project);
    for (quiet, out_dir) in [(false, "gen"), (true, "gen-quiet")] {
        let script = format!(
            "mkdir -p {out_dir} && sed 's/^/type /' schema.txt > {out_dir}/types.go && cat {out_dir}/types.go"
        );
        let mut args = vec!["run", "--backend", "docker", "--image", IMAGE];
        if quiet {
            args.push("-q");
        }
        args.extend(["--", "sh", "-c", &script]);
        let out = cli
            .cmd(&args)
            .current_dir(&project)
            .env("DOCKER_HOST", SshHost::docker_host(SshHost::HOST))
            .env("RUNNER_SSH_COMMAND", host.ssh_command())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "type user\n");
        assert_eq!(
            std::fs::read_to_string(project.join(out_dir).join("types.go")).unwrap(),
            "type user\n",
            "the generated file is not here"
        );
        let note = format!(
            "runner: note: {} is synced with the container",
            project.display()
        );
        assert_eq!(err.contains(&note), !quiet, "quiet {quiet}: {err}");
    }
    assert_eq!(host.engine().runner_containers(), Vec::<String>::new());
}

#[test]
fn docker_backend_runs_in_a_container_and_removes_it() {
    if !docker_available() {
        return;
    }
    let cli = Cli::new();
    std::fs::write(cli.tmp.path().join("marker"), "on the host\n").unwrap();
    let dir = cli.tmp.path().to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let mut child = cli
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // A run that ends without reading its input (a usage error, a missing
        // program) may close it before this write: runner now starts in about 2.5 ms.
        match child.stdin.take().unwrap().write_all(b"from stdin\n") {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            written => written.unwrap(),
        }
        (child.wait_with_output().unwrap(), pid)
    };
    let (out, pid) = run(&[
        "run",
        "--backend",
        "docker",
        "--image",
        IMAGE,
        "--dir",
        &dir,
        "-e",
        "K=v",
        "--",
        "sh",
        "-c",
        "cat marker; echo $K; cat; exit 5",
    ]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"on the host\nv\nfrom stdin\n");
    assert_eq!(runner_containers(pid), 0);
    let (out, _) = run(&[
        "run",
        "--backend",
        "docker",
        "--image",
        IMAGE,
        "--",
        "no-such-binary",
    ]);
    assert_eq!(out.status.code(), Some(127));
    // A usage error, like any other missing flag.
    let (out, _) = run(&["run", "--backend", "docker", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--image is required"));
    let (out, _) = run(&[
        "run",
        "--backend",
        "docker",
        "--image",
        "runner-test/nope:1",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not available"));
}

#[test]
fn docker_backend_forwards_sigterm() {
    if !docker_available() {
        return;
    }
    let cli = Cli::new();
    let (mut child, _out) = start_ready_with(
        &cli,
        &["--backend", "docker", "--image", IMAGE],
        "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done",
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(42));
    assert_eq!(runner_containers(child.id()), 0);
}

/// A runtime whose version command fails (a rustup proxy without a toolchain) is
/// found, with no version and the failure said; Go is asked `go version`, which is
/// the command it knows. The error text once showed as the version.
#[test]
fn doctor_does_not_take_an_error_for_a_version() {
    use std::os::unix::fs::PermissionsExt;
    let cli = Cli::new();
    let bin = cli.tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, script) in [
        (
            "cargo",
            "#!/bin/sh\necho 'error: rustup could not choose a version of cargo to run' >&2\nexit 1\n",
        ),
        (
            "go",
            "#!/bin/sh\n[ \"$1\" = version ] && { echo 'go version go1.22.1 linux/amd64'; exit 0; }\necho \"flag provided but not defined: $1\" >&2\nexit 2\n",
        ),
    ] {
        let path = bin.join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let out = cli
        .cmd(&["doctor", "--json"])
        .env("PATH", &path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runtime = |name: &str| {
        report["runtimes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    let rust = runtime("Rust");
    assert_eq!(rust["found"], true);
    assert!(rust["version"].is_null(), "{rust}");
    assert!(
        rust["version_error"]
            .as_str()
            .is_some_and(|e| e.contains("rustup could not choose")),
        "{rust}"
    );
    assert_eq!(runtime("Go")["version"], "go version go1.22.1 linux/amd64");
    let text = cli
        .cmd(&["doctor"])
        .env("PATH", &path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    let line = text.lines().find(|l| l.starts_with("Rust")).unwrap();
    assert!(line.contains("its version command failed"), "{line}");
}

#[test]
fn doctor_reports_every_backend() {
    let cli = Cli::new();
    let out = cli.run(&["doctor"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for backend in ["native", "docker", "nix"] {
        assert!(
            text.lines().any(|l| l.starts_with(backend)),
            "{backend} missing from:\n{text}"
        );
    }
    assert!(
        text.lines().any(|l| l.starts_with("native   yes")),
        "{text}"
    );
    // The in-container helper this build carries (Linux builds embed it).
    assert!(
        text.lines()
            .any(|l| l.starts_with("  helper yes") && l.contains("runner-shim for linux/")),
        "{text}"
    );
    // The engine by its own name: Docker's says `Engine` of itself (Podman's service
    // says `Podman Engine`).
    if docker_available() {
        let docker = text.lines().find(|l| l.starts_with("docker")).unwrap();
        let engine = match std::env::var("RUNNER_TEST_ENGINE").as_deref() {
            Ok("podman") => "Podman Engine ",
            _ => "Docker Engine ",
        };
        assert!(docker.contains(&format!("yes        {engine}")), "{docker}");
        // What the engine needs of its host, checked: an init for paused containers.
        assert!(
            text.lines()
                .any(|l| l.starts_with("  init   yes")
                    && l.contains("gives paused containers an init")),
            "{text}"
        );
    }
    // Without an engine at DOCKER_HOST, docker says why.
    let out = cli
        .cmd(&["doctor"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let docker = text.lines().find(|l| l.starts_with("docker")).unwrap();
    assert!(docker.contains(" no "), "{docker}");
    // `runner run` on that engine: one line naming it, and the hint.
    let out = cli
        .cmd(&["run", "--backend", "docker", "--image", IMAGE, "--", "true"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("unix:///nonexistent/docker.sock") && err.contains("`runner doctor`"),
        "{err}"
    );
    // It names the endpoint, what chose it, and what is wrong there.
    assert!(
        docker.contains("unix:///nonexistent/docker.sock")
            && docker.contains("from DOCKER_HOST")
            && docker.contains("socket does not exist"),
        "{docker}"
    );
}

#[test]
fn doctor_says_when_nix_cannot_build() {
    if !nix_available() || !nix::unistd::geteuid().is_root() {
        return;
    }
    let cli = Cli::new();
    let nix_line = |config: Option<&str>| {
        let mut cmd = cli.cmd(&["doctor"]);
        if let Some(c) = config {
            cmd.env("NIX_CONFIG", c);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("nix "))
            .unwrap_or_else(|| panic!("no nix line in:\n{text}"))
            .to_string()
    };
    let broken = nix_line(Some("build-users-group = runner-no-such-group"));
    assert!(broken.starts_with("nix      no "), "{broken}");
    assert!(
        broken.contains("cannot build") && broken.contains("runner-no-such-group"),
        "{broken}"
    );
    if !std::path::Path::new("/nix/var/nix/daemon-socket/socket").exists() {
        let daemonless = nix_line(Some("store = daemon"));
        assert!(
            daemonless.starts_with("nix      no ") && daemonless.contains("daemon"),
            "{daemonless}"
        );
    }
    assert!(nix_line(None).starts_with("nix      yes "));
}

#[test]
fn quiet_runs_print_only_the_command_output() {
    let cli = Cli::new();
    let out = cli.run(&["run", "--quiet", "--", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
}

/// Waits for `child` up to `secs` (woken by its exit); kills it (and its group) and
/// panics when it does not end in time.
fn wait_or_kill(
    child: &mut std::process::Child,
    secs: u64,
    what: &str,
) -> std::process::ExitStatus {
    runner_core::testing::wait_within(child, std::time::Duration::from_secs(secs))
        .unwrap_or_else(|| panic!("{what} did not end within {secs} s"))
}

/// When runner's stdout closes, the command sees the broken pipe, as under a shell.
#[test]
fn yes_piped_into_head_ends() {
    use std::os::unix::process::CommandExt;
    let cli = Cli::new();
    let runner = common::runner_bin();
    let mut backends = vec![""];
    if docker_available() {
        backends.push("--backend docker --image runner-test/busybox:latest");
    }
    for flags in backends {
        let mut child = Command::new("sh")
            .args([
                "-c",
                &format!("'{runner}' run --quiet {flags} -- yes | head -1"),
            ])
            .env("RUNNER_STATE_DIR", cli.tmp.path().join("state"))
            .env("HOME", cli.tmp.path())
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_or_kill(
            &mut child,
            60,
            &format!("`runner run {flags} -- yes | head -1`"),
        );
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        assert!(status.success(), "{flags}: {status}");
        assert_eq!(out, "y\n", "{flags}");
        assert_eq!(cli.records(), 0);
    }
}

/// A command that floods stdout while nothing reads runner's stdout: SIGTERM still
/// reaches it and runner ends (no runtime worker is stuck in a blocking write).
#[test]
fn sigterm_while_nobody_reads_stdout_ends_runner() {
    let cli = Cli::new();
    let (mut child, stdout) = start_ready(&cli, "echo ready; exec yes");
    // Nobody reads from here on. Wait until runner's stdout pipe is full, so its
    // writer is blocked for certain before the signal (FIONREAD: bytes buffered).
    let fd = std::os::fd::AsRawFd::as_raw_fd(stdout.get_ref());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut buffered: nix::libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        assert_eq!(
            unsafe { nix::libc::ioctl(fd, nix::libc::FIONREAD, &mut buffered) },
            0
        );
        if buffered >= 60 * 1024 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pipe never filled"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_or_kill(&mut child, 30, "runner with a blocked stdout");
    drop(stdout);
    assert_eq!(status.code(), Some(143));
    assert_eq!(cli.records(), 0);
}

/// A runs directory that is a symlink is refused for spawning as the sweep refuses
/// it, and runner says so.
#[test]
fn a_symlinked_ledger_is_refused_and_reported() {
    let cli = Cli::new();
    let elsewhere = cli.tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(cli.tmp.path().join("state")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, cli.tmp.path().join("state/runs")).unwrap();
    let out = cli.run(&["run", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("start-up sweep failed"), "{err}");
    assert!(err.contains("refusing to use ledger directory"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// `runner run -- runner run -- sh …` with the outer runner SIGKILLed: the inner
/// runner's start-up sweep must not take the outer's record of it, so `runner reap`
/// ends all four processes.
#[test]
fn nested_runners_are_reaped_after_the_outer_is_killed() {
    let cli = Cli::new();
    let runner = common::runner_bin();
    let (mut outer, _stdout) = start_ready_args(
        &cli,
        &[
            "run",
            "--quiet",
            "--",
            runner,
            "run",
            "--quiet",
            "--",
            "sh",
            "-c",
            "sleep 300 & sleep 300 & echo ready; wait",
        ],
    );
    let groups: Vec<i32> = std::fs::read_dir(cli.tmp.path().join("state/runs"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json")?.split('.').next()?.parse().ok()
        })
        .collect();
    assert_eq!(groups.len(), 2, "{groups:?}");
    kill(Pid::from_raw(outer.id() as i32), Signal::SIGKILL).unwrap();
    outer.wait().unwrap();
    let reap = cli.run(&["reap"]);
    let text = String::from_utf8_lossy(&reap.stdout);
    assert_eq!(reap.status.code(), Some(0), "{text}");
    let running: Vec<i32> = runner_core::os::processes()
        .into_iter()
        .filter(|p| groups.contains(&p.pgid) && p.running)
        .map(|p| p.pid)
        .collect();
    for pgid in &groups {
        let _ = nix::sys::signal::killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
    }
    assert_eq!(running, Vec::<i32>::new(), "{text}");
    assert_eq!(cli.records(), 0, "{text}");
}

/// SIGTERM at every moment of a Docker launch (the sweep, the create, the start, the
/// exec): runner exits 143 and no container of it is left.
#[test]
fn a_signal_during_docker_setup_leaves_no_container() {
    if !docker_available() {
        return;
    }
    let cli = Cli::new();
    let dir = cli.tmp.path().to_str().unwrap().to_string();
    for delay_ms in [0u64, 20, 40, 80, 120, 160, 240, 400] {
        let mut child = cli
            .cmd(&[
                "run",
                "--quiet",
                "--backend",
                "docker",
                "--image",
                IMAGE,
                "--dir",
                &dir,
                "--",
                "sleep",
                "30",
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let status = wait_or_kill(&mut child, 60, "runner signalled during docker setup");
        // Before runner's handlers exist (process start-up) the default disposition
        // ends it; nothing has been created then.
        use std::os::unix::process::ExitStatusExt;
        assert!(
            status.code() == Some(143) || status.signal() == Some(15),
            "after {delay_ms} ms: {status}"
        );
        assert_eq!(runner_containers(child.id()), 0, "after {delay_ms} ms");
    }
    assert_eq!(cli.records(), 0);
}

/// A host variable whose value is not UTF-8 reaches the command byte for byte.
#[test]
fn non_utf8_host_variables_pass_through() {
    use std::os::unix::ffi::OsStrExt;
    let cli = Cli::new();
    let out = cli
        .cmd(&[
            "run",
            "--quiet",
            "--",
            "sh",
            "-c",
            "printf %s \"$ODD\" | od -An -tx1",
        ])
        .env("ODD", std::ffi::OsStr::from_bytes(b"a\xff\xfeb"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let hex: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(hex, ["61", "ff", "fe", "62"]);
}

/// `--user host`: what the command writes into DIR belongs to DIR's owner, not root;
/// a user the image lacks is a clear error (125) and leaves no container.
#[test]
fn docker_user_host_writes_files_the_directory_owner_owns() {
    if !docker_available() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let cli = Cli::new();
    let dir = cli.tmp.path().join("project");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(2345), Some(2346)).unwrap();
    let d = dir.to_str().unwrap();
    let args = |user: &'static str| {
        vec![
            "run",
            "--backend",
            "docker",
            "--image",
            IMAGE,
            "--dir",
            d,
            "--user",
            user,
            "--",
            "sh",
            "-c",
            "id -u; echo x > out",
        ]
    };
    let child = cli
        .cmd(&args("host"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"2345\n");
    let meta = std::fs::metadata(dir.join("out")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (2345, 2346));
    assert_eq!(runner_containers(pid), 0);
    let child = cli
        .cmd(&args("nobody-here"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("nobody-here") && err.contains("does not exist in the image"),
        "{err}"
    );
    assert_eq!(runner_containers(pid), 0);
}

/// A signal to a Docker run reaches the command's whole process tree (it used to
/// reach the exec's own pid only, and the rest died only with the container, tens of
/// seconds later). Each child says so itself: its TERM trap writes to the mounted
/// directory, which a SIGKILL at container removal would never let it do. runner
/// exits 143 and leaves no container and no process of the tree.
#[test]
fn a_signal_to_a_docker_run_reaches_the_whole_tree() {
    if !docker_available() {
        return;
    }
    let cli = Cli::new();
    let mut child = docker_run_until_ready(
        &cli,
        // Ready once each child says its trap is set (through a FIFO held open): a
        // child that had not yet run `trap` when the signal came could not say it.
        "mkfifo up; exec 3<>up; \
         for i in 1 2; do (trap 'echo $i >> ended; exit 0' TERM; echo $i >&3; sleep 3002 & wait) & done; \
         read a <&3; read b <&3; echo ready; wait",
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_or_kill(&mut child, 60, "runner after SIGTERM on a docker run");
    assert_eq!(status.code(), Some(143), "{status}");
    let mut ended: Vec<String> = std::fs::read_to_string(cli.tmp.path().join("ended"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    ended.sort();
    assert_eq!(ended, ["1", "2"], "a child did not get the signal");
    assert_eq!(runner_containers(child.id()), 0);
    assert_eq!(running_with_argv(&["sleep", "3002"]), Vec::<i32>::new());
}

/// A Docker run that is SIGKILLed (as Emacs ends its language servers) leaves no
/// container up: its helper sees its owner gone, ends what it started and stops the
/// container, which the engine removes. Nothing waits for a later sweep.
#[test]
fn a_killed_docker_runs_container_goes_by_itself() {
    if !docker_available() {
        return;
    }
    let cli = Cli::new();
    let mut child = docker_run_until_ready(&cli, "echo ready; sleep 300");
    assert_eq!(runner_containers(child.id()), 1);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    wait_for(20, "the killed run's container to go", || {
        runner_containers(child.id()) == 0
    });
}

/// A dead owner's container that did not go by itself (its helper was stopped when
/// the owner was SIGKILLed) is removed by the next `runner run`'s start-up sweep,
/// which finishes before runner exits, however short its command (it used to be
/// dropped half-way at the exit).
#[test]
fn the_next_run_removes_a_killed_docker_runs_container() {
    if !docker_available() {
        return;
    }
    let cli = Cli::new();
    let mark = format!("next-run-{}", std::process::id());
    let mut child = docker_run_until_ready(&cli, &format!("echo ready; sleep 300; : {mark}"));
    // The helper (the command's parent) is stopped, from here: it cannot end the
    // container when its owner goes.
    let helper = marked(&mark)
        .into_iter()
        .filter(|pid| *pid != child.id())
        .find_map(|pid| stat_of(pid).map(|(_, parent)| parent))
        .expect("the command's parent");
    kill(Pid::from_raw(helper as i32), Signal::SIGSTOP).unwrap();
    wait_for(30, "the helper to stop", || {
        stat_of(helper).is_some_and(|(state, _)| state == 'T')
    });
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert_eq!(
        runner_containers(child.id()),
        1,
        "the killed run left no container?"
    );
    // The next run, on any backend, however short.
    let out = cli.run(&["run", "--quiet", "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(runner_containers(child.id()), 0);
    // Its process groups went with the next run's start-up sweep.
    assert_eq!(cli.records(), 0);
}

/// `runner run --backend docker -- sh -c SCRIPT` in the CLI's temp dir, returned once
/// SCRIPT printed `ready` (its stdout is then no longer read).
fn docker_run_until_ready(cli: &Cli, script: &str) -> std::process::Child {
    let dir = cli.tmp.path().to_str().unwrap().to_string();
    let mut child = cli
        .cmd(&[
            "run",
            "--quiet",
            "--backend",
            "docker",
            "--image",
            IMAGE,
            "--dir",
            &dir,
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "ready\n");
    child
}

/// A JSON-RPC server in plain `sh` (it runs on the host, in a nix shell and in a
/// busybox container alike): `Content-Length` framed requests in, framed replies out,
/// no body ends with a newline. `dd bs=1` reads exactly the body, nothing more.
const JSONRPC_SERVER: &str = r#"cr=$(printf '\r')
while IFS= read -r line; do
  line=${line%"$cr"}
  case "$line" in
    Content-Length:*) n=${line#Content-Length: } ;;
    "") body=$(dd bs=1 count="$n" 2>/dev/null)
        id=${body#*\"id\":}; id=${id%%[,\}]*}
        reply="{\"jsonrpc\":\"2.0\",\"id\":$id,\"result\":\"pong $id\"}"
        printf 'Content-Length: %d\r\n\r\n%s' "${#reply}" "$reply" ;;
  esac
done"#;

/// Reads from `from` on a thread of its own, handing each read's bytes over.
fn reader(mut from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects bytes from `rx` until `have` holds `want` (or fails after 60 s).
fn read_until(rx: &std::sync::mpsc::Receiver<Vec<u8>>, have: &mut Vec<u8>, want: &[u8]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !have.windows(want.len()).any(|w| w == want) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(bytes) => have.extend_from_slice(&bytes),
            Err(_) => panic!(
                "waited for {:?}, got {:?}: output held back?",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(have)
            ),
        }
    }
}

/// Two framed JSON-RPC round trips (each reply is awaited before the next request:
/// a reply held back until a newline deadlocks here), then a prompt without a newline.
fn framed_exchange_and_prompt(mut runner: Command) {
    let mut child = runner
        .args(["--", "sh", "-c", JSONRPC_SERVER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = child.stdin.take().unwrap();
    let from = reader(child.stdout.take().unwrap());
    let mut got = Vec::new();
    for id in 1..=2 {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
        write!(to, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        to.flush().unwrap();
        let reply = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":"pong {id}"}}"#);
        let framed = format!("Content-Length: {}\r\n\r\n{reply}", reply.len());
        read_until(&from, &mut got, framed.as_bytes());
    }
    drop(to);
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    // Nothing but the two replies came out.
    assert!(!got.ends_with(b"\n"));

    // A prompt: it shows before the answer is typed.
    let mut args: Vec<String> = runner
        .get_args()
        .map(|a| a.to_string_lossy().into())
        .collect();
    let dashes = args.iter().position(|a| a == "--").unwrap();
    args.truncate(dashes);
    let mut child = Command::new(runner.get_program())
        .args(&args)
        .args([
            "--",
            "sh",
            "-c",
            r#"printf 'name? '; read name; echo "hi $name""#,
        ])
        .envs(runner.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .current_dir(runner.get_current_dir().unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = child.stdin.take().unwrap();
    let from = reader(child.stdout.take().unwrap());
    let mut got = Vec::new();
    read_until(&from, &mut got, b"name? ");
    to.write_all(b"bob\n").unwrap();
    drop(to);
    read_until(&from, &mut got, b"hi bob\n");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn output_is_streamed_as_bytes_native() {
    let cli = Cli::new();
    framed_exchange_and_prompt(cli.cmd(&["run", "-q", "--backend", "native"]));
}

#[test]
fn output_is_streamed_as_bytes_docker() {
    if !docker_available() {
        return;
    }
    let cli = Cli::new();
    framed_exchange_and_prompt(cli.cmd(&["run", "-q", "--backend", "docker", "--image", IMAGE]));
}

#[test]
fn output_is_streamed_as_bytes_nix() {
    if !nix_available() {
        return;
    }
    let cli = Cli::new();
    let (flake, nix_config) = write_flake(&cli, "");
    framed_exchange_and_prompt(cli.nix_cmd(
        &nix_config,
        &[
            "run",
            "-q",
            "--backend",
            "nix",
            "--dir",
            flake.to_str().unwrap(),
        ],
    ));
}

/// A runner inside a sandbox with a pid namespace of its own (`unshare`, bubblewrap,
/// flatpak) shares this host's name and the user's state directory, not its pids:
/// `runner reap --all` here never judges such an owner dead, so its process group's
/// record and its container stay; the sandboxed runner still cleans up after itself.
#[test]
fn reap_never_judges_an_owner_of_another_pid_namespace() {
    let sandboxed = |cli: &Cli, flags: &[&str]| {
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--mount-proc", common::runner_bin()])
            .arg("run")
            .args(flags)
            .args(["--", "sh", "-c", "echo ready; exec sleep 300"])
            .env("RUNNER_STATE_DIR", cli.tmp.path().join("state"))
            .env("HOME", cli.tmp.path())
            .current_dir(cli.tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n", "unshare did not run runner");
        // The sandbox's runner: unshare's one child (pid 1 in its namespace).
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
        let runner: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
        (child, runner)
    };
    let cli = Cli::new();
    let (mut native, native_runner) = sandboxed(&cli, &[]);
    let docker = docker_available();
    let mut sandboxes = vec![(native_runner, None)];
    if docker {
        let (child, runner) = sandboxed(&cli, &["--backend", "docker", "--image", IMAGE]);
        let ns = std::fs::read_link(format!("/proc/{runner}/ns/pid")).unwrap();
        let ns = ns.to_string_lossy();
        let ns = ns
            .trim_start_matches("pid:[")
            .trim_end_matches(']')
            .to_string();
        sandboxes.push((runner, Some((child, ns))));
    }
    let in_namespace = |ns: &str| {
        let out = Command::new("docker")
            .args(["ps", "-a", "--filter", "label=runner.session"])
            .args(["--format", "{{.Label \"runner.session\"}}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|s| s.ends_with(&format!("-{ns}")))
            .count()
    };
    assert_eq!(cli.records(), 1, "the sandboxed native run's record");
    if let Some((_, Some((_, ns)))) = sandboxes.get(1) {
        assert_eq!(in_namespace(ns), 1, "the sandboxed docker run's container");
    }

    let reap = cli.run(&["reap", "--all"]);
    assert!(reap.status.success(), "{reap:?}");
    assert_eq!(
        cli.records(),
        1,
        "the sweep took a live sandboxed owner's record"
    );
    if let Some((_, Some((_, ns)))) = sandboxes.get(1) {
        assert_eq!(
            in_namespace(ns),
            1,
            "the sweep removed a live owner's container"
        );
    }

    // The sandboxed runners end as ever: their command stopped, their container gone.
    for (runner, _) in &sandboxes {
        kill(Pid::from_raw(*runner), Signal::SIGTERM).unwrap();
    }
    assert_eq!(native.wait().unwrap().code(), Some(143));
    if let Some((_, Some((mut child, ns)))) = sandboxes.pop() {
        assert_eq!(child.wait().unwrap().code(), Some(143));
        assert_eq!(in_namespace(&ns), 0);
    }
    assert_eq!(cli.records(), 0);
}

/// The docker CLI's configuration as something that is not a file (a FIFO nobody
/// writes, left by a tool or an attacker): every command that reads it still ends,
/// saying why it was not read, and a SIGTERM is still answered.
#[test]
fn a_docker_config_that_is_not_a_file_never_hangs_runner() {
    let cli = Cli::new();
    let config = cli.tmp.path().join("docker-config");
    std::fs::create_dir(&config).unwrap();
    nix::unistd::mkfifo(&config.join("config.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    for args in [
        &["doctor"][..],
        &["reap"],
        &["run", "--backend", "docker", "--image", IMAGE, "--", "true"],
    ] {
        let mut child = cli
            .cmd(args)
            .env("DOCKER_CONFIG", &config)
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_or_kill(&mut child, 60, &format!("runner {}", args.join(" ")));
    }
}

/// SIGTERM to runner while its command is stopped (`kill -STOP`, a debugger, a
/// shell's Ctrl-Z elsewhere): the signal is followed by SIGCONT, as a shell's
/// `kill %job` and `timeout(1)` do, so the command acts on it and runner ends with
/// 143, on every backend.
#[test]
fn a_stopped_command_still_ends_on_sigterm() {
    let cli = Cli::new();
    let backends = backend_flags();
    for (n, flags) in backends.iter().enumerate() {
        let mark = format!("stopped-mark-{}-{n}", std::process::id());
        let script = format!("echo ready; kill -STOP $$; sleep 300; : {mark}");
        let (mut child, _out) = start_ready_with(&cli, flags, &script);
        // The command stopped itself: wait until the kernel says so.
        wait_for(30, "the command to stop", || {
            marked(&mark)
                .into_iter()
                .any(|pid| stat_of(pid).is_some_and(|(state, _)| state == 'T'))
        });
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let status = wait_or_kill(
            &mut child,
            30,
            &format!("runner {flags:?} with a stopped command"),
        );
        assert_eq!(status.code(), Some(143), "{flags:?}");
    }
}

/// The processes that carry `mark` in their command lines, seen from here (runner's
/// own among them).
fn marked(mark: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(mark)
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// A process's state letter and parent pid, from `/proc/<pid>/stat`.
fn stat_of(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((state, rest.next()?.parse().ok()?))
}

/// Polls `done` every 20 ms for up to `secs` seconds; fails naming `what`.
fn wait_for(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited {secs} s for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The container's command stops runner's helper in the container (SIGSTOP to its
/// parent), then runner gets SIGTERM: the helper does not read the signal, so runner
/// continues it through the engine, and the command ends with 143 (runner once
/// waited for ever). The class: a helper that does not answer.
#[test]
fn a_stopped_helper_does_not_keep_runner_waiting() {
    if !docker_available() {
        return;
    }
    let cli = Cli::new();
    let mark = format!("helper-stopped-{}", std::process::id());
    // The helper is stopped only once `ready` reached us (it forwards the output),
    // on our word through stdin.
    let script = format!("echo ready; read go; kill -STOP $PPID; sleep 300; : {mark}");
    let args = [
        "run",
        "--backend",
        "docker",
        "--image",
        IMAGE,
        "--",
        "sh",
        "-c",
        &script,
    ];
    let (mut child, _out) = start_ready_stdin(&cli, &args, Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    wait_for(30, "the helper to stop", || {
        marked(&mark).into_iter().any(|pid| {
            stat_of(pid)
                .and_then(|(_, parent)| stat_of(parent))
                .is_some_and(|(state, _)| state == 'T')
        })
    });
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_or_kill(&mut child, 60, "runner with a stopped helper");
    assert_eq!(status.code(), Some(143));
    assert_eq!(runner_containers(child.id()), 0);
}

/// `runner run -q --backend native -- sh -c 'echo hi'` run by `launcher` (which
/// sets a limit, then runs the runner binary at `runner`), within 30 s: it printed
/// `hi` (exit 0) or refused, saying which limit (`ulimit -X`) and its value (125);
/// never a panic. Its exit code.
fn run_under_limit(mut launcher: Command, runner: &std::path::Path, limit: &str) -> Option<i32> {
    use std::io::Read;
    let mut child = launcher
        .arg(runner)
        .args([
            "run",
            "-q",
            "--backend",
            "native",
            "--",
            "sh",
            "-c",
            "echo hi",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_or_kill(&mut child, 30, &format!("runner under {limit}"));
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("panicked"), "{limit}: {err}");
    let (name, _) = limit.rsplit_once(' ').unwrap();
    match status.code() {
        Some(0) => assert_eq!(out, "hi\n", "{limit}"),
        Some(125) => assert!(err.contains(&format!("`{name}` is")), "{limit}: {err}"),
        other => panic!("{limit}: exit {other:?}: {err}"),
    }
    status.code()
}

/// Under a limit on processes per user (`ulimit -u`, which counts threads), runner
/// runs with the threads it can get or says it cannot (125, naming the limit):
/// never a panic, never a hang (tokio once panicked at start-up and hung while
/// unwinding). As an unprivileged user: root is not held to the limit.
#[test]
fn a_low_limit_on_processes_is_an_error_not_a_panic() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: setting another user's limit needs root");
        return;
    }
    let nobody = 65534;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let runner = dir.path().join("runner");
    std::fs::copy(common::runner_bin(), &runner).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(nobody), Some(nobody)).unwrap();
    let outcomes: Vec<Option<i32>> = (1..=4)
        .map(|limit| {
            let mut launcher = Command::new("setpriv");
            launcher
                .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                .arg("prlimit")
                .arg(format!("--nproc={limit}"))
                .env("HOME", &home)
                .env("RUNNER_STATE_DIR", home.join("state"))
                .current_dir(&home);
            run_under_limit(launcher, &runner, &format!("ulimit -u {limit}"))
        })
        .collect();
    // Both answers were seen: a refusal at 1, a run with fewer threads above.
    assert_eq!(outcomes.first(), Some(&Some(125)));
    assert_eq!(outcomes.last(), Some(&Some(0)));
}

/// Under a low limit on open files (`ulimit -n`) runner says so and exits 125, at
/// every point it can run out (tokio's signal pipe once panicked); with enough it
/// runs.
#[test]
fn a_low_limit_on_open_files_is_an_error_not_a_panic() {
    let cli = Cli::new();
    let runner = std::path::Path::new(common::runner_bin());
    for limit in [4, 6, 7, 8, 10, 12, 16, 64] {
        let mut launcher = Command::new("prlimit");
        launcher
            .arg(format!("--nofile={limit}"))
            .env("RUNNER_STATE_DIR", cli.tmp.path().join("state"))
            .env("HOME", cli.tmp.path());
        let code = run_under_limit(launcher, runner, &format!("ulimit -n {limit}"));
        if limit == 64 {
            assert_eq!(code, Some(0));
        }
    }
}

/// `-t` with piped input is refused the same way on every backend (as the docker
/// CLI refuses `-it`): the input is never dropped (native once ran `cat` on
/// /dev/null and exited 0) and runner never waits for an end that cannot come (a
/// container's pseudo-terminal never saw the pipe's end).
#[test]
fn a_terminal_is_asked_for_only_with_one() {
    let cli = Cli::new();
    let backends = backend_flags();
    for flags in backends {
        let mut args = vec!["run", "-t"];
        args.extend(&flags);
        args.extend(["--", "cat"]);
        let mut child = cli
            .cmd(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Runner may have refused and exited already: the pipe is then closed.
        let _ = child.stdin.take().unwrap().write_all(b"x\n");
        let status = wait_or_kill(&mut child, 60, &format!("runner {args:?}"));
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("-t needs a terminal"), "{stderr}");
    }
}

/// A host command gets runner's own stdin and stdout when they are pipes or files:
/// the same pipes, nothing relayed (a language server's header and body, written
/// separately, reached the editor as two reads 1 time in 5 through the relay).
#[test]
fn a_host_command_gets_runners_own_pipes() {
    let cli = Cli::new();
    let script = "readlink /proc/self/fd/0 /proc/self/fd/1 /proc/$PPID/fd/0 /proc/$PPID/fd/1";
    let child = cli
        .cmd(&["run", "-q", "--backend", "native", "--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let runner = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let links: Vec<&str> = text.lines().collect();
    assert_eq!(links.len(), 4, "{text}");
    assert!(links[0].starts_with("pipe:"), "{text}");
    // The command's parent is runner itself.
    assert_eq!(
        (links[0], links[1]),
        (links[2], links[3]),
        "runner {runner}: {text}"
    );
}

/// Output that cannot be written (a full disk: `/dev/full`) is never lost quietly,
/// even with `-q` (runner once exited 0, the megabyte gone): a host command writes
/// to runner's stdout itself and meets the error (`head` fails as it would alone);
/// a container's output, relayed by runner, makes runner fail with 125.
#[test]
fn output_that_cannot_be_written_is_an_error() {
    let cli = Cli::new();
    let backends = backend_flags();
    for flags in backends {
        let mut args = vec!["run", "-q"];
        args.extend(&flags);
        args.extend(["--", "head", "-c", "1000000", "/dev/zero"]);
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = cli
            .cmd(&args)
            .stdin(Stdio::null())
            .stdout(full)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if flags.is_empty() {
            assert_eq!(out.status.code(), Some(1), "{flags:?}: {stderr}");
            assert!(stderr.contains("No space left on device"), "{stderr}");
        } else {
            assert_eq!(out.status.code(), Some(125), "{flags:?}: {stderr}");
            assert!(stderr.contains("could not be written"), "{stderr}");
        }
    }
}

/// Out of file descriptors (`ulimit -n 9`): runner says that, not that the engine
/// is unreachable and where to look for it, at whichever step it runs out.
#[test]
fn out_of_descriptors_is_said_as_such() {
    if !docker_available() {
        return;
    }
    let cli = Cli::new();
    // Nine: runner's runtime starts, its connection to the engine cannot be made.
    let child = Command::new("prlimit")
        .args(["--nofile=9", common::runner_bin()])
        .args(["run", "--backend", "docker", "--image", IMAGE, "--", "true"])
        .env("RUNNER_STATE_DIR", cli.tmp.path().join("state"))
        .env("HOME", cli.tmp.path())
        .current_dir(cli.tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // prlimit execs runner: same pid, which names its container, if it got that far
    // (a cleanup that itself ran out of descriptors leaves it: not this test's
    // subject, and nothing may be left behind).
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let leftover = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("name=runner-run-{pid}-")])
        .output()
        .unwrap();
    for id in String::from_utf8_lossy(&leftover.stdout).split_whitespace() {
        let _ = Command::new("docker").args(["rm", "-f", id]).output();
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // Where it runs out depends on what is open already; whatever step it is, the
    // words say descriptors, never an unreachable engine.
    let named = stderr.contains("no file descriptor left")
        || (stderr.contains("Too many open files") && !stderr.contains("not reachable"));
    assert!(named, "{stderr}");
    assert!(!stderr.contains("runner doctor"), "{stderr}");
}

/// How many of `count` framed replies reached the reader in more than one read, when
/// the server writes each reply once (`writes == 1`) or as a header and then its body
/// (`writes == 2`, as vscode-jsonrpc's servers do). Each reply is awaited before the
/// next request.
fn replies_split(mut runner: Command, writes: u8, count: usize) -> usize {
    const BODY: &str = "{\"jsonrpc\":\"2.0\",\n\"result\":null}";
    let reply = if writes == 1 {
        format!(
            "printf 'Content-Length: {}\\r\\n\\r\\n{}'",
            BODY.len(),
            BODY.replace('\n', "\\n")
        )
    } else {
        format!(
            "printf 'Content-Length: {}\\r\\n\\r\\n'; printf '{}'",
            BODY.len(),
            BODY.replace('\n', "\\n")
        )
    };
    let mut child = runner
        .args([
            "--",
            "sh",
            "-c",
            &format!("while read -r line; do {reply}; done"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = child.stdin.take().unwrap();
    let mut from = child.stdout.take().unwrap();
    let whole = format!("Content-Length: {}\r\n\r\n{BODY}", BODY.len()).len();
    let mut split = 0;
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..count {
        to.write_all(b"go\n").unwrap();
        to.flush().unwrap();
        let (mut got, mut reads) = (0, 0);
        while got < whole {
            let n = std::io::Read::read(&mut from, &mut buf).unwrap();
            assert!(n > 0, "the server ended early");
            got += n;
            reads += 1;
        }
        assert_eq!(got, whole, "more than one reply: one was sent per request");
        split += usize::from(reads > 1);
    }
    drop(to);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    split
}

/// A message written at once reaches the reader at once through runner on every
/// backend, newlines inside it or not (stdout's line buffer split each at its last
/// newline: an LSP header and its body came as two reads). One written as a header
/// and then its body splits through the docker relay no more often than through a
/// plain pipe, measured beside it (the helper takes what follows within microseconds
/// with what it read; the old relay split a quarter to a half with the pipe near
/// zero). Native hands its own pipes over: that is the pipe.
#[test]
fn messages_reach_the_reader_whole() {
    let cli = Cli::new();
    let mut backends = vec![vec!["--backend", "native"]];
    if docker_available() {
        backends.push(vec!["--backend", "docker", "--image", IMAGE]);
    }
    for backend in backends {
        let run = || {
            let mut c = cli.cmd(&["run", "-q"]);
            c.args(&backend);
            c
        };
        assert_eq!(
            replies_split(run(), 1, 200),
            0,
            "{backend:?}: a single write split"
        );
        if backend.contains(&"docker") {
            let piped = replies_split(Command::new("env"), 2, 200);
            let relayed = replies_split(run(), 2, 200);
            eprintln!("two-write replies in two reads: {relayed} of 200 relayed, {piped} piped");
            assert!(
                relayed <= piped + 20,
                "{relayed} of 200 two-write replies split through the relay, {piped} through a pipe"
            );
        }
    }
}
