//! Moving aside what cannot be read: a segment whose header is garbage, a directory or a link
//! where a segment file was. Nothing is deleted for being unreadable (an operator or a better
//! tool may still recover it); it moves to `{root}/quarantine/{its path}` and the catalog keeps
//! a row saying where from and why.
//!
//! Order: rename (the object moves whole, a link is moved rather than followed), fsync both
//! directories, then one transaction records the quarantine and removes the segment's rows. A
//! crash before the commit leaves a row whose file is gone and whose quarantined copy exists;
//! [`finish_interrupted`] completes it at the next repair.

use std::path::{Path, PathBuf};

use tracing::warn;

use super::{StoreError, fsx};
use crate::catalog::{Catalog, SegmentId};
use crate::path_error::io_err;

/// The folder under the recording directory holding quarantined media.
pub const QUARANTINE: &str = "quarantine";

/// Moves `rel` (relative to `root`) to quarantine, removes segment `segment`'s rows if given,
/// and records why. Returns the quarantined path, relative to `root`.
pub fn move_aside(
    catalog: &Catalog,
    root: &Path,
    stream: &str,
    rel: &str,
    segment: Option<SegmentId>,
    reason: &str,
) -> Result<String, StoreError> {
    let from = root.join(rel);
    let (to_rel, to) = free_target(root, rel);
    let to_dir = to.parent().expect("a quarantine path has a parent");
    // Each new directory synced into its parent: the move's fsync below makes the object's
    // new name durable, which is worth nothing if the directory holding it is not.
    fsx::ensure_dir(to_dir)?;
    std::fs::rename(&from, &to).map_err(io_err("move to quarantine", &from))?;
    fsx::fsync_dir(to_dir)?;
    if let Some(dir) = from.parent() {
        fsx::fsync_dir_if_exists(dir)?;
        fsx::remove_empty_day_dir(root, dir)?;
    }
    let now = jiff::Timestamp::now().as_millisecond();
    catalog.quarantine(stream, rel, &to_rel, reason, segment, now)?;
    warn!(path = rel, to = %to_rel, reason, "moved to quarantine");
    Ok(to_rel)
}

/// Whether a quarantine of segment `rel` was cut short by a crash after the move; if so,
/// its rows are removed and the quarantine recorded, as [`move_aside`] would have.
pub fn finish_interrupted(
    catalog: &Catalog,
    root: &Path,
    stream: &str,
    rel: &str,
    segment: SegmentId,
) -> Result<bool, StoreError> {
    let q = format!("{QUARANTINE}/{rel}");
    if fsx::entry(&root.join(rel))? != fsx::Entry::Missing
        || fsx::entry(&root.join(&q))? == fsx::Entry::Missing
        || catalog.quarantined_from(rel)?.is_some()
    {
        return Ok(false);
    }
    let now = jiff::Timestamp::now().as_millisecond();
    catalog.quarantine(stream, rel, &q, "moved before a crash", Some(segment), now)?;
    Ok(true)
}

/// `quarantine/{rel}`, or with `.1`, `.2`... appended when something already has that name.
fn free_target(root: &Path, rel: &str) -> (String, PathBuf) {
    let mut n = 0;
    loop {
        let candidate = if n == 0 {
            format!("{QUARANTINE}/{rel}")
        } else {
            format!("{QUARANTINE}/{rel}.{n}")
        };
        let path = root.join(&candidate);
        if std::fs::symlink_metadata(&path).is_err() {
            return (candidate, path);
        }
        n += 1;
    }
}
