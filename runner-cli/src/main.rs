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

mod doctor;
mod pull;
mod reap;
mod run;
mod say;
mod threads;

use clap::{Parser, Subcommand};
use runner_core::{EnvironmentVariable, Error};

use doctor::doctor;
use reap::reap;
use run::run;
use say::{say, Kind};

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
    /// Show what runner decides and does (-v), in detail (-vv), everything (-vvv);
    /// `RUNNER_LOG` or `RUST_LOG` take a filter such as `runner_docker=debug`.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
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
        /// Print the result as one JSON object (schema in the README).
        #[arg(long)]
        json: bool,
    },
    /// Show which backends work here (and why not), engine versions and the runtimes
    /// found on PATH.
    Doctor {
        /// Print the result as one JSON object (schema in the README).
        #[arg(long)]
        json: bool,
    },
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
    /// Backend to run the command with; `auto` says which it chose and why (unless -q).
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Working directory of the command (default: the current directory); for the
    /// nix backend, the directory holding flake.nix.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Print nothing of runner's own (no backend note, no sweep notes, no pull
    /// progress, no warnings); errors still go to stderr.
    #[arg(short, long)]
    quiet: bool,
    /// Hand the command the terminal (the default when stdin and stdout are
    /// terminals): native and nix commands get it as their own, foreground included.
    #[arg(short = 't', long = "tty", conflicts_with = "no_tty")]
    tty: bool,
    /// Never hand the command the terminal: it gets pipes.
    #[arg(long = "no-tty")]
    no_tty: bool,
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let quiet = matches!(&cli.command, Command::Run(args) if args.quiet);
    say::init_logging(cli.verbose, quiet);
    threads::say_limit_panics();
    let runtime = match threads::runtime() {
        Ok(rt) => rt,
        Err(why) => {
            if let Some(why) = why {
                let hint = threads::limit_hint(&why);
                say(Kind::Error, why);
                if let Some(hint) = hint {
                    say(Kind::Hint, hint);
                }
            }
            return ExitCode::from(EXIT_INTERNAL);
        }
    };
    // A panic (a thread that could not be started after all) ends runner with 125;
    // the runtime is never dropped, which would wait for the thread blocked on our
    // stdin.
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async {
            match cli.command {
                Command::Run(args) => {
                    let code = run(args).await;
                    // The start-up sweep of dead owners' containers is finished, not
                    // dropped half-way by the exit (a short command is quicker).
                    runner_companion::finish_sweep(std::time::Duration::from_secs(5)).await;
                    code
                }
                Command::Reap { all, volumes, json } => reap(all, volumes, json).await,
                Command::Doctor { json } => doctor(json).await,
            }
        })
    }))
    .unwrap_or(i32::from(EXIT_INTERNAL));
    // Do not wait for the thread blocked on our stdin.
    std::process::exit(code);
}

/// clap's own messages: help and version on stdout (exit 0), a usage error in
/// runner's style on stderr (exit 2).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
    }
    let text = e.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    eprint!("{}{text}", Kind::Error.prefix(say::color()));
    ExitCode::from(EXIT_USAGE)
}

/// Writes to stdout; a closed pipe (`runner doctor | head`) is not an error.
fn print_out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Prints `value` as one line of JSON on stdout.
fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string(value) {
        Ok(line) => print_out(&format!("{line}\n")),
        Err(e) => say(Kind::Error, format!("failed to write JSON: {e}")),
    }
}

fn fail(e: &Error, default: i32) -> i32 {
    let text = e.chain();
    let hint = threads::limit_hint(&text);
    say(Kind::Error, text);
    if let Some(hint) = hint {
        say(Kind::Hint, hint);
    }
    // Where the engine is looked for matters, unless runner itself ran out of
    // descriptors.
    if matches!(
        e.downcast_backend::<runner_docker::DockerError>(),
        Some(runner_docker::DockerError::EngineDown { why, .. })
            if *why != runner_docker::Unreachable::OutOfDescriptors
    ) || matches!(
        e.downcast_backend::<runner_docker::DockerError>(),
        Some(runner_docker::DockerError::Context(_))
    ) {
        say(
            Kind::Hint,
            "`runner doctor` shows where runner looks for the engine, and why there",
        );
    }
    e.shell_exit_code().unwrap_or(default)
}
