//! End to end, black box: a real RTSP camera (GStreamer, tests/rtsp/server.py) recorded by
//! `kvs-edge-agent record`, uploaded by `kvs-edge-agent upload` to the KVS ingest emulator;
//! the emulator's stored media must be exactly the recorded fragments (count, timecodes,
//! bytes) and play in ffprobe/ffmpeg.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/kvs.rs"]
mod kvs;
#[path = "support/mkv.rs"]
mod mkv;
#[path = "support/peer.rs"]
mod peer;
#[path = "support/process.rs"]
mod process;
#[path = "support/recording.rs"]
mod recording;
#[path = "support/rtsp.rs"]
mod rtsp;
#[path = "support/sample.rs"]
mod sample;

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::process::Command;

use kvs::{ACCESS_KEY, Emulator, REGION, SECRET_KEY, persisted, sha256_hex};
use kvs_edge_agent::catalog::{Catalog, UploadState};
use mkv::{Probe, ffmpeg_decodes, probe};
use peer::require;
use recording::catalog_fragments;
use rtsp::{RtspServer, require_gstreamer};

const FRAMES: u64 = 250; // 10 s at 25 fps, a key frame each second

fn agent() -> Command {
    Command::new(bin::BIN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_recording_uploads_exactly_and_plays() {
    if !require_gstreamer(&["x264enc", "rtph264pay"])
        || !require("ffprobe", &["-version"])
        || !require("ffmpeg", &["-version"])
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let recordings = tmp.path().join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    let server = RtspServer::start(&["--source", "clip", "--frames", &FRAMES.to_string()]);

    // Record the whole clip; the stall timeout flushes the last fragment after it ends.
    let out = tokio::task::spawn_blocking({
        let mut c = agent();
        c.args(["record", "--uri", &server.url, "--stream", "cam"])
            .arg("--recording-dir")
            .arg(&recordings)
            .args(["--duration", "14s", "--stall-timeout-secs", "2"])
            .args(["--segment-duration-secs", "4"])
            .env("HOME", tmp.path());
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "record: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);

    let catalog = Catalog::open(&recordings.join(kvs_edge_agent::catalog::FILE_NAME)).unwrap();
    let rows = catalog_fragments(&catalog, "cam");
    let frames: u64 = rows.iter().map(|r| u64::from(r.frame_count)).sum();
    // After the clip ends the recorder reconnects and the camera plays it again, so there may
    // be more; what matters is that the upload carries exactly what was recorded.
    assert!(
        frames >= FRAMES,
        "the recorder kept the clip: {frames} frames"
    );
    let segments = catalog.segments(Some("cam")).unwrap();
    assert!(segments.len() >= 2, "the upload spans segment files");
    let paths: HashMap<i64, std::path::PathBuf> = segments
        .iter()
        .map(|s| (s.id, recordings.join(&s.path)))
        .collect();

    let emulator = Emulator::start(&tmp.path().join("emulator"), &[]);
    let out = tokio::task::spawn_blocking({
        let mut c = agent();
        c.args(["upload", "--stream", "cam", "--until-empty"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", tmp.path())
            .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", &recordings)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL_KINESIS_VIDEO", emulator.url());
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "upload: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let index = emulator.index("cam").await;
    let stored = persisted(&index);
    assert_eq!(stored.len(), rows.len(), "fragment count");
    for ((tc, number, sha), row) in stored.iter().zip(&rows) {
        assert_eq!(*tc, row.timecode_ms, "timecodes in order");
        let mut f = std::fs::File::open(&paths[&row.segment_id]).unwrap();
        f.seek(SeekFrom::Start(row.offset)).unwrap();
        let mut cluster = vec![0; row.size as usize];
        f.read_exact(&mut cluster).unwrap();
        assert_eq!(*sha, sha256_hex(&cluster), "bytes of fragment at {tc}");
        let now = catalog_fragments(&catalog, "cam");
        let row = now.iter().find(|r| r.id == row.id).unwrap();
        assert_eq!(row.upload_state, UploadState::Uploaded);
        assert_eq!(row.fragment_number.as_deref(), Some(number.as_str()));
    }

    let media = emulator.data_dir.join("cam").join("media-0.mkv");
    assert_eq!(index["files"].as_array().unwrap().len(), 1);
    let Probe {
        frames: probed,
        format,
        ..
    } = probe(&media).unwrap();
    assert_eq!(probed, frames);
    assert!(format.contains("matroska"));
    ffmpeg_decodes(&media);
}
