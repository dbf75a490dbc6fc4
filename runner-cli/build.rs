//! On Linux with glibc, `runner` links libgcc's unwinder statically (what
//! `gcc -static-libgcc` does) instead of loading `libgcc_s.so.1` at every start:
//! one shared library fewer to find, map and resolve, and no constructor of its
//! probing the CPU (`cargo xtask bench cli_overhead_vs_timeout`: about 40 µs of a
//! `runner run`). The whole archive is linked so that its `_Unwind_*` come before
//! the `-lgcc_s` std asks for, which `--as-needed` then drops. Panics unwind as
//! before (`main` catches one and exits 125).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let static_crt = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .unwrap_or_default()
        .split(',')
        .any(|f| f == "crt-static");
    if os == "linux" && env == "gnu" && !static_crt {
        println!("cargo:rustc-link-lib=static:+whole-archive,-bundle=gcc_eh");
    }
}
