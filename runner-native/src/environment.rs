//! `NativeEnvironment`: runs processes directly on the host.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use runner_core::{
    Backend, EnvLayers, EnvironmentVariable, Error, Proc, Result, RunnerEnvironment,
};
use runner_reaper::Ledger;

use crate::process::{BaseEnv, NativeProc, ProcSpec};
use crate::resolve::{check_dir, resolve_binary};
use runner_core::Registry;

/// Runs processes on the host with whatever is on `PATH`.
///
/// Each process leads its own process group, is registered in the reaper's ledger
/// before it runs its program, and gets the host's environment, then this
/// environment's variables, then its own.
///
/// ```no_run
/// # async fn demo() -> runner_core::Result<()> {
/// use runner_core::RunnerEnvironment;
/// use runner_native::NativeEnvironment;
/// let env = NativeEnvironment::new(".")?;
/// let mut proc = env.new_process("cargo", &["--version"]).await?;
/// let status = proc.run().await?;
/// assert!(status.success());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NativeEnvironment {
    dir: PathBuf,
    base: BaseEnv,
    env: EnvLayers,
    ledger: Option<Ledger>,
    registry: Arc<Registry>,
    shut_down: AtomicBool,
    backend: Backend,
}

impl NativeEnvironment {
    /// An environment whose processes run in `dir` (which must be a directory).
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = std::path::absolute(dir.as_ref())
            .map_err(|e| Error::io("resolve the working directory", e))?;
        check_dir(&dir)?;
        Ok(NativeEnvironment {
            dir,
            base: BaseEnv::Host,
            env: EnvLayers::new(),
            ledger: Some(Ledger::default()),
            registry: Arc::default(),
            shut_down: AtomicBool::new(false),
            backend: Backend::Native,
        })
    }

    /// Registers process groups in the ledger under `state_dir` instead of the default
    /// (`$RUNNER_STATE_DIR`, `$XDG_STATE_HOME/runner`, `~/.local/state/runner`).
    pub fn with_state_dir(&mut self, state_dir: impl Into<PathBuf>) -> &mut Self {
        self.ledger = Some(Ledger::at(state_dir));
        self
    }

    /// Turns ledger registration off. Processes then cannot be reaped after a crash
    /// of this process; meant for measurements and for callers with their own reaper.
    pub fn without_ledger(&mut self) -> &mut Self {
        self.ledger = None;
        self
    }

    /// Replaces the host environment as the base of every process (used by backends
    /// that run host processes in another environment, like Nix).
    pub fn with_base_env(&mut self, base: BaseEnv) -> &mut Self {
        self.base = base;
        self
    }

    /// Reports another backend (for environments built on this one).
    pub fn with_backend(&mut self, backend: Backend) -> &mut Self {
        self.backend = backend;
        self
    }

    /// The directory processes run in by default.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The spec of a new process, for backends that adjust it before running.
    pub fn spec(&self, bin: &str, args: &[&str]) -> ProcSpec {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        self.spec_os(bin, &args)
    }

    /// [`spec`](Self::spec) with arguments that need not be UTF-8.
    pub fn spec_os(&self, bin: &str, args: &[&std::ffi::OsStr]) -> ProcSpec {
        ProcSpec {
            bin: bin.to_string(),
            args: args.iter().map(|a| a.to_os_string()).collect(),
            dir: self.dir.clone(),
            base: self.base.clone(),
            env: self.env.clone(),
            ledger: self.ledger.clone(),
        }
    }

    /// A process made from `spec`, stopped with this environment's other processes.
    pub fn process_from_spec(&self, spec: ProcSpec) -> Result<NativeProc> {
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(Error::ShutDown);
        }
        Ok(NativeProc::new(spec, Arc::clone(&self.registry)))
    }

    /// Where `bin` resolves with this environment's `PATH`.
    pub fn which(&self, bin: &str) -> Result<PathBuf> {
        self.which_with_base(bin, &self.base)
    }

    /// Where `bin` resolves with the `PATH` of `base` under this environment's
    /// variables.
    pub fn which_with_base(&self, bin: &str, base: &BaseEnv) -> Result<PathBuf> {
        let mut env = base.resolve();
        self.env.apply_to_os(&mut env);
        resolve_binary(
            bin,
            env.get(std::ffi::OsStr::new("PATH")).map(|p| p.as_os_str()),
            &self.dir,
        )
    }
}

#[async_trait]
impl RunnerEnvironment for NativeEnvironment {
    fn backend(&self) -> Backend {
        self.backend
    }

    async fn init(&self) -> Result<()> {
        check_dir(&self.dir)
    }

    async fn new_process(&self, bin: &str, args: &[&str]) -> Result<Box<dyn Proc>> {
        Ok(Box::new(self.process_from_spec(self.spec(bin, args))?))
    }

    async fn new_process_os(
        &self,
        bin: &std::ffi::OsStr,
        args: &[&std::ffi::OsStr],
    ) -> Result<Box<dyn Proc>> {
        let name = utf8_program(bin)?;
        Ok(Box::new(self.process_from_spec(self.spec_os(name, args))?))
    }

    async fn stop(&self) -> Result<()> {
        self.registry.stop_all().await
    }

    async fn shutdown(&self) -> Result<()> {
        self.shut_down.store(true, Ordering::SeqCst);
        self.registry.stop_all().await
    }

    async fn with_binary(&self, bin: &str) -> Result<()> {
        self.which(bin).map(|_| ())
    }

    fn with_env_vars(&mut self, vars: Vec<EnvironmentVariable>) {
        self.env.set_all(vars);
    }
}

/// A program name as the host backends take it: UTF-8 (its arguments need not be);
/// otherwise a spawn error (`InvalidInput`).
pub fn utf8_program(bin: &std::ffi::OsStr) -> Result<&str> {
    bin.to_str().ok_or_else(|| Error::Spawn {
        bin: bin.to_string_lossy().into_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a program name must be UTF-8 (its arguments need not be)",
        ),
    })
}
