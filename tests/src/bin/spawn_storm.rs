//! Test helper: spawns short processes through the native backend while its driver
//! storms this helper's process group with a signal.
//!
//! `spawn-storm storm N`: handles SIGTSTP and SIGUSR1 (so the helper itself is neither
//! stopped nor killed), prints `ready`, spawns `true` N times one after another, and
//! prints `started=S died=D wrong=W` where D counts spawns that failed because the
//! child died before exec (a signal that reached it while it was still in this group)
//! and W counts anything else: a started process whose status is not 0, or any other
//! error. Exits 0 when W is 0.
//!
//! `spawn-storm ignore-sigchld`: sets SIGCHLD to SIG_IGN and prints the spawn error.

use std::sync::Arc;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use runner_core::{NullSink, RunnerEnvironment};
use runner_native::NativeEnvironment;

extern "C" fn nothing(_: i32) {}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let state = std::env::var("RUNNER_STATE_DIR").expect("RUNNER_STATE_DIR");
    let mut env = NativeEnvironment::new("/").unwrap();
    env.with_state_dir(state);
    match args.first().map(String::as_str) {
        Some("ignore-sigchld") => {
            let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
            // SAFETY: no handler is installed.
            unsafe { sigaction(Signal::SIGCHLD, &ignore) }.unwrap();
            match env.new_process("true", &[]).await.unwrap().start().await {
                Ok(_) => println!("started"),
                Err(e) => println!("error: {}", e.chain()),
            }
        }
        Some("storm") => {
            let n: usize = args[1].parse().unwrap();
            let handler = SigAction::new(
                SigHandler::Handler(nothing),
                SaFlags::SA_RESTART,
                SigSet::empty(),
            );
            for sig in [Signal::SIGTSTP, Signal::SIGUSR1] {
                // SAFETY: the handler does nothing.
                unsafe { sigaction(sig, &handler) }.unwrap();
            }
            println!("ready");
            let (mut started, mut died, mut wrong) = (0, 0, 0);
            for _ in 0..n {
                let mut p = env.new_process("true", &[]).await.unwrap();
                p.with_output(Arc::new(NullSink));
                match p.start().await {
                    Ok(running) => match running.wait().await {
                        Ok(s) if s.success() => started += 1,
                        other => {
                            eprintln!("started, then: {other:?}");
                            wrong += 1;
                        }
                    },
                    Err(e) if e.chain().contains("died before it could run") => died += 1,
                    Err(e) => {
                        eprintln!("spawn error: {}", e.chain());
                        wrong += 1;
                    }
                }
            }
            env.shutdown().await.unwrap();
            // The ledger's spare record files go with the environment.
            drop(env);
            println!("started={started} died={died} wrong={wrong}");
            std::process::exit(i32::from(wrong != 0));
        }
        _ => panic!("usage: spawn-storm storm N | ignore-sigchld"),
    }
}
