//! `cargo xtask check-macos`: the whole workspace type-checked for both Apple
//! targets with Debian's toolchain, offline.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{apt, is_root, on_path, root, toolchain, Result};

/// Debian's Rust toolchain with its standard library's sources: what `check-macos`
/// builds `std` for Apple targets with (rustup cannot fetch targets offline).
pub(crate) const MACOS_CHECK_CARGO: &str = "/usr/bin/cargo";

pub(crate) const MACOS_CHECK_PACKAGES: [&str; 3] = ["rustc-web", "cargo-web", "rust-web-src"];

/// Type-checks the whole workspace, all targets, for both macOS targets, with
/// `std` built from source (`-Zbuild-std`) by Debian's toolchain, offline. Any
/// error, or a warning in one of our crates, fails it. Without the toolchain (and
/// not root to install it) it is skipped loudly, or fails under
/// `RUNNER_REQUIRE_ENGINES=1`.
/// A type check needs no machine code, and this machine has no macOS C toolchain:
/// C sources of dependencies (ring, under rustls) are "compiled" by a stub that
/// writes empty objects and archives. The Rust code is fully type-checked; the stub
/// only stands in for `cc` and `ar` of the macOS targets.
pub(crate) fn macos_c_stubs() -> std::result::Result<Vec<(String, PathBuf)>, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = root().join("target/macos/stub-bin");
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
    let stub = |name: &str, script: &str| -> std::result::Result<PathBuf, String> {
        let path = dir.join(name);
        std::fs::write(&path, script)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)))
            .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
        Ok(path)
    };
    let cc = stub(
        "cc",
        "#!/bin/sh\n# type-check stub: an empty object for -o, nothing else\nout=\n\
         while [ $# -gt 0 ]; do [ \"$1\" = -o ] && out=$2; shift; done\n\
         [ -n \"$out\" ] && : > \"$out\"\nexit 0\n",
    )?;
    let ar = stub(
        "ar",
        "#!/bin/sh\n# type-check stub: an empty archive\nfor a in \"$@\"; do case $a in \
         *.a) [ -e \"$a\" ] || printf '!<arch>\\n' > \"$a\";; esac; done\nexit 0\n",
    )?;
    let mut vars = Vec::new();
    for target in ["aarch64_apple_darwin", "x86_64_apple_darwin"] {
        vars.push((format!("CC_{target}"), cc.clone()));
        vars.push((format!("AR_{target}"), ar.clone()));
    }
    Ok(vars)
}

pub(crate) fn check_macos() -> Result {
    let have = |p: &str| Path::new(p).exists();
    let ready = || have(MACOS_CHECK_CARGO) && have("/usr/bin/rustc") && rust_src().is_some();
    // Debian's toolchain must be as new as the lockfile's packages need: an old
    // package list offers an older build (bookworm's base suite has 1.85, its
    // security suite a newer one).
    let needed = toolchain::needs()?.needed;
    let new_enough = || toolchain::rustc_version("/usr/bin/rustc").is_some_and(|v| v >= needed);
    if (!ready() || !new_enough()) && is_root() && on_path("apt-get") {
        apt::install(&MACOS_CHECK_PACKAGES)?;
    }
    if !ready() {
        let why = format!(
            "the macOS check needs {} (apt-get install {})",
            MACOS_CHECK_CARGO,
            MACOS_CHECK_PACKAGES.join(" ")
        );
        if env::var("RUNNER_REQUIRE_ENGINES").as_deref() == Ok("1") {
            return Err(why);
        }
        eprintln!("xtask: SKIPPED: {why}");
        return Ok(());
    }
    if !new_enough() {
        let found = toolchain::rustc_version("/usr/bin/rustc")
            .map_or_else(|| "no version".to_string(), |v| v.to_string());
        return Err(format!(
            "the macOS check needs rustc {needed} or newer (the highest rust-version of \
             the locked packages), but Debian's rustc-web gives {found} (/usr/bin/rustc{})",
            apt::installed_version("rustc-web")
                .map(|v| format!(", package rustc-web {v}"))
                .unwrap_or_default()
        ));
    }
    eprintln!("xtask: cargo check for aarch64-apple-darwin and x86_64-apple-darwin");
    let stubs = macos_c_stubs()?;
    let output = Command::new(MACOS_CHECK_CARGO)
        .current_dir(root())
        .args([
            "check",
            "-Zbuild-std=std,panic_abort",
            "--target",
            "aarch64-apple-darwin",
            "--target",
            "x86_64-apple-darwin",
            "--workspace",
            "--all-targets",
            "--message-format",
            "short",
        ])
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTDOC", "/usr/bin/rustdoc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", root().join("target/macos"))
        .envs(stubs)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTFLAGS")
        .output()
        .map_err(|e| format!("failed to run {MACOS_CHECK_CARGO}: {e}"))?;
    let text = String::from_utf8_lossy(&output.stderr);
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(": warning") || l.contains(": error"))
        .filter(|l| !l.starts_with('/'))
        .collect();
    if !output.status.success() || !ours.is_empty() {
        eprint!("{text}");
        return Err(format!(
            "the workspace does not type-check cleanly for macOS ({} diagnostics)",
            ours.len()
        ));
    }
    eprintln!("xtask: macOS check passed");
    Ok(())
}

/// The standard library's sources that Debian's `rust-web-src` installs.
pub(crate) fn rust_src() -> Option<PathBuf> {
    std::fs::read_dir("/usr/src")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("library/std"))
        .find(|p| p.exists())
}
