//! Whether the engine sees this host's files: a bind mount of a directory the engine
//! cannot see gives the container an empty directory (Docker makes one where the path
//! is missing on its own host), silently. Decided by evidence, never by the endpoint's
//! kind (a unix socket can lead into a VM, tcp back to this host): a token file
//! written into the directory here is looked for through the mount, in the created
//! container, before it starts (the engine's archive stat: one request, no process).
//! The answer is remembered per engine and directory for the life of the process.
//! A directory runner cannot write a token into (read-only) is mounted unchecked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{DockerError, Engine};

/// Whether each engine (by endpoint) sees the helper's copy on this machine
/// (`helper::host_copy`), once looked at.
static HELPER_SEEN: Mutex<Option<HashMap<String, bool>>> = Mutex::new(None);

/// Whether engine `endpoint` was seen to see the helper's copy on this machine.
pub(crate) fn helper_seen(endpoint: &str) -> Option<bool> {
    HELPER_SEEN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|m| m.get(endpoint).copied())
}

/// Remembers whether engine `endpoint` sees the helper's copy on this machine.
pub(crate) fn remember_helper(endpoint: &str, seen: bool) {
    HELPER_SEEN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(endpoint.to_string(), seen);
}

/// What each engine (by endpoint) was seen to see, by directory.
static SEEN: Mutex<Option<HashMap<(String, PathBuf), bool>>> = Mutex::new(None);

/// What engine `endpoint` was seen to see of `dir`, if it was looked at.
pub(crate) fn remembered(endpoint: &str, dir: &Path) -> Option<bool> {
    SEEN.lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|m| m.get(&(endpoint.to_string(), dir.to_path_buf())).copied())
}

fn remember(endpoint: &str, dir: &Path, seen: bool) {
    SEEN.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert((endpoint.to_string(), dir.to_path_buf()), seen);
}

/// Checks that created container `id` sees every directory of `mounts` (host path,
/// path in the container): [`DockerError::ProjectNotVisible`] for the first it does
/// not.
pub(crate) async fn check(
    engine: &Engine,
    id: &str,
    mounts: &[(PathBuf, PathBuf)],
) -> Result<(), DockerError> {
    for (host, target) in mounts.iter().filter(|(h, _)| h.is_dir()) {
        let seen = match remembered(engine.endpoint(), host) {
            Some(seen) => seen,
            None => match look(engine, id, host, target).await? {
                Some(seen) => {
                    remember(engine.endpoint(), host, seen);
                    seen
                }
                None => true,
            },
        };
        if !seen {
            return Err(DockerError::ProjectNotVisible {
                dir: host.clone(),
                endpoint: engine.endpoint().to_string(),
            });
        }
    }
    Ok(())
}

/// Whether the container sees the token written into `host` at `target`; `None` when
/// no token could be written.
async fn look(
    engine: &Engine,
    id: &str,
    host: &Path,
    target: &Path,
) -> Result<Option<bool>, DockerError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let name = format!(".runner-sees-{}-{nanos:x}", std::process::id());
    let token = host.join(&name);
    if let Err(e) = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&token)
    {
        tracing::debug!(dir = %host.display(), error = %e, "no token could be written: the mount is not checked");
        return Ok(None);
    }
    let seen = engine.path_exists(id, &target.join(&name)).await;
    let _ = std::fs::remove_file(&token);
    Ok(Some(seen?))
}
