//! The helper program itself, driven over its stdin/stdout on the host as the
//! owner drives it in a container: exact exits, a process whose output nobody
//! reads stalls only itself, closing its stdin ends every group it started, and a
//! stdout pipe the owner opens through `/proc/<shim>/fd` carries the output itself.

use std::io::Write;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use runner_shim::protocol::{Fields, Frame, Kind, Spawn};

struct Shim {
    child: Child,
    to: Option<ChildStdin>,
    from: ChildStdout,
}

impl Shim {
    fn start() -> Shim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runner-shim"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let to = child.stdin.take();
        let from = child.stdout.take().unwrap();
        let mut shim = Shim { child, to, from };
        let ready = shim.next();
        assert_eq!(ready.kind, Kind::Ready);
        assert_eq!(
            Fields(&ready.payload).u32().unwrap(),
            runner_shim::protocol::VERSION
        );
        shim
    }

    fn send(&mut self, kind: Kind, id: u32, payload: Vec<u8>) {
        let to = self.to.as_mut().unwrap();
        to.write_all(&Frame::new(kind, id, payload).encode())
            .unwrap();
        to.flush().unwrap();
    }

    fn spawn(&mut self, id: u32, script: &str) {
        self.spawn_with(id, script, false);
    }

    fn spawn_with(&mut self, id: u32, script: &str, direct_stdout: bool) {
        let req = Spawn {
            dir: b"/".to_vec(),
            argv: vec![b"sh".to_vec(), b"-c".to_vec(), script.as_bytes().to_vec()],
            env: vec![b"PATH=/usr/bin:/bin".to_vec()],
            stdin: false,
            direct_stdout,
            ..Spawn::default()
        };
        self.send(Kind::Spawn, id, req.encode());
    }

    fn next(&mut self) -> Frame {
        Frame::read_from(&mut self.from).unwrap().expect("a frame")
    }

    /// Frames until one of `kind` for `id`, returning it (others are skipped).
    fn until(&mut self, kind: Kind, id: u32) -> Frame {
        loop {
            let f = self.next();
            if f.kind == kind && f.id == id {
                return f;
            }
        }
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes whose process group is `pgid`, from the host's /proc.
fn group_members(pgid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.ok()?.path().join("stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = after.split_whitespace().collect();
            (fields.first() != Some(&"Z") && fields.get(2)?.parse::<u32>().ok()? == pgid)
                .then_some(())
        })
        .count()
}

#[test]
fn exits_are_exact_and_output_is_framed() {
    let mut shim = Shim::start();
    shim.spawn(1, "printf out; printf err >&2; exit 7");
    let pid = Fields(&shim.until(Kind::Started, 1).payload).u32().unwrap();
    assert!(pid > 0);
    let (mut out, mut err, mut ends) = (Vec::new(), Vec::new(), 0);
    let exited = loop {
        let f = shim.next();
        match f.kind {
            Kind::Stdout => out.extend_from_slice(&f.payload),
            Kind::Stderr => err.extend_from_slice(&f.payload),
            Kind::OutputEnd => ends += 1,
            Kind::Exited => break Fields(&f.payload).i32().unwrap(),
            other => panic!("{other:?}"),
        }
    };
    // Both streams end before the exit is reported.
    assert_eq!(
        (out.as_slice(), err.as_slice(), ends, exited),
        (&b"out"[..], &b"err"[..], 2, 7)
    );

    shim.spawn(2, "kill -TERM $$");
    let f = shim.until(Kind::Signaled, 2);
    assert_eq!(Fields(&f.payload).i32().unwrap(), 15);

    // A missing program and a missing directory are refused with their stage.
    shim.spawn(3, "true");
    shim.until(Kind::Exited, 3);
    let req = Spawn {
        dir: b"/no/such/dir".to_vec(),
        argv: vec![b"true".to_vec()],
        env: vec![],
        ..Spawn::default()
    };
    shim.send(Kind::Spawn, 4, req.encode());
    let f = shim.until(Kind::SpawnFailed, 4);
    assert_eq!(
        (f.payload[0], Fields(&f.payload[1..]).i32().unwrap()),
        (0, 2)
    );
    let req = Spawn {
        dir: b"/".to_vec(),
        argv: vec![b"no-such-program-here".to_vec()],
        env: vec![b"PATH=/bin".to_vec()],
        ..Spawn::default()
    };
    shim.send(Kind::Spawn, 5, req.encode());
    let f = shim.until(Kind::SpawnFailed, 5);
    assert_eq!(
        (f.payload[0], Fields(&f.payload[1..]).i32().unwrap()),
        (1, 2)
    );
}

#[test]
fn a_process_nobody_reads_stalls_only_itself() {
    let mut shim = Shim::start();
    // Far more than one window of output, and no credit granted for it.
    shim.spawn(1, "head -c 50000000 /dev/zero");
    shim.until(Kind::Started, 1);
    let mut got = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    shim.spawn(2, "echo second");
    loop {
        let f = shim.next();
        match (f.kind, f.id) {
            (Kind::Stdout, 1) => got += f.payload.len(),
            (Kind::Exited, 2) => break,
            (Kind::Exited, 1) => panic!("the unread process was not held back"),
            _ => {}
        }
        assert!(Instant::now() < deadline);
    }
    assert!(
        got <= runner_shim::protocol::WINDOW as usize,
        "{got} bytes without credit"
    );
    // Granting credit lets it go on: everything arrives, nothing lost.
    let grant = |shim: &mut Shim, n: usize| {
        let mut credit = vec![1u8];
        credit.extend_from_slice(&(n as u32).to_le_bytes());
        shim.send(Kind::Credit, 1, credit);
    };
    grant(&mut shim, got);
    loop {
        let f = shim.next();
        match (f.kind, f.id) {
            (Kind::Stdout, 1) => {
                got += f.payload.len();
                grant(&mut shim, f.payload.len());
            }
            (Kind::Exited, 1) => break,
            _ => {}
        }
    }
    assert_eq!(got, 50_000_000);
}

#[test]
fn closing_its_input_ends_every_group_it_started() {
    let mut shim = Shim::start();
    shim.spawn(1, "sleep 1000 & sleep 1000");
    let pgid = Fields(&shim.until(Kind::Started, 1).payload).u32().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while group_members(pgid) < 2 {
        assert!(Instant::now() < deadline, "the group did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(shim.to.take());
    let status = shim.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while group_members(pgid) > 0 {
        assert!(
            Instant::now() < deadline,
            "the group outlived the owner's stream"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The bytes of a stdout the owner reads itself, and the frames the shim sent meanwhile.
fn run_direct(shim: &mut Shim, id: u32, open_it: bool) -> (Vec<u8>, Vec<u8>, i32) {
    use std::io::Read;
    shim.spawn_with(
        id,
        "head -c 3000000 /dev/zero | tr '\\0' x; echo; exit 4",
        true,
    );
    let started = shim.until(Kind::Started, id);
    let mut f = Fields(&started.payload);
    let (_pid, fd) = (f.u32().unwrap(), f.i32().unwrap());
    assert!(fd >= 0, "a direct stdout is offered by its descriptor");
    let pipe = open_it.then(|| {
        std::fs::File::open(format!("/proc/{}/fd/{fd}", shim.child.id())).expect("open the pipe")
    });
    shim.send(Kind::Attached, id, vec![u8::from(pipe.is_some())]);
    // Read the pipe on a thread: the process blocks until it is read.
    let reader = pipe.map(|mut p| {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            p.read_to_end(&mut all).unwrap();
            all
        })
    });
    let mut framed = Vec::new();
    let code = loop {
        let f = shim.next();
        match (f.kind, f.id == id) {
            (Kind::Stdout, true) => {
                framed.extend_from_slice(&f.payload);
                let mut grant = vec![1u8];
                grant.extend_from_slice(&(f.payload.len() as u32).to_le_bytes());
                shim.send(Kind::Credit, id, grant);
            }
            (Kind::Exited, true) => break Fields(&f.payload).i32().unwrap(),
            _ => {}
        }
    };
    let direct = reader.map(|r| r.join().unwrap()).unwrap_or_default();
    (direct, framed, code)
}

#[test]
fn a_stdout_opened_by_the_owner_is_not_framed_and_a_refused_one_is() {
    let mut shim = Shim::start();
    let want = [vec![b'x'; 3_000_000], b"\n".to_vec()].concat();
    let (direct, framed, code) = run_direct(&mut shim, 1, true);
    assert_eq!(code, 4);
    assert!(
        framed.is_empty(),
        "{} bytes were framed as well",
        framed.len()
    );
    assert!(direct == want, "{} bytes read directly", direct.len());
    // The owner could not open it: the shim forwards it as frames after all.
    let (direct, framed, code) = run_direct(&mut shim, 2, false);
    assert_eq!(code, 4);
    assert!(direct.is_empty());
    assert!(framed == want, "{} bytes framed", framed.len());
}
