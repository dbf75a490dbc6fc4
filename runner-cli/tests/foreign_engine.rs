//! `runner run` and `runner reap` against an engine whose pids are not this host's (a
//! dockerd in pid, mount and network namespaces of its own, as Docker Desktop, colima
//! or a remote host is), with innocent local process groups planted at the numbers it
//! hands out: on both paths (an image of another architecture runs plain execs, as
//! amd64 images on Apple Silicon do; the busybox image runs through the helper),
//! SIGTERM to runner ends the container's command with 143, a SIGKILLed runner's
//! container goes with `runner reap`, and not one innocent is touched. Its own test
//! binary: it plants processes at chosen pids of the whole host.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use runner_tests::foreign_engine::{self, ForeignEngine, Innocents, IMAGE, OTHER_ARCH_IMAGE};

fn runner(engine: &ForeignEngine, tmp: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runner"));
    c.args(args)
        .env("DOCKER_HOST", engine.host())
        .env("RUNNER_STATE_DIR", tmp.join("state"))
        .env("HOME", tmp)
        .current_dir(tmp);
    c
}

/// `runner run -q --backend docker --image IMAGE -- sh -c SCRIPT`, returned once SCRIPT
/// printed `ready`, with the rest of its stdout.
fn run_until_ready(
    engine: &ForeignEngine,
    tmp: &Path,
    image: &str,
    script: &str,
) -> (Child, BufReader<std::process::ChildStdout>) {
    let dir = tmp.to_str().unwrap();
    let mut child = runner(
        engine,
        tmp,
        &[
            "run",
            "-q",
            "--backend",
            "docker",
            "--image",
            image,
            "--dir",
            dir,
            "--",
            "sh",
            "-c",
            script,
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n", "{image}");
    (child, out)
}

fn assert_unharmed(innocents: &mut Innocents, after: &str) {
    let harmed = innocents.harmed();
    assert!(
        harmed.is_empty(),
        "runner signalled local processes it did not start ({after}): {harmed:?}"
    );
}

#[test]
fn runner_against_an_engine_elsewhere_touches_no_local_process() {
    let why = foreign_engine::unavailable();
    if let Some(why) = &why {
        eprintln!("foreign engine: {why}");
    }
    if !runner_core::testing::engine_gate("an engine in its own pid namespace", why.is_none()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let engine = ForeignEngine::start(&tmp.path().join("engine"));
    let base = foreign_engine::free_pid_window(400);
    let mut innocents = Innocents::plant(base, 400);
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

    for image in [OTHER_ARCH_IMAGE, IMAGE] {
        engine.aim(base);
        let (mut child, mut out) =
            run_until_ready(&engine, &work, image, "echo ready; sleep 600; echo after");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let status = runner_core::testing::wait_within(&mut child, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{image}: runner did not end within 60 s of SIGTERM"));
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert_eq!(
            status.code(),
            Some(143),
            "{image}: {status}, output {rest:?}"
        );
        assert_eq!(rest, "", "{image}: the command went on after SIGTERM");
        assert_unharmed(&mut innocents, &format!("{image}: SIGTERM"));
        assert_eq!(engine.runner_containers(), Vec::<String>::new(), "{image}");
    }

    // A SIGKILLed runner leaves its container; `runner reap` removes it, through the
    // engine, and signals nothing here.
    engine.aim(base);
    let (mut child, _out) =
        run_until_ready(&engine, &work, OTHER_ARCH_IMAGE, "echo ready; sleep 600");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert_eq!(
        engine.runner_containers().len(),
        1,
        "the killed run left no container?"
    );
    let reap = runner(&engine, &work, &["reap"]).output().unwrap();
    assert!(
        reap.status.success(),
        "runner reap: {}",
        String::from_utf8_lossy(&reap.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !engine.runner_containers().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(engine.runner_containers(), Vec::<String>::new());
    assert_unharmed(&mut innocents, "runner reap");
}
