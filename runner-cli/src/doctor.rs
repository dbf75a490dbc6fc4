//! `runner doctor`: which backends work here, and why not (text or `--json`).

use crate::{print_json, print_out};

/// `runner doctor --json` (schema 1): what works here.
#[derive(Debug, serde::Serialize)]
struct DoctorReport {
    /// The schema's version; fields are only ever added within one.
    schema: u32,
    /// `native`, `docker`, `docker-helper`, `nix`, in that order.
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
    let (available, detail) = match runner_docker::connect().await {
        Ok(d) => {
            match tokio::time::timeout(std::time::Duration::from_secs(2), d.describe()).await {
                Ok(Ok(v)) => (
                    true,
                    format!(
                        "{} {} (API {}) at {}",
                        v.name, v.version, v.api_version, endpoint
                    ),
                ),
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
        let name = if b.name == "docker-helper" {
            "  helper"
        } else {
            b.name
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
