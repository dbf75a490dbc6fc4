//! The engine: the one module that calls the client (bollard). It connects to the
//! engine the docker CLI would use (`endpoint.rs`), with the API version negotiated
//! (bollard defaults to a version Docker 20.10 rejects), and carries out every
//! request of this crate. A request the engine did not carry out is a [`Fault`],
//! classified here once (not found, conflict, not answered at all) and turned into
//! a [`DockerError`] with the endpoint this engine was given: the other modules
//! decide what a missing or busy object means to them, never how to recognise one.
//!
//! The negotiated version is remembered per host for the life of the process, so
//! every environment after the first connects without a round trip. A connection
//! is never shared across calls: each caller gets its own client (and so its own
//! connection pool, bound to the caller's runtime).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStatsResponse, ContainerSummary,
    ExecConfig, ExecInspectResponse, ImageInspect, Volume, VolumeCreateRequest,
};
use bollard::query_parameters as q;
use bollard::{ClientVersion, Docker};
use futures_util::StreamExt;

use crate::error::{EngineError, Unreachable};
use crate::DockerError;

/// How long connecting and negotiating the API version may take: an engine that
/// accepts connections but never answers must not hang the caller for the
/// client's default two minutes.
const NEGOTIATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Request timeout of clients made with a remembered version (bollard's default).
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// The API version negotiated with each host, and the engine's dialect, by
/// `DOCKER_HOST` value.
static NEGOTIATED: Mutex<Option<HashMap<String, (ClientVersion, Dialect)>>> = Mutex::new(None);

/// Which engine's ways an engine speaking Docker's API has where their meanings
/// differ: read from its `/version` (Docker names its first component `Engine`,
/// Podman's service `Podman Engine`) when the API version is negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Docker (and engines that answer as it does).
    Docker,
    /// Podman's Docker-compatible service.
    Podman,
}

/// How an engine reports, in place of an exec's output, that its runtime found no
/// program to start: Docker writes `OCI runtime exec failed: … executable file not
/// found in $PATH: unknown` (or `… no such file or directory …`) on stdout and gives
/// 126 (127 in some versions) with no pid; Podman 4 writes `Error: runc: exec failed:
/// … OCI runtime attempted to invoke a command that was not found` on stderr and
/// gives 127, and its exec inspection never carries a pid.
struct MissingProgram {
    starts: &'static str,
    says: &'static [&'static str],
    stream: Option<runner_core::Stream>,
    codes: &'static [i64],
}

const DOCKER_MISSING: MissingProgram = MissingProgram {
    starts: "OCI runtime exec failed",
    says: &["executable file not found", "no such file or directory"],
    stream: None,
    codes: &[126, 127],
};

const PODMAN_MISSING: MissingProgram = MissingProgram {
    starts: "Error: ",
    says: &["OCI runtime attempted to invoke a command that was not found"],
    stream: Some(runner_core::Stream::Stderr),
    codes: &[127],
};

impl Dialect {
    fn missing_program(self) -> MissingProgram {
        match self {
            Dialect::Docker => DOCKER_MISSING,
            Dialect::Podman => PODMAN_MISSING,
        }
    }

    /// Whether an exec's first output (`first`, on `stream`) may be this engine's
    /// report that the program is not there: held back until the exit says
    /// ([`Dialect::missing_program_confirmed`]).
    pub(crate) fn may_report_missing_program(
        self,
        stream: runner_core::Stream,
        first: &[u8],
    ) -> bool {
        let words = self.missing_program();
        let text = String::from_utf8_lossy(first);
        words.stream.is_none_or(|s| s == stream)
            && text.starts_with(words.starts)
            && words.says.iter().any(|w| text.contains(w))
    }

    /// Whether an exec whose first output this engine may have written
    /// ([`Dialect::may_report_missing_program`]) ended as the engine ends one whose
    /// program it found missing: its exit `code`, and its `pid` (Docker gives every
    /// process it started one; Podman gives none).
    pub(crate) fn missing_program_confirmed(self, code: i64, pid: Option<i64>) -> bool {
        let started = match self {
            Dialect::Docker => pid.is_some_and(|p| p > 0),
            Dialect::Podman => false,
        };
        !started && self.missing_program().codes.contains(&code)
    }

    fn of(version: &bollard::models::SystemVersion) -> Dialect {
        let first = version.components.as_ref().and_then(|c| c.first());
        match first.map(|c| c.name.as_str()) {
            Some(name) if name.contains("Podman") => Dialect::Podman,
            _ => Dialect::Docker,
        }
    }
}

fn remembered(host: &str) -> Option<(ClientVersion, Dialect)> {
    NEGOTIATED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|m| m.get(host).copied())
}

fn remember(host: &str, version: ClientVersion, dialect: Dialect) {
    NEGOTIATED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(host.to_string(), (version, dialect));
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

/// A client of the `ssh://` engine `target` whose every connection is the user's ssh
/// running `docker system dial-stdio` there (`ssh.rs`), pooled.
fn ssh_client(
    target: crate::ssh::SshTarget,
    timeout: u64,
    version: &ClientVersion,
) -> Result<Docker, bollard::errors::Error> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(crate::ssh::SshConnector::new(target));
    let transport = move |request: bollard::BollardRequest| {
        let client = client.clone();
        async move {
            client
                .request(request)
                .await
                .map_err(bollard::errors::Error::from)
        }
    };
    Docker::connect_with_custom_transport(transport, Some("http://docker.ssh"), timeout, version)
}

/// An API version as the engine writes it (`1.41`).
fn api_version(text: &str) -> Option<ClientVersion> {
    let (major, minor) = text.split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
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
        None if host.starts_with("ssh://") => {
            let target = crate::ssh::SshTarget::parse(host).map_err(|why| {
                bollard::errors::Error::IOError {
                    err: std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
                }
            })?;
            ssh_client(target, timeout, version)
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
    dialect: Dialect,
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
            why: unreachable(&e),
            source: e.into(),
        };
        let engine = |docker, dialect| Engine {
            docker,
            endpoint: host.clone(),
            dialect,
        };
        if let Some((version, dialect)) = remembered(&host) {
            return client_for(endpoint, REQUEST_TIMEOUT_SECS, &version)
                .map(|docker| engine(docker, dialect))
                .map_err(down);
        }
        // bollard's `negotiate_version`, keeping what the answer says of the engine.
        let ask = client_for(endpoint, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            .map_err(down)?;
        let answer = match tokio::time::timeout(NEGOTIATE_TIMEOUT, ask.version()).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) if host.starts_with("ssh://") => {
                // ssh said why on its stderr: that is the error, with its words.
                return Err(
                    match crate::ssh::take_failure(&host, Duration::from_secs(3)).await {
                        Some((failure, words)) => DockerError::EngineDown {
                            action: "connect",
                            endpoint: host.clone(),
                            why: Unreachable::Ssh(failure),
                            source: bollard::errors::Error::IOError {
                                err: std::io::Error::other(words),
                            }
                            .into(),
                        },
                        None => down(e),
                    },
                );
            }
            Ok(Err(e)) => return Err(down(e)),
            Err(_) => {
                return Err(DockerError::EngineDown {
                    action: "connect",
                    endpoint: host.clone(),
                    why: crate::error::Unreachable::Timeout,
                    source: bollard::errors::Error::RequestTimeoutError.into(),
                })
            }
        };
        let version = answer
            .api_version
            .as_deref()
            .and_then(api_version)
            .ok_or_else(|| down(bollard::errors::Error::APIVersionParseError {}))?;
        if (version.major_version, version.minor_version) < crate::error::MINIMUM_API {
            return Err(DockerError::EngineTooOld {
                endpoint: host,
                api: format!("{}.{}", version.major_version, version.minor_version),
            });
        }
        let version = if version < *bollard::API_DEFAULT_VERSION {
            version
        } else {
            *bollard::API_DEFAULT_VERSION
        };
        let dialect = Dialect::of(&answer);
        remember(&host, version, dialect);
        client_for(endpoint, REQUEST_TIMEOUT_SECS, &version)
            .map(|docker| engine(docker, dialect))
            .map_err(down)
    }

    /// Which engine's ways this engine has where Docker's and Podman's differ.
    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
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

    /// What the engine says it is: its product (`Docker Engine`, `Podman Engine`),
    /// version and API version.
    pub async fn describe(&self) -> Result<EngineDescription, EngineError> {
        let v = self.docker.version().await?;
        // Docker calls its first component plainly `Engine`; Podman's service
        // calls it `Podman Engine`.
        let name = match v
            .components
            .as_ref()
            .and_then(|c| c.first())
            .map(|c| c.name.as_str())
        {
            Some(name) if !name.is_empty() && name != "Engine" => name.to_string(),
            _ => "Docker Engine".to_string(),
        };
        // Docker and Podman both list `name=rootless` among the security options of
        // an engine running as a user; an answer that does not parse says nothing.
        let rootless = self.docker.info().await.ok().and_then(|info| {
            info.security_options
                .map(|options| options.iter().any(|o| o.contains("name=rootless")))
        });
        Ok(EngineDescription {
            name,
            version: v.version.unwrap_or_default(),
            api_version: v.api_version.unwrap_or_default(),
            rootless,
        })
    }
}

/// What an engine says it is ([`Engine::describe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineDescription {
    /// Its product: `Docker Engine`, `Podman Engine`.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The API version it speaks.
    pub api_version: String,
    /// Whether it runs as a user (rootless Docker or Podman): its containers live in
    /// that user's user namespace. `None` when it did not say.
    pub rootless: Option<bool>,
}

/// Connects to the engine [`crate::resolve_endpoint`] finds (TLS included) and
/// negotiates the API version with it, within 10 s; later calls for the same host
/// reuse the negotiated version without asking again.
pub async fn connect() -> Result<Engine, DockerError> {
    Engine::connect().await
}

/// How long creating a container may take before the engine counts as not
/// answering.
const CREATE_DEADLINE: Duration = Duration::from_secs(30);
/// How long starting a container may take (mounts, the init process, networking).
const START_DEADLINE: Duration = Duration::from_secs(60);

/// `request`, or the client's timeout error after `deadline`: an engine that
/// accepted the request and never answers is reported as not answering
/// ([`crate::Unreachable::Timeout`]) instead of holding the caller for the client's
/// two minutes.
async fn bounded<T>(
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
        engine.ping().await.ok()
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(_)))
}

/// An attached stream of output frames (an exec's or a container's).
pub(crate) type OutputStream = std::pin::Pin<
    Box<
        dyn futures_util::Stream<Item = std::result::Result<bollard::container::LogOutput, Fault>>
            + Send,
    >,
>;

/// An exec's stdin, as the engine's attach gives it.
pub(crate) type ExecInput = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// Podman's words (4.3, its Docker-compatible API) for what Docker answers 409: a
/// container name taken (`the container name "x" is already in use by <id>`), an exec
/// asked of a container that is not running.
const PODMAN_CONFLICTS: [&str; 2] = [
    "is already in use by",
    "can only create exec sessions on running containers",
];

/// Each engine's words for a container it cannot give the init asked for
/// (`HostConfig.Init`): Podman 4 (500, `container create: container-init binary not
/// found on the host: stat /usr/libexec/podman/catatonit: …`), Docker (`exec:
/// "docker-init": executable file not found in $PATH`).
const INIT_MISSING: [&str; 2] = [
    "container-init binary not found",
    "\"docker-init\": executable file not found",
];

/// A request the engine did not carry out: what was asked, of which engine, and the
/// client's error, classified by [`Fault::is_missing`] and [`Fault::is_conflict`].
/// Into a [`DockerError`]: [`DockerError::EngineDown`] when the engine never
/// answered, [`DockerError::Operation`] when it refused.
#[derive(Debug)]
pub(crate) struct Fault {
    action: &'static str,
    endpoint: String,
    error: bollard::errors::Error,
}

impl Fault {
    fn status(&self) -> Option<u16> {
        match &self.error {
            bollard::errors::Error::DockerResponseServerError { status_code, .. } => {
                Some(*status_code)
            }
            _ => None,
        }
    }

    /// The engine answered (with an error status), as opposed to never answering.
    pub(crate) fn answered(&self) -> bool {
        self.status().is_some()
    }

    /// The engine reported a failure inside a streamed answer (Podman's service
    /// reports every pull failure that way, as an `error` line of the stream).
    pub(crate) fn in_stream(&self) -> bool {
        matches!(self.error, bollard::errors::Error::DockerStreamError { .. })
    }

    /// The engine answered 404: no such container, exec, image or volume.
    pub(crate) fn is_missing(&self) -> bool {
        self.status() == Some(404)
    }

    /// The engine answered 409: the object is in a state that forbids the request
    /// (a name taken, a container not running or already being removed, a volume in
    /// use). Podman's Docker-compatible API answers two of these 500, in its own
    /// words ([`PODMAN_CONFLICTS`]); this is the one place that reads them.
    pub(crate) fn is_conflict(&self) -> bool {
        match self.status() {
            Some(409) => true,
            Some(500) => {
                let message = self.message();
                PODMAN_CONFLICTS.iter().any(|words| message.contains(words))
            }
            _ => false,
        }
    }

    /// The engine has no init binary to give the container ([`INIT_MISSING`]).
    pub(crate) fn is_init_missing(&self) -> bool {
        self.answered() && {
            let message = self.message();
            INIT_MISSING.iter().any(|words| message.contains(words))
        }
    }

    /// The engine answered 304: the request changed nothing (a container already
    /// stopped).
    pub(crate) fn is_unchanged(&self) -> bool {
        self.status() == Some(304)
    }

    /// The engine's own words (its answer's message), else the client's.
    pub(crate) fn message(&self) -> String {
        match &self.error {
            bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
            e => e.to_string(),
        }
    }

    /// The fault as the error of a larger operation, `action` (what the caller was
    /// doing when this request failed).
    pub(crate) fn during(mut self, action: &'static str) -> DockerError {
        self.action = action;
        self.into()
    }

    /// The client's error, as the source of an error of ours.
    pub(crate) fn into_source(self) -> EngineError {
        self.error.into()
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "failed to {}: {}", self.action, self.error)
    }
}

impl From<Fault> for DockerError {
    fn from(fault: Fault) -> DockerError {
        use bollard::errors::Error as E;
        match fault.error {
            e @ (E::IOError { .. }
            | E::HyperResponseError { .. }
            | E::HyperLegacyError { .. }
            | E::RequestTimeoutError
            | E::SocketNotFoundError(_)) => DockerError::EngineDown {
                action: fault.action,
                endpoint: fault.endpoint,
                why: unreachable(&e),
                source: e.into(),
            },
            e => DockerError::Operation {
                action: fault.action,
                source: e.into(),
            },
        }
    }
}

impl From<Fault> for runner_core::Error {
    fn from(fault: Fault) -> Self {
        DockerError::from(fault).into()
    }
}

/// An answer of the engine in which "not found" is an answer, not a failure.
pub(crate) trait Found<T> {
    /// `Ok(None)` for a 404, the fault as a [`DockerError`] for anything else.
    fn found(self) -> Result<Option<T>, DockerError>;
}

impl<T> Found<T> for Result<T, Fault> {
    fn found(self) -> Result<Option<T>, DockerError> {
        match self {
            Ok(t) => Ok(Some(t)),
            Err(f) if f.is_missing() => Ok(None),
            Err(f) => Err(f.into()),
        }
    }
}

/// The engine's requests, one method each. Long requests are bounded where an
/// engine that accepted them and never answers must not hold the caller.
impl Engine {
    fn fault(&self, action: &'static str) -> impl FnOnce(bollard::errors::Error) -> Fault + '_ {
        move |error| Fault {
            action,
            endpoint: self.endpoint.clone(),
            error,
        }
    }

    /// An attached stream whose broken items are faults of `action`.
    fn faulted(
        &self,
        action: &'static str,
        output: std::pin::Pin<
            Box<
                dyn futures_util::Stream<
                        Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
                    > + Send,
            >,
        >,
    ) -> OutputStream {
        let endpoint = self.endpoint.clone();
        Box::pin(output.map(move |item| {
            item.map_err(|error| Fault {
                action,
                endpoint: endpoint.clone(),
                error,
            })
        }))
    }

    /// Answers when the engine does.
    pub(crate) async fn ping(&self) -> Result<(), Fault> {
        self.docker
            .ping()
            .await
            .map(drop)
            .map_err(self.fault("ping the engine"))
    }

    /// The container `id` (or name) as the engine describes it.
    pub(crate) async fn inspect_container(
        &self,
        id: &str,
    ) -> Result<ContainerInspectResponse, Fault> {
        self.docker
            .inspect_container(id, None)
            .await
            .map_err(self.fault("inspect the container"))
    }

    /// Creates container `name` (for `platform`, when given) from `body`: its id.
    pub(crate) async fn create_container(
        &self,
        name: &str,
        platform: Option<String>,
        body: ContainerCreateBody,
    ) -> Result<String, Fault> {
        let options = q::CreateContainerOptions {
            name: Some(name.to_string()),
            platform: platform.unwrap_or_default(),
        };
        bounded(
            CREATE_DEADLINE,
            self.docker.create_container(Some(options), body),
        )
        .await
        .map(|created| created.id)
        .map_err(self.fault("create the container"))
    }

    /// The id of one image the engine has, if it has any.
    pub(crate) async fn any_image(&self) -> Result<Option<String>, Fault> {
        let options = q::ListImagesOptions {
            all: false,
            ..Default::default()
        };
        let images = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(self.fault("list the images"))?;
        Ok(images.into_iter().next().map(|i| i.id))
    }

    /// Whether `path` exists in container `id` (created or running; mounts included).
    pub(crate) async fn path_exists(
        &self,
        id: &str,
        path: &std::path::Path,
    ) -> Result<bool, DockerError> {
        let options = q::ContainerArchiveInfoOptions {
            path: path.display().to_string(),
        };
        match self
            .docker
            .get_container_archive_info(id, Some(options))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let fault = (self.fault("look for a file in the container"))(e);
                if fault.is_missing() {
                    Ok(false)
                } else {
                    Err(fault.into())
                }
            }
        }
    }

    /// Starts container `id`.
    pub(crate) async fn start_container(&self, id: &str) -> Result<(), Fault> {
        bounded(START_DEADLINE, self.docker.start_container(id, None))
            .await
            .map_err(self.fault("start the container"))
    }

    /// Stops container `id`: SIGTERM, then SIGKILL after `grace_secs` (the engine's
    /// default when `None`).
    pub(crate) async fn stop_container(
        &self,
        id: &str,
        grace_secs: Option<i32>,
    ) -> Result<(), Fault> {
        let options = grace_secs.map(|t| q::StopContainerOptions {
            t: Some(t),
            ..Default::default()
        });
        self.docker
            .stop_container(id, options)
            .await
            .map_err(self.fault("stop the container"))
    }

    /// Removes container `id`, running or not, with its anonymous volumes.
    pub(crate) async fn remove_container(&self, id: &str) -> Result<(), Fault> {
        let options = q::RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        self.docker
            .remove_container(id, Some(options))
            .await
            .map_err(self.fault("remove the container"))
    }

    /// Every container, running or not, that carries label `label`.
    pub(crate) async fn containers_labelled(
        &self,
        label: &str,
    ) -> Result<Vec<ContainerSummary>, Fault> {
        let options = q::ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![label.to_string()],
            )])),
            ..Default::default()
        };
        // Podman 4.3 lists a container it is stopping as `stopped`, a state Docker's
        // API (and so bollard) does not have: the listing cannot be read. The state
        // lasts while the stop runs, so the listing is asked again, for up to 5 s.
        let mut tries = 0;
        loop {
            match self.docker.list_containers(Some(options.clone())).await {
                Err(e) if tries < 50 && e.to_string().contains("unknown variant `stopped`") => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                listed => return listed.map_err(self.fault("list the containers")),
            }
        }
    }

    /// One sample of container `id`'s CPU and memory use (the engine samples ~1 s).
    pub(crate) async fn stats(&self, id: &str) -> Result<ContainerStatsResponse, Fault> {
        let options = q::StatsOptions {
            stream: true,
            one_shot: false,
        };
        let mut samples = self.docker.stats(id, Some(options));
        let mut next = async || match samples.next().await {
            Some(sample) => sample.map_err(self.fault("read the container's stats")),
            None => Err(self.fault("read the container's stats")(
                bollard::errors::Error::DockerStreamError {
                    error: "the engine sent no sample".into(),
                },
            )),
        };
        // CPU is measured between two samples of one stream, about a second apart
        // (the engine's interval). A stream's first sample has no previous one
        // (Docker), or one taken a few milliseconds before it (Podman's service):
        // the second sample is measured against the first, whatever it carries.
        let first = next().await?;
        let mut second = next().await?;
        second.precpu_stats = first.cpu_stats;
        Ok(second)
    }

    /// The output of container `id` from now on (its stdout and stderr).
    pub(crate) async fn attach_container(&self, id: &str) -> Result<OutputStream, Fault> {
        let options = q::AttachContainerOptions {
            stream: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        self.docker
            .attach_container(id, Some(options))
            .await
            .map(|attached| self.faulted("read the container's output", attached.output))
            .map_err(self.fault("attach to the container's output"))
    }

    /// Copies the tar archive `body` into container `id` under `path`, within
    /// `deadline`.
    pub(crate) async fn upload(
        &self,
        id: &str,
        path: &str,
        body: Vec<u8>,
        deadline: Duration,
    ) -> Result<(), Fault> {
        let options = q::UploadToContainerOptions {
            path: path.into(),
            ..Default::default()
        };
        let upload =
            self.docker
                .upload_to_container(id, Some(options), bollard::body_full(body.into()));
        bounded(deadline, upload)
            .await
            .map_err(self.fault("copy into the container"))
    }

    /// Copies the tar archive arriving in `chunks` into container `id` under `path`,
    /// while it is made (as `tar c | docker cp - ID:PATH`). Not bounded in time: its
    /// producer is this process, and it ends the stream.
    pub(crate) async fn upload_stream(
        &self,
        id: &str,
        path: &str,
        chunks: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    ) -> Result<(), Fault> {
        let options = q::UploadToContainerOptions {
            path: path.into(),
            ..Default::default()
        };
        let stream = futures_util::stream::unfold(chunks, |mut rx| async move {
            rx.recv().await.map(|c| (c.map(bytes::Bytes::from), rx))
        });
        self.docker
            .upload_to_container(id, Some(options), bollard::body_try_stream(stream))
            .await
            .map_err(self.fault("copy the project into the container"))
    }

    /// Creates an exec of `config` in container `id`: its id.
    pub(crate) async fn create_exec(&self, id: &str, config: ExecConfig) -> Result<String, Fault> {
        self.docker
            .create_exec(id, config)
            .await
            .map(|exec| exec.id)
            .map_err(self.fault("create the exec"))
    }

    /// Starts exec `exec_id` attached (no terminal): its output and its stdin.
    /// `Ok(None)` when the engine detached it instead.
    pub(crate) async fn start_exec(
        &self,
        exec_id: &str,
    ) -> Result<Option<(OutputStream, ExecInput)>, Fault> {
        let options = bollard::exec::StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: None,
        };
        match self.docker.start_exec(exec_id, Some(options)).await {
            Ok(bollard::exec::StartExecResults::Attached { output, input }) => Ok(Some((
                self.faulted("read the exec's output", output),
                input,
            ))),
            Ok(bollard::exec::StartExecResults::Detached) => Ok(None),
            Err(e) => Err(self.fault("start the exec")(e)),
        }
    }

    /// Exec `exec_id` as the engine describes it (its pid, whether it runs, its exit
    /// code).
    pub(crate) async fn inspect_exec(&self, exec_id: &str) -> Result<ExecInspectResponse, Fault> {
        self.docker
            .inspect_exec(exec_id)
            .await
            .map_err(self.fault("inspect the exec"))
    }

    /// Image `image` (a tag or a digest reference) as the engine describes it.
    pub(crate) async fn inspect_image(&self, image: &str) -> Result<ImageInspect, Fault> {
        self.docker
            .inspect_image(image)
            .await
            .map_err(self.fault("inspect an image"))
    }

    /// Pulls `image` with `credentials`: the engine's progress messages, each the
    /// engine's answer or a fault (a refusal in the stream is the engine's words in
    /// an item's error detail, not a fault).
    pub(crate) fn pull(
        &self,
        image: &str,
        credentials: Option<bollard::auth::DockerCredentials>,
    ) -> impl futures_util::Stream<Item = Result<bollard::models::CreateImageInfo, Fault>> + '_
    {
        let (from, tag) = match image.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') && !image.contains('@') => (repo, Some(tag)),
            _ => (image, None),
        };
        let options = q::CreateImageOptions {
            from_image: Some(from.to_string()),
            tag: tag.map(str::to_string),
            ..Default::default()
        };
        self.docker
            .create_image(Some(options), None, credentials)
            .map(move |item| item.map_err(self.fault("pull an image")))
    }

    /// Creates volume `request` (an existing one by that name is kept as it is).
    pub(crate) async fn create_volume(&self, request: VolumeCreateRequest) -> Result<(), Fault> {
        self.docker
            .create_volume(request)
            .await
            .map(drop)
            .map_err(self.fault("create a cache volume"))
    }

    /// Every volume that carries label `label`.
    pub(crate) async fn volumes_labelled(&self, label: &str) -> Result<Vec<Volume>, Fault> {
        let options = q::ListVolumesOptions {
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![label.to_string()],
            )])),
        };
        self.docker
            .list_volumes(Some(options))
            .await
            .map(|v| v.volumes.unwrap_or_default())
            .map_err(self.fault("list the volumes"))
    }

    /// Removes volume `name`.
    pub(crate) async fn remove_volume(&self, name: &str) -> Result<(), Fault> {
        self.docker
            .remove_volume(name, None::<q::RemoveVolumeOptions>)
            .await
            .map_err(self.fault("remove a volume"))
    }
}

/// Classifies a client error by the system error under it.
fn unreachable(e: &bollard::errors::Error) -> Unreachable {
    if matches!(e, bollard::errors::Error::RequestTimeoutError) {
        return Unreachable::Timeout;
    }
    if matches!(e, bollard::errors::Error::SocketNotFoundError(_)) {
        return Unreachable::SocketMissing;
    }
    if matches!(
        e,
        bollard::errors::Error::CertPathError { .. }
            | bollard::errors::Error::CertParseError { .. }
            | bollard::errors::Error::CertMultipleKeys { .. }
            | bollard::errors::Error::NoNativeCertsError { .. }
            | bollard::errors::Error::LoadNativeCertsErrors { .. }
    ) {
        return Unreachable::Tls;
    }
    // Errors nest both ways: as sources, and as io errors wrapping io errors
    // (`get_ref`, which `source` skips). The first TLS error or specific io kind
    // on the way down decides.
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return Unreachable::Tls;
        }
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => match io.kind() {
                std::io::ErrorKind::NotFound => return Unreachable::SocketMissing,
                std::io::ErrorKind::ConnectionRefused => return Unreachable::Refused,
                std::io::ErrorKind::PermissionDenied => return Unreachable::PermissionDenied,
                std::io::ErrorKind::TimedOut => return Unreachable::Timeout,
                _ if matches!(
                    io.raw_os_error(),
                    Some(nix::libc::EMFILE | nix::libc::ENFILE)
                ) =>
                {
                    return Unreachable::OutOfDescriptors
                }
                _ => match io.get_ref() {
                    Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                    None => return Unreachable::Other,
                },
            },
            None => err.source(),
        };
    }
    Unreachable::Other
}

#[cfg(test)]
mod tests {
    use super::Fault;

    fn answered(status_code: u16, message: &str) -> Fault {
        Fault {
            action: "test",
            endpoint: "unix:///test.sock".into(),
            error: bollard::errors::Error::DockerResponseServerError {
                status_code,
                message: message.into(),
            },
        }
    }

    #[test]
    fn conflicts_in_both_dialects() {
        // Docker's.
        assert!(answered(409, "Conflict. The container name is already in use").is_conflict());
        // Podman 4.3's, as its API service answers them.
        assert!(answered(
            500,
            "creating container storage: the container name \"runner-x\" is already in use by 0123abcd. You have to remove that container to be able to reuse that name: that name is already in use"
        )
        .is_conflict());
        assert!(answered(
            500,
            "can only create exec sessions on running containers: container state improper"
        )
        .is_conflict());
        // A port taken, or any other failure, is not a conflict of the object's state.
        assert!(!answered(
            500,
            "listen tcp 127.0.0.1:8080: bind: address already in use"
        )
        .is_conflict());
        assert!(!answered(500, "no space left on device").is_conflict());
        assert!(!answered(404, "no such container").is_conflict());
    }
}
