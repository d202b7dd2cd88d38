use super::*;
use crate::catalog::{NewFragment, NewSegment, SegmentState};
use crate::clock::{Clock, PausedClock};
use crate::edge_config::StrategyOnFullSize;

const H: i64 = 3_600_000;
const MB: u64 = 1 << 20;

/// A stream with one closed segment of `size` bytes per entry of `ends`, each file on disk.
fn stream(root: &Path, ends: &[i64], size: u64) -> Arc<Catalog> {
    let c = Arc::new(Catalog::open_in_memory().unwrap());
    for (i, end) in ends.iter().enumerate() {
        let rel = format!("cam1/2026-01-01/{i}.mkv");
        std::fs::create_dir_all(root.join("cam1/2026-01-01")).unwrap();
        std::fs::write(root.join(&rel), b"mkv").unwrap();
        let id = c
            .insert_segment(&NewSegment {
                stream_name: "cam1".into(),
                path: rel,
                codec_id: "V_MPEG4/ISO/AVC".into(),
                codec_private: vec![1],
                width: 2,
                height: 2,
                header_size: 100,
                start_ms: end - 60_000,
            })
            .unwrap();
        c.add_fragment(
            id,
            &NewFragment {
                offset: 100,
                size: size - 100,
                timecode_ms: end - 60_000,
                duration_ms: 60_000,
                frame_count: 1,
                key_frame_count: 1,
                clock_unsynced: false,
            },
        )
        .unwrap();
        c.close_segment(id).unwrap();
    }
    c
}

fn limits(max_mb: Option<u64>, strategy: StrategyOnFullSize) -> Limits {
    Limits {
        retention_ms: 24 * H,
        delete_after_upload: true,
        max_bytes: max_mb.map(|m| m * MB),
        strategy,
    }
}

const NO_RESERVE: DiskReserve = DiskReserve {
    min_free_bytes: 0,
    min_free_percent: 0,
};

/// The janitor of `cam1` with a 100 MB limit kept by DELETE_OLDEST_MEDIA.
fn delete_oldest_over_100_mb(root: &Path, c: &Arc<Catalog>) -> Janitor {
    Janitor::new(
        "cam1",
        c.clone(),
        root,
        limits(Some(100), StrategyOnFullSize::DeleteOldestMedia),
        NO_RESERVE,
    )
}

#[test]
fn a_pass_deletes_by_policy_on_disk_and_in_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1000 * H;
    let c = stream(dir.path(), &[now - 30 * H, now - H, now - 1000], 64 * MB);
    let mut j = delete_oldest_over_100_mb(dir.path(), &c);
    let (state, deleted) = j.pass(now).unwrap();
    let ids: Vec<_> = deleted.iter().map(|(_, r)| *r).collect();
    assert_eq!(ids, [Reason::Retention, Reason::SizeLimit]);
    assert!(!dir.path().join("cam1/2026-01-01/0.mkv").exists());
    assert!(!dir.path().join("cam1/2026-01-01/1.mkv").exists());
    assert!(dir.path().join("cam1/2026-01-01/2.mkv").exists());
    assert_eq!(c.segments(Some("cam1")).unwrap().len(), 1);
    assert_eq!(state.usage_bytes, 64 * MB);
    assert_eq!(state.percentage_space_used, Some(0.64));
    assert!(!state.pause_recording());
}

/// After the wall clock stepped back three hours, the segment recorded last carries the oldest
/// timestamps; the one recorded first is still the oldest media, and goes first.
#[test]
fn delete_oldest_media_follows_recording_order_not_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1000 * H;
    let c = stream(dir.path(), &[now - 1000, now - 3 * H], 64 * MB);
    let mut j = delete_oldest_over_100_mb(dir.path(), &c);
    let (_, deleted) = j.pass(now).unwrap();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(!dir.path().join("cam1/2026-01-01/0.mkv").exists());
    assert!(dir.path().join("cam1/2026-01-01/1.mkv").exists());
}

#[test]
fn deny_new_media_pauses_recording_and_keeps_media() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1000 * H;
    let c = stream(dir.path(), &[now - 2 * H, now - H], 64 * MB);
    let mut j = Janitor::new(
        "cam1",
        c.clone(),
        dir.path(),
        limits(Some(100), StrategyOnFullSize::DenyNewMedia),
        NO_RESERVE,
    );
    let (state, deleted) = j.pass(now).unwrap();
    assert!(deleted.is_empty());
    assert!(state.deny_new_media && state.pause_recording());
    assert_eq!(c.segments(Some("cam1")).unwrap().len(), 2);
    assert!(
        c.segments(Some("cam1"))
            .unwrap()
            .iter()
            .all(|s| s.state == SegmentState::Closed)
    );
}

#[test]
fn the_disk_reserve_pauses_recording() {
    let dir = tempfile::tempdir().unwrap();
    let c = stream(dir.path(), &[H], MB);
    let all = DiskReserve {
        min_free_bytes: u64::MAX,
        min_free_percent: 0,
    };
    let mut j = Janitor::new(
        "cam1",
        c,
        dir.path(),
        limits(None, StrategyOnFullSize::DeleteOldestMedia),
        all,
    );
    let (state, _) = j.pass(2 * H).unwrap();
    assert!(state.disk_low && state.pause_recording());
    assert_eq!(state.percentage_space_used, None);
    let (free, total) = disk_space(dir.path()).unwrap();
    assert!(total > 0 && free <= total);
}

/// A janitor of one closed segment ending an hour before `now`, on a paused clock at `now`.
fn paused_janitor(root: &Path, now: i64) -> (Arc<Catalog>, Arc<PausedClock>, Janitor) {
    let c = stream(root, &[now - H], MB);
    let clock = Arc::new(PausedClock::new(
        jiff::Timestamp::from_millisecond(now).unwrap(),
    ));
    let j = Janitor::new(
        "cam1",
        c.clone(),
        root,
        limits(None, StrategyOnFullSize::DeleteOldestMedia),
        NO_RESERVE,
    );
    (c, clock, j)
}

/// On tokio's paused timer: the loop's minute between passes never elapses by itself here, so
/// the second pass is the wake-up's.
#[tokio::test(start_paused = true)]
async fn the_loop_passes_on_wake_and_stops_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1000 * H;
    let (c, clock, j) = paused_janitor(dir.path(), now);
    let wake = Arc::new(Notify::new());
    let (state_tx, mut state_rx) = watch::channel(State::default());
    let (stopper, stop) = crate::stop::channel();
    let task = tokio::spawn(run(j, clock.clone(), wake.clone(), state_tx, stop));

    state_rx.changed().await.unwrap();
    assert_eq!(
        state_rx.borrow_and_update().usage_bytes,
        MB,
        "first pass at start"
    );
    assert_eq!(c.segments(Some("cam1")).unwrap().len(), 1);

    // A day later the segment is past its 24 h retention; a wake-up runs the pass at once.
    clock.jump(jiff::Timestamp::from_millisecond(now + 24 * H).unwrap());
    wake.notify_one();
    state_rx.changed().await.unwrap();
    assert_eq!(state_rx.borrow_and_update().usage_bytes, 0);
    assert!(c.segments(Some("cam1")).unwrap().is_empty());

    stopper.stop();
    task.await.unwrap();
}

/// Without a wake-up, a pass runs every [`PASS_EVERY`] of the clock; a dropped stopper ends
/// the loop in the middle of a wait.
#[tokio::test(start_paused = true)]
async fn the_loop_passes_every_minute_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (_, clock, j) = paused_janitor(dir.path(), 1000 * H);
    let (state_tx, mut state_rx) = watch::channel(State::default());
    let (stopper, stop) = crate::stop::channel();
    let task = tokio::spawn(run(
        j,
        clock.clone(),
        Arc::new(Notify::new()),
        state_tx,
        stop,
    ));
    for pass in 0..4 {
        state_rx.changed().await.unwrap();
        state_rx.borrow_and_update();
        assert_eq!(clock.monotonic().as_secs(), pass * PASS_EVERY.as_secs());
    }
    clock.sleep(PASS_EVERY / 2).await;
    drop(stopper);
    task.await.unwrap();
    assert_eq!(
        clock.monotonic().as_secs(),
        3 * PASS_EVERY.as_secs() + PASS_EVERY.as_secs() / 2,
        "stopped within the wait"
    );
    assert!(state_rx.changed().await.is_err(), "no pass after the stop");
}
