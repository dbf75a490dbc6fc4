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
