//! Errors of the Docker backend, one variant per engine operation.

/// The oldest engine API this backend works with: 1.41 (Docker 20.10), the first
/// with the create call's `platform` and the exec features the backend uses.
pub(crate) const MINIMUM_API: (usize, usize) = (1, 41);

/// The engine client's error behind a [`DockerError`]: its words and its own causes,
/// kept whole and shared (so the error stays `Clone` for every waiter of an exec).
/// The client's type itself is not part of this crate's API (its releases are not
/// ours); [`crate::Engine::bollard`] is the one escape hatch.
#[derive(Debug, Clone)]
pub struct EngineError(std::sync::Arc<bollard::errors::Error>);

impl From<bollard::errors::Error> for EngineError {
    fn from(e: bollard::errors::Error) -> Self {
        EngineError(std::sync::Arc::new(e))
    }
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// What can go wrong talking to the Docker engine. Causes travel as
/// [`source`](std::error::Error::source), never folded into the message.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// No engine answered (not running, wrong `DOCKER_HOST`, no permission), or it
    /// went away mid-operation.
    #[error("the Docker engine at {endpoint} is not reachable: {why} (while trying to {action})")]
    EngineDown {
        /// The operation, as a "failed to ..." fragment.
        action: &'static str,
        /// The engine's address (`unix://…`, `tcp://…`).
        endpoint: String,
        /// What kind of failure it was.
        why: Unreachable,
        /// The client's error.
        #[source]
        source: EngineError,
    },
    /// The engine answers but speaks an API older than this backend needs.
    #[error(
        "the Docker engine at {endpoint} speaks API {api}, older than the {}.{} runner needs \
         (Docker 20.10 or newer)",
        MINIMUM_API.0,
        MINIMUM_API.1
    )]
    EngineTooOld {
        /// The engine's address.
        endpoint: String,
        /// The API version negotiated with it.
        api: String,
    },
    /// The docker context chosen by `DOCKER_CONTEXT` or `config.json` cannot be
    /// resolved.
    #[error(transparent)]
    Context(#[from] crate::endpoint::UnknownContext),
    /// The image is not present and could not be pulled.
    #[error("image `{image}` is not available{}", reason_suffix(.reason))]
    ImageUnavailable {
        /// The image reference.
        image: String,
        /// The engine's own words, when they came in a pull stream rather than as
        /// an error of the client (then `source`).
        reason: Option<String>,
        /// The client's error.
        #[source]
        source: Option<EngineError>,
    },
    /// The registry refused the pull: no credentials for it, or wrong ones.
    #[error(
        "registry `{registry}` refused to give image `{image}`: {}",
        if *.had_credentials {
            "the credentials docker's config gives for it were refused"
        } else {
            "it needs a login and docker's config has none for it (`docker login`)"
        }
    )]
    Unauthorized {
        /// The image reference.
        image: String,
        /// The registry (`docker.io`, `host:port`).
        registry: String,
        /// Whether credentials were sent.
        had_credentials: bool,
        /// The engine's words.
        reason: String,
    },
    /// The in-container helper that runs the environment's processes ended (the
    /// container stopped, the engine restarted or went away).
    #[error("runner's helper in the container is gone: {reason}")]
    HelperGone {
        /// What was seen.
        reason: String,
    },
    /// The user's registry credentials could not be read (a credential helper that
    /// failed, a malformed `config.json`).
    #[error("failed to read the credentials for registry `{registry}`")]
    Credentials {
        /// The registry.
        registry: String,
        /// What went wrong.
        #[source]
        source: std::sync::Arc<docker_credential::CredentialRetrievalError>,
    },
    /// The credential helper the docker configuration names for a registry failed,
    /// or did not answer in time (it was ended).
    #[error("the credential helper `{helper}` for {registry} gave no credentials: {reason}")]
    CredentialHelper {
        /// The registry.
        registry: String,
        /// The helper program (`docker-credential-<name>`).
        helper: String,
        /// What happened.
        reason: String,
    },
    /// An engine operation failed: the engine answered with an error.
    #[error("failed to {action}")]
    Operation {
        /// The operation, as a "failed to ..." fragment.
        action: &'static str,
        /// The client's error.
        #[source]
        source: EngineError,
    },
    /// The engine answered, but not as it should have (no exit code, no output
    /// stream, an ambiguous pid).
    #[error("failed to {action}: {reason}")]
    Unexpected {
        /// The operation, as a "failed to ..." fragment.
        action: &'static str,
        /// What was wrong with the answer.
        reason: String,
    },
    /// A container by this environment's name exists and another live process uses
    /// it (or it is not one of ours): it is never reused, replaced or removed under
    /// its owner.
    #[error(
        "the container `{container}` is in use by another live process (session `{owner}`) \
         or was not made by this runner (its labels alone prove nothing); give this \
         environment another name"
    )]
    InUse {
        /// The container's name.
        container: String,
        /// Its owner's session label (`<pid>-<start time>`), empty when it has none.
        owner: String,
    },
    /// The container could not be recorded as runner's (its state directory is not
    /// writable, or full; no descriptor left): it is not made, or removed again, since
    /// no sweep could ever prove it ours.
    #[error(
        "could not record the container `{container}` as runner's, so it {}",
        if *removed { "was not kept" } else { "is left for you to remove (`docker rm -f`)" }
    )]
    Record {
        /// The container's name.
        container: String,
        /// False when a container was made and its removal failed too.
        removed: bool,
        /// Why the record could not be written.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// The user to run as does not exist in the image.
    #[error("user `{user}` does not exist in the image (give a uid:gid, or a user the image has)")]
    NoSuchUser {
        /// The user asked for.
        user: String,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
    /// The image has no variant for the platform asked for: the engine refused
    /// (`source`), or the image it has is for another platform (`found`; Podman 4
    /// runs an image whatever platform is asked for, so runner compares).
    #[error(
        "image `{image}` is not available for platform `{platform}`{}",
        found.as_ref().map(|f| format!(" (the engine has it for `{f}`)")).unwrap_or_default()
    )]
    PlatformUnavailable {
        /// The image.
        image: String,
        /// The platform asked for.
        platform: String,
        /// The platform of the image the engine has, when runner compared.
        found: Option<String>,
        /// The engine's error, when the engine refused.
        #[source]
        source: Option<EngineError>,
    },
    /// The engine has no init binary for a container that asks for one (runner asks
    /// for paused containers: the init reaps what their processes leave).
    #[error(
        "the engine at {endpoint} has no init binary for the container (runner asks for \
         one to reap what its processes leave): on Podman install catatonit on the \
         engine's host or set `init_path` in its containers.conf; Docker ships docker-init \
         with the engine"
    )]
    InitUnavailable {
        /// The engine's address.
        endpoint: String,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
    /// A cache volume name Docker would reject (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
    #[error("`{0}` is not a valid cache volume name (letters, digits, `_`, `.`, `-`; a letter or digit first)")]
    InvalidVolumeName(String),
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
    /// The engine does not see a directory to bind-mount (it runs elsewhere: a VM,
    /// another host), so the container would get an empty one. The project directory
    /// itself is synced instead; this is for the other mounts (`with_mount`).
    #[error(
        "the engine at {endpoint} does not see `{}` (it runs elsewhere: a VM or another \
         host), so the container would get an empty directory there; share the path with \
         the engine (Docker Desktop: Settings > Resources > File sharing; colima: \
         `--mount`; Podman machine: `--volume`) or run the engine on this machine",
        dir.display()
    )]
    ProjectNotVisible {
        /// The directory.
        dir: std::path::PathBuf,
        /// The engine's address.
        endpoint: String,
    },
    /// The project could not be synced into a container whose engine does not see it.
    #[error("cannot sync `{}` with the container: cannot {what}", dir.display())]
    SyncFailed {
        /// The project directory.
        dir: std::path::PathBuf,
        /// What could not be done.
        what: &'static str,
        /// Why.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// A published host port is taken by another process or container.
    #[error("host port {host_ip}:{host_port} is already in use")]
    PortInUse {
        /// The host address.
        host_ip: String,
        /// The host port.
        host_port: u16,
        /// The engine's error, or this machine's (a tunnelled port runner binds).
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },
}

/// Why an engine could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unreachable {
    /// Its unix socket does not exist (no engine there).
    SocketMissing,
    /// Nothing listens (a stale socket, a stopped engine, a closed port).
    Refused,
    /// Not allowed to use the socket.
    PermissionDenied,
    /// It accepted the connection but did not answer in time.
    Timeout,
    /// The TLS handshake failed (an engine certificate not signed by `ca.pem`, a
    /// client certificate it refuses) or the TLS files are missing or unreadable.
    Tls,
    /// This process has no file descriptor left (`ulimit -n`, or the system's
    /// table full): the engine may well be fine.
    OutOfDescriptors,
    /// The connection failed otherwise (reset, closed mid-request).
    Other,
    /// The ssh connection to an `ssh://` engine failed, for this reason.
    Ssh(crate::ssh::SshFailure),
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unreachable::Ssh(failure) => return write!(f, "{failure}"),
            Unreachable::SocketMissing => "its socket does not exist (is the engine running? `runner doctor` shows where runner looked)",
            Unreachable::Refused => "it refused the connection (is the engine running?)",
            Unreachable::PermissionDenied => {
                "permission denied (add your user to the `docker` group, or use rootless Docker)"
            }
            Unreachable::Timeout => "it did not answer in time",
            Unreachable::Tls => {
                "TLS failed (check ca.pem, cert.pem and key.pem in DOCKER_CERT_PATH or the \
                 context's TLS material)"
            }
            Unreachable::OutOfDescriptors => {
                "runner has no file descriptor left to connect with (raise `ulimit -n`; \
                 the engine itself may be fine)"
            }
            Unreachable::Other => "the connection failed",
        })
    }
}

fn reason_suffix(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default()
}

impl DockerError {
    /// An answer of the engine that is not what it should be.
    pub(crate) fn unexpected(action: &'static str, reason: impl Into<String>) -> DockerError {
        DockerError::Unexpected {
            action,
            reason: reason.into(),
        }
    }
}

impl From<DockerError> for runner_core::Error {
    fn from(e: DockerError) -> Self {
        runner_core::Error::backend(runner_core::Backend::Docker, e)
    }
}
