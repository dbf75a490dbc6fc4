//! `runner-shim --sync DIR [--skip NAME]…`: the far side of a two-way sync (see
//! `sync.rs` for the wire). One thread: `poll` on stdin (the owner's requests) and an
//! inotify descriptor watching every directory under DIR (but those named by
//! `--skip`). A change is read once its writer closes the file (or renames it into
//! place), and sent unless it is what this side last sent or applied for that path,
//! so what the owner applies here does not echo back.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::sync::{self, Entry, Msg};

extern "C" {
    fn inotify_init1(flags: i32) -> i32;
    fn inotify_add_watch(fd: i32, path: *const u8, mask: u32) -> i32;
}

const IN_NONBLOCK: i32 = 0o4000;
const IN_CLOEXEC: i32 = 0o2000000;
const IN_ATTRIB: u32 = 0x4;
const IN_CLOSE_WRITE: u32 = 0x8;
const IN_MOVED_FROM: u32 = 0x40;
const IN_MOVED_TO: u32 = 0x80;
const IN_CREATE: u32 = 0x100;
const IN_DELETE: u32 = 0x200;
const IN_Q_OVERFLOW: u32 = 0x4000;
const IN_IGNORED: u32 = 0x8000;
const IN_ONLYDIR: u32 = 0x0100_0000;
const IN_DONT_FOLLOW: u32 = 0x0200_0000;
const IN_ISDIR: u32 = 0x4000_0000;
const WATCH: u32 = IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_ONLYDIR
    | IN_DONT_FOLLOW;

struct Agent {
    root: PathBuf,
    skip: Vec<Vec<u8>>,
    inotify: std::fs::File,
    /// Watch descriptor → directory (relative; empty for the root).
    dirs: HashMap<i32, Vec<u8>>,
    /// Path → digest of what the owner was last told or had applied here.
    known: HashMap<Vec<u8>, u64>,
    dirty: BTreeSet<Vec<u8>>,
    out: BufWriter<std::fs::File>,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

impl Agent {
    fn path(&self, rel: &[u8]) -> Option<PathBuf> {
        if rel.is_empty() {
            return Some(self.root.clone());
        }
        sync::under(&self.root, rel)
    }

    fn skipped(&self, rel: &[u8]) -> bool {
        rel.split(|b| *b == b'/').any(|part| {
            part.starts_with(sync::TEMP_PREFIX.as_bytes()) || self.skip.iter().any(|s| s == part)
        })
    }

    /// Watches directory `rel` and every directory under it; with `mark`, marks what
    /// it holds as changed (a directory made or moved in).
    fn watch_tree(&mut self, rel: Vec<u8>, mark: bool) {
        let Some(path) = self.path(&rel) else { return };
        let mut c = path.as_os_str().as_bytes().to_vec();
        c.push(0);
        // SAFETY: a NUL-terminated path and a descriptor we own.
        let wd = unsafe { inotify_add_watch(self.fd(), c.as_ptr(), WATCH) };
        if wd < 0 {
            let e = io::Error::last_os_error();
            self.send(&Msg::Warn(format!(
                "cannot watch {} in the container: {e} (changes there are not seen)",
                path.display()
            )));
            return;
        }
        self.dirs.insert(wd, rel.clone());
        let Ok(entries) = std::fs::read_dir(&path) else {
            return;
        };
        for e in entries.flatten() {
            let child = join(&rel, e.file_name().as_bytes());
            if self.skipped(&child) {
                continue;
            }
            if mark {
                self.dirty.insert(child.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                self.watch_tree(child, mark);
            }
        }
    }

    fn fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.inotify.as_raw_fd()
    }

    fn send(&mut self, msg: &Msg) {
        if msg.write_to(&mut self.out).is_err() {
            std::process::exit(0);
        }
    }

    /// Reads every queued inotify event (without waiting), marking what changed.
    fn drain_events(&mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self.inotify.read(&mut buf) {
                Ok(n) if n > 0 => n,
                _ => return,
            };
            let mut at = 0;
            while at + 16 <= n {
                let word =
                    |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
                let wd = word(at) as i32;
                let mask = word(at + 4);
                let len = word(at + 12) as usize;
                let raw = &buf[at + 16..(at + 16 + len).min(n)];
                let name = &raw[..raw.iter().position(|b| *b == 0).unwrap_or(raw.len())];
                at += 16 + len;
                if mask & IN_Q_OVERFLOW != 0 {
                    self.rescan();
                    continue;
                }
                if mask & IN_IGNORED != 0 {
                    self.dirs.remove(&wd);
                    continue;
                }
                let Some(dir) = self.dirs.get(&wd).cloned() else {
                    continue;
                };
                if name.is_empty() {
                    continue;
                }
                let rel = join(&dir, name);
                if self.skipped(&rel) {
                    continue;
                }
                if mask & IN_ISDIR != 0 && mask & IN_MOVED_FROM != 0 {
                    // Its watches follow it wherever it went: forget their paths here.
                    let prefix = [&rel[..], b"/"].concat();
                    self.dirs
                        .retain(|_, d| *d != rel && !d.starts_with(&prefix));
                    for k in self.known.keys() {
                        if k.starts_with(&prefix) {
                            self.dirty.insert(k.clone());
                        }
                    }
                }
                if mask & IN_ISDIR != 0 && mask & (IN_CREATE | IN_MOVED_TO) != 0 {
                    self.watch_tree(rel.clone(), true);
                }
                self.dirty.insert(rel);
            }
        }
    }

    /// Every path under the root and every path the owner knows of, as changed.
    fn rescan(&mut self) {
        self.dirs.clear();
        let known: Vec<Vec<u8>> = self.known.keys().cloned().collect();
        self.dirty.extend(known);
        self.watch_tree(Vec::new(), true);
    }

    /// Sends what changed at each marked path.
    fn send_changes(&mut self) {
        while let Some(rel) = self.dirty.pop_first() {
            let Some(path) = self.path(&rel) else {
                continue;
            };
            let entry = match sync::read_entry(&path) {
                Ok(e) => e,
                Err(e) => {
                    self.send(&Msg::Warn(format!("cannot read {}: {e}", path.display())));
                    continue;
                }
            };
            let d = sync::digest(&entry);
            if self.known.get(&rel) == Some(&d) {
                continue;
            }
            self.known.insert(rel.clone(), d);
            self.send(&Msg::Put {
                seq: 0,
                base: 0,
                path: rel,
                entry,
            });
        }
    }

    /// Applies the owner's request if the entry there is still what it believes.
    fn put(&mut self, seq: u32, base: u64, rel: Vec<u8>, entry: Entry) {
        let Some(path) = sync::under(&self.root, &rel) else {
            self.send(&Msg::Warn(format!(
                "a path outside the synced directory: {}",
                String::from_utf8_lossy(&rel)
            )));
            self.send(&Msg::Nack(seq));
            return;
        };
        let now = sync::read_entry(&path).map(|e| sync::digest(&e));
        let wanted = sync::digest(&entry);
        let applied = match now {
            Ok(d) if d == wanted => Ok(()),
            Ok(d) if d == base => self.apply(&rel, &path, &entry),
            Ok(_) => Err(None),
            Err(e) => Err(Some(e)),
        };
        match applied {
            Ok(()) => {
                self.known.insert(rel, wanted);
                self.send(&Msg::Ack(seq));
            }
            Err(e) => {
                if let Some(e) = e {
                    self.send(&Msg::Warn(format!(
                        "cannot make {} {}: {e}",
                        path.display(),
                        entry.kind()
                    )));
                }
                self.send(&Msg::Nack(seq));
                // What is there, whether or not it was sent before.
                self.known.remove(&rel);
                self.dirty.insert(rel);
                self.send_changes();
            }
        }
    }

    fn apply(&mut self, rel: &[u8], path: &Path, entry: &Entry) -> Result<(), Option<io::Error>> {
        // Directories it makes on the way are watched and known, so they do not echo.
        let mut made = Vec::new();
        let mut up = rel;
        while let Some(i) = up.iter().rposition(|b| *b == b'/') {
            up = &up[..i];
            match self.path(up) {
                Some(p) if !p.is_dir() => made.push(up.to_vec()),
                _ => break,
            }
        }
        sync::apply(path, entry).map_err(Some)?;
        for dir in made.into_iter().rev() {
            self.known.insert(dir.clone(), sync::digest(&Entry::Dir));
            self.watch_tree(dir, false);
        }
        if *entry == Entry::Dir {
            self.watch_tree(rel.to_vec(), false);
        }
        Ok(())
    }
}

/// Runs the agent until its stdin ends.
pub fn run(args: &[String]) -> ! {
    let Some(root) = args.first() else {
        eprintln!("runner-shim --sync: no directory");
        std::process::exit(2);
    };
    let skip = args[1..]
        .chunks(2)
        .filter(|p| p.len() == 2 && p[0] == "--skip")
        .map(|p| p[1].as_bytes().to_vec())
        .collect();
    // SAFETY: a plain system call; the descriptor is owned by the File from here on.
    let fd = unsafe { inotify_init1(IN_NONBLOCK | IN_CLOEXEC) };
    if fd < 0 {
        eprintln!(
            "runner-shim --sync: inotify: {}",
            io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    // SAFETY: `fd` was just returned by inotify_init1 and nothing else owns it.
    let inotify = unsafe { std::fs::File::from_raw_fd(fd) };
    // SAFETY: fd 1 is this process's stdout, owned by nothing else here.
    let stdout = unsafe { std::fs::File::from_raw_fd(1) };
    let mut agent = Agent {
        root: PathBuf::from(root),
        skip,
        inotify,
        dirs: HashMap::new(),
        known: HashMap::new(),
        dirty: BTreeSet::new(),
        out: BufWriter::with_capacity(256 * 1024, stdout),
    };
    if let Err(e) = std::fs::create_dir_all(&agent.root) {
        eprintln!("runner-shim --sync: {root}: {e}");
        std::process::exit(1);
    }
    agent.watch_tree(Vec::new(), false);
    // Ready: every directory is watched.
    agent.send(&Msg::Barrier(0));
    let _ = agent.out.flush();
    // SAFETY: fd 0 is this process's stdin, owned by nothing else here.
    let mut input = BufReader::with_capacity(256 * 1024, unsafe { std::fs::File::from_raw_fd(0) });
    loop {
        if input.buffer().is_empty() {
            let mut fds = [
                crate::PollFd {
                    fd: 0,
                    events: 1,
                    revents: 0,
                },
                crate::PollFd {
                    fd: agent.fd(),
                    events: 1,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds.
            if unsafe { crate::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
                continue;
            }
            if fds[1].revents != 0 {
                agent.drain_events();
                agent.send_changes();
            }
            if fds[0].revents == 0 {
                let _ = agent.out.flush();
                continue;
            }
        }
        match Msg::read_from(&mut input) {
            Ok(Some(Msg::Put {
                seq,
                base,
                path,
                entry,
            })) => agent.put(seq, base, path, entry),
            Ok(Some(Msg::Barrier(n))) => {
                agent.drain_events();
                agent.send_changes();
                agent.send(&Msg::Barrier(n));
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => std::process::exit(0),
        }
        if input.buffer().is_empty() {
            let _ = agent.out.flush();
        }
    }
}
