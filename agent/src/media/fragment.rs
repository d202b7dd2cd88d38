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
}

impl Fragment {
    pub fn timecode_ms(&self) -> i64 {
        self.frames[0].timestamp_ms
    }

    pub fn key_frame_count(&self) -> usize {
        self.frames.iter().filter(|f| f.key).count()
    }
}
