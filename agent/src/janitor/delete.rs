//! Deleting a segment without ever leaving the catalog and the disk in disagreement.
//!
//! Order: the row is marked DELETING (from then on nothing reads or uploads it) -> the file is
//! unlinked -> its directory is fsynced (the unlink is durable) -> the rows are removed. A crash
//! between any two steps leaves a DELETING row, which [`finish`] completes at the next start:
//! whatever happened, the file is never indexed without existing, and never exists unindexed
//! for longer than until the next start.

use std::io;
use std::path::Path;

use crate::catalog::{Catalog, CatalogError, SegmentRow};
use crate::path_error::io_err;
use crate::store::fsx::{self, Entry};
use crate::store::quarantine::{self, QuarantineError};

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(transparent)]
    Io(#[from] crate::path_error::PathError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Quarantine(#[from] QuarantineError),
}

/// Deletes a segment file and its rows, in the crash-safe order.
pub fn delete(catalog: &Catalog, root: &Path, segment: &SegmentRow) -> Result<(), DeleteError> {
    catalog.mark_segment_deleting(segment.id)?;
    finish(catalog, root, segment)
}

/// Completes the deletion of a segment already marked DELETING (the last steps of [`delete`],
/// also run by startup recovery for a deletion a crash interrupted).
pub fn finish(catalog: &Catalog, root: &Path, segment: &SegmentRow) -> Result<(), DeleteError> {
    let path = root.join(&segment.path);
    if let Entry::Other(what) = fsx::entry(&path)? {
        // Not our file (a directory or device put in its place): moved aside, never emptied,
        // so the deletion still completes.
        let reason = format!("{what} stood where a segment being deleted was");
        quarantine::move_aside(
            catalog,
            root,
            &segment.stream_name,
            &segment.path,
            Some(segment.id),
            &reason,
        )?;
        return Ok(());
    }
    // A regular file or a link: unlinking never follows a link.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &path)(e).into()),
    }
    if let Some(dir) = path.parent() {
        fsx::fsync_dir_if_exists(dir)?;
        fsx::remove_empty_day_dir(root, dir)?;
    }
    catalog.remove_segment(segment.id)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{NewFragment, NewSegment};

    fn setup(root: &Path) -> (Catalog, SegmentRow) {
        let c = Catalog::open_in_memory().unwrap();
        let rel = "cam1/2026-01-01/1767225600000.mkv";
        std::fs::create_dir_all(root.join("cam1/2026-01-01")).unwrap();
        std::fs::write(root.join(rel), vec![0u8; 400]).unwrap();
        let id = c
            .insert_segment(&NewSegment {
                stream_name: "cam1".into(),
                path: rel.into(),
                codec_id: "V_MPEG4/ISO/AVC".into(),
                codec_private: vec![1],
                width: 2,
                height: 2,
                header_size: 300,
                start_ms: 0,
            })
            .unwrap();
        c.add_fragment(
            id,
            &NewFragment {
                offset: 300,
                size: 100,
                timecode_ms: 0,
                duration_ms: 2000,
                frame_count: 1,
                key_frame_count: 1,
            },
        )
        .unwrap();
        let row = c.segment(id).unwrap().unwrap();
        (c, row)
    }

    #[test]
    fn delete_removes_file_rows_and_the_empty_day_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (c, row) = setup(dir.path());
        delete(&c, dir.path(), &row).unwrap();
        assert!(c.segment(row.id).unwrap().is_none());
        assert!(c.fragments(row.id).unwrap().is_empty());
        assert!(!dir.path().join("cam1/2026-01-01").exists());
        assert!(
            dir.path().join("cam1").is_dir(),
            "the stream directory stays"
        );
    }

    #[test]
    fn finish_completes_a_deletion_interrupted_before_or_after_the_unlink() {
        let dir = tempfile::tempdir().unwrap();
        let (c, row) = setup(dir.path());
        c.mark_segment_deleting(row.id).unwrap();
        finish(&c, dir.path(), &row).unwrap();
        assert!(c.segment(row.id).unwrap().is_none());

        let (c, row) = setup(dir.path());
        c.mark_segment_deleting(row.id).unwrap();
        std::fs::remove_file(dir.path().join(&row.path)).unwrap();
        finish(&c, dir.path(), &row).unwrap();
        assert!(
            c.segment(row.id).unwrap().is_none(),
            "a missing file is not an error"
        );
    }

    #[test]
    fn a_day_directory_with_other_segments_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (c, row) = setup(dir.path());
        std::fs::write(dir.path().join("cam1/2026-01-01/other.mkv"), b"x").unwrap();
        delete(&c, dir.path(), &row).unwrap();
        assert!(dir.path().join("cam1/2026-01-01/other.mkv").is_file());
    }

    #[test]
    fn a_directory_in_a_segments_place_is_quarantined_and_the_deletion_completes() {
        let dir = tempfile::tempdir().unwrap();
        let (c, row) = setup(dir.path());
        let seg = dir.path().join(&row.path);
        std::fs::remove_file(&seg).unwrap();
        std::fs::create_dir_all(seg.join("inner")).unwrap();
        std::fs::write(seg.join("inner/keep"), b"someone's").unwrap();
        delete(&c, dir.path(), &row).unwrap();
        assert!(c.segment(row.id).unwrap().is_none());
        assert!(!seg.exists());
        let q = c.quarantined(None).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].original_path, row.path);
        let kept = dir.path().join(&q[0].path).join("inner/keep");
        assert_eq!(std::fs::read(kept).unwrap(), b"someone's");
    }

    #[test]
    fn a_link_in_a_segments_place_is_unlinked_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (c, row) = setup(dir.path());
        let seg = dir.path().join(&row.path);
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("precious");
        std::fs::write(&victim, b"data").unwrap();
        std::fs::remove_file(&seg).unwrap();
        std::os::unix::fs::symlink(&victim, &seg).unwrap();
        delete(&c, dir.path(), &row).unwrap();
        assert!(std::fs::symlink_metadata(&seg).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"data");
    }
}
