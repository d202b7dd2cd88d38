//! The supervisor without MQTT: SyncStatus transitions, limits, refusals, deletion, resume.

use std::collections::HashMap;

use jiff::Timestamp;

use super::*;
use crate::catalog::NewSegment;
use crate::clock::Clock;
use crate::edge_config::parse_start_request;
use crate::edge_config::{JobStatus, StartEdgeConfigurationUpdateRequest, SyncStatus};
use crate::health::Occurrence;
use crate::secrets::{Lookup, SecretError};

struct MapSecrets(HashMap<String, String>);

impl SecretSource for MapSecrets {
    fn media_uri<'a>(&'a self, arn: &'a str) -> Lookup<'a> {
        let answer = self
            .0
            .get(arn)
            .cloned()
            .ok_or_else(|| SecretError::NotFound(arn.to_owned()));
        Box::pin(std::future::ready(answer))
    }
}

fn secret(stream: &str) -> String {
    format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{stream}")
}

/// A configuration whose recorder waits for a window in 2099 (no media needed).
fn request(stream: &str, retention: u32) -> StartEdgeConfigurationUpdateRequest {
    parse_start_request(&format!(
        r#"{{"StreamName":"{stream}","EdgeConfig":{{"HubDeviceArn":"arn:aws:iot:us-east-1:123456789012:thing/hub","RecorderConfig":{{"MediaSourceConfig":{{"MediaUriSecretArn":"{}","MediaUriType":"FILE_URI"}},"ScheduleConfig":{{"ScheduleExpression":"0 0 0 1 1 ? 2099","DurationInSeconds":60}}}},"DeletionConfig":{{"EdgeRetentionInHours":{retention}}}}}}}"#,
        secret(stream)
    ))
    .unwrap()
}

/// The supervisor's configuration in these tests: 16 streams, UTC, no disk reserve.
fn config(recording_dir: &std::path::Path) -> SupervisorConfig {
    SupervisorConfig {
        recording_dir: recording_dir.to_owned(),
        max_streams: 16,
        fragmenter: FragmenterConfig::default(),
        rtsp: RtspOptions::default(),
        time_zone: jiff::tz::TimeZone::UTC,
        disk_reserve: crate::janitor::policy::DiskReserve {
            min_free_bytes: 0,
            min_free_percent: 0,
        },
        request_limits: Default::default(),
    }
}

struct Fixture {
    sup: Supervisor,
    events: mpsc::UnboundedReceiver<StreamEvent>,
    catalog: Arc<Catalog>,
    dir: tempfile::TempDir,
}

fn fixture(max_streams: usize) -> Fixture {
    fixture_with(max_streams, crate::janitor::policy::DiskReserve::default())
}

fn fixture_with(max_streams: usize, disk_reserve: crate::janitor::policy::DiskReserve) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::open(&dir.path().join("c.db")).unwrap());
    let (tx, events) = mpsc::unbounded_channel();
    let secrets = MapSecrets(
        ["a", "b", "c"]
            .iter()
            .map(|s| (secret(s), "/nonexistent/clip.h264".to_owned()))
            .collect(),
    );
    let sup = Supervisor::new(
        catalog.clone(),
        Arc::new(crate::clock::RealClock),
        SupervisorConfig {
            max_streams,
            disk_reserve,
            ..config(dir.path())
        },
        Arc::new(secrets),
        None,
        tx,
    );
    Fixture {
        sup,
        events,
        catalog,
        dir,
    }
}

/// (stream, SyncStatus or "REMOVED", FailedStatusDetails) of every event so far.
fn drain(f: &mut Fixture) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    while let Ok(e) = f.events.try_recv() {
        out.push(match e {
            StreamEvent::Stored {
                stream, response, ..
            }
            | StreamEvent::State {
                stream, response, ..
            } => (
                stream,
                response
                    .sync_status
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                response.failed_status_details,
            ),
            StreamEvent::Removed { stream, .. } => (stream, "REMOVED".into(), None),
            StreamEvent::Changed { stream } => (stream, "CHANGED".into(), None),
        });
    }
    out
}

fn statuses(events: &[(String, String, Option<String>)], stream: &str) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .filter(|e| e.0 == stream)
        .map(|e| e.1.clone())
        .collect();
    v.dedup();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_moves_through_the_api_states() {
    let mut f = fixture(16);
    assert_eq!(
        f.sup.apply("hub", request("a", 24), true).await,
        Some(SyncStatus::InSync)
    );
    let ev = drain(&mut f);
    assert_eq!(statuses(&ev, "a"), ["SYNCING", "ACKNOWLEDGED", "IN_SYNC"]);
    assert_eq!(
        f.catalog.config("a").unwrap().unwrap().sync_status,
        SyncStatus::InSync
    );
    assert_eq!(f.sup.running_streams().await, ["a"]);

    // A retained delivery of the stored configuration changes nothing; a live one re-applies.
    assert_eq!(f.sup.apply("hub", request("a", 24), false).await, None);
    assert!(drain(&mut f).is_empty());
    assert_eq!(
        f.sup.apply("hub", request("a", 24), true).await,
        Some(SyncStatus::InSync)
    );
    // A retained delivery that differs applies.
    assert_eq!(
        f.sup.apply("hub", request("a", 12), false).await,
        Some(SyncStatus::InSync)
    );
    let stored = f.catalog.config("a").unwrap().unwrap();
    assert_eq!(stored.request.edge_config.edge_retention_in_hours(), 12);
    f.sup.shutdown(Duration::from_secs(5)).await;
    assert!(f.sup.running_streams().await.is_empty());
    // After shutdown nothing is accepted.
    assert_eq!(f.sup.apply("hub", request("b", 24), true).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_problem() {
    let mut f = fixture(1);
    f.sup.apply("hub", request("a", 24), true).await;
    drain(&mut f);
    // Over the limit: SYNC_FAILED, nothing stored.
    assert_eq!(
        f.sup.apply("hub", request("b", 24), true).await,
        Some(SyncStatus::SyncFailed)
    );
    let ev = drain(&mut f);
    assert_eq!(statuses(&ev, "b"), ["SYNCING", "SYNC_FAILED"]);
    assert!(
        ev.last()
            .unwrap()
            .2
            .as_deref()
            .unwrap()
            .contains("max_streams 1")
    );
    assert!(f.catalog.config("b").unwrap().is_none());
    // Updating the stream already counted is not over the limit.
    assert_eq!(
        f.sup.apply("hub", request("a", 6), true).await,
        Some(SyncStatus::InSync)
    );
    // An unknown secret names its field.
    let mut unknown = request("a", 24);
    unknown
        .edge_config
        .recorder_config
        .media_source_config
        .media_uri_secret_arn = secret("zzz");
    drain(&mut f);
    assert_eq!(
        f.sup.apply("hub", unknown, true).await,
        Some(SyncStatus::SyncFailed)
    );
    let ev = drain(&mut f);
    let details = ev.last().unwrap().2.clone().unwrap();
    assert!(details.starts_with(SECRET_FIELD), "{details}");
    // The stored configuration keeps running as it was, marked SYNC_FAILED.
    let stored = f.catalog.config("a").unwrap().unwrap();
    assert_eq!(stored.sync_status, SyncStatus::SyncFailed);
    assert_eq!(stored.request.edge_config.edge_retention_in_hours(), 6);
    assert_eq!(f.sup.running_streams().await, ["a"]);
    // A malformed request (refused by the control plane) of a stored stream.
    f.sup.reject("hub", "a", "not valid JSON: x").await;
    let stored = f.catalog.config("a").unwrap().unwrap();
    assert_eq!(
        stored.failed_status_details.as_deref(),
        Some("not valid JSON: x")
    );
    f.sup.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_jobs_media_and_rows() {
    let mut f = fixture(16);
    // Media before the recorder starts (its startup repair must find it sound).
    record_one_fragment(&f, "a");
    f.sup.apply("hub", request("a", 24), true).await;
    drain(&mut f);
    f.sup.delete("hub", "a").await;
    let ev = drain(&mut f);
    assert_eq!(
        statuses(&ev, "a"),
        ["DELETING", "DELETING_ACKNOWLEDGED", "REMOVED"]
    );
    assert!(f.catalog.config("a").unwrap().is_none());
    assert!(f.catalog.segments(Some("a")).unwrap().is_empty());
    let left: Vec<_> = walk(f.dir.path());
    assert!(!f.dir.path().join("a").exists(), "{left:?}");
    assert!(!f.dir.path().join("streams/a").exists());
    assert!(f.sup.running_streams().await.is_empty());
    // Deleting what is not there clears its topics all the same.
    f.sup.delete("hub", "nothing").await;
    assert_eq!(statuses(&drain(&mut f), "nothing"), ["REMOVED"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_in_a_segments_place_does_not_stop_a_deletion() {
    let mut f = fixture(16);
    f.sup.apply("hub", request("b", 24), true).await;
    // A "segment file" that is a directory with content: moved to quarantine, not emptied.
    let bogus = f.dir.path().join("b/2026-01-01/1.mkv");
    std::fs::create_dir_all(bogus.join("inner")).unwrap();
    f.catalog
        .insert_segment(&NewSegment {
            stream_name: "b".into(),
            path: "b/2026-01-01/1.mkv".into(),
            codec_id: "V_MPEG4/ISO/AVC".into(),
            codec_private: vec![1],
            width: 2,
            height: 2,
            header_size: 1,
            start_ms: 1,
        })
        .unwrap();
    drain(&mut f);
    f.sup.delete("hub", "b").await;
    let ev = drain(&mut f);
    assert_eq!(
        statuses(&ev, "b"),
        ["DELETING", "DELETING_ACKNOWLEDGED", "REMOVED"]
    );
    assert!(f.catalog.config("b").unwrap().is_none());
    assert!(!bogus.exists());
    let q = f.catalog.quarantined(Some("b")).unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(f.dir.path().join(&q[0].path).join("inner").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_starts_stored_configurations_and_finishes_deletions() {
    let mut f = fixture(16);
    let now = jiff::Timestamp::now();
    f.catalog
        .put_config(&request("a", 24), SyncStatus::Acknowledged, now)
        .unwrap();
    f.catalog
        .put_config(&request("b", 24), SyncStatus::Deleting, now)
        .unwrap();
    f.catalog
        .put_config(&request("c", 24), SyncStatus::DeleteFailed, now)
        .unwrap();
    f.sup.resume().await;
    let ev = drain(&mut f);
    assert_eq!(statuses(&ev, "a"), ["IN_SYNC"]);
    assert_eq!(statuses(&ev, "b").last().unwrap(), "REMOVED");
    assert!(statuses(&ev, "c").is_empty());
    assert_eq!(f.sup.running_streams().await, ["a"]);
    assert!(f.catalog.config("b").unwrap().is_none());
    f.sup.shutdown(Duration::from_secs(5)).await;
}

/// (thing, stream, SyncStatus or "REMOVED", FailedStatusDetails) of every event so far.
fn drain_things(f: &mut Fixture) -> Vec<(String, String, String, Option<String>)> {
    let mut out = Vec::new();
    while let Ok(e) = f.events.try_recv() {
        out.push(match e {
            StreamEvent::Stored {
                thing,
                stream,
                response,
            }
            | StreamEvent::State {
                thing,
                stream,
                response,
            } => (
                thing,
                stream,
                response
                    .sync_status
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                response.failed_status_details,
            ),
            StreamEvent::Removed { thing, stream } => (thing, stream, "REMOVED".into(), None),
            StreamEvent::Changed { stream } => (String::new(), stream, "CHANGED".into(), None),
        });
    }
    out
}

/// Stream names are unique per account and region: another thing's configuration of a stream
/// this agent records for one thing is refused on the newcomer's topic, naming the owner; it,
/// a malformed request and a delete on the other thing's topic leave the owner's stream alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_things_stream_is_not_another_things() {
    let mut f = fixture(16);
    assert_eq!(
        f.sup.apply("hub", request("a", 24), true).await,
        Some(SyncStatus::InSync)
    );
    drain(&mut f);
    let mut other = request("a", 12);
    other.edge_config.hub_device_arn = "arn:aws:iot:us-east-1:123456789012:thing/hub-b".into();
    assert_eq!(
        f.sup.apply("hub-b", other.clone(), true).await,
        Some(SyncStatus::SyncFailed)
    );
    // A retained redelivery is refused the same way.
    assert_eq!(
        f.sup.apply("hub-b", other, false).await,
        Some(SyncStatus::SyncFailed)
    );
    f.sup.reject("hub-b", "a", "not valid JSON: x").await;
    let ev = drain_things(&mut f);
    assert!(ev.iter().all(|e| e.0 == "hub-b"), "{ev:?}");
    let refusal = ev.iter().find(|e| e.2 == "SYNC_FAILED").unwrap();
    let details = refusal.3.as_deref().unwrap();
    assert!(
        details.starts_with("StreamName:") && details.contains("\"hub\""),
        "{details}"
    );
    let stored = f.catalog.config("a").unwrap().unwrap();
    assert_eq!(stored.sync_status, SyncStatus::InSync);
    assert_eq!(stored.failed_status_details, None);
    assert_eq!(stored.request, request("a", 24));

    // A delete on the other thing's topic clears that thing's topics only.
    f.sup.delete("hub-b", "a").await;
    let ev = drain_things(&mut f);
    assert_eq!(
        ev,
        [("hub-b".into(), "a".into(), "REMOVED".into(), None)],
        "{ev:?}"
    );
    assert!(f.catalog.config("a").unwrap().is_some());
    assert_eq!(f.sup.running_streams().await, ["a"]);
    // The owner deletes it; then the other thing may configure it.
    f.sup.delete("hub", "a").await;
    assert!(f.catalog.config("a").unwrap().is_none());
    let mut other = request("a", 12);
    other.edge_config.hub_device_arn = "arn:aws:iot:us-east-1:123456789012:thing/hub-b".into();
    assert_eq!(
        f.sup.apply("hub-b", other, true).await,
        Some(SyncStatus::InSync)
    );
    f.sup.shutdown(Duration::from_secs(5)).await;
}

/// A disk under its reserve pauses the recorder, and LastRecorderStatus says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_recording_and_says_so() {
    let reserve = crate::janitor::policy::DiskReserve {
        min_free_bytes: u64::MAX,
        min_free_percent: 0,
    };
    let mut f = fixture_with(16, reserve);
    let thing = "hub";
    assert_eq!(
        f.sup.apply(thing, request("a", 24), true).await,
        Some(SyncStatus::InSync)
    );
    let details = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(row) = f
                .catalog
                .job_status("a", crate::catalog::Job::Recorder)
                .unwrap()
                && row
                    .details
                    .as_deref()
                    .is_some_and(|d| d.contains("reserve"))
            {
                return row;
            }
            f.events.recv().await.expect("events flow");
        }
    })
    .await
    .expect("the pause is reported");
    assert_eq!(details.status, JobStatus::SystemError);
    assert_eq!(
        details.details.as_deref(),
        Some("recording paused: the file system is under its free-space reserve")
    );
    f.sup.shutdown(Duration::from_secs(5)).await;
}

/// A recording window that closes completes the record job once (the Completed metric); the
/// job is then scheduled, not running, and counted healthy.
#[tokio::test(start_paused = true)]
async fn a_closing_recording_window_completes_the_record_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::open(&dir.path().join("c.db")).unwrap());
    let (tx, _events) = mpsc::unbounded_channel();
    let clip = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../samples/sample-h264-640x360-gop1s.h264"
    );
    let secrets = MapSecrets([(secret("w"), clip.to_owned())].into_iter().collect());
    let start: Timestamp = "2026-11-25T10:00:30Z".parse().unwrap();
    let sup = Supervisor::new(
        catalog,
        Arc::new(crate::clock::PausedClock::new(start)),
        config(dir.path()),
        Arc::new(secrets),
        None,
        tx,
    );
    // Every hour from hh:00:00 for 60 s: the window open at 10:00:30 closes at 10:01:00.
    let request = parse_start_request(&format!(
        r#"{{"StreamName":"w","EdgeConfig":{{"HubDeviceArn":"arn:aws:iot:us-east-1:123456789012:thing/hub","RecorderConfig":{{"MediaSourceConfig":{{"MediaUriSecretArn":"{}","MediaUriType":"FILE_URI"}},"ScheduleConfig":{{"ScheduleExpression":"0 0 * * * ?","DurationInSeconds":60}}}}}}}}"#,
        secret("w")
    ))
    .unwrap();
    assert_eq!(
        sup.apply("hub", request, true).await,
        Some(SyncStatus::InSync)
    );
    // The recorder job starts inside the window (simulated time: it waits on nothing real).
    let mut waited = 0;
    while !sup.health().jobs[0].running() {
        waited += 1;
        assert!(waited < 100, "{:?}", sup.health());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut completed = Vec::new();
    for _ in 0..120 {
        completed.extend(
            sup.take_events()
                .into_iter()
                .filter(|e| e.kind == JobKind::Record),
        );
        if !completed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(completed.len(), 1, "{completed:?}");
    assert_eq!(completed[0].what, Occurrence::Completed);
    let end: Timestamp = "2026-11-25T10:01:00Z".parse().unwrap();
    assert!(completed[0].at >= end, "{:?}", completed[0].at);
    let after = sup.health();
    assert!(
        !after.jobs[0].running() && after.jobs[0].healthy(),
        "{after:?}"
    );
    // Nothing more within the next half hour.
    tokio::time::sleep(Duration::from_secs(1800)).await;
    assert!(sup.take_events().is_empty());
    sup.shutdown(Duration::from_secs(5)).await;
}

/// One damaged stored configuration fails its stream at resume; the others run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_stored_configuration_fails_only_its_stream() {
    let f = fixture(16);
    let now = jiff::Timestamp::now();
    for s in ["a", "b"] {
        f.catalog
            .put_config(&request(s, 24), SyncStatus::InSync, now)
            .unwrap();
    }
    let db = rusqlite::Connection::open(f.dir.path().join("c.db")).unwrap();
    db.execute(
        "update edge_config set request_json = '{\"EdgeConfig\": 5}' where stream_name = 'b'",
        [],
    )
    .unwrap();
    f.sup.resume().await;
    assert_eq!(f.sup.running_streams().await, ["a"]);
    let (status, details): (String, String) = db
        .query_row(
            "select sync_status, failed_status_details from edge_config where stream_name = 'b'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(status, "SYNC_FAILED");
    assert!(details.contains("unreadable"), "{details}");
    f.sup.shutdown(Duration::from_secs(5)).await;
}

/// A stream named like the agent's own files deletes only its own media.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_stream_named_log_leaves_the_log_directory() {
    let mut f = fixture(16);
    let log = f.dir.path().join("log");
    std::fs::create_dir_all(&log).unwrap();
    std::fs::write(log.join("kvs-edge-agent.log"), b"keep").unwrap();
    record_one_fragment(&f, "log");
    assert!(f.dir.path().join("streams/log").is_dir());
    let mut req = request("a", 24);
    req.stream_name = Some("log".into());
    assert_eq!(
        f.sup.apply("hub", req, true).await,
        Some(SyncStatus::InSync)
    );
    drain(&mut f);
    f.sup.delete("hub", "log").await;
    assert_eq!(statuses(&drain(&mut f), "log").last().unwrap(), "REMOVED");
    assert_eq!(
        std::fs::read(log.join("kvs-edge-agent.log")).unwrap(),
        b"keep"
    );
    assert!(!f.dir.path().join("streams/log").exists());
    assert!(f.catalog.segments(Some("log")).unwrap().is_empty());
}

fn walk(p: &std::path::Path) -> Vec<String> {
    let mut out = vec![p.display().to_string()];
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            out.extend(walk(&e.unwrap().path()));
        }
    }
    out
}

/// Writes one real fragment of `stream` through the segment writer.
fn record_one_fragment(f: &Fixture, stream: &str) {
    use crate::media::mkv::{Frame, TrackInfo, VideoCodec};
    let mut w =
        crate::store::segment::SegmentWriter::new(f.dir.path(), stream, f.catalog.clone()).unwrap();
    w.write(&crate::media::fragment::Fragment {
        frames: vec![Frame {
            timestamp_ms: 1_767_225_600_000,
            key: true,
            data: vec![0, 0, 0, 2, 0x65, 1],
        }],
        track: Arc::new(TrackInfo {
            codec: VideoCodec::H264,
            codec_private: vec![1, 77, 0, 30, 0xFF, 0xE0, 0],
            width: 64,
            height: 64,
        }),
        duration_ms: 40,
        new_segment: false,
        clock_unsynced: false,
    })
    .unwrap();
}

/// Polls `cond` until it holds; panics after `limit`.
async fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A file system mounted for one test, unmounted on drop (also when the test fails).
struct Mount(std::path::PathBuf);

impl Mount {
    /// A read-only tmpfs at `path`; `None` (with a notice) where mounting is not permitted,
    /// unless under CI.
    fn read_only_tmpfs(path: &std::path::Path) -> Option<Mount> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=16m", "tmpfs"])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Mount(path.to_owned())),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var_os("CI").is_none(),
                    "mount -t tmpfs is required under CI: {why}"
                );
                eprintln!("NOTICE: cannot mount a tmpfs here ({why}); skipping");
                None
            }
        }
    }

    fn remount(&self, mode: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -o remount,{mode} {}", self.0.display());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A recording directory that is read-only when the agent starts: LastRecorderStatus turns
/// from the last run's SUCCESS to SYSTEM_ERROR naming the directory and why (and the metrics'
/// health with it), the camera is left alone, and recording starts once the directory is
/// writable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_recording_directory_is_a_system_error_until_writable() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    std::fs::create_dir(&rec).unwrap();
    let Some(mount) = Mount::read_only_tmpfs(&rec) else {
        return;
    };
    let catalog = Arc::new(Catalog::open(&dir.path().join("c.db")).unwrap());
    let (tx, _events) = mpsc::unbounded_channel();
    let clip = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../samples/sample-h264-640x360-gop1s.h264"
    );
    let secrets = MapSecrets([(secret("ro"), clip.to_owned())].into_iter().collect());
    let sup = Supervisor::new(
        catalog.clone(),
        Arc::new(crate::clock::RealClock),
        SupervisorConfig {
            // No write is attempted for the first 8 s (the first fragment closes then): an error
            // seen sooner comes from checking the directory, not from a failed write.
            fragmenter: FragmenterConfig {
                min_fragment_ms: 8000,
                ..FragmenterConfig::default()
            },
            ..config(&rec)
        },
        Arc::new(secrets),
        None,
        tx,
    );
    let request = parse_start_request(&format!(
        r#"{{"StreamName":"ro","EdgeConfig":{{"HubDeviceArn":"arn:aws:iot:us-east-1:123456789012:thing/hub","RecorderConfig":{{"MediaSourceConfig":{{"MediaUriSecretArn":"{}","MediaUriType":"FILE_URI"}}}}}}}}"#,
        secret("ro")
    ))
    .unwrap();
    // What the last run left: the configuration in sync, its recorder at SUCCESS.
    let now = jiff::Timestamp::now();
    catalog
        .put_config(&request, SyncStatus::InSync, now)
        .unwrap();
    catalog
        .set_job_status(
            "ro",
            crate::catalog::Job::Recorder,
            JobStatus::Success,
            None,
            Some(now),
            now,
        )
        .unwrap();
    sup.resume().await;
    let recorder_status = || {
        catalog
            .job_status("ro", crate::catalog::Job::Recorder)
            .unwrap()
            .unwrap()
    };
    wait_until("SYSTEM_ERROR", Duration::from_secs(4), || {
        recorder_status().status == JobStatus::SystemError
    })
    .await;
    let row = recorder_status();
    let details = row.details.as_deref().unwrap_or_default();
    assert!(
        details.contains(&format!(
            "the recording directory {} is not writable",
            rec.display()
        )) && details.contains("Read-only file system"),
        "{details}"
    );
    let job = sup.health().jobs.into_iter().find(|j| j.stream == "ro");
    assert!(job.is_some_and(|j| !j.healthy()), "{:?}", sup.health());
    assert!(catalog.segments(Some("ro")).unwrap().is_empty());

    // Writable again: recording starts within the backoff, and SUCCESS replaces the error.
    mount.remount("rw");
    wait_until("recording", Duration::from_secs(40), || {
        recorder_status().status == JobStatus::Success
            && catalog
                .segments(Some("ro"))
                .unwrap()
                .iter()
                .any(|s| !catalog.fragments(s.id).unwrap().is_empty())
    })
    .await;
    sup.shutdown(Duration::from_secs(5)).await;
    drop(mount);
}

/// Deleting a stream recorded under `streams/` leaves a top-level directory of its name alone,
/// even an empty one: only a directory the stream's own rows used is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_stream_leaves_an_empty_directory_of_its_name() {
    let mut f = fixture(16);
    let namesake = f.dir.path().join("a");
    std::fs::create_dir(&namesake).unwrap();
    record_one_fragment(&f, "a");
    f.sup.apply("hub", request("a", 24), true).await;
    drain(&mut f);
    f.sup.delete("hub", "a").await;
    assert_eq!(statuses(&drain(&mut f), "a").last().unwrap(), "REMOVED");
    assert!(!f.dir.path().join("streams/a").exists());
    assert!(namesake.is_dir());
}

/// The sample clip every simulated-time test records from.
const CLIP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../samples/sample-h264-640x360-gop1s.h264"
);

/// A configuration recording `stream` from its secret's clip all the time.
fn always(stream: &str) -> StartEdgeConfigurationUpdateRequest {
    parse_start_request(&format!(
        r#"{{"StreamName":"{stream}","EdgeConfig":{{"HubDeviceArn":"arn:aws:iot:us-east-1:123456789012:thing/hub","RecorderConfig":{{"MediaSourceConfig":{{"MediaUriSecretArn":"{}","MediaUriType":"FILE_URI"}}}}}}}}"#,
        secret(stream)
    ))
    .unwrap()
}

/// A secret store that answers every ARN with the clip at once, except `slow`'s, which it
/// takes 30 s over (a Secrets Manager that does not answer); `asked` fires when that lookup
/// begins.
struct SlowSecrets {
    slow: String,
    asked: Arc<tokio::sync::Notify>,
}

impl SecretSource for SlowSecrets {
    fn media_uri<'a>(&'a self, arn: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            if arn == self.slow {
                self.asked.notify_one();
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Ok(CLIP.to_owned())
        })
    }
}

/// A supervisor on `clock` (tokio's paused timer) recording into `dir`.
fn simulated(
    catalog: &Arc<Catalog>,
    dir: &std::path::Path,
    clock: &crate::clock::PausedClock,
    fragmenter: FragmenterConfig,
    secrets: impl SecretSource + 'static,
    uploader: Option<Uploader>,
) -> Supervisor {
    Supervisor::new(
        catalog.clone(),
        Arc::new(clock.clone()),
        SupervisorConfig {
            fragmenter,
            ..config(dir)
        },
        Arc::new(secrets),
        uploader,
        mpsc::unbounded_channel().0,
    )
}

/// Waits on simulated time until `cond` holds, at most `limit`; the time it took.
async fn within(
    clock: &dyn Clock,
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let t0 = clock.monotonic();
    while !cond() {
        let waited = clock.monotonic() - t0;
        assert!(waited < limit, "{what}: not within {limit:?}");
        clock.sleep(Duration::from_millis(50)).await;
    }
    clock.monotonic() - t0
}

#[tokio::test(start_paused = true)]
async fn a_hanging_secret_lookup_holds_up_only_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::open(&dir.path().join("c.db")).unwrap());
    let clock = crate::clock::PausedClock::new("2026-11-25T10:00:00Z".parse().unwrap());
    let asked = Arc::new(tokio::sync::Notify::new());
    let secrets = SlowSecrets {
        slow: secret("slow"),
        asked: asked.clone(),
    };
    // One-second fragments, as the clip's GOP: the first is whole a second in.
    let fragmenter = FragmenterConfig {
        min_fragment_ms: 1000,
        ..FragmenterConfig::default()
    };
    let sup = simulated(&catalog, dir.path(), &clock, fragmenter, secrets, None);
    let slow = tokio::spawn({
        let sup = sup.clone();
        async move { sup.apply("hub", always("slow"), true).await }
    });
    asked.notified().await;
    let t0 = clock.monotonic();
    assert_eq!(
        sup.apply("hub", always("fast"), true).await,
        Some(SyncStatus::InSync)
    );
    let took = within(&clock, Duration::from_secs(2), "a fragment of fast", || {
        !catalog.pending_fragments("fast", 1).unwrap().is_empty()
    })
    .await;
    assert!(!slow.is_finished(), "the slow lookup is still under way");
    assert!(clock.monotonic() - t0 < Duration::from_secs(2), "{took:?}");
    // The slow stream's configuration applies once its lookup answers.
    assert_eq!(slow.await.unwrap(), Some(SyncStatus::InSync));
    assert!(clock.monotonic() - t0 >= Duration::from_secs(29));
    assert_eq!(sup.running_streams().await, ["fast", "slow"]);
    sup.shutdown(Duration::from_secs(5)).await;
}

/// Whether `stream`'s job of `kind` is running (in its window, healthy).
fn job_running(sup: &Supervisor, stream: &str, kind: JobKind) -> bool {
    sup.health()
        .jobs
        .iter()
        .any(|j| j.stream == stream && j.kind == kind && j.running())
}

/// All three jobs on simulated time: the recorder records all along, the uploader runs only in
/// its 60 s window (10:05:00-10:06:00) and sends what was recorded before and during it, the
/// janitor deletes uploaded segments (DeleteAfterUpload), and the upload job completes when
/// the window closes.
#[tokio::test(start_paused = true)]
async fn recorder_uploader_and_janitor_through_an_upload_window() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::open(&dir.path().join("c.db")).unwrap());
    let clock = crate::clock::PausedClock::new("2026-11-25T10:04:00Z".parse().unwrap());
    let sink = Arc::new(crate::uploader::sink::MemorySink::new());
    let uploader = crate::uploader::Uploader::with_sink(
        sink.clone(),
        catalog.clone(),
        dir.path().to_owned(),
        Arc::new(clock.clone()),
        crate::uploader::Options::default(),
    );
    let secrets = MapSecrets([(secret("u"), CLIP.to_owned())].into_iter().collect());
    // 10 s segments, so some close (and can be deleted) before the window.
    let fragmenter = FragmenterConfig {
        segment_duration_ms: 10_000,
        ..FragmenterConfig::default()
    };
    let sup = simulated(
        &catalog,
        dir.path(),
        &clock,
        fragmenter,
        secrets,
        Some(uploader),
    );
    let request = parse_start_request(&format!(
        r#"{{"StreamName":"u","EdgeConfig":{{"HubDeviceArn":"arn:aws:iot:us-east-1:123456789012:thing/hub","RecorderConfig":{{"MediaSourceConfig":{{"MediaUriSecretArn":"{}","MediaUriType":"FILE_URI"}}}},"UploaderConfig":{{"ScheduleConfig":{{"ScheduleExpression":"0 */5 * * * ?","DurationInSeconds":60}}}}}}}}"#,
        secret("u")
    ))
    .unwrap();
    assert_eq!(
        sup.apply("hub", request, true).await,
        Some(SyncStatus::InSync)
    );
    let at = |t: &str| -> Timestamp { t.parse().unwrap() };
    // Before the window: recording, nothing sent.
    within(&clock, Duration::from_secs(5), "recording", || {
        job_running(&sup, "u", JobKind::Record)
    })
    .await;
    clock.sleep(Duration::from_secs(55)).await;
    assert!(clock.now() < at("2026-11-25T10:05:00Z"));
    assert!(sink.received().is_empty());
    assert!(!job_running(&sup, "u", JobKind::Upload));
    let first = catalog.segments(Some("u")).unwrap()[0].clone();
    // The window opens: the backlog goes out.
    within(&clock, Duration::from_secs(10), "the upload run", || {
        job_running(&sup, "u", JobKind::Upload)
    })
    .await;
    assert!(clock.now() >= at("2026-11-25T10:05:00Z"));
    within(
        &clock,
        Duration::from_secs(30),
        "the first segment deleted",
        || catalog.segment(first.id).unwrap().is_none(),
    )
    .await;
    assert!(!dir.path().join(&first.path).exists());
    assert!(!sink.received().is_empty());
    // The window closes: the run completes, the recorder records on, nothing more is sent.
    let mut completed = Vec::new();
    within(
        &clock,
        Duration::from_secs(70),
        "the upload job completed",
        || {
            completed.extend(
                sup.take_events()
                    .into_iter()
                    .filter(|e| e.kind == JobKind::Upload),
            );
            !completed.is_empty()
        },
    )
    .await;
    assert_eq!(completed[0].what, Occurrence::Completed);
    assert!(completed[0].at >= at("2026-11-25T10:06:00Z"));
    assert!(!job_running(&sup, "u", JobKind::Upload));
    let sent = sink.received().len();
    let pending = catalog.pending_fragments("u", 1000).unwrap().len();
    clock.sleep(Duration::from_secs(30)).await;
    assert_eq!(
        sink.received().len(),
        sent,
        "nothing sent outside the window"
    );
    assert!(catalog.pending_fragments("u", 1000).unwrap().len() > pending);
    assert!(job_running(&sup, "u", JobKind::Record));
    sup.shutdown(Duration::from_secs(5)).await;
}

/// The stream limit refuses the last to arrive, whichever is applied first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_goes_by_arrival_not_by_who_finishes_first() {
    let mut f = fixture(2);
    let (a, b, c) = (f.sup.ticket("a"), f.sup.ticket("b"), f.sup.ticket("c"));
    assert_eq!(
        f.sup.apply_in_turn(c, "hub", request("c", 24), true).await,
        Some(SyncStatus::SyncFailed)
    );
    let ev = drain(&mut f);
    assert!(
        ev.last()
            .unwrap()
            .2
            .as_deref()
            .unwrap()
            .contains("max_streams 2"),
        "{ev:?}"
    );
    assert_eq!(
        f.sup.apply_in_turn(b, "hub", request("b", 24), true).await,
        Some(SyncStatus::InSync)
    );
    assert_eq!(
        f.sup.apply_in_turn(a, "hub", request("a", 24), true).await,
        Some(SyncStatus::InSync)
    );
    // Tickets gone, the count is the catalog's: a third stream is refused, an update is not.
    assert_eq!(
        f.sup.apply("hub", request("c", 24), true).await,
        Some(SyncStatus::SyncFailed)
    );
    assert_eq!(
        f.sup.apply("hub", request("a", 12), true).await,
        Some(SyncStatus::InSync)
    );
    f.sup.shutdown(Duration::from_secs(5)).await;
}
