//! The on-disk cache of materialized dev shells.
//!
//! One file per flake directory (`<cache dir>/<hash of the dir>.json`) holds the last
//! good [`ShellEnv`] and the fingerprint it was made under: `flake.nix`, `flake.lock`,
//! every other `*.nix` file under the directory, the nix binary (path, size, mtime,
//! standing in for its version), the system and the nix options. A matching
//! fingerprint is a hit; a stale entry is still the fallback when evaluation fails.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::shell::ShellEnv;

/// The cache format written today; files of another schema are ignored.
pub const CACHE_SCHEMA: u32 = 1;

/// One cache file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// [`CACHE_SCHEMA`].
    pub schema: u32,
    /// The fingerprint the env was materialized under.
    pub fingerprint: String,
    /// The flake directory.
    pub dir: PathBuf,
    /// What the shell adds to the host environment.
    pub shell: ShellEnv,
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the cache entry of `dir` lives.
pub fn entry_path(cache_dir: &Path, dir: &Path) -> PathBuf {
    let digest = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    cache_dir.join(format!("{}.json", &hex(&digest)[..32]))
}

/// The nix profile that roots the store paths of the entry at `entry` (a symlink
/// nix makes, `<entry>.profile`, to its current generation `<entry>.profile-N-link`).
pub fn profile_path(entry: &Path) -> PathBuf {
    entry.with_extension("profile")
}

/// Removes the generations of `profile` other than the current one: the shell they
/// kept alive was replaced, so their store paths may be collected.
pub fn release_old_generations(profile: &Path) {
    let (Some(dir), Some(name)) = (profile.parent(), profile.file_name()) else {
        return;
    };
    let current = fs::read_link(profile).ok();
    let prefix = format!("{}-", name.to_string_lossy());
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let is_generation = file.starts_with(&prefix) && file.ends_with("-link");
        let is_current = current
            .as_ref()
            .is_some_and(|c| c.file_name().is_some_and(|n| n.to_string_lossy() == file));
        if is_generation && !is_current {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            let skip = name.starts_with('.') || name == "target" || name == "node_modules";
            if !skip && depth < 8 {
                nix_files(&path, out, depth + 1);
            }
        } else if name.ends_with(".nix") || (depth == 0 && name == "flake.lock") {
            out.push(path);
        }
    }
}

/// The directories of the flake's local `path` inputs, from its `flake.lock`
/// (relative ones resolved against `dir`): their contents are what nix evaluates,
/// wherever they live.
pub fn local_inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(lock) = fs::read(dir.join("flake.lock")) else {
        return Vec::new();
    };
    let Ok(lock) = serde_json::from_slice::<serde_json::Value>(&lock) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = lock["nodes"]
        .as_object()
        .into_iter()
        .flat_map(|nodes| nodes.values())
        .filter_map(|node| {
            let locked = &node["locked"];
            (locked["type"] == "path")
                .then(|| locked["path"].as_str())
                .flatten()
                .map(|p| dir.join(p))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every file under `dir` (not `.git`, `target`, `node_modules`), at most `left`.
fn all_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize, left: &mut usize) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        if *left == 0 {
            return;
        }
        let name = entry.file_name();
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            let skip = name == ".git" || name == "target" || name == "node_modules";
            if !skip && depth < 16 {
                all_files(&entry.path(), out, depth + 1, left);
            }
        } else {
            *left -= 1;
            out.push(entry.path());
        }
    }
}

/// The most files of local inputs read into a fingerprint.
const MAX_INPUT_FILES: usize = 20_000;

/// Hashes one file of an input as nix copies it: a regular file by its bytes (read
/// in pieces, opened non-blocking), a symlink by its target (nix copies the link, not
/// what it points to), anything else (a FIFO, a device, a socket) by its kind only,
/// never opened: reading one would block for ever or never end.
fn hash_entry(h: &mut Sha256, path: &Path) {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let Ok(meta) = fs::symlink_metadata(path) else {
        h.update(b"unreadable");
        return;
    };
    let ft = meta.file_type();
    if ft.is_symlink() {
        h.update(b"link");
        if let Ok(target) = fs::read_link(path) {
            h.update(target.as_os_str().as_encoded_bytes());
        }
        return;
    }
    if !ft.is_file() {
        let kind: &[u8] = if ft.is_fifo() {
            b"fifo"
        } else if ft.is_socket() {
            b"socket"
        } else {
            b"device"
        };
        h.update(kind);
        return;
    }
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path);
    // Opened, it must still be the regular file looked at (not swapped for a FIFO).
    let file = opened
        .ok()
        .filter(|f| f.metadata().is_ok_and(|m| m.is_file()));
    let Some(mut file) = file else {
        h.update(b"unreadable");
        return;
    };
    h.update(meta.len().to_le_bytes());
    if std::io::copy(&mut file, h).is_err() {
        h.update(b"unreadable");
    }
}

/// The fingerprint of a flake directory under a nix binary and options: its `.nix`
/// files and `flake.lock` and the files of its local `path` inputs by content, the
/// directory's other files by name, size and modification time (nix is handed the
/// whole directory, and its evaluation may read any file of it), the nix binary,
/// the platform and the options. Any change there invalidates the entry, as it
/// makes `nix develop` evaluate again.
pub fn fingerprint(dir: &Path, nix: &Path, options: &[(String, String)]) -> String {
    fingerprint_except(dir, nix, options, None)
}

/// [`fingerprint`], leaving out the directory `except` when it lies inside `dir`: the
/// cache directory itself, whose entries and GC roots change with every evaluation.
pub fn fingerprint_except(
    dir: &Path,
    nix: &Path,
    options: &[(String, String)],
    except: Option<&Path>,
) -> String {
    let mut h = Sha256::new();
    h.update(CACHE_SCHEMA.to_le_bytes());
    let mut files = Vec::new();
    nix_files(dir, &mut files, 0);
    files.sort();
    let mut left = MAX_INPUT_FILES;
    for input in local_inputs(dir) {
        // An input inside the flake's directory is the flake itself (or part of it):
        // its .nix files are in already; its other files count too.
        let mut of_input = Vec::new();
        all_files(&input, &mut of_input, 0, &mut left);
        of_input.sort();
        files.extend(of_input);
    }
    // A file's name within the flake's directory, then what it holds.
    let name = |h: &mut Sha256, f: &Path| {
        h.update(
            f.strip_prefix(dir)
                .unwrap_or(f)
                .as_os_str()
                .as_encoded_bytes(),
        );
        h.update([0]);
    };
    for f in &files {
        name(&mut h, f);
        hash_entry(&mut h, f);
    }
    // Every other file of the flake's directory: `path:<dir>` hands nix the whole
    // directory, and an evaluation may read any of it (`builtins.readFile
    // ./rust-toolchain`, `Cargo.toml`, `go.mod`). By name, size and modification time
    // (a stat, not a read: cheap on a big project); `.git`, `target` and
    // `node_modules` are left out.
    let mut rest = Vec::new();
    all_files(dir, &mut rest, 0, &mut left);
    rest.retain(|f| !files.contains(f) && !except.is_some_and(|e| f.starts_with(e)));
    rest.sort();
    for f in &rest {
        h.update(b"stat");
        name(&mut h, f);
        if let Ok(m) = fs::symlink_metadata(f) {
            h.update(m.size().to_le_bytes());
            h.update(m.mtime().to_le_bytes());
            h.update(m.mtime_nsec().to_le_bytes());
        }
    }
    let nix = fs::canonicalize(nix).unwrap_or_else(|_| nix.to_path_buf());
    h.update(nix.as_os_str().as_encoded_bytes());
    if let Ok(m) = fs::metadata(&nix) {
        h.update(m.size().to_le_bytes());
        h.update(m.mtime().to_le_bytes());
        h.update(m.mtime_nsec().to_le_bytes());
    }
    h.update(std::env::consts::ARCH.as_bytes());
    h.update(std::env::consts::OS.as_bytes());
    for (k, v) in options {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize())
}

/// Why a cache file was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheMiss {
    /// There is none.
    Absent,
    /// It could not be read or parsed (truncated, corrupted).
    Unreadable(String),
    /// It was written by another cache schema.
    OtherSchema(u32),
}

/// Reads the entry at `path`.
pub fn read(path: &Path) -> Result<CacheEntry, CacheMiss> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CacheMiss::Absent),
        Err(e) => return Err(CacheMiss::Unreadable(e.to_string())),
    };
    #[derive(Deserialize)]
    struct Schema {
        schema: u32,
    }
    match serde_json::from_slice::<Schema>(&bytes) {
        Ok(s) if s.schema != CACHE_SCHEMA => return Err(CacheMiss::OtherSchema(s.schema)),
        Ok(_) => {}
        Err(e) => return Err(CacheMiss::Unreadable(e.to_string())),
    }
    serde_json::from_slice(&bytes).map_err(|e| CacheMiss::Unreadable(e.to_string()))
}

/// Writes `entry` to `path` atomically (a temporary file renamed into place).
pub fn write(path: &Path, entry: &CacheEntry) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&serde_json::to_vec(entry).map_err(std::io::Error::other)?)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_follows_every_file_nix_is_handed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("flake.nix"), "{}").unwrap();
        let nix = Path::new("/bin/sh");
        let first = fingerprint(d, nix, &[]);
        // A file the flake may read (`builtins.readFile ./rust-toolchain`).
        fs::write(d.join("rust-toolchain"), "1.88").unwrap();
        let a = fingerprint(d, nix, &[]);
        assert_ne!(first, a);
        // What is left out: git's own files, build output.
        fs::create_dir(d.join(".git")).unwrap();
        fs::write(d.join(".git/index"), "x").unwrap();
        assert_eq!(a, fingerprint(d, nix, &[]));
        fs::create_dir(d.join("nix")).unwrap();
        fs::write(d.join("nix/shell.nix"), "{ }").unwrap();
        let b = fingerprint(d, nix, &[]);
        assert_ne!(a, b);
        fs::write(d.join("flake.lock"), "{}").unwrap();
        let c = fingerprint(d, nix, &[]);
        assert_ne!(b, c);
        assert_ne!(
            c,
            fingerprint(d, nix, &[("sandbox".into(), "false".into())])
        );
    }

    #[test]
    fn fingerprint_follows_the_files_of_local_path_inputs() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("project");
        let lib = root.path().join("lib");
        fs::create_dir_all(&d).unwrap();
        fs::create_dir_all(&lib).unwrap();
        fs::write(d.join("flake.nix"), "{}").unwrap();
        fs::write(lib.join("greeting.txt"), "hi").unwrap();
        fs::write(
            d.join("flake.lock"),
            r#"{"nodes":{"lib":{"locked":{"path":"../lib","type":"path"}},
                "root":{"inputs":{"lib":"lib"}}},"root":"root","version":7}"#,
        )
        .unwrap();
        assert_eq!(local_inputs(&d), vec![d.join("../lib")]);
        let nix = Path::new("/bin/sh");
        let a = fingerprint(&d, nix, &[]);
        // A file of the input, nix or not: a new entry.
        fs::write(lib.join("greeting.txt"), "hello").unwrap();
        assert_ne!(a, fingerprint(&d, nix, &[]));
    }

    #[test]
    fn round_trip_and_misses() {
        let dir = tempfile::tempdir().unwrap();
        let path = entry_path(dir.path(), Path::new("/some/flake"));
        assert_eq!(read(&path), Err(CacheMiss::Absent));
        let entry = CacheEntry {
            schema: CACHE_SCHEMA,
            fingerprint: "f".into(),
            dir: "/some/flake".into(),
            shell: ShellEnv::default(),
        };
        write(&path, &entry).unwrap();
        assert_eq!(read(&path).unwrap(), entry);
        fs::write(&path, br#"{"schema":99,"whatever":1}"#).unwrap();
        assert_eq!(read(&path), Err(CacheMiss::OtherSchema(99)));
        fs::write(&path, br#"{"schema":1,"fingerpr"#).unwrap();
        assert!(matches!(read(&path), Err(CacheMiss::Unreadable(_))));
    }
}
