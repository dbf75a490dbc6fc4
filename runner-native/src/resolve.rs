//! Checking the working directory and resolving the binary before spawning.

use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags};
use runner_core::{Error, Result};

/// Errors unless `dir` exists and is a directory.
pub(crate) fn check_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::NotADirectory(dir.to_path_buf())),
        Err(_) => Err(Error::DirNotFound(dir.to_path_buf())),
    }
}

fn is_executable_file(path: &Path) -> bool {
    path.is_file() && access(path, AccessFlags::X_OK).is_ok()
}

/// Resolves `bin` the way a shell would: a name with a `/` is a path (relative to
/// `cwd`), anything else is looked up on `path_var`.
///
/// `NotFound` when nothing by that name exists, `NotExecutable` when something does
/// but cannot be run.
pub(crate) fn resolve_binary(
    bin: &str,
    path_var: Option<&std::ffi::OsStr>,
    cwd: &Path,
) -> Result<PathBuf> {
    if bin.is_empty() {
        return Err(Error::NotFound {
            bin: String::new(),
            searched: None,
        });
    }
    if bin.contains('/') {
        let path = cwd.join(bin);
        if !path.exists() {
            return Err(Error::NotFound {
                bin: bin.to_string(),
                searched: None,
            });
        }
        if !is_executable_file(&path) {
            return Err(Error::NotExecutable { path });
        }
        return Ok(path);
    }
    let path_var = path_var.unwrap_or_default();
    if let Ok(found) = which::which_in(bin, Some(path_var), cwd) {
        return Ok(found);
    }
    // Something by that name on PATH that is not executable is a 126, not a 127.
    for dir in std::env::split_paths(path_var) {
        let candidate = cwd.join(dir).join(bin);
        if candidate.is_file() {
            return Err(Error::NotExecutable { path: candidate });
        }
    }
    Err(Error::NotFound {
        bin: bin.to_string(),
        searched: Some(format!("PATH={}", path_var.to_string_lossy())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn resolves_and_classifies() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.path().join("data");
        std::fs::write(&plain, "x").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = dir.path().as_os_str();

        assert_eq!(resolve_binary("tool", Some(path), dir.path()).unwrap(), exe);
        assert_eq!(resolve_binary("./tool", None, dir.path()).unwrap(), exe);
        assert!(matches!(
            resolve_binary("data", Some(path), dir.path()),
            Err(Error::NotExecutable { .. })
        ));
        assert!(matches!(
            resolve_binary("./data", None, dir.path()),
            Err(Error::NotExecutable { .. })
        ));
        assert!(matches!(
            resolve_binary(".", None, dir.path()),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            resolve_binary("missing", Some(path), dir.path()),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(check_dir(&exe), Err(Error::NotADirectory(_))));
        assert!(matches!(
            check_dir(&dir.path().join("nope")),
            Err(Error::DirNotFound(_))
        ));
    }
}
