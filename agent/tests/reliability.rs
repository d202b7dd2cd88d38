//! The reliability suite: the real `kvs-edge-agent run` against real peers (the GStreamer RTSP
//! camera, the KVS ingest emulator, Mosquitto), with faults injected from outside:
//!
//! 1. kill -9 at random instants (seeded) while it records, uploads and deletes; after each kill
//!    `check` reads the crash state, the restarted agent's recovery must leave catalog and disk in
//!    agreement (audited with the agent frozen), and no committed fragment may be missing unless
//!    the janitor deleted its segment by policy; the emulator must never see a fragment resent
//!    after its PERSISTED ack was committed, nor fragments out of order;
//!    the same with power cuts: the recording directory and catalog on the power-cut file
//!    system (tests/powercut), cut at random instants and at exact steps of the crash ordering
//!    (its traps); every row committed before a cut must be durable, and the fragment in flight
//!    is either lost or, when its bytes were synced, indexed again by recovery;
//! 2. the camera going away and coming back;
//! 3. the MQTT broker going away and coming back (the agent answers over MQTT after each);
//! 4. a TCP proxy between the agent and the emulator cutting and stalling uploads mid-body;
//! 5. a full disk (ENOSPC on a small tmpfs).
//!
//! Prints a summary table (also written to target/reliability-summary.txt). The seed is printed;
//! RELIABILITY_SEED=N replays a run, RELIABILITY_LONG=1 runs the long mode. Under CI a missing
//! peer fails the test instead of skipping it.

#[path = "support/agent.rs"]
mod agent;
#[path = "support/bin.rs"]
mod bin;
#[path = "support/camera_agent.rs"]
mod camera_agent;
#[path = "support/check.rs"]
mod check;
#[path = "support/ctl.rs"]
mod ctl;
#[path = "support/kvs.rs"]
mod kvs;
#[path = "support/mkv.rs"]
mod mkv;
#[path = "support/mosquitto.rs"]
mod mosquitto;
#[path = "support/net.rs"]
mod net;
#[path = "support/peer.rs"]
mod peer;
#[path = "support/poll.rs"]
mod poll;
#[path = "support/powercut.rs"]
mod powercut;
#[path = "support/process.rs"]
mod process;
#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/recording.rs"]
mod recording;
#[path = "support/rng.rs"]
mod rng;
#[path = "support/rtsp.rs"]
mod rtsp;
#[path = "support/runtime.rs"]
mod runtime;
#[path = "support/sample.rs"]
mod sample;
#[path = "support/snapshot.rs"]
mod snapshot;
#[path = "support/table.rs"]
mod table;
#[path = "support/tmpfs.rs"]
mod tmpfs;
#[path = "support/watcher.rs"]
mod watcher;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use agent::{Agent, THING};
use camera_agent::*;
use kvs::{Emulator, each};
use mkv::{ffprobe_frames_ok, mkvmerge_ok};
use net::free_port;
use peer::require;
use poll::wait_until;
use powercut::PowerDisk;
use proxy::Proxy;
use rng::{Rng, long_mode, seed};
use rtsp::{RtspServer, require_gstreamer};
use runtime::runtime;
use sample::sample_clip;
use serde_json::Value;
use snapshot::*;
use table::{Row, table};
use tmpfs::Tmpfs;
use tokio::runtime::Runtime;

/// Generous bounds for events that normally take a second or two.
const EVENT: Duration = Duration::from_secs(45);

type Outcome = Result<Row, String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// SIGTERM: the agent must exit cleanly.
fn stop_cleanly(agent: &mut Agent) -> Result<(), String> {
    let (status, _) = agent.stop()?;
    ensure!(status.success(), "agent exit after SIGTERM: {status:?}");
    Ok(())
}

/// `check` finds catalog and disk in agreement, without a problem.
fn check_clean(agent: &Agent, when: &str) -> Result<(), String> {
    let check = agent.check(false);
    ensure!(
        check.ok && check.agree && check.problems.is_empty(),
        "check {when}: {}",
        check.output
    );
    Ok(())
}

/// Every fragment committed in `before` is in `after` (no policy deletes media here).
fn nothing_lost(before: &Snapshot, after: &Snapshot) -> Result<(), String> {
    match compare(before, after) {
        Ok(g) => ensure!(g.is_empty(), "media deleted without a policy: {g:?}"),
        Err(lost) => return Err(format!("fragments lost: {lost:#?}")),
    }
    Ok(())
}

/// Waits for the restarted agent's recorder to connect: it runs the stream's recovery first.
fn wait_recovered(agent: &mut Agent) -> Result<(), String> {
    let mut exited = false;
    wait_until("the recorder to start after recovery", EVENT, || {
        if !agent.is_running() {
            exited = true;
            return true;
        }
        agent.log().contains("source connected")
    })
    .map_err(|e| format!("{e}\n{}", agent.log_tail()))?;
    ensure!(
        !exited,
        "the agent exited at startup:\n{}",
        agent.log_tail()
    );
    Ok(())
}

/// Audits catalog and disk with the agent frozen (a consistent instant): only what a crash at
/// that instant could leave on the newest segment is tolerated, and nothing at all on the
/// segments of `repaired` (which recovery must have brought into agreement).
fn audit_frozen(agent: &Agent, repaired: &Snapshot) -> Result<Snapshot, String> {
    agent.freeze();
    let snap = snapshot(&agent.catalog(), STREAM);
    let check = agent.check(false);
    agent.thaw();
    let mut bad = check.unexpected(&snap);
    bad.extend(
        check
            .problems
            .iter()
            .filter(|p| {
                p.split_once(": ")
                    .is_some_and(|(path, _)| repaired.segments.contains_key(path))
            })
            .cloned(),
    );
    ensure!(
        bad.is_empty(),
        "check after recovery: {bad:?}\n{}",
        check.output
    );
    Ok(snap)
}

/// A random closed segment of `snap` passes mkvmerge -J and decodes with its indexed frames.
fn sample_segment(rng: &mut Rng, rec: &Path, snap: &Snapshot) -> Result<bool, String> {
    let closed: Vec<&Seg> = snap
        .segments
        .values()
        .filter(|s| s.state == "CLOSED" && snap.frags.keys().any(|(p, _)| *p == s.path))
        .collect();
    if closed.is_empty() {
        return Ok(false);
    }
    let seg = closed[rng.range(0, closed.len() as u64) as usize];
    probe_segment(rec, snap, &seg.path)
}

/// The segment at `path` passes mkvmerge -J and decodes with the frames `snap` indexes in it;
/// `false` (not probed) when it indexes none.
fn probe_segment(rec: &Path, snap: &Snapshot, path: &str) -> Result<bool, String> {
    let frames: u64 = snap
        .frags
        .values()
        .filter(|f| f.segment == path)
        .map(|f| u64::from(f.frame_count))
        .sum();
    if frames == 0 {
        return Ok(false);
    }
    let file = rec.join(path);
    mkvmerge_ok(&file)?;
    ffprobe_frames_ok(&file, frames)?;
    Ok(true)
}

/// The emulator's record of a stream: errors other than a body cut short (4000) fail; within a
/// session timecodes strictly increase; the first copies of all fragments come in timecode
/// order; a fragment whose PERSISTED ack the agent committed (`acked`: timecode -> number) was
/// never sent again (its number is the last copy). Returns the copies persisted and the
/// duplicates, each duplicate classified by [`in_flight`].
fn verify_emulator(
    index: &serde_json::Value,
    acked: &BTreeMap<i64, String>,
    faults: &[Fault],
) -> Result<Dups, String> {
    let errors = index["errors"].as_array().cloned().unwrap_or_default();
    let bad: Vec<_> = errors.iter().filter(|e| e["error_id"] != 4000).collect();
    ensure!(bad.is_empty(), "emulator errors: {bad:?}");
    let frags = index["fragments"].as_array().cloned().unwrap_or_default();
    let mut per_session: HashMap<i64, i64> = HashMap::new();
    let mut copies: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    // The previous copy of each timecode: (session, received_ms).
    let mut previous: HashMap<i64, (i64, i64)> = HashMap::new();
    let ended: HashMap<i64, String> = index["session_log"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["session"].as_i64()?, s["ended"].as_str()?.to_owned())))
        .collect();
    let mut dups = Dups::default();
    let mut last_first = i64::MIN;
    for f in &frags {
        let tc = f["timecode"].as_i64().unwrap();
        let session = f["session"].as_i64().unwrap();
        let number = f["fragment_number"].as_str().unwrap().to_owned();
        if let Some(prev) = per_session.insert(session, tc) {
            ensure!(tc > prev, "session {session}: {tc} after {prev}");
        }
        let received = f["received_ms"].as_i64().unwrap_or(i64::MAX);
        if let Some((prev_session, prev_received)) = previous.insert(tc, (session, received)) {
            dups.total += 1;
            let how = ended.get(&prev_session).map_or("open", String::as_str);
            if in_flight(tc, how, prev_received, faults) {
                dups.in_flight += 1;
            } else {
                dups.outside.push(format!(
                    "{tc}: copy in session {session}, the previous one in session \
                     {prev_session} (ended {how}, received at {prev_received})"
                ));
            }
        }
        let c = copies.entry(tc).or_default();
        if c.is_empty() {
            ensure!(
                tc > last_first,
                "fragment {tc} first persisted after {last_first}: out of order"
            );
            last_first = tc;
        }
        c.push(number);
    }
    for (tc, number) in acked {
        let Some(c) = copies.get(tc) else {
            return Err(format!(
                "the catalog has {tc} acknowledged as {number}, the emulator never persisted it"
            ));
        };
        ensure!(
            c.contains(number),
            "{tc}: acknowledged as {number}, emulator copies {c:?}"
        );
        ensure!(
            c.last() == Some(number),
            "{tc}: sent again after its PERSISTED ack ({number}) was committed: {c:?}"
        );
    }
    dups.copies = frags.len();
    ensure!(
        dups.total == frags.len() - copies.len(),
        "duplicate count {} != copies {} - timecodes {}",
        dups.total,
        frags.len(),
        copies.len()
    );
    Ok(dups)
}

/// A fault injected from outside: its wall-clock instant, and the timecodes the agent's catalog
/// had committed but not yet acknowledged (not UPLOADED) right after it.
struct Fault {
    ms: i64,
    unacked: BTreeSet<i64>,
}

impl Fault {
    fn now(snap: &Snapshot) -> Self {
        Fault {
            ms: now_ms(),
            unacked: snap
                .frags
                .values()
                .filter(|f| f.upload_state != "UPLOADED")
                .map(|f| f.timecode_ms)
                .collect(),
        }
    }
}

/// The emulator's duplicates: fragments (by timecode) persisted more than once.
#[derive(Debug, Default)]
struct Dups {
    /// Fragments persisted, every copy counted.
    copies: usize,
    /// Copies beyond the first.
    total: usize,
    /// Of those, copies whose previous copy was in flight at a fault.
    in_flight: usize,
    /// The others, described: a resend nothing explains.
    outside: Vec<String>,
}

impl Dups {
    /// The table's "lost" cell: nothing lost, and the duplicates.
    fn cell(&self) -> String {
        format!(
            "0 (dup {}: {} in flight at a fault, {} outside)",
            self.total,
            self.in_flight,
            self.outside.len()
        )
    }
}

/// Whether a copy of `tc` was in flight (sent, not acknowledged) when a fault hit, so that a
/// resend is expected: its session did not end with the body (`ended` is `cut`, `dropped`,
/// `idle`, `error`, `expired` or still open: the PERSISTED ack may never have reached the
/// agent), or the catalog still had it unacknowledged right after a fault that came after the
/// copy's last byte reached the emulator.
fn in_flight(tc: i64, ended: &str, received_ms: i64, faults: &[Fault]) -> bool {
    ended != "body_end"
        || faults
            .iter()
            .any(|f| f.unacked.contains(&tc) && received_ms <= f.ms)
}

fn note_acked(acked: &mut BTreeMap<i64, String>, snap: &Snapshot) -> Result<(), String> {
    for f in snap.frags.values() {
        if let (Some(n), "UPLOADED") = (&f.fragment_number, f.upload_state.as_str())
            && let Some(prev) = acked.insert(f.timecode_ms, n.clone())
        {
            ensure!(
                prev == *n,
                "{}: acknowledged as {prev}, then as {n}",
                f.timecode_ms
            );
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Recording,
    Uploading,
    Deleting,
}

// --- 1. kill -9, and power cuts ----------------------------------------------------------------

/// How the agent goes down at the random instant.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Crash {
    /// SIGKILL: every write already made survives in the page cache.
    Kill9,
    /// SIGKILL and the disk's power at the same instant: the recording directory (and the
    /// catalog in it) is the power-cut file system, so what was not made durable is lost.
    PowerCut,
}

/// What a power cut found: the state visible through the mount just before it, against the
/// durable state after it.
#[derive(Default)]
struct CutTally {
    /// Fragments with a committed row before the cut that the durable catalog lacks, described.
    losses: Vec<String>,
    /// Cuts that caught a fragment in flight: its bytes written past the indexed size of the
    /// open segment, its row not committed.
    in_flight: usize,
    /// Of those, the fragments whose bytes had been synced (recovery indexes them again); the
    /// others are lost.
    in_flight_synced: usize,
    /// Segments open at a cut, closed by recovery, that ffprobe decoded whole.
    probed: usize,
    /// Cuts at an exact step (a trap), by step.
    at: BTreeMap<&'static str, usize>,
}

/// The exact steps a power cut is held at, by phase and turn (`(k / 3) % 3`): a label, and the
/// file system's trap (see tests/powercut/powercut.py). Other turns cut at a random instant.
const CUT_STEPS: [(Phase, usize, &str, &str); 4] = [
    (
        Phase::Recording,
        1,
        "a fragment written, before its fsync",
        "fsync .mkv after write .mkv",
    ),
    (
        Phase::Recording,
        2,
        "a fragment synced, before its commit",
        "write -wal after fsync .mkv",
    ),
    (
        Phase::Deleting,
        0,
        "a segment marked DELETING, before its unlink",
        "unlink .mkv",
    ),
    (
        Phase::Deleting,
        1,
        "a segment unlinked, before its directory's fsync",
        "fsyncdir * after unlink .mkv",
    ),
];

/// Where cut `k` falls: at a random instant (`None`), or at an exact step of the agent's
/// ordering, held there by a trap (a label, the trap).
fn cut_trap(phase: Phase, k: usize) -> Option<(&'static str, &'static str)> {
    CUT_STEPS
        .iter()
        .find(|(p, turn, _, _)| *p == phase && *turn == (k / 3) % 3)
        .map(|(_, _, label, spec)| (*label, *spec))
}

/// A read-only connection to the catalog that has read it once (so that it holds the WAL
/// open, and needs no write to read again).
fn open_reader(db: &Path) -> rusqlite::Connection {
    let conn = snapshot::reader(db);
    read_snapshot(&conn, STREAM);
    conn
}

/// Whether the disk's trap has caught its operation (a failed request counts as not yet).
fn trapped(disk: &PowerDisk) -> bool {
    disk.trapped().is_ok_and(|t| t.is_some())
}

/// The OPEN segments of `snap` whose file, as the mount shows it, holds bytes past the indexed
/// size (a fragment in flight): path -> indexed size.
fn unindexed_tails(rec: &Path, snap: &Snapshot) -> BTreeMap<String, u64> {
    snap.segments
        .values()
        .filter(|s| s.state == "OPEN")
        .filter_map(|s| {
            let len = std::fs::metadata(rec.join(&s.path)).ok()?.len();
            (len > s.size).then(|| (s.path.clone(), s.size))
        })
        .collect()
}

fn crashes(rt: &Runtime, rng: &mut Rng, base: &Path, crash: Crash) -> Outcome {
    let (name, variable, long, short) = match crash {
        Crash::Kill9 => ("kill9", "RELIABILITY_KILLS", 150, 51),
        Crash::PowerCut => ("powercut", "RELIABILITY_CUTS", 100, 24),
    };
    let kills = std::env::var(variable)
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(if long_mode() { long } else { short });
    let dir = base.join(name);
    let mut disk = match crash {
        Crash::Kill9 => None,
        Crash::PowerCut if !powercut::have_fuse() => {
            return Ok(skipped("power cut", "no FUSE here"));
        }
        Crash::PowerCut => Some(PowerDisk::new(&dir.join("fs"), &dir.join("rec"))),
    };
    let camera = RtspServer::start(&["--source", "live"]);
    let emulator = Emulator::start(&dir.join("kvs"), &[]);
    let req = request(
        "RTSP_URI",
        &format!(
            r#"{ALWAYS_UPLOAD},"DeletionConfig":{{"EdgeRetentionInHours":1,"LocalSizeConfig":{{"MaxLocalMediaSizeInMB":64,"StrategyOnFullSize":"DELETE_OLDEST_MEDIA"}},"DeleteAfterUpload":true}}"#
        ),
    );
    let (secrets, args) = setup(&dir, &camera.url, &req);
    let mut agent = Agent::new(
        &dir,
        &settings(&secrets, None, ""),
        &args,
        &upload_env(&emulator.url()),
    );
    let mut acked = BTreeMap::new();
    let mut before = Snapshot::default();
    let mut phase_kills: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut torn, mut mid_delete, mut sampled, mut cli_repairs) = (0, 0, 0, 0);
    let mut gone: BTreeMap<String, usize> = BTreeMap::new();
    // Timecodes of the fragments the janitor deleted: DeleteAfterUpload is the only policy that
    // can fire here (64 MB and an hour are out of reach), so each must have reached the cloud.
    let mut deleted: BTreeSet<i64> = BTreeSet::new();
    let mut seen: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut faults: Vec<Fault> = Vec::new();
    let mut cuts = CutTally::default();
    // After a cut: the tails in flight at it (segment path -> indexed size then).
    let mut tails: BTreeMap<String, u64> = BTreeMap::new();
    let phases = [Phase::Recording, Phase::Uploading, Phase::Deleting];
    if let Some(d) = disk.as_mut() {
        d.mount()?;
    }
    for k in 0..=kills {
        let phase = phases[k % phases.len()];
        // Deleting: the target is the janitor's first pass, which runs at startup beside
        // recovery and deletes what was uploaded before the last kill; so no audit first (the
        // state this run leaves is compared with the last one after the kill, and audited at
        // the next restart).
        let startup_kill = phase == Phase::Deleting && k < kills;
        let trap = disk.as_ref().and_then(|_| cut_trap(phase, k));
        // A trap holds every write after its own: the catalog is then read through a
        // connection opened before (see `reader`).
        let mut reader = None;
        if let (Some(d), Some((_, spec)), true) = (disk.as_ref(), trap, startup_kill) {
            reader = Some(open_reader(&agent.catalog()));
            d.trap(spec)?;
        }
        let t_start = Instant::now();
        agent.start();
        let start = if startup_kill {
            before.clone()
        } else {
            wait_recovered(&mut agent)?;
            let start = audit_frozen(&agent, &before)?;
            tally(
                &mut gone,
                &mut deleted,
                compare(&before, &start)
                    .map_err(|lost| format!("kill {k}: fragments lost: {lost:#?}"))?,
            );
            note_acked(&mut acked, &start)?;
            if crash == Crash::PowerCut {
                cut_recovered(&mut agent, &before, &std::mem::take(&mut tails), &mut cuts)?;
            }
            start
        };
        let t_recovered = t_start.elapsed();
        if k == kills {
            break;
        }
        let deleted_before = if startup_kill {
            0
        } else {
            agent.log().matches(" deleted ").count()
        };
        let what = format!("kill {k}: the agent {phase:?}");
        let mut exited = false;
        wait_until(&what, EVENT, || {
            if !agent.is_running() {
                exited = true;
                return true;
            }
            match phase {
                Phase::Recording => {
                    let s = snapshot(&agent.catalog(), STREAM);
                    s.frags.keys().any(|key| !start.frags.contains_key(key))
                }
                // A fragment uploaded since the restart, and none pending (so that the segment
                // recovery closes at the next restart is all uploaded, and the janitor's first
                // pass deletes it: the next cycle's target).
                Phase::Uploading => {
                    let s = snapshot(&agent.catalog(), STREAM);
                    let fresh = s.frags.iter().any(|(key, f)| {
                        f.upload_state == "UPLOADED"
                            && start
                                .frags
                                .get(key)
                                .is_none_or(|g| g.upload_state != "UPLOADED")
                    });
                    fresh && s.frags.values().all(|f| f.upload_state != "PENDING")
                }
                // Or a trap set before the start caught the janitor (or recovery) deleting.
                Phase::Deleting => {
                    agent.log().matches(" deleted ").count() > deleted_before
                        || trap.is_some() && disk.as_ref().is_some_and(trapped)
                }
            }
        })
        .map_err(|e| format!("{e}\n{}", agent.log_tail()))?;
        ensure!(!exited, "{what}: the agent exited:\n{}", agent.log_tail());
        let t_event = t_start.elapsed();
        if let (Some(d), Some((label, spec))) = (disk.as_ref(), trap) {
            if !startup_kill {
                reader = Some(open_reader(&agent.catalog()));
                d.trap(spec)?;
            }
            wait_until(&format!("cut {k}: the trap {spec}"), EVENT, || trapped(d))
                .map_err(|e| format!("{e}\n{}", agent.log_tail()))?;
            *cuts.at.entry(label).or_default() += 1;
        }
        // The random instant: within a fragment's time while recording or uploading, within a
        // janitor pass's time while deleting.
        let delay = match phase {
            // A trap holds the agent at its step already (and the catalog is not to be opened
            // while it does).
            _ if trap.is_some() => Duration::ZERO,
            // Half the time anywhere in the next fragment's time; half the time around its
            // write and commit, the instant that leaves an unindexed tail.
            Phase::Recording if rng.range(0, 2) == 0 => rng.millis(0, 1500),
            Phase::Recording => {
                let s = snapshot(&agent.catalog(), STREAM);
                let last = s.frags.values().max_by_key(|f| f.timecode_ms);
                let dur = last.map_or(1000, |f| f.duration_ms.max(0) as u64);
                let since = (now_ms() - last.map_or(now_ms(), |f| f.timecode_ms + f.duration_ms))
                    .max(0) as u64;
                Duration::from_millis((dur + rng.range(0, 60)).saturating_sub(since + 30))
            }
            Phase::Uploading => rng.millis(0, 500),
            Phase::Deleting => rng.millis(0, 40),
        };
        std::thread::sleep(delay);
        let kill_ms = now_ms();
        let mut caught = String::new();
        let visible = match disk.as_mut() {
            None => {
                agent.kill9()?;
                None
            }
            Some(d) => {
                if trap.is_some() {
                    caught = format!(", at {}", d.trapped()?.unwrap_or_default());
                }
                // Frozen first, so that what it committed can be read before the cut: the
                // instant of the cut is the instant of the freeze.
                agent.freeze();
                let visible = match reader.take() {
                    Some(r) => read_snapshot(&r, STREAM),
                    None => snapshot(&agent.catalog(), STREAM),
                };
                let in_flight = unindexed_tails(&agent.rec, &visible);
                d.cut()?;
                agent.kill9()?;
                // The backing directory is the disk after the cut: a tail longer there than
                // the indexed size was synced, and recovery must index it again.
                for (path, indexed) in in_flight {
                    cuts.in_flight += 1;
                    let durable = std::fs::metadata(d.backing.join(&path)).map_or(0, |m| m.len());
                    if durable > indexed {
                        cuts.in_flight_synced += 1;
                        tails.insert(path, indexed);
                    }
                }
                d.mount()?;
                Some(visible)
            }
        };
        eprintln!(
            "reliability: {name} {k} {phase:?}: recovered at {} ms, event at {} ms, down {} ms later{caught}",
            t_recovered.as_millis(),
            t_event.as_millis(),
            delay.as_millis()
        );
        *phase_kills.entry(phase_name(phase)).or_default() += 1;

        // The crash state: only the residue a crash may leave, on the newest segment.
        let previous = std::mem::replace(&mut before, snapshot(&agent.catalog(), STREAM));
        if let Some(visible) = &visible {
            // Every row committed before the cut is durable (the catalog syncs at each
            // commit). The durable catalog may hold one more: a commit synced by the frozen
            // agent, not yet published to readers. A loss is noted and the run goes on, so that
            // the failure lists them all.
            let lost = match compare(visible, &before) {
                Ok(g) => g.iter().map(|g| format!("{g:?}")).collect(),
                Err(lost) => lost,
            };
            cuts.losses
                .extend(lost.into_iter().map(|l| format!("cut {k}: {l}")));
        }
        faults.push(Fault {
            ms: kill_ms,
            ..Fault::now(&before)
        });
        if startup_kill {
            tally(
                &mut gone,
                &mut deleted,
                compare(&previous, &before)
                    .map_err(|lost| format!("kill {k}: fragments lost: {lost:#?}"))?,
            );
        }
        seen.extend(before.frags.keys().cloned());
        note_acked(&mut acked, &before)?;
        let check = agent.check(false);
        let bad = check.unexpected(&before);
        ensure!(
            bad.is_empty(),
            "kill {k} ({phase:?}): check after the kill: {bad:?}\n{}",
            check.output
        );
        if !check.problems.is_empty() {
            torn += 1;
        }
        if before.segments.values().any(|s| s.state == "DELETING") {
            mid_delete += 1;
        }
        // Every fourth time `check --repair` (the startup recovery, from the command line)
        // repairs before the restart; otherwise the restarted agent's own recovery does.
        if k % 4 == 3 {
            let repaired = agent.check(true);
            ensure!(
                repaired.ok && repaired.agree && repaired.problems.is_empty(),
                "kill {k}: check --repair: {}",
                repaired.output
            );
            let after = snapshot(&agent.catalog(), STREAM);
            match compare(&before, &after) {
                Ok(g) => ensure!(
                    g.iter().all(|(r, _)| *r == Gone::FinishedDeletion),
                    "kill {k}: check --repair deleted media: {g:?}"
                ),
                Err(lost) => return Err(format!("kill {k}: check --repair lost: {lost:#?}")),
            }
            cli_repairs += 1;
            // A repaired store has every segment closed: a sample of them must play.
            if sample_segment(rng, &agent.rec, &after)? {
                sampled += 1;
            }
        }
    }
    // The backlog recorded before the last restart is uploaded (then deleted after upload).
    let last = snapshot(&agent.catalog(), STREAM);
    let pending: Vec<(String, u64)> = last
        .frags
        .iter()
        .filter(|(_, f)| f.upload_state != "UPLOADED")
        .map(|(k, _)| k.clone())
        .collect();
    wait_until(
        "the backlog to be uploaded",
        Duration::from_secs(90),
        || {
            let s = snapshot(&agent.catalog(), STREAM);
            s.frags.values().any(|f| f.upload_state == "FAILED")
                || pending
                    .iter()
                    .all(|k| s.frags.get(k).is_none_or(|f| f.upload_state == "UPLOADED"))
        },
    )
    .map_err(|e| format!("{e}\n{}", agent.log_tail()))?;
    // Nothing here is refused by the cloud: a fragment marked failed is one never uploaded.
    let failed: Vec<Frag> = snapshot(&agent.catalog(), STREAM)
        .frags
        .into_values()
        .filter(|f| f.upload_state == "FAILED")
        .collect();
    ensure!(
        failed.is_empty(),
        "fragments marked failed: {failed:#?}\n{}",
        agent.log_tail()
    );
    stop_cleanly(&mut agent)?;
    let end = snapshot(&agent.catalog(), STREAM);
    note_acked(&mut acked, &end)?;
    tally(
        &mut gone,
        &mut deleted,
        compare(&last, &end).map_err(|lost| format!("after the last run: {lost:#?}"))?,
    );
    check_clean(&agent, "after a clean stop")?;
    for _ in 0..3 {
        if sample_segment(rng, &agent.rec, &end)? {
            sampled += 1;
        }
    }
    let index = rt.block_on(emulator.index(STREAM));
    let dups = verify_emulator(&index, &acked, &faults)?;
    let copies = dups.copies;
    let persisted: BTreeSet<i64> = each(&index, "fragments", "timecode", Value::as_i64);
    let unsent: Vec<&i64> = deleted.difference(&persisted).collect();
    ensure!(
        unsent.is_empty(),
        "deleted without having been uploaded (lost): {unsent:?}"
    );
    ensure!(
        dups.outside.is_empty(),
        "{} duplicates not in flight at a kill: {:#?}",
        dups.outside.len(),
        dups.outside
    );
    ensure!(
        dups.in_flight <= 2 * kills + 2,
        "{} duplicate fragments for {kills} kills: more than a kill can leave in flight",
        dups.in_flight
    );
    ensure!(
        cuts.losses.is_empty(),
        "committed fragments lost at a power cut: {:#?}",
        cuts.losses
    );
    drop(camera);
    let phases: Vec<String> = phase_kills
        .iter()
        .map(|(p, n)| format!("{n} {p}"))
        .collect();
    let gone: Vec<String> = gone.iter().map(|(r, n)| format!("{n} {r}")).collect();
    let recovered = format!(
        "{kills}/{kills}: {} fragments committed, {} torn tails, {mid_delete} mid-deletion, \
         {cli_repairs} check --repair, {sampled} segments probed, {copies} uploaded \
         ({} resent after a crash), {} deleted by the janitor, each found in the \
         emulator ({})",
        seen.len(),
        torn,
        dups.total,
        deleted.len(),
        if gone.is_empty() {
            "none".into()
        } else {
            gone.join(", ")
        }
    );
    Ok(match crash {
        Crash::Kill9 => Row {
            scenario: "kill -9 (record/upload/delete)".into(),
            faults: format!("{kills} SIGKILL ({})", phases.join(", ")),
            recovered,
            lost: dups.cell(),
            result: "ok".into(),
        },
        Crash::PowerCut => Row {
            scenario: "power cut (record/upload/delete)".into(),
            faults: format!("{kills} cuts ({})", phases.join(", ")),
            recovered: format!(
                "{recovered}; {} open segments probed after recovery; cuts at a step: {}",
                cuts.probed,
                cuts.at
                    .iter()
                    .map(|(at, n)| format!("{n} {at}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            lost: format!(
                "{} committed; {} in flight at a cut ({} synced and indexed again, {} lost), {}",
                cuts.losses.len(),
                cuts.in_flight,
                cuts.in_flight_synced,
                cuts.in_flight - cuts.in_flight_synced,
                dups.cell()
            ),
            result: "ok".into(),
        },
    })
}

/// After a power cut's restart: each fragment in flight at the cut whose bytes were synced
/// (`tails`: segment path -> indexed size then) was indexed again by recovery, unless its
/// segment was deleted since (the janitor's first pass may come first); each segment open at
/// the cut, closed by recovery, decodes whole with its indexed frames. Read with the agent
/// frozen.
fn cut_recovered(
    agent: &mut Agent,
    at_cut: &Snapshot,
    tails: &BTreeMap<String, u64>,
    cuts: &mut CutTally,
) -> Result<(), String> {
    agent.freeze();
    let now = snapshot(&agent.catalog(), STREAM);
    let result = (|| {
        for (path, indexed) in tails {
            let indexed_again = now
                .frags
                .values()
                .any(|f| f.segment == *path && f.offset >= *indexed);
            ensure!(
                indexed_again || !now.segments.contains_key(path),
                "{path}: the fragment synced past {indexed} before the cut was not indexed again"
            );
        }
        for seg in at_cut.segments.values().filter(|s| s.state == "OPEN") {
            let closed = now
                .segments
                .get(&seg.path)
                .is_some_and(|s| s.state == "CLOSED");
            if closed && probe_segment(&agent.rec, &now, &seg.path)? {
                cuts.probed += 1;
            }
        }
        Ok(())
    })();
    agent.thaw();
    result
}

/// Counts the policy deletions by reason and remembers the timecodes deleted.
fn tally(
    gone: &mut BTreeMap<String, usize>,
    deleted: &mut BTreeSet<i64>,
    reasons: Vec<(Gone, i64)>,
) {
    for (r, tc) in reasons {
        *gone.entry(format!("{r:?}")).or_default() += 1;
        deleted.insert(tc);
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Recording => "recording",
        Phase::Uploading => "uploading",
        Phase::Deleting => "deleting",
    }
}

// --- 2. camera flapping ----------------------------------------------------------------------------

fn camera_flapping(rng: &mut Rng, base: &Path) -> Outcome {
    let flaps = if long_mode() { 12 } else { 4 };
    let dir = base.join("camera");
    let port = free_port().to_string();
    let mut camera = Some(RtspServer::start(&["--source", "live", "--port", &port]));
    let url = camera.as_ref().unwrap().url.clone();
    let (secrets, args) = setup(&dir, &url, &request("RTSP_URI", ""));
    let mut agent = Agent::new(&dir, &settings(&secrets, None, ""), &args, &[]);
    agent.start();
    let db = agent.catalog();
    wait_until("recording", EVENT, || {
        snapshot(&db, STREAM).committed() >= 2
    })
    .map_err(|e| format!("{e}\n{}", agent.log_tail()))?;
    let first = snapshot(&db, STREAM);
    let mut recovery = Vec::new();
    for i in 0..flaps {
        let connected = agent.log().matches("source connected").count();
        // Alternately a power cut (SIGKILL) and an orderly stop (SIGTERM).
        let cam = camera.take().unwrap();
        if i % 2 == 0 {
            drop(cam);
        } else {
            cam.terminate();
        }
        let down = rng.millis(300, 3000);
        std::thread::sleep(down);
        ensure!(
            agent.is_running(),
            "flap {i}: the agent exited:\n{}",
            agent.log_tail()
        );
        let back = now_ms();
        camera = Some(RtspServer::start(&["--source", "live", "--port", &port]));
        let t0 = Instant::now();
        wait_until(&format!("flap {i}: recording again"), EVENT, || {
            agent.log().matches("source connected").count() > connected
                && snapshot(&db, STREAM)
                    .newest_timecode()
                    .is_some_and(|t| t >= back)
        })
        .map_err(|e| format!("{e}\n{}", agent.log_tail()))?;
        recovery.push(t0.elapsed());
        ensure!(
            agent.is_running(),
            "flap {i}: the agent exited:\n{}",
            agent.log_tail()
        );
    }
    stop_cleanly(&mut agent)?;
    let end = snapshot(&db, STREAM);
    nothing_lost(&first, &end)?;
    check_clean(&agent, "after the flaps")?;
    let worst = recovery.iter().max().copied().unwrap_or_default();
    Ok(Row {
        scenario: "camera flapping".into(),
        faults: format!("{flaps} camera outages (SIGKILL/SIGTERM, 0.3-3 s)"),
        recovered: format!(
            "{flaps}/{flaps} reconnected (slowest {:.1} s), {} fragments, check agrees",
            worst.as_secs_f64(),
            end.committed()
        ),
        lost: "0".into(),
        result: "ok".into(),
    })
}

// --- 3. broker outages -----------------------------------------------------------------------------

fn broker_outages(rt: &Runtime, rng: &mut Rng, base: &Path) -> Outcome {
    use ctl::{ctl, stdout_json};
    use mosquitto::Mosquitto;
    use watcher::{Msg, Watcher};
    let outages = if long_mode() { 10 } else { 3 };
    let dir = base.join("broker");
    std::fs::create_dir_all(&dir).unwrap();
    let Some(mut broker) = Mosquitto::start(&dir) else {
        return Ok(skipped("broker outages", "mosquitto not installed"));
    };
    let url = broker.url();
    let req = request("FILE_URI", "");
    let (secrets, args) = setup(&dir, &sample_clip().display().to_string(), &req);
    let mut args = args;
    args.extend(["--broker".to_owned(), url.clone()]);
    let mut agent = Agent::new(&dir, &settings(&secrets, Some(&url), ""), &args, &[]);
    agent.start();
    let db = agent.catalog();
    wait_until("recording", EVENT, || {
        snapshot(&db, STREAM).committed() >= 1
    })
    .map_err(|e| format!("{e}\n{}", agent.log_tail()))?;
    let agent_topic = format!("kvs-edge/{THING}/agent");
    let online = |m: &Msg| {
        m.topic == agent_topic && !m.retain && m.payload.starts_with(br#"{"Status":"online""#)
    };
    {
        let w = rt.block_on(Watcher::start(broker.port));
        rt.block_on(w.agent_online(EVENT));
    }
    let req_file = format!("file://{}", dir.join("cam.json").display());
    let mut answered = 0;
    let mut reapplied = 0;
    for i in 0..outages {
        broker.stop();
        let n = snapshot(&db, STREAM).committed();
        // Recording goes on without the broker.
        wait_until(
            &format!("outage {i}: recording without the broker"),
            EVENT,
            || snapshot(&db, STREAM).committed() > n,
        )
        .map_err(|e| format!("{e}\n{}", agent.log_tail()))?;
        std::thread::sleep(rng.millis(0, 2500));
        ensure!(
            agent.is_running(),
            "outage {i}: the agent exited:\n{}",
            agent.log_tail()
        );
        broker.restart();
        let w = rt.block_on(Watcher::start(broker.port));
        let t = Instant::now();
        // A live (not retained) `online` from the agent: it has reconnected.
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            rt.block_on(w.wait("the agent back online", EVENT, |m| m.iter().any(online)))
        }));
        ensure!(r.is_ok(), "outage {i}: no reconnect:\n{}", agent.log_tail());
        let out = rt.block_on(ctl(
            &url,
            &["describe-edge-configuration", "--stream-name", STREAM],
        ));
        ensure!(
            out.status.success(),
            "outage {i}: describe: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let d = stdout_json(&out);
        ensure!(d["SyncStatus"] == "IN_SYNC", "outage {i}: describe: {d}");
        ensure!(
            d["EdgeAgentStatus"]["LastRecorderStatus"]["RecorderStatus"] == "SUCCESS",
            "outage {i}: describe: {d}"
        );
        answered += 1;
        // Every other time a live request: the renewed subscription applies it (a new session).
        if i % 2 == 0 {
            let sessions = agent.log().matches("source connected").count();
            let out = rt.block_on(ctl(
                &url,
                &[
                    "start-edge-configuration-update",
                    "--cli-input-json",
                    &req_file,
                ],
            ));
            ensure!(
                out.status.success() && stdout_json(&out)["SyncStatus"] == "IN_SYNC",
                "outage {i}: start-edge-configuration-update: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            wait_until(
                "the resent configuration to restart the recorder",
                EVENT,
                || agent.log().matches("source connected").count() > sessions,
            )
            .map_err(|e| format!("{e}\n{}", agent.log_tail()))?;
            reapplied += 1;
        }
        eprintln!(
            "reliability: broker outage {i}: back online and answering in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    stop_cleanly(&mut agent)?;
    check_clean(&agent, "after the outages")?;
    Ok(Row {
        scenario: "broker outages".into(),
        faults: format!("{outages} Mosquitto stops (0-2.5 s after recording continues)"),
        recovered: format!(
            "{outages}/{outages} reconnected; describe answered {answered}, live update applied {reapplied}"
        ),
        lost: "0".into(),
        result: "ok".into(),
    })
}

fn skipped(scenario: &str, why: &str) -> Row {
    Row {
        scenario: scenario.into(),
        faults: "-".into(),
        recovered: "-".into(),
        lost: "-".into(),
        result: format!("skipped ({why})"),
    }
}

// --- 4. upload connection cut and stalled -------------------------------------------------------

fn proxy_faults(rt: &Runtime, rng: &mut Rng, base: &Path) -> Outcome {
    let cuts = if long_mode() { 20 } else { 6 };
    let stalls = if long_mode() { 6 } else { 2 };
    let dir = base.join("proxy");
    let emulator = Emulator::start(&dir.join("kvs"), &[]);
    let proxy = rt.block_on(Proxy::start(emulator.port));
    let req = request(
        "FILE_URI",
        &format!(r#"{ALWAYS_UPLOAD},"DeletionConfig":{{"DeleteAfterUpload":false}}"#),
    );
    let (secrets, args) = setup(&dir, &sample_clip().display().to_string(), &req);
    let mut agent = Agent::new(
        &dir,
        &settings(&secrets, None, ""),
        &args,
        &upload_env(&proxy.url()),
    );
    agent.start();
    let db = agent.catalog();
    let st = proxy.state.clone();
    let mut snaps = Vec::new();
    let mut plan: Vec<&str> = Vec::new();
    plan.extend(std::iter::repeat_n("cut", cuts));
    plan.extend(std::iter::repeat_n("stall", stalls));
    plan.extend(std::iter::repeat_n("stall+cut", stalls));
    if long_mode() {
        plan.push("silent");
    }
    // Shuffled by the seed.
    for i in (1..plan.len()).rev() {
        let j = rng.range(0, i as u64 + 1) as usize;
        plan.swap(i, j);
    }
    // After a cut, the next fault waits for the agent's next PutMedia connection.
    let mut need_conns = 1;
    let mut slowest_after_progress = Duration::ZERO;
    let mut uploaded_at_open = 0;
    let mut faults: Vec<Fault> = Vec::new();
    for (i, kind) in plan.iter().enumerate() {
        // Mid-body: a PutMedia request open with a random part of its body forwarded.
        let threshold = rng.range(1, 40_000);
        wait_until(
            &format!("fault {i}: a PutMedia body under way"),
            EVENT,
            || {
                st.putmedia_conns.load(Ordering::SeqCst) >= need_conns
                    && st.putmedia_open.load(Ordering::SeqCst) > 0
                    && st.putmedia_body_now.load(Ordering::SeqCst) >= threshold
            },
        )
        .map_err(|e| format!("{e}\n{}", agent.log_tail()))?;
        match *kind {
            "cut" => proxy.cut(),
            "stall" => {
                proxy.stall();
                std::thread::sleep(rng.millis(1000, 4000));
                proxy.resume();
            }
            "stall+cut" => {
                proxy.stall();
                std::thread::sleep(rng.millis(500, 2500));
                proxy.cut();
                proxy.resume();
            }
            _ => {
                // Longer than the agent's 30 s ack timeout: it must give up on the connection.
                proxy.stall();
                std::thread::sleep(Duration::from_secs(35));
                proxy.resume();
            }
        }
        if kind.contains("cut") {
            faults.push(Fault::now(&snapshot(&db, STREAM)));
            need_conns = st.putmedia_conns.load(Ordering::SeqCst) + 1;
            // A connection that made progress is no failure in a row: the agent comes back
            // after its minimum backoff (1 s), not after a delay grown by earlier cuts.
            let t = Instant::now();
            wait_until(
                &format!("fault {i}: a new PutMedia connection"),
                EVENT,
                || st.putmedia_conns.load(Ordering::SeqCst) >= need_conns,
            )
            .map_err(|e| format!("{e}\n{}", agent.log_tail()))?;
            // Whether the cut connection persisted fragments (none can be acknowledged between
            // the cut and the next connection).
            let uploaded = snapshot(&db, STREAM).uploaded();
            let progressed = uploaded > uploaded_at_open;
            uploaded_at_open = uploaded;
            eprintln!(
                "reliability: fault {i} {kind}: reconnected in {:.1} s (progress before: {progressed})",
                t.elapsed().as_secs_f64()
            );
            if progressed {
                let took = t.elapsed();
                ensure!(
                    took < Duration::from_secs(10),
                    "fault {i}: {took:?} to reconnect after a cut that followed progress"
                );
                slowest_after_progress = slowest_after_progress.max(took);
            }
        }
        snaps.push(snapshot(&db, STREAM));
        ensure!(
            agent.is_running(),
            "fault {i}: the agent exited:\n{}",
            agent.log_tail()
        );
    }
    ensure!(
        st.rewrites.load(Ordering::SeqCst) > 0 && st.putmedia_conns.load(Ordering::SeqCst) > 0,
        "PutMedia did not go through the proxy"
    );
    // Everything recorded up to the end of the faults is acknowledged in the end.
    let cutoff = now_ms();
    let t = Instant::now();
    wait_until(
        "every fragment acknowledged",
        Duration::from_secs(90),
        || {
            let s = snapshot(&db, STREAM);
            s.frags.values().any(|f| f.timecode_ms >= cutoff)
                && s.frags
                    .values()
                    .filter(|f| f.timecode_ms < cutoff)
                    .all(|f| f.upload_state == "UPLOADED")
        },
    )
    .map_err(|e| format!("{e}\n{}", agent.log_tail()))?;
    let drained = t.elapsed();
    stop_cleanly(&mut agent)?;
    let end = snapshot(&db, STREAM);
    for s in &snaps {
        nothing_lost(s, &end)?;
    }
    let mut acked = BTreeMap::new();
    note_acked(&mut acked, &end)?;
    let index = rt.block_on(emulator.index(STREAM));
    let dups = verify_emulator(&index, &acked, &faults)?;
    ensure!(
        dups.outside.is_empty(),
        "{} duplicates not in flight at a cut: {:#?}",
        dups.outside.len(),
        dups.outside
    );
    let copies = dups.copies;
    // The stored bytes are the recorded bytes.
    let by_number: HashMap<String, String> = index["fragments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["fragment_number"].as_str().unwrap().to_owned(),
                f["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let uploaded: Vec<&Frag> = end
        .frags
        .values()
        .filter(|f| f.upload_state == "UPLOADED")
        .collect();
    for f in uploaded.iter().step_by(3) {
        let mut bytes = vec![0; f.size as usize];
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(agent.rec.join(&f.segment)).unwrap();
        file.seek(SeekFrom::Start(f.offset)).unwrap();
        file.read_exact(&mut bytes).unwrap();
        let n = f.fragment_number.as_ref().unwrap();
        ensure!(
            by_number.get(n) == Some(&kvs::sha256_hex(&bytes)),
            "fragment {} ({n}): the emulator stored other bytes",
            f.timecode_ms
        );
    }
    let check = agent.check(false);
    ensure!(
        check.ok && check.agree && check.problems.is_empty(),
        "check: {}",
        check.output
    );
    let cut = st.cut_mid_body.load(Ordering::SeqCst);
    ensure!(cut > 0, "no connection was cut mid-body");
    let unacked = end
        .frags
        .values()
        .filter(|f| f.timecode_ms < cutoff && f.upload_state != "UPLOADED")
        .count();
    Ok(Row {
        scenario: "upload cut/stalled (TCP proxy)".into(),
        faults: format!(
            "{} faults: {cuts} cuts, {stalls} stalls, {stalls} stall+cut{} ({cut} connections cut mid-body)",
            plan.len(),
            if long_mode() {
                ", 1 silent 35 s stall"
            } else {
                ""
            }
        ),
        recovered: format!(
            "{}/{}: {} fragments all acknowledged {:.1} s after the last fault, {copies} persisted ({} resent), {} PutMedia connections, reconnect after a cut <= {:.1} s",
            plan.len(),
            plan.len(),
            uploaded.len(),
            drained.as_secs_f64(),
            dups.total,
            st.putmedia_conns.load(Ordering::SeqCst),
            slowest_after_progress.as_secs_f64()
        ),
        lost: if unacked == 0 {
            dups.cell()
        } else {
            format!("{unacked} unacknowledged; {}", dups.cell())
        },
        result: "ok".into(),
    })
}

// --- 5. ENOSPC ------------------------------------------------------------------------------------

/// `same_fs`: the catalog on the full file system too (the default layout, where the state
/// directory is the recording directory), else on a file system of its own.
fn enospc(rng: &mut Rng, base: &Path, same_fs: bool) -> Outcome {
    let dir = base.join(if same_fs { "enospc-same" } else { "enospc" });
    let rec = dir.join("rec");
    let Some(_tmpfs) = Tmpfs::mount(&rec, "16m")? else {
        return Ok(skipped("ENOSPC", "tmpfs not mountable here"));
    };
    let state = dir.join("state");
    // The sample clip at 20 times its rate: about 700 KB of media a second.
    let uri = format!("file://{}?fps=500", sample_clip().display());
    let (secrets, args) = setup(&dir, &uri, &request("FILE_URI", ""));
    let yaml = settings(
        &secrets,
        None,
        &format!("state_directory: {}\n", state.display()),
    );
    let yaml = if same_fs {
        settings(&secrets, None, "")
    } else {
        yaml
    };
    let mut agent = Agent::new(&dir, &yaml, &args, &[]);
    if !same_fs {
        agent.db = Some(state.join(kvs_edge_agent::catalog::FILE_NAME));
    }
    // Another program takes all but ~3 MB.
    let (free, _) = kvs_edge_agent::janitor::disk_space(&rec).unwrap();
    let ballast = rec.join("ballast");
    std::fs::write(&ballast, vec![0u8; (free - (3 << 20)) as usize]).unwrap();
    agent.start();
    let db = agent.catalog();
    let full = |agent: &Agent| {
        job_status(&agent.catalog(), STREAM, "RECORDER").is_some_and(|(s, d)| {
            s == "SYSTEM_ERROR" && d.is_some_and(|d| d.contains("os error 28"))
        })
    };
    wait_until("a write failing with ENOSPC", EVENT, || full(&agent))
        .map_err(|e| format!("{e}\n{}", agent.log_tail()))?;
    ensure!(
        agent.is_running(),
        "the agent exited on ENOSPC:\n{}",
        agent.log_tail()
    );
    let at_full = audit_frozen(&agent, &Snapshot::default())?;
    ensure!(
        at_full.committed() >= 1,
        "nothing recorded before the disk filled"
    );
    // While the disk stays full nothing more is committed beyond what fits in the last bytes.
    std::thread::sleep(rng.millis(1000, 3000));
    let still = snapshot(&db, STREAM);
    let (free_now, _) = kvs_edge_agent::janitor::disk_space(&rec).unwrap();
    let grown: u64 = still
        .frags
        .iter()
        .filter(|(k, _)| !at_full.frags.contains_key(*k))
        .map(|(_, f)| f.size)
        .sum();
    ensure!(
        grown <= 3 << 20,
        "{grown} bytes committed on a full disk ({free_now} free)"
    );
    ensure!(
        agent.is_running(),
        "the agent exited on ENOSPC:\n{}",
        agent.log_tail()
    );
    // Space returns: recording resumes on its own.
    std::fs::remove_file(&ballast).unwrap();
    let back = now_ms();
    let t = Instant::now();
    wait_until(
        "a fragment recorded after the space returned",
        EVENT,
        || {
            snapshot(&db, STREAM)
                .frags
                .values()
                .any(|f| f.timecode_ms > back)
        },
    )
    .map_err(|e| format!("{e}\n{}", agent.log_tail()))?;
    let resumed = t.elapsed();
    wait_until("recorder status SUCCESS again", EVENT, || {
        job_status(&db, STREAM, "RECORDER").is_some_and(|(s, _)| s == "SUCCESS")
    })
    .map_err(|e| format!("{e}\n{}", agent.log_tail()))?;
    stop_cleanly(&mut agent)?;
    let end = snapshot(&db, STREAM);
    nothing_lost(&at_full, &end)?;
    check_clean(&agent, "after ENOSPC")?;
    let mut probed = 0;
    for _ in 0..2 {
        if sample_segment(rng, &rec, &end)? {
            probed += 1;
        }
    }
    Ok(Row {
        scenario: if same_fs {
            "ENOSPC, catalog on the full disk".into()
        } else {
            "ENOSPC, catalog elsewhere".into()
        },
        faults: "16 MB tmpfs filled while recording, then freed".into(),
        recovered: format!(
            "recording resumed {:.1} s after space returned; {} fragments, {probed} segments probed, check agrees",
            resumed.as_secs_f64(),
            end.committed()
        ),
        lost: "0".into(),
        result: "ok".into(),
    })
}

// --- the suite ------------------------------------------------------------------------------------

#[test]
fn reliability_suite() {
    if !require_gstreamer(&["x264enc", "rtph264pay"])
        || !require("mkvmerge", &["--version"])
        || !require("ffprobe", &["-version"])
        || !peer::on_path("python3")
    {
        return;
    }
    let seed = seed();
    let mode = if long_mode() { "long" } else { "CI" };
    println!("reliability: seed {seed} ({mode} mode); replay with RELIABILITY_SEED={seed}");
    let t0 = Instant::now();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    if std::env::var_os("RELIABILITY_KEEP").is_some() {
        println!("reliability: keeping {}", base.display());
    }
    let mut rng = Rng::new(seed);
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    type Scenario<'a> = (&'a str, Box<dyn FnMut(&mut Rng) -> Outcome + 'a>);
    let scenarios: Vec<Scenario> = vec![
        (
            "kill -9",
            Box::new(|rng| crashes(&rt, rng, base, Crash::Kill9)),
        ),
        (
            "power cut",
            Box::new(|rng| crashes(&rt, rng, base, Crash::PowerCut)),
        ),
        (
            "camera flapping",
            Box::new(|rng| camera_flapping(rng, base)),
        ),
        (
            "broker outages",
            Box::new(|rng| broker_outages(&rt, rng, base)),
        ),
        (
            "upload cut/stalled",
            Box::new(|rng| proxy_faults(&rt, rng, base)),
        ),
        ("ENOSPC", Box::new(|rng| enospc(rng, base, false))),
        (
            "ENOSPC (catalog on the full disk)",
            Box::new(|rng| enospc(rng, base, true)),
        ),
    ];
    let only = std::env::var("RELIABILITY_ONLY").ok();
    for (name, mut run) in scenarios {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let t = Instant::now();
        // Each scenario draws from its own stream of the seed, so one replays alone.
        let mut srng = Rng::new(rng.next_u64());
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| run(&mut srng))).unwrap_or_else(|p| {
                Err(p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panic".into()))
            });
        let secs = t.elapsed().as_secs_f64();
        println!("reliability: {name}: {secs:.0} s");
        match outcome {
            Ok(mut row) => {
                row.result = format!("{} ({secs:.0} s)", row.result);
                rows.push(row);
            }
            Err(e) => {
                rows.push(Row {
                    scenario: name.into(),
                    faults: "-".into(),
                    recovered: "-".into(),
                    lost: "?".into(),
                    result: format!("FAILED ({secs:.0} s)"),
                });
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    let summary = table(
        &rows,
        &format!(
            "reliability suite, seed {seed}, {mode} mode, {:.0} s",
            t0.elapsed().as_secs_f64()
        ),
    );
    println!("\n{summary}");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(target.join("reliability-summary.txt"), &summary);
    if std::env::var_os("RELIABILITY_KEEP").is_some() {
        let _ = tmp.keep();
    }
    assert!(
        failures.is_empty(),
        "seed {seed} (RELIABILITY_SEED={seed} replays):\n{}",
        failures.join("\n\n")
    );
}
