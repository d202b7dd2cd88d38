//! What every source yields: access units with a media timestamp and their codec parameters,
//! and the frames the timeline ([`super::timeline`]) has placed on the wall clock.

use std::sync::Arc;

use crate::media::mkv::TrackInfo;

/// One access unit from a source session.
#[derive(Debug, Clone)]
pub struct SourceFrame {
    /// Media time since the session's first frame, in milliseconds (RTP clock or file pts).
    pub media_ms: i64,
    /// A random access point (IDR / IRAP).
    pub key: bool,
    /// AVCC payload (4-byte lengths) without the parameter sets held in `track`.
    pub data: Vec<u8>,
    /// Codec parameters in force for this frame; a different value starts a new segment.
    pub track: Arc<TrackInfo>,
}

/// A frame placed on the wall clock, ready for the fragmenter.
#[derive(Debug, Clone)]
pub struct TimedFrame {
    pub timestamp_ms: i64,
    pub key: bool,
    pub data: Vec<u8>,
    pub track: Arc<TrackInfo>,
}
