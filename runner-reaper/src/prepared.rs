//! The record a spawned child writes itself: see [`PreparedRecord`].

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::libc;

use crate::ledger::unborn_record_tail;
use crate::{Ledger, LedgerError};

/// The record of a group about to be spawned, prepared by the parent so that the
/// child can write it between `clone` and `exec` without allocating.
///
/// The parent prepares every byte it can (the runs directory, the owner, argv, cwd,
/// boot id, token, a spare file to overwrite) with [`PreparedRecord::prepare`], reads
/// the clock with [`mark_clone`](PreparedRecord::mark_clone) just before the clone,
/// and the child adds what only it knows (its pid, which is also its process group
/// id, and its start time) with [`write_in_child`](PreparedRecord::write_in_child).
/// The record format lives in this crate alone.
///
/// The portable spawn path (macOS, and Linux with `RUNNER_SPAWN=portable`) cannot
/// write from the child; it uses [`write_pending`](PreparedRecord::write_pending)
/// before the spawn and [`complete`](PreparedRecord::complete) after it.
#[derive(Debug)]
// The child-side buffers serve the Linux clone path only.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub struct PreparedRecord {
    /// `<runs>/` as bytes.
    dir: Vec<u8>,
    /// `<runs>/.tmp-<owner pid>-<owner start time>-`: the child adds its pid.
    tmp_prefix: Vec<u8>,
    /// The record's JSON after the fields the child fills in, without its `{`.
    rest: Vec<u8>,
    /// Scratch space for the JSON and the two paths; never grown in the child.
    json: Vec<u8>,
    tmp_path: Vec<u8>,
    path: Vec<u8>,
    /// What the record's name has after the leader's pid: `.<owner>.json`, NUL.
    suffix: Vec<u8>,
    /// A spare record file to overwrite (NUL-terminated), or empty.
    spare: Vec<u8>,
    /// Nanoseconds per clock tick (0: start times always come from `/proc`).
    #[cfg(target_os = "linux")]
    ns_per_tick: u64,
    /// The ledger, for the portable path's parent-side writes.
    ledger: Ledger,
    /// The pending record the portable path wrote (and its file, still open), until
    /// it is completed.
    pending: Option<(PathBuf, std::fs::File)>,
    /// The boot-time clock tick read in the parent just before the clone.
    tick_before: Option<u64>,
}

impl PreparedRecord {
    /// Prepares the record of a group with `argv` in `cwd` carrying `token`: checks
    /// the runs directory (as the sweep does), and takes a spare file if the ledger
    /// has one.
    pub fn prepare(
        ledger: &Ledger,
        argv: &[String],
        cwd: &Path,
        token: Option<&str>,
    ) -> Result<Self, LedgerError> {
        ledger.ensure_dir()?;
        let rest = unborn_record_tail(argv, cwd, token)?;
        let tmp_prefix = ledger.temp_prefix()?;
        Ok(Self::new(
            ledger,
            rest,
            tmp_prefix,
            ledger.take_spare().as_deref(),
        ))
    }

    /// `rest` is [`unborn_record_tail`]: the child writes its own values for the
    /// three leading fields, then `rest`.
    fn new(ledger: &Ledger, rest: Vec<u8>, tmp_prefix: PathBuf, spare: Option<&Path>) -> Self {
        let mut dir = ledger.runs_dir().as_os_str().as_encoded_bytes().to_vec();
        dir.push(b'/');
        // The record's name after the leader's pid: `.<owner>.json` (this process).
        let suffix = match crate::ledger::current_owner() {
            Ok((pid, start)) => format!(".{pid}-{start}.json\0"),
            Err(_) => ".json\0".to_string(),
        }
        .into_bytes();
        let tmp_prefix = tmp_prefix.into_os_string().into_encoded_bytes();
        PreparedRecord {
            tmp_path: Vec::with_capacity(tmp_prefix.len() + 24),
            tmp_prefix,
            json: Vec::with_capacity(rest.len() + 128),
            path: Vec::with_capacity(dir.len() + suffix.len() + 24),
            suffix,
            spare: spare
                .map(|p| {
                    let mut bytes = p.as_os_str().as_bytes().to_vec();
                    bytes.push(0);
                    bytes
                })
                .unwrap_or_default(),
            #[cfg(target_os = "linux")]
            ns_per_tick: ns_per_tick(),
            tick_before: None,
            ledger: ledger.clone(),
            pending: None,
            dir,
            rest,
        }
    }

    /// Reads the clock the child compares with; call last before the clone.
    #[cfg(target_os = "linux")]
    pub fn mark_clone(&mut self) {
        self.tick_before = boottime_tick(self.ns_per_tick);
    }

    /// The portable spawn path's first half, in the parent before the spawn: writes
    /// the record of a group with `argv` in `cwd` as *pending* (see
    /// [`Record::is_pending`](crate::Record::is_pending)) under a name of its own,
    /// so that an owner that dies during or right after the spawn leaves a record
    /// the sweep can act on: it finds the group by `token`, which the leader's
    /// environment must hold as [`GROUP_TOKEN_VAR`](crate::GROUP_TOKEN_VAR).
    pub fn write_pending(
        ledger: &Ledger,
        argv: &[String],
        cwd: &Path,
        token: &str,
    ) -> Result<Self, LedgerError> {
        ledger.ensure_dir()?;
        let rest = unborn_record_tail(argv, cwd, Some(token))?;
        let tmp_prefix = ledger.temp_prefix()?;
        let mut prepared = Self::new(ledger, rest, tmp_prefix, None);
        let path = ledger.pending_path()?;
        let file = ledger.put(&path, &prepared.json_for(None))?;
        prepared.pending = Some((path, file));
        Ok(prepared)
    }

    /// The portable spawn path's second half, once the spawn returned: writes the
    /// whole record of the leader `pid` (whose group id it is) started at
    /// `start_time`, in place under the group's name, then retires the pending record.
    ///
    /// The pending record's head has fixed-width fields, so completing it is one
    /// write of its first bytes in place (within one page: a signal cannot tear it)
    /// and one rename. An owner that dies between the two leaves a whole record under
    /// the pending name, which the sweep judges as a record.
    pub fn complete(&mut self, pid: i32, start_time: u64) -> Result<(), LedgerError> {
        use std::os::unix::fs::FileExt;
        let Some((pending, file)) = self.pending.take() else {
            return self
                .ledger
                .write_record_bytes(pid, &self.json_for(Some((pid, start_time))));
        };
        let head = self.head(Some((pid, start_time)));
        let io = |action, path: &Path, source| LedgerError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        file.write_all_at(&head, 0)
            .map_err(|e| io("complete the pending record", &pending, e))?;
        drop(file);
        let target = self.ledger.record_path(pid);
        std::fs::rename(&pending, &target).map_err(|e| io("rename into place", &target, e))
    }

    /// Removes the pending record (the spawn failed, nothing runs).
    pub fn abandon_pending(&mut self) {
        if let Some((pending, _)) = self.pending.take() {
            let _ = std::fs::remove_file(pending);
        }
    }

    /// The whole record's JSON for the leader (pid, start time), or pending.
    fn json_for(&self, leader: Option<(i32, u64)>) -> Vec<u8> {
        let mut json = self.head(leader);
        json.extend_from_slice(&self.rest);
        json
    }

    /// The record's first fields, the same length whatever their values (numbers
    /// padded with spaces, which JSON allows): 0s for a pending record.
    fn head(&self, leader: Option<(i32, u64)>) -> Vec<u8> {
        let (pid, start) = leader.unwrap_or((0, 0));
        format!("{{\"pgid\":{pid:<11},\"leader_pid\":{pid:<11},\"leader_start_time\":{start:<20},")
            .into_bytes()
    }

    /// Removes what a child `pid` that did not exec may have left: its temporary
    /// file, and the spare file it was given (if it is still where it was).
    pub fn clean_up_after(&self, pid: i32) {
        let mut tmp = self.tmp_prefix.clone();
        tmp.extend_from_slice(pid.to_string().as_bytes());
        let _ = std::fs::remove_file(OsStr::from_bytes(&tmp));
        if let Some((_, spare)) = self.spare.split_last() {
            let _ = std::fs::remove_file(OsStr::from_bytes(spare));
        }
    }

    /// Writes the record as the child `pid`, renamed into place; false (errno set)
    /// if it is not in place. No allocation: every push stays within the capacity
    /// reserved by [`prepare`](Self::prepare); only async-signal-safe system calls.
    ///
    /// # Safety
    /// For the child of a `clone(CLONE_VM | CLONE_VFORK)` (or `vfork`) between the
    /// clone and its `exec`, with every signal blocked, while the parent that owns
    /// this value sleeps: nothing else may touch `self` meanwhile, and the child
    /// must call nothing that allocates or locks.
    #[cfg(target_os = "linux")]
    pub unsafe fn write_in_child(&mut self, pid: i32) -> bool {
        // SAFETY (whole body): raw system calls on buffers this child owns.
        unsafe {
            // The start time is the kernel's CLOCK_BOOTTIME at the clone, in clock
            // ticks. The parent read the clock just before the clone and we read it
            // now; when both fall in the same tick, so does the start. Otherwise (about
            // one spawn in a thousand) `/proc/self/stat` says, at several times the cost.
            let start = match boottime_tick(self.ns_per_tick) {
                Some(now) if Some(now) == self.tick_before => Some(now),
                _ => own_start_time(),
            };
            let Some(start) = start else {
                return false;
            };
            let mut num = [0u8; 20];
            self.json.clear();
            self.json.extend_from_slice(b"{\"pgid\":");
            self.json.extend_from_slice(decimal(pid as u64, &mut num));
            self.json.extend_from_slice(b",\"leader_pid\":");
            self.json.extend_from_slice(decimal(pid as u64, &mut num));
            self.json.extend_from_slice(b",\"leader_start_time\":");
            self.json.extend_from_slice(decimal(start, &mut num));
            self.json.push(b',');
            self.json.extend_from_slice(&self.rest);

            self.tmp_path.clear();
            self.tmp_path.extend_from_slice(&self.tmp_prefix);
            self.tmp_path
                .extend_from_slice(decimal(pid as u64, &mut num));
            self.tmp_path.push(0);
            self.path.clear();
            self.path.extend_from_slice(&self.dir);
            self.path.extend_from_slice(decimal(pid as u64, &mut num));
            self.path.extend_from_slice(&self.suffix);

            // A spare is overwritten in place (no new inode); without one, or if it
            // is gone, a fresh temporary file.
            let mut from = self.spare.as_ptr();
            let mut fd = -1;
            if !self.spare.is_empty() {
                fd = libc::open(
                    from.cast(),
                    libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                );
            }
            if fd < 0 {
                from = self.tmp_path.as_ptr();
                fd = libc::open(
                    from.cast(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_TRUNC
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o600,
                );
                if fd < 0 {
                    return false;
                }
            }
            let old_len = libc::lseek(fd, 0, libc::SEEK_END);
            let mut off = 0;
            let mut ok = old_len >= 0;
            while ok && off < self.json.len() {
                let n = libc::pwrite(
                    fd,
                    self.json[off..].as_ptr().cast(),
                    self.json.len() - off,
                    off as libc::off_t,
                );
                if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                ok = n > 0;
                off += n.max(0) as usize;
            }
            // Shortening to a non-zero length, unlike truncating to zero, does not
            // make ext4 flush the file on close.
            if ok && old_len > off as libc::off_t {
                ok = libc::ftruncate(fd, off as libc::off_t) == 0;
            }
            libc::close(fd);
            if !ok || libc::rename(from.cast(), self.path.as_ptr().cast()) != 0 {
                libc::unlink(from.cast());
                return false;
            }
        }
        true
    }

    /// Removes the record [`write_in_child`](Self::write_in_child) put in place (the
    /// exec failed).
    ///
    /// # Safety
    /// As [`write_in_child`](Self::write_in_child), after it returned true.
    pub unsafe fn discard_in_child(&self) {
        // SAFETY: `path` was NUL-terminated by `write`.
        unsafe {
            libc::unlink(self.path.as_ptr().cast());
        }
    }
}

/// Formats `n` in decimal into `buf`, returning the digits.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Nanoseconds per `/proc` clock tick, or 0 when the kernel's conversion is not a
/// plain division (a tick count that does not divide a second).
#[cfg(target_os = "linux")]
fn ns_per_tick() -> u64 {
    static NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NS.get_or_init(|| {
        // SAFETY: a plain libc query.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        match u64::try_from(hz) {
            Ok(hz) if hz > 0 && 1_000_000_000 % hz == 0 => 1_000_000_000 / hz,
            _ => 0,
        }
    })
}

/// `CLOCK_BOOTTIME` in clock ticks, as `/proc/<pid>/stat` counts start times.
/// Async-signal-safe (the vDSO or one system call).
#[cfg(target_os = "linux")]
fn boottime_tick(ns_per_tick: u64) -> Option<u64> {
    if ns_per_tick == 0 {
        return None;
    }
    // SAFETY: clock_gettime into a stack value.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) != 0 {
            return None;
        }
        ts
    };
    let ns = u64::try_from(ts.tv_sec).ok()? * 1_000_000_000 + u64::try_from(ts.tv_nsec).ok()?;
    Some(ns / ns_per_tick)
}

/// Field 22 of `/proc/self/stat`, read with raw system calls.
#[cfg(target_os = "linux")]
fn own_start_time() -> Option<u64> {
    let mut buf = [0u8; 1024];
    // SAFETY: raw open/read/close into a stack buffer.
    let len = unsafe {
        let fd = libc::open(
            c"/proc/self/stat".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        if n <= 0 {
            return None;
        }
        n as usize
    };
    parse_start_time(&buf[..len])
}

/// Parses the start time out of a `/proc/<pid>/stat` line (the command name may hold
/// spaces and parentheses, so fields are counted after the last `)`).
#[cfg(target_os = "linux")]
fn parse_start_time(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|b| *b == b')')?;
    // After ") " come fields 3.. ; start time is field 22, the 20th of them.
    let field = stat[close + 1..]
        .split(|b| *b == b' ')
        .filter(|f| !f.is_empty())
        .nth(19)?;
    let mut n: u64 = 0;
    for d in field {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;

    #[test]
    #[cfg(target_os = "linux")]
    fn start_time_matches_procfs() {
        let me = std::process::id() as i32;
        let expected = runner_core::os::process(me).unwrap().start_time;
        assert_eq!(own_start_time(), Some(expected));
        let odd = b"12 (a) b (c) d) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0";
        assert_eq!(parse_start_time(odd), Some(4242));
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(1234567, &mut buf), b"1234567");
    }

    #[test]
    fn child_json_is_a_record() {
        let me = std::process::id() as i32;
        let template = Record::for_group(me, me, vec!["a \"q\"".into()], "/x y".into()).unwrap();
        let rest = unborn_record_tail(&template.argv, &template.cwd, Some("t-1")).unwrap();
        let json = format!(
            "{{\"pgid\":7,\"leader_pid\":7,\"leader_start_time\":9,{}",
            String::from_utf8(rest).unwrap()
        );
        let parsed: Record = serde_json::from_str(&json).unwrap();
        let expected = Record {
            pgid: 7,
            leader_pid: 7,
            leader_start_time: 9,
            token: Some("t-1".into()),
            ..template
        };
        assert_eq!(parsed, expected);
    }
}
