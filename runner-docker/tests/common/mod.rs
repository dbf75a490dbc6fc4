//! Helpers shared by the Docker test binaries.

use runner_core::Error;
use runner_docker::DockerError;

/// The locally built test image (see `cargo xtask test`).
pub fn image() -> String {
    std::env::var("RUNNER_TEST_IMAGE").unwrap_or_else(|_| "runner-test/busybox:latest".into())
}

/// Removes the container even when a test fails half-way (through the local
/// socket, whatever `DOCKER_HOST` says).
pub struct Cleanup(pub String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .env_remove("DOCKER_HOST")
            .args(["rm", "-f", &self.0])
            .output();
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
