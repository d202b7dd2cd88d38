use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use jiff::Timestamp;

use super::*;
use crate::edge_config::{
    JobStatus, StartEdgeConfigurationUpdateRequest, SyncStatus, parse_start_request,
};

const EXAMPLE: &str = include_str!("../../../config/example-edge-configuration.json");

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn request(stream: &str, hub: &str) -> StartEdgeConfigurationUpdateRequest {
    let mut r = parse_start_request(EXAMPLE).unwrap();
    r.stream_arn = None;
    r.stream_name = Some(stream.into());
    r.edge_config.hub_device_arn = format!("arn:aws:iot:us-west-2:123456789012:thing/{hub}");
    r
}

fn segment(stream: &str, path: &str, start_ms: i64) -> NewSegment {
    NewSegment {
        stream_name: stream.into(),
        path: path.into(),
        codec_id: "V_MPEG4/ISO/AVC".into(),
        codec_private: vec![1, 0x4d, 0, 0x1f, 0xff],
        width: 1920,
        height: 1080,
        header_size: 300,
        start_ms,
    }
}

fn fragment(offset: u64, size: u64, timecode_ms: i64) -> NewFragment {
    NewFragment {
        offset,
        size,
        timecode_ms,
        duration_ms: 2000,
        frame_count: 50,
        key_frame_count: 1,
        clock_unsynced: false,
    }
}

#[test]
fn migrates_from_empty_and_reopens_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let c = Catalog::open(&path).unwrap();
        assert_eq!(c.schema_version().unwrap(), CURRENT_VERSION);
        c.put_config(
            &request("cam1", "hub"),
            SyncStatus::Syncing,
            t("2026-01-01T00:00:00Z"),
        )
        .unwrap();
    }
    let schema = |p: &std::path::Path| -> String {
        let conn = rusqlite::Connection::open(p).unwrap();
        let mut stmt = conn
            .prepare("select coalesce(sql, '') from sqlite_master order by name")
            .unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before = schema(&path);
    let c = Catalog::open(&path).unwrap();
    assert_eq!(c.schema_version().unwrap(), CURRENT_VERSION);
    assert_eq!(c.config_count().unwrap(), 1, "reopening keeps the data");
    drop(c);
    assert_eq!(schema(&path), before, "reopening changes no schema");
    let journal: String = rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[test]
fn refuses_a_catalog_from_a_newer_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    drop(Catalog::open(&path).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", CURRENT_VERSION + 1)
        .unwrap();
    let err = Catalog::open(&path).err().expect("newer schema is refused");
    assert!(matches!(err, CatalogError::TooNew { found, .. } if found == CURRENT_VERSION + 1));
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("newer than the {CURRENT_VERSION}")),
        "{msg}"
    );
    assert!(matches!(
        Catalog::open_read_only(&path),
        Err(CatalogError::TooNew { .. })
    ));
}

#[test]
fn refuses_a_file_that_is_not_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    std::fs::write(
        &path,
        b"this is not a database, just text that is long enough......",
    )
    .unwrap();
    let msg = Catalog::open(&path)
        .err()
        .expect("garbage refused")
        .to_string();
    assert!(msg.contains(FILE_NAME), "{msg}");
}

#[test]
fn configs_put_get_list_and_delete() {
    let c = Catalog::open_in_memory().unwrap();
    let created = t("2026-01-01T00:00:00Z");
    let stored = c
        .put_config(&request("cam1", "hubA"), SyncStatus::Syncing, created)
        .unwrap();
    assert_eq!(stored.stream_name(), "cam1");
    assert_eq!(stored.creation_time, created);
    c.put_config(&request("cam2", "hubA"), SyncStatus::Syncing, created)
        .unwrap();
    c.put_config(&request("cam3", "hubB"), SyncStatus::Syncing, created)
        .unwrap();

    // An update keeps the creation time and clears a previous failure.
    c.set_sync_status(
        "cam1",
        SyncStatus::SyncFailed,
        Some("bad"),
        t("2026-01-01T00:01:00Z"),
    )
    .unwrap();
    let mut updated = request("cam1", "hubA");
    updated.edge_config.deletion_config = None;
    let later = t("2026-01-02T00:00:00Z");
    let s = c
        .put_config(&updated, SyncStatus::Acknowledged, later)
        .unwrap();
    assert_eq!(s.creation_time, created);
    assert_eq!(s.last_updated_time, later);
    assert_eq!(s.failed_status_details, None);
    assert_eq!(s.request, updated);
    assert_eq!(s.sync_status, SyncStatus::Acknowledged);

    let hub_a = "arn:aws:iot:us-west-2:123456789012:thing/hubA";
    let page1 = c.configs_of_hub(hub_a, None, 1).unwrap();
    assert_eq!(page1.len(), 1);
    assert_eq!(page1[0].stream_name(), "cam1");
    let page2 = c.configs_of_hub(hub_a, Some("cam1"), 1).unwrap();
    assert_eq!(page2[0].stream_name(), "cam2");
    assert!(c.configs_of_hub(hub_a, Some("cam2"), 1).unwrap().is_empty());
    assert_eq!(c.configs().unwrap().len(), 3);

    assert!(c.delete_config("cam2").unwrap());
    assert!(!c.delete_config("cam2").unwrap());
    assert_eq!(c.config_count().unwrap(), 2);
    assert!(c.config("cam2").unwrap().is_none());
    assert!(matches!(
        c.set_sync_status("cam2", SyncStatus::InSync, None, later),
        Err(CatalogError::NotFound { .. })
    ));
}

#[test]
fn describe_carries_job_status() {
    let c = Catalog::open_in_memory().unwrap();
    let now = t("2026-01-01T00:00:00Z");
    c.put_config(&request("cam1", "hub"), SyncStatus::InSync, now)
        .unwrap();
    let d = c.describe("cam1").unwrap().unwrap();
    assert!(d.edge_agent_status.is_none());

    let collected = t("2026-01-01T00:00:10Z");
    c.set_job_status(
        "cam1",
        Job::Recorder,
        JobStatus::Success,
        None,
        Some(collected),
        now,
    )
    .unwrap();
    let failed_at = t("2026-01-01T00:00:20Z");
    c.set_job_status(
        "cam1",
        Job::Recorder,
        JobStatus::UserError,
        Some("camera refused the credentials"),
        None,
        failed_at,
    )
    .unwrap();
    let v = serde_json::to_value(c.describe("cam1").unwrap().unwrap()).unwrap();
    let rec = &v["EdgeAgentStatus"]["LastRecorderStatus"];
    assert_eq!(rec["RecorderStatus"], "USER_ERROR");
    assert_eq!(rec["JobStatusDetails"], "camera refused the credentials");
    assert_eq!(
        rec["LastCollectedTime"],
        serde_json::json!(collected.as_second())
    );
    assert_eq!(
        rec["LastUpdatedTime"],
        serde_json::json!(failed_at.as_second())
    );
    assert!(v["EdgeAgentStatus"].get("LastUploaderStatus").is_none());
    assert_eq!(v["SyncStatus"], "IN_SYNC");
    assert_eq!(v["StreamName"], "cam1");

    c.delete_config("cam1").unwrap();
    assert!(
        c.job_status("cam1", Job::Recorder).unwrap().is_none(),
        "status goes with its config"
    );
}

#[test]
fn segments_and_fragments() {
    let c = Catalog::open_in_memory().unwrap();
    let seg = c
        .insert_segment(&segment("cam1", "cam1/2026-01-01/1000.mkv", 1000))
        .unwrap();
    let f1 = c.add_fragment(seg, &fragment(300, 5000, 1000)).unwrap();
    let f2 = c.add_fragment(seg, &fragment(5300, 6000, 3000)).unwrap();
    let row = c.segment(seg).unwrap().unwrap();
    assert_eq!(row.size, 11_300);
    assert_eq!((row.start_ms, row.end_ms), (1000, 5000));
    assert_eq!(row.state, SegmentState::Open);

    // A fragment that does not continue the indexed bytes is refused: rows never describe a
    // gap or an overlap in the file.
    assert!(c.add_fragment(seg, &fragment(300, 10, 9000)).is_err());
    assert!(c.add_fragment(seg, &fragment(99_999, 10, 9000)).is_err());
    c.close_segment(seg).unwrap();
    assert!(
        c.add_fragment(seg, &fragment(11_300, 10, 9000)).is_err(),
        "closed segments are final"
    );

    let seg2 = c
        .insert_segment(&segment("cam1", "cam1/2026-01-01/5000.mkv", 5000))
        .unwrap();
    let f3 = c.add_fragment(seg2, &fragment(300, 100, 5000)).unwrap();
    let other = c
        .insert_segment(&segment("cam2", "cam2/2026-01-01/0.mkv", 0))
        .unwrap();
    c.add_fragment(other, &fragment(300, 100, 0)).unwrap();

    let ids = |v: Vec<FragmentRow>| v.into_iter().map(|f| f.id).collect::<Vec<_>>();
    assert_eq!(ids(c.pending_fragments("cam1", 10).unwrap()), [f1, f2, f3]);
    c.mark_fragment_uploaded(
        f1,
        "91343852333181432392682062607743920146264440076",
        t("2026-01-01T01:00:00Z"),
    )
    .unwrap();
    c.mark_fragment_failed(f2, "4004: fragment too large", t("2026-01-01T01:00:00Z"))
        .unwrap();
    assert!(
        c.mark_fragment_failed(f1, "x", t("2026-01-01T01:00:00Z"))
            .is_err(),
        "uploaded stays uploaded"
    );
    assert_eq!(ids(c.pending_fragments("cam1", 10).unwrap()), [f3]);
    let frags = c.fragments(seg).unwrap();
    assert_eq!(frags[0].upload_state, UploadState::Uploaded);
    assert!(frags[0].fragment_number.is_some());
    assert_eq!(frags[1].upload_state, UploadState::Failed);
    assert_eq!(
        frags[1].upload_error.as_deref(),
        Some("4004: fragment too large")
    );

    assert_eq!(c.stream_usage("cam1").unwrap(), 11_300 + 400);
    c.mark_segment_deleting(seg2).unwrap();
    assert_eq!(c.stream_usage("cam1").unwrap(), 11_300);
    assert!(
        c.pending_fragments("cam1", 10).unwrap().is_empty(),
        "deleting segments are not uploaded"
    );
    c.remove_segment(seg2).unwrap();
    assert!(
        c.fragments(seg2).unwrap().is_empty(),
        "fragments go with their segment"
    );
    assert_eq!(c.segments(Some("cam1")).unwrap().len(), 1);
    assert_eq!(c.segments(None).unwrap().len(), 2);

    let dup = c.insert_segment(&segment("cam1", "cam1/2026-01-01/1000.mkv", 1000));
    assert!(dup.is_err(), "one row per file");
}

/// A reader in another connection sees consistent snapshots while a writer appends: the
/// segment's indexed size always equals its header plus the fragments it has.
#[test]
fn concurrent_reader_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let c = Catalog::open(&path).unwrap();
    let seg = c.insert_segment(&segment("cam1", "cam1/a.mkv", 0)).unwrap();
    const N: u64 = 300;
    let reader_path = path.clone();
    let reader = std::thread::spawn(move || {
        let r = Catalog::open_read_only(&reader_path).unwrap();
        let mut last = 0;
        let mut reads = 0;
        while last < N {
            let conn = r.conn();
            let (size, count, sum): (u64, u64, u64) = conn
                .query_row(
                    "select s.size, count(f.id), coalesce(sum(f.size), 0) from segment s \
                     left join fragment f on f.segment_id = s.id where s.id = ?1",
                    [seg],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .unwrap();
            assert_eq!(size, 300 + sum, "snapshot is consistent");
            assert!(count >= last, "never goes backwards");
            last = count;
            reads += 1;
        }
        reads
    });
    for i in 0..N {
        c.add_fragment(seg, &fragment(300 + i * 10, 10, i as i64 * 2000))
            .unwrap();
    }
    let reads = reader.join().unwrap();
    assert!(reads > 0);
}

/// A write that meets another connection's write lock waits for it (the busy timeout) rather
/// than failing: a deferred transaction that read first could not wait, and CI saw
/// `concurrent_reader_while_writing` fail with "database is locked".
#[test]
fn a_write_waits_for_another_connections_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let c = Catalog::open(&path).unwrap();
    let seg = c.insert_segment(&segment("cam1", "cam1/a.mkv", 0)).unwrap();
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let mut other = rusqlite::Connection::open(&path).unwrap();
        let tx = other
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        locked_tx.send(()).unwrap();
        // How long the lock is held, not a synchronisation: the write below must outlast it.
        std::thread::sleep(std::time::Duration::from_millis(300));
        tx.commit().unwrap();
    });
    locked.recv().unwrap();
    c.add_fragment(seg, &fragment(300, 10, 0))
        .expect("waits for the other writer");
    holder.join().unwrap();
    assert_eq!(c.fragments(seg).unwrap().len(), 1);
}

/// Env var that turns [`child_commits_then_waits_to_be_killed`] into the child of
/// [`committed_row_survives_kill_9`].
const CHILD_DB: &str = "KVS_EDGE_AGENT_TEST_CHILD_DB";

#[test]
fn committed_row_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "catalog::tests::child_commits_then_waits_to_be_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let committed = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split_once("COMMITTED ")
                .map(|(_, id)| id.trim().to_owned())
        })
        .expect("child reports its commit");
    child.kill().unwrap(); // SIGKILL: no destructor, no checkpoint, no clean close.
    child.wait().unwrap();
    let fragment_id: i64 = committed.parse().unwrap();

    let c = Catalog::open(&path).unwrap();
    let stored = c.config("cam1").unwrap().expect("config row survived");
    assert_eq!(stored.sync_status, SyncStatus::InSync);
    let segs = c.segments(Some("cam1")).unwrap();
    assert_eq!(segs.len(), 1);
    let frags = c.fragments(segs[0].id).unwrap();
    assert_eq!(
        frags.last().map(|f| f.id),
        Some(fragment_id),
        "last committed fragment survived"
    );
    assert_eq!(segs[0].size, 300 + 10 * frags.len() as u64);
}

#[test]
#[ignore = "child process of committed_row_survives_kill_9"]
fn child_commits_then_waits_to_be_killed() {
    let Some(path) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let c = Catalog::open(std::path::Path::new(&path)).unwrap();
    c.put_config(
        &request("cam1", "hub"),
        SyncStatus::InSync,
        Timestamp::now(),
    )
    .unwrap();
    let seg = c.insert_segment(&segment("cam1", "cam1/a.mkv", 0)).unwrap();
    let mut last = 0;
    for i in 0..20u64 {
        last = c
            .add_fragment(seg, &fragment(300 + i * 10, 10, i as i64 * 2000))
            .unwrap();
    }
    println!("COMMITTED {last}");
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    // Keep the connection open (WAL not checkpointed) until the parent kills this process.
    loop {
        std::thread::park();
    }
}

#[test]
fn unreadable_stored_configuration_is_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let c = Catalog::open(&path).unwrap();
    c.put_config(
        &request("cam1", "hub"),
        SyncStatus::InSync,
        Timestamp::now(),
    )
    .unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "update edge_config set request_json = '{\"EdgeConfig\": 5}' where stream_name = 'cam1'",
            [],
        )
        .unwrap();
    let err = c.config("cam1").unwrap_err().to_string();
    assert!(
        err.contains("stream cam1") && err.contains("unreadable"),
        "{err}"
    );
    assert!(c.configs().is_err());
    // A status value outside the schema's CHECK cannot even be written.
    let bad_status = rusqlite::Connection::open(&path)
        .unwrap()
        .execute("update edge_config set sync_status = 'WHATEVER'", []);
    assert!(bad_status.is_err());
}

#[test]
fn segment_summaries_count_upload_states() {
    let c = Catalog::open_in_memory().unwrap();
    let a = c.insert_segment(&segment("cam1", "cam1/a.mkv", 0)).unwrap();
    let f1 = c.add_fragment(a, &fragment(300, 10, 0)).unwrap();
    let f2 = c.add_fragment(a, &fragment(310, 10, 2000)).unwrap();
    c.add_fragment(a, &fragment(320, 10, 4000)).unwrap();
    let now = t("2026-01-01T00:00:00Z");
    c.mark_fragment_uploaded(f1, "1", now).unwrap();
    c.mark_fragment_failed(f2, "4004", now).unwrap();
    let empty = c
        .insert_segment(&segment("cam1", "cam1/b.mkv", 9000))
        .unwrap();
    c.insert_segment(&segment("cam2", "cam2/c.mkv", 0)).unwrap();

    let s = c.segment_summaries(Some("cam1")).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].segment.id, a);
    assert_eq!(
        (s[0].fragments, s[0].pending, s[0].uploaded, s[0].failed),
        (3, 1, 1, 1)
    );
    assert_eq!(s[1].segment.id, empty);
    assert_eq!((s[1].fragments, s[1].pending), (0, 0));
    assert_eq!(c.segment_summaries(None).unwrap().len(), 3);
}

#[test]
fn a_damaged_schema_is_refused_by_every_open() {
    for (what, sql) in [
        ("table fragment", "drop table fragment"),
        ("table segment", "drop table fragment; drop table segment"),
        (
            "table edge_config",
            "drop table job_status; drop table edge_config",
        ),
        ("index fragment_upload", "drop index fragment_upload"),
        ("table stray", "create table stray (x)"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        drop(Catalog::open(&path).unwrap());
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
        for err in [
            Catalog::open(&path).err(),
            Catalog::open_existing(&path).err(),
            Catalog::open_read_only(&path).err(),
        ] {
            let err = err.unwrap_or_else(|| panic!("{what}: damaged schema accepted"));
            let msg = err.to_string();
            assert!(matches!(err, CatalogError::Damaged { .. }), "{msg}");
            assert!(msg.contains(what), "{what}: {msg}");
        }
    }
}

#[test]
fn someone_elses_database_is_not_taken_for_an_empty_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("create table photos (id integer primary key)")
        .unwrap();
    let err = Catalog::open(&path).err().expect("refused");
    assert!(err.to_string().contains("table photos"), "{err}");
}

#[test]
fn a_missing_catalog_is_not_created_by_verbs_that_expect_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.db");
    for err in [
        Catalog::open_existing(&path).err(),
        Catalog::open_read_only(&path).err(),
    ] {
        assert!(matches!(err, Some(CatalogError::Missing { .. })), "{err:?}");
    }
    assert!(!path.exists());
}

/// A catalog of schema `version` at `path`, with the rows `sql` inserts.
fn old_catalog(path: &Path, version: i32, sql: &str) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    upgrade::run_to(&tx, 0, version).unwrap();
    tx.execute_batch(sql).unwrap();
    tx.commit().unwrap();
}

#[test]
fn version_1_catalogs_upgrade_with_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    old_catalog(
        &path,
        1,
        "insert into segment (stream_name, path, codec_id, codec_private, width, height, \
         header_size, start_ms, end_ms, size, state) \
         values ('cam', 'cam/2026-01-01/1.mkv', 'V_MPEG4/ISO/AVC', x'01', 2, 2, 10, 1, 1, 10, 'CLOSED')",
    );
    let c = Catalog::open(&path).unwrap();
    assert_eq!(c.schema_version().unwrap(), CURRENT_VERSION);
    assert_eq!(c.segments(None).unwrap().len(), 1);
    let (uuid, dir_uuid) = c.identity().unwrap();
    assert_eq!(uuid.len(), 32);
    assert_eq!(dir_uuid, None);
    drop(c);
    assert_eq!(Catalog::open(&path).unwrap().identity().unwrap().0, uuid);
}

#[test]
fn version_2_fragments_upgrade_as_recorded_on_a_synchronised_clock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    old_catalog(
        &path,
        2,
        "insert into segment (id, stream_name, path, codec_id, codec_private, width, height, \
         header_size, start_ms, end_ms, size, state) \
         values (1, 'cam', 'cam/2026-01-01/1.mkv', 'V_MPEG4/ISO/AVC', x'01', 2, 2, 10, 1, 2001, 110, 'CLOSED'); \
         insert into fragment (segment_id, offset, size, timecode_ms, duration_ms, frame_count, \
         key_frame_count) values (1, 10, 100, 1, 2000, 50, 1);",
    );
    let c = Catalog::open(&path).unwrap();
    assert_eq!(c.schema_version().unwrap(), CURRENT_VERSION);
    let frags = c.fragments(1).unwrap();
    assert_eq!(frags.len(), 1);
    assert!(!frags[0].clock_unsynced);
    // A new fragment keeps its flag.
    let seg = c
        .insert_segment(&segment("cam", "cam/2026-01-01/5000.mkv", 5_000))
        .unwrap();
    let id = c
        .add_fragment(
            seg,
            &NewFragment {
                clock_unsynced: true,
                ..fragment(300, 100, 5_000)
            },
        )
        .unwrap();
    let row = c.fragments(seg).unwrap();
    assert_eq!((row[0].id, row[0].clock_unsynced), (id, true));
    let summary = c.segment_summaries(Some("cam")).unwrap();
    assert_eq!(
        summary.iter().map(|s| s.clock_unsynced).collect::<Vec<_>>(),
        [0, 1]
    );
}

fn new_request(id: &str, kind: RequestKind, start_ms: i64, end_ms: i64) -> NewRequest {
    NewRequest {
        stream_name: "cam".into(),
        request_id: id.into(),
        kind,
        start_ms,
        end_ms,
    }
}

#[test]
fn requests_are_stored_once_ended_with_counts_and_pruned() {
    let c = Catalog::open_in_memory().unwrap();
    let seg = c.insert_segment(&segment("cam", "cam/1.mkv", 0)).unwrap();
    let mut offset = 300;
    for i in 0..4 {
        let id = c
            .add_fragment(seg, &fragment(offset, 10, i * 2000))
            .unwrap();
        offset += 10;
        if i == 1 {
            c.mark_fragment_uploaded(id, "n1", t("2026-01-01T00:00:00Z"))
                .unwrap();
        }
    }
    let now = t("2026-01-01T00:00:00Z");
    let mut changed = c.requests_changed("cam");
    let a = c
        .add_request(&new_request("a", RequestKind::Range, 500, 4500), now)
        .unwrap();
    assert!(matches!(a, Added::New(_)));
    assert!(changed.has_changed().unwrap(), "a new request is announced");
    changed.mark_unchanged();
    assert_eq!(a.row().already, 1, "fragment 1 was uploaded before");
    assert_eq!(a.row().state, RequestState::Queued);
    let again = c
        .add_request(&new_request("a", RequestKind::Range, 0, 9), now)
        .unwrap();
    assert_eq!(
        again,
        Added::Known(a.row().clone()),
        "a redelivery changes nothing"
    );
    assert!(!changed.has_changed().unwrap());

    let pending: Vec<i64> = c
        .pending_fragments_in("cam", None, Some((500, 4500)), 10)
        .unwrap()
        .iter()
        .map(|f| f.timecode_ms)
        .collect();
    assert_eq!(pending, [0, 4000], "overlapping and pending");
    let counts = c.range_counts("cam", 500, 4500).unwrap();
    assert_eq!(
        (counts.pending, counts.uploaded, counts.recorded_until),
        (2, 1, Some(8000))
    );

    c.set_request_uploading(a.row().id, now).unwrap();
    let ended = c
        .end_request(a.row().id, RequestState::Done, "done", now)
        .unwrap()
        .unwrap();
    assert_eq!((ended.state, ended.uploaded), (RequestState::Done, 0));
    assert!(
        c.end_request(a.row().id, RequestState::Failed, "x", now)
            .unwrap()
            .is_none()
    );

    // A new live request ends the open one; stop-live ends the newest.
    c.add_request(&new_request("l1", RequestKind::Live, 0, 60_000), now)
        .unwrap();
    c.add_request(&new_request("l2", RequestKind::Live, 0, 60_000), now)
        .unwrap();
    let open: Vec<String> = c
        .open_requests("cam")
        .unwrap()
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    assert_eq!(open, ["l2"]);
    let l1 = c
        .requests("cam")
        .unwrap()
        .into_iter()
        .find(|r| r.request_id == "l1")
        .unwrap();
    assert_eq!(l1.details.as_deref(), Some("replaced by request l2"));
    assert_eq!(c.stop_live("cam", now).unwrap().unwrap().request_id, "l2");
    assert!(c.stop_live("cam", now).unwrap().is_none());

    // Only the newest ended requests are kept.
    for i in 0..KEEP_ENDED + 5 {
        let r = c
            .add_request(
                &new_request(&format!("r{i}"), RequestKind::Range, 0, 1),
                now,
            )
            .unwrap();
        c.end_request(r.row().id, RequestState::Done, "done", now)
            .unwrap();
    }
    let kept = c.requests("cam").unwrap();
    assert!(kept.len() <= KEEP_ENDED + 1, "{}", kept.len());
    assert_eq!(kept[0].request_id, format!("r{}", KEEP_ENDED + 4));

    let backlog = c.backlog("cam").unwrap();
    assert_eq!(
        (backlog.fragments, backlog.bytes, backlog.oldest_ms),
        (3, 30, Some(0))
    );

    c.put_config(&request("cam", "hub"), SyncStatus::InSync, now)
        .unwrap();
    assert!(c.delete_config("cam").unwrap());
    assert!(
        c.requests("cam").unwrap().is_empty(),
        "a deleted stream's requests go too"
    );
}
