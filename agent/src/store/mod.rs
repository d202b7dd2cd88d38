//! The recording directory and everything that must keep its media files and the catalog's
//! rows in agreement, the product's core invariant. Nothing outside this module creates,
//! renames, truncates or deletes media; the recorder writes through [`segment`], the janitor
//! and a stream's deletion go through [`delete`], startup and `check --repair` through
//! [`recovery`], `check` through [`audit`].
//!
//! Crash ordering (each step durable before the next; the modules hold the details):
//! - writing ([`segment`]): create the file `O_EXCL` 0600, write the header, fsync the file and
//!   its directory, then insert the segment row; per fragment, write the whole Cluster at the
//!   indexed end, fdatasync, then commit the fragment row. A failed write or fsync abandons
//!   the segment and is never retried (fsyncgate). At most the fragment in flight is lost;
//! - deleting ([`delete`], one path for the janitor and for a whole stream): mark the row
//!   DELETING, unlink, fsync the directory, remove the rows;
//! - quarantine ([`quarantine`]): rename, fsync both directories, then one transaction
//!   records it and removes the rows;
//! - repair ([`recovery`]) finishes whatever a crash cut between two steps, and never deletes
//!   media: what it cannot read is quarantined;
//! - every directory fsync is [`fsx::fsync_dir`].
//!
//! Rules of the directory as a whole:
//! - a recording directory is indexed by exactly one catalog: both hold the same UUID pair
//!   ([`directory`]), checked before any media is read, written or deleted, so a lost or
//!   mistyped catalog can never delete media it does not know;
//! - media lives under `streams/`, one directory per stream named by [`layout`], so no stream
//!   name can reach the catalog, the logs or another stream's files;
//! - nothing on disk is deleted because it cannot be read: it is moved to `quarantine/`
//!   ([`quarantine`]) and the catalog remembers why;
//! - no media path is followed through a symbolic link ([`fsx`]).

pub mod audit;
pub mod delete;
pub mod directory;
pub mod fsx;
pub mod layout;
pub mod quarantine;
pub mod recovery;
pub mod segment;

use crate::catalog::CatalogError;
use crate::path_error::PathError;

/// What an operation on media and rows can fail on: a file-system step (naming its path) or
/// the catalog.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Io(#[from] PathError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}
