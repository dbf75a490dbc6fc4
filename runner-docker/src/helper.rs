//! The resident helper (`runner-shim`, built static by `build.rs` and embedded
//! here): copied into the container by `init` and started once as one long-lived
//! exec, it spawns every later process of the environment (its own process group,
//! directory, environment, stdio) over one multiplexed stream, which costs about a
//! millisecond instead of an exec's tens. Signals reach the whole group, exits are
//! exact (`Exited`/`Signaled`), the pid in the container is known at start. Output
//! and input have per-stream credit ([`protocol::WINDOW`]), so a slow reader stalls
//! only its own process. When the stream closes (we shut down, or died) the helper
//! kills every group it started.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::ExecConfig;
use futures_util::StreamExt;
use runner_core::{ExitPublisher, ExitStatus, ExitWatch, LineBuffer, Output, Signal, Stream};
use runner_shim::protocol::{self, Fields, Frame, Kind, Spawn};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, Semaphore};

use crate::host_view::{HostView, LocalProcess};
use crate::outcome::ExecFailure;
use crate::{DockerError, Engine};

/// The helper, static for this crate's target (empty when it could not be built).
static SHIM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/runner-shim"));
/// Why it could not be built, when it is empty.
static SHIM_WHY: &str = include_str!(concat!(env!("OUT_DIR"), "/runner-shim.why"));

/// How long the helper may take from copy to its first frame.
pub(crate) const READY_DEADLINE: Duration = Duration::from_secs(15);

/// The first bytes of the embedded helper's SHA-256, in hex: names its copies.
fn digest() -> &'static str {
    static DIGEST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DIGEST.get_or_init(|| {
        use sha2::{Digest, Sha256};
        Sha256::digest(SHIM)
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

/// The helper on this machine, to bind-mount into containers of an engine that sees
/// this machine's files (as `docker run --init` mounts its init): the directory
/// `<state dir>/helper/<digest>` holding `runner-shim`, written once, and where it
/// is mounted in a container. `None` without an embedded helper or when it cannot
/// be written.
pub(crate) fn host_copy() -> Option<(std::path::PathBuf, String)> {
    static COPY: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let dir = COPY
        .get_or_init(|| {
            if SHIM.is_empty() {
                return None;
            }
            let state = runner_reaper::default_state_dir();
            let dir = state.join("helper").join(digest());
            let file = dir.join("runner-shim");
            if std::fs::metadata(&file).is_ok_and(|m| m.len() == SHIM.len() as u64) {
                return Some(dir);
            }
            let written = (|| -> std::io::Result<()> {
                use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
                // The state directory stays private; only the helper's is readable
                // (by the engine and by a container's user).
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&state)?;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&dir)?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
                let temp = dir.join(format!(".runner-shim-{}", std::process::id()));
                std::fs::write(&temp, SHIM)?;
                std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755))?;
                std::fs::rename(&temp, &file)
            })();
            match written {
                Ok(()) => Some(dir),
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "the helper is copied into each container: it could not be written here");
                    None
                }
            }
        })
        .clone()?;
    Some((dir, format!("/.runner-helper-{}", digest())))
}
/// How long the helper may take to answer a ping (it answers in well under a
/// millisecond when it runs) before it is taken for stopped or hung.
const ANSWER_BOUND: Duration = Duration::from_secs(5);
/// How long a caller waits for a frame to be written before going on without it
/// (the frame is still written whole, by its own task, once the helper reads).
const WRITE_BOUND: Duration = Duration::from_secs(2);

/// What the helper tells one process's watcher.
#[derive(Debug)]
pub(crate) enum Event {
    /// Its pid in the container, and the helper's descriptor of its stdout pipe
    /// (-1 unless asked for).
    Started(u32, i32),
    SpawnFailed {
        stage: protocol::SpawnStage,
        errno: i32,
        message: String,
    },
    Output(Stream, Vec<u8>),
    OutputEnd,
    Exited(i32),
    Signaled(i32),
    StdinCredit(u32),
    /// The helper's stream ended (the container stopped, the engine went away).
    Gone,
}

type Writer = crate::engine::ExecInput;

/// A running helper.
pub(crate) struct Helper {
    /// Where requests go: its stdin pipe itself when it is proven local (opened
    /// through `/proc`), else the engine's stream.
    /// `None` once closed.
    writer: tokio::sync::Mutex<Option<Writer>>,
    /// The engine's stream's input while requests go straight into the pipe: kept
    /// open, and closed with ours, so the helper sees its input end only then.
    stream_input: tokio::sync::Mutex<Option<Writer>>,
    routes: Mutex<HashMap<u32, mpsc::UnboundedSender<Event>>>,
    next: AtomicU32,
    gone: AtomicBool,
    /// Why its stream ended, when the stream said (corrupt, broken); `None` for a
    /// plain end.
    ended: Mutex<Option<String>>,
    /// The engine and container it runs in: what ends its processes when it is gone.
    engine: Engine,
    container: String,
    /// Its pid in the container.
    pub(crate) pid: u32,
    /// Its path in the container and the user it runs as: what signals through the
    /// engine run (`runner-shim --signal`) when it cannot be asked.
    pub(crate) path: String,
    user: Option<String>,
    /// Pongs received, and a wake-up for each.
    pongs: AtomicU64,
    pong: tokio::sync::Notify,
    /// A check that it still answers is under way.
    checking: AtomicBool,
    /// It, seen from here, when proven (`host_view.rs`) and we may open its
    /// descriptors (`/proc/<pid>/fd`): then processes' stdout pipes are read directly.
    local: Option<LocalProcess>,
    /// The container's environment as the engine reports it: the image's, ours, and
    /// what the engine adds at create (Podman: `container`, `TERM`, `HOSTNAME`), which
    /// a plain exec gets from the engine and a helped process from this.
    pub(crate) container_env: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for Helper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helper").field("pid", &self.pid).finish()
    }
}

/// The tar archive holding the helper at `<dir>/runner-shim`.
fn archive(dir: &str) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    tar.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o755);
    header.set_size(SHIM.len() as u64);
    tar.append_data(&mut header, format!("{dir}/runner-shim"), SHIM)?;
    tar.into_inner()
}

/// The helper's architecture as Docker names it (`amd64`, `arm64`, …).
pub(crate) fn docker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// What `runner doctor` says of the helper: `Ok` with its size and architecture
/// when one is built in, else why not.
pub fn embedded_helper() -> Result<String, String> {
    if SHIM.is_empty() {
        return Err(format!("not built into this runner: {SHIM_WHY}"));
    }
    Ok(format!(
        "runner-shim for linux/{} ({} KiB), copied into each container at init",
        docker_arch(),
        SHIM.len() / 1024
    ))
}

/// Whether the helper can run in container `id`: an image of another architecture
/// (run under emulation) or a read-only root filesystem (no place to copy it to)
/// cannot have it, and say so. When it fits: whether the container's processes are
/// this host's (`host_view.rs`), from the same inspection.
async fn fits(
    engine: &Engine,
    id: &str,
    mounted: bool,
) -> Result<(Option<HostView>, Vec<String>), String> {
    let container = engine
        .inspect_container(id)
        .await
        .map_err(|e| format!("the container could not be inspected: {e}"))?;
    if !mounted
        && container
            .host_config
            .as_ref()
            .and_then(|h| h.readonly_rootfs)
            .unwrap_or(false)
    {
        return Err(
            "the container's root filesystem is read-only: the helper cannot be copied in".into(),
        );
    }
    if let Some(image) = &container.image {
        let arch = engine
            .inspect_image(image)
            .await
            .ok()
            .and_then(|i| i.architecture)
            .unwrap_or_default();
        if !arch.is_empty() && arch != docker_arch() {
            return Err(format!(
                "the image is built for {arch}, the helper for {}",
                docker_arch()
            ));
        }
    }
    let env = container
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    Ok((HostView::of(&container), env))
}

/// The helper seen from here: the process the engine numbers `engine_pid`, proven to
/// be the container's (`host_view.rs`) and to be the helper that calls itself `pid` in
/// the container, whose descriptors we may open (`/proc/<pid>/fd` can be listed).
fn seen_here(view: &HostView, engine_pid: u32, pid: u32) -> Option<LocalProcess> {
    view.exec_process(i64::from(engine_pid))
        .filter(|p| p.in_container == i64::from(pid))
        .filter(|p| std::fs::read_dir(format!("/proc/{}/fd", p.pid)).is_ok())
}

/// The helper exec's pid as the engine numbers it (0 until the engine has recorded it,
/// which may be just after the helper's first frame); `None` if it never says.
async fn exec_host_pid(engine: &Engine, exec_id: &str) -> Option<u32> {
    let mut pause = Duration::from_micros(200);
    for _ in 0..50 {
        let pid = engine.inspect_exec(exec_id).await.ok()?.pid.unwrap_or(0);
        if pid > 0 {
            return u32::try_from(pid).ok();
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(Duration::from_millis(20));
    }
    None
}

/// Opens a pipe the helper holds, as descriptor `fd`, through `/proc` (the helper
/// proven the process seen from here): `open` is the receiving or sending end's
/// open. Kept only if the helper was still the proven process after the open.
fn open_held<P>(
    helper: &LocalProcess,
    fd: i32,
    open: impl FnOnce(&tokio::net::unix::pipe::OpenOptions, String) -> std::io::Result<P>,
) -> std::io::Result<P> {
    let pipe = open(
        &tokio::net::unix::pipe::OpenOptions::new(),
        format!("/proc/{}/fd/{fd}", helper.pid),
    )?;
    if helper.alive() {
        Ok(pipe)
    } else {
        Err(std::io::Error::other("the helper is gone"))
    }
}

/// The read end of a process's stdout pipe, through the helper's descriptor `fd`.
fn open_pipe(helper: &LocalProcess, fd: i32) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    open_held(helper, fd, |o, path| o.open_receiver(path))
}

/// A writer of the helper's own stdin pipe.
fn open_input(helper: &LocalProcess) -> std::io::Result<tokio::net::unix::pipe::Sender> {
    open_held(helper, 0, |o, path| o.open_sender(path))
}

/// Turns the exec's output chunks into frames.
#[derive(Default)]
struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one is; `Err` says why the frames cannot be read
    /// (something in the container wrote among them).
    fn complete(&mut self) -> Result<Option<Frame>, Option<String>> {
        self.next().map_err(|e| {
            tracing::warn!(error = %e, "the helper's frames are corrupt");
            Some(format!(
                "its frames were corrupt ({e}): something in the container wrote among them"
            ))
        })
    }

    fn next(&mut self) -> std::io::Result<Option<Frame>> {
        let Some(header) = self.buf.get(..9) else {
            return Ok(None);
        };
        let header: [u8; 9] = header.try_into().unwrap_or([0; 9]);
        let (kind, id, len) = protocol::parse_header(&header)?;
        let end = 9 + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let payload = self.buf[9..end].to_vec();
        self.buf.drain(..end);
        Ok(Some(Frame { kind, id, payload }))
    }
}

type ExecOutput = crate::engine::OutputStream;

/// Reads frames from the helper's output until one is complete.
async fn next_frame(output: &mut ExecOutput, decoder: &mut Decoder) -> Option<Frame> {
    next_frame_or_why(output, decoder).await.ok()
}

/// The next frame, or why there is none: `None` for a plain end of the stream.
async fn next_frame_or_why(
    output: &mut ExecOutput,
    decoder: &mut Decoder,
) -> Result<Frame, Option<String>> {
    loop {
        if let Some(frame) = decoder.complete()? {
            return Ok(frame);
        }
        match output.next().await {
            None => return Err(None),
            Some(Ok(LogOutput::StdOut { message })) => decoder.push(&message),
            Some(Ok(LogOutput::StdErr { message })) => {
                tracing::debug!(helper = %String::from_utf8_lossy(&message), "helper stderr");
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(Some(format!("its stream broke: {e}"))),
        }
    }
}

/// Where the helper's frames come from: the engine's stream, or (the helper proven
/// local) a pipe of its own whose read end we opened (`move_output`).
enum Events {
    Stream(ExecOutput),
    /// The pipe, a buffer, and the end of the engine's stream (still drained;
    /// `None` once it ended).
    Pipe(
        tokio::net::unix::pipe::Receiver,
        Vec<u8>,
        Option<tokio::sync::oneshot::Receiver<()>>,
    ),
}

impl Events {
    /// The next frame, or why there is none: `None` for a plain end.
    ///
    /// With frames in a pipe, the end of the engine's stream still ends them, as it
    /// did on the stream (the engine is gone or let go of the helper: nothing it ran
    /// can be ended or removed through it), after what the pipe already holds: the
    /// frames a helper wrote before it exited come first.
    async fn next(&mut self, decoder: &mut Decoder) -> Result<Frame, Option<String>> {
        let (pipe, buf, stream_end) = match self {
            Events::Stream(output) => return next_frame_or_why(output, decoder).await,
            Events::Pipe(pipe, buf, stream_end) => (pipe, buf, stream_end),
        };
        loop {
            if let Some(frame) = decoder.complete()? {
                return Ok(frame);
            }
            let read = match stream_end {
                None => match pipe.try_read(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(None),
                    other => other,
                },
                Some(end) => tokio::select! {
                    biased;
                    read = pipe.read(buf) => read,
                    _ = end => {
                        *stream_end = None;
                        continue;
                    }
                },
            };
            match read {
                Ok(0) => return Err(None),
                Ok(n) => decoder.push(&buf[..n]),
                Err(e) => return Err(Some(format!("its pipe broke: {e}"))),
            }
        }
    }
}

/// Writes one frame and flushes it.
async fn write_frame(w: &mut Writer, kind: Kind, id: u32, payload: &[u8]) -> std::io::Result<()> {
    w.write_all(&Frame::new(kind, id, payload.to_vec()).encode())
        .await?;
    w.flush().await
}

/// Asks the helper (proven local, its requests already written into its stdin pipe)
/// to send its frames into a pipe of its own, opened here through `/proc`, so its
/// answers skip the engine's relay too. `Ok(None)`: they stay on the stream. `Err`:
/// the helper was told the pipe is ours, but it did not say it moved (unusable).
async fn move_output(
    local: &LocalProcess,
    writer: &mut Writer,
    output: &mut ExecOutput,
    decoder: &mut Decoder,
) -> Result<Option<tokio::net::unix::pipe::Receiver>, String> {
    let answer = async {
        write_frame(writer, Kind::MoveOutput, 0, &[]).await.ok()?;
        tokio::time::timeout(READY_DEADLINE, next_frame(output, decoder))
            .await
            .ok()?
    };
    let Some(answer) = answer.await.filter(|f| f.kind == Kind::OutputPipe) else {
        return Err("it did not answer where its frames would go".into());
    };
    let fd = Fields(&answer.payload).i32().unwrap_or(-1);
    let pipe = if fd >= 0 {
        open_pipe(local, fd)
            .map_err(|e| tracing::debug!(error = %e, "the helper's frames stay on the stream"))
            .ok()
    } else {
        None
    };
    write_frame(writer, Kind::OutputOpened, 0, &[u8::from(pipe.is_some())])
        .await
        .map_err(|e| format!("writing to it failed: {e}"))?;
    let Some(pipe) = pipe else {
        return Ok(None);
    };
    match tokio::time::timeout(READY_DEADLINE, next_frame(output, decoder)).await {
        Ok(Some(f)) if f.kind == Kind::OutputMoved => Ok(Some(pipe)),
        _ => Err("it did not move its frames to the pipe it named".into()),
    }
}

/// Reads what is left of the helper's stream once its frames moved to a pipe (only
/// its stderr, if anything), so the engine never holds it back; `ended` hears when
/// it ends (dropped).
async fn drain(mut output: ExecOutput, ended: tokio::sync::oneshot::Sender<()>) {
    while let Some(Ok(chunk)) = output.next().await {
        if let LogOutput::StdErr { message } = chunk {
            tracing::debug!(helper = %String::from_utf8_lossy(&message), "helper stderr")
        }
    }
    drop(ended);
}

impl Helper {
    /// Copies the helper into container `id`, starts it as `user` and waits for it
    /// to say it is ready. With `end_container` (a container of this owner alone,
    /// kept up by the engine's init) the helper stops the container when the owner
    /// is gone. `Err` is why it cannot be used (then every process runs
    /// as a plain exec).
    pub(crate) async fn start(
        engine: &Engine,
        id: &str,
        user: Option<String>,
        end_container: bool,
        mounted: Option<String>,
    ) -> Result<Arc<Helper>, String> {
        if SHIM.is_empty() {
            return Err(format!("no helper was built into runner: {SHIM_WHY}"));
        }
        let (view, container_env) = fits(engine, id, mounted.is_some()).await?;
        let path = match mounted {
            // Bind-mounted at create time (the engine sees this machine's files):
            // nothing to copy.
            Some(path) => path,
            None => {
                let dir = format!(".runner-shim-{}", digest());
                let body = archive(&dir).map_err(|e| format!("failed to pack the helper: {e}"))?;
                engine
                    .upload(id, "/tmp", body, READY_DEADLINE)
                    .await
                    .map_err(|e| {
                        format!("the helper could not be copied to /tmp in the container: {e}")
                    })?;
                format!("/tmp/{dir}/runner-shim")
            }
        };
        let exec = engine
            .create_exec(
                id,
                ExecConfig {
                    cmd: Some(
                        std::iter::once(path.clone())
                            .chain(end_container.then(|| "--end-container".to_string()))
                            .collect(),
                    ),
                    user: user.clone(),
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("the helper's exec could not be created: {e}"))?;
        let Some((mut output, input)) = engine
            .start_exec(&exec)
            .await
            .map_err(|e| format!("the helper's exec could not be started: {e}"))?
        else {
            return Err("the engine detached the helper's exec".into());
        };
        let mut decoder = Decoder::default();
        let ready = tokio::time::timeout(READY_DEADLINE, next_frame(&mut output, &mut decoder));
        let frame = match ready.await {
            Ok(Some(f)) if f.kind == Kind::Ready => f,
            Ok(Some(f)) => return Err(format!("the helper said {:?} before it was ready", f.kind)),
            Ok(None) => {
                // It could not run: ask the engine why (an image of another
                // architecture, a /tmp mounted noexec, a user without access).
                let why = match engine.inspect_exec(&exec).await {
                    Ok(i) => format!("it exited with {:?}", i.exit_code),
                    Err(e) => e.to_string(),
                };
                return Err(format!("the helper did not start in the container ({why})"));
            }
            Err(_) => return Err("the helper did not answer within 15 s".into()),
        };
        let mut f = Fields(&frame.payload);
        let version = f.u32().unwrap_or(0);
        if version != protocol::VERSION {
            return Err(format!(
                "the helper speaks protocol {version}, runner {}",
                protocol::VERSION
            ));
        }
        let pid = f.u32().unwrap_or(0);
        let local = match &view {
            Some(view) => exec_host_pid(engine, &exec)
                .await
                .and_then(|engine_pid| seen_here(view, engine_pid, pid)),
            None => None,
        };
        tracing::debug!(
            host_pid = ?local.as_ref().map(|l| l.pid),
            "the helper runs; its processes' stdout is read {}",
            if local.is_some() {
                "from their own pipes"
            } else {
                "from its stream"
            }
        );
        // Proven local: requests skip the engine's relay (the stream's stdin pipe
        // opened through /proc, a writer of the same pipe; the helper reads no
        // differently). Output still comes through the stream.
        let (mut writer, stream_input) = match local.as_ref().map(open_input) {
            Some(Ok(direct)) => (Box::pin(direct) as Writer, Some(input)),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "requests go through the engine's stream");
                (input, None)
            }
            None => (input, None),
        };
        // And answers: the helper's frames through a pipe of its own.
        let moved = match (&local, stream_input.is_some()) {
            (Some(l), true) => move_output(l, &mut writer, &mut output, &mut decoder).await?,
            _ => None,
        };
        let events = match moved {
            Some(pipe) => {
                let (ended, stream_end) = tokio::sync::oneshot::channel();
                tokio::spawn(drain(output, ended));
                Events::Pipe(pipe, vec![0; protocol::CHUNK + 9], Some(stream_end))
            }
            None => Events::Stream(output),
        };
        let helper = Arc::new(Helper {
            writer: tokio::sync::Mutex::new(Some(writer)),
            stream_input: tokio::sync::Mutex::new(stream_input),
            routes: Mutex::new(HashMap::new()),
            next: AtomicU32::new(1),
            gone: AtomicBool::new(false),
            ended: Mutex::new(None),
            engine: engine.clone(),
            container: id.to_string(),
            pid,
            path,
            user,
            pongs: AtomicU64::new(0),
            pong: tokio::sync::Notify::new(),
            checking: AtomicBool::new(false),
            local,
            container_env: container_env
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
        tokio::spawn(read_events(Arc::downgrade(&helper), events, decoder));
        Ok(helper)
    }

    /// True once the helper's stream ended.
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    async fn send(&self, kind: Kind, id: u32, payload: &[u8]) -> Result<(), DockerError> {
        let mut w = self.writer.lock().await;
        let Some(w) = w.as_mut() else {
            return Err(DockerError::HelperGone {
                reason: "its input was closed".into(),
            });
        };
        write_frame(w, kind, id, payload)
            .await
            .map_err(|e| DockerError::HelperGone {
                reason: format!("writing to it failed: {e}"),
            })
    }

    /// Closes the helper's input: it kills every group it started and exits.
    pub(crate) async fn close(&self) {
        // Dropped, not only shut down: a pipe's writer closes with its descriptor.
        if let Some(mut w) = self.writer.lock().await.take() {
            let _ = w.shutdown().await;
        }
        if let Some(mut stream) = self.stream_input.lock().await.take() {
            let _ = stream.shutdown().await;
        }
    }

    /// Starts a process; its events arrive on the returned receiver.
    async fn spawn(
        self: &Arc<Helper>,
        req: &Spawn,
    ) -> Result<(u32, u32, i32, mpsc::UnboundedReceiver<Event>), SpawnFailure> {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        if self.is_gone() {
            self.forget(id);
            return Err(SpawnFailure::Docker(DockerError::HelperGone {
                reason: "its stream had ended".into(),
            }));
        }
        if let Err(e) = self.send(Kind::Spawn, id, &req.encode()).await {
            self.forget(id);
            return Err(SpawnFailure::Docker(e));
        }
        match rx.recv().await {
            Some(Event::Started(pid, fd)) => Ok((id, pid, fd, rx)),
            Some(Event::SpawnFailed {
                stage,
                errno,
                message,
            }) => {
                self.forget(id);
                Err(SpawnFailure::Refused {
                    stage,
                    errno,
                    message,
                })
            }
            _ => {
                self.forget(id);
                Err(SpawnFailure::Docker(DockerError::HelperGone {
                    reason: "it ended while starting a process".into(),
                }))
            }
        }
    }

    /// The helper is gone while the process whose group is `pgid` (in the container)
    /// ran: that group has nobody to watch it any more, so it is ended through the
    /// engine (nothing may keep running that runner reports ended). Returns what
    /// happened, in words.
    async fn end_orphan(&self, pgid: u32) -> String {
        let why = self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let running = self
            .engine
            .inspect_container(&self.container)
            .await
            .ok()
            .and_then(|c| c.state.and_then(|s| s.running))
            .unwrap_or(false);
        if !running {
            return why.unwrap_or_else(|| {
                "the container stopped (or the engine went away) while the process ran".into()
            });
        }
        let ended = self
            .signal_through_engine(Signal::Kill, &[-(pgid as i64)])
            .await;
        format!(
            "the helper in the container ended while the process ran ({}); {}",
            why.unwrap_or_else(|| "killed, or it exited: the container still runs".into()),
            if ended {
                "the process's group was killed"
            } else {
                "the process's group could not be killed through the engine"
            }
        )
    }

    /// Sends `signal` to `targets` in the container (pids, or `-pgid` for groups)
    /// through the engine, as `runner-shim --signal` (images need no `kill` of their
    /// own): for when the helper cannot be asked. True when every one was delivered.
    async fn signal_through_engine(&self, signal: Signal, targets: &[i64]) -> bool {
        let mut cmd = vec![
            self.path.clone(),
            "--signal".into(),
            signal.number().to_string(),
        ];
        cmd.extend(targets.iter().map(i64::to_string));
        let exec = ExecConfig {
            cmd: Some(cmd),
            user: self.user.clone(),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let Ok(exec) = self.engine.create_exec(&self.container, exec).await else {
            return false;
        };
        match self.engine.start_exec(&exec).await {
            Ok(Some((mut output, _))) => while output.next().await.is_some() {},
            _ => return false,
        }
        matches!(
            self.engine.inspect_exec(&exec).await,
            Ok(i) if i.exit_code == Some(0)
        )
    }

    /// Writes a frame without waiting more than [`WRITE_BOUND`] for it: a helper
    /// that does not read (stopped, hung) fills its input, and a caller (a stop, a
    /// signal) must go on. The frame is still written whole by its own task.
    async fn send_bounded(
        self: &Arc<Self>,
        kind: Kind,
        id: u32,
        payload: Vec<u8>,
    ) -> Result<(), DockerError> {
        let helper = Arc::clone(self);
        let sending = tokio::spawn(async move { helper.send(kind, id, &payload).await });
        match tokio::time::timeout(WRITE_BOUND, sending).await {
            Ok(Ok(sent)) => sent,
            // Still writing (or the runtime is going away): the caller goes on.
            _ => Ok(()),
        }
    }

    /// True when the helper answers a ping within [`ANSWER_BOUND`].
    async fn answers(self: &Arc<Self>) -> bool {
        let before = self.pongs.load(Ordering::SeqCst);
        let answered = async {
            loop {
                let woken = self.pong.notified();
                if self.pongs.load(Ordering::SeqCst) > before {
                    return;
                }
                woken.await;
            }
        };
        let helper = Arc::clone(self);
        tokio::spawn(async move { helper.send(Kind::Ping, 0, &[]).await });
        tokio::time::timeout(ANSWER_BOUND, answered).await.is_ok() || self.is_gone()
    }

    /// Makes sure the helper acts on what it was just sent (a signal that ends a
    /// process): when it does not answer (the workload stopped it with SIGSTOP, or
    /// it hangs), it is continued through the engine; when it still does not answer,
    /// it is killed through the engine, and its processes' watchers end their groups
    /// and say why (`end_orphan`). One check at a time; returns at once.
    fn make_answer(self: &Arc<Self>) {
        if self.checking.swap(true, Ordering::SeqCst) {
            return;
        }
        let helper = Arc::clone(self);
        tokio::spawn(async move {
            if !helper.answers().await {
                tracing::warn!(
                    "the helper in the container does not answer (stopped?): continuing it through the engine"
                );
                let pid = i64::from(helper.pid);
                helper.signal_through_engine(Signal::Continue, &[pid]).await;
                if !helper.answers().await {
                    *helper.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                        "it did not answer for {} s, even after SIGCONT, and was killed",
                        2 * ANSWER_BOUND.as_secs()
                    ));
                    tracing::warn!(
                        "the helper still does not answer: killing it through the engine"
                    );
                    helper.signal_through_engine(Signal::Kill, &[pid]).await;
                }
            }
            helper.checking.store(false, Ordering::SeqCst);
        });
    }

    fn forget(&self, id: u32) {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// Routes the helper's frames to the processes' watchers; at the stream's end every
/// watcher learns the helper is gone.
async fn read_events(helper: std::sync::Weak<Helper>, mut events: Events, mut decoder: Decoder) {
    let why = loop {
        let frame = match events.next(&mut decoder).await {
            Ok(frame) => frame,
            Err(why) => break why,
        };
        let Some(helper) = helper.upgrade() else {
            return;
        };
        let mut f = Fields(&frame.payload);
        let event = match frame.kind {
            Kind::Started => {
                let pid = f.u32().unwrap_or(0);
                Event::Started(pid, f.i32().unwrap_or(-1))
            }
            Kind::SpawnFailed => {
                let stage = protocol::SpawnStage::from_u8(f.u8().unwrap_or(u8::MAX));
                let errno = f.i32().unwrap_or(0);
                Event::SpawnFailed {
                    stage,
                    errno,
                    message: String::from_utf8_lossy(f.0).into_owned(),
                }
            }
            Kind::Stdout => Event::Output(Stream::Stdout, frame.payload),
            Kind::Stderr => Event::Output(Stream::Stderr, frame.payload),
            Kind::OutputEnd => Event::OutputEnd,
            Kind::Exited => Event::Exited(f.i32().unwrap_or(-1)),
            Kind::Signaled => Event::Signaled(f.i32().unwrap_or(9)),
            Kind::StdinCredit => Event::StdinCredit(f.u32().unwrap_or(0)),
            Kind::Pong => {
                helper.pongs.fetch_add(1, Ordering::SeqCst);
                helper.pong.notify_waiters();
                continue;
            }
            _ => continue,
        };
        let routes = helper.routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = routes.get(&frame.id) {
            let _ = tx.send(event);
        }
    };
    if let Some(helper) = helper.upgrade() {
        *helper.ended.lock().unwrap_or_else(|p| p.into_inner()) = why;
        helper.gone.store(true, Ordering::SeqCst);
        for (_, tx) in helper
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            let _ = tx.send(Event::Gone);
        }
    }
}

/// Where a process's own stdout pipe goes when it can be read directly.
pub(crate) type DirectStdout = tokio::sync::oneshot::Sender<tokio::net::unix::pipe::Receiver>;

/// Why the helper did not start a process.
#[derive(Debug)]
pub(crate) enum SpawnFailure {
    /// The helper refused, at `stage`.
    Refused {
        stage: protocol::SpawnStage,
        errno: i32,
        message: String,
    },
    /// The helper is gone.
    Docker(DockerError),
}

/// A process the helper runs: what its watchers, signals and stops share.
#[derive(Debug)]
pub(crate) struct HelpedShared {
    helper: Arc<Helper>,
    id: u32,
    bin: String,
    pub(crate) pid: u32,
    grace: Duration,
    status: ExitWatch<ExecFailure>,
}

impl HelpedShared {
    /// Spawns `req` through `helper`, feeding `stdin` and forwarding output to
    /// `raw_stdout` (else `sink`) in the background. With `direct`, stdout is the
    /// process's own pipe, opened through the helper's descriptor when the engine
    /// runs on this host (the sender is dropped when it cannot be).
    pub(crate) async fn start(
        helper: &Arc<Helper>,
        mut req: Spawn,
        stdin: Option<DuplexStream>,
        mut raw_stdout: Option<DuplexStream>,
        direct: Option<DirectStdout>,
        sink: Output,
        grace: Duration,
    ) -> Result<Arc<HelpedShared>, SpawnFailure> {
        req.direct_stdout = direct.is_some() && helper.local.is_some() && req.tty.is_none();
        let (id, pid, fd, events) = helper.spawn(&req).await?;
        if let (Some(local), Some(direct), true) = (&helper.local, direct, fd >= 0) {
            let opened = open_pipe(local, fd);
            let ok = opened.is_ok();
            // Until told, the helper holds the pipe and forwards nothing.
            helper
                .send(Kind::Attached, id, &[u8::from(ok)])
                .await
                .map_err(SpawnFailure::Docker)?;
            match opened {
                Ok(pipe) => {
                    let _ = direct.send(pipe);
                    raw_stdout = None;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "stdout is forwarded: its pipe could not be opened")
                }
            }
        }
        let (status_tx, status) = runner_core::exit_channel();
        let bin =
            String::from_utf8_lossy(req.argv.first().map_or(&[][..], |a| &a[..])).into_owned();
        let shared = Arc::new(HelpedShared {
            helper: Arc::clone(helper),
            id,
            bin,
            pid,
            grace,
            status,
        });
        let credit = Arc::new(Semaphore::new(protocol::WINDOW as usize));
        if let Some(stdin) = stdin {
            // A language server's `processId` names the helper, which lives as long
            // as the session (`lsp.rs`); a terminal never carries LSP.
            let lsp_pid = req.tty.is_none().then_some(helper.pid);
            tokio::spawn(feed(
                Arc::clone(helper),
                id,
                stdin,
                Arc::clone(&credit),
                lsp_pid,
            ));
        }
        tokio::spawn(watch(
            Arc::clone(&shared),
            events,
            raw_stdout,
            sink,
            status_tx,
            credit,
        ));
        Ok(shared)
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.status.is_finished()
    }

    pub(crate) fn try_status(&self) -> Option<ExitStatus> {
        self.status.try_status()
    }

    pub(crate) async fn wait(&self) -> runner_core::Result<ExitStatus> {
        crate::outcome::wait(&self.status, &self.bin).await
    }

    /// Gives the process's pseudo-terminal a new size.
    pub(crate) async fn resize(&self, rows: u16, cols: u16) -> runner_core::Result<()> {
        if self.is_finished() || self.helper.is_gone() {
            return Ok(());
        }
        let size = u32::from(rows) | u32::from(cols) << 16;
        self.helper
            .send(Kind::Resize, self.id, &size.to_le_bytes())
            .await?;
        Ok(())
    }

    /// Sends `signal` to the process's whole group (inside the container).
    pub(crate) async fn signal(&self, signal: Signal) -> runner_core::Result<()> {
        if self.is_finished() || self.helper.is_gone() {
            return Ok(());
        }
        if signal.asks_to_end() || signal == Signal::Kill {
            self.helper.make_answer();
        }
        self.helper
            .send_bounded(
                Kind::Signal,
                self.id,
                signal.number().to_le_bytes().to_vec(),
            )
            .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl crate::control::Started for HelpedShared {
    async fn find_pid(&self) -> runner_core::Result<Option<u32>> {
        Ok((!self.is_finished()).then_some(self.pid))
    }

    fn exec_id(&self) -> Option<&str> {
        None
    }

    fn via_helper(&self) -> bool {
        true
    }
}

#[async_trait::async_trait]
impl runner_core::Control for HelpedShared {
    fn is_finished(&self) -> bool {
        HelpedShared::is_finished(self)
    }

    fn try_status(&self) -> Option<ExitStatus> {
        HelpedShared::try_status(self)
    }

    async fn resize_terminal(&self, rows: u16, cols: u16) -> runner_core::Result<()> {
        HelpedShared::resize(self, rows, cols).await
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn grace(&self) -> Duration {
        self.grace
    }

    async fn signal(&self, signal: Signal) -> runner_core::Result<()> {
        HelpedShared::signal(self, signal).await
    }

    async fn wait(&self) -> runner_core::Result<ExitStatus> {
        HelpedShared::wait(self).await
    }
}

/// Output credit is granted back in batches of this many bytes (or when nothing
/// more is queued), a quarter of the window: one frame back per 256 KiB, not per chunk.
const CREDIT_BATCH: usize = protocol::WINDOW as usize / 4;

/// The payload of a `Credit` frame.
fn credit(stream: u8, bytes: usize) -> Vec<u8> {
    let mut out = vec![stream];
    out.extend_from_slice(&(bytes as u32).to_le_bytes());
    out
}

/// Copies the user's stdin writes to the helper within the process's stdin credit,
/// then closes the process's stdin. With `lsp_pid`, the first message is an LSP
/// `initialize` made true in the container ([`crate::lsp`]).
async fn feed(
    helper: Arc<Helper>,
    id: u32,
    mut from: impl AsyncRead + Unpin,
    credit: Arc<Semaphore>,
    lsp_pid: Option<u32>,
) {
    let send = |bytes: Vec<u8>| {
        let (helper, credit) = (&helper, &credit);
        async move {
            for piece in bytes.chunks(protocol::CHUNK) {
                match credit.acquire_many(piece.len() as u32).await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return false,
                }
                if helper.send(Kind::Stdin, id, piece).await.is_err() {
                    return false;
                }
            }
            true
        }
    };
    if let Some(pid) = lsp_pid {
        let first = crate::lsp::first_message(&mut from, pid).await;
        if !first.is_empty() && !send(first).await {
            return;
        }
    }
    let mut buf = vec![0u8; protocol::CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !send(buf[..n].to_vec()).await {
            return;
        }
    }
    let _ = helper.send(Kind::StdinEnd, id, &[]).await;
}

/// Forwards a helped process's output, grants credit as it is delivered, and
/// publishes its exit.
async fn watch(
    shared: Arc<HelpedShared>,
    mut events: mpsc::UnboundedReceiver<Event>,
    raw_stdout: Option<DuplexStream>,
    sink: Output,
    status_tx: ExitPublisher<ExecFailure>,
    stdin_credit: Arc<Semaphore>,
) {
    let mut out_lines = LineBuffer::new(Stream::Stdout);
    let mut err_lines = LineBuffer::new(Stream::Stderr);
    let mut status_tx = Some(status_tx);
    // A raw stdout pipe is written by a task of its own, which grants credit as the
    // user reads: a user who never reads holds back the process's output, never
    // this watcher (its exit, a stop, stderr still get through).
    let raw_stdout = raw_stdout.map(|mut raw| {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (helper, id) = (Arc::clone(&shared.helper), shared.id);
        tokio::spawn(async move {
            let mut owed = 0usize;
            while let Some(bytes) = rx.recv().await {
                if raw.write_all(&bytes).await.is_err() {
                    break;
                }
                owed += bytes.len();
                if owed >= CREDIT_BATCH || rx.is_empty() {
                    let _ = helper.send(Kind::Credit, id, &credit(1, owed)).await;
                    owed = 0;
                }
            }
        });
        tx
    });
    let mut outcome = None;
    let mut ended = 0;
    let mut owed = [0usize; 2];
    let mut piped = false;
    while let Some(event) = events.recv().await {
        match event {
            Event::Output(stream, bytes) => {
                match (stream, raw_stdout.as_ref()) {
                    (Stream::Stdout, Some(raw)) => {
                        // Credit follows when the user has it.
                        let _ = raw.send(bytes);
                        continue;
                    }
                    (Stream::Stdout, None) => {
                        out_lines.push(&bytes, &*sink);
                        if out_lines.reader_gone() && !piped {
                            // Nobody reads its output any more: it gets what a writer
                            // into a pipe nobody reads gets (`yes | head -1`).
                            piped = true;
                            let _ = shared.signal(Signal::Pipe).await;
                        }
                    }
                    (Stream::Stderr, _) => err_lines.push(&bytes, &*sink),
                }
                let which = usize::from(stream != Stream::Stdout);
                owed[which] += bytes.len();
                if owed[which] >= CREDIT_BATCH || events.is_empty() {
                    let grant = credit(which as u8 + 1, owed[which]);
                    let _ = shared.helper.send(Kind::Credit, shared.id, &grant).await;
                    owed[which] = 0;
                }
            }
            Event::OutputEnd => ended += 1,
            Event::Exited(code) => outcome = Some(Ok(ExitStatus::Exited(code))),
            Event::Signaled(sig) => outcome = Some(Ok(ExitStatus::Signaled(sig))),
            Event::StdinCredit(n) => stdin_credit.add_permits(n as usize),
            Event::Gone => {
                if outcome.is_none() {
                    let reason = shared.helper.end_orphan(shared.pid).await;
                    outcome = Some(Err(ExecFailure::Docker(DockerError::HelperGone { reason })));
                }
                break;
            }
            Event::Started(..) | Event::SpawnFailed { .. } => {}
        }
        if outcome.is_some() && ended == 2 {
            break;
        }
        // The exit came first (a background process holds the output): the run
        // ends now; what it still writes is forwarded until the streams end.
        if let (Some(o), true) = (&outcome, ended < 2) {
            if let Some(tx) = status_tx.take() {
                tx.publish(o.clone());
            }
        }
    }
    shared.helper.forget(shared.id);
    // Input for a process that is gone has nowhere to go: the feeder stops.
    stdin_credit.close();
    out_lines.finish(&*sink);
    err_lines.finish(&*sink);
    drop(raw_stdout);
    if let Some(tx) = status_tx {
        tx.publish(
            outcome.unwrap_or(Err(ExecFailure::Docker(DockerError::HelperGone {
                reason: "it stopped reporting on the process".into(),
            }))),
        );
    }
}
