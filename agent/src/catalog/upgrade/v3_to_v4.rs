//! Version 4: operators' upload requests (a time range now, live now), kept so that a restart
//! resumes them and their outcome can be reported.

use rusqlite::Transaction;

pub fn run(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
        -- One row per accepted request. RANGE: the fragments overlapping [start_ms, end_ms);
        -- LIVE: what is recorded from start_ms until end_ms, sent as it is committed. `already`
        -- counts the overlapping fragments that were uploaded before the request (not sent
        -- again); `uploaded` and `failed` are filled in when it ends.
        create table upload_request (
            id integer primary key,
            stream_name text not null,
            request_id text not null,
            kind text not null check (kind in ('RANGE', 'LIVE')),
            start_ms integer not null,
            end_ms integer not null check (end_ms > start_ms),
            state text not null check (state in ('QUEUED', 'UPLOADING', 'DONE', 'FAILED')),
            already integer not null default 0,
            uploaded integer not null default 0,
            failed integer not null default 0,
            details text,
            requested_ms integer not null,
            updated_ms integer not null,
            unique (stream_name, request_id)
        ) strict;
        create index upload_request_open on upload_request (stream_name, state, id);
        create index fragment_time on fragment (segment_id, timecode_ms);
        "#,
    )
}
