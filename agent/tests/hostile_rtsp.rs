//! Hostile inputs: RTSP servers that try to exhaust the recorder's memory or hang it
//! (tests/rtsp/hostile.py). Each shape runs against `kvs-edge-agent record`, which must report a
//! clear source error with its peak RSS bounded and exit normally (no allocation abort); then
//! all of them at once, with one good camera, in one `kvs-edge-agent run`: the good camera keeps
//! recording and the daemon's peak RSS stays under 100 MB. A camera's large key frames, which
//! the bounds must let through, are recorded whole.

#[path = "support/agent.rs"]
mod agent;
#[path = "support/bin.rs"]
mod bin;
#[path = "support/net.rs"]
mod net;
#[path = "support/peer.rs"]
mod peer;
#[path = "support/poll.rs"]
mod poll;
#[path = "support/process.rs"]
mod process;
#[path = "support/recording.rs"]
mod recording;
#[path = "support/rtsp.rs"]
mod rtsp;
#[path = "support/sample.rs"]
mod sample;
#[path = "support/snapshot.rs"]
mod snapshot;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agent::{Agent, THING};
use bin::BIN;
use net::free_port;
use peer::require;
use poll::wait_until;
use rtsp::{RtspServer, require_gstreamer};
use snapshot::{job_status, snapshot};

/// Peak RSS allowed to `record` against one hostile camera: ~17 MB at rest, plus the bounds it
/// must hold (a 64 KiB message head, a 1 MiB message, a 16 MiB read buffer and the bookkeeping
/// of the frame it holds; vendor/retina/PATCHES.md).
const RECORD_PEAK_KB: u64 = 64 << 10;
/// Peak RSS allowed to the daemon with every hostile camera and a good one.
const DAEMON_PEAK_KB: u64 = 100 << 10;
/// Covers the recorder's 10 s request timeout (silence, endless CRLFs, data floods).
const REPORT_WITHIN: Duration = Duration::from_secs(40);

/// Each shape of tests/rtsp/hostile.py and what its status details must say.
const SHAPES: &[(&str, &str)] = &[
    ("huge-body", "message-too-large"),
    ("endless-headers", "head-too-large"),
    ("endless-line", "head-too-large"),
    ("endless-crlf", "no answer to DESCRIBE"),
    ("random", "RTSP error: RTSP framing error"),
    ("silence", "no answer to DESCRIBE"),
    ("many-tracks", "SDP has 1000 media sections; at most 64"),
    ("tracks-max", "SDP has 45452 media sections; at most 64"),
    ("giant-sdp", "message-too-large"),
    ("flood-data", "no answer to DESCRIBE"),
    (
        "endless-frame",
        "buffered for an unfinished message or frame",
    ),
    ("tiny-nals", "access unit of 65537 NAL units"),
    ("tiny-fragments", "in 65537 pieces; the limit is 65536"),
];

fn expected(shape: &str) -> &'static str {
    SHAPES.iter().find(|(s, _)| *s == shape).unwrap().1
}

/// VmHWM (peak resident set) of a live process, in kB.
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Records from a hostile camera until the first status report, watching the peak RSS (killed
/// past [`RECORD_PEAK_KB`]); then SIGTERM. Returns the exit's status details and the peak.
fn record_against(shape: &str, server_args: &[&str]) -> (String, u64) {
    let server =
        RtspServer::start_script("hostile.py", &[&["--shape", shape], server_args].concat());
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["record", "--uri", &server.url, "--stream", "cam"])
        .arg("--recording-dir")
        .arg(dir.path())
        .args(["--stall-timeout-secs", "2"])
        .env("HOME", dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + REPORT_WITHIN;
    let mut log = Vec::new();
    let mut peak = 0;
    // Memory has no event to await: sampled every 20 ms, between log lines.
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => {
                let reported = line.contains("recorder status");
                log.push(line);
                if reported {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                panic!(
                    "{shape}: record ended ({status:?}, signal {:?}) before any report:\n{}",
                    status.signal(),
                    log.join("\n")
                );
            }
        }
        peak = peak.max(peak_rss_kb(pid).unwrap_or(0));
        if peak > RECORD_PEAK_KB || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{shape}: record reached {} MB peak RSS (limit {} MB) without a report \
                 within {REPORT_WITHIN:?}:\n{}",
                peak >> 10,
                RECORD_PEAK_KB >> 10,
                log.join("\n")
            );
        }
    }
    peak = peak.max(peak_rss_kb(pid).unwrap_or(0));
    process::signal(pid, "-TERM");
    let status = child.wait().unwrap();
    reader.join().unwrap();
    log.extend(rx.try_iter());
    let log = log.join("\n");
    assert_eq!(
        status.code(),
        Some(1),
        "{shape}: nothing recorded is exit 1, not {status:?} (signal {:?}):\n{log}",
        status.signal()
    );
    let details = log
        .lines()
        .find_map(|l| l.strip_prefix("kvs-edge-agent: nothing recorded; last status "))
        .unwrap_or_else(|| panic!("{shape}: no final status in:\n{log}"))
        .to_owned();
    eprintln!("{shape}: peak RSS {peak} kB; {details}");
    (details, peak)
}

fn hostile(shape: &str) {
    if !require("/usr/bin/python3", &["--version"]) {
        return;
    }
    let (details, peak) = record_against(shape, &[]);
    assert!(
        details.starts_with("SYSTEM_ERROR: ") && details.contains(expected(shape)),
        "{shape}: {details}"
    );
    assert!(
        details.chars().count() < 400,
        "{shape}: details cut to a readable length: {details}"
    );
    assert!(peak < RECORD_PEAK_KB, "{shape}: peak RSS {peak} kB");
}

/// A shape with server arguments, refused with exactly `details` within the memory bound.
fn refused_with(shape: &str, server_args: &[&str], details: &str) {
    if !require("/usr/bin/python3", &["--version"]) {
        return;
    }
    let (found, peak) = record_against(shape, server_args);
    assert_eq!(found, details);
    assert!(peak < RECORD_PEAK_KB, "{shape}: peak RSS {peak} kB");
}

#[test]
fn huge_content_length_with_endless_body() {
    hostile("huge-body");
}

#[test]
fn endless_header_lines() {
    hostile("endless-headers");
}

#[test]
fn one_endless_header_line() {
    hostile("endless-line");
}

#[test]
fn endless_blank_lines() {
    hostile("endless-crlf");
}

#[test]
fn random_bytes() {
    hostile("random");
}

#[test]
fn silence() {
    hostile("silence");
}

#[test]
fn sdp_with_1000_tracks() {
    hostile("many-tracks");
}

/// Under retina's 64 media sections, over the recorder's 32 streams.
#[test]
fn sdp_with_40_tracks() {
    refused_with(
        "many-tracks",
        &["--tracks", "40"],
        "SYSTEM_ERROR: RTSP error: the camera describes 40 streams; at most 32 are accepted",
    );
}

#[test]
fn sdp_with_as_many_tracks_as_fit() {
    hostile("tracks-max");
}

#[test]
fn giant_sdp() {
    hostile("giant-sdp");
}

#[test]
fn interleaved_data_flood_instead_of_an_answer() {
    hostile("flood-data");
}

#[test]
fn access_unit_that_never_ends() {
    hostile("endless-frame");
}

#[test]
fn access_unit_of_ever_more_tiny_nal_units() {
    hostile("tiny-nals");
}

#[test]
fn nal_unit_of_ever_more_tiny_fragments() {
    hostile("tiny-fragments");
}

/// Not hostile: a camera's large key frames (3 MB, above the size past which retina's patched
/// read buffer shrinks back) are all recorded, byte for byte.
#[test]
fn large_key_frames_are_recorded() {
    if !require("/usr/bin/python3", &["--version"]) {
        return;
    }
    const FRAME: usize = 3_000_000;
    let server = RtspServer::start_script(
        "hostile.py",
        &["--shape", "big-frames", "--frame-bytes", &FRAME.to_string()],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["record", "--uri", &server.url, "--stream", "cam"])
        .arg("--recording-dir")
        .arg(dir.path())
        .args(["--duration", "4s", "--min-fragment-ms", "100"])
        .env("HOME", dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    process::assert_success(&out);
    let catalog =
        kvs_edge_agent::catalog::Catalog::open(&dir.path().join("kvs-edge-agent.db")).unwrap();
    let frames: Vec<_> = recording::read_segments(&catalog, dir.path(), "cam")
        .into_iter()
        .flat_map(|s| s.clusters.into_iter().flatten())
        .collect();
    assert!(
        frames.len() >= 10,
        "5 frames a second for 4 s: {}",
        frames.len()
    );
    for f in &frames {
        assert!(f.key);
        // One NAL with its 4-byte length: the IDR header byte and the body, as sent.
        assert_eq!(f.data.len(), 4 + FRAME);
        assert_eq!(&f.data[4..6], &[0x65, 1]);
    }
}

/// A complete frame past the recorder's own 8 MiB bound (under retina's 16 MiB) ends the session.
#[test]
fn frame_over_8_mib_is_refused() {
    refused_with(
        "big-frames",
        &["--frame-bytes", "10000000"],
        "SYSTEM_ERROR: RTSP error: a frame of 10000004 bytes; the limit is 8388608",
    );
}

/// A StartEdgeConfigurationUpdate request recording `stream` from `arn`.
fn edge_config(dir: &Path, stream: &str, arn: &str) -> String {
    let path = dir.join(format!("{stream}.json"));
    std::fs::write(
        &path,
        format!(
            r#"{{"StreamName":"{stream}","EdgeConfig":{{"HubDeviceArn":"arn:aws:iot:us-east-1:123456789012:thing/{THING}","RecorderConfig":{{"MediaSourceConfig":{{"MediaUriSecretArn":"{arn}","MediaUriType":"RTSP_URI"}}}}}}}}"#
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// Every hostile camera and one good one in one daemon: each hostile stream reports its error,
/// the good one records fragment after fragment, and the daemon's peak RSS stays bounded.
#[test]
fn hostile_cameras_beside_a_good_one_in_one_daemon() {
    if !require_gstreamer(&["x264enc", "rtph264pay"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let good = RtspServer::start(&["--source", "live"]);
    let hostile: Vec<(&str, RtspServer)> = SHAPES
        .iter()
        .map(|(shape, _)| {
            (
                *shape,
                RtspServer::start_script("hostile.py", &["--shape", shape]),
            )
        })
        .collect();
    let arn =
        |stream: &str| format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{stream}");
    let mut secrets = format!("{}: {}\n", arn("good"), good.url);
    let mut args = vec![
        "--edge-config".to_owned(),
        edge_config(dir, "good", &arn("good")),
    ];
    for (shape, server) in &hostile {
        secrets.push_str(&format!("{}: {}\n", arn(shape), server.url));
        args.push("--edge-config".into());
        args.push(edge_config(dir, shape, &arn(shape)));
    }
    let secrets_file = dir.join("secrets.yaml");
    std::fs::write(&secrets_file, secrets).unwrap();
    // A broker nobody listens on: no control plane, the agent retries it in the background.
    let yaml = format!(
        "secrets_file: {}\nrecorder:\n  min_fragment_duration_ms: 1000\n  segment_duration_secs: 10\n\
         mqtt:\n  thing_name: {THING}\n  broker_url: mqtt://127.0.0.1:{}\n",
        secrets_file.display(),
        free_port()
    );
    let mut agent = Agent::new(dir, &yaml, &args, &[]);
    agent.start();
    let db = agent.catalog();
    let pid = agent.pid();
    let mut peak = 0;
    // Fails as soon as the bound is crossed, before an unbounded agent takes the machine's memory.
    let mut sample = |agent: &mut Agent| -> bool {
        assert!(
            agent.is_running(),
            "the agent exited:\n{}",
            agent.log_tail()
        );
        peak = peak.max(peak_rss_kb(pid).unwrap_or(0));
        assert!(
            peak < DAEMON_PEAK_KB,
            "daemon peak RSS {peak} kB, limit {DAEMON_PEAK_KB} kB"
        );
        true
    };

    // The good camera records, and every hostile stream reports its own error (silence and
    // floods after the 10 s request timeout).
    wait_until("every hostile camera's error", REPORT_WITHIN, || {
        sample(&mut agent)
            && snapshot(&db, "good").committed() > 0
            && hostile.iter().all(|(shape, _)| {
                job_status(&db, shape, "RECORDER")
                    .is_some_and(|(_, d)| d.is_some_and(|d| d.contains(expected(shape))))
            })
    })
    .unwrap_or_else(|e| {
        let got: Vec<_> = SHAPES
            .iter()
            .map(|(s, _)| (s, job_status(&db, s, "RECORDER")))
            .collect();
        panic!("{e}: {got:#?}\n{}", agent.log_tail())
    });
    // Then 20 s more, in which the hostile cameras are retried (backoff up to 30 s) while the
    // good one must keep committing 1 s fragments.
    let before = snapshot(&db, "good").committed();
    let until = Instant::now() + Duration::from_secs(20);
    wait_until("20 s of recording", Duration::from_secs(25), || {
        sample(&mut agent) && Instant::now() >= until
    })
    .unwrap();
    let snap = snapshot(&db, "good");
    let after = snap.committed();
    peak = peak.max(peak_rss_kb(pid).unwrap_or(0));
    // Now that it is past, how much of the resident set is heap and how much code.
    let resident: String = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("RssAnon") || l.starts_with("RssFile"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ");
    let (status, _) = agent.stop().unwrap();
    let mut timecodes: Vec<i64> = snap.frags.values().map(|f| f.timecode_ms).collect();
    timecodes.sort();
    let widest = timecodes.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    eprintln!(
        "daemon with {} hostile cameras and a good one: peak RSS (VmHWM) {} kB = {:.1} MB \
         (at the end: {resident}); good camera: {before} -> {after} fragments in 20 s, widest \
         gap {widest} ms",
        hostile.len(),
        peak,
        peak as f64 / 1024.0
    );
    assert!(status.success(), "agent exit after SIGTERM: {status:?}");
    assert!(
        after >= before + 15,
        "the good camera kept recording 1 s fragments: {before} -> {after}"
    );
    assert!(
        widest <= 3000,
        "no gap in the good camera's fragments: widest {widest} ms"
    );
    assert!(
        peak < DAEMON_PEAK_KB,
        "daemon peak RSS {peak} kB, limit {DAEMON_PEAK_KB} kB"
    );
}
