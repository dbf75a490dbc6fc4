//! Cached shells as GC roots, in a binary of its own: it runs `nix-collect-garbage`,
//! which must not race the builds of the other nix suites.

mod common;
use common::*;

use runner_nix::{EnvSource, RunnerEnvironment};

/// A cached shell is a GC root: `nix-collect-garbage` keeps the store paths its
/// environment points to (a tool on its PATH), and an entry replaced after a flake
/// change releases the old root, so the old tool can be collected.
#[tokio::test]
async fn a_cached_shell_survives_garbage_collection() {
    if !nix_available() {
        return;
    }
    let flake = Flake::new("unused");
    let system = format!("{}-linux", std::env::consts::ARCH);
    // The tool is a source path copied into the store (`builtins.path`), not built:
    // a builder that runs child programs is sometimes killed by nix itself once its
    // log ends (NixOS/nix#2176), which is nix's race, not what this test measures.
    let write = |says: &str| {
        let bin = flake.dir().join("tool/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let tool = bin.join("storetool");
        std::fs::write(&tool, format!("#!/bin/sh\necho {says}\n")).unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(
            flake.dir().join("flake.nix"),
            format!(
                r#"{{
  outputs = {{ self }}: let
    tool = builtins.path {{ path = ./tool; name = "storetool"; }};
  in {{
    devShells.{system}.default = builtins.derivation {{
      name = "gc-shell"; system = "{system}"; builder = "/bin/bash";
      outputs = [ "out" ]; PATH = "${{tool}}/bin";
    }};
  }};
}}
"#
            ),
        )
        .unwrap();
    };
    let gc = || {
        let out = std::process::Command::new("nix-collect-garbage")
            .output()
            .expect("nix-collect-garbage");
        assert!(out.status.success(), "{out:?}");
    };
    write("first");
    let env = init(&flake).await;
    let first = output(&env, "sh", &["-c", "command -v storetool"])
        .await
        .1
        .trim()
        .to_string();
    assert!(first.starts_with("/nix/store/"), "{first}");
    drop(env);
    gc();
    // From the cache, after the collection: the tool is still there.
    let env = init(&flake).await;
    assert_eq!(env.materialization().unwrap().source, EnvSource::Cache);
    assert_eq!(output(&env, "storetool", &[]).await.1, "first\n");
    drop(env);
    // The flake changes: the new entry has its own root, the old one is released.
    write("second");
    let env = init(&flake).await;
    assert_eq!(env.materialization().unwrap().source, EnvSource::Evaluated);
    assert_eq!(output(&env, "storetool", &[]).await.1, "second\n");
    let generations = std::fs::read_dir(flake.cache())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.contains(".profile-") && name.ends_with("-link")
        })
        .count();
    assert_eq!(generations, 1, "one root per cached shell");
    gc();
    assert!(
        !std::path::Path::new(&first).exists(),
        "the replaced shell's tool {first} is still rooted"
    );
    assert_eq!(output(&env, "storetool", &[]).await.1, "second\n");
}

/// A cached environment of `flake`, initialized.
async fn init(flake: &Flake) -> runner_nix::NixEnvironment {
    let env = flake.cached_env();
    env.init().await.unwrap_or_else(|e| panic!("{}", e.chain()));
    env
}
