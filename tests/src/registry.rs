//! A real image registry for tests and the bench: Debian's `docker-registry` on
//! 127.0.0.1 with htpasswd logins (`apache2-utils`), and multi-layer images built
//! from the busybox test image and pushed to it with the docker CLI. Stopped by pid
//! when dropped; everything it writes is in its own temporary directory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user the registry accepts.
pub const USER: &str = "runner";
/// That user's password.
pub const PASSWORD: &str = "s3cret-pull";

/// The base of the images pushed (built by `cargo xtask test`).
const BASE_IMAGE: &str = "runner-test/busybox:latest";

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("failed to run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The `auth` value of `config.json` for `user:password` (base64).
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// A running registry.
#[derive(Debug)]
pub struct LocalRegistry {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    dir: tempfile::TempDir,
    /// Local image references removed when the registry is dropped (a failed test
    /// leaves none behind).
    pushed: std::sync::Mutex<Vec<String>>,
}

impl LocalRegistry {
    /// Why a registry cannot be run here, if it cannot.
    pub fn unavailable() -> Option<String> {
        let missing: Vec<&str> = ["docker-registry", "htpasswd", "docker"]
            .into_iter()
            .filter(|p| !on_path(p))
            .collect();
        (!missing.is_empty()).then(|| format!("not installed: {}", missing.join(", ")))
    }

    /// Starts a registry on a free loopback port, with [`USER`]/[`PASSWORD`] as its
    /// only login, and waits until it answers.
    pub fn start() -> Result<LocalRegistry, String> {
        let dir = tempfile::Builder::new()
            .prefix("runner-registry-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let htpasswd = run(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]))?;
        std::fs::write(dir.path().join("htpasswd"), htpasswd).map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    \
             realm: runner-test\n    path: {}\n",
            dir.path().join("data").display(),
            dir.path().join("htpasswd").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("registry.log")).map_err(|e| e.to_string())?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("failed to start docker-registry: {e}"))?;
        let mut registry = LocalRegistry {
            child,
            addr,
            dir,
            pushed: std::sync::Mutex::new(Vec::new()),
        };
        registry.wait_ready()?;
        Ok(registry)
    }

    /// Waits until `GET /v2/` answers (401 without a login).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = TcpStream::connect(&self.addr) {
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let request = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
                let mut answer = String::new();
                if c.write_all(request.as_bytes()).is_ok()
                    && c.read_to_string(&mut answer).is_ok()
                    && answer.starts_with("HTTP/1.")
                {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("docker-registry exited ({status}): {}", self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("docker-registry did not answer: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A docker config directory (for `DOCKER_CONFIG`) under this registry's
    /// temporary directory holding `config_json`.
    pub fn docker_config(&self, name: &str, config_json: &str) -> PathBuf {
        let dir = self.dir.path().join("configs").join(name);
        std::fs::create_dir_all(&dir).expect("config dir");
        std::fs::write(dir.join("config.json"), config_json).expect("config.json");
        dir
    }

    /// A `config.json` with this registry's login in `auths`.
    pub fn auths_json(&self, password: &str) -> String {
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            self.addr,
            basic_auth(USER, password)
        )
    }

    /// Builds `<addr>/runner-test/<name>:latest` from the busybox test image plus
    /// `layers` layers of `layer_bytes` random bytes each, pushes it with the
    /// docker CLI and removes it locally, so a pull must fetch those layers.
    pub fn push_layered_image(
        &self,
        name: &str,
        layers: usize,
        layer_bytes: usize,
    ) -> Result<String, String> {
        let reference = format!("{}/runner-test/{name}:latest", self.addr);
        self.remove_on_drop(&reference);
        let context = self.dir.path().join("build").join(name);
        std::fs::create_dir_all(&context).map_err(|e| e.to_string())?;
        let mut dockerfile = format!("FROM {BASE_IMAGE}\n");
        let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (name.len() as u64) ^ (std::process::id() as u64);
        for i in 0..layers {
            let mut bytes = Vec::with_capacity(layer_bytes);
            while bytes.len() < layer_bytes {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.extend_from_slice(&seed.to_le_bytes());
            }
            bytes.truncate(layer_bytes);
            std::fs::write(context.join(format!("layer{i}")), bytes).map_err(|e| e.to_string())?;
            dockerfile.push_str(&format!("COPY layer{i} /layer{i}\n"));
        }
        std::fs::write(context.join("Dockerfile"), dockerfile).map_err(|e| e.to_string())?;
        run(Command::new("docker")
            .args(["build", "-q", "-t", &reference])
            .arg(&context)
            .env("DOCKER_BUILDKIT", "0"))?;
        let cli_config = self.docker_config(&format!("push-{name}"), &self.auths_json(PASSWORD));
        run(Command::new("docker")
            .arg("--config")
            .arg(&cli_config)
            .args(["push", &reference]))?;
        self.remove_local(&reference);
        Ok(reference)
    }

    /// Removes `reference` from the local engine (and the layers only it used).
    pub fn remove_local(&self, reference: &str) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", reference])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Removes the local image `reference` (pulled under another name, say) when the
    /// registry is dropped.
    pub fn remove_on_drop(&self, reference: &str) {
        self.pushed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(reference.to_string());
    }

    /// The registry's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        for reference in self.pushed.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            self.remove_local(reference);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn basic_auth_is_base64() {
        assert_eq!(super::basic_auth("a", "b"), "YTpi");
        assert_eq!(super::basic_auth("user", "pass"), "dXNlcjpwYXNz");
        assert_eq!(super::basic_auth("ab", "cd"), "YWI6Y2Q=");
    }
}
