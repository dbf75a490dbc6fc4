//! `cargo xtask bench`: our layer measured against a baseline in the same run.
//!
//! Every row is a ratio: ours and the baseline run interleaved in the same process,
//! so machine noise hits both. Results go to `$RUNNER_BENCH_OUT/results.json`
//! (default `target/bench`) and are printed as a table. `--quick` shrinks every row.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runner_core::{OutputSink, RunnerEnvironment, Stream};
use runner_native::NativeEnvironment;
use runner_reaper::{Ledger, Record};
use tokio::io::AsyncReadExt;

/// The `runner` command the CLI rows run: `$RUNNER_BENCH_CLI` (`cargo xtask bench`
/// sets it to `cargo xtask dist`'s build, the command as installed), else the one
/// next to this binary.
fn runner_cli() -> PathBuf {
    let runner = std::env::var_os("RUNNER_BENCH_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::current_exe()
                .expect("exe")
                .with_file_name("runner")
        });
    assert!(
        runner.is_file(),
        "{} is missing: build it with `cargo xtask dist` (or `cargo build --release -p runner-cli`)",
        runner.display()
    );
    runner
}

/// How long `runner run -q --backend native -- true` takes, to its exit, with the
/// ledger in `state`.
fn runner_true(runner: &std::path::Path, state: &std::path::Path) -> Duration {
    let t = Instant::now();
    let s = std::process::Command::new(runner)
        .args(["run", "-q", "--backend", "native", "--", "true"])
        .env("RUNNER_STATE_DIR", state)
        .stdin(Stdio::null())
        .status()
        .expect("runner");
    let took = t.elapsed();
    assert!(s.success());
    took
}

struct Row {
    name: &'static str,
    ours: f64,
    baseline: f64,
    baseline_desc: &'static str,
    target: f64,
}

#[derive(Debug, Default)]
struct Counting(AtomicU64);
impl OutputSink for Counting {
    fn write(&self, _: Stream, chunk: &[u8]) -> std::io::Result<()> {
        self.0.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn may_block(&self) -> bool {
        false
    }
}

fn env_in(state: &std::path::Path) -> NativeEnvironment {
    let mut env = NativeEnvironment::new("/").expect("env");
    env.with_state_dir(state);
    if std::env::var_os("BENCH_NO_LEDGER").is_some() {
        env.without_ledger();
    }
    env
}

async fn native_spawn_wait(n: usize, state: &std::path::Path) -> Row {
    let env = env_in(state);
    let sink = Arc::new(Counting::default());
    let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
    let batch = 25;
    for _ in 0..n / batch {
        let t = Instant::now();
        for _ in 0..batch {
            let mut p = env.new_process("true", &[]).await.expect("proc");
            p.with_output(sink.clone());
            assert!(p.run().await.expect("run").success());
        }
        ours += t.elapsed();
        let t = Instant::now();
        for _ in 0..batch {
            let s = tokio::process::Command::new("true")
                .stdin(Stdio::null())
                .status()
                .await
                .expect("status");
            assert!(s.success());
        }
        base += t.elapsed();
    }
    Row {
        name: "native_spawn_wait",
        ours: ours.as_secs_f64(),
        baseline: base.as_secs_f64(),
        baseline_desc: "tokio::process::Command::status()",
        target: 1.15,
    }
}

/// `native_spawn_wait` on the portable spawn path (posix_spawn, the record written
/// before the spawn and completed after), measured in a child process that runs on
/// it (the path is chosen once per process), baseline included.
fn native_spawn_wait_portable(n: usize) -> Row {
    let out = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .args(["--portable-spawn-probe", &n.to_string()])
        .env("RUNNER_SPAWN", "portable")
        .stderr(Stdio::inherit())
        .output()
        .expect("probe");
    assert!(out.status.success(), "the portable spawn probe failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut numbers = text
        .split_whitespace()
        .map(|n| n.parse().unwrap_or(f64::NAN));
    Row {
        name: "native_spawn_wait_portable",
        ours: numbers.next().unwrap_or(f64::NAN),
        baseline: numbers.next().unwrap_or(f64::NAN),
        baseline_desc: "tokio::process::Command::status(), same process",
        target: 1.3,
    }
}

fn yes_script(bytes: u64) -> String {
    format!("yes 'a line of build output, like a compiler would print it' | head -c {bytes}")
}

async fn forward_throughput(bytes: u64, rounds: usize, state: &std::path::Path) -> Row {
    let env = env_in(state);
    let script = yes_script(bytes);
    let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let sink = Arc::new(Counting::default());
        let t = Instant::now();
        let mut p = env.new_process("sh", &["-c", &script]).await.expect("proc");
        p.with_output(sink.clone());
        assert!(p.run().await.expect("run").success());
        ours += t.elapsed();
        assert_eq!(sink.0.load(Ordering::Relaxed), bytes);

        let t = Instant::now();
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut out = child.stdout.take().expect("stdout");
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = out.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        child.wait().await.expect("wait");
        base += t.elapsed();
        assert_eq!(total, bytes);
    }
    Row {
        name: "forward_throughput",
        ours: ours.as_secs_f64(),
        baseline: base.as_secs_f64(),
        baseline_desc: "raw 64 KiB reads of the same pipe",
        target: 1.3,
    }
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs in a fresh process: peak RSS growth while forwarding one 100 MiB line.
async fn memory_probe(state: PathBuf) {
    let env = env_in(&state);
    let sink = Arc::new(Counting::default());
    let mut p = env
        .new_process("sh", &["-c", "head -c 104857600 /dev/zero | tr '\\0' x"])
        .await
        .expect("proc");
    p.with_output(sink.clone());
    // Reset the peak, then measure from here.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS:");
    assert!(p.run().await.expect("run").success());
    let peak = status_kib("VmHWM:");
    assert_eq!(sink.0.load(Ordering::Relaxed), 100 * 1024 * 1024);
    println!("{}", peak.saturating_sub(before));
}

/// Runs in a fresh process: `argv` with 200 MB on its stdin and its stdout to
/// /dev/null; prints the peak RSS (KiB) of the largest process of its tree.
fn rss_probe(argv: &[String]) {
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let block = vec![b'x'; 1 << 20];
        for _ in 0..200 {
            std::io::Write::write_all(&mut stdin, &block).expect("write");
        }
    });
    writer.join().expect("writer");
    assert!(child.wait().expect("wait").success());
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    println!("{}", usage.max_rss());
}

/// The peak RSS of `runner run -q --backend native -- cat` moving 200 MB against
/// `cat` alone, each the largest process of its tree, measured in a fresh process.
fn cli_peak_rss(state: &std::path::Path) -> Row {
    let runner = runner_cli();
    let probe = |argv: &[&str]| -> f64 {
        let out = std::process::Command::new(std::env::current_exe().expect("exe"))
            .arg("--rss-probe")
            .args(argv)
            .env("RUNNER_STATE_DIR", state)
            .output()
            .expect("probe");
        assert!(out.status.success(), "rss probe: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<f64>()
            .unwrap_or(f64::NAN)
            / 1024.0
    };
    let ours = probe(&[
        runner.to_str().expect("path"),
        "run",
        "-q",
        "--backend",
        "native",
        "--",
        "cat",
    ]);
    let cat = probe(&["cat"]);
    eprintln!("cli_peak_rss: runner run -- cat {ours:.1} MiB, cat alone {cat:.1} MiB");
    Row {
        name: "cli_peak_rss",
        ours,
        baseline: cat,
        baseline_desc: "`cat` alone moving the same 200 MB (ours_s and baseline_s are MiB of peak RSS; reported, no target)",
        target: f64::INFINITY,
    }
}

fn forward_long_line_memory(state: &std::path::Path) -> Row {
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("--memory-probe")
        .arg(state)
        .output()
        .expect("probe");
    let kib: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(f64::NAN);
    let mib = kib / 1024.0;
    Row {
        name: "forward_long_line_memory",
        ours: mib,
        baseline: 8.0,
        baseline_desc: "budget: 8 MiB peak RSS growth (ours_s is MiB)",
        target: 1.0,
    }
}

fn orphan_group() -> std::process::Child {
    ready_group("sleep 300 & echo ready; wait")
}

/// A shell leading its own group that runs `script` and says `ready` first.
fn ready_group(script: &str) -> std::process::Child {
    let mut c = std::process::Command::new("sh")
        .args(["-c", script])
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(c.stdout.as_mut().expect("stdout"), &mut buf).expect("ready");
    c
}

fn orphan_record(pid: i32, dead_owner: i32) -> Record {
    let mut r = Record::for_group(pid, pid, vec!["sh".into()], "/".into()).expect("record");
    r.owner_pid = dead_owner;
    r
}

fn dead_pid() -> i32 {
    let mut c = std::process::Command::new("true").spawn().expect("spawn");
    c.wait().expect("wait");
    c.id() as i32
}

fn reap_dead_records(n: usize, rounds: usize) -> Row {
    let me = std::process::id() as i32;
    let template = Record::for_group(me, me, vec!["x".into()], "/".into()).expect("record");
    let owner = dead_pid();
    let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let tmp = tempfile::tempdir().expect("tmp");
        let ledger = Ledger::at(tmp.path());
        let mut dead = Vec::new();
        for _ in 0..n {
            let pid = dead_pid();
            let mut r = template.clone();
            r.pgid = pid;
            r.leader_pid = pid;
            r.owner_pid = owner;
            ledger.write_record(&r).expect("write");
            dead.push(pid);
        }
        let t = Instant::now();
        let mut read = 0usize;
        for e in std::fs::read_dir(ledger.runs_dir())
            .expect("list")
            .flatten()
        {
            let bytes = std::fs::read(e.path()).expect("read");
            let _: Record = serde_json::from_slice(&bytes).expect("parse");
            read += 1;
        }
        base += t.elapsed();
        assert_eq!(read, n);
        let t = Instant::now();
        let report = ledger.reap_stale(Duration::from_secs(60), Duration::from_secs(2));
        ours += t.elapsed();
        assert_eq!(report.removed.len(), n, "{report}");
    }
    Row {
        name: "reap_1000_dead_records",
        ours: ours.as_secs_f64(),
        baseline: base.as_secs_f64(),
        baseline_desc: "listing and parsing the same records",
        target: 3.0,
    }
}

/// `reap_50_live_groups_vs_kill`: sweeping 50 live groups against SIGTERM to them
/// (sweeping one group instead measured nothing we decide).
fn reap_live_groups(n: usize, rounds: usize) -> Vec<Row> {
    let t = reap_groups(n, rounds, orphan_group);
    vec![Row {
        name: "reap_50_live_groups_vs_kill",
        ours: t.many.as_secs_f64(),
        baseline: t.bare_kill.as_secs_f64(),
        baseline_desc: "SIGTERM to the same groups, awaiting every known pid's exit",
        // The sweep's own work (50 records read and removed, a read of the process
        // table) may cost as much as the kernel's; one group at a time would be ~13.
        target: 2.0,
    }]
}

/// Like `reap_live_groups`, with groups that take 50 ms to clean up after SIGTERM (as
/// compilers and language servers do): shows the groups are ended in parallel.
fn reap_slow_exit_groups(n: usize, rounds: usize) -> Row {
    let t = reap_groups(n, rounds, slow_exit_group);
    Row {
        name: "reap_50_slow_exit_groups",
        ours: t.many.as_secs_f64(),
        baseline: t.one.as_secs_f64(),
        baseline_desc: "sweeping a single group that takes 50 ms to exit on SIGTERM",
        target: 2.0,
    }
}

fn slow_exit_group() -> std::process::Child {
    // `ready` comes from the child after its exec: a child still between fork and
    // exec would catch SIGTERM with the trap it inherited, lose it at exec and live
    // until SIGKILL.
    ready_group("trap 'sleep 0.05; exit 0' TERM; sh -c 'echo ready; exec sleep 300' & wait")
}

/// Summed over the rounds of `reap_groups`.
struct ReapTimes {
    /// Sweeping one orphaned group.
    one: Duration,
    /// Sweeping `n` orphaned groups.
    many: Duration,
    /// The floor under `many`: SIGTERM to `n` groups whose every pid is known in
    /// advance, then waiting until each of those processes has exited. No ledger, no
    /// look at `/proc`: what the kernel and the processes themselves take.
    bare_kill: Duration,
}

fn reap_groups(n: usize, rounds: usize, spawn: fn() -> std::process::Child) -> ReapTimes {
    let owner = dead_pid();
    let sweep = |count: usize| {
        settle();
        let tmp = tempfile::tempdir().expect("tmp");
        let ledger = Ledger::at(tmp.path());
        let mut kids: Vec<_> = (0..count).map(|_| spawn()).collect();
        for c in &kids {
            ledger
                .write_record(&orphan_record(c.id() as i32, owner))
                .expect("write");
        }
        let t = Instant::now();
        let report = ledger.reap_stale(Duration::from_secs(60), Duration::from_secs(5));
        let d = t.elapsed();
        assert_eq!(report.reaped.len(), count, "{report}");
        for c in &mut kids {
            c.wait().expect("wait");
        }
        d
    };
    let mut t = ReapTimes {
        one: Duration::ZERO,
        many: Duration::ZERO,
        bare_kill: Duration::ZERO,
    };
    for _ in 0..rounds {
        t.one += sweep(1);
        t.many += sweep(n);
        t.bare_kill += bare_kill(n, spawn);
    }
    t
}

/// Waits (up to 5 s) until no zombie is left on the machine. The processes a round
/// orphans are reaped by pid 1, which on some machines does so only every second or
/// two; until then they lengthen every walk of `/proc`, and the next measurement would
/// pay for the previous one's debris.
fn settle() {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let zombies = runner_core::os::processes()
            .into_iter()
            .filter(|p| p.state == runner_core::ProcessState::Zombie)
            .count();
        if zombies == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bare_kill(n: usize, spawn: fn() -> std::process::Child) -> Duration {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::{AsFd, OwnedFd};
    settle();
    let mut kids: Vec<_> = (0..n).map(|_| spawn()).collect();
    let pgids: Vec<i32> = kids.iter().map(|c| c.id() as i32).collect();
    let members: Vec<i32> = runner_core::os::processes()
        .into_iter()
        .filter(|p| pgids.contains(&p.pgid))
        .map(|p| p.pid)
        .collect();
    assert!(members.len() >= n, "every group has its leader");
    let mut fds: Vec<OwnedFd> = members
        .iter()
        .map(|&pid| runner_core::os::exit_fd(pid).expect("an exit descriptor"))
        .collect();
    let t = Instant::now();
    for &pgid in &pgids {
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::SIGTERM)
            .expect("killpg");
    }
    while !fds.is_empty() {
        let mut polled: Vec<PollFd> = fds
            .iter()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        poll(&mut polled, PollTimeout::NONE).expect("poll");
        let exited: Vec<bool> = polled.iter().map(|p| p.any() == Some(true)).collect();
        drop(polled);
        let mut exited = exited.into_iter();
        fds.retain(|_| !exited.next().unwrap_or(false));
    }
    let d = t.elapsed();
    for c in &mut kids {
        c.wait().expect("wait");
    }
    d
}

/// `runner run -q --backend native -- true` (the command as installed, [`runner_cli`]:
/// clap, the runtime, the start-up sweep, the ledger, the spawn) against spawning
/// `true` directly, and against `timeout 60 true` (a C supervisor that also forks,
/// forwards signals and waits), all to their exit.
fn cli_overhead(n: usize, state: &std::path::Path) -> Vec<Row> {
    let runner = runner_cli();
    let (mut ours, mut base, mut supervisor) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..n {
        let t = Instant::now();
        let s = std::process::Command::new("timeout")
            .args(["60", "true"])
            .stdin(Stdio::null())
            .status()
            .expect("timeout");
        supervisor += t.elapsed();
        assert!(s.success());
        ours += runner_true(&runner, state);
        let t = Instant::now();
        let s = std::process::Command::new("true")
            .stdin(Stdio::null())
            .status()
            .expect("true");
        base += t.elapsed();
        assert!(s.success());
    }
    vec![
        Row {
            name: "cli_overhead",
            ours: ours.as_secs_f64(),
            baseline: base.as_secs_f64(),
            baseline_desc: "`true` spawned directly",
            target: 1.5,
        },
        Row {
            name: "cli_overhead_vs_timeout",
            ours: ours.as_secs_f64(),
            baseline: supervisor.as_secs_f64(),
            baseline_desc: "`timeout 60 true`: a supervisor that also spawns and waits",
            target: 1.3,
        },
    ]
}

/// A throwaway input-less flake and the offline options to use it.
struct BenchFlake {
    tmp: tempfile::TempDir,
}

impl BenchFlake {
    fn new() -> BenchFlake {
        let tmp = tempfile::tempdir().expect("tmp");
        let system = format!("{}-linux", std::env::consts::ARCH);
        std::fs::write(
            tmp.path().join("registry.json"),
            r#"{"flakes":[],"version":2}"#,
        )
        .expect("registry");
        std::fs::write(
            tmp.path().join("flake.nix"),
            format!(
                r#"{{ outputs = {{ self }}: {{ devShells.{system}.default = builtins.derivation {{
                    name = "bench-shell"; system = "{system}"; builder = "/bin/bash";
                    outputs = [ "out" ]; PATH = "/usr/bin:/bin"; GREETING = "hi"; }}; }}; }}"#
            ),
        )
        .expect("flake");
        BenchFlake { tmp }
    }

    /// The same shell with a local `path` input outside the flake's directory (its
    /// `flake.lock` written by the first evaluation).
    fn with_input() -> BenchFlake {
        let flake = BenchFlake::new();
        let lib = flake.tmp.path().join("lib");
        std::fs::create_dir_all(&lib).expect("lib");
        for i in 0..50 {
            std::fs::write(lib.join(format!("file{i}.txt")), format!("{i}\n")).expect("lib file");
        }
        std::fs::write(lib.join("greeting.txt"), "from-input").expect("greeting");
        let dir = flake.tmp.path().join("flake");
        std::fs::create_dir_all(&dir).expect("dir");
        let system = format!("{}-linux", std::env::consts::ARCH);
        std::fs::write(
            dir.join("flake.nix"),
            format!(
                r#"{{ inputs.lib = {{ url = "path:{}"; flake = false; }};
                outputs = {{ self, lib }}: {{ devShells.{system}.default = builtins.derivation {{
                    name = "bench-shell"; system = "{system}"; builder = "/bin/bash";
                    outputs = [ "out" ]; PATH = "/usr/bin:/bin";
                    GREETING = builtins.readFile "${{lib}}/greeting.txt"; }}; }}; }}"#,
                lib.display()
            ),
        )
        .expect("flake");
        flake
    }

    /// The flake's directory: the temporary directory itself, or its `flake/` when
    /// made [`with_input`](Self::with_input).
    fn dir(&self) -> std::path::PathBuf {
        let nested = self.tmp.path().join("flake");
        if nested.join("flake.nix").is_file() {
            nested
        } else {
            self.tmp.path().to_path_buf()
        }
    }

    fn options(&self) -> Vec<(String, String)> {
        vec![
            ("substituters".into(), String::new()),
            (
                "flake-registry".into(),
                self.tmp
                    .path()
                    .join("registry.json")
                    .to_string_lossy()
                    .into_owned(),
            ),
            ("sandbox".into(), "false".into()),
        ]
    }

    fn env(
        &self,
        state: &std::path::Path,
        cache: Option<&std::path::Path>,
    ) -> runner_nix::NixEnvironment {
        let mut env = runner_nix::NixEnvironment::new(self.dir()).expect("nix env");
        for (k, v) in self.options() {
            env.with_nix_option(&k, &v);
        }
        env.with_state_dir(state);
        match cache {
            Some(c) => env.with_cache_dir(c),
            None => env.without_cache(),
        };
        env
    }
}

async fn run_true(env: &dyn RunnerEnvironment, n: usize) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        let mut p = env.new_process("true", &[]).await.expect("proc");
        p.with_output(Arc::new(runner_core::NullSink));
        assert!(p.run().await.expect("run").success());
    }
    t.elapsed()
}

async fn nix_rows(quick: bool, state: &std::path::Path) -> Vec<Row> {
    let flake = BenchFlake::new();
    let cache = flake.tmp.path().join("cache");
    let materialized = flake.env(state, Some(&cache));
    materialized.init().await.expect("init");
    let wrapped = flake.env(state, None);
    let native = env_in(state);

    let (n, batch) = if quick { (100, 25) } else { (500, 25) };
    let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..n / batch {
        ours += run_true(&materialized, batch).await;
        base += run_true(&native, batch).await;
    }
    let mut rows = vec![Row {
        name: "nix_materialized_run",
        ours: ours.as_secs_f64(),
        baseline: base.as_secs_f64(),
        baseline_desc: "NativeEnvironment running the same `true`",
        target: 1.2,
    }];

    let rounds = if quick { 5 } else { 20 };
    let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        ours += run_true(&materialized, 1).await;
        base += run_true(&wrapped, 1).await;
    }
    rows.push(Row {
        name: "nix_wrapped_vs_materialized",
        ours: ours.as_secs_f64(),
        baseline: base.as_secs_f64(),
        baseline_desc: "the same `true` wrapped in `nix develop --command`",
        target: 0.05,
    });

    let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
    let mut opts: Vec<String> = vec![
        "--extra-experimental-features".into(),
        "nix-command flakes".into(),
    ];
    for (k, v) in flake.options() {
        opts.extend(["--option".into(), k, v]);
    }
    for _ in 0..rounds {
        let env = flake.env(state, Some(&cache));
        let t = Instant::now();
        env.init().await.expect("cached init");
        ours += t.elapsed();
        assert_eq!(
            env.materialization().expect("info").source,
            runner_nix::EnvSource::Cache
        );
        let t = Instant::now();
        let out = tokio::process::Command::new("nix")
            .args(&opts)
            .args(["print-dev-env", "--json"])
            .arg(format!("path:{}", flake.dir().display()))
            .stderr(Stdio::null())
            .output()
            .await
            .expect("nix");
        base += t.elapsed();
        assert!(out.status.success());
    }
    rows.push(Row {
        name: "nix_cached_init",
        ours: ours.as_secs_f64(),
        baseline: base.as_secs_f64(),
        baseline_desc: "`nix print-dev-env --json` (eval cache warm)",
        target: 0.1,
    });
    // The same with a local input (50 files fingerprinted besides the flake's).
    let with_input = BenchFlake::with_input();
    let input_cache = with_input.tmp.path().join("cache");
    with_input
        .env(state, Some(&input_cache))
        .init()
        .await
        .expect("first init");
    let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let env = with_input.env(state, Some(&input_cache));
        let t = Instant::now();
        env.init().await.expect("cached init");
        ours += t.elapsed();
        assert_eq!(
            env.materialization().expect("info").source,
            runner_nix::EnvSource::Cache
        );
        let t = Instant::now();
        let out = tokio::process::Command::new("nix")
            .args(&opts)
            .args(["print-dev-env", "--json"])
            .arg(format!("path:{}", with_input.dir().display()))
            .stderr(Stdio::null())
            .output()
            .await
            .expect("nix");
        base += t.elapsed();
        assert!(out.status.success());
    }
    rows.push(Row {
        name: "nix_cached_init_with_inputs",
        ours: ours.as_secs_f64(),
        baseline: base.as_secs_f64(),
        baseline_desc: "`nix print-dev-env --json` of a flake with a local input (warm)",
        target: 0.1,
    });
    rows
}

/// One exec through bollard alone: create, start attached, read the output to its
/// end. Returns the exec's id.
async fn raw_exec(docker: &bollard::Docker, container: &str, cmd: Vec<String>) -> String {
    use futures_util::StreamExt;
    let exec = docker
        .create_exec(
            container,
            bollard::models::ExecConfig {
                cmd: Some(cmd),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .expect("create exec");
    if let Ok(bollard::exec::StartExecResults::Attached { mut output, .. }) =
        docker.start_exec(&exec.id, None).await
    {
        while output.next().await.is_some() {}
    }
    exec.id
}

/// Runs `p` to its end with stdout through a pipe, counting the bytes.
async fn drain_stdout(mut p: Box<dyn runner_core::Proc>) -> u64 {
    let mut out = p.stdout_pipe().expect("pipe");
    let p = p.start().await.expect("start");
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        match tokio::io::AsyncReadExt::read(&mut out, &mut buf)
            .await
            .expect("read")
        {
            0 => break,
            k => n += k as u64,
        }
    }
    assert!(p.wait().await.expect("wait").success());
    n
}

/// Starts `sh -c TREE` (two sleeping children) and waits for its "ready".
async fn start_tree(
    mut p: Box<dyn runner_core::Proc>,
) -> (runner_core::Running, runner_core::ProcStdout) {
    let mut out = p.stdout_pipe().expect("pipe");
    let p = p.start().await.expect("start");
    let mut ready = [0u8; 6];
    tokio::io::AsyncReadExt::read_exact(&mut out, &mut ready)
        .await
        .expect("ready");
    (p, out)
}

/// A language server's framing, served by busybox sh: each `Content-Length` framed
/// request is answered with its own body at once (a fork of `tr` and `head` each).
const LSP_ECHO_SERVER: &str = r#"while IFS= read -r header; do len=$(printf %s "$header" | tr -dc 0-9); IFS= read -r blank; body=$(head -c "$len"); printf 'Content-Length: %s\r\n\r\n%s' "${#body}" "$body"; done"#;

/// Sends one framed request and reads the framed answer.
fn lsp_round_trip(
    stdin: &mut std::process::ChildStdin,
    stdout: &mut std::io::BufReader<std::process::ChildStdout>,
    id: usize,
) {
    use std::io::{BufRead, Read};
    let body =
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"textDocument/hover","params":{{}}}}"#);
    write!(stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).expect("request");
    stdin.flush().expect("flush");
    let mut length = 0;
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).expect("header") > 0,
            "the server ended"
        );
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(n) = line.strip_prefix("Content-Length: ") {
            length = n.parse().expect("length");
        }
    }
    let mut answer = vec![0u8; length];
    stdout.read_exact(&mut answer).expect("body");
    assert_eq!(answer, body.as_bytes());
}

/// Spawns `cmd` as a language server: its stdin and (buffered) stdout.
fn lsp_spawn(
    cmd: &mut std::process::Command,
) -> (
    std::process::Child,
    std::process::ChildStdin,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("server");
    let stdin = child.stdin.take().expect("stdin");
    let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    (child, stdin, stdout)
}

/// A command that starts the server.
type Launcher = Box<dyn Fn() -> std::process::Command>;
/// A row's name, our launcher, the baseline's, its description and the target.
type LspKind = (&'static str, Launcher, Launcher, &'static str, f64);

/// LSP round trips through `runner run` against the same server without it (native:
/// `sh` directly; docker: `docker run -i`), timed after the first answer, and the
/// time to the first answer on docker against `docker run -i`.
fn lsp_rows(quick: bool, state: &std::path::Path, docker: bool) -> Vec<Row> {
    let runner = runner_cli();
    let image = "runner-test/busybox:latest";
    let (sessions, trips) = if quick { (2, 50) } else { (5, 200) };
    let runner_cmd = move |backend: &'static [&'static str]| {
        let (runner, state) = (runner.clone(), state.to_path_buf());
        move || {
            let mut c = std::process::Command::new(&runner);
            c.args(["run", "-q"])
                .args(backend)
                .args(["--", "sh", "-c", LSP_ECHO_SERVER])
                .env("RUNNER_STATE_DIR", &state);
            c
        }
    };
    // (ours, baseline) commands for each row.
    let mut kinds: Vec<LspKind> = vec![(
        "lsp_round_trip_native",
        Box::new(runner_cmd(&["--backend", "native"])),
        Box::new(|| {
            let mut c = std::process::Command::new("sh");
            c.args(["-c", LSP_ECHO_SERVER]);
            c
        }),
        "the same server, spawned directly",
        1.05,
    )];
    if docker {
        kinds.push((
            "lsp_round_trip_docker",
            Box::new(runner_cmd(&[
                "--backend",
                "docker",
                "--image",
                "runner-test/busybox:latest",
            ])),
            Box::new(move || {
                let mut c = std::process::Command::new("docker");
                c.args(["run", "-i", "--rm", image, "sh", "-c", LSP_ECHO_SERVER]);
                c
            }),
            "the same server under `docker run -i`",
            1.2,
        ));
    }
    let mut rows = Vec::new();
    for (name, ours_cmd, base_cmd, desc, target) in kinds {
        let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
        let (mut ours_first, mut base_first) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..sessions {
            for (which, make) in [(0, &ours_cmd), (1, &base_cmd)] {
                let start = Instant::now();
                let (mut child, mut stdin, mut stdout) = lsp_spawn(&mut make());
                lsp_round_trip(&mut stdin, &mut stdout, 0);
                let first = start.elapsed();
                let t = Instant::now();
                for id in 1..=trips {
                    lsp_round_trip(&mut stdin, &mut stdout, id);
                }
                let took = t.elapsed();
                drop(stdin);
                assert!(child.wait().expect("wait").success());
                if which == 0 {
                    (ours, ours_first) = (ours + took, ours_first + first);
                } else {
                    (base, base_first) = (base + took, base_first + first);
                }
            }
        }
        rows.push(Row {
            name,
            ours: ours.as_secs_f64(),
            baseline: base.as_secs_f64(),
            baseline_desc: desc,
            target,
        });
        if name == "lsp_round_trip_docker" {
            rows.push(Row {
                name: "docker_time_to_initialize",
                ours: ours_first.as_secs_f64(),
                baseline: base_first.as_secs_f64(),
                baseline_desc: "`docker run -i` to its first answer",
                target: 1.0,
            });
        }
    }
    rows
}

const TREE: &str = "sleep 300 & sleep 300 & echo ready; wait";

/// A process through the helper on an engine over ssh (a host made here:
/// `runner_tests::ssh_host`) against the `docker exec` CLI over the same ssh (its ssh
/// reads the same configuration, through a wrapper named `ssh` first on its PATH).
async fn docker_ssh_rows(quick: bool) -> Vec<Row> {
    let Some((dir, host, endpoint)) = ssh_bench_host("docker_exec_run_ssh") else {
        return Vec::new();
    };
    let engine = runner_docker::Engine::connect_to(&endpoint)
        .await
        .expect("the engine over ssh");
    let mut env = runner_docker::DockerEnvironment::with_client(
        engine,
        runner_tests::foreign_engine::IMAGE,
        None,
        "bench-ssh",
    )
    .await
    .expect("docker env");
    env.with_pause();
    env.init().await.expect("init");
    assert!(env.exec_helper().await.is_ok(), "the helper over ssh");
    let id = env.container_id().expect("id");
    let path = ssh_cli_path(dir.path(), &host);
    let n = if quick { 10 } else { 40 };
    let (mut helped, mut cli) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..n {
        let t = Instant::now();
        let mut p = env.new_process("echo", &["hi"]).await.expect("proc");
        p.with_output(Arc::new(runner_core::NullSink));
        assert!(p.run().await.expect("run").success());
        helped += t.elapsed();

        let t = Instant::now();
        let out = std::process::Command::new("docker")
            .args(["-H", &endpoint, "exec", &id, "echo", "hi"])
            .env("PATH", &path)
            .env("DOCKER_CONFIG", dir.path().join("cli-config"))
            .output()
            .expect("docker exec");
        cli += t.elapsed();
        assert!(out.status.success(), "docker exec over ssh: {out:?}");
    }
    env.shutdown().await.expect("shutdown");
    vec![Row {
        name: "docker_exec_run_ssh",
        ours: helped.as_secs_f64(),
        baseline: cli.as_secs_f64(),
        baseline_desc: "the `docker exec` CLI over the same ssh (ours through the helper)",
        target: 0.1,
    }]
}

/// An ssh host made here (`runner_tests::ssh_host`), this process's ssh command set
/// to reach it, and its `ssh://` endpoint; `None` (and why, for `rows`) when it
/// cannot be made.
fn ssh_bench_host(
    rows: &str,
) -> Option<(tempfile::TempDir, runner_tests::ssh_host::SshHost, String)> {
    use runner_tests::ssh_host::SshHost;
    if let Some(why) = runner_tests::ssh_host::unavailable() {
        eprintln!("{rows} SKIPPED: {why}");
        return None;
    }
    let dir = tempfile::tempdir().expect("dir");
    let host = SshHost::start(&dir.path().join("ssh"));
    std::env::set_var("RUNNER_SSH_COMMAND", host.ssh_command());
    Some((dir, host, SshHost::docker_host(SshHost::HOST)))
}

/// A `PATH` whose `ssh` (a wrapper in `dir`) is the host's ssh command, for the
/// docker CLI, which runs `ssh` by that name.
fn ssh_cli_path(dir: &std::path::Path, host: &runner_tests::ssh_host::SshHost) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let wrapper = bin.join("ssh");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec /usr/bin/{} \"$@\"\n", host.ssh_command()),
    )
    .expect("wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A project the engine over ssh does not see (hidden by an empty tmpfs in its mount
/// namespace), synced: 20,000 files (100 MB) copied in at `init` (what the synced
/// `init` costs beyond the same `init` without a project) against
/// `tar c | docker cp -` of the same tree over the same ssh; and one saved file to
/// seen by a process in the container (p95) against the 200 ms budget.
async fn remote_sync_rows(quick: bool) -> Vec<Row> {
    use tokio::io::AsyncBufReadExt;
    let Some((dir, host, endpoint)) = ssh_bench_host("remote_sync rows") else {
        return Vec::new();
    };
    let path = ssh_cli_path(dir.path(), &host);
    let project = tempfile::tempdir().expect("project");
    let body = vec![b'x'; 5000];
    for d in 0..200 {
        let sub = project.path().join(format!("pkg{d:03}"));
        std::fs::create_dir_all(&sub).expect("dir");
        for f in 0..100 {
            std::fs::write(sub.join(format!("f{f:03}.go")), &body).expect("file");
        }
    }
    host.engine().hide(project.path());
    let env_of = |dir: Option<std::path::PathBuf>, name: &'static str| {
        let endpoint = endpoint.clone();
        async move {
            let engine = runner_docker::Engine::connect_to(&endpoint)
                .await
                .expect("the engine over ssh");
            let mut env = runner_docker::DockerEnvironment::with_client(
                engine,
                runner_tests::foreign_engine::IMAGE,
                dir.as_deref(),
                name,
            )
            .await
            .expect("docker env");
            env.with_pause();
            env
        }
    };
    let rounds = if quick { 1 } else { 3 };
    let (mut synced, mut cli) = (Duration::ZERO, Duration::ZERO);
    let mut kept = None;
    for round in 0..rounds {
        let plain = env_of(None, "bench-sync-plain").await;
        let t = Instant::now();
        plain.init().await.expect("init");
        let plain_init = t.elapsed();
        let id = plain.container_id().expect("id");
        let t = Instant::now();
        let copied = std::process::Command::new("sh")
            .args([
                "-c",
                "tar -C \"$1\" -cf - . | docker -H \"$2\" cp - \"$3:/tmp\"",
                "sh",
            ])
            .arg(project.path())
            .arg(&endpoint)
            .arg(&id)
            .env("PATH", &path)
            .env("DOCKER_CONFIG", dir.path().join("cli-config"))
            .output()
            .expect("tar | docker cp");
        cli += t.elapsed();
        assert!(copied.status.success(), "tar | docker cp: {copied:?}");
        plain.shutdown().await.expect("shutdown");

        let env = env_of(Some(project.path().to_path_buf()), "bench-sync").await;
        let t = Instant::now();
        env.init().await.expect("synced init");
        synced += t.elapsed().saturating_sub(plain_init);
        assert!(env.is_synced().await, "the project is synced");
        if round + 1 == rounds {
            kept = Some(env);
        } else {
            env.shutdown().await.expect("shutdown");
        }
    }
    let env = kept.expect("the last synced environment");
    // One saved file to seen in the container: a process there prints the file each
    // time it changes (a loop of `cat`, about a millisecond a turn).
    let file = project.path().join("edited.go");
    std::fs::write(&file, "0").expect("write");
    env.flush_sync().await;
    let mut watcher = env
        .new_process(
            "sh",
            &["-c", "last=; while :; do c=$(cat edited.go 2>/dev/null); if [ \"$c\" != \"$last\" ]; then echo \"$c\"; last=$c; fi; done"],
        )
        .await
        .expect("watcher");
    let out = watcher.stdout_pipe().expect("pipe");
    let watcher = watcher.start().await.expect("start");
    let mut lines = tokio::io::BufReader::new(out).lines();
    assert_eq!(lines.next_line().await.expect("line").as_deref(), Some("0"));
    let edits = if quick { 30 } else { 100 };
    let mut took = Vec::new();
    for i in 1..=edits {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        std::fs::write(&file, i.to_string()).expect("write");
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .expect("the edit never arrived")
                .expect("line")
                .expect("the watcher ended");
            if line == i.to_string() {
                break;
            }
        }
        took.push(t.elapsed());
    }
    let _ = watcher.stop().await;
    env.shutdown().await.expect("shutdown");
    took.sort();
    let p95 = took[(took.len() * 95).div_ceil(100) - 1];
    eprintln!(
        "remote_sync_edit_latency: median {:?}, p95 {:?}, max {:?}",
        took[took.len() / 2],
        p95,
        took[took.len() - 1]
    );
    vec![
        Row {
            name: "remote_sync_initial",
            ours: synced.as_secs_f64(),
            baseline: cli.as_secs_f64(),
            baseline_desc: "`tar c | docker cp -` of the 20,000 files (100 MB) over the same ssh (ours: what syncing adds to init)",
            target: 1.0,
        },
        Row {
            name: "remote_sync_edit_latency",
            ours: p95.as_secs_f64(),
            baseline: 0.2,
            baseline_desc: "the 200 ms budget (ours: p95 of one saved file to seen in the container, over ssh)",
            target: 1.0,
        },
    ]
}

/// 100 MiB from a server in the container through a tunnelled port (this machine's
/// 127.0.0.1, through the helper) against the same bytes read straight from the
/// container's address on the engine's network (the engine is this host's here).
async fn docker_tunnel_rows(quick: bool) -> Vec<Row> {
    use tokio::io::AsyncReadExt;
    let image = "runner-test/busybox:latest";
    let port = runner_core::find_free_port().expect("port");
    let mut env = runner_docker::DockerEnvironment::new_headless(image, "bench-tunnel")
        .await
        .expect("docker env");
    env.with_pause().with_port_mapping(port, 9000);
    env.init().await.expect("init");
    assert_eq!(env.tunnelled_ports().len(), 1, "the port is tunnelled");
    let id = env.container_id().expect("id");
    let inspect = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &id])
        .output()
        .expect("docker inspect");
    let ip = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    let bytes: u64 = 100 << 20;
    // One connection a server: `nc -l` serves one and exits.
    let read_from = |addr: (String, u16)| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect((addr.0.as_str(), addr.1)).await {
                let t = Instant::now();
                let mut buf = vec![0u8; 1 << 16];
                let mut got = 0u64;
                loop {
                    let n = s.read(&mut buf).await.expect("read");
                    if n == 0 {
                        break;
                    }
                    got += n as u64;
                }
                if got == bytes {
                    return t.elapsed();
                }
            }
            assert!(Instant::now() < deadline, "the server never served");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let rounds = if quick { 1 } else { 3 };
    let (mut tunnelled, mut direct) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        for which in 0..2 {
            let server = env
                .new_process("sh", &["-c", "head -c 104857600 /dev/zero | nc -l -p 9000"])
                .await
                .expect("server");
            let server = server.start().await.expect("start");
            let took = if which == 0 {
                read_from(("127.0.0.1".to_string(), port)).await
            } else {
                read_from((ip.clone(), 9000)).await
            };
            let _ = server.stop().await;
            if which == 0 {
                tunnelled += took;
            } else {
                direct += took;
            }
        }
    }
    env.shutdown().await.expect("shutdown");
    vec![Row {
        name: "remote_tunnel_throughput",
        ours: tunnelled.as_secs_f64(),
        baseline: direct.as_secs_f64(),
        baseline_desc:
            "the same 100 MiB read from the container's own address (ours through the tunnel)",
        target: 1.5,
    }]
}

async fn docker_rows(quick: bool) -> Vec<Row> {
    let image = "runner-test/busybox:latest";
    let mut env = runner_docker::DockerEnvironment::new_headless(image, "bench-exec")
        .await
        .expect("docker env");
    env.with_pause();
    env.init().await.expect("init");
    let helper = env.exec_helper().await;
    assert!(helper.is_ok(), "the helper: {helper:?}");
    let mut plain = runner_docker::DockerEnvironment::new_headless(image, "bench-exec-plain")
        .await
        .expect("docker env");
    plain.with_pause().with_exec_helper(false);
    plain.init().await.expect("init");
    let state = tempfile::tempdir().expect("state");
    let native = env_in(state.path());
    let id = plain.container_id().expect("id");
    let n = if quick { 40 } else { 200 };
    let (mut helped, mut execs, mut cli, mut raw, mut host) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let mut helped_each = Vec::with_capacity(n);
    // In blocks of ten of a kind, the kinds alternating: an exec leaves the engine
    // work to finish after it returns (containerd's events, the exec's cleanup), which
    // lands on whatever runs next; a block charges it to its own kind.
    let block = 10;
    for _ in 0..n / block {
        for which in 0..5 {
            for _ in 0..block {
                let t = Instant::now();
                match which {
                    0..=2 => {
                        let e: &dyn RunnerEnvironment = match which {
                            0 => &env,
                            1 => &plain,
                            _ => &native,
                        };
                        let mut p = e.new_process("echo", &["hi"]).await.expect("proc");
                        p.with_output(Arc::new(runner_core::NullSink));
                        assert!(p.run().await.expect("run").success());
                    }
                    3 => {
                        let out = std::process::Command::new("docker")
                            .args(["exec", &id, "echo", "hi"])
                            .output()
                            .expect("docker exec");
                        assert!(out.status.success());
                    }
                    _ => {
                        let docker = plain.engine().bollard();
                        let exec = raw_exec(docker, &id, vec!["echo".into(), "hi".into()]).await;
                        loop {
                            let info = docker.inspect_exec(&exec).await.expect("inspect");
                            if info.running != Some(true) {
                                break;
                            }
                        }
                    }
                }
                let took = t.elapsed();
                match which {
                    0 => {
                        helped += took;
                        helped_each.push(took);
                    }
                    1 => execs += took,
                    2 => host += took,
                    3 => cli += took,
                    _ => raw += took,
                }
            }
        }
    }
    let n = helped_each.len();
    helped_each.sort();
    eprintln!(
        "docker_exec_run: median {:.2} ms through the helper",
        helped_each[n / 2].as_secs_f64() * 1e3
    );
    // 100 MiB through stdout: the helper against native, the same program (the
    // image's busybox is the host's static busybox; GNU head is 10x faster than it
    // and would measure the program, not the path).
    let bytes = 100u64 << 20;
    let cmd = ["head", "-c", "104857600", "/dev/zero"];
    let (mut thr_helped, mut thr_native) = (Duration::ZERO, Duration::ZERO);
    let (mut thr_framed, mut thr_cli) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..(if quick { 1 } else { 3 }) {
        let t = Instant::now();
        let p = env.new_process("busybox", &cmd).await.expect("proc");
        assert_eq!(drain_stdout(p).await, bytes);
        thr_helped += t.elapsed();
        let t = Instant::now();
        let p = native.new_process("busybox", &cmd).await.expect("proc");
        assert_eq!(drain_stdout(p).await, bytes);
        thr_native += t.elapsed();
        // Through an output sink: every byte framed through the engine's stream
        // (the path of an engine on another host), against the `docker exec` CLI.
        let sink = Arc::new(Counting::default());
        let t = Instant::now();
        let mut p = env.new_process("busybox", &cmd).await.expect("proc");
        p.with_output(sink.clone());
        assert!(p.run().await.expect("run").success());
        thr_framed += t.elapsed();
        assert_eq!(sink.0.load(Ordering::Relaxed), bytes);
        let t = Instant::now();
        let out = std::process::Command::new("docker")
            .args(["exec", &id, "busybox"])
            .args(cmd)
            .stdout(Stdio::null())
            .status()
            .expect("docker exec");
        thr_cli += t.elapsed();
        assert!(out.success());
    }
    // Stopping an exec whose shell has two children (all end on SIGTERM): the plain
    // exec against one raw exec of `kill` to the same kind of tree's group, and the
    // helper against native, each until the process ended.
    let k = if quick { 10 } else { 40 };
    let (mut stop_ours, mut stop_raw, mut stop_helped, mut stop_native) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    for _ in 0..k {
        for e in [&env as &dyn RunnerEnvironment, &native] {
            let (p, _out) =
                start_tree(e.new_process("sh", &["-c", TREE]).await.expect("proc")).await;
            let t = Instant::now();
            p.stop().await.expect("stop");
            if std::ptr::addr_eq(e, &env as &dyn RunnerEnvironment) {
                stop_helped += t.elapsed();
            } else {
                stop_native += t.elapsed();
            }
        }
        let (p, _out) =
            start_tree(plain.new_process("sh", &["-c", TREE]).await.expect("proc")).await;
        let t = Instant::now();
        p.stop().await.expect("stop");
        stop_ours += t.elapsed();

        let mut p = plain.docker_process("sh", &["-c", TREE]).expect("proc");
        let mut out = runner_core::Proc::stdout_pipe(&mut p).expect("pipe");
        let p = p.start().await.expect("start");
        let mut ready = [0u8; 6];
        tokio::io::AsyncReadExt::read_exact(&mut out, &mut ready)
            .await
            .expect("ready");
        let pgid = p.find_pid().await.expect("find pid").expect("running");
        let t = Instant::now();
        let kill = vec![
            "kill".into(),
            "-s".into(),
            "TERM".into(),
            format!("-{pgid}"),
        ];
        raw_exec(plain.engine().bollard(), &id, kill).await;
        p.wait().await.expect("wait");
        stop_raw += t.elapsed();
    }
    env.shutdown().await.expect("shutdown");
    plain.shutdown().await.expect("shutdown");
    let mut rows = vec![
        Row {
            name: "docker_stop_tree",
            ours: stop_ours.as_secs_f64(),
            baseline: stop_raw.as_secs_f64(),
            baseline_desc: "one raw bollard exec of `kill -s TERM -PGID`, until the exec ended",
            target: 1.5,
        },
        Row {
            name: "docker_stop_tree_helper",
            ours: stop_helped.as_secs_f64(),
            baseline: stop_native.as_secs_f64(),
            baseline_desc: "native stop of the same tree",
            target: 1.5,
        },
        Row {
            name: "docker_exec_run",
            ours: helped.as_secs_f64(),
            baseline: cli.as_secs_f64(),
            baseline_desc: "the `docker exec` CLI (ours through the helper)",
            target: 0.02,
        },
        Row {
            name: "docker_exec_vs_native",
            ours: helped.as_secs_f64(),
            baseline: host.as_secs_f64(),
            baseline_desc: "native spawn+wait of the same echo",
            target: 1.2,
        },
        Row {
            name: "docker_exec_throughput",
            ours: thr_helped.as_secs_f64(),
            baseline: thr_native.as_secs_f64(),
            baseline_desc: "native, the same busybox head: 100 MiB of stdout through a pipe",
            target: 1.5,
        },
        Row {
            name: "docker_exec_throughput_framed",
            ours: thr_framed.as_secs_f64(),
            baseline: thr_cli.as_secs_f64(),
            baseline_desc: "the `docker exec` CLI, same 100 MiB (ours framed through the engine's stream into a sink)",
            target: 1.2,
        },
        Row {
            name: "docker_exec_run_plain",
            ours: execs.as_secs_f64(),
            baseline: cli.as_secs_f64(),
            baseline_desc: "the `docker exec` CLI (ours as plain execs)",
            target: 0.75,
        },
        Row {
            name: "docker_exec_overhead",
            ours: execs.as_secs_f64(),
            baseline: raw.as_secs_f64(),
            baseline_desc: "raw bollard create_exec + start_exec + inspect_exec",
            target: 1.1,
        },
    ];
    let m = if quick { 5 } else { 20 };
    let engine = runner_docker::connect().await.expect("connect");
    let docker = engine.bollard().clone();
    let (mut ours, mut base, mut raw) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut no_helper = Duration::ZERO;
    // The four take turns going first: a removal the engine finishes in the
    // background is paid by whichever create follows it, so no side always pays.
    for i in 0..m {
        for step in 0..4 {
            match (i + step) % 4 {
                3 => {
                    let t = Instant::now();
                    let mut env = runner_docker::DockerEnvironment::new_headless(
                        image,
                        &format!("bench-init-plain-{i}"),
                    )
                    .await
                    .expect("env");
                    env.with_pause().with_exec_helper(false);
                    env.init().await.expect("init");
                    env.shutdown().await.expect("shutdown");
                    no_helper += t.elapsed();
                }
                0 => {
                    let t = Instant::now();
                    let name = format!("runner-bench-raw-{i}");
                    let created = docker
                        .create_container(
                            Some(bollard::query_parameters::CreateContainerOptions {
                                name: Some(name),
                                ..Default::default()
                            }),
                            bollard::models::ContainerCreateBody {
                                image: Some(image.to_string()),
                                cmd: Some(vec!["sleep".into(), "infinity".into()]),
                                ..Default::default()
                            },
                        )
                        .await
                        .expect("raw create");
                    docker
                        .start_container(&created.id, None)
                        .await
                        .expect("raw start");
                    docker
                        .remove_container(
                            &created.id,
                            Some(bollard::query_parameters::RemoveContainerOptions {
                                force: true,
                                ..Default::default()
                            }),
                        )
                        .await
                        .expect("raw remove");
                    raw += t.elapsed();
                }
                1 => {
                    let t = Instant::now();
                    let mut env = runner_docker::DockerEnvironment::new_headless(
                        image,
                        &format!("bench-init-{i}"),
                    )
                    .await
                    .expect("env");
                    env.with_pause();
                    env.init().await.expect("init");
                    env.shutdown().await.expect("shutdown");
                    ours += t.elapsed();
                }
                _ => {
                    let t = Instant::now();
                    let name = format!("runner-bench-cli-{i}");
                    let up = std::process::Command::new("docker")
                        .args(["run", "-d", "--name", &name, image, "sleep", "infinity"])
                        .output()
                        .expect("docker run");
                    let rm = std::process::Command::new("docker")
                        .args(["rm", "-f", &name])
                        .output()
                        .expect("docker rm");
                    base += t.elapsed();
                    assert!(up.status.success() && rm.status.success());
                }
            }
        }
    }
    rows.push(Row {
        name: "docker_init",
        ours: ours.as_secs_f64(),
        baseline: base.as_secs_f64(),
        baseline_desc: "`docker run -d` + `docker rm -f`",
        target: 0.9,
    });
    rows.push(Row {
        name: "docker_init_overhead",
        ours: ours.as_secs_f64(),
        baseline: raw.as_secs_f64(),
        baseline_desc: "raw bollard create + start + remove (force)",
        target: 1.05,
    });
    rows.push(Row {
        name: "docker_init_helper_cost",
        ours: ours.as_secs_f64(),
        baseline: no_helper.as_secs_f64(),
        baseline_desc: "the same init + shutdown with_exec_helper(false), nothing run",
        target: 1.05,
    });
    rows
}

async fn companion_rows(quick: bool) -> Vec<Row> {
    let dir = tempfile::tempdir().expect("tmp");
    let opts = runner_companion::CompanionOpts {
        name: "bench-detect".into(),
        source_dir: dir.path().to_path_buf(),
        image: Some("runner-test/busybox:latest".into()),
        preferred_backend: None,
        user: None,
    };
    let n = if quick { 10 } else { 50 };
    let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
    // Each side goes first in every other round: the engine's own background work (it
    // may still be cleaning up after the docker rows) falls on both alike.
    for round in 0..n {
        for ours_now in [round % 2 == 0, round % 2 == 1] {
            if ours_now {
                let t = Instant::now();
                let c = runner_companion::new_companion_runner(opts.clone())
                    .await
                    .expect("companion");
                ours += t.elapsed();
                assert_eq!(
                    runner_companion::CompanionRunner::backend(&c),
                    runner_core::Backend::Docker
                );
            } else {
                let t = Instant::now();
                let _env = runner_docker::DockerEnvironment::new(
                    "runner-test/busybox:latest",
                    dir.path(),
                    "bench-detect",
                )
                .await
                .expect("docker env");
                base += t.elapsed();
            }
        }
    }
    vec![Row {
        name: "companion_detect",
        ours: ours.as_secs_f64(),
        baseline: base.as_secs_f64(),
        baseline_desc: "constructing DockerEnvironment directly",
        target: 1.1,
    }]
}

/// Runs in a fresh process whose DOCKER_HOST points at a closed socket.
async fn detect_probe() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = Instant::now();
    let c = runner_companion::new_companion_runner(runner_companion::CompanionOpts {
        name: "probe".into(),
        source_dir: dir.path().to_path_buf(),
        image: Some("runner-test/busybox:latest".into()),
        preferred_backend: None,
        user: None,
    })
    .await
    .expect("companion");
    let elapsed = t.elapsed().as_secs_f64();
    assert_eq!(
        runner_companion::CompanionRunner::backend(&c),
        runner_core::Backend::Native
    );
    println!("{elapsed}");
}

fn companion_engine_down() -> Row {
    // A socket that exists and never answers: the slow case for detection.
    let dir = tempfile::tempdir().expect("tmp");
    let sock = dir.path().join("docker.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("--detect-probe")
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .output()
        .expect("probe");
    let secs: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(f64::NAN);
    Row {
        name: "companion_detect_engine_down",
        ours: secs,
        baseline: 0.3,
        baseline_desc: "budget: 300 ms to fall back to native (engine not answering)",
        target: 1.0,
    }
}

/// Pulls of a multi-layer image from a registry on 127.0.0.1 that needs a login:
/// ours (credentials from `DOCKER_CONFIG`, per-layer progress computed for every
/// message) against `docker pull` with the same configuration, alternating which
/// goes first, the image removed before every pull.
async fn docker_pull_rows(quick: bool) -> Vec<Row> {
    use runner_tests::registry::{LocalRegistry, PASSWORD};
    if let Some(why) = LocalRegistry::unavailable() {
        eprintln!("docker_pull_local_registry SKIPPED: {why}");
        return Vec::new();
    }
    let registry = LocalRegistry::start().expect("registry");
    let image = registry
        .push_layered_image("bench-pull", 4, 8 << 20)
        .expect("push");
    let config = registry.docker_config("bench", &registry.auths_json(PASSWORD));
    std::env::set_var("DOCKER_CONFIG", &config);
    let docker = runner_docker::connect().await.expect("connect");
    let rounds = if quick { 3 } else { 8 };
    let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        for side in [round % 2, 1 - round % 2] {
            registry.remove_local(&image);
            let t = Instant::now();
            if side == 0 {
                let mut seen = 0u64;
                runner_docker::get_image_if_not_present(&docker, &image, |p| {
                    seen = seen.max(p.downloaded().0);
                })
                .await
                .expect("our pull");
                ours += t.elapsed();
            } else {
                let out = std::process::Command::new("docker")
                    .args(["pull", &image])
                    .output()
                    .expect("docker pull");
                base += t.elapsed();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    registry.remove_local(&image);
    std::env::remove_var("DOCKER_CONFIG");
    vec![Row {
        name: "docker_pull_local_registry",
        ours: ours.as_secs_f64(),
        baseline: base.as_secs_f64(),
        baseline_desc: "`docker pull` (same registry, same login), image removed before each",
        target: 1.05,
    }]
}

/// Every row's name.
const ROWS: &[&str] = &[
    "cli_overhead",
    "cli_overhead_vs_timeout",
    "cli_peak_rss",
    "cli_300_live_records",
    "cli_10k_stale_records",
    "scale_300_alive_native",
    "scale_300_alive_helper",
    "scale_20_envs_native",
    "scale_20_envs_docker",
    "native_spawn_wait",
    "native_spawn_wait_portable",
    "forward_throughput",
    "forward_long_line_memory",
    "reap_1000_dead_records",
    "reap_50_live_groups_vs_kill",
    "reap_50_slow_exit_groups",
    "docker_pull_local_registry",
    "docker_exec_run",
    "docker_exec_run_plain",
    "docker_exec_overhead",
    "docker_exec_vs_native",
    "docker_exec_throughput",
    "docker_exec_throughput_framed",
    "docker_stop_tree",
    "docker_stop_tree_helper",
    "docker_init",
    "docker_init_overhead",
    "docker_init_helper_cost",
    "companion_detect",
    "docker_exec_run_ssh",
    "remote_sync_initial",
    "remote_sync_edit_latency",
    "remote_tunnel_throughput",
    "lsp_round_trip_native",
    "lsp_round_trip_docker",
    "docker_time_to_initialize",
    "companion_detect_engine_down",
    "nix_materialized_run",
    "nix_wrapped_vs_materialized",
    "nix_cached_init",
    "nix_cached_init_with_inputs",
];

/// The rows `docker_rows` measures together.
const DOCKER_ROWS: &str = "docker_exec_run docker_exec_run_plain docker_exec_overhead docker_exec_vs_native docker_exec_throughput docker_exec_throughput_framed docker_stop_tree docker_stop_tree_helper docker_init docker_init_overhead docker_init_helper_cost";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    if args.first().map(String::as_str) == Some("--detect-probe") {
        rt.block_on(detect_probe());
        return;
    }
    if args.first().map(String::as_str) == Some("--portable-spawn-probe") {
        // Run with RUNNER_SPAWN=portable: both sides measured in this one process.
        assert!(
            runner_native::uses_portable_spawn(),
            "the probe must run on the portable spawn path"
        );
        let state = tempfile::tempdir().expect("state dir");
        let n = args[1].parse().expect("count");
        let row = rt.block_on(native_spawn_wait(n, state.path()));
        println!("{} {}", row.ours, row.baseline);
        return;
    }
    if args.first().map(String::as_str) == Some("--rss-probe") {
        rss_probe(&args[1..]);
        return;
    }
    if args.first().map(String::as_str) == Some("--memory-probe") {
        rt.block_on(memory_probe(PathBuf::from(&args[1])));
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // Any other argument selects rows: a row's whole name that row alone, another
    // beginning of names every row it begins. Only the groups of selected rows run.
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    if let Some(unknown) = filters
        .iter()
        .find(|f| !ROWS.iter().any(|r| r.starts_with(**f)))
    {
        eprintln!(
            "no row begins with `{unknown}`; the rows: {}",
            ROWS.join(" ")
        );
        std::process::exit(2);
    }
    let selected = |row: &str| {
        filters.is_empty()
            || filters
                .iter()
                .any(|f| *f == row || (!ROWS.contains(f) && row.starts_with(*f)))
    };
    let want = |group: &str| group.split_whitespace().any(selected);
    let state = tempfile::tempdir().expect("state dir");
    let state_path = state.path().to_path_buf();
    let mut rows = Vec::new();
    let (spawns, bytes, rounds) = if quick {
        (200, 256 << 20, 2)
    } else {
        (1000, 1 << 30, 3)
    };
    if want("cli_overhead cli_overhead_vs_timeout") {
        rows.extend(cli_overhead(if quick { 20 } else { 100 }, &state_path));
    }
    if want("cli_peak_rss") {
        rows.push(cli_peak_rss(&state_path));
    }
    if want("native_spawn_wait") {
        rows.push(rt.block_on(native_spawn_wait(spawns, &state_path)));
    }
    if want("native_spawn_wait_portable") {
        rows.push(native_spawn_wait_portable(spawns));
    }
    if want("forward_throughput") {
        rows.push(rt.block_on(forward_throughput(bytes, rounds, &state_path)));
    }
    if want("forward_long_line_memory") {
        rows.push(forward_long_line_memory(&state_path));
    }
    if want("reap_1000_dead_records") {
        rows.push(reap_dead_records(
            if quick { 300 } else { 1000 },
            if quick { 1 } else { 3 },
        ));
    }
    let reap_rounds = if quick { 2 } else { 5 };
    if want("reap_50_live_groups_vs_kill") {
        rows.extend(reap_live_groups(50, reap_rounds));
    }
    if want("reap_50_slow_exit_groups") {
        rows.push(reap_slow_exit_groups(50, reap_rounds));
    }
    if want(DOCKER_ROWS) || want("companion_detect docker_pull_local_registry") {
        if rt.block_on(runner_docker::docker_engine_running(Duration::from_secs(2))) {
            if want("docker_pull_local_registry") {
                rows.extend(rt.block_on(docker_pull_rows(quick)));
            }
            if want(DOCKER_ROWS) {
                rows.extend(rt.block_on(docker_rows(quick)));
            }
            if want("companion_detect") {
                rows.extend(rt.block_on(companion_rows(quick)));
            }
        } else {
            eprintln!("docker rows SKIPPED: no Docker engine answers");
        }
    }
    if want("docker_exec_run_ssh") {
        rows.extend(rt.block_on(docker_ssh_rows(quick)));
    }
    if want("remote_sync_initial remote_sync_edit_latency") {
        rows.extend(rt.block_on(remote_sync_rows(quick)));
    }
    if want("remote_tunnel_throughput")
        && rt.block_on(runner_docker::docker_engine_running(Duration::from_secs(2)))
    {
        rows.extend(rt.block_on(docker_tunnel_rows(quick)));
    }
    if want("lsp_round_trip_native lsp_round_trip_docker docker_time_to_initialize") {
        let docker = rt.block_on(runner_docker::docker_engine_running(Duration::from_secs(2)));
        if !docker {
            eprintln!("lsp docker rows SKIPPED: no Docker engine answers");
        }
        rows.extend(lsp_rows(quick, &state_path, docker));
    }
    let scale = "scale_300_alive_native scale_300_alive_helper scale_20_envs_native scale_20_envs_docker cli_300_live_records cli_10k_stale_records";
    if want(scale) {
        let docker = rt.block_on(runner_docker::docker_engine_running(Duration::from_secs(2)));
        if !docker && want("scale_300_alive_helper scale_20_envs_docker") {
            eprintln!("scale docker rows SKIPPED: no Docker engine answers");
        }
        rows.extend(rt.block_on(scale_rows(quick, &state_path, docker, &want)));
    }
    if want("companion_detect_engine_down") {
        rows.push(companion_engine_down());
    }
    if want("nix_materialized_run nix_wrapped_vs_materialized nix_cached_init") {
        if runner_nix::check_nix_installed() {
            rows.extend(rt.block_on(nix_rows(quick, &state_path)));
        } else {
            eprintln!("nix rows SKIPPED: nix is not installed");
        }
    }

    // Rows measured together with a selected one but not selected themselves.
    rows.retain(|r| selected(r.name));
    let out_dir = std::env::var_os("RUNNER_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/bench"));
    std::fs::create_dir_all(&out_dir).expect("bench dir");
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "ours_s": r.ours,
                "baseline_s": r.baseline,
                "ratio": r.ours / r.baseline,
                "baseline": r.baseline_desc,
            })
        })
        .collect();
    let path = out_dir.join("results.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&json).expect("json")).expect("write results");

    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<26} {:>10} {:>11} {:>7} {:>7}  baseline",
        "name", "ours_s", "baseline_s", "ratio", "target"
    );
    for r in &rows {
        let ratio = r.ours / r.baseline;
        let verdict = if ratio <= r.target { "ok" } else { "MISSED" };
        let _ = writeln!(
            out,
            "{:<26} {:>10.4} {:>11.4} {:>7.3} {:>5}{:>2}  {} {}",
            r.name, r.ours, r.baseline, ratio, "<=", r.target, r.baseline_desc, verdict
        );
    }
    let _ = writeln!(out, "results: {}", path.display());
}

/// How cost grows with the work: a process started with 300 others alive against
/// with 1 (natively and through one helper); a process started in one of 20 live
/// environments against in the only one; `runner run` with a ledger full of others'
/// records against an empty one.
async fn scale_rows(
    quick: bool,
    state: &std::path::Path,
    docker: bool,
    want: &dyn Fn(&str) -> bool,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let k = if quick { 40 } else { 200 };
    let rounds = if quick { 2 } else { 3 };
    let many = 300;
    let native_state = state.join("scale-native");
    let native = env_in(&native_state);
    let mut helper_env = None;
    // A paused busybox container with its helper running.
    async fn helped(name: &str) -> runner_docker::DockerEnvironment {
        let mut env =
            runner_docker::DockerEnvironment::new_headless("runner-test/busybox:latest", name)
                .await
                .expect("docker env");
        env.with_pause();
        env.init().await.expect("init");
        assert!(env.exec_helper().await.is_ok(), "the helper");
        env
    }
    if docker && want("scale_300_alive_helper scale_20_envs_docker") {
        helper_env = Some(helped("bench-scale").await);
    }
    // A row's name for the target measured.
    fn by(which: &str, native: &'static str, helper: &'static str) -> &'static str {
        if which == "native" {
            native
        } else {
            helper
        }
    }
    // One echo, its output dropped: the process started, run and waited for.
    async fn one(e: &dyn RunnerEnvironment) -> Duration {
        let t = Instant::now();
        let mut p = e.new_process("echo", &["hi"]).await.expect("proc");
        p.with_output(Arc::new(runner_core::NullSink));
        assert!(p.run().await.expect("run").success());
        t.elapsed()
    }
    async fn sleepers(e: &dyn RunnerEnvironment, n: usize) -> Vec<runner_core::Running> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let mut p = e.new_process("sleep", &["600"]).await.expect("proc");
            p.with_output(Arc::new(runner_core::NullSink));
            out.push(p.start().await.expect("start"));
        }
        out
    }
    let runner = runner_cli();
    let cli = |state: &std::path::Path| runner_true(&runner, state);
    let empty = tempfile::tempdir().expect("empty state");
    let mut targets: Vec<(&'static str, &dyn RunnerEnvironment)> = vec![("native", &native)];
    if let Some(env) = &helper_env {
        targets.push(("helper", env));
    }
    if want("scale_300_alive_native scale_300_alive_helper cli_300_live_records") {
        for (which, e) in targets.iter().copied() {
            if which == "helper" && !want("scale_300_alive_helper") {
                continue;
            }
            let (mut few, mut lots, mut cli_empty, mut cli_full) = (
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
            );
            let base = sleepers(e, 1).await;
            for _ in 0..rounds {
                for _ in 0..k {
                    few += one(e).await;
                }
                let rest = sleepers(e, many - 1).await;
                for _ in 0..k {
                    lots += one(e).await;
                }
                if which == "native" {
                    // `runner run` beside a runner with 300 processes: their records
                    // are in the ledger it sweeps at start-up.
                    for _ in 0..k / 4 {
                        cli_empty += cli(empty.path());
                        cli_full += cli(&native_state);
                    }
                }
                for r in rest {
                    r.stop().await.expect("stop");
                }
            }
            for r in base {
                r.stop().await.expect("stop");
            }
            rows.push(Row {
                name: by(which, "scale_300_alive_native", "scale_300_alive_helper"),
                ours: lots.as_secs_f64(),
                baseline: few.as_secs_f64(),
                baseline_desc: "the same echo with 1 process alive, not 300 (per process started)",
                target: 1.5,
            });
            if which == "native" {
                rows.push(Row {
                    name: "cli_300_live_records",
                    ours: cli_full.as_secs_f64(),
                    baseline: cli_empty.as_secs_f64(),
                    baseline_desc: "`runner run -- true` with an empty ledger (ours: 300 live records of another runner)",
                    target: 1.2,
                });
            }
        }
    }
    if want("scale_20_envs_native scale_20_envs_docker") {
        for (which, first) in targets.iter().copied() {
            if which == "helper" && !want("scale_20_envs_docker") {
                continue;
            }
            let mut others: Vec<Box<dyn RunnerEnvironment>> = Vec::new();
            for i in 1..20 {
                if which == "native" {
                    others.push(Box::new(env_in(&native_state)));
                } else {
                    others.push(Box::new(helped(&format!("bench-scale-{i}")).await));
                }
            }
            let (mut alone, mut spread) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..rounds {
                for i in 0..k {
                    alone += one(first).await;
                    let e: &dyn RunnerEnvironment = if i % 20 == 0 {
                        first
                    } else {
                        others[i % 20 - 1].as_ref()
                    };
                    spread += one(e).await;
                }
            }
            for e in others {
                e.shutdown().await.expect("shutdown");
            }
            rows.push(Row {
                name: by(which, "scale_20_envs_native", "scale_20_envs_docker"),
                ours: spread.as_secs_f64(),
                baseline: alone.as_secs_f64(),
                baseline_desc: "every process in one environment (ours: spread over 20 live ones)",
                target: 1.3,
            });
        }
    }
    if let Some(env) = helper_env {
        env.shutdown().await.expect("shutdown");
    }
    if want("cli_10k_stale_records") {
        // 10,000 records of a dead owner whose groups are gone, planted before each
        // run: the start-up sweep judges and removes every one.
        let me = std::process::id() as i32;
        let template = Record::for_group(me, me, vec!["x".into()], "/".into()).expect("record");
        let owner = dead_pid();
        let (mut full, mut clean) = (Duration::ZERO, Duration::ZERO);
        let stale = tempfile::tempdir().expect("stale state");
        let ledger = Ledger::at(stale.path());
        for _ in 0..(if quick { 3 } else { 10 }) {
            for i in 0..10_000 {
                let mut r = template.clone();
                // Above any pid_max: no such group.
                r.pgid = 5_000_000 + i;
                r.leader_pid = r.pgid;
                r.owner_pid = owner;
                ledger.write_record(&r).expect("write");
            }
            clean += cli(empty.path());
            full += cli(stale.path());
        }
        rows.push(Row {
            name: "cli_10k_stale_records",
            ours: full.as_secs_f64(),
            baseline: clean.as_secs_f64(),
            baseline_desc: "`runner run -- true` with an empty ledger (ours: 10,000 stale records to sweep first)",
            target: 1.2,
        });
    }
    rows
}
