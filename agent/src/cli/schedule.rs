//! `kvs-edge-agent schedule ...`: check a Quartz schedule before sending it.

#[derive(clap::Args, Debug)]
pub struct ScheduleArgs {}

pub fn run(_args: ScheduleArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not implemented yet")
}
