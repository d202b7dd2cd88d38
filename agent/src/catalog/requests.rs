//! Operators' upload requests: a time range to send now, or live for a while
//! (design/uploads.md, "Requests"). Stored so a restart resumes them; the uploader serves them
//! ahead of the scheduled backlog and writes their outcome back here.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, Row, params};

use super::{Catalog, Result};

text_enum!(
    /// RANGE: the fragments overlapping a past time range; LIVE: what is recorded until its end.
    RequestKind { Range = "RANGE", Live = "LIVE" }
);

text_enum!(
    /// QUEUED until the uploader takes it, UPLOADING while it does, then DONE or FAILED.
    RequestState {
        Queued = "QUEUED",
        Uploading = "UPLOADING",
        Done = "DONE",
        Failed = "FAILED",
    }
);

impl RequestState {
    pub fn is_open(self) -> bool {
        matches!(self, RequestState::Queued | RequestState::Uploading)
    }
}

/// Ended requests kept per stream, for the status topic and `recordings requests`.
pub const KEEP_ENDED: usize = 20;

/// A request as accepted, before it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRequest {
    pub stream_name: String,
    /// The requester's id, to match answers to the request (and to take a redelivered
    /// request once).
    pub request_id: String,
    pub kind: RequestKind,
    pub start_ms: i64,
    pub end_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRow {
    pub id: i64,
    pub stream_name: String,
    pub request_id: String,
    pub kind: RequestKind,
    pub start_ms: i64,
    pub end_ms: i64,
    pub state: RequestState,
    /// Overlapping fragments already uploaded when the request came (not sent again).
    pub already: u32,
    pub uploaded: u32,
    pub failed: u32,
    pub details: Option<String>,
    pub requested_ms: i64,
    pub updated_ms: i64,
}

const COLUMNS: &str = "id, stream_name, request_id, kind, start_ms, end_ms, state, already, \
                       uploaded, failed, details, requested_ms, updated_ms";

fn request_from_row(r: &Row<'_>) -> rusqlite::Result<RequestRow> {
    Ok(RequestRow {
        id: r.get(0)?,
        stream_name: r.get(1)?,
        request_id: r.get(2)?,
        kind: RequestKind::parse(&r.get::<_, String>(3)?)?,
        start_ms: r.get(4)?,
        end_ms: r.get(5)?,
        state: RequestState::parse(&r.get::<_, String>(6)?)?,
        already: r.get(7)?,
        uploaded: r.get(8)?,
        failed: r.get(9)?,
        details: r.get(10)?,
        requested_ms: r.get(11)?,
        updated_ms: r.get(12)?,
    })
}

fn by_id(conn: &rusqlite::Connection, id: i64) -> rusqlite::Result<RequestRow> {
    conn.query_row(
        &format!("select {COLUMNS} from upload_request where id = ?1"),
        [id],
        request_from_row,
    )
}

/// How [`Catalog::add_request`] took a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Added {
    New(RequestRow),
    /// A request with this id was stored before (a redelivery): nothing changed.
    Known(RequestRow),
}

impl Added {
    pub fn row(&self) -> &RequestRow {
        match self {
            Added::New(r) | Added::Known(r) => r,
        }
    }
}

impl Catalog {
    /// Stores a request, QUEUED, in one transaction with what it replaces: a new LIVE request
    /// ends the stream's open one (the newest asks for how long), and ended requests past the
    /// newest [`KEEP_ENDED`] are forgotten.
    pub fn add_request(&self, r: &NewRequest, now: Timestamp) -> Result<Added> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let known = tx
            .prepare_cached(&format!(
                "select {COLUMNS} from upload_request where stream_name = ?1 and request_id = ?2"
            ))?
            .query_row(params![r.stream_name, r.request_id], request_from_row)
            .optional()?;
        if let Some(row) = known {
            return Ok(Added::Known(row));
        }
        let now = now.as_millisecond();
        if r.kind == RequestKind::Live {
            tx.execute(
                "update upload_request set state = 'DONE', updated_ms = ?2, \
                 details = 'replaced by request ' || ?3 \
                 where stream_name = ?1 and kind = 'LIVE' and state in ('QUEUED', 'UPLOADING')",
                params![r.stream_name, now, r.request_id],
            )?;
        }
        let already: u32 = tx.query_row(
            "select count(*) from fragment f join segment s on s.id = f.segment_id \
             where s.stream_name = ?1 and f.upload_state = 'UPLOADED' \
             and f.timecode_ms < ?3 and f.timecode_ms + f.duration_ms > ?2",
            params![r.stream_name, r.start_ms, r.end_ms],
            |row| row.get(0),
        )?;
        tx.execute(
            "insert into upload_request (stream_name, request_id, kind, start_ms, end_ms, state, \
             already, requested_ms, updated_ms) values (?1, ?2, ?3, ?4, ?5, 'QUEUED', ?6, ?7, ?7)",
            params![
                r.stream_name,
                r.request_id,
                r.kind.as_str(),
                r.start_ms,
                r.end_ms,
                already,
                now
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "delete from upload_request where stream_name = ?1 and state in ('DONE', 'FAILED') \
             and id not in (select id from upload_request where stream_name = ?1 \
             and state in ('DONE', 'FAILED') order by id desc limit ?2)",
            params![r.stream_name, KEEP_ENDED as i64],
        )?;
        let row = by_id(&tx, id)?;
        tx.commit()?;
        drop(conn);
        self.announce_request(&r.stream_name);
        Ok(Added::New(row))
    }

    /// A stream's QUEUED and UPLOADING requests, oldest first.
    pub fn open_requests(&self, stream: &str) -> Result<Vec<RequestRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "select {COLUMNS} from upload_request where stream_name = ?1 \
             and state in ('QUEUED', 'UPLOADING') order by id"
        ))?;
        Ok(stmt
            .query_map([stream], request_from_row)?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// A stream's requests, open and ended, newest first.
    pub fn requests(&self, stream: &str) -> Result<Vec<RequestRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "select {COLUMNS} from upload_request where stream_name = ?1 order by id desc"
        ))?;
        Ok(stmt
            .query_map([stream], request_from_row)?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// A QUEUED request is being served.
    pub fn set_request_uploading(&self, id: i64, now: Timestamp) -> Result<()> {
        self.conn().execute(
            "update upload_request set state = 'UPLOADING', updated_ms = ?2 \
             where id = ?1 and state = 'QUEUED'",
            params![id, now.as_millisecond()],
        )?;
        Ok(())
    }

    /// Ends an open request as DONE or FAILED with `details`, counting the overlapping
    /// fragments it uploaded (beyond those uploaded before it came) and those that failed.
    /// Returns the row as ended, `None` when it was not open (ended meanwhile).
    pub fn end_request(
        &self,
        id: i64,
        state: RequestState,
        details: &str,
        now: Timestamp,
    ) -> Result<Option<RequestRow>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let Some(row) = tx
            .prepare_cached(&format!(
                "select {COLUMNS} from upload_request where id = ?1 \
                 and state in ('QUEUED', 'UPLOADING')"
            ))?
            .query_row([id], request_from_row)
            .optional()?
        else {
            return Ok(None);
        };
        let (uploaded, failed): (u32, u32) = tx.query_row(
            "select coalesce(sum(f.upload_state = 'UPLOADED'), 0), \
             coalesce(sum(f.upload_state = 'FAILED'), 0) \
             from fragment f join segment s on s.id = f.segment_id \
             where s.stream_name = ?1 and f.timecode_ms < ?3 \
             and f.timecode_ms + f.duration_ms > ?2",
            params![row.stream_name, row.start_ms, row.end_ms],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute(
            "update upload_request set state = ?2, details = ?3, uploaded = ?4, failed = ?5, \
             updated_ms = ?6 where id = ?1",
            params![
                id,
                state.as_str(),
                details,
                uploaded.saturating_sub(row.already),
                failed,
                now.as_millisecond()
            ],
        )?;
        let ended = by_id(&tx, id)?;
        tx.commit()?;
        drop(conn);
        self.announce_request(&ended.stream_name);
        Ok(Some(ended))
    }

    /// Ends a stream's open LIVE request (`ctl stop-live`); `None` when none was open.
    pub fn stop_live(&self, stream: &str, now: Timestamp) -> Result<Option<RequestRow>> {
        let open = self
            .open_requests(stream)?
            .into_iter()
            .find(|r| r.kind == RequestKind::Live);
        match open {
            Some(r) => self.end_request(r.id, RequestState::Done, "stopped", now),
            None => Ok(None),
        }
    }

    /// Changes whenever a request of `stream` is added or ends.
    pub fn requests_changed(&self, stream: &str) -> tokio::sync::watch::Receiver<i64> {
        self.request_events.sender(stream, |tx| tx.subscribe())
    }

    fn announce_request(&self, stream: &str) {
        self.request_events.sender(stream, |tx| {
            tx.send_modify(|n| *n += 1);
        });
    }
}
