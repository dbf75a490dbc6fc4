//! The sweep against real orphaned process groups and hostile records.
#![cfg(target_os = "linux")]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use runner_reaper::ledger::start_time;
use runner_reaper::{Ledger, Record};

/// Read here, not through the reaper's own `is_running`: the oracle of these tests must
/// not share the code it checks.
fn alive(pid: i32) -> bool {
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.state != 'Z')
}

/// A pid that belonged to a process that is gone now.
fn dead_pid() -> i32 {
    let mut c = Command::new("true").spawn().unwrap();
    c.wait().unwrap();
    c.id() as i32
}

/// `sh -c script` leading its own group, with a "ready" handshake.
fn group(script: &str) -> Child {
    let mut child = Command::new("sh")
        .args(["-c", &format!("{script} & echo ready; wait")])
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    child
}

/// A record for `child`'s group whose owner is dead.
fn orphan_record(child: &Child) -> Record {
    let pid = child.id() as i32;
    let mut r = Record::for_group(pid, pid, vec!["sh".into()], "/".into()).unwrap();
    r.owner_pid = dead_pid();
    r
}

fn records(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect()
}

fn finish(mut c: Child) -> std::process::ExitStatus {
    c.wait().unwrap()
}

#[test]
fn orphaned_groups_are_reaped_and_live_owners_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::at(tmp.path());
    let orphan = group("sleep 300");
    ledger.write_record(&orphan_record(&orphan)).unwrap();
    // Owned by us, alive: not touched.
    let owned = group("sleep 300");
    let pid = owned.id() as i32;
    ledger
        .write_record(&Record::for_group(pid, pid, vec![], "/".into()).unwrap())
        .unwrap();

    let report = ledger.reap_stale(Duration::from_secs(20), Duration::from_secs(5));
    assert_eq!(report.reaped.len(), 1, "{report}");
    assert_eq!(report.reaped[0].pgid, orphan.id() as i32);
    assert!(!report.reaped[0].killed);
    assert_eq!(report.live, 1);
    assert!(report.errors.is_empty(), "{report}");
    assert_eq!(finish(orphan).code(), None);
    assert!(alive(pid));
    let me = runner_core::os::owner_identity().unwrap();
    assert_eq!(
        records(tmp.path()),
        vec![format!("{pid}.{}-{}.json", me.pid, me.start_time)]
    );
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    finish(owned);
}

#[test]
fn a_leader_that_ignores_sigterm_is_killed_after_the_grace() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::at(tmp.path());
    let stubborn = group("trap '' TERM; while :; do sleep 1; done");
    ledger.write_record(&orphan_record(&stubborn)).unwrap();
    let report = ledger.reap_stale(Duration::from_secs(20), Duration::from_millis(300));
    assert_eq!(report.reaped.len(), 1, "{report}");
    assert!(report.reaped[0].killed);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(finish(stubborn).signal(), Some(9));
    assert!(records(tmp.path()).is_empty());
}

/// Live members of `pgid` (zombies are not).
fn members(pgid: i32) -> Vec<i32> {
    procfs::process::all_processes()
        .unwrap()
        .filter_map(|p| p.ok()?.stat().ok())
        .filter(|s| s.pgrp == pgid && s.state != 'Z')
        .map(|s| s.pid)
        .collect()
}

#[test]
fn members_the_sweep_did_not_know_of_are_found_and_ended() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::at(tmp.path());
    // On SIGTERM a member starts a new process in the group and exits: the processes
    // the sweep saw all end, yet the group does not.
    let forker = group("trap 'sleep 300 &' TERM; sleep 300");
    let pgid = forker.id() as i32;
    ledger.write_record(&orphan_record(&forker)).unwrap();
    let report = ledger.reap_stale(Duration::from_secs(20), Duration::from_millis(300));
    assert_eq!(report.reaped.len(), 1, "{report}");
    assert!(report.reaped[0].killed, "{report}");
    assert_eq!(members(pgid), Vec::<i32>::new());
    assert!(records(tmp.path()).is_empty());
    finish(forker);
}

#[test]
fn pid_reuse_never_hits_an_innocent_process() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::at(tmp.path());
    // The leader's pid now belongs to a process with another start time.
    let innocent = group("sleep 300");
    let mut rec = orphan_record(&innocent);
    rec.leader_start_time -= 1;
    ledger.write_record(&rec).unwrap();
    // The owner's pid was reused by a live process: the owner is dead, but the process
    // now holding its pid is never signalled.
    let reused_owner = group("sleep 300");
    let orphan = group("sleep 300");
    let mut rec2 = orphan_record(&orphan);
    rec2.owner_pid = reused_owner.id() as i32;
    rec2.owner_start_time = start_time(rec2.owner_pid).unwrap() + 1;
    ledger.write_record(&rec2).unwrap();

    let report = ledger.reap_stale(Duration::from_secs(20), Duration::from_secs(5));
    assert_eq!(report.reaped.len(), 1, "{report}");
    assert_eq!(report.reaped[0].pgid, orphan.id() as i32);
    assert_eq!(report.removed, vec![innocent.id() as i32]);
    assert!(alive(innocent.id() as i32));
    assert!(alive(reused_owner.id() as i32));
    assert!(records(tmp.path()).is_empty());
    for c in [&innocent, &reused_owner] {
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
    }
    finish(innocent);
    finish(reused_owner);
    finish(orphan);
}

#[test]
fn dangerous_records_are_set_aside_and_nothing_is_signalled() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::at(tmp.path());
    ledger.ensure_dir().unwrap();
    let runs = ledger.runs_dir().to_path_buf();
    let victim = group("sleep 300");
    let victim_pid = victim.id() as i32;

    // pid 1
    let mut init = orphan_record(&victim);
    init.pgid = 1;
    init.leader_pid = 1;
    std::fs::write(runs.join("1.json"), serde_json::to_vec(&init).unwrap()).unwrap();
    // our own process group
    let mine = nix::unistd::getpgrp().as_raw();
    let mut own = orphan_record(&victim);
    own.pgid = mine;
    own.leader_pid = mine;
    std::fs::write(
        runs.join(format!("{mine}.json")),
        serde_json::to_vec(&own).unwrap(),
    )
    .unwrap();
    // a symlink to a valid record of a live orphan elsewhere
    let elsewhere = tmp.path().join("elsewhere.json");
    std::fs::write(
        &elsewhere,
        serde_json::to_vec(&orphan_record(&victim)).unwrap(),
    )
    .unwrap();
    std::os::unix::fs::symlink(&elsewhere, runs.join(format!("{victim_pid}.json"))).unwrap();
    // garbage
    std::fs::write(runs.join("77.json"), b"{not json").unwrap();

    let report = ledger.reap_stale(Duration::from_secs(20), Duration::from_secs(5));
    assert!(report.reaped.is_empty(), "{report}");
    assert_eq!(report.set_aside.len(), 3, "{report}");
    let reasons: Vec<&str> = report.set_aside.iter().map(|a| a.reason.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("symlink")), "{reasons:?}");
    // The record of our own group (a runner inside a runner) is hands-off: left in
    // place for its owner, never set aside.
    assert_eq!(report.live, 1, "{report}");
    assert!(
        reasons.iter().any(|r| r.contains("process group 1")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("unreadable")),
        "{reasons:?}"
    );
    assert!(alive(victim_pid));
    assert!(elsewhere.exists(), "the symlink's target was followed");
    assert_eq!(records(tmp.path()), vec![format!("{mine}.json")]);
    assert_eq!(std::fs::read_dir(runs.join("aside")).unwrap().count(), 3);
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(victim_pid),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    finish(victim);
}

#[test]
fn records_from_another_boot_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::at(tmp.path());
    let bystander = group("sleep 300");
    let mut rec = orphan_record(&bystander);
    rec.boot_id = "another-boot".into();
    ledger.write_record(&rec).unwrap();
    let report = ledger.reap_stale(Duration::from_secs(20), Duration::from_secs(5));
    assert_eq!(report.removed, vec![bystander.id() as i32]);
    assert!(alive(bystander.id() as i32));
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(bystander.id() as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    finish(bystander);
}

#[test]
fn concurrent_sweeps_reap_each_group_once() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::at(tmp.path());
    let orphans: Vec<Child> = (0..6).map(|_| group("sleep 300")).collect();
    for o in &orphans {
        ledger.write_record(&orphan_record(o)).unwrap();
    }
    let reports: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let l = ledger.clone();
                s.spawn(move || l.reap_stale(Duration::from_secs(30), Duration::from_secs(5)))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut reaped: Vec<i32> = reports
        .iter()
        .flat_map(|r| r.reaped.iter().map(|g| g.pgid))
        .collect();
    reaped.sort();
    let mut expected: Vec<i32> = orphans.iter().map(|c| c.id() as i32).collect();
    expected.sort();
    assert_eq!(reaped, expected);
    assert!(reports
        .iter()
        .all(|r| r.errors.is_empty() && r.set_aside.is_empty()));
    assert!(records(tmp.path()).is_empty());
    for o in orphans {
        finish(o);
    }
}

#[test]
fn spare_files_are_reused_and_only_a_dead_owners_are_swept() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::at(tmp.path());
    // Nothing to sweep: no directory, then an empty one.
    assert!(!ledger.needs_sweep());
    ledger.ensure_dir().unwrap();
    assert!(!ledger.needs_sweep());
    let me = std::process::id() as i32;
    let mine = start_time(me).unwrap();
    let runs = ledger.runs_dir();

    // The first record a ledger ends is removed (a one-shot process would only
    // remove its spare at exit); the next becomes this process's spare.
    let child = group("sleep 30");
    let pgid = child.id() as i32;
    let record = Record::for_group(pgid, pgid, vec!["sleep".into()], "/".into()).unwrap();
    ledger.write_record(&record).unwrap();
    ledger.recycle_record(pgid).unwrap();
    assert!(records(tmp.path()).is_empty());
    assert_eq!(ledger.take_spare(), None);
    let kept = std::fs::read_dir(runs)
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".spare-")
        })
        .count();
    assert_eq!(kept, 0, "the first record ended was kept as a spare");
    ledger.write_record(&record).unwrap();
    ledger.recycle_record(pgid).unwrap();
    assert!(records(tmp.path()).is_empty());
    let spare = ledger.take_spare().expect("a spare");
    let name = spare.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.starts_with(&format!(".spare-{me}-{mine}-")), "{name}");
    assert!(spare.exists());
    assert_eq!(ledger.take_spare(), None);
    // A missing record recycles to nothing.
    ledger.recycle_record(pgid).unwrap();
    assert_eq!(ledger.take_spare(), None);
    // A live owner's spare is nothing to sweep; a record, or a dead owner's spare, is.
    assert!(!ledger.needs_sweep());

    // Spares named after a dead owner (pid gone, or pid reused: start time differs)
    // are removed by a sweep; a live owner's are kept.
    // So are temporary record files (a spawned child that died mid-write, an owner
    // killed mid-write), named the same way.
    let dead = runs.join(format!(".spare-{}-1-0", dead_pid()));
    let reused = runs.join(format!(".spare-{me}-{}-0", mine + 1));
    let dead_tmp = runs.join(format!(".tmp-{}-1-4242", dead_pid()));
    let live_tmp =
        std::path::PathBuf::from(format!("{}4242", ledger.temp_prefix().unwrap().display()));
    for f in [&dead, &reused, &dead_tmp, &live_tmp] {
        std::fs::write(f, "{}").unwrap();
    }
    assert!(ledger.needs_sweep());
    let report = ledger.reap_stale(Duration::from_secs(5), Duration::from_secs(1));
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(
        report.reaped.is_empty() && report.set_aside.is_empty(),
        "{report:?}"
    );
    assert!(!dead.exists() && !reused.exists() && !dead_tmp.exists());
    assert!(!ledger.needs_sweep(), "only live owners' files are left");
    let record = runs.join(format!("{}.json", dead_pid()));
    std::fs::write(&record, "{}").unwrap();
    assert!(ledger.needs_sweep(), "a record is judged by a sweep");
    std::fs::remove_file(&record).unwrap();
    assert!(spare.exists(), "a live owner's spare was removed");
    assert!(
        live_tmp.exists(),
        "a live owner's temporary file was removed"
    );
    std::fs::remove_file(&live_tmp).unwrap();
    assert!(alive(pgid));
    finish_killed(child);
}

/// A record names its owner, so a ledger holding only records of live owners (a
/// busy runner beside this one) needs no sweep, decided from one listing, and a
/// record whose name gives another owner than its content is set aside, not
/// trusted either way.
#[test]
fn records_of_live_owners_need_no_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::at(tmp.path());
    let live = group("sleep 300");
    let pid = live.id() as i32;
    for _ in 0..3 {
        // Ours (this process is their owner), of live groups.
        ledger
            .write_record(&Record::for_group(pid, pid, vec![], "/".into()).unwrap())
            .unwrap();
    }
    assert!(!ledger.needs_sweep(), "{:?}", records(tmp.path()));
    let report = ledger.reap_stale(Duration::from_secs(5), Duration::from_secs(1));
    assert_eq!((report.live, report.reaped.len()), (1, 0), "{report}");

    // A dead owner's record is judged (and its live group ended).
    let orphan = group("sleep 300");
    let path = ledger.write_record(&orphan_record(&orphan)).unwrap();
    assert!(ledger.needs_sweep());
    let report = ledger.reap_stale(Duration::from_secs(20), Duration::from_secs(5));
    assert_eq!(report.reaped.len(), 1, "{report}");
    assert!(!path.exists());
    assert_eq!(finish(orphan).code(), None);

    // An older runner's name, without its owner: judged by reading it.
    let me = runner_core::os::owner_identity().unwrap();
    let mine = tmp
        .path()
        .join(format!("runs/{pid}.{}-{}.json", me.pid, me.start_time));
    let legacy = tmp.path().join(format!("runs/{pid}.json"));
    std::fs::rename(&mine, &legacy).unwrap();
    assert!(ledger.needs_sweep());
    assert_eq!(ledger.read_record(pid).unwrap().unwrap().pgid, pid);
    let report = ledger.reap_stale(Duration::from_secs(5), Duration::from_secs(1));
    assert_eq!((report.live, report.reaped.len()), (1, 0), "{report}");

    // A dead owner's record under a live owner's name: set aside, group untouched.
    let victim = group("sleep 300");
    let forged = orphan_record(&victim);
    std::fs::write(
        tmp.path().join(format!(
            "runs/{}.{}-{}.json",
            forged.pgid, me.pid, me.start_time
        )),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    let report = ledger.reap_stale(Duration::from_secs(5), Duration::from_secs(1));
    assert!(report.reaped.is_empty(), "{report}");
    assert_eq!(report.set_aside.len(), 1, "{report}");
    assert!(report.set_aside[0].reason.contains("owner"), "{report}");
    assert!(alive(victim.id() as i32));

    ledger.remove_record(pid).unwrap();
    assert!(ledger.read_record(pid).unwrap().is_none());
    assert!(!ledger.needs_sweep());
    finish_killed(victim);
    finish_killed(live);
}

/// SIGKILLs `child`'s group and reaps the leader.
fn finish_killed(child: Child) -> std::process::ExitStatus {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    finish(child)
}

#[test]
fn the_last_clone_of_a_ledger_removes_its_spares() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::at(tmp.path());
    ledger.ensure_dir().unwrap();
    let mut spares = Vec::new();
    let clone = ledger.clone();
    for pgid in [1_000_001, 1_000_002, 1_000_003] {
        let mut rec = Record::for_group(
            std::process::id() as i32,
            std::process::id() as i32,
            vec![],
            "/".into(),
        )
        .unwrap();
        rec.pgid = pgid;
        ledger.write_record(&rec).unwrap();
    }
    // Retired after all are written: a write takes a spare when there is one. The
    // first is removed, the others kept.
    for pgid in [1_000_001, 1_000_002, 1_000_003] {
        clone.recycle_record(pgid).unwrap();
    }
    for f in std::fs::read_dir(ledger.runs_dir()).unwrap() {
        let name = f.unwrap().file_name().into_string().unwrap();
        if name.starts_with(".spare-") {
            spares.push(ledger.runs_dir().join(name));
        }
    }
    assert_eq!(spares.len(), 2);
    drop(ledger);
    assert!(spares.iter().all(|s| s.exists()), "a clone is still alive");
    drop(clone);
    assert!(spares.iter().all(|s| !s.exists()));
}

/// A group whose leader has exited and whose members run on: `sh` starts two
/// `sleep`s (with `env` added to their environment) and exits at once.
fn leaderless_group(env: &[(&str, &str)]) -> (i32, Vec<i32>) {
    let mut leader = Command::new("sh")
        .args([
            "-c",
            "sleep 300 >/dev/null & sleep 300 >/dev/null & echo ready",
        ])
        .envs(env.iter().copied())
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pgid = leader.id() as i32;
    let mut out = String::new();
    std::io::Read::read_to_string(leader.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(out, "ready\n");
    leader.wait().unwrap();
    let left = members(pgid);
    assert_eq!(left.len(), 2, "{left:?}");
    (pgid, left)
}

/// A record whose group id now names another group whose leader has exited: its
/// members started after the recorded leader, which proves nothing. Without the
/// group's token in their environment they are never signalled.
#[test]
fn members_of_a_leaderless_group_are_signalled_only_with_the_groups_token() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::at(tmp.path());
    let me = std::process::id() as i32;
    let template = Record::for_group(me, me, vec!["sh".into()], "/".into()).unwrap();
    let record = |pgid: i32, token: Option<&str>| Record {
        pgid,
        leader_pid: pgid,
        // Earlier than every member: the old rule's "they started after the leader".
        leader_start_time: 0,
        owner_pid: dead_pid(),
        token: token.map(str::to_string),
        ..template.clone()
    };

    // An innocent group (no token) and one carrying another group's token.
    let (innocent, innocent_members) = leaderless_group(&[]);
    ledger
        .write_record(&record(innocent, Some("ours-1")))
        .unwrap();
    let (forged, forged_members) = leaderless_group(&[("RUNNER_GROUP_TOKEN", "other-2")]);
    ledger
        .write_record(&record(forged, Some("ours-2")))
        .unwrap();
    // A record without a token: members are never signalled either.
    let (untokened, untokened_members) = leaderless_group(&[("RUNNER_GROUP_TOKEN", "x")]);
    ledger.write_record(&record(untokened, None)).unwrap();
    // Ours: the members carry the recorded token.
    let (ours, ours_members) = leaderless_group(&[("RUNNER_GROUP_TOKEN", "ours-3")]);
    ledger.write_record(&record(ours, Some("ours-3"))).unwrap();

    let report = ledger.reap_stale(Duration::from_secs(20), Duration::from_secs(5));
    assert_eq!(
        report.reaped.iter().map(|g| g.pgid).collect::<Vec<_>>(),
        vec![ours],
        "{report}"
    );
    let mut removed = report.removed.clone();
    removed.sort_unstable();
    let mut expected = vec![innocent, forged, untokened];
    expected.sort_unstable();
    assert_eq!(removed, expected, "{report}");
    for pid in innocent_members
        .iter()
        .chain(&forged_members)
        .chain(&untokened_members)
    {
        assert!(alive(*pid), "innocent {pid} was signalled");
    }
    assert!(ours_members.iter().all(|p| !alive(*p)));
    for pgid in [innocent, forged, untokened] {
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::SIGKILL)
            .unwrap();
    }
}

/// The portable spawn path's pending records (written before the spawn, keyed by the
/// group's token): a dead owner's is acted on by the token alone, a live owner's is
/// left alone, one whose token nobody carries is removed, one without a token is set
/// aside.
#[test]
fn pending_records_are_judged_by_their_token() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::at(tmp.path());
    ledger.ensure_dir().unwrap();
    let runs = ledger.runs_dir().to_path_buf();
    // An owner that is dead now, started before every group below.
    let mut owner = Command::new("sleep").arg("300").spawn().unwrap();
    let owner_pid = owner.id() as i32;
    let owner_start = start_time(owner_pid).unwrap();
    owner.kill().unwrap();
    owner.wait().unwrap();
    let me = std::process::id() as i32;
    let template = Record::for_group(me, me, vec!["sh".into()], "/".into()).unwrap();
    let pending = |name: &str, owner: (i32, u64), token: Option<&str>| {
        let record = Record {
            pgid: 0,
            leader_pid: 0,
            leader_start_time: 0,
            owner_pid: owner.0,
            owner_start_time: owner.1,
            token: token.map(str::to_string),
            ..template.clone()
        };
        assert!(record.is_pending());
        std::fs::write(
            runs.join(format!("pending-{name}.json")),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
    };
    let tokened = |token: &str| {
        Command::new("sh")
            .args(["-c", "sleep 300 & wait"])
            .env("RUNNER_GROUP_TOKEN", token)
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let orphan = tokened("pend-1");
    let kept = tokened("pend-2");
    // Completed (pid and start time written) but not yet renamed when its owner died:
    // judged as a record, by its leader.
    let completed = tokened("pend-4");
    let completed_record = Record {
        pgid: completed.id() as i32,
        leader_pid: completed.id() as i32,
        leader_start_time: start_time(completed.id() as i32).unwrap(),
        owner_pid,
        owner_start_time: owner_start,
        token: Some("pend-4".into()),
        ..template.clone()
    };
    std::fs::write(
        runs.join("pending-completed.json"),
        serde_json::to_vec(&completed_record).unwrap(),
    )
    .unwrap();
    let dead_owner = (owner_pid, owner_start);
    let live_owner = (me, template.owner_start_time);
    pending("orphan", dead_owner, Some("pend-1"));
    pending("kept", live_owner, Some("pend-2"));
    pending("nobody", dead_owner, Some("pend-3"));
    pending("untokened", dead_owner, None);
    // Wait until both groups run their `sleep` (the token is in its environment).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while [&orphan, &kept]
        .iter()
        .any(|c| members(c.id() as i32).len() < 2)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }

    let report = ledger.reap_stale(Duration::from_secs(20), Duration::from_secs(5));
    let mut reaped: Vec<i32> = report.reaped.iter().map(|g| g.pgid).collect();
    reaped.sort_unstable();
    let mut expected = vec![orphan.id() as i32, completed.id() as i32];
    expected.sort_unstable();
    assert_eq!(reaped, expected, "{report}");
    assert_eq!(report.live, 1, "{report}");
    assert_eq!(report.set_aside.len(), 1, "{report}");
    assert!(report.set_aside[0].path.ends_with("pending-untokened.json"));
    assert_eq!(records(tmp.path()), vec!["pending-kept.json".to_string()]);
    assert!(members(orphan.id() as i32).is_empty());
    assert_eq!(members(kept.id() as i32).len(), 2);
    finish_killed(kept);
    finish(orphan);
    finish(completed);
}
