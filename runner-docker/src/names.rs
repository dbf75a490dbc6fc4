//! Container names and labels.

/// Always `true` on containers we create.
pub const LABEL_OWNER: &str = "runner.owner";
/// `<owner pid>-<owner start time>` of the process that created the container.
pub const LABEL_SESSION: &str = "runner.session";

/// The value of [`LABEL_SESSION`] for containers this process creates: its owner
/// identity, `<pid>-<start time>` (empty start time if the process table cannot say).
pub(crate) fn session_label() -> String {
    match runner_core::os::owner_identity() {
        Ok(me) => format!("{}-{}", me.pid, me.start_time),
        Err(_) => format!("{}-", std::process::id()),
    }
}

/// True when `session` (a [`LABEL_SESSION`] value) names a live process.
pub(crate) fn owner_alive(session: &str) -> bool {
    let Some((pid, start)) = session.split_once('-') else {
        return false;
    };
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
