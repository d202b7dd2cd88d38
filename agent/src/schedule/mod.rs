//! Quartz cron schedules and the job windows built on them.
//!
//! Recorder and uploader jobs run on a `ScheduleExpression` (Quartz cron) and a
//! `DurationInSeconds`, evaluated in the device's local time zone. The original agent is Java
//! and users copy expressions from the Quartz documentation, so [`CronSchedule`] is a faithful
//! port of `org.quartz.CronExpression` 2.3.2 (parser and `getTimeAfter`), checked against the
//! real Quartz by `tests/quartz_conformance.rs`.
//!
//! Why not `croner` (or `tokio-cron-scheduler`): croner is a different algorithm that agrees
//! with Quartz on common expressions but not on its quirks, which users hit through copied
//! expressions: Quartz accepts and ignores trailing characters (`5X`), treats `99` as `*` and
//! `98` as `?` in the day-of-month field, wraps day-of-month ranges modulo 31, moves a `W` day
//! only within its month but lets `1W`/`LW` land before the search start, reads `L` alone in the
//! day-of-week field as Saturday, stops at this year + 100, and resolves DST gaps and folds the
//! way `java.util.GregorianCalendar` does (a time in a gap resolves forward past it, a time in a
//! fold to the later instant, which is how a skipped time is not fired and a repeated one fires
//! once). Mirroring Quartz's
//! algorithm field by field reproduces all of that; bending another evaluator would not.
//! `tokio-cron-scheduler` pins croner 3 in POSIX weekday mode (0/7 = Sunday) and re-parses the
//! string with no option to change it, so `? * 2-6` would fire Tuesday to Saturday and `6L`
//! would mean the last Saturday; it also has no notion of a window with a duration.

mod driver;
mod jcal;
mod quartz;
mod window;

pub use driver::{DEFAULT_MAX_SLEEP, ScheduleDriver, Transition};
pub use quartz::{CronSchedule, ParseError, default_max_year};
pub use window::{Plan, PlanState, Window, Windows, last_hour, next_hour};
