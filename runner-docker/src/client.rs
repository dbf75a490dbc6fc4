//! Connecting to the engine the docker CLI would use (`endpoint.rs`), with the API
//! version negotiated (bollard defaults to a version Docker 20.10 rejects).
//!
//! The negotiated version is remembered per host for the life of the process, so
//! every environment after the first connects without a round trip. A connection
//! is never shared across calls: each caller gets its own client (and so its own
//! connection pool, bound to the caller's runtime).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bollard::{ClientVersion, Docker};

use crate::DockerError;

/// How long connecting and negotiating the API version may take: an engine that
/// accepts connections but never answers must not hang the caller for the
/// client's default two minutes.
const NEGOTIATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Request timeout of clients made with a remembered version (bollard's default).
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// The API version negotiated with each host, by `DOCKER_HOST` value.
static NEGOTIATED: Mutex<Option<HashMap<String, ClientVersion>>> = Mutex::new(None);

fn remembered(host: &str) -> Option<ClientVersion> {
    NEGOTIATED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|m| m.get(host).copied())
}

fn remember(host: &str, version: ClientVersion) {
    NEGOTIATED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(host.to_string(), version);
}

/// Forgets the version negotiated with the current `DOCKER_HOST`, so the next
/// [`connect`] asks the engine again (after an engine was replaced, say).
pub fn forget_negotiated_version() {
    if let Some(m) = NEGOTIATED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
    {
        m.remove(&current_host());
    }
}

/// The engine's address ([`crate::resolve_endpoint`]); the default socket when the
/// chosen context cannot be resolved (then [`connect`] says why).
pub(crate) fn current_host() -> String {
    crate::endpoint::resolve_endpoint()
        .map(|e| e.host)
        .unwrap_or_else(|_| crate::endpoint::DEFAULT_HOST.to_string())
}

/// Connects to `DOCKER_HOST` (or the local socket) and negotiates the API version
/// with the engine; later calls for the same host reuse the negotiated version
/// without asking again.
pub async fn connect() -> Result<Docker, DockerError> {
    let host = crate::endpoint::resolve_endpoint()?.host;
    let down = |e: bollard::errors::Error| DockerError::EngineDown {
        action: "connect",
        endpoint: host.clone(),
        why: crate::error::Unreachable::of(&e),
        source: e.into(),
    };
    if let Some(version) = remembered(&host) {
        let known = if host.starts_with("unix://") {
            Some(Docker::connect_with_unix(
                &host,
                REQUEST_TIMEOUT_SECS,
                &version,
            ))
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Some(Docker::connect_with_http(
                &host,
                REQUEST_TIMEOUT_SECS,
                &version,
            ))
        } else {
            None
        };
        if let Some(docker) = known {
            return docker.map_err(down);
        }
    }
    let negotiate = Docker::connect_with_host(&host)
        .map_err(down)?
        .negotiate_version();
    let docker = match tokio::time::timeout(NEGOTIATE_TIMEOUT, negotiate).await {
        Ok(negotiated) => negotiated.map_err(down)?,
        Err(_) => {
            return Err(DockerError::EngineDown {
                action: "connect",
                endpoint: host.clone(),
                why: crate::error::Unreachable::Timeout,
                source: std::sync::Arc::new(bollard::errors::Error::RequestTimeoutError),
            })
        }
    };
    remember(&host, docker.client_version());
    Ok(docker)
}

/// True when an engine answers a ping within `timeout`.
pub async fn docker_engine_running(timeout: Duration) -> bool {
    let attempt = async {
        let docker = connect().await.ok()?;
        docker.ping().await.ok()
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(_)))
}
