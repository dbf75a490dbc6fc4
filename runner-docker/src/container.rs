//! The container itself: its configuration (and the hash a reused container must
//! match), labels, the body the engine is asked to create, typed start failures, and
//! removal. `environment.rs` orchestrates these; this file imports nothing of it.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use sha2::{Digest, Sha256};

use crate::engine::Dialect;
use crate::names::{
    hostname, session_label, LABEL_CONFIG, LABEL_EPHEMERAL, LABEL_HOST, LABEL_NAME, LABEL_OWNER,
    LABEL_SESSION,
};
use crate::{DockerError, Engine};

/// A host port published to a container port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct DockerPortMapping {
    /// The host address (127.0.0.1 unless asked otherwise).
    pub host_ip: String,
    /// The host port.
    pub host_port: u16,
    /// The container port.
    pub container_port: u16,
}

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Config {
    pub(crate) image: String,
    pub(crate) mounts: Vec<(PathBuf, PathBuf)>,
    pub(crate) ports: Vec<DockerPortMapping>,
    pub(crate) env: Vec<String>,
    pub(crate) command: Option<Vec<String>>,
    pub(crate) work_dir: Option<PathBuf>,
    pub(crate) user: Option<String>,
    pub(crate) pause: bool,
    pub(crate) ephemeral: bool,
    /// `Some(argv)` replaces the image's entrypoint, `Some([])` clears it.
    pub(crate) entrypoint: Option<Vec<String>>,
    /// Port mappings made from now on bind all interfaces.
    pub(crate) public_ports: bool,
    /// The platform to run (`linux/amd64`), when not the engine's own.
    pub(crate) platform: Option<String>,
    /// Cache volumes: (the caller's name, where it is mounted).
    pub(crate) volumes: Vec<(String, PathBuf)>,
    /// The root filesystem is mounted read-only.
    pub(crate) read_only: bool,
}

impl Config {
    /// A container of `image` as the image makes it: nothing mounted, published or
    /// changed.
    pub(crate) fn of_image(image: &str) -> Config {
        Config {
            image: image.to_string(),
            mounts: Vec::new(),
            ports: Vec::new(),
            env: Vec::new(),
            command: None,
            work_dir: None,
            user: None,
            pause: false,
            ephemeral: false,
            entrypoint: None,
            public_ports: false,
            platform: None,
            read_only: false,
            volumes: Vec::new(),
        }
    }
}

/// The label of the cache volumes runner makes (its value: the caller's name).
pub const LABEL_CACHE: &str = "runner.cache";

/// The Docker name of the cache volume `name`.
pub(crate) fn volume_name(name: &str) -> String {
    format!("runner-cache-{name}")
}

/// A name Docker accepts for a volume: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub(crate) fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Config {
    /// The configuration's hash (`runner.config`): a container is reused only
    /// when it matches.
    pub(crate) fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&json)
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The labels of a container named `name` with this configuration (`hash`).
    fn labels(&self, name: &str, hash: &str) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (LABEL_OWNER.to_string(), "true".to_string()),
            (LABEL_SESSION.to_string(), session_label()),
            (LABEL_NAME.to_string(), name.to_string()),
            (LABEL_HOST.to_string(), hostname()),
            (LABEL_CONFIG.to_string(), hash.to_string()),
        ]);
        if self.ephemeral {
            labels.insert(LABEL_EPHEMERAL.to_string(), "true".to_string());
        }
        labels
    }

    /// What the engine is asked to create for the environment `name`.
    pub(crate) fn create_body(&self, name: &str, hash: &str) -> ContainerCreateBody {
        let binds = self
            .mounts
            .iter()
            .map(|(h, t)| format!("{}:{}", h.display(), t.display()))
            .chain(
                self.volumes
                    .iter()
                    .map(|(name, t)| format!("{}:{}", volume_name(name), t.display())),
            )
            .collect();
        let port_bindings = self
            .ports
            .iter()
            .map(|p| {
                (
                    format!("{}/tcp", p.container_port),
                    Some(vec![PortBinding {
                        host_ip: Some(p.host_ip.clone()),
                        host_port: Some(p.host_port.to_string()),
                    }]),
                )
            })
            .collect();
        let cmd = if self.pause {
            Some(vec!["sleep".to_string(), "infinity".to_string()])
        } else {
            self.command.clone()
        };
        // Docker 20.10 ignores a binding for a port the container does not expose.
        let exposed_ports = self
            .ports
            .iter()
            .map(|p| format!("{}/tcp", p.container_port))
            .collect();
        ContainerCreateBody {
            image: Some(self.image.clone()),
            exposed_ports: Some(exposed_ports),
            cmd,
            env: Some(self.env.clone()),
            labels: Some(self.labels(name, hash)),
            working_dir: self.work_dir.as_ref().map(|d| d.display().to_string()),
            user: self.user.clone(),
            entrypoint: self.entrypoint.clone(),
            host_config: Some(HostConfig {
                binds: Some(binds),
                port_bindings: Some(port_bindings),
                // A paused container's init (`sleep infinity`) reaps no orphan: the
                // engine's init (tini) does, so ended exec trees leave no zombies.
                init: self.pause.then_some(true),
                // An ephemeral container goes when it stops (its helper stops it when
                // its owner is gone, even a SIGKILLed one).
                auto_remove: (self.ephemeral && self.pause).then_some(true),
                readonly_rootfs: self.read_only.then_some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Adds a read-only bind mount of `source` (this machine's directory) at `target`
    /// to `body`: a mount, not a bind, so an engine without that path refuses the
    /// create instead of making an empty directory on its own host.
    pub(crate) fn mount_read_only(
        body: &mut ContainerCreateBody,
        source: &std::path::Path,
        target: &str,
    ) {
        let mount = bollard::models::Mount {
            typ: Some(bollard::models::MountType::BIND),
            source: Some(source.display().to_string()),
            target: Some(target.to_string()),
            read_only: Some(true),
            ..Default::default()
        };
        body.host_config
            .get_or_insert_with(HostConfig::default)
            .mounts
            .get_or_insert_with(Vec::new)
            .push(mount);
    }

    /// A start failure, typed: a published port that is taken becomes `PortInUse`.
    pub(crate) fn start_error(&self, e: crate::engine::Fault) -> DockerError {
        let message = e.message();
        if let Some(user) = &self.user {
            if message.contains("unable to find user")
                || message.contains("no matching entries in passwd")
            {
                return DockerError::NoSuchUser {
                    user: user.clone(),
                    source: e.into_source(),
                };
            }
        }
        let port_taken = message.contains("address already in use")
            || message.contains("port is already allocated");
        if port_taken {
            // The engine names the port in its message; fall back to the first one.
            let port = self
                .ports
                .iter()
                .find(|p| message.contains(&format!(":{}", p.host_port)))
                .or(self.ports.first());
            if let Some(p) = port {
                return DockerError::PortInUse {
                    host_ip: p.host_ip.clone(),
                    host_port: p.host_port,
                    source: std::sync::Arc::new(e.into_source()),
                };
            }
        }
        e.into()
    }

    /// Every mount's host path must exist: Docker would otherwise create an empty
    /// root-owned directory in its place.
    pub(crate) fn check_mounts(&self) -> std::result::Result<(), DockerError> {
        if let Some((name, _)) = self.volumes.iter().find(|(n, _)| !valid_volume_name(n)) {
            return Err(DockerError::InvalidVolumeName(name.clone()));
        }
        match self.mounts.iter().find(|(h, _)| !h.exists()) {
            Some((h, _)) => Err(DockerError::MountSourceMissing(h.clone())),
            None => Ok(()),
        }
    }
}

/// Why creating the container failed.
pub(crate) enum CreateError {
    /// A container by that name exists.
    NameTaken,
    /// Anything else.
    Docker(DockerError),
}

/// Creates the container `name` from `body`; its id. A name that is taken is
/// [`CreateError::NameTaken`] (the caller decides whether to reuse it).
pub(crate) async fn create(
    engine: &Engine,
    name: &str,
    config: &Config,
    body: ContainerCreateBody,
) -> Result<String, CreateError> {
    let unrecorded = |e: std::io::Error, removed: bool| {
        CreateError::Docker(DockerError::Record {
            container: name.to_string(),
            removed,
            source: std::sync::Arc::new(e),
        })
    };
    // A container that could not be recorded could never be proven ours: none is
    // made when the record cannot be written.
    crate::names::created::writable().map_err(|e| unrecorded(e, true))?;
    if let Some(platform) = &config.platform {
        if engine.dialect() == Dialect::Podman {
            image_has_platform(engine, &config.image, platform)
                .await
                .map_err(CreateError::Docker)?;
        }
    }
    match engine
        .create_container(name, config.platform.clone(), body)
        .await
    {
        Ok(id) => match crate::names::created::record(&id, name, engine.endpoint()) {
            Ok(()) => Ok(id),
            // Unrecorded, no sweep could ever prove it ours: undone.
            Err(e) => {
                let removed = engine.remove_container(&id).await.is_ok();
                Err(unrecorded(e, removed))
            }
        },
        Err(e) if e.is_conflict() => Err(CreateError::NameTaken),
        Err(e) if e.is_init_missing() => Err(CreateError::Docker(DockerError::InitUnavailable {
            endpoint: engine.endpoint().to_string(),
            source: e.into_source(),
        })),
        Err(e) => match &config.platform {
            Some(platform) if e.message().contains("platform") => {
                Err(CreateError::Docker(DockerError::PlatformUnavailable {
                    image: config.image.clone(),
                    platform: platform.clone(),
                    found: None,
                    source: Some(e.into_source()),
                }))
            }
            _ => Err(CreateError::Docker(e.into())),
        },
    }
}

/// Whether `image`, as the engine has it, is for `platform` (`os/arch[/variant]`,
/// with the usual aliases: `x86_64` is `amd64`, `aarch64` is `arm64`): for engines
/// that create a container whatever the platform asked for (Podman 4). Docker
/// refuses by itself, knowing every variant its image store holds.
async fn image_has_platform(
    engine: &Engine,
    image: &str,
    platform: &str,
) -> Result<(), DockerError> {
    let inspected = crate::image::inspect(engine, image).await?;
    let arch = |a: &str| match a {
        "x86_64" | "x86-64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        other => other.to_ascii_lowercase(),
    };
    let mut asked = platform.split('/');
    let (os, want_arch, want_variant) = (asked.next(), asked.next(), asked.next());
    let have_os = inspected.os.clone().unwrap_or_default();
    let have_arch = arch(inspected.architecture.as_deref().unwrap_or_default());
    let have_variant = inspected.variant.clone().filter(|v| !v.is_empty());
    let matches = os.is_none_or(|os| os.eq_ignore_ascii_case(&have_os))
        && want_arch.is_none_or(|a| arch(a) == have_arch)
        && match (want_variant, &have_variant) {
            (Some(want), Some(have)) => want.eq_ignore_ascii_case(have),
            _ => true,
        };
    if matches {
        return Ok(());
    }
    let found = [Some(have_os), Some(have_arch), have_variant]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("/");
    Err(DockerError::PlatformUnavailable {
        image: image.to_string(),
        platform: platform.to_string(),
        found: Some(found),
        source: None,
    })
}

/// Creates the cache volumes of `config` that do not exist yet, labelled as ours
/// (`runner.owner`, [`LABEL_CACHE`]); existing ones are kept with their contents.
pub(crate) async fn ensure_volumes(engine: &Engine, config: &Config) -> Result<(), DockerError> {
    for (name, _) in &config.volumes {
        let request = bollard::models::VolumeCreateRequest {
            name: Some(volume_name(name)),
            labels: Some(HashMap::from([
                (LABEL_OWNER.to_string(), "true".to_string()),
                (LABEL_CACHE.to_string(), name.clone()),
            ])),
            ..Default::default()
        };
        engine.create_volume(request).await?;
    }
    Ok(())
}

/// Whether the engine can give a container the init runner asks for when it pauses
/// one ([`DockerError::InitUnavailable`] when it cannot): a container is made from an
/// image the engine has, labelled, recorded and removed unstarted. The image used;
/// `None` when the engine has no image to try with.
pub async fn check_init(engine: &Engine) -> Result<Option<String>, DockerError> {
    let Some(image) = engine.any_image().await? else {
        return Ok(None);
    };
    let config = Config {
        pause: true,
        ephemeral: true,
        ..Config::of_image(&image)
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name =
        crate::names::container_name(&format!("init-check-{}-{nanos}", std::process::id()), None);
    let body = config.create_body(&name, "init-check");
    match create(engine, &name, &config, body).await {
        Ok(id) => remove(engine, &id).await.map(|()| Some(image)),
        Err(CreateError::Docker(e)) => Err(e),
        Err(CreateError::NameTaken) => Err(DockerError::unexpected(
            "check the engine's init",
            "a container of that name exists",
        )),
    }
}

/// Removes container `id` with its anonymous volumes; one that is gone or already
/// being removed is not an error.
pub(crate) async fn remove(engine: &Engine, id: &str) -> Result<(), DockerError> {
    match engine.remove_container(id).await {
        Ok(()) => {}
        // Gone, or already being removed by someone else.
        Err(e) if e.is_missing() || e.is_conflict() => {}
        Err(e) => return Err(e.into()),
    }
    crate::names::created::forget(id);
    Ok(())
}
