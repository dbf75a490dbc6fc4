//! The shim's wire protocol: length-prefixed frames on the shim's stdin (requests
//! from the owner) and stdout (events from the shim), many processes multiplexed by
//! id, with credit-based flow control in both directions.
//!
//! A frame is a 9-byte header — kind (`u8`), process id (`u32` LE), payload length
//! (`u32` LE) — then the payload. Standard library only: this file is compiled into
//! the static shim binary as well as into the owner.

use std::io::{self, Read};

/// Protocol version, sent in [`Kind::Ready`]; the owner refuses another.
pub const VERSION: u32 = 4;
/// Bytes of output a process may send per stream before the owner grants more
/// (and of input the owner may send before the shim grants more).
pub const WINDOW: u32 = 1 << 20;
/// The largest payload of one data frame.
pub const CHUNK: usize = 64 * 1024;
/// The largest payload the reader accepts (a spawn request with a large environment).
pub const MAX_PAYLOAD: u32 = 16 << 20;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// owner → shim: start a process ([`Spawn`]).
    Spawn = 1,
    /// owner → shim: bytes for the process's stdin.
    Stdin = 2,
    /// owner → shim: close the process's stdin.
    StdinEnd = 3,
    /// owner → shim: a signal (`i32` LE) to the process's whole group.
    Signal = 4,
    /// owner → shim: more output credit: stream (`u8`: 1 stdout, 2 stderr), bytes (`u32`).
    Credit = 5,
    /// owner → shim, after a [`Spawn`] with `direct_stdout`: whether the owner opened
    /// the stdout pipe itself (`u8`: 1 yes, 0 no). Yes: the shim closes its end and
    /// forwards nothing; no: it forwards stdout as frames.
    Attached = 6,
    /// owner → shim: the process's terminal has a new size: rows (`u16`), columns (`u16`).
    Resize = 7,
    /// owner → shim: are you reading? The shim answers [`Kind::Pong`] with the same id.
    Ping = 8,
    /// owner → shim, id 0, once before any process: make a pipe for your frames and
    /// say its read end ([`Kind::OutputPipe`]); the owner, on this host, opens it.
    MoveOutput = 9,
    /// owner → shim, id 0: whether the owner opened the pipe of [`Kind::OutputPipe`]
    /// (`u8`: 1 yes, 0 no). Yes: the shim sends [`Kind::OutputMoved`] and every later
    /// frame into the pipe.
    OutputOpened = 10,
    /// shim → owner, id 0: the shim is up; payload: [`VERSION`] (`u32`), its pid (`u32`).
    Ready = 64,
    /// shim → owner: the process runs; payload: its pid in the container (`u32`),
    /// then the shim's descriptor of the read end of its stdout pipe (`i32`, -1 unless
    /// the spawn asked for `direct_stdout`; the owner then answers [`Kind::Attached`]).
    Started = 65,
    /// shim → owner: it could not be started; payload: the [`SpawnStage`] (`u8`),
    /// errno (`i32`), then a message.
    SpawnFailed = 66,
    /// shim → owner: output on stdout.
    Stdout = 67,
    /// shim → owner: output on stderr.
    Stderr = 68,
    /// shim → owner: the process exited; payload: exit code (`i32`).
    Exited = 69,
    /// shim → owner: the process was killed; payload: signal (`i32`).
    Signaled = 70,
    /// shim → owner: end of one output stream; payload: stream (`u8`).
    OutputEnd = 71,
    /// shim → owner: more stdin credit; payload: bytes (`u32`).
    StdinCredit = 72,
    /// shim → owner: the answer to a [`Kind::Ping`], with its id.
    Pong = 73,
    /// shim → owner, id 0: the answer to [`Kind::MoveOutput`]: the shim's descriptor
    /// of the read end of its frames' pipe (`i32`, -1 when it has none).
    OutputPipe = 74,
    /// shim → owner, id 0: the last frame on the stream; the next come through the pipe.
    OutputMoved = 75,
}

impl Kind {
    /// The kind of a header byte.
    pub fn of(byte: u8) -> Option<Kind> {
        use Kind::*;
        Some(match byte {
            1 => Spawn,
            2 => Stdin,
            3 => StdinEnd,
            4 => Signal,
            5 => Credit,
            6 => Attached,
            7 => Resize,
            8 => Ping,
            9 => MoveOutput,
            10 => OutputOpened,
            64 => Ready,
            65 => Started,
            66 => SpawnFailed,
            67 => Stdout,
            68 => Stderr,
            69 => Exited,
            70 => Signaled,
            71 => OutputEnd,
            72 => StdinCredit,
            73 => Pong,
            74 => OutputPipe,
            75 => OutputMoved,
            _ => return None,
        })
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it is.
    pub kind: Kind,
    /// The process it is about (0 for the shim itself).
    pub id: u32,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame.
    pub fn new(kind: Kind, id: u32, payload: Vec<u8>) -> Frame {
        Frame { kind, id, payload }
    }

    /// The frame's bytes: header then payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.payload.len());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Reads one frame; `None` at a clean end of the stream.
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<Frame>> {
        let Some(header) = read_header(r)? else {
            return Ok(None);
        };
        let (kind, id, len) = parse_header(&header)?;
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload)?;
        Ok(Some(Frame { kind, id, payload }))
    }
}

/// Reads a 9-byte header; `None` at a clean end of the stream (before its first byte).
pub fn read_header(r: &mut impl Read) -> io::Result<Option<[u8; 9]>> {
    let mut header = [0u8; 9];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(header))
}

/// Kind, id and payload length of a 9-byte header.
pub fn parse_header(header: &[u8; 9]) -> io::Result<(Kind, u32, u32)> {
    let kind = Kind::of(header[0]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame kind {}", header[0]),
        )
    })?;
    let id = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    let len = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    Ok((kind, id, len))
}

/// A request to start a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spawn {
    /// Working directory.
    pub dir: Vec<u8>,
    /// Program (resolved on the `PATH` of `env`) and arguments.
    pub argv: Vec<Vec<u8>>,
    /// The whole environment, `KEY=VALUE` each.
    pub env: Vec<Vec<u8>>,
    /// Whether the owner writes the process's stdin (else it reads /dev/null).
    pub stdin: bool,
    /// Whether the owner would rather read the stdout pipe itself, through
    /// `/proc/<shim>/fd/<fd>` (an engine on the owner's host): no copy through the
    /// engine's stream, native throughput.
    pub direct_stdout: bool,
    /// After the process exits, the run goes on while a process running this program
    /// (its executable's or its `comm` name) is left in its group (empty: none).
    pub wait_on: Vec<u8>,
    /// A pseudo-terminal for the process (its stdin, stdout and stderr, and its
    /// controlling terminal, in a session of its own) of this many rows and columns;
    /// its output comes as `Stdout`, its input goes in as `Stdin`.
    pub tty: Option<(u16, u16)>,
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads length-prefixed fields from a payload.
#[derive(Debug)]
pub struct Fields<'a>(pub &'a [u8]);

impl<'a> Fields<'a> {
    /// The next `u32`.
    pub fn u32(&mut self) -> io::Result<u32> {
        let (head, rest) = self.0.split_at_checked(4).ok_or_else(short)?;
        self.0 = rest;
        Ok(u32::from_le_bytes([head[0], head[1], head[2], head[3]]))
    }

    /// The next `i32`.
    pub fn i32(&mut self) -> io::Result<i32> {
        self.u32().map(|v| v as i32)
    }

    /// The next byte.
    pub fn u8(&mut self) -> io::Result<u8> {
        let (&b, rest) = self.0.split_first().ok_or_else(short)?;
        self.0 = rest;
        Ok(b)
    }

    /// The next length-prefixed byte string.
    pub fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let len = self.u32()? as usize;
        let (head, rest) = self.0.split_at_checked(len).ok_or_else(short)?;
        self.0 = rest;
        Ok(head)
    }
}

fn short() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "payload too short")
}

impl Spawn {
    /// The request's payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(
            u8::from(self.stdin)
                | u8::from(self.direct_stdout) << 1
                | u8::from(self.tty.is_some()) << 2,
        );
        put(&mut out, &self.dir);
        out.extend_from_slice(&(self.argv.len() as u32).to_le_bytes());
        for a in &self.argv {
            put(&mut out, a);
        }
        out.extend_from_slice(&(self.env.len() as u32).to_le_bytes());
        for e in &self.env {
            put(&mut out, e);
        }
        put(&mut out, &self.wait_on);
        if let Some((rows, cols)) = self.tty {
            out.extend_from_slice(&rows.to_le_bytes());
            out.extend_from_slice(&cols.to_le_bytes());
        }
        out
    }

    /// A request from its payload.
    pub fn decode(payload: &[u8]) -> io::Result<Spawn> {
        let mut f = Fields(payload);
        let flags = f.u8()?;
        let dir = f.bytes()?.to_vec();
        let argc = f.u32()?;
        let argv = (0..argc)
            .map(|_| f.bytes().map(<[u8]>::to_vec))
            .collect::<io::Result<Vec<_>>>()?;
        let envc = f.u32()?;
        let env = (0..envc)
            .map(|_| f.bytes().map(<[u8]>::to_vec))
            .collect::<io::Result<Vec<_>>>()?;
        let wait_on = f.bytes()?.to_vec();
        let tty = if flags & 4 != 0 {
            let size = f.u32()?;
            Some((size as u16, (size >> 16) as u16))
        } else {
            None
        };
        Ok(Spawn {
            dir,
            argv,
            env,
            stdin: flags & 1 != 0,
            direct_stdout: flags & 2 != 0,
            wait_on,
            tty,
        })
    }
}

/// The step at which the shim failed to start a process (the first byte of a
/// [`Kind::SpawnFailed`] payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SpawnStage {
    /// Entering the working directory.
    Dir = 0,
    /// Executing the program.
    Program = 1,
    /// Opening the process's pseudo-terminal.
    Terminal = 2,
    /// Anything else the shim prepares: the request itself, descriptors.
    Setup = 3,
}

impl SpawnStage {
    /// The stage a byte names; an unknown byte is [`SpawnStage::Setup`] (never taken
    /// for a missing program).
    pub fn from_u8(byte: u8) -> SpawnStage {
        match byte {
            0 => SpawnStage::Dir,
            1 => SpawnStage::Program,
            2 => SpawnStage::Terminal,
            _ => SpawnStage::Setup,
        }
    }
}

/// The payload of a [`Kind::SpawnFailed`] frame.
pub fn spawn_failed(stage: SpawnStage, errno: i32, message: &str) -> Vec<u8> {
    let mut out = vec![stage as u8];
    out.extend_from_slice(&errno.to_le_bytes());
    out.extend_from_slice(message.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_spawns_round_trip() {
        let spawn = Spawn {
            dir: b"/work".to_vec(),
            argv: vec![b"sh".to_vec(), b"-c".to_vec(), b"echo \xff".to_vec()],
            env: vec![b"PATH=/bin".to_vec(), b"K=".to_vec()],
            stdin: true,
            direct_stdout: true,
            wait_on: b"node".to_vec(),
            tty: Some((40, 100)),
        };
        let frame = Frame::new(Kind::Spawn, 7, spawn.encode());
        let bytes = [
            frame.encode(),
            Frame::new(Kind::Signal, 7, 15i32.to_le_bytes().to_vec()).encode(),
        ]
        .concat();
        let mut r = &bytes[..];
        let first = Frame::read_from(&mut r).unwrap().unwrap();
        assert_eq!(first, frame);
        assert_eq!(Spawn::decode(&first.payload).unwrap(), spawn);
        let second = Frame::read_from(&mut r).unwrap().unwrap();
        assert_eq!((second.kind, second.id), (Kind::Signal, 7));
        assert!(Frame::read_from(&mut r).unwrap().is_none());
        // A truncated frame is an error, not a clean end.
        let mut cut = &bytes[..5];
        assert!(Frame::read_from(&mut cut).is_err());
        assert!(Spawn::decode(&[1, 200, 0, 0, 0]).is_err());
    }
}
