//! The uploader against the KVS ingest emulator (tests/kvs_emulator, Python + botocore):
//! complete uploads checked byte for byte and by ffprobe, and the fault cases of issue 5.

#[path = "support/kvs.rs"]
mod kvs;
#[path = "support/mkv.rs"]
mod mkv;
#[path = "support/peer.rs"]
mod peer;
#[path = "support/poll.rs"]
mod poll;
#[path = "support/process.rs"]
mod process;
#[path = "support/recording.rs"]
mod recording;
#[path = "support/sample.rs"]
mod sample;
#[path = "support/uploader.rs"]
mod uploader;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kvs::*;
use kvs_edge_agent::catalog::{Catalog, Job, UploadState};
use kvs_edge_agent::edge_config::JobStatus;
use kvs_edge_agent::uploader::{RunMode, StreamTarget, UploadError, Uploader};
use mkv::{Probe, probe};
use peer::on_path;
use poll::wait_until_async;
use recording::{Recording, catalog_fragments, record};
use serde_json::{Value, json};
use uploader::*;

struct Setup {
    _tmp: tempfile::TempDir,
    catalog: Arc<Catalog>,
    recordings: std::path::PathBuf,
    emulator: Emulator,
}

fn setup(emulator_args: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let recordings = tmp.path().join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    let catalog = Arc::new(Catalog::open(&tmp.path().join("catalog.db")).unwrap());
    let emulator = Emulator::start(&tmp.path().join("emulator"), emulator_args);
    Setup {
        _tmp: tmp,
        catalog,
        recordings,
        emulator,
    }
}

impl Setup {
    /// Records `segments` segments of `per_segment` fragments of `stream`, an hour ago.
    fn record(&self, stream: &str, segments: usize, per_segment: usize) -> Recording {
        record(
            &self.catalog,
            &self.recordings,
            stream,
            an_hour_ago_ms(),
            segments,
            per_segment,
            None,
            0,
        )
    }

    /// An uploader with the test options.
    async fn uploader(&self) -> Uploader {
        uploader(
            Arc::clone(&self.catalog),
            &self.recordings,
            &self.emulator,
            test_options(),
        )
        .await
    }
}

/// Runs the job until nothing is pending, with a hard bound.
async fn upload_all(s: &Setup, stream: &str, options: kvs_edge_agent::uploader::Options) {
    let up = uploader(Arc::clone(&s.catalog), &s.recordings, &s.emulator, options).await;
    let h = until_empty(&up, stream);
    tokio::time::timeout(Duration::from_secs(120), h.wait())
        .await
        .expect("upload finishes")
        .expect("upload succeeds");
}

/// Every catalog fragment marked uploaded carries a fragment number the emulator persisted for
/// that very fragment (timecode and bytes): nothing is marked without its PERSISTED ack.
fn assert_uploaded_only_with_persisted(
    s: &Setup,
    stream: &str,
    rec: &Recording,
    index: &serde_json::Value,
) {
    let by_number: HashMap<String, (i64, String)> = persisted(index)
        .into_iter()
        .map(|(tc, n, sha)| (n, (tc, sha)))
        .collect();
    for (row, cluster) in catalog_fragments(&s.catalog, stream)
        .iter()
        .zip(&rec.clusters)
    {
        if row.upload_state == UploadState::Uploaded {
            let n = row.fragment_number.as_ref().expect("uploaded has a number");
            let (tc, sha) = by_number.get(n).unwrap_or_else(|| {
                panic!(
                    "fragment {} marked uploaded as {n}, never persisted",
                    row.id
                )
            });
            assert_eq!(*tc, row.timecode_ms);
            assert_eq!(*sha, sha256_hex(cluster));
        } else {
            assert!(row.fragment_number.is_none());
        }
    }
}

/// Persisted timecodes in order, with how many times each was stored.
fn counts(index: &serde_json::Value) -> HashMap<i64, usize> {
    let mut m = HashMap::new();
    for (tc, _, _) in persisted(index) {
        *m.entry(tc).or_insert(0) += 1;
    }
    m
}

/// Waits for `cond` with a deadline (a condition poll, not a delay).
async fn eventually(what: &str, secs: u64, cond: impl FnMut() -> bool) {
    if let Err(e) = wait_until_async(what, Duration::from_secs(secs), cond).await {
        panic!("{e}");
    }
}

fn uploaded_count(catalog: &Catalog, stream: &str) -> usize {
    catalog_fragments(catalog, stream)
        .iter()
        .filter(|r| r.upload_state == UploadState::Uploaded)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_every_fragment_once_byte_exact_and_playable() {
    let s = setup(&[]);
    configure(&s.catalog, "cam-1");
    let rec = s.record("cam-1", 3, 6);
    assert_eq!(rec.fragments.len(), 18);
    upload_all(&s, "cam-1", test_options()).await;

    let index = s.emulator.index("cam-1").await;
    let stored = persisted(&index);
    assert_eq!(stored.len(), 18, "{index}");
    for ((tc, _, sha), (row, cluster)) in stored.iter().zip(rec.fragments.iter().zip(&rec.clusters))
    {
        assert_eq!(*tc, row.timecode_ms);
        assert_eq!(*sha, sha256_hex(cluster));
    }
    let rows = catalog_fragments(&s.catalog, "cam-1");
    assert!(rows.iter().all(|r| r.upload_state == UploadState::Uploaded));
    assert_uploaded_only_with_persisted(&s, "cam-1", &rec, &index);
    // Three segment files went out on one request: one header, 18 clusters.
    assert_eq!(index["sessions"], 1);
    assert_eq!(index["files"].as_array().unwrap().len(), 1);

    let status = s
        .catalog
        .job_status("cam-1", Job::Uploader)
        .unwrap()
        .unwrap();
    assert_eq!(status.status, JobStatus::Success);
    assert!(status.last_collected_time.is_some());

    if on_path("ffprobe") {
        let media = s.emulator.data_dir.join("cam-1").join("media-0.mkv");
        let Probe { frames, format, .. } = probe(&media).unwrap();
        assert_eq!(frames, rec.frames as u64);
        assert!(format.contains("matroska"), "{format}");
    }
}

/// Whoever waits on a run's progress (the supervisor, to wake the janitor for
/// DeleteAfterUpload) hears of each PERSISTED ack, after the catalog has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_acks_are_announced_after_the_catalog_has_them() {
    let s = setup(&[]);
    configure(&s.catalog, "cam-1");
    s.record("cam-1", 1, 3);
    let up = s.uploader().await;
    let h = until_empty(&up, "cam-1");
    let progress = h.live_progress();
    tokio::time::timeout(Duration::from_secs(60), progress.persisted())
        .await
        .expect("a PERSISTED ack is announced");
    assert!(uploaded_count(&s.catalog, "cam-1") >= 1);
    tokio::time::timeout(Duration::from_secs(120), h.wait())
        .await
        .expect("upload finishes")
        .expect("upload succeeds");
    assert_eq!(uploaded_count(&s.catalog, "cam-1"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_private_change_opens_a_new_request() {
    let s = setup(&[]);
    let rec = record(
        &s.catalog,
        &s.recordings,
        "cam-2",
        an_hour_ago_ms(),
        3,
        2,
        Some(2),
        0,
    );
    upload_all(&s, "cam-2", test_options()).await;
    let index = s.emulator.index("cam-2").await;
    assert_eq!(persisted(&index).len(), rec.fragments.len());
    assert_eq!(index["sessions"], 2, "one request per CodecPrivate");
    assert_eq!(index["files"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_are_read_while_the_body_is_still_streaming() {
    let s = setup(&[]);
    s.record("live", 2, 6);
    let up = s.uploader().await;
    // Paced at 5 fragments/s, the 12 fragments take over 2 s on one request.
    let h = until_empty(&up, "live");
    eventually("the first PERSISTED", 20, || {
        uploaded_count(&s.catalog, "live") >= 1
    })
    .await;
    let index = s.emulator.index("live").await;
    assert!(
        persisted(&index).len() < 12,
        "the first fragment was marked only after the whole body was sent"
    );
    assert!(!h.is_finished());
    h.wait().await.unwrap();
    assert_eq!(uploaded_count(&s.catalog, "live"), 12);
    assert_eq!(s.emulator.index("live").await["sessions"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cut_mid_fragment_resumes_without_loss() {
    let s = setup(&[]);
    let rec = s.record("cut", 2, 6);
    s.emulator
        .fault("cut", json!({"kind": "cut_mid_fragment", "at_fragment": 4}))
        .await;
    upload_all(&s, "cut", test_options()).await;
    let index = s.emulator.index("cut").await;
    let c = counts(&index);
    assert_eq!(c.len(), 12, "every fragment persisted: {index}");
    // The service closes a fragment when the next Cluster starts (or at the END_OF_FRAGMENT
    // tag): the fragment before the one cut in the middle may have been persisted with its ack
    // lost in the cut. It was in flight, so it alone may be there twice.
    let mut timecodes: Vec<i64> = c.keys().copied().collect();
    timecodes.sort_unstable();
    for (i, t) in timecodes.iter().enumerate() {
        let most = if i == 3 { 2 } else { 1 };
        assert!(c[t] <= most, "fragment {i} sent {} times: {c:?}", c[t]);
    }
    assert!(index["sessions"].as_u64().unwrap() >= 2);
    assert_eq!(uploaded_count(&s.catalog, "cut"), 12);
    assert_uploaded_only_with_persisted(&s, "cut", &rec, &index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_5000_is_retried_from_the_first_unpersisted_fragment() {
    let s = setup(&[]);
    let rec = s.record("e5000", 1, 6);
    s.emulator
        .fault(
            "e5000",
            json!({"kind": "error", "at_fragment": 2, "error_id": 5000}),
        )
        .await;
    let up = s.uploader().await;
    let h = until_empty(&up, "e5000");
    let report = h.wait().await.unwrap();
    assert!(report.retries >= 1, "{report:?}");
    assert_eq!(report.fragments_failed, 0);
    let index = s.emulator.index("e5000").await;
    let errors: Vec<i64> = each(&index, "errors", "error_id", Value::as_i64);
    assert_eq!(errors, vec![5000]);
    let c = counts(&index);
    assert_eq!(c.len(), 6);
    assert!(c.values().all(|&n| n == 1), "duplicates: {c:?}");
    assert_eq!(uploaded_count(&s.catalog, "e5000"), 6);
    assert_uploaded_only_with_persisted(&s, "e5000", &rec, &index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_4004_marks_the_fragment_failed_and_moves_on() {
    let s = setup(&[]);
    configure(&s.catalog, "e4004");
    let rec = s.record("e4004", 1, 6);
    s.emulator
        .fault(
            "e4004",
            json!({"kind": "error", "at_fragment": 3, "error_id": 4004}),
        )
        .await;
    let up = s.uploader().await;
    let h = until_empty(&up, "e4004");
    let report = h.wait().await.unwrap();
    assert_eq!(report.fragments_failed, 1);
    assert_eq!(report.fragments_uploaded, 5);
    let rows = catalog_fragments(&s.catalog, "e4004");
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| r.upload_state == UploadState::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].timecode_ms, rec.fragments[3].timecode_ms);
    assert!(
        failed[0]
            .upload_error
            .as_deref()
            .unwrap()
            .contains("4004 FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS")
    );
    // Kept on disk: the segment still holds its bytes.
    let seg = s.catalog.segment(failed[0].segment_id).unwrap().unwrap();
    assert!(
        std::fs::metadata(s.recordings.join(&seg.path))
            .unwrap()
            .len()
            >= failed[0].offset + failed[0].size
    );
    let index = s.emulator.index("e4004").await;
    let c = counts(&index);
    assert_eq!(c.len(), 5);
    assert!(!c.contains_key(&rec.fragments[3].timecode_ms));
    assert!(c.values().all(|&n| n == 1), "duplicates: {c:?}");
    assert_uploaded_only_with_persisted(&s, "e4004", &rec, &index);
    let status = s
        .catalog
        .job_status("e4004", Job::Uploader)
        .unwrap()
        .unwrap();
    assert_eq!(status.status, JobStatus::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_4008_and_4507_end_the_run_with_user_error_naming_which() {
    let s = setup(&[]);
    for (id, name) in [(4008, "STREAM_NOT_ACTIVE"), (4507, "STREAM_DELETED")] {
        let stream = format!("gone-{id}");
        configure(&s.catalog, &stream);
        s.record(&stream, 1, 6);
        s.emulator
            .fault(
                &stream,
                json!({"kind": "error", "at_fragment": 1, "error_id": id}),
            )
            .await;
        let up = s.uploader().await;
        let r = until_empty(&up, &stream).wait().await;
        match &r {
            Err(UploadError::StreamNotActive { what, .. }) => {
                assert_eq!(what, &format!("{id} {name}"));
            }
            other => panic!("{id}: {other:?}"),
        }
        let status = s
            .catalog
            .job_status(&stream, Job::Uploader)
            .unwrap()
            .unwrap();
        assert_eq!(status.status, JobStatus::UserError);
        let details = status.details.unwrap();
        assert!(
            details.contains(&id.to_string()) && details.contains(name),
            "{details}"
        );
        // Only the fragment before the error is uploaded; the rest stay pending.
        assert_eq!(uploaded_count(&s.catalog, &stream), 1, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_retention_is_refused_before_sending() {
    let s = setup(&["--no-auto-create"]);
    s.emulator
        .admin("streams/noret/create", json!({"retention_hours": 0}))
        .await;
    configure(&s.catalog, "noret");
    s.record("noret", 1, 3);
    let up = s.uploader().await;
    let r = until_empty(&up, "noret").wait().await;
    let e = r.expect_err("no retention");
    assert!(matches!(e, UploadError::NoRetention { .. }), "{e:?}");
    assert!(e.to_string().contains("DataRetentionInHours 0"), "{e}");
    let index = s.emulator.index("noret").await;
    assert!(index["requests"].as_array().unwrap().is_empty(), "{index}");
    let status = s
        .catalog
        .job_status("noret", Job::Uploader)
        .unwrap()
        .unwrap();
    assert_eq!(status.status, JobStatus::UserError);
    assert_eq!(uploaded_count(&s.catalog, "noret"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_ends_with_the_eofr_tag_after_its_last_ack() {
    let s = setup(&[]);
    s.record("eofr", 2, 4);
    s.emulator
        .admin("streams/eofr/faults", json!({"delay_persisted_ms": 1500}))
        .await;
    upload_all(&s, "eofr", test_options()).await;
    let index = s.emulator.index_settled("eofr").await;
    let c = counts(&index);
    assert_eq!(c.len(), 8);
    assert!(c.values().all(|&n| n == 1), "duplicates: {c:?}");
    let log = index["session_log"].as_array().unwrap();
    assert!(!log.is_empty());
    log.iter().for_each(assert_ended_after_last_ack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_acks_across_a_window_end_leave_unacked_fragments_pending() {
    let s = setup(&[]);
    let rec = s.record("win", 2, 6);
    s.emulator
        .admin("streams/win/faults", json!({"delay_acks_ms": 4000}))
        .await;
    let mut opts = test_options();
    opts.stop_drain = Duration::from_millis(300);
    let up = uploader(Arc::clone(&s.catalog), &s.recordings, &s.emulator, opts).await;
    // The window ends 1 s from now: about five paced fragments go out, whose acks come late.
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(1000);
    let h = up.start(
        StreamTarget::Name("win".into()),
        RunMode::UntilStopped,
        Some(until),
    );
    tokio::time::timeout(Duration::from_secs(10), h.wait())
        .await
        .expect("the job stops at the window end")
        .unwrap();
    let after_window = uploaded_count(&s.catalog, "win");
    assert_eq!(
        after_window, 0,
        "no PERSISTED ack arrived inside the window and grace"
    );
    // The emulator persisted what was sent (the fragment in flight was finished: no 4000).
    let first = s.emulator.index("win").await;
    let sent_in_window = persisted(&first).len();
    assert!((1..12).contains(&sent_in_window), "{sent_in_window}");
    assert!(first["errors"].as_array().unwrap().is_empty(), "{first}");
    assert_uploaded_only_with_persisted(&s, "win", &rec, &first);

    // Next window, acks on time: everything goes up; only the unacknowledged ones twice.
    s.emulator
        .admin("streams/win/faults", json!({"delay_acks_ms": 0}))
        .await;
    upload_all(&s, "win", test_options()).await;
    let index = s.emulator.index("win").await;
    let c = counts(&index);
    assert_eq!(c.len(), 12);
    let twice: Vec<i64> = c
        .iter()
        .filter(|(_, n)| **n == 2)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(twice.len(), sent_in_window, "{c:?}");
    assert!(c.values().all(|&n| n <= 2));
    assert_eq!(uploaded_count(&s.catalog, "win"), 12);
    assert_uploaded_only_with_persisted(&s, "win", &rec, &index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_is_rotated_and_server_4003_is_retried() {
    let s = setup(&["--max-connection-seconds", "0.9"]);
    let rec = s.record("rot", 2, 6);
    // The client rotates at 0.5 s, before the emulator's 0.9 s limit: no 4003.
    let mut opts = test_options();
    opts.rotate_after = Duration::from_millis(500);
    upload_all(&s, "rot", opts).await;
    let index = s.emulator.index("rot").await;
    assert!(
        index["sessions"].as_u64().unwrap() >= 3,
        "{}",
        index["sessions"]
    );
    assert!(
        index["errors"].as_array().unwrap().is_empty(),
        "{}",
        index["errors"]
    );
    let c = counts(&index);
    assert_eq!(c.len(), 12);
    assert!(c.values().all(|&n| n == 1));
    assert_uploaded_only_with_persisted(&s, "rot", &rec, &index);

    // Without rotation the service's 4003 ends each connection, and the upload still completes.
    let rec2 = s.record("rot2", 2, 6);
    upload_all(&s, "rot2", test_options()).await;
    let index = s.emulator.index("rot2").await;
    assert!(
        index["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["error_id"] == 4003)
    );
    assert_eq!(counts(&index).len(), 12);
    assert_uploaded_only_with_persisted(&s, "rot2", &rec2, &index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_upload_in_parallel() {
    let s = setup(&[]);
    let names = ["par-a", "par-b", "par-c"];
    for n in names {
        s.record(n, 1, 6);
    }
    let up = s.uploader().await;
    let handles: Vec<_> = names
        .iter()
        .map(|n| up.start(StreamTarget::Name((*n).into()), RunMode::UntilEmpty, None))
        .collect();
    for h in handles {
        h.wait().await.unwrap();
    }
    // Each stream's six paced fragments take about 1 s; the emulator received them at
    // overlapping times, so the streams went up side by side, not one after the other.
    let mut spans = Vec::new();
    for n in names {
        assert_eq!(uploaded_count(&s.catalog, n), 6, "{n}");
        let index = s.emulator.index(n).await;
        let times: Vec<f64> = each(&index, "fragments", "server_monotonic", Value::as_f64);
        spans.push((times[0], *times.last().unwrap()));
    }
    let latest_start = spans.iter().map(|s| s.0).fold(f64::MIN, f64::max);
    let earliest_end = spans.iter().map(|s| s.1).fold(f64::MAX, f64::min);
    assert!(
        latest_start < earliest_end,
        "uploads did not overlap: {spans:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_and_nothing_is_marked() {
    let s = setup(&["--no-auto-create"]);
    s.emulator.admin("streams/auth/create", json!({})).await;
    configure(&s.catalog, "auth");
    s.record("auth", 1, 2);
    use aws_credential_types::Credentials;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(Credentials::new(ACCESS_KEY, "wrong", None, None, "test"))
        .endpoint_url(s.emulator.url())
        .load()
        .await;
    let up = kvs_edge_agent::uploader::Uploader::new(
        &sdk,
        Arc::clone(&s.catalog),
        s.recordings.clone(),
        Arc::new(kvs_edge_agent::clock::RealClock),
        test_options(),
    )
    .unwrap();
    let h = until_empty(&up, "auth");
    eventually("USER_ERROR status", 20, || {
        s.catalog
            .job_status("auth", Job::Uploader)
            .unwrap()
            .is_some_and(|st| st.status == JobStatus::UserError)
    })
    .await;
    h.stop();
    h.wait().await.unwrap();
    assert_eq!(uploaded_count(&s.catalog, "auth"), 0);
    assert!(persisted(&s.emulator.index("auth").await).is_empty());

    // An unknown stream is refused by GetDataEndpoint (404): the run ends.
    s.record("nosuch", 1, 1);
    let up = s.uploader().await;
    let r = up
        .start(
            StreamTarget::Name("nosuch".into()),
            RunMode::UntilEmpty,
            None,
        )
        .wait()
        .await;
    assert!(
        matches!(r, Err(UploadError::StreamNotFound { .. })),
        "{r:?}"
    );
}

/// A setup for the `upload` verb: the CLI finds the catalog in the state directory, which
/// defaults to the recordings.
fn cli_setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let recordings = tmp.path().join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    let catalog =
        Arc::new(Catalog::open(&recordings.join(kvs_edge_agent::catalog::FILE_NAME)).unwrap());
    let emulator = Emulator::start(&tmp.path().join("emulator"), &[]);
    Setup {
        _tmp: tmp,
        catalog,
        recordings,
        emulator,
    }
}

/// `kvs-edge-agent upload` as a child process, configured only through the environment (the
/// SDK reaches the emulator through AWS_ENDPOINT_URL_KINESIS_VIDEO).
fn upload_command(s: &Setup, stream: &str) -> std::process::Command {
    upload_with(s, &["--stream", stream, "--until-empty"])
}

/// `kvs-edge-agent upload ARGS` as [`upload_command`] runs it.
fn upload_with(s: &Setup, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kvs-edge-agent"));
    c.arg("upload")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", s.recordings.parent().unwrap())
        .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", &s.recordings)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_KINESIS_VIDEO", s.emulator.url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_then_restart_loses_nothing() {
    let s = cli_setup();
    let rec = s.record("k9", 3, 6);

    let mut child = upload_command(&s, "k9").spawn().unwrap();
    eventually("some fragments uploaded", 30, || {
        uploaded_count(&s.catalog, "k9") >= 4
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let at_kill: std::collections::HashSet<i64> = catalog_fragments(&s.catalog, "k9")
        .iter()
        .filter(|r| r.upload_state == UploadState::Uploaded)
        .map(|r| r.timecode_ms)
        .collect();
    assert!(at_kill.len() < 18, "the kill came mid-upload");
    assert_uploaded_only_with_persisted(&s, "k9", &rec, &s.emulator.index("k9").await);

    let out = tokio::task::spawn_blocking({
        let mut c = upload_command(&s, "k9");
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not a terminal: plain progress lines, then the summary.
    assert!(stdout.contains("k9: 0 fragments (0.0 MB) left"), "{stdout}");
    assert!(
        stdout.contains(&format!("k9: uploaded {} fragments", 18 - at_kill.len())),
        "{stdout}"
    );

    let index = s.emulator.index("k9").await;
    let c = counts(&index);
    assert_eq!(c.len(), 18, "no fragment lost");
    assert_eq!(uploaded_count(&s.catalog, "k9"), 18);
    for tc in &at_kill {
        assert_eq!(
            c[tc], 1,
            "fragment {tc} acknowledged before the kill was sent again"
        );
    }
    let dups = c.values().filter(|&&n| n > 1).count();
    assert!(
        dups <= 2,
        "only fragments in flight at the kill are duplicated: {c:?}"
    );
    assert_uploaded_only_with_persisted(&s, "k9", &rec, &index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_endpoint_is_cached_until_its_ttl() {
    let s = setup(&[]);
    let clock = kvs_edge_agent::clock::SimulatedClock::new(jiff::Timestamp::now());
    let opts = kvs_edge_agent::uploader::Options {
        pacing: false,
        endpoint_ttl: Duration::from_secs(600),
        ..test_options()
    };
    let up = uploader_with_clock(
        Arc::clone(&s.catalog),
        &s.recordings,
        &s.emulator,
        opts,
        Arc::new(clock.clone()),
    )
    .await;
    let t0 = an_hour_ago_ms();
    let mut expected = 0;
    for (round, advance, calls) in [(0, 0, 1), (1, 599, 1), (2, 2, 2)] {
        clock.advance(Duration::from_secs(advance));
        record(
            &s.catalog,
            &s.recordings,
            "ep",
            t0 + round * 60_000,
            1,
            2,
            None,
            0,
        );
        expected += 2;
        until_empty(&up, "ep").wait().await.unwrap();
        let index = s.emulator.index("ep").await;
        assert_eq!(persisted(&index).len(), expected);
        assert_eq!(index["endpoint_calls"], calls, "round {round}");
    }
}

/// The emulator is the oracle of every test here, so it is tested too: its own suite checks
/// that it rejects what the service rejects, with the seed's ErrorIds and HTTP statuses.
#[test]
fn emulator_self_test() {
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/kvs_emulator/test_emulator.py"
        ))
        .output()
        .expect("python3");
    process::assert_success(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_given_by_arn_is_addressed_by_arn() {
    let s = setup(&["--no-auto-create"]);
    s.emulator.admin("streams/arn-cam/create", json!({})).await;
    let rec = s.record("arn-cam", 1, 3);
    let up = s.uploader().await;
    let target = StreamTarget::Arn {
        arn: "arn:aws:kinesisvideo:us-east-1:123456789012:stream/arn-cam/1700000000000".into(),
        name: "arn-cam".into(),
    };
    up.start(target, RunMode::UntilEmpty, None)
        .wait()
        .await
        .unwrap();
    let index = s.emulator.index("arn-cam").await;
    assert_eq!(persisted(&index).len(), 3);
    assert_eq!(index["endpoint_calls"], 1);
    assert_uploaded_only_with_persisted(&s, "arn-cam", &rec, &index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaced_cut_duplicates_only_the_fragments_in_flight() {
    let s = setup(&[]);
    let rec = s.record("fast", 3, 6);
    let total: usize = rec.clusters.iter().map(Vec::len).sum();
    s.emulator
        .fault(
            "fast",
            json!({"kind": "cut_after_bytes", "bytes": total * 6 / 10}),
        )
        .await;
    let opts = kvs_edge_agent::uploader::Options {
        pacing: false,
        ..test_options()
    };
    upload_all(&s, "fast", opts).await;
    let index = s.emulator.index("fast").await;
    let c = counts(&index);
    assert_eq!(c.len(), 18, "no fragment lost");
    assert_uploaded_only_with_persisted(&s, "fast", &rec, &index);
    // The first session persisted a prefix of the fragments; only its tail, whose PERSISTED
    // acks the cut swallowed, may have been sent again.
    let first: Vec<i64> = index["fragments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["session"] == 1)
        .map(|f| f["timecode"].as_i64().unwrap())
        .collect();
    assert!(!first.is_empty() && first.len() < 18, "{first:?}");
    let dup: Vec<bool> = first.iter().map(|t| c[t] > 1).collect();
    let tail_start = dup.iter().position(|d| *d).unwrap_or(dup.len());
    assert!(
        dup[tail_start..].iter().all(|d| *d),
        "duplicates not a tail: {dup:?}"
    );
    assert!(c.values().all(|&n| n <= 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_credentials_sign_with_their_session_token() {
    let s = setup(&[]);
    s.record("sts", 1, 2);
    let creds = aws_credential_types::Credentials::new(
        ACCESS_KEY,
        SECRET_KEY,
        Some("FwoGZXIvYXdzEJr//////////session-token".into()),
        Some(std::time::SystemTime::now() + Duration::from_secs(3600)),
        "test",
    );
    let up = uploader_with(
        Arc::clone(&s.catalog),
        &s.recordings,
        &s.emulator,
        test_options(),
        Arc::new(kvs_edge_agent::clock::RealClock),
        creds,
    )
    .await;
    until_empty(&up, "sts").wait().await.unwrap();
    assert_eq!(uploaded_count(&s.catalog, "sts"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_service_times_out_and_is_retried() {
    let s = setup(&[]);
    let rec = s.record("mute", 1, 6);
    s.emulator.admin("streams/mute/hold_acks", json!({})).await;
    let opts = kvs_edge_agent::uploader::Options {
        ack_timeout: Duration::from_millis(1500),
        ..test_options()
    };
    let up = uploader(Arc::clone(&s.catalog), &s.recordings, &s.emulator, opts).await;
    let h = until_empty(&up, "mute");
    eventually("a retry after the ack timeout", 20, || {
        h.progress().retries >= 1
    })
    .await;
    assert_eq!(
        uploaded_count(&s.catalog, "mute"),
        0,
        "nothing is marked without its PERSISTED ack"
    );
    s.emulator
        .admin("streams/mute/release_acks", json!({}))
        .await;
    let report = tokio::time::timeout(Duration::from_secs(30), h.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(report.retries >= 1);
    let index = s.emulator.index("mute").await;
    assert_eq!(counts(&index).len(), 6);
    assert_eq!(uploaded_count(&s.catalog, "mute"), 6);
    assert_uploaded_only_with_persisted(&s, "mute", &rec, &index);
}

/// Issue 15: with PERSISTED 5 s late, a window end and a stop still hear every ack of what they
/// sent (the body stays open for them), so the next run resends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_persisted_acks_survive_a_window_end_and_a_stop() {
    let s = setup(&[]);
    for (stream, by_stop) in [("late-window", false), ("late-stop", true)] {
        s.record(stream, 2, 6);
        s.emulator
            .admin(
                &format!("streams/{stream}/faults"),
                json!({"delay_persisted_ms": 5000}),
            )
            .await;
        let opts = kvs_edge_agent::uploader::Options {
            stop_drain: Duration::from_secs(6),
            ..test_options()
        };
        let up = uploader(Arc::clone(&s.catalog), &s.recordings, &s.emulator, opts).await;
        let until = (!by_stop).then(|| jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1));
        let h = up.start(
            StreamTarget::Name(stream.into()),
            RunMode::UntilStopped,
            until,
        );
        if by_stop {
            wait_until_async("the first session", Duration::from_secs(10), || {
                h.progress().sessions >= 1
            })
            .await
            .unwrap();
            h.stop();
        }
        let stopping = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(15), h.wait())
            .await
            .expect("the run ends")
            .unwrap();
        assert!(
            stopping.elapsed() < Duration::from_secs(7),
            "{stream}: {:?}",
            stopping.elapsed()
        );
        let first = s.emulator.index(stream).await;
        let sent = persisted(&first).len();
        assert!(sent >= 1, "{first}");
        assert_eq!(
            uploaded_count(&s.catalog, stream),
            sent,
            "{stream}: every fragment the service stored was acknowledged in time"
        );
        s.emulator
            .admin(
                &format!("streams/{stream}/faults"),
                json!({"delay_persisted_ms": 0}),
            )
            .await;
        upload_all(&s, stream, test_options()).await;
        let index = s.emulator.index(stream).await;
        let c = counts(&index);
        assert_eq!(c.len(), 12, "{stream}: nothing lost");
        assert!(c.values().all(|&n| n == 1), "{stream}: sent twice: {c:?}");
        for session in index["session_log"].as_array().unwrap() {
            assert_eq!(session["last_cluster_eofr"], true, "{session}");
        }
    }
}

/// `upload --from --to`: exactly the fragments overlapping the range, stored as a request that
/// ends DONE; a malformed range is refused naming the flag, and nothing is stored or sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_verb_sends_a_time_range_and_refuses_a_bad_one() {
    let s = cli_setup();
    let rec = s.record("r", 2, 6);
    let t0 = rec.fragments[0].timecode_ms;
    let from = jiff::Timestamp::from_millisecond(t0 + 3000)
        .unwrap()
        .to_string();
    let to = format!("{:.3}", (t0 + 8000) as f64 / 1000.0);

    for (args, needle) in [
        (
            vec!["--from", &to, "--to", &from],
            "--to must be after --from",
        ),
        (
            vec!["--from", "noon", "--to", &to],
            "--from \"noon\": not ISO 8601",
        ),
    ] {
        let mut a = vec!["--stream", "r"];
        a.extend(args);
        let out = upload_with(&s, &a).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{err}");
    }
    assert!(s.catalog.requests("r").unwrap().is_empty());

    let out = upload_with(
        &s,
        &[
            "--stream",
            "r",
            "--from",
            &from,
            "--to",
            &to,
            "--max-kbps",
            "2000",
        ],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("DONE (5 fragments uploaded)"), "{stdout}");
    let sent: Vec<i64> = persisted(&s.emulator.index("r").await)
        .iter()
        .map(|(tc, _, _)| (tc - t0) / 1000)
        .collect();
    assert_eq!(sent, [3, 4, 5, 6, 7]);
}
