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
        m.remove(&crate::endpoint::current_host());
    }
}

/// A client for `endpoint` speaking API `version`: TLS when the endpoint has TLS
/// material, otherwise by the address's scheme.
fn client_for(
    endpoint: &crate::Endpoint,
    timeout: u64,
    version: &ClientVersion,
) -> Result<Docker, bollard::errors::Error> {
    let host = endpoint.host.as_str();
    match &endpoint.tls {
        Some(tls) => {
            // bollard reads these lazily (the key at the handshake); a missing file
            // is a TLS failure named now rather than a handshake error later.
            for file in [tls.ca(), tls.cert(), tls.key()] {
                if !file.is_file() {
                    return Err(bollard::errors::Error::CertPathError { path: file });
                }
            }
            Docker::connect_with_ssl(host, &tls.key(), &tls.cert(), &tls.ca(), timeout, version)
        }
        None if host.starts_with("unix://") => Docker::connect_with_unix(host, timeout, version),
        None if host.starts_with("tcp://") || host.starts_with("http://") => {
            Docker::connect_with_http(host, timeout, version)
        }
        None => Docker::connect_with_host(host),
    }
}

/// A connection to a Docker engine, its API version negotiated: what every operation
/// of this crate goes through. Cheap to clone (one connection pool).
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    endpoint: String,
}

impl Engine {
    /// Connects to the engine [`crate::resolve_endpoint`] finds (TLS included), as the
    /// docker CLI would ([`connect`]).
    pub async fn connect() -> Result<Engine, DockerError> {
        let endpoint = crate::endpoint::resolve_endpoint()?;
        Engine::connect_endpoint(&endpoint).await
    }

    /// Connects to the engine at `host` (`unix:///path/to.sock`, `tcp://host:port`),
    /// without TLS, whatever the environment says.
    pub async fn connect_to(host: &str) -> Result<Engine, DockerError> {
        Engine::connect_endpoint(&crate::Endpoint {
            host: host.to_string(),
            tls: None,
            source: crate::EndpointSource::Given,
        })
        .await
    }

    /// Connects to `endpoint` and negotiates the API version with it, within 10 s;
    /// later connections to the same host reuse the negotiated version without asking
    /// again.
    async fn connect_endpoint(endpoint: &crate::Endpoint) -> Result<Engine, DockerError> {
        let host = endpoint.host.clone();
        let down = |e: bollard::errors::Error| DockerError::EngineDown {
            action: "connect",
            endpoint: host.clone(),
            why: crate::error::Unreachable::of(&e),
            source: e.into(),
        };
        let engine = |docker| Engine {
            docker,
            endpoint: host.clone(),
        };
        if let Some(version) = remembered(&host) {
            return client_for(endpoint, REQUEST_TIMEOUT_SECS, &version)
                .map(engine)
                .map_err(down);
        }
        let negotiate = client_for(endpoint, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            .map_err(down)?
            .negotiate_version();
        let docker = match tokio::time::timeout(NEGOTIATE_TIMEOUT, negotiate).await {
            Ok(negotiated) => negotiated.map_err(down)?,
            Err(_) => {
                return Err(DockerError::EngineDown {
                    action: "connect",
                    endpoint: host.clone(),
                    why: crate::error::Unreachable::Timeout,
                    source: bollard::errors::Error::RequestTimeoutError.into(),
                })
            }
        };
        let version = docker.client_version();
        if (version.major_version, version.minor_version) < crate::error::MINIMUM_API {
            return Err(DockerError::EngineTooOld {
                endpoint: host,
                api: format!("{}.{}", version.major_version, version.minor_version),
            });
        }
        remember(&host, version);
        Ok(engine(docker))
    }

    /// The engine's address (`unix://…`, `tcp://…`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The escape hatch: bollard's client, for what this crate does not wrap. Its API
    /// follows bollard's releases, not this crate's: code that uses it may need
    /// changes when this crate moves to a newer bollard.
    pub fn bollard(&self) -> &Docker {
        &self.docker
    }
}

/// Connects to the engine [`crate::resolve_endpoint`] finds (TLS included) and
/// negotiates the API version with it, within 10 s; later calls for the same host
/// reuse the negotiated version without asking again.
pub async fn connect() -> Result<Engine, DockerError> {
    Engine::connect().await
}

/// How long creating a container may take before the engine counts as not
/// answering.
pub(crate) const CREATE_DEADLINE: Duration = Duration::from_secs(30);
/// How long starting a container may take (mounts, the init process, networking).
pub(crate) const START_DEADLINE: Duration = Duration::from_secs(60);

/// `request`, or the client's timeout error after `deadline`: an engine that
/// accepted the request and never answers is reported as not answering
/// ([`crate::Unreachable::Timeout`]) instead of holding the caller for the client's
/// two minutes.
pub(crate) async fn bounded<T>(
    deadline: Duration,
    request: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, bollard::errors::Error> {
    tokio::time::timeout(deadline, request)
        .await
        .unwrap_or(Err(bollard::errors::Error::RequestTimeoutError))
}

/// True when an engine answers a ping within `timeout`.
pub async fn docker_engine_running(timeout: Duration) -> bool {
    let attempt = async {
        let engine = connect().await.ok()?;
        engine.bollard().ping().await.ok()
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(_)))
}
