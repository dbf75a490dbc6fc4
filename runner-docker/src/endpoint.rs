//! Which engine to talk to, found the way the docker CLI finds it: `DOCKER_HOST`;
//! `DOCKER_CONTEXT`; `currentContext` in `$DOCKER_CONFIG/config.json` (default
//! `~/.docker`), resolved through the context store
//! (`contexts/meta/<sha256 of the name>/meta.json` → `Endpoints.docker.Host`); the
//! default socket; and when that is absent, the well-known sockets of rootless
//! Docker, Docker Desktop, colima, OrbStack and Podman, the first that exists.
//!
//! A tcp endpoint speaks TLS when `DOCKER_TLS_VERIFY` is set (material from
//! `DOCKER_CERT_PATH`, default the config directory) or when its context has TLS
//! material (`contexts/tls/<sha256 of the name>/docker/`); the engine's certificate is
//! always verified against that `ca.pem`.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The default engine socket.
pub(crate) const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Where the engine is and why that one (`runner doctor` prints both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `unix://…`, `tcp://…` or `ssh://[user@]host[:port]`.
    pub host: String,
    /// What chose it.
    pub source: EndpointSource,
    /// The TLS material, for a tcp endpoint that speaks TLS.
    pub tls: Option<TlsMaterial>,
}

/// A directory holding the docker CLI's TLS files: `ca.pem` (the authority the
/// engine's certificate must chain to), `cert.pem` and `key.pem` (the client's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The directory.
    pub dir: PathBuf,
}

impl TlsMaterial {
    /// The certificate authority's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// The client's certificate.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    /// The client's private key.
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

/// What chose an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointSource {
    /// The `DOCKER_HOST` variable.
    DockerHost,
    /// The context the `DOCKER_CONTEXT` variable names.
    DockerContext(String),
    /// The `currentContext` of the docker CLI's `config.json`.
    CurrentContext(String),
    /// The default socket, `/var/run/docker.sock`.
    Default,
    /// A well-known socket of another engine (rootless Docker, Docker Desktop,
    /// colima, OrbStack, Podman), found because the default socket is absent.
    WellKnown(&'static str),
    /// Given by the caller ([`crate::Engine::connect_to`]).
    Given,
}

impl fmt::Display for EndpointSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointSource::DockerHost => write!(f, "from DOCKER_HOST"),
            EndpointSource::DockerContext(c) => write!(f, "context `{c}` from DOCKER_CONTEXT"),
            EndpointSource::CurrentContext(c) => {
                write!(f, "context `{c}`, the docker CLI's current context")
            }
            EndpointSource::Default => write!(f, "the default socket"),
            EndpointSource::WellKnown(what) => {
                write!(f, "the {what} socket (the default socket is absent)")
            }
            EndpointSource::Given => write!(f, "given by the caller"),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.host, self.source)?;
        if let Some(tls) = &self.tls {
            write!(f, ", TLS material in {}", tls.dir.display())?;
        }
        f.write_str(")")
    }
}

/// A context that cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("docker context `{name}` ({chosen_by}) has no usable endpoint in `{}`", .store.display())]
pub struct UnknownContext {
    /// The context's name.
    pub name: String,
    /// `DOCKER_CONTEXT` or `config.json`.
    pub chosen_by: &'static str,
    /// The context store looked in.
    pub store: PathBuf,
}

/// The engine this process talks to (see the module documentation).
pub fn resolve_endpoint() -> Result<Endpoint, UnknownContext> {
    resolve_with(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()), &|p| {
        p.exists()
    })
}

/// [`resolve_endpoint`] over the given variables and file system view.
fn resolve_with(
    var: &dyn Fn(&str) -> Option<String>,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<Endpoint, UnknownContext> {
    let home = var("HOME").map(PathBuf::from).unwrap_or_default();
    let config_dir = var("DOCKER_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".docker"));
    if let Some(host) = var("DOCKER_HOST") {
        let tls = (var("DOCKER_TLS_VERIFY").is_some() && host.starts_with("tcp://")
            || host.starts_with("https://"))
        .then(|| TlsMaterial {
            dir: var("DOCKER_CERT_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| config_dir.clone()),
        });
        return Ok(Endpoint {
            host,
            source: EndpointSource::DockerHost,
            tls,
        });
    }
    let chosen = match var("DOCKER_CONTEXT") {
        Some(name) => Some((
            name.clone(),
            "DOCKER_CONTEXT",
            EndpointSource::DockerContext(name),
        )),
        None => current_context(&config_dir).map(|name| {
            (
                name.clone(),
                "config.json",
                EndpointSource::CurrentContext(name),
            )
        }),
    };
    if let Some((name, chosen_by, source)) = chosen.filter(|(n, _, _)| n != "default") {
        let store = config_dir.join("contexts/meta");
        return match context_host(&store, &name) {
            Some(host) => {
                let dir = config_dir
                    .join("contexts/tls")
                    .join(digest(&name))
                    .join("docker");
                let tls = ((host.starts_with("tcp://") || host.starts_with("https://"))
                    && exists(&dir.join("ca.pem")))
                .then_some(TlsMaterial { dir });
                Ok(Endpoint { host, source, tls })
            }
            None => Err(UnknownContext {
                name,
                chosen_by,
                store,
            }),
        };
    }
    if exists(Path::new("/var/run/docker.sock")) {
        return Ok(Endpoint {
            host: DEFAULT_HOST.into(),
            source: EndpointSource::Default,
            tls: None,
        });
    }
    let runtime = var("XDG_RUNTIME_DIR").map(PathBuf::from);
    let candidates: Vec<(&'static str, PathBuf)> = [
        runtime
            .as_ref()
            .map(|r| ("rootless Docker", r.join("docker.sock"))),
        Some(("Docker Desktop", home.join(".docker/run/docker.sock"))),
        Some(("colima", home.join(".colima/default/docker.sock"))),
        Some(("OrbStack", home.join(".orbstack/run/docker.sock"))),
        runtime
            .as_ref()
            .map(|r| ("Podman", r.join("podman/podman.sock"))),
        Some(("Podman", PathBuf::from("/run/podman/podman.sock"))),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (what, path) in candidates {
        if exists(&path) {
            return Ok(Endpoint {
                host: format!("unix://{}", path.display()),
                source: EndpointSource::WellKnown(what),
                tls: None,
            });
        }
    }
    Ok(Endpoint {
        host: DEFAULT_HOST.into(),
        source: EndpointSource::Default,
        tls: None,
    })
}

/// The docker CLI's configuration directory: `DOCKER_CONFIG`, else `~/.docker`.
pub(crate) fn config_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    var("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".docker")))
}

/// The context store's directory name for context `name`: its sha256, in hex.
fn digest(name: &str) -> String {
    Sha256::digest(name.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The docker CLI's configuration files are at most this big (a bigger one is not a
/// configuration: a device, a log someone linked there).
const CONFIG_LIMIT: u64 = 4 << 20;

/// Reads one of the docker CLI's configuration files (`config.json`, a context's
/// `meta.json`) without ever blocking on what is not a file: opened non-blocking (a
/// FIFO's open would wait for a writer for ever), then only a regular file of at
/// most [`CONFIG_LIMIT`] bytes is read. A link to a file is followed, as the CLI does.
pub(crate) fn read_config(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    if meta.len() > CONFIG_LIMIT {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is larger than {} bytes", path.display(), CONFIG_LIMIT),
        ));
    }
    let mut text = String::new();
    file.take(CONFIG_LIMIT).read_to_string(&mut text)?;
    Ok(text)
}

/// `currentContext` of `<config dir>/config.json`.
fn current_context(config_dir: &Path) -> Option<String> {
    let path = config_dir.join("config.json");
    let text = match read_config(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the docker configuration is not read");
            return None;
        }
    };
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("currentContext")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `Endpoints.docker.Host` of context `name` in the store `store`
/// (`<store>/<sha256 of name>/meta.json`).
fn context_host(store: &Path, name: &str) -> Option<String> {
    let text = read_config(&store.join(digest(name)).join("meta.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("Endpoints")?
        .get("docker")?
        .get("Host")?
        .as_str()
        .map(str::to_string)
}

/// The engine's address ([`crate::resolve_endpoint`]); the default socket when the
/// chosen context cannot be resolved (then [`crate::connect`] says why).
pub(crate) fn current_host() -> String {
    resolve_endpoint()
        .map(|e| e.host)
        .unwrap_or_else(|_| DEFAULT_HOST.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with_context(config: &Path, name: &str, host: &str) {
        let dir = config.join("contexts/meta").join(digest(name));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("meta.json"),
            format!(r#"{{"Name":"{name}","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{host}","SkipTLSVerify":false}}}}}}"#),
        )
        .unwrap();
    }

    #[test]
    fn the_docker_clis_order() {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("docker");
        with_context(&config, "alt", "unix:///alt.sock");
        with_context(&config, "other", "tcp://127.0.0.1:2376");
        std::fs::write(config.join("config.json"), r#"{"currentContext":"alt"}"#).unwrap();
        let vars: HashMap<&str, String> = HashMap::from([
            ("HOME", tmp.path().to_str().unwrap().to_string()),
            ("DOCKER_CONFIG", config.to_str().unwrap().to_string()),
            (
                "XDG_RUNTIME_DIR",
                tmp.path().join("run").to_str().unwrap().to_string(),
            ),
        ]);
        let resolve = |extra: &[(&str, &str)], present: &[PathBuf]| {
            let mut vars = vars.clone();
            for (k, v) in extra {
                vars.insert(k, v.to_string());
            }
            resolve_with(&|k| vars.get(k).cloned(), &|p| {
                present.iter().any(|q| q == p)
            })
        };
        // DOCKER_HOST wins over everything.
        let e = resolve(&[("DOCKER_HOST", "tcp://127.0.0.1:1")], &[]).unwrap();
        assert_eq!(
            (e.host.as_str(), e.source),
            ("tcp://127.0.0.1:1", EndpointSource::DockerHost)
        );
        assert_eq!(e.tls, None);
        // TLS: DOCKER_TLS_VERIFY with DOCKER_CERT_PATH, or the config directory.
        let tcp = [
            ("DOCKER_HOST", "tcp://127.0.0.1:1"),
            ("DOCKER_TLS_VERIFY", "1"),
        ];
        let e = resolve(&tcp, &[]).unwrap();
        assert_eq!(
            e.tls,
            Some(TlsMaterial {
                dir: config.clone()
            })
        );
        let e = resolve(&[tcp[0], tcp[1], ("DOCKER_CERT_PATH", "/certs")], &[]).unwrap();
        assert_eq!(e.tls.unwrap().ca(), Path::new("/certs/ca.pem"));
        // A context's TLS material, when its store has a ca.pem.
        let context_tls = config
            .join("contexts/tls")
            .join(digest("other"))
            .join("docker");
        let e = resolve(
            &[("DOCKER_CONTEXT", "other")],
            &[context_tls.join("ca.pem")],
        )
        .unwrap();
        assert_eq!(e.tls, Some(TlsMaterial { dir: context_tls }));
        // An ssh context is an ssh endpoint, never TLS (whatever its store holds).
        with_context(&config, "remote", "ssh://me@build-box");
        let remote_tls = config
            .join("contexts/tls")
            .join(digest("remote"))
            .join("docker");
        let e = resolve(
            &[("DOCKER_CONTEXT", "remote")],
            &[remote_tls.join("ca.pem")],
        )
        .unwrap();
        assert_eq!((e.host.as_str(), e.tls), ("ssh://me@build-box", None));
        // DOCKER_CONTEXT over config.json's current context.
        let e = resolve(&[("DOCKER_CONTEXT", "other")], &[]).unwrap();
        assert_eq!(e.host, "tcp://127.0.0.1:2376");
        assert_eq!(e.tls, None);
        assert_eq!(e.source, EndpointSource::DockerContext("other".into()));
        let e = resolve(&[], &[]).unwrap();
        assert_eq!(e.host, "unix:///alt.sock");
        assert_eq!(e.source, EndpointSource::CurrentContext("alt".into()));
        // A context that does not exist is an error naming it.
        let err = resolve(&[("DOCKER_CONTEXT", "nope")], &[]).unwrap_err();
        assert_eq!(err.name, "nope");
        // `default` is the default socket; absent, the well-known sockets in order.
        std::fs::write(
            config.join("config.json"),
            r#"{"currentContext":"default"}"#,
        )
        .unwrap();
        let default = PathBuf::from("/var/run/docker.sock");
        assert_eq!(
            resolve(&[], std::slice::from_ref(&default)).unwrap().source,
            EndpointSource::Default
        );
        let rootless = tmp.path().join("run/docker.sock");
        let colima = tmp.path().join(".colima/default/docker.sock");
        let e = resolve(&[], &[colima.clone(), rootless.clone()]).unwrap();
        assert_eq!(e.source, EndpointSource::WellKnown("rootless Docker"));
        assert_eq!(e.host, format!("unix://{}", rootless.display()));
        let e = resolve(&[], std::slice::from_ref(&colima)).unwrap();
        assert_eq!(e.source, EndpointSource::WellKnown("colima"));
        // Nothing at all: the default socket, which will say it is missing.
        assert_eq!(resolve(&[], &[]).unwrap().host, DEFAULT_HOST);
    }
}
