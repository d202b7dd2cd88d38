//! Segment and fragment rows: the index of the media on disk.
//!
//! Order of operations the callers keep (DESIGN.md, "Media on disk"):
//! - recording: write the cluster, fsync, then [`Catalog::add_fragment`] (one transaction that
//!   inserts the fragment and extends the segment's indexed size);
//! - deleting: [`Catalog::mark_segment_deleting`], unlink, fsync the directory, then
//!   [`Catalog::remove_segment`]. A crash in between leaves a DELETING row that startup finishes.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, Row, params};

use super::{Catalog, CatalogError, Result};

pub type SegmentId = i64;

text_enum!(
    /// OPEN: being appended to; CLOSED: complete; DELETING: marked for deletion, the file may
    /// or may not still exist.
    SegmentState { Open = "OPEN", Closed = "CLOSED", Deleting = "DELETING" }
);

text_enum!(
    /// Only a PERSISTED acknowledgement moves a fragment to UPLOADED.
    UploadState { Pending = "PENDING", Uploaded = "UPLOADED", Failed = "FAILED" }
);

/// A segment about to be written: its file holds only the Matroska header so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSegment {
    pub stream_name: String,
    /// Relative to the recording directory.
    pub path: String,
    pub codec_id: String,
    pub codec_private: Vec<u8>,
    pub width: u16,
    pub height: u16,
    pub header_size: u64,
    pub start_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentRow {
    pub id: SegmentId,
    pub stream_name: String,
    pub path: String,
    pub codec_id: String,
    pub codec_private: Vec<u8>,
    pub width: u16,
    pub height: u16,
    pub header_size: u64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub size: u64,
    pub state: SegmentState,
}

/// A fragment whose cluster is durably written at `offset..offset + size` of its segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewFragment {
    pub offset: u64,
    pub size: u64,
    pub timecode_ms: i64,
    pub duration_ms: i64,
    pub frame_count: u32,
    pub key_frame_count: u32,
    /// Recorded while the box's clock was not synchronised.
    pub clock_unsynced: bool,
}

/// A time range's fragments by upload state ([`Catalog::range_counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeCounts {
    pub pending: u32,
    pub uploaded: u32,
    pub failed: u32,
    /// Where the stream's newest fragment ends (None: nothing recorded).
    pub recorded_until: Option<i64>,
}

/// A stream's fragments still to upload ([`Catalog::backlog`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    pub fragments: u32,
    pub bytes: u64,
    /// The oldest pending fragment's timecode.
    pub oldest_ms: Option<i64>,
}

/// Where a fragment lies in time and whether it is uploaded ([`Catalog::fragment_times`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentTime {
    pub segment_id: SegmentId,
    /// Where its cluster lies in the segment file.
    pub offset: u64,
    pub size: u64,
    pub timecode_ms: i64,
    pub duration_ms: i64,
    pub upload_state: UploadState,
}

/// A segment with the upload state of its fragments counted, for the janitor and `recordings`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    pub segment: SegmentRow,
    pub fragments: u32,
    pub pending: u32,
    pub uploaded: u32,
    pub failed: u32,
    /// Fragments recorded while the box's clock was not synchronised.
    pub clock_unsynced: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FragmentRow {
    pub id: i64,
    pub segment_id: SegmentId,
    pub offset: u64,
    pub size: u64,
    pub timecode_ms: i64,
    pub duration_ms: i64,
    pub frame_count: u32,
    pub key_frame_count: u32,
    pub upload_state: UploadState,
    pub fragment_number: Option<String>,
    pub upload_error: Option<String>,
    pub clock_unsynced: bool,
}

const SEGMENT_COLUMNS: &str = "id, stream_name, path, codec_id, codec_private, width, height, \
                               header_size, start_ms, end_ms, size, state";

fn segment_from_row(r: &Row<'_>) -> rusqlite::Result<SegmentRow> {
    Ok(SegmentRow {
        id: r.get(0)?,
        stream_name: r.get(1)?,
        path: r.get(2)?,
        codec_id: r.get(3)?,
        codec_private: r.get(4)?,
        width: r.get(5)?,
        height: r.get(6)?,
        header_size: r.get(7)?,
        start_ms: r.get(8)?,
        end_ms: r.get(9)?,
        size: r.get(10)?,
        state: SegmentState::parse(&r.get::<_, String>(11)?)?,
    })
}

const FRAGMENT_COLUMNS: &str = "f.id, f.segment_id, f.offset, f.size, f.timecode_ms, \
     f.duration_ms, f.frame_count, f.key_frame_count, f.upload_state, f.fragment_number, \
     f.upload_error, f.clock_unsynced";

fn fragment_from_row(r: &Row<'_>) -> rusqlite::Result<FragmentRow> {
    Ok(FragmentRow {
        id: r.get(0)?,
        segment_id: r.get(1)?,
        offset: r.get(2)?,
        size: r.get(3)?,
        timecode_ms: r.get(4)?,
        duration_ms: r.get(5)?,
        frame_count: r.get(6)?,
        key_frame_count: r.get(7)?,
        upload_state: UploadState::parse(&r.get::<_, String>(8)?)?,
        fragment_number: r.get(9)?,
        upload_error: r.get(10)?,
        clock_unsynced: r.get(11)?,
    })
}

fn not_found(what: &'static str, key: impl ToString) -> CatalogError {
    CatalogError::NotFound {
        what,
        key: key.to_string(),
    }
}

impl Catalog {
    /// Registers a new segment file (state OPEN) whose header is already durably written.
    pub fn insert_segment(&self, s: &NewSegment) -> Result<SegmentId> {
        let conn = self.conn();
        conn.execute(
            "insert into segment (stream_name, path, codec_id, codec_private, width, height, \
             header_size, start_ms, end_ms, size, state) \
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?7, 'OPEN')",
            params![
                s.stream_name,
                s.path,
                s.codec_id,
                s.codec_private,
                s.width,
                s.height,
                s.header_size,
                s.start_ms
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Indexes a fragment whose cluster is durably on disk, and extends the segment over it,
    /// in one transaction. The cluster must start where the segment's indexed bytes end.
    pub fn add_fragment(&self, segment: SegmentId, f: &NewFragment) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let (size, state, stream): (u64, String, String) = tx
            .query_row(
                "select size, state, stream_name from segment where id = ?1",
                [segment],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
            .ok_or_else(|| not_found("segment", segment))?;
        if state != "OPEN" || f.offset != size {
            return Err(CatalogError::Corrupt {
                stream: format!("segment {segment}"),
                message: format!(
                    "fragment at offset {} does not continue the {state} segment of {size} bytes",
                    f.offset
                ),
            });
        }
        tx.execute(
            "insert into fragment (segment_id, offset, size, timecode_ms, duration_ms, \
             frame_count, key_frame_count, clock_unsynced) values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                segment,
                f.offset,
                f.size,
                f.timecode_ms,
                f.duration_ms,
                f.frame_count,
                f.key_frame_count,
                f.clock_unsynced
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "update segment set size = ?2, end_ms = max(end_ms, ?3) where id = ?1",
            params![segment, f.offset + f.size, f.timecode_ms + f.duration_ms],
        )?;
        tx.commit()?;
        drop(conn);
        self.announce_commit(&stream, id);
        Ok(id)
    }

    /// Shortens a segment's indexed bytes to `size` (a file the disk cut short): fragments
    /// past it are dropped, and the segment's end time follows the ones kept.
    pub fn cut_segment(&self, segment: SegmentId, size: u64) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let dropped = tx.execute(
            "delete from fragment where segment_id = ?1 and offset + size > ?2",
            params![segment, size],
        )?;
        tx.execute(
            "update segment set size = max(header_size, ?2), end_ms = coalesce( \
             (select max(timecode_ms + duration_ms) from fragment where segment_id = ?1), \
             start_ms) where id = ?1",
            params![segment, size],
        )?;
        tx.commit()?;
        Ok(dropped)
    }

    pub fn close_segment(&self, segment: SegmentId) -> Result<()> {
        self.set_segment_state(segment, SegmentState::Closed)
    }

    /// First step of deleting a segment: from here on it is never read or uploaded.
    pub fn mark_segment_deleting(&self, segment: SegmentId) -> Result<()> {
        self.set_segment_state(segment, SegmentState::Deleting)
    }

    fn set_segment_state(&self, segment: SegmentId, state: SegmentState) -> Result<()> {
        let n = self.conn().execute(
            "update segment set state = ?2 where id = ?1",
            params![segment, state.as_str()],
        )?;
        if n == 0 {
            return Err(not_found("segment", segment));
        }
        Ok(())
    }

    /// Last step of deleting a segment (after its file is gone): removes it and its fragments.
    pub fn remove_segment(&self, segment: SegmentId) -> Result<()> {
        self.conn()
            .execute("delete from segment where id = ?1", [segment])?;
        Ok(())
    }

    pub fn segment(&self, segment: SegmentId) -> Result<Option<SegmentRow>> {
        Ok(self
            .conn()
            .query_row(
                &format!("select {SEGMENT_COLUMNS} from segment where id = ?1"),
                [segment],
                segment_from_row,
            )
            .optional()?)
    }

    /// A stream's segments in recording order; `None` lists every stream's. Recording order is
    /// row order: a segment's row is inserted when its first fragment is written, and SQLite
    /// numbers a new row past every existing one. It differs from timestamp order after a
    /// wall-clock step backwards (design/time.md).
    pub fn segments(&self, stream: Option<&str>) -> Result<Vec<SegmentRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "select {SEGMENT_COLUMNS} from segment where ?1 is null or stream_name = ?1 \
             order by stream_name, id"
        ))?;
        Ok(stmt
            .query_map([stream], segment_from_row)?
            .collect::<rusqlite::Result<_>>()?)
    }

    pub fn fragments(&self, segment: SegmentId) -> Result<Vec<FragmentRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "select {FRAGMENT_COLUMNS} from fragment f where f.segment_id = ?1 order by f.offset"
        ))?;
        Ok(stmt
            .query_map([segment], fragment_from_row)?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// The oldest fragments of a stream still to upload, in recording order (segment, offset).
    /// Segments being deleted are skipped.
    pub fn pending_fragments(&self, stream: &str, limit: usize) -> Result<Vec<FragmentRow>> {
        self.pending_fragments_in(stream, None, None, limit)
    }

    /// Like [`Catalog::pending_fragments`], but only those after `after` in recording order:
    /// what a session has not sent yet.
    pub fn pending_fragments_after(
        &self,
        stream: &str,
        after: Option<&FragmentRow>,
        limit: usize,
    ) -> Result<Vec<FragmentRow>> {
        self.pending_fragments_in(stream, after, None, limit)
    }

    /// Like [`Catalog::pending_fragments_after`], and with `range` only the fragments that
    /// overlap `[start_ms, end_ms)` (a fragment covers `timecode .. timecode + duration`).
    pub fn pending_fragments_in(
        &self,
        stream: &str,
        after: Option<&FragmentRow>,
        range: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<FragmentRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "select {FRAGMENT_COLUMNS} from fragment f join segment s on s.id = f.segment_id \
             where s.stream_name = ?1 and s.state != 'DELETING' and f.upload_state = 'PENDING' \
             and (?2 is null or (s.id, f.offset) > (?2, ?3)) \
             and (?4 is null or (f.timecode_ms < ?5 and f.timecode_ms + f.duration_ms > ?4)) \
             order by s.id, f.offset limit ?6"
        ))?;
        let (seg, off) = after.map(|a| (a.segment_id, a.offset)).unzip();
        let (start, end) = range.unzip();
        Ok(stmt
            .query_map(
                params![stream, seg, off, start, end, limit as i64],
                fragment_from_row,
            )?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// The last pending fragment of a stream in recording order: where a newest-first backlog
    /// starts.
    pub fn newest_pending_fragment(&self, stream: &str) -> Result<Option<FragmentRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "select {FRAGMENT_COLUMNS} from fragment f join segment s on s.id = f.segment_id \
             where s.stream_name = ?1 and s.state != 'DELETING' and f.upload_state = 'PENDING' \
             order by s.id desc, f.offset desc limit 1"
        ))?;
        Ok(stmt.query_row([stream], fragment_from_row).optional()?)
    }

    /// A stream's fragments overlapping `[start_ms, end_ms)`, counted by upload state, and
    /// where the stream's newest committed fragment ends.
    pub fn range_counts(&self, stream: &str, start_ms: i64, end_ms: i64) -> Result<RangeCounts> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "select coalesce(sum(f.upload_state = 'PENDING' and s.state != 'DELETING'), 0), \
             coalesce(sum(f.upload_state = 'UPLOADED'), 0), \
             coalesce(sum(f.upload_state = 'FAILED'), 0) \
             from fragment f join segment s on s.id = f.segment_id \
             where s.stream_name = ?1 and f.timecode_ms < ?3 \
             and f.timecode_ms + f.duration_ms > ?2",
        )?;
        let (pending, uploaded, failed) = stmt
            .query_row(params![stream, start_ms, end_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        let recorded_until: Option<i64> = conn
            .prepare_cached("select max(end_ms) from segment where stream_name = ?1")?
            .query_row([stream], |r| r.get(0))?;
        Ok(RangeCounts {
            pending,
            uploaded,
            failed,
            recorded_until,
        })
    }

    /// A stream's fragments overlapping `[start_ms, end_ms)` in timestamp order (what a
    /// timeline shows and an export plays), segments being deleted left out; at most `limit`.
    pub fn fragment_times(
        &self,
        stream: &str,
        start_ms: i64,
        end_ms: i64,
        limit: usize,
    ) -> Result<Vec<FragmentTime>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "select f.segment_id, f.offset, f.size, f.timecode_ms, f.duration_ms, f.upload_state \
             from fragment f join segment s on s.id = f.segment_id \
             where s.stream_name = ?1 and s.state != 'DELETING' and f.timecode_ms < ?3 \
             and f.timecode_ms + f.duration_ms > ?2 order by f.timecode_ms, s.id limit ?4",
        )?;
        Ok(stmt
            .query_map(params![stream, start_ms, end_ms, limit as i64], |r| {
                Ok(FragmentTime {
                    segment_id: r.get(0)?,
                    offset: r.get(1)?,
                    size: r.get(2)?,
                    timecode_ms: r.get(3)?,
                    duration_ms: r.get(4)?,
                    upload_state: UploadState::parse(&r.get::<_, String>(5)?)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// What a stream has still to upload.
    pub fn backlog(&self, stream: &str) -> Result<Backlog> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "select count(*), coalesce(sum(f.size), 0), min(f.timecode_ms) \
             from fragment f join segment s on s.id = f.segment_id \
             where s.stream_name = ?1 and s.state != 'DELETING' and f.upload_state = 'PENDING'",
        )?;
        Ok(stmt.query_row([stream], |r| {
            Ok(Backlog {
                fragments: r.get(0)?,
                bytes: r.get::<_, i64>(1)? as u64,
                oldest_ms: r.get(2)?,
            })
        })?)
    }

    /// Records a PERSISTED acknowledgement: only this marks a fragment uploaded.
    pub fn mark_fragment_uploaded(
        &self,
        fragment: i64,
        fragment_number: &str,
        now: Timestamp,
    ) -> Result<()> {
        let n = self.conn().execute(
            "update fragment set upload_state = 'UPLOADED', fragment_number = ?2, \
             upload_error = null, upload_time_ms = ?3 where id = ?1",
            params![fragment, fragment_number, now.as_millisecond()],
        )?;
        if n == 0 {
            return Err(not_found("fragment", fragment));
        }
        Ok(())
    }

    /// Records a non-retriable upload error; the fragment stays on disk.
    pub fn mark_fragment_failed(&self, fragment: i64, error: &str, now: Timestamp) -> Result<()> {
        let n = self.conn().execute(
            "update fragment set upload_state = 'FAILED', upload_error = ?2, \
             upload_time_ms = ?3 where id = ?1 and upload_state != 'UPLOADED'",
            params![fragment, error, now.as_millisecond()],
        )?;
        if n == 0 {
            return Err(not_found("pending fragment", fragment));
        }
        Ok(())
    }

    /// Every segment of a stream (`None`: of every stream), in recording order, with its
    /// fragments counted by upload state.
    pub fn segment_summaries(&self, stream: Option<&str>) -> Result<Vec<SegmentSummary>> {
        self.summaries(stream, None)
    }

    /// [`Catalog::segment_summaries`] of the segments overlapping `[start_ms, end_ms)`.
    pub fn segment_summaries_in(
        &self,
        stream: &str,
        (start_ms, end_ms): (i64, i64),
    ) -> Result<Vec<SegmentSummary>> {
        self.summaries(Some(stream), Some((start_ms, end_ms)))
    }

    fn summaries(
        &self,
        stream: Option<&str>,
        range: Option<(i64, i64)>,
    ) -> Result<Vec<SegmentSummary>> {
        let columns = SEGMENT_COLUMNS
            .split(", ")
            .map(|c| format!("s.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "select {columns}, count(f.id), \
             coalesce(sum(f.upload_state = 'PENDING'), 0), \
             coalesce(sum(f.upload_state = 'UPLOADED'), 0), \
             coalesce(sum(f.upload_state = 'FAILED'), 0), \
             coalesce(sum(f.clock_unsynced), 0) \
             from segment s left join fragment f on f.segment_id = s.id \
             where (?1 is null or s.stream_name = ?1) \
             and (?2 is null or (s.start_ms < ?3 and s.end_ms > ?2)) \
             group by s.id order by s.stream_name, s.id"
        ))?;
        let n = SEGMENT_COLUMNS.split(", ").count();
        let (start, end) = range.unzip();
        Ok(stmt
            .query_map(params![stream, start, end], |r| {
                Ok(SegmentSummary {
                    segment: segment_from_row(r)?,
                    fragments: r.get(n)?,
                    pending: r.get(n + 1)?,
                    uploaded: r.get(n + 2)?,
                    failed: r.get(n + 3)?,
                    clock_unsynced: r.get(n + 4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// A stream's segments counted, with where the oldest starts and the newest ends (segments
    /// being deleted excluded).
    pub fn media_extent(&self, stream: &str) -> Result<(u32, Option<i64>, Option<i64>)> {
        Ok(self.conn().query_row(
            "select count(*), min(start_ms), max(end_ms) from segment \
             where stream_name = ?1 and state != 'DELETING'",
            [stream],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?)
    }

    /// The streams with media on disk, by name.
    pub fn media_streams(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("select distinct stream_name from segment order by stream_name")?;
        Ok(stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// Bytes of media the catalog indexes for a stream (segments being deleted excluded).
    pub fn stream_usage(&self, stream: &str) -> Result<u64> {
        let n: i64 = self.conn().query_row(
            "select coalesce(sum(size), 0) from segment where stream_name = ?1 \
             and state != 'DELETING'",
            [stream],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }
}
