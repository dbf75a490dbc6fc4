//! `cargo xtask bench`: the benchmark binary in release mode.

use crate::{cargo, root, run, Result};

pub(crate) fn bench(args: &[String]) -> Result {
    // `cli_overhead` runs the release `runner` next to the bench binary.
    run(
        "cargo build --release -p runner-cli",
        cargo().args(["build", "--release", "--quiet", "-p", "runner-cli"]),
    )?;
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "runner-tests",
        "--bin",
        "runner-bench",
        "--",
    ])
    .args(args)
    .env("RUNNER_BENCH_OUT", root().join("target/bench"));
    run("runner-bench (release)", &mut cmd)
}
