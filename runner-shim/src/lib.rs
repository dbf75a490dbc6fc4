//! runner's resident helper inside a container, as a library: the wire protocol the
//! owner speaks with it ([`protocol`]), the two-way sync's wire ([`sync`]) and where the helper's source is, for the
//! build script that compiles it static ([`MAIN_SOURCE`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod protocol;
pub mod sync;

/// The helper program's source file; `runner-docker`'s build script compiles it with
/// `rustc -C target-feature=+crt-static` into a binary that runs in any Linux
/// container of the same architecture, whatever its C library.
pub const MAIN_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/main.rs");

/// The protocol module's source, which the helper program includes.
pub const PROTOCOL_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/protocol.rs");

/// The directory of every source the helper program includes (its modules beside
/// `main.rs`): a change to any of them rebuilds it.
pub const SOURCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
