//! Shared by the recorder integration tests: required tools, the GStreamer RTSP test camera
//! (and the hostile ones of tests/rtsp/hostile.py), and readers for what the recorder wrote.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use kvs_edge_agent::catalog::Catalog;
use kvs_edge_agent::media::mkv::{Frame, SegmentReader, TrackInfo};

/// Whether `tool` can run; without it a test is skipped with a notice, or fails under CI.
pub fn require(tool: &str, probe: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is required under CI (see tests/ci.sh for the Debian packages)");
        }
        eprintln!("NOTICE: {tool} not available; skipping");
    }
    ok
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn sample_clip() -> PathBuf {
    repo_root().join("samples/sample-h264-640x360-gop1s.h264")
}

/// Whether the GStreamer RTSP server and the elements `elements` are installed.
pub fn require_gstreamer(elements: &[&str]) -> bool {
    if !require(
        "/usr/bin/python3",
        &[
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer",
        ],
    ) {
        return false;
    }
    elements
        .iter()
        .all(|e| require("gst-inspect-1.0", &["--exists", e]))
}

/// The test camera (tests/rtsp/server.py); killed on drop.
pub struct RtspServer {
    pub child: Child,
    pub url: String,
    pub port: u16,
    stdout: BufReader<ChildStdout>,
}

impl RtspServer {
    /// Starts the server and waits for its READY line.
    pub fn start(args: &[&str]) -> RtspServer {
        Self::start_script("server.py", args)
    }

    /// Starts another camera of tests/rtsp/ (e.g. hostile.py) that prints the same READY line.
    pub fn start_script(script: &str, args: &[&str]) -> RtspServer {
        let mut child = Command::new("/usr/bin/python3")
            .arg(repo_root().join("tests/rtsp").join(script))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/rtsp/server.py");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // Owned from here, so a failed wait below still kills and reaps it.
        let mut server = RtspServer {
            child,
            url: String::new(),
            port: 0,
            stdout,
        };
        let mut line = String::new();
        loop {
            line.clear();
            let n = server.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "RTSP server exited before READY");
            if let Some(url) = line.trim().strip_prefix("READY ") {
                server.url = url.to_owned();
                server.port = url
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse().ok())
                    .expect("a port in the READY line");
                return server;
            }
        }
    }

    /// The URL with credentials.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        self.url
            .replacen("rtsp://", &format!("rtsp://{user}:{password}@"), 1)
    }

    /// Drops every client (SIGUSR1) and waits for the server to say so.
    pub fn drop_clients(&mut self) {
        signal(self.child.id(), "-USR1");
        let mut line = String::new();
        while self.stdout.read_line(&mut line).unwrap() > 0 && !line.contains("DROPPED") {
            line.clear();
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Polls `cond` (which reads state, e.g. the catalog) until it holds; panics after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Total fragments and frames the catalog indexes for `stream`.
pub fn catalog_totals(catalog: &Catalog, stream: &str) -> (usize, u64) {
    let mut fragments = 0;
    let mut frames = 0;
    for s in catalog.segments(Some(stream)).unwrap() {
        for f in catalog.fragments(s.id).unwrap() {
            fragments += 1;
            frames += u64::from(f.frame_count);
        }
    }
    (fragments, frames)
}

/// One segment file as read back.
pub struct ReadSegment {
    pub path: PathBuf,
    pub track: TrackInfo,
    /// Frames of each cluster.
    pub clusters: Vec<Vec<Frame>>,
}

/// Every segment of `stream` in catalog order, read with the project's reader.
pub fn read_segments(catalog: &Catalog, dir: &Path, stream: &str) -> Vec<ReadSegment> {
    catalog
        .segments(Some(stream))
        .unwrap()
        .into_iter()
        .map(|s| {
            let path = dir.join(&s.path);
            let mut r = SegmentReader::new(std::fs::File::open(&path).unwrap()).unwrap();
            let track = r.header().track.clone();
            let mut clusters = Vec::new();
            while let Some(c) = r.next_cluster().unwrap() {
                clusters.push(c.frames);
            }
            ReadSegment {
                path,
                track,
                clusters,
            }
        })
        .collect()
}

/// `ffprobe`'s codec name and decoded frame count for a file; panics if it rejects the file.
pub fn ffprobe(path: &Path) -> (String, u64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffprobe rejects {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.trim();
    let (codec, frames) = line
        .split_once(',')
        .unwrap_or_else(|| panic!("ffprobe said {line:?}"));
    (codec.to_owned(), frames.parse().unwrap())
}

/// `mkvinfo` accepts the file and sees at least one cluster.
pub fn mkvinfo_ok(path: &Path) {
    let out = Command::new("mkvinfo").arg(path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mkvinfo rejects {}: {text}",
        path.display()
    );
    assert!(
        text.contains("Cluster"),
        "mkvinfo sees no cluster in {}",
        path.display()
    );
    assert!(!text.to_lowercase().contains("error"), "mkvinfo: {text}");
}

/// The full-decode check: exits non-zero on any structural or bitstream error.
pub fn ffmpeg_decodes(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-err_detect", "explode", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg cannot decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
