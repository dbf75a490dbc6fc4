//! `runner doctor`: which backends work here, and why not (text or `--json`).

use crate::{print_json, print_out};

/// `runner doctor --json` (schema 1): what works here.
#[derive(Debug, serde::Serialize)]
struct DoctorReport {
    /// The schema's version; fields are only ever added within one.
    schema: u32,
    /// `native`, `docker`, its checks (`docker-init`, `docker-rootless` for an engine
    /// running as a user), `docker-helper`, `nix`, in that order.
    backends: Vec<BackendReport>,
    /// Language runtimes on PATH.
    runtimes: Vec<RuntimeReport>,
}

#[derive(Debug, serde::Serialize)]
struct BackendReport {
    name: &'static str,
    available: bool,
    detail: String,
}

#[derive(Debug, serde::Serialize)]
struct RuntimeReport {
    name: String,
    found: bool,
    version: Option<String>,
    /// Why its version command failed (then `version` is `None`): found, but it may
    /// not work.
    #[serde(skip_serializing_if = "Option::is_none")]
    version_error: Option<String>,
}

/// What runner needs of an answering engine beyond its answer: an init for paused
/// containers (`docker-init`; an engine whose runs would all fail without one), and,
/// for one running as a user, whose user namespace its containers live in.
async fn engine_needs(
    engine: &runner_docker::Engine,
    about: &runner_docker::EngineDescription,
) -> Vec<BackendReport> {
    let check = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        runner_docker::check_init(engine),
    );
    let (available, detail) = match check.await {
        Ok(Ok(Some(image))) => (
            true,
            format!(
                "the engine gives paused containers an init (checked by creating one from {})",
                short_id(&image)
            ),
        ),
        Ok(Ok(None)) => (
            true,
            "not checked: the engine has no image to check with yet".to_string(),
        ),
        Ok(Err(e)) => (false, runner_core::error_chain(&e)),
        Err(_) => (
            false,
            "the engine did not create a container within 10 s".into(),
        ),
    };
    let mut checks = vec![BackendReport {
        name: "docker-init",
        available,
        detail,
    }];
    if about.rootless == Some(true) {
        checks.push(BackendReport {
            name: "docker-rootless",
            available: true,
            detail: rootless_detail(engine.endpoint()),
        });
    }
    checks
}

/// An image id as the docker CLI shows it (12 hex digits).
fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

/// A rootless engine's containers live in its user's user namespace: the owner of
/// its socket, when the socket is a file here.
fn rootless_detail(endpoint: &str) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let me = nix::unistd::geteuid().as_raw();
    let owner = endpoint
        .strip_prefix("unix://")
        .and_then(|path| std::fs::metadata(path).ok())
        .map(|m| m.uid());
    match owner {
        Some(uid) if uid == me => format!(
            "rootless, as you (uid {me}): files its containers write in --dir belong to \
             your subordinate ids unless they run as root in the container"
        ),
        Some(uid) => format!(
            "rootless as uid {uid}, the socket's owner, not you (uid {me}): its containers \
             live in uid {uid}'s user namespace, and files they write in --dir belong to it"
        ),
        None => "rootless: its containers live in its user's user namespace".to_string(),
    }
}

pub(crate) async fn doctor(json: bool) -> i32 {
    let mut backends = vec![BackendReport {
        name: "native",
        available: true,
        detail: runner_core::os::kernel().unwrap_or_else(|| "host processes".into()),
    }];
    // Where the engine is looked for, and why there (variable, context or path).
    let endpoint = match runner_docker::resolve_endpoint() {
        Ok(e) => e.to_string(),
        Err(e) => e.to_string(),
    };
    let mut engine_checks = Vec::new();
    let (available, detail) = match runner_docker::connect().await {
        Ok(d) => {
            match tokio::time::timeout(std::time::Duration::from_secs(2), d.describe()).await {
                Ok(Ok(v)) => {
                    engine_checks = engine_needs(&d, &v).await;
                    (
                        true,
                        format!(
                            "{} {} (API {}) at {}",
                            v.name, v.version, v.api_version, endpoint
                        ),
                    )
                }
                Ok(Err(e)) => (false, format!("the engine did not answer: {e}")),
                Err(_) => (false, "the engine did not answer within 2 s".to_string()),
            }
        }
        Err(e) => (
            false,
            format!("{} (looked at {endpoint})", runner_core::error_chain(&e)),
        ),
    };
    backends.push(BackendReport {
        name: "docker",
        available,
        detail,
    });
    backends.extend(engine_checks);
    // The in-container helper: built in or not, and when it is skipped.
    let (available, detail) = match runner_docker::embedded_helper() {
        Ok(what) => (
            true,
            format!(
                "{what}; processes in a container of another architecture or with a \
                 read-only root run as plain execs (-v says why)"
            ),
        ),
        Err(why) => (
            false,
            format!("processes in containers run as plain execs: {why}"),
        ),
    };
    backends.push(BackendReport {
        name: "docker-helper",
        available,
        detail,
    });
    let (available, detail) = match runner_nix::nix_binary() {
        Some(path) => {
            let version = tokio::process::Command::new(&path)
                .arg("--version")
                .output()
                .await
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            match runner_nix::check_nix_can_build(&path, &[]).await {
                Ok(()) => (true, format!("{version} (needs a flake.nix in --dir)")),
                Err(why) => (
                    false,
                    format!("{version} is installed but cannot build: {why}"),
                ),
            }
        }
        None => (
            false,
            format!(
                "nix is not installed (install: {})",
                runner_nix::nix_install_command()
            ),
        ),
    };
    backends.push(BackendReport {
        name: "nix",
        available,
        detail,
    });
    let wanted: Vec<runner_core::RuntimeRequirement> = [
        ("Rust", "cargo", "--version"),
        // `go --version` is not a flag Go knows.
        ("Go", "go", "version"),
        ("Node.js", "node", "--version"),
        ("Python", "python3", "--version"),
        ("Java", "java", "--version"),
        ("GCC", "gcc", "--version"),
    ]
    .into_iter()
    .map(|(n, b, arg)| {
        let mut r = runner_core::RuntimeRequirement::new(n, b);
        r.version_args = Some(vec![arg.to_string()]);
        r
    })
    .collect();
    let found = runner_core::check_for_runtimes(&wanted).await;
    let mut runtimes: Vec<RuntimeReport> = found
        .found
        .iter()
        .map(|f| RuntimeReport {
            name: f.name.to_string(),
            found: true,
            version: f.version.clone(),
            version_error: f.version_error.clone(),
        })
        .collect();
    runtimes.extend(found.missing.iter().map(|m| RuntimeReport {
        name: m.to_string(),
        found: false,
        version: None,
        version_error: None,
    }));
    let report = DoctorReport {
        schema: 1,
        backends,
        runtimes,
    };
    if json {
        print_json(&report);
        return 0;
    }
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(text, "{:<8} {:<10} detail", "backend", "available");
    for b in &report.backends {
        let name = match b.name.strip_prefix("docker-") {
            Some(check) => format!("  {check}"),
            None => b.name.to_string(),
        };
        let ok = if b.available { "yes" } else { "no" };
        let _ = writeln!(text, "{name:<8} {ok:<10} {}", b.detail);
    }
    let _ = writeln!(text, "\n{:<8} {:<10} version", "runtime", "found");
    for r in &report.runtimes {
        match (&r.version, r.found) {
            (v, true) => {
                let version = match (v, &r.version_error) {
                    (Some(v), _) => v.clone(),
                    (None, Some(e)) => format!("? (its version command failed: {e})"),
                    (None, None) => "?".to_string(),
                };
                let _ = writeln!(text, "{:<8} {:<10} {version}", r.name, "yes");
            }
            (_, false) => {
                let _ = writeln!(text, "{:<8} no", r.name);
            }
        }
    }
    print_out(&text);
    0
}
