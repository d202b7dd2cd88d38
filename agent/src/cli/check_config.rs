#[derive(clap::Args, Debug)]
pub struct CheckConfigArgs {}
pub fn run(_a: CheckConfigArgs) -> anyhow::Result<std::process::ExitCode> { anyhow::bail!("todo") }
