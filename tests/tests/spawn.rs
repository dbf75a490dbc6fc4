//! The native spawn under pressure, from the outside: many processes at once from a
//! multi-threaded runtime, descriptors the owner holds, job-control and other signals
//! aimed at the owner's process group while it spawns, and an owner that ignores
//! SIGCHLD.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use runner_core::{ExitStatus, NullSink, Proc};
use runner_native::NativeEnvironment;
use tokio::io::AsyncReadExt;

const LIST_FDS: &str = env!("CARGO_BIN_EXE_list-fds");
const STORM: &str = env!("CARGO_BIN_EXE_spawn-storm");

fn env_in(state: &std::path::Path) -> NativeEnvironment {
    let mut env = NativeEnvironment::new("/").unwrap();
    env.with_state_dir(state);
    env
}

/// What is left in the ledger's runs directory: records, temporary and spare files.
fn leftovers(state: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(state.join("runs"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".lock" && n != "aside")
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `list-fds code` and returns its status and what it printed.
async fn list_fds(mut proc: runner_native::NativeProc) -> (ExitStatus, String) {
    proc.with_output(Arc::new(NullSink));
    let mut out = proc.stdout_pipe().unwrap();
    let proc = proc.start().await.unwrap();
    let mut text = String::new();
    out.read_to_string(&mut text).await.unwrap();
    (proc.wait().await.unwrap(), text.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_tasks_spawning_five_hundred_each_get_exact_statuses_and_only_stdio() {
    let state = tempfile::tempdir().unwrap();
    let env = Arc::new(env_in(state.path()));
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let env = Arc::clone(&env);
            tokio::spawn(async move {
                for i in 0..500 {
                    let code = (task * 500 + i) % 200;
                    let p = env
                        .process_from_spec(env.spec(LIST_FDS, &[&code.to_string()]))
                        .unwrap();
                    let (status, fds) = list_fds(p).await;
                    assert_eq!(status, ExitStatus::Exited(code), "task {task} #{i}");
                    assert_eq!(fds, "0 1 2", "task {task} #{i}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    drop(env);
    assert_eq!(leftovers(state.path()), Vec::<String>::new());
}

/// Descriptors the owner inherited without close-on-exec (as from a shell or an IDE)
/// are not handed on; one passed explicitly is, under its own number.
#[tokio::test]
async fn inherited_descriptors_stay_with_the_owner_unless_passed() {
    let state = tempfile::tempdir().unwrap();
    let env = env_in(state.path());
    // Not close-on-exec, at two numbers above the usual ones.
    let (r, w) = nix::unistd::pipe().unwrap();
    let high = nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_DUPFD(251)).unwrap();
    let p = env.process_from_spec(env.spec(LIST_FDS, &["0"])).unwrap();
    assert_eq!(list_fds(p).await.1, "0 1 2");
    let mut p = env.process_from_spec(env.spec(LIST_FDS, &["0"])).unwrap();
    p.pass_fd(w.as_fd()).unwrap();
    let raw = w.as_raw_fd();
    assert_eq!(list_fds(p).await.1, format!("0 1 2 {raw}"));
    drop((r, w));
    nix::unistd::close(high).unwrap();
}

/// Drives `spawn-storm storm N` while another thread sends `signal` to its process
/// group as fast as it can; returns the helper's summary. A spawn that hangs (a child
/// stopped before exec, with its parent asleep in vfork) fails the test instead of
/// hanging it.
fn storm(signal: nix::sys::signal::Signal, n: usize) -> String {
    let state = tempfile::tempdir().unwrap();
    let mut helper = Command::new(STORM)
        .args(["storm", &n.to_string()])
        .env("RUNNER_STATE_DIR", state.path())
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pgid = nix::unistd::Pid::from_raw(helper.id() as i32);
    let mut lines = BufReader::new(helper.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stormer = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if nix::sys::signal::killpg(pgid, signal).is_err() {
                    break;
                }
                sent += 1;
                std::thread::sleep(Duration::from_micros(50));
            }
            sent
        })
    };
    // Woken by the helper's exit; a hung spawn is killed (with its group) at 120 s.
    let status = runner_core::testing::wait_within(&mut helper, Duration::from_secs(120));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = stormer.join().unwrap();
    let Some(status) = status else {
        panic!("spawning under a {signal} storm hung ({sent} signals sent)");
    };
    let summary = lines.next().unwrap().unwrap();
    assert!(status.success(), "{summary} ({sent} signals sent)");
    assert!(sent > 100, "the storm sent only {sent} signals");
    assert_eq!(leftovers(state.path()), Vec::<String>::new(), "{summary}");
    eprintln!("{signal} storm: {summary} ({sent} signals sent)");
    summary
}

/// SIGTSTP at the owner's group while it spawns: a child that caught one before it
/// left the group must not stop before exec (its parent would sleep forever).
#[test]
fn a_sigtstp_storm_at_the_owners_group_stops_no_child_and_hangs_no_spawn() {
    let summary = storm(nix::sys::signal::Signal::SIGTSTP, 1000);
    assert!(summary.starts_with("started=1000 "), "{summary}");
}

/// A signal that kills a child before its exec is a failed spawn, never a started
/// process that "exited" by that signal, and leaves no record or temporary file.
#[test]
fn a_child_killed_before_exec_is_a_spawn_error_not_a_started_process() {
    let summary = storm(nix::sys::signal::Signal::SIGUSR1, 1000);
    assert!(summary.ends_with(" wrong=0"), "{summary}");
}

#[test]
fn an_owner_that_ignores_sigchld_is_told_why_it_cannot_spawn() {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(STORM)
        .arg("ignore-sigchld")
        .env("RUNNER_STATE_DIR", state.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("error:") && text.contains("ignores SIGCHLD"),
        "{text}"
    );
    assert_eq!(leftovers(state.path()), Vec::<String>::new());
}

/// The shared test helper the storm and CLI tests rely on to end hung processes: it
/// returns the status of a child that exits, and kills (with its group) and reaps
/// one that does not.
#[test]
fn wait_within_returns_on_exit_and_kills_the_group_on_timeout() {
    let mut quick = Command::new("true").process_group(0).spawn().unwrap();
    let status = runner_core::testing::wait_within(&mut quick, Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()));
    let mut hung = Command::new("sh")
        .args(["-c", "sleep 300 & sleep 300"])
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = hung.id() as i32;
    assert_eq!(
        runner_core::testing::wait_within(&mut hung, Duration::from_millis(200)),
        None
    );
    // SIGKILL is delivered asynchronously: the orphaned `sleep` may still be dying
    // when `kill` returns, so the group is given time to go (it must, or this fails).
    let group_gone = || {
        matches!(
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None),
            Err(nix::errno::Errno::ESRCH)
        ) || procfs::process::all_processes()
            .unwrap()
            .filter_map(|p| p.ok()?.stat().ok())
            .all(|s| s.pgrp != pgid || s.state == 'Z')
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !group_gone() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(group_gone(), "process group {pgid} outlived its SIGKILL");
}
