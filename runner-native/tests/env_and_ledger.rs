//! Native backend: env and ledger behaviour, tested from the outside with real processes.
mod common;

use std::path::Path;

use common::{within, Fixture};
use runner_core::{EnvironmentVariable, RunnerEnvironment};
use runner_reaper::Ledger;

fn var(k: &str, v: &str) -> EnvironmentVariable {
    EnvironmentVariable::new(k, v).unwrap()
}

#[tokio::test]
async fn env_layers_host_then_environment_then_process() {
    let mut fx = Fixture::new();
    fx.env.with_env_vars(vec![
        var("RUNNER_T_ENV", "env"),
        var("RUNNER_T_BOTH", "env"),
        var("HOME", "/env-home"),
    ]);
    let script = "printf '%s|%s|%s|%s|%s\\n' \"$RUNNER_T_ENV\" \"$RUNNER_T_BOTH\" \"$HOME\" \"$RUNNER_T_MULTI\" \"$PATH\"";
    let (mut p, cap) = fx.sh(script).await;
    p.with_env_vars(vec![
        var("RUNNER_T_BOTH", "proc"),
        var("RUNNER_T_MULTI", "line1\nline2=x"),
    ]);
    p.with_env_var_append(var("PATH", "/appended"), ":");
    p.with_env_var_prepend(var("PATH", "/prepended"), ":");
    assert!(p.run().await.unwrap().success());
    let host_path = std::env::var("PATH").unwrap();
    assert_eq!(
        cap.stdout_string(),
        format!("env|proc|/env-home|line1\nline2=x|/prepended:{host_path}:/appended\n")
    );
}

#[tokio::test]
async fn with_dir_is_relative_to_the_environment_dir() {
    let fx = Fixture::new();
    std::fs::create_dir(fx.work().join("sub")).unwrap();
    let (mut p, cap) = fx.sh("pwd").await;
    p.with_dir(Path::new("sub"));
    p.run().await.unwrap();
    assert_eq!(
        cap.stdout_string().trim(),
        fx.work().join("sub").to_str().unwrap()
    );
}

#[tokio::test]
async fn the_group_is_registered_before_the_program_runs_and_removed_after() {
    let fx = Fixture::new();
    // The program itself checks that its record exists when it starts: its own on
    // the clone path; on the portable path at least the pending record that names
    // its group's token (completed with its pid right after the spawn).
    let runs = fx.state().join("runs");
    let check = if common::portable_spawn() {
        format!(
            // Pending first: completing renames the pending record to `$$.<owner>.json`.
            "{{ grep -qs \"\\\"$RUNNER_GROUP_TOKEN\\\"\" {0}/pending-*.json || ls {0}/$$.*.json; }} >/dev/null",
            runs.display()
        )
    } else {
        format!("ls {}/$$.*.json >/dev/null", runs.display())
    };
    let script = format!("{check} && echo registered");
    let (p, cap) = fx.sh(&script).await;
    let p = p.start().await.unwrap();
    let pid = p.pid().unwrap() as i32;
    let record = Ledger::at(fx.state()).read_record(pid).unwrap();
    // Either we caught it running (record present, describing it) or it already ended.
    if let Some(r) = record {
        assert_eq!((r.pgid, r.leader_pid), (pid, pid));
        assert_eq!(r.owner_pid, std::process::id() as i32);
        assert_eq!(r.argv[0], "sh");
        assert_eq!(r.cwd, fx.work());
    }
    assert!(within(10, p.wait()).await.unwrap().success());
    assert_eq!(cap.stdout_string(), "registered\n");
    assert!(fx.records().is_empty(), "{:?}", fx.records());
}

#[tokio::test]
async fn each_process_leads_its_own_group() {
    let fx = Fixture::new();
    let (p, cap) = fx.sh("cut -d' ' -f5 /proc/$$/stat; echo $$").await;
    p.run().await.unwrap();
    let out = cap.stdout_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], lines[1], "pgid differs from pid");
    assert_ne!(lines[0].parse::<u32>().unwrap(), std::process::id());
}

#[tokio::test]
async fn two_hundred_processes_at_once() {
    let fx = Fixture::new();
    let mut procs = Vec::new();
    for i in 0..200 {
        let (p, cap) = fx.sh(&format!("echo proc-{i}")).await;
        let p = p.start().await.unwrap();
        procs.push((i, p, cap));
    }
    let results = futures_wait(procs).await;
    for (i, ok, out) in results {
        assert!(ok, "process {i} failed");
        assert_eq!(out, format!("proc-{i}\n"));
    }
    assert!(
        fx.records().is_empty(),
        "{} records left",
        fx.records().len()
    );
}

async fn futures_wait(
    procs: Vec<(
        usize,
        runner_core::Running,
        std::sync::Arc<runner_core::CaptureSink>,
    )>,
) -> Vec<(usize, bool, String)> {
    let mut set = tokio::task::JoinSet::new();
    for (i, p, cap) in procs {
        set.spawn(async move {
            let ok = p.wait().await.unwrap().success();
            (i, ok, cap.stdout_string())
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

#[tokio::test]
async fn records_carry_the_leaders_exact_start_time() {
    let fx = Fixture::new();
    let ledger = Ledger::at(fx.state());
    let mut procs = Vec::new();
    for _ in 0..40 {
        let p = fx.env.new_process("sleep", &["30"]).await.unwrap();
        let p = p.start().await.unwrap();
        procs.push(p);
    }
    for p in &procs {
        let pid = p.pid().unwrap() as i32;
        let record = ledger.read_record(pid).unwrap().expect("a record");
        assert_eq!(
            record.leader_start_time,
            runner_reaper::ledger::start_time(pid).unwrap(),
            "pid {pid}"
        );
    }
    within(10, fx.env.stop()).await.unwrap();
    assert!(fx.records().is_empty(), "{:?}", fx.records());
}

#[tokio::test]
async fn record_files_are_reused_and_gone_with_the_environment() {
    let fx = Fixture::new();
    for _ in 0..5 {
        let p = fx.env.new_process("true", &[]).await.unwrap();
        assert!(within(10, p.run()).await.unwrap().success());
    }
    // One file went round: each group's record became the next group's (on the
    // portable path, its pending record first).
    let spares: Vec<String> = fx
        .files()
        .into_iter()
        .filter(|f| f.starts_with(".spare-"))
        .collect();
    assert_eq!(spares.len(), 1, "{:?}", fx.files());
    assert!(fx.records().is_empty());
    let Fixture { tmp, env } = fx;
    drop(env);
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("state/runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Several environments of one process share the ledger (an LSP host with a server
/// per project): each keeps spare record files under this process's name, and no
/// environment's spare is another's, however their spawns interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn environments_of_one_process_never_take_each_others_spares() {
    let fx = Fixture::new();
    let envs: Vec<std::sync::Arc<runner_native::NativeEnvironment>> = (0..4)
        .map(|_| {
            let mut env = runner_native::NativeEnvironment::new(fx.work()).unwrap();
            env.with_state_dir(fx.state());
            std::sync::Arc::new(env)
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (e, env) in envs.iter().enumerate() {
        let env = std::sync::Arc::clone(env);
        tasks.spawn(async move {
            for i in 0..150 {
                let mut p = env.new_process("true", &[]).await.unwrap();
                p.with_output(std::sync::Arc::new(runner_core::NullSink));
                let status = p.run().await;
                assert!(
                    matches!(&status, Ok(s) if s.success()),
                    "environment {e}, run {i}: {status:?}"
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    drop(envs);
    assert!(fx.records().is_empty(), "{:?}", fx.records());
}
