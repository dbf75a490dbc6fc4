//! `runner run`: the backend chosen, the environment made, the command run with
//! its streams, signals and terminal, and its exit code returned.

use std::path::PathBuf;
use std::sync::Arc;

use runner_companion::Reason;
use runner_core::{Error, ExitStatus, Proc, RunnerEnvironment, Signal};
use runner_docker::DockerEnvironment;
use runner_native::NativeEnvironment;
use runner_nix::NixEnvironment;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};

use crate::say::{say, Kind};
use crate::{fail, pull, BackendArg, RunArgs, EXIT_INTERNAL, EXIT_USAGE};

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

pub(crate) async fn run(args: RunArgs) -> i32 {
    // First of all: from here on a SIGINT or SIGTERM cancels what runner is doing and
    // cleans up, instead of killing runner half-way through a container's creation.
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => return fail(&Error::io("install signal handlers", e), 125),
    };
    // Clean up after earlier runs that died before they could: the companion's one
    // start-up sweep (containers in the background, so a slow or absent engine never
    // delays the command).
    let swept = match unless_signalled(&mut signals, runner_companion::sweep_stale_once()).await {
        Ok(swept) => swept.unwrap_or_default(),
        Err(code) => return code,
    };
    if !swept.reaped.is_empty() && !args.quiet {
        say(
            Kind::Note,
            format!("reaped {} stale process group(s)", swept.reaped.len()),
        );
    }
    // A ledger the sweep cannot use (not ours, a symlink) is refused by the spawn
    // too; say why here, where it was found.
    for e in &swept.errors {
        say(Kind::Warning, format!("the start-up sweep failed: {e}"));
    }

    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    if let Err(e) = check_dir(&dir) {
        return fail(&e, i32::from(EXIT_USAGE));
    }
    if let Err(usage) = check_backend_args(&args) {
        say(Kind::Error, usage);
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
                Ok(proc) => {
                    let terminal = match (wants_terminal(&args), env.backend()) {
                        (false, _) => TerminalMode::Pipes,
                        (true, runner_core::Backend::Docker) => TerminalMode::Pseudo,
                        (true, _) => TerminalMode::Own,
                    };
                    // A host process gets runner's own streams when they are not a
                    // terminal: no relay (a container's are relayed).
                    let direct = env.backend() != runner_core::Backend::Docker;
                    run_proc(proc, signals, terminal, direct).await
                }
                Err(e) => fail(&e, i32::from(EXIT_INTERNAL)),
            }
        }
    };
    let _ = env.shutdown().await;
    code
}

/// Flags that contradict the backend asked for, or the terminal runner has.
fn check_backend_args(args: &RunArgs) -> Result<(), String> {
    use std::io::IsTerminal;
    // One rule for every backend, the docker CLI's: a terminal is handed on only when
    // there is one. Piped input under `-t` was dropped (native) or never ended
    // (a container's pseudo-terminal).
    if args.tty && !std::io::stdin().is_terminal() {
        return Err(
            "-t needs a terminal on stdin, and stdin is not one; drop -t to pass stdin through"
                .into(),
        );
    }
    let docker_only = |flag: &str| {
        format!("{flag} is for the docker backend; drop it or use --backend docker (or auto)")
    };
    match args.backend {
        BackendArg::Docker if args.image.is_none() => {
            Err("--image is required with --backend docker".into())
        }
        BackendArg::Native | BackendArg::Nix if args.image.is_some() => Err(docker_only("--image")),
        BackendArg::Native | BackendArg::Nix if !args.ports.is_empty() => {
            Err(docker_only("--publish"))
        }
        BackendArg::Native | BackendArg::Nix if args.user.is_some() => Err(docker_only("--user")),
        _ => Ok(()),
    }
}

fn check_dir(dir: &std::path::Path) -> Result<(), Error> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::NotADirectory(dir.to_path_buf())),
        Err(_) => Err(Error::DirNotFound(dir.to_path_buf())),
    }
}

async fn make_env(
    args: &RunArgs,
    dir: &std::path::Path,
) -> Result<Box<dyn RunnerEnvironment>, Error> {
    let backend = choose_backend(args, dir).await;
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
        // Cached in runner-nix's default cache directory, as for every library user.
        BackendArg::Nix => Ok(Box::new(NixEnvironment::new(dir)?)),
        BackendArg::Native | BackendArg::Auto => Ok(Box::new(NativeEnvironment::new(dir)?)),
    }
}

/// The backend `--backend` names, or the one `auto` picks, said aloud (unless `-q`)
/// with the reason: `--image` and an engine that answers → docker; a `flake.nix` in
/// DIR and nix installed → nix; else native.
async fn choose_backend(args: &RunArgs, dir: &std::path::Path) -> BackendArg {
    if args.backend != BackendArg::Auto {
        tracing::debug!(target: "runner", backend = ?args.backend, "backend given with --backend");
        return args.backend;
    }
    // The companion's decision, in the CLI's words.
    let choice = runner_companion::choose_backend(args.image.as_deref(), dir).await;
    let backend = match choice.backend {
        runner_core::Backend::Docker => BackendArg::Docker,
        runner_core::Backend::Nix => BackendArg::Nix,
        runner_core::Backend::Native => BackendArg::Native,
    };
    let name = choice.backend.as_str();
    let why = match &choice.reason {
        Reason::ImageAndEngine { image } => format!("--image {image} and a Docker engine answers"),
        Reason::NoEngine { image, endpoint } => {
            say(
                Kind::Warning,
                format!(
                    "--image {image} given, but no Docker engine answers at {endpoint}: \
                     running on the {name} backend instead (`runner doctor` says more)"
                ),
            );
            "no Docker engine answers".to_string()
        }
        Reason::Neither => "no --image and no flake.nix".to_string(),
        other => other.to_string(),
    };
    tracing::info!(target: "runner", backend = name, reason = %why, "backend chosen");
    if !args.quiet {
        say(Kind::Note, format!("backend {name} ({why}; -q hides this)"));
    }
    backend
}

/// Runs a configured process with the terminal's streams and signals.
/// Whether the command gets runner's terminal: `-t`, or stdin and stdout are
/// terminals and `--no-tty` was not given.
fn wants_terminal(args: &RunArgs) -> bool {
    use std::io::IsTerminal;
    args.tty || (!args.no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal())
}

/// How the command meets runner's terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TerminalMode {
    /// No terminal (or `--no-tty`): pipes.
    Pipes,
    /// A host process (native, nix) gets runner's terminal itself.
    Own,
    /// A container process gets a pseudo-terminal of its own: runner's terminal goes
    /// raw, keys are copied in, output out, window changes forwarded.
    Pseudo,
}

/// Runner's terminal in raw mode until dropped (then its modes, saved by the same
/// [`runner_native::Terminal`] the host backends use, come back).
struct RawTerminal(Option<runner_native::Terminal>);

impl RawTerminal {
    fn enter() -> RawTerminal {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let saved = runner_native::Terminal::of_stdin();
        let stdin = std::io::stdin();
        if let (Some(_), Ok(mut raw)) = (&saved, tcgetattr(&stdin)) {
            cfmakeraw(&mut raw);
            let _ = tcsetattr(&stdin, SetArg::TCSADRAIN, &raw);
        }
        RawTerminal(saved)
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(terminal) = &self.0 {
            terminal.take_back();
        }
    }
}

async fn run_proc(
    mut proc: Box<dyn Proc>,
    mut signals: Signals,
    terminal: TerminalMode,
    direct: bool,
) -> i32 {
    // Bytes as they arrive: a prompt, a `\r` progress line or a JSON-RPC body without
    // a newline is never held back.
    let delivery = Arc::new(DeliverySink::default());
    proc.with_output(delivery.clone());
    // With its own terminal the command reads it itself; otherwise runner copies stdin.
    let on_terminal = terminal == TerminalMode::Own;
    if terminal != TerminalMode::Pipes {
        proc.with_terminal();
    }
    // Pipes or files of runner's own, handed over as they are: nothing relayed,
    // copied or split, and the command meets its own write errors.
    let direct = direct && terminal == TerminalMode::Pipes;
    if direct {
        proc.with_inherited_stdio();
    }
    let stdin_pipe = if on_terminal || direct {
        None
    } else {
        match proc.stdin_pipe() {
            Ok(p) => Some(p),
            Err(e) => return fail(&e, i32::from(EXIT_INTERNAL)),
        }
    };
    // A pseudo-terminal in the container: ours goes raw before it starts (the
    // container's does the line editing, echo and Ctrl-C, from the first key on).
    let _raw = (terminal == TerminalMode::Pseudo).then(RawTerminal::enter);
    // Job control listens before the start: a stop is never missed.
    let job = on_terminal
        .then(|| {
            let children = signal(SignalKind::child()).ok()?;
            Some((runner_native::Terminal::of_stdin()?, children))
        })
        .flatten();
    // So does the window's size: the process can print (and the user resize) before
    // `start` returns, and a SIGWINCH nobody listens for is dropped. One that came
    // during the start is kept by the stream and forwarded just after.
    let winch = (terminal == TerminalMode::Pseudo)
        .then(|| signal(SignalKind::window_change()).ok())
        .flatten();
    // The handlers were installed before any work: a signal that arrives the moment
    // the child runs is forwarded, never taken by our own default disposition.
    let proc = match proc.start().await {
        Ok(running) => running,
        Err(e) => return fail(&e, i32::from(EXIT_INTERNAL)),
    };
    if let Some(mut winch) = winch {
        let proc = proc.clone();
        tokio::spawn(async move {
            while winch.recv().await.is_some() {
                if let Some((w, h)) = terminal_size::terminal_size_of(std::io::stdin()) {
                    let _ = proc.resize_terminal(h.0, w.0).await;
                }
            }
        });
    }

    if let Some(mut stdin_pipe) = stdin_pipe {
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let _ = tokio::io::copy(&mut stdin, &mut stdin_pipe).await;
            let _ = stdin_pipe.shutdown().await;
        });
    }
    if let (Some((terminal, children)), Some(pid)) = (job, proc.pid()) {
        tokio::spawn(job_control(pid as i32, terminal, children));
    }
    let forwarder = {
        let proc = proc.clone();
        tokio::spawn(async move {
            loop {
                let sig = signals.recv().await;
                let _ = proc.signal(sig).await;
            }
        })
    };
    let code = match proc.wait().await {
        Ok(status) => {
            if terminal != TerminalMode::Pipes && matches!(status, ExitStatus::Signaled(_)) {
                leave_full_screen();
            }
            status.shell_code()
        }
        Err(e) => {
            let code = fail(&e, i32::from(EXIT_INTERNAL));
            if matches!(
                e.downcast_backend::<runner_docker::DockerError>(),
                Some(runner_docker::DockerError::EngineDown { .. })
            ) {
                say(
                    Kind::Hint,
                    "the engine went away while the command ran; once it is back, \
                     `runner reap` removes what it left",
                );
            }
            code
        }
    };
    // Output that could not be written is lost: the exit status says so (a command
    // that succeeded is not a success if its output did not arrive).
    let code = match delivery.lost() {
        Some((stream, e)) => {
            say(
                Kind::Error,
                format!("the command's {stream} could not be written, and is lost: {e}"),
            );
            if code == 0 {
                i32::from(EXIT_INTERNAL)
            } else {
                code
            }
        }
        None => code,
    };
    // The forwarder holds the process (and through it the environment's ledger):
    // end it so everything is dropped before `runner` exits.
    forwarder.abort();
    let _ = forwarder.await;
    code
}

/// A full-screen program that was killed could not leave the alternate screen,
/// application cursor keys or keypad mode: the terminal is left as the shell had it
/// (each sequence does nothing where its mode is off; `?47l` leaves the alternate
/// screen without moving the cursor).
fn leave_full_screen() {
    use std::io::{IsTerminal, Write};
    let mut out = std::io::stdout();
    if out.is_terminal() {
        let _ = out.write_all(b"\x1b[?47l\x1b[?1l\x1b>");
        let _ = out.flush();
    }
}

/// The command's output to runner's own stdout and stderr as it arrives
/// ([`runner_core::PassthroughSink`]), remembering the first write that failed for
/// another reason than a reader that went away (a full disk, a device that refuses):
/// that output is lost, and runner's exit status must say so.
#[derive(Debug, Default)]
struct DeliverySink {
    lost: std::sync::Mutex<Option<(runner_core::Stream, std::io::Error)>>,
}

impl DeliverySink {
    fn lost(&self) -> Option<(&'static str, String)> {
        let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        lost.as_ref().map(|(stream, e)| {
            let name = match stream {
                runner_core::Stream::Stdout => "stdout",
                _ => "stderr",
            };
            (name, e.to_string())
        })
    }
}

impl runner_core::OutputSink for DeliverySink {
    fn write(&self, stream: runner_core::Stream, chunk: &[u8]) -> std::io::Result<()> {
        let written = runner_core::PassthroughSink.write(stream, chunk);
        if let Err(e) = &written {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
                if lost.is_none() {
                    *lost = Some((stream, std::io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
        written
    }

    fn wants_lines(&self) -> bool {
        false
    }
}

/// Ctrl-Z for a command that has the terminal, as a shell's job control does it:
/// woken by SIGCHLD (a child that stops raises it), when the command's leader is
/// stopped runner takes the terminal back with its modes and stops itself (its own
/// shell then shows the job as stopped); once continued (`fg`), it hands the
/// terminal back to the command's group and continues it.
async fn job_control(
    pgid: i32,
    terminal: runner_native::Terminal,
    mut children: tokio::signal::unix::Signal,
) {
    use nix::sys::signal::{killpg, raise, Signal as Sig};
    while children.recv().await.is_some() {
        match runner_core::os::process(pgid) {
            Err(_) => return,
            Ok(p) if p.state == runner_core::ProcessState::Stopped => {}
            Ok(_) => continue,
        }
        terminal.take_back();
        // Stopped here until the user's shell continues us.
        let _ = raise(Sig::SIGSTOP);
        terminal.hand_to(pgid);
        let _ = killpg(nix::unistd::Pid::from_raw(pgid), Sig::SIGCONT);
    }
}
