//! Real editors and language servers, from the registries users get them from
//! (`cargo xtask provision` installs them: xtask's `editors.rs`), with `runner run`
//! as the server's command on every backend:
//! - an agent's LSP host (pytest-lsp) with pylsp, clangd, gopls,
//!   typescript-language-server and bash-language-server: sessions outlast the
//!   node servers' 3 s `processId` watchdog, and one per backend a 150 s idle;
//! - Neovim's own client with bash-language-server (node) on every backend;
//! - Emacs with eglot, which ends a session with `shutdown`, `exit` and at once a
//!   SIGKILL: nothing of the session is left, no process and no container.
//!
//! The docker backend uses an image holding node and the npm servers at the paths
//! they have here, and runner mounts the project at its own path, so file URIs mean
//! the same on both sides.
#![cfg(target_os = "linux")]

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The image `cargo xtask provision` builds with node and the npm servers.
const NODE_IMAGE: &str = "runner-test/node:latest";

/// The scripts each editor runs.
const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/editors");

/// Where xtask installed the npm and PyPI tools, if everything the suite drives is
/// there (else skipped loudly, or a failure under `RUNNER_REQUIRE_ENGINES=1`).
fn tools() -> Option<PathBuf> {
    let dir = std::env::var_os("RUNNER_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-tools"));
    // At the path the node image holds them (no `..`: the container has no crate).
    let dir = dir.canonicalize().unwrap_or(dir);
    let on_path = |p: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
    };
    let present = ["nvim", "emacs", "clangd", "gopls", "go", "node"]
        .into_iter()
        .all(on_path)
        && dir
            .join("npm/node_modules/.bin/bash-language-server")
            .exists()
        && dir.join("venv/bin/pylsp").exists();
    runner_core::testing::engine_gate(
        "the editors and language servers (`cargo xtask provision` installs them)",
        present,
    )
    .then_some(dir)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Native,
    Nix,
    Docker,
}

/// Every backend this machine has: native always, nix and docker when provisioned.
fn backends() -> Vec<Backend> {
    // The Podman pass of `cargo xtask test` runs the docker backend alone (the others
    // do not use the engine).
    let podman = std::env::var("RUNNER_TEST_ENGINE").as_deref() == Ok("podman");
    let mut all = if podman {
        vec![]
    } else {
        vec![Backend::Native]
    };
    if !podman && nix_available() {
        all.push(Backend::Nix);
    }
    if docker_available() {
        let image = Command::new("docker")
            .args(["image", "inspect", NODE_IMAGE])
            .output()
            .is_ok_and(|o| o.status.success());
        if runner_core::testing::engine_gate(
            "the node image (`cargo xtask provision` builds it)",
            image,
        ) {
            all.push(Backend::Docker);
        }
    }
    all
}

/// One project of source files (and a flake for the nix backend), with runner's
/// state, home and caches of its own.
struct Project {
    tmp: tempfile::TempDir,
    tools: PathBuf,
}

impl Project {
    fn new(tools: &Path) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::create_dir_all(tmp.path().join("home")).unwrap();
        for (name, text) in [
            (
                "a.py",
                "def greet():\n    return 42\n\n\nANSWER = greet()\n",
            ),
            ("a.c", "int greet(void) { return 42; }\nint answer = 42;\n"),
            (
                "a.go",
                "package main\n\nfunc greet() int { return 42 }\n\nvar answer = 42\n",
            ),
            ("go.mod", "module example.com/a\n\ngo 1.19\n"),
            (
                "a.ts",
                "function greet(): number { return 42; }\nconst answer = greet();\n",
            ),
            ("a.sh", "greet() {\n  echo hi\n}\nANSWER=42\n"),
        ] {
            std::fs::write(ws.join(name), text).unwrap();
        }
        let system = format!("{}-linux", std::env::consts::ARCH);
        std::fs::write(
            ws.join("flake.nix"),
            format!(
                r#"{{ outputs = {{ self }}: {{ devShells.{system}.default = builtins.derivation {{
                    name = "editors-shell"; system = "{system}"; builder = "/bin/bash";
                    outputs = [ "out" ]; PATH = "/usr/bin:/bin"; }}; }}; }}"#
            ),
        )
        .unwrap();
        Project {
            tmp,
            tools: tools.to_path_buf(),
        }
    }

    fn ws(&self) -> PathBuf {
        self.tmp.path().join("ws")
    }

    fn file(&self, name: &str) -> String {
        self.ws().join(name).display().to_string()
    }

    fn npm_bin(&self, name: &str) -> String {
        self.tools
            .join("npm/node_modules/.bin")
            .join(name)
            .display()
            .to_string()
    }

    fn tool(&self, path: &str) -> String {
        self.tools.join(path).display().to_string()
    }

    /// `runner run` of `server` on `backend`, as the editor's server command.
    fn through_runner(&self, backend: Backend, server: &[String]) -> Vec<String> {
        let mut argv = vec![
            common::runner_bin().to_string(),
            "run".into(),
            "-q".into(),
            "--dir".into(),
            self.ws().display().to_string(),
        ];
        let flags: &[&str] = match backend {
            Backend::Native => &["--backend", "native"],
            Backend::Nix => &["--backend", "nix"],
            Backend::Docker => &["--backend", "docker", "--image", NODE_IMAGE],
        };
        argv.extend(flags.iter().map(|f| f.to_string()));
        argv.push("--".into());
        argv.extend(server.iter().cloned());
        argv
    }

    /// An editor's command with runner's environment: its state, a home and caches
    /// in the temporary directory, nix offline, and a marker every process of the
    /// session inherits (native and nix), to find what is left.
    fn editor(&self, program: &str, marker: &str) -> Command {
        let mut c = Command::new(program);
        c.env("RUNNER_STATE_DIR", self.tmp.path().join("state"))
            .env("HOME", self.tmp.path().join("home"))
            .env("XDG_CACHE_HOME", self.tmp.path().join("cache"))
            .env("NIX_CONFIG", offline_nix_config(self.tmp.path()))
            .env("EDITOR_SESSION", marker)
            .current_dir(self.ws())
            .stdin(Stdio::null());
        c
    }

    fn out(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// Runs `cmd` in a group of its own, bounded: a hung editor is killed with its group
/// (`None`), leaving nothing running.
fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> Option<Output> {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut b).ok();
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut b).ok();
        b
    });
    let status = runner_core::testing::wait_within(&mut child, limit);
    if status.is_none() {
        eprintln!("{what} did not end within {limit:?}");
    }
    Some(Output {
        status: status?,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    })
}

/// Processes whose environment carries `marker`.
fn marked(marker: &str) -> Vec<i32> {
    let needle = format!("EDITOR_SESSION={marker}\0");
    procfs::process::all_processes()
        .unwrap()
        .filter_map(|p| p.ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{}/environ", p.pid))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .filter(|p| p.stat().is_ok_and(|s| s.state != 'Z'))
        .map(|p| p.pid)
        .collect()
}

fn container_of(runner_pid: u32) -> bool {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("name=^runner-run-{runner_pid}$"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// Waits (bounded) until nothing of a session is left: no process carrying its
/// marker, no container of its runner. Returns how long that took.
fn nothing_left(marker: &str, runner_pid: u32, backend: Backend) -> Duration {
    let start = Instant::now();
    loop {
        let processes = marked(marker);
        let container = backend == Backend::Docker && container_of(runner_pid);
        if processes.is_empty() && !container {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{backend:?}: 10 s after the editor ended, left: processes {processes:?}, \
             container {container}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn case(
    name: &str,
    cmd: Vec<String>,
    file: String,
    language: &str,
    expect: &[&str],
    idle: u64,
) -> serde_json::Value {
    serde_json::json!({
        "name": name, "cmd": cmd, "file": file, "language": language,
        "expect": expect, "idle": idle,
    })
}

/// An editor's session on one backend, run on a thread of its own (bounded); the
/// editor's script writes each step as a line, with the server's pid (runner's).
struct Session {
    backend: Backend,
    marker: String,
    out: PathBuf,
    editor: String,
    run: std::thread::JoinHandle<Option<Output>>,
}

impl Session {
    fn start(backend: Backend, marker: String, out: PathBuf, editor: Command) -> Self {
        let name = editor.get_program().to_string_lossy().into_owned();
        let what = name.clone();
        Session {
            backend,
            marker,
            out,
            editor: name,
            run: std::thread::spawn(move || run_bounded(editor, Duration::from_secs(60), &what)),
        }
    }

    /// Checks the steps the script wrote (`pid` aside) and the editor's exit, then
    /// waits until nothing of the session is left; returns how long that took.
    fn finish(self, steps: &[&str]) -> Duration {
        let Session {
            backend,
            marker,
            out,
            editor,
            run,
        } = self;
        let ran = run.join().unwrap();
        let said = std::fs::read_to_string(&out).unwrap_or_default();
        let Some(ran) = ran else {
            panic!("{backend:?}: {editor} did not end; it said:\n{said}");
        };
        let context = format!(
            "{backend:?}: said:\n{said}\n{editor}: {}",
            String::from_utf8_lossy(&ran.stderr)
        );
        let lines: Vec<&str> = said.lines().collect();
        let pid: u32 = lines
            .iter()
            .find_map(|l| l.strip_prefix("pid "))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{context}"));
        let others: Vec<&str> = lines
            .iter()
            .filter(|l| !l.starts_with("pid "))
            .copied()
            .collect();
        assert_eq!(others, steps, "{context}");
        assert!(ran.status.success(), "{context}");
        nothing_left(&marker, pid, backend)
    }
}

/// An agent's host (pytest-lsp) keeps every server through runner past the node
/// servers' 3 s watchdog (4 s of quiet), and one session per backend past 150 s of
/// quiet; every server answers after the quiet and exits 0 when asked to.
#[test]
fn an_lsp_host_keeps_its_servers_through_runner() {
    let Some(tools) = tools() else { return };
    let project = Project::new(&tools);
    let p = &project;
    let ts = |backend| {
        let mut c = case(
            &format!("{backend:?}-typescript"),
            p.through_runner(
                backend,
                &[p.npm_bin("typescript-language-server"), "--stdio".into()],
            ),
            p.file("a.ts"),
            "typescript",
            &["greet", "answer"],
            4,
        );
        c["init_options"] = serde_json::json!({"tsserver": {
            "path": p.tool("npm/node_modules/typescript/lib/tsserver.js")}});
        c
    };
    let bash = |backend, idle| {
        case(
            &format!("{backend:?}-bash-{idle}s"),
            p.through_runner(
                backend,
                &[p.npm_bin("bash-language-server"), "start".into()],
            ),
            p.file("a.sh"),
            "shellscript",
            &["greet", "ANSWER"],
            idle,
        )
    };
    let pylsp = |backend| {
        case(
            &format!("{backend:?}-pylsp"),
            p.through_runner(backend, &[p.tool("venv/bin/pylsp")]),
            p.file("a.py"),
            "python",
            &["greet", "ANSWER"],
            4,
        )
    };
    let mut runs = Vec::new();
    for backend in backends() {
        let mut cases = vec![bash(backend, 150)];
        match backend {
            Backend::Native => {
                cases.push(pylsp(backend));
                cases.push(ts(backend));
                cases.push(case(
                    "Native-clangd",
                    p.through_runner(backend, &["clangd".into()]),
                    p.file("a.c"),
                    "c",
                    &["greet", "answer"],
                    4,
                ));
                cases.push(case(
                    "Native-gopls",
                    p.through_runner(backend, &["gopls".into()]),
                    p.file("a.go"),
                    "go",
                    &["greet", "answer"],
                    4,
                ));
            }
            Backend::Nix => cases.push(pylsp(backend)),
            Backend::Docker => cases.push(ts(backend)),
        }
        let mut pytest = p.editor(&p.tool("venv/bin/pytest"), &format!("{backend:?}"));
        pytest
            .args(["-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=auto"])
            .arg(Path::new(SCRIPTS).join("host.py"))
            .env("LSP_CASES", serde_json::Value::Array(cases).to_string())
            .env("PYTHONDONTWRITEBYTECODE", "1");
        runs.push((
            backend,
            std::thread::spawn(move || run_bounded(pytest, Duration::from_secs(600), "pytest-lsp")),
        ));
    }
    for (backend, run) in runs {
        let out = run
            .join()
            .unwrap()
            .unwrap_or_else(|| panic!("{backend:?}: pytest-lsp did not end"));
        assert!(
            out.status.success(),
            "{backend:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Neovim's own LSP client keeps bash-language-server (node, which checks the
/// editor's `processId` every 3 s) through runner on every backend past 4 s of quiet,
/// and the server exits 0 when the client stops it; nothing of the session is left.
#[test]
fn neovim_keeps_a_node_server_through_runner() {
    let Some(tools) = tools() else { return };
    let project = Project::new(&tools);
    let mut runs = Vec::new();
    for backend in backends() {
        let marker = format!("nvim-{backend:?}-{}", std::process::id());
        let out = project.out(&format!("nvim-{backend:?}"));
        let server = project.through_runner(
            backend,
            &[project.npm_bin("bash-language-server"), "start".into()],
        );
        let mut nvim = project.editor("nvim", &marker);
        nvim.args(["--headless", "-u", "NONE", "-i", "NONE", "-n", "-c"])
            .arg(format!("luafile {SCRIPTS}/client.lua"))
            .env("OUT", &out)
            .env("SERVER", serde_json::to_string(&server).unwrap())
            .env("FILE", project.file("a.sh"))
            .env("IDLE_MS", "4000");
        runs.push(Session::start(backend, marker, out, nvim));
    }
    for session in runs {
        session.finish(&[
            "initialized true",
            "symbols ANSWER,greet",
            "after the idle, exited nil",
            "symbols ANSWER,greet",
            "exit { 0, 0 }",
        ]);
    }
}

/// Emacs with eglot ends a session as it always does: `shutdown`, `exit`, and at once
/// SIGKILL to the server's process (runner). The session answers past 4 s of quiet on
/// every backend, and once Emacs has ended nothing of it is left: no process of the
/// session, no container.
#[test]
fn eglot_sessions_leave_nothing_behind() {
    let Some(tools) = tools() else { return };
    let project = Project::new(&tools);
    let mut runs = Vec::new();
    for backend in backends() {
        let marker = format!("emacs-{backend:?}-{}", std::process::id());
        let out = project.out(&format!("emacs-{backend:?}"));
        let (server, file, mode, language, symbols) = match backend {
            Backend::Native => (
                vec!["clangd".to_string()],
                "a.c",
                "c-mode",
                "c",
                "answer,greet",
            ),
            Backend::Nix => (
                vec![project.tool("venv/bin/pylsp")],
                "a.py",
                "python-mode",
                "python",
                "ANSWER,greet",
            ),
            Backend::Docker => (
                vec![project.npm_bin("bash-language-server"), "start".into()],
                "a.sh",
                "sh-mode",
                "shellscript",
                "ANSWER,greet",
            ),
        };
        let mut emacs = project.editor("emacs", &marker);
        emacs
            .args(["--batch", "-q", "-l"])
            .arg(Path::new(SCRIPTS).join("eglot.el"))
            .env("OUT", &out)
            .env(
                "SERVER",
                serde_json::to_string(&project.through_runner(backend, &server)).unwrap(),
            )
            .env("FILE", project.file(file))
            .env("MODE", mode)
            .env("LANGUAGE", language)
            .env("IDLE", "4");
        runs.push((symbols, Session::start(backend, marker, out, emacs)));
    }
    for (symbols, session) in runs {
        let symbols = format!("symbols {symbols}");
        let took = session.finish(&[
            symbols.as_str(),
            "after the idle, running t",
            symbols.as_str(),
            "shut down",
        ]);
        eprintln!("nothing of the eglot session left {took:?} after Emacs ended");
    }
}
