//! Pulls from a real registry that needs a login (Debian's `docker-registry` with
//! htpasswd on 127.0.0.1), with the user's credentials found as the docker CLI finds
//! them: none (a typed `Unauthorized` naming the registry), `auths` in
//! `config.json`, a wrong password, and a credential helper (`credHelpers`).
//! Its own test binary, one test: it sets the process's environment.

use std::time::Duration;

use runner_docker::{connect, get_image_if_not_present, image_exists, DockerError, LayerPhase};
use runner_tests::registry::{LocalRegistry, PASSWORD, USER};

/// Asserts `err` is the registry `addr` refusing, with or without credentials sent.
fn refused(err: &DockerError, addr: &str, had: bool) {
    match err {
        DockerError::Unauthorized {
            registry,
            had_credentials,
            ..
        } => assert_eq!(
            (registry.as_str(), *had_credentials),
            (addr, had),
            "{err:?}"
        ),
        other => panic!("not Unauthorized: {other:?}"),
    }
}

/// Writes an executable script.
fn script(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(path, perms).unwrap();
}

#[tokio::test]
async fn pulls_use_the_users_registry_login() {
    let engine = runner_docker::docker_engine_running(Duration::from_secs(3)).await;
    let unavailable = LocalRegistry::unavailable();
    if !runner_core::testing::engine_gate(
        &format!(
            "a Docker engine and a local registry{}",
            unavailable
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default()
        ),
        engine && unavailable.is_none(),
    ) {
        return;
    }
    std::env::remove_var("DOCKER_HOST");
    std::env::remove_var("DOCKER_CONTEXT");
    let registry = LocalRegistry::start().unwrap();
    let image = registry.push_layered_image("creds", 2, 64 * 1024).unwrap();
    let docker = connect().await.unwrap();
    assert!(!image_exists(&docker, &image).await.unwrap());

    // No credentials (no config.json at all, or none for this registry): refused,
    // typed, naming the registry.
    let no_file = registry.dir().join("no-config");
    std::fs::create_dir_all(&no_file).unwrap();
    for config in [no_file, registry.docker_config("none", "{}")] {
        std::env::set_var("DOCKER_CONFIG", &config);
        let err = get_image_if_not_present(&docker, &image, |_| {})
            .await
            .unwrap_err();
        refused(&err, &registry.addr, false);
    }
    // A wrong password: refused, and it says the credentials were refused.
    let wrong = registry.docker_config("wrong", &registry.auths_json("not-the-password"));
    std::env::set_var("DOCKER_CONFIG", &wrong);
    let err = get_image_if_not_present(&docker, &image, |_| {})
        .await
        .unwrap_err();
    refused(&err, &registry.addr, true);
    assert!(err.to_string().contains("were refused"), "{err}");

    // `auths` in config.json: pulled, layer by layer.
    let auths = registry.docker_config("auths", &registry.auths_json(PASSWORD));
    std::env::set_var("DOCKER_CONFIG", &auths);
    let mut last = None;
    get_image_if_not_present(&docker, &image, |p| last = Some(p.clone()))
        .await
        .unwrap();
    assert!(image_exists(&docker, &image).await.unwrap());
    let last = last.unwrap();
    let pulled: Vec<_> = last
        .layers
        .iter()
        .filter(|l| l.phase == LayerPhase::Complete)
        .collect();
    assert!(pulled.len() >= 2, "{last:?}");
    registry.remove_local(&image);

    // A credential helper named for this registry in `credHelpers`.
    let bin = registry.dir().join("helper-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-runnertest");
    let asked = registry.dir().join("helper-asked");
    script(
        &helper,
        &format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\ncat > '{}'\n\
             printf '{{\"ServerURL\":\"{}\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}'\n",
            asked.display(),
            registry.addr
        ),
    );
    let helpers = registry.docker_config(
        "helpers",
        &format!(r#"{{"credHelpers":{{"{}":"runnertest"}}}}"#, registry.addr),
    );
    std::env::set_var("DOCKER_CONFIG", &helpers);
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::set_var("PATH", format!("{}:{path}", bin.display()));
    get_image_if_not_present(&docker, &image, |_| {})
        .await
        .unwrap();
    assert!(image_exists(&docker, &image).await.unwrap());
    assert_eq!(
        std::fs::read_to_string(&asked).unwrap().trim(),
        registry.addr,
        "the helper was asked for this registry"
    );
    registry.remove_local(&image);

    // The same helper as the store for every registry (`credsStore`).
    std::fs::remove_file(&asked).unwrap();
    let store = registry.docker_config("store", r#"{"credsStore":"runnertest"}"#);
    std::env::set_var("DOCKER_CONFIG", &store);
    get_image_if_not_present(&docker, &image, |_| {})
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&asked).unwrap().trim(),
        registry.addr
    );
    registry.remove_local(&image);

    // A store that has nothing for this registry (it reads the request, says so and
    // fails, as docker-credential-* helpers do): an anonymous pull, refused.
    script(
        &bin.join("docker-credential-empty"),
        "#!/bin/sh\ncat >/dev/null\necho 'credentials not found in native keychain'\nexit 1\n",
    );
    let empty = registry.docker_config("empty", r#"{"credsStore":"empty"}"#);
    std::env::set_var("DOCKER_CONFIG", &empty);
    let err = get_image_if_not_present(&docker, &image, |_| {})
        .await
        .unwrap_err();
    refused(&err, &registry.addr, false);
    // A helper that fails otherwise is an error naming the registry, the helper and
    // what it said.
    script(
        &bin.join("docker-credential-broken"),
        "#!/bin/sh\ncat >/dev/null\necho 'the keychain is locked' >&2\nexit 3\n",
    );
    let broken = registry.docker_config("broken", r#"{"credsStore":"broken"}"#);
    std::env::set_var("DOCKER_CONFIG", &broken);
    match get_image_if_not_present(&docker, &image, |_| {}).await {
        Err(DockerError::CredentialHelper {
            registry: named,
            helper,
            reason,
        }) => {
            assert_eq!(named, registry.addr);
            assert_eq!(helper, "docker-credential-broken");
            assert!(reason.contains("the keychain is locked"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    std::env::set_var("PATH", path);
    std::env::remove_var("DOCKER_CONFIG");
}
