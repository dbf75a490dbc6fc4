//! `cargo xtask test`: formatting, clippy, the docs, the structure checks, the
//! provisioning, every suite (and again under other settings: without pidfd group
//! signals, on the portable spawn path, the CLI's against the command as installed,
//! against a nix-daemon), the examples, and
//! nothing left behind; `cargo xtask test-docker`: the Docker suites alone.

use std::process::Command;

use crate::editors::{provision_editors, tools_dir};
use crate::layering::{check_feature_combinations, check_layering};
use crate::macos::check_macos;
use crate::podman::with_podman;
use crate::provision::{
    apt_install_missing, docker_leftovers, provision_docker, provision_nix, with_nix_daemon,
};
use crate::{cargo, on_path, root, run, scratch_cargo, toolchain, toolchain_homes, Result};

pub(crate) fn test(extra: &[String]) -> Result {
    if let Some(mib) = crate::free_mib(&root().join("target")) {
        eprintln!("xtask: {mib} MiB free where target/ is");
    }
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    run(
        "cargo clippy (all targets, warnings denied)",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;

    run(
        "cargo doc (warnings denied)",
        cargo()
            .args(["doc", "--workspace", "--no-deps", "--quiet"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    toolchain::check_declared()?;
    check_layering()?;
    check_feature_combinations()?;
    check_macos()?;
    apt_install_missing()?;
    provision_nix()?;
    provision_editors()?;
    let dockerd = provision_docker()?;

    let scratch = root().join("target/xtask-test");
    let _ = std::fs::remove_dir_all(&scratch);
    let home = scratch.join("home");
    let state = scratch.join("state");
    std::fs::create_dir_all(&home)
        .map_err(|e| format!("failed to create {}: {e}", home.display()))?;

    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        .args(extra);
    for (k, v) in toolchain_homes() {
        cmd.env(k, v);
    }
    cmd.env("HOME", &home)
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("RUNNER_STATE_DIR", &state)
        .env("RUNNER_TEST_TOOLS", tools_dir());
    let mut tested = run("cargo test --workspace", &mut cmd);
    // Again, with one setting changed each time, the suites that setting reaches.
    let again: [(&str, &[&str], (&str, &str)); 3] = [
        // As on kernels before 6.9 (no process-group signals through a pidfd):
        // groups signalled by number while the leader's zombie pins the id, the
        // leader reaped last.
        (
            "without pidfd group signals",
            &["-p", "runner-native"],
            ("RUNNER_TEST_NO_PIDFD_GROUP_SIGNALS", "1"),
        ),
        // The portable spawn path (macOS's: posix_spawn, the record written before
        // the spawn): the native suite, the conformance suite (native and nix) and
        // the SIGKILLed owner's sweep.
        (
            "on the portable spawn path",
            &["-p", "runner-native"],
            ("RUNNER_SPAWN", "portable"),
        ),
        (
            "on the portable spawn path",
            &[
                "-p",
                "runner-tests",
                "--test",
                "conformance",
                "--test",
                "reap_after_sigkill",
            ],
            ("RUNNER_SPAWN", "portable"),
        ),
    ];
    for (why, args, (key, value)) in again {
        if tested.is_err() {
            break;
        }
        let mut cmd = scratch_cargo(&home, &state);
        cmd.arg("test").args(args).env(key, value);
        tested = run(&format!("cargo test {} ({why})", args.join(" ")), &mut cmd);
    }
    // The command as installed (`cargo xtask dist`: LTO, and on Linux with glibc
    // linked statically): the CLI's suites again, against that build.
    if tested.is_ok() {
        tested = crate::dist::dist().and_then(|runner| {
            let mut result = Ok(());
            for suite in ["cli", "terminal"] {
                if result.is_err() {
                    break;
                }
                let mut cmd = scratch_cargo(&home, &state);
                cmd.args(["test", "-p", "runner-cli", "--test", suite])
                    .env("RUNNER_TEST_CLI", &runner);
                result = run(
                    &format!(
                        "cargo test -p runner-cli --test {suite} (against {})",
                        runner.display()
                    ),
                    &mut cmd,
                );
            }
            result
        });
    }
    // Multi-user nix, as most people run it: the nix suites again, as clients of a
    // nix-daemon (NIX_REMOTE=daemon) that builds as the build users xtask creates.
    if tested.is_ok() && on_path("nix") {
        tested = with_nix_daemon(|| {
            let mut result = Ok(());
            for args in [
                &["-p", "runner-nix"][..],
                &["-p", "runner-tests", "--test", "conformance", "nix::"],
            ] {
                if result.is_err() {
                    break;
                }
                let mut cmd = scratch_cargo(&home, &state);
                cmd.arg("test").args(args).env("NIX_REMOTE", "daemon");
                result = run(
                    &format!("cargo test {} (against a nix-daemon)", args.join(" ")),
                    &mut cmd,
                );
            }
            result
        });
    }
    // Podman, the second engine: the Docker backend's suite against its
    // Docker-compatible service (checks that setup cannot make say so and skip).
    if tested.is_ok() {
        tested = podman_suites(&home, &state);
    }
    // The examples users copy from: a command's output, and a JSON-RPC exchange with
    // a server over stdio through the companion.
    for (example, args) in [("run", &["echo", "hello"][..]), ("lsp_host", &[][..])] {
        if tested.is_err() {
            break;
        }
        let mut cmd = scratch_cargo(&home, &state);
        cmd.args([
            "run",
            "-q",
            "-p",
            "runner-companion",
            "--example",
            example,
            "--",
        ])
        .args(args)
        .current_dir(&scratch);
        tested = run(&format!("cargo run --example {example}"), &mut cmd);
    }
    let leftovers = docker_leftovers();
    if let Some(mut d) = dockerd {
        eprintln!("xtask: stopping the dockerd we started");
        let _ = Command::new("kill").arg(d.id().to_string()).status();
        let _ = d.wait();
    }
    tested?;
    if let Some(left) = leftovers {
        return Err(format!(
            "tests left containers labelled runner.owner behind: {left}"
        ));
    }

    let runs = state.join("runs");
    let left: Vec<String> = std::fs::read_dir(&runs)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json") || n.starts_with(".spare-"))
                .collect()
        })
        .unwrap_or_default();
    if !left.is_empty() {
        return Err(format!(
            "tests left ledger records or spare record files in {}: {left:?} (a leaked \
             process group, or a ledger never dropped)",
            runs.display()
        ));
    }
    eprintln!("xtask: all tests passed; no ledger record left behind");
    Ok(())
}

/// The Docker suites alone, with the engine provisioned.
pub(crate) fn test_docker() -> Result {
    apt_install_missing()?;
    let dockerd = provision_docker()?;
    let (scratch, home) = scratch_home()?;
    let mut result = Ok(());
    for (what, args) in [
        ("runner-docker", vec!["-p", "runner-docker"]),
        (
            "docker conformance",
            vec!["-p", "runner-tests", "--test", "conformance", "docker"],
        ),
        (
            "docker CLI",
            vec!["-p", "runner-cli", "--test", "cli", "docker"],
        ),
    ] {
        let mut cmd = cargo();
        cmd.arg("test").args(&args);
        for (k, v) in toolchain_homes() {
            cmd.env(k, v);
        }
        cmd.env("HOME", &home)
            .env("RUNNER_STATE_DIR", scratch.join("state"));
        if let Err(e) = run(what, &mut cmd) {
            result = Err(e);
            break;
        }
    }
    let leftovers = docker_leftovers();
    if let Some(mut d) = dockerd {
        let _ = Command::new("kill").arg(d.id().to_string()).status();
        let _ = d.wait();
    }
    result?;
    match leftovers {
        Some(left) => Err(format!(
            "tests left containers labelled runner.owner behind: {left}"
        )),
        None => Ok(()),
    }
}

/// The suites that run against the engine under test, run again against Podman
/// (`with_podman`), when the busybox root the Docker provisioning made is there to
/// import: `(package, test binary, filter args)`. Not here, each for its reason (the
/// README's engine list): the suites that start engines of their own
/// (`second_engine`, `foreign_engine`, `docker_host`, `engine_resolution`,
/// `engine_down`), the pull and registry suites (their registry listens on this host's
/// loopback, which the Podman service's network namespace cannot reach; the registry
/// suite talks to the local Docker whatever `DOCKER_HOST` says).
const PODMAN_SUITES: [(&str, &str, &[&str]); 8] = [
    ("runner-docker", "docker_backend", &[]),
    ("runner-docker", "exec_helper", &[]),
    (
        "runner-tests",
        "conformance",
        &["docker", "--skip", "elsewhere", "--skip", "ssh"],
    ),
    ("runner-tests", "reap_after_sigkill", &[]),
    ("runner-cli", "cli", &[]),
    ("runner-cli", "terminal", &[]),
    ("runner-cli", "editors", &[]),
    ("runner-cli", "podman", &[]),
];

fn podman_suites(home: &std::path::Path, state: &std::path::Path) -> Result {
    let busybox_root = root().join("target/xtask-test-image");
    if !busybox_root.exists() {
        return Ok(());
    }
    with_podman(&busybox_root, |host, dir| {
        for (package, test, filter) in PODMAN_SUITES {
            let mut cmd = scratch_cargo(home, state);
            cmd.args(["test", "-p", package, "--test", test, "--"])
                .args(filter)
                .env("DOCKER_HOST", host)
                .env("RUNNER_TEST_ENGINE", "podman")
                .env("RUNNER_TEST_PODMAN_DIR", dir);
            run(
                &format!("cargo test -p {package} --test {test} (against Podman)"),
                &mut cmd,
            )?;
        }
        Ok(())
    })
}

/// The Podman run alone, with the Docker provisioning it imports its image from.
pub(crate) fn test_podman() -> Result {
    apt_install_missing()?;
    let dockerd = provision_docker()?;
    let (scratch, home) = scratch_home()?;
    let result = podman_suites(&home, &scratch.join("state"));
    if let Some(mut d) = dockerd {
        let _ = Command::new("kill").arg(d.id().to_string()).status();
        let _ = d.wait();
    }
    result
}

/// The single-suite tasks' scratch directory and the home inside it.
fn scratch_home() -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let scratch = root().join("target/xtask-test");
    let home = scratch.join("home");
    std::fs::create_dir_all(&home)
        .map_err(|e| format!("failed to create {}: {e}", home.display()))?;
    Ok((scratch, home))
}
