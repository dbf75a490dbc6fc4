//! What the CLI's test binaries share: which engines they can use, and nix's offline
//! configuration.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// The `runner` command under test: `$RUNNER_TEST_CLI` (`cargo xtask test` runs the
/// CLI suite again against `cargo xtask dist`'s build, the command as installed),
/// else the one cargo built for this test.
pub fn runner_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("RUNNER_TEST_CLI")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_runner").to_string())
    })
}

/// The busybox image `cargo xtask provision` builds.
pub const IMAGE: &str = "runner-test/busybox:latest";

/// True when a Docker engine answers (else skipped loudly, or a failure under
/// `RUNNER_REQUIRE_ENGINES=1`).
pub fn docker_available() -> bool {
    let up = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    runner_core::testing::engine_gate("a Docker engine", up)
}

/// True when nix is installed (else skipped loudly, or a failure under
/// `RUNNER_REQUIRE_ENGINES=1`).
pub fn nix_available() -> bool {
    runner_core::testing::engine_gate("nix", which_nix())
}

/// True when a `nix` is on PATH.
pub fn which_nix() -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("nix").is_file()))
        .unwrap_or(false)
}

/// An offline `NIX_CONFIG` whose flake registry is an empty one written into `dir`.
pub fn offline_nix_config(dir: &Path) -> String {
    let registry = dir.join("registry.json");
    std::fs::write(&registry, r#"{"flakes":[],"version":2}"#).unwrap();
    format!(
        "experimental-features = nix-command flakes\nsubstituters =\nsandbox = false\nflake-registry = {}\n",
        registry.display()
    )
}
