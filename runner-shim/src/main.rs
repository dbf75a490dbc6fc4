//! `runner-shim`: runner's resident helper inside a container. Started once per
//! environment as one long-lived exec, it spawns the owner's processes (each leading
//! its own process group) and multiplexes their stdin, stdout, stderr, signals and
//! exits over its own stdin and stdout (see `protocol.rs`). It listens on nothing.
//! When its stdin closes (the owner died, the engine restarted) it kills every
//! process group it started and exits, so nothing runs unowned.
//!
//! Standard library only, built static by runner-docker's build script.

// Shared with the owner, whose half (encoding requests) the helper does not use.
mod launch;
#[allow(dead_code)]
mod protocol;
// Shared with the owner, which uses all of it.
#[allow(dead_code)]
mod sync;
mod sync_agent;

use std::collections::HashMap;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsFd, AsRawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use protocol::{Fields, Frame, Kind, Spawn, SpawnStage, CHUNK, WINDOW};

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn posix_openpt(flags: i32) -> i32;
    fn grantpt(fd: i32) -> i32;
    fn unlockpt(fd: i32) -> i32;
    fn ptsname_r(fd: i32, buf: *mut u8, len: usize) -> i32;
    fn ioctl(fd: i32, request: u64, ...) -> i32;
    fn setsid() -> i32;
    fn poll(fds: *mut PollFd, nfds: u64, timeout: i32) -> i32;
}

/// `struct pollfd`.
#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

/// True when `fd` has something to read within a few microseconds: a writer's second
/// `write` right after its first (a header, then its body) is taken with the first.
fn more_soon(fd: i32) -> bool {
    let until = std::time::Instant::now() + Duration::from_micros(20);
    loop {
        if readable_now(fd) {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::yield_now();
    }
}

/// True when `fd` has something to read (or its end) right now, without waiting.
fn readable_now(fd: i32) -> bool {
    const POLLIN: i16 = 1;
    let mut p = PollFd {
        fd,
        events: POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout.
    unsafe { poll(&mut p, 1, 0) == 1 }
}

/// `O_RDWR | O_NOCTTY`.
const OPENPT_FLAGS: i32 = 0o2 | 0o400;
/// Linux's `TIOCSCTTY` and `TIOCSWINSZ` (the same on x86_64 and aarch64).
const TIOCSCTTY: u64 = 0x540E;
const TIOCSWINSZ: u64 = 0x5414;

/// A pseudo-terminal: its master (ours) and its slave's path.
fn open_pty(rows: u16, cols: u16) -> io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain system calls on a descriptor we own from here on; ptsname_r
    // writes at most `buf.len()` bytes.
    unsafe {
        let fd = posix_openpt(OPENPT_FLAGS);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let master = std::fs::File::from_raw_fd(fd);
        if grantpt(fd) != 0 || unlockpt(fd) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 128];
        let e = ptsname_r(fd, buf.as_mut_ptr(), buf.len());
        if e != 0 {
            return Err(io::Error::from_raw_os_error(e));
        }
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let path = std::ffi::OsStr::from_bytes(&buf[..len]);
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(0o400)
            .open(path)?;
        resize(&master, rows, cols);
        Ok((master, slave))
    }
}

/// Sets the terminal's window size (its foreground group gets SIGWINCH).
fn resize(master: &std::fs::File, rows: u16, cols: u16) {
    let size: [u16; 4] = [rows, cols, 0, 0];
    // SAFETY: TIOCSWINSZ reads a `struct winsize` (four u16) from `size`.
    unsafe {
        ioctl(master.as_raw_fd(), TIOCSWINSZ, size.as_ptr());
    }
}

/// Sends `sig` to the process group `pgid`.
/// SIGCONT on Linux, where the helper runs.
const SIGCONT: i32 = 18;

fn kill_group(pgid: u32, sig: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        kill(-(pgid as i32), sig);
    }
}

/// The shim's stdout, shared by every thread; a frame is written whole.
#[derive(Clone)]
/// Frames out on fd 1, each in one `write`: `io::Stdout` is line-buffered and would
/// split a frame at its payload's last newline (two writes the engine relays apart).
struct Out(Arc<Mutex<BufWriter<std::fs::File>>>);

impl Out {
    /// Sends [`Kind::OutputMoved`] where frames went so far, then every later frame
    /// to `to` (a pipe the owner reads itself).
    fn move_to(&self, to: std::fs::File) {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut header = [0u8; 9];
        header[0] = Kind::OutputMoved as u8;
        let _ = w.write_all(&header);
        let _ = w.flush();
        *w = BufWriter::with_capacity(CHUNK + 9, to);
    }

    fn send(&self, kind: Kind, id: u32, payload: &[u8]) {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut header = [0u8; 9];
        header[0] = kind as u8;
        header[1..5].copy_from_slice(&id.to_le_bytes());
        header[5..9].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        // A dead owner cannot be told anything; stdin's end will stop us.
        let _ = w.write_all(&header);
        let _ = w.write_all(payload);
        let _ = w.flush();
    }
}

/// Bytes a stream may still send: taken by its reader, given back by the owner.
#[derive(Default)]
struct Credit {
    left: Mutex<u64>,
    more: Condvar,
}

impl Credit {
    fn new(initial: u32) -> Arc<Credit> {
        let c = Credit::default();
        *c.left.lock().unwrap_or_else(|p| p.into_inner()) = u64::from(initial);
        Arc::new(c)
    }

    /// Waits for credit, takes up to `want` bytes of it.
    fn take(&self, want: usize) -> usize {
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        while *left == 0 {
            left = self.more.wait(left).unwrap_or_else(|p| p.into_inner());
        }
        let n = (*left).min(want as u64);
        *left -= n;
        n as usize
    }

    fn give(&self, n: u32) {
        *self.left.lock().unwrap_or_else(|p| p.into_inner()) += u64::from(n);
        self.more.notify_all();
    }
}

/// A process the shim started.
struct Child {
    pgid: u32,
    stdin: Option<mpsc::Sender<Option<Vec<u8>>>>,
    credit: [Arc<Credit>; 2],
    /// The stdout pipe's read end while the owner decides whether it reads the
    /// pipe itself ([`Kind::Attached`]), and the signal that the stream is done.
    pending_stdout: Option<(io::PipeReader, mpsc::Sender<()>)>,
    /// The master of the process's pseudo-terminal, for resizes.
    tty: Option<std::fs::File>,
}

/// Forwards one output stream on a thread of its own; `done` hears when it ends.
fn start_forward(
    pipe: impl Read + AsRawFd + Send + 'static,
    id: u32,
    stream: u8,
    credit: Arc<Credit>,
    out: Out,
    done: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        forward(pipe, id, stream, credit, out);
        let _ = done.send(());
    });
}

/// How many live processes group `pgid` has, and how many of them run the program
/// `name` (its executable's file name, or its `comm`).
fn members_named(pgid: u32, name: &[u8]) -> (usize, usize) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    let (mut members, mut named) = (0, 0);
    for e in procs.filter_map(Result::ok) {
        let path = e.path();
        let Ok(stat) = std::fs::read(path.join("stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state, ppid, pgrp.
        let Some(close) = stat.iter().rposition(|&b| b == b')') else {
            continue;
        };
        let mut fields = stat[close + 1..]
            .split(|&b| b == b' ')
            .filter(|f| !f.is_empty());
        let state = fields.next();
        let pgrp = fields.nth(1);
        if state == Some(b"Z") || pgrp != Some(pgid.to_string().as_bytes()) {
            continue;
        }
        members += 1;
        let exe = std::fs::read_link(path.join("exe")).ok();
        let comm = std::fs::read(path.join("comm")).ok();
        if exe
            .as_deref()
            .and_then(std::path::Path::file_name)
            .is_some_and(|n| n.as_bytes() == name)
            || comm.is_some_and(|c| c.strip_suffix(b"\n").unwrap_or(&c) == name)
        {
            named += 1;
        }
    }
    (members, named)
}

/// Forwards one output stream of process `id` as frames, within its credit. What is
/// readable the moment a read returns goes into the same frame: a message written as
/// a header and then a body (as language servers do) reaches the owner as one frame,
/// and the owner's reader as one read, as it would through a pipe.
fn forward(mut from: impl Read + AsRawFd, id: u32, stream: u8, credit: Arc<Credit>, out: Out) {
    let kind = if stream == 1 {
        Kind::Stdout
    } else {
        Kind::Stderr
    };
    let fd = from.as_raw_fd();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let allowed = credit.take(CHUNK);
        let mut n = 0;
        let ended = loop {
            match from.read(&mut buf[n..allowed]) {
                Ok(0) => break true,
                Ok(m) => n += m,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
            if n == allowed || !more_soon(fd) {
                break false;
            }
        };
        credit.give((allowed - n) as u32);
        if n > 0 {
            out.send(kind, id, &buf[..n]);
        }
        if ended {
            break;
        }
    }
    out.send(Kind::OutputEnd, id, &[stream]);
}

/// Writes what the owner sends to process `id`'s stdin, granting credit back.
fn feed(mut to: impl Write, id: u32, chunks: mpsc::Receiver<Option<Vec<u8>>>, out: Out) {
    while let Ok(Some(chunk)) = chunks.recv() {
        let ok = to.write_all(&chunk).is_ok();
        out.send(Kind::StdinCredit, id, &(chunk.len() as u32).to_le_bytes());
        if !ok {
            // The process closed its stdin: drain (and grant) what is still sent.
            while let Ok(Some(chunk)) = chunks.recv() {
                out.send(Kind::StdinCredit, id, &(chunk.len() as u32).to_le_bytes());
            }
            return;
        }
    }
}

/// Why a process did not start: the stage, its errno and what to say.
struct Refusal(SpawnStage, i32, String);

impl Refusal {
    fn new(stage: SpawnStage, e: &io::Error, context: &str) -> Refusal {
        Refusal(
            stage,
            e.raw_os_error().unwrap_or(0),
            format!("{context}{e}"),
        )
    }
}

/// A process just started: its pid (its group's id), its pipes or terminal, and the
/// `Command` child to wait on when it was started through one.
struct Started {
    pid: u32,
    stdin: Option<Box<dyn Write + Send>>,
    stdout: Option<io::PipeReader>,
    stderr: Option<io::PipeReader>,
    master: Option<std::fs::File>,
    child: Option<std::process::Child>,
}

/// Starts a process on a new pseudo-terminal, leading a session of its own with the
/// terminal as its controlling one (`fork`, for the `ioctl` between fork and exec).
fn spawn_on_terminal(
    program: &[u8],
    args: &[Vec<u8>],
    dir: &std::ffi::OsStr,
    env: &[Vec<u8>],
    rows: u16,
    cols: u16,
) -> Result<Started, Refusal> {
    let (master, slave) = open_pty(rows, cols)
        .map_err(|e| Refusal::new(SpawnStage::Terminal, &e, "no pseudo-terminal: "))?;
    let dup = |e: io::Error| Refusal::new(SpawnStage::Terminal, &e, "dup: ");
    let (a, b) = (
        slave.try_clone().map_err(dup)?,
        slave.try_clone().map_err(dup)?,
    );
    let mut cmd = Command::new(std::ffi::OsStr::from_bytes(program));
    cmd.args(args.iter().map(|a| std::ffi::OsStr::from_bytes(a)))
        .current_dir(dir)
        .env_clear()
        .stdin(Stdio::from(slave))
        .stdout(Stdio::from(a))
        .stderr(Stdio::from(b));
    for entry in env {
        if let Some(eq) = entry.iter().position(|&b| b == b'=') {
            cmd.env(
                std::ffi::OsStr::from_bytes(&entry[..eq]),
                std::ffi::OsStr::from_bytes(&entry[eq + 1..]),
            );
        }
    }
    // SAFETY: setsid and an ioctl on the child's own stdin, between fork and exec: a
    // session (and group) of its own, the terminal its controlling one.
    unsafe {
        cmd.pre_exec(|| {
            if setsid() < 0 || ioctl(0, TIOCSCTTY, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Refusal::new(SpawnStage::Program, &e, ""))?;
    // The parent's copies of the slave are closed with `cmd`: the master reads EIO
    // once the process and its children have closed theirs.
    drop(cmd);
    let stdin = master
        .try_clone()
        .ok()
        .map(|m| Box::new(m) as Box<dyn Write + Send>);
    Ok(Started {
        pid: child.id(),
        stdin,
        stdout: None,
        stderr: None,
        master: Some(master),
        child: Some(child),
    })
}

fn spawn(id: u32, req: Spawn, out: &Out, children: &Arc<Mutex<HashMap<u32, Child>>>) {
    let dir = std::ffi::OsStr::from_bytes(&req.dir);
    if let Err(e) = std::fs::read_dir(dir) {
        let payload = protocol::spawn_failed(
            SpawnStage::Dir,
            e.raw_os_error().unwrap_or(0),
            &e.to_string(),
        );
        out.send(Kind::SpawnFailed, id, &payload);
        return;
    }
    let Some((program, args)) = req.argv.split_first() else {
        out.send(
            Kind::SpawnFailed,
            id,
            &protocol::spawn_failed(SpawnStage::Setup, 0, "no program"),
        );
        return;
    };
    // What `docker exec` adds to the container's environment, which the engine gave
    // this helper's own exec for its user: HOSTNAME, HOME (from the user's passwd
    // entry), and TERM with a terminal. The owner's environment comes on top.
    let mut env: Vec<Vec<u8>> = Vec::new();
    let mut set = |entry: Vec<u8>| {
        let Some(eq) = entry.iter().position(|&b| b == b'=') else {
            return;
        };
        env.retain(|e| e.get(..=eq) != Some(&entry[..=eq]));
        env.push(entry);
    };
    for key in ["HOSTNAME", "HOME"] {
        if let Some(value) = std::env::var_os(key) {
            set([key.as_bytes(), b"=", value.as_bytes()].concat());
        }
    }
    if req.tty.is_some() {
        set(b"TERM=xterm".to_vec());
    }
    for entry in &req.env {
        set(entry.clone());
    }
    let started = match req.tty {
        Some((rows, cols)) => spawn_on_terminal(program, args, dir, &env, rows, cols),
        None => launch::launch(&req.argv, &env, &req.dir, req.stdin)
            .map(|l| Started {
                pid: l.pid,
                stdin: l.stdin.map(|w| Box::new(w) as Box<dyn Write + Send>),
                stdout: Some(l.stdout),
                stderr: Some(l.stderr),
                master: None,
                child: None,
            })
            .map_err(|(stage, e)| Refusal::new(stage, &e, "")),
    };
    let Started {
        pid,
        stdin,
        stdout,
        stderr,
        master,
        child,
    } = match started {
        Ok(s) => s,
        Err(Refusal(stage, errno, message)) => {
            out.send(
                Kind::SpawnFailed,
                id,
                &protocol::spawn_failed(stage, errno, &message),
            );
            return;
        }
    };
    let credit = [Credit::new(WINDOW), Credit::new(WINDOW)];
    let stdin = stdin.map(|to| {
        let (tx, rx) = mpsc::channel();
        let out = out.clone();
        std::thread::spawn(move || feed(to, id, rx, out));
        tx
    });
    let (done_tx, done_rx) = mpsc::channel();
    let tty_reader = master.as_ref().and_then(|m| m.try_clone().ok());
    // The owner hears of the process before any of its output.
    let (direct_fd, pending_stdout, forwarded_stdout) = match stdout {
        Some(pipe) if req.direct_stdout => (pipe.as_raw_fd(), Some((pipe, done_tx.clone())), None),
        other => (-1i32, None, other),
    };
    children.lock().unwrap_or_else(|p| p.into_inner()).insert(
        id,
        Child {
            pgid: pid,
            stdin,
            credit: credit.clone(),
            pending_stdout,
            tty: master,
        },
    );
    let mut started = pid.to_le_bytes().to_vec();
    started.extend_from_slice(&direct_fd.to_le_bytes());
    out.send(Kind::Started, id, &started);
    if let Some(pipe) = forwarded_stdout {
        start_forward(pipe, id, 1, credit[0].clone(), out.clone(), done_tx.clone());
    }
    if let Some(pipe) = stderr {
        start_forward(pipe, id, 2, credit[1].clone(), out.clone(), done_tx.clone());
    }
    if let Some(reader) = tty_reader {
        // The terminal is stdout and stderr at once: one stream, and no stderr.
        start_forward(
            reader,
            id,
            1,
            credit[0].clone(),
            out.clone(),
            done_tx.clone(),
        );
        out.send(Kind::OutputEnd, id, &[2]);
        let _ = done_tx.send(());
    }
    drop(done_tx);
    let (out, children) = (out.clone(), Arc::clone(children));
    let wait_on = req.wait_on;
    std::thread::spawn(move || {
        let status = match child {
            Some(mut child) => child.wait(),
            None => launch::wait(pid),
        };
        // A program named by `wait_on` left in the group keeps the run alive.
        if !wait_on.is_empty() {
            // A member forked just before the leader exited may not have executed
            // its program yet: unnamed members get a moment to become it (the rule
            // of `runner_core::WaitOnWatch`; the shim is std-only, so it is restated).
            let mut settle = 25;
            loop {
                let (members, named) = members_named(pid, &wait_on);
                if named == 0 && (members == 0 || settle == 0) {
                    break;
                }
                let pause = if named == 0 {
                    settle -= 1;
                    20
                } else {
                    100
                };
                std::thread::sleep(Duration::from_millis(pause));
            }
        }
        // Output written before the exit comes before the exit: wait for both
        // streams' ends, but not for ever (a background process may hold them).
        let mut ended = 0;
        while ended < 2 && done_rx.recv_timeout(Duration::from_millis(500)).is_ok() {
            ended += 1;
        }
        {
            let mut map = children.lock().unwrap_or_else(|p| p.into_inner());
            if ended == 2 {
                // Nothing of the group holds its output: forget it, so no later
                // signal can reach a reused group id.
                map.remove(&id);
            } else if let Some(c) = map.get_mut(&id) {
                c.stdin = None;
            }
        }
        match status {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => out.send(Kind::Exited, id, &code.to_le_bytes()),
                (None, Some(sig)) => out.send(Kind::Signaled, id, &sig.to_le_bytes()),
                (None, None) => out.send(Kind::Exited, id, &(-1i32).to_le_bytes()),
            },
            Err(_) => out.send(Kind::Exited, id, &(-1i32).to_le_bytes()),
        }
    });
}

/// `runner-shim --signal SIG TARGET…`: kill(2) for each target (a pid, or `-pgid`
/// for a group), the way the owner reaches processes through the engine when the
/// resident helper cannot (it is stopped, hung or gone), in images with no `kill`
/// of their own. Exits 0 when every signal was delivered.
fn signal_mode(args: &[String]) -> ! {
    let sig = args.first().and_then(|s| s.parse::<i32>().ok());
    let targets: Option<Vec<i32>> = args
        .get(1..)
        .map(|t| t.iter().filter_map(|p| p.parse().ok()).collect());
    let (Some(sig), Some(targets)) = (sig, targets) else {
        eprintln!("usage: runner-shim --signal SIG TARGET...");
        std::process::exit(2);
    };
    let mut failed = false;
    for target in targets {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        if unsafe { kill(target, sig) } != 0 {
            eprintln!("kill({target}, {sig}): {}", io::Error::last_os_error());
            failed = true;
        }
    }
    std::process::exit(i32::from(failed));
}

/// `runner-shim --connect HOST:PORT`: one tunnelled connection, as a process of its
/// own (the owner starts it through this helper like any process): stdin goes to a
/// TCP connection made from inside the container, what comes back goes to stdout.
/// The end of stdin half-closes the connection; the program ends when the far side
/// ends it. Exit 0 after a connection, 1 (and why on stderr) when none was made.
fn connect_mode(args: &[String]) -> ! {
    let Some(address) = args.first() else {
        eprintln!("runner-shim --connect: no address");
        std::process::exit(2);
    };
    let stream = match std::net::TcpStream::connect(address.as_str()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("runner-shim: cannot connect to {address} in the container: {e}");
            std::process::exit(1);
        }
    };
    let _ = stream.set_nodelay(true);
    let Ok(mut to_server) = stream.try_clone() else {
        std::process::exit(1);
    };
    std::thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut to_server);
        let _ = to_server.shutdown(std::net::Shutdown::Write);
    });
    let mut from_server = stream;
    // Unbuffered: every read of the connection reaches the owner as it comes.
    let mut out = std::fs::File::from(match io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(_) => std::process::exit(1),
    });
    let _ = io::copy(&mut from_server, &mut out);
    std::process::exit(0);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--signal") {
        signal_mode(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("--connect") {
        connect_mode(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("--sync") {
        sync_agent::run(&args[1..]);
    }
    // The container exists for this owner alone (an ephemeral one, kept up by the
    // engine's init): when the owner is gone, so is it.
    let end_container = args.iter().any(|a| a == "--end-container");
    let Ok(stdout) = io::stdout().as_fd().try_clone_to_owned() else {
        std::process::exit(125);
    };
    let out = Out(Arc::new(Mutex::new(BufWriter::with_capacity(
        CHUNK + 9,
        std::fs::File::from(stdout),
    ))));
    let mut ready = protocol::VERSION.to_le_bytes().to_vec();
    ready.extend_from_slice(&std::process::id().to_le_bytes());
    out.send(Kind::Ready, 0, &ready);
    let children: Arc<Mutex<HashMap<u32, Child>>> = Arc::default();
    // The pipe for our frames while the owner opens its read end (`MoveOutput`).
    let mut output_pipe: Option<(io::PipeReader, io::PipeWriter)> = None;
    let mut input = io::BufReader::with_capacity(CHUNK + 9, io::stdin().lock());
    while let Ok(Some(frame)) = Frame::read_from(&mut input) {
        let id = frame.id;
        match frame.kind {
            Kind::Spawn => match Spawn::decode(&frame.payload) {
                Ok(req) => spawn(id, req, &out, &children),
                Err(e) => out.send(
                    Kind::SpawnFailed,
                    id,
                    &protocol::spawn_failed(SpawnStage::Setup, 0, &format!("bad request: {e}")),
                ),
            },
            Kind::Stdin | Kind::StdinEnd => {
                let map = children.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(tx) = map.get(&id).and_then(|c| c.stdin.as_ref()) {
                    let chunk = (frame.kind == Kind::Stdin).then_some(frame.payload);
                    let _ = tx.send(chunk);
                }
                drop(map);
                if frame.kind == Kind::StdinEnd {
                    if let Some(c) = children
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(&id)
                    {
                        c.stdin = None;
                    }
                }
            }
            Kind::Ping => out.send(Kind::Pong, id, &[]),
            Kind::MoveOutput => {
                output_pipe = io::pipe().ok();
                let fd = output_pipe.as_ref().map_or(-1, |(r, _)| r.as_raw_fd());
                out.send(Kind::OutputPipe, 0, &fd.to_le_bytes());
            }
            Kind::OutputOpened => {
                // Our read end closes either way: the owner holds its own.
                if let Some((_, w)) = output_pipe.take() {
                    if frame.payload.first() == Some(&1) {
                        out.move_to(std::fs::File::from(std::os::fd::OwnedFd::from(w)));
                    }
                }
            }
            Kind::Signal => {
                let sig = Fields(&frame.payload).i32().unwrap_or(15);
                if let Some(c) = children.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
                    kill_group(c.pgid, sig);
                    // A signal that asks the group to end, then SIGCONT (as a shell's
                    // `kill %job` does): a stopped group would keep it pending.
                    if [1, 2, 3, 15].contains(&sig) {
                        kill_group(c.pgid, SIGCONT);
                    }
                }
            }
            Kind::Attached => {
                let pending = children
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&id)
                    .and_then(|c| c.pending_stdout.take().map(|p| (p, c.credit[0].clone())));
                if let Some(((pipe, done), credit)) = pending {
                    if frame.payload.first() == Some(&1) {
                        // The owner reads the pipe itself: our end closes.
                        drop(pipe);
                        out.send(Kind::OutputEnd, id, &[1]);
                        let _ = done.send(());
                    } else {
                        start_forward(pipe, id, 1, credit, out.clone(), done);
                    }
                }
            }
            Kind::Resize => {
                let mut f = Fields(&frame.payload);
                if let Ok(size) = f.u32() {
                    let map = children.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(tty) = map.get(&id).and_then(|c| c.tty.as_ref()) {
                        resize(tty, size as u16, (size >> 16) as u16);
                    }
                }
            }
            Kind::Credit => {
                let mut f = Fields(&frame.payload);
                if let (Ok(stream @ 1..=2), Ok(n)) = (f.u8(), f.u32()) {
                    if let Some(c) = children.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
                        c.credit[stream as usize - 1].give(n);
                    }
                }
            }
            _ => {}
        }
    }
    // The owner is gone: nothing we started may outlive it.
    for c in children.lock().unwrap_or_else(|p| p.into_inner()).values() {
        kill_group(c.pgid, 9);
    }
    if end_container {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours. The
        // engine's init (pid 1) passes SIGTERM to the container's command and exits.
        unsafe {
            kill(1, 15);
        }
    }
}
