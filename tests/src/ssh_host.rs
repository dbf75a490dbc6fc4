//! A remote Docker host made here: a [`ForeignEngine`] (its own pid, mount and network
//! namespaces) with Debian's OpenSSH server in its namespaces, reached as a remote host
//! is, by the real `ssh` client.
//!
//! The server runs in inetd mode (`sshd -i`), one per connection, started by the
//! client's `ProxyCommand` inside the engine's network and mount namespaces (and a
//! mount namespace of its own, whose empty `/run` holds the server's privilege
//! separation directory): no port, no listener, nothing to stop; each server ends
//! with its connection. The host key, the client key, the known hosts and both
//! configurations are files of the test's own directory, and the client reads only
//! its configuration there (`RUNNER_SSH_COMMAND=ssh -F …`): nothing in the real
//! `$HOME`.
//!
//! Host aliases of the client's configuration, each a way for ssh to fail:
//! [`SshHost::HOST`] works; `runner-test-unknown` has no known host key;
//! `runner-test-changed` a different one; `runner-test-wrongkey` offers a key the
//! server does not accept; `runner-test-nodocker` gets sessions without `docker` on
//! their PATH; `runner-test-down` sessions whose docker points at no engine.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::foreign_engine::ForeignEngine;

/// Why an ssh host cannot be made here, if it cannot.
pub fn unavailable() -> Option<String> {
    if let Some(why) = crate::foreign_engine::unavailable() {
        return Some(why);
    }
    for (program, package) in [
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/bin/ssh", "openssh-client"),
        ("/usr/bin/ssh-keygen", "openssh-client"),
    ] {
        if !Path::new(program).exists() {
            return Some(format!("{program} is not installed (Debian's {package})"));
        }
    }
    None
}

/// Whether a test may use an ssh host: says why not when it cannot be made, and
/// fails instead of skipping when engines are required (`runner_core::testing`).
pub fn gate() -> bool {
    let why = unavailable();
    if let Some(why) = &why {
        eprintln!("ssh host: {why}");
    }
    runner_core::testing::engine_gate("a Docker host over ssh", why.is_none())
}

/// The remote host: an engine in its own namespaces and the ssh server in front of it.
#[derive(Debug)]
pub struct SshHost {
    engine: ForeignEngine,
    dir: PathBuf,
}

impl SshHost {
    /// The alias of the host that works.
    pub const HOST: &'static str = "runner-test-host";

    /// Starts the engine under `dir` and writes the keys and configurations.
    pub fn start(dir: &Path) -> SshHost {
        let engine = ForeignEngine::start(&dir.join("engine"));
        let host = SshHost {
            engine,
            dir: dir.to_path_buf(),
        };
        host.configure();
        host
    }

    /// The engine behind the server.
    pub fn engine(&self) -> &ForeignEngine {
        &self.engine
    }

    /// `DOCKER_HOST` for alias `alias` (as root, the server's only user).
    pub fn docker_host(alias: &str) -> String {
        format!("ssh://root@{alias}")
    }

    /// `RUNNER_SSH_COMMAND`: the real client, reading only this host's configuration.
    pub fn ssh_command(&self) -> String {
        format!("ssh -F {}", self.dir.join("ssh_config").display())
    }

    fn keygen(&self, name: &str) -> String {
        let path = self.dir.join(name);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh-keygen: {out:?}");
        std::fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn configure(&self) {
        let d = &self.dir;
        let host_key = self.keygen("host_key");
        let other_host_key = self.keygen("other_host_key");
        let client_key = self.keygen("client_key");
        self.keygen("stranger_key");
        std::fs::write(d.join("authorized_keys"), format!("{client_key}\n")).unwrap();
        let without_comment =
            |key: &str| key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        std::fs::write(
            d.join("known_hosts"),
            format!(
                "{} {}\nrunner-test-changed {}\nrunner-test-wrongkey {}\nrunner-test-nodocker {}\nrunner-test-down {}\n",
                Self::HOST,
                without_comment(&host_key),
                without_comment(&other_host_key),
                without_comment(&host_key),
                without_comment(&host_key),
                without_comment(&host_key),
            ),
        )
        .unwrap();
        let engine_host = self.engine.host();
        let server = |name: &str, env: &str| {
            let path = d.join(name);
            std::fs::write(
                &path,
                format!(
                    "HostKey {}\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\n\
                     PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nLogLevel ERROR\n\
                     SetEnv DOCKER_CONFIG={} {env}\n",
                    d.join("host_key").display(),
                    d.join("authorized_keys").display(),
                    d.join("remote-docker-config").display(),
                ),
            )
            .unwrap();
            path
        };
        let works = server("sshd_config", &format!("DOCKER_HOST={engine_host}"));
        let no_docker = server(
            "sshd_nodocker_config",
            &format!("DOCKER_HOST={engine_host} PATH=/var/empty"),
        );
        let down = server(
            "sshd_down_config",
            &format!("DOCKER_HOST=unix://{}/nothing.sock", d.display()),
        );
        let proxy = |config: &Path| {
            format!(
                "nsenter --target {} --net --mount -- unshare --mount -- sh -c \
                 'mount -t tmpfs none /run && mkdir -m 755 /run/sshd && exec /usr/sbin/sshd -i -f {}'",
                self.engine.dockerd_pid(),
                config.display()
            )
        };
        let entry = |alias: &str, key: &str, config: &Path| {
            format!(
                "Host {alias}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
                 UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  \
                 StrictHostKeyChecking yes\n  ProxyCommand {}\n",
                d.join(key).display(),
                d.join("known_hosts").display(),
                proxy(config)
            )
        };
        let config = [
            entry(Self::HOST, "client_key", &works),
            entry("runner-test-unknown", "client_key", &works),
            entry("runner-test-changed", "client_key", &works),
            entry("runner-test-wrongkey", "stranger_key", &works),
            entry("runner-test-nodocker", "client_key", &no_docker),
            entry("runner-test-down", "client_key", &down),
        ]
        .concat();
        std::fs::write(d.join("ssh_config"), config).unwrap();
    }
}

/// This host's processes whose command line names `path` (the ssh clients of a
/// host's configuration, their proxies and servers): pid and command line each.
pub fn processes_naming(path: &Path) -> Vec<(u32, String)> {
    let needle = path.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then_some((pid, cmdline))
        })
        .collect()
}
