//! The recorder against a real RTSP server (GStreamer's, tests/rtsp/server.py): a 30 s clip
//! across segment boundaries with every frame accounted for, digest authentication, a camera
//! that goes away and returns, cameras that send something other than H.264, and cameras whose
//! clock runs 2 % fast or slow.

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
#[path = "support/rtsp.rs"]
mod rtsp;
#[path = "support/sample.rs"]
mod sample;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvs_edge_agent::catalog::Catalog;
use kvs_edge_agent::clock::RealClock;
use kvs_edge_agent::edge_config::JobStatus;
use kvs_edge_agent::media::h264::AvcConfig;
use kvs_edge_agent::media::mkv::VideoCodec;
use kvs_edge_agent::recorder::fragmenter::FragmenterConfig;
use kvs_edge_agent::recorder::rtsp::RtspOptions;
use kvs_edge_agent::recorder::{Control, MemoryStatus, RecorderConfig, RecorderSummary};
use mkv::{ffprobe, mkvinfo_ok};
use peer::require;
use poll::wait_for;
use process::signal;
use recorder::Job;
use recording::{catalog_totals, read_segments};
use rtsp::{RtspServer, require_gstreamer};

/// One status report: LastRecorderStatus and its details.
type Report = (JobStatus, Option<String>);

/// A recorder job running on its own runtime thread.
struct Running {
    recorder: Job,
    catalog: Arc<Catalog>,
    status: Arc<MemoryStatus>,
}

impl Running {
    fn start(dir: &Path, uri: &str, segment_secs: i64, stall: Duration) -> Running {
        let fragmenter = FragmenterConfig {
            segment_duration_ms: segment_secs * 1000,
            ..FragmenterConfig::default()
        };
        let rtsp = RtspOptions {
            stall_timeout: stall,
            ..RtspOptions::default()
        };
        Running::with(dir, uri, fragmenter, rtsp)
    }

    fn with(dir: &Path, uri: &str, fragmenter: FragmenterConfig, rtsp: RtspOptions) -> Running {
        let catalog = Arc::new(Catalog::open(&dir.join("kvs-edge-agent.db")).unwrap());
        let status = Arc::new(MemoryStatus::default());
        let cfg = RecorderConfig {
            stream: "cam".into(),
            uri: uri.into(),
            recording_dir: dir.to_owned(),
            fragmenter,
            rtsp,
        };
        let recorder = Job::spawn(cfg, catalog.clone(), Arc::new(RealClock), status.clone());
        Running {
            recorder,
            catalog,
            status,
        }
    }

    fn totals(&self) -> (usize, u64) {
        catalog_totals(&self.catalog, "cam")
    }

    /// Waits (30 s at most) for the first fragment in the catalog.
    fn wait_fragment(&self) {
        wait_for("a fragment", Duration::from_secs(30), || {
            self.totals().0 >= 1
        });
    }

    fn statuses(&self) -> Vec<Report> {
        self.status.0.lock().unwrap().clone()
    }

    fn stop(self) -> (RecorderSummary, Arc<Catalog>, Vec<Report>) {
        let summary = self.recorder.stop();
        let statuses = self.status.0.lock().unwrap().clone();
        (summary, self.catalog, statuses)
    }
}

/// SUCCESS, with no details but the count of fragments recorded while the box's clock was not
/// synchronised (which depends on the machine running the test).
fn assert_success(report: &Report) {
    assert_eq!(report.0, JobStatus::Success, "{report:?}");
    if let Some(d) = &report.1 {
        assert!(
            d.ends_with("recorded while the system clock was not synchronised"),
            "{d}"
        );
    }
}

fn have_tools() -> bool {
    require_gstreamer(&["x264enc", "rtph264pay", "matroskademux"])
        && require("ffprobe", &["-version"])
        && require("mkvinfo", &["--version"])
}

#[test]
fn thirty_seconds_across_segments_every_frame_once() {
    if !have_tools() {
        return;
    }
    const SENT: u64 = 750; // 30 s at 25 fps, a key frame each second
    let server = RtspServer::start(&["--source", "clip", "--frames", "750"]);
    let dir = tempfile::tempdir().unwrap();
    let job = Running::start(dir.path(), &server.url, 10, Duration::from_secs(2));
    // The clip ends after 30 s; the stall timeout then flushes the last fragment.
    wait_for("all frames in the catalog", Duration::from_secs(60), || {
        job.totals().1 >= SENT
    });
    let (summary, catalog, statuses) = job.stop();
    assert_success(&statuses[0]);
    assert_eq!(catalog_totals(&catalog, "cam").1, SENT, "{summary:?}");

    let segs = read_segments(&catalog, dir.path(), "cam");
    assert!(
        segs.len() >= 3,
        "30 s in 10 s segments: {} segments",
        segs.len()
    );
    let frames: Vec<_> = segs
        .iter()
        .flat_map(|s| s.clusters.iter().flatten())
        .collect();
    assert_eq!(frames.len() as u64, SENT);
    let t0 = frames[0].timestamp_ms;
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(
            f.timestamp_ms,
            t0 + 40 * i as i64,
            "frame {i}: timestamps follow the RTP clock"
        );
        assert_eq!(
            f.key,
            i % 25 == 0,
            "frame {i}: key frames where the server put them"
        );
    }
    for s in &segs {
        assert_eq!(s.track.codec, VideoCodec::H264);
        let avcc = AvcConfig::parse(&s.track.codec_private).expect("AVCC CodecPrivate");
        assert_eq!(avcc.nal_length_size, 4);
        assert_eq!((s.track.width, s.track.height), (320, 240));
        assert!(
            s.clusters.iter().all(|c| c[0].key),
            "every cluster starts with a key frame"
        );
        let (codec, n) = ffprobe(&s.path);
        assert_eq!(codec, "h264");
        assert_eq!(n, s.clusters.iter().map(Vec::len).sum::<usize>() as u64);
        mkvinfo_ok(&s.path);
    }
    let audit = kvs_edge_agent::store::audit::audit(&catalog, dir.path(), None).unwrap();
    assert_eq!(audit.problems, Vec::<String>::new());
}

#[test]
fn digest_auth_right_and_wrong_password() {
    if !have_tools() {
        return;
    }
    let server = RtspServer::start(&["--user", "alice", "--password", "r1ght-pw"]);

    let dir = tempfile::tempdir().unwrap();
    let job = Running::start(
        dir.path(),
        &server.url_with("alice", "r1ght-pw"),
        60,
        Duration::from_secs(5),
    );
    job.wait_fragment();
    let (_, _, statuses) = job.stop();
    assert_success(&statuses[0]);

    let dir = tempfile::tempdir().unwrap();
    let job = Running::start(
        dir.path(),
        &server.url_with("alice", "wr0ng-pw"),
        60,
        Duration::from_secs(5),
    );
    wait_for("a USER_ERROR", Duration::from_secs(30), || {
        job.statuses()
            .iter()
            .any(|(s, _)| *s == JobStatus::UserError)
    });
    let (summary, catalog, statuses) = job.stop();
    assert_eq!(summary.fragments, 0);
    assert_eq!(catalog_totals(&catalog, "cam").0, 0);
    let (status, details) = &statuses[0];
    assert_eq!(*status, JobStatus::UserError);
    let details = details.as_deref().unwrap();
    assert!(details.contains("credentials"), "{details}");
    assert!(
        !details.contains("wr0ng-pw"),
        "the password leaked: {details}"
    );
}

#[test]
fn camera_goes_away_and_returns() {
    if !have_tools() {
        return;
    }
    let mut server = RtspServer::start(&[]);
    let port = server.port.to_string();
    let dir = tempfile::tempdir().unwrap();
    let job = Running::start(dir.path(), &server.url, 60, Duration::from_secs(5));
    job.wait_fragment();

    // Dropped clients: the server stays up, the recorder reconnects.
    server.drop_clients();
    let before = job.totals().0;
    wait_for("recording after the drop", Duration::from_secs(30), || {
        job.totals().0 >= before + 2
    });

    // The camera goes away for a while, then comes back on the same port.
    drop(server);
    wait_for("the recorder to notice", Duration::from_secs(30), || {
        job.statuses()
            .iter()
            .any(|(s, _)| *s == JobStatus::SystemError)
    });
    std::thread::sleep(Duration::from_secs(4)); // the outage itself, not synchronisation
    let server = RtspServer::start(&["--port", &port]);
    let back = Instant::now();
    let back_ms = jiff::Timestamp::now().as_millisecond();
    let before = job.totals().0;
    wait_for(
        "recording after the return",
        Duration::from_secs(30),
        || job.totals().0 > before,
    );
    let (summary, catalog, _) = job.stop();
    drop(server);

    assert!(summary.sessions >= 3, "{summary:?}");
    assert!(summary.gaps.len() >= 2, "gaps recorded: {summary:?}");
    let outage = summary.gaps.last().unwrap();
    assert!(outage.to_ms - outage.from_ms >= 4_000, "{outage:?}");
    // Resumed within 2 s of the camera's return (its first fragment starts then).
    let segs = read_segments(&catalog, dir.path(), "cam");
    let first_after = segs
        .iter()
        .flat_map(|s| s.clusters.iter())
        .map(|c| c[0].timestamp_ms)
        .find(|&t| t >= back_ms - 1_000)
        .expect("a fragment after the return");
    assert!(
        first_after - back_ms <= 2_000,
        "resumed {} ms after the camera returned ({:?} until a fragment was indexed)",
        first_after - back_ms,
        back.elapsed()
    );
    let frames: Vec<i64> = segs
        .iter()
        .flat_map(|s| s.clusters.iter().flatten().map(|f| f.timestamp_ms))
        .collect();
    assert!(
        frames.windows(2).all(|w| w[1] > w[0]),
        "timestamps increase across reconnects"
    );
    for s in &segs {
        ffprobe(&s.path);
    }
}

#[test]
fn non_h264_camera_is_a_user_error() {
    if !have_tools() || !require("gst-inspect-1.0", &["--exists", "rtpjpegpay"]) {
        return;
    }
    let server = RtspServer::start(&["--codec", "jpeg"]);
    let dir = tempfile::tempdir().unwrap();
    let job = Running::start(dir.path(), &server.url, 60, Duration::from_secs(5));
    wait_for("a USER_ERROR", Duration::from_secs(30), || {
        !job.statuses().is_empty()
    });
    let (summary, _, statuses) = job.stop();
    assert_eq!(summary.fragments, 0);
    let (status, details) = &statuses[0];
    assert_eq!(*status, JobStatus::UserError);
    assert!(
        details.as_deref().unwrap().contains("unsupported codec"),
        "{details:?}"
    );
}

#[test]
fn h265_camera_is_recorded_as_hevc() {
    if !have_tools() || !require("gst-inspect-1.0", &["--exists", "x265enc"]) {
        return;
    }
    let server = RtspServer::start(&["--codec", "h265"]);
    let dir = tempfile::tempdir().unwrap();
    let job = Running::start(dir.path(), &server.url, 60, Duration::from_secs(5));
    job.wait_fragment();
    let (_, catalog, _) = job.stop();
    let segs = read_segments(&catalog, dir.path(), "cam");
    assert_eq!(segs[0].track.codec, VideoCodec::H265);
    for s in &segs {
        assert!(s.clusters.iter().all(|c| c[0].key));
        let (codec, n) = ffprobe(&s.path);
        assert_eq!(codec, "hevc");
        assert_eq!(n, s.clusters.iter().map(Vec::len).sum::<usize>() as u64);
    }
}

#[test]
fn wrong_path_is_a_user_error() {
    if !have_tools() {
        return;
    }
    let server = RtspServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.url.replace("/cam", "/no-such-stream");
    let job = Running::start(dir.path(), &url, 60, Duration::from_secs(5));
    wait_for("a status", Duration::from_secs(30), || {
        !job.statuses().is_empty()
    });
    let (_, _, statuses) = job.stop();
    assert_eq!(statuses[0].0, JobStatus::UserError, "{statuses:?}");
    assert!(statuses[0].1.as_deref().unwrap().contains("bad media URI"));
}

#[test]
fn udp_transport_records() {
    if !have_tools() {
        return;
    }
    let server = RtspServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let rtsp = RtspOptions {
        transport: kvs_edge_agent::recorder::rtsp::RtspTransport::Udp,
        ..RtspOptions::default()
    };
    let job = Running::with(dir.path(), &server.url, FragmenterConfig::default(), rtsp);
    wait_for("a fragment over UDP", Duration::from_secs(30), || {
        job.totals().0 >= 1
    });
    let (summary, catalog, _) = job.stop();
    assert!(summary.fragments >= 1);
    for s in read_segments(&catalog, dir.path(), "cam") {
        assert_eq!(ffprobe(&s.path).0, "h264");
    }
}

#[test]
fn pause_closes_the_segment_and_record_resumes() {
    if !have_tools() {
        return;
    }
    let server = RtspServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let job = Running::start(dir.path(), &server.url, 60, Duration::from_secs(5));
    job.wait_fragment();
    job.recorder.tx.send(Control::Pause).unwrap();
    wait_for("the segment closed", Duration::from_secs(10), || {
        job.catalog
            .segments(Some("cam"))
            .unwrap()
            .iter()
            .all(|s| s.state == kvs_edge_agent::catalog::SegmentState::Closed)
    });
    let paused = job.totals();
    job.recorder.tx.send(Control::Record).unwrap();
    wait_for("recording again", Duration::from_secs(30), || {
        job.totals().0 > paused.0
    });
    let (summary, catalog, _) = job.stop();
    assert_eq!(
        catalog.segments(Some("cam")).unwrap().len(),
        2,
        "{summary:?}"
    );
}

#[test]
fn stalled_camera_times_out_and_recovers() {
    if !have_tools() {
        return;
    }
    let server = RtspServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let job = Running::start(dir.path(), &server.url, 60, Duration::from_secs(2));
    job.wait_fragment();
    // Frozen, but the connection stays open: only the stall timeout can notice.
    signal(server.pid(), "-STOP");
    wait_for("the stall to be reported", Duration::from_secs(30), || {
        job.statuses().iter().any(|(s, d)| {
            *s == JobStatus::SystemError
                && d.as_deref().is_some_and(|d| d.contains("no video frame"))
        })
    });
    signal(server.pid(), "-CONT");
    let before = job.totals().0;
    wait_for("recording after the stall", Duration::from_secs(60), || {
        job.totals().0 > before + 1
    });
    let (summary, _, statuses) = job.stop();
    assert!(summary.sessions >= 2, "{summary:?}");
    assert_eq!(statuses.last().unwrap().0, JobStatus::Success);
}

/// How long the drift test records (RECORDER_DRIFT_SECS, 120 by default).
fn drift_secs() -> u64 {
    std::env::var("RECORDER_DRIFT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120)
}

/// A camera whose clock runs `rate` times real time, recorded for [`drift_secs`] after its first
/// fragment: the frames it sent per second of real time, and how far the last frame's timestamp was from the box's
/// wall clock at the stop.
fn record_drifting_camera(rate: &str) -> (f64, i64) {
    let server = RtspServer::start(&["--source", "live", "--clock-rate", rate]);
    let dir = tempfile::tempdir().unwrap();
    let job = Running::start(dir.path(), &server.url, 10, Duration::from_secs(5));
    job.wait_fragment();
    // The length of the experiment, not a wait for an event.
    std::thread::sleep(Duration::from_secs(drift_secs()));
    let stop_ms = jiff::Timestamp::now().as_millisecond();
    let (_, catalog, statuses) = job.stop();
    assert!(
        statuses.iter().all(|(s, _)| *s == JobStatus::Success),
        "{rate}: {statuses:?}"
    );
    let segs = read_segments(&catalog, dir.path(), "cam");
    let frames: Vec<_> = segs
        .iter()
        .flat_map(|s| s.clusters.iter().flatten())
        .collect();
    for (i, w) in frames.windows(2).enumerate() {
        let step = w[1].timestamp_ms - w[0].timestamp_ms;
        assert!(
            (27..=60).contains(&step),
            "{rate}: frame {}: a step of {step} ms (nominal 40)",
            i + 1
        );
    }
    for s in &segs {
        let (_, n) = ffprobe(&s.path);
        assert_eq!(n, s.clusters.iter().map(Vec::len).sum::<usize>() as u64);
    }
    // The first frame is placed at its arrival: from there to the stop is real time.
    let first = frames[0].timestamp_ms;
    let fps = frames.len() as f64 * 1000.0 / (stop_ms - first) as f64;
    (fps, frames.last().unwrap().timestamp_ms - stop_ms)
}

#[test]
fn a_camera_clock_two_percent_fast_or_slow_stays_on_the_box_clock() {
    if !have_tools() {
        return;
    }
    let runs: Vec<(&str, (f64, i64))> = std::thread::scope(|s| {
        let handles: Vec<_> = ["1.02", "0.98"]
            .into_iter()
            .map(|rate| (rate, s.spawn(move || record_drifting_camera(rate))))
            .collect();
        handles
            .into_iter()
            .map(|(rate, h)| (rate, h.join().unwrap()))
            .collect()
    });
    for (rate, (fps, off_ms)) in runs {
        println!(
            "camera clock x{rate}: {fps:.2} frames/s of real time; after {} s the last frame \
             was {off_ms} ms from the box clock",
            drift_secs()
        );
        // The camera really drifts: its 25 fps run `rate` times as fast.
        let expected = 25.0 * rate.parse::<f64>().unwrap();
        assert!((fps - expected).abs() < 0.15, "x{rate}: {fps} frames/s");
        assert!(
            off_ms.abs() <= 500,
            "x{rate}: {off_ms} ms off the box clock"
        );
    }
}
