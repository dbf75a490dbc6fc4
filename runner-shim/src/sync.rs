//! The two-way sync's wire and its file operations, the same on both sides: the owner
//! (`runner_core::sync`, on this machine) and the agent (`runner-shim --sync DIR`,
//! where the processes run) each read and write a tree with these functions, and speak
//! these messages over the agent's stdin and stdout.
//!
//! A message is a 9-byte header — kind (`u8`), sequence number (`u32` LE), payload
//! length (`u32` LE) — then the payload. Paths are relative to the synced root,
//! `/`-separated, never empty, never with `..`.
//!
//! The owner decides; the agent applies only what matches what the owner last knew:
//! a [`Msg::Put`] carries the [`digest`] of the entry the owner believes is there
//! (`base`); the agent applies it when the entry there still has that digest (or
//! already has the new one) and answers [`Msg::Ack`], else answers [`Msg::Nack`]
//! followed by a change ([`Msg::Put`] with sequence 0) carrying what is there, so the
//! owner can apply its conflict rule. Standard library only: this file is compiled
//! into the static shim binary as well as into the owner, beside `protocol.rs`,
//! whose header reader it shares.

use std::hash::Hasher;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The digest of an absent entry.
pub const ABSENT: u64 = 0;
/// The prefix of the temporary files an entry is written through (renamed over the
/// entry once complete): neither side syncs them.
pub const TEMP_PREFIX: &str = ".runner-sync-";
/// The largest payload the reader accepts.
pub const MAX_PAYLOAD: u32 = u32::MAX >> 1;

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Nothing there.
    Absent,
    /// A directory.
    Dir,
    /// A regular file: whether it is executable, its content.
    File {
        /// Any execute bit set.
        exec: bool,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A symbolic link: its target, as written.
    Link(Vec<u8>),
}

impl Entry {
    /// What kind of entry, in words.
    pub fn kind(&self) -> &'static str {
        match self {
            Entry::Absent => "nothing",
            Entry::Dir => "a directory",
            Entry::File { .. } => "a file",
            Entry::Link(_) => "a symbolic link",
        }
    }
}

/// A digest of `entry` that changes whenever its kind, execute bit or content does;
/// [`ABSENT`] for [`Entry::Absent`]. Both sides are compiled by the same compiler, so
/// the standard library's default hasher (fixed keys) gives both the same digest.
pub fn digest(entry: &Entry) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    match entry {
        Entry::Absent => return ABSENT,
        Entry::Dir => h.write_u8(1),
        Entry::File { exec, data } => {
            h.write_u8(2);
            h.write_u8(u8::from(*exec));
            h.write(data);
        }
        Entry::Link(target) => {
            h.write_u8(3);
            h.write(target);
        }
    }
    h.finish().max(1)
}

/// A relative wire path as a path under `root`; `None` for an empty path, an absolute
/// one or one with `..` or `.` components.
pub fn under(root: &Path, rel: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if rel.is_empty() || rel.starts_with(b"/") {
        return None;
    }
    let mut out = root.to_path_buf();
    for part in rel.split(|b| *b == b'/') {
        if part.is_empty() || part == b"." || part == b".." {
            return None;
        }
        out.push(std::ffi::OsStr::from_bytes(part));
    }
    Some(out)
}

/// The entry at `path` now (a symbolic link is not followed).
pub fn read_entry(path: &Path) -> io::Result<Entry> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entry::Absent),
        Err(e) => return Err(e),
    };
    let kind = meta.file_type();
    if kind.is_dir() {
        Ok(Entry::Dir)
    } else if kind.is_symlink() {
        Ok(Entry::Link(
            std::fs::read_link(path)?.as_os_str().as_bytes().to_vec(),
        ))
    } else if kind.is_file() {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entry::Absent),
            Err(e) => return Err(e),
        };
        Ok(Entry::File {
            exec: meta.permissions().mode() & 0o111 != 0,
            data,
        })
    } else {
        // A socket, a fifo, a device: not synced.
        Ok(Entry::Absent)
    }
}

/// Makes `path` hold `entry`. A file or link is written beside it and renamed over it,
/// so a reader never sees half of one. A directory is removed only when empty: what
/// it holds is not lost (the error says so, and the caller tells the other side).
pub fn apply(path: &Path, entry: &Entry) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let parent = path.parent().unwrap_or(Path::new("/"));
    let existing = std::fs::symlink_metadata(path).ok();
    let is_dir = existing.as_ref().is_some_and(|m| m.file_type().is_dir());
    match entry {
        Entry::Absent => match existing {
            None => Ok(()),
            Some(_) if is_dir => std::fs::remove_dir(path),
            Some(_) => std::fs::remove_file(path),
        },
        Entry::Dir => {
            if existing.is_some() && !is_dir {
                std::fs::remove_file(path)?;
            }
            std::fs::create_dir_all(path)
        }
        Entry::File { .. } | Entry::Link(_) => {
            std::fs::create_dir_all(parent)?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let temp = parent.join(format!("{TEMP_PREFIX}{}-{name}", std::process::id()));
            let _ = std::fs::remove_file(&temp);
            match entry {
                Entry::File { exec, data } => {
                    let mut f = std::fs::File::create(&temp)?;
                    f.write_all(data)?;
                    let mode = if *exec { 0o755 } else { 0o644 };
                    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
                }
                Entry::Link(target) => {
                    use std::os::unix::ffi::OsStrExt;
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &temp)?;
                }
                _ => {}
            }
            if is_dir {
                if let Err(e) = std::fs::remove_dir(path) {
                    let _ = std::fs::remove_file(&temp);
                    return Err(e);
                }
            }
            std::fs::rename(&temp, path).inspect_err(|_| {
                let _ = std::fs::remove_file(&temp);
            })
        }
    }
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Owner → agent (`seq` > 0): make `path` hold `entry` if it still has digest
    /// `base`. Agent → owner (`seq` 0): `path` now holds `entry`.
    Put {
        /// The request's number, 0 for a change the agent saw.
        seq: u32,
        /// The digest the owner believes the entry has.
        base: u64,
        /// The path, relative to the root.
        path: Vec<u8>,
        /// What it holds.
        entry: Entry,
    },
    /// Agent → owner: request `seq` was applied.
    Ack(u32),
    /// Agent → owner: request `seq` was not applied (the entry there changed, or the
    /// change could not be made); a change with what is there follows.
    Nack(u32),
    /// Both ways: owner → agent, "tell me once you have sent every change made
    /// before now"; agent → owner, the same number, once it has.
    Barrier(u32),
    /// Agent → owner: something went wrong that the owner should say (a message).
    Warn(String),
}

const PUT: u8 = 1;
const ACK: u8 = 2;
const NACK: u8 = 3;
const BARRIER: u8 = 4;
const WARN: u8 = 5;

impl Msg {
    /// Writes the message's bytes to `w`.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let (kind, seq, payload) = match self {
            Msg::Put {
                seq,
                base,
                path,
                entry,
            } => {
                let mut p = Vec::with_capacity(32 + path.len());
                p.extend_from_slice(&base.to_le_bytes());
                p.extend_from_slice(&(path.len() as u32).to_le_bytes());
                p.extend_from_slice(path);
                match entry {
                    Entry::Absent => p.push(0),
                    Entry::Dir => p.push(1),
                    Entry::File { exec, .. } => p.push(if *exec { 3 } else { 2 }),
                    Entry::Link(_) => p.push(4),
                }
                w.write_all(&[PUT])?;
                w.write_all(&seq.to_le_bytes())?;
                let body: &[u8] = match entry {
                    Entry::File { data, .. } => data,
                    Entry::Link(target) => target,
                    _ => &[],
                };
                w.write_all(&((p.len() + body.len()) as u32).to_le_bytes())?;
                w.write_all(&p)?;
                return w.write_all(body);
            }
            Msg::Ack(seq) => (ACK, *seq, Vec::new()),
            Msg::Nack(seq) => (NACK, *seq, Vec::new()),
            Msg::Barrier(seq) => (BARRIER, *seq, Vec::new()),
            Msg::Warn(text) => (WARN, 0, text.as_bytes().to_vec()),
        };
        w.write_all(&[kind])?;
        w.write_all(&seq.to_le_bytes())?;
        w.write_all(&(payload.len() as u32).to_le_bytes())?;
        w.write_all(&payload)
    }

    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.write_to(&mut out);
        out
    }

    /// Reads one message; `None` at a clean end of the stream.
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<Msg>> {
        let Some(header) = crate::protocol::read_header(r)? else {
            return Ok(None);
        };
        let (kind, seq, len) = header_of(&header)?;
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload)?;
        Msg::decode(kind, seq, payload).map(Some)
    }

    /// The message of a header's kind and sequence number and its payload.
    pub fn decode(kind: u8, seq: u32, mut payload: Vec<u8>) -> io::Result<Msg> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
        Ok(match kind {
            PUT => {
                if payload.len() < 13 {
                    return Err(bad("a short put"));
                }
                let base = u64::from_le_bytes(payload[..8].try_into().map_err(|_| bad("base"))?);
                let plen = u32::from_le_bytes(payload[8..12].try_into().map_err(|_| bad("length"))?)
                    as usize;
                if payload.len() < 13 + plen {
                    return Err(bad("a short put"));
                }
                let path = payload[12..12 + plen].to_vec();
                let tag = payload[12 + plen];
                let body = payload.split_off(13 + plen);
                let entry = match tag {
                    0 => Entry::Absent,
                    1 => Entry::Dir,
                    2 | 3 => Entry::File {
                        exec: tag == 3,
                        data: body,
                    },
                    4 => Entry::Link(body),
                    _ => return Err(bad("an unknown entry kind")),
                };
                Msg::Put {
                    seq,
                    base,
                    path,
                    entry,
                }
            }
            ACK => Msg::Ack(seq),
            NACK => Msg::Nack(seq),
            BARRIER => Msg::Barrier(seq),
            WARN => Msg::Warn(String::from_utf8_lossy(&payload).into_owned()),
            _ => return Err(bad("an unknown message kind")),
        })
    }
}

/// Kind, sequence number and payload length of a 9-byte header.
pub fn header_of(header: &[u8; 9]) -> io::Result<(u8, u32, u32)> {
    let seq = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    let len = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a sync message of {len} bytes"),
        ));
    }
    Ok((header[0], seq, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for msg in [
            Msg::Put {
                seq: 7,
                base: 42,
                path: b"a/b.txt".to_vec(),
                entry: Entry::File {
                    exec: true,
                    data: b"hello".to_vec(),
                },
            },
            Msg::Put {
                seq: 0,
                base: 0,
                path: b"d".to_vec(),
                entry: Entry::Dir,
            },
            Msg::Put {
                seq: 1,
                base: 3,
                path: b"l".to_vec(),
                entry: Entry::Link(b"../x".to_vec()),
            },
            Msg::Put {
                seq: 1,
                base: 3,
                path: b"gone".to_vec(),
                entry: Entry::Absent,
            },
            Msg::Ack(3),
            Msg::Nack(4),
            Msg::Barrier(5),
            Msg::Warn("no".into()),
        ] {
            let bytes = msg.encode();
            let back = Msg::read_from(&mut &bytes[..]).unwrap().unwrap();
            assert_eq!(back, msg);
        }
    }

    #[test]
    fn paths_stay_under_the_root() {
        let root = Path::new("/r");
        assert_eq!(under(root, b"a/b"), Some(PathBuf::from("/r/a/b")));
        for bad in [&b""[..], b"/etc", b"a/../b", b"./a", b"a//b"] {
            assert_eq!(under(root, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn digests_tell_kinds_and_bits_apart() {
        let f = |exec, d: &[u8]| Entry::File {
            exec,
            data: d.to_vec(),
        };
        assert_eq!(digest(&Entry::Absent), ABSENT);
        assert_ne!(digest(&f(false, b"x")), digest(&f(true, b"x")));
        assert_ne!(digest(&f(false, b"x")), digest(&Entry::Link(b"x".to_vec())));
        assert_ne!(digest(&Entry::Dir), ABSENT);
        assert_eq!(digest(&f(false, b"x")), digest(&f(false, b"x")));
    }
}
