//! The sweep: reap the process groups of owners that died.
//!
//! A group is reaped only when its owner is dead (pid gone, or alive with another
//! start time: reused) and its leader is still the process that was recorded (same
//! start time), or the leader is gone and members of the group remain. Records of
//! groups that are gone are removed. Records that are not regular files, are
//! symlinks, belong to another user, cannot be parsed or point at pid 1 are set aside
//! into `runs/aside/`, never followed or signalled. A record naming the sweeper's own
//! process group (a runner started by another runner) is hands-off: left in place.
//! Members of a group whose leader is gone are signalled only when one of them carries
//! the group's token in its environment.
//! Sweeps are serialized across processes with an exclusive lock on `runs/.lock`; a
//! sweep repeats until a pass reaps nothing (owners can be reaped groups themselves)
//! and stops at its deadline. Independent groups are reaped in parallel: all are
//! signalled at once, their processes' exits are awaited together through pidfds, and
//! one look at the whole `/proc` per round confirms which groups have emptied.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::ledger::{
    boot_id, carries_token, record_owner, spare_owner, Ledger, Record, PENDING_PREFIX,
};

/// The default time a group gets between SIGTERM and SIGKILL during a sweep.
pub const SWEEP_GRACE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

/// A group the sweep ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReapedGroup {
    /// The process group id.
    pub pgid: i32,
    /// The command line from the record.
    pub argv: Vec<String>,
    /// True when SIGTERM was not enough and the group was SIGKILLed.
    pub killed: bool,
}

/// A record moved aside instead of being acted on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetAside {
    /// Where the record was.
    pub path: PathBuf,
    /// Why it was not trusted.
    pub reason: String,
}

/// What a sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
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

/// Whether the default ledger holds anything a sweep would look at: a record, or a
/// spare file of an owner that is gone. One listing of its directory, no lock: a
/// caller that finds nothing (the common case) need not start the sweep at all.
pub fn ledger_needs_sweep() -> bool {
    Ledger::default().needs_sweep()
}

/// The members of process group `pgid` that still run (see
/// [`process_running`](crate::ledger::process_running)), from one read of the process
/// table.
pub fn running_members(pgid: i32) -> Vec<i32> {
    Snapshot::take()
        .members(pgid)
        .iter()
        .map(|(pid, _)| *pid)
        .collect()
}

/// One read of every process in the process table.
#[derive(Debug, Default)]
struct Snapshot {
    /// pid -> (start time, still running)
    procs: HashMap<i32, (u64, bool)>,
    /// pgid -> running members as (pid, start time)
    groups: HashMap<i32, Vec<(i32, u64)>>,
}

impl Snapshot {
    fn take() -> Snapshot {
        let mut snap = Snapshot::default();
        for p in runner_core::os::processes() {
            snap.procs.insert(p.pid, (p.start_time, p.running));
            if p.running {
                snap.groups
                    .entry(p.pgid)
                    .or_default()
                    .push((p.pid, p.start_time));
            }
        }
        snap
    }

    fn members(&self, pgid: i32) -> &[(i32, u64)] {
        self.groups.get(&pgid).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// What one pass of the sweep knows of `/proc`. Single processes (owners, leaders)
/// are read on demand and remembered; the whole process table, whose cost grows with
/// every process on the machine, is read only when a group's members are needed.
#[derive(Debug, Default)]
struct ProcView {
    /// pid -> (start time, still running), or None when there is no such process
    procs: HashMap<i32, Option<(u64, bool)>>,
    table: Option<Snapshot>,
}

impl ProcView {
    fn stat(&mut self, pid: i32) -> Option<(u64, bool)> {
        if let Some(table) = &self.table {
            return table.procs.get(&pid).copied();
        }
        *self.procs.entry(pid).or_insert_with(|| {
            let p = runner_core::os::process(pid).ok()?;
            Some((p.start_time, p.running))
        })
    }

    /// True when `pid` still runs and started at `start`.
    fn is(&mut self, pid: i32, start: u64) -> bool {
        self.stat(pid)
            .is_some_and(|(t, running)| t == start && running)
    }

    fn exists(&mut self, pid: i32) -> bool {
        self.stat(pid).is_some()
    }

    fn members(&mut self, pgid: i32) -> &[(i32, u64)] {
        self.table.get_or_insert_with(Snapshot::take).members(pgid)
    }

    /// Every running process, as (pid, pgid, start time).
    fn running(&mut self) -> impl Iterator<Item = Running> + '_ {
        let table = self.table.get_or_insert_with(Snapshot::take);
        table.groups.iter().flat_map(|(&pgid, members)| {
            members.iter().map(move |&(pid, start_time)| Running {
                pid,
                pgid,
                start_time,
            })
        })
    }
}

/// A running process in a [`Snapshot`].
#[derive(Debug, Clone, Copy)]
struct Running {
    pid: i32,
    pgid: i32,
    start_time: u64,
}

enum Verdict {
    Live,
    Gone,
    /// End these process groups (the record's own, or those a pending record's
    /// token was found in).
    Reap(Record, Vec<i32>),
    Aside(String),
}

impl Ledger {
    /// Whether this ledger holds anything a sweep would look at (see
    /// [`ledger_needs_sweep`]).
    pub fn needs_sweep(&self) -> bool {
        if fs::symlink_metadata(self.runs_dir()).is_err() {
            return false;
        }
        // A directory the sweep refuses (a symlink, not ours): the sweep says why.
        if self.ensure_dir().is_err() {
            return true;
        }
        let Ok(entries) = fs::read_dir(self.runs_dir()) else {
            return true;
        };
        // A record whose owner lives is that owner's (the sweep would judge it live
        // without acting): the owner is in its name, and each owner is looked up once.
        let mut owners: Vec<((i32, u64), bool)> = Vec::new();
        let mut gone = |owner: (i32, u64)| match owners.iter().find(|(o, _)| *o == owner) {
            Some((_, gone)) => *gone,
            None => {
                let gone = !runner_core::os::process_is(owner.0, owner.1);
                owners.push((owner, gone));
                gone
            }
        };
        entries.filter_map(|e| e.ok()).any(|e| {
            let name = e.file_name();
            let Some(name) = name.to_str() else {
                return false;
            };
            if !name.starts_with('.') && name.ends_with(".json") {
                // An older runner's record names no owner: judged by reading it.
                return record_owner(name).is_none_or(&mut gone);
            }
            spare_owner(name).is_some_and(&mut gone)
        })
    }

    /// Sweeps this ledger: see the module documentation.
    pub fn reap_stale(&self, deadline: Duration, grace: Duration) -> SweepReport {
        let started = Instant::now();
        let mut report = SweepReport::default();
        if !self.runs_dir().exists() {
            return report;
        }
        if let Err(e) = self.ensure_dir() {
            report.errors.push(describe(&e));
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
                    Verdict::Gone => match fs::remove_file(&path) {
                        // A pending record names no group: it is removed, not listed.
                        Ok(()) => report.removed.extend(pgid_of(&path)),
                        Err(e) => report
                            .errors
                            .push(format!("failed to remove {}: {e}", path.display())),
                    },
                    Verdict::Aside(reason) => self.set_aside(&path, reason, &mut report),
                    Verdict::Reap(record, pgids) => to_reap.push((path, record, pgids)),
                }
            }
            if to_reap.is_empty() {
                break;
            }
            let remaining = deadline.saturating_sub(started.elapsed());
            let mut pgids: Vec<i32> = to_reap.iter().flat_map(|(_, _, g)| g.clone()).collect();
            pgids.sort_unstable();
            pgids.dedup();
            let watch = ExitPoll::default();
            let killed = end_groups(&pgids, grace.min(remaining), remaining, watch);
            for (path, record, groups) in to_reap {
                if let Err(e) = fs::remove_file(&path) {
                    report
                        .errors
                        .push(format!("failed to remove {}: {e}", path.display()));
                }
                for pgid in groups {
                    let killed = pgids
                        .binary_search(&pgid)
                        .is_ok_and(|i| killed.get(i).copied().unwrap_or(false));
                    tracing::info!(pgid, argv = ?record.argv, killed, "reaped a stale process group");
                    report.reaped.push(ReapedGroup {
                        pgid,
                        argv: record.argv.clone(),
                        killed,
                    });
                }
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
                // A zombie owner (exited, its parent slow to reap it) is gone too.
                if !runner_core::os::process_is(pid, start) {
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
        let mut view = ProcView::default();
        paths
            .into_iter()
            .map(|p| {
                let v = judge(&p, &mut view);
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
        tracing::warn!(path = %path.display(), %reason, "set a ledger record aside");
        report.set_aside.push(SetAside {
            path: path.to_path_buf(),
            reason,
        });
    }
}

/// A ledger error with its cause, as the report prints it.
fn describe(e: &crate::LedgerError) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// The group a record's file name gives: `<pgid>.<owner>.json` or `<pgid>.json`.
fn pgid_of(path: &Path) -> Option<i32> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".json")?;
    stem.split_once('.')
        .map_or(stem, |(pgid, _)| pgid)
        .parse()
        .ok()
}

fn judge(path: &Path, procs: &mut ProcView) -> Verdict {
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
    let pending = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(PENDING_PREFIX));
    if pending && record.is_pending() {
        return judge_pending(record, procs);
    }
    // A completed record still under its pending name (its owner died between the
    // two steps of completing it) is judged as a record.
    if !pending && pgid_of(path) != Some(record.pgid) {
        return Verdict::Aside("the file name does not match the record's group".into());
    }
    // The owner its name gives is the record's: a sweep that skips records by the
    // owners in their names skips only what their owners would keep.
    let named_owner = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(record_owner);
    if named_owner.is_some_and(|o| o != (record.owner_pid, record.owner_start_time)) {
        return Verdict::Aside("the file name does not match the record's owner".into());
    }
    if record.pgid <= 1 || record.leader_pid != record.pgid {
        return Verdict::Aside(format!("it names process group {}", record.pgid));
    }
    if record.pgid == nix::unistd::getpgrp().as_raw() {
        // We run inside the group it names: a runner started by another runner
        // (whose record this is). Hands off: the record is its owner's to remove.
        return Verdict::Live;
    }
    if !same_pid_namespace(&record) {
        return Verdict::Live;
    }
    match boot_id() {
        Ok(id) if id != record.boot_id => return Verdict::Gone,
        _ => {}
    }
    if procs.is(record.owner_pid, record.owner_start_time) {
        return Verdict::Live;
    }
    if procs.is(record.leader_pid, record.leader_start_time) {
        let pgid = record.pgid;
        return Verdict::Reap(record, vec![pgid]);
    }
    if procs.exists(record.leader_pid) {
        // The leader's pid now belongs to another process: not ours.
        return Verdict::Gone;
    }
    // The leader is gone. The group id may belong to another group by now (ids come
    // back fast), so its members are ours only with proof that they descend from our
    // leader: the group's token in their environment. Start times alone prove
    // nothing. A member with the token pins the id, so the group is still ours.
    let left = procs.members(record.pgid);
    let Some(token) = record.token.as_deref() else {
        return Verdict::Gone;
    };
    if left
        .iter()
        .any(|&(pid, t)| t >= record.leader_start_time && carries_token(pid, token))
    {
        let pgid = record.pgid;
        return Verdict::Reap(record, vec![pgid]);
    }
    Verdict::Gone
}

/// True unless `record`'s owner lives in another pid namespace than ours (a runner in
/// a sandbox sharing the state directory): its pids and group ids are that
/// namespace's, so nothing about it can be judged, or signalled, from here.
fn same_pid_namespace(record: &Record) -> bool {
    record
        .owner_pid_ns
        .is_none_or(|ns| Some(ns) == runner_core::os::pid_namespace())
}

/// A pending record (the portable spawn path wrote it before its leader existed):
/// with its owner dead, the groups of every running process that started after the
/// owner and carries the record's token are its group (the leader's, and any its
/// descendants made while keeping their environment).
fn judge_pending(record: Record, procs: &mut ProcView) -> Verdict {
    let Some(token) = record.token.clone().filter(|_| record.is_pending()) else {
        return Verdict::Aside("a pending record without a token, or with a group".into());
    };
    if !same_pid_namespace(&record) {
        return Verdict::Live;
    }
    match boot_id() {
        Ok(id) if id != record.boot_id => return Verdict::Gone,
        _ => {}
    }
    if procs.is(record.owner_pid, record.owner_start_time) {
        return Verdict::Live;
    }
    let me = std::process::id() as i32;
    let own_group = nix::unistd::getpgrp().as_raw();
    let mut pgids: Vec<i32> = procs
        .running()
        .filter(|p| p.pid != me && p.start_time >= record.owner_start_time)
        .filter(|p| carries_token(p.pid, &token))
        .map(|p| p.pgid)
        .collect();
    pgids.sort_unstable();
    pgids.dedup();
    if pgids.contains(&own_group) {
        // We descend from that group (a runner started by a runner): hands off.
        return Verdict::Live;
    }
    pgids.retain(|&g| g > 1);
    if pgids.is_empty() {
        return Verdict::Gone;
    }
    Verdict::Reap(record, pgids)
}

/// Ends all `pgids` at once: SIGTERM to every group, up to `grace` for them to go,
/// then SIGKILL to those left. Returns, per group, whether SIGKILL was needed.
///
/// The kernel tells when a process exits (its pidfd turns readable) but not when a
/// group empties. So the leaders, just judged to be ours, are watched first; when
/// every watched process has exited (or the grace is over) one look at `/proc` says
/// which groups still have members, and those members are watched in turn.
fn end_groups(pgids: &[i32], grace: Duration, limit: Duration, mut watch: ExitPoll) -> Vec<bool> {
    let started = Instant::now();
    let hard_stop = started + limit.max(grace) + Duration::from_secs(1);
    let mut killed = vec![false; pgids.len()];
    for &pgid in pgids {
        watch.add(pgid);
    }
    let mut pending: Vec<usize> = (0..pgids.len())
        .filter(|&i| killpg(Pid::from_raw(pgids[i]), Signal::SIGTERM) != Err(Errno::ESRCH))
        .collect();
    let mut pause = Duration::from_millis(1);
    while !pending.is_empty() {
        let until = if pending.iter().all(|&i| killed[i]) {
            hard_stop
        } else {
            started + grace
        };
        watch.wait(until, pause);
        pause = (pause * 2).min(POLL);
        let snap = Snapshot::take();
        pending.retain(|&i| !snap.members(pgids[i]).is_empty());
        if pending.is_empty() || Instant::now() >= hard_stop {
            break;
        }
        for &i in &pending {
            for &(pid, _) in snap.members(pgids[i]) {
                watch.add(pid);
            }
            if !killed[i] && started.elapsed() >= grace {
                let _ = killpg(Pid::from_raw(pgids[i]), Signal::SIGKILL);
                killed[i] = true;
            }
        }
    }
    killed
}

/// Waits for processes to exit through their exit descriptors (pidfds on Linux,
/// kqueues on macOS: [`runner_core::os::exit_fd`]), which turn readable when a
/// process has exited (zombie or reaped). Without them (kernels before 5.3, no descriptor
/// left, nothing to watch) a wait is a short pause and the caller looks again.
#[derive(Debug, Default)]
struct ExitPoll {
    /// Processes not yet seen to exit.
    fds: Vec<OwnedFd>,
    /// Every pid ever watched: a pid is opened once.
    seen: HashSet<i32>,
    blind: bool,
}

impl ExitPoll {
    fn add(&mut self, pid: i32) {
        if self.blind || !self.seen.insert(pid) {
            return;
        }
        match runner_core::os::exit_fd(pid) {
            Ok(fd) => self.fds.push(fd),
            // Gone already: nothing to wait for.
            Err(e) if e.raw_os_error() == Some(Errno::ESRCH as i32) => {}
            Err(_) => self.go_blind(),
        }
    }

    fn go_blind(&mut self) {
        self.blind = true;
        self.fds.clear();
    }

    /// Returns when every watched process has exited or at `until`; blind, after
    /// `pause` at most.
    fn wait(&mut self, until: Instant, pause: Duration) {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            if self.blind || self.fds.is_empty() {
                std::thread::sleep(pause.min(left));
                return;
            }
            // Round up: a timeout of 0 ms would turn this into a busy loop.
            let ms = left.as_micros().div_ceil(1000);
            let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            let mut polled: Vec<PollFd> = self
                .fds
                .iter()
                .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut polled, timeout) {
                Ok(0) => return,
                Ok(_) => {
                    let exited: Vec<bool> = polled
                        .iter()
                        .map(|p| p.revents().is_none_or(|r| !r.is_empty()))
                        .collect();
                    drop(polled);
                    let mut exited = exited.into_iter();
                    self.fds.retain(|_| !exited.next().unwrap_or(true));
                }
                Err(Errno::EINTR) => {}
                Err(_) => self.go_blind(),
            }
            if self.fds.is_empty() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Command, Stdio};

    fn group(script: &str) -> std::process::Child {
        let mut child = Command::new("sh")
            .args(["-c", &format!("{script} & echo ready; wait")])
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut buf).unwrap();
        child
    }

    /// Kernels without pidfds: the same ending, found by looking at `/proc`.
    #[test]
    fn groups_end_without_pidfds_too() {
        let quick = group("sleep 300");
        let stubborn = group("trap '' TERM; while :; do sleep 1; done");
        let pgids = [quick.id() as i32, stubborn.id() as i32];
        let blind = ExitPoll {
            blind: true,
            ..ExitPoll::default()
        };
        // Long enough that the quick group never needs SIGKILL, even on a loaded machine.
        let grace = Duration::from_secs(2);
        let killed = end_groups(&pgids, grace, Duration::from_secs(20), blind);
        assert_eq!(killed, vec![false, true]);
        let snap = Snapshot::take();
        assert!(pgids.iter().all(|&g| snap.members(g).is_empty()));
        for (mut c, sig) in [(quick, 15), (stubborn, 9)] {
            assert_eq!(c.wait().unwrap().signal(), Some(sig));
        }
    }
}
