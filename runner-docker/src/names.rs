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

/// A valid Docker container name for any logical name: `runner-` followed by the name
/// with every character outside `[a-zA-Z0-9_.-]` replaced by `-`, at most 128 chars.
///
/// ```
/// assert_eq!(runner_docker::container_name("lsp go/1.22 ü"), "runner-lsp-go-1.22--");
/// ```
pub fn container_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut out = format!("runner-{cleaned}");
    out.truncate(128);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid() {
        assert_eq!(container_name("simple"), "runner-simple");
        assert_eq!(container_name(""), "runner-");
        let long = container_name(&"x".repeat(500));
        assert_eq!(long.len(), 128);
        assert!(container_name("a b/c:d@e")
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
    }
}
