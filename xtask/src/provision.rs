//! `cargo xtask provision`: the engines and parts the suites need, installed,
//! configured and started when xtask can (as root), else a loud reason.

use std::path::Path;
use std::process::Command;

use crate::editors::{build_node_image, provision_editors};
use crate::{apt, engines_required, is_root, on_path, root, run, Result};

/// Installs and configures the engines as `test` would, and leaves the dockerd it
/// started running (for running single test binaries by hand).
pub(crate) fn provision() -> Result {
    apt_install_missing()?;
    provision_nix()?;
    provision_editors()?;
    if let Some(d) = provision_docker()? {
        eprintln!("xtask: dockerd left running as pid {}", d.id());
    }
    Ok(())
}

/// One apt-get run for every engine package that is missing (as root only), after
/// bringing the package lists up to date; each wanted program must then be there.
pub(crate) fn apt_install_missing() -> Result {
    let mut wanted = Vec::new();
    if !on_path("nix") {
        wanted.push("nix-bin");
    }
    if !on_path("dockerd") {
        wanted.push("docker.io");
    }
    if !Path::new("/bin/busybox").exists() && !Path::new("/usr/bin/busybox").exists() {
        wanted.push("busybox-static");
    }
    // The engine-resolution and registry tests: a TLS dockerd (certificates made
    // with openssl) and a local registry with htpasswd logins; the engine in its own
    // namespaces: unshare and nsenter; the remote host over ssh: OpenSSH's client and
    // server (the server runs per connection, in inetd mode: nothing listens).
    for (program, package) in [
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        ("sshd", "openssh-server"),
        ("openssl", "openssl"),
        ("docker-registry", "docker-registry"),
        ("htpasswd", "apache2-utils"),
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
    ] {
        if !on_path(program) && !wanted.contains(&package) {
            wanted.push(package);
        }
    }
    if wanted.is_empty() || !is_root() || !on_path("apt-get") {
        return Ok(());
    }
    let installed = apt::install(&wanted);
    if let Err(e) = installed {
        if engines_required() {
            return Err(e);
        }
        eprintln!("xtask: WARNING: {e}; suites that need these packages will skip");
    }
    Ok(())
}

pub(crate) fn docker_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The image the Docker suites use: busybox and its applets, imported from a
/// root filesystem (no registry is reachable).
pub(crate) const TEST_IMAGE: &str = "runner-test/busybox:latest";

pub(crate) fn build_test_image() -> Result {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or("busybox is not installed (package busybox-static)")?;
    let root = root().join("target/xtask-test-image");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "tmp", "proc", "etc", "dev", "sys"] {
        std::fs::create_dir_all(root.join(d))
            .map_err(|e| format!("failed to create the image root: {e}"))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox"))
        .map_err(|e| format!("failed to copy busybox: {e}"))?;
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("failed to list busybox applets: {e}"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    let script = format!(
        "tar -C '{}' -c . | docker import --change 'ENV PATH=/bin' - {TEST_IMAGE} >/dev/null",
        root.display()
    );
    run(
        "docker import of the busybox test image",
        Command::new("sh").args(["-c", &script]),
    )?;
    build_node_image(&root)
}

/// Makes sure an engine answers and the test image exists. Returns the dockerd we
/// started, to stop it afterwards.
pub(crate) fn provision_docker() -> Result<Option<std::process::Child>> {
    let mut started = None;
    let why = if docker_answers() {
        None
    } else if !on_path("dockerd") {
        Some("dockerd is not installed (package docker.io)".to_string())
    } else if !is_root() {
        Some("no Docker engine answers and xtask is not root, so it cannot start one".to_string())
    } else {
        eprintln!("xtask: starting dockerd");
        let log = root().join("target/dockerd.log");
        let _ = std::fs::create_dir_all(root().join("target"));
        let out = std::fs::File::create(&log)
            .map_err(|e| format!("failed to create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("dockerd")
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("failed to start dockerd: {e}"))?;
        started = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        while !docker_answers() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        if docker_answers() {
            None
        } else {
            Some(format!(
                "dockerd did not answer within 90 s (see {})",
                log.display()
            ))
        }
    };
    if let Some(why) = why {
        if let Some(mut d) = started {
            let _ = d.kill();
            let _ = d.wait();
        }
        if engines_required() {
            return Err(format!("RUNNER_REQUIRE_ENGINES=1 but {why}"));
        }
        eprintln!("xtask: WARNING: the Docker suites will be SKIPPED: {why}");
        return Ok(None);
    }
    build_test_image()?;
    eprintln!("xtask: Docker engine ready, test image {TEST_IMAGE} built");
    Ok(started)
}

/// Containers labelled runner.owner still on the engine, if any.
pub(crate) fn docker_leftovers() -> Option<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=runner.owner",
            "--format",
            "{{.Names}}",
        ])
        .output()
        .ok()?;
    let names = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!names.is_empty()).then_some(names)
}

/// Installs Debian's nix-bin when nix is missing and we are root. Without nix the
/// nix suites skip loudly, or fail when RUNNER_REQUIRE_ENGINES=1.
pub(crate) fn provision_nix() -> Result {
    if on_path("nix") {
        eprintln!("xtask: nix found");
        return configure_nix();
    }
    let why = if !is_root() {
        "nix is missing and xtask is not root, so it cannot install it".to_string()
    } else if !on_path("apt-get") {
        "nix is missing and there is no apt-get to install it with".to_string()
    } else {
        match apt::install(&["nix-bin"]) {
            Ok(()) if on_path("nix") => return configure_nix(),
            Ok(()) => "nix-bin was installed but there is no nix on PATH".to_string(),
            Err(e) => e,
        }
    };
    if engines_required() {
        return Err(format!("RUNNER_REQUIRE_ENGINES=1 but {why}"));
    }
    eprintln!("xtask: WARNING: the nix suites will be SKIPPED: {why}");
    Ok(())
}

/// Where a nix-daemon listens.
pub(crate) const NIX_DAEMON_SOCKET: &str = "/nix/var/nix/daemon-socket/socket";

/// Runs `f` with a nix-daemon of ours answering on [`NIX_DAEMON_SOCKET`]: the
/// `nixbld` group and build users `nixbld1..4` are created if missing (as a
/// multi-user install does), the daemon builds as them (`build-users-group =
/// nixbld` for the daemon only; clients in single-user mode keep building as root),
/// and it is stopped by pid afterwards. Not root, or no `nix-daemon`: skipped
/// loudly (a failure with `RUNNER_REQUIRE_ENGINES=1`).
pub(crate) fn with_nix_daemon(f: impl FnOnce() -> Result) -> Result {
    let why_not = if !is_root() {
        Some("xtask is not root, so it cannot create build users or run a daemon")
    } else if !on_path("nix-daemon") {
        Some("there is no nix-daemon")
    } else if std::path::Path::new(NIX_DAEMON_SOCKET).exists() {
        Some("a nix-daemon already listens (its settings are not ours to rely on)")
    } else {
        None
    };
    if let Some(why) = why_not {
        if engines_required() {
            return Err(format!(
                "RUNNER_REQUIRE_ENGINES=1 but the daemon-mode nix suites cannot run: {why}"
            ));
        }
        eprintln!("xtask: WARNING: the daemon-mode nix suites are SKIPPED: {why}");
        return Ok(());
    }
    if !group_exists("nixbld") {
        run(
            "groupadd nixbld",
            Command::new("groupadd").args(["--system", "nixbld"]),
        )?;
    }
    for n in 1..=4 {
        let user = format!("nixbld{n}");
        let known = Command::new("getent")
            .args(["passwd", &user])
            .output()
            .is_ok_and(|o| o.status.success());
        if !known {
            run(
                &format!("useradd {user}"),
                Command::new("useradd").args([
                    "--system",
                    "--no-create-home",
                    "--home-dir",
                    "/var/empty",
                    "--shell",
                    "/usr/sbin/nologin",
                    "--gid",
                    "nixbld",
                    "--groups",
                    "nixbld",
                    &user,
                ]),
            )?;
        }
    }
    eprintln!("xtask: starting a nix-daemon (build users nixbld1..4)");
    let mut daemon = Command::new("nix-daemon")
        .env(
            "NIX_CONFIG",
            "build-users-group = nixbld\nexperimental-features = nix-command flakes\nsubstituters =\nsandbox = false",
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("failed to start nix-daemon: {e}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::path::Path::new(NIX_DAEMON_SOCKET).exists() {
        if std::time::Instant::now() > deadline || daemon.try_wait().ok().flatten().is_some() {
            let _ = daemon.kill();
            let _ = daemon.wait();
            return Err("the nix-daemon did not start listening within 20 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let result = f();
    eprintln!("xtask: stopping the nix-daemon we started");
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
    let _ = std::fs::remove_file(NIX_DAEMON_SOCKET);
    result
}

/// The engine's own configuration file, which every `nix` on this machine reads.
pub(crate) const NIX_CONF: &str = "/etc/nix/nix.conf";

/// Makes the installed nix able to build as root.
///
/// Debian's nix-bin defaults to `build-users-group = nixbld`, the group of build
/// users that a multi-user install creates and Debian's package does not. Without
/// it every build fails ("the group 'nixbld' specified in 'build-users-group' does
/// not exist"). The tests run nix as root in single-user mode, where builds may run
/// as root itself, so xtask sets `build-users-group =` (empty: no build users) in
/// `/etc/nix/nix.conf` rather than creating a group and system users on the host:
/// it is one line in nix's own configuration file, it is what the nix manual
/// prescribes for a root single-user install, and it changes nothing outside nix.
/// A group that exists is left in use.
pub(crate) fn configure_nix() -> Result {
    let Some(group) = nix_setting("build-users-group") else {
        return Err("`nix show-config` did not name build-users-group".into());
    };
    if group.is_empty() || group_exists(&group) {
        return Ok(());
    }
    let why = format!("nix's build-users-group `{group}` does not exist");
    if !is_root() {
        if engines_required() {
            return Err(format!(
                "RUNNER_REQUIRE_ENGINES=1 but {why} and xtask is not root, so it cannot set \
                 `build-users-group =` in {NIX_CONF}"
            ));
        }
        eprintln!("xtask: WARNING: the nix suites will FAIL to build: {why}");
        return Ok(());
    }
    eprintln!("xtask: {why}; setting `build-users-group =` in {NIX_CONF} (root, single-user)");
    let conf = Path::new(NIX_CONF);
    if let Some(dir) = conf.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
    }
    let mut text = std::fs::read_to_string(conf).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(
        "# Written by `cargo xtask test`: root single-user nix builds without build users.\n",
    );
    text.push_str("build-users-group =\n");
    std::fs::write(conf, text).map_err(|e| format!("failed to write {NIX_CONF}: {e}"))?;
    match nix_setting("build-users-group") {
        Some(g) if g.is_empty() => Ok(()),
        other => Err(format!(
            "{NIX_CONF} now says `build-users-group =` but nix still reads {other:?}"
        )),
    }
}

/// A setting as the installed nix resolves it from all of its configuration.
pub(crate) fn nix_setting(name: &str) -> Option<String> {
    let out = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "show-config",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

pub(crate) fn group_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/group")
        .is_ok_and(|groups| groups.lines().any(|l| l.split(':').next() == Some(name)))
}
