//! A process whose main thread has exited while another thread runs on (`ps` shows
//! `Zl`): `/proc` gives its state as `Z`, yet it is alive. Prints `ready` once the main
//! thread is gone, then sleeps until it is killed (five minutes at most).

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!(
        "main-thread-gone: Linux only (it reads /proc and ends its main thread with SYS_exit)"
    );
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
fn main() {
    use std::io::Write;
    use std::time::Duration;

    std::thread::spawn(|| {
        // The main thread's exit has no event to wait on; it is a matter of
        // microseconds, so look until /proc shows it.
        loop {
            let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            if state == Some('Z') {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
        std::thread::sleep(Duration::from_secs(300));
        std::process::exit(0);
    });
    // SAFETY: the raw exit system call ends only the calling thread; nothing on this
    // thread is used afterwards.
    unsafe { nix::libc::syscall(nix::libc::SYS_exit, 0) };
}
