//! The async runtime, sized to the threads this process may start. A limit on
//! processes (`ulimit -u`, which counts threads too) can leave too few: tokio then
//! panics ("OS can't spawn worker thread") and can hang while unwinding. So runner
//! first counts what it can start, runs with fewer workers when it must, refuses
//! to run (exit 125, saying why) when it cannot work at all, and turns a thread
//! that still cannot be started later into that same error instead of a panic.

use std::sync::mpsc;

use tokio::runtime::{Builder, Runtime};

/// Threads beyond the main one that a run uses normally: two workers and one for
/// blocking work.
const WANTED: usize = 4;
/// The fewest it can work with: one for blocking reads (stdin) and one for the
/// rest of the blocking work, the runtime on the main thread.
const FEWEST: usize = 2;

/// The runtime, with as many workers as the threads that can be started allow;
/// `Err` says why runner cannot run (`None`: the panic hook already said it).
pub(crate) fn runtime() -> Result<Runtime, Option<String>> {
    let (startable, refused) = startable(WANTED);
    if startable < FEWEST {
        return Err(Some(too_few(startable, refused)));
    }
    if startable < WANTED {
        tracing::debug!(startable, "fewer threads than usual: a smaller runtime");
    }
    // tokio panics when its signal pipe cannot be made (no descriptor left).
    std::panic::catch_unwind(|| match startable {
        n if n >= WANTED => Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        n if n > FEWEST => Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build(),
        _ => Builder::new_current_thread().enable_all().build(),
    })
    .map_err(|_| None)?
    .map_err(|e| Some(format!("failed to start the async runtime: {e}")))
}

/// How many more threads this process can start now, up to `want` (each started,
/// counted, then ended), and the error of the first that could not be.
fn startable(want: usize) -> (usize, Option<std::io::Error>) {
    let mut parked = Vec::new();
    let mut refused = None;
    for _ in 0..want {
        let (tx, rx) = mpsc::channel::<()>();
        match std::thread::Builder::new().spawn(move || {
            let _ = rx.recv();
        }) {
            Ok(handle) => parked.push((tx, handle)),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let n = parked.len();
    for (tx, handle) in parked {
        drop(tx);
        let _ = handle.join();
    }
    (n, refused)
}

/// Why runner cannot run with `startable` threads.
fn too_few(startable: usize, refused: Option<std::io::Error>) -> String {
    format!(
        "runner could start {startable} of the {FEWEST} threads it needs at least{}: \
         the limit on processes per user is reached{}",
        refused.map(|e| format!(" ({e})")).unwrap_or_default(),
        limit_said("ulimit -u", process_limit()),
    )
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

/// A hint for an error whose text says this process ran out of descriptors (EMFILE),
/// naming the limit.
pub(crate) fn descriptor_hint(text: &str) -> Option<String> {
    text.contains(OUT_OF_DESCRIPTORS).then(|| {
        format!(
            "runner ran out of file descriptors: the limit on open files is reached{}",
            limit_said("ulimit -n", file_limit())
        )
    })
}
