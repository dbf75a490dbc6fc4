//! A ledger owner for the reaper tests: starts process trees through
//! `NativeEnvironment`, prints `ready` once they all run, then sleeps until killed.
//!
//! `reap-helper top DIR`: a plain tree, a tree that ignores SIGTERM and a nested owner
//! (`reap-helper nested 2 DIR`), which itself starts a tree and `nested 1`.
//! Every process of every tree appends its pid to `DIR/pids`. With
//! `HELPER_DOCKER_IMAGE` set, `top` also starts two paused containers (the first
//! ephemeral, the second reusable).

use runner_core::{RunnerEnvironment, Running};
use runner_native::NativeEnvironment;
use tokio::io::AsyncBufReadExt;

async fn start_ready(env: &NativeEnvironment, bin: &str, args: &[&str]) -> Running {
    let mut p = env.new_process(bin, args).await.expect("new process");
    let out = p.stdout_pipe().expect("stdout pipe");
    let p = p.start().await.expect("start");
    let mut lines = tokio::io::BufReader::new(out).lines();
    let line = lines.next_line().await.expect("read").unwrap_or_default();
    assert_eq!(line, "ready", "{bin} did not get ready");
    // Keep the pipe drained so the tree never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    p
}

const PLAIN: &str = "sleep 300 & echo $! >> pids; echo $$ >> pids; echo ready; wait";
const STUBBORN: &str =
    "trap '' TERM; sleep 300 & echo $! >> pids; echo $$ >> pids; echo ready; wait";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let me = std::env::current_exe().expect("current exe");
    let me = me.to_str().expect("utf-8 path");
    let (mode, level, dir) = match args.get(1).map(String::as_str) {
        Some("top") => ("top", 2, args[2].clone()),
        Some("nested") => (
            "nested",
            args[2].parse::<u32>().expect("level"),
            args[3].clone(),
        ),
        _ => {
            eprintln!("usage: reap-helper top DIR | reap-helper nested N DIR");
            std::process::exit(2);
        }
    };
    let env = NativeEnvironment::new(&dir).expect("environment");
    std::fs::write(
        format!("{dir}/owner-{mode}-{level}"),
        std::process::id().to_string(),
    )
    .expect("write pid");
    let mut keep = vec![start_ready(&env, "sh", &["-c", PLAIN]).await];
    if mode == "top" {
        keep.push(start_ready(&env, "sh", &["-c", STUBBORN]).await);
    }
    if mode == "top" || level > 1 {
        let next = if mode == "top" { level } else { level - 1 };
        let next = next.to_string();
        keep.push(start_ready(&env, me, &["nested", &next, &dir]).await);
    }
    // With an image, the top owner also runs two paused containers.
    let mut containers = Vec::new();
    if mode == "top" {
        if let Ok(image) = std::env::var("HELPER_DOCKER_IMAGE") {
            for i in 0..2 {
                let name = format!("reap-helper-{}-{i}", std::process::id());
                let mut env = runner_docker::DockerEnvironment::new_headless(&image, &name)
                    .await
                    .expect("docker env");
                // The first ephemeral (removed by the sweep), the second reusable
                // (stopped and kept for the next run).
                env.with_pause();
                if i == 0 {
                    // Without the helper, which would stop it when this owner dies:
                    // the sweep is what removes it here.
                    env.with_ephemeral().with_exec_helper(false);
                }
                env.init().await.expect("container");
                containers.push(env);
            }
        }
    }
    println!("ready");
    // Killed by the test (top) or by the sweep (nested).
    std::future::pending::<()>().await;
}
