//! Workspace automation, one module per task, `main.rs` only dispatching:
//! `cargo xtask test`, `test-docker` and `test-podman` (`test.rs`), `bench` (`bench.rs`),
//! `dist` (`dist.rs`),
//! `provision` (`provision.rs`, the editor suite's tools in `editors.rs`; packages
//! through `apt.rs`; Podman for its suite run in `podman.rs`), `check-macos`
//! (`macos.rs`), `check-layering` (`layering.rs`, `modules.rs`, `docs.rs`) and
//! `check-rust-version` (`toolchain.rs`).
#![forbid(unsafe_code)]

mod apt;
mod bench;
mod dist;
mod docs;
mod editors;
mod layering;
mod macos;
mod modules;
mod podman;
mod provision;
mod test;
mod toolchain;

use bench::bench;
use layering::check_layering;
use macos::check_macos;
use provision::provision;
use test::{test, test_docker};

use std::env;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("dist") => dist::dist().map(|bin| println!("{}", bin.display())),
        Some("test-docker") => test_docker(),
        Some("test-podman") => test::test_podman(),
        Some("provision") => provision(),
        Some("check-macos") => check_macos(),
        Some("check-layering") => check_layering(),
        Some("check-rust-version") => toolchain::check_declared(),
        _ => {
            eprintln!(
                "usage: cargo xtask test [-- CARGO TEST ARGS]\n       cargo xtask bench [--quick] [ROW-NAME-PART...]\n       cargo xtask dist\n       cargo xtask test-docker\n       cargo xtask test-podman\n       cargo xtask provision\n       cargo xtask check-macos\n       cargo xtask check-layering\n       cargo xtask check-rust-version"
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

/// The workspace this xtask runs for, found at run time: `cargo run` sets
/// `CARGO_MANIFEST_DIR` to xtask's own directory in the checkout being run, and
/// without it the nearest ancestor of the current directory whose `Cargo.toml` holds
/// `[workspace]`. Never the compiled-in path: a copied or moved checkout must not
/// build or write into the one this binary was first built in.
fn root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        find_root(
            env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
            env::current_dir().ok(),
        )
    })
    .clone()
}

fn find_root(manifest_dir: Option<PathBuf>, cwd: Option<PathBuf>) -> PathBuf {
    let is_workspace = |dir: &Path| {
        std::fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|toml| toml.lines().any(|l| l.trim() == "[workspace]"))
    };
    if let Some(parent) = manifest_dir.as_deref().and_then(Path::parent) {
        if is_workspace(parent) {
            return parent.to_path_buf();
        }
    }
    let cwd = cwd.unwrap_or_else(|| PathBuf::from("."));
    cwd.ancestors()
        .find(|d| is_workspace(d))
        .map(Path::to_path_buf)
        .unwrap_or(cwd)
}

fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// `cargo` with the real toolchain but a scratch `HOME` and state directory, as every
/// test phase runs (tests never touch the real home).
fn scratch_cargo(home: &std::path::Path, state: &std::path::Path) -> Command {
    let mut cmd = cargo();
    for (k, v) in toolchain_homes() {
        cmd.env(k, v);
    }
    cmd.env("HOME", home)
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("RUNNER_STATE_DIR", state);
    cmd
}

fn run(what: &str, cmd: &mut Command) -> Result {
    eprintln!("xtask: {what}");
    let status = cmd
        .status()
        .map_err(|e| format!("failed to start {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        // A full disk shows up as anything but itself (a linker killed by SIGBUS, a
        // truncated archive), so a failure says how much room was left.
        let room = free_mib(&root().join("target"))
            .map(|mib| format!("; {mib} MiB free where target/ is"))
            .unwrap_or_default();
        Err(format!("{what} failed ({status}{room})"))
    }
}

/// Free space, in MiB, on the filesystem holding `path` (or its nearest existing
/// ancestor), as `df -Pk` reports it to an unprivileged user.
fn free_mib(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let out = Command::new("df").arg("-Pk").arg(existing).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib / 1024)
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

fn on_path(bin: &str) -> bool {
    find_on_path(bin).is_some()
}

/// Where `bin` is on PATH, the first hit.
fn find_on_path(bin: &str) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|p| {
        env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_is_found_at_run_time_not_where_xtask_was_built() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("moved");
        std::fs::create_dir_all(ws.join("xtask")).unwrap();
        std::fs::create_dir_all(ws.join("runner-core/src")).unwrap();
        std::fs::write(ws.join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
        std::fs::write(ws.join("runner-core/Cargo.toml"), "[package]\n").unwrap();
        // As `cargo run` reports it for the moved checkout.
        assert_eq!(find_root(Some(ws.join("xtask")), None), ws);
        // No manifest dir (a bare binary): the nearest workspace above the cwd.
        assert_eq!(find_root(None, Some(ws.join("runner-core/src"))), ws);
        // A manifest dir that is not inside a workspace is not trusted.
        assert_eq!(
            find_root(Some(tmp.path().join("elsewhere/xtask")), Some(ws.clone())),
            ws
        );
    }
}
