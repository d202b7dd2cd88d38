//! The read-only comparison of the catalog with the files behind `kvs-edge-agent check`. Safe
//! beside a running agent: it opens files for reading only and writes no row (an open
//! segment may show the fragment in flight as bytes past its indexed size).

use std::collections::HashSet;
use std::path::Path;

use super::StoreError;
use super::fsx::{self, Entry};
use super::layout;
use crate::catalog::{Catalog, FragmentRow, SegmentRow, SegmentState};
use crate::media::mkv::{SegmentScan, scan_segment};
use crate::path_error::{PathError, io_err};

/// What [`audit`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AuditReport {
    pub segments: usize,
    pub fragments: usize,
    pub files: usize,
    /// Disagreements between catalog and disk; empty when they agree.
    pub problems: Vec<String>,
}

/// Compares the catalog with the files, reading only. Every indexed fragment must be a complete
/// key-first cluster at its indexed offset with its indexed size, timecode and frame count;
/// every file must have a row and no bytes past its indexed size.
pub fn audit(
    catalog: &Catalog,
    root: &Path,
    stream: Option<&str>,
) -> Result<AuditReport, StoreError> {
    let mut report = AuditReport::default();
    let mut known = HashSet::new();
    for row in catalog.segments(stream)? {
        known.insert(row.path.clone());
        if row.state == SegmentState::Deleting {
            continue;
        }
        report.segments += 1;
        let frags = catalog.fragments(row.id)?;
        report.fragments += frags.len();
        audit_segment(root, &row, &frags, &mut report.problems)?;
    }
    for file in layout::media_files(root, stream)? {
        report.files += 1;
        if !known.contains(&file.rel) {
            report
                .problems
                .push(format!("{}: file with no catalog row", file.rel));
        }
    }
    Ok(report)
}

/// One segment row and its fragment rows against the file; what disagrees goes to `problems`.
fn audit_segment(
    root: &Path,
    row: &SegmentRow,
    frags: &[FragmentRow],
    problems: &mut Vec<String>,
) -> Result<(), PathError> {
    let path = root.join(&row.path);
    match fsx::entry(&path)? {
        Entry::File(_) => {}
        Entry::Missing => {
            problems.push(format!("{}: indexed but the file is missing", row.path));
            return Ok(());
        }
        Entry::Other(what) => {
            problems.push(format!(
                "{}: {what} stands where the segment file was",
                row.path
            ));
            return Ok(());
        }
    }
    let file = fsx::open_media(&path).map_err(io_err("open", &path))?;
    match scan_segment(file) {
        Ok(scan) => {
            problems.extend(header_problems(row, &scan));
            problems.extend(cluster_problems(row, &scan, frags));
        }
        Err(e) => problems.push(format!("{}: unreadable header: {e}", row.path)),
    }
    Ok(())
}

/// The file's length, header and codec against the segment row.
fn header_problems(row: &SegmentRow, scan: &SegmentScan) -> Vec<String> {
    let mut out = Vec::new();
    if scan.file_len > row.size {
        out.push(format!(
            "{}: {} bytes past the indexed size {} (a crash left them; recovery cuts them)",
            row.path,
            scan.file_len - row.size,
            row.size
        ));
    } else if scan.file_len < row.size {
        out.push(format!(
            "{}: file is {} bytes, shorter than the indexed {}",
            row.path, scan.file_len, row.size
        ));
    }
    if scan.header.header_len != row.header_size {
        out.push(format!(
            "{}: header is {} bytes, indexed as {}",
            row.path, scan.header.header_len, row.header_size
        ));
    }
    if scan.header.track.codec.codec_id() != row.codec_id
        || scan.header.track.codec_private != row.codec_private
    {
        out.push(format!("{}: codec differs from the catalog's", row.path));
    }
    out
}

/// The clusters in the indexed range against the fragment rows, one by one.
fn cluster_problems(row: &SegmentRow, scan: &SegmentScan, frags: &[FragmentRow]) -> Vec<String> {
    let mut out = Vec::new();
    let clusters: Vec<_> = scan
        .clusters
        .iter()
        .filter(|c| c.offset < row.size)
        .collect();
    if clusters.len() != frags.len() {
        out.push(format!(
            "{}: {} clusters in the indexed range, {} fragment rows",
            row.path,
            clusters.len(),
            frags.len()
        ));
    }
    for (c, f) in clusters.iter().zip(frags) {
        let same = (c.offset, c.size, c.timecode_ms, c.frame_count as u32)
            == (f.offset, f.size, f.timecode_ms, f.frame_count);
        if !same {
            out.push(format!(
                "{}: cluster at {} ({} bytes, {} ms, {} frames) differs from fragment row at {} ({} bytes, {} ms, {} frames)",
                row.path, c.offset, c.size, c.timecode_ms, c.frame_count, f.offset, f.size, f.timecode_ms, f.frame_count
            ));
        }
        if !c.key_first {
            out.push(format!(
                "{}: cluster at {} does not start with a key frame",
                row.path, c.offset
            ));
        }
    }
    out
}
