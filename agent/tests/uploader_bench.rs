//! The upload benchmark (bench/upload/run.sh runs it; ignored in the normal test run).
//!
//! 1. Pacing off: aggregate MB/s over loopback for 1 and 8 streams uploading the same total of
//!    1 MB fragments to the emulator, next to `curl -T` sending the very same bytes (segment
//!    header + clusters, SigV4 by curl's `--aws-sigv4`) to the same emulator, one curl per
//!    stream in parallel. The emulator (Python) parses every element, so both sides measure
//!    the same ceiling; the comparison says whether the agent adds overhead.
//! 2. Pacing on: the fragment rate the emulator measures (server receive times) is at most 5/s.
//! 3. Live (`live_upload_benchmark`): a stream appended at real time, one 2 s fragment every
//!    2 s, uploaded by one `UntilStopped` job with the default options for BENCH_LIVE_SECS
//!    (300): the latency from the catalog commit to PERSISTED, PutMedia requests per hour, and
//!    fragments lost or duplicated (both must be 0).

#[path = "support/kvs.rs"]
mod kvs;
#[path = "support/process.rs"]
mod process;
#[path = "support/recording.rs"]
mod recording;
#[path = "support/sample.rs"]
mod sample;
#[path = "support/uploader.rs"]
mod uploader;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvs::*;
use kvs_edge_agent::catalog::{Catalog, NewFragment, UploadState};
use kvs_edge_agent::media::mkv::{self, Frame};
use kvs_edge_agent::uploader::{Options, RunMode, StreamTarget};
use recording::{Recording, record};
use serde_json::Value;
use uploader::{an_hour_ago_ms, test_options, until_empty, uploader};

/// Total media per run, split evenly over the streams.
const TOTAL_FRAGMENTS: usize = 192;
/// Runs per configuration (the machine is shared: single runs are noisy).
const ROUNDS: usize = 5;
/// Filler per frame: 25 frames x 40 KB = about 1 MB per fragment.
const PAD: usize = 40_000;

struct Run {
    bytes: u64,
    secs: f64,
}

impl Run {
    fn mbps(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }
}

fn streams_setup(dir: &Path, n: usize) -> (Arc<Catalog>, Vec<(String, Recording)>) {
    let catalog = Arc::new(Catalog::open(&dir.join("catalog.db")).unwrap());
    let per = TOTAL_FRAGMENTS / n;
    let recs = (0..n)
        .map(|i| {
            let name = format!("bench-{n}-{i}");
            let r = record(
                &catalog,
                &dir.join("rec"),
                &name,
                an_hour_ago_ms(),
                2,
                per / 2,
                None,
                PAD,
            );
            (name, r)
        })
        .collect();
    (catalog, recs)
}

async fn agent_run(n: usize) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let (catalog, recs) = streams_setup(tmp.path(), n);
    let emulator = Emulator::start(&tmp.path().join("emu"), &[]);
    let opts = Options {
        pacing: false,
        ..test_options()
    };
    let up = uploader(
        Arc::clone(&catalog),
        &tmp.path().join("rec"),
        &emulator,
        opts,
    )
    .await;
    let bytes: u64 = recs
        .iter()
        .flat_map(|(_, r)| r.clusters.iter().map(|c| c.len() as u64))
        .sum();
    let start = Instant::now();
    let handles: Vec<_> = recs
        .iter()
        .map(|(name, _)| until_empty(&up, name))
        .collect();
    for h in handles {
        let p = h.wait().await.unwrap();
        assert_eq!(p.fragments_failed, 0);
    }
    let secs = start.elapsed().as_secs_f64();
    for (name, r) in &recs {
        assert_eq!(
            persisted(&emulator.index(name).await).len(),
            r.clusters.len()
        );
    }
    Run { bytes, secs }
}

fn curl_run(n: usize) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let (catalog, recs) = streams_setup(tmp.path(), n);
    let emulator = Emulator::start(&tmp.path().join("emu"), &[]);
    let mut bodies = Vec::new();
    let mut bytes = 0;
    for (name, r) in &recs {
        let seg = &catalog.segments(Some(name)).unwrap()[0];
        let file = std::fs::read(tmp.path().join("rec").join(&seg.path)).unwrap();
        let path = tmp.path().join(format!("{name}.body"));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&file[..seg.header_size as usize]).unwrap();
        for c in &r.clusters {
            f.write_all(c).unwrap();
            bytes += c.len() as u64;
        }
        let start_ms = r.fragments[0].timecode_ms;
        bodies.push((name.clone(), path, start_ms));
    }
    let start = Instant::now();
    let children: Vec<_> = bodies
        .iter()
        .map(|(name, path, start_ms)| {
            std::process::Command::new("curl")
                .args(["-sS", "-X", "POST", "-o", "/dev/null", "-T"])
                .arg(path)
                .args(["--aws-sigv4", &format!("aws:amz:{REGION}:kinesisvideo")])
                .args(["--user", &format!("{ACCESS_KEY}:{SECRET_KEY}")])
                .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
                .args(["-H", &format!("x-amzn-stream-name: {name}")])
                .args(["-H", "x-amzn-fragment-timecode-type: ABSOLUTE"])
                .args([
                    "-H",
                    &format!(
                        "x-amzn-producer-start-timestamp: {}.{:03}",
                        start_ms / 1000,
                        start_ms % 1000
                    ),
                ])
                .args(["-H", "x-amzn-fragment-acknowledgment-required: 1"])
                .arg(format!("{}/putMedia", emulator.url()))
                .spawn()
                .expect("curl")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
    }
    let secs = start.elapsed().as_secs_f64();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, r) in &recs {
        let got = rt.block_on(emulator.index(name));
        assert_eq!(
            persisted(&got).len(),
            r.clusters.len(),
            "curl upload of {name}"
        );
    }
    Run { bytes, secs }
}

/// "median (min-max)" of MB/s figures.
fn summary(v: &mut [f64]) -> String {
    v.sort_by(f64::total_cmp);
    format!("{:.0} ({:.0}-{:.0})", v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Records `segments` x `per_segment` fragments with `pad` bytes of filler per frame, uploads
/// them with pacing on and returns the emulator's index of the stream.
async fn paced_upload(stream: &str, segments: usize, per_segment: usize, pad: usize) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::open(&tmp.path().join("catalog.db")).unwrap());
    record(
        &catalog,
        &tmp.path().join("rec"),
        stream,
        an_hour_ago_ms(),
        segments,
        per_segment,
        None,
        pad,
    );
    let emulator = Emulator::start(&tmp.path().join("emu"), &[]);
    let up = uploader(
        Arc::clone(&catalog),
        &tmp.path().join("rec"),
        &emulator,
        test_options(),
    )
    .await;
    until_empty(&up, stream).wait().await.unwrap();
    emulator.index(stream).await
}

async fn paced_rate() -> (usize, f64) {
    let index = paced_upload("paced", 5, 6, 0).await;
    let times: Vec<f64> = each(&index, "fragments", "server_monotonic", Value::as_f64);
    let span = times.last().unwrap() - times[0];
    (times.len(), (times.len() - 1) as f64 / span)
}

/// Pacing on with 4 MB fragments, where the byte limit (12.5 MB/s) binds before the fragment
/// limit would (5/s x 4 MB = 20 MB/s): the byte rate the emulator measures.
async fn paced_byte_rate() -> (f64, f64) {
    let index = paced_upload("paced-bytes", 1, 15, 160_000).await;
    let frags = index["fragments"].as_array().unwrap();
    let bytes: f64 = frags.iter().map(|f| f["size"].as_f64().unwrap()).sum();
    let first = frags[0]["server_start_monotonic"].as_f64().unwrap();
    let last = frags.last().unwrap()["server_monotonic"].as_f64().unwrap();
    (bytes / 1e6, bytes / 1e6 / (last - first))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/upload/run.sh"]
async fn upload_benchmark() {
    let mut lines = Vec::new();
    for n in [1usize, 8] {
        // Alternate the two clients so both see the same background load; report medians.
        let (mut agent, mut curl) = (Vec::new(), Vec::new());
        let mut mb = 0.0;
        for _ in 0..ROUNDS {
            let a = agent_run(n).await;
            mb = a.bytes as f64 / 1e6;
            agent.push(a.mbps());
            curl.push(
                tokio::task::spawn_blocking(move || curl_run(n))
                    .await
                    .unwrap()
                    .mbps(),
            );
        }
        lines.push(format!(
            "pacing off, {n} stream(s), {mb:.1} MB, median of {ROUNDS}: agent {} MB/s, curl -T {} MB/s",
            summary(&mut agent),
            summary(&mut curl)
        ));
        println!("{}", lines.last().unwrap());
    }
    let (count, rate) = paced_rate().await;
    lines.push(format!(
        "pacing on, 1 stream, {count} fragments: {rate:.3} fragments/s measured by the emulator"
    ));
    println!("{}", lines.last().unwrap());
    assert!(rate <= 5.0, "paced rate {rate}");
    let (mb, byte_rate) = paced_byte_rate().await;
    lines.push(format!(
        "pacing on, 1 stream, {mb:.1} MB in 4 MB fragments: {byte_rate:.2} MB/s measured by the emulator"
    ));
    println!("{}", lines.last().unwrap());
    // The pacer allows a 64 KiB burst at the start.
    assert!(
        byte_rate <= 12.5 * mb / (mb - 0.066),
        "paced byte rate {byte_rate}"
    );
}

/// Live fragment length: two of the sample clip's 1 s GOPs per cluster.
const LIVE_FRAGMENT_MS: i64 = 2000;

/// Appends one 2 s fragment every 2 s of wall time (timecodes are wall-clock ms, as a camera's
/// would be) until `until`, as the recorder does: cluster bytes written, then the catalog row
/// committed (which announces it to the uploader). Returns timecode -> commit wall ms, taken
/// right after the commit returns. Segments of 30 fragments (a minute), like a live recorder.
fn append_live(
    catalog: &Catalog,
    recording_dir: &Path,
    stream: &str,
    until: Instant,
) -> BTreeMap<i64, i64> {
    let sample::Clip { track, frames, .. } = sample::clip(0);
    let gops: Vec<&[Frame]> = frames.chunk_by(|_, b| !b.key).collect();
    let dir = recording_dir.join(stream);
    std::fs::create_dir_all(&dir).unwrap();
    let mut committed = BTreeMap::new();
    let start = Instant::now();
    let t0 = jiff::Timestamp::now().as_millisecond();
    let mut n: usize = 0;
    'segments: for s in 0.. {
        let t = t0 + LIVE_FRAGMENT_MS * n as i64;
        let header = mkv::segment_header(&track, [(s % 250) as u8 + 1; 16]);
        let rel = format!("{stream}/{t}.mkv");
        let path = recording_dir.join(&rel);
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&header).unwrap();
        let mut len = header.len() as u64;
        let seg = catalog
            .insert_segment(&recording::segment_row(
                stream,
                rel,
                &track,
                header.len(),
                t,
            ))
            .unwrap();
        for _ in 0..30 {
            // The fragment's end on the wall clock: it is committed then, not before.
            let due = start + Duration::from_millis((LIVE_FRAGMENT_MS as u64) * (n as u64 + 1));
            if due > until {
                catalog.close_segment(seg).unwrap();
                break 'segments;
            }
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let base = t0 + LIVE_FRAGMENT_MS * n as i64;
            let fr: Vec<Frame> = gops[(2 * n) % gops.len()]
                .iter()
                .chain(gops[(2 * n + 1) % gops.len()].iter())
                .enumerate()
                .map(|(i, f)| Frame {
                    timestamp_ms: base + sample::FRAME_MS * i as i64,
                    key: f.key,
                    data: f.data.clone(),
                })
                .collect();
            let cluster = mkv::cluster(&fr).unwrap();
            file.write_all(&cluster).unwrap();
            file.sync_data().unwrap();
            catalog
                .add_fragment(
                    seg,
                    &NewFragment {
                        offset: len,
                        size: cluster.len() as u64,
                        timecode_ms: base,
                        duration_ms: sample::FRAME_MS * fr.len() as i64,
                        frame_count: fr.len() as u32,
                        key_frame_count: 2,
                        clock_unsynced: false,
                    },
                )
                .unwrap();
            committed.insert(base, jiff::Timestamp::now().as_millisecond());
            len += cluster.len() as u64;
            n += 1;
        }
        catalog.close_segment(seg).unwrap();
    }
    committed
}

/// "median / max" of millisecond latencies.
fn median_max(v: &mut [i64]) -> String {
    v.sort_unstable();
    format!("median {} ms, max {} ms", v[v.len() / 2], v[v.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/upload/run.sh --mode live"]
async fn live_upload_benchmark() {
    let secs: u64 = std::env::var("BENCH_LIVE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("rec");
    let catalog = Arc::new(Catalog::open(&tmp.path().join("catalog.db")).unwrap());
    let emulator = Emulator::start(&tmp.path().join("emu"), &[]);
    let stream = "live";
    let up = uploader(Arc::clone(&catalog), &rec, &emulator, Options::default()).await;
    let job = up.start(
        StreamTarget::Name(stream.into()),
        RunMode::UntilStopped,
        None,
    );
    // The agent's side: when the catalog first shows each fragment UPLOADED (polled every
    // 50 ms), until `done`.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (catalog, done) = (Arc::clone(&catalog), Arc::clone(&done));
        tokio::spawn(async move {
            let mut seen: BTreeMap<i64, i64> = BTreeMap::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let now = jiff::Timestamp::now().as_millisecond();
                for f in recording::catalog_fragments(&catalog, stream) {
                    if f.upload_state == UploadState::Uploaded {
                        seen.entry(f.timecode_ms).or_insert(now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };
    let live_start_ms = jiff::Timestamp::now().as_millisecond();
    let until = Instant::now() + Duration::from_secs(secs);
    let committed = {
        let (catalog, rec) = (Arc::clone(&catalog), rec.clone());
        tokio::task::spawn_blocking(move || append_live(&catalog, &rec, stream, until))
            .await
            .unwrap()
    };
    let live_end_ms = jiff::Timestamp::now().as_millisecond();
    // The last fragment is acknowledged within seconds of its commit.
    let deadline = Instant::now() + Duration::from_secs(60);
    while recording::catalog_fragments(&catalog, stream)
        .iter()
        .any(|f| f.upload_state != UploadState::Uploaded)
    {
        assert!(
            Instant::now() < deadline,
            "fragments still unacknowledged 60 s after the last commit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = watcher.await.unwrap();
    job.stop();
    let progress = job.wait().await.unwrap();
    assert_eq!(progress.fragments_failed, 0);
    let index = emulator.index(stream).await;
    let frags = index["fragments"].as_array().unwrap();
    let mut copies: BTreeMap<i64, usize> = BTreeMap::new();
    let mut to_persisted = Vec::new();
    for f in frags {
        let tc = f["timecode"].as_i64().unwrap();
        assert_eq!(f["persisted"], true, "{f}");
        *copies.entry(tc).or_default() += 1;
        if copies[&tc] == 1
            && let Some(c) = committed.get(&tc)
        {
            // PERSISTED goes out when the fragment closes (no ack delay is armed).
            to_persisted.push(f["closed_ms"].as_i64().unwrap() - c);
        }
    }
    let lost = committed
        .keys()
        .filter(|tc| !copies.contains_key(tc))
        .count();
    let dups: usize = copies.values().map(|n| n - 1).sum();
    let mut to_uploaded: Vec<i64> = committed
        .iter()
        .filter_map(|(tc, c)| Some(seen.get(tc)? - c))
        .collect();
    let requests = index["requests"].as_array().unwrap();
    let in_live = requests
        .iter()
        .filter(|r| r["ms"].as_i64().is_some_and(|ms| ms <= live_end_ms))
        .count();
    let hours = (live_end_ms - live_start_ms) as f64 / 3.6e6;
    let mut ended: BTreeMap<String, usize> = BTreeMap::new();
    for l in index["session_log"].as_array().unwrap() {
        *ended
            .entry(l["ended"].as_str().unwrap_or("open").to_owned())
            .or_default() += 1;
    }
    println!(
        "live, 1 stream, {secs} s, {} fragments of 2 s: commit -> PERSISTED (emulator closed_ms) {}; commit -> UPLOADED in the catalog (polled 50 ms) {}",
        committed.len(),
        median_max(&mut to_persisted),
        median_max(&mut to_uploaded)
    );
    println!(
        "live, 1 stream: {in_live} PutMedia requests while live ({:.1}/hour), {} in all, sessions {} (ended: {ended:?}); lost {lost}, duplicated {dups}",
        in_live as f64 / hours,
        requests.len(),
        index["sessions"]
    );
    assert_eq!(lost, 0, "fragments lost");
    assert_eq!(dups, 0, "fragments duplicated");
    assert_eq!(to_persisted.len(), committed.len());
}

/// Body bytes the emulator received from `stream` per second, between its first and last whole
/// second of receiving, in kbit/s.
async fn received_kbps(emulator: &Emulator, stream: &str) -> f64 {
    let index = emulator.index(stream).await;
    let mut per_sec: BTreeMap<i64, u64> = BTreeMap::new();
    for slot in index["bytes_by_100ms"].as_array().unwrap() {
        *per_sec.entry(slot[0].as_i64().unwrap() / 1000).or_default() += slot[1].as_u64().unwrap();
    }
    let (first, last) = (
        *per_sec.keys().next().unwrap() + 1,
        *per_sec.keys().last().unwrap() - 1,
    );
    let bytes: u64 = (first..last)
        .map(|s| per_sec.get(&s).copied().unwrap_or(0))
        .sum();
    bytes as f64 * 8.0 / 1000.0 / (last - first) as f64
}

/// 4. Capped (`capped_upload_benchmark`): one stream of ~1 MB fragments under
///    `uploader.max_kbps` caps of 1, 4 and 16 Mbit/s for 15 s each: the rate the emulator
///    received against the cap.
/// 5. Live with a backlog: ten minutes of backlog uploading (window open), then live for
///    BENCH_LIVE_BACKLOG_SECS (60): commit -> PERSISTED of each live fragment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/upload/run.sh --mode capped"]
async fn capped_upload_benchmark() {
    use kvs_edge_agent::catalog::{NewRequest, RequestKind};
    use kvs_edge_agent::uploader::budget::Caps;
    for kbps in [1000u32, 4000, 16_000] {
        let tmp = tempfile::tempdir().unwrap();
        let rec = tmp.path().join("rec");
        let catalog = Arc::new(Catalog::open(&tmp.path().join("catalog.db")).unwrap());
        record(&catalog, &rec, "cap", an_hour_ago_ms(), 1, 60, None, PAD);
        let emulator = Emulator::start(&tmp.path().join("emu"), &[]);
        let options = Options {
            bandwidth: Caps {
                default_kbps: kbps,
                windows: vec![],
            },
            ..Options::default()
        };
        let up = uploader(Arc::clone(&catalog), &rec, &emulator, options).await;
        let job = up.start(
            StreamTarget::Name("cap".into()),
            RunMode::UntilStopped,
            None,
        );
        tokio::time::sleep(Duration::from_secs(15)).await;
        job.stop();
        job.wait().await.unwrap();
        let got = received_kbps(&emulator, "cap").await;
        println!(
            "capped, 1 stream: requested {kbps} kbit/s, achieved {got:.0} kbit/s ({:+.2} %)",
            (got / f64::from(kbps) - 1.0) * 100.0
        );
    }

    let secs: u64 = std::env::var("BENCH_LIVE_BACKLOG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("rec");
    let catalog = Arc::new(Catalog::open(&tmp.path().join("catalog.db")).unwrap());
    // Ten minutes of 1 s fragments, ending an hour ago.
    record(
        &catalog,
        &rec,
        "live",
        an_hour_ago_ms() - 600_000,
        10,
        60,
        None,
        0,
    );
    let emulator = Emulator::start(&tmp.path().join("emu"), &[]);
    let up = uploader(Arc::clone(&catalog), &rec, &emulator, Options::default()).await;
    let job = up.start(
        StreamTarget::Name("live".into()),
        RunMode::UntilStopped,
        None,
    );
    let now = jiff::Timestamp::now();
    catalog
        .add_request(
            &NewRequest {
                stream_name: "live".into(),
                request_id: "bench".into(),
                kind: RequestKind::Live,
                start_ms: now.as_millisecond(),
                end_ms: now.as_millisecond() + (secs as i64 + 30) * 1000,
            },
            now,
        )
        .unwrap();
    let until = Instant::now() + Duration::from_secs(secs);
    let committed = {
        let (catalog, rec) = (Arc::clone(&catalog), rec.clone());
        tokio::task::spawn_blocking(move || append_live(&catalog, &rec, "live", until))
            .await
            .unwrap()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    job.stop();
    job.wait().await.unwrap();
    let index = emulator.index("live").await;
    let mut latency = Vec::new();
    let mut backlog_sent = 0;
    for f in index["fragments"].as_array().unwrap() {
        let tc = f["timecode"].as_i64().unwrap();
        match committed.get(&tc) {
            Some(c) => latency.push(f["closed_ms"].as_i64().unwrap() - c),
            None => backlog_sent += 1,
        }
    }
    let pending = catalog.backlog("live").unwrap().fragments;
    println!(
        "live with a 10-minute backlog, {secs} s, {} fragments of 2 s: commit -> PERSISTED {}; backlog fragments sent meanwhile {backlog_sent}, still pending {pending}",
        committed.len(),
        median_max(&mut latency)
    );
    assert_eq!(
        latency.len(),
        committed.len(),
        "every live fragment persisted"
    );
}
