//! `kvs-edge-agent run`: the daemon. The agent itself is [`kvs_edge_agent::agent`]; this verb
//! reads the arguments, sets up logging, and turns SIGTERM or SIGINT into its shutdown.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tracing::{error, info};

use kvs_edge_agent::agent::{self, Deps, StartError, Stopped};
use kvs_edge_agent::settings::Mode;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Optional YAML settings file (see config/agent.yaml); environment variables still apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The MQTT broker (mqtt://host:1883, mqtts://host:8883); overrides mqtt.broker_url.
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// Local secrets file (MediaUriSecretArn -> media URI); overrides secrets_file.
    #[arg(long, value_name = "FILE")]
    pub secrets_file: Option<PathBuf>,
    /// A StartEdgeConfigurationUpdate request to apply at start, as if received over MQTT
    /// (repeatable): for sites configured from files rather than from the cloud. Applied only
    /// when it differs from the stored configuration, so a restart does not restart its jobs.
    #[arg(long, value_name = "FILE")]
    pub edge_config: Vec<String>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut settings = match super::load_settings(args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let mut startup_configs = Vec::new();
    for input in &args.edge_config {
        let text = super::check_config::read_input(input)?;
        match kvs_edge_agent::edge_config::parse_start_request(&text) {
            Ok(request) => startup_configs.push(request),
            Err(e) => {
                for error in e.field_errors() {
                    eprintln!("kvs-edge-agent: {input}: {error}");
                }
                return Ok(ExitCode::from(2));
            }
        }
    }
    // rumqttd logs every client's connect and disconnect (the latter as an error): quiet it
    // unless debugging. RUST_LOG overrides all of this.
    let level = settings.log.level.filter_directive();
    let directive = match level {
        "debug" | "trace" => level.to_owned(),
        _ => format!("{level},rumqttd=off"),
    };
    // Held to the end of `run`: dropping it flushes the last lines ("stopped") to the file.
    let _log_guard = match kvs_edge_agent::logging::init_with_files(&directive, &settings.log) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("kvs-edge-agent: invalid settings: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mode = match &settings.mode {
        Mode::Local => "local".to_owned(),
        Mode::Iot(iot) => format!("iot (thing {})", iot.thing_name),
        Mode::Greengrass { root } => format!("greengrass (root {})", root.display()),
    };
    info!(version = env!("CARGO_PKG_VERSION"), mode, "starting");
    // The flags override the settings file.
    if let Some(url) = args.broker {
        settings.file.mqtt.broker_url = Some(url);
    }
    if let Some(path) = args.secrets_file {
        settings.file.secrets_file = Some(path);
    }
    let agent = match agent::Agent::open(settings) {
        Ok(a) => a,
        Err(e) => return start_failed(e),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let deps = Deps {
        startup_configs,
        ..Deps::default()
    };
    let stopped = rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        // Handlers are installed first, so a stop request is never lost.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: stopping"),
                _ = int.recv() => info!("SIGINT: stopping"),
            }
        };
        anyhow::Ok(agent.run(deps, shutdown).await)
    })?;
    // Jobs still blocked (a stuck camera, a stuck disk) must not hold the exit.
    rt.shutdown_timeout(Duration::from_millis(300));
    info!("stopped");
    match stopped {
        Ok(Stopped::Asked) => Ok(ExitCode::SUCCESS),
        Ok(Stopped::ControlCrashed) => Ok(ExitCode::FAILURE),
        Err(e) => start_failed(e),
    }
}

/// A refusal (damaged catalog, another catalog's media, invalid identity files) exits 2 with
/// the reason; any other failure is an error (exit 1).
fn start_failed(e: StartError) -> anyhow::Result<ExitCode> {
    match e {
        StartError::Refused(why) => {
            error!("{why}");
            eprintln!("kvs-edge-agent: {why}");
            Ok(ExitCode::from(2))
        }
        StartError::Failed(why) => Err(anyhow::anyhow!(why)),
    }
}
