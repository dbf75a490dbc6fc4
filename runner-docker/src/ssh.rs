//! Engines over ssh (`DOCKER_HOST=ssh://[user@]host[:port]`, or a context whose host
//! is one), the way the docker CLI reaches them: every connection to the engine is the
//! user's own `ssh` (their config, agent and known hosts) running
//! `docker system dial-stdio` on the far side, whose stdin and stdout carry the API.
//! The client's connection pool keeps connections open between requests, so a new
//! ssh connection is made only when every open one is busy (an attached exec holds
//! one for as long as it runs).
//!
//! `RUNNER_SSH_COMMAND` (like git's `GIT_SSH_COMMAND`) replaces `ssh` with a command
//! line of the user's (`ssh -F ~/work/ssh_config`); ssh runs with `BatchMode=yes`: a
//! library cannot answer a prompt, so a key that needs a passphrase must be in the
//! agent.
//!
//! An ssh that fails says why on its stderr; [`classify`] reads those words, in this
//! one place, into an [`SshFailure`], remembered per host for the error the caller
//! gets. An ssh process is ended (2 s after its connection closed, if it has not
//! exited by then) and reaped by the task that started it: none outlives its
//! connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::{ChildStdin, ChildStdout, Command};

/// Why an ssh connection to an engine failed, from ssh's own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SshFailure {
    /// No `ssh` program (or `RUNNER_SSH_COMMAND`'s) could be started.
    NotInstalled,
    /// The host's key is not in the known hosts: nothing was sent to it.
    UnknownHostKey,
    /// The host's key differs from the one the known hosts hold for it.
    ChangedHostKey,
    /// The host refused every credential offered.
    AuthenticationRefused,
    /// The host could not be reached (no such name, refused, timed out).
    HostUnreachable,
    /// The host has no `docker` command on the PATH its sessions get.
    NoDockerThere,
    /// The host's docker command cannot reach an engine there.
    RemoteEngineDown,
    /// ssh failed otherwise (its words are in the error's source).
    Other,
}

impl std::fmt::Display for SshFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SshFailure::NotInstalled => {
                "ssh is not installed (install OpenSSH's client, or set RUNNER_SSH_COMMAND)"
            }
            SshFailure::UnknownHostKey => {
                "ssh does not know the host's key (connect once with `ssh` to check and \
                 accept it)"
            }
            SshFailure::ChangedHostKey => {
                "the host's key changed since it was accepted (check why before removing \
                 the old one with `ssh-keygen -R`)"
            }
            SshFailure::AuthenticationRefused => {
                "the host refused authentication (runner's ssh cannot prompt: load the key \
                 into ssh-agent)"
            }
            SshFailure::HostUnreachable => "ssh could not reach the host",
            SshFailure::NoDockerThere => "the host has no `docker` command",
            SshFailure::RemoteEngineDown => "the host's docker cannot reach an engine there",
            SshFailure::Other => "ssh failed",
        })
    }
}

/// Reads ssh's stderr and exit code (`None` when it could not be started or was
/// killed) as a failure; `None` when nothing failed.
pub(crate) fn classify(stderr: &str, code: Option<i32>) -> Option<SshFailure> {
    let has = |words: &str| stderr.contains(words);
    // ssh's own failures (it exits 255) come first: the remote command's words could
    // contain anything.
    if has("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        Some(SshFailure::ChangedHostKey)
    } else if has("Host key verification failed") || has("host key is known for") {
        Some(SshFailure::UnknownHostKey)
    } else if has("Permission denied (") || has("Too many authentication failures") {
        Some(SshFailure::AuthenticationRefused)
    } else if code == Some(255)
        && (has("Could not resolve hostname")
            || has("Connection refused")
            || has("Connection timed out")
            || has("No route to host")
            || has("Network is unreachable")
            || has("Connection closed by")
            || has("kex_exchange_identification"))
    {
        Some(SshFailure::HostUnreachable)
    } else if code == Some(127) || has("docker: command not found") || has("docker: not found") {
        Some(SshFailure::NoDockerThere)
    } else if has("Cannot connect to the Docker daemon")
        || has("dial unix")
        || has("error during connect")
    {
        Some(SshFailure::RemoteEngineDown)
    } else if code.is_some_and(|c| c != 0) {
        Some(SshFailure::Other)
    } else {
        None
    }
}

/// The last failure of an ssh connection to each host, with ssh's last words.
static FAILURES: Mutex<Option<HashMap<String, (SshFailure, String)>>> = Mutex::new(None);

/// Woken whenever a failure is noted.
static NOTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

fn note_failure(host: &str, failure: SshFailure, words: String) {
    FAILURES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(host.to_string(), (failure, words));
    NOTED.notify_waiters();
}

/// Takes the last failure of an ssh connection to `host`, waiting up to `within` for
/// one that is still being read (an ssh that is exiting).
pub(crate) async fn take_failure(host: &str, within: Duration) -> Option<(SshFailure, String)> {
    let take = || {
        FAILURES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .and_then(|m| m.remove(host))
    };
    let waiting = async {
        loop {
            // Registered before looking, so a failure noted in between wakes it.
            let noted = NOTED.notified();
            tokio::pin!(noted);
            noted.as_mut().enable();
            if let Some(failure) = take() {
                return failure;
            }
            noted.await;
        }
    };
    match tokio::time::timeout(within, waiting).await {
        Ok(failure) => Some(failure),
        Err(_) => take(),
    }
}

/// Where an `ssh://` endpoint leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SshTarget {
    /// The endpoint as given (`ssh://user@host:port`).
    endpoint: String,
    user: Option<String>,
    host: String,
    port: Option<u16>,
}

impl SshTarget {
    /// Parses `ssh://[user@]host[:port]` as the docker CLI does: no path, no password.
    pub(crate) fn parse(endpoint: &str) -> Result<SshTarget, String> {
        let rest = endpoint
            .strip_prefix("ssh://")
            .ok_or_else(|| format!("`{endpoint}` is not an ssh:// address"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(format!(
                "`{endpoint}` has a path after the host: an ssh endpoint is \
                 ssh://[user@]host[:port]"
            ));
        }
        let (user, host_port) = match rest.rsplit_once('@') {
            Some((user, _)) if user.contains(':') => {
                return Err(format!(
                    "`{endpoint}` carries a password: ssh endpoints take keys (ssh-agent) only"
                ));
            }
            Some((user, hp)) => (Some(user.to_string()), hp),
            None => (None, rest),
        };
        // `[v6]:port`, `[v6]`, `host:port`, `host`.
        let (host, port) = match host_port.strip_prefix('[') {
            Some(bracketed) => match bracketed.split_once(']') {
                Some((host, "")) => (host, None),
                Some((host, port)) => (host, Some(port.strip_prefix(':').unwrap_or(port))),
                None => return Err(format!("`{endpoint}` has an unclosed `[`")),
            },
            None => match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        let port = port
            .map(|p| p.parse::<u16>())
            .transpose()
            .map_err(|_| format!("`{endpoint}` has a port that is not a number"))?;
        if host.is_empty() || host.starts_with('-') {
            return Err(format!("`{endpoint}` names no host"));
        }
        Ok(SshTarget {
            endpoint: endpoint.to_string(),
            user: user.filter(|u| !u.is_empty()),
            host: host.to_string(),
            port,
        })
    }

    /// The command that opens one connection to the engine: the user's ssh (or
    /// `RUNNER_SSH_COMMAND`, split on whitespace) running `docker system dial-stdio`.
    fn command(&self) -> Command {
        let custom = std::env::var("RUNNER_SSH_COMMAND").ok();
        let mut words: Vec<String> = custom
            .as_deref()
            .map(|c| c.split_whitespace().map(str::to_string).collect())
            .filter(|w: &Vec<String>| !w.is_empty())
            .unwrap_or_else(|| vec!["ssh".to_string()]);
        let program = words.remove(0);
        let mut cmd = Command::new(program);
        cmd.args(words)
            .args(["-o", "ConnectTimeout=8", "-o", "BatchMode=yes", "-T"]);
        if let Some(user) = &self.user {
            cmd.args(["-l", user]);
        }
        if let Some(port) = self.port {
            cmd.args(["-p", &port.to_string()]);
        }
        cmd.arg("--")
            .arg(&self.host)
            .args(["docker", "system", "dial-stdio"]);
        cmd
    }
}

/// Opens a connection: starts ssh, hands over its stdin and stdout. The engine's
/// client (`engine.rs`) pools what it opens.
#[derive(Debug, Clone)]
pub(crate) struct SshConnector {
    target: Arc<SshTarget>,
}

impl SshConnector {
    /// Connections to `target`.
    pub(crate) fn new(target: SshTarget) -> SshConnector {
        SshConnector {
            target: Arc::new(target),
        }
    }
}

impl tower_service::Service<hyper::Uri> for SshConnector {
    type Response = SshStream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<SshStream>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let target = self.target.clone();
        Box::pin(async move { SshStream::open(&target) })
    }
}

/// One connection: an ssh process's stdin and stdout. Dropping it closes its stdin;
/// the task that owns the process ends it if it has not exited 2 s later.
pub(crate) struct SshStream {
    io: TokioIo<Pipes>,
    /// Dropped with the stream: tells the owning task the connection is closed.
    _closed: tokio::sync::oneshot::Sender<()>,
}

struct Pipes {
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
}

impl SshStream {
    fn open(target: &SshTarget) -> std::io::Result<SshStream> {
        let mut cmd = target.command();
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let failure = match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                        SshFailure::NotInstalled
                    }
                    _ => SshFailure::Other,
                };
                note_failure(&target.endpoint, failure, e.to_string());
                return Err(e);
            }
        };
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(std::io::Error::other("ssh was started without its pipes"));
        };
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        let endpoint = target.endpoint.clone();
        tokio::spawn(async move {
            let mut words = Vec::new();
            let read = async {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if words.len() < 64 * 1024 {
                        words.extend_from_slice(&buf[..n]);
                    }
                }
            };
            // ssh's stderr ends when it exits, or when the connection closed and it
            // is given 2 s to follow.
            let closed_then_grace = async {
                let _ = closed_rx.await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            };
            tokio::select! {
                () = read => {}
                () = closed_then_grace => {}
            }
            let status = match tokio::time::timeout(Duration::from_millis(100), child.wait()).await
            {
                Ok(Ok(status)) => Some(status),
                _ => {
                    let _ = child.kill().await;
                    None
                }
            };
            let words = String::from_utf8_lossy(&words).trim().to_string();
            if let Some(failure) = classify(&words, status.and_then(|s| s.code())) {
                tracing::debug!(%endpoint, %failure, %words, "an ssh connection to the engine failed");
                note_failure(&endpoint, failure, words);
            }
        });
        Ok(SshStream {
            io: TokioIo::new(Pipes {
                stdin: Some(stdin),
                stdout,
            }),
            _closed: closed_tx,
        })
    }
}

impl AsyncRead for Pipes {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pipes {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_write(cx, buf),
            None => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// A half-close (an exec's stdin ended): ssh passes the end on to the engine.
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stdin = None;
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Read for SshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for SshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connection for SshStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_as_the_docker_cli_reads_them() {
        let t = SshTarget::parse("ssh://me@build-box:2222").unwrap();
        assert_eq!(
            (t.user.as_deref(), t.host.as_str(), t.port),
            (Some("me"), "build-box", Some(2222))
        );
        let t = SshTarget::parse("ssh://build-box").unwrap();
        assert_eq!((t.user, t.host.as_str(), t.port), (None, "build-box", None));
        let t = SshTarget::parse("ssh://root@[::1]:22").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", Some(22)));
        for bad in [
            "ssh://",
            "ssh://me:pw@host",
            "ssh://host/path",
            "ssh://host:port",
            "ssh://-oProxyCommand=x",
        ] {
            assert!(SshTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ssh_says_why_in_words_read_here() {
        let cases = [
            ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.", 255, SshFailure::ChangedHostKey),
            ("No ED25519 host key is known for box and you have requested strict checking.\nHost key verification failed.", 255, SshFailure::UnknownHostKey),
            ("root@box: Permission denied (publickey).", 255, SshFailure::AuthenticationRefused),
            ("ssh: Could not resolve hostname nope: Name or service not known", 255, SshFailure::HostUnreachable),
            ("ssh: connect to host box port 22: Connection refused", 255, SshFailure::HostUnreachable),
            ("bash: line 1: docker: command not found", 127, SshFailure::NoDockerThere),
            ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?", 1, SshFailure::RemoteEngineDown),
        ];
        for (words, code, want) in cases {
            assert_eq!(classify(words, Some(code)), Some(want), "{words}");
        }
        assert_eq!(classify("", Some(0)), None);
    }
}
