//! `runner run` inside a real pseudo-terminal (runner is the session leader with the
//! pty as its controlling terminal, as under a terminal emulator): the command gets
//! the terminal itself — `isatty` on every stream, Ctrl-C reaches it and ends the job
//! with 130, a window resize reaches it, Ctrl-Z stops the job and `fg` resumes it,
//! and the terminal's modes are restored however it ends. In a container the command
//! gets a pseudo-terminal of its own, sized like runner's, with the same behaviour.

mod common;
use common::{docker_available, IMAGE};

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::pty::{openpty, Winsize};
use nix::sys::termios::{tcgetattr, LocalFlags};

struct Session {
    child: Child,
    master: std::fs::File,
    slave: OwnedFd,
    out: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
    _tmp: tempfile::TempDir,
}

impl Session {
    /// `runner run --backend native ARGS...` on a fresh 24x80 pty.
    fn start(args: &[&str]) -> Session {
        Session::start_on(&["--backend", "native"], args)
    }

    /// `runner run BACKEND_ARGS... -- ARGS...` on a fresh 24x80 pty.
    fn start_on(backend: &[&str], args: &[&str]) -> Session {
        let tmp = tempfile::tempdir().unwrap();
        let size = Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).unwrap();
        let slave = pty.slave;
        let mut cmd = Command::new(common::runner_bin());
        cmd.args(["run", "-q"])
            .args(backend)
            .arg("--")
            .args(args)
            .env("RUNNER_STATE_DIR", tmp.path().join("state"))
            .env("HOME", tmp.path())
            .env_remove("NO_COLOR")
            .current_dir(tmp.path())
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        // SAFETY: setsid and an ioctl on the child's own stdin, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().unwrap();
        let (tx, out) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Session {
            child,
            master,
            slave,
            out,
            seen: Vec::new(),
            _tmp: tmp,
        }
    }

    /// Waits until the terminal showed `want` (60 s at most).
    fn expect(&mut self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !String::from_utf8_lossy(&self.seen).contains(want) {
            match self
                .out
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(bytes) => self.seen.extend_from_slice(&bytes),
                Err(_) => panic!(
                    "waited for {want:?}, the terminal shows {:?}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
    }

    /// Resizes the terminal's window (its foreground group gets SIGWINCH).
    fn resize(&self, rows: u16, cols: u16) {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from our struct.
        let set = unsafe {
            nix::libc::ioctl(
                self.master.as_raw_fd(),
                nix::libc::TIOCSWINSZ as _,
                &size as *const Winsize,
            )
        };
        assert_eq!(set, 0);
    }

    fn type_bytes(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
    }

    /// runner's exit code (60 s at most).
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() >= deadline {
                while let Ok(bytes) = self.out.try_recv() {
                    self.seen.extend_from_slice(&bytes);
                }
                let sid = self.child.id();
                let tree = Command::new("sh")
                    .arg("-c")
                    .arg(format!("ps -o pid,pgid,tpgid,stat,args -s {sid}; for p in $(ps -o pid= -s {sid}); do echo $p; grep -E 'SigPnd|ShdPnd|SigBlk|SigIgn' /proc/$p/status; done"))
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                panic!(
                    "runner did not exit; the terminal shows {:?}; its session:\n{tree}",
                    String::from_utf8_lossy(&self.seen)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// ECHO and ICANON, as the terminal has them now.
    fn cooked(&self) -> (bool, bool) {
        let modes = tcgetattr(self.slave.as_fd()).unwrap();
        (
            modes.local_flags.contains(LocalFlags::ECHO),
            modes.local_flags.contains(LocalFlags::ICANON),
        )
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Ctrl-C cases wait in the shell's own `read`, not in a child it forks: `sh -c`
/// catches SIGINT while it runs, so a Ctrl-C between `echo ready` and the fork of a
/// `sleep` would reach the shell alone, which then waits for the sleep (as under any
/// terminal).
#[test]
fn the_command_gets_the_terminal_and_ctrl_c_ends_it_with_130() {
    let mut s = Session::start(&[
        "sh",
        "-c",
        "for fd in 0 1 2; do [ -t $fd ] && printf 'tty%s ' $fd; done; echo; echo ready; read line",
    ]);
    s.expect("tty0 tty1 tty2");
    s.expect("ready");
    s.type_bytes(b"\x03");
    assert_eq!(s.exit_code(), Some(130));
    assert_eq!(s.cooked(), (true, true));
}

#[test]
fn a_resize_reaches_the_command() {
    let mut s = Session::start(&[
        "sh",
        "-c",
        "trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done",
    ]);
    s.expect("ready");
    s.resize(40, 100);
    s.expect("40 100");
    assert_eq!(s.exit_code(), Some(0));
}

#[test]
fn the_terminal_modes_come_back_however_the_command_ends() {
    // It exits with the terminal raw and silent.
    let mut s = Session::start(&["sh", "-c", "stty raw -echo; echo ready; exit 3"]);
    s.expect("ready");
    assert_eq!(s.exit_code(), Some(3));
    assert_eq!(s.cooked(), (true, true));
    // It is killed with the terminal raw: runner forwards SIGTERM to its group.
    let mut s = Session::start(&["sh", "-c", "stty raw -echo; echo ready; sleep 100"]);
    s.expect("ready");
    assert_eq!(s.cooked(), (false, false));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(s.exit_code(), Some(143));
    assert_eq!(s.cooked(), (true, true));
}

#[test]
fn ctrl_z_stops_the_job_and_fg_resumes_it() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let mut s = Session::start(&["sh", "-c", "echo ready; read line; echo got:$line"]);
    s.expect("ready");
    s.type_bytes(b"\x1a");
    // runner stops itself once its command stopped, as a shell's job would.
    let runner = nix::unistd::Pid::from_raw(s.child.id() as i32);
    let status = waitpid(runner, Some(WaitPidFlag::WUNTRACED)).unwrap();
    assert!(
        matches!(status, WaitStatus::Stopped(_, _)),
        "runner: {status:?}"
    );
    // The terminal is runner's again while the job is stopped.
    let foreground = nix::unistd::tcgetpgrp(s.master.as_fd()).unwrap();
    assert_eq!(foreground, runner);
    // `fg`: continued, runner hands the terminal back and the command reads it.
    // What is typed meanwhile waits in the terminal for whoever reads it next.
    nix::sys::signal::kill(runner, nix::sys::signal::Signal::SIGCONT).unwrap();
    s.type_bytes(b"hello\n");
    s.expect("got:hello");
    assert_eq!(s.exit_code(), Some(0));
}

const DOCKER: [&str; 4] = ["--backend", "docker", "--image", IMAGE];

#[test]
fn a_container_process_gets_a_pseudo_terminal_of_its_own() {
    if !docker_available() {
        return;
    }
    // isatty on every stream, the size of runner's window, typed input echoed by
    // the container's terminal, Ctrl-C ending the job with 130.
    let mut s = Session::start_on(
        &DOCKER,
        &[
            "sh",
            "-c",
            "for fd in 0 1 2; do [ -t $fd ] && printf 'tty%s ' $fd; done; stty size; \
             echo ready; read line; echo got:$line; read line",
        ],
    );
    s.expect("tty0 tty1 tty2");
    s.expect("24 80");
    s.expect("ready");
    // runner's own terminal is raw meanwhile: the container's does the editing.
    assert_eq!(s.cooked(), (false, false));
    s.type_bytes(b"hello\r");
    s.expect("got:hello");
    s.type_bytes(b"\x03");
    assert_eq!(s.exit_code(), Some(130));
    assert_eq!(s.cooked(), (true, true));

    // A resize of runner's window reaches the process.
    let mut s = Session::start_on(
        &DOCKER,
        &[
            "sh",
            "-c",
            "trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done",
        ],
    );
    s.expect("ready");
    s.resize(40, 100);
    s.expect("40 100");
    assert_eq!(s.exit_code(), Some(0));
    assert_eq!(s.cooked(), (true, true));
}

/// A full-screen program killed with SIGKILL (it cannot clean up) leaves the
/// terminal as the shell had it: runner takes it out of the alternate screen,
/// application cursor keys and keypad mode, on every backend (once only its modes
/// came back, the screen stayed alternate with the keypad on).
#[test]
fn a_killed_full_screen_program_leaves_the_screen_as_it_was() {
    let script = "printf '\\033[?1049h\\033[?1h\\033='; echo ready; kill -9 $$";
    let mut backends: Vec<&[&str]> = vec![&["--backend", "native"]];
    if docker_available() {
        backends.push(&DOCKER);
    }
    for backend in backends {
        let mut s = Session::start_on(backend, &["sh", "-c", script]);
        s.expect("ready");
        assert_eq!(s.exit_code(), Some(137), "{backend:?}");
        s.expect("\x1b[?47l\x1b[?1l\x1b>");
        assert_eq!(s.cooked(), (true, true), "{backend:?}");
    }
}
