//! An owner is SIGKILLed with three process trees running, one of them a nested
//! owner two levels deep, and two containers: a single sweep leaves no process, no
//! record and no container.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use runner_reaper::Ledger;

fn alive(pid: i32) -> bool {
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.state != 'Z')
}

#[test]
fn one_sweep_cleans_up_after_a_sigkilled_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let docker = docker_available();
    let mut helper = Command::new(env!("CARGO_BIN_EXE_reap-helper"));
    if docker {
        helper.env("HELPER_DOCKER_IMAGE", "runner-test/busybox:latest");
    }
    let mut helper = helper
        .args(["top", work.to_str().unwrap()])
        .env("RUNNER_STATE_DIR", &state)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(helper.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    // Records only, not the owners' spare files.
    let records_before = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            !name.starts_with('.') && name.ends_with(".json")
        })
        .count();
    // top: plain + stubborn + nested(2); nested 2: plain + nested(1); nested 1: plain.
    assert_eq!(records_before, 6);

    let prefix = format!("runner-reap-helper-{}-", helper.id());
    if docker {
        assert_eq!(containers_named(&prefix), 2);
    }
    helper.kill().unwrap();
    helper.wait().unwrap();

    let pids: Vec<i32> = std::fs::read_to_string(work.join("pids"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let mut owners = Vec::new();
    for level in ["nested-2", "nested-1"] {
        owners.push(
            std::fs::read_to_string(work.join(format!("owner-{level}")))
                .unwrap()
                .parse::<i32>()
                .unwrap(),
        );
    }
    assert_eq!(pids.len(), 8, "{pids:?}");
    assert!(pids.iter().chain(&owners).all(|p| alive(*p)));

    let report = Ledger::at(&state).reap_stale(Duration::from_secs(60), Duration::from_millis(500));
    assert!(report.errors.is_empty(), "{report}");
    assert_eq!(report.reaped.len(), 6, "{report}");
    assert!(
        report.reaped.iter().any(|g| g.killed),
        "the stubborn tree needed SIGKILL"
    );
    for pid in pids.iter().chain(&owners) {
        assert!(!alive(*pid), "process {pid} survived the sweep\n{report}");
    }
    let left: Vec<_> = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".lock")
        .collect();
    // No record, and no spare or temporary file of the dead owners either.
    assert!(left.is_empty(), "{left:?}");

    if docker {
        // The containers are the dead owner's by the records it left in its state
        // directory: the sweep reads the same one, as a later runner of that user does.
        std::env::set_var("RUNNER_STATE_DIR", &state);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let swept = rt.block_on(runner_docker::reap_stale_containers(Duration::from_secs(
            60,
        )));
        assert!(
            swept.errors.is_empty() && swept.engine_unavailable.is_none(),
            "{swept}"
        );
        // The ephemeral container is removed; the reusable one is stopped and kept for
        // the next run, until `runner reap --all`.
        assert_eq!(
            swept
                .removed
                .iter()
                .filter(|n| n.starts_with(&prefix))
                .count(),
            1,
            "{swept}"
        );
        assert!(
            swept
                .removed
                .iter()
                .any(|n| n.starts_with(&format!("{prefix}0-"))),
            "{swept}"
        );
        assert!(
            swept
                .stopped
                .iter()
                .any(|n| n.starts_with(&format!("{prefix}1-"))),
            "{swept}"
        );
        assert_eq!(containers_named(&prefix), 1, "{swept}");
        let running = Command::new("docker")
            .args(["ps", "--format", "{{.Names}}"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&running.stdout)
                .lines()
                .any(|n| n.starts_with(&prefix)),
            "the kept container still runs"
        );
        let all = rt.block_on(runner_docker::reap_containers(
            Duration::from_secs(60),
            true,
        ));
        assert!(
            all.removed
                .iter()
                .any(|n| n.starts_with(&format!("{prefix}1-"))),
            "{all}"
        );
        assert_eq!(containers_named(&prefix), 0, "{all}");
    }
}

fn docker_available() -> bool {
    let up = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    runner_core::testing::engine_gate("a Docker engine (for the containers part)", up)
}

fn containers_named(prefix: &str) -> usize {
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| n.starts_with(prefix))
        .count()
}
