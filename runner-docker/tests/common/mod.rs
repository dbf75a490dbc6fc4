//! Helpers shared by the Docker test binaries.
#![allow(dead_code)]

use runner_core::Error;
use runner_docker::DockerError;

/// The locally built test image (see `cargo xtask test`).
pub fn image() -> String {
    std::env::var("RUNNER_TEST_IMAGE").unwrap_or_else(|_| "runner-test/busybox:latest".into())
}

/// True when the suite runs against the Podman service `cargo xtask test` starts
/// (`RUNNER_TEST_ENGINE=podman`, its endpoint in `DOCKER_HOST`).
pub fn on_podman() -> bool {
    std::env::var("RUNNER_TEST_ENGINE").as_deref() == Ok("podman")
}

/// True (with a loud line) when a check cannot be made on the Podman run, for `why`.
pub fn skipped_on_podman(why: &str) -> bool {
    let podman = on_podman();
    if podman {
        eprintln!("SKIPPED on Podman: {why}");
    }
    podman
}

/// The docker CLI against the engine under test: the local socket, whatever
/// `DOCKER_HOST` says (other binaries point it at engines of their own), except on
/// the Podman run, whose engine `DOCKER_HOST` names.
pub fn docker_cli() -> std::process::Command {
    let mut c = std::process::Command::new("docker");
    if !on_podman() {
        c.env_remove("DOCKER_HOST");
    }
    c
}

/// Removes the container even when a test fails half-way.
pub struct Cleanup(pub String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker_cli().args(["rm", "-f", &self.0]).output();
    }
}

/// The `DockerError` inside a backend error.
pub fn docker_error(err: &Error) -> &DockerError {
    match err {
        Error::Backend { source, .. } => source
            .downcast_ref::<DockerError>()
            .unwrap_or_else(|| panic!("not a DockerError: {err:?}")),
        other => panic!("not a backend error: {other:?}"),
    }
}
