//! `NativeProc`: one host process leading its own process group.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use runner_core::{
    forward, EnvLayers, Error, ExitStatus, Proc, ProcOptions, ProcStdin, ProcStdout, Result,
    Signal, Stream,
};
use runner_reaper::Ledger;
use tokio::net::unix::pipe;
use tokio::process::Command;

use crate::resolve::{check_dir, resolve_binary};
use crate::spawn::{spawn_group, SpawnError};
use crate::supervisor::{supervise, Registry, Shared, Supervised};

/// The variables a process starts from, below every edit.
#[derive(Debug, Clone)]
pub enum BaseEnv {
    /// The host's environment, read when the process starts.
    Host,
    /// A fixed set of variables (e.g. a materialized Nix dev shell over the host's).
    Fixed(Arc<BTreeMap<String, String>>),
}

impl BaseEnv {
    /// The variables, read now.
    pub fn resolve(&self) -> BTreeMap<String, String> {
        match self {
            BaseEnv::Host => runner_core::host_env().into_iter().collect(),
            BaseEnv::Fixed(vars) => (**vars).clone(),
        }
    }
}

/// Everything a native process is made of, before it starts. Other backends that run
/// host processes (Nix) build one of these and hand it to [`NativeProc::from_spec`].
#[derive(Debug, Clone)]
pub struct ProcSpec {
    /// The program as the caller named it (resolved on the final `PATH` at start).
    pub bin: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The working directory.
    pub dir: PathBuf,
    /// The variables below every edit.
    pub base: BaseEnv,
    /// The environment's edits (the process's own come after them).
    pub env: EnvLayers,
    /// Where the group is registered; `None` runs unregistered.
    pub ledger: Option<Ledger>,
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
    registry: Arc<Registry>,
    shared: Option<Arc<Shared>>,
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
            registry,
            shared: None,
        }
    }

    /// The final environment the process gets: base, then the environment's edits,
    /// then the process's own.
    pub fn effective_env(&self) -> BTreeMap<String, String> {
        let mut env = self.spec.base.resolve();
        self.spec.env.apply_to(&mut env);
        self.opts.env.apply_to(&mut env);
        env
    }

    fn started(&self) -> Result<&Arc<Shared>> {
        self.shared.as_ref().ok_or(Error::NotStarted)
    }
}

fn os_pipe() -> Result<(OwnedFd, OwnedFd)> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io("create a pipe", e.into()))
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
        if self.stdin_taken || self.shared.is_some() {
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
        if self.stdout_taken || self.shared.is_some() {
            return Err(Error::PipeUnavailable("stdout"));
        }
        let (read, write) = os_pipe()?;
        let receiver = pipe::Receiver::from_owned_fd(read)
            .map_err(|e| Error::io("set up the stdout pipe", e))?;
        self.stdout = Some(write);
        self.stdout_taken = true;
        Ok(Box::new(receiver))
    }

    async fn start(&mut self) -> Result<()> {
        if self.shared.is_some() {
            return Err(Error::AlreadyStarted);
        }
        check_dir(&self.spec.dir)?;
        let env = self.effective_env();
        let program = resolve_binary(
            &self.spec.bin,
            env.get("PATH").map(String::as_str),
            &self.spec.dir,
        )?;

        let mut cmd = Command::new(&program);
        cmd.arg0(&self.spec.bin)
            .args(&self.spec.args)
            .current_dir(&self.spec.dir)
            .env_clear()
            .envs(&env)
            .stderr(Stdio::piped());
        cmd.stdin(match self.stdin.take() {
            Some(fd) => Stdio::from(fd),
            None => Stdio::null(),
        });
        let raw_stdout = self.stdout.take();
        let piped_stdout = raw_stdout.is_none();
        cmd.stdout(match raw_stdout {
            Some(fd) => Stdio::from(fd),
            None => Stdio::piped(),
        });

        let argv: Vec<String> = std::iter::once(self.spec.bin.clone())
            .chain(self.spec.args.iter().cloned())
            .collect();
        let (mut child, registration) =
            spawn_group(cmd, self.spec.ledger.clone(), argv, self.spec.dir.clone()).map_err(
                |e| match e {
                    SpawnError::Ledger(msg) => Error::Ledger(msg),
                    SpawnError::Spawn(source) => {
                        classify_spawn_error(&self.spec.bin, &program, source)
                    }
                },
            )?;
        // Our copies of the child's pipe ends are closed now (moved into `cmd`, which
        // is dropped), so EOF on them means the child side closed.

        let mut forwarders = Vec::with_capacity(2);
        if piped_stdout {
            if let Some(out) = child.stdout.take() {
                let sink = Arc::clone(&self.opts.output);
                forwarders.push(tokio::spawn(async move {
                    let _ = forward(out, &*sink, Stream::Stdout).await;
                }));
            }
        }
        if let Some(err) = child.stderr.take() {
            let sink = Arc::clone(&self.opts.output);
            forwarders.push(tokio::spawn(async move {
                let _ = forward(err, &*sink, Stream::Stderr).await;
            }));
        }
        let shared = supervise(Supervised {
            child,
            registration,
            forwarders,
            grace: self.opts.grace,
            wait_on: self.wait_on.clone(),
        });
        self.registry.add(&shared);
        self.shared = Some(shared);
        Ok(())
    }

    async fn wait(&self) -> Result<ExitStatus> {
        self.started()?.wait().await
    }

    async fn stop(&self) -> Result<()> {
        match &self.shared {
            Some(shared) => shared.stop().await,
            None => Ok(()),
        }
    }

    async fn signal(&self, signal: Signal) -> Result<()> {
        self.started()?.signal(signal);
        Ok(())
    }

    async fn is_running(&self) -> Result<bool> {
        Ok(self.shared.as_ref().is_some_and(|s| !s.is_finished()))
    }

    fn try_status(&self) -> Option<ExitStatus> {
        self.shared.as_ref().and_then(|s| s.try_status())
    }

    fn pid(&self) -> Option<u32> {
        self.shared.as_ref().map(|s| s.pid())
    }
}

fn classify_spawn_error(bin: &str, program: &Path, source: std::io::Error) -> Error {
    match source.raw_os_error() {
        Some(nix::libc::ENOENT) => Error::NotFound {
            bin: bin.to_string(),
            searched: Some(format!("{} (or its interpreter)", program.display())),
        },
        Some(nix::libc::EACCES) | Some(nix::libc::ENOEXEC) => Error::NotExecutable {
            path: program.to_path_buf(),
        },
        _ => Error::Spawn {
            bin: bin.to_string(),
            source,
        },
    }
}
