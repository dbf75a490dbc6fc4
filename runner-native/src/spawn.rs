//! Spawning a process group leader that is registered before it runs its program.
//!
//! Between `fork` and `exec` the child writes its own ledger record: the parent
//! prepares every byte it can (the runs directory, the owner, argv, cwd, boot id) and
//! the child adds what only it knows (its pid, which is also its process group id, and
//! its start time from `/proc/self/stat`), writes a temporary file and renames it into
//! place, using only async-signal-safe system calls on preallocated buffers. If any
//! step fails the child does not exec: no program runs without a record, and there is
//! no window in which an owner crash could leave an unrecorded group.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::libc;
use nix::unistd::pipe2;
use runner_reaper::{Ledger, Record};
use tokio::process::{Child, Command};

/// errno a child reports when it could not write its record (exec never returns it).
const REGISTRATION_FAILED: i32 = libc::ENOTRECOVERABLE;

/// Why a spawn failed.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// The OS could not start the program.
    Spawn(io::Error),
    /// The ledger record could not be written; the program never ran.
    Ledger(String),
}

/// Where a group is registered, so the supervisor can remove the record.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub(crate) ledger: Ledger,
    pub(crate) pgid: i32,
}

/// Spawns `cmd` as the leader of a new process group. With a ledger, the group is
/// registered before the program runs.
pub(crate) fn spawn_group(
    mut cmd: Command,
    ledger: Option<Ledger>,
    argv: Vec<String>,
    cwd: PathBuf,
) -> Result<(Child, Option<Registration>), SpawnError> {
    cmd.process_group(0);
    let Some(ledger) = ledger else {
        return cmd.spawn().map(|c| (c, None)).map_err(SpawnError::Spawn);
    };
    let ledger_err = |e: runner_reaper::LedgerError| SpawnError::Ledger(e.to_string());
    if !ledger.runs_dir().is_dir() {
        ledger.ensure_dir().map_err(ledger_err)?;
    }
    let me = std::process::id() as i32;
    // Everything but the child's own pid and start time, which it fills in.
    let template = Record::for_group(me, me, argv, cwd).map_err(ledger_err)?;
    let (report_r, report_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| SpawnError::Spawn(e.into()))?;
    let mut writer = ChildRecordWriter::new(&ledger, &template, report_w.as_raw_fd());
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls on buffers allocated before the fork.
    unsafe {
        cmd.pre_exec(move || writer.write());
    }
    let result = cmd.spawn();
    drop(report_w);
    match result {
        Ok(child) => {
            let pgid = child.id().unwrap_or(0) as i32;
            Ok((child, Some(Registration { ledger, pgid })))
        }
        Err(e) => {
            // The child may have registered before its exec failed: take it back.
            if let Some(pid) = reported_pid(&report_r) {
                let _ = ledger.remove_record(pid);
            }
            if e.raw_os_error() == Some(REGISTRATION_FAILED) {
                Err(SpawnError::Ledger(format!(
                    "failed to write a record into `{}`",
                    ledger.runs_dir().display()
                )))
            } else {
                Err(SpawnError::Spawn(e))
            }
        }
    }
}

/// The pid a failed child reported before it died, if it got that far.
fn reported_pid(report_r: &OwnedFd) -> Option<i32> {
    let mut buf = [0u8; 4];
    match nix::unistd::read(report_r, &mut buf) {
        Ok(4) => Some(i32::from_ne_bytes(buf)),
        _ => None,
    }
}

/// The child's half of registration, prepared by the parent.
struct ChildRecordWriter {
    /// `<runs>/` as bytes.
    dir: Vec<u8>,
    /// The record's JSON after the fields the child fills in, without its `{`.
    rest: Vec<u8>,
    /// Scratch space for the JSON and the two paths; never grown in the child.
    json: Vec<u8>,
    tmp_path: Vec<u8>,
    path: Vec<u8>,
    report_fd: i32,
}

impl ChildRecordWriter {
    fn new(ledger: &Ledger, template: &Record, report_fd: i32) -> Self {
        let mut dir = ledger.runs_dir().as_os_str().as_encoded_bytes().to_vec();
        dir.push(b'/');
        let full = serde_json::to_vec(template).unwrap_or_default();
        // `{"schema":1,"pgid":..,"leader_pid":..,"leader_start_time":..,<rest>`: the
        // child writes its own values for the three leading fields, then the rest.
        let rest = strip_child_fields(&full);
        ChildRecordWriter {
            json: Vec::with_capacity(rest.len() + 128),
            tmp_path: Vec::with_capacity(dir.len() + 40),
            path: Vec::with_capacity(dir.len() + 40),
            dir,
            rest,
            report_fd,
        }
    }

    /// Runs in the forked child. No allocation: every push stays within capacity.
    fn write(&mut self) -> io::Result<()> {
        let fail = || Err(io::Error::from_raw_os_error(REGISTRATION_FAILED));
        // SAFETY (whole body): raw system calls on buffers this child owns.
        unsafe {
            let pid = libc::getpid();
            let pid_bytes = pid.to_ne_bytes();
            libc::write(self.report_fd, pid_bytes.as_ptr().cast(), 4);
            let Some(start) = own_start_time() else {
                return fail();
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
            self.tmp_path.extend_from_slice(&self.dir);
            self.tmp_path.extend_from_slice(b".child.");
            self.tmp_path
                .extend_from_slice(decimal(pid as u64, &mut num));
            self.tmp_path.extend_from_slice(b".tmp\0");
            self.path.clear();
            self.path.extend_from_slice(&self.dir);
            self.path.extend_from_slice(decimal(pid as u64, &mut num));
            self.path.extend_from_slice(b".json\0");

            let fd = libc::open(
                self.tmp_path.as_ptr().cast(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            );
            if fd < 0 {
                return fail();
            }
            let mut off = 0;
            while off < self.json.len() {
                let n = libc::write(fd, self.json[off..].as_ptr().cast(), self.json.len() - off);
                if n < 0 {
                    if *libc::__errno_location() == libc::EINTR {
                        continue;
                    }
                    libc::close(fd);
                    libc::unlink(self.tmp_path.as_ptr().cast());
                    return fail();
                }
                off += n as usize;
            }
            libc::close(fd);
            if libc::rename(self.tmp_path.as_ptr().cast(), self.path.as_ptr().cast()) != 0 {
                libc::unlink(self.tmp_path.as_ptr().cast());
                return fail();
            }
        }
        Ok(())
    }
}

/// Removes `"schema"`, `"pgid"`, `"leader_pid"` and `"leader_start_time"` from the
/// front of a serialized record, keeping `"schema"` and the rest. Relies on the field
/// order of [`Record`] (schema, pgid, leader_pid, leader_start_time, ...), which a test
/// pins.
fn strip_child_fields(full: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(full);
    let schema_end = text.find(",\"pgid\":").unwrap_or(0);
    let schema = &text[1..schema_end]; // "schema":1
    let after = text
        .find(",\"boot_id\":")
        .map(|i| &text[i + 1..])
        .unwrap_or("}");
    format!("{schema},{after}").into_bytes()
}

/// Formats `n` in decimal into `buf`, returning the digits.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
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

/// Field 22 of `/proc/self/stat`, read with raw system calls.
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

    #[test]
    fn start_time_matches_procfs() {
        let me = std::process::id() as i32;
        let expected = procfs::process::Process::new(me)
            .unwrap()
            .stat()
            .unwrap()
            .starttime;
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
        let rest = strip_child_fields(&serde_json::to_vec(&template).unwrap());
        let json = format!(
            "{{\"pgid\":7,\"leader_pid\":7,\"leader_start_time\":9,{}",
            String::from_utf8(rest).unwrap()
        );
        let parsed: Record = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (parsed.pgid, parsed.leader_pid, parsed.leader_start_time),
            (7, 7, 9)
        );
        assert_eq!(parsed.argv, template.argv);
        assert_eq!(parsed.cwd, template.cwd);
        assert_eq!(parsed.owner_start_time, template.owner_start_time);
        assert_eq!(parsed.schema, template.schema);
    }
}
