//! What Rust the locked dependencies need: the workspace's `rust-version` must say
//! the truth (at least the highest `rust-version` of any package in the lockfile,
//! read with `cargo metadata`), and a toolchain used for a check must be that new.

use std::cmp::Ordering;
use std::process::Command;

use crate::Result;

/// A Rust version, `1.88` or `1.88.0`, compared numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RustVersion(u32, u32, u32);

impl RustVersion {
    pub(crate) fn parse(text: &str) -> Option<RustVersion> {
        let mut parts = text.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(p) => p
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()?,
            None => 0,
        };
        Some(RustVersion(major, minor, patch))
    }
}

impl std::fmt::Display for RustVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The declared `rust-version` of the workspace's crates and the highest one any
/// locked package needs, with the packages that need it.
pub(crate) struct Needs {
    pub(crate) declared: RustVersion,
    pub(crate) needed: RustVersion,
    pub(crate) above_declared: Vec<String>,
}

pub(crate) fn needs() -> Result<Needs> {
    let out = Command::new(env!("CARGO"))
        .current_dir(crate::root())
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .map_err(|e| format!("failed to run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cargo metadata printed something else than JSON: {e}"))?;
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .map(|m| m.iter().filter_map(|id| id.as_str()).collect())
        .unwrap_or_default();
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    let version_of =
        |p: &serde_json::Value| p["rust_version"].as_str().and_then(RustVersion::parse);
    let declared = packages
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(&id)))
        .filter_map(version_of)
        .min()
        .ok_or("no workspace crate declares a rust-version")?;
    let mut needed = declared;
    let mut above_declared = Vec::new();
    for p in &packages {
        let Some(v) = version_of(p) else { continue };
        needed = needed.max(v);
        if v.cmp(&declared) == Ordering::Greater {
            above_declared.push(format!(
                "{}@{} needs {v}",
                p["name"].as_str().unwrap_or("?"),
                p["version"].as_str().unwrap_or("?")
            ));
        }
    }
    Ok(Needs {
        declared,
        needed,
        above_declared,
    })
}

/// Fails when a locked package needs a newer Rust than the workspace declares.
pub(crate) fn check_declared() -> Result {
    let needs = needs()?;
    if needs.above_declared.is_empty() {
        eprintln!(
            "xtask: rust-version {} covers every locked package",
            needs.declared
        );
        return Ok(());
    }
    Err(format!(
        "the workspace declares rust-version {} but locked packages need {}: {}",
        needs.declared,
        needs.needed,
        needs.above_declared.join(", ")
    ))
}

/// The version `rustc --version` of `rustc` prints, if it runs.
pub(crate) fn rustc_version(rustc: &str) -> Option<RustVersion> {
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    RustVersion::parse(text.split_whitespace().nth(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        let v = |s| RustVersion::parse(s).unwrap();
        assert!(v("1.88") > v("1.85.0"));
        assert!(v("1.100") > v("1.99"));
        assert_eq!(v("1.88"), v("1.88.0"));
        assert_eq!(v("1.96.0-beta"), v("1.96.0"));
        assert_eq!(RustVersion::parse("x"), None);
    }
}
