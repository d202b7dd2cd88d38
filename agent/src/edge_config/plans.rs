//! The schedules of a configuration's jobs as [`Plan`]s, in the device's time zone.

use std::time::Duration;

use jiff::tz::TimeZone;
use tracing::warn;

use super::{EdgeConfig, ScheduleConfig};
use crate::schedule::{CronSchedule, Plan, Windows};

impl Plan {
    /// The recorder's: inside its ScheduleConfig's windows, or always without one.
    pub fn for_recorder(config: &EdgeConfig, tz: &TimeZone) -> Plan {
        windows(config.recorder_schedule(), tz, "recorder").unwrap_or(Plan::Always)
    }

    /// The uploader's: inside its ScheduleConfig's windows, or a run at start and every hour
    /// without one.
    pub fn for_uploader(config: &EdgeConfig, tz: &TimeZone) -> Plan {
        windows(config.uploader_schedule(), tz, "uploader")
            .unwrap_or_else(|| Plan::Hourly(tz.clone()))
    }
}

/// The windows of a validated schedule (so it parses; one that does not is logged and treated
/// as none).
fn windows(schedule: Option<&ScheduleConfig>, tz: &TimeZone, job: &str) -> Option<Plan> {
    let s = schedule?;
    match CronSchedule::parse(&s.schedule_expression) {
        Ok(cron) => Some(Plan::Windows(Windows::new(
            cron,
            Duration::from_secs(u64::from(s.duration_in_seconds)),
            tz.clone(),
        ))),
        Err(e) => {
            warn!(job, reason = %e.reason, "unparseable schedule; running without one");
            None
        }
    }
}
