//! For test suites that need a real engine (Docker, nix).

/// Whether a suite that needs `what` runs: true when it is `available`. Otherwise the
/// suite is skipped with a loud line on stderr or, under `RUNNER_REQUIRE_ENGINES=1`
/// (set by CI), fails: a missing engine never passes silently.
pub fn engine_gate(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    assert!(
        std::env::var("RUNNER_REQUIRE_ENGINES").as_deref() != Ok("1"),
        "{what} is required (RUNNER_REQUIRE_ENGINES=1) but unavailable"
    );
    eprintln!("SKIPPED: {what} is unavailable; `cargo xtask test` as root provisions it");
    false
}

/// Waits for `child` (which leads its own process group) to exit, for at most
/// `limit`: a thread blocked in `wait` wakes this one the moment the child exits, no
/// polling. On timeout the child's whole group is SIGKILLed, the child is reaped and
/// `None` is returned, so a hung test never leaves processes behind.
pub fn wait_within(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let pid = child.id();
    let (exited, woken) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let waiter = scope.spawn(move || {
            let status = child.wait();
            let _ = exited.send(());
            status
        });
        let in_time = woken.recv_timeout(limit).is_ok();
        if !in_time {
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pid}"), &pid.to_string()])
                .status();
        }
        let status = waiter.join().ok()?.ok()?;
        in_time.then_some(status)
    })
}
