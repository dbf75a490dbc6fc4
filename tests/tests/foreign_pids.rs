//! An engine whose pids are not this host's never gets runner to touch a local
//! process: a real dockerd in pid, mount and network namespaces of its own (as Docker
//! Desktop, colima or a remote host is), innocent local process groups planted at the
//! very numbers it hands out, and every operation that could act on a pid, on both
//! paths (plain execs and the in-container helper). Its own test binary: it plants
//! processes at chosen pids of the whole host.

use std::time::{Duration, Instant};

use runner_core::testing::engine_gate;
use runner_core::{ExitStatus, Proc, RunnerEnvironment, Signal};
use runner_docker::{DockerEnvironment, DockerRunning};
use runner_tests::foreign_engine::{self, ForeignEngine, Innocents, IMAGE};

/// Every innocent must be alive and untouched.
fn assert_unharmed(innocents: &mut Innocents, after: &str) {
    let harmed = innocents.harmed();
    assert!(
        harmed.is_empty(),
        "runner signalled local processes it did not start ({after}): {harmed:?}"
    );
}

async fn status_within(p: &DockerRunning, secs: u64, what: &str) -> ExitStatus {
    tokio::time::timeout(Duration::from_secs(secs), p.wait())
        .await
        .unwrap_or_else(|_| panic!("{what}: no exit within {secs} s"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_elsewhere_never_gets_a_local_process_signalled() {
    let why = foreign_engine::unavailable();
    if let Some(why) = &why {
        eprintln!("foreign engine: {why}");
    }
    if !engine_gate("an engine in its own pid namespace", why.is_none()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let engine = ForeignEngine::start(&tmp.path().join("engine"));
    let base = foreign_engine::free_pid_window(400);
    let mut innocents = Innocents::plant(base, 400);
    assert!(
        innocents.pids().len() > 300,
        "too few innocents planted at {base}..: {}",
        innocents.pids().len()
    );
    let connected = engine.engine().await;
    let docker = connected.bollard().clone();
    for helper in [false, true] {
        let path = if helper { "helper" } else { "plain exec" };
        let mut env = DockerEnvironment::with_client(
            connected.clone(),
            IMAGE,
            None,
            &format!("foreign-{path}-{}", std::process::id()).replace(' ', "-"),
        )
        .await
        .unwrap();
        env.with_exec_helper(helper).with_pause();
        engine.aim(base);
        env.init().await.unwrap();
        // The engine numbers the container's first process with a planted pid: what
        // it reports names an innocent here.
        let id = env.container_id().unwrap();
        let init_pid = docker
            .inspect_container(&id, None)
            .await
            .unwrap()
            .state
            .unwrap()
            .pid
            .unwrap();
        assert!(
            innocents.holds(init_pid),
            "{path}: the container's pid {init_pid} is not a planted one"
        );
        assert_eq!(env.exec_helper().await.is_ok(), helper, "{path}");

        // signal(SIGTERM): the container's process ends with it, exactly.
        engine.aim(base);
        let p = env
            .docker_process("sh", &["-c", "sleep 600; echo after"])
            .unwrap();
        let p = p.start().await.unwrap();
        if let Some(exec) = p.exec_id() {
            let engine_pid = docker.inspect_exec(exec).await.unwrap().pid.unwrap();
            assert!(
                innocents.holds(engine_pid),
                "{path}: the exec's pid {engine_pid} is not a planted one"
            );
        }
        let in_container = p.find_pid().await.unwrap();
        assert!(in_container.is_some(), "{path}: find_pid found nothing");
        p.signal(Signal::Terminate).await.unwrap();
        assert_eq!(
            status_within(&p, 30, &format!("{path}: sh after SIGTERM")).await,
            ExitStatus::Signaled(15),
            "{path}"
        );
        assert_eq!(p.find_pid().await.unwrap(), None, "{path}");
        assert_unharmed(&mut innocents, &format!("{path}: signal"));

        // stop: TERM, grace, KILL (a process that ignores TERM).
        engine.aim(base);
        let mut p = env
            .docker_process("sh", &["-c", "trap '' TERM; sleep 600"])
            .unwrap();
        p.with_stop_grace(Duration::from_millis(500));
        let p = p.start().await.unwrap();
        let started = Instant::now();
        if tokio::time::timeout(Duration::from_secs(30), p.stop())
            .await
            .is_err()
        {
            let out = engine
                .docker()
                .args(["exec", &id, "sh", "-c", "for d in /proc/[0-9]*; do echo $d $(cat $d/stat) $(tr '\\0' ' ' < $d/cmdline); done"])
                .output()
                .unwrap();
            panic!(
                "{path}: stop hung: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        assert!(!p.is_running(), "{path}: still running");
        assert!(started.elapsed() < Duration::from_secs(20), "{path}");
        assert_unharmed(&mut innocents, &format!("{path}: stop"));

        // wait_on: the run lasts while the group's `sleep` does, and no longer (a
        // local `sleep` group at the engine's number must not keep it alive).
        engine.aim(base);
        let mut p = env
            .docker_process("sh", &["-c", "sleep 2 & sleep 0.5"])
            .unwrap();
        p.wait_on("sleep");
        let started = Instant::now();
        let p = p.start().await.unwrap();
        let status = status_within(&p, 60, &format!("{path}: wait_on")).await;
        assert_eq!(status, ExitStatus::Exited(0), "{path}");
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "{path}: wait_on returned before the group's sleep ended ({:?})",
            started.elapsed()
        );
        assert_unharmed(&mut innocents, &format!("{path}: wait_on"));

        // Output through a stdout pipe is whole (the helper's direct read of a pipe
        // through /proc is for a proven local helper only).
        engine.aim(base);
        let mut p = env.docker_process("sh", &["-c", "seq 1 20000"]).unwrap();
        let mut out = p.stdout_pipe().unwrap();
        let p = p.start().await.unwrap();
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut out, &mut text)
            .await
            .unwrap();
        assert_eq!(p.wait().await.unwrap(), ExitStatus::Exited(0));
        let expected: String = (1..=20000).map(|i| format!("{i}\n")).collect();
        assert!(
            text == expected,
            "{path}: stdout differs ({} bytes)",
            text.len()
        );

        // shutdown ends what runs, through the engine.
        engine.aim(base);
        let p = env.docker_process("sleep", &["600"]).unwrap();
        let p = p.start().await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), env.shutdown())
            .await
            .expect("shutdown hung")
            .unwrap();
        assert!(!p.is_running(), "{path}");
        assert_unharmed(&mut innocents, &format!("{path}: shutdown"));
    }
    assert_eq!(engine.runner_containers(), Vec::<String>::new());
    assert_unharmed(&mut innocents, "the end");
}
