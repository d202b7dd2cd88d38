//! `kvs-edge-agent schedule ...`: check a Quartz schedule before sending it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use kvs_edge_agent::schedule::{CronSchedule, Windows};

#[derive(clap::Args, Debug)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ScheduleCommand {
    /// Print the next fire times of a Quartz expression, one RFC 3339 time a line.
    Next {
        #[command(flatten)]
        common: Common,
    },
    /// Print the next job windows (start and end, merged when they overlap), starting with the
    /// one running at --from, if any.
    Windows {
        #[command(flatten)]
        common: Common,
        /// DurationInSeconds of the ScheduleConfig.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        duration: u32,
    },
}

#[derive(clap::Args, Debug)]
struct Common {
    /// The ScheduleExpression (quote it: "0 0 9-16 ? * MON-FRI *").
    expression: String,
    /// Start from this instant (RFC 3339); default: now.
    #[arg(long)]
    from: Option<Timestamp>,
    /// How many to print; fewer when the schedule ends.
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// IANA time zone the schedule runs in; default: the system zone, as the agent uses.
    #[arg(long)]
    tz: Option<String>,
}

impl Common {
    fn resolve(&self) -> anyhow::Result<Result<(CronSchedule, TimeZone, Timestamp), String>> {
        let tz = match &self.tz {
            Some(name) => TimeZone::get(name).with_context(|| {
                format!("unknown time zone {}", kvs_edge_agent::input::quote(name))
            })?,
            None => TimeZone::system(),
        };
        let from = self.from.unwrap_or_else(Timestamp::now);
        Ok(CronSchedule::parse(&self.expression)
            .map(|c| (c, tz, from))
            .map_err(|e| e.to_string()))
    }
}

pub fn run(args: ScheduleArgs) -> anyhow::Result<ExitCode> {
    let common = match &args.command {
        ScheduleCommand::Next { common } | ScheduleCommand::Windows { common, .. } => common,
    };
    let (cron, tz, from) = match common.resolve()? {
        Ok(resolved) => resolved,
        Err(reason) => {
            eprintln!("{reason}");
            return Ok(ExitCode::from(2));
        }
    };
    let show = |t: Timestamp| t.display_with_offset(tz.to_offset(t));
    match args.command {
        ScheduleCommand::Next { common } => {
            let mut t = from;
            for _ in 0..common.count {
                let Some(f) = cron.next_after(t, &tz) else {
                    break;
                };
                println!("{}", show(f));
                t = f;
            }
        }
        ScheduleCommand::Windows { common, duration } => {
            let windows = Windows::new(cron, Duration::from_secs(duration.into()), tz.clone());
            for w in windows.windows_from(from).take(common.count) {
                println!("{} {}", show(w.start), show(w.end));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
