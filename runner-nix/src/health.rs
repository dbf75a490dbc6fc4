//! "nix is installed but cannot build": recognising the setups in which every build
//! fails, and saying which one and how to fix it.
//!
//! Three setups account for what users hit: a single-user (root) nix whose
//! `build-users-group` names a group that does not exist (Debian's `nix-bin` defaults
//! to `nixbld` and creates no such group), a multi-user nix whose daemon socket is
//! missing (the daemon is not running), and a nix too old to know flakes. They are
//! recognised twice: before anything runs, from nix's resolved configuration
//! ([`check_nix_can_build`], used by `runner doctor`), and after a failed evaluation,
//! from what nix printed ([`diagnose_stderr`]), so the error names the cause instead
//! of only carrying nix's words.

use std::path::{Path, PathBuf};

/// The daemon socket of a multi-user nix.
pub const DAEMON_SOCKET: &str = "/nix/var/nix/daemon-socket/socket";

/// Why an installed nix cannot build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CannotBuild {
    /// `build-users-group` names a group that does not exist.
    #[error(
        "its build-users-group `{group}` does not exist (fix: as root, add \
         `build-users-group =` to /etc/nix/nix.conf for a single-user install, or create \
         the group and its build users: groupadd -r {group}; useradd -r -g {group} -G \
         {group} -d /var/empty -s /usr/sbin/nologin {group}1)"
    )]
    NoBuildUsersGroup {
        /// The group nix asks for.
        group: String,
    },
    /// The store is the daemon's, and its socket is missing.
    #[error(
        "it is set up for a nix daemon but `{}` does not exist (fix: start the daemon, \
         e.g. `systemctl start nix-daemon` or `nix-daemon &` as root, or unset \
         NIX_REMOTE for a single-user install)", .socket.display()
    )]
    NoDaemon {
        /// The socket nix tried.
        socket: PathBuf,
    },
    /// This nix does not know the `flakes` or `nix-command` feature (older than 2.4).
    #[error(
        "it does not support flakes (fix: install nix 2.4 or later; runner enables the \
         `nix-command flakes` features itself)"
    )]
    FlakesUnsupported,
}

/// Recognises a setup problem in what a failed nix invocation printed.
pub fn diagnose_stderr(stderr: &str) -> Option<CannotBuild> {
    for line in stderr.lines() {
        if let Some(rest) = line.split("the group '").nth(1) {
            if line.contains("specified in 'build-users-group' does not exist") {
                let group = rest.split('\'').next().unwrap_or_default().to_string();
                return Some(CannotBuild::NoBuildUsersGroup { group });
            }
        }
        if line.contains("cannot connect to socket at '") {
            let socket = line
                .split("cannot connect to socket at '")
                .nth(1)
                .and_then(|r| r.split('\'').next())
                .unwrap_or(DAEMON_SOCKET);
            return Some(CannotBuild::NoDaemon {
                socket: PathBuf::from(socket),
            });
        }
        if line.contains("unknown experimental feature 'flakes'")
            || line.contains("unknown experimental feature 'nix-command'")
            || (line.contains("experimental Nix feature 'flakes' is disabled"))
        {
            return Some(CannotBuild::FlakesUnsupported);
        }
    }
    None
}

/// Checks, from nix's resolved configuration and the machine, that `nix` can build:
/// the flakes features are known, a daemon store has its socket, and a local store's
/// build users group exists. Runs `nix show-config` once, with `options` passed as
/// `--option NAME VALUE` (as [`NixEnvironment::with_nix_option`] passes them).
///
/// [`NixEnvironment::with_nix_option`]: crate::NixEnvironment::with_nix_option
pub async fn check_nix_can_build(
    nix: &Path,
    options: &[(String, String)],
) -> Result<(), CannotBuild> {
    let mut cmd = tokio::process::Command::new(nix);
    cmd.args(["--extra-experimental-features", "nix-command flakes"]);
    for (k, v) in options {
        cmd.args(["--option", k, v]);
    }
    let out = cmd.arg("show-config").kill_on_drop(true).output().await;
    let Ok(out) = out else {
        // Not even runnable: the caller reports nix's absence its own way.
        return Ok(());
    };
    if !out.status.success() {
        return match diagnose_stderr(&String::from_utf8_lossy(&out.stderr)) {
            Some(reason) => Err(reason),
            None => Ok(()),
        };
    }
    let config = String::from_utf8_lossy(&out.stdout);
    let setting = |name: &str| {
        config.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let store = std::env::var("NIX_REMOTE")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| setting("store"))
        .unwrap_or_else(|| "auto".into());
    let socket = Path::new(DAEMON_SOCKET);
    let daemon = match store.as_str() {
        "daemon" | "unix" => true,
        s if s.starts_with("unix://") => true,
        // `auto`: a local store when this user may write it, else the daemon.
        "auto" | "local" => store == "auto" && !store_writable(),
        _ => false,
    };
    if daemon {
        if !socket.exists() {
            return Err(CannotBuild::NoDaemon {
                socket: socket.to_path_buf(),
            });
        }
        return Ok(());
    }
    match setting("build-users-group") {
        Some(group) if !group.is_empty() && !group_exists(&group) && is_root() => {
            Err(CannotBuild::NoBuildUsersGroup { group })
        }
        _ => Ok(()),
    }
}

fn store_writable() -> bool {
    nix::unistd::access("/nix/var/nix", nix::unistd::AccessFlags::W_OK).is_ok()
        || (!Path::new("/nix/var/nix").exists() && is_root())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn group_exists(name: &str) -> bool {
    matches!(nix::unistd::Group::from_name(name), Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_words_are_recognised() {
        let e = "warning: the group 'nixbld' specified in 'build-users-group' does not exist\n\
                 error: the group 'nixbld' specified in 'build-users-group' does not exist";
        assert_eq!(
            diagnose_stderr(e),
            Some(CannotBuild::NoBuildUsersGroup {
                group: "nixbld".into()
            })
        );
        let e = "error: cannot connect to socket at '/nix/var/nix/daemon-socket/socket': No such file or directory";
        assert_eq!(
            diagnose_stderr(e),
            Some(CannotBuild::NoDaemon {
                socket: DAEMON_SOCKET.into()
            })
        );
        let e = "error: experimental Nix feature 'flakes' is disabled; use '--extra-experimental-features flakes' to override";
        assert_eq!(diagnose_stderr(e), Some(CannotBuild::FlakesUnsupported));
        assert_eq!(diagnose_stderr("error: attribute 'x' missing"), None);
    }
}
