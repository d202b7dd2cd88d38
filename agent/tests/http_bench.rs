//! The HTTP server's benchmark (bench/http/run.sh runs it; ignored in the normal test run).
//!
//! 1. Export speed: an hour of 1080p25 4 Mbit/s H.264 (a minute encoded once by ffmpeg and laid
//!    down sixty times, 2 s fragments in 60 s segments) exported to MP4 and to Matroska by
//!    `kvs-edge-agent export`, and to MP4 over HTTP by the daemon (curl reading it), next to
//!    `ffmpeg -f concat -c copy` of the very same segment files. Wall time, CPU seconds and peak
//!    RSS of each process.
//! 2. `/api/v1/streams` latency with 64 configured streams (one holding the hour): 200 requests
//!    in a row, median and 99th percentile.
//! 3. Idle RSS of the daemon with no stream, the HTTP server on (after 50 requests) and off.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/net.rs"]
mod net;
#[path = "support/poll.rs"]
mod poll;
#[path = "support/process.rs"]
mod process;
#[path = "support/recording.rs"]
mod recording;
#[path = "support/sample.rs"]
mod sample;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvs_edge_agent::catalog::Catalog;
use kvs_edge_agent::media::h264::{self, AvcConfig};
use kvs_edge_agent::media::mkv::Frame;
use recording::{Layout, write_gops};

const FRAME_MS: i64 = 40;
const MINUTES: usize = 60;

/// Wall seconds, CPU seconds (user + system) and peak RSS (MiB) of a child run to its end.
struct Cost {
    wall: f64,
    cpu: f64,
    maxrss_mib: f64,
}

/// Runs `cmd` under GNU time, which forks it from its own small process: a child forked
/// from this test would count the test's memory in its peak RSS.
fn run(cmd: &Command) -> Cost {
    let report = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new("/usr/bin/time")
        .args(["-f", "%e %U %S %M", "-o"])
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(
            cmd.get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .stdout(Stdio::null())
        .status()
        .expect("/usr/bin/time");
    assert!(status.success(), "{cmd:?} failed");
    let text = std::fs::read_to_string(report.path()).unwrap();
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    Cost {
        wall: v[0],
        cpu: v[1] + v[2],
        maxrss_mib: v[3] / 1024.0,
    }
}

/// A minute of 1080p25 4 Mbit/s H.264, 2 s GOPs, no B-frames (cached across runs).
fn clip() -> PathBuf {
    let cache =
        PathBuf::from(std::env::var("BENCH_CACHE").unwrap_or("/tmp/kvs-bench-cache".into()));
    std::fs::create_dir_all(&cache).unwrap();
    let path = cache.join("1080p25-4M-60s.h264");
    if !path.exists() {
        let tmp = cache.join("1080p25-4M-60s.tmp.h264");
        let ok = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=1920x1080:rate=25")
            .args([
                "-t", "60", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "4M",
            ])
            .args(["-maxrate", "4M", "-bufsize", "8M", "-g", "50", "-bf", "0"])
            .args(["-pix_fmt", "yuv420p", "-f", "h264"])
            .arg(&tmp)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ffmpeg could not encode the clip");
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// An hour of the clip in `rec`, indexed by the catalog: 60 segments of 30 two-second fragments;
/// their bytes and files.
fn lay_down(catalog: &Catalog, rec: &Path, stream: &str, t0: i64) -> (u64, Vec<PathBuf>) {
    let data = std::fs::read(clip()).unwrap();
    let aus = h264::access_units(&data);
    let (sps, pps) = aus[0].parameter_sets();
    let config = AvcConfig::from_parameter_sets(sps.unwrap(), pps.unwrap()).unwrap();
    let track = config.track_info().unwrap();
    let frames: Vec<Frame> = aus
        .iter()
        .map(|au| Frame {
            timestamp_ms: 0,
            key: au.is_key(),
            data: h264::frame_payload(au.nals.iter().map(Vec::as_slice), &config),
        })
        .collect();
    assert_eq!(frames.len(), 1500);
    let gops: Vec<&[Frame]> = frames.chunk_by(|_, b| !b.key).collect();
    let layout = Layout {
        segments: MINUTES,
        per_segment: gops.len(),
        gops_per_fragment: 1,
    };
    write_gops(
        catalog,
        rec,
        stream,
        (t0, FRAME_MS),
        &track,
        &gops,
        layout,
        None,
    );
    let files: Vec<PathBuf> = catalog
        .segments(Some(stream))
        .unwrap()
        .iter()
        .map(|s| rec.join(&s.path))
        .collect();
    let bytes = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    (bytes, files)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// The daemon in `dir` with `yaml`, `--edge-config` for each of `configs`; started, with the
/// HTTP server (when on) answering.
fn daemon(dir: &Path, rec: &Path, yaml: &str, configs: &[PathBuf]) -> process::Killed {
    std::fs::write(dir.join("agent.yaml"), yaml).unwrap();
    let mut cmd = Command::new(bin::BIN);
    cmd.arg("run").arg("--config").arg(dir.join("agent.yaml"));
    for c in configs {
        cmd.arg("--edge-config").arg(c);
    }
    let child = cmd
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", rec)
        .env("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", dir.join("log"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    process::Killed(child)
}

fn config(dir: &Path, stream: &str) -> PathBuf {
    let path = dir.join(format!("{stream}.json"));
    let dead = format!("rtsp://127.0.0.1:{}/none", net::free_port());
    let secret = format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{stream}");
    std::fs::write(
        dir.join(format!("{stream}.secret")),
        format!("{secret}: {dead}\n"),
    )
    .unwrap();
    std::fs::write(
        &path,
        format!(
            r#"{{"StreamName":"{stream}","EdgeConfig":{{"HubDeviceArn":"arn:aws:iot:us-east-1:123456789012:thing/bench","RecorderConfig":{{"MediaSourceConfig":{{"MediaUriSecretArn":"{secret}","MediaUriType":"RTSP_URI"}}}}}}}}"#
        ),
    )
    .unwrap();
    path
}

fn print(what: &str, c: &Cost, bytes: u64) {
    println!(
        "export {what:<34} {:>6.2} s wall  {:>6.0} MB/s  {:>6.2} CPU-s  {:>6.1} MiB peak RSS",
        c.wall,
        bytes as f64 / 1e6 / c.wall,
        c.cpu,
        c.maxrss_mib
    );
}

#[test]
#[ignore = "benchmark: bench/http/run.sh"]
fn http_benchmark() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let t0 = (jiff::Timestamp::now().as_millisecond() - 2 * 3_600_000) / 1000 * 1000;
    let (bytes, files) = {
        std::fs::create_dir_all(&rec).unwrap();
        let catalog = Catalog::open(&rec.join(kvs_edge_agent::catalog::FILE_NAME)).unwrap();
        lay_down(&catalog, &rec, "cam-00", t0)
    };
    println!(
        "export input: {MINUTES} min of 1080p25 4 Mbit/s, {:.0} MB in {} segments",
        bytes as f64 / 1e6,
        files.len()
    );
    let (from, to) = ((t0 / 1000).to_string(), (t0 / 1000 + 3600).to_string());
    let yaml = |http: &str| {
        let secrets: String = (0..64)
            .map(|i| {
                std::fs::read_to_string(dir.path().join(format!("cam-{i:02}.secret")))
                    .unwrap_or_default()
            })
            .collect();
        std::fs::write(dir.path().join("secrets.yaml"), secrets).unwrap();
        format!(
            "secrets_file: {}\nmqtt:\n  broker_url: mqtt://127.0.0.1:{}\ndisk_reserve:\n  min_free_mb: 0\n  min_free_percent: 0\nhttp:\n  listen: \"{http}\"\n",
            dir.path().join("secrets.yaml").display(),
            net::free_port()
        )
    };
    let configs: Vec<PathBuf> = (0..64)
        .map(|i| config(dir.path(), &format!("cam-{i:02}")))
        .collect();
    std::fs::write(dir.path().join("agent.yaml"), yaml("")).unwrap();
    for _round in 0..2 {
        for ext in ["mp4", "mkv"] {
            let out = dir.path().join(format!("verb.{ext}"));
            let c = run(Command::new(bin::BIN)
                .args(["export", "--config"])
                .arg(dir.path().join("agent.yaml"))
                .args(["--stream", "cam-00", "--from", &from, "--to", &to, "-o"])
                .arg(&out)
                .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", &rec));
            print(&format!("kvs-edge-agent export .{ext}"), &c, bytes);
            std::fs::remove_file(&out).unwrap();
        }
        let list = dir.path().join("concat.txt");
        std::fs::write(
            &list,
            files
                .iter()
                .map(|f| format!("file '{}'\n", f.display()))
                .collect::<String>(),
        )
        .unwrap();
        for ext in ["mp4", "mkv"] {
            let out = dir.path().join(format!("ffmpeg.{ext}"));
            let c = run(Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-f", "concat", "-safe", "0", "-i"])
                .arg(&list)
                .args(["-c", "copy"])
                .arg(&out));
            print(&format!("ffmpeg -f concat -c copy .{ext}"), &c, bytes);
            std::fs::remove_file(&out).unwrap();
        }
    }

    // The daemon: 64 streams, the HTTP server on.
    let port = net::free_port();
    let agent = daemon(
        dir.path(),
        &rec,
        &yaml(&format!("127.0.0.1:{port}")),
        &configs,
    );
    assert!(net::wait_listening(port, Duration::from_secs(30)));
    let base = format!("http://127.0.0.1:{port}");
    let rss_before = rss_mib(agent.0.id());
    for _ in 0..2 {
        let out = dir.path().join("http.mp4");
        let url = format!("{base}/api/v1/streams/cam-00/export.mp4?start={from}&end={to}");
        let c = run(Command::new("curl").args(["-sf", "-o"]).arg(&out).arg(&url));
        print("GET export.mp4 (curl's figures)", &c, bytes);
        std::fs::remove_file(&out).unwrap();
    }
    println!(
        "export over HTTP: the daemon's RSS {rss_before:.1} MiB before, {:.1} MiB after",
        rss_mib(agent.0.id())
    );
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let out = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-w", "%{time_total}"])
            .arg(format!("{base}/api/v1/streams"))
            .output()
            .unwrap();
        assert!(out.status.success());
        let total: f64 = String::from_utf8_lossy(&out.stdout).parse().unwrap();
        times.push(total.min(t.elapsed().as_secs_f64()));
    }
    times.sort_by(f64::total_cmp);
    println!(
        "api /api/v1/streams, 64 streams: median {:.1} ms, p99 {:.1} ms (curl time_total, 200 requests)",
        times[100] * 1000.0,
        times[197] * 1000.0
    );
    drop(agent);

    // Idle, no stream: on and off.
    for (label, listen) in [
        ("on", format!("127.0.0.1:{}", net::free_port())),
        ("off", String::new()),
    ] {
        let idle = tempfile::tempdir().unwrap();
        let agent = daemon(idle.path(), &idle.path().join("rec"), &yaml(&listen), &[]);
        std::thread::sleep(Duration::from_secs(5));
        if let Some(port) = listen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
        {
            assert!(net::wait_listening(port, Duration::from_secs(30)));
            for path in ["/healthz", "/metrics", "/api/v1/streams", "/"] {
                for _ in 0..12 {
                    let ok = Command::new("curl")
                        .args(["-sf", "-o", "/dev/null"])
                        .arg(format!("http://{listen}{path}"))
                        .status()
                        .unwrap()
                        .success();
                    assert!(ok, "{path}");
                }
            }
        }
        std::thread::sleep(Duration::from_secs(2));
        println!(
            "idle RSS, HTTP server {label}: {:.1} MiB",
            rss_mib(agent.0.id())
        );
    }
}
