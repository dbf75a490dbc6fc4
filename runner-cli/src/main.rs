//! `runner`: run a developer tool and leave nothing behind.
//!
//! `runner run [--backend auto|native|nix|docker] [--image IMG] [--dir DIR] [-e K=V]...
//! [-p HOST:CONTAINER]... -- CMD ARGS...` streams the command's stdin,
//! stdout and stderr, forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to its process group and
//! exits with its exit code (128 + signal when it was killed). A missing command
//! exits 127, one that cannot be executed 126, bad flags or a missing directory 2,
//! and a failure of runner itself 125.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

mod pull;

use clap::{Parser, Subcommand};
use runner_core::{EnvironmentVariable, Error, Proc, RunnerEnvironment, Signal};
use runner_docker::DockerEnvironment;
use runner_native::NativeEnvironment;
use runner_nix::NixEnvironment;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};

/// Exit code for a failure of runner itself (not of the command).
const EXIT_INTERNAL: u8 = 125;
/// Exit code for bad usage (clap uses the same).
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "runner",
    version,
    about = "Run developer tools on the host, in Docker or in a Nix shell, and leave nothing behind."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command and exit with its exit code (128 + signal if it was killed).
    #[command(arg_required_else_help = true)]
    Run(RunArgs),
    /// Clean up process groups and containers left behind by runner processes that
    /// died, and print what was removed and what was set aside. Their reusable
    /// containers are stopped and kept for the next run; ephemeral ones are removed.
    Reap {
        /// Remove dead owners' reusable containers too.
        #[arg(long)]
        all: bool,
        /// Remove runner's cache volumes that no container uses.
        #[arg(long)]
        volumes: bool,
    },
    /// Show which backends work here (and why not), engine versions and the runtimes
    /// found on PATH.
    Doctor,
}

/// Where the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BackendArg {
    /// Docker when --image is given and an engine answers, else nix when nix is
    /// installed and DIR has a flake.nix, else native.
    Auto,
    /// Directly on the host.
    Native,
    /// In the dev shell of DIR/flake.nix (materialized once, cached).
    Nix,
    /// In a container of --image, with DIR mounted at the same path (removed on exit).
    Docker,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Backend to run the command with.
    #[arg(long, value_enum, default_value_t = BackendArg::Native)]
    backend: BackendArg,
    /// Working directory of the command (default: the current directory); for the
    /// nix backend, the directory holding flake.nix.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Print nothing of runner's own (no sweep notes, no pull progress); errors still go
    /// to stderr.
    #[arg(short, long)]
    quiet: bool,
    /// Image for the docker backend.
    #[arg(long, value_name = "IMG")]
    image: Option<String>,
    /// Publish a container port on 127.0.0.1 (docker backend; repeatable).
    #[arg(short = 'p', long = "publish", value_name = "HOST:CONTAINER", value_parser = parse_port)]
    ports: Vec<(u16, u16)>,
    /// Run as USER (a name the image knows, `uid` or `uid:gid`), or `host`: the user
    /// and group that own DIR, so files written into it are not root's (docker
    /// backend).
    #[arg(long, value_name = "USER|host")]
    user: Option<String>,
    /// Set an environment variable for the command (repeatable).
    #[arg(short = 'e', long = "env", value_name = "K=V", value_parser = parse_env)]
    env: Vec<EnvironmentVariable>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD ARGS")]
    command: Vec<String>,
}

fn parse_port(s: &str) -> Result<(u16, u16), String> {
    let (h, c) = s
        .split_once(':')
        .ok_or_else(|| format!("expected HOST:CONTAINER, got `{s}`"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("`{p}` is not a port number"))
    };
    Ok((port(h)?, port(c)?))
}

fn parse_env(s: &str) -> Result<EnvironmentVariable, String> {
    EnvironmentVariable::parse(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runner: failed to start the async runtime: {e}");
            return ExitCode::from(EXIT_INTERNAL);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Reap { all, volumes } => reap(all, volumes).await,
            Command::Doctor => doctor().await,
        }
    });
    // Do not wait for the thread blocked on our stdin.
    std::process::exit(code);
}

/// Writes to stdout; a closed pipe (`runner doctor | head`) is not an error.
fn print_out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

async fn doctor() -> i32 {
    let mut rows: Vec<(&str, &str, String)> = vec![(
        "native",
        "yes",
        runner_core::os::kernel().unwrap_or_else(|| "host processes".into()),
    )];
    // Where the engine is looked for, and why there (variable, context or path).
    let endpoint = match runner_docker::resolve_endpoint() {
        Ok(e) => e.to_string(),
        Err(e) => e.to_string(),
    };
    let docker = match runner_docker::connect().await {
        Ok(d) => match tokio::time::timeout(std::time::Duration::from_secs(2), d.version()).await {
            Ok(Ok(v)) => (
                "yes",
                format!(
                    "Docker Engine {} (API {}) at {}",
                    v.version.unwrap_or_default(),
                    v.api_version.unwrap_or_default(),
                    endpoint
                ),
            ),
            Ok(Err(e)) => ("no", format!("the engine did not answer: {e}")),
            Err(_) => ("no", "the engine did not answer within 2 s".to_string()),
        },
        Err(e) => (
            "no",
            format!("{} (looked at {endpoint})", runner_core::error_chain(&e)),
        ),
    };
    rows.push(("docker", docker.0, docker.1));
    // The in-container helper: built in or not, and when it is skipped.
    let helper = match runner_docker::embedded_helper() {
        Ok(what) => (
            "yes",
            format!(
                "{what}; processes in a container of another architecture or with a \
                 read-only root run as plain execs (RUST_LOG=runner_docker=info says why)"
            ),
        ),
        Err(why) => (
            "no",
            format!("processes in containers run as plain execs: {why}"),
        ),
    };
    rows.push(("  helper", helper.0, helper.1));
    let nix = match runner_nix::nix_binary() {
        Some(path) => {
            let version = tokio::process::Command::new(&path)
                .arg("--version")
                .output()
                .await
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            match runner_nix::check_nix_can_build(&path, &[]).await {
                Ok(()) => ("yes", format!("{version} (needs a flake.nix in --dir)")),
                Err(why) => (
                    "no",
                    format!("{version} is installed but cannot build: {why}"),
                ),
            }
        }
        None => (
            "no",
            format!(
                "nix is not installed (install: {})",
                runner_nix::nix_install_command()
            ),
        ),
    };
    rows.push(("nix", nix.0, nix.1));
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(text, "{:<8} {:<10} detail", "backend", "available");
    for (name, ok, detail) in &rows {
        let _ = writeln!(text, "{name:<8} {ok:<10} {detail}");
    }
    let runtimes: Vec<runner_core::RuntimeRequirement> = [
        ("Rust", "cargo"),
        ("Go", "go"),
        ("Node.js", "node"),
        ("Python", "python3"),
        ("Java", "java"),
        ("GCC", "gcc"),
    ]
    .into_iter()
    .map(|(n, b)| runner_core::RuntimeRequirement::new(n, b))
    .collect();
    let report = runner_core::check_for_runtimes(&runtimes).await;
    let _ = writeln!(text, "\n{:<8} {:<10} version", "runtime", "found");
    for f in &report.found {
        let _ = writeln!(
            text,
            "{:<8} {:<10} {}",
            f.name,
            "yes",
            f.version.as_deref().unwrap_or("?")
        );
    }
    for m in &report.missing {
        let _ = writeln!(text, "{m:<8} no");
    }
    print_out(&text);
    0
}

async fn reap(all: bool, volumes: bool) -> i32 {
    let groups = tokio::task::spawn_blocking(|| {
        runner_reaper::reap_stale_process_groups(std::time::Duration::from_secs(30))
    })
    .await
    .unwrap_or_default();
    print_out(&groups.to_string());
    let containers = runner_docker::reap_containers(std::time::Duration::from_secs(30), all).await;
    print_out(&containers.to_string());
    let mut volume_errors = 0;
    if volumes {
        let removed = runner_docker::remove_cache_volumes().await;
        volume_errors = removed.errors.len();
        print_out(&removed.to_string());
    }
    if groups.errors.is_empty() && containers.errors.is_empty() && volume_errors == 0 {
        0
    } else {
        1
    }
}

/// The signals runner forwards to its command, caught from the start of `run`: a
/// signal during setup cancels it (and cleans up), one after start reaches the
/// command's process group.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// The next signal caught.
    async fn recv(&mut self) -> Signal {
        tokio::select! {
            Some(()) = self.int.recv() => Signal::Interrupt,
            Some(()) = self.term.recv() => Signal::Terminate,
            Some(()) = self.hup.recv() => Signal::Hangup,
            Some(()) = self.quit.recv() => Signal::Quit,
            else => std::future::pending().await,
        }
    }
}

/// Runs `setup` unless a signal comes first; then the signal's exit code (128 + n).
async fn unless_signalled<T>(
    signals: &mut Signals,
    setup: impl std::future::Future<Output = T>,
) -> Result<T, i32> {
    tokio::select! {
        t = setup => Ok(t),
        sig = signals.recv() => Err(128 + sig.number()),
    }
}

async fn run(args: RunArgs) -> i32 {
    // First of all: from here on a SIGINT or SIGTERM cancels what runner is doing and
    // cleans up, instead of killing runner half-way through a container's creation.
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => return fail(&Error::io("install signal handlers", e), 125),
    };
    // Clean up after earlier runs that died before they could.
    let sweep = tokio::task::spawn_blocking(|| {
        runner_reaper::reap_stale_process_groups(std::time::Duration::from_secs(5))
    });
    let swept = match unless_signalled(&mut signals, sweep).await {
        Ok(swept) => swept.unwrap_or_default(),
        Err(code) => return code,
    };
    if !swept.reaped.is_empty() && !args.quiet {
        eprintln!(
            "runner: reaped {} stale process group(s)",
            swept.reaped.len()
        );
    }
    // A ledger the sweep cannot use (not ours, a symlink) is refused by the spawn
    // too; say why here, where it was found.
    for e in &swept.errors {
        eprintln!("runner: the start-up sweep failed: {e}");
    }
    // Containers of earlier runs that died: swept in the background (bounded), so a
    // slow or absent engine never delays the command.
    tokio::spawn(runner_docker::reap_stale_containers(
        std::time::Duration::from_secs(10),
    ));

    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    if let Err(e) = check_dir(&dir) {
        return fail(&e, i32::from(EXIT_USAGE));
    }
    if matches!(args.backend, BackendArg::Docker) && args.image.is_none() {
        eprintln!("runner: --image is required with --backend docker");
        return i32::from(EXIT_USAGE);
    }
    // Making the environment creates nothing that outlives it (a pull at most).
    let mut env = match unless_signalled(&mut signals, make_env(&args, &dir)).await {
        Ok(Ok(env)) => env,
        Ok(Err(e)) => return fail(&e, i32::from(EXIT_INTERNAL)),
        Err(code) => return code,
    };
    env.with_env_vars(args.env.clone());
    // The init future lives in this block only: a cancelled init is dropped before
    // the shutdown below.
    let code = {
        let init = env.init();
        tokio::pin!(init);
        let initialized = tokio::select! {
            r = &mut init => Ok(r),
            sig = signals.recv() => Err(sig),
        };
        match initialized {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(fail(&e, i32::from(EXIT_INTERNAL))),
            // Init is cancelled here, on every backend: shutdown (below) ends what it
            // had started (a Docker container whose create was under way included:
            // the environment never loses track of it; nix's shell probe).
            Err(sig) => Some(128 + sig.number()),
        }
    };
    let code = match code {
        Some(code) => code,
        None => {
            let (bin, rest) = match args.command.split_first() {
                Some(split) => split,
                None => return i32::from(EXIT_USAGE),
            };
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            match env.new_process(bin, &rest).await {
                Ok(proc) => run_proc(proc, signals).await,
                Err(e) => fail(&e, i32::from(EXIT_INTERNAL)),
            }
        }
    };
    let _ = env.shutdown().await;
    code
}

fn check_dir(dir: &std::path::Path) -> Result<(), Error> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::NotADirectory(dir.to_path_buf())),
        Err(_) => Err(Error::DirNotFound(dir.to_path_buf())),
    }
}

/// The user's cache directory for materialized Nix shells.
fn nix_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(".cache")
        });
    base.join("runner/nix")
}

async fn make_env(
    args: &RunArgs,
    dir: &std::path::Path,
) -> Result<Box<dyn RunnerEnvironment>, Error> {
    let backend = match args.backend {
        BackendArg::Auto
            if args.image.is_some()
                && runner_docker::docker_engine_running(std::time::Duration::from_secs(1))
                    .await =>
        {
            BackendArg::Docker
        }
        BackendArg::Auto
            if runner_nix::check_nix_installed() && dir.join("flake.nix").is_file() =>
        {
            BackendArg::Nix
        }
        BackendArg::Auto => BackendArg::Native,
        other => other,
    };
    match backend {
        BackendArg::Docker => {
            let image = args.image.as_deref().ok_or_else(|| {
                Error::backend(
                    runner_core::Backend::Docker,
                    "--image is required with --backend docker",
                )
            })?;
            let name = format!("run-{}", std::process::id());
            let client = runner_docker::connect().await?;
            pull::pull_with_progress(&client, image, args.quiet).await?;
            let mut env = DockerEnvironment::with_client(client, image, Some(dir), &name).await?;
            env.with_pause().with_ephemeral();
            if let Some(user) = &args.user {
                env.with_user_spec(user);
            }
            for (host, container) in &args.ports {
                env.with_port_mapping(*host, *container);
            }
            Ok(Box::new(env))
        }
        BackendArg::Nix => {
            let mut env = NixEnvironment::new(dir)?;
            env.with_cache_dir(nix_cache_dir());
            Ok(Box::new(env))
        }
        BackendArg::Native | BackendArg::Auto => Ok(Box::new(NativeEnvironment::new(dir)?)),
    }
}

/// Runs a configured process with the terminal's streams and signals.
async fn run_proc(mut proc: Box<dyn Proc>, mut signals: Signals) -> i32 {
    // Bytes as they arrive: a prompt, a `\r` progress line or a JSON-RPC body without
    // a newline is never held back.
    proc.with_output(Arc::new(runner_core::PassthroughSink));
    let mut stdin_pipe = match proc.stdin_pipe() {
        Ok(p) => p,
        Err(e) => return fail(&e, i32::from(EXIT_INTERNAL)),
    };
    // The handlers were installed before any work: a signal that arrives the moment
    // the child runs is forwarded, never taken by our own default disposition.
    if let Err(e) = proc.start().await {
        return fail(&e, i32::from(EXIT_INTERNAL));
    }
    let proc: Arc<dyn Proc> = Arc::from(proc);

    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut stdin_pipe).await;
        let _ = stdin_pipe.shutdown().await;
    });
    let forwarder = {
        let proc = Arc::clone(&proc);
        tokio::spawn(async move {
            loop {
                let sig = signals.recv().await;
                let _ = proc.signal(sig).await;
            }
        })
    };
    let code = match proc.wait().await {
        Ok(status) => status.shell_code(),
        Err(e) => {
            let code = fail(&e, i32::from(EXIT_INTERNAL));
            if matches!(
                e.downcast_backend::<runner_docker::DockerError>(),
                Some(runner_docker::DockerError::EngineDown { .. })
            ) {
                eprintln!(
                    "runner: the engine went away while the command ran; once it is back, \
                     `runner reap` removes what it left"
                );
            }
            code
        }
    };
    // The forwarder holds the process (and through it the environment's ledger):
    // end it so everything is dropped before `runner` exits.
    forwarder.abort();
    let _ = forwarder.await;
    code
}

fn fail(e: &Error, default: i32) -> i32 {
    eprintln!("runner: {}", e.chain());
    if matches!(
        e.downcast_backend::<runner_docker::DockerError>(),
        Some(
            runner_docker::DockerError::EngineDown { .. } | runner_docker::DockerError::Context(_)
        )
    ) {
        eprintln!(
            "runner: hint: `runner doctor` shows where runner looks for the engine, and why there"
        );
    }
    e.shell_exit_code().unwrap_or(default)
}
