//! Rows of media moved to quarantine (see `store::quarantine`).

use rusqlite::{OptionalExtension, params};

use super::{Catalog, Result, SegmentId};

/// One object repair moved aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantineRow {
    pub stream_name: String,
    pub original_path: String,
    pub path: String,
    pub reason: String,
    pub time_ms: i64,
}

impl Catalog {
    /// Records a quarantined object and removes the rows of the segment it was, in one
    /// transaction.
    pub fn quarantine(
        &self,
        stream: &str,
        original_path: &str,
        path: &str,
        reason: &str,
        segment: Option<SegmentId>,
        time_ms: i64,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "insert into quarantine (stream_name, original_path, path, reason, time_ms) \
             values (?1, ?2, ?3, ?4, ?5)",
            params![stream, original_path, path, reason, time_ms],
        )?;
        if let Some(id) = segment {
            tx.execute("delete from segment where id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The quarantine row of an object that was at `original_path`, if any.
    pub fn quarantined_from(&self, original_path: &str) -> Result<Option<QuarantineRow>> {
        Ok(self
            .conn()
            .query_row(
                "select stream_name, original_path, path, reason, time_ms from quarantine \
                 where original_path = ?1 order by id desc limit 1",
                [original_path],
                from_row,
            )
            .optional()?)
    }

    /// Every quarantined object (of `stream`, or of all), oldest first.
    pub fn quarantined(&self, stream: Option<&str>) -> Result<Vec<QuarantineRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "select stream_name, original_path, path, reason, time_ms from quarantine \
             where ?1 is null or stream_name = ?1 order by id",
        )?;
        let rows = stmt.query_map([stream], from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QuarantineRow> {
    Ok(QuarantineRow {
        stream_name: r.get(0)?,
        original_path: r.get(1)?,
        path: r.get(2)?,
        reason: r.get(3)?,
        time_ms: r.get(4)?,
    })
}
