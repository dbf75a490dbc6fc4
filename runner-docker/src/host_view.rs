//! Whether a number the engine gave us names a process on this host: proven, never
//! assumed.
//!
//! The engine reports pids (a container's `State.Pid`, an exec's `Pid`) in its own
//! pid namespace. Docker Desktop, colima, OrbStack, Podman machine and remote hosts
//! run the engine in a VM or on another machine, and a unix socket can lead there as
//! well as tcp can lead here, so the endpoint says nothing. The same number here may
//! name an innocent local process. Every host pid, start time, `/proc/<pid>` path or
//! process group taken from the engine goes through this module; without its proof,
//! signals, stops, `find_pid`, `wait_on` and output go through the engine (the
//! helper, or an exec in the container), as for a remote engine.
//!
//! The proof, for container `C` (its full, random 64-hex id) and an engine number `n`:
//! 1. our `/proc` is our own pid namespace's (`/proc/self` is our pid);
//! 2. the process at `n` here lives in a pid namespace exactly one level below ours
//!    (`NSpid` is `n` and one more number): a container of an engine that numbers
//!    processes as we do;
//! 3. its control groups name `C`'s id;
//! 4. for the container itself: the process at its `State.Pid` also is pid 1 of its
//!    namespace. An engine in a VM or another machine numbers its own processes; a
//!    local process that happens to hold the number is in our namespace (or deeper,
//!    or in another container) and fails 2 or 3. An engine in a pid namespace below
//!    ours (a nested or sandboxed dockerd) makes `C`'s processes two levels below
//!    ours, which fails 2 and 4. Passing by coincidence would take a local process
//!    in a child namespace whose cgroup path holds a 256-bit id made seconds before.
//! 5. for an exec: the process leads its own session (runc makes every exec a
//!    session leader), so a number reused inside the container by another of its
//!    processes between the engine's report and our read is not taken for it.
//!
//! A proven process is remembered with its start time; each later use checks that
//! the process at that pid still has it ([`LocalProcess::alive`]). An exec's process
//! is also held by its exit descriptor (a pidfd, opened after the proof and checked
//! against the start time again), through which its group is signalled where the
//! kernel can (`runner_core::os::signal_group_of`): the kernel then finds the group
//! from the process itself, and no reused number can be reached.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use runner_core::os::{self, NamespacedProcess};

/// Proof that container `id` runs on this host in a pid namespace right below ours:
/// the engine's pids for its processes are our pids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostView {
    id: String,
}

/// A process of the container seen from here, proven (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct LocalProcess {
    /// Its pid here (= the engine's number for it).
    pub(crate) pid: i32,
    /// Its start time here.
    pub(crate) start: u64,
    /// Its pid in the container.
    pub(crate) in_container: i64,
    /// Its exit descriptor, when one could be opened for it.
    pub(crate) exit_fd: Option<Arc<OwnedFd>>,
}

impl LocalProcess {
    /// True while the process at [`Self::pid`] is still this one.
    pub(crate) fn alive(&self) -> bool {
        os::process_is(self.pid, self.start)
    }
}

impl HostView {
    /// The proof for container `id` whose first process the engine numbers
    /// `init_pid` (`State.Pid`), or `None` when the engine's numbers are not ours.
    pub(crate) fn prove(id: &str, init_pid: i64) -> Option<HostView> {
        // Only a full id is unguessable; a short one could be part of another path.
        if id.len() < 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let view = HostView { id: id.to_string() };
        let init = view.seen(init_pid)?;
        (init.inner_pid == 1).then_some(view)
    }

    /// Like [`HostView::prove`], from the engine's inspection of the container.
    pub(crate) fn of(container: &bollard::models::ContainerInspectResponse) -> Option<HostView> {
        let id = container.id.as_deref()?;
        let pid = container.state.as_ref()?.pid.filter(|p| *p > 0)?;
        let view = HostView::prove(id, pid);
        tracing::debug!(
            container = %id,
            engine_pid = pid,
            seen_here = view.is_some(),
            "whether the engine's pids are this host's"
        );
        view
    }

    /// Process `engine_pid` of the container, if it is the container's process here.
    fn seen(&self, engine_pid: i64) -> Option<NamespacedProcess> {
        let pid = i32::try_from(engine_pid).ok().filter(|p| *p > 1)?;
        os::child_namespace_process(pid).filter(|p| p.cgroups.contains(&self.id))
    }

    /// The exec the engine numbers `engine_pid`, proven to be the container's process
    /// and the leader of its own session.
    pub(crate) fn exec_process(&self, engine_pid: i64) -> Option<LocalProcess> {
        let p = self.seen(engine_pid).filter(|p| p.session == p.pid)?;
        // The descriptor is the proven process's only if that process still has its
        // start time once the descriptor is open.
        let exit_fd = os::exit_fd(p.pid).ok().map(Arc::new);
        if !os::process_is(p.pid, p.start_time) {
            return None;
        }
        Some(LocalProcess {
            pid: p.pid,
            start: p.start_time,
            in_container: p.inner_pid,
            exit_fd,
        })
    }

    /// True when `pid` here is a process of the container (a member of an exec's
    /// process group, say).
    pub(crate) fn holds(&self, pid: i32) -> bool {
        self.seen(i64::from(pid)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_processes_never_pass() {
        let me = i64::from(std::process::id());
        let id = "a".repeat(64);
        assert_eq!(HostView::prove(&id, me), None);
        assert_eq!(HostView::prove(&id, 1), None);
        let view = HostView { id };
        assert!(view.exec_process(me).is_none());
        assert!(!view.holds(me as i32));
    }

    #[test]
    fn a_short_or_odd_id_proves_nothing() {
        assert_eq!(HostView::prove("abc", 1), None);
        assert_eq!(HostView::prove(&"z".repeat(64), 1), None);
    }
}
