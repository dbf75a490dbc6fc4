//! A project kept in sync both ways with a place that cannot see this machine's files
//! (an engine in a VM or on another host; later a pod): copied in once
//! ([`Prepared::archive`], a tar stream the backend hands to its engine, as
//! `docker cp` would), then kept in sync while the environment lives
//! ([`Prepared::run`]) with an agent on the far side (`runner-shim --sync DIR`) over
//! any pair of streams. The wire and the file operations are `runner_shim::sync`'s.
//!
//! **The rule.** This machine decides. For each path it keeps the digest both sides
//! last agreed on. A change seen on one side is carried to the other only if the
//! other still holds the agreed entry (the agent checks it before it writes: a
//! compare-and-swap, so a write racing the other side's is never overwritten
//! blindly). When both sides changed a path, **this machine's version wins on both
//! sides and the other side's version is saved beside it as `NAME.runner-conflict`**
//! (`-2`, `-3`, … when taken), said aloud (a note, [`NOTE_TARGET`]); nothing is lost
//! silently. A deletion against a change is a conflict too: the change is kept as
//! the conflict copy.
//!
//! **What is synced.** Directories, regular files (content and the execute bit) and
//! symbolic links; not ownership, times or other modes. Ignored: the `.gitignore`
//! files of the tree (each for its own directory), and patterns of
//! [`SyncOptions::ignore`] (by default `.git`), on both sides.
//!
//! **Cost grows with what changed:** each side is told of changes by its kernel
//! (inotify here through `notify`, which uses FSEvents on macOS; inotify there) and
//! reads only the paths it was told of.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use runner_shim::sync::{self as wire, Entry, Msg, ABSENT, TEMP_PREFIX};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::tunnel::NOTE_TARGET;

/// What is left out of a sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    ignore: Vec<String>,
}

impl Default for SyncOptions {
    /// `.git` ignored, and what the tree's `.gitignore` files say.
    fn default() -> Self {
        SyncOptions {
            ignore: vec![".git".to_string()],
        }
    }
}

impl SyncOptions {
    /// Also ignores what `pattern` matches (a `.gitignore` line, relative to the
    /// root: `target/`, `node_modules`, `*.log`, `/build`).
    pub fn ignore(mut self, pattern: impl Into<String>) -> Self {
        self.ignore.push(pattern.into());
        self
    }

    /// Ignores only what the tree's `.gitignore` files say (`.git` is synced too).
    pub fn without_defaults(mut self) -> Self {
        self.ignore.clear();
        self
    }

    /// The patterns that are plain names (`target`, `.git`): directories by these
    /// names are not even watched on the far side.
    pub fn plain_names(&self) -> Vec<String> {
        self.ignore
            .iter()
            .map(|p| p.trim_end_matches('/'))
            .filter(|p| !p.is_empty() && !p.contains(['/', '*', '?', '[', '!', '\\']))
            .map(str::to_string)
            .collect()
    }
}

/// Which paths are left out: the options' patterns, then each directory's
/// `.gitignore` (the deepest that has a say decides).
#[derive(Debug)]
struct Filter {
    root: PathBuf,
    extra: Gitignore,
    /// Directory (relative) → its `.gitignore`.
    dirs: HashMap<PathBuf, Gitignore>,
}

impl Filter {
    fn new(root: &Path, options: &SyncOptions) -> Filter {
        let mut b = GitignoreBuilder::new(root);
        for p in &options.ignore {
            let _ = b.add_line(None, p);
        }
        let _ = b.add_line(None, &format!("{TEMP_PREFIX}*"));
        Filter {
            root: root.to_path_buf(),
            extra: b.build().unwrap_or_else(|_| Gitignore::empty()),
            dirs: HashMap::new(),
        }
    }

    /// (Re)reads directory `dir`'s `.gitignore`.
    fn load(&mut self, dir: &Path) {
        let file = self.root.join(dir).join(".gitignore");
        if file.is_file() {
            let (g, _) = Gitignore::new(&file);
            self.dirs.insert(dir.to_path_buf(), g);
        } else {
            self.dirs.remove(dir);
        }
    }

    fn ignored(&self, rel: &Path, is_dir: bool) -> bool {
        let abs = self.root.join(rel);
        if self
            .extra
            .matched_path_or_any_parents(&abs, is_dir)
            .is_ignore()
        {
            return true;
        }
        let mut dir = rel.parent();
        while let Some(d) = dir {
            if let Some(g) = self.dirs.get(d) {
                let m = g.matched_path_or_any_parents(&abs, is_dir);
                if m.is_ignore() {
                    return true;
                }
                if m.is_whitelist() {
                    return false;
                }
            }
            dir = d.parent();
        }
        false
    }
}

fn rel_bytes(rel: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    rel.as_os_str().as_bytes().to_vec()
}

fn rel_path(rel: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(rel))
}

/// What the initial copy carried: each path's digest.
#[derive(Debug, Default)]
pub struct Copied {
    agreed: HashMap<Vec<u8>, u64>,
    /// Files copied.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A sync about to begin: this machine's side is already watched, so nothing changed
/// during the copy is missed.
#[derive(Debug)]
pub struct Prepared {
    root: PathBuf,
    options: SyncOptions,
    events: mpsc::UnboundedReceiver<PathBuf>,
    watcher: notify::RecommendedWatcher,
}

/// Starts watching `root` (a directory): the first step of a sync.
pub fn prepare(root: &Path, options: SyncOptions) -> std::io::Result<Prepared> {
    use notify::Watcher;
    let root = std::fs::canonicalize(root)?;
    let (tx, events) = mpsc::unbounded_channel();
    let base = root.clone();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            // Reading a file is an event too (ours included): only changes count.
            Ok(event) if event.kind.is_access() => {}
            Ok(event) => {
                for p in event.paths {
                    if let Ok(rel) = p.strip_prefix(&base) {
                        if !rel.as_os_str().is_empty() {
                            let _ = tx.send(rel.to_path_buf());
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching the synced directory"),
        })
        .map_err(std::io::Error::other)?;
    watcher
        .watch(&root, notify::RecursiveMode::Recursive)
        .map_err(std::io::Error::other)?;
    Ok(Prepared {
        root,
        options,
        events,
        watcher,
    })
}

/// A chunk of the initial archive.
pub type Chunk = std::io::Result<Vec<u8>>;

impl Prepared {
    /// The directory synced (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The tree as a tar stream whose entries sit under `prefix` (relative, such as
    /// `home/me/project`, with an entry for each of its directories), in chunks,
    /// produced on a thread of its own while it is read; then what it carried.
    pub fn archive(
        &self,
        prefix: &Path,
    ) -> (
        mpsc::Receiver<Chunk>,
        tokio::task::JoinHandle<std::io::Result<Copied>>,
    ) {
        let (tx, rx) = mpsc::channel(8);
        let (root, options, prefix) = (
            self.root.clone(),
            self.options.clone(),
            prefix.to_path_buf(),
        );
        let task = tokio::task::spawn_blocking(move || {
            let mut out = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let result = write_archive(&root, &options, &prefix, &mut out);
            match result {
                Ok(copied) => {
                    out.send()?;
                    Ok(copied)
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
                    Err(e)
                }
            }
        });
        (rx, task)
    }

    /// Keeps the tree in sync with the agent at the far end of `to_far`/`from_far`
    /// (`runner-shim --sync`), from what `copied` carried, until the [`Session`] is
    /// dropped. Waits for the agent to say it watches its side.
    pub async fn run(
        self,
        copied: Copied,
        to_far: Box<dyn AsyncWrite + Send + Unpin>,
        mut from_far: Box<dyn AsyncRead + Send + Unpin>,
    ) -> std::io::Result<Session> {
        let first = read_msg(&mut from_far).await?;
        if first != Some(Msg::Barrier(0)) {
            return Err(std::io::Error::other(format!(
                "the sync agent did not start: {first:?}"
            )));
        }
        let (far_tx, far_rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            loop {
                match read_msg(&mut from_far).await {
                    Ok(Some(m)) => {
                        if far_tx.send(m).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the sync agent");
                        return;
                    }
                }
            }
        });
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let mut filter = Filter::new(&self.root, &self.options);
        let loaded: Vec<PathBuf> = std::iter::once(PathBuf::new())
            .chain(
                copied
                    .agreed
                    .iter()
                    .filter(|(_, d)| **d == wire::digest(&Entry::Dir))
                    .map(|(p, _)| rel_path(p)),
            )
            .collect();
        for d in loaded {
            filter.load(&d);
        }
        let state = State {
            root: self.root.clone(),
            filter,
            agreed: copied.agreed,
            pending: HashMap::new(),
            by_seq: HashMap::new(),
            recheck: BTreeSet::new(),
            dirty: BTreeSet::new(),
            nacks: HashMap::new(),
            seq: 0,
            to_far,
        };
        let task = tokio::spawn(state.run(self.events, far_rx, cmd_rx, self.watcher, reader));
        Ok(Session { cmd: cmd_tx, task })
    }
}

const CHUNK: usize = 256 * 1024;

struct ChunkWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_archive(
    root: &Path,
    options: &SyncOptions,
    prefix: &Path,
    out: &mut ChunkWriter,
) -> std::io::Result<Copied> {
    let mut tar = tar::Builder::new(out);
    let mut copied = Copied::default();
    let mut at = PathBuf::new();
    for part in prefix.components() {
        at.push(part);
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, &at, std::io::empty())?;
    }
    let mut filter = Filter::new(root, options);
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        filter.load(&dir);
        let mut entries: Vec<_> = std::fs::read_dir(root.join(&dir))?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        entries.sort();
        for name in entries {
            let rel = dir.join(&name);
            let entry = wire::read_entry(&root.join(&rel))?;
            if filter.ignored(&rel, entry == Entry::Dir) {
                continue;
            }
            let path = prefix.join(&rel);
            match &entry {
                Entry::Absent => continue,
                Entry::Dir => {
                    let mut h = header(tar::EntryType::Directory, 0o755, 0);
                    tar.append_data(&mut h, &path, std::io::empty())?;
                    stack.push(rel.clone());
                }
                Entry::File { exec, data } => {
                    let mode = if *exec { 0o755 } else { 0o644 };
                    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
                    tar.append_data(&mut h, &path, &data[..])?;
                    copied.files += 1;
                    copied.bytes += data.len() as u64;
                }
                Entry::Link(target) => {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    tar.append_link(&mut h, &path, rel_path(target))?;
                }
            }
            copied.agreed.insert(rel_bytes(&rel), wire::digest(&entry));
        }
    }
    tar.finish()?;
    Ok(copied)
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    );
    h
}

async fn read_msg(r: &mut (dyn AsyncRead + Send + Unpin)) -> std::io::Result<Option<Msg>> {
    let mut header = [0u8; 9];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (kind, seq, len) = wire::header_of(&header)?;
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    Msg::decode(kind, seq, payload).map(Some)
}

/// A running sync; dropped, it stops (what was not yet carried stays where it is).
#[derive(Debug)]
pub struct Session {
    cmd: mpsc::UnboundedSender<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Returns once every change made on either side before the call has been carried
    /// across (or the sync ended): this machine's once they settle (no change seen
    /// for a moment), the far side's once the agent has sent all it saw.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(tx).is_ok() {
            let _ = rx.await;
        }
    }

    /// Whether the sync still runs (the far side may end it: the agent exited).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long this machine's side must be quiet before a flush asks the far side.
const SETTLE: Duration = Duration::from_millis(30);
/// Refusals in a row after which a path is left as it is on both sides (said).
const MAX_NACKS: u32 = 3;

struct State {
    root: PathBuf,
    filter: Filter,
    /// Path → the digest both sides last agreed on (absent: [`ABSENT`]).
    agreed: HashMap<Vec<u8>, u64>,
    /// Path → (request, digest sent) not yet answered.
    pending: HashMap<Vec<u8>, (u32, u64)>,
    by_seq: HashMap<u32, Vec<u8>>,
    /// Paths that changed here while a request for them was out.
    recheck: BTreeSet<Vec<u8>>,
    /// Paths that changed here, not yet looked at.
    dirty: BTreeSet<Vec<u8>>,
    nacks: HashMap<Vec<u8>, u32>,
    seq: u32,
    to_far: Box<dyn AsyncWrite + Send + Unpin>,
}

impl State {
    async fn run(
        mut self,
        mut local: mpsc::UnboundedReceiver<PathBuf>,
        mut far: mpsc::UnboundedReceiver<Msg>,
        mut cmds: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
        _watcher: notify::RecommendedWatcher,
        reader: tokio::task::JoinHandle<()>,
    ) {
        let _reader = AbortOnDrop(reader);
        // Flushes waiting: for this side to settle, then for a barrier's answer.
        let mut settling: Vec<oneshot::Sender<()>> = Vec::new();
        let mut barriers: HashMap<u32, Vec<oneshot::Sender<()>>> = HashMap::new();
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let settle_at = quiet_since + SETTLE;
            tokio::select! {
                Some(rel) = local.recv() => {
                    self.dirty.insert(rel_bytes(&rel));
                    while let Ok(rel) = local.try_recv() {
                        self.dirty.insert(rel_bytes(&rel));
                    }
                    quiet_since = tokio::time::Instant::now();
                }
                msg = far.recv() => {
                    let Some(msg) = msg else {
                        tracing::warn!(
                            target: NOTE_TARGET,
                            "the sync of {} ended: the far side is gone (changes are no longer carried)",
                            self.root.display()
                        );
                        break;
                    };
                    match msg {
                        Msg::Barrier(n) => {
                            for w in barriers.remove(&n).unwrap_or_default() {
                                let _ = w.send(());
                            }
                        }
                        msg => self.heard(msg).await,
                    }
                }
                Some(w) = cmds.recv() => {
                    settling.push(w);
                    quiet_since = tokio::time::Instant::now();
                }
                _ = tokio::time::sleep_until(settle_at), if !settling.is_empty() && self.pending.is_empty() && self.dirty.is_empty() => {
                    self.seq = self.seq.wrapping_add(1).max(1);
                    let n = self.seq;
                    barriers.insert(n, std::mem::take(&mut settling));
                    if self.send(&Msg::Barrier(n)).await.is_err() {
                        break;
                    }
                }
            }
            while let Some(rel) = self.dirty.pop_first() {
                if self.send_local(rel).await.is_err() {
                    return;
                }
            }
        }
    }

    async fn send(&mut self, msg: &Msg) -> std::io::Result<()> {
        let bytes = msg.encode();
        self.to_far.write_all(&bytes).await?;
        self.to_far.flush().await
    }

    fn is_ignored(&self, rel: &[u8], entry: &Entry) -> bool {
        self.filter.ignored(&rel_path(rel), *entry == Entry::Dir)
    }

    fn agreed(&self, rel: &[u8]) -> u64 {
        self.agreed.get(rel).copied().unwrap_or(ABSENT)
    }

    fn set_agreed(&mut self, rel: &[u8], d: u64) {
        if d == ABSENT {
            self.agreed.remove(rel);
        } else {
            self.agreed.insert(rel.to_vec(), d);
        }
    }

    /// The agreed paths under directory `rel`, deepest first.
    fn children(&self, rel: &[u8]) -> Vec<Vec<u8>> {
        let prefix = [rel, b"/"].concat();
        let mut under: Vec<Vec<u8>> = self
            .agreed
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        under.sort();
        under.reverse();
        under
    }

    fn local_entry(&self, rel: &[u8]) -> Entry {
        let Some(path) = wire::under(&self.root, rel) else {
            return Entry::Absent;
        };
        wire::read_entry(&path).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "cannot read a synced file");
            Entry::Absent
        })
    }

    /// A path changed here: carried across unless the far side already has it.
    async fn send_local(&mut self, rel: Vec<u8>) -> std::io::Result<()> {
        if rel
            .split(|b| *b == b'/')
            .any(|p| p.starts_with(TEMP_PREFIX.as_bytes()))
        {
            return Ok(());
        }
        if rel.ends_with(b".gitignore") {
            if let Some(dir) = rel_path(&rel).parent() {
                self.filter.load(dir);
            }
        }
        if self.pending.contains_key(&rel) {
            self.recheck.insert(rel);
            return Ok(());
        }
        let is_dir = wire::under(&self.root, &rel)
            .and_then(|p| std::fs::symlink_metadata(p).ok())
            .is_some_and(|m| m.is_dir());
        if self.filter.ignored(&rel_path(&rel), is_dir) {
            return Ok(());
        }
        let entry = self.local_entry(&rel);
        let d = wire::digest(&entry);
        let agreed = self.agreed(&rel);
        if d == agreed {
            return Ok(());
        }
        self.nacks.remove(&rel);
        match &entry {
            // What a removed directory held goes first.
            Entry::Absent if agreed == wire::digest(&Entry::Dir) => {
                for child in self.children(&rel) {
                    Box::pin(self.send_local(child)).await?;
                }
            }
            // A directory made or moved in: what it holds, after it.
            Entry::Dir => {
                if let Some(path) = wire::under(&self.root, &rel) {
                    self.filter.load(&rel_path(&rel));
                    if let Ok(read) = std::fs::read_dir(path) {
                        for e in read.flatten() {
                            use std::os::unix::ffi::OsStrExt;
                            let child = [&rel[..], b"/", e.file_name().as_bytes()].concat();
                            self.dirty.insert(child);
                        }
                    }
                }
            }
            _ => {}
        }
        self.put(rel, agreed, entry).await
    }

    async fn put(&mut self, rel: Vec<u8>, base: u64, entry: Entry) -> std::io::Result<()> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        self.pending
            .insert(rel.clone(), (seq, wire::digest(&entry)));
        self.by_seq.insert(seq, rel.clone());
        self.send(&Msg::Put {
            seq,
            base,
            path: rel,
            entry,
        })
        .await
    }

    async fn heard(&mut self, msg: Msg) {
        let result = match msg {
            Msg::Put { path, entry, .. } => {
                if self.pending.contains_key(&path) || self.is_ignored(&path, &entry) {
                    Ok(())
                } else {
                    self.far_changed(path, entry).await
                }
            }
            Msg::Ack(seq) => {
                if let Some(rel) = self.by_seq.remove(&seq) {
                    if let Some((_, d)) = self.pending.remove(&rel) {
                        self.set_agreed(&rel, d);
                    }
                    self.nacks.remove(&rel);
                    if self.recheck.remove(&rel) {
                        self.dirty.insert(rel);
                    }
                }
                Ok(())
            }
            Msg::Nack(seq) => {
                // The far side's entry follows; the rule is applied to it then.
                if let Some(rel) = self.by_seq.remove(&seq) {
                    self.pending.remove(&rel);
                    self.recheck.remove(&rel);
                    *self.nacks.entry(rel).or_default() += 1;
                }
                Ok(())
            }
            Msg::Warn(text) => {
                tracing::warn!("the sync's far side: {text}");
                Ok(())
            }
            Msg::Barrier(_) => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "the sync cannot write to the far side");
        }
    }

    /// The far side's `rel` now holds `entry`.
    async fn far_changed(&mut self, rel: Vec<u8>, entry: Entry) -> std::io::Result<()> {
        let far = wire::digest(&entry);
        let agreed = self.agreed(&rel);
        if far == agreed {
            return Ok(());
        }
        // What a directory removed there held, first.
        if entry == Entry::Absent && agreed == wire::digest(&Entry::Dir) {
            for child in self.children(&rel) {
                Box::pin(self.far_changed(child, Entry::Absent)).await?;
            }
        }
        let here_entry = self.local_entry(&rel);
        let here = wire::digest(&here_entry);
        if here == far {
            self.set_agreed(&rel, far);
            return Ok(());
        }
        let Some(path) = wire::under(&self.root, &rel) else {
            return Ok(());
        };
        if here == agreed {
            match wire::apply(&path, &entry) {
                Ok(()) => {
                    self.set_agreed(&rel, far);
                    if entry == Entry::Dir || rel.ends_with(b".gitignore") {
                        let dir = match entry {
                            Entry::Dir => rel_path(&rel),
                            _ => rel_path(&rel)
                                .parent()
                                .map(Path::to_path_buf)
                                .unwrap_or_default(),
                        };
                        self.filter.load(&dir);
                    }
                    return Ok(());
                }
                // Something new here in the way (a directory not empty): kept, and
                // it goes across as a change of this side's.
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "a change from the far side is in the way of one here");
                }
            }
        }
        // Both sides changed it: this machine's version wins; the far side's is kept.
        if self.nacks.get(&rel).copied().unwrap_or(0) >= MAX_NACKS {
            tracing::warn!(
                target: NOTE_TARGET,
                "{} differs on both sides and could not be reconciled: left as it is on each",
                path.display()
            );
            self.set_agreed(&rel, far);
            return Ok(());
        }
        if matches!(entry, Entry::File { .. } | Entry::Link(_)) {
            let copy = conflict_copy(&path);
            match wire::apply(&copy, &entry) {
                Ok(()) => tracing::info!(
                    target: NOTE_TARGET,
                    "{} changed on both sides: this machine's version is kept on both; the other side's is saved as {}",
                    path.display(),
                    copy.display()
                ),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "a conflict copy could not be saved: this path is left as it is on each side");
                    self.set_agreed(&rel, far);
                    return Ok(());
                }
            }
        } else {
            tracing::info!(
                target: NOTE_TARGET,
                "{} changed on both sides: this machine's version is kept on both (the other side had {})",
                path.display(),
                entry.kind()
            );
        }
        self.put(rel, far, here_entry).await
    }
}

/// The first free `PATH.runner-conflict`, `PATH.runner-conflict-2`, ….
fn conflict_copy(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    (1..)
        .map(|n| match n {
            1 => path.with_file_name(format!("{name}.runner-conflict")),
            n => path.with_file_name(format!("{name}.runner-conflict-{n}")),
        })
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| path.with_file_name(format!("{name}.runner-conflict")))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
