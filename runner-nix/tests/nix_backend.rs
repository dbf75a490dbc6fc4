//! The Nix backend against a real `nix`, offline, with input-less test flakes.

use std::sync::Arc;

use runner_core::{Error, ExitStatus, RunnerEnvironment};
use runner_nix::{EnvSource, NixEnvironment, NixError};

mod common;
use common::*;

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
    let missing = env.new_process("not-in-any-shell", &[]).await.unwrap();
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
        let p = p.start().await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stdin.write_all(b"ping\n").await.unwrap();
        drop(stdin);
        let mut got = String::new();
        stdout.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "got:ping\n");
        assert!(p.wait().await.unwrap().success());

        let p = env.new_process("sleep", &["30"]).await.unwrap();
        let p = p.start().await.unwrap();
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move { p.wait().await.unwrap() })
        };
        p.stop().await.unwrap();
        let status = waiter.await.unwrap();
        assert!(!status.success(), "materialized={materialized}: {status}");
        assert!(!p.is_running());
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
    // The entry (beside it: its GC root, a nix profile).
    let entry = std::fs::read_dir(flake.cache())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();

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
    if !nix::unistd::geteuid().is_root() || std::env::var_os("NIX_REMOTE").is_some() {
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
    // Another file of the project: nix is handed the whole directory, and a flake
    // may read any of it, so it is evaluated again (as `nix develop` would), then
    // cached.
    std::fs::write(flake.dir().join("main.go"), "package main\n").unwrap();
    let (source, _) = greeting(flake.cached_env()).await;
    assert_eq!(source, EnvSource::Evaluated);
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

/// Multi-user nix: a daemon that is not there is a typed error naming it (not an
/// evaluation error), and with `NIX_REMOTE=daemon` (as `cargo xtask test` runs this
/// suite a second time, against a nix-daemon it starts) the shell is built by it.
#[tokio::test]
async fn a_missing_daemon_is_not_an_evaluation_error() {
    if !nix_available() {
        return;
    }
    let flake = Flake::new("hi");
    let mut env = flake.env();
    env.with_nix_option("store", "unix:///nonexistent/daemon-socket");
    let err = env.init().await.unwrap_err();
    let Error::Backend { source, .. } = &err else {
        panic!("expected a backend error, got {err:?}");
    };
    assert!(
        matches!(
            source.downcast_ref::<NixError>(),
            Some(NixError::CannotBuild(
                runner_nix::CannotBuild::NoDaemon { .. }
            ))
        ),
        "{err:?}"
    );
    assert!(
        err.chain().contains("/nonexistent/daemon-socket"),
        "{}",
        err.chain()
    );
    if std::env::var_os("NIX_REMOTE").is_some_and(|v| v == "daemon") {
        // The daemon answers: a store path built through it is owned by root and the
        // build ran as a build user (the daemon's `nixbld`).
        let env = flake.env();
        env.init().await.unwrap();
        let (status, out) = output(&env, "sh", &["-c", "echo $GREETING"]).await;
        assert!(status.success());
        assert_eq!(out, "hi\n");
        let info = std::process::Command::new("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "store",
                "ping",
            ])
            .output()
            .unwrap();
        assert!(info.status.success(), "{info:?}");
    }
}

/// A local path input holding what is not a file (a FIFO nobody writes, a link to
/// `/dev/zero`): `init` still ends (it once blocked for ever reading the FIFO, or
/// grew without bound reading the device, while fingerprinting the input).
#[test]
fn special_files_in_a_path_input_never_hang_init() {
    if !nix_available() {
        return;
    }
    let flake = Flake::new("special");
    let lib = flake.tmp.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    nix::unistd::mkfifo(&lib.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::os::unix::fs::symlink("/dev/zero", lib.join("zeros")).unwrap();
    std::fs::write(
        flake.dir().join("flake.lock"),
        r#"{"nodes":{"lib":{"locked":{"path":"../lib","type":"path"}},
            "root":{"inputs":{"lib":"lib"}}},"root":"root","version":7}"#,
    )
    .unwrap();
    let env = flake.cached_env();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = tx.send(rt.block_on(env.init()).map_err(|e| e.chain().to_string()));
    });
    // Whether nix accepts the lock or not, `init` answers.
    rx.recv_timeout(std::time::Duration::from_secs(120))
        .expect("init did not end")
        .ok();
}

/// A flake that reads a file of its own directory that is not nix (a toolchain
/// file, `Cargo.toml`, `go.mod`): when that file changes, the cached shell is not
/// served (it once was, silently): `nix develop` would evaluate again, and so does
/// `init`.
#[tokio::test]
async fn a_file_the_flake_reads_is_part_of_the_cache_key() {
    if !nix_available() {
        return;
    }
    let flake = Flake::new("unused");
    let system = format!("{}-linux", std::env::consts::ARCH);
    std::fs::write(
        flake.dir().join("flake.nix"),
        format!(
            r#"{{ outputs = {{ self }}: {{ devShells.{system}.default = builtins.derivation {{
                name = "reads"; system = "{system}"; builder = "/bin/bash";
                outputs = [ "out" ]; PATH = "/usr/bin:/bin";
                TOOLCHAIN = builtins.readFile ./toolchain; }}; }}; }}"#
        ),
    )
    .unwrap();
    let toolchain = |v: &str| std::fs::write(flake.dir().join("toolchain"), v).unwrap();
    toolchain("1.87");
    let env = flake.cached_env();
    env.init().await.unwrap();
    assert_eq!(output(&env, "printenv", &["TOOLCHAIN"]).await.1, "1.87\n");
    drop(env);
    toolchain("1.88");
    let env = flake.cached_env();
    env.init().await.unwrap();
    assert_eq!(env.materialization().unwrap().source, EnvSource::Evaluated);
    assert_eq!(output(&env, "printenv", &["TOOLCHAIN"]).await.1, "1.88\n");
    // Unchanged since: from the cache.
    drop(env);
    let env = flake.cached_env();
    env.init().await.unwrap();
    assert_eq!(env.materialization().unwrap().source, EnvSource::Cache);
}

/// A cache directory that exists but cannot be written (a read-only mount; here
/// `/proc`, which not even root writes to): the shell is evaluated and served all
/// the same, with a warning that it is neither cached nor rooted (the evaluation
/// once failed making its GC root there).
#[tokio::test]
async fn an_unwritable_cache_directory_still_gives_the_shell() {
    if !nix_available() {
        return;
    }
    let flake = Flake::new("uncached");
    let mut env = flake.env();
    env.with_cache_dir("/proc");
    env.init().await.unwrap();
    let info = env.materialization().unwrap();
    assert_eq!(info.source, EnvSource::Evaluated);
    assert!(info.cache_warning.is_some());
    assert_eq!(
        output(&env, "printenv", &["GREETING"]).await.1,
        "uncached\n"
    );
}

/// A process run before `init` (wrapped in `nix develop --command`) leaves no
/// temporary directory behind: `nix develop` makes one per process (its
/// `nix-shell.XXXXXX`, the process's `TMPDIR`) and never removes it; runner does once
/// the process has ended.
#[tokio::test]
async fn a_wrapped_process_leaves_no_temporary_directory() {
    if !nix_available() {
        return;
    }
    let flake = Flake::new("tmp");
    let env = flake.env();
    let (status, tmpdir) = output(&env, "sh", &["-c", "printf %s \"$TMPDIR\""]).await;
    assert!(status.success());
    assert!(!tmpdir.is_empty());
    let tmpdir = std::path::PathBuf::from(tmpdir);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tmpdir.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} is still there",
            tmpdir.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A cache directory inside the flake's own (`.runner-cache` in the project): its
/// entries and GC roots are not files of the flake, so the shell cached there is
/// served from it.
#[tokio::test]
async fn a_cache_inside_the_flake_directory_is_not_part_of_its_key() {
    if !nix_available() {
        return;
    }
    let flake = Flake::new("inside");
    let cache = flake.dir().join(".runner-cache");
    for expected in [EnvSource::Evaluated, EnvSource::Cache, EnvSource::Cache] {
        let mut env = flake.env();
        env.with_cache_dir(&cache);
        env.init().await.unwrap();
        assert_eq!(env.materialization().unwrap().source, expected);
    }
}
