//! Starting a process without copying the helper: `posix_spawn(3)`.
//!
//! The helper runs a few threads per process it watches, so with hundreds alive its
//! address space holds hundreds of stacks. `fork` copies the page tables of all of
//! them for every process started, and the exec then tears the copy down: with 300
//! processes alive a start cost nine times what it cost with one (perf: the time in
//! `copy_page_range` and `unmap_page_range`). glibc's `posix_spawn` starts the child
//! in the helper's own memory (`CLONE_VM | CLONE_VFORK`) and reports a failed exec
//! as an errno, so a start costs the same however many processes run. std's
//! `Command` would use it too, but not in a static binary (it finds glibc's version
//! and `posix_spawn_file_actions_addchdir_np` by `dlsym`), nor with `PATH` set in the
//! child's environment: hence this module. The program is looked for on the child's
//! `PATH` as `execvp` does, a script without `#!` is run by `/bin/sh` as `execvp`
//! runs it, and every signal starts at its default disposition, unblocked.
//!
//! A terminal still uses `Command` (it needs `TIOCSCTTY` between fork and exec).

use std::ffi::{c_char, c_int, c_short, CString};
use std::io::{self, PipeReader, PipeWriter};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use crate::protocol::SpawnStage;

/// `posix_spawn_file_actions_t` (80 bytes in glibc's 64-bit ABIs; room to spare).
#[repr(C, align(8))]
struct FileActions([u8; 256]);
/// `posix_spawnattr_t` (336 bytes in glibc's 64-bit ABIs; room to spare).
#[repr(C, align(8))]
struct Attr([u8; 1024]);
/// `sigset_t` (128 bytes in glibc).
#[repr(C, align(8))]
struct SigSet([u64; 16]);

const POSIX_SPAWN_SETPGROUP: c_short = 0x02;
const POSIX_SPAWN_SETSIGDEF: c_short = 0x04;
const POSIX_SPAWN_SETSIGMASK: c_short = 0x08;
const EINTR: i32 = 4;
const ENOENT: i32 = 2;
const EACCES: i32 = 13;
const ENOEXEC: i32 = 8;
const ENOTDIR: i32 = 20;

extern "C" {
    fn posix_spawn_file_actions_init(fa: *mut FileActions) -> c_int;
    fn posix_spawn_file_actions_destroy(fa: *mut FileActions) -> c_int;
    fn posix_spawn_file_actions_adddup2(fa: *mut FileActions, fd: c_int, to: c_int) -> c_int;
    fn posix_spawn_file_actions_addchdir_np(fa: *mut FileActions, dir: *const c_char) -> c_int;
    fn posix_spawnattr_init(attr: *mut Attr) -> c_int;
    fn posix_spawnattr_destroy(attr: *mut Attr) -> c_int;
    fn posix_spawnattr_setflags(attr: *mut Attr, flags: c_short) -> c_int;
    fn posix_spawnattr_setpgroup(attr: *mut Attr, pgroup: c_int) -> c_int;
    fn posix_spawnattr_setsigmask(attr: *mut Attr, set: *const SigSet) -> c_int;
    fn posix_spawnattr_setsigdefault(attr: *mut Attr, set: *const SigSet) -> c_int;
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigfillset(set: *mut SigSet) -> c_int;
    fn posix_spawn(
        pid: *mut c_int,
        path: *const c_char,
        actions: *const FileActions,
        attr: *const Attr,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
}

/// A process started in a group of its own, with its pipes.
pub(crate) struct Launched {
    pub(crate) pid: u32,
    pub(crate) stdin: Option<PipeWriter>,
    pub(crate) stdout: PipeReader,
    pub(crate) stderr: PipeReader,
}

/// The spawn's attributes and file actions, destroyed when dropped.
struct Spawning {
    actions: Box<FileActions>,
    attr: Box<Attr>,
}

impl Spawning {
    fn new(dir: &CString, fds: [c_int; 3]) -> io::Result<Spawning> {
        let mut s = Spawning {
            actions: Box::new(FileActions([0; 256])),
            attr: Box::new(Attr([0; 1024])),
        };
        let check = |rc: c_int| {
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(rc))
            }
        };
        // SAFETY: each call gets a live, suitably sized and aligned object of the
        // type it expects (initialized by its `init` first), and C strings that
        // outlive the spawn. `destroy` runs once, in `Drop`, after both inits.
        unsafe {
            check(posix_spawn_file_actions_init(&mut *s.actions))?;
            check(posix_spawnattr_init(&mut *s.attr))?;
            for (to, fd) in fds.into_iter().enumerate() {
                check(posix_spawn_file_actions_adddup2(
                    &mut *s.actions,
                    fd,
                    to as c_int,
                ))?;
            }
            check(posix_spawn_file_actions_addchdir_np(
                &mut *s.actions,
                dir.as_ptr(),
            ))?;
            let mut none = SigSet([0; 16]);
            let mut all = SigSet([0; 16]);
            sigemptyset(&mut none);
            sigfillset(&mut all);
            check(posix_spawnattr_setsigmask(&mut *s.attr, &none))?;
            check(posix_spawnattr_setsigdefault(&mut *s.attr, &all))?;
            check(posix_spawnattr_setpgroup(&mut *s.attr, 0))?;
            check(posix_spawnattr_setflags(
                &mut *s.attr,
                POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK,
            ))?;
        }
        Ok(s)
    }

    /// Runs `path` with `argv` and `envp`; the errno of a failed exec.
    fn spawn(&self, path: &CString, argv: &[CString], envp: &[CString]) -> Result<u32, i32> {
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let (argv, envp) = (ptrs(argv), ptrs(envp));
        let mut pid: c_int = 0;
        // SAFETY: initialized attributes and actions; NULL-terminated arrays of C
        // strings that live across the call.
        let rc = unsafe {
            posix_spawn(
                &mut pid,
                path.as_ptr(),
                &*self.actions,
                &*self.attr,
                argv.as_ptr(),
                envp.as_ptr(),
            )
        };
        if rc == 0 {
            Ok(pid as u32)
        } else {
            Err(rc)
        }
    }
}

impl Drop for Spawning {
    fn drop(&mut self) {
        // SAFETY: both were initialized in `new` (a failed init leaves zeroes, which
        // glibc's destroy frees nothing of).
        unsafe {
            posix_spawn_file_actions_destroy(&mut *self.actions);
            posix_spawnattr_destroy(&mut *self.attr);
        }
    }
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(22))
}

/// Starts `argv` in `dir` with exactly `env` (`KEY=VALUE` entries), leading a new
/// process group, its stdin a pipe when `stdin` (else `/dev/null`), stdout and
/// stderr pipes. An error says whether the program failed (not found, not
/// executable) or the setup did.
pub(crate) fn launch(
    argv: &[Vec<u8>],
    env: &[Vec<u8>],
    dir: &[u8],
    stdin: bool,
) -> Result<Launched, (SpawnStage, io::Error)> {
    let setup = |e: io::Error| (SpawnStage::Setup, e);
    let refused = |errno: i32| (SpawnStage::Program, io::Error::from_raw_os_error(errno));
    let program = argv
        .first()
        .ok_or_else(|| setup(io::Error::from_raw_os_error(ENOENT)))?;
    let c_argv = argv
        .iter()
        .map(|a| c_string(a))
        .collect::<io::Result<Vec<_>>>()
        .map_err(setup)?;
    let c_env = env
        .iter()
        .map(|e| c_string(e))
        .collect::<io::Result<Vec<_>>>()
        .map_err(setup)?;
    let c_dir = c_string(dir).map_err(setup)?;
    let (in_read, in_write) = if stdin {
        let (r, w) = io::pipe().map_err(setup)?;
        (std::fs::File::from(std::os::fd::OwnedFd::from(r)), Some(w))
    } else {
        (std::fs::File::open("/dev/null").map_err(setup)?, None)
    };
    let (out_read, out_write) = io::pipe().map_err(setup)?;
    let (err_read, err_write) = io::pipe().map_err(setup)?;
    let spawning = Spawning::new(
        &c_dir,
        [
            in_read.as_raw_fd(),
            out_write.as_raw_fd(),
            err_write.as_raw_fd(),
        ],
    )
    .map_err(setup)?;
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix(b"PATH="))
        .unwrap_or(b"/bin:/usr/bin");
    // A program named by a path is run as named; one named by its name alone is
    // looked for on PATH.
    let searched = !program.contains(&b'/');
    let mut denied = None;
    let mut started = None;
    for candidate in candidates(program, path_var) {
        let Ok(path) = c_string(candidate.as_os_str().as_bytes()) else {
            continue;
        };
        if searched {
            // Looked at from the child's directory, where the exec resolves it.
            let seen = Path::new(std::ffi::OsStr::from_bytes(dir)).join(&candidate);
            match std::fs::metadata(&seen) {
                Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
                // As execvp: passed over, but said if nothing else is found.
                Ok(m) if m.is_file() => {
                    denied = Some(EACCES);
                    continue;
                }
                _ => continue,
            }
        }
        let spawned = match spawning.spawn(&path, &c_argv, &c_env) {
            Err(ENOEXEC) => {
                // As execvp: a file without `#!` is a shell script.
                let mut sh = vec![c_string(b"sh").map_err(setup)?, path.clone()];
                sh.extend(c_argv.iter().skip(1).cloned());
                spawning.spawn(&c_string(b"/bin/sh").map_err(setup)?, &sh, &c_env)
            }
            other => other,
        };
        match spawned {
            Ok(pid) => {
                started = Some(pid);
                break;
            }
            Err(EACCES) if searched => denied = Some(EACCES),
            Err(ENOENT | ENOTDIR) => {}
            Err(e) => return Err(refused(e)),
        }
    }
    drop(spawning);
    let Some(pid) = started else {
        return Err(refused(denied.unwrap_or(ENOENT)));
    };
    Ok(Launched {
        pid,
        stdin: in_write,
        stdout: out_read,
        stderr: err_read,
    })
}

/// Where `program` may be: itself when it names a path, else each directory of
/// `path_var` joined with it (an empty entry is the working directory).
fn candidates(program: &[u8], path_var: &[u8]) -> Vec<PathBuf> {
    let program = std::ffi::OsStr::from_bytes(program);
    if program.as_bytes().contains(&b'/') {
        return vec![PathBuf::from(program)];
    }
    path_var
        .split(|&b| b == b':')
        .map(|d| {
            let d = if d.is_empty() { &b"."[..] } else { d };
            Path::new(std::ffi::OsStr::from_bytes(d)).join(program)
        })
        .collect()
}

/// Waits for `pid` to end.
pub(crate) fn wait(pid: u32) -> io::Result<ExitStatus> {
    loop {
        let mut status: c_int = 0;
        // SAFETY: waitpid writes one int we own.
        let rc = unsafe { waitpid(pid as c_int, &mut status, 0) };
        if rc == pid as c_int {
            return Ok(ExitStatus::from_raw(status));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(EINTR) {
            return Err(e);
        }
    }
}
