//! Job windows: when a recorder or uploader is active, from its schedule and duration.
//!
//! A job is active at `t` when some fire time `f` has `f <= t < f + duration`. Windows that
//! overlap or touch merge into one (the job does not stop for zero seconds). Everything here is
//! pure: callers pass the instant.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::CronSchedule;

/// How far a merged window is followed ahead of the asked instant. A schedule whose windows
/// chain for longer (e.g. every minute with 60 s) is reported as ending there; the driver
/// re-evaluates at that end and finds the window still running, so nothing stops.
const MERGE_HORIZON: SignedDuration = SignedDuration::from_hours(24);

/// A half-open interval `[start, end)` in which a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// A schedule with a window length, in a zone.
#[derive(Debug, Clone)]
pub struct Windows {
    schedule: CronSchedule,
    duration: SignedDuration,
    tz: TimeZone,
}

impl Windows {
    /// `duration` is `DurationInSeconds` (the API allows 60..=3600; any positive length works).
    pub fn new(schedule: CronSchedule, duration: Duration, tz: TimeZone) -> Self {
        let duration = SignedDuration::try_from(duration)
            .unwrap_or(SignedDuration::MAX)
            .max(SignedDuration::from_secs(1));
        Windows {
            schedule,
            duration,
            tz,
        }
    }

    pub fn schedule(&self) -> &CronSchedule {
        &self.schedule
    }

    pub fn duration(&self) -> SignedDuration {
        self.duration
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The merged window containing `t`, if the job is active at `t`.
    pub fn window_at(&self, t: Timestamp) -> Option<Window> {
        // Only fire times in (t - duration, t] open a window containing t.
        let first = self
            .schedule
            .next_after(t.checked_sub(self.duration).ok()?, &self.tz)?;
        if first > t {
            return None;
        }
        let mut last = first;
        while let Some(f) = self.schedule.next_after(last, &self.tz) {
            if f > t {
                break;
            }
            last = f;
        }
        let start = self.merged_start(first);
        let end = self.merged_end(last, t);
        Some(Window { start, end })
    }

    /// The first merged window starting after `t` (the one running at `t` excluded).
    pub fn next_window_after(&self, t: Timestamp) -> Option<Window> {
        let from = match self.window_at(t) {
            Some(w) => w.end,
            None => t,
        };
        let start = self.schedule.next_after(from, &self.tz)?;
        Some(Window {
            start,
            end: self.merged_end(start, start),
        })
    }

    /// The window running at `t`, then the ones after it. A window running for more than a day
    /// comes in day-long pieces (each starting where the previous ended).
    pub fn windows_from(&self, t: Timestamp) -> impl Iterator<Item = Window> + '_ {
        let mut next = self.window_at(t).or_else(|| self.next_window_after(t));
        std::iter::from_fn(move || {
            let w = next?;
            next = match self.window_at(w.end) {
                Some(more) => Some(Window {
                    start: w.end,
                    end: more.end,
                }),
                None => self.next_window_after(w.end),
            };
            Some(w)
        })
    }

    /// Walks back while an earlier fire time's window reaches `start`.
    fn merged_start(&self, mut start: Timestamp) -> Timestamp {
        let limit = start - MERGE_HORIZON;
        while start > limit {
            let Ok(before) = start.checked_sub(self.duration + SignedDuration::from_secs(1)) else {
                break;
            };
            match self.schedule.next_after(before, &self.tz) {
                Some(f) if f < start => start = f,
                _ => break,
            }
        }
        start
    }

    /// Follows fire times that start inside (or at the end of) the window opened by `last`.
    fn merged_end(&self, mut last: Timestamp, t: Timestamp) -> Timestamp {
        let limit = t + MERGE_HORIZON;
        let mut end = last + self.duration;
        while end <= limit {
            match self.schedule.next_after(last, &self.tz) {
                Some(f) if f <= end => {
                    last = f;
                    end = end.max(f + self.duration);
                }
                _ => break,
            }
        }
        end
    }
}

/// What a job's schedule says it should do.
// One plan per job: its size does not matter, and unboxed it is simpler to match on.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Plan {
    /// No `ScheduleConfig` on the recorder: record all the time.
    Always,
    /// A `ScheduleConfig`: active inside its windows.
    Windows(Windows),
    /// No `ScheduleConfig` on the uploader: a run at start and at every hour on the hour (local
    /// time), each run lasting until the backlog is empty.
    Hourly(TimeZone),
}

/// The state of a plan at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanState {
    /// Active until `until` (`None`: no end known).
    Active { until: Option<Timestamp> },
    /// Idle; the next activity begins at `next` (`None`: never again).
    Idle { next: Option<Timestamp> },
}

impl Plan {
    /// A plan from an optional schedule: `None` gives `fallback` (Always for the recorder,
    /// Hourly for the uploader).
    pub fn from_schedule(
        schedule: Option<(CronSchedule, Duration)>,
        tz: TimeZone,
        fallback: Plan,
    ) -> Plan {
        match schedule {
            Some((s, d)) => Plan::Windows(Windows::new(s, d, tz)),
            None => fallback,
        }
    }

    /// The state at `t`. For `Hourly`, `Idle.next` is the next hour boundary (runs are
    /// triggers, not windows; the driver emits one at start).
    pub fn state_at(&self, t: Timestamp) -> PlanState {
        match self {
            Plan::Always => PlanState::Active { until: None },
            Plan::Windows(w) => match w.window_at(t) {
                Some(win) => PlanState::Active {
                    until: Some(win.end),
                },
                None => PlanState::Idle {
                    next: w.next_window_after(t).map(|n| n.start),
                },
            },
            Plan::Hourly(tz) => PlanState::Idle {
                next: next_hour(t, tz),
            },
        }
    }
}

/// The next local hour boundary strictly after `t`.
pub fn next_hour(t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    hourly().next_after(t, tz)
}

/// The last local hour boundary at or before `t`.
pub fn last_hour(t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    hourly().previous_at_or_before(t, tz)
}

fn hourly() -> &'static CronSchedule {
    static HOURLY: std::sync::OnceLock<CronSchedule> = std::sync::OnceLock::new();
    HOURLY.get_or_init(|| CronSchedule::parse("0 0 * * * ?").expect("valid hourly expression"))
}
