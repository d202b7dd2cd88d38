//! Frames in, fragments out: where KVS fragments and segment files begin and end. Pure: no I/O,
//! no clock, so every rule is unit-tested.
//!
//! Rules (DESIGN.md, "Media on disk"):
//! - a fragment starts on a key frame; frames before the first key frame of a session are
//!   dropped (they cannot be decoded);
//! - it closes at the first key frame at least `min_fragment_ms` after its start;
//! - it never spans more than `max_fragment_ms` (10 s) or `max_fragment_bytes` (50 MB): when the
//!   camera's GOP is longer, the fragment closes at the limit (warned once) and the frames up to
//!   the next key frame are dropped, since a fragment may not start on a delta frame;
//! - a fragment's duration is the next fragment's start minus its own start when the frames are
//!   contiguous, an estimate from its own frames when it is flushed (gap, pause, stop);
//! - a segment starts at the first fragment, when the codec parameters change, and at the first
//!   fragment boundary at least `segment_duration_ms` after the segment's start.

use std::sync::Arc;

use tracing::warn;

use super::source::TimedFrame;
use crate::media::fragment::Fragment;
use crate::media::mkv::{self, Frame, TrackInfo};

/// KVS rejects fragments longer than this (and the Cluster's 16-bit relative timecodes allow
/// 32 s).
pub const MAX_FRAGMENT_MS: i64 = 10_000;
/// KVS's limit on a fragment's size: "50 MB" (PutMedia, ErrorId 4001), decimal, as the
/// emulator counts it.
pub const MAX_FRAGMENT_BYTES: usize = 50_000_000;
/// What a Cluster adds around its frames, at most: its ID and 8-byte size, and the Timecode.
const CLUSTER_OVERHEAD: usize = 4 + 8 + 10;
/// What each SimpleBlock adds to its frame, at most: ID, 8-byte size, track, timecode, flags.
const BLOCK_OVERHEAD: usize = 1 + 8 + 4;

/// A frame's share of its Cluster's size, which is what the service's cap counts.
fn cost(data: &[u8]) -> usize {
    data.len() + BLOCK_OVERHEAD
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmenterConfig {
    pub min_fragment_ms: i64,
    pub max_fragment_ms: i64,
    pub max_fragment_bytes: usize,
    pub segment_duration_ms: i64,
}

impl Default for FragmenterConfig {
    fn default() -> Self {
        FragmenterConfig {
            min_fragment_ms: 2_000,
            max_fragment_ms: MAX_FRAGMENT_MS,
            max_fragment_bytes: MAX_FRAGMENT_BYTES,
            segment_duration_ms: 60_000,
        }
    }
}

#[derive(Debug)]
struct Building {
    frames: Vec<Frame>,
    track: Arc<TrackInfo>,
    bytes: usize,
    new_segment: bool,
}

#[derive(Debug)]
pub struct Fragmenter {
    cfg: FragmenterConfig,
    current: Option<Building>,
    segment_start_ms: Option<i64>,
    segment_track: Option<Arc<TrackInfo>>,
    warned_long_gop: bool,
    dropped: u64,
}

impl Fragmenter {
    pub fn new(cfg: FragmenterConfig) -> Self {
        Fragmenter {
            cfg,
            current: None,
            segment_start_ms: None,
            segment_track: None,
            warned_long_gop: false,
            dropped: 0,
        }
    }

    /// Frames dropped so far because no key frame preceded them.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped
    }

    /// Add the next frame; returns the fragment it completed, if any.
    pub fn push(&mut self, f: TimedFrame) -> Option<Fragment> {
        let mut done = None;
        if let Some(b) = &self.current {
            let first = b.frames[0].timestamp_ms;
            let span = f.timestamp_ms - first;
            let codec_changed = !Arc::ptr_eq(&b.track, &f.track) && *b.track != *f.track;
            if codec_changed {
                done = self.close(Some(f.timestamp_ms));
                self.segment_start_ms = None;
            } else if f.key && span >= self.cfg.min_fragment_ms {
                done = self.close(Some(f.timestamp_ms));
            } else if span >= self.cfg.max_fragment_ms
                || b.bytes + cost(&f.data) > self.cfg.max_fragment_bytes
            {
                if !self.warned_long_gop {
                    warn!(
                        span_ms = span,
                        bytes = b.bytes,
                        "key frames too far apart: closing the fragment at the KVS limit and \
                         dropping frames until the next key frame (shorten the camera's GOP)"
                    );
                    self.warned_long_gop = true;
                }
                done = self.close(Some(f.timestamp_ms));
            }
        }
        match &mut self.current {
            Some(b) => {
                b.bytes += cost(&f.data);
                b.frames.push(Frame {
                    timestamp_ms: f.timestamp_ms,
                    key: f.key,
                    data: f.data,
                });
            }
            None if f.key => self.start(f),
            None => self.dropped += 1,
        }
        done
    }

    /// Close the fragment being built (at a gap, pause or stop); the next one waits for a key
    /// frame.
    pub fn flush(&mut self) -> Option<Fragment> {
        self.close(None)
    }

    /// Make the next fragment start a new segment (after a pause, or when the writer gave up
    /// on the current file).
    pub fn end_segment(&mut self) {
        self.segment_start_ms = None;
    }

    fn start(&mut self, f: TimedFrame) {
        let new_segment = match (self.segment_start_ms, &self.segment_track) {
            (Some(start), Some(track)) => {
                f.timestamp_ms - start >= self.cfg.segment_duration_ms || **track != *f.track
            }
            _ => true,
        };
        if new_segment {
            self.segment_start_ms = Some(f.timestamp_ms);
            self.segment_track = Some(f.track.clone());
        }
        self.current = Some(Building {
            bytes: CLUSTER_OVERHEAD + cost(&f.data),
            frames: vec![Frame {
                timestamp_ms: f.timestamp_ms,
                key: f.key,
                data: f.data,
            }],
            track: f.track,
            new_segment,
        });
    }

    /// `next_ms`: the first timestamp after the fragment, when contiguous.
    fn close(&mut self, next_ms: Option<i64>) -> Option<Fragment> {
        let b = self.current.take()?;
        let first = b.frames[0].timestamp_ms;
        let last = b.frames[b.frames.len() - 1].timestamp_ms;
        let duration_ms = match next_ms {
            Some(next) => next - first,
            None => mkv::fragment_duration_ms(first, last, b.frames.len()),
        };
        Some(Fragment {
            frames: b.frames,
            track: b.track,
            duration_ms,
            new_segment: b.new_segment,
            clock_unsynced: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::mkv::VideoCodec;

    fn track(n: u8) -> Arc<TrackInfo> {
        Arc::new(TrackInfo {
            codec: VideoCodec::H264,
            codec_private: vec![1, n],
            width: 640,
            height: 360,
        })
    }

    fn frame(ts: i64, key: bool, t: &Arc<TrackInfo>) -> TimedFrame {
        TimedFrame {
            timestamp_ms: ts,
            key,
            data: vec![0, 0, 0, 1, 0x65],
            track: t.clone(),
        }
    }

    fn cfg() -> FragmenterConfig {
        FragmenterConfig {
            segment_duration_ms: 10_000,
            ..FragmenterConfig::default()
        }
    }

    /// Feed `count` frames at 25 fps with a key frame every `gop` frames.
    fn feed(
        fr: &mut Fragmenter,
        t: &Arc<TrackInfo>,
        start: i64,
        count: i64,
        gop: i64,
    ) -> Vec<Fragment> {
        (0..count)
            .filter_map(|i| fr.push(frame(start + i * 40, i % gop == 0, t)))
            .collect()
    }

    #[test]
    fn closes_at_first_key_frame_after_minimum() {
        let t = track(1);
        let mut fr = Fragmenter::new(cfg());
        // GOP 1 s: fragments of exactly 2 s (50 frames).
        let out = feed(&mut fr, &t, 1_000, 250, 25);
        assert_eq!(out.len(), 4);
        for (i, f) in out.iter().enumerate() {
            assert_eq!(f.frames.len(), 50);
            assert!(f.frames[0].key);
            assert_eq!(f.timecode_ms(), 1_000 + i as i64 * 2_000);
            assert_eq!(f.duration_ms, 2_000);
            assert_eq!(f.key_frame_count(), 2);
        }
        let last = fr.flush().unwrap();
        assert_eq!(last.frames.len(), 50);
        assert_eq!(last.duration_ms, 2_000, "estimate from its own frames");
        assert!(fr.flush().is_none());
    }

    #[test]
    fn gop_not_multiple_of_minimum_waits_for_next_key() {
        let t = track(1);
        let mut fr = Fragmenter::new(cfg());
        // GOP 1.2 s (30 frames): the first key frame at >= 2 s is at 2.4 s.
        let out = feed(&mut fr, &t, 0, 200, 30);
        assert!(
            out.iter()
                .all(|f| f.frames.len() == 60 && f.duration_ms == 2_400)
        );
    }

    #[test]
    fn frames_before_first_key_are_dropped() {
        let t = track(1);
        let mut fr = Fragmenter::new(cfg());
        for i in 0..5 {
            assert!(fr.push(frame(i * 40, false, &t)).is_none());
        }
        assert_eq!(fr.dropped_frames(), 5);
        fr.push(frame(200, true, &t));
        assert_eq!(fr.flush().unwrap().timecode_ms(), 200);
    }

    #[test]
    fn long_gop_closes_at_limit_and_skips_to_next_key() {
        let t = track(1);
        let mut fr = Fragmenter::new(cfg());
        // One key frame every 15 s.
        let out = feed(&mut fr, &t, 0, 1_000, 375);
        assert_eq!(out.len(), 2);
        for f in &out {
            assert_eq!(f.duration_ms, 10_000);
            assert_eq!(f.frames.len(), 250);
            assert!(f.frames[0].key);
        }
        assert_eq!(out[1].timecode_ms(), 15_000);
        assert_eq!(fr.dropped_frames(), 250);
    }

    #[test]
    fn size_limit_closes_fragment() {
        let t = track(1);
        let mut fr = Fragmenter::new(FragmenterConfig {
            max_fragment_bytes: CLUSTER_OVERHEAD + 10 * cost(&[0; 5]),
            ..cfg()
        });
        let out = feed(&mut fr, &t, 0, 25, 25);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].frames.len(), 10);
    }

    #[test]
    fn the_cap_is_the_seeds_50_mb_counted_as_the_cluster_is() {
        let t = track(1);
        let mut fr = Fragmenter::new(cfg());
        let big = |ts: i64, key: bool| TimedFrame {
            timestamp_ms: ts,
            key,
            data: vec![0; 999_000],
            track: t.clone(),
        };
        let out: Vec<Fragment> = (0..60)
            .filter_map(|i| fr.push(big(i * 10, i == 0)))
            .collect();
        assert_eq!(out.len(), 1, "closed by size before any key frame");
        let f = &out[0];
        let cluster = crate::media::mkv::cluster(&f.frames).unwrap();
        assert!(cluster.len() <= 50_000_000, "{}", cluster.len());
        // One frame more would not fit under 50,000,000 (it would under 50 MiB).
        assert!(cluster.len() + 999_000 > 50_000_000, "{}", cluster.len());
    }

    #[test]
    fn segments_roll_at_fragment_boundary_after_target() {
        let t = track(1);
        let mut fr = Fragmenter::new(cfg());
        let mut out = feed(&mut fr, &t, 0, 750, 25);
        out.extend(fr.flush());
        let starts: Vec<i64> = out
            .iter()
            .filter(|f| f.new_segment)
            .map(Fragment::timecode_ms)
            .collect();
        assert_eq!(starts, vec![0, 10_000, 20_000]);
        let frames: usize = out.iter().map(|f| f.frames.len()).sum();
        assert_eq!(frames, 750, "no frame lost or duplicated at boundaries");
        let ts: Vec<i64> = out
            .iter()
            .flat_map(|f| f.frames.iter().map(|x| x.timestamp_ms))
            .collect();
        assert!(ts.windows(2).all(|w| w[1] - w[0] == 40));
    }

    #[test]
    fn codec_change_starts_new_segment_at_next_key() {
        let (a, b) = (track(1), track(2));
        let mut fr = Fragmenter::new(cfg());
        let mut out = feed(&mut fr, &a, 0, 30, 25);
        assert!(out.is_empty());
        // New parameters arrive on a delta frame: it closes a's fragment and is dropped.
        out.extend(fr.push(frame(1_200, false, &b)));
        assert!(fr.push(frame(1_240, true, &b)).is_none());
        out.extend(fr.flush());
        assert_eq!(out.len(), 2);
        assert!(out[0].new_segment);
        assert_eq!(out[0].frames.len(), 30);
        assert_eq!(out[0].duration_ms, 1_200);
        assert!(out[1].new_segment);
        assert_eq!(*out[1].track, *b);
        assert_eq!(fr.dropped_frames(), 1);
    }

    #[test]
    fn end_segment_forces_new_file() {
        let t = track(1);
        let mut fr = Fragmenter::new(cfg());
        feed(&mut fr, &t, 0, 10, 25);
        assert!(fr.flush().unwrap().new_segment);
        feed(&mut fr, &t, 1_000, 10, 25);
        assert!(!fr.flush().unwrap().new_segment);
        fr.end_segment();
        feed(&mut fr, &t, 2_000, 10, 25);
        assert!(fr.flush().unwrap().new_segment);
    }
}
