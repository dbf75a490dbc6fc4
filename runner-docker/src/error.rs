//! Errors of the Docker backend, one variant per engine operation.

/// What can go wrong talking to the Docker engine.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// No engine answered (not running, wrong `DOCKER_HOST`, no permission).
    #[error("the Docker engine is not reachable: {0}")]
    EngineDown(String),
    /// The image is not present and could not be pulled.
    #[error("image `{image}` is not available: {message}")]
    ImageUnavailable {
        /// The image reference.
        image: String,
        /// Why (the pull stream's error, or the engine's).
        message: String,
    },
    /// An engine operation failed.
    #[error("failed to {action}: {message}")]
    Operation {
        /// The operation, as a "failed to ..." fragment.
        action: &'static str,
        /// The engine's message.
        message: String,
    },
    /// The environment has no container (not initialized, or removed from outside).
    #[error("the container `{0}` does not exist")]
    NoContainer(String),
    /// The container exists but is not running (its command exited).
    #[error(
        "the container `{0}` is not running (its command exited; give it a long-running \
         command or use with_pause)"
    )]
    NotRunning(String),
    /// A mount's host path does not exist (Docker would create an empty root-owned
    /// directory in its place).
    #[error("the host path `{}` of a mount does not exist", .0.display())]
    MountSourceMissing(std::path::PathBuf),
    /// A published host port is taken by another process or container.
    #[error("host port {host_ip}:{host_port} is already in use: {message}")]
    PortInUse {
        /// The host address.
        host_ip: String,
        /// The host port.
        host_port: u16,
        /// The engine's message.
        message: String,
    },
}

impl DockerError {
    /// The error of a failed engine operation: `EngineDown` when the engine could not
    /// be reached at all (refused, reset, timed out), `Operation` when it answered.
    pub(crate) fn op(action: &'static str) -> impl FnOnce(bollard::errors::Error) -> DockerError {
        use bollard::errors::Error as E;
        move |e| match e {
            E::IOError { .. }
            | E::HyperResponseError { .. }
            | E::HyperLegacyError { .. }
            | E::RequestTimeoutError
            | E::SocketNotFoundError(_) => DockerError::EngineDown(format!("{action}: {e}")),
            e => DockerError::Operation {
                action,
                message: e.to_string(),
            },
        }
    }
}

impl From<DockerError> for runner_core::Error {
    fn from(e: DockerError) -> Self {
        runner_core::Error::backend(runner_core::Backend::Docker, e)
    }
}
