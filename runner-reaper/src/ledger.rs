//! The ledger: one JSON record per process group we started.
//!
//! Records live in `$RUNNER_STATE_DIR/runs` (default `$XDG_STATE_HOME/runner/runs`,
//! else `~/.local/state/runner/runs`), a directory of mode 0700; each file is
//! `<pgid>.<owner pid>-<owner start time>.json` (older runners wrote `<pgid>.json`),
//! mode 0600, written atomically (a temporary file renamed into place). The owner in
//! the name lets a caller see from one listing that every record's owner is alive,
//! so nothing needs a sweep, without reading a record (see `sweep.rs`).
//! A record is written *before* the group's leader runs its program and removed when
//! the group ends, so a crash of the owner at any moment leaves a record behind.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use runner_core::os;
use serde::{Deserialize, Serialize};

/// The record format version written today.
pub const RECORD_SCHEMA: u32 = 1;

/// What can go wrong reading or writing the ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// A file system operation failed.
    #[error("failed to {action} `{}`", .path.display())]
    Io {
        /// The operation, as a "failed to ..." fragment.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A process could not be read from the process table (usually: it is gone).
    #[error("failed to read process {pid} from the process table")]
    Proc {
        /// The pid.
        pid: i32,
        /// What the platform said.
        #[source]
        source: std::io::Error,
    },
    /// The runs directory is not ours or is too open.
    #[error("refusing to use ledger directory `{}`: {reason}", .path.display())]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// A record could not be encoded.
    #[error("failed to encode a ledger record")]
    Encode(#[from] serde_json::Error),
}

/// One process group we started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Format version ([`RECORD_SCHEMA`]).
    pub schema: u32,
    /// The process group id.
    pub pgid: i32,
    /// The group leader's pid.
    pub leader_pid: i32,
    /// The leader's start time (clock ticks since boot, `/proc/<pid>/stat` field 22).
    pub leader_start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` when the record was written.
    pub boot_id: String,
    /// The pid of the process that started the group (the owner).
    pub owner_pid: i32,
    /// The owner's start time.
    pub owner_start_time: u64,
    /// The owner's pid namespace ([`runner_core::os::pid_namespace`]): the pids and
    /// group ids of this record mean something only there. A record of another
    /// namespace (a runner in a sandbox sharing this state directory) is never judged
    /// from here. Absent where there are no namespaces, and in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_pid_ns: Option<u64>,
    /// The command line.
    pub argv: Vec<String>,
    /// The working directory.
    pub cwd: PathBuf,
    /// The group's token: the leader's environment holds
    /// [`GROUP_TOKEN_VAR`]`=<token>`, and so do its descendants that keep their
    /// environment. It is the proof the sweep needs before it signals members of a
    /// group whose leader is gone. Absent from records of other writers: then such
    /// members are never signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The environment variable that carries a group's [`Record::token`].
pub const GROUP_TOKEN_VAR: &str = "RUNNER_GROUP_TOKEN";

/// A token for a new group: unique among this boot's groups (owner pid, owner start
/// time, a counter) and not guessable by another user (128 random bits drawn once per
/// process).
pub fn new_group_token() -> Result<String, LedgerError> {
    static SECRET: OnceLock<u128> = OnceLock::new();
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let secret = match SECRET.get() {
        Some(s) => *s,
        None => {
            let mut bytes = [0u8; 16];
            let path = Path::new("/dev/urandom");
            std::io::Read::read_exact(
                &mut fs::File::open(path).map_err(|source| LedgerError::Io {
                    action: "open",
                    path: path.to_path_buf(),
                    source,
                })?,
                &mut bytes,
            )
            .map_err(|source| LedgerError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            })?;
            *SECRET.get_or_init(|| u128::from_ne_bytes(bytes))
        }
    };
    let owner = current_owner()?;
    Ok(format!(
        "{:x}-{:x}-{}-{}",
        owner.0,
        owner.1,
        SEQ.fetch_add(1, Ordering::Relaxed),
        secret ^ u128::from(owner.1)
    ))
}

/// True when the environment of `pid` holds exactly `GROUP_TOKEN_VAR=token`.
pub fn carries_token(pid: i32, token: &str) -> bool {
    let mut wanted = Vec::with_capacity(GROUP_TOKEN_VAR.len() + 1 + token.len());
    wanted.extend_from_slice(GROUP_TOKEN_VAR.as_bytes());
    wanted.push(b'=');
    wanted.extend_from_slice(token.as_bytes());
    os::environ_contains(pid, &wanted)
}

impl Record {
    /// True for a *pending* record: written by the portable spawn path before its
    /// leader exists (`pgid`, `leader_pid` and `leader_start_time` are 0, the token
    /// is set), completed into the group's record once the spawn returned. A sweep finds
    /// the group of a pending record whose owner died by its token alone.
    pub fn is_pending(&self) -> bool {
        self.pgid == 0 && self.leader_pid == 0
    }

    /// A record for a group led by `leader_pid` (whose pgid is its pid), owned by the
    /// calling process. Reads both start times and the boot id from `/proc`.
    pub fn for_group(
        pgid: i32,
        leader_pid: i32,
        argv: Vec<String>,
        cwd: PathBuf,
    ) -> Result<Record, LedgerError> {
        let owner = current_owner()?;
        Ok(Record {
            schema: RECORD_SCHEMA,
            pgid,
            leader_pid,
            leader_start_time: start_time(leader_pid)?,
            boot_id: boot_id()?.to_string(),
            owner_pid: owner.0,
            owner_start_time: owner.1,
            owner_pid_ns: runner_core::os::pid_namespace(),
            argv,
            cwd,
            token: None,
        })
    }
}

/// The fields of a record that the parent knows before its leader exists.
#[derive(Serialize)]
struct UnbornTail<'a> {
    schema: u32,
    boot_id: &'a str,
    owner_pid: i32,
    owner_start_time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_pid_ns: Option<u64>,
    argv: &'a [String],
    cwd: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

/// The JSON of a record owned by the calling process, without its opening `{` and
/// without `pgid`, `leader_pid` and `leader_start_time`: a leader that writes its
/// own record between `fork` and `exec` prefixes `{"pgid":P,"leader_pid":P,
/// "leader_start_time":T,` and has a whole [`Record`]. Reads no `/proc` entry after
/// the first call.
pub(crate) fn unborn_record_tail(
    argv: &[String],
    cwd: &Path,
    token: Option<&str>,
) -> Result<Vec<u8>, LedgerError> {
    let owner = current_owner()?;
    let mut json = serde_json::to_vec(&UnbornTail {
        schema: RECORD_SCHEMA,
        boot_id: boot_id()?,
        owner_pid: owner.0,
        owner_start_time: owner.1,
        owner_pid_ns: runner_core::os::pid_namespace(),
        argv,
        cwd,
        token,
    })?;
    json.remove(0);
    Ok(json)
}

/// The start time of `pid` (see [`runner_core::os`] for its unit).
pub fn start_time(pid: i32) -> Result<u64, LedgerError> {
    os::process(pid)
        .map(|p| p.start_time)
        .map_err(|source| LedgerError::Proc { pid, source })
}

/// True when `pid` names a process that still runs (see
/// [`runner_core::os::ProcessInfo::running`]).
pub fn process_running(pid: i32) -> bool {
    os::process(pid).is_ok_and(|p| p.running)
}

/// This boot's id ([`runner_core::os::boot_id`]).
pub fn boot_id() -> Result<&'static str, LedgerError> {
    os::boot_id().map_err(|source| LedgerError::Io {
        action: "read the boot id from",
        path: PathBuf::from(if cfg!(target_os = "macos") {
            "sysctl kern.bootsessionuuid"
        } else {
            "/proc/sys/kernel/random/boot_id"
        }),
        source,
    })
}

/// This process as an owner: its pid and start time ([`runner_core::os::owner_identity`]).
pub(crate) fn current_owner() -> Result<(i32, u64), LedgerError> {
    let me = os::owner_identity().map_err(|source| LedgerError::Proc {
        pid: std::process::id() as i32,
        source,
    })?;
    Ok((me.pid, me.start_time))
}

/// The state directory: `$RUNNER_STATE_DIR`, else `$XDG_STATE_HOME/runner`, else
/// `~/.local/state/runner`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RUNNER_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("runner");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/".into());
    home.join(".local/state/runner")
}

/// Spare record files one process keeps per ledger, at most.
const MAX_SPARES: usize = 32;
/// The name of a spare record file: `.spare-<owner pid>-<owner start time>-<n>`.
const SPARE_PREFIX: &str = ".spare-";

/// A ledger rooted at one state directory.
///
/// Clones share a small pool of *spare* record files: when a group ends its record
/// is renamed to a spare name instead of being unlinked, and the next group's
/// leader overwrites a spare and renames it into place. Creating a file is the most
/// expensive step of registration on journaling file systems (an inode each time);
/// a rename costs a fraction of it. The first record a pool ends is removed all the
/// same: a process that ends one group may start no other (`runner run`), and a
/// spare it kept would cost a rename and an unlink for nothing; from the second on,
/// the process is one that starts groups again and again. Spares are named after
/// their owner, never read
/// as records, removed when the last clone of the ledger is dropped, and removed by
/// any sweep once their owner is dead.
#[derive(Debug, Clone)]
pub struct Ledger {
    runs: PathBuf,
    spares: Arc<SparePool>,
}

impl PartialEq for Ledger {
    fn eq(&self, other: &Self) -> bool {
        self.runs == other.runs
    }
}

impl Eq for Ledger {}

#[derive(Debug, Default)]
struct SparePool {
    /// The pool's owner pid; a forked child has another and starts its own.
    files: Mutex<(i32, Vec<PathBuf>)>,
    /// Whether a record was ended through this pool (the first is removed).
    ended_one: std::sync::atomic::AtomicBool,
}

/// The numbers of spare file names, one sequence for the whole process: every ledger
/// of a process (one per environment) names its spares after the same owner, so a
/// sequence per ledger gave two ledgers the same name, and one's rename took the
/// other's spare from under it (a record write then failed with `NotFound`).
static SPARE_SEQ: AtomicU64 = AtomicU64::new(0);

impl Drop for SparePool {
    fn drop(&mut self) {
        let files = self.files.get_mut().unwrap_or_else(|p| p.into_inner());
        if files.0 == std::process::id() as i32 {
            for path in files.1.drain(..) {
                let _ = fs::remove_file(path);
            }
        }
    }
}

/// The name of a temporary record file: `.tmp-<owner pid>-<owner start time>-<unique>`.
const TEMP_PREFIX: &str = ".tmp-";
/// The name of a pending record: `pending-<owner pid>-<owner start time>-<n>.json`.
pub(crate) const PENDING_PREFIX: &str = "pending-";

/// The owner that a spare or temporary file's name gives: pid and start time. Such a
/// file whose owner is gone is garbage: nobody will rename it into place.
pub(crate) fn spare_owner(file_name: &str) -> Option<(i32, u64)> {
    let rest = file_name
        .strip_prefix(SPARE_PREFIX)
        .or_else(|| file_name.strip_prefix(TEMP_PREFIX))?;
    let (owner, unique) = owner_in(rest)?;
    unique.filter(|unique| !unique.is_empty())?;
    Some(owner)
}

/// The owner `<owner pid>-<owner start>` a file name's part begins with, and what
/// follows it after a `-`, if anything.
fn owner_in(part: &str) -> Option<((i32, u64), Option<&str>)> {
    let mut parts = part.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    Some(((pid, start), parts.next()))
}

/// The owner a record's file name gives, `<pgid>.<owner pid>-<owner start>.json` or
/// `pending-<owner pid>-<owner start>-<n>.json`; `None` for an older runner's
/// `<pgid>.json` and anything else.
pub(crate) fn record_owner(file_name: &str) -> Option<(i32, u64)> {
    let stem = file_name.strip_suffix(".json")?;
    match stem.strip_prefix(PENDING_PREFIX) {
        Some(rest) => owner_in(rest).map(|(owner, _)| owner),
        None => {
            let (pgid, owner) = stem.split_once('.')?;
            pgid.parse::<i32>().ok()?;
            match owner_in(owner)? {
                (owner, None) => Some(owner),
                _ => None,
            }
        }
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::at(default_state_dir())
    }
}

impl Ledger {
    /// A ledger whose records live in `state_dir/runs`.
    pub fn at(state_dir: impl Into<PathBuf>) -> Self {
        Ledger {
            runs: state_dir.into().join("runs"),
            spares: Arc::default(),
        }
    }

    /// Takes a spare record file of this process for the next record to overwrite
    /// and rename into place (see [`Ledger`]); `None` when there is none.
    pub fn take_spare(&self) -> Option<PathBuf> {
        let mut files = self.spares.files.lock().unwrap_or_else(|p| p.into_inner());
        if files.0 != std::process::id() as i32 {
            return None;
        }
        files.1.pop()
    }

    /// Ends the record of `pgid` like [`remove_record`](Self::remove_record), but
    /// keeps the file as a spare for this process's next record while the pool has
    /// room (from the second record it ends, see [`Ledger`]). A missing record is
    /// not an error.
    pub fn recycle_record(&self, pgid: i32) -> Result<(), LedgerError> {
        self.retire(&self.record_path(pgid))
    }

    /// The path prefix of this process's temporary record files,
    /// `<runs>/.tmp-<owner pid>-<owner start time>-`: a writer appends something
    /// unique (a spawned leader appends its pid). Named after the owner, so a sweep
    /// removes those left by an owner that died mid-write.
    pub fn temp_prefix(&self) -> Result<PathBuf, LedgerError> {
        let owner = current_owner()?;
        Ok(self
            .runs
            .join(format!("{TEMP_PREFIX}{}-{}-", owner.0, owner.1)))
    }

    /// The directory holding the records.
    pub fn runs_dir(&self) -> &Path {
        &self.runs
    }

    /// Where this process's record of `pgid` lives: named after its group and its
    /// owner, this process (see the module documentation).
    pub fn record_path(&self, pgid: i32) -> PathBuf {
        match current_owner() {
            Ok((pid, start)) => self.record_path_of(pgid, pid, start),
            Err(_) => self.runs.join(format!("{pgid}.json")),
        }
    }

    /// Where the record of `pgid` started by the owner `(owner_pid, owner_start)`
    /// lives.
    pub fn record_path_of(&self, pgid: i32, owner_pid: i32, owner_start: u64) -> PathBuf {
        self.runs
            .join(format!("{pgid}.{owner_pid}-{owner_start}.json"))
    }

    /// The record of `pgid` whoever wrote it: this process's name, an older runner's
    /// `<pgid>.json`, else another owner's (one listing).
    fn find_record(&self, pgid: i32) -> Option<PathBuf> {
        let mine = self.record_path(pgid);
        if fs::symlink_metadata(&mine).is_ok() {
            return Some(mine);
        }
        let legacy = self.runs.join(format!("{pgid}.json"));
        if fs::symlink_metadata(&legacy).is_ok() {
            return Some(legacy);
        }
        let prefix = format!("{pgid}.");
        fs::read_dir(&self.runs)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && record_owner(n).is_some())
            })
    }

    /// Creates the runs directory (mode 0700) if needed and checks it is ours and
    /// closed to others.
    pub fn ensure_dir(&self) -> Result<(), LedgerError> {
        let io = |action, source| LedgerError::Io {
            action,
            path: self.runs.clone(),
            source,
        };
        // One `lstat` when the directory exists (every spawn checks it); created
        // only when it cannot be looked at (missing, or a parent is no directory).
        let meta = match fs::symlink_metadata(&self.runs) {
            Err(_) => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.runs)
                    .map_err(|e| io("create", e))?;
                fs::symlink_metadata(&self.runs)
            }
            other => other,
        }
        .map_err(|e| io("inspect", e))?;
        let unsafe_dir = |reason: String| LedgerError::UnsafeDir {
            path: self.runs.clone(),
            reason,
        };
        if meta.file_type().is_symlink() {
            return Err(unsafe_dir("it is a symlink".into()));
        }
        if !meta.is_dir() {
            return Err(unsafe_dir("it is not a directory".into()));
        }
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(unsafe_dir(format!("it is owned by uid {}", meta.uid())));
        }
        if meta.mode() & 0o077 != 0 {
            fs::set_permissions(
                &self.runs,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .map_err(|e| io("restrict the permissions of", e))?;
        }
        Ok(())
    }

    /// Writes (or replaces) the record of `record.pgid` atomically, named after its
    /// group and its owner.
    pub fn write_record(&self, record: &Record) -> Result<PathBuf, LedgerError> {
        let body = serde_json::to_vec_pretty(record)?;
        let target = self.record_path_of(record.pgid, record.owner_pid, record.owner_start_time);
        self.put(&target, &body)?;
        Ok(target)
    }

    /// Writes the record of `pgid`, already encoded, atomically.
    pub(crate) fn write_record_bytes(&self, pgid: i32, body: &[u8]) -> Result<(), LedgerError> {
        self.put(&self.record_path(pgid), body).map(drop)
    }

    /// Writes `body` to `target` atomically: into one of this process's spare files
    /// (no new inode) or a fresh temporary file, then renamed into place. Returns the
    /// file, still open for writing.
    pub(crate) fn put(&self, target: &Path, body: &[u8]) -> Result<fs::File, LedgerError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let io = |action, path: &Path, source| LedgerError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        let spare = self.take_spare().and_then(|path| {
            // Not truncated to zero: shortened after the write (ext4 flushes a file
            // truncated to zero and renamed over another, which costs milliseconds).
            let file = OpenOptions::new()
                .write(true)
                .truncate(false)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&path)
                .ok()?;
            Some((path, file))
        });
        let (tmp, mut file) = match spare {
            Some(spare) => spare,
            None => {
                let mut tmp = self.temp_prefix()?.into_os_string();
                tmp.push(format!("w{}", SEQ.fetch_add(1, Ordering::Relaxed)));
                let tmp = PathBuf::from(tmp);
                let create = || {
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(nix::libc::O_NOFOLLOW)
                        .open(&tmp)
                };
                // The directory is checked when it has to be created, not on every
                // write.
                let file = match create() {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        self.ensure_dir()?;
                        create()
                    }
                    other => other,
                }
                .map_err(|e| io("create", &tmp, e))?;
                (tmp, file)
            }
        };
        let written = file.write_all(body).and_then(|()| {
            if file.metadata()?.len() > body.len() as u64 {
                file.set_len(body.len() as u64)?;
            }
            Ok(())
        });
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io("write", &tmp, e));
        }
        if let Err(e) = fs::rename(&tmp, target) {
            let _ = fs::remove_file(&tmp);
            return Err(io("rename into place", target, e));
        }
        Ok(file)
    }

    /// Retires the file at `path` (a record of this process): renamed to a spare
    /// while the pool has room (after its first, see [`Ledger`]), else removed. A
    /// missing file is not an error.
    pub(crate) fn retire(&self, path: &Path) -> Result<(), LedgerError> {
        let owner = current_owner().ok();
        let mut files = self.spares.files.lock().unwrap_or_else(|p| p.into_inner());
        let again = self.spares.ended_one.swap(true, Ordering::Relaxed);
        let spare = match owner {
            Some(owner) if again && (files.1.len() < MAX_SPARES || files.0 != owner.0) => {
                if files.0 != owner.0 {
                    *files = (owner.0, Vec::new());
                }
                let n = SPARE_SEQ.fetch_add(1, Ordering::Relaxed);
                Some(
                    self.runs
                        .join(format!("{SPARE_PREFIX}{}-{}-{n}", owner.0, owner.1)),
                )
            }
            _ => None,
        };
        let done = match &spare {
            Some(spare) => fs::rename(path, spare),
            None => fs::remove_file(path),
        };
        match done {
            Ok(()) => {
                files.1.extend(spare);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LedgerError::Io {
                action: "retire",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Where a pending record of this process lives (see [`Record::is_pending`]):
    /// `<runs>/pending-<owner pid>-<owner start time>-<n>.json`.
    pub(crate) fn pending_path(&self) -> Result<PathBuf, LedgerError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let owner = current_owner()?;
        Ok(self.runs.join(format!(
            "{PENDING_PREFIX}{}-{}-{}.json",
            owner.0,
            owner.1,
            SEQ.fetch_add(1, Ordering::Relaxed)
        )))
    }

    /// Removes the record of `pgid`; a missing record is not an error.
    pub fn remove_record(&self, pgid: i32) -> Result<(), LedgerError> {
        let Some(path) = self.find_record(pgid) else {
            return Ok(());
        };
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LedgerError::Io {
                action: "remove",
                path,
                source,
            }),
        }
    }

    /// Reads the record of `pgid`, if there is one.
    pub fn read_record(&self, pgid: i32) -> Result<Option<Record>, LedgerError> {
        let Some(path) = self.find_record(pgid) else {
            return Ok(None);
        };
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LedgerError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }
}

/// Writes `record` into the default ledger (see [`default_state_dir`]). For spawners
/// outside this workspace that start their own process groups and want them reaped
/// if their owner dies.
pub fn write_record(record: &Record) -> Result<PathBuf, LedgerError> {
    Ledger::default().write_record(record)
}

/// Removes the record of `pgid` from the default ledger.
pub fn remove_record(pgid: i32) -> Result<(), LedgerError> {
    Ledger::default().remove_record(pgid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_read_remove_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::at(dir.path().join("state"));
        let me = std::process::id() as i32;
        let rec = Record::for_group(me, me, vec!["x".into()], "/".into()).unwrap();
        assert_eq!(rec.owner_pid, me);
        assert_eq!(rec.leader_start_time, rec.owner_start_time);
        let path = ledger.write_record(&rec).unwrap();
        assert_eq!(path, ledger.record_path(me));
        let dir_mode = fs::metadata(ledger.runs_dir())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let file_mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(file_mode & 0o777, 0o600);
        assert_eq!(ledger.read_record(me).unwrap(), Some(rec.clone()));
        // Only the record, no temporary file left behind.
        assert_eq!(fs::read_dir(ledger.runs_dir()).unwrap().count(), 1);
        ledger.remove_record(me).unwrap();
        ledger.remove_record(me).unwrap();
        assert_eq!(ledger.read_record(me).unwrap(), None);
    }

    #[test]
    fn record_of_a_missing_process_is_an_error() {
        let err = Record::for_group(i32::MAX - 1, i32::MAX - 1, vec![], "/".into()).unwrap_err();
        assert!(matches!(err, LedgerError::Proc { .. }), "{err}");
    }
}
