//! Container names and labels.

/// Always `true` on containers we create.
pub const LABEL_OWNER: &str = "runner.owner";
/// `<owner pid>-<owner start time>-<owner pid namespace>` of the process that created
/// the container (the namespace is left out where there are none).
pub const LABEL_SESSION: &str = "runner.session";

/// The value of [`LABEL_SESSION`] for containers this process creates: its owner
/// identity, `<pid>-<start time>-<pid namespace>` (empty start time if the process
/// table cannot say; no namespace part where there are none).
pub(crate) fn session_label() -> String {
    let ns = runner_core::os::pid_namespace()
        .map(|ns| format!("-{ns}"))
        .unwrap_or_default();
    match runner_core::os::owner_identity() {
        Ok(me) => format!("{}-{}{ns}", me.pid, me.start_time),
        Err(_) => format!("{}-{ns}", std::process::id()),
    }
}

/// True when `session` (a [`LABEL_SESSION`] value) names a live process. An owner of
/// another pid namespace (a runner in a sandbox, with its own pids) cannot be judged
/// from here and counts as alive: its pid means nothing in ours.
pub(crate) fn owner_alive(session: &str) -> bool {
    let mut parts = session.splitn(3, '-');
    let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
        return false;
    };
    if let Some(ns) = parts.next() {
        if ns.parse::<u64>().ok() != runner_core::os::pid_namespace() {
            return true;
        }
    }
    let (Ok(pid), Ok(start)) = (pid.parse::<i32>(), start.parse::<u64>()) else {
        return false;
    };
    runner_core::os::process_is(pid, start)
}

/// This host's name, as [`LABEL_HOST`](crate::LABEL_HOST) records it.
pub(crate) fn hostname() -> String {
    runner_core::os::hostname()
}
/// The logical name the caller gave.
pub const LABEL_NAME: &str = "runner.name";
/// `true` when the container may be removed as soon as it stops.
pub const LABEL_EPHEMERAL: &str = "runner.ephemeral";
/// A hash of the container's configuration; a container is reused only when it matches.
pub const LABEL_CONFIG: &str = "runner.config";
/// The host that created the container.
pub const LABEL_HOST: &str = "runner.host";

/// The Docker name of the container of the environment `name` working in `dir`:
/// `runner-`, the name with every character outside `[a-zA-Z0-9_.-]` replaced by `-`
/// (at most 100 of them), then `-` and 12 hex digits of a hash of the exact name and
/// directory. So the mapping is injective (`adv col` and `adv/col` differ) and two
/// projects using one name get two containers.
///
/// ```
/// let a = runner_docker::container_name("lsp go/1.22 ü", None);
/// assert!(a.starts_with("runner-lsp-go-1.22---"));
/// assert_ne!(a, runner_docker::container_name("lsp go 1.22 ü", None));
/// let here = runner_docker::container_name("lsp", Some(std::path::Path::new("/src/a")));
/// assert_ne!(here, runner_docker::container_name("lsp", Some(std::path::Path::new("/src/b"))));
/// ```
pub fn container_name(name: &str, dir: Option<&std::path::Path>) -> String {
    use sha2::{Digest, Sha256};
    let mut cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    cleaned.truncate(100);
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([0]);
    if let Some(dir) = dir {
        hasher.update(dir.as_os_str().as_encoded_bytes());
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("runner-{cleaned}-{digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_distinct() {
        assert!(container_name("simple", None).starts_with("runner-simple-"));
        assert_eq!(container_name("", None).len(), "runner--".len() + 12);
        let long = container_name(&"x".repeat(500), None);
        assert_eq!(long.len(), "runner-".len() + 100 + 1 + 12);
        for name in ["a b/c:d@e", "adv col", "adv/col"] {
            assert!(container_name(name, None)
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
        }
        assert_ne!(
            container_name("adv col", None),
            container_name("adv/col", None)
        );
    }
}

/// Claims: which live processes use which container. Labels are fixed at create, so
/// a container reused by a later owner still names its first one; each user of a
/// container (its creator included) therefore leaves a claim,
/// `<state dir>/containers/<container name>/<pid>-<start time>`, for as long as it
/// uses the container. The sweep never stops or removes a container that a live
/// owner claims, and removes dead owners' claims.
pub(crate) mod claims {
    use std::path::PathBuf;

    fn dir(container: &str) -> PathBuf {
        runner_reaper::default_state_dir()
            .join("containers")
            .join(container)
    }

    /// Records that this process uses `container`.
    pub(crate) fn claim(container: &str) -> std::io::Result<()> {
        let dir = dir(container);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(super::session_label()), b"")
    }

    /// This process no longer uses `container`.
    pub(crate) fn release(container: &str) {
        let dir = dir(container);
        let _ = std::fs::remove_file(dir.join(super::session_label()));
        let _ = std::fs::remove_dir(dir);
    }

    /// The live processes that claim `container` (their session labels); dead
    /// owners' claims are removed on the way.
    pub(crate) fn live_claimants(container: &str) -> Vec<String> {
        let dir = dir(container);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut live = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if super::owner_alive(&name) {
                live.push(name);
            } else {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        // Removed only when empty.
        let _ = std::fs::remove_dir(&dir);
        live
    }
}

/// Proof of creation: the ids of the containers runner created, one file each,
/// `<state dir>/created/<container id>`, holding the container's name and the engine
/// it was created on. Labels prove nothing (a `docker commit`ed image passes them on
/// to every container made from it, and anyone can write them), so the sweep stops
/// or removes, and an environment reuses or replaces, only a container recorded here:
/// an id is the engine's, made at create, and this directory is the user's own.
/// The record is written right after the create (a create that cannot be recorded is
/// undone) and removed with the container.
pub(crate) mod created {
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    use std::time::SystemTime;

    fn dir() -> PathBuf {
        runner_reaper::default_state_dir().join("created")
    }

    /// A container id as the engine gives it (hex), so never a path.
    fn valid(id: &str) -> bool {
        !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_hexdigit())
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Record {
        name: String,
        engine: String,
    }

    /// Records that this runner created container `id` (named `name`) on `engine`.
    pub(crate) fn record(id: &str, name: &str, engine: &str) -> std::io::Result<()> {
        if !valid(id) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the engine gave the container an id that is not hex: {id:?}"),
            ));
        }
        let dir = dir();
        std::fs::create_dir_all(&dir)?;
        let body = serde_json::to_vec(&Record {
            name: name.to_string(),
            engine: engine.to_string(),
        })
        .map_err(std::io::Error::other)?;
        // Whole or not at all: written aside, then renamed into place.
        let aside = dir.join(format!(".{id}.{}", std::process::id()));
        std::fs::write(&aside, body)?;
        std::fs::rename(&aside, dir.join(id))
    }

    /// Whether a record can be written now (the directory made, a file written and
    /// removed): asked before a create, so that a container is not made that could
    /// not be proven ours.
    pub(crate) fn writable() -> std::io::Result<()> {
        let dir = dir();
        std::fs::create_dir_all(&dir)?;
        tempfile::NamedTempFile::new_in(&dir).map(drop)
    }

    /// True when any container is recorded as created here: without one, a sweep has
    /// nothing it may remove, and need not ask the engine.
    pub(crate) fn any() -> bool {
        std::fs::read_dir(dir()).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| valid(&e.file_name().to_string_lossy())))
        })
    }

    /// Container `id` is gone: its record goes too. True for the one caller whose
    /// unlink took it (of sweeps removing the same container at once, one reports).
    pub(crate) fn forget(id: &str) -> bool {
        valid(id) && std::fs::remove_file(dir().join(id)).is_ok()
    }

    /// True when runner (this user's, with this state directory) created container
    /// `id`: its record is a regular file of ours, not a link.
    pub(crate) fn is_ours(id: &str) -> bool {
        valid(id)
            && std::fs::symlink_metadata(dir().join(id))
                .is_ok_and(|m| m.is_file() && m.uid() == nix::unistd::geteuid().as_raw())
    }

    /// Removes the records of containers on `engine` that are not among `existing`
    /// (the engine's whole list), written before `listed` (a record written since
    /// may be of a container created after the list).
    pub(crate) fn prune(engine: &str, existing: &[String], listed: SystemTime) {
        let Ok(entries) = std::fs::read_dir(dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid(&name) || existing.contains(&name) {
                continue;
            }
            let older = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < listed);
            let on_engine = std::fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
                .is_some_and(|r| r.engine == engine);
            if older && on_engine {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
