//! What every source yields: access units with a media timestamp and their codec parameters,
//! and the timeline that turns media time into absolute wall-clock milliseconds.

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

/// Nominal frame interval assumed when a session has not shown one yet (25 fps).
const DEFAULT_FRAME_INTERVAL_MS: i64 = 40;

/// Maps each session's media time onto the wall clock.
///
/// At a session's first frame the anchor is the wall clock then; every later frame of the
/// session is `anchor + media_ms`, so frame spacing is exactly the camera's. A new session
/// (reconnect, file loop restart is *not* one) re-anchors, but never earlier than the previous
/// session's last timestamp plus one frame interval, so timestamps stay increasing even if the
/// wall clock steps back. Within a session, timestamps are clamped to be non-decreasing
/// (B-frames or a camera's RTP clock glitch would otherwise break the Cluster rules).
#[derive(Debug, Default)]
pub struct Timeline {
    /// Wall-clock ms that media time 0 maps to, for the current session.
    offset: Option<i64>,
    last_ms: Option<i64>,
    last_media_ms: Option<i64>,
    interval_ms: Option<i64>,
}

impl Timeline {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the current session's anchor: the next frame re-anchors.
    pub fn new_session(&mut self) {
        self.offset = None;
        self.last_media_ms = None;
    }

    /// The last timestamp handed out, if any.
    pub fn last_ms(&self) -> Option<i64> {
        self.last_ms
    }

    /// The best-known frame interval.
    pub fn interval_ms(&self) -> i64 {
        self.interval_ms.unwrap_or(DEFAULT_FRAME_INTERVAL_MS)
    }

    /// Wall-clock timestamp of a frame with `media_ms`, given the wall clock `now_ms` (read
    /// only when the session is anchored).
    pub fn place(&mut self, media_ms: i64, now_ms: i64) -> i64 {
        let offset = match self.offset {
            Some(o) => o,
            None => {
                let floor = self.last_ms.map_or(i64::MIN, |l| l + self.interval_ms());
                let o = now_ms.max(floor) - media_ms;
                self.offset = Some(o);
                o
            }
        };
        if let Some(prev) = self.last_media_ms {
            let d = media_ms - prev;
            if d > 0 && d < 1000 {
                self.interval_ms = Some(d);
            }
        }
        self.last_media_ms = Some(media_ms);
        let ts = (offset + media_ms).max(self.last_ms.unwrap_or(i64::MIN));
        self.last_ms = Some(ts);
        ts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_frames_keep_camera_spacing() {
        let mut t = Timeline::new();
        assert_eq!(t.place(0, 1_000_000), 1_000_000);
        assert_eq!(
            t.place(40, 1_000_500),
            1_000_040,
            "wall clock read only at anchor"
        );
        assert_eq!(t.place(80, 999_000), 1_000_080);
    }

    #[test]
    fn reconnect_reanchors_but_never_goes_back() {
        let mut t = Timeline::new();
        t.place(0, 1_000_000);
        t.place(40, 0);
        t.new_session();
        // Wall clock stepped back by an hour: the new session starts one frame after the last.
        assert_eq!(t.place(5_000, 1_000_000 - 3_600_000), 1_000_080);
        assert_eq!(t.place(5_040, 0), 1_000_120);
        t.new_session();
        // A real gap: anchored at the wall clock.
        assert_eq!(t.place(0, 1_010_000), 1_010_000);
    }

    #[test]
    fn backwards_media_time_is_clamped() {
        let mut t = Timeline::new();
        t.place(100, 5_000);
        assert_eq!(t.place(60, 0), 5_000);
    }
}
