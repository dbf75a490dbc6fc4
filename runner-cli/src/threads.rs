//! The async runtime: one thread, the main one. Threads for blocking work (reading
//! runner's stdin, the start-up sweep) are started when that work comes, so a native
//! `runner run` starts none it does not use (a multi-threaded runtime and a probe of
//! how many threads could be started cost about a millisecond of start-up, a third
//! of what runner adds to a short command). A limit on processes (`ulimit -u`, which
//! counts threads) can refuse such a thread: tokio then panics, and that panic is
//! said as runner's error, naming the limit (exit 125), never as a panic or a hang.

use tokio::runtime::{Builder, Runtime};

/// The runtime; `Err` says why runner cannot run (`None`: the panic hook already
/// said it).
pub(crate) fn runtime() -> Result<Runtime, Option<String>> {
    // tokio panics when its signal pipe cannot be made (no descriptor left).
    std::panic::catch_unwind(|| Builder::new_current_thread().enable_all().build())
        .map_err(|_| None)?
        .map_err(|e| Some(format!("failed to start the async runtime: {e}")))
}

/// A panic that says a limit was reached (tokio's, when a thread or its signal pipe
/// could not be made after start-up) is said as runner's error, naming the limit;
/// any other panic keeps Rust's own report. Either way `main` ends with 125.
pub(crate) fn say_limit_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        match limit_reached(&message) {
            Some(why) => crate::say::say(crate::say::Kind::Error, why),
            None => default(info),
        }
    }));
}

/// This process's soft limit on processes per user (`ulimit -u`), where nix has it.
fn process_limit() -> Option<u64> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::sys::resource::{getrlimit, Resource};
        getrlimit(Resource::RLIMIT_NPROC).ok().map(|(soft, _)| soft)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        None
    }
}

/// This process's soft limit on open files (`ulimit -n`).
fn file_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// ` (`ulimit -X` is N)`, or nothing when the limit could not be read.
fn limit_said(name: &str, limit: Option<u64>) -> String {
    limit
        .map(|soft| format!(" (`{name}` is {soft})"))
        .unwrap_or_default()
}

/// How an error of this process's running out of descriptors (EMFILE) reads.
const OUT_OF_DESCRIPTORS: &str = "Too many open files";

/// What runner says of a panic `message` that means a limit was reached.
fn limit_reached(message: &str) -> Option<String> {
    let (what, said) =
        if message.contains("can't spawn") || message.contains("failed to spawn thread") {
            (
                "could not start a thread",
                limit_said("ulimit -u", process_limit()),
            )
        } else if message.contains(OUT_OF_DESCRIPTORS) {
            (
                "ran out of file descriptors",
                limit_said("ulimit -n", file_limit()),
            )
        } else {
            return None;
        };
    Some(format!("runner {what}: {message}{said}"))
}

/// How an error of a process or thread that could not be made (EAGAIN) reads.
const OUT_OF_PROCESSES: &str = "Resource temporarily unavailable";

/// A hint for an error whose text says a limit of this process was reached: it ran
/// out of descriptors (EMFILE), or a process or thread could not be made (EAGAIN,
/// the limit on processes per user); naming the limit.
pub(crate) fn limit_hint(text: &str) -> Option<String> {
    if text.contains(OUT_OF_DESCRIPTORS) {
        return Some(format!(
            "runner ran out of file descriptors: the limit on open files is reached{}",
            limit_said("ulimit -n", file_limit())
        ));
    }
    text.contains(OUT_OF_PROCESSES).then(|| {
        format!(
            "a process or thread could not be started: the limit on processes per user may be reached{}",
            limit_said("ulimit -u", process_limit())
        )
    })
}
