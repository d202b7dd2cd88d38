//! A read-only snapshot of one stream's rows in the catalog, compared across a crash, and the
//! job status rows.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seg {
    pub id: i64,
    pub path: String,
    pub state: String,
    pub start_ms: i64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frag {
    pub segment: String,
    pub offset: u64,
    pub size: u64,
    pub timecode_ms: i64,
    pub duration_ms: i64,
    pub frame_count: u32,
    pub upload_state: String,
    pub fragment_number: Option<String>,
}

/// One stream's segments and fragments, read in one transaction. Segments are keyed by path and
/// fragments by (path, offset): SQLite reuses the row ids of deleted rows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub segments: BTreeMap<String, Seg>,
    pub frags: BTreeMap<(String, u64), Frag>,
}

impl Snapshot {
    #[allow(dead_code, reason = "for the reliability suite")]
    pub fn committed(&self) -> usize {
        self.frags.len()
    }

    #[allow(dead_code, reason = "for the tests that compare snapshots")]
    pub fn uploaded(&self) -> usize {
        self.frags
            .values()
            .filter(|f| f.upload_state == "UPLOADED")
            .count()
    }

    #[allow(dead_code, reason = "for the tests that compare snapshots")]
    pub fn newest_timecode(&self) -> Option<i64> {
        self.frags.values().map(|f| f.timecode_ms).max()
    }
}

/// Reads the catalog read-only with rusqlite (an empty snapshot while it does not exist yet).
pub fn snapshot(db: &Path, stream: &str) -> Snapshot {
    if !db.exists() {
        return Snapshot::default();
    }
    read_snapshot(&reader(db), stream)
}

/// A read-only connection to the catalog, for [`read_snapshot`]s: one kept open can read while
/// the disk stalls, where opening one may not (SQLite, as root, chowns the WAL at each open,
/// which waits for the inode that a held write keeps locked).
pub fn reader(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// One stream's rows through `conn`, in one transaction.
pub fn read_snapshot(conn: &rusqlite::Connection, stream: &str) -> Snapshot {
    let mut snap = Snapshot::default();
    let has_tables: i64 = conn
        .query_row(
            "select count(*) from sqlite_master where name in ('segment', 'fragment')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if has_tables < 2 {
        return snap;
    }
    conn.execute_batch("begin").unwrap();
    {
        let mut st = conn
            .prepare("select id, path, state, start_ms, size from segment where stream_name = ?1")
            .unwrap();
        let rows = st
            .query_map([stream], |r| {
                Ok(Seg {
                    id: r.get(0)?,
                    path: r.get(1)?,
                    state: r.get(2)?,
                    start_ms: r.get(3)?,
                    size: r.get::<_, i64>(4)? as u64,
                })
            })
            .unwrap();
        for s in rows {
            let s = s.unwrap();
            snap.segments.insert(s.path.clone(), s);
        }
        let mut st = conn
            .prepare(
                "select s.path, f.offset, f.size, f.timecode_ms, f.frame_count, f.upload_state, \
                 f.fragment_number, f.duration_ms from fragment f join segment s on s.id = f.segment_id \
                 where s.stream_name = ?1",
            )
            .unwrap();
        let rows = st
            .query_map([stream], |r| {
                Ok(Frag {
                    segment: r.get(0)?,
                    offset: r.get::<_, i64>(1)? as u64,
                    size: r.get::<_, i64>(2)? as u64,
                    timecode_ms: r.get(3)?,
                    frame_count: r.get::<_, i64>(4)? as u32,
                    upload_state: r.get(5)?,
                    fragment_number: r.get(6)?,
                    duration_ms: r.get(7)?,
                })
            })
            .unwrap();
        for f in rows {
            let f = f.unwrap();
            snap.frags.insert((f.segment.clone(), f.offset), f);
        }
    }
    conn.execute_batch("commit").unwrap();
    snap
}

/// The job status the catalog holds: (status, details).
#[allow(dead_code, reason = "for the reliability suite")]
pub fn job_status(db: &Path, stream: &str, job: &str) -> Option<(String, Option<String>)> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    conn.busy_timeout(Duration::from_secs(10)).ok()?;
    conn.query_row(
        "select status, details from job_status where stream_name = ?1 and job = ?2",
        [stream, job],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .ok()
}

/// Why a fragment committed in `before` may be absent from `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code, reason = "for the tests that compare snapshots")]
pub enum Gone {
    /// Its segment was being deleted (a DELETING row) when `before` was taken.
    FinishedDeletion,
    /// Its whole segment went, and every fragment of it had been uploaded (DeleteAfterUpload).
    DeletedAfterUpload,
    /// Its whole segment went, older than every segment kept (size limit or retention).
    DeletedOldest,
    /// Its whole segment went, not all uploaded when `before` was taken and not the oldest
    /// (uploaded and deleted since, or lost: the cloud's record decides).
    DeletedUnproven,
}

/// Compares two snapshots of one stream: every fragment committed in `before` must be in
/// `after` unchanged (same segment, offset, size, timecode; an upload never undone), unless the
/// janitor deleted its whole segment by policy. Returns the reasons for the absences, or the
/// list of losses. Each absence comes with the fragment's timecode, so that a caller can also
/// require it to have reached the cloud.
#[allow(dead_code, reason = "for the tests that compare snapshots")]
pub fn compare(before: &Snapshot, after: &Snapshot) -> Result<Vec<(Gone, i64)>, Vec<String>> {
    let mut gone = Vec::new();
    let mut lost = Vec::new();
    let oldest_kept = after
        .segments
        .values()
        .filter(|s| s.state != "DELETING")
        .map(|s| s.start_ms)
        .min();
    for (key, f) in &before.frags {
        match after.frags.get(key) {
            Some(now) => {
                let same = (now.size, now.timecode_ms, now.frame_count)
                    == (f.size, f.timecode_ms, f.frame_count);
                if !same {
                    lost.push(format!("{key:?} changed: {f:?} -> {now:?}"));
                }
                if f.upload_state == "UPLOADED"
                    && (now.upload_state != "UPLOADED" || now.fragment_number != f.fragment_number)
                {
                    lost.push(format!("{key:?} upload undone: {f:?} -> {now:?}"));
                }
            }
            None => {
                let seg = &before.segments[&f.segment];
                let whole = !after.segments.contains_key(&f.segment)
                    && !after.frags.keys().any(|(p, _)| *p == f.segment);
                let all_uploaded = before
                    .frags
                    .values()
                    .filter(|g| g.segment == f.segment)
                    .all(|g| g.upload_state == "UPLOADED");
                if !whole {
                    lost.push(format!("{key:?} gone from a segment still indexed: {f:?}"));
                } else if seg.state == "DELETING" {
                    gone.push((Gone::FinishedDeletion, f.timecode_ms));
                } else if all_uploaded {
                    gone.push((Gone::DeletedAfterUpload, f.timecode_ms));
                } else if oldest_kept.is_none_or(|o| seg.start_ms < o) {
                    gone.push((Gone::DeletedOldest, f.timecode_ms));
                } else {
                    // Uploaded (then deleted) after `before` was taken, or lost: the caller
                    // decides, with the cloud's record.
                    gone.push((Gone::DeletedUnproven, f.timecode_ms));
                }
            }
        }
    }
    if lost.is_empty() { Ok(gone) } else { Err(lost) }
}
