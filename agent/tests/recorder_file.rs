//! The `record` and `check` commands on the FILE_URI source: segments ffprobe and mkvinfo
//! accept, and a kill -9 mid-segment that restart and `check --repair` recover from.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/mkv.rs"]
mod mkv;
#[path = "support/peer.rs"]
mod peer;
#[path = "support/poll.rs"]
mod poll;
#[path = "support/process.rs"]
mod process;
#[path = "support/recorder.rs"]
mod recorder;
#[path = "support/recording.rs"]
mod recording;
#[path = "support/sample.rs"]
mod sample;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bin::BIN;
use kvs_edge_agent::catalog::{Catalog, SegmentState};
use kvs_edge_agent::media::h264::AvcConfig;
use kvs_edge_agent::recorder::RecorderConfig;
use kvs_edge_agent::recorder::fragmenter::FragmenterConfig;
use mkv::{ffmpeg_decodes, ffprobe, mkvinfo_ok};
use peer::require;
use poll::wait_for;
use recording::{catalog_totals, read_segments};
use sample::sample_clip;

fn record(dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("record")
        .arg("--uri")
        .arg(sample_clip())
        .args(["--stream", "demo", "--recording-dir"])
        .arg(dir)
        .args(extra)
        .env("RUST_LOG", "warn");
    c
}

fn check(dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("check")
        .arg("--recording-dir")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

/// The `demo` stream recording `uri` into `recording_dir` in 1 s fragments, in segments of
/// `segment_duration_ms` when given.
fn demo_config(
    uri: String,
    recording_dir: PathBuf,
    segment_duration_ms: Option<i64>,
) -> RecorderConfig {
    let mut fragmenter = FragmenterConfig {
        min_fragment_ms: 1000,
        ..Default::default()
    };
    if let Some(ms) = segment_duration_ms {
        fragmenter.segment_duration_ms = ms;
    }
    RecorderConfig {
        stream: "demo".into(),
        uri,
        recording_dir,
        fragmenter,
        rtsp: Default::default(),
    }
}

#[test]
fn record_file_uri_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let out = record(
        dir.path(),
        &[
            "--duration",
            "7s",
            "--segment-duration-secs",
            "3",
            "--min-fragment-ms",
            "1000",
        ],
    )
    .output()
    .unwrap();
    process::assert_success(&out);
    let catalog = Catalog::open(&dir.path().join("kvs-edge-agent.db")).unwrap();
    let segs = read_segments(&catalog, dir.path(), "demo");
    assert!(segs.len() >= 2, "{} segments", segs.len());
    let frames: Vec<_> = segs
        .iter()
        .flat_map(|s| s.clusters.iter().flatten())
        .collect();
    // 7 s at 25 fps, the clip looping after 6 s; one frame either way for the timer.
    assert!(
        (174..=176).contains(&frames.len()),
        "{} frames",
        frames.len()
    );
    assert!(
        frames
            .windows(2)
            .all(|w| w[1].timestamp_ms - w[0].timestamp_ms == 40)
    );
    for s in &segs {
        assert!(
            s.clusters.iter().all(|c| c[0].key),
            "every cluster starts with a key frame"
        );
        let avcc = AvcConfig::parse(&s.track.codec_private).unwrap();
        assert_eq!((avcc.sps.len(), avcc.pps.len()), (1, 1));
        assert_eq!((s.track.width, s.track.height), (640, 360));
    }
    let (_, cat_frames) = catalog_totals(&catalog, "demo");
    assert_eq!(cat_frames, frames.len() as u64);

    let c = check(dir.path(), &[]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stdout));
    if require("ffprobe", &["-version"]) && require("mkvinfo", &["--version"]) {
        for s in &segs {
            let (codec, n) = ffprobe(&s.path);
            assert_eq!(codec, "h264");
            assert_eq!(n, s.clusters.iter().map(Vec::len).sum::<usize>() as u64);
            mkvinfo_ok(&s.path);
            ffmpeg_decodes(&s.path);
        }
    }
}

#[test]
fn bad_uri_fails_without_recording() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "record",
            "--uri",
            "file:///nonexistent/clip.h264",
            "--stream",
            "x",
            "--duration",
            "2s",
        ])
        .arg("--recording-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad media URI"));
}

#[test]
fn kill_9_mid_segment_then_recover() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kvs-edge-agent.db");
    let mut child = record(dir.path(), &["--min-fragment-ms", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "2 fragments in the catalog",
        Duration::from_secs(30),
        || {
            db.exists()
                && Catalog::open_read_only(&db)
                    .ok()
                    .is_some_and(|c| catalog_totals(&c, "demo").0 >= 2)
        },
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    {
        let catalog = Catalog::open_read_only(&db).unwrap();
        let segs = catalog.segments(Some("demo")).unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(
            segs[0].state,
            SegmentState::Open,
            "the crash left the segment open"
        );
    }
    let repaired = check(dir.path(), &["--repair"]);
    let text = String::from_utf8_lossy(&repaired.stdout);
    assert!(repaired.status.success(), "{text}");
    assert!(text.contains("closed segment left open"), "{text}");

    let catalog = Catalog::open(&db).unwrap();
    let segs = catalog.segments(Some("demo")).unwrap();
    assert_eq!(segs[0].state, SegmentState::Closed);
    let path = dir.path().join(&segs[0].path);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        segs[0].size,
        "file cut at the index"
    );
    let (fragments, frames) = catalog_totals(&catalog, "demo");
    assert!(fragments >= 2);
    if require("ffprobe", &["-version"]) {
        let (codec, n) = ffprobe(&path);
        assert_eq!(codec, "h264");
        assert_eq!(n, frames);
        ffmpeg_decodes(&path);
    }
    drop(catalog);

    // A restarted recorder recovers (nothing left to do) and records a new segment.
    let out = record(
        dir.path(),
        &["--duration", "3s", "--min-fragment-ms", "1000"],
    )
    .output()
    .unwrap();
    process::assert_success(&out);
    let c = check(dir.path(), &[]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stdout));
    let catalog = Catalog::open_read_only(&db).unwrap();
    let segs = catalog.segments(Some("demo")).unwrap();
    assert_eq!(segs.len(), 2);
    assert!(
        segs[1].start_ms > segs[0].end_ms - 40,
        "timestamps move on after the restart"
    );
}

#[test]
fn disk_fault_is_a_system_error() {
    use kvs_edge_agent::clock::RealClock;
    use kvs_edge_agent::edge_config::JobStatus;
    use kvs_edge_agent::recorder::MemoryStatus;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    // The recording directory is a file: no segment can be created under it.
    let not_a_dir = dir.path().join("media");
    std::fs::write(&not_a_dir, b"").unwrap();
    let catalog = Arc::new(Catalog::open(&dir.path().join("kvs-edge-agent.db")).unwrap());
    let status = Arc::new(MemoryStatus::default());
    let cfg = demo_config(sample_clip().display().to_string(), not_a_dir, None);
    let job = recorder::Job::spawn(cfg, catalog.clone(), Arc::new(RealClock), status.clone());
    wait_for("a SYSTEM_ERROR", Duration::from_secs(20), || {
        !status.0.lock().unwrap().is_empty()
    });
    let summary = job.stop();
    assert_eq!(summary.fragments, 0);
    assert!(summary.write_errors >= 1);
    let (s, details) = status.0.lock().unwrap()[0].clone();
    assert_eq!(s, JobStatus::SystemError);
    assert!(details.unwrap().contains("cannot write media"));
    assert!(catalog.segments(None).unwrap().is_empty());
}

#[test]
fn status_lands_in_the_catalog_and_timestamps_follow_the_clock() {
    use kvs_edge_agent::catalog::Job;
    use kvs_edge_agent::clock::PausedClock;
    use kvs_edge_agent::edge_config::{JobStatus, SyncStatus, parse_start_request};
    use kvs_edge_agent::recorder::CatalogStatus;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::open(&dir.path().join("kvs-edge-agent.db")).unwrap());
    let example = include_str!("../../config/example-edge-configuration.json");
    let mut request = parse_start_request(example).unwrap();
    request.stream_arn = None;
    request.stream_name = Some("demo".into());
    let start: jiff::Timestamp = "2026-03-29T00:30:00Z".parse().unwrap();
    catalog
        .put_config(&request, SyncStatus::InSync, start)
        .unwrap();
    // The job's clock, months before the real one: wall time `start` plus real time elapsed.
    let clock = Arc::new(PausedClock::new(start));
    let status = Arc::new(CatalogStatus {
        catalog: catalog.clone(),
        stream: "demo".into(),
        clock: clock.clone(),
    });
    let cfg = demo_config(
        format!("file://{}?fps=25", sample_clip().display()),
        dir.path().to_owned(),
        None,
    );
    let job = recorder::Job::spawn(cfg, catalog.clone(), clock, status);
    wait_for("2 fragments", Duration::from_secs(20), || {
        catalog_totals(&catalog, "demo").0 >= 2
    });
    job.stop();

    let row = catalog.job_status("demo", Job::Recorder).unwrap().unwrap();
    assert_eq!(row.status, JobStatus::Success);
    assert_eq!(row.details, None);
    let soon = start + jiff::SignedDuration::from_secs(20);
    let collected = row.last_collected_time.unwrap();
    assert!(collected >= start && collected < soon, "{collected}");
    let segs = catalog.segments(Some("demo")).unwrap();
    // Anchored on the job's wall clock at the first frame, then paced by the clip.
    let t0 = segs[0].start_ms;
    assert!(
        (start.as_millisecond()..soon.as_millisecond()).contains(&t0),
        "{t0}"
    );
    assert_eq!(segs[0].path, format!("streams/demo/2026-03-29/{t0}.mkv"));
    let frags = catalog.fragments(segs[0].id).unwrap();
    assert_eq!(frags[0].timecode_ms, t0);
    assert_eq!(frags[1].timecode_ms, t0 + 1000);
    assert_eq!(frags[0].duration_ms, 1000);
}

/// Every closed segment is announced to the sink (the supervisor wakes the janitor with it),
/// including the last one, closed by Stop.
#[test]
fn each_closed_segment_is_announced() {
    use kvs_edge_agent::edge_config::JobStatus;
    use kvs_edge_agent::recorder::StatusSink;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Closed(AtomicUsize);
    impl StatusSink for Closed {
        fn report(&self, _: JobStatus, _: Option<&str>) {}
        fn segment_closed(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::open(&dir.path().join("kvs-edge-agent.db")).unwrap());
    let closed = Arc::new(Closed::default());
    let cfg = demo_config(
        format!("file://{}?fps=250", sample_clip().display()),
        dir.path().to_owned(),
        Some(1000),
    );
    let clock = Arc::new(kvs_edge_agent::clock::RealClock);
    let job = recorder::Job::spawn(cfg, catalog.clone(), clock, closed.clone());
    wait_for("3 segments", Duration::from_secs(20), || {
        catalog.segments(Some("demo")).unwrap().len() >= 3
    });
    let summary = job.stop();
    let segments = catalog.segments(Some("demo")).unwrap();
    assert_eq!(summary.segments as usize, segments.len());
    assert_eq!(
        closed.0.load(Ordering::SeqCst),
        segments.len(),
        "one announcement per segment, the last at Stop"
    );
}

/// Fragments recorded while the box's clock says it is not synchronised are flagged in the
/// catalog and counted in the status details; recording goes on all along.
#[test]
fn fragments_recorded_while_the_clock_is_unsynchronised_are_flagged() {
    use kvs_edge_agent::clock::PausedClock;
    use kvs_edge_agent::edge_config::JobStatus;
    use kvs_edge_agent::recorder::MemoryStatus;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::open(&dir.path().join("kvs-edge-agent.db")).unwrap());
    let clock = Arc::new(PausedClock::new(jiff::Timestamp::now()));
    clock.set_synchronized(Some(false));
    let status = Arc::new(MemoryStatus::default());
    let cfg = demo_config(
        format!("file://{}?fps=25", sample_clip().display()),
        dir.path().to_owned(),
        None,
    );
    let job = recorder::Job::spawn(cfg, catalog.clone(), clock.clone(), status.clone());
    let count = || catalog_totals(&catalog, "demo").0;
    wait_for("3 fragments", Duration::from_secs(20), || count() >= 3);
    clock.set_synchronized(Some(true));
    let at_sync = count();
    wait_for("3 more fragments", Duration::from_secs(20), || {
        count() >= at_sync + 3
    });
    let summary = job.stop();

    let flags: Vec<bool> = recording::catalog_fragments(&catalog, "demo")
        .iter()
        .map(|f| f.clock_unsynced)
        .collect();
    // The fragments before the clock was synchronised (and the one being built then) only.
    let flagged = flags.iter().take_while(|f| **f).count();
    assert!(
        (at_sync..=at_sync + 1).contains(&flagged),
        "{flagged} flagged, {at_sync} before the sync: {flags:?}"
    );
    assert!(flags[flagged..].iter().all(|f| !f), "{flags:?}");
    assert_eq!(summary.clock_unsynced, flagged as u64);
    let reports = status.0.lock().unwrap().clone();
    let last = reports.last().unwrap();
    assert_eq!(last.0, JobStatus::Success);
    // The count as of the report: it is brought up to date with the 60 s refresh, not at every
    // fragment.
    let details = last.1.as_deref().unwrap_or_default();
    let (count, rest) = details.split_once(' ').unwrap();
    assert_eq!(
        rest,
        "fragments recorded while the system clock was not synchronised"
    );
    let count: usize = count.parse().unwrap();
    assert!((1..=flagged).contains(&count), "{reports:?}");
}

/// The box's wall clock stepped two hours ahead, then three back, while a clip records: each
/// step starts a new segment whose media carries the new time, no segment file spans a step
/// (frames evenly spaced in each), the segments are in recording order in the catalog, and
/// `check` finds catalog and disk in agreement.
#[test]
fn a_wall_clock_step_starts_a_segment_on_the_new_time() {
    use jiff::SignedDuration;
    use kvs_edge_agent::clock::{Clock, PausedClock};
    use kvs_edge_agent::recorder::MemoryStatus;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::open(&dir.path().join("kvs-edge-agent.db")).unwrap());
    let clock = Arc::new(PausedClock::new(jiff::Timestamp::now()));
    let cfg = demo_config(
        format!("file://{}?fps=25", sample_clip().display()),
        dir.path().to_owned(),
        None,
    );
    let job = recorder::Job::spawn(
        cfg,
        catalog.clone(),
        clock.clone(),
        Arc::new(MemoryStatus::default()),
    );
    let count = || catalog_totals(&catalog, "demo").0;
    let mut steps = Vec::new();
    for step_h in [2, -3] {
        let before = count();
        wait_for("3 more fragments", Duration::from_secs(20), || {
            count() >= before + 3
        });
        let to = clock.now() + SignedDuration::from_hours(step_h);
        clock.jump(to);
        steps.push(to.as_millisecond());
    }
    let before = count();
    wait_for(
        "3 fragments after the steps",
        Duration::from_secs(20),
        || count() >= before + 3,
    );
    let stop_ms = clock.now().as_millisecond();
    let summary = job.stop();
    assert_eq!(summary.wall_steps, 2, "{summary:?}");

    let segs = read_segments(&catalog, dir.path(), "demo");
    let starts: Vec<i64> = segs.iter().map(|s| s.clusters[0][0].timestamp_ms).collect();
    assert_eq!(segs.len(), 3, "one segment per era: {starts:?}");
    for s in &segs {
        s.assert_evenly_spaced(30..=50);
        let frames = s.clusters.iter().map(Vec::len).sum::<usize>();
        let (_, n) = ffprobe(&s.path);
        assert_eq!(n, frames as u64);
    }
    // Each step is taken at the next key frame of the clip (one a second) after it.
    for (start, step) in starts[1..].iter().zip(&steps) {
        assert!(
            (*step..step + 1500).contains(start),
            "a segment started at {start}, the clock stepped to {step}"
        );
    }
    let last = segs[2]
        .clusters
        .last()
        .unwrap()
        .last()
        .unwrap()
        .timestamp_ms;
    assert!(
        (last - stop_ms).abs() <= 500,
        "{} ms from the clock",
        last - stop_ms
    );
    let out = check(dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
