//! A preferred Docker backend whose engine does not answer: the companion passes the
//! backend's typed error through, so a host can tell "engine down" from other
//! failures. (Its own test binary: it points `DOCKER_HOST` at a socket nobody serves.)
#![cfg(feature = "docker")]

use runner_companion::{new_companion_runner, CompanionOpts};
use runner_core::Backend;
use runner_docker::DockerError;

#[tokio::test]
async fn an_engine_that_is_down_is_a_typed_docker_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-engine.sock");
    // SAFETY of the test: the only test in this binary, set before any thread reads it.
    std::env::set_var("DOCKER_HOST", format!("unix://{}", socket.display()));
    let opts = CompanionOpts {
        name: "engine-down".into(),
        source_dir: dir.path().to_path_buf(),
        image: Some("busybox:latest".into()),
        preferred_backend: Some(Backend::Docker),
        user: None,
    };
    let err = new_companion_runner(opts).await.unwrap_err();
    assert!(
        matches!(
            err.downcast_backend::<DockerError>(),
            Some(DockerError::EngineDown { .. })
        ),
        "{}",
        err.chain()
    );
    // The chain says what was tried and why it failed, each once.
    let chain = err.chain();
    assert!(chain.contains("not reachable"), "{chain}");
    assert!(
        chain.contains("no-engine.sock") || chain.contains("No such file"),
        "{chain}"
    );
}
