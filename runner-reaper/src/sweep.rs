//! The sweep: reap the process groups of owners that died.
//!
//! A group is reaped only when its owner is dead (pid gone, or alive with another
//! start time: reused) and its leader is still the process that was recorded (same
//! start time), or the leader is gone and members of the group remain. Records of
//! groups that are gone are removed. Records that are not regular files, are
//! symlinks, belong to another user, cannot be parsed or point at pid 1 or at our own
//! process group are set aside into `runs/aside/`, never followed or signalled.
//! Sweeps are serialized across processes with an exclusive lock on `runs/.lock`; a
//! sweep repeats until a pass reaps nothing (owners can be reaped groups themselves)
//! and stops at its deadline. Independent groups are reaped in parallel: all are
//! signalled at once and watched together through one `/proc` snapshot per look.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::ledger::{boot_id, spare_owner, start_time, Ledger, Record};

/// The default time a group gets between SIGTERM and SIGKILL during a sweep.
pub const SWEEP_GRACE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

/// A group the sweep ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReapedGroup {
    /// The process group id.
    pub pgid: i32,
    /// The command line from the record.
    pub argv: Vec<String>,
    /// True when SIGTERM was not enough and the group was SIGKILLed.
    pub killed: bool,
}

/// A record moved aside instead of being acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// Where the record was.
    pub path: PathBuf,
    /// Why it was not trusted.
    pub reason: String,
}

/// What a sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Groups that were signalled and ended.
    pub reaped: Vec<ReapedGroup>,
    /// Records removed because their group was already gone.
    pub removed: Vec<i32>,
    /// Records set aside.
    pub set_aside: Vec<SetAside>,
    /// Records left alone because their owner is alive.
    pub live: usize,
    /// Problems that did not stop the sweep.
    pub errors: Vec<String>,
    /// True when the deadline cut the sweep short.
    pub timed_out: bool,
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for g in &self.reaped {
            let how = if g.killed { "SIGKILL" } else { "SIGTERM" };
            writeln!(
                f,
                "reaped process group {} ({how}): {}",
                g.pgid,
                g.argv.join(" ")
            )?;
        }
        for pgid in &self.removed {
            writeln!(f, "removed the record of ended process group {pgid}")?;
        }
        for a in &self.set_aside {
            writeln!(f, "set aside {}: {}", a.path.display(), a.reason)?;
        }
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        if self.timed_out {
            writeln!(f, "the sweep stopped at its deadline")?;
        }
        writeln!(
            f,
            "{} reaped, {} removed, {} set aside, {} live",
            self.reaped.len(),
            self.removed.len(),
            self.set_aside.len(),
            self.live
        )
    }
}

/// Sweeps the default ledger (see [`crate::default_state_dir`]).
pub fn reap_stale_process_groups(deadline: Duration) -> SweepReport {
    Ledger::default().reap_stale(deadline, SWEEP_GRACE)
}

/// One read of every process in `/proc`, shared by all decisions of a pass.
#[derive(Debug, Default)]
struct Snapshot {
    /// pid -> (start time, state letter)
    procs: HashMap<i32, (u64, char)>,
    /// pgid -> live (non-zombie) members as (pid, start time)
    groups: HashMap<i32, Vec<(i32, u64)>>,
}

impl Snapshot {
    fn take() -> Snapshot {
        let mut snap = Snapshot::default();
        let Ok(all) = procfs::process::all_processes() else {
            return snap;
        };
        for stat in all.filter_map(|p| p.ok()?.stat().ok()) {
            snap.procs.insert(stat.pid, (stat.starttime, stat.state));
            if stat.state != 'Z' {
                snap.groups
                    .entry(stat.pgrp)
                    .or_default()
                    .push((stat.pid, stat.starttime));
            }
        }
        snap
    }

    /// True when `pid` is alive (not a zombie) and started at `start`.
    fn is(&self, pid: i32, start: u64) -> bool {
        self.procs
            .get(&pid)
            .is_some_and(|(t, state)| *t == start && *state != 'Z')
    }

    fn exists(&self, pid: i32) -> bool {
        self.procs.contains_key(&pid)
    }

    fn members(&self, pgid: i32) -> &[(i32, u64)] {
        self.groups.get(&pgid).map(Vec::as_slice).unwrap_or(&[])
    }
}

enum Verdict {
    Live,
    Gone,
    Reap(Record),
    Aside(String),
}

impl Ledger {
    /// Sweeps this ledger: see the module documentation.
    pub fn reap_stale(&self, deadline: Duration, grace: Duration) -> SweepReport {
        let started = Instant::now();
        let mut report = SweepReport::default();
        if !self.runs_dir().exists() {
            return report;
        }
        if let Err(e) = self.ensure_dir() {
            report.errors.push(e.to_string());
            return report;
        }
        let _lock = match self.lock(started + deadline) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                report.timed_out = true;
                return report;
            }
            Err(e) => {
                report.errors.push(e);
                return report;
            }
        };
        loop {
            if started.elapsed() >= deadline {
                report.timed_out = true;
                break;
            }
            report.live = 0;
            let mut to_reap = Vec::new();
            for (path, verdict) in self.judge_all(&mut report) {
                match verdict {
                    Verdict::Live => report.live += 1,
                    Verdict::Gone => {
                        if let Some(pgid) = pgid_of(&path) {
                            match fs::remove_file(&path) {
                                Ok(()) => report.removed.push(pgid),
                                Err(e) => report
                                    .errors
                                    .push(format!("failed to remove {}: {e}", path.display())),
                            }
                        }
                    }
                    Verdict::Aside(reason) => self.set_aside(&path, reason, &mut report),
                    Verdict::Reap(record) => to_reap.push((path, record)),
                }
            }
            if to_reap.is_empty() {
                break;
            }
            let remaining = deadline.saturating_sub(started.elapsed());
            let pgids: Vec<i32> = to_reap.iter().map(|(_, r)| r.pgid).collect();
            let killed = end_groups(&pgids, grace.min(remaining), remaining);
            for ((path, record), killed) in to_reap.into_iter().zip(killed) {
                if let Err(e) = fs::remove_file(&path) {
                    report
                        .errors
                        .push(format!("failed to remove {}: {e}", path.display()));
                }
                report.reaped.push(ReapedGroup {
                    pgid: record.pgid,
                    argv: record.argv,
                    killed,
                });
            }
        }
        report
    }

    fn lock(&self, until: Instant) -> Result<Option<Flock<File>>, String> {
        let path = self.runs_dir().join(".lock");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| format!("failed to open {}: {e}", path.display()))?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(Some(lock)),
                Err((f, Errno::EWOULDBLOCK)) => {
                    if Instant::now() >= until {
                        return Ok(None);
                    }
                    file = f;
                    std::thread::sleep(POLL);
                }
                Err((_, e)) => return Err(format!("failed to lock {}: {e}", path.display())),
            }
        }
    }

    fn judge_all(&self, report: &mut SweepReport) -> Vec<(PathBuf, Verdict)> {
        let entries = match fs::read_dir(self.runs_dir()) {
            Ok(rd) => rd,
            Err(e) => {
                report
                    .errors
                    .push(format!("failed to list {}: {e}", self.runs_dir().display()));
                return Vec::new();
            }
        };
        let mut paths = Vec::new();
        for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.starts_with('.') && name.ends_with(".json") {
                paths.push(path);
            } else if let Some((pid, start)) = spare_owner(name) {
                // A spare record file of an owner that is gone: nobody will reuse it.
                if start_time(pid).ok() != Some(start) {
                    if let Err(e) = fs::remove_file(&path) {
                        report
                            .errors
                            .push(format!("failed to remove {}: {e}", path.display()));
                    }
                }
            }
        }
        if paths.is_empty() {
            // Nothing to judge (the common last pass): no need to read /proc.
            return Vec::new();
        }
        let snap = Snapshot::take();
        paths
            .into_iter()
            .map(|p| {
                let v = judge(&p, &snap);
                (p, v)
            })
            .collect()
    }

    fn set_aside(&self, path: &Path, reason: String, report: &mut SweepReport) {
        let aside = self.runs_dir().join("aside");
        let moved = fs::create_dir_all(&aside).and_then(|()| {
            let name = path
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default();
            let mut target = aside.join(&name);
            let mut n = 0;
            while target.symlink_metadata().is_ok() {
                n += 1;
                target = aside.join(format!("{}.{n}", name.to_string_lossy()));
            }
            fs::rename(path, target)
        });
        if let Err(e) = moved {
            report
                .errors
                .push(format!("failed to set aside {}: {e}", path.display()));
        }
        report.set_aside.push(SetAside {
            path: path.to_path_buf(),
            reason,
        });
    }
}

fn pgid_of(path: &Path) -> Option<i32> {
    path.file_stem()?.to_str()?.parse().ok()
}

fn judge(path: &Path, snap: &Snapshot) -> Verdict {
    // One open that refuses symlinks (and never blocks on a FIFO), then fstat: what we
    // check is what we read.
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Verdict::Aside("it is a symlink".into())
        }
        Err(e) => return Verdict::Aside(format!("cannot open: {e}")),
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Verdict::Aside(format!("cannot inspect: {e}")),
    };
    if !meta.is_file() {
        return Verdict::Aside("it is not a regular file".into());
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Verdict::Aside(format!("it is owned by uid {}", meta.uid()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    let record: Record = match std::io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => return Verdict::Aside(format!("unreadable record: {e}")),
    };
    if pgid_of(path) != Some(record.pgid) {
        return Verdict::Aside("the file name does not match the record's group".into());
    }
    if record.pgid <= 1 || record.leader_pid != record.pgid {
        return Verdict::Aside(format!("it names process group {}", record.pgid));
    }
    if record.pgid == nix::unistd::getpgrp().as_raw() {
        return Verdict::Aside("it names our own process group".into());
    }
    match boot_id() {
        Ok(id) if id != record.boot_id => return Verdict::Gone,
        _ => {}
    }
    if snap.is(record.owner_pid, record.owner_start_time) {
        return Verdict::Live;
    }
    if snap.is(record.leader_pid, record.leader_start_time) {
        return Verdict::Reap(record);
    }
    if snap.exists(record.leader_pid) {
        // The leader's pid now belongs to another process: not ours.
        return Verdict::Gone;
    }
    // The leader is gone. Members left in its group still hold the group id, so it
    // cannot have been reused: they are ours, if they started after the leader.
    let left = snap.members(record.pgid);
    if !left.is_empty() && left.iter().all(|(_, t)| *t >= record.leader_start_time) {
        return Verdict::Reap(record);
    }
    Verdict::Gone
}

/// Ends all `pgids` at once: SIGTERM to every group, up to `grace` for them to go,
/// then SIGKILL to those left. Returns, per group, whether SIGKILL was needed.
fn end_groups(pgids: &[i32], grace: Duration, limit: Duration) -> Vec<bool> {
    let started = Instant::now();
    let mut killed = vec![false; pgids.len()];
    let mut pending: Vec<usize> = (0..pgids.len())
        .filter(|&i| killpg(Pid::from_raw(pgids[i]), Signal::SIGTERM) != Err(Errno::ESRCH))
        .collect();
    // No event tells us a group emptied; look again quickly at first, then less often.
    let mut pause = Duration::from_millis(1);
    while !pending.is_empty() {
        let snap = Snapshot::take();
        pending.retain(|&i| !snap.members(pgids[i]).is_empty());
        if pending.is_empty() || started.elapsed() >= limit.max(grace) + Duration::from_secs(1) {
            break;
        }
        if started.elapsed() >= grace {
            for &i in &pending {
                if !killed[i] {
                    let _ = killpg(Pid::from_raw(pgids[i]), Signal::SIGKILL);
                    killed[i] = true;
                }
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(POLL);
    }
    killed
}
