//! The media layer end to end on the sample clip: Annex B -> access units -> AVCC frames ->
//! Matroska segment with 2 s fragments, checked by our reader and by ffprobe, ffmpeg, mkvinfo
//! and mkvmerge. A missing tool skips its check with a notice, or fails when `CI` is set.

// Named apart from the library's `mkv`, which this test exercises.
#[path = "support/mkv.rs"]
mod mkv_tools;
#[path = "support/peer.rs"]
mod peer;
#[path = "support/sample.rs"]
mod sample;

use std::path::{Path, PathBuf};
use std::process::Command;

use kvs_edge_agent::media::h264::{self, AvcConfig};
use kvs_edge_agent::media::mkv::{self, Frame, SegmentReader, TrackInfo};
use mkv_tools::{ffmpeg_decodes, mkvinfo, mkvmerge_json};
use peer::on_path as have_tool;
use sample::{FRAME_MS, SAMPLE};

const SAMPLE_FRAMES: usize = 150;
const T0_MS: i64 = 1_700_000_000_000;
const MIN_FRAGMENT_MS: i64 = 2000;

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("spawn tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Written {
    path: PathBuf,
    track: TrackInfo,
    frames: Vec<Frame>,
    /// Frame count of each fragment, in order.
    fragments: Vec<usize>,
}

/// Sample clip -> frames stamped 40 ms apart from `T0_MS`.
fn sample_frames() -> (TrackInfo, Vec<Frame>) {
    let clip = sample::clip(T0_MS);
    assert_eq!(clip.access_units.len(), SAMPLE_FRAMES);
    assert_eq!((clip.track.width, clip.track.height), (640, 360));
    assert!(clip.access_units.iter().all(|au| clip.config.matches(au)));
    (clip.track, clip.frames)
}

/// Write a segment whose fragments close at the first key frame at least 2 s after their start.
fn write_segment(dir: &Path) -> Written {
    let (track, frames) = sample_frames();
    let mut fragments: Vec<Vec<Frame>> = Vec::new();
    for frame in &frames {
        let start_new = match fragments.last() {
            None => true,
            Some(f) => frame.key && frame.timestamp_ms - f[0].timestamp_ms >= MIN_FRAGMENT_MS,
        };
        if start_new {
            fragments.push(Vec::new());
        }
        fragments.last_mut().unwrap().push(frame.clone());
    }
    let mut bytes = mkv::segment_header(&track, [0x5A; 16]);
    for fragment in &fragments {
        bytes.extend(mkv::cluster(fragment).unwrap());
    }
    let path = dir.join(format!("{T0_MS}.mkv"));
    std::fs::write(&path, bytes).unwrap();
    Written {
        path,
        track,
        frames,
        fragments: fragments.iter().map(Vec::len).collect(),
    }
}

fn ffprobe_json(path: &Path) -> serde_json::Value {
    mkv_tools::ffprobe_json(path, &["-show_streams", "-show_packets"])
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

#[test]
fn segment_reads_back_with_our_reader() {
    let dir = tempfile::tempdir().unwrap();
    let w = write_segment(dir.path());
    assert_eq!(w.fragments, [50, 50, 50]);

    let mut reader = SegmentReader::new(std::fs::File::open(&w.path).unwrap()).unwrap();
    assert_eq!(reader.header().track, w.track);
    let mut frames = Vec::new();
    let mut expected_offset = reader.header().header_len;
    while let Some(cluster) = reader.next_cluster().unwrap() {
        assert!(cluster.summary.key_first);
        assert_eq!(cluster.summary.offset, expected_offset);
        assert_eq!(cluster.summary.timecode_ms, cluster.frames[0].timestamp_ms);
        assert_eq!(cluster.summary.duration_ms, 50 * FRAME_MS);
        expected_offset = cluster.summary.end();
        frames.extend(cluster.frames);
    }
    assert_eq!(frames, w.frames);
    assert_eq!(
        reader.valid_len(),
        std::fs::metadata(&w.path).unwrap().len()
    );
}

#[test]
fn ffprobe_sees_every_frame_at_our_timestamps() {
    if !have_tool("ffprobe") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = write_segment(dir.path());
    let json = ffprobe_json(&w.path);
    let stream = &json["streams"][0];
    assert_eq!(stream["codec_name"], "h264");
    assert_eq!(
        (stream["width"].as_u64(), stream["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert_eq!(stream["time_base"], "1/1000");
    let packets = json["packets"].as_array().expect("packets");
    assert_eq!(packets.len(), w.frames.len());
    for (packet, frame) in packets.iter().zip(&w.frames) {
        assert_eq!(packet["pts"].as_i64(), Some(frame.timestamp_ms));
        let key = packet["flags"].as_str().unwrap().starts_with('K');
        assert_eq!(key, frame.key, "key flag at {}", frame.timestamp_ms);
    }
}

#[test]
fn ffmpeg_decodes_without_errors() {
    if !have_tool("ffmpeg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = write_segment(dir.path());
    ffmpeg_decodes(&w.path);
}

#[test]
fn mkvtoolnix_accepts_segment() {
    let dir = tempfile::tempdir().unwrap();
    let w = write_segment(dir.path());
    if have_tool("mkvinfo") {
        mkvinfo(&w.path);
    }
    if have_tool("mkvmerge") {
        let (json, status) = mkvmerge_json(&w.path).unwrap();
        // mkvmerge exits 1 for warnings, which would hide a muxing problem too.
        assert!(status.success(), "mkvmerge -J: {json}");
        let track = &json["tracks"][0];
        assert_eq!(track["type"], "video");
        assert!(track["codec"].as_str().unwrap().contains("AVC"), "{track}");
        assert_eq!(track["properties"]["codec_id"], "V_MPEG4/ISO/AVC");
        assert_eq!(track["properties"]["pixel_dimensions"], "640x360");
        assert_eq!(json["tracks"].as_array().unwrap().len(), 1);
    }
}

#[test]
fn truncated_segment_recovers_to_last_complete_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let w = write_segment(dir.path());
    let bytes = std::fs::read(&w.path).unwrap();
    let full = mkv::scan_segment_bytes(&bytes).unwrap();
    assert_eq!(full.clusters.len(), 3);
    assert!(full.clusters.iter().all(|c| c.key_first));

    let last = full.clusters[2];
    let torn = &bytes[..(last.offset + last.size / 2) as usize];
    let torn_path = dir.path().join("torn.mkv");
    std::fs::write(&torn_path, torn).unwrap();
    let scan = mkv::scan_segment(std::fs::File::open(&torn_path).unwrap()).unwrap();
    assert_eq!(scan.clusters, full.clusters[..2]);
    assert_eq!(scan.valid_len, full.clusters[1].end());
    assert!(scan.stopped_by.is_some());

    let cut = std::fs::OpenOptions::new()
        .write(true)
        .open(&torn_path)
        .unwrap();
    cut.set_len(scan.valid_len).unwrap();
    drop(cut);
    let rescan = mkv::scan_segment(std::fs::File::open(&torn_path).unwrap()).unwrap();
    assert_eq!(rescan.clusters, full.clusters[..2]);
    assert!(rescan.stopped_by.is_none());

    if have_tool("ffprobe") {
        let json = ffprobe_json(&torn_path);
        assert_eq!(json["streams"][0]["codec_name"], "h264");
        assert_eq!(json["packets"].as_array().unwrap().len(), 100);
    }
    if have_tool("ffmpeg") {
        ffmpeg_decodes(&torn_path);
    }
}

/// Read a whole foreign file with our reader: (track, frames).
fn read_all(path: &Path) -> (TrackInfo, Vec<Frame>) {
    let mut reader = SegmentReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut frames = Vec::new();
    while let Some(cluster) = reader.next_cluster().unwrap() {
        frames.extend(cluster.frames);
    }
    assert_eq!(reader.valid_len(), std::fs::metadata(path).unwrap().len());
    (reader.header().track.clone(), frames)
}

fn check_foreign(path: &Path) {
    let (track, frames) = read_all(path);
    assert_eq!((track.width, track.height), (640, 360));
    assert_eq!(frames.len(), SAMPLE_FRAMES, "{}", path.display());
    assert_eq!(frames.iter().filter(|f| f.key).count(), SAMPLE_FRAMES / 25);
    assert!(frames[0].key);
    assert!(
        frames
            .windows(2)
            .all(|p| p[1].timestamp_ms - p[0].timestamp_ms == FRAME_MS)
    );
    let config = AvcConfig::parse(&track.codec_private).unwrap();
    assert_eq!(
        config.track_info().unwrap(),
        TrackInfo {
            codec_private: config.to_bytes().unwrap(),
            ..track
        }
    );
    for frame in &frames {
        h264::avcc_nals(&frame.data).unwrap();
    }
}

#[test]
fn reader_reads_ffmpeg_output() {
    if !have_tool("ffmpeg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seekable = dir.path().join("ffmpeg.mkv");
    run(Command::new("ffmpeg")
        .args([
            "-nostdin", "-v", "error", "-r", "25", "-i", SAMPLE, "-c", "copy",
        ])
        .arg(&seekable));
    check_foreign(&seekable);

    // Written to a pipe, ffmpeg cannot seek back: unknown-size Segment, no Cues.
    let piped = dir.path().join("ffmpeg-pipe.mkv");
    let out = run(Command::new("ffmpeg").args([
        "-nostdin", "-v", "error", "-r", "25", "-i", SAMPLE, "-c", "copy", "-f", "matroska",
        "pipe:1",
    ]));
    std::fs::write(&piped, out.stdout).unwrap();
    check_foreign(&piped);
}

#[test]
fn reader_reads_mkvmerge_output() {
    if !have_tool("mkvmerge") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // SimpleBlocks, then BlockGroups (key frames are the blocks without a ReferenceBlock).
    for (name, extra) in [
        ("simple.mkv", &[][..]),
        ("groups.mkv", &["--engage", "no_simpleblocks"][..]),
    ] {
        let path = dir.path().join(name);
        run(Command::new("mkvmerge")
            .arg("-q")
            .arg("-o")
            .arg(&path)
            .args(extra)
            .args(["--default-duration", "0:25fps", SAMPLE]));
        check_foreign(&path);
    }
}
