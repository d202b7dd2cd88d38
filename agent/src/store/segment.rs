//! The segment writer: fragments -> Matroska files on disk -> rows in the catalog. Blocking
//! I/O; the job calls it on a blocking thread.
//!
//! # Durability (fsync policy)
//!
//! Kept in this order, as Moonfire NVR does, so that every catalog row describes bytes that are
//! durably on disk and a power cut loses at most the fragment in flight:
//!
//! 1. New file: create it `O_EXCL` with mode 0600 (its directories 0700, each new directory
//!    fsynced into its parent), write the header, fsync the file, fsync its directory, then
//!    insert the segment row. A crash before the row leaves a header-only file with no row,
//!    which recovery removes.
//! 2. Each fragment: write the whole Cluster at the segment's indexed end, `fdatasync` the file,
//!    then commit the fragment row (which also extends the segment's indexed size). A fragment
//!    is about 2 s of video, so one fsync per fragment costs little. A crash between the fsync
//!    and the commit leaves a complete cluster past the indexed size, which recovery registers.
//! 3. Any failed write, fsync or commit abandons the segment: the file is cut back to its
//!    indexed size (best effort; recovery does it otherwise), the row is closed, and the next
//!    fragment starts a new file. A failed fsync is never retried: after one, Linux may have
//!    dropped the dirty pages, so the data cannot be trusted (the "fsyncgate" lesson).

use crate::path_error::io_err;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tracing::{info, warn};

use super::{fsx, layout};
use crate::catalog::{Catalog, CatalogError, NewFragment, NewSegment, SegmentId};
use crate::media::fragment::Fragment;
use crate::media::mkv::{self, MkvError, TrackInfo};

#[derive(Debug, Error)]
pub enum SegmentError {
    #[error(transparent)]
    Io(#[from] crate::path_error::PathError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("cannot build a cluster: {0}")]
    Mkv(#[from] MkvError),
    #[error("{0:?} is not a stream name (1-256 characters of a-z, A-Z, 0-9, '_', '.', '-')")]
    BadStreamName(String),
    #[error("no random bytes for a SegmentUID: {0}")]
    Random(String),
}

/// What one [`SegmentWriter::write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub segment: SegmentId,
    pub fragment: i64,
    /// Set when this fragment opened a new file (relative path).
    pub new_file: Option<String>,
    /// Opening the new file closed the one before it.
    pub closed_previous: bool,
    /// The cluster's length on disk.
    pub bytes: u64,
}

#[derive(Debug)]
struct OpenSegment {
    id: SegmentId,
    file: File,
    path: PathBuf,
    /// Indexed size: where the next cluster goes.
    size: u64,
    track: Arc<TrackInfo>,
}

/// Appends one stream's fragments to its segment files.
pub struct SegmentWriter {
    root: PathBuf,
    stream: String,
    catalog: Arc<Catalog>,
    open: Option<OpenSegment>,
}

impl SegmentWriter {
    pub fn new(root: &Path, stream: &str, catalog: Arc<Catalog>) -> Result<Self, SegmentError> {
        if !layout::valid_stream_name(stream) {
            return Err(SegmentError::BadStreamName(stream.to_owned()));
        }
        Ok(SegmentWriter {
            root: root.to_owned(),
            stream: stream.to_owned(),
            catalog,
            open: None,
        })
    }

    /// Writes a fragment durably and indexes it, opening a new segment file when the fragment
    /// asks for one, when its codec differs from the open file's, or when none is open.
    pub fn write(&mut self, frag: &Fragment) -> Result<Written, SegmentError> {
        let cluster = mkv::cluster(&frag.frames)?;
        let needs_new =
            frag.new_segment || self.open.as_ref().is_none_or(|s| *s.track != *frag.track);
        let mut new_file = None;
        let mut closed_previous = false;
        if needs_new {
            closed_previous = self.close()?;
            new_file = Some(self.create(frag)?);
        }
        let seg = self.open.as_mut().expect("a segment is open");
        let offset = seg.size;
        let result = (|| -> Result<i64, SegmentError> {
            seg.file
                .write_all_at(&cluster, offset)
                .map_err(io_err("write", &seg.path))?;
            seg.file.sync_data().map_err(io_err("fsync", &seg.path))?;
            {
                Ok(self.catalog.add_fragment(
                    seg.id,
                    &NewFragment {
                        offset,
                        size: cluster.len() as u64,
                        timecode_ms: frag.timecode_ms(),
                        duration_ms: frag.duration_ms.max(0),
                        frame_count: frag.frames.len() as u32,
                        key_frame_count: frag.key_frame_count() as u32,
                        clock_unsynced: frag.clock_unsynced,
                    },
                )?)
            }
        })();
        match result {
            Ok(fragment) => {
                seg.size += cluster.len() as u64;
                Ok(Written {
                    segment: seg.id,
                    fragment,
                    new_file,
                    closed_previous,
                    bytes: cluster.len() as u64,
                })
            }
            Err(e) => {
                self.abandon();
                Err(e)
            }
        }
    }

    /// Closes the open segment, if any: its row becomes CLOSED and the file handle is released.
    /// Returns whether a segment was open.
    pub fn close(&mut self) -> Result<bool, SegmentError> {
        match self.open.take() {
            Some(seg) => {
                self.catalog.close_segment(seg.id)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Gives up on the open segment after a failure: cut the file back to what the catalog
    /// indexes and close the row; both best effort, recovery finishes the job after a crash.
    fn abandon(&mut self) {
        if let Some(seg) = self.open.take() {
            warn!(path = %seg.path.display(), "abandoning segment after a write failure");
            if let Err(e) = seg
                .file
                .set_len(seg.size)
                .and_then(|()| seg.file.sync_all())
            {
                warn!(path = %seg.path.display(), error = %e, "cannot truncate abandoned segment");
            }
            if let Err(e) = self.catalog.close_segment(seg.id) {
                warn!(error = %e, "cannot close abandoned segment");
            }
        }
    }

    fn create(&mut self, frag: &Fragment) -> Result<String, SegmentError> {
        let start_ms = frag.timecode_ms();
        let day = jiff::Timestamp::from_millisecond(start_ms)
            .map_err(|e| {
                crate::path_error::PathError::new(
                    "date of",
                    start_ms.to_string(),
                    io::Error::other(e),
                )
            })?
            .strftime("%Y-%m-%d")
            .to_string();
        let stream_dir = layout::stream_dir(&self.stream);
        let rel_dir = format!("{stream_dir}/{day}");
        let dir = self.root.join(&rel_dir);
        if !dir.is_dir() && !layout::is_plain(&self.stream) {
            // A mapped directory keeps the stream's name, for a rebuild from the files.
            let named = self.root.join(&stream_dir);
            fsx::ensure_dir(&named)?;
            let name_file = named.join(layout::NAME_FILE);
            if !name_file.exists() {
                fsx::write_small_file(&name_file, self.stream.as_bytes())?;
            }
        }
        fsx::ensure_dir(&dir)?;

        let mut uid = [0u8; 16];
        getrandom::fill(&mut uid).map_err(|e| SegmentError::Random(e.to_string()))?;
        let header = mkv::segment_header(&frag.track, uid);

        let (rel, path, file) = create_unique(&dir, &rel_dir, start_ms)?;
        let setup = (|| -> Result<(), SegmentError> {
            file.write_all_at(&header, 0)
                .map_err(io_err("write", &path))?;
            file.sync_all().map_err(io_err("fsync", &path))?;
            Ok(fsx::fsync_dir(&dir)?)
        })();
        if let Err(e) = setup {
            // Never indexed: remove it now rather than leave it to recovery.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let inserted = self.catalog.insert_segment(&NewSegment {
            stream_name: self.stream.clone(),
            path: rel.clone(),
            codec_id: frag.track.codec.codec_id().to_owned(),
            codec_private: frag.track.codec_private.clone(),
            width: frag.track.width,
            height: frag.track.height,
            header_size: header.len() as u64,
            start_ms,
        });
        let id = match inserted {
            Ok(id) => id,
            Err(e) => {
                // No row names the file (the catalog's disk full, say): remove it, or it
                // stays on disk unindexed, which `check` reports and the next start refuses
                // to guess about. A crash before this leaves the same orphan, which recovery
                // of the stream directory handles.
                let _ = std::fs::remove_file(&path);
                let _ = fsx::fsync_dir(&dir);
                return Err(e.into());
            }
        };
        info!(stream = %self.stream, path = %rel, "segment opened");
        self.open = Some(OpenSegment {
            id,
            file,
            path,
            size: header.len() as u64,
            track: frag.track.clone(),
        });
        Ok(rel)
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            warn!(error = %e, "cannot close segment");
        }
    }
}

/// `{start_ms}.mkv`, or `{start_ms}-{n}.mkv` if a file already has that name (a wall clock
/// stepped back across a restart).
fn create_unique(
    dir: &Path,
    rel_dir: &str,
    start_ms: i64,
) -> Result<(String, PathBuf, File), SegmentError> {
    for n in 0..1000 {
        let name = if n == 0 {
            format!("{start_ms}.mkv")
        } else {
            format!("{start_ms}-{n}.mkv")
        };
        let path = dir.join(&name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((format!("{rel_dir}/{name}"), path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create", &path)(e).into()),
        }
    }
    Err(io_err("create", dir)(io::Error::other("too many files with the same start time")).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::SegmentState;
    use crate::media::mkv::{VideoCodec, scan_segment};
    use std::os::unix::fs::PermissionsExt;

    fn frag(ts: i64, new_segment: bool, track: &Arc<TrackInfo>) -> Fragment {
        Fragment {
            new_segment,
            ..Fragment::sample(ts, 5, track)
        }
    }

    #[test]
    fn a_segment_whose_row_cannot_be_inserted_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("catalog.db");
        drop(Catalog::open(&db).unwrap());
        // A catalog that refuses writes, as one on a full disk does.
        let catalog = Arc::new(Catalog::open_read_only(&db).unwrap());
        let track = Arc::new(TrackInfo {
            codec: VideoCodec::H264,
            codec_private: vec![1, 77, 0, 30, 0xFF, 0xE0, 0],
            width: 640,
            height: 360,
        });
        let mut w = SegmentWriter::new(dir.path(), "cam", catalog).unwrap();
        let t0 = 1_764_028_800_000;
        assert!(w.write(&frag(t0, true, &track)).is_err());
        let day = dir.path().join("streams/cam/2025-11-25");
        let left: Vec<_> = std::fs::read_dir(&day).unwrap().collect();
        assert!(left.is_empty(), "an unindexed file was left: {left:?}");
    }

    #[test]
    fn writes_indexes_and_rolls() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(Catalog::open_in_memory().unwrap());
        let track = Arc::new(TrackInfo {
            codec: VideoCodec::H264,
            codec_private: vec![1, 77, 0, 30, 0xFF, 0xE0, 0],
            width: 640,
            height: 360,
        });
        let mut w = SegmentWriter::new(dir.path(), "cam", catalog.clone()).unwrap();
        let t0 = 1_764_028_800_000; // 2025-11-25T00:00:00Z
        let first = w.write(&frag(t0, true, &track)).unwrap();
        assert_eq!(
            first.new_file.as_deref(),
            Some(&*format!("streams/cam/2025-11-25/{t0}.mkv"))
        );
        assert!(
            w.write(&frag(t0 + 200, false, &track))
                .unwrap()
                .new_file
                .is_none()
        );
        assert!(
            w.write(&frag(t0 + 400, true, &track))
                .unwrap()
                .new_file
                .is_some()
        );
        drop(w);

        let segs = catalog.segments(Some("cam")).unwrap();
        assert_eq!(segs.len(), 2);
        assert!(segs.iter().all(|s| s.state == SegmentState::Closed));
        let path = dir.path().join(&segs[0].path);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dmeta = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(dmeta.permissions().mode() & 0o777, 0o700);
        assert_eq!(meta.len(), segs[0].size);
        let scan = scan_segment(File::open(&path).unwrap()).unwrap();
        let frags = catalog.fragments(segs[0].id).unwrap();
        assert_eq!(scan.clusters.len(), 2);
        for (c, f) in scan.clusters.iter().zip(&frags) {
            assert_eq!(
                (c.offset, c.size, c.timecode_ms),
                (f.offset, f.size, f.timecode_ms)
            );
            assert_eq!(f.frame_count, 5);
            assert_eq!(f.key_frame_count, 1);
        }
        assert_eq!(segs[0].end_ms, t0 + 400);
    }

    #[test]
    fn rejects_path_like_stream_names() {
        let catalog = Arc::new(Catalog::open_in_memory().unwrap());
        for bad in ["", "a/b", "x y", &"a".repeat(257)] {
            assert!(SegmentWriter::new(Path::new("/tmp"), bad, catalog.clone()).is_err());
        }
    }
}
