//! Hostile inputs, the store's part: lost, mistyped and damaged catalogs, damaged segments, and
//! stream names that collide with the agent's own files. The release of none of them may delete
//! or lose recorded media; each is run through the binary as an operator would.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/mkv.rs"]
mod mkv;
#[path = "support/peer.rs"]
mod peer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

fn clip() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/sample-h264-640x360-gop1s.h264");
    format!("file://{}", p.canonicalize().unwrap().display())
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Records `secs` seconds of the sample clip as `stream`.
fn record(rec: &Path, stream: &str, secs: u32, extra: &[&str]) -> Output {
    bin::on_store(rec)
        .args(["record", "--stream", stream, "--uri", &clip()])
        .args([
            "--duration",
            &format!("{secs}s"),
            "--min-fragment-ms",
            "1000",
        ])
        .args(extra)
        .output()
        .unwrap()
}

/// Every file under `rec/streams` with its content, for "nothing changed" checks.
fn media(rec: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                walk(&e.path(), out);
            } else if t.is_file() {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&rec.join("streams"), &mut out);
    out
}

fn mkv_count(m: &BTreeMap<PathBuf, Vec<u8>>) -> usize {
    m.keys()
        .filter(|p| p.extension().is_some_and(|e| e == "mkv"))
        .count()
}

fn remove_catalog(rec: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(rec.join(format!("kvs-edge-agent.db{suffix}")));
    }
}

#[test]
fn no_lost_or_mistyped_catalog_deletes_media_and_reindex_rebuilds_it() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path();
    let long = "n".repeat(256);
    // Names the API allows that collide with the agent's files or cannot be a file name.
    let names = ["cam", "log", "kvs-edge-agent.db", ".", "..", long.as_str()];
    for name in names {
        let out = record(rec, name, 3, &[]);
        assert!(out.status.success(), "{name}: {}", text(&out));
    }
    let before = media(rec);
    assert!(mkv_count(&before) >= names.len(), "{:?}", before.keys());
    assert!(
        rec.join("kvs-edge-agent.db").is_file(),
        "the catalog is untouched"
    );
    let out = bin::on_store(rec).args(["check"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // A mistyped catalog path: refused, not created, nothing touched.
    let typo = rec.join("typo.db");
    for args in [&["check", "--repair"][..], &["check"][..]] {
        let out = bin::on_store(rec)
            .args(args)
            .arg("--catalog")
            .arg(&typo)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("does not exist"), "{}", text(&out));
        assert!(!typo.exists());
        assert_eq!(media(rec), before);
    }

    // The catalog lost: every verb refuses; nothing touched.
    remove_catalog(rec);
    let out = bin::on_store(rec)
        .args(["check", "--repair"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let out = bin::on_store(rec).args(["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--reindex"), "{}", text(&out));
    let out = record(rec, "cam", 1, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("belongs to catalog"), "{}", text(&out));
    assert_eq!(media(rec), before);

    // The explicit rebuild: every segment indexed again, pending upload; catalog and disk agree.
    let out = bin::on_store(rec)
        .args(["check", "--repair", "--reindex"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&out);
    assert_eq!(
        report.matches("indexed").count(),
        mkv_count(&before),
        "{report}"
    );
    assert!(report.contains("catalog and disk agree"), "{report}");
    assert_eq!(media(rec), before);
    let out = bin::on_store(rec)
        .args(["recordings", "list"])
        .output()
        .unwrap();
    let listing = text(&out);
    for name in ["cam", "log", "kvs-edge-agent.db"] {
        assert!(listing.contains(&format!("total {name}:")), "{listing}");
    }
    // And recording goes on under the rebuilt catalog.
    let out = record(rec, "cam", 1, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = bin::on_store(rec).args(["check"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_damaged_catalog_schema_is_refused_by_every_verb() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path();
    let out = record(rec, "cam", 2, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let before = media(rec);
    rusqlite::Connection::open(rec.join("kvs-edge-agent.db"))
        .unwrap()
        .execute_batch("drop table fragment")
        .unwrap();
    let out = bin::on_store(rec).args(["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("table fragment is missing"),
        "{}",
        text(&out)
    );
    for args in [
        &["check"][..],
        &["check", "--repair"][..],
        &["recordings", "list"][..],
    ] {
        let out = bin::on_store(rec).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("table fragment is missing"),
            "{args:?}: {}",
            text(&out)
        );
    }
    let out = record(rec, "cam", 1, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(media(rec), before);
}

#[test]
fn repair_keeps_what_is_readable_and_quarantines_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path();
    let out = record(rec, "cam", 10, &["--segment-duration-secs", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let segments: Vec<PathBuf> = media(rec)
        .into_keys()
        .filter(|p| p.extension().is_some_and(|e| e == "mkv"))
        .collect();
    assert!(segments.len() >= 4, "{segments:?}");
    let outside = dir.path().join("precious.txt");
    std::fs::write(&outside, b"not media").unwrap();
    // Cut mid-cluster, overwritten with random bytes, replaced by a directory, by a link.
    let len = std::fs::metadata(&segments[0]).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&segments[0])
        .unwrap();
    f.set_len(len - 100).unwrap();
    drop(f);
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&segments[1], noise).unwrap();
    std::fs::remove_file(&segments[2]).unwrap();
    std::fs::create_dir_all(segments[2].join("inner")).unwrap();
    std::fs::remove_file(&segments[3]).unwrap();
    std::os::unix::fs::symlink(&outside, &segments[3]).unwrap();

    let out = bin::on_store(rec).args(["check"]).output().unwrap();
    assert!(!out.status.success(), "damage is seen: {}", text(&out));
    let out = bin::on_store(rec)
        .args(["check", "--repair"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&out);
    assert_eq!(
        report.matches("moved to quarantine/").count(),
        3,
        "{report}"
    );
    assert!(report.contains("catalog and disk agree"), "{report}");
    assert_eq!(std::fs::read(&outside).unwrap(), b"not media");
    // The cut segment kept its whole fragments and is still a valid Matroska file.
    assert!(segments[0].is_file());
    if peer::require("ffprobe", &["-version"]) {
        mkv::ffprobe(&segments[0]);
    }
    for s in &segments[1..4] {
        assert!(
            std::fs::symlink_metadata(s).is_err(),
            "{} left in place",
            s.display()
        );
    }
    let quarantined = std::fs::read_dir(rec.join("quarantine/streams/cam"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .count();
    assert_eq!(quarantined, 3);
    // Repaired for good: a second repair does nothing, recording resumes.
    let out = bin::on_store(rec)
        .args(["check", "--repair"])
        .output()
        .unwrap();
    assert!(!text(&out).contains("repaired:"), "{}", text(&out));
    let out = record(rec, "cam", 1, &[]);
    assert!(out.status.success(), "{}", text(&out));
}
