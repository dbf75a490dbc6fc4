//! `runner`: run a developer tool and leave nothing behind.
//!
//! `runner run [--dir DIR] [-e K=V]... -- CMD ARGS...` streams the command's stdin,
//! stdout and stderr, forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to its process group and
//! exits with its exit code (128 + signal when it was killed). A missing command
//! exits 127, one that cannot be executed 126, bad flags or a missing directory 2,
//! and a failure of runner itself 125.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use runner_core::{EnvironmentVariable, Error, Proc, RunnerEnvironment, Signal};
use runner_native::NativeEnvironment;
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
    /// Clean up process groups left behind by runner processes that died.
    Reap,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Working directory of the command (default: the current directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Set an environment variable for the command (repeatable).
    #[arg(short = 'e', long = "env", value_name = "K=V", value_parser = parse_env)]
    env: Vec<EnvironmentVariable>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD ARGS")]
    command: Vec<String>,
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
            Command::Reap => reap(),
        }
    });
    // Do not wait for the thread blocked on our stdin.
    std::process::exit(code);
}

fn reap() -> i32 {
    let report = runner_reaper::reap_stale_process_groups(std::time::Duration::from_secs(30));
    print!("{report}");
    if report.errors.is_empty() {
        0
    } else {
        1
    }
}

async fn run(args: RunArgs) -> i32 {
    // Clean up after earlier runs that died before they could.
    let swept = tokio::task::spawn_blocking(|| {
        runner_reaper::reap_stale_process_groups(std::time::Duration::from_secs(5))
    })
    .await
    .unwrap_or_default();
    if !swept.reaped.is_empty() {
        eprintln!(
            "runner: reaped {} stale process group(s)",
            swept.reaped.len()
        );
    }

    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let mut env = match NativeEnvironment::new(&dir) {
        Ok(env) => env,
        Err(e) => return fail(&e, i32::from(EXIT_USAGE)),
    };
    env.with_env_vars(args.env);
    let (bin, rest) = match args.command.split_first() {
        Some(split) => split,
        None => return i32::from(EXIT_USAGE),
    };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match env.new_process(bin, &rest).await {
        Ok(proc) => run_proc(proc).await,
        Err(e) => fail(&e, i32::from(EXIT_INTERNAL)),
    }
}

/// Runs a configured process with the terminal's streams and signals.
async fn run_proc(mut proc: Box<dyn Proc>) -> i32 {
    let mut stdin_pipe = match proc.stdin_pipe() {
        Ok(p) => p,
        Err(e) => return fail(&e, i32::from(EXIT_INTERNAL)),
    };
    if let Err(e) = proc.start().await {
        return fail(&e, i32::from(EXIT_INTERNAL));
    }
    let proc: Arc<dyn Proc> = Arc::from(proc);

    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut stdin_pipe).await;
        let _ = stdin_pipe.shutdown().await;
    });
    for (kind, sig) in [
        (SignalKind::interrupt(), Signal::Interrupt),
        (SignalKind::terminate(), Signal::Terminate),
        (SignalKind::hangup(), Signal::Hangup),
        (SignalKind::quit(), Signal::Quit),
    ] {
        let Ok(mut stream) = signal(kind) else {
            continue;
        };
        let proc = Arc::clone(&proc);
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let _ = proc.signal(sig).await;
            }
        });
    }
    match proc.wait().await {
        Ok(status) => status.shell_code(),
        Err(e) => fail(&e, i32::from(EXIT_INTERNAL)),
    }
}

fn fail(e: &Error, default: i32) -> i32 {
    eprintln!("runner: {e}");
    e.shell_exit_code().unwrap_or(default)
}
