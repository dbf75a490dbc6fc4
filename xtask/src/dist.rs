//! `cargo xtask dist`: the `runner` command as it is installed, `target/dist/runner`.
//!
//! The `dist` profile (the workspace's `Cargo.toml`) is release with the whole
//! program optimized as one unit (fat LTO, one codegen unit): a fifth less code,
//! and 40% fewer pointers for the loader to relocate at every start. With libgcc's
//! unwinder linked in (`runner-cli/build.rs`) that takes about 0.15 ms off each
//! `runner run` (`cargo xtask bench cli_overhead_vs_timeout`).
//!
//! It stays dynamically linked against glibc. A static glibc (`-C
//! target-feature=+crt-static`) would start 0.3 ms sooner still, but glibc loads
//! name services (`nsswitch.conf`'s `systemd`, `sss`, `mdns`) as shared libraries
//! even into a static binary, and they crash it: `runner doctor` looking up a
//! missing nix build group segfaulted in `_nss_systemd_getgrnam_r`.

use std::path::PathBuf;

use crate::{cargo, root, run, Result};

/// Builds `target/dist/runner` and returns its path.
pub(crate) fn dist() -> Result<PathBuf> {
    run(
        "cargo build --profile dist -p runner-cli",
        cargo().args(["build", "--quiet", "--profile", "dist", "-p", "runner-cli"]),
    )?;
    let bin = root().join("target/dist/runner");
    if !bin.is_file() {
        return Err(format!("the dist build left no {}", bin.display()));
    }
    Ok(bin)
}
