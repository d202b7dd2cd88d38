//! The janitor on a real file system, next to the real recorder: DELETE_OLDEST_MEDIA keeps a
//! recording stream under its limit, DENY_NEW_MEDIA pauses and resumes the recorder, a full disk
//! (ENOSPC) corrupts nothing and recording resumes once space returns, and a deletion cut short
//! by kill -9 is finished at the next start.

#[path = "support/mkv.rs"]
mod mkv;
#[path = "support/peer.rs"]
mod peer;
#[path = "support/poll.rs"]
mod poll;
#[path = "support/runtime.rs"]
mod runtime;
#[path = "support/sample.rs"]
mod sample;
#[path = "support/tmpfs.rs"]
mod tmpfs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvs_edge_agent::catalog::{Catalog, NewFragment, NewSegment, SegmentId, SegmentState};
use kvs_edge_agent::clock::{Clock, RealClock};
use kvs_edge_agent::edge_config::{JobStatus, StrategyOnFullSize};
use kvs_edge_agent::janitor::policy::{DiskReserve, Limits, Reason};
use kvs_edge_agent::janitor::{self, Janitor, State};
use kvs_edge_agent::recorder::fragmenter::FragmenterConfig;
use kvs_edge_agent::recorder::{
    self, Control, MemoryStatus, RecorderConfig, RecorderError, RecorderSummary,
};
use kvs_edge_agent::store::audit::audit;
use kvs_edge_agent::store::recovery::recover;
use mkv::ffprobe;
use peer::require;
use runtime::runtime;
use sample::sample_clip;
use tmpfs::Tmpfs;
use tokio::runtime::Runtime;
use tokio::sync::{Notify, watch};

const STREAM: &str = "cam1";
const POLL: Duration = Duration::from_millis(20);
const DEADLINE: Duration = Duration::from_secs(30);
/// Twenty times real time: about 700 KB of media a second, so limits of about 1 MB are reached
/// within seconds.
const FPS: u32 = 500;
const NO_RESERVE: DiskReserve = DiskReserve {
    min_free_bytes: 0,
    min_free_percent: 0,
};
/// Set in the child process of [`kill_9_mid_deletion_is_repaired_at_startup`].
const CHILD_ENV: &str = "JANITOR_DISK_CHILD_DIR";

/// Polls `cond` (which reads catalog or disk state, for which no event exists) until it holds.
fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    poll::wait_for(what, DEADLINE, cond);
}

fn open_catalog(dir: &Path) -> Arc<Catalog> {
    Arc::new(Catalog::open(&dir.join("kvs-edge-agent.db")).unwrap())
}

fn limits(max_bytes: u64, strategy: StrategyOnFullSize) -> Limits {
    Limits {
        retention_ms: 720 * 3_600_000,
        delete_after_upload: true,
        max_bytes: Some(max_bytes),
        strategy,
    }
}

fn now_ms() -> i64 {
    RealClock.now().as_millisecond()
}

/// The recorder job on the sample clip at [`FPS`]: fragments of about 250 ms, segments of
/// about 500 ms (some 350 KB).
struct Recording {
    control: Arc<watch::Sender<Control>>,
    status: Arc<MemoryStatus>,
    task: tokio::task::JoinHandle<Result<RecorderSummary, RecorderError>>,
}

impl Recording {
    fn start(rt: &Runtime, root: &Path, catalog: &Arc<Catalog>) -> Recording {
        let (tx, rx) = watch::channel(Control::Record);
        let status = Arc::new(MemoryStatus::default());
        let cfg = RecorderConfig {
            stream: STREAM.into(),
            uri: format!("file://{}?fps={FPS}", sample_clip().display()),
            recording_dir: root.to_owned(),
            fragmenter: FragmenterConfig {
                min_fragment_ms: 250,
                segment_duration_ms: 500,
                ..Default::default()
            },
            rtsp: Default::default(),
        };
        let task = rt.spawn(recorder::run(
            cfg,
            catalog.clone(),
            Arc::new(RealClock),
            status.clone(),
            rx,
        ));
        Recording {
            control: Arc::new(tx),
            status,
            task,
        }
    }

    /// Reports so far, oldest first.
    fn reports(&self) -> Vec<(JobStatus, Option<String>)> {
        self.status.0.lock().unwrap().clone()
    }

    fn stop(self, rt: &Runtime) -> RecorderSummary {
        self.control.send_replace(Control::Stop);
        rt.block_on(self.task).unwrap().unwrap()
    }
}

/// [`janitor::run`] on its own task, woken by the test as the recorder's notification would.
struct JanitorLoop {
    wake: Arc<Notify>,
    state: watch::Receiver<State>,
    stop: kvs_edge_agent::stop::Stopper,
    task: tokio::task::JoinHandle<()>,
}

impl JanitorLoop {
    fn start(rt: &Runtime, root: &Path, catalog: &Arc<Catalog>, limits: Limits) -> JanitorLoop {
        let j = Janitor::new(STREAM, catalog.clone(), root, limits, NO_RESERVE);
        let wake = Arc::new(Notify::new());
        let (state_tx, state) = watch::channel(State::default());
        let (stop, stop_rx) = kvs_edge_agent::stop::channel();
        let task = rt.spawn(janitor::run(
            j,
            Arc::new(RealClock),
            wake.clone(),
            state_tx,
            stop_rx,
        ));
        JanitorLoop {
            wake,
            state,
            stop,
            task,
        }
    }

    /// The state of a pass begun after this call: two wake-ups, since the first change seen
    /// may come from a pass already under way.
    fn fresh_pass(&mut self) -> State {
        for _ in 0..2 {
            self.state.borrow_and_update();
            self.wake.notify_one();
            wait_until("a janitor pass", || self.state.has_changed().unwrap());
        }
        self.state.borrow_and_update().clone()
    }

    fn stop(self, rt: &Runtime) {
        self.stop.stop();
        rt.block_on(self.task).unwrap();
    }
}

/// Every segment row of the stream by id.
fn rows(catalog: &Catalog) -> BTreeMap<SegmentId, kvs_edge_agent::catalog::SegmentRow> {
    catalog
        .segments(Some(STREAM))
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s))
        .collect()
}

/// Ids of every fragment of the stream.
fn fragment_ids(catalog: &Catalog) -> Vec<i64> {
    catalog
        .segments(Some(STREAM))
        .unwrap()
        .iter()
        .flat_map(|s| catalog.fragments(s.id).unwrap())
        .map(|f| f.id)
        .collect()
}

fn newest_fragment(catalog: &Catalog) -> i64 {
    fragment_ids(catalog).into_iter().max().unwrap_or(0)
}

/// Bytes of the `.mkv` files of the stream on disk.
fn bytes_on_disk(root: &Path) -> u64 {
    let mut total = 0;
    for day in std::fs::read_dir(root.join("streams").join(STREAM)).unwrap() {
        for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
            let f = f.unwrap();
            if f.file_name().to_string_lossy().ends_with(".mkv") {
                total += f.metadata().unwrap().len();
            }
        }
    }
    total
}

/// Catalog and disk agree, and every indexed segment is a file ffprobe decodes frame for frame.
fn assert_consistent(catalog: &Catalog, root: &Path) {
    let report = audit(catalog, root, Some(STREAM)).unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.files, report.segments, "{report:?}");
    if !require("ffprobe", &["-version"]) {
        return;
    }
    for s in catalog.segments(Some(STREAM)).unwrap() {
        let frags = catalog.fragments(s.id).unwrap();
        // A segment abandoned at its first fragment (ENOSPC) holds a header only, which
        // players refuse; recovery removes it.
        assert!(!frags.is_empty(), "{}: segment without fragments", s.path);
        let frames: u64 = frags.iter().map(|f| u64::from(f.frame_count)).sum();
        let (codec, n) = ffprobe(&root.join(&s.path));
        assert_eq!(codec, "h264", "{}", s.path);
        assert_eq!(n, frames, "{}: decoded frames vs indexed", s.path);
    }
}

/// DELETE_OLDEST_MEDIA with a 1 MB limit while about 700 KB/s are recorded: every pass leaves
/// the stream within the limit, the oldest segments go (files and rows) and the newest stay.
#[test]
fn delete_oldest_media_keeps_a_recording_stream_under_its_limit() {
    const LIMIT: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let catalog = open_catalog(dir.path());
    let rt = runtime();
    let rec = Recording::start(&rt, &root, &catalog);
    let mut jan = JanitorLoop::start(
        &rt,
        &root,
        &catalog,
        limits(LIMIT, StrategyOnFullSize::DeleteOldestMedia),
    );

    let mut seen: BTreeMap<SegmentId, String> = BTreeMap::new();
    let mut newest_closed = 0;
    let mut passes = 0;
    wait_until("10 closed segments", || {
        let now = rows(&catalog);
        for (id, s) in &now {
            seen.entry(*id).or_insert_with(|| s.path.clone());
        }
        if let Some(id) = now
            .values()
            .filter(|s| s.state == SegmentState::Closed)
            .map(|s| s.id)
            .max()
            && id > newest_closed
        {
            newest_closed = id;
            jan.wake.notify_one();
        }
        if jan.state.has_changed().unwrap() {
            let s = jan.state.borrow_and_update().clone();
            passes += 1;
            assert!(s.usage_bytes <= LIMIT, "over the limit after a pass: {s:?}");
            assert!(!s.pause_recording(), "{s:?}");
        }
        seen.range(..=newest_closed).count() >= 10
    });
    // The loop passes at most once a minute on its own: more passes came from the wake-ups.
    assert!(passes >= 3, "{passes} passes");
    let deleted_while_recording = seen
        .keys()
        .filter(|id| catalog.segment(**id).unwrap().is_none())
        .count();
    assert!(
        deleted_while_recording >= 5,
        "{deleted_while_recording} of {} segments deleted while recording",
        seen.len()
    );

    let summary = rec.stop(&rt);
    assert_eq!(summary.write_errors, 0);
    let last = jan.fresh_pass();
    jan.stop(&rt);

    let kept = rows(&catalog);
    for (id, s) in &rows(&catalog) {
        seen.entry(*id).or_insert_with(|| s.path.clone());
    }
    let usage: u64 = kept.values().map(|s| s.size).sum();
    assert!(usage <= LIMIT, "{usage} bytes kept");
    assert_eq!(last.usage_bytes, usage);
    assert!(kept.values().all(|s| s.state == SegmentState::Closed));
    assert_eq!(
        bytes_on_disk(&root),
        usage,
        "the files are what the catalog indexes"
    );
    // What is left is the newest segments, nothing older.
    let newest: Vec<SegmentId> = seen.keys().rev().take(kept.len()).rev().copied().collect();
    assert_eq!(kept.keys().copied().collect::<Vec<_>>(), newest);
    assert!(!kept.is_empty() && kept.len() < seen.len());
    for (id, path) in seen.iter().filter(|(id, _)| !kept.contains_key(id)) {
        assert!(!root.join(path).exists(), "{path} still on disk");
        assert!(
            catalog.fragments(*id).unwrap().is_empty(),
            "{path}: fragment rows left"
        );
    }
    assert_consistent(&catalog, &root);
}

/// DENY_NEW_MEDIA with a 1 MB limit: at the limit the janitor says pause and the recorder,
/// driven from that state as the supervisor does, stops adding fragments without anything
/// being deleted; once the segments are uploaded, DeleteAfterUpload frees the space and
/// recording resumes.
#[test]
fn deny_new_media_pauses_then_resumes_after_upload() {
    const LIMIT: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let catalog = open_catalog(dir.path());
    let rt = runtime();
    let rec = Recording::start(&rt, &root, &catalog);
    let mut jan = JanitorLoop::start(
        &rt,
        &root,
        &catalog,
        limits(LIMIT, StrategyOnFullSize::DenyNewMedia),
    );
    // The supervisor's forwarding (janitor_job, recorder_job): pause while the janitor says so.
    let mut verdict = jan.state.clone();
    let control = rec.control.clone();
    let forward = rt.spawn(async move {
        while verdict.changed().await.is_ok() {
            let want = if verdict.borrow_and_update().pause_recording() {
                Control::Pause
            } else {
                Control::Record
            };
            control.send_if_modified(|c| std::mem::replace(c, want) != want);
        }
    });

    let mut seen: Vec<SegmentId> = Vec::new();
    let mut newest_closed = 0;
    let mut denied = None;
    wait_until("DENY_NEW_MEDIA to pause recording", || {
        for s in catalog.segments(Some(STREAM)).unwrap() {
            if !seen.contains(&s.id) {
                seen.push(s.id);
            }
            if s.state == SegmentState::Closed && s.id > newest_closed {
                newest_closed = s.id;
                jan.wake.notify_one();
            }
        }
        let s = jan.state.borrow_and_update().clone();
        if s.deny_new_media {
            denied = Some(s);
        }
        denied.is_some()
    });
    let denied = denied.unwrap();
    assert!(denied.usage_bytes >= LIMIT, "{denied:?}");
    assert_eq!(denied.percentage_space_used, Some(1.0));
    assert!(seen.len() >= 2);

    // The pause closes the segment. While recording, an OPEN row is missing only for the few
    // milliseconds between closing one segment and creating the next, so 25 polls in a row
    // (500 ms) without one means the recorder has stopped.
    let mut polls_without_open = 0;
    wait_until("the recorder to close its segment", || {
        let open = catalog
            .segments(Some(STREAM))
            .unwrap()
            .iter()
            .any(|s| s.state == SegmentState::Open);
        polls_without_open = if open { 0 } else { polls_without_open + 1 };
        polls_without_open >= 25
    });
    assert_eq!(*rec.control.borrow(), Control::Pause);
    let paused = fragment_ids(&catalog);
    let paused_rows = rows(&catalog);
    assert!(
        seen.iter().all(|id| paused_rows.contains_key(id)),
        "DENY_NEW_MEDIA deletes nothing"
    );
    // Absence can only be observed over a window: recording would add about 4 fragments in it.
    let window = Instant::now() + Duration::from_secs(1);
    while Instant::now() < window {
        assert_eq!(
            fragment_ids(&catalog),
            paused,
            "a fragment written while paused"
        );
        std::thread::sleep(POLL);
    }
    assert!(jan.fresh_pass().deny_new_media, "still at the limit");

    // The uploader's PERSISTED acknowledgements.
    let now = RealClock.now();
    for id in &paused {
        catalog
            .mark_fragment_uploaded(*id, &format!("9{id:020}"), now)
            .unwrap();
    }
    jan.wake.notify_one();
    wait_until("the uploaded segments to be deleted", || {
        paused_rows
            .keys()
            .all(|id| catalog.segment(*id).unwrap().is_none())
    });
    let newest_before = paused.iter().copied().max().unwrap();
    let old_segment = *paused_rows.keys().max().unwrap();
    wait_until("new fragments after the upload", || {
        catalog
            .segments(Some(STREAM))
            .unwrap()
            .iter()
            .filter(|s| s.id > old_segment)
            .flat_map(|s| catalog.fragments(s.id).unwrap())
            .any(|f| f.id > newest_before)
    });
    for s in paused_rows.values() {
        assert!(!root.join(&s.path).exists(), "{}: file kept", s.path);
    }
    assert!(!jan.state.borrow().deny_new_media);

    jan.stop(&rt);
    rt.block_on(forward).unwrap();
    let summary = rec.stop(&rt);
    assert_eq!(summary.write_errors, 0);
    assert!(summary.sessions >= 2, "the pause disconnected the source");
    assert_consistent(&catalog, &root);
}

/// The index of the first report after `from` that is a SYSTEM_ERROR for a full disk.
fn enospc_after(rec: &Recording, from: usize) -> Option<usize> {
    rec.reports()
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, (s, d))| {
            *s == JobStatus::SystemError && d.as_deref().is_some_and(|d| d.contains("os error 28"))
        })
        .map(|(i, _)| i)
}

/// A 1 MB tmpfs filled by the recorder: the writes that fail with ENOSPC are reported as
/// SYSTEM_ERROR and leave catalog and files in agreement (every remaining file decodes); when
/// the janitor frees space the running recorder writes again, and after a restart too.
#[test]
fn a_full_disk_corrupts_nothing_and_recording_resumes_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let Some(_tmpfs) = Tmpfs::mount(&root, "1m").unwrap_or_else(|e| panic!("{e}")) else {
        return;
    };
    // The catalog lives outside the tmpfs, as it would on its own partition.
    let catalog = open_catalog(dir.path());
    let rt = runtime();
    let free_oldest = || {
        let mut j = Janitor::new(
            STREAM,
            catalog.clone(),
            &root,
            limits(300 << 10, StrategyOnFullSize::DeleteOldestMedia),
            NO_RESERVE,
        );
        let (_, deleted) = j.pass(now_ms()).unwrap();
        // A segment abandoned at its first fragment holds no media and goes as "uploaded".
        assert!(
            deleted.iter().any(|(_, r)| *r == Reason::SizeLimit),
            "{deleted:?}"
        );
    };

    let rec = Recording::start(&rt, &root, &catalog);
    wait_until("a write failing with ENOSPC", || {
        enospc_after(&rec, 0).is_some()
    });
    let (free, _) = janitor::disk_space(&root).unwrap();
    assert!(free < 350 << 10, "{free} bytes free on a full tmpfs");

    // The janitor frees space while the recorder keeps trying, as in the agent.
    let reports = rec.reports().len();
    let newest = newest_fragment(&catalog);
    free_oldest();
    wait_until("a fragment written after the space returned", || {
        newest_fragment(&catalog) > newest
    });
    wait_until("the disk to fill up again", || {
        let success = rec
            .reports()
            .iter()
            .skip(reports)
            .position(|(s, _)| *s == JobStatus::Success);
        success.is_some_and(|i| enospc_after(&rec, reports + i).is_some())
    });
    let summary = rec.stop(&rt);
    assert!(summary.write_errors >= 2, "{summary:?}");
    assert!(summary.fragments >= 4, "{summary:?}");

    let report = recover(&catalog, &root, Some(STREAM)).unwrap();
    assert_eq!(report.unresolved, Vec::<String>::new());
    assert_consistent(&catalog, &root);
    assert!(!catalog.segments(Some(STREAM)).unwrap().is_empty());

    // A restart on the full disk: once the janitor has freed space, the new recorder writes.
    free_oldest();
    let newest = newest_fragment(&catalog);
    let rec = Recording::start(&rt, &root, &catalog);
    wait_until("a fragment written after the restart", || {
        newest_fragment(&catalog) > newest
    });
    rec.stop(&rt);
    let report = recover(&catalog, &root, Some(STREAM)).unwrap();
    assert_eq!(report.unresolved, Vec::<String>::new());
    assert_consistent(&catalog, &root);
}

/// Records until `n` segments are closed, then stops.
fn record_segments(root: &Path, catalog: &Arc<Catalog>, n: usize) {
    let rt = runtime();
    let rec = Recording::start(&rt, root, catalog);
    wait_until("closed segments", || {
        catalog
            .segments(Some(STREAM))
            .unwrap()
            .iter()
            .filter(|s| s.state == SegmentState::Closed)
            .count()
            >= n
    });
    rec.stop(&rt);
}

/// The two places a crash can leave a deletion (the row is DELETING either way): before the
/// unlink, and after it. Startup recovery finishes both; the segment beside them is untouched.
#[test]
fn crash_points_between_deletion_steps_are_repaired_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let catalog = open_catalog(dir.path());
    record_segments(&root, &catalog, 3);
    let segs = catalog.segments(Some(STREAM)).unwrap();
    let (before_unlink, after_unlink, kept) = (&segs[0], &segs[1], &segs[2]);

    catalog.mark_segment_deleting(before_unlink.id).unwrap();
    catalog.mark_segment_deleting(after_unlink.id).unwrap();
    std::fs::remove_file(root.join(&after_unlink.path)).unwrap();
    // From the mark on, nothing uploads them.
    let pending = catalog.pending_fragments(STREAM, 1000).unwrap();
    assert!(
        pending
            .iter()
            .all(|f| f.segment_id != before_unlink.id && f.segment_id != after_unlink.id)
    );
    assert!(pending.iter().any(|f| f.segment_id == kept.id));

    let report = recover(&catalog, &root, Some(STREAM)).unwrap();
    assert_eq!(report.unresolved, Vec::<String>::new());
    for s in [before_unlink, after_unlink] {
        assert!(
            report
                .actions
                .contains(&format!("{}: finished deleting", s.path)),
            "{:?}",
            report.actions
        );
        assert!(catalog.segment(s.id).unwrap().is_none(), "{}: row", s.path);
        assert!(
            catalog.fragments(s.id).unwrap().is_empty(),
            "{}: fragments",
            s.path
        );
        assert!(!root.join(&s.path).exists(), "{}: file", s.path);
    }
    let k = catalog.segment(kept.id).unwrap().unwrap();
    assert_eq!((k.state, k.size), (SegmentState::Closed, kept.size));
    assert_eq!(std::fs::metadata(root.join(&k.path)).unwrap().len(), k.size);
    assert_consistent(&catalog, &root);
}

/// The child process, killed if the test fails before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Segments to delete in the child; enough that it is still deleting when killed.
const VICTIMS: usize = 150;

/// A real kill -9: a child process (this test binary) deletes segments with
/// `store::delete::delete` one after another and is killed wherever it is; startup recovery
/// then leaves no DELETING row, no row without its file and no file without its row.
#[test]
fn kill_9_mid_deletion_is_repaired_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let catalog = open_catalog(dir.path());
    record_segments(&root, &catalog, 1);
    let template = catalog.segments(Some(STREAM)).unwrap().remove(0);
    let frags = catalog.fragments(template.id).unwrap();
    let day = Path::new(&template.path).parent().unwrap().to_owned();
    // Hard links to one real segment, each with its own rows: real files, cheap to make.
    for i in 1..=VICTIMS as i64 {
        let start_ms = template.start_ms + i * 1000;
        let rel = day.join(format!("{start_ms}.mkv")).display().to_string();
        std::fs::hard_link(root.join(&template.path), root.join(&rel)).unwrap();
        let id = catalog
            .insert_segment(&NewSegment {
                stream_name: STREAM.into(),
                path: rel,
                codec_id: template.codec_id.clone(),
                codec_private: template.codec_private.clone(),
                width: template.width,
                height: template.height,
                header_size: template.header_size,
                start_ms,
            })
            .unwrap();
        for f in &frags {
            catalog
                .add_fragment(
                    id,
                    &NewFragment {
                        offset: f.offset,
                        size: f.size,
                        timecode_ms: f.timecode_ms,
                        duration_ms: f.duration_ms,
                        frame_count: f.frame_count,
                        key_frame_count: f.key_frame_count,
                        clock_unsynced: false,
                    },
                )
                .unwrap();
        }
        catalog.close_segment(id).unwrap();
    }
    assert_eq!(
        audit(&catalog, &root, Some(STREAM)).unwrap().problems,
        Vec::<String>::new()
    );

    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "kill_9_child_deletes_segments", "--ignored"])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let total = VICTIMS + 1;
    // Killed as soon as a deletion is seen under way (a DELETING row), after a few complete
    // ones: the signal most often lands between the steps of that deletion. Half done is the
    // latest, so the child never finishes first.
    wait_until("the child to be mid-deletion", || {
        let segs = catalog.segments(Some(STREAM)).unwrap();
        let under_way = segs.iter().any(|s| s.state == SegmentState::Deleting);
        (segs.len() <= total - 3 && under_way) || segs.len() <= total / 2
    });
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");

    let left = catalog.segments(Some(STREAM)).unwrap();
    assert!(!left.is_empty(), "the child finished before the kill");
    let deleting: Vec<_> = left
        .iter()
        .filter(|s| s.state == SegmentState::Deleting)
        .collect();
    eprintln!(
        "killed with {} rows left, {} DELETING ({} of them without their file)",
        left.len(),
        deleting.len(),
        deleting
            .iter()
            .filter(|s| !root.join(&s.path).exists())
            .count()
    );

    let report = recover(&catalog, &root, Some(STREAM)).unwrap();
    assert_eq!(report.unresolved, Vec::<String>::new());
    let after = catalog.segments(Some(STREAM)).unwrap();
    assert_eq!(after.len(), left.len() - deleting.len());
    assert!(after.iter().all(|s| s.state == SegmentState::Closed));
    assert!(after.iter().all(|s| root.join(&s.path).is_file()));
    for s in &deleting {
        assert!(!root.join(&s.path).exists(), "{}: file", s.path);
    }
    let report = audit(&catalog, &root, Some(STREAM)).unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.files, after.len());
}

/// The child of [`kill_9_mid_deletion_is_repaired_at_startup`]; does nothing on its own.
#[test]
#[ignore = "child process of kill_9_mid_deletion_is_repaired_at_startup"]
fn kill_9_child_deletes_segments() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let catalog = Catalog::open(&dir.join("kvs-edge-agent.db")).unwrap();
    for s in catalog.segments(Some(STREAM)).unwrap() {
        kvs_edge_agent::store::delete::delete(&catalog, &dir.join("media"), &s).unwrap();
    }
}
