//! Workspace automation: `cargo xtask test` and `cargo xtask bench [--quick]`.
//!
//! `test` checks formatting and clippy, provisions what the engine suites need when
//! it can, runs every test with `HOME` and the ledger pointed at a scratch directory
//! (tests never touch the real home), and fails if a test left a ledger record
//! behind. `bench` builds the benchmark in release mode and writes
//! `target/bench/results.json`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask test [-- CARGO TEST ARGS]\n       cargo xtask bench [--quick]"
            );
            exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        exit(1);
    }
}

type Result<T = ()> = std::result::Result<T, String>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(what: &str, cmd: &mut Command) -> Result {
    eprintln!("xtask: {what}");
    let status = cmd
        .status()
        .map_err(|e| format!("failed to start {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// The real home's cargo and rustup directories, so cargo keeps working once `HOME`
/// points at a scratch directory.
fn toolchain_homes() -> Vec<(&'static str, PathBuf)> {
    let home = env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cargo"));
    let rustup_home = env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".rustup"));
    vec![("CARGO_HOME", cargo_home), ("RUSTUP_HOME", rustup_home)]
}

fn test(extra: &[String]) -> Result {
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

    provision_nix()?;

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
        .env("RUNNER_STATE_DIR", &state);
    run("cargo test --workspace", &mut cmd)?;

    let runs = state.join("runs");
    let left: Vec<String> = std::fs::read_dir(&runs)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    if !left.is_empty() {
        return Err(format!(
            "tests left ledger records in {}: {left:?} (a leaked process group)",
            runs.display()
        ));
    }
    eprintln!("xtask: all tests passed; no ledger record left behind");
    Ok(())
}

fn on_path(bin: &str) -> bool {
    env::var_os("PATH")
        .map(|p| env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn engines_required() -> bool {
    env::var("RUNNER_REQUIRE_ENGINES").as_deref() == Ok("1")
}

/// Installs Debian's nix-bin when nix is missing and we are root. Without nix the
/// nix suites skip loudly, or fail when RUNNER_REQUIRE_ENGINES=1.
fn provision_nix() -> Result {
    if on_path("nix") {
        eprintln!("xtask: nix found");
        return Ok(());
    }
    let why = if !is_root() {
        "nix is missing and xtask is not root, so it cannot install it".to_string()
    } else if !on_path("apt-get") {
        "nix is missing and there is no apt-get to install it with".to_string()
    } else {
        eprintln!("xtask: installing Debian's nix-bin");
        let update = Command::new("apt-get").args(["update", "-qq"]).status();
        let install = Command::new("apt-get")
            .args(["install", "-y", "-qq", "nix-bin"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        match (update, install) {
            (_, Ok(s)) if s.success() && on_path("nix") => {
                eprintln!("xtask: nix installed");
                return Ok(());
            }
            (u, i) => format!("installing nix-bin failed (update: {u:?}, install: {i:?})"),
        }
    };
    if engines_required() {
        return Err(format!("RUNNER_REQUIRE_ENGINES=1 but {why}"));
    }
    eprintln!("xtask: WARNING: the nix suites will be SKIPPED: {why}");
    Ok(())
}

fn bench(args: &[String]) -> Result {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "runner-tests",
        "--bin",
        "runner-bench",
        "--",
    ])
    .args(args)
    .env("RUNNER_BENCH_OUT", root().join("target/bench"));
    run("runner-bench (release)", &mut cmd)
}
