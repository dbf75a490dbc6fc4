//! Debian packages, installed the way a brand-new machine needs: its package lists
//! may be months old or missing, so every install brings them up to date first (once
//! per run), and what was installed is checked, not assumed.

use std::process::Command;
use std::sync::OnceLock;

use crate::Result;

/// `apt-get update` once per run; its outcome is kept for every later install.
fn update() -> Result {
    static UPDATED: OnceLock<Result> = OnceLock::new();
    UPDATED
        .get_or_init(|| {
            eprintln!("xtask: apt-get update");
            let status = Command::new("apt-get")
                .args(["update", "-qq"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map_err(|e| format!("failed to run apt-get update: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("apt-get update failed ({status})"))
            }
        })
        .clone()
}

/// Installs (or upgrades to the newest candidate) `packages` after bringing the
/// package lists up to date, and says which version of each it got.
pub(crate) fn install(packages: &[&str]) -> Result {
    if packages.is_empty() {
        return Ok(());
    }
    update()?;
    eprintln!("xtask: installing {}", packages.join(" "));
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("failed to run apt-get install: {e}"))?;
    if !status.success() {
        return Err(format!(
            "apt-get install {} failed ({status})",
            packages.join(" ")
        ));
    }
    for package in packages {
        match installed_version(package) {
            Some(version) => eprintln!("xtask: {package} {version}"),
            None => {
                return Err(format!(
                    "apt-get installed {package}, but dpkg does not list it"
                ))
            }
        }
    }
    Ok(())
}

/// The installed version of `package`, if it is installed.
pub(crate) fn installed_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev}${Version}", package])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "ii " then the version, for an installed package.
    text.strip_prefix("ii ")
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Puts back the configuration files of installed `package` that were deleted (a
/// removed `/etc` directory: dpkg keeps a deleted conffile deleted), after bringing
/// the package lists up to date.
pub(crate) fn restore_configuration(package: &str) -> Result {
    update()?;
    eprintln!("xtask: restoring the configuration files of {package}");
    let status = Command::new("apt-get")
        .args([
            "install",
            "--reinstall",
            "-y",
            "-qq",
            "-o",
            "Dpkg::Options::=--force-confmiss",
        ])
        .arg(package)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("failed to run apt-get install --reinstall: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "apt-get install --reinstall {package} failed ({status})"
        ))
    }
}

/// Installs `packages` (none: nothing to do) when xtask can: as root, with apt-get;
/// otherwise says which are missing.
pub(crate) fn install_as_root(packages: &[&str]) -> Result {
    if packages.is_empty() {
        return Ok(());
    }
    if !crate::is_root() || !crate::on_path("apt-get") {
        return Err(format!(
            "{} missing, and xtask cannot install them (it needs root and apt-get)",
            packages.join(" ")
        ));
    }
    install(packages)
}
