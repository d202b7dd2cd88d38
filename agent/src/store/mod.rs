//! The recording directory as a whole: where each stream's media lives, which catalog the
//! directory belongs to, and where unreadable media is moved aside.
//!
//! Rules this module keeps (the crash-ordering rules of each operation are in the segment
//! writer, recovery and deletion modules):
//! - a recording directory is indexed by exactly one catalog: both hold the same UUID pair
//!   ([`directory`]), checked before any media is read, written or deleted, so a lost or
//!   mistyped catalog can never delete media it does not know;
//! - media lives under `streams/`, one directory per stream named by [`layout`], so no stream
//!   name can reach the catalog, the logs or another stream's files;
//! - nothing on disk is deleted because it cannot be read: it is moved to `quarantine/`
//!   ([`quarantine`]) and the catalog remembers why;
//! - no media path is followed through a symbolic link ([`fsx`]).

pub mod directory;
pub mod fsx;
pub mod layout;
pub mod quarantine;
