//! The HTTP server of the daemon, against a real password-protected GStreamer camera and the
//! KVS ingest emulator:
//!
//! - `/metrics` parses with the Prometheus project's OpenMetrics parser, and once the camera
//!   has gone and the backlog is sent, its counters equal what the catalog holds;
//! - `/api/v1/streams` and `/recordings` say the same; no response anywhere holds the camera's
//!   password;
//! - every bad input gets a 4xx naming it, and the agent records on;
//! - `/healthz` turns 503 while another process holds the catalog's WAL-index locks (a stuck
//!   catalog, as a hung disk leaves it), and 200 again after;
//! - a listener off loopback needs `http.token_file` (the agent refuses to start without it)
//!   and then refuses requests without the token.

#[path = "support/agent.rs"]
mod agent;
#[path = "support/bin.rs"]
mod bin;
#[path = "support/camera_agent.rs"]
mod camera_agent;
#[path = "support/http.rs"]
mod http;
#[path = "support/kvs.rs"]
mod kvs;
#[path = "support/net.rs"]
mod net;
#[path = "support/peer.rs"]
mod peer;
#[path = "support/poll.rs"]
mod poll;
#[path = "support/process.rs"]
mod process;
#[path = "support/rtsp.rs"]
mod rtsp;
#[path = "support/sample.rs"]
mod sample;

use std::time::{Duration, Instant};

use agent::{Agent, THING};
use camera_agent::*;
use http::{Samples, get, parse_metrics, sample};
use kvs::Emulator;
use kvs_edge_agent::catalog::{Catalog, UploadState};
use rtsp::{RtspServer, require_gstreamer};

const T: Duration = Duration::from_secs(60);
const PASSWORD: &str = "pw-Zq7!never-in-a-response";

/// What the catalog holds for the stream, counted as the metrics count it.
#[derive(Debug, Default, PartialEq)]
struct Counted {
    fragments: u64,
    frames: u64,
    bytes: u64,
    uploaded: u64,
    pending: u64,
    usage: u64,
}

fn counted(agent: &Agent) -> Counted {
    let c = Catalog::open_read_only(&agent.catalog()).unwrap();
    let mut n = Counted {
        usage: c.stream_usage(STREAM).unwrap(),
        ..Counted::default()
    };
    for s in c.segments(Some(STREAM)).unwrap() {
        for f in c.fragments(s.id).unwrap() {
            n.fragments += 1;
            n.frames += u64::from(f.frame_count);
            n.bytes += f.size;
            n.uploaded += u64::from(f.upload_state == UploadState::Uploaded);
            n.pending += u64::from(f.upload_state == UploadState::Pending);
        }
    }
    n
}

fn from_metrics(m: &Samples) -> Counted {
    let s = |name: &str| sample(m, name, &[("stream", STREAM)]).unwrap_or(-1.0) as u64;
    Counted {
        fragments: s("kvs_edge_recorded_fragments_total"),
        frames: s("kvs_edge_recorded_frames_total"),
        bytes: s("kvs_edge_recorded_bytes_total"),
        uploaded: s("kvs_edge_uploaded_fragments_total"),
        pending: s("kvs_edge_pending_fragments"),
        usage: s("kvs_edge_local_media_bytes"),
    }
}

async fn metrics(base: &str) -> (Samples, String) {
    let r = get(&format!("{base}/metrics"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.content_type.starts_with("application/openmetrics-text"),
        "{}",
        r.content_type
    );
    let text = r.text();
    (parse_metrics(&text), text)
}

/// Holds the catalog's WAL-index locks (bytes 120-127 of the `-shm` file: the writer, checkpoint,
/// recovery and read-mark locks) from another process, as a process stuck inside SQLite would.
struct CatalogLock {
    _held: process::Killed,
}

impl CatalogLock {
    fn take(catalog: &std::path::Path) -> CatalogLock {
        let shm = format!("{}-shm", catalog.display());
        let script = format!(
            "import fcntl, os, sys, time\nfd = os.open({shm:?}, os.O_RDWR)\n\
             while True:\n    try:\n        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 8, 120)\n        break\n\
             \x20   except OSError:\n        time.sleep(0.001)\nprint('LOCKED', flush=True)\ntime.sleep(600)\n"
        );
        let mut child = std::process::Command::new("python3")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let child = process::Killed(child);
        process::ready_line(&mut out, "the catalog lock", |l| {
            l.starts_with("LOCKED").then_some(())
        });
        CatalogLock { _held: child }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_api_and_health_agree_with_the_catalog() {
    if !require_gstreamer(&["x264enc", "rtph264pay"])
        || !peer::python(
            "prometheus_client",
            "pip install prometheus-client (tests/ci.sh)",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let camera = RtspServer::start(&[
        "--source",
        "clip",
        "--user",
        "operator",
        "--password",
        PASSWORD,
    ]);
    let emulator = Emulator::start(&dir.path().join("kvs"), &[]);
    let (secrets, args) = setup(
        dir.path(),
        &camera.url_with("operator", PASSWORD),
        &request("RTSP_URI", OPEN_WINDOW),
    );
    let port = net::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut agent = Agent::new(
        &dir.path().join("agent"),
        &settings(
            &secrets,
            None,
            &format!("http:\n  listen: 127.0.0.1:{port}\n"),
        ),
        &args,
        &upload_env(&emulator.url()),
    );
    agent.start();
    assert!(net::wait_listening(port, T), "{}", agent.log_tail());
    let health = get(&format!("{base}/healthz"), None).await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "ok");

    // Recorded and uploaded, then the camera goes: the counts stop moving once the backlog is
    // sent, and must then equal the catalog's.
    let deadline = Instant::now() + T;
    loop {
        let (m, _) = metrics(&base).await;
        if sample(
            &m,
            "kvs_edge_uploaded_fragments_total",
            &[("stream", STREAM)],
        )
        .is_some_and(|n| n >= 3.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no uploads: {}",
            agent.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    camera.terminate();
    let deadline = Instant::now() + T;
    let (m, text) = loop {
        let (m, text) = metrics(&base).await;
        let (got, want) = (from_metrics(&m), counted(&agent));
        if got == want && want.pending == 0 {
            break (m, text);
        }
        assert!(
            Instant::now() < deadline,
            "metrics {got:?} never matched the catalog {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let want = counted(&agent);
    assert!(want.fragments >= 3 && want.frames >= 3 * 25, "{want:?}");
    let one = |name: &str, labels: &[(&str, &str)]| {
        sample(&m, name, labels).unwrap_or_else(|| panic!("{name}{labels:?} missing:\n{text}"))
    };
    assert_eq!(one("kvs_edge_alive", &[("thing", THING)]), 1.0);
    assert_eq!(
        one(
            "kvs_edge_job_running",
            &[("stream", STREAM), ("job", "UploadJob")]
        ),
        1.0
    );
    assert_eq!(
        one(
            "kvs_edge_jobs",
            &[
                ("thing", THING),
                ("job", "RecordJobs"),
                ("state", "configured")
            ]
        ),
        1.0
    );
    assert!(one("kvs_edge_last_frame_age_seconds", &[("stream", STREAM)]) >= 0.0);
    assert!(one("kvs_edge_disk_free_bytes", &[]) > 0.0);
    assert_eq!(
        one("kvs_edge_mqtt_connected", &[]),
        0.0,
        "the settings' broker is a port nobody listens on"
    );
    assert_eq!(
        one("kvs_edge_uploaded_bytes_total", &[("stream", STREAM)]),
        want.bytes as f64,
        "every recorded byte was uploaded"
    );

    // The JSON API says the same.
    let streams = get(&format!("{base}/api/v1/streams"), None).await;
    assert_eq!(streams.status, 200, "{}", streams.text());
    let v = streams.json();
    let cam = &v.as_array().unwrap()[0];
    assert_eq!(cam["StreamName"], STREAM);
    assert_eq!(cam["Configuration"]["SyncStatus"], "IN_SYNC");
    assert_eq!(cam["Counters"]["FragmentsRecorded"], want.fragments);
    assert_eq!(cam["Usage"]["LocalMediaBytes"], want.usage);
    assert_eq!(cam["Uploads"]["Backlog"]["PendingFragments"], 0);
    let one_stream = get(&format!("{base}/api/v1/streams/{STREAM}"), None).await;
    assert_eq!(one_stream.json()["StreamName"], STREAM);
    let rec = get(&format!("{base}/api/v1/streams/{STREAM}/recordings"), None).await;
    assert_eq!(rec.status, 200, "{}", rec.text());
    let r = rec.json();
    let spans = r["Spans"].as_array().unwrap();
    let in_spans: u64 = spans.iter().map(|s| s["Fragments"].as_u64().unwrap()).sum();
    assert_eq!(in_spans, want.fragments, "{r}");
    assert!(spans.iter().all(|s| s["UploadState"] == "UPLOADED"), "{r}");

    // Bad inputs: a 4xx naming what is wrong, JSON, and the agent records on.
    let bad: &[(&str, u16, &str)] = &[
        ("/api/v1/streams/nope", 404, "no stream \"nope\""),
        ("/api/v1/streams/a%20b", 400, "not a stream name"),
        ("/api/v1/streams/nope/recordings", 404, "no stream"),
        (
            "/api/v1/streams/cam/recordings?start=200&end=100",
            400,
            "not after start",
        ),
        (
            "/api/v1/streams/cam/recordings?start=tuesday",
            400,
            "start:",
        ),
        (
            "/api/v1/streams/cam/recordings?start=0&end=1000000",
            400,
            "more than the",
        ),
        ("/api/v1/streams/cam/recordings?from=1", 400, "\"from\""),
        ("/api/v1/nothing", 404, "no such endpoint"),
    ];
    let mut bodies = vec![text.clone(), streams.text(), one_stream.text(), rec.text()];
    bodies.extend(http::assert_refused(&base, bad).await);
    for b in &bodies {
        assert!(!b.contains(PASSWORD), "a response holds the password: {b}");
    }

    // A stuck catalog: /healthz says so within its 2 s, and recovers after.
    let lock = CatalogLock::take(&agent.catalog());
    let unhealthy = get(&format!("{base}/healthz"), None).await;
    assert_eq!(unhealthy.status, 503, "{}", unhealthy.text());
    let why = unhealthy.json()["message"].as_str().unwrap().to_owned();
    assert!(why.contains("catalog"), "{why}");
    drop(lock);
    let deadline = Instant::now() + T;
    while get(&format!("{base}/healthz"), None).await.status != 200 {
        assert!(Instant::now() < deadline, "/healthz did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(agent.is_running(), "{}", agent.log_tail());
    agent.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_off_loopback_needs_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("rtsp://127.0.0.1:{}/none", net::free_port());
    let (secrets, args) = setup(dir.path(), &dead, &request("RTSP_URI", ""));
    let port = net::free_port();
    let listen = format!("http:\n  listen: 0.0.0.0:{port}\n");
    let mut refused = Agent::new(
        &dir.path().join("refused"),
        &settings(&secrets, None, &listen),
        &args,
        &[],
    );
    refused.start();
    let deadline = Instant::now() + T;
    while refused.is_running() {
        assert!(Instant::now() < deadline, "started without a token file");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refused.log_text().contains("http.token_file"),
        "{}",
        refused.log_text()
    );

    let token = "0123456789abcdef-test-token";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut agent = Agent::new(
        &dir.path().join("agent"),
        &settings(
            &secrets,
            None,
            &format!("{listen}  token_file: {}\n", token_file.display()),
        ),
        &args,
        &[],
    );
    agent.start();
    assert!(net::wait_listening(port, T), "{}", agent.log_tail());
    let base = format!("http://127.0.0.1:{port}");
    for path in ["/healthz", "/metrics", "/api/v1/streams"] {
        for wrong in [None, Some("0123456789abcdef-test-tokeX"), Some("short")] {
            let r = get(&format!("{base}{path}"), wrong).await;
            assert_eq!(r.status, 401, "{path} with {wrong:?}: {}", r.text());
            assert!(r.json()["message"].as_str().unwrap().contains("Bearer"));
            assert!(!r.text().contains(token));
        }
        let r = get(&format!("{base}{path}"), Some(token)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    agent.stop_cleanly();
}
