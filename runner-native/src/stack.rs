//! The stack the spawned child runs on between `clone` and `execve`.
//!
//! An `mmap`ed region with a `PROT_NONE` guard page below it, as glibc's
//! `posix_spawn` allocates: a child that overflows it faults (and the parent reports
//! a child that died before exec) instead of writing into whatever the parent's heap
//! holds below a `Vec`. One stack per thread, mapped on its first spawn and reused by
//! every later one, so a spawn makes no extra system call for it. The parent thread
//! sleeps while its child uses the stack (`CLONE_VFORK`), so a thread's stack is never
//! used by two children at once.

use std::cell::RefCell;
use std::io;

use nix::libc::{self, c_void};

/// Usable bytes: the record writer's buffers are on the heap, the deepest frame is a
/// 1 KiB read of `/proc/self/stat`.
pub(crate) const CHILD_STACK: usize = 64 * 1024;

/// One thread's child stack.
#[derive(Debug)]
pub(crate) struct ChildStack {
    /// The whole mapping: the guard page, then the stack.
    base: *mut c_void,
    len: usize,
}

thread_local! {
    static STACK: RefCell<Option<ChildStack>> = const { RefCell::new(None) };
}

impl ChildStack {
    /// Runs `f` with this thread's stack, mapping it first if needed.
    pub(crate) fn with<T>(f: impl FnOnce(&mut ChildStack) -> io::Result<T>) -> io::Result<T> {
        STACK.with(|cell| {
            let mut slot = cell.try_borrow_mut().map_err(|_| {
                io::Error::other("a spawn is already using this thread's child stack")
            })?;
            if slot.is_none() {
                *slot = Some(ChildStack::map()?);
            }
            match slot.as_mut() {
                Some(stack) => f(stack),
                None => Err(io::Error::other("no child stack")),
            }
        })
    }

    fn map() -> io::Result<ChildStack> {
        // SAFETY: a plain libc query.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or(4096);
        let len = CHILD_STACK.div_ceil(page) * page + page;
        // SAFETY: a fresh anonymous mapping; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len };
        // Stacks grow down: the guard is the lowest page.
        // SAFETY: the first page of our own mapping.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer: the end of the mapping, 16-byte aligned.
    pub(crate) fn top(&mut self) -> *mut c_void {
        // SAFETY: one past the end of our own mapping, as `clone` expects.
        let end = unsafe { self.base.cast::<u8>().add(self.len) };
        end.wrapping_sub(end as usize % 16).cast()
    }

    /// The guard page's address range, for tests.
    #[cfg(test)]
    fn guard_range(&self) -> (usize, usize) {
        // SAFETY: a plain libc query.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        (self.base as usize, self.base as usize + page)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unused once the thread ends.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stack is a mapping of its own whose lowest page is inaccessible, and the
    /// thread keeps reusing it.
    #[test]
    fn the_child_stack_has_a_guard_page_and_is_reused() {
        let (first, guard) = ChildStack::with(|s| Ok((s.top() as usize, s.guard_range()))).unwrap();
        let again = ChildStack::with(|s| Ok(s.top() as usize)).unwrap();
        assert_eq!(first, again);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let perms = |addr: usize| {
            maps.lines()
                .find_map(|l| {
                    let (range, rest) = l.split_once(' ')?;
                    let (lo, hi) = range.split_once('-')?;
                    let lo = usize::from_str_radix(lo, 16).ok()?;
                    let hi = usize::from_str_radix(hi, 16).ok()?;
                    (lo <= addr && addr < hi).then(|| rest[..4].to_string())
                })
                .unwrap()
        };
        assert_eq!(perms(guard.0), "---p");
        assert_eq!(perms(guard.1), "rw-p");
        assert_eq!(perms(first - 16), "rw-p");
    }
}
