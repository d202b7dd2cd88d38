#[derive(clap::Args, Debug)]
pub struct RunArgs {}
pub fn run(_a: RunArgs) -> anyhow::Result<std::process::ExitCode> { anyhow::bail!("todo") }
