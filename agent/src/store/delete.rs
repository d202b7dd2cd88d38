//! Deleting media without ever leaving the catalog and the disk in disagreement: one segment
//! ([`delete`], the janitor's path), a whole stream ([`delete_stream`], built on the same
//! path), and a file no row describes ([`delete_unindexed`], recovery's).
//!
//! Order: the row is marked DELETING (from then on nothing reads or uploads it) -> the file is
//! unlinked -> its directory is fsynced (the unlink is durable) -> the rows are removed. A crash
//! between any two steps leaves a DELETING row, which [`finish`] completes at the next start:
//! whatever happened, the file is never indexed without existing, and never exists unindexed
//! for longer than until the next start.

use std::io;
use std::path::Path;

use super::fsx::{self, Entry};
use super::layout;
use super::{StoreError, quarantine};
use crate::catalog::{Catalog, CatalogError, SegmentRow};
use crate::path_error::{PathError, io_err};

/// Why a stream's deletion stopped; the stream's status details carry it.
#[derive(Debug, thiserror::Error)]
pub enum DeleteStreamError {
    #[error("cannot list the media: {0}")]
    List(#[source] CatalogError),
    #[error("cannot delete {path}: {source}")]
    Segment { path: String, source: StoreError },
    #[error("cannot delete the directory of {stream}: {source}")]
    Directory { stream: String, source: io::Error },
    #[error(transparent)]
    Fsync(#[from] PathError),
    #[error("cannot remove the configuration: {0}")]
    Config(#[source] CatalogError),
    /// The blocking task a caller ran [`delete_stream`] on panicked or was cancelled.
    #[error("deletion crashed: {0}")]
    Crashed(#[from] tokio::task::JoinError),
}

/// Deletes a segment file and its rows, in the crash-safe order.
pub fn delete(catalog: &Catalog, root: &Path, segment: &SegmentRow) -> Result<(), StoreError> {
    catalog.mark_segment_deleting(segment.id)?;
    finish(catalog, root, segment)
}

/// Completes the deletion of a segment already marked DELETING (the last steps of [`delete`],
/// also run by startup recovery for a deletion a crash interrupted).
pub fn finish(catalog: &Catalog, root: &Path, segment: &SegmentRow) -> Result<(), StoreError> {
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

/// Removes a segment file that no row describes (a crash between creating and indexing it):
/// unlink, then fsync its directory.
pub fn delete_unindexed(path: &Path) -> Result<(), StoreError> {
    std::fs::remove_file(path).map_err(io_err("remove", path))?;
    if let Some(dir) = path.parent() {
        fsx::fsync_dir(dir)?;
    }
    Ok(())
}

/// Removes a stream's media (each segment through [`delete`]), its directory, then its
/// configuration and job status. Only the stream's own directory is removed whole; a directory
/// from before `streams/` only once empty.
pub fn delete_stream(
    catalog: &Catalog,
    root: &Path,
    stream: &str,
) -> Result<(), DeleteStreamError> {
    let segments = catalog
        .segments(Some(stream))
        .map_err(DeleteStreamError::List)?;
    let stream_dir = layout::stream_dir(stream);
    // Segments recorded before `streams/` lived in `{root}/{stream}/`.
    let legacy = segments.iter().any(|s| !s.path.starts_with(&stream_dir));
    for s in segments {
        delete(catalog, root, &s).map_err(|source| DeleteStreamError::Segment {
            path: s.path.clone(),
            source,
        })?;
    }
    let dir = root.join(&stream_dir);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(DeleteStreamError::Directory {
                stream: stream.to_owned(),
                source,
            });
        }
    }
    if legacy {
        // Never a directory this stream's rows did not use (`log` may be the agent's own).
        let _ = std::fs::remove_dir(root.join(stream));
    }
    if let Some(parent) = dir.parent() {
        fsx::fsync_dir_if_exists(parent)?;
    }
    catalog
        .delete_config(stream)
        .map_err(DeleteStreamError::Config)?;
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
                clock_unsynced: false,
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

    #[test]
    fn a_stream_deletion_removes_its_segments_and_its_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        // A segment of the layout from before `streams/`, under `{root}/cam1/`.
        let (c, row) = setup(dir.path());
        std::fs::create_dir_all(dir.path().join("streams/cam1/2026-01-02")).unwrap();
        std::fs::create_dir_all(dir.path().join("streams/cam2")).unwrap();
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        delete_stream(&c, dir.path(), "cam1").unwrap();
        assert!(c.segments(Some("cam1")).unwrap().is_empty());
        assert!(c.segment(row.id).unwrap().is_none());
        assert!(!dir.path().join("cam1").exists());
        assert!(!dir.path().join("streams/cam1").exists());
        assert!(dir.path().join("streams/cam2").is_dir());
        assert!(dir.path().join("log").is_dir());
    }
}
