//! The Nix backend against a real `nix`, offline, with input-less test flakes.

use std::path::PathBuf;
use std::sync::Arc;

use runner_core::{CaptureSink, Error, ExitStatus, Proc, RunnerEnvironment};
use runner_nix::{check_nix_installed, EnvSource, NixEnvironment, NixError};

/// Skips (loudly) when nix is missing, unless engines are required.
fn nix_available() -> bool {
    runner_core::testing::engine_gate("nix", check_nix_installed())
}

struct Flake {
    tmp: tempfile::TempDir,
}

const SHELL: &str = r#"builtins.derivation {
      name = "test-shell";
      system = "SYSTEM";
      builder = "/bin/bash";
      outputs = [ "out" ];
      PATH = "TOOLS";
      GREETING = "GREETING_VALUE";
      MULTI = "line1\nline2=x";
      shellHook = "export HOOKED=yes; export HOOK_PATH_SEEN=$PATH";
    }"#;

impl Flake {
    fn new(greeting: &str) -> Flake {
        let tmp = tempfile::tempdir().unwrap();
        let f = Flake { tmp };
        std::fs::create_dir_all(f.dir()).unwrap();
        std::fs::create_dir_all(f.tools()).unwrap();
        std::fs::create_dir_all(f.tmp.path().join("state")).unwrap();
        for (name, body) in [
            ("mytool", "#!/bin/sh\necho shell-tool \"$@\"\n"),
            // Also on the host as /usr/bin/uname: the shell's must win.
            ("uname", "#!/bin/sh\necho shell-uname\n"),
        ] {
            let p = f.tools().join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        std::fs::write(
            f.tmp.path().join("registry.json"),
            r#"{"flakes":[],"version":2}"#,
        )
        .unwrap();
        f.write_shell(&SHELL.replace("GREETING_VALUE", greeting));
        f
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("flake")
    }

    fn tools(&self) -> PathBuf {
        self.tmp.path().join("tools")
    }

    fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    fn write_shell(&self, shell: &str) {
        let system = format!("{}-linux", std::env::consts::ARCH);
        let shell = shell
            .replace("SYSTEM", &system)
            .replace("TOOLS", self.tools().to_str().unwrap());
        let flake = format!(
            "{{\n  outputs = {{ self }}: {{\n    devShells.{system}.default = {shell};\n  }};\n}}\n"
        );
        std::fs::write(self.dir().join("flake.nix"), flake).unwrap();
    }

    fn env(&self) -> NixEnvironment {
        let mut env = NixEnvironment::new(self.dir()).unwrap();
        env.with_nix_option("substituters", "")
            .with_nix_option(
                "flake-registry",
                self.tmp.path().join("registry.json").to_str().unwrap(),
            )
            .with_nix_option("sandbox", "false")
            .with_state_dir(self.tmp.path().join("state"));
        // No cache unless a test asks for one (the default is the user's).
        env.without_cache();
        env
    }

    fn cached_env(&self) -> NixEnvironment {
        let mut env = self.env();
        env.with_cache_dir(self.cache());
        env
    }

    fn records(&self) -> usize {
        std::fs::read_dir(self.tmp.path().join("state/runs"))
            .map(|rd| {
                rd.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".json")
                })
                .count()
            })
            .unwrap_or(0)
    }
}

async fn output(env: &NixEnvironment, bin: &str, args: &[&str]) -> (ExitStatus, String) {
    let mut p = env.new_process(bin, args).await.unwrap();
    let cap = CaptureSink::new();
    p.with_output(cap.clone());
    let status = p.run().await.unwrap();
    (status, cap.stdout_string())
}

const PROBE: &str = "printf '%s|%s|%s|' \"$GREETING\" \"$HOOKED\" \"$MULTI\"; uname; mytool a";

fn nix_error(e: &Error) -> &NixError {
    match e {
        Error::Backend { source, .. } => source.downcast_ref::<NixError>().expect("a NixError"),
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn wrapped_and_materialized_modes_see_the_same_shell() {
    if !nix_available() {
        return;
    }
    let flake = Flake::new("hello from nix");
    let env = flake.env();
    let expected = "hello from nix|yes|line1\nline2=x|shell-uname\nshell-tool a\n";

    // Wrapped: nix develop per process.
    assert!(!env.is_materialized());
    let (status, out) = output(&env, "sh", &["-c", PROBE]).await;
    assert!(status.success());
    assert_eq!(out, expected);
    let (status, out) = output(&env, "uname", &[]).await;
    assert_eq!((status.success(), out.as_str()), (true, "shell-uname\n"));
    env.with_binary("mytool").await.unwrap();
    assert!(matches!(
        env.with_binary("not-in-any-shell").await,
        Err(Error::NotFound { .. })
    ));

    // Materialized: exec'd directly with the captured env.
    env.init().await.unwrap();
    assert_eq!(env.materialization().unwrap().source, EnvSource::Evaluated);
    let (status, out) = output(&env, "sh", &["-c", PROBE]).await;
    assert!(status.success());
    assert_eq!(out, expected);
    // The shell's binary is resolved on the shell's PATH, not the host's.
    let (_, out) = output(&env, "uname", &[]).await;
    assert_eq!(out, "shell-uname\n");
    // Host variables are underneath; nix's own ignore list is not applied.
    let (_, out) = output(
        &env,
        "sh",
        &["-c", "echo $HOME; echo ${NIX_BUILD_TOP:-unset}"],
    )
    .await;
    assert_eq!(out, format!("{}\nunset\n", std::env::var("HOME").unwrap()));
    env.with_binary("mytool").await.unwrap();
    let mut missing = env.new_process("not-in-any-shell", &[]).await.unwrap();
    assert!(matches!(missing.run().await, Err(Error::NotFound { .. })));
    env.shutdown().await.unwrap();
    assert_eq!(flake.records(), 0);
}

#[tokio::test]
async fn nix_procs_meet_the_proc_contract_in_both_modes() {
    if !nix_available() {
        return;
    }
    let flake = Flake::new("x");
    let env = flake.env();
    for materialized in [false, true] {
        if materialized {
            env.init().await.unwrap();
        }
        let (status, _) = output(&env, "sh", &["-c", "exit 3"]).await;
        assert_eq!(status, ExitStatus::Exited(3), "materialized={materialized}");

        let mut p = env
            .new_process("sh", &["-c", "read l; echo got:$l"])
            .await
            .unwrap();
        let mut stdin = p.stdin_pipe().unwrap();
        let mut stdout = p.stdout_pipe().unwrap();
        p.start().await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stdin.write_all(b"ping\n").await.unwrap();
        drop(stdin);
        let mut got = String::new();
        stdout.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "got:ping\n");
        assert!(p.wait().await.unwrap().success());

        let mut p = env.new_process("sleep", &["30"]).await.unwrap();
        p.start().await.unwrap();
        let p: Arc<dyn Proc> = Arc::from(p);
        let waiter = {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.wait().await.unwrap() })
        };
        p.stop().await.unwrap();
        let status = waiter.await.unwrap();
        assert!(!status.success(), "materialized={materialized}: {status}");
        assert!(!p.is_running().await.unwrap());
    }
    assert_eq!(flake.records(), 0);
}

#[tokio::test]
async fn cache_hits_invalidates_and_falls_back_loudly() {
    if !nix_available() {
        return;
    }
    let flake = Flake::new("first");
    let env = flake.cached_env();
    env.init().await.unwrap();
    assert_eq!(env.materialization().unwrap().source, EnvSource::Evaluated);

    let env = flake.cached_env();
    env.init().await.unwrap();
    let info = env.materialization().unwrap();
    assert_eq!((info.source, info.cache_warning), (EnvSource::Cache, None));
    assert_eq!(
        output(&env, "sh", &["-c", "echo $GREETING"]).await.1,
        "first\n"
    );
    // Go's caches, which this shell leaves unset, point under the runner cache (a
    // host that sets them keeps its own).
    if std::env::var_os("GOCACHE").is_none() && std::env::var_os("GOMODCACHE").is_none() {
        let cache = flake.cache();
        assert_eq!(
            output(&env, "sh", &["-c", "echo $GOCACHE $GOMODCACHE"])
                .await
                .1,
            format!(
                "{} {}\n",
                cache.join("go/build").display(),
                cache.join("go/mod").display()
            )
        );
    }
    // Without a cache directory nothing is pinned (and nothing is kept).
    let bare = flake.env();
    assert_eq!(bare.cache_dir(), None);
    // The default is the user's cache directory.
    let defaulted = NixEnvironment::new(flake.dir()).unwrap();
    assert_eq!(
        defaulted.cache_dir(),
        runner_nix::default_cache_dir().as_deref()
    );

    // A changed flake.nix invalidates the entry.
    flake.write_shell(&SHELL.replace("GREETING_VALUE", "second"));
    let env = flake.cached_env();
    env.init().await.unwrap();
    assert_eq!(env.materialization().unwrap().source, EnvSource::Evaluated);
    assert_eq!(
        output(&env, "sh", &["-c", "echo $GREETING"]).await.1,
        "second\n"
    );

    // So does a new imported .nix file, and a broken one falls back to the last good env.
    std::fs::write(flake.dir().join("extra.nix"), "{ broken = ; }").unwrap();
    std::fs::write(
        flake.dir().join("flake.nix"),
        "{ outputs = { self }: { devShells = import ./extra.nix; }; }",
    )
    .unwrap();
    let env = flake.cached_env();
    env.init().await.unwrap();
    let info = env.materialization().unwrap();
    assert!(info.is_stale());
    match &info.source {
        EnvSource::StaleCache(msg) => assert!(msg.contains("syntax error"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        output(&env, "sh", &["-c", "echo $GREETING"]).await.1,
        "second\n"
    );
    assert_eq!(flake.records(), 0);
}

#[tokio::test]
async fn damaged_or_unwritable_caches_are_reported_not_fatal() {
    if !nix_available() {
        return;
    }
    let flake = Flake::new("v");
    let env = flake.cached_env();
    env.init().await.unwrap();
    let entry = std::fs::read_dir(flake.cache())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();

    let full = std::fs::read(&entry).unwrap();
    std::fs::write(&entry, &full[..full.len() / 2]).unwrap();
    let env = flake.cached_env();
    env.init().await.unwrap();
    let info = env.materialization().unwrap();
    assert_eq!(info.source, EnvSource::Evaluated);
    assert!(info.cache_warning.unwrap().contains("unreadable"));
    // It was rewritten whole.
    assert_eq!(std::fs::read(&entry).unwrap().len(), full.len());

    std::fs::write(&entry, br#"{"schema": 99, "env": {}}"#).unwrap();
    let env = flake.cached_env();
    env.init().await.unwrap();
    let info = env.materialization().unwrap();
    assert_eq!(info.source, EnvSource::Evaluated);
    assert!(info.cache_warning.unwrap().contains("schema 99"));

    let blocked = flake.tmp.path().join("not-a-dir");
    std::fs::write(&blocked, "").unwrap();
    let mut env = flake.env();
    env.with_cache_dir(blocked.join("cache"));
    env.init().await.unwrap();
    let info = env.materialization().unwrap();
    assert_eq!(info.source, EnvSource::Evaluated);
    assert!(info.cache_warning.unwrap().contains("failed to write"));
    assert_eq!(output(&env, "sh", &["-c", "echo $GREETING"]).await.1, "v\n");
}

#[tokio::test]
async fn broken_flakes_are_typed_errors_with_nix_stderr() {
    if !nix_available() {
        return;
    }
    let flake = Flake::new("v");
    std::fs::write(flake.dir().join("flake.nix"), "{ outputs = { self }: { ").unwrap();
    let err = flake.env().init().await.unwrap_err();
    match nix_error(&err) {
        NixError::Evaluation { stderr, .. } => assert!(stderr.contains("syntax error"), "{stderr}"),
        other => panic!("{other:?}"),
    }

    flake.write_shell("throw \"this shell is broken\"");
    let err = flake.env().init().await.unwrap_err();
    match nix_error(&err) {
        NixError::Evaluation { stderr, .. } => {
            assert!(stderr.contains("this shell is broken"), "{stderr}")
        }
        other => panic!("{other:?}"),
    }

    let empty = tempfile::tempdir().unwrap();
    let err = NixEnvironment::new(empty.path()).unwrap_err();
    assert!(matches!(nix_error(&err), NixError::NoFlake(p) if p == empty.path()));
    assert!(err.chain().contains("no flake.nix"), "{}", err.chain());
}

#[tokio::test]
async fn new_process_is_safe_while_init_runs() {
    if !nix_available() {
        return;
    }
    let flake = Flake::new("concurrent");
    let env = Arc::new(flake.env());
    let init = {
        let env = Arc::clone(&env);
        tokio::spawn(async move { env.init().await })
    };
    let mut runs = Vec::new();
    for _ in 0..6 {
        let env = Arc::clone(&env);
        runs.push(tokio::spawn(async move {
            output(&env, "sh", &["-c", "echo $GREETING"]).await
        }));
    }
    init.await.unwrap().unwrap();
    for r in runs {
        let (status, out) = r.await.unwrap();
        assert!(status.success());
        assert_eq!(out, "concurrent\n");
    }
    // Concurrent inits are serialized, and a second one is a no-op.
    env.init().await.unwrap();
    assert_eq!(flake.records(), 0);
}

/// A nix that cannot build (its build users group is missing, as with Debian's
/// nix-bin on a new machine) is a typed error naming the cause and the fix, both
/// from `init` and from the configuration check `runner doctor` uses.
#[tokio::test]
async fn a_nix_that_cannot_build_says_why() {
    if !nix_available() {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: build users are checked for a root single-user nix only");
        return;
    }
    let flake = Flake::new("hi");
    let mut env = flake.env();
    env.with_nix_option("build-users-group", "runner-no-such-group");
    let err = env.init().await.unwrap_err();
    let Error::Backend { source, .. } = &err else {
        panic!("expected a backend error, got {err:?}");
    };
    match source.downcast_ref::<NixError>() {
        Some(NixError::CannotBuild(runner_nix::CannotBuild::NoBuildUsersGroup { group })) => {
            assert_eq!(group, "runner-no-such-group")
        }
        other => panic!("expected CannotBuild, got {other:?}"),
    }
    let text = err.chain();
    assert!(text.contains("build-users-group ="), "{text}");
    assert_eq!(flake.records(), 0);

    // The same cause, found from the configuration before anything is built.
    let checked = env.check_can_build().await;
    assert!(
        matches!(
            checked,
            Err(runner_nix::CannotBuild::NoBuildUsersGroup { .. })
        ),
        "{checked:?}"
    );
    assert_eq!(flake.env().check_can_build().await, Ok(()));
}

/// A flake with a local `path` input (outside its directory) and the `flake.lock`
/// nix writes for it, offline: a file of the input invalidates the cached shell, a
/// file of the project that is not nix does not.
#[tokio::test]
async fn a_local_input_is_part_of_the_cache_fingerprint() {
    if !nix_available() {
        return;
    }
    let flake = Flake::new("unused");
    let lib = flake.tmp.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(lib.join("greeting.txt"), "from-input").unwrap();
    let system = format!("{}-linux", std::env::consts::ARCH);
    std::fs::write(
        flake.dir().join("flake.nix"),
        format!(
            r#"{{
  inputs.lib = {{ url = "path:{}"; flake = false; }};
  outputs = {{ self, lib }}: {{
    devShells.{system}.default = builtins.derivation {{
      name = "with-input"; system = "{system}"; builder = "/bin/bash";
      outputs = [ "out" ];
      GREETING = builtins.readFile "${{lib}}/greeting.txt";
    }};
  }};
}}
"#,
            lib.display()
        ),
    )
    .unwrap();
    let greeting = |env: NixEnvironment| async move {
        env.init().await.unwrap();
        let source = env.materialization().unwrap().source;
        (
            source,
            output(&env, "sh", &["-c", "echo $GREETING"]).await.1,
        )
    };
    let (source, said) = greeting(flake.cached_env()).await;
    assert_eq!(
        (source, said.as_str()),
        (EnvSource::Evaluated, "from-input\n")
    );
    assert!(
        flake.dir().join("flake.lock").is_file(),
        "nix wrote no flake.lock"
    );
    let (source, _) = greeting(flake.cached_env()).await;
    assert_eq!(source, EnvSource::Cache);
    // Another file of the project: still the cached shell.
    std::fs::write(flake.dir().join("main.go"), "package main\n").unwrap();
    let (source, _) = greeting(flake.cached_env()).await;
    assert_eq!(source, EnvSource::Cache);
    // A file of the input: evaluated again (this nix keeps the locked copy of the
    // input until the lock is updated; newer ones re-lock a changed path input).
    std::fs::write(lib.join("greeting.txt"), "changed").unwrap();
    let (source, _) = greeting(flake.cached_env()).await;
    assert_eq!(source, EnvSource::Evaluated);
    // The lock updated (here: removed, so nix locks the input anew): evaluated
    // again, with the input's new contents.
    std::fs::remove_file(flake.dir().join("flake.lock")).unwrap();
    let (source, said) = greeting(flake.cached_env()).await;
    assert_eq!((source, said.as_str()), (EnvSource::Evaluated, "changed\n"));
    let (source, _) = greeting(flake.cached_env()).await;
    assert_eq!(source, EnvSource::Cache);
}

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
    let env = flake.cached_env();
    env.init().await.unwrap();
    let first = output(&env, "sh", &["-c", "command -v storetool"])
        .await
        .1
        .trim()
        .to_string();
    assert!(first.starts_with("/nix/store/"), "{first}");
    drop(env);
    gc();
    // From the cache, after the collection: the tool is still there.
    let env = flake.cached_env();
    env.init().await.unwrap();
    assert_eq!(env.materialization().unwrap().source, EnvSource::Cache);
    assert_eq!(output(&env, "storetool", &[]).await.1, "first\n");
    drop(env);
    // The flake changes: the new entry has its own root, the old one is released.
    write("second");
    let env = flake.cached_env();
    env.init().await.unwrap();
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
