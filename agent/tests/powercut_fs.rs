//! The power-cut file system (tests/powercut/powercut.py): a FUSE file system that keeps what
//! was not made durable in memory, so that cutting its power loses exactly that. Its own suite
//! (tests/powercut/test_powercut.py) shows each durability rule, SQLite in WAL mode on it, and
//! its stall; the agent's own moves are then tested on it. Without FUSE (/dev/fuse,
//! fusermount3) or the mfusepy binding the tests are skipped, except under CI.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/peer.rs"]
mod peer;
#[path = "support/powercut.rs"]
mod powercut;
#[path = "support/process.rs"]
mod process;

use std::path::Path;
use std::process::{Command, Output};

use powercut::{PowerDisk, have_fuse};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[test]
fn powercut_fs_self_test() {
    if !have_fuse() {
        return;
    }
    let out = Command::new("python3")
        .arg("tests/powercut/test_powercut.py")
        .current_dir(REPO)
        .output()
        .expect("python3");
    process::assert_success(&out);
}

fn ok(out: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// A segment that repair moves to quarantine is still there after a power cut: the new
/// directories under quarantine/ are synced into their parents before the move is committed.
#[test]
fn a_quarantined_segment_survives_a_power_cut() {
    if !have_fuse() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let mut disk = PowerDisk::new(&dir.path().join("fs"), &rec);
    disk.mount().unwrap();
    let clip = Path::new(REPO).join("samples/sample-h264-640x360-gop1s.h264");
    ok(bin::on_store(&rec)
        .args(["record", "--stream", "cam", "--uri"])
        .arg(format!("file://{}", clip.canonicalize().unwrap().display()))
        .args(["--duration", "4s", "--min-fragment-ms", "1000"])
        .args(["--segment-duration-secs", "2"])
        .output()
        .unwrap());
    let day = std::fs::read_dir(rec.join("streams/cam"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut segments: Vec<_> = std::fs::read_dir(&day)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    // A segment overwritten with noise: its header cannot be read, so repair quarantines it.
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&segments[0], &noise).unwrap();
    // Everything so far durable (a clean shutdown), then the repair, then the cut.
    disk.unmount().unwrap();
    disk.mount().unwrap();
    let report = ok(bin::on_store(&rec)
        .args(["check", "--repair"])
        .output()
        .unwrap());
    assert!(report.contains("moved to quarantine/"), "{report}");
    disk.cut().unwrap();
    disk.mount().unwrap();
    let name = segments[0].file_name().unwrap();
    let moved = rec
        .join("quarantine/streams/cam")
        .join(day.file_name().unwrap())
        .join(name);
    assert_eq!(
        std::fs::read(&moved).ok().as_deref(),
        Some(&noise[..]),
        "{} lost at the cut",
        moved.display()
    );
    assert!(!segments[0].exists());
    let report = ok(bin::on_store(&rec).arg("check").output().unwrap());
    assert!(report.contains("catalog and disk agree"), "{report}");
}
