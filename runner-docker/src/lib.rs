//! The Docker backend: one labelled container per environment, processes as `exec`s.
//!
//! Talks to the engine with bollard, found as the docker CLI finds it
//! ([`resolve_endpoint`]: `DOCKER_HOST` over unix, tcp or TLS, contexts, well-known
//! sockets), with the API version negotiated (Docker 20.10 and newer). Pulls use the
//! user's registry login ([`registry_of`], [`get_image_if_not_present`]). See
//! [`DockerEnvironment`] and [`DockerProc`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod container;
mod control;
mod credentials;
mod endpoint;
mod engine;
mod environment;
mod error;
mod exec;
mod helper;
mod host_view;
mod image;
mod lsp;
mod names;
mod outcome;
mod sees;
mod ssh;
mod stats;
mod stream;
mod sweep;

pub use container::LABEL_CACHE;
pub use container::{check_init, DockerPortMapping};
pub use control::DockerRunning;
pub use credentials::registry_of;
pub use endpoint::{resolve_endpoint, Endpoint, EndpointSource, TlsMaterial, UnknownContext};
pub use engine::{
    connect, docker_engine_running, forget_negotiated_version, Engine, EngineDescription,
};
pub use environment::DockerEnvironment;
pub use error::{DockerError, EngineError, Unreachable};
pub use exec::DockerProc;
pub use helper::embedded_helper;
pub use image::{
    get_image_if_not_present, image_exists, image_id, LayerPhase, LayerProgress, PullProgress,
};
pub use names::{
    container_name, LABEL_CONFIG, LABEL_EPHEMERAL, LABEL_HOST, LABEL_NAME, LABEL_OWNER,
    LABEL_SESSION,
};
pub use ssh::SshFailure;
pub use stats::ContainerStats;
pub use sweep::{
    reap_containers, reap_stale_containers, remove_cache_volumes, ContainerSweepReport,
};

/// The contract this crate implements, re-exported: depending on this crate alone is
/// enough to program against it.
pub use runner_core::{
    Backend, CaptureSink, EnvironmentVariable, Error, ExitStatus, Output, OutputSink, Proc,
    ProcOutput, Result, RunnerEnvironment, Signal, Stream,
};

/// `use runner_docker::prelude::*;`: the contract and this backend's environment.
pub mod prelude {
    pub use crate::DockerEnvironment;
    pub use runner_core::prelude::*;
}
