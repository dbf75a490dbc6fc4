//! A real Podman for the Docker backend's suites: Debian's `podman` (rootful), its
//! Docker-compatible API service on a private socket, in a network namespace of its
//! own with its loopback up (so it never touches this host's networking), with
//! storage, run root and a `containers.conf` of its own under `target/podman`:
//! - `default_ulimits` at most the hard limits (`nofile` at `ulimit -Hn`, `nproc` at
//!   `kernel.pid_max`): Podman's defaults are above them here, and every start fails
//!   with "error setting rlimit";
//! - `runc`: crun refuses this machine's hybrid cgroup layout;
//! - catatonit as the init (`HostConfig.Init`).
//!
//! The service is stopped by pid afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{apt, engines_required, is_root, on_path, root, run, Result};

/// Where Podman's init is, if installed.
fn catatonit() -> Option<PathBuf> {
    ["/usr/bin/catatonit", "/usr/libexec/podman/catatonit"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs `f` with a Podman service answering at the `DOCKER_HOST` it is given, and the
/// service's directory (its storage, run root and `containers.conf`); not
/// root, or no podman to be had: skipped loudly (a failure with
/// `RUNNER_REQUIRE_ENGINES=1`).
pub(crate) fn with_podman(busybox_root: &Path, f: impl FnOnce(&str, &Path) -> Result) -> Result {
    if let Err(why) = install() {
        if engines_required() {
            return Err(format!(
                "RUNNER_REQUIRE_ENGINES=1 but the Podman suites cannot run: {why}"
            ));
        }
        eprintln!("xtask: WARNING: the Podman suites are SKIPPED: {why}");
        return Ok(());
    }
    let dir = root().join("target/podman");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
    let limit = |args: &str| -> Result<String> {
        let out = Command::new("sh")
            .args(["-c", args])
            .output()
            .map_err(|e| format!("failed to read a limit: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let nofile = limit("ulimit -Hn")?;
    let nproc = limit("cat /proc/sys/kernel/pid_max")?;
    let init = catatonit().ok_or("catatonit is not installed")?;
    let conf = dir.join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\ninit_path = \"{}\"\n[engine]\nruntime = \"runc\"\nexit_command_delay = 10\n",
            init.display()
        ),
    )
    .map_err(|e| format!("failed to write {}: {e}", conf.display()))?;
    let socket = dir.join("podman.sock");
    let host = format!("unix://{}", socket.display());
    let podman = |c: &mut Command| {
        c.env("CONTAINERS_CONF", &conf)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"));
    };
    eprintln!("xtask: starting a Podman service in a network namespace of its own");
    let mut service = Command::new("unshare");
    service.args([
        "--net",
        "sh",
        "-c",
        "ip link set lo up && exec \"$@\"",
        "sh",
        "podman",
    ]);
    podman(&mut service);
    let log = std::fs::File::create(dir.join("service.log"))
        .map_err(|e| format!("failed to create the service log: {e}"))?;
    let mut service = service
        .args(["system", "service", "--time=0", &host])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("failed to start podman system service: {e}"))?;
    let answers = || {
        Command::new("docker")
            .args(["-H", &host, "version", "--format", "{{.Server.Version}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !answers() {
        if std::time::Instant::now() > deadline || service.try_wait().ok().flatten().is_some() {
            let _ = service.kill();
            let _ = service.wait();
            return Err(format!(
                "the Podman service did not answer within 30 s (see {})",
                dir.join("service.log").display()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut import = Command::new("sh");
    import.args([
        "-c",
        "tar -C \"$1\" -c . | \"$2\" --root \"$3\" --runroot \"$4\" import --change 'ENV PATH=/bin' - runner-test/busybox:latest >/dev/null",
        "sh",
    ]);
    import
        .arg(busybox_root)
        .arg("podman")
        .arg(dir.join("root"))
        .arg(dir.join("run"))
        .env("CONTAINERS_CONF", &conf);
    // The editors suite's image, as the Docker provisioning built it, when it did.
    let node_image = crate::editors::NODE_IMAGE;
    let has_node_image = Command::new("docker")
        .args(["image", "inspect", node_image])
        .env_remove("DOCKER_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut load = Command::new("sh");
    load.args([
        "-c",
        "docker save \"$1\" | \"$2\" --root \"$3\" --runroot \"$4\" load >/dev/null",
        "sh",
        node_image,
        "podman",
    ])
    .arg(dir.join("root"))
    .arg(dir.join("run"))
    .env_remove("DOCKER_HOST")
    .env("CONTAINERS_CONF", &conf);
    let result = run("podman import of the busybox test image", &mut import)
        .and_then(|()| {
            if has_node_image {
                run("podman load of the node image", &mut load)
            } else {
                Ok(())
            }
        })
        .and_then(|()| f(&host, &dir));
    // Rootful containers outlive the service (conmon keeps them): none may be left.
    let mut remove = Command::new("podman");
    podman(&mut remove);
    let _ = remove
        .args(["rm", "--all", "--force", "--time", "0"])
        .stdout(Stdio::null())
        .status();
    eprintln!("xtask: stopping the Podman service we started");
    let _ = Command::new("kill").arg(service.id().to_string()).status();
    let _ = service.wait();
    // Podman keeps an ended exec session (and its conmon, which waits to clean it up)
    // for `exit_command_delay` so API clients can read its exit code, as Docker keeps
    // its own for 5 minutes; the test's configuration says 10 s. The last seconds'
    // are ended by pid, each one naming our root.
    let ours = dir.join("root").display().to_string();
    let mut left = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with("/usr/bin/conmon") && cmdline.contains(&ours) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            left += 1;
        }
    }
    if left > 0 {
        eprintln!("xtask: ended {left} conmon processes Podman left behind");
    }
    result
}

fn install() -> Result {
    let mut wanted = Vec::new();
    for (program, package) in [("podman", "podman"), ("runc", "runc")] {
        if !on_path(program) {
            wanted.push(package);
        }
    }
    if catatonit().is_none() {
        wanted.push("catatonit");
    }
    apt::install_as_root(&wanted)?;
    if !is_root() {
        return Err("a rootful Podman service needs root".into());
    }
    // Podman reads its signature policy from there for every import and pull; the
    // package that ships it may be installed with the file removed.
    let policy = Path::new("/etc/containers/policy.json");
    if !policy.exists() {
        apt::restore_configuration("golang-github-containers-common")?;
        if !policy.exists() {
            return Err(format!("{} is missing", policy.display()));
        }
    }
    Ok(())
}
