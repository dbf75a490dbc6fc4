//! A project the engine does not see (a host reached over ssh, the project hidden by
//! an empty tmpfs in the engine's mount namespace, as a laptop's directory is from a
//! build box) is synced both ways: copied in at `init`, then every change on either
//! side carried to the other, deletions and renames too, a conflict by its rule
//! (this machine's version wins on both sides, the other's is saved beside it), the
//! ignore rules honoured; a 20,000-file project copied in whole. Nothing is left on
//! either side. Its own test binary: it sets `RUNNER_SSH_COMMAND`.

use std::path::Path;
use std::time::{Duration, Instant};

use runner_core::RunnerEnvironment;
use runner_docker::{DockerEnvironment, Engine};
use runner_tests::ssh_host::SshHost;

async fn sh(env: &DockerEnvironment, script: &str) -> (bool, String) {
    let out = env
        .new_process("sh", &["-c", script])
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Waits (at most 20 s) until `script` in the container prints `want`.
async fn there(env: &DockerEnvironment, script: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, got) = sh(env, script).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "in the container, `{script}` printed {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits (at most 20 s) until `check` holds here.
async fn here(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "on this machine: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// Prints the pid of the sync's agent in the container (`runner-shim --sync`); the
/// pattern is put together at run time, so the script's own command line does not
/// match it.
const AGENT: &str = r#"s=--sy; s="${s}nc"; for d in /proc/[0-9]*; do case " $(tr '\0' ' ' < $d/cmdline 2>/dev/null)" in *" $s "*) echo ${d#/proc/};; esac; done"#;

/// Every file under `dir` whose name says runner put it there for its own use.
fn runner_leftovers(dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".runner-") {
                left.push(e.path().display().to_string());
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unseen_project_is_synced_both_ways() {
    if !runner_tests::ssh_host::gate() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = SshHost::start(&dir.path().join("ssh"));
    std::env::set_var("RUNNER_SSH_COMMAND", host.ssh_command());
    let endpoint = SshHost::docker_host(SshHost::HOST);

    let project = tempfile::tempdir().unwrap();
    let p = project.path().to_path_buf();
    let pd = p.display().to_string();
    std::fs::write(p.join("main.go"), "package main\n").unwrap();
    std::fs::create_dir_all(p.join("sub/dir")).unwrap();
    std::fs::write(p.join("sub/dir/a.txt"), "a\n").unwrap();
    std::fs::write(p.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(
        p.join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("main.go", p.join("link")).unwrap();
    std::fs::write(p.join(".gitignore"), "build/\n*.log\n").unwrap();
    std::fs::create_dir_all(p.join("build")).unwrap();
    std::fs::write(p.join("build/big.o"), "object").unwrap();
    std::fs::create_dir_all(p.join(".git")).unwrap();
    std::fs::write(p.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    host.engine().hide(&p);

    let mut env = DockerEnvironment::with_client(
        Engine::connect_to(&endpoint).await.unwrap(),
        runner_tests::foreign_engine::IMAGE,
        Some(&p),
        &format!("sync-{}", std::process::id()),
    )
    .await
    .unwrap();
    env.with_pause();
    env.init().await.unwrap();
    assert!(env.is_synced().await, "the project is not synced");

    // Copied in: content, the execute bit, a symbolic link; not what is ignored.
    let (_, got) = sh(
        &env,
        "cat main.go sub/dir/a.txt; ./run.sh; readlink link; ls -A; ls build .git 2>&1 >/dev/null | wc -l",
    )
    .await;
    assert_eq!(
        got,
        "package main\na\nran\nmain.go\n.gitignore\nlink\nmain.go\nrun.sh\nsub\n2\n"
    );
    let (_, pwd) = sh(&env, "pwd").await;
    assert_eq!(pwd.trim(), pd);

    // Edited here: seen there. Made, deleted and renamed here: the same there.
    std::fs::write(p.join("main.go"), "package main // edited\n").unwrap();
    there(&env, "cat main.go", "package main // edited\n").await;
    std::fs::create_dir_all(p.join("new/deep")).unwrap();
    std::fs::write(p.join("new/deep/n.txt"), "n\n").unwrap();
    there(&env, "cat new/deep/n.txt", "n\n").await;
    std::fs::remove_file(p.join("sub/dir/a.txt")).unwrap();
    there(&env, "ls sub/dir | wc -l", "0\n").await;
    std::fs::rename(p.join("new"), p.join("renamed")).unwrap();
    there(
        &env,
        "cat renamed/deep/n.txt; ls -d new 2>/dev/null | wc -l",
        "n\n0\n",
    )
    .await;
    // Ignored here: not carried.
    std::fs::write(p.join("debug.log"), "noise").unwrap();
    std::fs::write(p.join("marker"), "after the log\n").unwrap();
    there(&env, "cat marker", "after the log\n").await;
    assert!(
        !sh(&env, "ls debug.log").await.0,
        "an ignored file was carried"
    );

    // Written there (generated code, a build output): seen here, deleted and renamed.
    assert!(
        sh(&env, "mkdir -p gen && echo 'package gen' > gen/code.go")
            .await
            .0
    );
    here("gen/code.go arrives", || {
        read(&p.join("gen/code.go")).as_deref() == Some("package gen\n")
    })
    .await;
    assert!(
        sh(&env, "mv gen/code.go gen/moved.go && rm main.go")
            .await
            .0
    );
    here("the rename and the deletion arrive", || {
        read(&p.join("gen/moved.go")).is_some()
            && !p.join("gen/code.go").exists()
            && !p.join("main.go").exists()
    })
    .await;
    assert!(
        sh(
            &env,
            "mkdir -p out/x && echo o > out/x/o.txt && mv out out2"
        )
        .await
        .0
    );
    here("a directory renamed there arrives", || {
        read(&p.join("out2/x/o.txt")).as_deref() == Some("o\n") && !p.join("out").exists()
    })
    .await;
    // flush_sync: a write there is here once it returns.
    assert!(sh(&env, "echo flushed > f.txt").await.0);
    env.flush_sync().await;
    assert_eq!(read(&p.join("f.txt")).as_deref(), Some("flushed\n"));

    // A conflict: both sides change one file while the agent is held (SIGSTOP), so
    // neither has heard of the other's. This machine's version wins on both sides;
    // the container's is saved beside it, on both sides.
    assert!(
        sh(
            &env,
            &format!("kill -STOP $({AGENT}); echo there > both.txt")
        )
        .await
        .0
    );
    // Whichever of the two reaches this machine's side first (its own write's event,
    // or the agent's change once it runs again), the rule decides the same: both
    // differ from what was agreed, so nothing here waits for either.
    std::fs::write(p.join("both.txt"), "here\n").unwrap();
    assert!(sh(&env, &format!("kill -CONT $({AGENT})")).await.0);
    here("the conflict is settled here", || {
        read(&p.join("both.txt.runner-conflict")).as_deref() == Some("there\n")
    })
    .await;
    assert_eq!(read(&p.join("both.txt")).as_deref(), Some("here\n"));
    there(
        &env,
        "cat both.txt both.txt.runner-conflict",
        "here\nthere\n",
    )
    .await;

    env.shutdown().await.unwrap();
    drop(env);
    assert_eq!(host.engine().runner_containers(), Vec::<String>::new());
    assert_eq!(runner_leftovers(&p), Vec::<String>::new());

    // A 20,000-file project: copied in whole.
    let big = tempfile::tempdir().unwrap();
    for d in 0..200 {
        let sub = big.path().join(format!("pkg{d:03}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..100 {
            std::fs::write(sub.join(format!("f{f:03}.txt")), format!("{d}/{f}\n")).unwrap();
        }
    }
    host.engine().hide(big.path());
    let mut env = DockerEnvironment::with_client(
        Engine::connect_to(&endpoint).await.unwrap(),
        runner_tests::foreign_engine::IMAGE,
        Some(big.path()),
        &format!("sync-big-{}", std::process::id()),
    )
    .await
    .unwrap();
    env.with_pause();
    env.init().await.unwrap();
    let (_, got) = sh(&env, "find . -type f | wc -l; cat pkg199/f099.txt").await;
    assert_eq!(got, "20000\n199/99\n");
    env.shutdown().await.unwrap();
    drop(env);
    assert_eq!(host.engine().runner_containers(), Vec::<String>::new());
    assert_eq!(runner_leftovers(big.path()), Vec::<String>::new());
}
