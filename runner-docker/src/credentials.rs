//! Registry credentials, found as the docker CLI finds them: `credHelpers` for the
//! registry, then `auths` in `$DOCKER_CONFIG/config.json` (default `~/.docker`), then
//! the `credsStore` helper (`docker-credential-<name> get`). Read with the
//! `docker_credential` crate.

use std::sync::Arc;

use bollard::auth::DockerCredentials;

use crate::DockerError;

/// Docker Hub's key in `config.json` and its credential helpers.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// The registry an image reference pulls from, as the docker CLI reads it: the first
/// path component when it looks like a host (`.` or `:` in it, or `localhost`),
/// otherwise Docker Hub (`docker.io`).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first.to_string(),
        _ => "docker.io".to_string(),
    }
}

/// The key `config.json` and credential helpers know `registry` by.
fn config_key(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
        other => other,
    }
}

/// The user's credentials for `registry`, or `None` when none are configured (then
/// the pull is anonymous, as with the docker CLI). A helper that fails otherwise
/// than "not found", or an unreadable `config.json`, is an error naming the registry.
pub(crate) async fn credentials_for(
    registry: &str,
) -> Result<Option<DockerCredentials>, DockerError> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    let key = config_key(registry).to_string();
    // No config.json is no credentials (the crate calls that a read error).
    let Some(config) = crate::endpoint::config_dir().map(|d| d.join("config.json")) else {
        return Ok(None);
    };
    if !config.exists() {
        return Ok(None);
    }
    let lookup = {
        let key = key.clone();
        tokio::task::spawn_blocking(move || {
            // Never blocks on a FIFO or a device (`read_config`).
            let text = crate::endpoint::read_config(&config).map_err(|_| E::ConfigReadError)?;
            docker_credential::get_credential_from_reader(text.as_bytes(), &key)
        })
    };
    let found = match lookup.await {
        Ok(found) => found,
        Err(join) => {
            return Err(DockerError::unexpected(
                "read registry credentials",
                join.to_string(),
            ))
        }
    };
    let credentials = match found {
        Ok(DockerCredential::UsernamePassword(username, password)) => DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress: Some(key),
            ..Default::default()
        },
        Ok(DockerCredential::IdentityToken(token)) => DockerCredentials {
            identitytoken: Some(token),
            serveraddress: Some(key),
            ..Default::default()
        },
        Err(E::NoCredentialConfigured) => return Ok(None),
        // A store that has nothing for this registry says so on stdout and fails.
        Err(E::HelperFailure { stdout, .. })
            if stdout
                .to_ascii_lowercase()
                .contains("credentials not found") =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(DockerError::Credentials {
                registry: registry.to_string(),
                source: Arc::new(e),
            })
        }
    };
    Ok(Some(credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_of_references() {
        for (image, registry) in [
            ("busybox", "docker.io"),
            ("library/busybox:1.36", "docker.io"),
            ("ghcr.io/owner/image:tag", "ghcr.io"),
            ("127.0.0.1:5000/runner/layers:latest", "127.0.0.1:5000"),
            ("localhost/image", "localhost"),
            ("user/image@sha256:abcd", "docker.io"),
        ] {
            assert_eq!(registry_of(image), registry, "{image}");
        }
        assert_eq!(config_key("docker.io"), DOCKER_HUB);
        assert_eq!(config_key("ghcr.io"), "ghcr.io");
    }
}
