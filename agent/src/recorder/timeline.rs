//! The timeline: each frame's media time placed on the box's clock, following a camera whose
//! clock drifts.
//!
//! A camera's media clock (RTP, or a clip's frame times) runs at its own rate: 2 % off is 1.2 s
//! a minute. Anchoring a session once and adding media time would leave a long session's
//! timestamps ever further from the box's clock. Instead every frame's *lag* (its arrival on the
//! box's monotonic clock minus its media time) is kept for a window of [`WINDOW_MS`], and the
//! window's minimum is taken as the lag of a frame that met no delay: network jitter and bursty
//! delivery only ever add delay, so they move single lags up but not the minimum. The mapping
//! `monotonic = media + correction` is slewed towards that minimum, when they are more than
//! [`DEAD_BAND_MS`] apart, by at most [`SLEW_DIVISOR`]th of a frame interval per frame, so a
//! correction never shows as a jump and a camera that keeps time keeps its exact spacing.
//!
//! Two things are not drift and are taken at once instead of slewed:
//! - the media clock jumping (backwards, or forwards by more than the frames' arrival spacing
//!   allows, by more than [`JUMP_MS`]): the next frame follows the last one by one interval and
//!   the window starts again;
//! - every frame of a whole window arriving more than [`JUMP_MS`] later than the mapping says (a
//!   camera that paused and resumed with its media time where it stopped): a gap, frames really
//!   lost. A delivery stall followed by a burst does not do this: the window is only trusted
//!   once it has covered [`WINDOW_MS`] of steady arrivals, and by then the burst has caught up.
//!
//! A frame's timestamp is its monotonic time plus the wall clock's offset from the monotonic
//! clock. That offset only changes when the wall clock is *stepped* (NTP slews both clocks
//! alike; a step, a manual fix or a resume from suspend moves one): it is compared at every
//! frame, and once two arrivals in a row show it moved by more than [`STEP_MS`] the timeline
//! takes the new offset at the next key frame ([`Jump::WallStep`]), where the recorder starts a
//! new segment. Until then (at most a GOP) frames keep the old time, since a fragment can only
//! start at a key frame.
//! Timestamps strictly increase within a `Timeline`, except across a wall step backwards, and a
//! new session never starts before the last one ended unless the wall clock stepped meanwhile.
//! Pure: the caller passes the clocks' readings.

use std::collections::VecDeque;

/// Nominal frame interval assumed when a session has not shown one yet (25 fps).
const DEFAULT_FRAME_INTERVAL_MS: i64 = 40;
/// How much recent history the lag estimate looks at.
pub const WINDOW_MS: i64 = 3_000;
/// A difference between the media clock and the box's beyond which it is a jump, not drift.
pub const JUMP_MS: i64 = 1_000;
/// Errors this small are left alone, so a camera whose clock keeps time keeps its exact frame
/// spacing.
pub const DEAD_BAND_MS: i64 = 50;
/// A move of the wall clock's offset from the monotonic clock beyond which it was stepped.
pub const STEP_MS: i64 = 1_000;
/// Arrivals further apart than this break the window's coverage (a stall, a paused camera).
const COVERAGE_GAP_MS: i64 = 500;
/// The largest correction per frame is one interval divided by this (10 %: a 2 % drift is
/// followed with room to spare, and frame spacing changes by at most a tenth).
pub const SLEW_DIVISOR: i64 = 10;

/// When a frame arrived, on both of the box's clocks (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Monotonic: never steps.
    pub mono_ms: i64,
    /// Wall clock (Unix ms): what timestamps are written in.
    pub wall_ms: i64,
}

/// A frame placed on the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub timestamp_ms: i64,
    /// Set when this frame did not follow the previous one smoothly.
    pub jump: Option<Jump>,
}

/// A discontinuity taken at once rather than slewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jump {
    /// The media clock jumped by this much (ms, either sign); the timeline went on smoothly.
    MediaClock(i64),
    /// Frames arrived this much later than the mapping (ms) for a whole window: a gap.
    Gap(i64),
    /// The wall clock was stepped by this much (ms, either sign): this frame, a key frame or a
    /// session's first, and those after it carry the new time.
    WallStep(i64),
}

/// The minimum lag over the last [`WINDOW_MS`] of arrivals, and how long the arrivals have
/// covered the window without a break.
#[derive(Debug, Default)]
struct LagWindow {
    /// (arrival, lag), lags strictly increasing from the front: the front is the minimum.
    mins: VecDeque<(i64, i64)>,
    covered_from: Option<i64>,
    last_arrival: Option<i64>,
}

impl LagWindow {
    fn clear(&mut self) {
        *self = Self::default();
    }

    fn push(&mut self, arrival: i64, lag: i64) {
        if self
            .last_arrival
            .is_none_or(|last| arrival - last > COVERAGE_GAP_MS)
        {
            self.covered_from = Some(arrival);
        }
        self.last_arrival = Some(arrival);
        while self.mins.back().is_some_and(|&(_, l)| l >= lag) {
            self.mins.pop_back();
        }
        self.mins.push_back((arrival, lag));
        while self
            .mins
            .front()
            .is_some_and(|&(a, _)| a < arrival - WINDOW_MS)
        {
            self.mins.pop_front();
        }
    }

    fn min(&self) -> Option<i64> {
        self.mins.front().map(|&(_, l)| l)
    }

    /// Whether the arrivals have covered a whole window without a break.
    fn full(&self) -> bool {
        match (self.covered_from, self.last_arrival) {
            (Some(from), Some(last)) => last - from >= WINDOW_MS,
            _ => false,
        }
    }
}

/// The session's mapping from media time to the monotonic clock.
#[derive(Debug)]
struct Mapping {
    /// monotonic = media + correction.
    correction: i64,
    /// wall = monotonic + wall_offset, read at the session's start.
    wall_offset: i64,
    last_media_ms: i64,
    last_arrival_ms: i64,
    last_mono_ms: i64,
}

/// Maps each session's media time onto the box's clock; see the module's note.
#[derive(Debug, Default)]
pub struct Timeline {
    session: Option<Mapping>,
    window: LagWindow,
    last_ms: Option<i64>,
    interval_ms: Option<i64>,
    /// The wall clock's offset from the monotonic clock that the last frame was placed with.
    box_offset: Option<i64>,
    /// The last frame's arrival showed that offset moved by over [`STEP_MS`].
    step_seen: bool,
}

impl Timeline {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the current session's mapping: the next frame anchors a new one.
    pub fn new_session(&mut self) {
        self.session = None;
        self.window.clear();
    }

    /// The last timestamp handed out, if any.
    pub fn last_ms(&self) -> Option<i64> {
        self.last_ms
    }

    /// The best-known frame interval.
    pub fn interval_ms(&self) -> i64 {
        self.interval_ms.unwrap_or(DEFAULT_FRAME_INTERVAL_MS)
    }

    /// Places a frame of media time `media_ms` (a key frame if `key`) that arrived `at`.
    pub fn place(&mut self, media_ms: i64, key: bool, at: Arrival) -> Placed {
        let lag = at.mono_ms - media_ms;
        let box_offset = at.wall_ms - at.mono_ms;
        let moved = self
            .box_offset
            .map(|b| box_offset - b)
            .filter(|step| step.abs() > STEP_MS);
        let Some(m) = self.session.as_mut() else {
            return self.anchor(media_ms, at, moved);
        };
        // Taken when two arrivals in a row agree: the two clocks are read one after the other,
        // and a thread preempted between the readings would look like a step once.
        let stepped = moved.filter(|_| key && self.step_seen);
        self.step_seen = moved.is_some();
        let media_step = media_ms - m.last_media_ms;
        let arrival_step = at.mono_ms - m.last_arrival_ms;
        if media_step > 0 && media_step < 1000 {
            self.interval_ms = Some(media_step);
        }
        let interval = self.interval_ms.unwrap_or(DEFAULT_FRAME_INTERVAL_MS);
        let mut jump = None;
        if media_step < -JUMP_MS || media_step > arrival_step + JUMP_MS {
            // The media clock jumped: carry on one interval after the last frame.
            m.correction = m.last_mono_ms + interval - media_ms;
            self.window.clear();
            jump = Some(Jump::MediaClock(media_step - arrival_step));
        }
        self.window.push(at.mono_ms, lag);
        let estimate = self.window.min().unwrap_or(lag);
        let error = estimate - m.correction;
        if jump.is_none() && error > JUMP_MS {
            // Late by more than drift explains: a gap once a whole window says so, until then
            // perhaps a stall whose burst is still catching up.
            if self.window.full() {
                m.correction = estimate;
                jump = Some(Jump::Gap(error));
            }
        } else if jump.is_none() && error.abs() > DEAD_BAND_MS {
            let step = (interval / SLEW_DIVISOR).max(1);
            m.correction += error.clamp(-step, step);
        }
        if let Some(step) = stepped {
            // Only the wall clock moved: the media-to-monotonic mapping stands. A floor the
            // session was anchored with goes too; the new time is the box's.
            m.wall_offset = box_offset;
            self.box_offset = Some(box_offset);
            jump = Some(Jump::WallStep(step));
        }
        let mono = (media_ms + m.correction).max(m.last_mono_ms + 1);
        m.last_media_ms = media_ms;
        m.last_arrival_ms = at.mono_ms;
        m.last_mono_ms = mono;
        let timestamp_ms = mono + m.wall_offset;
        self.last_ms = Some(timestamp_ms);
        Placed { timestamp_ms, jump }
    }

    /// A session's first frame: placed at its arrival on the wall clock, but never before the
    /// previous session's last frame plus an interval unless the wall clock stepped since
    /// (`stepped`: by how much).
    fn anchor(&mut self, media_ms: i64, at: Arrival, stepped: Option<i64>) -> Placed {
        let floor = match (stepped, self.last_ms) {
            (None, Some(last)) => last + self.interval_ms(),
            _ => i64::MIN,
        };
        let timestamp_ms = at.wall_ms.max(floor);
        self.box_offset = Some(at.wall_ms - at.mono_ms);
        self.step_seen = false;
        self.window.push(at.mono_ms, at.mono_ms - media_ms);
        self.session = Some(Mapping {
            correction: at.mono_ms - media_ms,
            wall_offset: timestamp_ms - at.mono_ms,
            last_media_ms: media_ms,
            last_arrival_ms: at.mono_ms,
            last_mono_ms: at.mono_ms,
        });
        self.last_ms = Some(timestamp_ms);
        Placed {
            timestamp_ms,
            jump: stepped.map(Jump::WallStep),
        }
    }
}

#[cfg(test)]
mod tests;
