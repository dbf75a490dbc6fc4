//! Registry credentials, found as the docker CLI finds them: `credHelpers` for the
//! registry, then `auths` in `$DOCKER_CONFIG/config.json` (default `~/.docker`), then
//! the `credsStore` helper (`docker-credential-<name> get`). `auths` are decoded by
//! the `docker_credential` crate; helpers are run here, bounded and ended with their
//! caller.

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

/// How long a credential helper may take to answer (it may ask the user to unlock a
/// keychain) before the pull fails naming it.
const HELPER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// The user's credentials for `registry`, or `None` when none are configured (then
/// the pull is anonymous, as with the docker CLI). A helper that fails otherwise
/// than "not found", does not answer within [`HELPER_DEADLINE`], or an unreadable
/// `config.json`, is an error naming the registry (and the helper).
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
    let read = {
        let config = config.clone();
        // Never blocks on a FIFO or a device (`read_config`), and off the workers.
        tokio::task::spawn_blocking(move || crate::endpoint::read_config(&config))
    };
    let text = match read.await {
        Ok(Ok(text)) => text,
        Ok(Err(_)) => {
            return Err(DockerError::Credentials {
                registry: registry.to_string(),
                source: Arc::new(E::ConfigReadError),
            })
        }
        Err(join) => {
            return Err(DockerError::unexpected(
                "read registry credentials",
                join.to_string(),
            ))
        }
    };
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| DockerError::Credentials {
            registry: registry.to_string(),
            source: Arc::new(E::ConfigReadError),
        })?;
    let helper_of = |field: &str| -> Option<String> {
        let v = json.get(field)?;
        let v = if field == "credHelpers" {
            v.get(&key)?
        } else {
            v
        };
        v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
    };
    // The docker CLI's order: the registry's own helper, then `auths`, then the store.
    if let Some(helper) = helper_of("credHelpers") {
        return ask_helper(registry, &key, &helper).await;
    }
    let auths = serde_json::json!({ "auths": json.get("auths").cloned().unwrap_or_default() });
    let found = docker_credential::get_credential_from_reader(auths.to_string().as_bytes(), &key);
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
        Err(E::NoCredentialConfigured) => match helper_of("credsStore") {
            Some(store) => return ask_helper(registry, &key, &store).await,
            None => return Ok(None),
        },
        Err(e) => {
            return Err(DockerError::Credentials {
                registry: registry.to_string(),
                source: Arc::new(e),
            })
        }
    };
    Ok(Some(credentials))
}

/// A credential helper's process group, killed when the request ends without the
/// helper's exit (timed out, its future dropped): its leader, our child, is not
/// reaped then, so the group's id is still its own. Disarmed (`None`) once reaped.
struct HelperGroup(Option<u32>);

impl Drop for HelperGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// `docker-credential-<helper> get`, given `key` on stdin, as the docker CLI asks it:
/// bounded by [`HELPER_DEADLINE`] and ended with its caller (a dropped future, a
/// cancelled pull, runner ending on a signal): it never outlives the request.
async fn ask_helper(
    registry: &str,
    key: &str,
    helper: &str,
) -> Result<Option<DockerCredentials>, DockerError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let program = format!("docker-credential-{helper}");
    let failed = |reason: String| DockerError::CredentialHelper {
        registry: registry.to_string(),
        helper: program.clone(),
        reason,
    };
    // A group of its own, ended with the request: a helper's children go with it.
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("it could not be started: {e}")))?;
    let mut group = HelperGroup(child.id());
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let ask = async {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(key.as_bytes()).await;
        }
        let read_out = async {
            if let Some(p) = stdout.as_mut() {
                let _ = p.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(p) = stderr.as_mut() {
                let _ = p.read_to_end(&mut err).await;
            }
        };
        let (_, _, status) = tokio::join!(read_out, read_err, child.wait());
        status
    };
    let status = match tokio::time::timeout(HELPER_DEADLINE, ask).await {
        Ok(Ok(status)) => {
            // Reaped: its id is free, the group is not killed by number any more.
            group.0 = None;
            status
        }
        Ok(Err(e)) => return Err(failed(format!("it could not be waited for: {e}"))),
        // The group is killed on the way out (`HelperGroup`).
        Err(_) => {
            return Err(failed(format!(
                "it did not answer within {} s",
                HELPER_DEADLINE.as_secs()
            )))
        }
    };
    let out = std::process::Output {
        status,
        stdout: out,
        stderr: err,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A store that has nothing for this registry says so and fails.
        if stdout
            .to_ascii_lowercase()
            .contains("credentials not found")
        {
            return Ok(None);
        }
        return Err(failed(format!(
            "it failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let answer: serde_json::Value = serde_json::from_str(&stdout)
        .map_err(|e| failed(format!("its answer is not JSON: {e}")))?;
    let field = |k: &str| answer.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let (user, secret) = (field("Username"), field("Secret"));
    Ok(Some(match user.as_deref() {
        // The CLI's convention for an identity token.
        Some("<token>") => DockerCredentials {
            identitytoken: secret,
            serveraddress: Some(key.to_string()),
            ..Default::default()
        },
        _ => DockerCredentials {
            username: user,
            password: secret,
            serveraddress: Some(key.to_string()),
            ..Default::default()
        },
    }))
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
