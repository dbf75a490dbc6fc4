//! `NativeProc`: one host process leading its own process group.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::OnceLock;

use async_trait::async_trait;
use nix::fcntl::OFlag;
use runner_core::{
    forward, EnvLayers, Error, OsEnv, Proc, ProcOptions, ProcStdin, ProcStdout, Registry, Result,
    Running, StartFailure, StartStage, Stream,
};
use runner_reaper::Ledger;
use tokio::net::unix::pipe;

use crate::launch::{Launch, SpawnError, Stage};
use crate::resolve::{check_dir, resolve_binary};
use crate::spawn::spawn_group;
use crate::supervisor::{supervise, Supervised};

/// The variables a process starts from, below every edit.
#[derive(Debug, Clone)]
pub enum BaseEnv {
    /// The host's environment, read when the process starts.
    Host,
    /// A fixed set of variables (e.g. a materialized Nix dev shell over the host's).
    Fixed(Arc<OsEnv>),
}

impl BaseEnv {
    /// The variables, read now (non-UTF-8 ones included).
    pub fn resolve(&self) -> OsEnv {
        match self {
            BaseEnv::Host => runner_core::host_env_os(),
            BaseEnv::Fixed(vars) => (**vars).clone(),
        }
    }
}

/// Everything a native process is made of, before it starts. Other backends that run
/// host processes (Nix) build one of these and hand it to
/// [`process_from_spec`](crate::NativeEnvironment::process_from_spec).
#[derive(Debug, Clone)]
pub struct ProcSpec {
    /// The program as the caller named it (resolved on the final `PATH` at start).
    pub bin: String,
    /// Its arguments (any bytes but NUL).
    pub args: Vec<std::ffi::OsString>,
    /// The working directory.
    pub dir: PathBuf,
    /// The variables below every edit.
    pub base: BaseEnv,
    /// The environment's edits (the process's own come after them).
    pub env: EnvLayers,
    /// Where the group is registered; `None` runs unregistered.
    pub ledger: Option<Ledger>,
}

impl ProcSpec {
    /// `argv` as the program gets it, and as text for the ledger record.
    fn argv(&self) -> (Vec<std::ffi::OsString>, Vec<String>) {
        let exec: Vec<std::ffi::OsString> = std::iter::once(self.bin.clone().into())
            .chain(self.args.iter().cloned())
            .collect();
        let text = exec
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        (exec, text)
    }
}

/// A process on the host, leading its own process group.
#[derive(Debug)]
pub struct NativeProc {
    spec: ProcSpec,
    opts: ProcOptions,
    wait_on: Option<String>,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stdin_taken: bool,
    stdout_taken: bool,
    /// Descriptors passed on explicitly: our close-on-exec copy, the child's number.
    pass: Vec<(OwnedFd, RawFd)>,
    registry: Arc<Registry>,
}

impl NativeProc {
    /// A process from a spec, stopped together with the others of `registry`'s
    /// environment.
    pub(crate) fn new(spec: ProcSpec, registry: Arc<Registry>) -> Self {
        NativeProc {
            spec,
            opts: ProcOptions::default(),
            wait_on: None,
            stdin: None,
            stdout: None,
            stdin_taken: false,
            stdout_taken: false,
            pass: Vec::new(),
            registry,
        }
    }

    /// The final environment the process gets: base, then the environment's edits,
    /// then the process's own.
    pub fn effective_env(&self) -> OsEnv {
        let mut env = self.spec.base.resolve();
        self.spec.env.apply_to_os(&mut env);
        self.opts.env.apply_to_os(&mut env);
        env
    }

    /// Passes `fd` on to the child under the same number. Every other descriptor of
    /// this process (0, 1 and 2 aside) is closed in the child, close-on-exec or not,
    /// descriptors this process itself inherited included; this is the opt-in, e.g.
    /// for a make jobserver's pipe named in `MAKEFLAGS`. The process keeps its own
    /// copy until it starts, so the caller may close `fd` afterwards.
    ///
    /// ```no_run
    /// # async fn demo(mut proc: runner_native::NativeProc) -> runner_core::Result<()> {
    /// use std::os::fd::BorrowedFd;
    /// // SAFETY: the embedding program's fd 5 is open.
    /// let jobserver = unsafe { BorrowedFd::borrow_raw(5) };
    /// proc.pass_fd(jobserver)?;
    /// # Ok(()) }
    /// ```
    pub fn pass_fd(&mut self, fd: BorrowedFd<'_>) -> Result<()> {
        let target = fd.as_raw_fd();
        if target <= 2 {
            return Err(Error::io(
                "pass a descriptor on",
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "0, 1 and 2 are the child's stdio; use the pipes for them",
                ),
            ));
        }
        let copy = fd
            .try_clone_to_owned()
            .map_err(|e| Error::io("pass a descriptor on", e))?;
        self.pass.retain(|(_, t)| *t != target);
        self.pass.push((copy, target));
        self.pass.sort_by_key(|(_, t)| *t);
        Ok(())
    }

    /// Starts the process ([`Proc::start`] for a `NativeProc` at hand).
    pub async fn start(mut self) -> Result<Running> {
        check_dir(&self.spec.dir)?;
        let mut env = self.effective_env();
        // A registered group's members carry its token: the sweep's proof that they
        // descend from this leader once the leader is gone.
        let token = match &self.spec.ledger {
            Some(_) => Some(runner_reaper::new_group_token().map_err(Error::ledger)?),
            None => None,
        };
        if let Some(token) = &token {
            env.insert(runner_reaper::GROUP_TOKEN_VAR.into(), token.into());
        }
        let program = resolve_binary(
            &self.spec.bin,
            env.get(std::ffi::OsStr::new("PATH")).map(|p| p.as_os_str()),
            &self.spec.dir,
        )?;

        // The caller's terminal, when asked for, there is one and no pipe was taken:
        // the child gets our own 0, 1 and 2 and the terminal's foreground (taken back
        // by the supervisor). Otherwise pipes, ours wrapped for the forwarders.
        let terminal = (self.opts.terminal && self.stdin.is_none() && self.stdout.is_none())
            .then(crate::terminal::Terminal::of_stdin)
            .flatten();
        // The caller's own stdio, as they are, when asked for and no pipe was taken.
        let inherit = self.opts.inherit_stdio && self.stdin.is_none() && self.stdout.is_none();
        let stdin = self.stdin.take();
        let (pipes, readers) = if terminal.is_some() || inherit {
            (None, Vec::new())
        } else {
            let (stdout, stdout_reader) = match self.stdout.take() {
                Some(fd) => (fd, None),
                None => {
                    let (read, write) = os_pipe()?;
                    (write, Some(read))
                }
            };
            let (stderr_reader, stderr) = os_pipe()?;
            let readers = [
                (stdout_reader, Stream::Stdout),
                (Some(stderr_reader), Stream::Stderr),
            ];
            (Some((stdout, stderr)), readers.into_iter().collect())
        };
        let stdio = match &pipes {
            Some((stdout, stderr)) => [
                match &stdin {
                    Some(fd) => fd.as_fd(),
                    None => dev_null()?,
                },
                stdout.as_fd(),
                stderr.as_fd(),
            ],
            // SAFETY: our own standard descriptors, open for the whole process.
            None => unsafe {
                [
                    BorrowedFd::borrow_raw(0),
                    BorrowedFd::borrow_raw(1),
                    BorrowedFd::borrow_raw(2),
                ]
            },
        };

        let (exec_argv, argv) = self.spec.argv();
        let pass: Vec<(BorrowedFd<'_>, RawFd)> =
            self.pass.iter().map(|(fd, t)| (fd.as_fd(), *t)).collect();
        let launch = Launch {
            program: &program,
            exec_argv: &exec_argv,
            argv: &argv,
            env: &env,
            dir: &self.spec.dir,
            stdio,
            pass: &pass,
            token: token.as_deref(),
            foreground: terminal.as_ref(),
        };
        let spawned = spawn_group(launch, self.spec.ledger.clone());
        // Closed now, so EOF on our ends means the child side closed.
        drop((stdin, pipes));
        let (leader, registration) = match spawned {
            Ok(s) => s,
            Err(e) => {
                if let Some(terminal) = &terminal {
                    terminal.take_back();
                }
                return Err(spawn_error(&self.spec.bin, &program, &self.spec.dir, e));
            }
        };
        let mut forwarders = Vec::with_capacity(2);
        for (reader, stream) in readers {
            let Some(reader) = reader else { continue };
            let reader = async_reader(reader)?;
            let sink = Arc::clone(&self.opts.output);
            forwarders.push(tokio::spawn(async move {
                let _ = forward(reader, &*sink, stream).await;
            }));
        }
        let shared = supervise(Supervised {
            leader,
            registration,
            forwarders,
            grace: self.opts.grace,
            wait_on: self.wait_on.clone(),
            terminal,
        });
        self.registry.add(Arc::clone(&shared) as _);
        Ok(Running::new(shared))
    }

    /// Starts the process and waits for it to exit ([`Proc::run`]).
    pub async fn run(self) -> Result<runner_core::ExitStatus> {
        Proc::run(Box::new(self)).await
    }
}

/// A close-on-exec pipe: atomically with `pipe2` on Linux; on macOS (no `pipe2`)
/// flagged right after, as std does there (our own spawns close every descriptor
/// not handed on anyway, with `POSIX_SPAWN_CLOEXEC_DEFAULT`).
fn os_pipe() -> Result<(OwnedFd, OwnedFd)> {
    #[cfg(target_os = "linux")]
    let pipe = nix::unistd::pipe2(OFlag::O_CLOEXEC);
    #[cfg(not(target_os = "linux"))]
    let pipe = nix::unistd::pipe().and_then(|(r, w)| {
        for fd in [&r, &w] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )?;
        }
        Ok((r, w))
    });
    pipe.map_err(|e| Error::io("create a pipe", e.into()))
}

/// `/dev/null`, opened once per process (close-on-exec), for children without stdin.
fn dev_null() -> Result<BorrowedFd<'static>> {
    static NULL: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = NULL.get() {
        return Ok(fd.as_fd());
    }
    let fd = std::fs::File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| Error::io("open /dev/null", e))?;
    Ok(NULL.get_or_init(|| fd).as_fd())
}

/// Our end of an output pipe, made non-blocking (the child's end stays blocking) and
/// registered with the reactor.
fn async_reader(fd: OwnedFd) -> Result<pipe::Receiver> {
    let setup = |e| Error::io("set up an output pipe", e);
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .map_err(|e| setup(e.into()))?;
    pipe::Receiver::from_owned_fd_unchecked(fd).map_err(setup)
}

#[async_trait]
impl Proc for NativeProc {
    fn with_dir(&mut self, dir: &Path) {
        self.spec.dir = self.spec.dir.join(dir);
    }

    fn options_mut(&mut self) -> &mut ProcOptions {
        &mut self.opts
    }

    fn wait_on(&mut self, bin: &str) {
        self.wait_on = Some(bin.to_string());
    }

    fn stdin_pipe(&mut self) -> Result<ProcStdin> {
        if self.stdin_taken {
            return Err(Error::PipeUnavailable("stdin"));
        }
        let (read, write) = os_pipe()?;
        let sender = pipe::Sender::from_owned_fd(write)
            .map_err(|e| Error::io("set up the stdin pipe", e))?;
        self.stdin = Some(read);
        self.stdin_taken = true;
        Ok(Box::new(sender))
    }

    fn stdout_pipe(&mut self) -> Result<ProcStdout> {
        if self.stdout_taken {
            return Err(Error::PipeUnavailable("stdout"));
        }
        let (read, write) = os_pipe()?;
        let receiver = pipe::Receiver::from_owned_fd(read)
            .map_err(|e| Error::io("set up the stdout pipe", e))?;
        self.stdout = Some(write);
        self.stdout_taken = true;
        Ok(Box::new(receiver))
    }

    async fn start(self: Box<Self>) -> Result<Running> {
        NativeProc::start(*self).await
    }
}

/// The error a caller sees for a failed spawn: the stage the child reached decides
/// the kind (a `chdir` failure is about the directory, not the program).
fn spawn_error(bin: &str, program: &Path, dir: &Path, e: SpawnError) -> Error {
    let spawn = |source| Error::Spawn {
        bin: bin.to_string(),
        source,
    };
    match e {
        SpawnError::Ledger(e) => Error::ledger(e),
        SpawnError::Prepare(source) => spawn(source),
        SpawnError::AutoReap => spawn(std::io::Error::other(
            "this process ignores SIGCHLD (or set SA_NOCLDWAIT), so the kernel reaps its \
             children itself: exit statuses cannot be read and process groups cannot be \
             tracked; restore SIGCHLD's default disposition before starting processes",
        )),
        SpawnError::Child { stage, source } => {
            let searched = format!("{} (or its interpreter)", program.display());
            let failure = StartFailure {
                bin,
                program,
                searched: &searched,
                dir,
            };
            let stage = match stage {
                Stage::Exec => StartStage::Program,
                Stage::Dir => StartStage::Dir,
                other => StartStage::Other(other.action()),
            };
            failure.error(stage, source)
        }
    }
}
