//! Export and the page, against the daemon serving two minutes recorded before it started:
//!
//! - a 30 s range as MP4 and as Matroska, over HTTP and from `kvs-edge-agent export`: ffprobe
//!   reports H.264 with the range's duration (within a fragment) and timestamps 40 ms apart
//!   throughout, `ffmpeg -xerror` decodes it, mkvmerge accepts the Matroska; the verb writes
//!   the bytes the endpoint serves;
//! - the export's bad inputs: a 4xx naming each;
//! - the page in a real browser (Debian's chromium, driven by chromium-driver over WebDriver):
//!   the stream appears, its timeline shows the recorded span, and a click on it plays that
//!   minute (the `<video>`'s currentTime advances).

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
#[path = "support/mkv.rs"]
mod mkv_tools;
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
#[path = "support/sample.rs"]
mod sample;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agent::Agent;
use camera_agent::*;
use http::get;
use kvs_edge_agent::catalog::Catalog;
use recording::{Layout, record_long};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

/// Two minutes in 2 s fragments, 30 to a segment.
const LAYOUT: Layout = Layout {
    segments: 2,
    per_segment: 30,
    gops_per_fragment: 2,
};

/// ffprobe's packets' pts (seconds) and the container's duration.
fn packets(path: &Path) -> (Vec<f64>, f64, String) {
    let (v, _) = mkv_tools::ffprobe_json(
        path,
        &[
            "-show_entries",
            "packet=pts_time:stream=codec_name:format=duration",
            "-select_streams",
            "v:0",
        ],
    )
    .unwrap();
    let pts = v["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pts_time"].as_str().unwrap().parse::<f64>().unwrap())
        .collect();
    let duration = v["format"]["duration"]
        .as_str()
        .map_or(f64::NAN, |d| d.parse().unwrap());
    let codec = v["streams"][0]["codec_name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (pts, duration, codec)
}

/// The file is H.264 of `want_s` seconds, every frame 40 ms after the one before.
fn check_media(path: &Path, want_s: f64) {
    let (pts, duration, codec) = packets(path);
    assert_eq!(codec, "h264", "{}", path.display());
    assert!(
        (duration - want_s).abs() < 0.1,
        "{}: {duration} s, want {want_s}",
        path.display()
    );
    assert_eq!(pts.len() as f64, want_s * 25.0, "{}", path.display());
    for w in pts.windows(2) {
        assert!(
            ((w[1] - w[0]) - 0.04).abs() < 0.0015,
            "{}: a jump from {} to {}",
            path.display(),
            w[0],
            w[1]
        );
    }
    mkv_tools::ffmpeg_decodes(path);
}

/// A WebDriver command: JSON in, JSON out.
async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// A WebDriver session of chromium-driver, headless.
struct Browser {
    http: reqwest::Client,
    url: String,
    _driver: process::Killed,
}

impl Browser {
    async fn start(dir: &Path) -> Browser {
        let port = net::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.join("chromedriver.log").display()
            ))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver");
        let driver = process::Killed(driver);
        assert!(net::wait_listening(port, T), "chromedriver did not listen");
        let http = reqwest::Client::new();
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--autoplay-policy=no-user-gesture-required",
                     format!("--user-data-dir={}", dir.join("chromium").display())]
        }}}});
        let r = post(&http, &format!("http://127.0.0.1:{port}/session"), &caps).await;
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_owned();
        Browser {
            http,
            url: format!("http://127.0.0.1:{port}/session/{id}"),
            _driver: driver,
        }
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        post(&self.http, &format!("{}/{path}", self.url), &body).await["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.command("url", json!({ "url": url })).await;
    }

    /// Runs `script` in the page and returns what it returns.
    async fn eval(&self, script: &str) -> Value {
        self.command("execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    /// Polls `script` until it returns true.
    async fn wait(&self, what: &str, script: &str) {
        let deadline = Instant::now() + T;
        while self.eval(script).await != Value::Bool(true) {
            assert!(Instant::now() < deadline, "the page never showed {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_and_the_page_play_what_was_recorded() {
    if !peer::on_path("ffprobe") || !peer::on_path("mkvmerge") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("rtsp://127.0.0.1:{}/none", net::free_port());
    let (secrets, args) = setup(dir.path(), &dead, &request("RTSP_URI", ""));
    let port = net::free_port();
    let mut agent = Agent::new(
        &dir.path().join("agent"),
        &settings(
            &secrets,
            None,
            &format!("http:\n  listen: 127.0.0.1:{port}\n  max_export_secs: 60\n"),
        ),
        &args,
        &[],
    );
    let now = jiff::Timestamp::now().as_millisecond();
    let t0 = (now - 10 * 60_000) / 1000 * 1000;
    {
        std::fs::create_dir_all(&agent.rec).unwrap();
        let catalog = Catalog::open(&agent.catalog()).unwrap();
        record_long(&catalog, &agent.rec, STREAM, t0, LAYOUT);
    }
    agent.start();
    assert!(net::wait_listening(port, T), "{}", agent.log_tail());
    let base = format!("http://127.0.0.1:{port}");

    // 30 s from the middle of a fragment: the fragments that overlap it are 32 s.
    let (from, to) = (t0 / 1000 + 31, t0 / 1000 + 61);
    let range = format!("start={from}&end={to}");
    let mut served = Vec::new();
    for ext in ["mp4", "mkv"] {
        let r = get(
            &format!("{base}/api/v1/streams/{STREAM}/export.{ext}?{range}"),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{ext}: {}", r.text());
        let want_type = if ext == "mp4" {
            "video/mp4"
        } else {
            "video/x-matroska"
        };
        assert_eq!(r.content_type, want_type);
        let path = dir.path().join(format!("served.{ext}"));
        std::fs::write(&path, &r.body).unwrap();
        check_media(&path, 32.0);
        served.push(r.body);
    }
    let (json, status) = mkv_tools::mkvmerge_json(&dir.path().join("served.mkv")).unwrap();
    assert!(status.success(), "mkvmerge: {json}");

    // The verb writes what the endpoint serves (the MP4 byte for byte; the Matroska differs
    // only in its random SegmentUID).
    for (ext, body) in ["mp4", "mkv"].iter().zip(&served) {
        let out_path = dir.path().join(format!("verb.{ext}"));
        let out = Command::new(bin::BIN)
            .args(["export", "--config"])
            .arg(&agent.config)
            .args(["--stream", STREAM, "--from", &from.to_string()])
            .args(["--to", &to.to_string(), "-o"])
            .arg(&out_path)
            .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", &agent.rec)
            .output()
            .unwrap();
        process::assert_success(&out);
        let written = std::fs::read(&out_path).unwrap();
        assert_eq!(written.len(), body.len(), "{ext}");
        if *ext == "mp4" {
            assert!(
                written == *body,
                "the verb's MP4 differs from the endpoint's"
            );
        }
        check_media(&out_path, 32.0);
    }
    let out = Command::new(bin::BIN)
        .args(["export", "--config"])
        .arg(&agent.config)
        .args(["--stream", STREAM, "--from", "100", "--to", "200", "-o"])
        .arg(dir.path().join("none.avi"))
        .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", &agent.rec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(".mp4 or .mkv"));

    // Bad inputs.
    let export = format!("/api/v1/streams/{STREAM}/export.mp4");
    let bad: Vec<(String, u16, &str)> = vec![
        (
            format!("{export}?start={from}"),
            400,
            "start and end are required",
        ),
        (
            format!("{export}?start={from}&end={}", from + 61),
            400,
            "more than the 60 s",
        ),
        (
            format!("{export}?start=100&end=110"),
            404,
            "no media of cam",
        ),
        (
            format!("{export}?start={to}&end={from}"),
            400,
            "not after start",
        ),
        (
            format!("/api/v1/streams/other/export.mkv?{range}"),
            404,
            "no stream",
        ),
        (
            format!("/api/v1/streams/a%2Fb/export.mp4?{range}"),
            400,
            "not a stream name",
        ),
    ];
    http::assert_refused(&base, &bad).await;

    // The page in a real browser.
    if peer::on_path("chromedriver") && peer::on_path("chromium") {
        let browser = Browser::start(dir.path()).await;
        browser.open(&format!("{base}/")).await;
        browser
            .wait(
                "the stream and its recorded span",
                &format!(
                    "const s = document.querySelector('[data-stream=\"{STREAM}\"] .timeline');\
                     return !!s && s.querySelectorAll('div').length > 0;"
                ),
            )
            .await;
        let shown = browser
            .eval(&format!(
                "return document.querySelector('[data-stream=\"{STREAM}\"]').textContent;"
            ))
            .await;
        assert!(shown.as_str().unwrap().contains(STREAM), "{shown}");
        // A click in the middle of the recorded span plays its minute.
        browser
            .eval(&format!(
                "const line = document.querySelector('[data-stream=\"{STREAM}\"] .timeline');\
                 const bar = line.querySelector('div').getBoundingClientRect();\
                 line.dispatchEvent(new MouseEvent('click', {{bubbles: true, \
                   clientX: bar.left + bar.width / 2, clientY: bar.top + bar.height / 2}}));\
                 return true;"
            ))
            .await;
        browser
            .wait(
                "the clicked minute playing",
                &format!(
                    "const v = document.querySelector('[data-stream=\"{STREAM}\"] video');\
                     return !!v && !v.hidden && v.currentTime > 1.0;"
                ),
            )
            .await;
        let src = browser
            .eval(&format!(
                "return document.querySelector('[data-stream=\"{STREAM}\"] video').currentSrc;"
            ))
            .await;
        assert!(src.as_str().unwrap().contains("export.mp4"), "{src}");
    }
    agent.stop_cleanly();
}
