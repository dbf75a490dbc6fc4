//! What runner says of a Podman that lacks what runner needs, through the CLI. Runs in
//! the Podman pass of `cargo xtask test` (`RUNNER_TEST_ENGINE=podman`, with
//! `RUNNER_TEST_PODMAN_DIR` naming the storage of the Podman it started): these tests
//! start a second Podman service on that storage, changed as each case needs, and stop
//! it by pid.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::IMAGE;

/// The storage of the Podman `cargo xtask test` started, when this is its pass.
fn podman_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("RUNNER_TEST_PODMAN_DIR").map(PathBuf::from);
    if std::env::var("RUNNER_TEST_ENGINE").as_deref() != Ok("podman") || dir.is_none() {
        eprintln!("not the Podman pass: these cases run in cargo xtask test's Podman pass");
        return None;
    }
    dir
}

/// A Podman service of the test's own on `dir`'s storage that finds no init binary
/// (catatonit hidden: its helper directory under a tmpfs, `/usr/bin` off its PATH), in
/// mount and network namespaces of its own. Stopped by pid when dropped.
struct NoInitPodman {
    service: Child,
    socket: PathBuf,
}

impl NoInitPodman {
    fn start(dir: &Path, scratch: &Path) -> NoInitPodman {
        // The pass's containers.conf without its init_path.
        let conf = std::fs::read_to_string(dir.join("containers.conf")).unwrap();
        let conf: String = conf
            .lines()
            .filter(|l| !l.starts_with("init_path"))
            .map(|l| format!("{l}\n"))
            .collect();
        let conf_path = scratch.join("containers.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let socket = scratch.join("podman.sock");
        let log = std::fs::File::create(scratch.join("service.log")).unwrap();
        let service = Command::new("unshare")
            .args([
                "--mount",
                "--net",
                "sh",
                "-c",
                "{ [ ! -d /usr/libexec/podman ] || mount -t tmpfs none /usr/libexec/podman; } && ip link set lo up && PATH=/usr/sbin:/sbin exec /usr/bin/podman \"$@\"",
                "sh",
                "--root",
            ])
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .env("CONTAINERS_CONF", &conf_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let podman = NoInitPodman { service, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !podman.answers() {
            assert!(
                Instant::now() < deadline,
                "the second Podman service did not answer: {}",
                std::fs::read_to_string(scratch.join("service.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        podman
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn answers(&self) -> bool {
        Command::new("docker")
            .args(["-H", &self.host(), "version"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `runner args…` against this engine, with a state directory of its own.
    fn runner(&self, state: &Path, args: &[&str]) -> Output {
        Command::new(common::runner_bin())
            .args(args)
            .env("DOCKER_HOST", self.host())
            .env("RUNNER_STATE_DIR", state)
            .output()
            .unwrap()
    }

    /// The containers this engine has, by name.
    fn containers(&self) -> String {
        let out = Command::new("docker")
            .args(["-H", &self.host(), "ps", "-a", "--format", "{{.Names}}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for NoInitPodman {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.service.id().to_string())
            .status();
        let _ = self.service.wait();
    }
}

/// An engine without an init binary: every run would fail, so the run's error names
/// the missing init and what provides it, `runner doctor` says so before any run, and
/// nothing is left behind.
#[test]
fn an_engine_without_an_init_is_named_by_run_and_doctor() {
    let Some(dir) = podman_dir() else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let podman = NoInitPodman::start(&dir, scratch.path());
    let state = scratch.path().join("state");
    let before = podman.containers();

    let run = podman.runner(
        &state,
        &["run", "--backend", "docker", "--image", IMAGE, "--", "true"],
    );
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(125), "{err}");
    assert!(
        err.contains("has no init binary") && err.contains("catatonit"),
        "{err}"
    );

    let doctor = podman.runner(&state, &["doctor"]);
    let out = String::from_utf8_lossy(&doctor.stdout);
    let init = out
        .lines()
        .find(|l| l.trim_start().starts_with("init"))
        .unwrap_or_else(|| panic!("no init row: {out}"));
    assert!(init.contains(" no ") && init.contains("catatonit"), "{out}");
    assert!(out.contains("Podman Engine"), "{out}");

    assert_eq!(podman.containers(), before);
    let records = std::fs::read_dir(state.join("created"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(records, 0, "records of containers left behind");
}
