//! Version 2: the catalog's identity (bound to one recording directory, as Moonfire NVR binds a
//! database to its sample-file directories) and the record of media moved to quarantine.

use rusqlite::Transaction;

pub fn run(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
        -- One row: this catalog's UUID and that of the recording directory it indexes. The
        -- directory holds the same pair in its meta file; a mismatch is refused at open, so a
        -- catalog never touches media it does not index. directory_uuid is null until bound.
        create table meta (
            id integer primary key check (id = 1),
            catalog_uuid text not null,
            directory_uuid text
        ) strict;
        insert into meta (id, catalog_uuid) values (1, lower(hex(randomblob(16))));

        -- Files (or other objects) that repair found where a segment should be and could not
        -- read: moved under quarantine/ with their rows removed, never deleted.
        create table quarantine (
            id integer primary key,
            stream_name text not null,
            original_path text not null,
            path text not null unique,
            reason text not null,
            time_ms integer not null
        ) strict;
        "#,
    )
}
