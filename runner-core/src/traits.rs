//! The two traits every backend implements.

use std::ffi::{OsStr, OsString};
use std::fmt;

use crate::Error;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    EnvLayers, EnvironmentVariable, ExitStatus, JoinPosition, Output, Result, Running, StdioSink,
};

/// The default time `stop` waits after SIGTERM before it sends SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);

/// The per-process settings every backend keeps the same way: the process's own
/// variables (layered over the environment's), its output sink and its stop grace.
/// The `with_*` methods of [`Proc`] edit them through [`Proc::options_mut`].
#[derive(Debug, Clone)]
pub struct ProcOptions {
    /// The process's own variables, applied last.
    pub env: EnvLayers,
    /// Where stderr (and stdout, unless piped) goes.
    pub output: Output,
    /// How long `stop` waits between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// The process gets the caller's terminal (see [`Proc::with_terminal`]).
    pub terminal: bool,
    /// The process gets the caller's own stdin, stdout and stderr (see
    /// [`Proc::with_inherited_stdio`]).
    pub inherit_stdio: bool,
}

impl Default for ProcOptions {
    fn default() -> Self {
        ProcOptions {
            env: EnvLayers::new(),
            output: std::sync::Arc::new(StdioSink),
            grace: DEFAULT_STOP_GRACE,
            terminal: false,
            inherit_stdio: false,
        }
    }
}

/// Which backend runs a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Directly on the host.
    Native,
    /// Inside a Docker container.
    Docker,
    /// Inside a Nix dev shell.
    Nix,
}

impl Backend {
    /// The lowercase name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::Docker => "docker",
            Backend::Nix => "nix",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "native" => Ok(Backend::Native),
            "docker" => Ok(Backend::Docker),
            "nix" => Ok(Backend::Nix),
            other => Err(format!(
                "unknown backend `{other}` (expected native, docker or nix)"
            )),
        }
    }
}

/// The writing end of a process's stdin. Dropping it (or `shutdown()`) closes stdin.
pub type ProcStdin = Box<dyn AsyncWrite + Send + Unpin>;
/// The reading end of a process's stdout: raw bytes, unframed.
pub type ProcStdout = Box<dyn AsyncRead + Send + Unpin>;

/// One process, runnable or running, in some environment.
///
/// Configure it with the `with_*` methods (they take `&mut self`), then `start` or
/// `run` it. After `start`, every method takes `&self`, so a process can be shared:
/// `let p: Arc<dyn Proc> = Arc::from(boxed)` and call `wait` from many tasks and
/// `stop` from another.
#[async_trait]
pub trait Proc: Send + Sync + fmt::Debug {
    /// Runs the process in `dir` instead of the environment's directory.
    fn with_dir(&mut self, dir: &Path);
    /// The settings the `with_*` methods below edit (shared by every backend).
    fn options_mut(&mut self) -> &mut ProcOptions;
    /// Sends the process's stderr (and stdout, unless `stdout_pipe` was taken) to
    /// `output`. The default writes to the host's stdout and stderr.
    fn with_output(&mut self, output: Output) {
        self.options_mut().output = output;
    }
    /// Adds variables over the environment's (the process wins).
    fn with_env_vars(&mut self, vars: Vec<EnvironmentVariable>) {
        self.options_mut().env.set_all(vars);
    }
    /// Appends `var`'s value to the existing value with `sep` (`PATH`-style); sets it
    /// when the variable is absent.
    fn with_env_var_append(&mut self, var: EnvironmentVariable, sep: &str) {
        self.options_mut().env.join(var, sep, JoinPosition::Append);
    }
    /// Prepends `var`'s value to the existing value with `sep`.
    fn with_env_var_prepend(&mut self, var: EnvironmentVariable, sep: &str) {
        self.options_mut().env.join(var, sep, JoinPosition::Prepend);
    }
    /// How long `stop` waits between SIGTERM and SIGKILL (default 5 s).
    fn with_stop_grace(&mut self, grace: Duration) {
        self.options_mut().grace = grace;
    }
    /// Hands the process the caller's terminal, as a shell does: on the host
    /// (native, nix) its stdin, stdout and stderr are the caller's own (no pipes, no
    /// sink: colours, prompts and `isatty` work) and it is the terminal's foreground
    /// process group while it runs, so Ctrl-C and window resizes reach it; when it
    /// ends the terminal and its modes are taken back. Without a terminal on the
    /// caller's stdin this changes nothing. In Docker (through runner's helper) it
    /// gets a pseudo-terminal of its own, sized like the caller's, for its stdin,
    /// stdout and stderr: what it writes arrives as stdout (sink or pipe), what is
    /// written to its stdin pipe is typed into it; forward window changes with
    /// [`Running::resize_terminal`]. Plain execs keep their pipes.
    fn with_terminal(&mut self) {
        self.options_mut().terminal = true;
    }
    /// Gives the process the caller's own stdin, stdout and stderr, whatever they are
    /// (pipes, files, sockets): nothing is relayed, so nothing is copied, delayed or
    /// split (a language server's header and body arrive as written), and write
    /// errors are the process's own. Host processes (native, nix) only, when no pipe
    /// was taken; the output sink then sees nothing. A container's process keeps its
    /// relayed streams.
    fn with_inherited_stdio(&mut self) {
        self.options_mut().inherit_stdio = true;
    }
    /// Makes `run`/`wait` also wait for the process named `bin` in the process's group
    /// (for launchers that start the real program and exit).
    fn wait_on(&mut self, bin: &str);
    /// A writer connected to the process's stdin. Call before `start`. Without it, the
    /// process's stdin is empty (`/dev/null`).
    fn stdin_pipe(&mut self) -> Result<ProcStdin>;
    /// A reader of the process's raw stdout. Call before `start`. When taken, stdout no
    /// longer goes to the output sink; stderr still does.
    fn stdout_pipe(&mut self) -> Result<ProcStdout>;
    /// Starts the process and returns once it runs: the request is consumed, the
    /// [`Running`] process is what can be waited for, signalled and stopped.
    async fn start(self: Box<Self>) -> Result<Running>;
    /// Starts the process and waits for it to exit. Dropping this future ends the
    /// process.
    async fn run(self: Box<Self>) -> Result<ExitStatus> {
        let running = self.start().await?;
        let guard = crate::running::StopOnDrop::new(&running);
        let status = running.wait().await;
        guard.disarm();
        status
    }
    /// Runs the process to its exit and returns its status with everything it wrote
    /// (like `std::process::Command::output`): stdout and stderr in memory, bytes as
    /// written (a `stdout_pipe` taken before leaves stdout to that pipe). For commands
    /// whose output fits in memory; stream larger ones with `with_output`. Dropping
    /// this future ends the process.
    async fn output(mut self: Box<Self>) -> Result<ProcOutput> {
        let capture = crate::CaptureSink::new();
        self.with_output(capture.clone());
        let status = self.run().await?;
        Ok(ProcOutput {
            status,
            stdout: capture.stdout(),
            stderr: capture.stderr(),
        })
    }
}

/// Generic conveniences over any [`RunnerEnvironment`] (also `dyn`).
pub trait RunnerEnvironmentExt: RunnerEnvironment {
    /// A process of `bin` with `args`, each anything that is an `OsStr` (`&str`,
    /// `String`, `&Path`, `PathBuf`, `OsString`): see
    /// [`new_process_os`](RunnerEnvironment::new_process_os).
    fn command<B, I, A>(
        &self,
        bin: B,
        args: I,
    ) -> impl std::future::Future<Output = Result<Box<dyn Proc>>> + Send + '_
    where
        B: AsRef<OsStr>,
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        let bin: OsString = bin.as_ref().to_owned();
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        async move {
            let refs: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
            self.new_process_os(&bin, &refs).await
        }
    }
}

impl<T: RunnerEnvironment + ?Sized> RunnerEnvironmentExt for T {}

/// What [`Proc::output`] returns: how the process ended and what it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

impl ProcOutput {
    /// Stdout as text (invalid UTF-8 replaced).
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (invalid UTF-8 replaced).
    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A place processes run: the host, a container, a Nix dev shell.
///
/// Configuration methods take `&mut self` and are meant to be called before the
/// environment is shared; everything else takes `&self`.
#[async_trait]
pub trait RunnerEnvironment: Send + Sync + fmt::Debug {
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// Prepares the environment (create a container, materialize a shell, ...).
    async fn init(&self) -> Result<()>;
    /// A new, not yet started process running `bin` with `args`.
    async fn new_process(&self, bin: &str, args: &[&str]) -> Result<Box<dyn Proc>>;
    /// [`new_process`](Self::new_process) with arguments that need not be UTF-8
    /// (paths, bytes): passed as they are where the backend can (native, nix, Docker
    /// through its helper); elsewhere a non-UTF-8 argument is a spawn error
    /// (`InvalidInput`), never a silently changed one. The generic form is
    /// [`RunnerEnvironmentExt::command`].
    async fn new_process_os(&self, bin: &OsStr, args: &[&OsStr]) -> Result<Box<dyn Proc>> {
        fn utf8<'a>(bin: &OsStr, s: &'a OsStr) -> Result<&'a str> {
            s.to_str().ok_or_else(|| Error::Spawn {
                bin: bin.to_string_lossy().into_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{s:?} is not UTF-8, which this backend needs for its arguments"),
                ),
            })
        }
        let name = utf8(bin, bin)?;
        let args = args
            .iter()
            .map(|a| utf8(bin, a))
            .collect::<Result<Vec<&str>>>()?;
        self.new_process(name, &args).await
    }
    /// Stops every process started here; the environment can still start new ones.
    async fn stop(&self) -> Result<()>;
    /// Stops everything and releases every resource. Idempotent; no new process
    /// starts afterwards.
    async fn shutdown(&self) -> Result<()>;
    /// Errors unless `bin` can be run in this environment.
    async fn with_binary(&self, bin: &str) -> Result<()>;
    /// Adds variables every process of this environment gets (over the base env).
    fn with_env_vars(&mut self, vars: Vec<EnvironmentVariable>);
}
