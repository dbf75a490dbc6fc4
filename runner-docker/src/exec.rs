//! `DockerProc`: a process as an `exec` in the environment's container.
//!
//! Output is attached; stdout and stderr go through the same line framing as native
//! processes ([`LineBuffer`]). The exit code is read with `inspect_exec` as soon as the
//! output stream ends (retried quickly while the engine still says "running"), never
//! by polling on a timer. `stop` signals the exec's process inside the container by its
//! pid in the container's namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::ExecConfig;
use futures_util::StreamExt;
use runner_core::{
    exit_channel, EnvLayers, Error, ExitPublisher, ExitStatus, ExitWatch, LineBuffer, Output, Proc,
    ProcOptions, ProcStdin, ProcStdout, Result, Signal, StartStage, Stream,
};
use tokio::io::{AsyncWriteExt, DuplexStream};

use crate::control::{DockerRunning, Started};
use crate::engine::OutputStream;
use crate::helper::{HelpedShared, Helper, SpawnFailure};
use crate::host_view::{HostView, LocalProcess};
use crate::outcome::ExecFailure;
use crate::stream::split_frame;
use crate::DockerError;
use runner_reaper::GROUP_TOKEN_VAR;

const PIPE_SIZE: usize = 64 * 1024;

/// The container an environment runs in, once `init` made it.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub(crate) id: String,
    /// The container's own environment (image `ENV` plus ours), the base of every exec.
    pub(crate) env: BTreeMap<String, String>,
    /// Whether its processes are this host's, proven once, when a process first needs
    /// to know (`None` inside: the engine's pids are not ours).
    pub(crate) view: Arc<tokio::sync::OnceCell<Option<HostView>>>,
}

impl Running {
    /// The container as the engine describes it, and no view proven yet.
    pub(crate) fn new(id: String, env: BTreeMap<String, String>) -> Self {
        Running {
            id,
            env,
            view: Arc::default(),
        }
    }

    /// Whether the container's processes are this host's: one inspection of the
    /// container, the first time it is asked.
    pub(crate) async fn host_view(&self, engine: &crate::Engine) -> Option<HostView> {
        self.view
            .get_or_init(|| async {
                match engine.inspect_container(&self.id).await {
                    Ok(c) => HostView::of(&c),
                    Err(_) => None,
                }
            })
            .await
            .clone()
    }
}

/// State shared by the environment and its processes.
#[derive(Debug)]
pub(crate) struct Inner {
    /// The engine, as the caller connected to it.
    pub(crate) engine: crate::Engine,
    pub(crate) running: Mutex<Option<Running>>,
    /// Every process the environment started, on either path, until it ended.
    pub(crate) registry: runner_core::Registry,
    /// The in-container helper, or why processes run as plain execs.
    pub(crate) helper: Mutex<HelperState>,
}

/// Whether processes go through the in-container helper.
#[derive(Debug, Clone)]
pub(crate) enum HelperState {
    /// `with_exec_helper(false)`.
    Off,
    /// Not yet started (`init` starts it).
    NotStarted,
    /// Being copied and started, in the background of `init`; true once done.
    Starting(tokio::sync::watch::Receiver<bool>),
    /// Running.
    Ready(Arc<Helper>),
    /// It could not be used, and why.
    Unavailable(String),
}

impl Inner {
    /// The helper's state once it is not starting any more (waits for a start in
    /// progress).
    pub(crate) async fn settled_helper(&self) -> HelperState {
        loop {
            let state = self
                .helper
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            match state {
                HelperState::Starting(mut done) => {
                    let _ = done.wait_for(|d| *d).await;
                }
                other => return other,
            }
        }
    }

    /// The helper, while it runs.
    pub(crate) async fn helper(&self) -> Option<Arc<Helper>> {
        match self.settled_helper().await {
            HelperState::Ready(h) if !h.is_gone() => Some(h),
            _ => None,
        }
    }

    pub(crate) fn running(&self) -> Option<Running> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// State shared by a running exec, its waiters and its environment.
#[derive(Debug)]
pub(crate) struct ExecShared {
    inner: Arc<Inner>,
    exec_id: String,
    bin: String,
    /// The exact argv, to tell runc's init from the program.
    cmd: Vec<String>,
    /// The exec's group token (`GROUP_TOKEN_VAR` in its environment, and so in its
    /// children's): what finds it in the container's /proc.
    token: String,
    grace: Duration,
    status: ExitWatch<ExecFailure>,
    /// The last signal we sent, to tell `128 + n` from a plain exit code.
    sent: Mutex<Option<i32>>,
    /// The exec's pid as the engine numbers it, once the engine reported it: a number
    /// of the engine's pid namespace, used here only through `local`.
    engine_pid: std::sync::OnceLock<i64>,
    /// Proof that the container's processes are this host's (`host_view.rs`).
    view: Option<HostView>,
    /// The exec's process seen from here, when `view` proved it (`None` inside: an
    /// engine elsewhere, or the process ended before it could be proven).
    local: std::sync::OnceLock<Option<LocalProcess>>,
    /// `wait_on`: a program of the exec's process group that keeps the run alive.
    wait_on: Option<String>,
    /// The exec's pid (= its process group id) in the container, learned as soon as
    /// its process is proven local, or else found by a scan (at start with `wait_on`,
    /// at the first signal otherwise): `wait_on` needs it after the exec's own
    /// process is gone, a signal after that process executed another program.
    group_in_container: std::sync::OnceLock<i64>,
}

impl ExecShared {
    pub(crate) fn is_finished(&self) -> bool {
        self.status.is_finished()
    }

    fn try_status(&self) -> Option<ExitStatus> {
        self.status.try_status()
    }

    async fn wait(&self) -> Result<ExitStatus> {
        crate::outcome::wait(&self.status, &self.bin).await
    }

    /// The exec's pid as the engine numbers it, or `None` once the exec has ended
    /// before the engine reported one. Asked of the engine until it knows (right after
    /// `start_exec` it may not yet), then remembered; the first answer is also when
    /// the process is proven local or not (`local`).
    async fn engine_pid(&self) -> Result<Option<i64>> {
        if let Some(pid) = self.engine_pid.get() {
            return Ok(Some(*pid));
        }
        let mut pause = Duration::from_micros(200);
        loop {
            if self.is_finished() {
                return Ok(None);
            }
            let info = self.inner.engine.inspect_exec(&self.exec_id).await?;
            if let Some(pid) = info.pid.filter(|p| *p > 0) {
                let local = self.view.as_ref().and_then(|v| v.exec_process(pid));
                // Its pid in the container is its process group's id there, which
                // `wait_on` needs after it is gone: read now, while it still runs.
                if let Some(l) = &local {
                    let _ = self.group_in_container.set(l.in_container);
                }
                let _ = self.local.set(local);
                return Ok(Some(*self.engine_pid.get_or_init(|| pid)));
            }
            if info.exit_code.is_some() {
                return Ok(None);
            }
            // runc takes tens of milliseconds to make the process: ask often enough
            // not to overshoot by much, rarely enough not to load the engine.
            self.pause_unless_finished(pause).await;
            pause = (pause * 3 / 2).min(Duration::from_millis(4));
        }
    }

    /// The exec's process seen from here, when proven.
    fn local(&self) -> Option<LocalProcess> {
        self.local.get().cloned().flatten()
    }

    /// Sleeps for `pause`, or less when the exec ends meanwhile.
    async fn pause_unless_finished(&self, pause: Duration) {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = self.status.wait() => {}
        }
    }

    /// The exec's pid inside the container, or `None` once it has ended: from the
    /// proven local process while it still runs, else a scan of the container's
    /// `/proc` through the engine.
    async fn container_pid(&self) -> Result<Option<i64>> {
        if self.engine_pid().await?.is_none() || self.is_finished() {
            return Ok(None);
        }
        if let Some(l) = self.local() {
            return Ok(l.alive().then_some(l.in_container));
        }
        // Found once, it names the exec's process until the exec ends, even after
        // that process executed another program (`sh -c '…; sleep 600'` becomes
        // `sleep`, which an argv scan would no longer match).
        if let Some(&pid) = self.group_in_container.get() {
            return Ok(Some(pid));
        }
        let found = self.find_pid().await?.map(i64::from);
        if let Some(pid) = found {
            let _ = self.group_in_container.set(pid);
        }
        Ok(found)
    }

    /// Returns once the exec's process exists in the container running this exec's
    /// program (or the exec has already ended), so `find_pid`, `signal` and `stop`
    /// reach it at once. The engine reports the exec's pid as soon as runc has made
    /// the process, which may still be runc's own init before the `execve` of the
    /// program; a proven local process's `cmdline` tells when the program runs
    /// (each look costs one read of `/proc`; the pauses between them start at
    /// 100 µs). Otherwise the engine's word is all there is, and `signal` looks for
    /// the program until it runs.
    async fn until_started(&self) -> Result<()> {
        if self.engine_pid().await?.is_none() {
            return Ok(());
        }
        let Some(local) = self.local() else {
            return Ok(());
        };
        let mut wanted: Vec<u8> = Vec::new();
        for arg in &self.cmd {
            wanted.extend_from_slice(arg.as_bytes());
            wanted.push(0);
        }
        let mut pause = Duration::from_micros(100);
        while !self.is_finished() && local.alive() {
            match runner_core::os::cmdline(local.pid) {
                // Already gone: the output stream is about to say so.
                None => return Ok(()),
                // The program runs (one that rewrites its own argv included).
                Some(cmdline)
                    if cmdline == wanted || !(cmdline.is_empty() || is_runc_init(&cmdline)) =>
                {
                    return Ok(())
                }
                // Still runc's init, or a zombie (empty cmdline) the exit of which the
                // output stream is about to report.
                Some(_) => {}
            }
            self.pause_unless_finished(pause).await;
            pause = (pause * 2).min(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Runs `cmd` in the container (not as a tracked process) and returns its stdout.
    async fn run_helper(&self, action: &'static str, cmd: Vec<String>) -> Result<Vec<u8>> {
        use bollard::container::LogOutput;
        let Some(container) = self.inner.running().map(|r| r.id) else {
            return Err(DockerError::NoContainer(
                "the environment has no running container".into(),
            )
            .into());
        };
        let engine = &self.inner.engine;
        let config = ExecConfig {
            cmd: Some(cmd),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let failed = |e: crate::engine::Fault| e.during(action);
        let exec = engine
            .create_exec(&container, config)
            .await
            .map_err(failed)?;
        let mut stdout = Vec::new();
        if let Some((mut output, _)) = engine.start_exec(&exec).await.map_err(failed)? {
            while let Some(item) = output.next().await {
                if let Ok(LogOutput::StdOut { message }) = item {
                    stdout.extend_from_slice(&message);
                }
            }
        }
        Ok(stdout)
    }

    /// The pid, inside the container, of this exec's own process, found by scanning
    /// the container's /proc (no `ps` needed) for the one process whose parent is
    /// outside the container (runc's) and whose environment carries this exec's
    /// token: its children carry the token too but have a parent inside, and it keeps
    /// the token across an `exec` of another program. `None` until the program runs
    /// (runc's init has runc's environment) and once it ended.
    async fn find_pid(&self) -> Result<Option<u32>> {
        if self.is_finished() {
            return Ok(None);
        }
        let listing = self
            .run_helper(
                "scan the container's /proc",
                vec![
                    "sh".into(),
                    "-c".into(),
                    PROC_SCAN.into(),
                    "sh".into(),
                    format!("{GROUP_TOKEN_VAR}={}", self.token),
                ],
            )
            .await?;
        let matches = listed_pids(&listing);
        match matches.as_slice() {
            [] => Ok(None),
            [pid] => Ok(Some(*pid)),
            many => Err(DockerError::unexpected(
                "find the exec's pid",
                format!(
                    "{} processes in the container carry this exec's token and were \
                     started from outside it; refusing to guess",
                    many.len(),
                ),
            )
            .into()),
        }
    }

    /// Sends `signal` to the exec's whole process group: runc makes every exec the
    /// leader of its own session and group, so its children are signalled with it.
    /// A proven local process (`host_view.rs`) has its group signalled from here:
    /// through its exit descriptor where the kernel can, else by the group's id while
    /// the leader still has the start time it was proven with (or, the leader gone,
    /// while members of its group in the container run). Otherwise, or where the host
    /// refuses (an engine of another user), by `kill -s SIG -<pgid>` run as an exec.
    async fn signal(&self, signal: Signal) -> Result<()> {
        if self.is_finished() || self.inner.running().is_none() {
            return Ok(());
        }
        *self.sent.lock().unwrap_or_else(|p| p.into_inner()) = Some(signal.number());
        self.engine_pid().await?;
        // Through the proven leader's exit descriptor: the kernel finds the group from
        // the leader itself, also after it exited while members run.
        // A signal that asks the group to end is followed by SIGCONT, as a shell's
        // `kill %job` does: a stopped group would keep it pending for ever.
        let ends = signal.asks_to_end();
        let through_fd = self
            .local()
            .and_then(|l| l.exit_fd)
            .map(|fd| -> std::io::Result<()> {
                runner_core::os::signal_group_of(&fd, signal.number())?;
                if ends {
                    runner_core::os::signal_group_of(&fd, Signal::Continue.number())?;
                }
                Ok(())
            });
        match through_fd {
            Some(Ok(())) => return Ok(()),
            // The group is gone, or the host refuses: the engine decides.
            Some(Err(e)) if e.kind() != std::io::ErrorKind::Unsupported => {}
            // By number (kernels before 6.9): the group outlives its leader while
            // members run; its id is the leader's, which the start time still names
            // while the leader runs, and members in the container otherwise.
            _ => {
                if let Some(group) = self.local_group().await {
                    let leader_is_ours = self.local().is_some_and(|l| l.alive());
                    let members_left =
                        !leader_is_ours && !self.is_finished() && !group.members().is_empty();
                    if (leader_is_ours || members_left)
                        && runner_core::os::signal_group(group.pgid, signal.number()).is_ok()
                    {
                        if ends {
                            let _ = runner_core::os::signal_group(
                                group.pgid,
                                Signal::Continue.number(),
                            );
                        }
                        return Ok(());
                    }
                }
            }
        }
        // Through the engine. The leader may be gone while a `wait_on` run lasts on
        // the process its group still has: the group's id in the container, read at
        // start, still names it. A process not yet running its program (runc's init
        // still) is looked for again, briefly.
        let mut pause = Duration::from_millis(5);
        let pid = loop {
            if let Some(pid) = self.container_pid().await? {
                break pid;
            }
            match self.group_in_container.get() {
                Some(&group) if self.wait_on.is_some() => break group,
                _ if self.is_finished() || pause > Duration::from_secs(1) => return Ok(()),
                _ => {
                    self.pause_unless_finished(pause).await;
                    pause *= 2;
                }
            }
        };
        let name = signal.name().trim_start_matches("SIG");
        let cmd = if ends {
            vec![
                "sh".to_string(),
                "-c".to_string(),
                format!("kill -s {name} -{pid}; kill -s CONT -{pid}"),
            ]
        } else {
            vec![
                "kill".to_string(),
                "-s".to_string(),
                name.to_string(),
                format!("-{pid}"),
            ]
        };
        self.run_helper("signal the exec's process group", cmd)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Started for ExecShared {
    async fn find_pid(&self) -> Result<Option<u32>> {
        ExecShared::find_pid(self).await
    }

    fn exec_id(&self) -> Option<&str> {
        Some(&self.exec_id)
    }

    fn via_helper(&self) -> bool {
        false
    }
}

#[async_trait]
impl runner_core::Control for ExecShared {
    fn is_finished(&self) -> bool {
        ExecShared::is_finished(self)
    }

    fn try_status(&self) -> Option<ExitStatus> {
        ExecShared::try_status(self)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn grace(&self) -> Duration {
        self.grace
    }

    async fn signal(&self, signal: Signal) -> Result<()> {
        ExecShared::signal(self, signal).await
    }

    async fn wait(&self) -> Result<ExitStatus> {
        ExecShared::wait(self).await
    }
}

/// True for the command line of runc's own init (`<path>/runc init`), which the
/// exec's process runs until it executes the program.
fn is_runc_init(cmdline: &[u8]) -> bool {
    let mut args = cmdline.split(|b| *b == 0);
    matches!(
        (args.next(), args.next()),
        (Some(runc), Some(b"init")) if runc.ends_with(b"runc")
    )
}

/// A process run as an exec in a Docker container.
#[derive(Debug)]
pub struct DockerProc {
    inner: Arc<Inner>,
    cmd: Vec<String>,
    env_layers: EnvLayers,
    opts: ProcOptions,
    work_dir: Option<PathBuf>,
    user: Option<String>,
    stdin: Option<DuplexStream>,
    stdout: Option<DuplexStream>,
    /// Where the process's own stdout pipe goes, when the helper lets us read it.
    direct_stdout: Option<crate::helper::DirectStdout>,
    stdin_taken: bool,
    stdout_taken: bool,
    wait_on: Option<String>,
}

impl DockerProc {
    pub(crate) fn new(
        inner: Arc<Inner>,
        cmd: Vec<String>,
        env_layers: EnvLayers,
        work_dir: Option<PathBuf>,
        user: Option<String>,
    ) -> Self {
        DockerProc {
            inner,
            cmd,
            env_layers,
            opts: ProcOptions::default(),
            work_dir,
            user,
            stdin: None,
            stdout: None,
            direct_stdout: None,
            stdin_taken: false,
            stdout_taken: false,
            wait_on: None,
        }
    }

    /// Starts the process ([`Proc::start`] for a `DockerProc` at hand), through the
    /// environment's helper when it runs, else as a plain exec.
    pub async fn start(mut self) -> Result<DockerRunning> {
        // The engine would cut an argument at a NUL byte (and report exit status 1).
        if let Some(arg) = self.cmd.iter().find(|a| a.contains('\0')) {
            return Err(Error::Spawn {
                bin: self.cmd[0].clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("a NUL byte in the argument {arg:?}"),
                ),
            });
        }
        let running = self.inner.running().ok_or_else(|| {
            DockerError::NoContainer("the environment has no running container; call init".into())
        })?;
        if let Some(helper) = self.inner.helper().await {
            let mut env = helper.container_env.clone();
            env.extend(running.env.clone());
            self.env_layers.apply_to(&mut env);
            self.opts.env.apply_to(&mut env);
            return self.start_helped(helper, &env).await;
        }
        let mut env = running.env.clone();
        self.env_layers.apply_to(&mut env);
        self.opts.env.apply_to(&mut env);
        // A plain exec's output comes through the engine's stream only.
        self.direct_stdout = None;
        let engine = &self.inner.engine;
        let view = running.host_view(engine).await;
        let token = runner_reaper::new_group_token().map_err(Error::ledger)?;
        env.insert(GROUP_TOKEN_VAR.to_string(), token.clone());
        let exec_id = engine
            .create_exec(
                &running.id,
                ExecConfig {
                    cmd: Some(self.cmd.clone()),
                    env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                    working_dir: self.work_dir.as_ref().map(|d| d.display().to_string()),
                    user: self.user.clone(),
                    attach_stdin: Some(self.stdin.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                if e.is_conflict() {
                    DockerError::NotRunning(running.id.clone())
                } else if e.is_missing() {
                    DockerError::NoContainer(running.id.clone())
                } else {
                    e.into()
                }
            })?;
        let Some((output, input)) = engine.start_exec(&exec_id).await? else {
            return Err(
                DockerError::unexpected("attach to the exec", "the engine detached it").into(),
            );
        };
        if let Some(mut from_user) = self.stdin.take() {
            let mut input = input;
            let lsp = !self.opts.terminal;
            tokio::spawn(async move {
                // A language server's `processId` names the container's init, which
                // lives as long as the container (`lsp.rs`).
                if lsp {
                    let first = crate::lsp::first_message(&mut from_user, 1).await;
                    if input.write_all(&first).await.is_err() {
                        return;
                    }
                }
                let _ = tokio::io::copy(&mut from_user, &mut input).await;
                // Half-close: the process sees end of file, its output keeps coming.
                let _ = input.shutdown().await;
            });
        }
        let (status_tx, status_rx) = exit_channel();
        let shared = Arc::new(ExecShared {
            inner: Arc::clone(&self.inner),
            exec_id,
            bin: self.cmd[0].clone(),
            cmd: self.cmd.clone(),
            token,
            grace: self.opts.grace,
            status: status_rx,
            sent: Mutex::new(None),
            engine_pid: std::sync::OnceLock::new(),
            view,
            local: std::sync::OnceLock::new(),
            wait_on: self.wait_on.clone(),
            group_in_container: std::sync::OnceLock::new(),
        });
        tokio::spawn(supervise(
            Arc::clone(&shared),
            output,
            self.stdout.take(),
            Arc::clone(&self.opts.output),
            status_tx,
        ));
        self.inner.registry.add(Arc::clone(&shared) as _);
        shared.until_started().await?;
        if shared.wait_on.is_some() && shared.group_in_container.get().is_none() {
            // Not proven local: the container's /proc says.
            if let Some(pid) = shared.find_pid().await? {
                let _ = shared.group_in_container.set(i64::from(pid));
            }
        }
        Ok(DockerRunning::new(shared))
    }

    /// Starts the process and waits for it to exit ([`Proc::run`]).
    pub async fn run(self) -> Result<ExitStatus> {
        Proc::run(Box::new(self)).await
    }

    /// Starts the process through the helper.
    async fn start_helped(
        &mut self,
        helper: Arc<Helper>,
        env: &BTreeMap<String, String>,
    ) -> Result<DockerRunning> {
        use std::os::unix::ffi::OsStrExt;
        let dir = match &self.work_dir {
            Some(d) => d.as_os_str().as_bytes().to_vec(),
            None => b"/".to_vec(),
        };
        let req = runner_shim::protocol::Spawn {
            dir,
            argv: self.cmd.iter().map(|a| a.as_bytes().to_vec()).collect(),
            env: env
                .iter()
                .map(|(k, v)| format!("{k}={v}").into_bytes())
                .collect(),
            stdin: self.stdin.is_some(),
            direct_stdout: false,
            wait_on: self.wait_on.clone().unwrap_or_default().into_bytes(),
            // A pseudo-terminal as large as the caller's window (24x80 without one).
            tty: self.opts.terminal.then(|| {
                terminal_size::terminal_size_of(std::io::stdin())
                    .map_or((24, 80), |(w, h)| (h.0, w.0))
            }),
        };
        let started = HelpedShared::start(
            &helper,
            req,
            self.stdin.take(),
            self.stdout.take(),
            self.direct_stdout.take(),
            Arc::clone(&self.opts.output),
            self.opts.grace,
        )
        .await;
        let shared = match started {
            Ok(s) => s,
            Err(SpawnFailure::Docker(e)) => return Err(e.into()),
            Err(SpawnFailure::Refused {
                stage,
                errno,
                message,
            }) => {
                use runner_shim::protocol::SpawnStage;
                let dir = self.work_dir.clone().unwrap_or_else(|| PathBuf::from("/"));
                let failure = runner_core::StartFailure {
                    bin: &self.cmd[0],
                    program: Path::new(&self.cmd[0]),
                    searched: "the container's PATH",
                    dir: &dir,
                };
                let stage = match stage {
                    SpawnStage::Dir => StartStage::Dir,
                    SpawnStage::Program => StartStage::Program,
                    SpawnStage::Terminal => StartStage::Other("open a pseudo-terminal"),
                    SpawnStage::Setup => StartStage::Other("set the process up in the helper"),
                };
                // The system's error where there is one, else the helper's words.
                let source = if errno > 0 {
                    std::io::Error::from_raw_os_error(errno)
                } else {
                    std::io::Error::other(message)
                };
                return Err(failure.error(stage, source));
            }
        };
        self.inner.registry.add(Arc::clone(&shared) as _);
        Ok(DockerRunning::new(shared))
    }
}

#[async_trait]
impl Proc for DockerProc {
    fn with_dir(&mut self, dir: &Path) {
        self.work_dir = Some(match &self.work_dir {
            Some(base) => base.join(dir),
            None => dir.to_path_buf(),
        });
    }

    fn options_mut(&mut self) -> &mut ProcOptions {
        &mut self.opts
    }

    /// After the exec's own process exits, the run goes on while a process running
    /// `bin` is left in the exec's process group (a server its launcher started and
    /// detached from the output). With the engine on this host the host's process
    /// table says; with a remote one a scan of the container's `/proc`, which needs
    /// the exec's process to be seen running first. Looked at every 200 ms (the
    /// engine has no event for it).
    fn wait_on(&mut self, bin: &str) {
        self.wait_on = Some(bin.to_string());
    }

    fn stdin_pipe(&mut self) -> Result<ProcStdin> {
        if self.stdin_taken {
            return Err(Error::PipeUnavailable("stdin"));
        }
        let (user, ours) = tokio::io::duplex(PIPE_SIZE);
        self.stdin = Some(ours);
        self.stdin_taken = true;
        Ok(Box::new(user))
    }

    fn stdout_pipe(&mut self) -> Result<ProcStdout> {
        if self.stdout_taken {
            return Err(Error::PipeUnavailable("stdout"));
        }
        let (user, ours) = tokio::io::duplex(PIPE_SIZE);
        let (reader, direct) = crate::stream::LateStdout::new(user);
        self.stdout = Some(ours);
        self.direct_stdout = Some(direct);
        self.stdout_taken = true;
        Ok(Box::new(reader))
    }

    async fn start(self: Box<Self>) -> Result<runner_core::Running> {
        DockerProc::start(*self)
            .await
            .map(runner_core::Running::from)
    }
}

async fn supervise(
    shared: Arc<ExecShared>,
    mut output: OutputStream,
    raw_stdout: Option<DuplexStream>,
    sink: Output,
    status_tx: ExitPublisher<ExecFailure>,
) {
    let dialect = shared.inner.engine.dialect();
    let mut forward = Forward {
        shared: &shared,
        raw_stdout,
        out_lines: LineBuffer::new(Stream::Stdout),
        err_lines: LineBuffer::new(Stream::Stderr),
        sink: &sink,
        piped: false,
    };
    // The engine reports a missing program in place of its output: a first output
    // that may be that report is held (with what follows it, up to 512 bytes) until
    // the exit says whose it was. `None` once decided.
    let mut held: Option<Vec<(Stream, bytes::Bytes)>> = Some(Vec::new());
    let mut stream_error = None;
    while let Some(item) = output.next().await {
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                stream_error = Some(e);
                break;
            }
        };
        let Some((stream, bytes)) = split_frame(item) else {
            continue;
        };
        if let Some(frames) = held.as_mut() {
            let engines = match frames.first() {
                None => dialect.may_report_missing_program(stream, &bytes),
                Some(_) => frames.iter().map(|(_, b)| b.len()).sum::<usize>() + bytes.len() < 512,
            };
            frames.push((stream, bytes));
            if engines {
                continue;
            }
            for (stream, bytes) in held.take().into_iter().flatten() {
                forward.frame(stream, &bytes).await;
            }
            continue;
        }
        forward.frame(stream, &bytes).await;
    }
    let (outcome, missing) = match held.filter(|frames| !frames.is_empty()) {
        None => {
            // Nothing held: the readers see the end before the exit is asked for.
            forward.finish();
            (exit_status(&shared, stream_error).await, false)
        }
        Some(frames) => {
            let outcome = exit_status(&shared, stream_error).await;
            let missing = outcome
                .as_ref()
                .is_ok_and(|&(code, pid)| dialect.missing_program_confirmed(code, pid));
            if !missing {
                for (stream, bytes) in frames {
                    forward.frame(stream, &bytes).await;
                }
            }
            forward.finish();
            (outcome, missing)
        }
    };
    let outcome = match outcome {
        _ if missing => Err(ExecFailure::NotFound),
        Ok((code, _)) => {
            let sent = *shared.sent.lock().unwrap_or_else(|p| p.into_inner());
            Ok(match sent {
                Some(sig) if code == 128 + i64::from(sig) => ExitStatus::Signaled(sig),
                _ => ExitStatus::Exited(code as i32),
            })
        }
        Err(e) => Err(e),
    };
    if outcome.is_ok() {
        shared.wait_for_named().await;
    }
    status_tx.publish(outcome);
}

/// Where a plain exec's output goes: its raw stdout pipe when the caller took one,
/// else line-framed into the sink.
struct Forward<'a> {
    shared: &'a ExecShared,
    raw_stdout: Option<DuplexStream>,
    out_lines: LineBuffer,
    err_lines: LineBuffer,
    sink: &'a Output,
    piped: bool,
}

impl Forward<'_> {
    async fn frame(&mut self, stream: Stream, bytes: &[u8]) {
        match (stream, self.raw_stdout.as_mut()) {
            (Stream::Stdout, Some(raw)) => {
                if raw.write_all(bytes).await.is_err() {
                    self.raw_stdout = None;
                }
            }
            (Stream::Stdout, None) => {
                self.out_lines.push(bytes, &**self.sink);
                if self.out_lines.reader_gone() && !self.piped {
                    // Nobody reads its output any more: it gets what a writer into a
                    // pipe nobody reads gets (`yes | head -1`).
                    self.piped = true;
                    let _ = self.shared.signal(Signal::Pipe).await;
                }
            }
            (Stream::Stderr, _) => self.err_lines.push(bytes, &**self.sink),
        }
    }

    /// Ends both streams.
    fn finish(self) {
        self.out_lines.finish(&**self.sink);
        self.err_lines.finish(&**self.sink);
    }
}

/// The far side of a tunnelled connection ([`runner_core::tunnel`]): a process of
/// the helper connected to `port` inside the container (`runner-shim --connect`),
/// as `user`; its stdin and stdout. The process ends with the connection (and is
/// killed if the connection is dropped first).
pub(crate) async fn connect_inside(
    inner: Arc<Inner>,
    user: Option<String>,
    port: u16,
) -> std::io::Result<runner_core::tunnel::FarSide> {
    let (stdin, stdout) = helper_mode(
        inner,
        user,
        "no tunnel",
        vec!["--connect".to_string(), format!("localhost:{port}")],
    )
    .await?;
    Ok((stdin, Box::new(stdout)))
}

/// A process of runner's helper program itself in one of its modes (`args`: such as
/// `--connect ADDRESS`, `--sync DIR`), started through the helper as `user`: its
/// stdin, and its stdout holding the process (killed when that is dropped). `what`
/// says what is missing without the helper.
pub(crate) async fn helper_mode(
    inner: Arc<Inner>,
    user: Option<String>,
    what: &str,
    args: Vec<String>,
) -> std::io::Result<(runner_core::ProcStdin, WhileRunning)> {
    let helper = inner.helper().await.ok_or_else(|| {
        std::io::Error::other(format!(
            "runner's helper does not run in the container: {what}"
        ))
    })?;
    let mut proc = DockerProc::new(
        inner,
        std::iter::once(helper.path.clone()).chain(args).collect(),
        EnvLayers::new(),
        None,
        user,
    );
    proc.with_output(Arc::new(runner_core::NullSink));
    let stdin = proc.stdin_pipe().map_err(std::io::Error::other)?;
    let stdout = proc.stdout_pipe().map_err(std::io::Error::other)?;
    // Through the helper's stream, not the process's own pipe: many connections
    // opened at once stalled on the direct pipe's handshake (issue left open in the
    // closing note of "Engines elsewhere").
    proc.direct_stdout = None;
    let running = Box::new(proc)
        .start()
        .await
        .map_err(std::io::Error::other)?;
    running.kill_on_drop(true);
    Ok((
        stdin,
        WhileRunning {
            stdout,
            _running: running,
        },
    ))
}

/// A process's stdout that keeps the process's handle for as long as it is read.
pub(crate) struct WhileRunning {
    stdout: runner_core::ProcStdout,
    _running: runner_core::Running,
}

impl tokio::io::AsyncRead for WhileRunning {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

/// Lists the running processes of process group `$1` whose command name is `$2`.
const GROUP_SCAN: &str = r#"pg=$1; bin=$2; for d in /proc/[0-9]*; do s=$(cat "$d/stat" 2>/dev/null) || continue; set -- ${s##*) }; [ "$3" = "$pg" ] && [ "$1" != Z ] && [ "$(cat "$d/comm" 2>/dev/null)" = "$bin" ] && echo "${d#/proc/}"; done; true"#;

impl ExecShared {
    /// With `wait_on`, returns once no process running that program is left in the
    /// exec's process group. With the container's processes proven local the host's
    /// process table says ([`LocalGroup`]); otherwise a scan of the container's
    /// `/proc`. Every 200 ms: the engine has no event for it.
    async fn wait_for_named(&self) {
        let Some(bin) = &self.wait_on else {
            return;
        };
        // (members of the group still running, of which running `bin`): the same
        // reading of the process table the native supervisor's `wait_on` makes,
        // limited to the container's processes.
        let on_host = |group: &LocalGroup| {
            let members = group.members();
            let named = members
                .iter()
                .filter(|p| runner_core::os::runs_program(**p, bin))
                .count();
            (members.len(), named)
        };
        if let Some(group) = self.local_group().await.filter(|g| on_host(g).0 > 0) {
            let mut watch = runner_core::WaitOnWatch::default();
            loop {
                let (members, named) = on_host(&group);
                let pause = match watch.next(members, named) {
                    runner_core::WaitOn::Over => return,
                    runner_core::WaitOn::LookAgainAfter(pause) => pause,
                    // The engine has no event for a process's exit: look again.
                    runner_core::WaitOn::Named => Duration::from_millis(200),
                };
                tokio::time::sleep(pause).await;
            }
        }
        let Some(pgid) = self.group_in_container.get() else {
            return;
        };
        // The kernel keeps a command name to 15 bytes.
        let comm: String = bin.chars().take(15).collect();
        loop {
            let cmd = vec![
                "sh".into(),
                "-c".into(),
                GROUP_SCAN.into(),
                "sh".into(),
                pgid.to_string(),
                comm.clone(),
            ];
            match self.run_helper("look for the wait_on process", cmd).await {
                Ok(listing) if !listing.iter().all(u8::is_ascii_whitespace) => {}
                // None left, or the container is gone: the run is over.
                _ => return,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// An exec's process group seen from here: the container's processes are proven to
/// be this host's (`host_view.rs`), so the engine's number for the exec is our id of
/// its group, even after the exec's own process is gone.
struct LocalGroup<'a> {
    view: &'a HostView,
    pgid: i32,
    /// Its leader's start time, when it was proven while it ran.
    since: Option<u64>,
}

impl LocalGroup<'_> {
    /// The running members, leader included: processes here in that group that are
    /// the container's (a group id reused on the host after the container's group
    /// ended names no process of the container) and started no earlier than the
    /// leader.
    fn members(&self) -> Vec<i32> {
        runner_core::os::processes()
            .iter()
            .filter(|p| {
                p.pgid == self.pgid && p.running && self.since.is_none_or(|s| p.start_time >= s)
            })
            .map(|p| p.pid)
            .filter(|&pid| self.view.holds(pid))
            .collect()
    }
}

impl ExecShared {
    /// The exec's process group seen from here, when the container's processes are
    /// proven local. The engine still reports the exec's pid after its process
    /// exited.
    async fn local_group(&self) -> Option<LocalGroup<'_>> {
        let view = self.view.as_ref()?;
        let pgid = match self.engine_pid.get() {
            Some(pid) => *pid,
            None => self
                .inner
                .engine
                .inspect_exec(&self.exec_id)
                .await
                .ok()?
                .pid
                .filter(|p| *p > 1)?,
        };
        Some(LocalGroup {
            view,
            pgid: i32::try_from(pgid).ok().filter(|p| *p > 1)?,
            since: self.local().map(|l| l.start),
        })
    }
}

/// Lists the processes of the container whose parent is outside it (pid 0 there) and
/// whose environment holds exactly the entry `$1`, one pid a line, with nothing but
/// the shell, `cat`, `tr`, `grep` and /proc (images without `ps` are common).
const PROC_SCAN: &str = r#"want=$1; for d in /proc/[0-9]*; do s=$(cat "$d/stat" 2>/dev/null) || continue; set -- ${s##*) }; [ "$2" = 0 ] || continue; tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qxF "$want" && echo "${d#/proc/}"; done; true"#;

/// The pids of a [`PROC_SCAN`] listing.
fn listed_pids(listing: &[u8]) -> Vec<u32> {
    String::from_utf8_lossy(listing)
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

/// Reads the exit code once the output ended; the engine may need a moment to notice
/// the exit, so retry quickly while it still says "running". A broken output stream
/// (`stream_error`) explains a failed inspect: the engine went away mid-exec.
async fn exit_status(
    shared: &ExecShared,
    stream_error: Option<crate::engine::Fault>,
) -> std::result::Result<(i64, Option<i64>), ExecFailure> {
    let mut pause = Duration::from_millis(1);
    for _ in 0..200 {
        match shared.inner.engine.inspect_exec(&shared.exec_id).await {
            Ok(info) if info.running == Some(true) => {}
            Ok(info) => {
                return info.exit_code.map(|code| (code, info.pid)).ok_or_else(|| {
                    ExecFailure::Docker(DockerError::unexpected(
                        "observe the exec",
                        "the engine reported no exit code",
                    ))
                })
            }
            Err(e) if e.is_missing() => {
                let container = shared
                    .inner
                    .running()
                    .map(|r| r.id)
                    .unwrap_or_else(|| "?".into());
                return Err(ExecFailure::Docker(DockerError::NoContainer(container)));
            }
            Err(e) => {
                let e = stream_error.unwrap_or(e).during("observe the exec");
                return Err(ExecFailure::Docker(e));
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    Err(ExecFailure::Docker(DockerError::unexpected(
        "observe the exec",
        "the engine still reports the exec as running after its output ended",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_is_pids_only() {
        assert_eq!(listed_pids(b"42\n"), vec![42]);
        assert_eq!(listed_pids(b""), Vec::<u32>::new());
        assert_eq!(listed_pids(b"7\n9\nnoise\n"), vec![7, 9]);
    }
}
