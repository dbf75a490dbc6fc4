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
    let write = |says: &str| {
        std::fs::write(
            flake.dir().join("flake.nix"),
            format!(
                r#"{{
  outputs = {{ self }}: let
    tool = builtins.derivation {{
      name = "storetool"; system = "{system}"; builder = "/bin/bash";
      PATH = "/usr/bin:/bin";
      args = [ "-c" "mkdir -p $out/bin; printf '#!/bin/sh\\necho {says}\\n' > $out/bin/storetool; chmod +x $out/bin/storetool" ];
    }};
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

/// A cached environment of `flake`, initialized; once more if nix reports that it
/// killed this flake's builder itself. In 5 of about 16 fresh CI runs, Debian's nix 2.8 said the `storetool` builder (the
/// only test builder that runs child programs) "failed due to signal 9 (Killed)",
/// also with a nix-daemon as the builder's parent. A full run traced with tracefs
/// (`signal_generate`) showed every SIGKILL a nix builder received coming from nix
/// itself: the group kill it sends once a builder's log ends, which can land before
/// the builder's exit is final (NixOS/nix#2176). runner never signals a builder.
/// When a cached entry exists, a failed evaluation is not an error but a fall-back
/// to that entry (`StaleCache`), and that environment counts as materialized: the
/// retry is a new environment of the same flake. A failure of anything else, or
/// twice, fails the test.
async fn init(flake: &Flake) -> runner_nix::NixEnvironment {
    const NIX_KILLED_ITS_BUILDER: &str = "failed due to signal 9 (Killed)";
    let env = flake.cached_env();
    let killed = match env.init().await {
        Ok(()) => match env.materialization().map(|m| m.source) {
            Some(EnvSource::StaleCache(why)) if why.contains(NIX_KILLED_ITS_BUILDER) => why,
            _ => return env,
        },
        Err(e) if e.chain().contains(NIX_KILLED_ITS_BUILDER) => e.chain(),
        Err(e) => panic!("{}", e.chain()),
    };
    eprintln!("nix killed its own builder; evaluating once more: {killed}");
    drop(env);
    let env = flake.cached_env();
    env.init().await.unwrap();
    env
}
