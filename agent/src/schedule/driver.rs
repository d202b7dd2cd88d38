//! Wakes a job at the start of its window and stops it at the end, without polling.
//!
//! The driver sleeps until the next transition computed from the wall clock, but never longer
//! than `max_sleep` (60 s by default), and re-evaluates the plan against the wall clock after
//! every wake-up. Timers run on monotonic time, so a wall-clock step (NTP, suspend/resume, an
//! operator's `date -s`) is noticed at the next wake-up, within `max_sleep`: a job inside a
//! window that the clock jumped out of is stopped, one whose window the clock jumped into is
//! started, and nothing fires twice for a time the clock passes again after stepping back.
//!
//! Why not `tokio-cron-scheduler`: it pins croner 3 in POSIX weekday mode (0/7 = Sunday) and
//! re-parses the expression with no way to change that, so Quartz's `? * 2-6` would fire
//! Tuesday to Saturday and `6L` would mean the last Saturday; it only fires instants (no window
//! with a duration, no "start at once when configured inside a window"), and its timers do not
//! re-check the wall clock after a step.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::window::{Plan, PlanState, next_hour};
use crate::clock::Clock;

/// Default cap on one sleep, which bounds how late a wall-clock step is noticed.
pub const DEFAULT_MAX_SLEEP: Duration = Duration::from_secs(60);

/// What the job should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Start (or, for the hourly uploader, begin a run); `until` is the window's end when known.
    Start { until: Option<Timestamp> },
    /// The window ended: stop.
    Stop,
}

/// Turns a [`Plan`] into start/stop transitions as wall-clock time passes.
pub struct ScheduleDriver {
    plan: Plan,
    /// Read for the wall clock, slept on for the waits (monotonic).
    clock: Arc<dyn Clock>,
    max_sleep: Duration,
    active: bool,
    /// Hourly plan: the hour boundary of the next run; `None` before the run at start.
    next_run: Option<Timestamp>,
}

impl ScheduleDriver {
    pub fn new(plan: Plan, clock: Arc<dyn Clock>) -> Self {
        ScheduleDriver {
            plan,
            clock,
            max_sleep: DEFAULT_MAX_SLEEP,
            active: false,
            next_run: None,
        }
    }

    /// Caps one sleep; a wall-clock step is noticed within this time.
    pub fn with_max_sleep(mut self, max_sleep: Duration) -> Self {
        self.max_sleep = max_sleep.max(Duration::from_millis(1));
        self
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Whether the job is inside a window (for `Hourly`: whether the run at start was emitted).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Waits for the next transition. The first call returns at once when the plan is active
    /// now (configured inside a window), and for `Always` and `Hourly` (the run at start).
    pub async fn next_transition(&mut self) -> Transition {
        let mut idle_spins = 0u32;
        loop {
            let now = self.clock.now();
            let wake_at = match self.evaluate(now) {
                Ok(transition) => return transition,
                Err(wake_at) => wake_at,
            };
            if matches!(self.plan, Plan::Always) {
                std::future::pending::<()>().await;
            }
            let mut d = wake_at
                .and_then(|w| Duration::try_from(w.duration_since(now)).ok())
                .map_or(self.max_sleep, |d| d.min(self.max_sleep));
            // A transition due now that the plan does not confirm must not spin the loop.
            if d.is_zero() {
                idle_spins += 1;
                if idle_spins > 1 {
                    d = Duration::from_secs(1).min(self.max_sleep);
                }
            } else {
                idle_spins = 0;
            }
            self.clock.sleep(d).await;
        }
    }

    /// A transition due at `now`, or else when to look again.
    fn evaluate(&mut self, now: Timestamp) -> Result<Transition, Option<Timestamp>> {
        match &self.plan {
            Plan::Always => {
                if self.active {
                    Err(None)
                } else {
                    self.active = true;
                    Ok(Transition::Start { until: None })
                }
            }
            Plan::Windows(_) => match self.plan.state_at(now) {
                PlanState::Active { until } => {
                    if self.active {
                        Err(until)
                    } else {
                        self.active = true;
                        Ok(Transition::Start { until })
                    }
                }
                PlanState::Idle { next } => {
                    if self.active {
                        self.active = false;
                        Ok(Transition::Stop)
                    } else {
                        Err(next)
                    }
                }
            },
            Plan::Hourly(tz) => {
                let following = next_hour(now, tz);
                match self.next_run {
                    None if self.active => Err(None),
                    Some(due) if now < due => {
                        // After the clock steps back, wait for the next boundary, not the old one.
                        if following.is_some_and(|f| f < due) {
                            self.next_run = following;
                        }
                        Err(self.next_run)
                    }
                    _ => {
                        // `active` marks that the run at start happened; hourly runs end on
                        // their own when the backlog is empty.
                        self.active = true;
                        self.next_run = following;
                        Ok(Transition::Start { until: None })
                    }
                }
            }
        }
    }
}
