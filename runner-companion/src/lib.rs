//! One contract, the best backend available.
//!
//! [`new_companion_runner`] picks Docker (when an image is given and an engine answers
//! within [`DOCKER_DETECT_TIMEOUT`]), then Nix (nix installed and a `flake.nix`
//! in the source dir), then native ([`choose_backend`], which `runner run` uses too). A
//! preferred backend that is unavailable is an
//! error naming why, never a silent fallback. Backends are cargo features (`native`,
//! `docker`, `nix`): a crate that needs only Docker builds without the Nix code.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

pub use runner_core::{Backend, Error, Proc, Result, RunnerEnvironment};
/// The contract the companion hands out, re-exported: depending on the companion
/// alone is enough to program against it.
pub use runner_core::{
    CaptureSink, EnvironmentVariable, ExitStatus, Output, OutputSink, ProcOutput, Signal, Stream,
};

/// `use runner_companion::prelude::*;`: the contract and [`new_companion_runner`].
pub mod prelude {
    pub use crate::{new_companion_runner, Companion, CompanionOpts, CompanionRunner};
    pub use runner_core::prelude::*;
}

/// How long auto-detection waits for a Docker engine to answer, for the companion and
/// for `runner run` alike (a local socket or a VM's answers in milliseconds; one that
/// is down fails at once; a hung one costs this much before the next backend).
pub const DOCKER_DETECT_TIMEOUT: Duration = Duration::from_millis(250);

/// Why a backend cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompanionError {
    /// The preferred backend is not available here.
    #[error("the {backend} backend is unavailable: {reason}")]
    Unavailable {
        /// The backend asked for.
        backend: Backend,
        /// Why it cannot be used.
        reason: String,
    },
    /// No backend was compiled in that could run this companion.
    #[error("no usable backend: {0}")]
    NoBackend(String),
}

impl From<CompanionError> for Error {
    fn from(e: CompanionError) -> Self {
        let backend = match &e {
            CompanionError::Unavailable { backend, .. } => *backend,
            CompanionError::NoBackend(_) => Backend::Native,
        };
        Error::backend(backend, e)
    }
}

/// What a companion is and where it works.
#[derive(Debug, Clone, Default)]
pub struct CompanionOpts {
    /// A short name (the Docker container is `runner-<name>`).
    pub name: String,
    /// The host directory the companion works in (mounted at the same path in Docker).
    pub source_dir: PathBuf,
    /// The Docker image (needed for the Docker backend, ignored by the others).
    pub image: Option<String>,
    /// Forces a backend; `None` auto-detects.
    pub preferred_backend: Option<Backend>,
    /// Docker only: the user the container and its processes run as (a name the image
    /// knows, `uid` or `uid:gid`), or `host` for the owner of `source_dir`, so files
    /// written into the project are not root's. Host processes (native, nix) always
    /// run as the calling user.
    pub user: Option<String>,
}

/// A companion process host (a language server, a code generator, ...) that works the
/// same on every backend.
#[async_trait]
pub trait CompanionRunner: Send + Sync + std::fmt::Debug {
    /// Makes a host directory visible at `target` (Docker: a bind mount; elsewhere the
    /// host path is already visible and this does nothing).
    fn with_mount(&mut self, host: &Path, target: &Path);
    /// Publishes companion port `companion` on 127.0.0.1:`host` (Docker only; the
    /// other backends share the host's network).
    fn with_port_mapping(&mut self, host: u16, companion: u16);
    /// The working directory of every process: the same host path on every backend
    /// (in Docker the source dir is mounted at its own path).
    fn with_work_dir(&mut self, dir: &Path);
    /// Keeps the environment alive between processes (Docker: `sleep infinity`).
    fn with_pause(&mut self);
    /// Starts the environment (creates the container, materializes the shell).
    async fn init(&self) -> Result<()>;
    /// A new process in the companion.
    async fn new_process(&self, bin: &str, args: &[&str]) -> Result<Box<dyn Proc>>;
    /// Stops and removes everything. Idempotent.
    async fn shutdown(&self) -> Result<()>;
    /// The underlying environment, for `with_env_vars`, `with_binary`, ...
    fn runner_env(&self) -> &dyn RunnerEnvironment;
    /// The underlying environment, mutably.
    fn runner_env_mut(&mut self) -> &mut dyn RunnerEnvironment;
    /// Which backend runs it.
    fn backend(&self) -> Backend;
}

#[derive(Debug)]
enum Env {
    // Also the fallback machinery; constructed only with the `native` feature. The
    // others are boxed: each is several times its size.
    #[cfg_attr(not(feature = "native"), allow(dead_code))]
    Native(runner_native::NativeEnvironment),
    #[cfg(feature = "nix")]
    Nix(Box<runner_nix::NixEnvironment>),
    #[cfg(feature = "docker")]
    Docker(Box<runner_docker::DockerEnvironment>),
}

/// The [`CompanionRunner`] every backend is wrapped in.
#[derive(Debug)]
pub struct Companion {
    env: Env,
    work_dir: Option<PathBuf>,
}

impl Companion {
    /// Wraps a native environment the caller configured.
    pub fn from_native(env: runner_native::NativeEnvironment) -> Self {
        Companion {
            env: Env::Native(env),
            work_dir: None,
        }
    }

    /// Wraps a Nix environment the caller configured (nix options, cache dir, ...).
    #[cfg(feature = "nix")]
    pub fn from_nix(env: runner_nix::NixEnvironment) -> Self {
        Companion {
            env: Env::Nix(Box::new(env)),
            work_dir: None,
        }
    }

    /// Wraps a Docker environment the caller configured.
    #[cfg(feature = "docker")]
    pub fn from_docker(env: runner_docker::DockerEnvironment) -> Self {
        Companion {
            env: Env::Docker(Box::new(env)),
            work_dir: None,
        }
    }

    fn env(&self) -> &dyn RunnerEnvironment {
        match &self.env {
            Env::Native(e) => e,
            #[cfg(feature = "nix")]
            Env::Nix(e) => &**e,
            #[cfg(feature = "docker")]
            Env::Docker(e) => &**e,
        }
    }
}

#[async_trait]
impl CompanionRunner for Companion {
    fn with_mount(&mut self, host: &Path, target: &Path) {
        #[cfg(feature = "docker")]
        if let Env::Docker(d) = &mut self.env {
            d.with_mount(host, target);
        }
        let _ = (host, target);
    }

    fn with_port_mapping(&mut self, host: u16, companion: u16) {
        #[cfg(feature = "docker")]
        if let Env::Docker(d) = &mut self.env {
            d.with_port_mapping(host, companion);
        }
        let _ = (host, companion);
    }

    fn with_work_dir(&mut self, dir: &Path) {
        #[cfg(feature = "docker")]
        if let Env::Docker(d) = &mut self.env {
            d.with_work_dir(dir);
        }
        self.work_dir = Some(dir.to_path_buf());
    }

    fn with_pause(&mut self) {
        #[cfg(feature = "docker")]
        if let Env::Docker(d) = &mut self.env {
            d.with_pause();
        }
    }

    async fn init(&self) -> Result<()> {
        self.env().init().await
    }

    async fn new_process(&self, bin: &str, args: &[&str]) -> Result<Box<dyn Proc>> {
        let mut p = self.env().new_process(bin, args).await?;
        if let Some(dir) = &self.work_dir {
            p.with_dir(dir);
        }
        Ok(p)
    }

    async fn shutdown(&self) -> Result<()> {
        self.env().shutdown().await
    }

    fn runner_env(&self) -> &dyn RunnerEnvironment {
        self.env()
    }

    fn runner_env_mut(&mut self) -> &mut dyn RunnerEnvironment {
        match &mut self.env {
            Env::Native(e) => e,
            #[cfg(feature = "nix")]
            Env::Nix(e) => &mut **e,
            #[cfg(feature = "docker")]
            Env::Docker(e) => &mut **e,
        }
    }

    fn backend(&self) -> Backend {
        self.env().backend()
    }
}

fn unavailable(backend: Backend, reason: impl Into<String>) -> Error {
    CompanionError::Unavailable {
        backend,
        reason: reason.into(),
    }
    .into()
}

#[cfg(feature = "docker")]
async fn docker(opts: &CompanionOpts, preferred: bool) -> Result<Option<Companion>> {
    let Some(image) = &opts.image else {
        return if preferred {
            Err(unavailable(Backend::Docker, "no image was given"))
        } else {
            Ok(None)
        };
    };
    // Connecting negotiates the API version: that request is the probe, and the client
    // is reused by the environment.
    let client = match tokio::time::timeout(DOCKER_DETECT_TIMEOUT, runner_docker::connect()).await {
        Ok(Ok(client)) => client,
        // The engine's own error, typed: a host can tell "engine down" apart
        // (`Error::downcast_backend::<DockerError>()`).
        Ok(Err(e)) if preferred => return Err(e.into()),
        Err(_) if preferred => {
            return Err(unavailable(
                Backend::Docker,
                format!("no Docker engine answered within {DOCKER_DETECT_TIMEOUT:?}"),
            ))
        }
        _ => return Ok(None),
    };
    let mut env = runner_docker::DockerEnvironment::with_client(
        client,
        image,
        Some(&opts.source_dir),
        &opts.name,
    )
    .await?;
    if let Some(user) = &opts.user {
        env.with_user_spec(user);
    }
    Ok(Some(Companion {
        env: Env::Docker(Box::new(env)),
        work_dir: None,
    }))
}

#[cfg(feature = "nix")]
fn nix(opts: &CompanionOpts, preferred: bool) -> Result<Option<Companion>> {
    let reason = if !runner_nix::check_nix_installed() {
        Some("nix is not installed".to_string())
    } else if !opts.source_dir.join("flake.nix").is_file() {
        Some(format!("no flake.nix in {}", opts.source_dir.display()))
    } else {
        None
    };
    match reason {
        Some(r) if preferred => Err(unavailable(Backend::Nix, r)),
        Some(_) => Ok(None),
        None => Ok(Some(Companion {
            env: Env::Nix(Box::new(runner_nix::NixEnvironment::new(&opts.source_dir)?)),
            work_dir: None,
        })),
    }
}

#[cfg_attr(not(feature = "native"), allow(dead_code))]
fn native(opts: &CompanionOpts) -> Result<Companion> {
    Ok(Companion {
        env: Env::Native(runner_native::NativeEnvironment::new(&opts.source_dir)?),
        work_dir: None,
    })
}

/// Sweeps what crashed owners left behind, once per process: their process groups
/// now, and with the `docker` feature their containers in the background (bounded;
/// a slow or absent engine never delays the caller). The first call's report of the
/// groups is `Some`; later calls wait for that sweep and return `None`.
/// [`new_companion_runner`] calls it, and so does `runner run` (which says what it
/// found): one start-up sweep, whichever comes first.
pub async fn sweep_stale_once() -> Option<runner_reaper::SweepReport> {
    static SWEPT: tokio::sync::OnceCell<runner_reaper::SweepReport> =
        tokio::sync::OnceCell::const_new();
    let mut first = false;
    let groups = SWEPT
        .get_or_init(|| async {
            first = true;
            // A thread for the sweep only when the ledger holds something to judge
            // (one listing of it here; nothing, in the common case).
            let groups = if runner_reaper::ledger_needs_sweep() {
                tokio::task::spawn_blocking(|| {
                    runner_reaper::reap_stale_process_groups(Duration::from_secs(5))
                })
                .await
                .unwrap_or_default()
            } else {
                runner_reaper::SweepReport::default()
            };
            if !groups.reaped.is_empty() || !groups.errors.is_empty() {
                tracing::info!(%groups, "swept stale process groups");
            }
            #[cfg(feature = "docker")]
            {
                let sweep = tokio::spawn(async {
                    let containers =
                        runner_docker::reap_stale_containers(Duration::from_secs(30)).await;
                    if !containers.removed.is_empty() {
                        tracing::info!(%containers, "swept stale containers");
                    }
                });
                *CONTAINER_SWEEP.lock().unwrap_or_else(|p| p.into_inner()) = Some(sweep);
            }
            groups
        })
        .await;
    first.then(|| groups.clone())
}

/// The start-up sweep's container part, running in the background.
#[cfg(feature = "docker")]
static CONTAINER_SWEEP: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>> =
    std::sync::Mutex::new(None);

/// Lets the start-up sweep's container part (see [`sweep_stale_once`]) finish, for at
/// most `bound`: what a short-lived program (`runner run -- true`) calls before it
/// exits, which would otherwise end the sweep half-way. Nothing to wait for without
/// the `docker` feature, or once it finished.
pub async fn finish_sweep(bound: Duration) {
    #[cfg(feature = "docker")]
    {
        let sweep = CONTAINER_SWEEP
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(sweep) = sweep {
            if tokio::time::timeout(bound, sweep).await.is_err() {
                tracing::info!("the start-up container sweep did not finish within {bound:?}");
            }
        }
    }
    #[cfg(not(feature = "docker"))]
    let _ = bound;
}

/// The backend `auto` picks, and why: what [`new_companion_runner`] builds without a
/// preference, and what `runner run` says it chose. One decision for every caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The backend.
    pub backend: Backend,
    /// Why.
    pub reason: Reason,
}

/// Why [`choose_backend`] picked its backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// An image was given and a Docker engine answers.
    ImageAndEngine {
        /// The image.
        image: String,
    },
    /// An image was given but no Docker engine answered (within
    /// [`DOCKER_DETECT_TIMEOUT`]): the next backend in the order runs it. Worth
    /// telling the user.
    NoEngine {
        /// The image.
        image: String,
        /// The engine that was asked, or why none could be resolved.
        endpoint: String,
    },
    /// The directory has a `flake.nix` and nix is installed.
    Flake {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory has a `flake.nix` but nix is not installed.
    FlakeWithoutNix {
        /// The directory.
        dir: PathBuf,
    },
    /// Neither an image nor a `flake.nix`.
    Neither,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::ImageAndEngine { image } => {
                write!(f, "image {image} and a Docker engine answers")
            }
            Reason::NoEngine { image, endpoint } => {
                write!(
                    f,
                    "image {image}, but no Docker engine answers at {endpoint}"
                )
            }
            Reason::Flake { dir } => {
                write!(f, "{} has a flake.nix and nix is installed", dir.display())
            }
            Reason::FlakeWithoutNix { dir } => write!(
                f,
                "{} has a flake.nix but nix is not installed",
                dir.display()
            ),
            Reason::Neither => f.write_str("no image and no flake.nix"),
        }
    }
}

/// Picks a backend for `image` (if any) and `dir`: Docker when an image is given and
/// an engine answers within [`DOCKER_DETECT_TIMEOUT`] (with the `docker` feature),
/// then Nix when `dir` has a `flake.nix` and nix is installed (with the `nix`
/// feature), then native.
pub async fn choose_backend(image: Option<&str>, dir: &Path) -> Choice {
    #[cfg(feature = "docker")]
    let missing_engine = match image {
        Some(image) => {
            match tokio::time::timeout(DOCKER_DETECT_TIMEOUT, runner_docker::connect()).await {
                Ok(Ok(_)) => {
                    return Choice {
                        backend: Backend::Docker,
                        reason: Reason::ImageAndEngine {
                            image: image.to_string(),
                        },
                    }
                }
                _ => Some(Reason::NoEngine {
                    image: image.to_string(),
                    endpoint: runner_docker::resolve_endpoint()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|e| e.to_string()),
                }),
            }
        }
        None => None,
    };
    // Without Docker support an image is not a reason for anything.
    #[cfg(not(feature = "docker"))]
    let missing_engine: Option<Reason> = {
        let _ = image;
        None
    };
    let has_flake = dir.join("flake.nix").is_file();
    #[cfg(feature = "nix")]
    if has_flake && runner_nix::check_nix_installed() {
        return Choice {
            backend: Backend::Nix,
            reason: missing_engine.unwrap_or_else(|| Reason::Flake {
                dir: dir.to_path_buf(),
            }),
        };
    }
    let reason = match missing_engine {
        Some(r) => r,
        None if has_flake => Reason::FlakeWithoutNix {
            dir: dir.to_path_buf(),
        },
        None => Reason::Neither,
    };
    Choice {
        backend: Backend::Native,
        reason,
    }
}

/// A companion on the best available backend (see the crate docs for the order), or on
/// `opts.preferred_backend`, which must then be available. The first call in a process
/// also sweeps what crashed owners left behind.
pub async fn new_companion_runner(opts: CompanionOpts) -> Result<Companion> {
    sweep_stale_once().await;
    match opts.preferred_backend {
        Some(Backend::Docker) => {
            #[cfg(feature = "docker")]
            return docker(&opts, true)
                .await?
                .ok_or_else(|| unavailable(Backend::Docker, "unavailable"));
            #[cfg(not(feature = "docker"))]
            return Err(unavailable(
                Backend::Docker,
                "built without the `docker` feature",
            ));
        }
        Some(Backend::Nix) => {
            #[cfg(feature = "nix")]
            return nix(&opts, true)?.ok_or_else(|| unavailable(Backend::Nix, "unavailable"));
            #[cfg(not(feature = "nix"))]
            return Err(unavailable(Backend::Nix, "built without the `nix` feature"));
        }
        Some(Backend::Native) => {
            #[cfg(feature = "native")]
            return native(&opts);
            #[cfg(not(feature = "native"))]
            return Err(unavailable(
                Backend::Native,
                "built without the `native` feature",
            ));
        }
        None => {}
    }
    let choice = choose_backend(opts.image.as_deref(), &opts.source_dir).await;
    tracing::debug!(backend = %choice.backend, reason = %choice.reason, "backend chosen");
    match choice.backend {
        #[cfg(feature = "docker")]
        Backend::Docker => {
            if let Some(c) = docker(&opts, false).await? {
                return Ok(c);
            }
        }
        #[cfg(feature = "nix")]
        Backend::Nix => {
            if let Some(c) = nix(&opts, false)? {
                return Ok(c);
            }
        }
        _ => {}
    }
    #[cfg(feature = "native")]
    return native(&opts);
    #[cfg(not(feature = "native"))]
    Err(CompanionError::NoBackend(
        "docker and nix are unavailable and the `native` feature is off".into(),
    )
    .into())
}

/// How a plugin asked to be run, for [`resolve_standalone_environment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// On the host.
    Native,
    /// In the Nix dev shell of the dir.
    Nix,
    /// In a container (no image is known here: see the function's docs).
    Container,
}

/// An environment for callers that are not wired to a companion: Nix when asked for
/// and available (feature, nix installed, `flake.nix` in `dir`); for `Container`, the
/// native backend (no image is known at this layer; formatters and AST tools work on
/// host files and behave the same); native otherwise. Errors only for a bad `dir`.
pub fn resolve_standalone_environment(
    dir: &Path,
    kind: RuntimeKind,
) -> Result<Box<dyn RunnerEnvironment>> {
    #[cfg(feature = "nix")]
    if kind == RuntimeKind::Nix
        && runner_nix::check_nix_installed()
        && dir.join("flake.nix").is_file()
    {
        if let Ok(env) = runner_nix::NixEnvironment::new(dir) {
            return Ok(Box::new(env));
        }
    }
    let _ = kind;
    Ok(Box::new(runner_native::NativeEnvironment::new(dir)?))
}

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(all(doctest, feature = "docker", feature = "nix"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
