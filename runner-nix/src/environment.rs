//! `NixEnvironment`: processes inside a flake's dev shell.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use runner_core::{
    Backend, CaptureSink, EnvironmentVariable, Error, NullSink, Proc, Result, RunnerEnvironment,
};
use runner_native::{BaseEnv, NativeEnvironment, NativeProc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cache::{self, CacheEntry, CacheMiss, CACHE_SCHEMA};
use crate::install::{nix_binary, nix_install_command};
use crate::shell::{parse_nul_env, DevShell, ShellEnv};
use crate::NixError;

/// The default cache directory: `$XDG_CACHE_HOME/runner/nix`, else
/// `$HOME/.cache/runner/nix` (`None` with neither set). The companion and the CLI use
/// it; [`NixEnvironment::with_cache_dir`] and [`NixEnvironment::without_cache`]
/// override it.
pub fn default_cache_dir() -> Option<PathBuf> {
    cache_dir_from(
        std::env::var_os("XDG_CACHE_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
    )
}

fn cache_dir_from(
    xdg: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    // The XDG spec ignores a relative path.
    match xdg.map(Path::new).filter(|p| p.is_absolute()) {
        Some(xdg) => Some(xdg.join("runner/nix")),
        None => home
            .filter(|h| !h.is_empty())
            .map(|h| Path::new(h).join(".cache/runner/nix")),
    }
}

/// Tool caches that a toolchain from the read-only store would otherwise put in a
/// read-only place or in the user's real home, pointed under the runner cache when
/// neither the shell nor the host sets them: `GOCACHE` and `GOMODCACHE` (what the
/// reimplemented system pins). `GOPATH` and `CARGO_HOME` are left alone: their
/// defaults are in the user's home, where the user's own tools expect them.
pub const PINNED_CACHES: [(&str, &str); 2] = [("GOCACHE", "go/build"), ("GOMODCACHE", "go/mod")];

fn pin_tool_caches(env: &mut runner_core::OsEnv, cache: &Path) {
    for (var, sub) in PINNED_CACHES {
        let set = env
            .get(std::ffi::OsStr::new(var))
            .is_some_and(|v| !v.is_empty());
        if !set {
            env.insert(var.into(), cache.join(sub).into_os_string());
        }
    }
}

/// Where the environment's variables came from at `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSource {
    /// Evaluated with `nix print-dev-env` just now.
    Evaluated,
    /// Read from a cache entry whose fingerprint matched.
    Cache,
    /// Evaluation failed; the last good cached env is in use. The string is nix's
    /// error.
    StaleCache(String),
}

/// What `init` did, for callers that want to know (and say so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Materialization {
    /// Where the env came from.
    pub source: EnvSource,
    /// A cache problem that did not stop `init` (unreadable entry, failed write).
    pub cache_warning: Option<String>,
}

impl Materialization {
    /// True when a failed evaluation fell back on a stale cache entry.
    pub fn is_stale(&self) -> bool {
        matches!(self.source, EnvSource::StaleCache(_))
    }
}

#[derive(Debug, Clone)]
struct Materialized {
    base: BaseEnv,
    info: Materialization,
}

/// Runs processes in the dev shell of `dir/flake.nix`.
///
/// Before [`init`](RunnerEnvironment::init) every process is wrapped:
/// `nix develop path:<dir> --command BIN ARGS` (the flake is evaluated per process).
/// `init` materializes the shell once (`nix print-dev-env --json`, then its shellHook
/// run once in bash) and from then on processes are exec'd directly with the shell's
/// variables over the host's, the shell's `PATH` first. With
/// [`with_cache_dir`](Self::with_cache_dir) the materialized env is cached on disk.
///
/// Processes are [`NativeProc`]s: the same process machinery (groups, ledger, stop,
/// pipes) as the native backend.
#[derive(Debug)]
pub struct NixEnvironment {
    dir: PathBuf,
    nix: PathBuf,
    options: Vec<(String, String)>,
    cache_dir: Option<PathBuf>,
    native: NativeEnvironment,
    init_lock: tokio::sync::Mutex<()>,
    materialized: RwLock<Option<Materialized>>,
}

impl NixEnvironment {
    /// An environment for the flake in `dir`. Errors when nix is missing or `dir` has
    /// no `flake.nix`.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        let nix = nix_binary().ok_or(NixError::NotInstalled {
            install: nix_install_command(),
        })?;
        let mut native = NativeEnvironment::new(dir.as_ref())?;
        native.with_backend(Backend::Nix);
        let dir = native.dir().to_path_buf();
        if !dir.join("flake.nix").is_file() {
            return Err(NixError::NoFlake(dir).into());
        }
        Ok(NixEnvironment {
            dir,
            nix,
            options: Vec::new(),
            cache_dir: default_cache_dir(),
            native,
            init_lock: tokio::sync::Mutex::new(()),
            materialized: RwLock::new(None),
        })
    }

    /// Persists the materialized env under `dir` (see the `cache` module) instead of
    /// the default, [`default_cache_dir`].
    pub fn with_cache_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Keeps nothing on disk: every `init` evaluates the shell.
    pub fn without_cache(&mut self) -> &mut Self {
        self.cache_dir = None;
        self
    }

    /// Where materialized shells are cached (`None`: not at all).
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    /// Passes `--option name value` to every nix invocation (e.g. `substituters ""`
    /// offline). Options are part of the cache fingerprint.
    pub fn with_nix_option(&mut self, name: &str, value: &str) -> &mut Self {
        self.options.push((name.to_string(), value.to_string()));
        self
    }

    /// Registers process groups in the ledger under `state_dir` (see
    /// [`NativeEnvironment::with_state_dir`]).
    pub fn with_state_dir(&mut self, state_dir: impl Into<PathBuf>) -> &mut Self {
        self.native.with_state_dir(state_dir);
        self
    }

    /// The flake directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What `init` did, once it has run.
    pub fn materialization(&self) -> Option<Materialization> {
        self.current().map(|m| m.info)
    }

    /// True once `init` materialized the shell.
    pub fn is_materialized(&self) -> bool {
        self.current().is_some()
    }

    fn current(&self) -> Option<Materialized> {
        self.materialized
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks that nix, with this environment's options, can build at all (see
    /// [`check_nix_can_build`](crate::check_nix_can_build)).
    pub async fn check_can_build(&self) -> std::result::Result<(), crate::CannotBuild> {
        crate::check_nix_can_build(&self.nix, &self.options).await
    }

    fn nix_args(&self) -> Vec<String> {
        let mut args = vec![
            "--extra-experimental-features".to_string(),
            "nix-command flakes".to_string(),
        ];
        for (k, v) in &self.options {
            args.extend(["--option".to_string(), k.clone(), v.clone()]);
        }
        args
    }

    /// The cache fingerprint of the flake's files, read off the runtime's workers (a
    /// big input tree is a lot of reading).
    async fn fingerprint(&self) -> Result<String> {
        let (dir, nix, options) = (self.dir.clone(), self.nix.clone(), self.options.clone());
        // The cache directory may lie inside the flake's: its own changes are not the
        // flake's.
        let cache = self
            .cache_dir
            .as_ref()
            .map(|c| std::path::absolute(c).unwrap_or(c.clone()));
        tokio::task::spawn_blocking(move || {
            cache::fingerprint_except(&dir, &nix, &options, cache.as_deref())
        })
        .await
        .map_err(|e| Error::io("fingerprint the flake's files", std::io::Error::other(e)))
    }

    fn flake_ref(&self) -> String {
        format!("path:{}", self.dir.display())
    }

    fn wrapped(&self, bin: &str, args: &[&str]) -> Result<NativeProc> {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.wrapped_os(bin, &args)
    }

    fn wrapped_os(&self, bin: &str, args: &[&OsStr]) -> Result<NativeProc> {
        let mut nix_args: Vec<std::ffi::OsString> =
            self.nix_args().into_iter().map(Into::into).collect();
        nix_args.extend([
            "develop".into(),
            self.flake_ref().into(),
            "--command".into(),
        ]);
        nix_args.push(bin.into());
        nix_args.extend(args.iter().map(|a| a.to_os_string()));
        let nix_args: Vec<&OsStr> = nix_args.iter().map(|a| a.as_os_str()).collect();
        let nix = self.nix.to_string_lossy();
        self.native
            .process_from_spec(self.native.spec_os(&nix, &nix_args))
    }

    fn direct(&self, base: &BaseEnv, bin: &str, args: &[&str]) -> Result<NativeProc> {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.direct_os(base, bin, &args)
    }

    fn direct_os(&self, base: &BaseEnv, bin: &str, args: &[&OsStr]) -> Result<NativeProc> {
        let mut spec = self.native.spec_os(bin, args);
        spec.base = base.clone();
        self.native.process_from_spec(spec)
    }

    /// Runs a helper command (nix itself, the probe) to completion, feeding `stdin`,
    /// and returns its status, stdout and stderr.
    async fn capture(
        &self,
        mut proc: NativeProc,
        stdin: Option<String>,
    ) -> Result<(runner_core::ExitStatus, Vec<u8>, String)> {
        let errors = CaptureSink::new();
        proc.with_output(errors.clone());
        let mut input = match stdin {
            Some(_) => Some(proc.stdin_pipe()?),
            None => None,
        };
        let mut out = proc.stdout_pipe()?;
        let running = proc.start().await?;
        if let (Some(pipe), Some(text)) = (input.as_mut(), stdin) {
            // The probe reads its whole script before it runs it.
            let _ = pipe.write_all(text.as_bytes()).await;
            let _ = pipe.shutdown().await;
        }
        drop(input);
        let mut bytes = Vec::new();
        out.read_to_end(&mut bytes)
            .await
            .map_err(|e| Error::io("read the output of nix", e))?;
        let status = running.wait().await?;
        Ok((status, bytes, errors.stderr_string()))
    }

    /// Evaluates the dev shell and captures what its hook exports.
    async fn evaluate(&self, profile: Option<&Path>) -> Result<ShellEnv> {
        let mut args = self.nix_args();
        args.extend(["print-dev-env".to_string(), "--json".to_string()]);
        // A cached shell is a GC root: nix makes the profile (a generation link
        // registered as an indirect root), so `nix-collect-garbage` keeps every store
        // path the cached environment points to.
        if let Some(profile) = profile {
            args.extend(["--profile".to_string(), profile.display().to_string()]);
        }
        args.push(self.flake_ref());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let nix = self.nix.to_string_lossy();
        let proc = self
            .native
            .process_from_spec(self.native.spec(&nix, &args))?;
        let (status, json, stderr) = self.capture(proc, None).await?;
        if !status.success() {
            if let Some(reason) = crate::diagnose_stderr(&stderr) {
                return Err(NixError::CannotBuild(reason).into());
            }
            return Err(NixError::Evaluation {
                dir: self.dir.clone(),
                status: status.to_string(),
                stderr: stderr.trim().to_string(),
            }
            .into());
        }
        let dev = DevShell::parse(&json)?;
        let host = runner_core::host_env_os();
        let probe_env = Arc::new(dev.probe_env(&host));
        let mut probe = self.direct(
            &BaseEnv::Fixed(probe_env),
            "bash",
            &["--noprofile", "--norc", "-s"],
        )?;
        probe.with_output(Arc::new(NullSink));
        let (status, captured, stderr) = self.capture(probe, Some(dev.probe_script())).await?;
        if !status.success() {
            return Err(NixError::ShellHook(format!(
                "bash exited with {status}: {}",
                stderr.trim()
            ))
            .into());
        }
        Ok(ShellEnv::from_capture(&host, &parse_nul_env(&captured)))
    }

    fn set(&self, shell: &ShellEnv, info: Materialization) {
        let host = runner_core::host_env_os();
        let mut env = shell.over(&host);
        if let Some(cache) = &self.cache_dir {
            pin_tool_caches(&mut env, cache);
        }
        let base = BaseEnv::Fixed(Arc::new(env));
        *self.materialized.write().unwrap_or_else(|p| p.into_inner()) =
            Some(Materialized { base, info });
    }
}

#[async_trait]
impl RunnerEnvironment for NixEnvironment {
    fn backend(&self) -> Backend {
        Backend::Nix
    }

    /// Materializes the dev shell (from the cache when its fingerprint matches).
    async fn init(&self) -> Result<()> {
        let _serial = self.init_lock.lock().await;
        if self.is_materialized() {
            return Ok(());
        }
        let fingerprint = self.fingerprint().await?;
        let entry_path = self
            .cache_dir
            .as_ref()
            .map(|d| cache::entry_path(d, &self.dir));
        let mut cache_warning = None;
        let cached = match &entry_path {
            Some(p) => match cache::read(p) {
                Ok(entry) => Some(entry),
                Err(CacheMiss::Absent) => None,
                Err(CacheMiss::Unreadable(e)) => {
                    cache_warning = Some(format!(
                        "ignored unreadable cache entry {}: {e}",
                        p.display()
                    ));
                    None
                }
                Err(CacheMiss::OtherSchema(s)) => {
                    cache_warning = Some(format!(
                        "ignored cache entry {} of schema {s} (expected {CACHE_SCHEMA})",
                        p.display()
                    ));
                    None
                }
            },
            None => None,
        };
        if let Some(entry) = cached.as_ref().filter(|e| e.fingerprint == fingerprint) {
            tracing::info!(dir = %self.dir.display(), "dev shell from the cache (fingerprint matches)");
            self.set(
                &entry.shell,
                Materialization {
                    source: EnvSource::Cache,
                    cache_warning,
                },
            );
            return Ok(());
        }
        tracing::info!(
            dir = %self.dir.display(),
            cached = cached.is_some(),
            "evaluating the dev shell (no cache entry, or its fingerprint differs)"
        );
        // nix makes the profile's links in the cache directory before the entry is
        // written; a directory that cannot be written (missing and not makeable,
        // read-only, full) means no root (and a warning when the entry cannot be
        // written either), never a failed evaluation: a write is tried first, and an
        // evaluation that fails making the root is done again without one.
        let writable = |d: &std::path::Path| {
            std::fs::create_dir_all(d).is_ok() && tempfile::NamedTempFile::new_in(d).is_ok()
        };
        let mut profile = entry_path
            .as_ref()
            .filter(|_| self.cache_dir.as_deref().is_some_and(writable))
            .map(|p| cache::profile_path(p));
        if entry_path.is_some() && profile.is_none() {
            cache_warning = Some(format!(
                "the cache directory {} cannot be written: the shell is not cached, and \
                 nothing roots it against garbage collection",
                self.cache_dir
                    .as_deref()
                    .unwrap_or(std::path::Path::new("?"))
                    .display()
            ));
        }
        let mut evaluated = self.evaluate(profile.as_deref()).await;
        if let (Err(e), Some(root)) = (&evaluated, &profile) {
            if e.chain().contains(&root.display().to_string()) {
                tracing::warn!(profile = %root.display(), error = %e.chain(),
                    "the GC root could not be made; evaluating without one");
                cache_warning = Some(format!("no GC root for the cached shell: {}", e.chain()));
                profile = None;
                evaluated = self.evaluate(None).await;
            }
        }
        match evaluated {
            Ok(shell) => {
                if let Some(path) = &entry_path {
                    // Evaluation may have written the flake.lock (a new input): the
                    // entry is for the files as they are now.
                    let fingerprint = self.fingerprint().await?;
                    let entry = CacheEntry {
                        schema: CACHE_SCHEMA,
                        fingerprint,
                        dir: self.dir.clone(),
                        shell: shell.clone(),
                    };
                    if let Some(profile) = &profile {
                        // The entry replaced keeps no root of its own.
                        cache::release_old_generations(profile);
                    }
                    if let Err(e) = cache::write(path, &entry) {
                        tracing::warn!(path = %path.display(), error = %e, "failed to write the nix env cache");
                        cache_warning = Some(format!(
                            "failed to write cache entry {}: {e}",
                            path.display()
                        ));
                    }
                }
                self.set(
                    &shell,
                    Materialization {
                        source: EnvSource::Evaluated,
                        cache_warning,
                    },
                );
                Ok(())
            }
            Err(e) => match cached {
                Some(entry) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e.chain(),
                        "dev shell evaluation failed; using the last good cached env");
                    self.set(
                        &entry.shell,
                        Materialization {
                            source: EnvSource::StaleCache(e.chain()),
                            cache_warning,
                        },
                    );
                    Ok(())
                }
                None => Err(e),
            },
        }
    }

    async fn new_process(&self, bin: &str, args: &[&str]) -> Result<Box<dyn Proc>> {
        Ok(match self.current() {
            Some(m) => Box::new(self.direct(&m.base, bin, args)?),
            None => Box::new(Wrapped::new(self.wrapped(bin, args)?)?),
        })
    }

    async fn new_process_os(&self, bin: &OsStr, args: &[&OsStr]) -> Result<Box<dyn Proc>> {
        let name = runner_native::utf8_program(bin)?;
        Ok(match self.current() {
            Some(m) => Box::new(self.direct_os(&m.base, name, args)?),
            None => Box::new(Wrapped::new(self.wrapped_os(name, args)?)?),
        })
    }

    async fn stop(&self) -> Result<()> {
        self.native.stop().await
    }

    async fn shutdown(&self) -> Result<()> {
        self.native.shutdown().await
    }

    /// Materialized: `bin` must resolve on the shell's `PATH` (then the host's).
    /// Wrapped: asks the shell (`type -P`).
    async fn with_binary(&self, bin: &str) -> Result<()> {
        if let Some(m) = self.current() {
            return self.native.which_with_base(bin, &m.base).map(|_| ());
        }
        let mut proc = self.wrapped("bash", &["-c", "type -P \"$0\"", bin])?;
        proc.with_output(Arc::new(NullSink));
        if proc.run().await?.success() {
            Ok(())
        } else {
            Err(Error::NotFound {
                bin: bin.to_string(),
                searched: Some(format!("the dev shell of {}", self.dir.display())),
            })
        }
    }

    fn with_env_vars(&mut self, vars: Vec<EnvironmentVariable>) {
        self.native.with_env_vars(vars);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_default_cache_follows_xdg_then_home() {
        assert_eq!(
            cache_dir_from(Some(OsStr::new("/x")), Some(OsStr::new("/h"))),
            Some(PathBuf::from("/x/runner/nix"))
        );
        // A relative XDG_CACHE_HOME is ignored, as the spec says.
        assert_eq!(
            cache_dir_from(Some(OsStr::new("rel")), Some(OsStr::new("/h"))),
            Some(PathBuf::from("/h/.cache/runner/nix"))
        );
        assert_eq!(cache_dir_from(None, None), None);
    }

    #[test]
    fn tool_caches_are_pinned_only_when_unset() {
        let mut env = runner_core::OsEnv::new();
        env.insert("GOCACHE".into(), "/mine".into());
        env.insert("GOMODCACHE".into(), "".into());
        pin_tool_caches(&mut env, Path::new("/c"));
        assert_eq!(env[OsStr::new("GOCACHE")], OsStr::new("/mine"));
        assert_eq!(env[OsStr::new("GOMODCACHE")], OsStr::new("/c/go/mod"));
    }
}

/// A process wrapped in `nix develop --command` (before `init`), with a temporary
/// directory of its own as `TMPDIR`: `nix develop` makes its build directory
/// (`nix-shell.XXXXXX`, the process's `TMPDIR` too) there and never removes it when
/// it hands over to the command; the directory goes once the process has ended.
#[derive(Debug)]
struct Wrapped {
    proc: NativeProc,
    tmp: tempfile::TempDir,
}

impl Wrapped {
    fn new(mut proc: NativeProc) -> Result<Wrapped> {
        let tmp = tempfile::Builder::new()
            .prefix("runner-nix-develop-")
            .tempdir()
            .map_err(|e| Error::io("create a temporary directory for nix develop", e))?;
        // Set before the caller's variables: a TMPDIR the caller sets wins.
        proc.with_env_vars(vec![runner_core::EnvironmentVariable::new(
            "TMPDIR",
            tmp.path().to_string_lossy(),
        )?]);
        Ok(Wrapped { proc, tmp })
    }
}

#[async_trait]
impl Proc for Wrapped {
    fn with_dir(&mut self, dir: &Path) {
        self.proc.with_dir(dir);
    }

    fn options_mut(&mut self) -> &mut runner_core::ProcOptions {
        self.proc.options_mut()
    }

    fn wait_on(&mut self, bin: &str) {
        self.proc.wait_on(bin);
    }

    fn stdin_pipe(&mut self) -> Result<runner_core::ProcStdin> {
        self.proc.stdin_pipe()
    }

    fn stdout_pipe(&mut self) -> Result<runner_core::ProcStdout> {
        self.proc.stdout_pipe()
    }

    async fn start(self: Box<Self>) -> Result<runner_core::Running> {
        let Wrapped { proc, tmp } = *self;
        let running = Box::new(proc).start().await?;
        let ended = running.clone();
        tokio::spawn(async move {
            let _ = ended.wait().await;
            drop(tmp);
        });
        Ok(running)
    }
}
