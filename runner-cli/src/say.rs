//! What runner itself prints on stderr, in one style: `runner: error: …`,
//! `runner: warning: …`, `runner: hint: …`, `runner: note: …`. The kind is coloured
//! when stderr is a terminal and `NO_COLOR` is unset, plain otherwise. The
//! libraries' `tracing` events come out the same way (see [`init_logging`]).

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;

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
    let level = match (verbose, quiet) {
        (0, true) => LevelFilter::ERROR,
        (0, false) => LevelFilter::WARN,
        (1, _) => LevelFilter::INFO,
        (2, _) => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let from_env = ["RUNNER_LOG", "RUST_LOG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    let detailed = verbose > 0 || from_env.is_some();
    let _ = match from_env {
        Some(spec) if verbose == 0 => {
            let filter = tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|e| {
                say(
                    Kind::Warning,
                    format!("ignoring the log filter `{spec}`: {e}"),
                );
                default_filter(level, quiet)
            });
            tracing::subscriber::set_global_default(subscriber(filter, detailed))
        }
        _ => tracing::subscriber::set_global_default(OnFirstEvent {
            level,
            notes: !quiet,
            built: std::sync::OnceLock::new(),
            build: move || subscriber(default_filter(level, quiet), detailed),
        }),
    };
}

/// `level` for everything, and what the libraries say aloud
/// (`runner_core::tunnel::NOTE_TARGET`) unless `-q`.
fn default_filter(level: LevelFilter, quiet: bool) -> tracing_subscriber::EnvFilter {
    let level = level.to_string().to_lowercase();
    if quiet {
        tracing_subscriber::EnvFilter::new(level)
    } else {
        tracing_subscriber::EnvFilter::new(format!(
            "{level},{}=info",
            runner_core::tunnel::NOTE_TARGET
        ))
    }
}

/// The subscriber that writes events: `fmt` with [`Lines`], filtered by `filter`.
fn subscriber(
    filter: tracing_subscriber::EnvFilter,
    targets: bool,
) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color())
        .event_format(Lines {
            color: color(),
            targets,
        })
        .finish()
}

/// The default filter's subscriber, built when the first event or span it could
/// write comes: a run that says nothing never builds it (its span registry and
/// filter took 50 µs of every start, a tenth of what runner adds to a short
/// command). Until then it answers `enabled` from the level alone, a superset of
/// what the built one writes, which decides every event itself.
struct OnFirstEvent<F> {
    level: LevelFilter,
    notes: bool,
    built: std::sync::OnceLock<tracing::Dispatch>,
    build: F,
}

impl<F, S> OnFirstEvent<F>
where
    F: Fn() -> S,
    S: tracing::Subscriber + Send + Sync + 'static,
{
    fn built(&self) -> &tracing::Dispatch {
        self.built
            .get_or_init(|| tracing::Dispatch::new((self.build)()))
    }

    fn may_write(&self, meta: &tracing::Metadata<'_>) -> bool {
        *meta.level() <= self.level
            || (self.notes
                && *meta.level() <= tracing::Level::INFO
                && meta.target().starts_with(runner_core::tunnel::NOTE_TARGET))
    }
}

impl<F, S> tracing::Subscriber for OnFirstEvent<F>
where
    F: Fn() -> S + Send + Sync + 'static,
    S: tracing::Subscriber + Send + Sync + 'static,
{
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if self.may_write(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(if self.notes {
            self.level.max(LevelFilter::INFO)
        } else {
            self.level
        })
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        self.may_write(meta) && self.built().enabled(meta)
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        self.built().new_span(span)
    }

    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        self.built().record(span, values)
    }

    fn record_follows_from(&self, span: &tracing::span::Id, follows: &tracing::span::Id) {
        self.built().record_follows_from(span, follows)
    }

    fn event(&self, event: &tracing::Event<'_>) {
        self.built().event(event)
    }

    fn enter(&self, span: &tracing::span::Id) {
        self.built().enter(span)
    }

    fn exit(&self, span: &tracing::span::Id) {
        self.built().exit(span)
    }

    fn clone_span(&self, id: &tracing::span::Id) -> tracing::span::Id {
        self.built().clone_span(id)
    }

    fn try_close(&self, id: tracing::span::Id) -> bool {
        self.built().try_close(id)
    }
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
