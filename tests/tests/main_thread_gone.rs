//! A process whose main thread has exited while other threads run (`Zl` in `ps`) is
//! alive, though `/proc` gives its state as `Z`: as a group's leader it is reaped, as an
//! owner it keeps its groups from being reaped.
#![cfg(target_os = "linux")]

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use runner_reaper::ledger::start_time;
use runner_reaper::{Ledger, Record};

/// A child leading its own group; the group is SIGKILLed when this is dropped, so a
/// failing test leaves nothing running.
struct Group(Child);

impl Group {
    fn start(cmd: &mut Command) -> Group {
        Group(
            cmd.process_group(0)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    fn wait(mut self) -> ExitStatus {
        self.0.wait().unwrap()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

/// A `main-thread-gone` process leading its own group, its main thread already gone.
fn main_thread_gone() -> Group {
    let mut g = Group::start(&mut Command::new(env!("CARGO_BIN_EXE_main-thread-gone")));
    let mut buf = [0u8; 6];
    g.0.stdout.take().unwrap().read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    let stat = procfs::process::Process::new(g.pid())
        .unwrap()
        .stat()
        .unwrap();
    assert_eq!((stat.state, stat.num_threads), ('Z', 2));
    g
}

/// A record of `leader`'s group owned by `owner` (its start time when it is alive).
fn record(leader: &Group, owner: i32) -> Record {
    let mut r =
        Record::for_group(leader.pid(), leader.pid(), vec!["x".into()], "/".into()).unwrap();
    r.owner_pid = owner;
    r.owner_start_time = start_time(owner).unwrap_or(1);
    r
}

fn dead_pid() -> i32 {
    let mut c = Command::new("true").spawn().unwrap();
    c.wait().unwrap();
    c.id() as i32
}

#[test]
fn a_leader_whose_main_thread_exited_is_reaped() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::at(tmp.path());
    let leader = main_thread_gone();
    ledger.write_record(&record(&leader, dead_pid())).unwrap();
    let report = ledger.reap_stale(Duration::from_secs(20), Duration::from_secs(5));
    assert_eq!(report.reaped.len(), 1, "{report}");
    assert!(report.removed.is_empty(), "{report}");
    assert_eq!(leader.wait().signal(), Some(15));
}

#[test]
fn an_owner_whose_main_thread_exited_protects_its_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::at(tmp.path());
    let owner = main_thread_gone();
    let mut group = Group::start(Command::new("sleep").arg("300"));
    ledger.write_record(&record(&group, owner.pid())).unwrap();
    let report = ledger.reap_stale(Duration::from_secs(20), Duration::from_secs(5));
    assert_eq!(report.live, 1, "{report}");
    assert!(report.reaped.is_empty(), "{report}");
    assert_eq!(group.0.try_wait().unwrap(), None, "the group was signalled");
}
