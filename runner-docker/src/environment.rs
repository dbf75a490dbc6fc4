//! `DockerEnvironment`: one labelled container per environment (what the container
//! is, its labels and removal: `container.rs`), its execs' shared state, and the
//! container's own output.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use runner_core::{
    Backend, EnvLayers, EnvironmentVariable, Error, Output, Proc, Result, RunnerEnvironment,
};

use crate::container::{self, Config, CreateError, DockerPortMapping};
use crate::engine::Found;
use crate::engine::OutputStream;
use crate::exec::{DockerProc, Inner, Running};
use crate::names::{
    container_name, owner_alive, session_label, LABEL_CONFIG, LABEL_OWNER, LABEL_SESSION,
};
use crate::stream::forward_logs;
use crate::{image, DockerError};

/// A container `init` made or reused, and where runner's helper is bind-mounted in
/// it (`None`: the helper is copied in).
struct Made {
    id: String,
    helper_at: Option<String>,
}

/// How long ending a sync waits for what is left to be carried across.
const SYNC_FLUSH_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a stopping environment lets its tunnels' open connections deliver what
/// their far side sent (a connection whose client keeps it open is ended then).
const TUNNEL_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs processes as `exec`s in one container.
///
/// The container is created by [`init`](RunnerEnvironment::init) with the labels
/// `runner.owner`, `runner.session`, `runner.name`, `runner.host`, `runner.config`
/// (and `runner.ephemeral` when asked); an existing container of the same name is
/// reused only when its configuration hash matches, otherwise it is replaced. If
/// anything after creation fails, the container is removed again.
#[derive(Debug)]
pub struct DockerEnvironment {
    inner: Arc<Inner>,
    name: String,
    container_name: String,
    config: Config,
    layers: EnvLayers,
    /// The image's `ENV`, the base of the container's environment.
    image_env: Vec<String>,
    dir: Option<PathBuf>,
    shut_down: std::sync::atomic::AtomicBool,
    /// Where the container's own output goes (`with_output`).
    output: Option<Output>,
    /// Forwards the container's output from the current start.
    log_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The container `init` created or reused, until `shutdown` removes it (`stop`
    /// stops it but keeps it known). Shared with the task that creates it, which
    /// records it even when `init` is cancelled mid-way.
    known: Arc<Mutex<Option<String>>>,
    /// Held by that task for as long as the engine's create request runs:
    /// `shutdown` waits for it before it reads `known`.
    creating: Arc<tokio::sync::Mutex<()>>,
    /// How long the engine waits after SIGTERM before it kills the container's
    /// command when the container is stopped.
    grace: std::time::Duration,
    /// The tunnels' listeners while the container runs.
    tunnels: Mutex<Vec<runner_core::tunnel::Tunnel>>,
    /// What a synced project leaves out.
    sync_options: runner_core::sync::SyncOptions,
    /// The project's sync while the container runs, when the engine does not see it.
    sync: tokio::sync::Mutex<Option<runner_core::sync::Session>>,
}

impl DockerEnvironment {
    /// An environment for `image` with `dir` mounted at the same path and used as the
    /// working directory. Connects to the engine (negotiating the API version) and
    /// checks that the image is present or can be pulled.
    pub async fn new(image: &str, dir: impl AsRef<Path>, name: &str) -> Result<Self> {
        Self::with_client(
            crate::engine::connect().await?,
            image,
            Some(dir.as_ref()),
            name,
        )
        .await
    }

    /// An environment for `image` without a mounted directory.
    pub async fn new_headless(image: &str, name: &str) -> Result<Self> {
        Self::with_client(crate::engine::connect().await?, image, None, name).await
    }

    /// Like [`new`](Self::new) / [`new_headless`](Self::new_headless) on an engine
    /// the caller already connected to ([`crate::Engine`]).
    pub async fn with_client(
        engine: crate::Engine,
        image: &str,
        dir: Option<&Path>,
        name: &str,
    ) -> Result<Self> {
        let dir = match dir {
            Some(d) => {
                let d =
                    std::path::absolute(d).map_err(|e| Error::io("resolve the directory", e))?;
                if !d.is_dir() {
                    return Err(Error::DirNotFound(d));
                }
                Some(d)
            }
            None => None,
        };
        let image_env = image::ensure_image_env(&engine, image).await?;
        Ok(DockerEnvironment {
            inner: Arc::new(Inner {
                engine,
                running: Mutex::new(None),
                registry: runner_core::Registry::default(),
                helper: Mutex::new(crate::exec::HelperState::NotStarted),
            }),
            name: name.to_string(),
            container_name: container_name(name, dir.as_deref()),
            config: Config::of_image(image),
            layers: EnvLayers::new(),
            image_env,
            dir: None,
            shut_down: std::sync::atomic::AtomicBool::new(false),
            output: None,
            log_task: Mutex::new(None),
            known: Arc::default(),
            creating: Arc::default(),
            grace: runner_core::DEFAULT_STOP_GRACE,
            tunnels: Mutex::new(Vec::new()),
            sync_options: runner_core::sync::SyncOptions::default(),
            sync: tokio::sync::Mutex::new(None),
        }
        .mounting(dir))
    }

    fn mounting(mut self, dir: Option<PathBuf>) -> Self {
        if let Some(dir) = dir {
            self.config.mounts.push((dir.clone(), dir.clone()));
            self.config.work_dir = Some(dir.clone());
            self.dir = Some(dir);
        }
        self
    }

    /// Bind-mounts `host` at `target` in the container. A relative `host` is taken
    /// from the current directory; `init` fails with
    /// [`DockerError::MountSourceMissing`] when it does not exist.
    pub fn with_mount(
        &mut self,
        host: impl Into<PathBuf>,
        target: impl Into<PathBuf>,
    ) -> &mut Self {
        // A relative host path would be taken for a named volume: make it absolute.
        let host = host.into();
        let host = std::path::absolute(&host).unwrap_or(host);
        self.config.mounts.push((host, target.into()));
        self
    }

    /// Makes container port `container` reachable at this machine's 127.0.0.1:`host`
    /// (all interfaces after [`with_public_ports`](Self::with_public_ports)), wherever
    /// the engine runs: tunnelled through runner's helper when it runs in the
    /// container ([`tunnelled_ports`](Self::tunnelled_ports)), else published by the
    /// engine on its own host.
    pub fn with_port_mapping(&mut self, host: u16, container: u16) -> &mut Self {
        let host_ip = if self.config.public_ports {
            "0.0.0.0"
        } else {
            "127.0.0.1"
        };
        self.config.ports.push(DockerPortMapping {
            host_ip: host_ip.into(),
            host_port: host,
            container_port: container,
        });
        self
    }

    /// [`with_port_mapping`](Self::with_port_mapping) of `port` to the same number.
    pub fn with_port(&mut self, port: u16) -> &mut Self {
        self.with_port_mapping(port, port)
    }

    /// The working directory of processes (default: the mounted dir, else the image's).
    pub fn with_work_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.config.work_dir = Some(dir.into());
        self
    }

    /// The container's command.
    pub fn with_command(&mut self, cmd: Vec<String>) -> &mut Self {
        self.config.command = Some(cmd);
        self
    }

    /// Keeps the container alive with `sleep infinity` so processes can be exec'd.
    pub fn with_pause(&mut self) -> &mut Self {
        self.config.pause = true;
        self
    }

    /// Marks the container ephemeral: the sweep may remove it as soon as it stops.
    pub fn with_ephemeral(&mut self) -> &mut Self {
        self.config.ephemeral = true;
        self
    }

    /// Overrides the image's `ENTRYPOINT`: `Some(argv)` replaces it, `Some(vec![])`
    /// clears it (an image whose entrypoint exits at once can then be kept running
    /// with [`with_pause`](Self::with_pause)), `None` keeps the image's.
    pub fn with_entrypoint(&mut self, entrypoint: Option<Vec<String>>) -> &mut Self {
        self.config.entrypoint = entrypoint;
        self
    }

    /// Publishes every port mapping (those made before and after this call) on all
    /// interfaces (`0.0.0.0`) instead of 127.0.0.1. Opt-in: it exposes the
    /// container's services to the network.
    pub fn with_public_ports(&mut self) -> &mut Self {
        self.config.public_ports = true;
        for p in &mut self.config.ports {
            p.host_ip = "0.0.0.0".into();
        }
        self
    }

    /// Mounts the engine's own socket (the unix socket this environment's engine is
    /// reached through, else `/var/run/docker.sock`) at `/var/run/docker.sock` in the
    /// container. Opt-in and named so: whatever runs in the container then controls
    /// the engine.
    pub fn with_docker_socket(&mut self) -> &mut Self {
        let socket = self
            .inner
            .engine
            .endpoint()
            .strip_prefix("unix://")
            .unwrap_or("/var/run/docker.sock")
            .to_string();
        self.config
            .mounts
            .push((PathBuf::from(socket), PathBuf::from("/var/run/docker.sock")));
        self
    }

    /// How long stopping the container lets its command go after SIGTERM before the
    /// engine kills it (default [`runner_core::DEFAULT_STOP_GRACE`]).
    pub fn with_stop_grace(&mut self, grace: std::time::Duration) -> &mut Self {
        self.grace = grace;
        self
    }

    /// Runs the container for `platform` (e.g. `linux/amd64` on an arm64 host). An
    /// image without that platform is [`DockerError::PlatformUnavailable`] at `init`.
    pub fn with_platform(&mut self, platform: &str) -> &mut Self {
        self.config.platform = Some(platform.to_string());
        self
    }

    /// Mounts the container's root filesystem read-only (`docker run --read-only`);
    /// mounts and cache volumes stay writable. runner's helper cannot be copied into
    /// such a container, so its processes run as plain execs.
    pub fn with_read_only_root(&mut self) -> &mut Self {
        self.config.read_only = true;
        self
    }

    /// Mounts the persistent cache volume `name` at `target` (e.g. a
    /// `.cargo/registry` or `node_modules`): a named volume labelled as runner's
    /// (`runner.owner`, `runner.cache`), created at the first `init` and kept across
    /// runs and containers, until `runner reap --volumes`
    /// ([`remove_cache_volumes`](crate::remove_cache_volumes)). A name Docker would
    /// reject is [`DockerError::InvalidVolumeName`] at `init`.
    pub fn with_cache_volume(&mut self, name: &str, target: impl Into<PathBuf>) -> &mut Self {
        self.config.volumes.push((name.to_string(), target.into()));
        self
    }

    /// [`with_host_user`](Self::with_host_user) for `host`, else
    /// [`with_user`](Self::with_user): how `runner run --user` and the companion's
    /// `user` are read.
    pub fn with_user_spec(&mut self, spec: &str) -> &mut Self {
        if spec == "host" {
            self.with_host_user()
        } else {
            self.with_user(spec)
        }
    }

    /// Runs the container and its execs as the user and group that own the mounted
    /// directory, so files written into the project are not owned by root. Without a
    /// mounted directory it changes nothing.
    pub fn with_host_user(&mut self) -> &mut Self {
        use std::os::unix::fs::MetadataExt;
        if let Some(meta) = self.dir.as_ref().and_then(|d| std::fs::metadata(d).ok()) {
            self.config.user = Some(format!("{}:{}", meta.uid(), meta.gid()));
        }
        self
    }

    /// Runs the container (and its execs) as `user` (`name`, `uid` or `uid:gid`). A
    /// name the image does not know is [`DockerError::NoSuchUser`] at `init`.
    pub fn with_user(&mut self, user: &str) -> &mut Self {
        self.config.user = Some(user.to_string());
        self
    }

    /// Sends the container's own output (its command's stdout and stderr, line by
    /// line) to `sink`, from the start `init` makes onwards: earlier runs of a reused
    /// container are not replayed. Attached before the start, so nothing is lost.
    pub fn with_output(&mut self, sink: Output) -> &mut Self {
        self.output = Some(sink);
        self
    }

    /// The Docker name of the container.
    pub fn container_name(&self) -> &str {
        &self.container_name
    }

    /// The container's id, once `init` ran (still after `stop`, until `shutdown`
    /// removed it).
    pub fn container_id(&self) -> Option<String> {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The port mappings asked for.
    pub fn port_mappings(&self) -> &[DockerPortMapping] {
        &self.config.ports
    }

    /// The engine this environment runs on.
    pub fn engine(&self) -> &crate::Engine {
        &self.inner.engine
    }

    /// True when a container by this environment's name exists.
    pub async fn is_container_present(&self) -> Result<bool> {
        let found = self
            .inner
            .engine
            .inspect_container(&self.container_name)
            .await
            .found()?;
        Ok(found.is_some())
    }

    /// True when the container `init` made is gone (removed here or from outside).
    pub async fn container_deleted(&self) -> Result<bool> {
        let Some(id) = self.container_id() else {
            return Ok(true);
        };
        let found = self.inner.engine.inspect_container(&id).await.found()?;
        Ok(found.is_none())
    }

    /// Creates and starts the container; `tunnel`: its ports are tunnelled, so the
    /// engine publishes none.
    async fn create_and_start(
        &self,
        config: &Config,
        hash: &str,
        tunnel: bool,
    ) -> std::result::Result<Made, CreateError> {
        let engine = &self.inner.engine;
        let mut body = config.create_body(&self.name, hash);
        // The helper bind-mounted from this machine when the engine may see it (as
        // `docker run --init` mounts its init): no upload when the helper starts.
        let helper_mount = self.helper_mount_wanted();
        if let Some((source, target)) = &helper_mount {
            Config::mount_read_only(&mut body, source, target);
        }
        if tunnel {
            if let Some(host) = body.host_config.as_mut() {
                host.port_bindings = None;
            }
            body.exposed_ports = None;
        }
        // The create runs in a task of its own that records the container the moment
        // the engine made it: a cancelled `init` (a dropped future) never loses track
        // of a container, and `shutdown` removes it.
        let task = {
            let (engine, name, config) =
                (engine.clone(), self.container_name.clone(), config.clone());
            let (known, creating) = (Arc::clone(&self.known), Arc::clone(&self.creating));
            let guard = Arc::clone(&creating).lock_owned().await;
            tokio::spawn(async move {
                let created = container::create(&engine, &name, &config, body).await;
                if let Ok(id) = &created {
                    *known.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
                }
                drop(guard);
                created
            })
        };
        let created = match task.await {
            Ok(Ok(created)) => created,
            // An engine that does not have the helper's directory refuses the mount:
            // once more without it (and never again with it on this engine).
            Ok(Err(CreateError::Docker(e))) if helper_mount.is_some() => {
                tracing::debug!(error = %e, "the create with the helper mounted was refused");
                crate::sees::remember_helper(engine.endpoint(), false);
                return Box::pin(self.create_and_start(config, hash, tunnel)).await;
            }
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(CreateError::Docker(DockerError::unexpected(
                    "create the container",
                    e.to_string(),
                )))
            }
        };
        // From here on, anything that fails removes what we created.
        if let Err(e) = crate::sees::check(engine, &created, &config.mounts).await {
            let _ = container::remove(engine, &created).await;
            self.known.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Err(CreateError::Docker(e));
        }
        let mounted = match helper_mount {
            Some((_, target)) => {
                let path = format!("{target}/runner-shim");
                let seen = match crate::sees::helper_seen(engine.endpoint()) {
                    Some(seen) => seen,
                    None => {
                        let seen = engine
                            .path_exists(&created, Path::new(&path))
                            .await
                            .unwrap_or(false);
                        crate::sees::remember_helper(engine.endpoint(), seen);
                        seen
                    }
                };
                seen.then_some(path)
            }
            None => None,
        };
        let logs = match self.attach(&created).await {
            Ok(logs) => logs,
            Err(e) => {
                let _ = container::remove(engine, &created).await;
                self.known.lock().unwrap_or_else(|p| p.into_inner()).take();
                return Err(CreateError::Docker(e));
            }
        };
        if let Err(e) = engine.start_container(&created).await {
            let _ = container::remove(engine, &created).await;
            self.known.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Err(CreateError::Docker(config.start_error(e)));
        }
        self.follow(logs);
        Ok(Made {
            id: created,
            helper_at: mounted,
        })
    }

    /// The helper's directory on this machine and where to mount it, unless the
    /// helper is off or this engine was seen not to see it.
    fn helper_mount_wanted(&self) -> Option<(PathBuf, String)> {
        let off = matches!(
            *self.inner.helper.lock().unwrap_or_else(|p| p.into_inner()),
            crate::exec::HelperState::Off
        );
        if off || crate::sees::helper_seen(self.inner.engine.endpoint()) == Some(false) {
            return None;
        }
        crate::helper::host_copy()
    }

    /// The configuration to create: without the project's mount when it is synced.
    fn config_for(&self, synced: bool) -> Config {
        let mut config = self.config.clone();
        if synced {
            config.mounts.retain(|(h, _)| Some(h) != self.dir.as_ref());
        }
        config
    }

    fn is_project_not_seen(&self, e: &DockerError) -> bool {
        matches!(e, DockerError::ProjectNotVisible { dir, .. } if Some(dir) == self.dir.as_ref())
    }

    /// Copies the project into container `id` (as `docker cp` would) and keeps it in
    /// sync both ways while the container runs ([`runner_core::sync`]): the engine
    /// does not see this machine's files.
    async fn start_sync(&self, id: &str) -> Result<()> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let failed = |what: &'static str, source: std::io::Error| DockerError::SyncFailed {
            dir: dir.clone(),
            what,
            source: Arc::new(source),
        };
        let began = std::time::Instant::now();
        let prepared = runner_core::sync::prepare(&dir, self.sync_options.clone())
            .map_err(|e| failed("watch it", e))?;
        let prefix = dir.strip_prefix("/").unwrap_or(&dir).to_path_buf();
        let (chunks, copied) = prepared.archive(&prefix);
        let uploaded = self.inner.engine.upload_stream(id, "/", chunks).await;
        let copied = match copied.await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(failed("read it", e).into()),
            Err(e) => return Err(failed("read it", std::io::Error::other(e)).into()),
        };
        uploaded.map_err(DockerError::from)?;
        let copy_took = began.elapsed();
        let mut args = vec!["--sync".to_string(), dir.display().to_string()];
        for name in self.sync_options.plain_names() {
            args.extend(["--skip".to_string(), name]);
        }
        let (stdin, stdout) = crate::exec::helper_mode(
            Arc::clone(&self.inner),
            self.config.user.clone(),
            "it carries the sync",
            args,
        )
        .await
        .map_err(|e| failed("start the agent in the container", e))?;
        let (files, bytes) = (copied.files, copied.bytes);
        let session = prepared
            .run(copied, stdin, Box::new(stdout))
            .await
            .map_err(|e| failed("hear from the agent in the container", e))?;
        tracing::info!(
            target: runner_core::tunnel::NOTE_TARGET,
            "{} is synced with the container (the engine does not see this machine's files): {} files, {:.1} MB copied in {:.1} s; changes go both ways while it runs",
            dir.display(),
            files,
            bytes as f64 / 1e6,
            copy_took.as_secs_f64()
        );
        *self.sync.lock().await = Some(session);
        Ok(())
    }

    /// Carries what is left across and ends the project's sync (bounded: a far side
    /// that does not answer is not waited for).
    async fn end_sync(&self) {
        if let Some(session) = self.sync.lock().await.take() {
            let _ = tokio::time::timeout(SYNC_FLUSH_BOUND, session.flush()).await;
        }
    }

    /// Whether the project is synced into the container (the engine does not see this
    /// machine's files) rather than mounted.
    pub async fn is_synced(&self) -> bool {
        self.sync.lock().await.is_some()
    }

    /// Returns once every change made to the synced project before the call, on this
    /// machine or in the container, has been carried to the other side. At once when
    /// the project is mounted.
    pub async fn flush_sync(&self) {
        if let Some(session) = self.sync.lock().await.as_ref() {
            session.flush().await;
        }
    }

    /// What a synced project leaves out (by default `.git` and what its `.gitignore`
    /// files say); used by the next `init`.
    pub fn with_sync_options(&mut self, options: runner_core::sync::SyncOptions) -> &mut Self {
        self.sync_options = options;
        self
    }

    /// Whether the ports asked for are tunnelled (`runner_core::tunnel`: this machine's
    /// address reaches the container's port wherever the engine runs) rather than
    /// published by the engine (which publishes on the engine's own host): whenever
    /// runner's helper can run in the container. Without it (turned off, a read-only
    /// root, an image of another architecture) the engine publishes them.
    async fn tunnels_wanted(&self) -> std::result::Result<bool, DockerError> {
        let helper_off = matches!(
            *self.inner.helper.lock().unwrap_or_else(|p| p.into_inner()),
            crate::exec::HelperState::Off
        );
        if self.config.ports.is_empty()
            || helper_off
            || self.config.read_only
            || crate::helper::embedded_helper().is_err()
        {
            return Ok(false);
        }
        let image = crate::image::inspect(&self.inner.engine, &self.config.image).await?;
        let arch = image.architecture.unwrap_or_default();
        Ok(arch.is_empty() || arch == crate::helper::docker_arch())
    }

    /// Binds every port to tunnel on this machine: a port in use is
    /// [`DockerError::PortInUse`].
    async fn bind_ports(
        &self,
    ) -> std::result::Result<Vec<(tokio::net::TcpListener, u16)>, DockerError> {
        let mut listeners = Vec::new();
        for p in &self.config.ports {
            let listener = tokio::net::TcpListener::bind((p.host_ip.as_str(), p.host_port))
                .await
                .map_err(|e| DockerError::PortInUse {
                    host_ip: p.host_ip.clone(),
                    host_port: p.host_port,
                    source: std::sync::Arc::new(e),
                })?;
            listeners.push((listener, p.container_port));
        }
        Ok(listeners)
    }

    /// Carries every connection to the bound ports to the container's port: each one
    /// a process of the helper (`runner-shim --connect`) connected inside the
    /// container.
    fn serve_ports(&self, listeners: Vec<(tokio::net::TcpListener, u16)>) -> Result<()> {
        let mut tunnels = self.tunnels.lock().unwrap_or_else(|p| p.into_inner());
        for (listener, port) in listeners {
            let inner = Arc::clone(&self.inner);
            let user = self.config.user.clone();
            let open: runner_core::tunnel::Opener = Arc::new(move || {
                let (inner, user) = (Arc::clone(&inner), user.clone());
                Box::pin(async move { crate::exec::connect_inside(inner, user, port).await })
            });
            let tunnel = runner_core::tunnel::Tunnel::serve(listener, open)
                .map_err(|e| Error::io("serve a tunnelled port", e))?;
            tracing::info!(
                target: runner_core::tunnel::NOTE_TARGET,
                "{} reaches the container's port {port} through runner's helper",
                tunnel.local_addr()
            );
            tunnels.push(tunnel);
        }
        Ok(())
    }

    /// The ports tunnelled to the container (this machine's address, the container's
    /// port), while it runs: empty when the engine publishes them instead.
    pub fn tunnelled_ports(&self) -> Vec<(std::net::SocketAddr, u16)> {
        let tunnels = self.tunnels.lock().unwrap_or_else(|p| p.into_inner());
        self.config
            .ports
            .iter()
            .zip(tunnels.iter())
            .map(|(p, t)| (t.local_addr(), p.container_port))
            .collect()
    }

    /// Like [`RunnerEnvironment::new_process`], as the concrete [`DockerProc`], whose
    /// `start` gives a [`DockerRunning`](crate::DockerRunning) (with Docker-only
    /// methods such as `find_pid`).
    pub fn docker_process(&self, bin: &str, args: &[&str]) -> Result<DockerProc> {
        if self.shut_down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::ShutDown);
        }
        let mut cmd = vec![bin.to_string()];
        cmd.extend(args.iter().map(|a| a.to_string()));
        Ok(DockerProc::new(
            Arc::clone(&self.inner),
            cmd,
            self.layers.clone(),
            self.config.work_dir.clone(),
            self.config.user.clone(),
        ))
    }

    /// The container's CPU and memory use now (CPU over the engine's ~1 s sampling
    /// window), from the stats API.
    pub async fn stats(&self) -> Result<crate::ContainerStats> {
        let id = self
            .inner
            .running()
            .map(|r| r.id)
            .ok_or_else(|| DockerError::NoContainer(self.container_name.clone()))?;
        match self.inner.engine.stats(&id).await.found()? {
            Some(r) => Ok(crate::ContainerStats::from_response(&r)),
            None => Err(DockerError::NoContainer(id).into()),
        }
    }

    /// Attaches to the container's output when `with_output` asked for it (before the
    /// start, so the first line is not missed).
    async fn attach(&self, id: &str) -> std::result::Result<Option<OutputStream>, DockerError> {
        if self.output.is_none() {
            return Ok(None);
        }
        Ok(Some(self.inner.engine.attach_container(id).await?))
    }

    /// Forwards attached output to the sink in the background.
    fn follow(&self, logs: Option<OutputStream>) {
        if let (Some(logs), Some(sink)) = (logs, self.output.clone()) {
            let task = tokio::spawn(forward_logs(logs, sink));
            if let Some(old) = self
                .log_task
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .replace(task)
            {
                old.abort();
            }
        }
    }

    /// Lets the output forwarder deliver the container's last lines (it ends with the
    /// container), then stops it. The container has stopped by then, so the engine
    /// closes the stream; under load that can take seconds (the bound is for an
    /// engine that never does).
    async fn finish_logs(&self) {
        let task = self
            .log_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut task) = task {
            if tokio::time::timeout(std::time::Duration::from_secs(10), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// A container by our name exists: reuse it when its configuration hash matches
    /// (starting it if stopped), else replace it.
    async fn reuse_or_replace(
        &self,
        config: &Config,
        hash: &str,
        tunnel: bool,
    ) -> std::result::Result<Made, DockerError> {
        let engine = &self.inner.engine;
        let existing = engine.inspect_container(&self.container_name).await?;
        let id = existing.id.clone().unwrap_or_default();
        let labels = existing.config.as_ref().and_then(|cfg| cfg.labels.as_ref());
        let same = labels
            .and_then(|l| l.get(LABEL_CONFIG))
            .is_some_and(|h| h == hash);
        // A container another live process uses is never reused, replaced or
        // removed under it (nor one that is not ours at all).
        let session = labels.and_then(|l| l.get(LABEL_SESSION));
        let ours = labels.is_some_and(|l| l.contains_key(LABEL_OWNER))
            && crate::names::created::is_ours(&id);
        let mine = session.is_some_and(|s| *s == session_label());
        let live_user = (!mine && session.is_some_and(|s| owner_alive(s)))
            || crate::names::claims::live_claimants(&self.container_name)
                .iter()
                .any(|s| *s != session_label());
        if !ours || live_user {
            return Err(DockerError::InUse {
                container: self.container_name.clone(),
                owner: session.cloned().unwrap_or_default(),
            });
        }
        if same {
            let running = existing
                .state
                .as_ref()
                .and_then(|s| s.running)
                .unwrap_or(false);
            let logs = self.attach(&id).await?;
            if !running {
                engine
                    .start_container(&id)
                    .await
                    .map_err(|e| config.start_error(e))?;
            }
            self.follow(logs);
            // Made with the helper mounted (by us, on an engine seen to see it)?
            let helper_at = crate::helper::host_copy()
                .filter(|_| crate::sees::helper_seen(engine.endpoint()) == Some(true))
                .filter(|(_, target)| {
                    let mounts = existing
                        .host_config
                        .as_ref()
                        .and_then(|h| h.mounts.as_ref());
                    mounts.is_some_and(|m| m.iter().any(|m| m.target.as_ref() == Some(target)))
                })
                .map(|(_, target)| format!("{target}/runner-shim"));
            return Ok(Made { id, helper_at });
        }
        tracing::info!(container = %self.container_name, "configuration changed; recreating");
        container::remove(engine, &id).await?;
        match self.create_and_start(config, hash, tunnel).await {
            Ok(made) => Ok(made),
            Err(CreateError::NameTaken) => Err(DockerError::unexpected(
                "create the container",
                "another process created one by the same name meanwhile",
            )),
            Err(CreateError::Docker(e)) => Err(e),
        }
    }

    async fn stop_execs(&self) -> Result<()> {
        self.inner.registry.stop_all().await
    }

    /// Whether processes run through runner's helper in the container (about a
    /// millisecond each) or as plain execs (tens of milliseconds): `Ok(pid)` of the
    /// helper in the container, or why not (not initialized, turned off with
    /// [`with_exec_helper`](Self::with_exec_helper), or it could not run there).
    pub async fn exec_helper(&self) -> std::result::Result<u32, String> {
        match self.inner.settled_helper().await {
            crate::exec::HelperState::Ready(h) if !h.is_gone() => Ok(h.pid),
            crate::exec::HelperState::Ready(_) => Err("the helper ended".into()),
            crate::exec::HelperState::Off => Err("turned off (with_exec_helper(false))".into()),
            crate::exec::HelperState::NotStarted | crate::exec::HelperState::Starting(_) => {
                Err("not started (call init)".into())
            }
            crate::exec::HelperState::Unavailable(why) => Err(why),
        }
    }

    /// Runs processes through runner's helper in the container (the default) or,
    /// with `false`, every process as a plain `docker exec`.
    pub fn with_exec_helper(&mut self, on: bool) -> &mut Self {
        *self.inner.helper.lock().unwrap_or_else(|p| p.into_inner()) = if on {
            crate::exec::HelperState::NotStarted
        } else {
            crate::exec::HelperState::Off
        };
        self
    }

    /// Starts the helper in container `id` in the background unless it is off or
    /// already runs there: `init` does not wait for the copy and start (about 100 ms),
    /// the first process does if it comes sooner. `mounted`: where it is bind-mounted
    /// there, else it is copied in.
    fn start_helper(&self, id: &str, mounted: Option<String>) {
        let mut state = self.inner.helper.lock().unwrap_or_else(|p| p.into_inner());
        let wanted = match &*state {
            crate::exec::HelperState::Off | crate::exec::HelperState::Starting(_) => false,
            crate::exec::HelperState::Ready(h) => h.is_gone(),
            _ => true,
        };
        if !wanted {
            return;
        }
        let (done_tx, done) = tokio::sync::watch::channel(false);
        *state = crate::exec::HelperState::Starting(done);
        drop(state);
        let inner = Arc::clone(&self.inner);
        let (id, user, name) = (
            id.to_string(),
            self.config.user.clone(),
            self.container_name.clone(),
        );
        let end_container = self.config.ephemeral && self.config.pause;
        tokio::spawn(async move {
            let started =
                crate::helper::Helper::start(&inner.engine, &id, user, end_container, mounted);
            let state = match started.await {
                Ok(h) => crate::exec::HelperState::Ready(h),
                Err(why) => {
                    tracing::info!(container = %name, reason = %why, "processes run as plain execs: the helper cannot run");
                    crate::exec::HelperState::Unavailable(why)
                }
            };
            *inner.helper.lock().unwrap_or_else(|p| p.into_inner()) = state;
            let _ = done_tx.send(true);
        });
    }

    /// Closes the helper's stream (it kills what it started and exits).
    /// A helper still starting is not waited for: the container's stop or removal
    /// ends it (see `shutdown` for a removal that its upload gets in the way of).
    async fn close_helper(&self) {
        let helper = {
            let mut state = self.inner.helper.lock().unwrap_or_else(|p| p.into_inner());
            match &*state {
                crate::exec::HelperState::Ready(h) => {
                    let h = Arc::clone(h);
                    *state = crate::exec::HelperState::NotStarted;
                    Some(h)
                }
                _ => None,
            }
        };
        if let Some(h) = helper {
            h.close().await;
        }
    }
}

#[async_trait]
impl RunnerEnvironment for DockerEnvironment {
    fn backend(&self) -> Backend {
        Backend::Docker
    }

    async fn init(&self) -> Result<()> {
        if self.shut_down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::ShutDown);
        }
        self.config.check_mounts()?;
        container::ensure_volumes(&self.inner.engine, &self.config).await?;
        let tunnel = self.tunnels_wanted().await?;
        // Taken before anything is made: a port in use is an error of its own.
        let listeners = match tunnel {
            true => self.bind_ports().await?,
            false => Vec::new(),
        };
        // The project is synced when the engine is known not to see it, or found so.
        let mut synced = self.dir.as_deref().is_some_and(|d| {
            crate::sees::remembered(self.inner.engine.endpoint(), d) == Some(false)
        });
        let Made { id, helper_at } = loop {
            let config = self.config_for(synced);
            // A container whose ports are tunnelled is made without published ports.
            let hash = match tunnel {
                true => format!("{}-tunnelled", config.hash()),
                false => config.hash(),
            };
            // The common case costs one create and one start; only a name conflict
            // makes us look at the existing container.
            match self.create_and_start(&config, &hash, tunnel).await {
                Ok(made) => break made,
                Err(CreateError::NameTaken) => {
                    match self.reuse_or_replace(&config, &hash, tunnel).await {
                        Ok(made) => break made,
                        Err(e) if !synced && self.is_project_not_seen(&e) => synced = true,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(CreateError::Docker(e)) if !synced && self.is_project_not_seen(&e) => {
                    synced = true;
                }
                Err(CreateError::Docker(e)) => return Err(e.into()),
            }
        };
        // The container's environment: the image's, then ours (as the engine builds it).
        let env = self
            .image_env
            .iter()
            .chain(&self.config.env)
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        // Claimed before anything else may sweep: a reused container's labels name
        // its first owner, the claim names us.
        if let Err(e) = crate::names::claims::claim(&self.container_name) {
            tracing::warn!(container = %self.container_name, error = %e, "failed to claim the container");
        }
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
        self.start_helper(&id, helper_at);
        *self.inner.running.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Running::new(id.clone(), env));
        self.serve_ports(listeners)?;
        if synced {
            self.start_sync(&id).await?;
        }
        Ok(())
    }

    async fn new_process(&self, bin: &str, args: &[&str]) -> Result<Box<dyn Proc>> {
        Ok(Box::new(self.docker_process(bin, args)?))
    }

    /// Stops every exec and the container (it can be started again by `init`).
    async fn stop(&self) -> Result<()> {
        // What a tunnelled connection's far side sent before its server ended still
        // reaches the client, before the processes that carry it are stopped (runner
        // saw `nc` exit before the helper had carried its answer, and the answer was
        // lost).
        let tunnels = std::mem::take(&mut *self.tunnels.lock().unwrap_or_else(|p| p.into_inner()));
        let deadline = tokio::time::Instant::now() + TUNNEL_DRAIN;
        for tunnel in tunnels {
            tunnel
                .finish(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await;
        }
        self.end_sync().await;
        self.stop_execs().await?;
        self.close_helper().await;
        if let Some(r) = self.inner.running() {
            let grace = self.grace.as_secs_f64().ceil() as i32;
            let _ = self.inner.engine.stop_container(&r.id, Some(grace)).await;
        }
        self.finish_logs().await;
        *self.inner.running.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    /// Stops every exec and removes the container. Idempotent.
    async fn shutdown(&self) -> Result<()> {
        self.shut_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.tunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.end_sync().await;
        let stopped = self.stop_execs().await;
        self.close_helper().await;
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // What `init` made, stopped by `stop` or not, or is still making (a cancelled
        // `init` whose create request the engine is answering): removed.
        let _created = self.creating.lock().await;
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(id) = known {
            if container::remove(&self.inner.engine, &id).await.is_err() {
                // A helper still being copied in writes into the container's
                // filesystem, and overlay2 refuses the removal under it ("failed to
                // remove root filesystem: directory not empty"): once the upload
                // settled (within its own deadline), once more.
                let _ = tokio::time::timeout(
                    crate::helper::READY_DEADLINE,
                    self.inner.settled_helper(),
                )
                .await;
                container::remove(&self.inner.engine, &id).await?;
            }
            self.known.lock().unwrap_or_else(|p| p.into_inner()).take();
            crate::names::claims::release(&self.container_name);
        }
        self.finish_logs().await;
        stopped
    }

    /// Checks `bin` inside the container (`command -v`).
    async fn with_binary(&self, bin: &str) -> Result<()> {
        let mut p = self
            .new_process("sh", &["-c", "command -v \"$0\"", bin])
            .await?;
        p.with_output(Arc::new(runner_core::NullSink));
        if p.run().await?.success() {
            Ok(())
        } else {
            Err(Error::NotFound {
                bin: bin.to_string(),
                searched: Some(format!("container {}", self.container_name)),
            })
        }
    }

    fn with_env_vars(&mut self, vars: Vec<EnvironmentVariable>) {
        self.config.env.extend(vars.iter().map(|v| v.to_string()));
        self.layers.set_all(vars);
    }
}
