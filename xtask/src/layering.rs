//! `cargo xtask check-layering`: the crate graph's floors, no module circle, a true
//! ARCHITECTURE.md; and which crates each feature combination of the facade pulls.

use crate::{cargo, docs, modules, run, Result};

/// The crate graph drawn from the manifests: which workspace crates each one may
/// depend on (normal dependencies). The shim (standard library only) at the bottom,
/// core on it (the sync's wire), reaper on core, native and docker beside each
/// other, nix on native, then companion and CLI.
pub(crate) const LAYERS: [(&str, &[&str]); 8] = [
    ("runner-shim", &[]),
    ("runner-core", &["runner-shim"]),
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
            "runner-companion",
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
/// path that does not exist or outgrows a map.
pub(crate) fn check_layering() -> Result {
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
    check_one_engine_module()?;
    docs::check_architecture_paths()
}

/// Words that only `runner-docker/src/engine.rs` may write: a call through the
/// client, or a look at a status code or error of the client. Model types (request
/// bodies, answers) may be used anywhere in the crate.
const ENGINE_ONLY: [&str; 6] = [
    "bollard::Docker",
    "bollard::{",
    ".bollard()",
    "status_code",
    "DockerResponseServerError",
    "bollard::errors::Error::",
];

/// Fails when a file of runner-docker other than `engine.rs` calls the client or
/// decides what its errors mean.
fn check_one_engine_module() -> Result {
    let dir = crate::root().join("runner-docker/src");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("failed to read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "engine.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if let Some(word) = ENGINE_ONLY.iter().find(|w| code.contains(*w)) {
                return Err(format!(
                    "{}:{}: `{word}` outside runner-docker/src/engine.rs, the one module that calls the engine",
                    path.display(),
                    n + 1
                ));
            }
        }
    }
    eprintln!("xtask: runner-docker calls the engine from engine.rs alone");
    Ok(())
}

/// Each backend feature of the facade builds alone, and a docker-only build carries
/// no Nix code (and the reverse); the ledger crate carries no engine client and no
/// async runtime.
pub(crate) fn check_feature_combinations() -> Result {
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
