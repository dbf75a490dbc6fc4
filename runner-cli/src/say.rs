//! What runner itself prints on stderr, in one style: `runner: error: …`,
//! `runner: warning: …`, `runner: hint: …`, `runner: note: …`. The kind is coloured
//! when stderr is a terminal and `NO_COLOR` is unset, plain otherwise. The
//! libraries' `tracing` events come out the same way (see [`init_logging`]).

use std::io::IsTerminal;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether runner colours what it writes on stderr.
pub(crate) fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// The kinds of line runner prints.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Error,
    Warning,
    Hint,
    Note,
    Info,
    Debug,
    Trace,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Error => "error",
            Kind::Warning => "warning",
            Kind::Hint => "hint",
            Kind::Note => "note",
            Kind::Info => "info",
            Kind::Debug => "debug",
            Kind::Trace => "trace",
        }
    }

    /// SGR code: bold and a colour.
    fn sgr(self) -> &'static str {
        match self {
            Kind::Error => "1;31",
            Kind::Warning => "1;33",
            Kind::Hint => "1;36",
            Kind::Note | Kind::Info => "1;32",
            Kind::Debug => "1;34",
            Kind::Trace => "1;35",
        }
    }

    /// `runner: <kind>: `, coloured or not.
    pub(crate) fn prefix(self, color: bool) -> String {
        if color {
            format!("runner: \x1b[{}m{}\x1b[0m: ", self.sgr(), self.name())
        } else {
            format!("runner: {}: ", self.name())
        }
    }
}

/// Prints one line of `kind` on stderr.
pub(crate) fn say(kind: Kind, message: impl std::fmt::Display) {
    eprintln!("{}{message}", kind.prefix(color()));
}

/// Turns `-v`/`-vv`/`-vvv`, `-q`, `RUNNER_LOG` and `RUST_LOG` (first set wins; a
/// `tracing` filter such as `runner_docker=debug`) into the libraries' events on
/// stderr. Without any: warnings and errors only (`-q`: errors).
pub(crate) fn init_logging(verbose: u8, quiet: bool) {
    let default = match (verbose, quiet) {
        (0, true) => "error",
        (0, false) => "warn",
        (1, _) => "info",
        (2, _) => "debug",
        _ => "trace",
    };
    let from_env = ["RUNNER_LOG", "RUST_LOG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    // What the libraries say aloud (`runner_core::tunnel::NOTE_TARGET`), unless -q.
    let notes = format!("{},{}=info", default, runner_core::tunnel::NOTE_TARGET);
    let default = if quiet { default } else { notes.as_str() };
    let filter = match &from_env {
        Some(spec) if verbose == 0 => match tracing_subscriber::EnvFilter::try_new(spec) {
            Ok(f) => f,
            Err(e) => {
                say(
                    Kind::Warning,
                    format!("ignoring the log filter `{spec}`: {e}"),
                );
                tracing_subscriber::EnvFilter::new(default)
            }
        },
        _ => tracing_subscriber::EnvFilter::new(default),
    };
    let detailed = verbose > 0 || from_env.is_some();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color())
        .event_format(Lines {
            color: color(),
            targets: detailed,
        })
        .try_init();
}

/// One event per line: `runner: <level>: [<target>: ]<message> <fields>`.
struct Lines {
    color: bool,
    targets: bool,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        if meta.target() == runner_core::tunnel::NOTE_TARGET {
            write!(writer, "{}", Kind::Note.prefix(self.color))?;
            ctx.field_format().format_fields(writer.by_ref(), event)?;
            return writeln!(writer);
        }
        let kind = match *meta.level() {
            tracing::Level::ERROR => Kind::Error,
            tracing::Level::WARN => Kind::Warning,
            tracing::Level::INFO => Kind::Info,
            tracing::Level::DEBUG => Kind::Debug,
            tracing::Level::TRACE => Kind::Trace,
        };
        write!(writer, "{}", kind.prefix(self.color))?;
        if self.targets {
            write!(writer, "{}: ", meta.target())?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
