//! Native backend: bad input behaviour, tested from the outside with real processes.
mod common;

use std::os::unix::fs::PermissionsExt;

use common::Fixture;
use runner_core::{EnvironmentVariable, Error, RunnerEnvironment};
use runner_native::NativeEnvironment;

#[tokio::test]
async fn missing_binary_is_not_found() {
    let fx = Fixture::new();
    let p = fx.env.new_process("no-such-binary-xyz", &[]).await.unwrap();
    match p.run().await {
        Err(e @ Error::NotFound { .. }) => {
            assert_eq!(e.shell_exit_code(), Some(127));
            assert!(e.to_string().contains("no-such-binary-xyz"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        fx.env.with_binary("no-such-binary-xyz").await,
        Err(Error::NotFound { .. })
    ));
    fx.env.with_binary("sh").await.unwrap();
    assert!(fx.records().is_empty());
}

#[tokio::test]
async fn non_executable_file_is_not_executable() {
    let fx = Fixture::new();
    let script = fx.work().join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = fx.env.new_process("./script.sh", &[]).await.unwrap();
    match p.run().await {
        Err(e @ Error::NotExecutable { .. }) => assert_eq!(e.shell_exit_code(), Some(126)),
        other => panic!("{other:?}"),
    }
    // A script whose interpreter is missing: the kernel says ENOENT.
    let bad = fx.work().join("bad.sh");
    std::fs::write(&bad, "#!/no/such/interpreter\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The first failed exec overwrites the spare record file the second finished
    // `true` left (the first's is removed), the second writes a fresh one: both are
    // taken back, nothing is left.
    for _ in 0..2 {
        let ok = fx.env.new_process("true", &[]).await.unwrap();
        assert!(ok.run().await.unwrap().success());
    }
    assert_eq!(fx.files().len(), 1, "{:?}", fx.files());
    for _ in 0..2 {
        let p = fx.env.new_process("./bad.sh", &[]).await.unwrap();
        assert!(matches!(p.run().await, Err(Error::NotFound { .. })));
    }
    assert!(fx.files().is_empty(), "{:?}", fx.files());
}

#[tokio::test]
async fn missing_or_non_directory_working_dir() {
    let fx = Fixture::new();
    let missing = fx.work().join("missing");
    assert!(matches!(
        NativeEnvironment::new(&missing),
        Err(Error::DirNotFound(p)) if p == missing
    ));
    let file = fx.work().join("file");
    std::fs::write(&file, "").unwrap();
    assert!(matches!(
        NativeEnvironment::new(&file),
        Err(Error::NotADirectory(p)) if p == file
    ));
    let mut p = fx.env.new_process("true", &[]).await.unwrap();
    p.with_dir(&missing);
    assert!(matches!(p.run().await, Err(Error::DirNotFound(p)) if p == missing));
    let mut p = fx.env.new_process("true", &[]).await.unwrap();
    p.with_dir(&file);
    assert!(matches!(p.run().await, Err(Error::NotADirectory(_))));
}

#[test]
fn invalid_env_keys_are_rejected() {
    for key in ["", "A=B", "NUL\0"] {
        assert!(
            matches!(
                EnvironmentVariable::new(key, "v"),
                Err(Error::InvalidEnvKey { .. })
            ),
            "{key:?}"
        );
    }
}

#[tokio::test]
async fn ledger_failure_keeps_the_program_from_running() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("state");
    std::fs::write(&blocker, "a file where the state dir should be").unwrap();
    let mut env = NativeEnvironment::new(tmp.path()).unwrap();
    env.with_state_dir(&blocker);
    let marker = tmp.path().join("ran");
    let script = format!("touch {}", marker.display());
    let p = env.new_process("sh", &["-c", &script]).await.unwrap();
    match p.run().await {
        Err(e @ Error::Ledger(_)) => assert!(e.chain().contains("create"), "{}", e.chain()),
        other => panic!("{other:?}"),
    }
    assert!(!marker.exists(), "the program ran without a ledger record");
}
