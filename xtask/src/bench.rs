//! `cargo xtask bench`: the benchmark binary in release mode, and the `runner`
//! command as it is installed (`cargo xtask dist`) for the rows that run it.

use crate::{cargo, root, run, Result};

pub(crate) fn bench(args: &[String]) -> Result {
    let runner = crate::dist::dist()?;
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
    .env("RUNNER_BENCH_OUT", root().join("target/bench"))
    .env("RUNNER_BENCH_CLI", runner);
    run("runner-bench (release)", &mut cmd)
}
