//! An engine whose pids are not this host's, and innocent local processes at the
//! numbers it hands out.
//!
//! [`ForeignEngine`] runs a real `dockerd` in pid, mount and network namespaces of its
//! own (`unshare --pid --fork --mount --mount-proc --net`: its own network, so it
//! cannot touch this host's `docker0`), reached through a unix socket, as Docker
//! Desktop, colima or a remote host is: the pids it reports number processes in its
//! namespace, not ours. [`Innocents`] plants local process groups (`sleep`, each the
//! leader of its own group) at chosen pids with `/proc/sys/kernel/ns_last_pid`, and
//! [`ForeignEngine::aim`] makes the engine hand out those same numbers next. Both are
//! stopped by pid when dropped. Root only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test image, imported into the foreign engine from this host's busybox.
pub const IMAGE: &str = "runner-test/busybox:latest";
/// The same root filesystem, imported as an image of another architecture: the
/// in-container helper refuses it, so processes run as plain execs (as every
/// amd64-only image on Apple Silicon does).
pub const OTHER_ARCH_IMAGE: &str = "runner-test/busybox-other-arch:latest";

/// The architecture that is not this machine's, as Docker names it.
pub fn other_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// Why a foreign engine cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if !root {
        return Some("an engine in its own namespaces needs root".into());
    }
    for program in ["dockerd", "unshare", "nsenter", "busybox"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
        if !found {
            return Some(format!("{program} is not installed"));
        }
    }
    None
}

/// A `dockerd` in pid, mount and network namespaces of its own.
#[derive(Debug)]
pub struct ForeignEngine {
    unshare: Child,
    /// dockerd's pid on this host (pid 1 of its namespace).
    dockerd: i32,
    dir: PathBuf,
}

impl ForeignEngine {
    /// Starts the engine under `dir`, waits for its socket and imports the test
    /// images. Panics with the engine's log when it cannot start.
    pub fn start(dir: &Path) -> ForeignEngine {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--mount", "--mount-proc", "--net"])
            .args(["--kill-child=SIGKILL", "dockerd"])
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .args(["--iptables=false", "--ip6tables=false"])
            .args(["--storage-driver", "vfs"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut engine = ForeignEngine {
            dockerd: 0,
            unshare,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let log = std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default();
            if engine.dockerd == 0 {
                engine.dockerd = child_of(engine.unshare.id() as i32).unwrap_or(0);
            }
            if engine.dockerd != 0 && log.contains("API listen on") && engine.docker_cli_ok() {
                break;
            }
            if let Ok(Some(status)) = engine.unshare.try_wait() {
                panic!("the foreign dockerd exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "the foreign dockerd did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        engine.hide_state_dir();
        engine.import(IMAGE, None);
        engine.import(OTHER_ARCH_IMAGE, Some(other_arch()));
        engine
    }

    /// An engine elsewhere does not see where runner keeps its own files on this
    /// machine (the helper's copy among them, which an engine that sees them gets
    /// bind-mounted): runner's state directory is hidden from it, so the helper is
    /// copied in, as it is there.
    fn hide_state_dir(&self) {
        use std::os::unix::fs::DirBuilderExt;
        let state = runner_reaper::default_state_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&state)
            .unwrap();
        self.hide(&state);
    }

    /// Hides directory `dir` of this machine from the engine, as a directory of a
    /// laptop is from a build box: an empty tmpfs over it in the engine's mount
    /// namespace.
    pub fn hide(&self, dir: &Path) {
        let hidden = Command::new("nsenter")
            .args(["--target", &self.dockerd.to_string(), "--mount", "--"])
            .args(["mount", "-t", "tmpfs", "none"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(hidden.success(), "hide {} from the engine", dir.display());
    }

    /// `unix://<its socket>`, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// A connection to this engine, as a user of the library makes one.
    pub async fn engine(&self) -> runner_docker::Engine {
        runner_docker::Engine::connect_to(&self.host())
            .await
            .expect("connect to the foreign engine")
    }

    /// Runs the docker CLI against this engine.
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.dir.join("cli-config"));
        cmd
    }

    fn docker_cli_ok(&self) -> bool {
        self.docker()
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// dockerd's pid on this host.
    pub fn dockerd_pid(&self) -> i32 {
        self.dockerd
    }

    fn import(&self, tag: &str, arch: Option<&str>) {
        let root = self.dir.join("image-root");
        let _ = std::fs::remove_dir_all(&root);
        for d in ["bin", "tmp", "proc", "etc", "dev", "sys"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox");
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        let list = Command::new(busybox).arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" && !applet.is_empty() {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
            }
        }
        let platform = arch
            .map(|a| format!("--platform linux/{a}"))
            .unwrap_or_default();
        let script = format!(
            "tar -C '{}' -c . | docker import {platform} --change 'ENV PATH=/bin' - {tag}",
            root.display()
        );
        let out = Command::new("sh")
            .args(["-c", &script])
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.dir.join("cli-config"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker import {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Makes the engine's next pids (in its own namespace) `base`, `base + 1`, …: the
    /// numbers [`Innocents::plant`] gave local processes.
    pub fn aim(&self, base: i32) {
        let out = Command::new("nsenter")
            .args(["--target", &self.dockerd.to_string(), "--pid", "--"])
            .args([
                "sh",
                "-c",
                &format!("echo {} > /proc/sys/kernel/ns_last_pid", base - 1),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "setting the engine's next pid: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Names of the containers on this engine labelled `runner.owner`.
    pub fn runner_containers(&self) -> Vec<String> {
        let out = self
            .docker()
            .args([
                "ps",
                "-a",
                "--filter",
                "label=runner.owner",
                "--format",
                "{{.Names}}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for ForeignEngine {
    fn drop(&mut self) {
        // Every container's process dies with the namespace's pid 1.
        let _ = self
            .docker()
            .args(["rm", "-f", "-v"])
            .args(self.runner_containers())
            .output();
        if self.dockerd > 0 {
            let _ = Command::new("kill")
                .args(["-TERM", &self.dockerd.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(self.unshare.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        // The vfs layers and the exec root hold mounts only inside the namespace,
        // which is gone: plain files now.
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}

/// The first child of `pid` (`/proc/<pid>/task/<pid>/children`).
fn child_of(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Local process groups (`sleep`, each leading its own group) at chosen pids of this
/// host, killed when dropped.
#[derive(Debug)]
pub struct Innocents {
    planted: Vec<(Child, u64)>,
}

impl Innocents {
    /// Plants one at each free pid of `base .. base + count` (a pid another process
    /// already holds is left to it). Returns them and the numbers planted.
    pub fn plant(base: i32, count: i32) -> Innocents {
        use std::os::unix::process::CommandExt;
        let mut planted = Vec::new();
        for pid in base..base + count {
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            for _ in 0..5 {
                std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
                let mut child = Command::new("sleep")
                    .arg("3600")
                    .process_group(0)
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap();
                if child.id() as i32 == pid {
                    let start = runner_core::os::process(pid).unwrap().start_time;
                    planted.push((child, start));
                    break;
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        Innocents { planted }
    }

    /// The planted pids.
    pub fn pids(&self) -> Vec<i32> {
        self.planted.iter().map(|(c, _)| c.id() as i32).collect()
    }

    /// True when `pid` is one of them.
    pub fn holds(&self, pid: i64) -> bool {
        self.planted.iter().any(|(c, _)| i64::from(c.id()) == pid)
    }

    /// The planted processes that are gone or were stopped: each one is a process
    /// runner signalled without having started it.
    pub fn harmed(&mut self) -> Vec<i32> {
        self.planted
            .iter_mut()
            .filter_map(|(c, start)| {
                let pid = c.id() as i32;
                // Alive, the same process, and not stopped: untouched.
                let untouched = runner_core::os::process(pid).is_ok_and(|p| {
                    p.start_time == *start
                        && p.running
                        && p.state != runner_core::ProcessState::Stopped
                });
                let exited = !matches!(c.try_wait(), Ok(None));
                (!untouched || exited).then_some(pid)
            })
            .collect()
    }
}

impl Drop for Innocents {
    fn drop(&mut self) {
        for (child, _) in &mut self.planted {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A base pid with `count` free numbers above it on this host, well above the pids in
/// use now (and below `pid_max`).
pub fn free_pid_window(count: i32) -> i32 {
    let max_used = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .max()
        .unwrap_or(1000);
    let pid_max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let base = max_used + 2000;
    if base + count < pid_max {
        base
    } else {
        // Near the top: the engine's own namespace starts low, and so may we.
        2000
    }
}
