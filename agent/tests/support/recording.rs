//! Recordings in a catalog and its directory: written as the recorder would (the sample clip
//! looped into segments), and read back (files, rows, frames).

use std::path::{Path, PathBuf};

use kvs_edge_agent::catalog::{Catalog, FragmentRow, NewFragment, NewSegment};
use kvs_edge_agent::media::mkv::{self, Frame, SegmentReader, TrackInfo};

use crate::sample::FRAME_MS;

/// What [`record`] wrote.
#[allow(dead_code, reason = "for the uploader tests, which need a recording")]
pub struct Recording {
    pub fragments: Vec<FragmentRow>,
    /// Cluster bytes of each fragment, in order.
    pub clusters: Vec<Vec<u8>>,
    pub frames: usize,
}

/// Records the sample clip, looped, into `segments` segment files of `per_segment` 1-second
/// fragments (GOP 1 s) starting at `t0_ms`, as the recorder would: header, then each cluster
/// written before its row. `codec_change_at_segment` changes the CodecPrivate from the given
/// segment on (to test that a change opens a new request). `pad` bytes of H.264 filler data
/// (NAL type 12, which decoders skip) are added to every frame, for large fragments in
/// benchmarks.
#[allow(clippy::too_many_arguments)]
#[allow(dead_code, reason = "for the uploader tests, which need a recording")]
pub fn record(
    catalog: &Catalog,
    recording_dir: &Path,
    stream: &str,
    t0_ms: i64,
    segments: usize,
    per_segment: usize,
    codec_change_at_segment: Option<usize>,
    pad: usize,
) -> Recording {
    let layout = Layout {
        segments,
        per_segment,
        gops_per_fragment: 1,
    };
    write(
        catalog,
        recording_dir,
        stream,
        t0_ms,
        layout,
        codec_change_at_segment,
        pad,
    )
}

/// How [`record_long`] lays a recording out.
#[allow(dead_code, reason = "for the uploader tests, which need a recording")]
pub struct Layout {
    pub segments: usize,
    pub per_segment: usize,
    /// 1-second GOPs per fragment.
    pub gops_per_fragment: usize,
}

/// Like [`record`], with fragments of `gops_per_fragment` seconds (long backlogs that upload
/// quickly at the service's five fragments a second).
#[allow(dead_code, reason = "for the uploader tests, which need a recording")]
pub fn record_long(
    catalog: &Catalog,
    recording_dir: &Path,
    stream: &str,
    t0_ms: i64,
    layout: Layout,
) -> Recording {
    write(catalog, recording_dir, stream, t0_ms, layout, None, 0)
}

fn write(
    catalog: &Catalog,
    recording_dir: &Path,
    stream: &str,
    t0_ms: i64,
    layout: Layout,
    codec_change_at_segment: Option<usize>,
    pad: usize,
) -> Recording {
    let crate::sample::Clip {
        track, mut frames, ..
    } = crate::sample::clip(0);
    if pad > 0 {
        let mut filler = vec![0x0c];
        filler.resize(pad - 1, 0xff);
        filler.push(0x80);
        for f in &mut frames {
            f.data
                .extend_from_slice(&(filler.len() as u32).to_be_bytes());
            f.data.extend_from_slice(&filler);
        }
    }
    let gops: Vec<&[Frame]> = frames.chunk_by(|_, b| !b.key).collect();
    assert_eq!(gops.len(), 6, "the sample has six 1-second GOPs");
    write_gops(
        catalog,
        recording_dir,
        stream,
        (t0_ms, FRAME_MS),
        &track,
        &gops,
        layout,
        codec_change_at_segment,
    )
}

/// Lays `gops` (looped, from the first in each segment) down as `layout` says, frames `frame_ms` apart from `t0_ms`, as the
/// recorder would: each segment's header, then each cluster appended before its row.
#[allow(clippy::too_many_arguments)]
#[allow(
    dead_code,
    reason = "for the tests and benchmarks that need a recording"
)]
pub fn write_gops(
    catalog: &Catalog,
    recording_dir: &Path,
    stream: &str,
    (t0_ms, frame_ms): (i64, i64),
    track: &TrackInfo,
    gops: &[&[Frame]],
    layout: Layout,
    codec_change_at_segment: Option<usize>,
) -> Recording {
    use std::io::Write;
    let Layout {
        segments,
        per_segment,
        gops_per_fragment,
    } = layout;
    let dir = recording_dir.join(stream);
    std::fs::create_dir_all(&dir).unwrap();
    let mut clusters = Vec::new();
    let mut frame_count = 0;
    let mut t = t0_ms;
    for s in 0..segments {
        // Each segment starts again at the first GOP.
        let mut g = 0;
        let mut track = track.clone();
        if codec_change_at_segment.is_some_and(|c| s >= c) {
            // Same SPS/PPS, a different (still valid) record: AVCC level byte changed.
            track.codec_private[3] ^= 0x01;
        }
        let header = mkv::segment_header(&track, [s as u8 + 1; 16]);
        let rel = format!("{stream}/{t}.mkv");
        let mut file = std::fs::File::create(recording_dir.join(&rel)).unwrap();
        let seg = catalog
            .insert_segment(&segment_row(stream, rel, &track, header.len(), t))
            .unwrap();
        file.write_all(&header).unwrap();
        let mut size = header.len() as u64;
        for _ in 0..per_segment {
            let base = t;
            let fr: Vec<Frame> = (0..gops_per_fragment)
                .flat_map(|_| {
                    g += 1;
                    gops[(g - 1) % gops.len()].iter()
                })
                .enumerate()
                .map(|(i, fr)| Frame {
                    timestamp_ms: base + frame_ms * i as i64,
                    key: fr.key,
                    data: fr.data.clone(),
                })
                .collect();
            let cluster = mkv::cluster(&fr).unwrap();
            file.write_all(&cluster).unwrap();
            catalog
                .add_fragment(
                    seg,
                    &NewFragment {
                        offset: size,
                        size: cluster.len() as u64,
                        timecode_ms: base,
                        duration_ms: frame_ms * fr.len() as i64,
                        frame_count: fr.len() as u32,
                        key_frame_count: gops_per_fragment as u32,
                        clock_unsynced: false,
                    },
                )
                .unwrap();
            size += cluster.len() as u64;
            frame_count += fr.len();
            clusters.push(cluster);
            t = base + frame_ms * fr.len() as i64;
        }
        catalog.close_segment(seg).unwrap();
    }
    Recording {
        fragments: catalog_fragments(catalog, stream),
        clusters,
        frames: frame_count,
    }
}

/// The fragments of a stream as the catalog holds them now, oldest first.
#[allow(dead_code, reason = "for the uploader tests, which need a recording")]
pub fn catalog_fragments(catalog: &Catalog, stream: &str) -> Vec<FragmentRow> {
    let mut out = Vec::new();
    for seg in catalog.segments(Some(stream)).unwrap() {
        out.extend(catalog.fragments(seg.id).unwrap());
    }
    out
}

/// Total fragments and frames the catalog indexes for `stream`.
#[allow(
    dead_code,
    reason = "for the recorder tests, which read back what was recorded"
)]
pub fn catalog_totals(catalog: &Catalog, stream: &str) -> (usize, u64) {
    let mut fragments = 0;
    let mut frames = 0;
    for s in catalog.segments(Some(stream)).unwrap() {
        for f in catalog.fragments(s.id).unwrap() {
            fragments += 1;
            frames += u64::from(f.frame_count);
        }
    }
    (fragments, frames)
}

/// One segment file as read back.
#[allow(
    dead_code,
    reason = "for the recorder tests, which read back what was recorded"
)]
pub struct ReadSegment {
    pub path: PathBuf,
    pub track: TrackInfo,
    /// Frames of each cluster.
    pub clusters: Vec<Vec<Frame>>,
}

impl ReadSegment {
    /// Asserts that each frame of the file follows the one before by a step in `steps` (ms): no
    /// hole, and no clock step inside the file.
    #[allow(dead_code, reason = "for the tests of clock steps")]
    pub fn assert_evenly_spaced(&self, steps: std::ops::RangeInclusive<i64>) {
        let frames: Vec<&Frame> = self.clusters.iter().flatten().collect();
        for w in frames.windows(2) {
            let step = w[1].timestamp_ms - w[0].timestamp_ms;
            assert!(
                steps.contains(&step),
                "{}: a step of {step} ms at {}",
                self.path.display(),
                w[0].timestamp_ms
            );
        }
    }
}

/// Every segment of `stream` in catalog order, read with the project's reader.
#[allow(
    dead_code,
    reason = "for the recorder tests, which read back what was recorded"
)]
pub fn read_segments(catalog: &Catalog, dir: &Path, stream: &str) -> Vec<ReadSegment> {
    catalog
        .segments(Some(stream))
        .unwrap()
        .into_iter()
        .map(|s| {
            let path = dir.join(&s.path);
            let mut r = SegmentReader::new(std::fs::File::open(&path).unwrap()).unwrap();
            let track = r.header().track.clone();
            let mut clusters = Vec::new();
            while let Some(c) = r.next_cluster().unwrap() {
                clusters.push(c.frames);
            }
            ReadSegment {
                path,
                track,
                clusters,
            }
        })
        .collect()
}

/// Segment files under `rec/streams/{stream}/{day}/`, sorted.
#[allow(dead_code, reason = "for the control-plane tests")]
pub fn segment_files(rec: &Path, stream: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let dir = rec.join(kvs_edge_agent::store::layout::stream_dir(stream));
    let Ok(days) = std::fs::read_dir(dir) else {
        return out;
    };
    for d in days.flatten() {
        if let Ok(files) = std::fs::read_dir(d.path()) {
            for f in files.flatten() {
                if f.path().extension().is_some_and(|e| e == "mkv") {
                    out.push(f.path());
                }
            }
        }
    }
    out.sort();
    out
}

/// The catalog row of a segment file of `track` at `rel`, whose header is `header_len` bytes.
pub fn segment_row(
    stream: &str,
    rel: String,
    track: &TrackInfo,
    header_len: usize,
    start_ms: i64,
) -> NewSegment {
    NewSegment {
        stream_name: stream.into(),
        path: rel,
        codec_id: track.codec.codec_id().into(),
        codec_private: track.codec_private.clone(),
        width: track.width,
        height: track.height,
        header_size: header_len as u64,
        start_ms,
    }
}
