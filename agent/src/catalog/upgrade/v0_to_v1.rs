//! Version 1: edge configurations, job status, segments and fragments.

use rusqlite::Transaction;

pub fn run(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
        -- One row per stream: the StartEdgeConfigurationUpdate request as received, and where its
        -- synchronisation stands.
        create table edge_config (
            stream_name text primary key,
            stream_arn text,
            hub_device_arn text not null,
            request_json text not null,
            sync_status text not null check (sync_status in (
                'SYNCING', 'ACKNOWLEDGED', 'IN_SYNC', 'SYNC_FAILED',
                'DELETING', 'DELETE_FAILED', 'DELETING_ACKNOWLEDGED')),
            failed_status_details text,
            creation_time_ms integer not null,
            last_updated_time_ms integer not null
        ) strict;
        create index edge_config_hub on edge_config (hub_device_arn, stream_name);

        -- LastRecorderStatus / LastUploaderStatus of each stream.
        create table job_status (
            stream_name text not null references edge_config (stream_name) on delete cascade,
            job text not null check (job in ('RECORDER', 'UPLOADER')),
            status text not null check (status in ('SUCCESS', 'USER_ERROR', 'SYSTEM_ERROR')),
            details text,
            last_collected_time_ms integer,
            last_updated_time_ms integer not null,
            primary key (stream_name, job)
        ) strict;

        -- A Matroska file on disk. `size` is the length of the file's indexed prefix: the header
        -- plus every cluster that has a fragment row. Bytes past it were never committed and are
        -- truncated by recovery. State OPEN: still being appended to; CLOSED: complete;
        -- DELETING: marked for deletion, file may or may not still exist.
        create table segment (
            id integer primary key,
            stream_name text not null,
            path text not null unique,
            codec_id text not null,
            codec_private blob not null,
            width integer not null,
            height integer not null,
            header_size integer not null check (header_size > 0),
            start_ms integer not null,
            end_ms integer not null check (end_ms >= start_ms),
            size integer not null check (size >= header_size),
            state text not null check (state in ('OPEN', 'CLOSED', 'DELETING'))
        ) strict;
        create index segment_stream_start on segment (stream_name, start_ms);

        -- A fragment: one Matroska Cluster of a segment, one Kinesis Video Streams fragment.
        create table fragment (
            id integer primary key,
            segment_id integer not null references segment (id) on delete cascade,
            offset integer not null,
            size integer not null check (size > 0),
            timecode_ms integer not null,
            duration_ms integer not null check (duration_ms >= 0),
            frame_count integer not null check (frame_count > 0),
            key_frame_count integer not null check (key_frame_count > 0),
            upload_state text not null default 'PENDING'
                check (upload_state in ('PENDING', 'UPLOADED', 'FAILED')),
            fragment_number text,
            upload_error text,
            upload_time_ms integer,
            unique (segment_id, offset)
        ) strict;
        create index fragment_upload on fragment (upload_state, segment_id);
        "#,
    )
}
