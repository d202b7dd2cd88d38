//! The agent's bandwidth budget measured where it matters, at the KVS ingest emulator (the body
//! bytes it reads off the wire per 100 ms): one stream and four streams sharing the cap stay
//! within 5 % of it over every 10 s window, and a window with a cap of its own switches the
//! rate at its edges.

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
use std::sync::Arc;
use std::time::Duration;

use kvs::Emulator;
use kvs_edge_agent::catalog::Catalog;
use kvs_edge_agent::schedule::{CronSchedule, Windows};
use kvs_edge_agent::uploader::budget::{CapWindow, Caps};
use kvs_edge_agent::uploader::{Options, RunMode, StreamTarget};
use recording::record;
use uploader::*;

/// H.264 filler per frame: 25 frames of ~6 KB make ~150 KB fragments, so the service's five
/// fragments a second (750 KB/s) never hold a stream back before the cap does.
const PAD: usize = 6000;

struct Rig {
    _tmp: tempfile::TempDir,
    catalog: Arc<Catalog>,
    recordings: std::path::PathBuf,
    emulator: Emulator,
}

impl Rig {
    fn new(streams: &[&str], fragments: usize) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let recordings = tmp.path().join("recordings");
        std::fs::create_dir_all(&recordings).unwrap();
        let catalog = Arc::new(Catalog::open(&tmp.path().join("catalog.db")).unwrap());
        for s in streams {
            record(
                &catalog,
                &recordings,
                s,
                an_hour_ago_ms(),
                1,
                fragments,
                None,
                PAD,
            );
        }
        let emulator = Emulator::start(&tmp.path().join("emulator"), &[]);
        Rig {
            _tmp: tmp,
            catalog,
            recordings,
            emulator,
        }
    }

    /// Uploads `streams` at once under `caps` for `secs`, then stops.
    async fn upload(&self, streams: &[&str], caps: Caps, secs: u64) {
        let options = Options {
            bandwidth: caps,
            ..test_options()
        };
        let up = uploader(
            Arc::clone(&self.catalog),
            &self.recordings,
            &self.emulator,
            options,
        )
        .await;
        let handles: Vec<_> = streams
            .iter()
            .map(|s| up.start(StreamTarget::Name((*s).into()), RunMode::UntilStopped, None))
            .collect();
        // The length of the measurement, not a wait for an event.
        tokio::time::sleep(Duration::from_secs(secs)).await;
        for h in &handles {
            h.stop();
        }
        for h in handles {
            let snap = h.wait().await.unwrap();
            assert!(snap.fragments_uploaded > 0, "{snap:?}");
        }
    }

    /// Body bytes the emulator received per whole second (wall ms of its start), all streams
    /// together.
    async fn per_second(&self, streams: &[&str]) -> BTreeMap<i64, u64> {
        let mut m = BTreeMap::new();
        for s in streams {
            let index = self.emulator.index(s).await;
            for slot in index["bytes_by_100ms"].as_array().unwrap() {
                let (t, n) = (slot[0].as_i64().unwrap(), slot[1].as_u64().unwrap());
                *m.entry(t / 1000 * 1000).or_default() += n;
            }
        }
        m
    }
}

fn cap(kbps: u32) -> Caps {
    Caps {
        default_kbps: kbps,
        windows: vec![],
    }
}

/// Every 10 s window between the first and last whole second of sending (the edges are
/// partial seconds) carries `bytes_per_sec` × 10 within 5 %; returns the worst deviation.
fn assert_within_five_percent(per_sec: &BTreeMap<i64, u64>, bytes_per_sec: f64) -> f64 {
    let first = *per_sec.keys().next().unwrap() + 1000;
    let last = *per_sec.keys().last().unwrap() - 1000;
    let secs: Vec<u64> = (first..=last)
        .step_by(1000)
        .map(|t| per_sec.get(&t).copied().unwrap_or(0))
        .collect();
    assert!(secs.len() >= 12, "too short a run: {per_sec:?}");
    let want = bytes_per_sec * 10.0;
    let mut worst: f64 = 0.0;
    for w in secs.windows(10) {
        let got = w.iter().sum::<u64>() as f64;
        let off = (got - want).abs() / want;
        worst = worst.max(off);
        assert!(
            off <= 0.05,
            "a 10 s window carried {got} bytes, not {want}: {secs:?}"
        );
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_is_held_to_the_cap() {
    let rig = Rig::new(&["one"], 150);
    rig.upload(&["one"], cap(4000), 20).await;
    let worst = assert_within_five_percent(&rig.per_second(&["one"]).await, 500_000.0);
    println!(
        "1 stream at 4000 kbit/s: worst 10 s window {:.2} % off",
        worst * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_streams_share_the_cap_fairly() {
    let streams = ["s1", "s2", "s3", "s4"];
    let rig = Rig::new(&streams, 60);
    rig.upload(&streams, cap(4000), 20).await;
    let worst = assert_within_five_percent(&rig.per_second(&streams).await, 500_000.0);
    println!(
        "4 streams at 4000 kbit/s: worst 10 s window {:.2} % off",
        worst * 100.0
    );
    let mut shares = Vec::new();
    for s in streams {
        let total: u64 = rig.per_second(&[s]).await.values().sum();
        shares.push(total);
    }
    let (lo, hi) = (*shares.iter().min().unwrap(), *shares.iter().max().unwrap());
    println!("bytes per stream: {shares:?}");
    assert!(lo as f64 >= hi as f64 * 0.8, "an unfair share: {shares:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_with_its_own_cap_switches_at_its_edges() {
    // 1000 kbit/s for the first 10 s of every 20, 4000 otherwise.
    let caps = Caps {
        default_kbps: 4000,
        windows: vec![CapWindow {
            windows: Windows::new(
                CronSchedule::parse("0/20 * * * * ?").unwrap(),
                Duration::from_secs(10),
                jiff::tz::TimeZone::UTC,
            ),
            kbps: 1000,
        }],
    };
    let rig = Rig::new(&["w"], 150);
    rig.upload(&["w"], caps, 42).await;
    let per_sec = rig.per_second(&["w"]).await;
    let first = *per_sec.keys().next().unwrap();
    let last = *per_sec.keys().last().unwrap();
    // Each whole phase (10 s under one cap), its first second left out (bytes in the sockets
    // from before the switch); phases at the run's edges are partial and skipped.
    let mut phases = 0;
    let mut t = (first / 10_000 + 1) * 10_000;
    while t + 10_000 <= last {
        let inside = (t / 1000) % 20 < 10;
        let want = if inside { 125_000.0 } else { 500_000.0 } * 9.0;
        let got: u64 = (t + 1000..t + 10_000)
            .step_by(1000)
            .map(|s| per_sec.get(&s).copied().unwrap_or(0))
            .sum();
        let off = (got as f64 - want).abs() / want;
        println!(
            "phase at {} s ({}): {got} bytes in 9 s, {:.2} % off",
            (t / 1000) % 60,
            if inside { "1000 kbit/s" } else { "4000 kbit/s" },
            off * 100.0
        );
        assert!(
            off <= 0.05,
            "phase at {t}: {got} bytes, not {want}: {per_sec:?}"
        );
        phases += 1;
        t += 10_000;
    }
    assert!(phases >= 3, "{phases} phases measured: {per_sec:?}");
}
