//! `runner run --backend docker` pulling a multi-layer image from a real registry
//! that needs a login (the docker CLI's `auths` in a temporary `DOCKER_CONFIG`): in a
//! log (stderr a pipe) one plain line per layer state change; on a terminal (stderr
//! a pseudo-terminal) per-layer bars, cleared at the end.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use runner_tests::registry::{LocalRegistry, PASSWORD};

fn runner(tmp: &std::path::Path, config: &std::path::Path, image: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runner"));
    c.args(["run", "--backend", "docker", "--image", image, "--", "true"])
        .env("RUNNER_STATE_DIR", tmp.join("state"))
        .env("HOME", tmp)
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .current_dir(tmp)
        .stdin(Stdio::null());
    c
}

/// A scratch directory and a running registry, or `None` (skipped loudly) without
/// an engine or the registry's packages.
fn registry_and_engine() -> Option<(tempfile::TempDir, LocalRegistry)> {
    let engine = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    let available = engine && LocalRegistry::unavailable().is_none();
    runner_core::testing::engine_gate("a Docker engine and a local registry", available).then(
        || {
            (
                tempfile::tempdir().unwrap(),
                LocalRegistry::start().unwrap(),
            )
        },
    )
}

#[test]
fn pull_progress_in_a_log_and_on_a_terminal() {
    let Some((tmp, registry)) = registry_and_engine() else {
        return;
    };
    let image = registry
        .push_layered_image("progress", 3, 4 * 1024 * 1024)
        .unwrap();
    let config = registry.docker_config("auths", &registry.auths_json(PASSWORD));

    // A log: plain lines, no terminal control.
    let out = runner(tmp.path(), &config, &image)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains('\x1b'), "terminal control in a log:\n{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.contains(&format!("runner: pulling {image}").as_str()),
        "{log}"
    );
    let layer_lines = |phase: &str| {
        lines
            .iter()
            .filter(|l| {
                l.starts_with(&format!("runner: pulling {image}: layer ")) && l.contains(phase)
            })
            .count()
    };
    assert!(
        layer_lines(" complete") >= 3,
        "every new layer completes:\n{log}"
    );
    assert!(
        layer_lines(" extracting") >= 3,
        "extracting is its own state:\n{log}"
    );
    assert!(layer_lines(" downloaded") >= 1, "{log}");
    registry.remove_local(&image);

    // A terminal: bars drawn, then cleared.
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave: OwnedFd = pty.slave;
    let mut child = runner(tmp.path(), &config, &image)
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the last holder of the terminal's other side is gone.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    let status = child.wait().unwrap();
    let screen = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(status.success(), "{screen}");
    assert!(screen.contains(&format!("pulling {image}")), "{screen:?}");
    assert!(
        !screen.contains("runner: pulling"),
        "plain lines on a terminal: {screen:?}"
    );
    // indicatif moves the cursor up and clears lines to redraw and to clear.
    assert!(
        screen.contains("\x1b[2K") || screen.contains("\x1b[1A"),
        "{screen:?}"
    );
    registry.remove_local(&image);
}

/// A loopback proxy to `upstream` that, once, holds back the rest of a response
/// after its first `after` bytes for `pause` (a registry stalling mid-layer).
fn stalling_proxy(upstream: String, after: usize, pause: std::time::Duration) -> String {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stalled = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
                let _ = s_write.shutdown(std::net::Shutdown::Write);
            });
            let stalled = Arc::clone(&stalled);
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || {
                let mut sent = 0usize;
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = s_read.read(&mut buf) {
                    if n == 0 || c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                    if sent >= after && !stalled.swap(true, Ordering::SeqCst) {
                        std::thread::sleep(pause);
                    }
                }
                let _ = c_write.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

#[test]
fn a_stalled_pull_says_so_in_a_log() {
    let Some((tmp, registry)) = registry_and_engine() else {
        return;
    };
    let pushed = registry
        .push_layered_image("stall", 1, 4 * 1024 * 1024)
        .unwrap();
    // The same repository through a proxy that stalls 12 s a megabyte into a layer.
    let proxy = stalling_proxy(
        registry.addr.clone(),
        1 << 20,
        std::time::Duration::from_secs(12),
    );
    let image = pushed.replacen(&registry.addr, &proxy, 1);
    registry.remove_on_drop(&image);
    let auths = registry
        .auths_json(PASSWORD)
        .replacen(&registry.addr, &proxy, 1);
    let config = registry.docker_config("stall", &auths);
    let out = runner(tmp.path(), &config, &image)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let stall = log
        .lines()
        .position(|l| l.contains("no progress for 1") && l.contains("stalled"))
        .unwrap_or_else(|| panic!("no stall note:\n{log}"));
    let again = log
        .lines()
        .position(|l| l.ends_with(": moving again"))
        .unwrap_or_else(|| panic!("no note that it moves again:\n{log}"));
    assert!(stall < again, "{log}");
    assert_eq!(
        log.matches("no progress for").count(),
        1,
        "one note per stall in a log:\n{log}"
    );
    registry.remove_local(&image);
}

/// Credential helpers (`credHelpers`, `credsStore`) are run as the docker CLI runs
/// them: a helper's login pulls the image; a helper that never answers is ended with
/// runner (SIGTERM), and alone is bounded and named in the error; none outlives the
/// pull (one used to, reparented to init).
#[test]
fn credential_helpers_answer_or_are_ended() {
    use std::os::unix::fs::PermissionsExt;
    let Some((tmp, registry)) = registry_and_engine() else {
        return;
    };
    let image = registry.push_layered_image("helped", 1, 1024).unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mark = format!("hang-mark-{}", std::process::id());
    for (name, script) in [
        (
            "good",
            format!(
                "#!/bin/sh\ncat >/dev/null\nprintf '{{\"Username\":\"{}\",\"Secret\":\"{PASSWORD}\"}}'\n",
                runner_tests::registry::USER
            ),
        ),
        // It waits for a child of its own: the helper's whole group must go.
        ("hang", "#!/bin/sh\nsleep 300 &\nwait\n".to_string()),
    ] {
        let path = bin.join(format!("docker-credential-{name}"));
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The helper and its child carry the mark in their environment (from runner's);
    // runner itself is not one of them.
    let hanging = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("docker-credential-hang") || cmdline.starts_with("sleep"))
                && std::fs::read(e.path().join("environ"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&mark))
        })
    };

    // The registry's own helper logs in: the pull succeeds.
    let config = registry.docker_config(
        "helper-good",
        &format!(r#"{{"credHelpers":{{"{}":"good"}}}}"#, registry.addr),
    );
    let out = runner(tmp.path(), &config, &image)
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A store that never answers, and runner is told to stop: both end.
    let config = registry.docker_config("helper-hang", r#"{"credsStore":"hang"}"#);
    let image = registry.push_layered_image("helped-2", 1, 1024).unwrap();
    let mut child = runner(tmp.path(), &config, &image)
        .env("PATH", &path)
        .env("HANG_MARK", &mark)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !hanging() {
        assert!(std::time::Instant::now() < deadline, "the helper never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = runner_core::testing::wait_within(&mut child, std::time::Duration::from_secs(30))
        .expect("runner ended");
    assert_eq!(status.code(), Some(143));
    gone_within(&hanging, "the helper outlived runner");

    // Alone, it is bounded, and the error names it.
    let out = runner(tmp.path(), &config, &image)
        .env("PATH", &path)
        .env("HANG_MARK", &mark)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        log.contains("docker-credential-hang") && log.contains("did not answer"),
        "{log}"
    );
    gone_within(&hanging, "the helper outlived the pull");
}

/// Waits until `running()` says no (a SIGKILLed process is gone once the kernel has
/// torn it down, not at the instant of the signal), failing with `what` after 10 s.
fn gone_within(running: &dyn Fn() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while running() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
