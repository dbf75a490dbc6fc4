//! Workspace automation: `cargo xtask test`, `cargo xtask test-docker` and
//! `cargo xtask bench [--quick] [ROW-NAME-PART...]`, `cargo xtask provision` and
//! `cargo xtask check-macos`.
//!
//! `test` checks formatting and clippy, provisions what the engine suites need when
//! it can, runs every test with `HOME` and the ledger pointed at a scratch directory
//! (tests never touch the real home), and fails if a test left a ledger record
//! behind; it also runs `check-macos`. `bench` builds the benchmark in release mode
//! and writes `target/bench/results.json`. `check-macos` type-checks the whole
//! workspace, all targets, for `aarch64-apple-darwin` and `x86_64-apple-darwin`.
#![forbid(unsafe_code)]

mod apt;
mod docs;
mod modules;
mod toolchain;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("test-docker") => test_docker(),
        Some("provision") => provision(),
        Some("check-macos") => check_macos(),
        Some("check-layering") => check_layering(),
        Some("check-rust-version") => toolchain::check_declared(),
        _ => {
            eprintln!(
                "usage: cargo xtask test [-- CARGO TEST ARGS]\n       cargo xtask bench [--quick] [ROW-NAME-PART...]\n       cargo xtask test-docker\n       cargo xtask provision\n       cargo xtask check-macos\n       cargo xtask check-layering\n       cargo xtask check-rust-version"
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
        .env("RUNNER_STATE_DIR", &state);
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
    // Multi-user nix, as most people run it: the nix suites again, as clients of a
    // nix-daemon (NIX_REMOTE=daemon) that builds as the build users xtask creates.
    if tested.is_ok() && on_path("nix") {
        tested = with_nix_daemon(|| {
            let mut result = Ok(());
            for args in [
                &["-p", "runner-nix"][..],
                &[
                    "-p",
                    "runner-tests",
                    "--test",
                    "conformance",
                    "nix_conforms",
                ],
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

/// Each backend feature of the facade builds alone, and a docker-only build carries
/// no Nix code (and the reverse); the ledger crate carries no engine client and no
/// async runtime.
/// The crate graph drawn from the manifests: which workspace crates each one may
/// depend on (normal dependencies). Four floors: core and reaper at the bottom,
/// native and docker beside each other, nix on native, then companion and CLI.
const LAYERS: [(&str, &[&str]); 8] = [
    ("runner-core", &[]),
    ("runner-shim", &[]),
    ("runner-reaper", &["runner-core"]),
    ("runner-native", &["runner-core", "runner-reaper"]),
    (
        "runner-docker",
        &["runner-core", "runner-reaper", "runner-shim"],
    ),
    ("runner-nix", &["runner-core", "runner-native"]),
    (
        "runner-companion",
        &[
            "runner-core",
            "runner-native",
            "runner-reaper",
            "runner-docker",
            "runner-nix",
        ],
    ),
    (
        "runner-cli",
        &[
            "runner-core",
            "runner-native",
            "runner-reaper",
            "runner-docker",
            "runner-nix",
        ],
    ),
];

/// Fails when a crate depends on a workspace crate its floor does not allow, when
/// modules of a crate import each other in a circle, or when ARCHITECTURE.md names a
/// path that does not exist.
fn check_layering() -> Result {
    for (krate, allowed) in LAYERS {
        let tree = cargo()
            .args([
                "tree", "--quiet", "-e", "normal", "--depth", "1", "--prefix", "none",
            ])
            .args(["-p", krate])
            .output()
            .map_err(|e| format!("failed to run cargo tree: {e}"))?;
        let tree = String::from_utf8_lossy(&tree.stdout);
        for dep in tree
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
        {
            if dep.starts_with("runner-") && dep != krate && !allowed.contains(&dep) {
                return Err(format!(
                    "{krate} depends on {dep}: the crate graph allows it only {allowed:?} (ARCHITECTURE.md)"
                ));
            }
        }
    }
    modules::check_no_circles()?;
    docs::check_architecture_paths()
}

fn check_feature_combinations() -> Result {
    let tree = cargo()
        .args(["tree", "--quiet", "-e", "normal", "-p", "runner-reaper"])
        .output()
        .map_err(|e| format!("failed to run cargo tree: {e}"))?;
    let tree = String::from_utf8_lossy(&tree.stdout);
    for crate_name in ["runner-docker", "bollard", "tokio"] {
        if tree.lines().any(|l| l.contains(&format!("{crate_name} v"))) {
            return Err(format!("runner-reaper depends on {crate_name}"));
        }
    }
    let combos: [(&str, &[&str]); 4] = [
        ("native", &["runner-nix", "runner-docker", "bollard"]),
        ("docker", &["runner-nix"]),
        ("nix", &["runner-docker", "bollard"]),
        ("native,docker,nix", &[]),
    ];
    for (features, absent) in combos {
        let flags = [
            "-p",
            "runner-companion",
            "--no-default-features",
            "--features",
            features,
        ];
        run(
            &format!("cargo check runner-companion --features {features}"),
            cargo().arg("check").arg("--quiet").args(flags),
        )?;
        let tree = cargo()
            .args(["tree", "--quiet", "-e", "normal"])
            .args(flags)
            .output()
            .map_err(|e| format!("failed to run cargo tree: {e}"))?;
        let tree = String::from_utf8_lossy(&tree.stdout);
        for crate_name in absent {
            if tree.lines().any(|l| l.contains(&format!("{crate_name} v"))) {
                return Err(format!(
                    "runner-companion with only `{features}` depends on {crate_name}"
                ));
            }
        }
    }
    Ok(())
}

/// Debian's Rust toolchain with its standard library's sources: what `check-macos`
/// builds `std` for Apple targets with (rustup cannot fetch targets offline).
const MACOS_CHECK_CARGO: &str = "/usr/bin/cargo";
const MACOS_CHECK_PACKAGES: [&str; 3] = ["rustc-web", "cargo-web", "rust-web-src"];

/// Type-checks the whole workspace, all targets, for both macOS targets, with
/// `std` built from source (`-Zbuild-std`) by Debian's toolchain, offline. Any
/// error, or a warning in one of our crates, fails it. Without the toolchain (and
/// not root to install it) it is skipped loudly, or fails under
/// `RUNNER_REQUIRE_ENGINES=1`.
/// A type check needs no machine code, and this machine has no macOS C toolchain:
/// C sources of dependencies (ring, under rustls) are "compiled" by a stub that
/// writes empty objects and archives. The Rust code is fully type-checked; the stub
/// only stands in for `cc` and `ar` of the macOS targets.
fn macos_c_stubs() -> std::result::Result<Vec<(String, PathBuf)>, String> {
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

fn check_macos() -> Result {
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
fn rust_src() -> Option<PathBuf> {
    std::fs::read_dir("/usr/src")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("library/std"))
        .find(|p| p.exists())
}

/// Installs and configures the engines as `test` would, and leaves the dockerd it
/// started running (for running single test binaries by hand).
fn provision() -> Result {
    apt_install_missing()?;
    provision_nix()?;
    if let Some(d) = provision_docker()? {
        eprintln!("xtask: dockerd left running as pid {}", d.id());
    }
    Ok(())
}

/// The Docker suites alone, with the engine provisioned.
fn test_docker() -> Result {
    apt_install_missing()?;
    let dockerd = provision_docker()?;
    let scratch = root().join("target/xtask-test");
    let home = scratch.join("home");
    std::fs::create_dir_all(&home)
        .map_err(|e| format!("failed to create {}: {e}", home.display()))?;
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

/// One apt-get run for every engine package that is missing (as root only), after
/// bringing the package lists up to date; each wanted program must then be there.
fn apt_install_missing() -> Result {
    let mut wanted = Vec::new();
    if !on_path("nix") {
        wanted.push("nix-bin");
    }
    if !on_path("dockerd") {
        wanted.push("docker.io");
    }
    if !Path::new("/bin/busybox").exists() && !Path::new("/usr/bin/busybox").exists() {
        wanted.push("busybox-static");
    }
    // The engine-resolution and registry tests: a TLS dockerd (certificates made
    // with openssl) and a local registry with htpasswd logins; the engine in its own
    // namespaces: unshare and nsenter.
    for (program, package) in [
        ("openssl", "openssl"),
        ("docker-registry", "docker-registry"),
        ("htpasswd", "apache2-utils"),
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
    ] {
        if !on_path(program) && !wanted.contains(&package) {
            wanted.push(package);
        }
    }
    if wanted.is_empty() || !is_root() || !on_path("apt-get") {
        return Ok(());
    }
    let installed = apt::install(&wanted);
    if let Err(e) = installed {
        if engines_required() {
            return Err(e);
        }
        eprintln!("xtask: WARNING: {e}; suites that need these packages will skip");
    }
    Ok(())
}

fn docker_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The image the Docker suites use: busybox and its applets, imported from a
/// root filesystem (no registry is reachable).
const TEST_IMAGE: &str = "runner-test/busybox:latest";

fn build_test_image() -> Result {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or("busybox is not installed (package busybox-static)")?;
    let root = root().join("target/xtask-test-image");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "tmp", "proc", "etc", "dev", "sys"] {
        std::fs::create_dir_all(root.join(d))
            .map_err(|e| format!("failed to create the image root: {e}"))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox"))
        .map_err(|e| format!("failed to copy busybox: {e}"))?;
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("failed to list busybox applets: {e}"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    let script = format!(
        "tar -C '{}' -c . | docker import --change 'ENV PATH=/bin' - {TEST_IMAGE} >/dev/null",
        root.display()
    );
    run(
        "docker import of the busybox test image",
        Command::new("sh").args(["-c", &script]),
    )
}

/// Makes sure an engine answers and the test image exists. Returns the dockerd we
/// started, to stop it afterwards.
fn provision_docker() -> Result<Option<std::process::Child>> {
    let mut started = None;
    let why = if docker_answers() {
        None
    } else if !on_path("dockerd") {
        Some("dockerd is not installed (package docker.io)".to_string())
    } else if !is_root() {
        Some("no Docker engine answers and xtask is not root, so it cannot start one".to_string())
    } else {
        eprintln!("xtask: starting dockerd");
        let log = root().join("target/dockerd.log");
        let _ = std::fs::create_dir_all(root().join("target"));
        let out = std::fs::File::create(&log)
            .map_err(|e| format!("failed to create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("dockerd")
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("failed to start dockerd: {e}"))?;
        started = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        while !docker_answers() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        if docker_answers() {
            None
        } else {
            Some(format!(
                "dockerd did not answer within 90 s (see {})",
                log.display()
            ))
        }
    };
    if let Some(why) = why {
        if let Some(mut d) = started {
            let _ = d.kill();
            let _ = d.wait();
        }
        if engines_required() {
            return Err(format!("RUNNER_REQUIRE_ENGINES=1 but {why}"));
        }
        eprintln!("xtask: WARNING: the Docker suites will be SKIPPED: {why}");
        return Ok(None);
    }
    build_test_image()?;
    eprintln!("xtask: Docker engine ready, test image {TEST_IMAGE} built");
    Ok(started)
}

/// Containers labelled runner.owner still on the engine, if any.
fn docker_leftovers() -> Option<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=runner.owner",
            "--format",
            "{{.Names}}",
        ])
        .output()
        .ok()?;
    let names = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!names.is_empty()).then_some(names)
}

/// Installs Debian's nix-bin when nix is missing and we are root. Without nix the
/// nix suites skip loudly, or fail when RUNNER_REQUIRE_ENGINES=1.
fn provision_nix() -> Result {
    if on_path("nix") {
        eprintln!("xtask: nix found");
        return configure_nix();
    }
    let why = if !is_root() {
        "nix is missing and xtask is not root, so it cannot install it".to_string()
    } else if !on_path("apt-get") {
        "nix is missing and there is no apt-get to install it with".to_string()
    } else {
        match apt::install(&["nix-bin"]) {
            Ok(()) if on_path("nix") => return configure_nix(),
            Ok(()) => "nix-bin was installed but there is no nix on PATH".to_string(),
            Err(e) => e,
        }
    };
    if engines_required() {
        return Err(format!("RUNNER_REQUIRE_ENGINES=1 but {why}"));
    }
    eprintln!("xtask: WARNING: the nix suites will be SKIPPED: {why}");
    Ok(())
}

/// Where a nix-daemon listens.
const NIX_DAEMON_SOCKET: &str = "/nix/var/nix/daemon-socket/socket";

/// Runs `f` with a nix-daemon of ours answering on [`NIX_DAEMON_SOCKET`]: the
/// `nixbld` group and build users `nixbld1..4` are created if missing (as a
/// multi-user install does), the daemon builds as them (`build-users-group =
/// nixbld` for the daemon only; clients in single-user mode keep building as root),
/// and it is stopped by pid afterwards. Not root, or no `nix-daemon`: skipped
/// loudly (a failure with `RUNNER_REQUIRE_ENGINES=1`).
fn with_nix_daemon(f: impl FnOnce() -> Result) -> Result {
    let why_not = if !is_root() {
        Some("xtask is not root, so it cannot create build users or run a daemon")
    } else if !on_path("nix-daemon") {
        Some("there is no nix-daemon")
    } else if std::path::Path::new(NIX_DAEMON_SOCKET).exists() {
        Some("a nix-daemon already listens (its settings are not ours to rely on)")
    } else {
        None
    };
    if let Some(why) = why_not {
        if engines_required() {
            return Err(format!(
                "RUNNER_REQUIRE_ENGINES=1 but the daemon-mode nix suites cannot run: {why}"
            ));
        }
        eprintln!("xtask: WARNING: the daemon-mode nix suites are SKIPPED: {why}");
        return Ok(());
    }
    if !group_exists("nixbld") {
        run(
            "groupadd nixbld",
            Command::new("groupadd").args(["--system", "nixbld"]),
        )?;
    }
    for n in 1..=4 {
        let user = format!("nixbld{n}");
        let known = Command::new("getent")
            .args(["passwd", &user])
            .output()
            .is_ok_and(|o| o.status.success());
        if !known {
            run(
                &format!("useradd {user}"),
                Command::new("useradd").args([
                    "--system",
                    "--no-create-home",
                    "--home-dir",
                    "/var/empty",
                    "--shell",
                    "/usr/sbin/nologin",
                    "--gid",
                    "nixbld",
                    "--groups",
                    "nixbld",
                    &user,
                ]),
            )?;
        }
    }
    eprintln!("xtask: starting a nix-daemon (build users nixbld1..4)");
    let mut daemon = Command::new("nix-daemon")
        .env(
            "NIX_CONFIG",
            "build-users-group = nixbld\nexperimental-features = nix-command flakes\nsubstituters =\nsandbox = false",
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("failed to start nix-daemon: {e}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::path::Path::new(NIX_DAEMON_SOCKET).exists() {
        if std::time::Instant::now() > deadline || daemon.try_wait().ok().flatten().is_some() {
            let _ = daemon.kill();
            let _ = daemon.wait();
            return Err("the nix-daemon did not start listening within 20 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let result = f();
    eprintln!("xtask: stopping the nix-daemon we started");
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
    let _ = std::fs::remove_file(NIX_DAEMON_SOCKET);
    result
}

/// The engine's own configuration file, which every `nix` on this machine reads.
const NIX_CONF: &str = "/etc/nix/nix.conf";

/// Makes the installed nix able to build as root.
///
/// Debian's nix-bin defaults to `build-users-group = nixbld`, the group of build
/// users that a multi-user install creates and Debian's package does not. Without
/// it every build fails ("the group 'nixbld' specified in 'build-users-group' does
/// not exist"). The tests run nix as root in single-user mode, where builds may run
/// as root itself, so xtask sets `build-users-group =` (empty: no build users) in
/// `/etc/nix/nix.conf` rather than creating a group and system users on the host:
/// it is one line in nix's own configuration file, it is what the nix manual
/// prescribes for a root single-user install, and it changes nothing outside nix.
/// A group that exists is left in use.
fn configure_nix() -> Result {
    let Some(group) = nix_setting("build-users-group") else {
        return Err("`nix show-config` did not name build-users-group".into());
    };
    if group.is_empty() || group_exists(&group) {
        return Ok(());
    }
    let why = format!("nix's build-users-group `{group}` does not exist");
    if !is_root() {
        if engines_required() {
            return Err(format!(
                "RUNNER_REQUIRE_ENGINES=1 but {why} and xtask is not root, so it cannot set \
                 `build-users-group =` in {NIX_CONF}"
            ));
        }
        eprintln!("xtask: WARNING: the nix suites will FAIL to build: {why}");
        return Ok(());
    }
    eprintln!("xtask: {why}; setting `build-users-group =` in {NIX_CONF} (root, single-user)");
    let conf = Path::new(NIX_CONF);
    if let Some(dir) = conf.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
    }
    let mut text = std::fs::read_to_string(conf).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(
        "# Written by `cargo xtask test`: root single-user nix builds without build users.\n",
    );
    text.push_str("build-users-group =\n");
    std::fs::write(conf, text).map_err(|e| format!("failed to write {NIX_CONF}: {e}"))?;
    match nix_setting("build-users-group") {
        Some(g) if g.is_empty() => Ok(()),
        other => Err(format!(
            "{NIX_CONF} now says `build-users-group =` but nix still reads {other:?}"
        )),
    }
}

/// A setting as the installed nix resolves it from all of its configuration.
fn nix_setting(name: &str) -> Option<String> {
    let out = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "show-config",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

fn group_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/group")
        .is_ok_and(|groups| groups.lines().any(|l| l.split(':').next() == Some(name)))
}

fn bench(args: &[String]) -> Result {
    // `cli_overhead` runs the release `runner` next to the bench binary.
    run(
        "cargo build --release -p runner-cli",
        cargo().args(["build", "--release", "--quiet", "-p", "runner-cli"]),
    )?;
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
