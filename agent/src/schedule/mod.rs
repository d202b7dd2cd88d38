//! Quartz cron schedules and the job windows built on them.
