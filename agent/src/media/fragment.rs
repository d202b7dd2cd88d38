//! A fragment as the recorder hands it to the store: the frames of one Matroska Cluster (one
//! KVS fragment) and the track they belong to. Here, below both, so the segment writer does
//! not depend on the recorder that builds fragments.

use std::sync::Arc;

use super::mkv::{Frame, TrackInfo};

/// A complete fragment: one Matroska Cluster.
#[derive(Debug, Clone)]
pub struct Fragment {
    pub frames: Vec<Frame>,
    pub track: Arc<TrackInfo>,
    pub duration_ms: i64,
    /// This fragment begins a new segment file.
    pub new_segment: bool,
    /// Some of its frames were recorded while the box's clock was not synchronised.
    pub clock_unsynced: bool,
}

impl Fragment {
    pub fn timecode_ms(&self) -> i64 {
        self.frames[0].timestamp_ms
    }

    pub fn key_frame_count(&self) -> usize {
        self.frames.iter().filter(|f| f.key).count()
    }
}

#[cfg(test)]
impl Fragment {
    /// `frames` frames 40 ms apart from `ts`, the first a key frame: what the store's tests
    /// write.
    pub(crate) fn sample(ts: i64, frames: i64, track: &Arc<TrackInfo>) -> Fragment {
        Fragment {
            frames: (0..frames)
                .map(|i| Frame {
                    timestamp_ms: ts + i * 40,
                    key: i == 0,
                    data: vec![0, 0, 0, 2, 0x65, i as u8],
                })
                .collect(),
            track: track.clone(),
            duration_ms: frames * 40,
            new_segment: false,
            clock_unsynced: false,
        }
    }
}
