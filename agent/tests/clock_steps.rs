//! The daemon on a box whose wall clock is stepped while it records and uploads, with a live
//! GStreamer RTSP camera and the KVS ingest emulator. libfaketime (Debian `faketime`) moves the
//! agent's wall clock by the offset in a file it rereads at every reading, and leaves its
//! monotonic clock alone, as an NTP step or a manual fix does: the box starts ten minutes
//! behind, is put right (a step forward), then stepped back five minutes. The emulator keeps the
//! real time, so every upload is also checked against a clock the agent cannot see.
//!
//! Checked: each step starts a new segment within a GOP, on the new time; no segment spans a
//! step; segments are in recording order; media reaches the emulator once, with no 4004 (a
//! session never goes back in time), and `check` agrees with the disk afterwards.

#[path = "support/agent.rs"]
mod agent;
#[path = "support/bin.rs"]
mod bin;
#[path = "support/camera_agent.rs"]
mod camera_agent;
#[path = "support/check.rs"]
mod check;
#[path = "support/kvs.rs"]
mod kvs;
#[path = "support/mkv.rs"]
mod mkv;
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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::Agent;
use camera_agent::*;
use kvs::{Emulator, assert_ended_after_last_ack};
use kvs_edge_agent::catalog::Catalog;
use peer::required;
use poll::wait_until_async;
use recording::read_segments;
use rtsp::{RtspServer, require_gstreamer};
use snapshot::snapshot;

/// The agent's wall clock against the real one, era by era (ms): ten minutes behind, put right,
/// five minutes back. Within the emulator's 15 minutes of signature clock skew.
const ERAS: [i64; 3] = [-600_000, 0, -300_000];
/// How long each era lasts: more than a 10 s segment.
const ERA: Duration = Duration::from_secs(12);

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// libfaketime's multithreaded library, if installed.
fn libfaketime() -> Option<PathBuf> {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.is_file());
    required(
        "libfaketime",
        found.is_some(),
        "Debian package faketime, see tests/ci.sh",
    )
    .then(|| found.unwrap())
}

/// Sets the agent's wall clock `ms` off the real one (libfaketime's relative offset, seconds).
fn set_offset(file: &Path, ms: i64) {
    std::fs::write(file, format!("{:+}\n", ms / 1000)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_steps_while_recording_and_uploading() {
    let Some(lib) = libfaketime() else { return };
    if !require_gstreamer(&["x264enc", "rtph264pay"]) {
        return;
    }
    let t0 = now_ms();
    let dir = tempfile::tempdir().unwrap();
    let camera = RtspServer::start(&["--source", "live"]);
    let emulator = Emulator::start(&dir.path().join("kvs"), &[]);
    let (secrets, args) = setup(dir.path(), &camera.url, &request("RTSP_URI", OPEN_WINDOW));
    let offset = dir.path().join("faketime-offset");
    set_offset(&offset, ERAS[0]);
    let mut env = upload_env(&emulator.url());
    env.extend(camera_agent::env(&[
        ("LD_PRELOAD", lib.to_str().unwrap()),
        ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
        ("FAKETIME_NO_CACHE", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]));
    let mut agent = Agent::new(
        &dir.path().join("agent"),
        &settings(&secrets, None, ""),
        &args,
        &env,
    );
    agent.start();
    let db = agent.catalog();
    wait_until_async("a fragment acknowledged", Duration::from_secs(60), || {
        snapshot(&db, STREAM).uploaded() > 0
    })
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", agent.log_tail()));
    let mut steps = Vec::new();
    for &ms in &ERAS[1..] {
        // The length of an era, not a wait for an event.
        tokio::time::sleep(ERA).await;
        set_offset(&offset, ms);
        steps.push(now_ms());
    }
    tokio::time::sleep(ERA).await;
    let stop_ms = now_ms();
    let (status, _) = agent.stop().unwrap();
    assert!(status.success(), "{status:?}:\n{}", agent.log_tail());
    let log = agent.log_text();
    assert_eq!(
        log.matches("the system clock was stepped").count(),
        2,
        "{log}"
    );

    // The era each segment was recorded in, from its start: the eras' spans of time are
    // minutes apart.
    let catalog = Catalog::open_read_only(&db).unwrap();
    let era_of = |ms: i64| {
        ERAS.iter()
            .position(|o| (t0 + o - 2000..=stop_ms + o + 2000).contains(&ms))
            .unwrap_or_else(|| panic!("{ms} is in no era"))
    };
    let segs = catalog.segments(Some(STREAM)).unwrap();
    let eras: Vec<usize> = segs.iter().map(|s| era_of(s.start_ms)).collect();
    assert!(
        eras.windows(2).all(|w| w[0] <= w[1]) && eras[0] == 0 && eras.contains(&1),
        "segments in recording order, by era: {eras:?}"
    );
    assert_eq!(*eras.last().unwrap(), 2, "{eras:?}");
    // Each step is taken at the next key frame (one a second), on the new time.
    let mut taken = Vec::new();
    for (k, step) in steps.iter().enumerate() {
        let first = segs[eras.iter().position(|e| *e == k + 1).unwrap()].start_ms;
        let real = first - ERAS[k + 1];
        assert!(
            (step - 100..=step + 1500).contains(&real),
            "era {}: first frame at {} ms after the step",
            k + 1,
            real - step
        );
        taken.push(real - step);
    }
    // No file spans a step: frames evenly spaced in each.
    let read = read_segments(&catalog, &agent.rec, STREAM);
    for s in &read {
        s.assert_evenly_spaced(20..=80);
    }
    let last = read
        .last()
        .unwrap()
        .clusters
        .last()
        .unwrap()
        .last()
        .unwrap();
    let off = last.timestamp_ms - ERAS[2] - stop_ms;
    assert!(
        off.abs() <= 500,
        "the last frame {off} ms from the stepped clock"
    );

    // Uploads: no error, every fragment once, each on its era's time.
    let index = emulator.index_settled(STREAM).await;
    let errors = index["errors"].as_array().unwrap();
    assert!(errors.is_empty(), "emulator errors: {errors:?}");
    let mut at_emulator = HashMap::new();
    for f in index["fragments"].as_array().unwrap() {
        let tc = f["timecode"].as_i64().unwrap();
        assert!(at_emulator.insert(tc, f).is_none(), "{tc} persisted twice");
        let produced = f["producer_timestamp_ms"].as_i64().unwrap();
        let real = produced - ERAS[era_of(produced)];
        let late = f["received_ms"].as_i64().unwrap() - real - f["duration_ms"].as_i64().unwrap();
        assert!(
            (-500..=5000).contains(&late),
            "fragment {tc} arrived {late} ms after its end by the real clock"
        );
    }
    let snap = snapshot(&db, STREAM);
    for f in snap.frags.values() {
        let end_real = f.timecode_ms + f.duration_ms - ERAS[era_of(f.timecode_ms)];
        if end_real < stop_ms - 2000 {
            assert!(
                at_emulator.contains_key(&f.timecode_ms),
                "{f:?} committed before the stop, never persisted"
            );
        }
    }
    let sessions = index["session_log"].as_array().unwrap();
    assert!(
        sessions.len() >= 2,
        "the step back needs a session: {sessions:?}"
    );
    sessions.iter().for_each(assert_ended_after_last_ack);
    println!(
        "{} segments by era {eras:?}, each step taken {taken:?} ms after it; {} fragments in \
         {} sessions; the last frame {off} ms from the stepped clock",
        segs.len(),
        at_emulator.len(),
        sessions.len()
    );

    let check = agent.check(false);
    assert!(check.ok && check.agree, "check: {}", check.output);
}
