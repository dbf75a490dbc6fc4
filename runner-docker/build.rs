//! Builds the in-container helper (`runner-shim`) as a static binary for the target
//! this crate is built for, which `helper.rs` embeds and copies into containers.
//! Where that cannot be done (not Linux, no static C library), an empty file is
//! embedded and the backend runs every process as a plain exec, saying why.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let shim = out.join("runner-shim");
    println!("cargo:rerun-if-changed={}", runner_shim::MAIN_SOURCE);
    println!("cargo:rerun-if-changed={}", runner_shim::PROTOCOL_SOURCE);
    println!("cargo:rerun-if-changed={}", runner_shim::SOURCE_DIR);
    println!("cargo:rerun-if-env-changed=RUNNER_NO_SHIM_BUILD");
    let target = std::env::var("TARGET").unwrap_or_default();
    let why_not = if !target.contains("-linux-") {
        Some(format!(
            "the helper is built for Linux targets only, not {target}"
        ))
    } else if std::env::var_os("RUNNER_NO_SHIM_BUILD").is_some() {
        Some("RUNNER_NO_SHIM_BUILD is set".to_string())
    } else {
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let built = Command::new(rustc)
            .args([
                "--edition",
                "2021",
                "--crate-name",
                "runner_shim",
                "--crate-type",
                "bin",
            ])
            .args([
                "-C",
                "opt-level=2",
                "-C",
                "panic=abort",
                "-C",
                "strip=symbols",
            ])
            .args(["-C", "target-feature=+crt-static", "--target", &target])
            .arg(runner_shim::MAIN_SOURCE)
            .arg("-o")
            .arg(&shim)
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output();
        match built {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "rustc failed to build it static: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .find(|l| l.starts_with("error"))
                    .unwrap_or("")
            )),
            Err(e) => Some(format!("rustc could not be run: {e}")),
        }
    };
    if let Some(why) = why_not {
        println!("cargo:warning=runner-shim not embedded: {why}");
        std::fs::write(&shim, b"").expect("write an empty helper");
        std::fs::write(out.join("runner-shim.why"), why).expect("write the reason");
    } else {
        std::fs::write(out.join("runner-shim.why"), b"").expect("write the reason");
    }
}
