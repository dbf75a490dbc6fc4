//! Connecting to the engine: `DOCKER_HOST` (unix or tcp) or the local socket, with
//! the API version negotiated (bollard defaults to a version Docker 20.10 rejects).

use std::time::Duration;

use bollard::Docker;

use crate::DockerError;

/// Connects and negotiates the API version with the engine.
pub async fn connect() -> Result<Docker, DockerError> {
    let docker =
        Docker::connect_with_defaults().map_err(|e| DockerError::EngineDown(e.to_string()))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| DockerError::EngineDown(e.to_string()))
}

/// True when an engine answers a ping within `timeout`.
pub async fn docker_engine_running(timeout: Duration) -> bool {
    let attempt = async {
        let docker = connect().await.ok()?;
        docker.ping().await.ok()
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(_)))
}
