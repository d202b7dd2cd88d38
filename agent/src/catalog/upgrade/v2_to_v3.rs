//! Version 3: fragments recorded while the box's clock was not synchronised are flagged, since
//! their timestamps may be far from the true time (a box without a real-time clock before NTP).

use rusqlite::Transaction;

pub fn run(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "alter table fragment add column clock_unsynced integer not null default 0 \
         check (clock_unsynced in (0, 1));",
    )
}
