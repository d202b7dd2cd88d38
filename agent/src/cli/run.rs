//! `kvs-edge-agent run`: the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tracing::{info, warn};

use kvs_edge_agent::catalog::Catalog;
use kvs_edge_agent::settings::Mode;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Optional YAML settings file (see config/agent.yaml); environment variables still apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let settings = match super::load_settings(args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    super::init_logging(settings.log.level.filter_directive());
    let mode = match &settings.mode {
        Mode::Local => "local".to_owned(),
        Mode::Iot(iot) => format!("iot (thing {})", iot.thing_name),
        Mode::Greengrass { root } => format!("greengrass (root {})", root.display()),
    };
    info!(version = env!("CARGO_PKG_VERSION"), mode, "starting");

    let state_dir = settings.state_directory();
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let catalog = Catalog::open(&settings.catalog_path())?;
    let configs = catalog.configs()?;
    info!(
        catalog = %settings.catalog_path().display(),
        streams = configs.len(),
        "catalog open"
    );
    for c in &configs {
        info!(stream = c.stream_name(), sync_status = %c.sync_status, "stored edge configuration");
    }
    if configs.len() > settings.file.max_streams as usize {
        warn!(
            stored = configs.len(),
            max_streams = settings.file.max_streams,
            "more stored configurations than max_streams"
        );
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // Handlers are installed before "ready" is logged, so a stop request is never lost.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        info!("ready");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        anyhow::Ok(())
    })?;
    info!("stopping");
    Ok(ExitCode::SUCCESS)
}
