//! Startup repair of segment files against the catalog.
//!
//! [`recover`] runs before a stream's recorder starts (never while one writes), after the
//! recording directory was found to belong to the catalog ([`super::directory`]), and brings the
//! catalog and the disk into agreement without ever deleting media:
//! - DELETING rows: the deletion a crash interrupted is finished ([`super::delete::finish`]);
//! - rows whose file is gone: removed (logged: media was lost outside the agent), unless a
//!   quarantine a crash interrupted moved it, which is completed;
//! - rows where a directory, link or special file stands, or whose file's header is
//!   unreadable: the object is moved to quarantine ([`super::quarantine`]), never followed;
//! - OPEN rows (a crash mid-segment): complete, key-first clusters past the indexed size were
//!   fsynced before the crash could have stopped the commit, so they are fsynced again and
//!   registered; the file is then cut at its last complete cluster and the row closed;
//! - files shorter than their indexed size (the disk lost their end): the rows are cut back to
//!   the last fragment that is still whole on disk;
//! - a segment left with no fragment (open at a crash, or closed after its first write failed)
//!   is removed: it holds no media;
//! - CLOSED rows whose file holds bytes past the indexed size (an abandoned segment): cut;
//! - segment files with no row: a crash between creating a file and indexing it leaves only a
//!   header, which is removed; a file holding media (restored by an operator, or indexed by a
//!   catalog since lost) is indexed again, its fragments pending upload; one that cannot be
//!   read is quarantined. Files not named like ours are left alone.
//!
//! The read-only comparison behind `kvs-edge-agent check` is [`super::audit`].

use std::fs::File;
use std::io;
use std::path::Path;

use tracing::{info, warn};

use super::StoreError;
use super::delete;
use super::fsx::{self, Entry};
use super::layout::{self, MediaFile};
use super::quarantine;
use crate::catalog::{Catalog, CatalogError, NewFragment, NewSegment, SegmentRow, SegmentState};
use crate::media::mkv::{MkvError, SegmentReader, scan_segment};
use crate::path_error::{PathError, io_err};

/// What recovery did, one line per action (also logged).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub actions: Vec<String>,
    /// Problems recovery could not fix.
    pub unresolved: Vec<String>,
}

impl RecoveryReport {
    fn act(&mut self, msg: String) {
        info!("recovery: {msg}");
        self.actions.push(msg);
    }

    fn unresolved(&mut self, msg: String) {
        warn!("recovery: {msg}");
        self.unresolved.push(msg);
    }
}

/// [`recover`] for one stream on a blocking thread, as the supervisor runs it before each
/// recording.
pub async fn recover_stream(
    catalog: std::sync::Arc<Catalog>,
    root: &Path,
    stream: &str,
) -> Result<RecoveryReport, StoreError> {
    let (root, stream) = (root.to_owned(), stream.to_owned());
    catalog
        .blocking(move |c| recover(c, &root, Some(&stream)))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Repairs the segments of `stream` (every stream when `None`) under `root`. Must not run while
/// a recorder writes to them.
pub fn recover(
    catalog: &Catalog,
    root: &Path,
    stream: Option<&str>,
) -> Result<RecoveryReport, StoreError> {
    let mut report = RecoveryReport::default();
    let rows = catalog.segments(stream)?;
    for row in &rows {
        match row.state {
            SegmentState::Deleting => {
                delete::finish(catalog, root, row)?;
                report.act(format!("{}: finished deleting", row.path));
            }
            SegmentState::Open | SegmentState::Closed => {
                repair_segment(catalog, root, row, &mut report)?
            }
        }
    }
    let known: std::collections::HashSet<String> = catalog
        .segments(stream)?
        .into_iter()
        .map(|r| r.path)
        .collect();
    for file in layout::media_files(root, stream)? {
        if !known.contains(&file.rel) {
            adopt_file(catalog, root, &file, &mut report)?;
        }
    }
    Ok(report)
}

/// Brings one OPEN or CLOSED row and its file into agreement.
fn repair_segment(
    catalog: &Catalog,
    root: &Path,
    row: &SegmentRow,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    let Some((file, len)) = open_indexed(catalog, root, row, report)? else {
        return Ok(());
    };
    let mut indexed = row.size;
    if len < row.size {
        match keep_whole_fragments(catalog, row, &file, len, report)? {
            Some(whole) => indexed = whole,
            None => {
                // No fragment is whole, but media bytes remain: a tool may still salvage frames.
                drop(file);
                let reason = format!(
                    "cut short by the disk to {len} of {} indexed bytes, no fragment whole",
                    row.size
                );
                let msg = quarantine_row(catalog, root, row, reason)?;
                report.unresolved(msg);
                return Ok(());
            }
        }
    }
    let path = root.join(&row.path);
    if row.state == SegmentState::Open && len > indexed {
        register_written_tail(catalog, row, &file, &path, &mut indexed, report)?;
    }
    if len > indexed {
        truncate(&file, &path, indexed)?;
        report.act(format!(
            "{}: truncated {} bytes past the last complete fragment",
            row.path,
            len - indexed
        ));
    }
    drop(file);
    close_or_remove(catalog, root, row, report)
}

/// The file of `row` opened for repair, with its length. `None` when there is no segment file
/// to repair: a missing one is forgotten, anything else standing there quarantined.
fn open_indexed(
    catalog: &Catalog,
    root: &Path,
    row: &SegmentRow,
    report: &mut RecoveryReport,
) -> Result<Option<(File, u64)>, StoreError> {
    let path = root.join(&row.path);
    let len = match fsx::entry(&path)? {
        Entry::File(len) => len,
        Entry::Missing => {
            forget_missing(catalog, root, row, report)?;
            return Ok(None);
        }
        Entry::Other(what) => {
            let msg = quarantine_row(
                catalog,
                root,
                row,
                format!("{what} stands where the segment file was"),
            )?;
            report.act(msg);
            return Ok(None);
        }
    };
    let file = fsx::open_media_rw(&path).map_err(io_err("open", &path))?;
    if let Err(e) = SegmentReader::new(&file) {
        drop(file);
        let msg = quarantine_row(
            catalog,
            root,
            row,
            format!("unreadable segment header ({e})"),
        )?;
        report.act(msg);
        return Ok(None);
    }
    Ok(Some((file, len)))
}

/// A row whose file is gone: either a quarantine a crash interrupted, completed now, or media
/// lost outside the agent, whose rows are removed.
fn forget_missing(
    catalog: &Catalog,
    root: &Path,
    row: &SegmentRow,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    if quarantine::finish_interrupted(catalog, root, &row.stream_name, &row.path, row.id)? {
        report.act(format!("{}: finished moving it to quarantine", row.path));
        return Ok(());
    }
    let fragments = count_fragments(catalog, row)?;
    catalog.remove_segment(row.id)?;
    report.act(format!(
        "{}: file missing, removed its row and {fragments} fragment rows",
        row.path
    ));
    Ok(())
}

/// A file the disk cut to `len`, shorter than its indexed size: the rows are cut back to the
/// fragments still whole, and the new indexed size returned. `None` (rows untouched) when no
/// fragment is whole but media bytes remain past the header.
fn keep_whole_fragments(
    catalog: &Catalog,
    row: &SegmentRow,
    file: &File,
    len: u64,
    report: &mut RecoveryReport,
) -> Result<Option<u64>, StoreError> {
    let indexed = whole_prefix(catalog, row, file, len)?;
    if indexed <= row.header_size && len > row.header_size {
        return Ok(None);
    }
    let dropped = catalog.cut_segment(row.id, indexed)?;
    report.unresolved(format!(
        "{}: file is {len} bytes but {} were indexed (the disk lost its end); kept the \
         {indexed} bytes still whole, dropped {dropped} fragment row(s)",
        row.path, row.size
    ));
    Ok(Some(indexed))
}

/// An OPEN row's complete clusters past `*indexed` were fsynced before a crash could stop
/// their commit: they are fsynced again and indexed, advancing `*indexed`.
fn register_written_tail(
    catalog: &Catalog,
    row: &SegmentRow,
    file: &File,
    path: &Path,
    indexed: &mut u64,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    // Make what is there durable before trusting it enough to index.
    file.sync_all().map_err(io_err("fsync", path))?;
    let registered = register_tail(catalog, row, file, indexed).unwrap_or_else(|e| {
        warn!(path = %row.path, error = %e, "recovery: cannot read the unindexed tail");
        0
    });
    if registered > 0 {
        report.act(format!(
            "{}: registered {registered} complete fragment(s) written before the crash",
            row.path
        ));
    }
    Ok(())
}

/// The end of a repaired row: one left with no fragment is deleted, an OPEN one closed.
fn close_or_remove(
    catalog: &Catalog,
    root: &Path,
    row: &SegmentRow,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    if catalog.fragments(row.id)?.is_empty() {
        // A header with no fragment: left open by a crash, or closed when its first write
        // failed (ENOSPC). Nothing to keep, and players refuse such a file.
        delete::delete(catalog, root, row)?;
        report.act(format!("{}: removed segment with no fragment", row.path));
    } else if row.state == SegmentState::Open {
        catalog.close_segment(row.id)?;
        report.act(format!("{}: closed segment left open", row.path));
    }
    Ok(())
}

/// Cuts a file to `len` bytes, durably.
fn truncate(file: &File, path: &Path, len: u64) -> Result<(), PathError> {
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(io_err("truncate", path))
}

/// Moves a segment to quarantine with its rows; says what was done.
fn quarantine_row(
    catalog: &Catalog,
    root: &Path,
    row: &SegmentRow,
    reason: String,
) -> Result<String, StoreError> {
    let to = quarantine::move_aside(
        catalog,
        root,
        &row.stream_name,
        &row.path,
        Some(row.id),
        &reason,
    )?;
    Ok(format!("{}: {reason}; moved to {to}", row.path))
}

/// The indexed bytes of `row` still whole in a file cut to `len`: up to the end of the last
/// fragment row that lies inside the file as a readable cluster.
fn whole_prefix(
    catalog: &Catalog,
    row: &SegmentRow,
    file: &File,
    len: u64,
) -> Result<u64, StoreError> {
    let rows = catalog.fragments(row.id)?;
    let scan = scan_segment(file).map_err(|e| mkv_err(&row.path, e))?;
    let mut end = row.header_size.min(len);
    for f in rows {
        let whole = f.offset + f.size <= len
            && scan
                .clusters
                .iter()
                .any(|c| (c.offset, c.size) == (f.offset, f.size));
        if !whole || f.offset != end {
            break;
        }
        end = f.offset + f.size;
    }
    Ok(end)
}

/// A segment file the catalog has no row for.
fn adopt_file(
    catalog: &Catalog,
    root: &Path,
    file: &MediaFile,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    let quarantine = |report: &mut RecoveryReport, reason: String| {
        let to = quarantine::move_aside(catalog, root, &file.stream, &file.rel, None, &reason)?;
        report.act(format!("{}: {reason}; moved to {to}", file.rel));
        Ok::<(), StoreError>(())
    };
    let len = match fsx::entry(&file.path)? {
        Entry::Missing => return Ok(()),
        Entry::Other(what) => return quarantine(report, format!("{what} named like a segment")),
        Entry::File(len) => len,
    };
    if len == 0 {
        remove_unindexed(file, report, "empty file with no catalog row")?;
        return Ok(());
    }
    let f = fsx::open_media_rw(&file.path).map_err(io_err("open", &file.path))?;
    let mut reader = match SegmentReader::new(&f) {
        Ok(r) => r,
        Err(e) => {
            drop(f);
            return quarantine(report, format!("unreadable segment header ({e})"));
        }
    };
    let header = reader.header().clone();
    let mut indexed = header.header_len;
    let fragments = complete_clusters(&mut reader, &mut indexed);
    drop(reader);
    if fragments.is_empty() {
        // A crash between creating the file and indexing it: a header, no media.
        drop(f);
        remove_unindexed(file, report, "header with no catalog row and no media")?;
        return Ok(());
    }
    f.sync_all().map_err(io_err("fsync", &file.path))?;
    if len > indexed {
        truncate(&f, &file.path, indexed)?;
    }
    let id = catalog.insert_segment(&NewSegment {
        stream_name: file.stream.clone(),
        path: file.rel.clone(),
        codec_id: header.track.codec.codec_id().to_owned(),
        codec_private: header.track.codec_private.clone(),
        width: header.track.width,
        height: header.track.height,
        header_size: header.header_len,
        start_ms: fragments[0].timecode_ms,
    })?;
    for frag in &fragments {
        catalog.add_fragment(id, frag)?;
    }
    catalog.close_segment(id)?;
    report.act(format!(
        "{}: indexed {} fragment(s) found with no catalog row (pending upload)",
        file.rel,
        fragments.len()
    ));
    Ok(())
}

fn remove_unindexed(
    file: &MediaFile,
    report: &mut RecoveryReport,
    why: &str,
) -> Result<(), StoreError> {
    delete::delete_unindexed(&file.path)?;
    report.act(format!("{}: removed {why}", file.rel));
    Ok(())
}

fn count_fragments(catalog: &Catalog, row: &SegmentRow) -> Result<usize, CatalogError> {
    // Rows cascade with the segment; the count is for the log only.
    Ok(catalog.fragments(row.id).map(|f| f.len()).unwrap_or(0))
}

/// The complete key-first clusters that start at `*indexed` and follow each other, advancing
/// it past them. A torn or foreign cluster ends the walk: everything after it is cut.
fn complete_clusters<R: io::Read + io::Seek>(
    reader: &mut SegmentReader<R>,
    indexed: &mut u64,
) -> Vec<NewFragment> {
    let mut out = Vec::new();
    while let Ok(Some(cluster)) = reader.next_cluster() {
        let s = &cluster.summary;
        if s.offset < *indexed {
            continue;
        }
        if s.offset != *indexed || !s.key_first || s.frame_count == 0 {
            break;
        }
        out.push(NewFragment {
            offset: s.offset,
            size: s.size,
            timecode_ms: s.timecode_ms,
            duration_ms: s.duration_ms.max(0),
            frame_count: s.frame_count as u32,
            key_frame_count: cluster.frames.iter().filter(|f| f.key).count() as u32,
            clock_unsynced: false,
        });
        *indexed = s.end();
    }
    out
}

/// Indexes the complete key-first clusters that start at `*indexed`, advancing it.
fn register_tail(
    catalog: &Catalog,
    row: &SegmentRow,
    file: &File,
    indexed: &mut u64,
) -> Result<usize, StoreError> {
    let mut reader = SegmentReader::new(file).map_err(|e| mkv_err(&row.path, e))?;
    let fragments = complete_clusters(&mut reader, indexed);
    for f in &fragments {
        catalog.add_fragment(row.id, f)?;
    }
    Ok(fragments.len())
}

fn mkv_err(path: &str, e: MkvError) -> StoreError {
    crate::path_error::PathError::new("read segment", path, io::Error::other(e)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::fragment::Fragment;
    use crate::media::mkv::{TrackInfo, VideoCodec};
    use crate::store::audit::audit;
    use crate::store::segment::SegmentWriter;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::sync::Arc;

    fn frag(ts: i64) -> Fragment {
        let track = Arc::new(TrackInfo {
            codec: VideoCodec::H264,
            codec_private: vec![1, 77, 0, 30, 0xFF, 0xE0, 0],
            width: 64,
            height: 64,
        });
        Fragment::sample(ts, 3, &track)
    }

    #[test]
    fn crash_leftovers_are_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let catalog = Arc::new(Catalog::open_in_memory().unwrap());
        let t0 = 1_764_028_800_000;
        let mut w = SegmentWriter::new(root, "cam", catalog.clone()).unwrap();
        w.write(&frag(t0)).unwrap();
        w.write(&frag(t0 + 120)).unwrap();
        // Simulate a crash: forget the writer without closing the row.
        std::mem::forget(w);
        let seg = catalog.segments(Some("cam")).unwrap().remove(0);
        assert_eq!(seg.state, SegmentState::Open);
        let path = root.join(&seg.path);
        // A complete cluster written but not committed, then half of another.
        let c3 = crate::media::mkv::cluster(&frag(t0 + 240).frames).unwrap();
        let c4 = crate::media::mkv::cluster(&frag(t0 + 360).frames).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&c3).unwrap();
        f.write_all(&c4[..c4.len() / 2]).unwrap();
        drop(f);
        // A header-only orphan and a stranger's file.
        let orphan = path.with_file_name(format!("{}.mkv", t0 + 999));
        std::fs::write(&orphan, b"x").unwrap();
        let foreign = path.with_file_name("holiday.mkv");
        std::fs::write(&foreign, b"x").unwrap();

        let before = audit(&catalog, root, None).unwrap();
        assert!(before.problems.len() >= 2, "{:?}", before.problems);

        let report = recover(&catalog, root, Some("cam")).unwrap();
        assert!(report.unresolved.is_empty());
        assert!(!orphan.exists());
        assert!(foreign.exists());
        std::fs::remove_file(&foreign).unwrap();

        let seg = catalog.segment(seg.id).unwrap().unwrap();
        assert_eq!(seg.state, SegmentState::Closed);
        assert_eq!(catalog.fragments(seg.id).unwrap().len(), 3);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), seg.size);
        let after = audit(&catalog, root, None).unwrap();
        assert_eq!(after.problems, Vec::<String>::new());
        assert_eq!((after.segments, after.fragments, after.files), (1, 3, 1));
    }

    #[test]
    fn missing_files_and_empty_open_segments_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let catalog = Arc::new(Catalog::open_in_memory().unwrap());
        let t0 = 1_764_028_800_000;
        let mut w = SegmentWriter::new(root, "cam", catalog.clone()).unwrap();
        w.write(&frag(t0)).unwrap();
        let mut second = frag(t0 + 120);
        second.new_segment = true;
        w.write(&second).unwrap();
        std::mem::forget(w);
        let segs = catalog.segments(Some("cam")).unwrap();
        std::fs::remove_file(root.join(&segs[0].path)).unwrap();
        // Second segment: cut back to its header, as if the first cluster never made it.
        let p1 = root.join(&segs[1].path);
        let f = OpenOptions::new().write(true).open(&p1).unwrap();
        f.set_len(segs[1].header_size + 5).unwrap();
        drop(f);
        let report = recover(&catalog, root, None).unwrap();
        assert_eq!(report.unresolved.len(), 1, "{report:?}");
        assert!(catalog.segment(segs[0].id).unwrap().is_none());
        // Nothing whole was left of the second: cut to its header, it held no media.
        assert!(catalog.segment(segs[1].id).unwrap().is_none());
        assert_eq!(
            audit(&catalog, root, None).unwrap().problems,
            Vec::<String>::new()
        );
    }

    /// One closed segment of three fragments for `stream`, and its row.
    fn recorded(root: &Path, catalog: &Arc<Catalog>, stream: &str) -> SegmentRow {
        let t0 = 1_764_028_800_000;
        let mut w = SegmentWriter::new(root, stream, catalog.clone()).unwrap();
        for i in 0..3 {
            w.write(&frag(t0 + i * 120)).unwrap();
        }
        drop(w);
        catalog.segments(Some(stream)).unwrap().remove(0)
    }

    #[test]
    fn a_segment_cut_mid_cluster_keeps_its_whole_fragments() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(Catalog::open_in_memory().unwrap());
        let row = recorded(dir.path(), &catalog, "cam");
        let frags = catalog.fragments(row.id).unwrap();
        let cut = frags[2].offset + frags[2].size / 2;
        let path = dir.path().join(&row.path);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let report = recover(&catalog, dir.path(), None).unwrap();
        assert_eq!(report.unresolved.len(), 1, "{report:?}");
        let after = catalog.segment(row.id).unwrap().unwrap();
        assert_eq!(after.size, frags[2].offset);
        assert_eq!(catalog.fragments(row.id).unwrap().len(), 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), frags[2].offset);
        let audit = audit(&catalog, dir.path(), None).unwrap();
        assert_eq!(audit.problems, Vec::<String>::new());
    }

    #[test]
    fn unreadable_things_in_a_segments_place_are_quarantined_not_deleted() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("precious");
        std::fs::write(&victim, b"not media").unwrap();
        type Damage<'a> = &'a dyn Fn(&Path);
        let cases: [(&str, Damage); 4] = [
            ("random bytes", &|p| {
                std::fs::write(p, [0x5a; 5000]).unwrap()
            }),
            ("zero length", &|p| std::fs::write(p, b"").unwrap()),
            ("directory", &|p| {
                std::fs::remove_file(p).unwrap();
                std::fs::create_dir_all(p.join("sub")).unwrap();
            }),
            ("symlink", &|p| {
                std::fs::remove_file(p).unwrap();
                std::os::unix::fs::symlink(&victim, p).unwrap();
            }),
        ];
        for (what, damage) in cases {
            let dir = tempfile::tempdir().unwrap();
            let catalog = Arc::new(Catalog::open_in_memory().unwrap());
            let row = recorded(dir.path(), &catalog, "cam");
            let path = dir.path().join(&row.path);
            damage(&path);
            recover(&catalog, dir.path(), None).unwrap();
            assert!(catalog.segment(row.id).unwrap().is_none(), "{what}");
            assert!(
                std::fs::symlink_metadata(&path).is_err(),
                "{what}: still in place"
            );
            let q = catalog.quarantined(Some("cam")).unwrap();
            assert_eq!(q.len(), 1, "{what}");
            assert!(
                std::fs::symlink_metadata(dir.path().join(&q[0].path)).is_ok(),
                "{what}: quarantined copy missing"
            );
            assert_eq!(std::fs::read(&victim).unwrap(), b"not media", "{what}");
            // Repaired for good: a second pass and the audit find nothing.
            let again = recover(&catalog, dir.path(), None).unwrap();
            assert!(again.actions.is_empty(), "{what}: {again:?}");
            let audit = audit(&catalog, dir.path(), None).unwrap();
            assert_eq!(audit.problems, Vec::<String>::new(), "{what}");
        }
    }

    #[test]
    fn unindexed_media_is_indexed_again_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let first = Arc::new(Catalog::open_in_memory().unwrap());
        let names = ["cam", "log", ".", "..", "kvs-edge-agent.db"];
        let long = "x".repeat(256);
        let mut rows = Vec::new();
        for s in names.iter().copied().chain([long.as_str()]) {
            rows.push(recorded(dir.path(), &first, s));
        }
        // The catalog is lost; a new one rebuilds the index from the files.
        let second = Catalog::open_in_memory().unwrap();
        let report = recover(&second, dir.path(), None).unwrap();
        assert_eq!(report.actions.len(), rows.len(), "{report:?}");
        for row in &rows {
            let found = second.segments(Some(&row.stream_name)).unwrap();
            assert_eq!(found.len(), 1, "{}", row.stream_name);
            let f = &found[0];
            assert_eq!(
                (&f.path, f.size, f.state),
                (&row.path, row.size, SegmentState::Closed)
            );
            let frags = second.fragments(f.id).unwrap();
            assert_eq!(frags.len(), 3);
            assert!(
                frags
                    .iter()
                    .all(|f| f.upload_state == crate::catalog::UploadState::Pending)
            );
            assert!(dir.path().join(&row.path).is_file());
        }
        assert_eq!(
            audit(&second, dir.path(), None).unwrap().problems,
            Vec::<String>::new()
        );
    }
}
