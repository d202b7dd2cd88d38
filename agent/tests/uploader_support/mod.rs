//! Shared by the uploader tests: the KVS emulator as a child process, a file-based recording
//! helper (sample clip -> segments in the catalog), and an uploader wired to the emulator.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use kvs_edge_agent::catalog::{Catalog, FragmentRow, NewFragment, NewSegment};
use kvs_edge_agent::clock::RealClock;
use kvs_edge_agent::media::h264::{self, AvcConfig};
use kvs_edge_agent::media::mkv::{self, Frame, TrackInfo};
use kvs_edge_agent::uploader::{Options, Uploader};
use serde_json::Value;

pub const ACCESS_KEY: &str = "AKIDUPLOADERTEST";
pub const SECRET_KEY: &str = "uploader/test/secret+key";
pub const REGION: &str = "us-east-1";

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../samples/sample-h264-640x360-gop1s.h264"
);
const EMULATOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/kvs_emulator/kvs_emulator.py"
);
const FRAME_MS: i64 = 40;

/// Whether `name` is on PATH; without it, fail under CI and skip (with a notice) elsewhere.
pub fn have_tool(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()));
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is required when CI is set"
        );
        eprintln!("notice: {name} not found, skipping its check");
    }
    found
}

/// The emulator process; killed when dropped.
pub struct Emulator {
    child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    http: reqwest::Client,
}

impl Emulator {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Emulator {
        let mut child = Command::new("python3")
            .arg(EMULATOR)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .args(["--region", REGION])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the emulator (python3 with botocore)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("emulator stdout");
        let port = line
            .trim()
            .strip_prefix("KVS_EMULATOR_PORT=")
            .unwrap_or_else(|| {
                panic!(
                    "the KVS emulator did not start ({line:?}); it needs python3 with botocore \
                     (python3 -m pip install botocore)"
                )
            })
            .parse()
            .expect("port");
        Emulator {
            child,
            port,
            data_dir: data_dir.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn admin(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/_admin/{path}", self.url()))
            .body(body.to_string())
            .header("content-length", body.to_string().len())
            .send()
            .await
            .expect("admin request");
        assert!(r.status().is_success(), "admin {path}: {}", r.status());
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }

    /// The stream's persisted fragments, as the emulator indexes them.
    pub async fn index(&self, stream: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/_admin/streams/{stream}", self.url()))
            .send()
            .await
            .expect("index request");
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return serde_json::json!({"fragments": [], "files": [], "errors": []});
        }
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }

    pub async fn fault(&self, stream: &str, fault: Value) {
        self.admin(
            &format!("streams/{stream}/faults"),
            serde_json::json!({ "faults": [fault] }),
        )
        .await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sample clip as frames (40 ms apart from 0) and its track.
pub fn sample() -> (TrackInfo, Vec<Frame>) {
    let data = std::fs::read(SAMPLE).expect("sample clip");
    let aus = h264::access_units(&data);
    let (sps, pps) = aus[0].parameter_sets();
    let config = AvcConfig::from_parameter_sets(sps.unwrap(), pps.unwrap()).unwrap();
    let track = config.track_info().unwrap();
    let frames = aus
        .iter()
        .enumerate()
        .map(|(i, au)| Frame {
            timestamp_ms: FRAME_MS * i as i64,
            key: au.is_key(),
            data: h264::frame_payload(au.nals.iter().map(Vec::as_slice), &config),
        })
        .collect();
    (track, frames)
}

/// What [`record`] wrote.
pub struct Recording {
    pub fragments: Vec<FragmentRow>,
    /// Cluster bytes of each fragment, in order.
    pub clusters: Vec<Vec<u8>>,
    pub frames: usize,
}

/// Records the sample clip, looped, into `segments` segment files of `per_segment` 1-second
/// fragments (GOP 1 s) starting at `t0_ms`, as the recorder would: header, then each cluster
/// written before its row. `codec_private_variant` changes the CodecPrivate from the given
/// segment on (to test that a change opens a new request).
pub fn record(
    catalog: &Catalog,
    recording_dir: &Path,
    stream: &str,
    t0_ms: i64,
    segments: usize,
    per_segment: usize,
    codec_change_at_segment: Option<usize>,
) -> Recording {
    record_padded(
        catalog,
        recording_dir,
        stream,
        t0_ms,
        segments,
        per_segment,
        codec_change_at_segment,
        0,
    )
}

/// [`record`] with `pad` bytes of H.264 filler data (NAL type 12, which decoders skip) added to
/// every frame, for large fragments in benchmarks.
#[allow(clippy::too_many_arguments)]
pub fn record_padded(
    catalog: &Catalog,
    recording_dir: &Path,
    stream: &str,
    t0_ms: i64,
    segments: usize,
    per_segment: usize,
    codec_change_at_segment: Option<usize>,
    pad: usize,
) -> Recording {
    let (track, mut frames) = sample();
    if pad > 0 {
        let mut filler = vec![0x0c];
        filler.resize(pad - 1, 0xff);
        filler.push(0x80);
        for f in &mut frames {
            f.data
                .extend_from_slice(&(filler.len() as u32).to_be_bytes());
            f.data.extend_from_slice(&filler);
        }
    }
    let gops: Vec<&[Frame]> = frames.chunk_by(|_, b| !b.key).collect();
    assert_eq!(gops.len(), 6, "the sample has six 1-second GOPs");
    let dir = recording_dir.join(stream);
    std::fs::create_dir_all(&dir).unwrap();
    let mut clusters = Vec::new();
    let mut frame_count = 0;
    let mut t = t0_ms;
    for s in 0..segments {
        let mut track = track.clone();
        if codec_change_at_segment.is_some_and(|c| s >= c) {
            // Same SPS/PPS, a different (still valid) record: AVCC level byte changed.
            track.codec_private[3] ^= 0x01;
        }
        let header = mkv::segment_header(&track, [s as u8 + 1; 16]);
        let rel = format!("{stream}/{t}.mkv");
        let path = recording_dir.join(&rel);
        let mut file = header.clone();
        let seg = catalog
            .insert_segment(&NewSegment {
                stream_name: stream.into(),
                path: rel,
                codec_id: track.codec.codec_id().into(),
                codec_private: track.codec_private.clone(),
                width: track.width,
                height: track.height,
                header_size: header.len() as u64,
                start_ms: t,
            })
            .unwrap();
        std::fs::write(&path, &file).unwrap();
        for f in 0..per_segment {
            let gop = gops[f % gops.len()];
            let base = t;
            let fr: Vec<Frame> = gop
                .iter()
                .enumerate()
                .map(|(i, fr)| Frame {
                    timestamp_ms: base + FRAME_MS * i as i64,
                    key: fr.key,
                    data: fr.data.clone(),
                })
                .collect();
            let cluster = mkv::cluster(&fr).unwrap();
            let offset = file.len() as u64;
            file.extend_from_slice(&cluster);
            std::fs::write(&path, &file).unwrap();
            catalog
                .add_fragment(
                    seg,
                    &NewFragment {
                        offset,
                        size: cluster.len() as u64,
                        timecode_ms: base,
                        duration_ms: FRAME_MS * fr.len() as i64,
                        frame_count: fr.len() as u32,
                        key_frame_count: 1,
                    },
                )
                .unwrap();
            frame_count += fr.len();
            clusters.push(cluster);
            t = base + FRAME_MS * fr.len() as i64;
        }
        catalog.close_segment(seg).unwrap();
    }
    let mut fragments = Vec::new();
    for seg in catalog.segments(Some(stream)).unwrap() {
        fragments.extend(catalog.fragments(seg.id).unwrap());
    }
    Recording {
        fragments,
        clusters,
        frames: frame_count,
    }
}

/// Stores an edge configuration for `stream` (job status rows belong to one).
pub fn configure(catalog: &Catalog, stream: &str) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seed-example-verbatim.json"
    ))
    .unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("StreamARN");
    o.insert("StreamName".into(), Value::String(stream.into()));
    let req = serde_json::from_value(v).unwrap();
    catalog
        .put_config(
            &req,
            kvs_edge_agent::edge_config::SyncStatus::InSync,
            jiff::Timestamp::now(),
        )
        .unwrap();
}

/// An hour ago: recent enough for the emulator's timestamp checks, old like a backlog.
pub fn an_hour_ago_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond() - 3_600_000
}

/// Options for tests: short timeouts so faults resolve quickly.
pub fn test_options() -> Options {
    Options {
        ack_timeout: std::time::Duration::from_secs(10),
        ack_grace: std::time::Duration::from_secs(2),
        backoff_min: std::time::Duration::from_millis(100),
        backoff_max: std::time::Duration::from_millis(400),
        poll_interval: std::time::Duration::from_millis(200),
        ..Options::default()
    }
}

/// An uploader using static test credentials and the emulator as the Kinesis Video endpoint.
pub async fn uploader(
    catalog: Arc<Catalog>,
    recording_dir: &Path,
    emulator: &Emulator,
    options: Options,
) -> Uploader {
    uploader_with_clock(
        catalog,
        recording_dir,
        emulator,
        options,
        Arc::new(RealClock),
    )
    .await
}

pub async fn uploader_with_clock(
    catalog: Arc<Catalog>,
    recording_dir: &Path,
    emulator: &Emulator,
    options: Options,
    clock: Arc<dyn kvs_edge_agent::clock::Clock>,
) -> Uploader {
    let creds = aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
    uploader_with(catalog, recording_dir, emulator, options, clock, creds).await
}

/// An uploader with the given clock and credentials.
pub async fn uploader_with(
    catalog: Arc<Catalog>,
    recording_dir: &Path,
    emulator: &Emulator,
    options: Options,
    clock: Arc<dyn kvs_edge_agent::clock::Clock>,
    creds: aws_credential_types::Credentials,
) -> Uploader {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(creds)
        .endpoint_url(emulator.url())
        .load()
        .await;
    Uploader::new(&sdk, catalog, recording_dir.to_owned(), clock, options).unwrap()
}

/// The fragments of a stream as the catalog holds them now, oldest first.
pub fn catalog_fragments(catalog: &Catalog, stream: &str) -> Vec<FragmentRow> {
    let mut out = Vec::new();
    for seg in catalog.segments(Some(stream)).unwrap() {
        out.extend(catalog.fragments(seg.id).unwrap());
    }
    out
}

/// The persisted fragments from an emulator index: (timecode, fragment number, sha256).
pub fn persisted(index: &Value) -> Vec<(i64, String, String)> {
    index["fragments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["timecode"].as_i64().unwrap(),
                f["fragment_number"].as_str().unwrap().to_owned(),
                f["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    // sha256sum is part of coreutils; avoids a hashing crate for tests.
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// ffprobe's frame count and format name of a file.
pub fn ffprobe_frames(path: &Path) -> (usize, String) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-show_streams",
            "-show_format",
        ])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let frames = v["streams"][0]["nb_read_frames"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (
        frames,
        v["format"]["format_name"].as_str().unwrap().to_owned(),
    )
}
