//! The command-line verbs, one module each.

pub mod check;
pub mod check_config;
pub mod record;
pub mod recordings;
pub mod run;
pub mod schedule;

/// Logs to stderr (journald picks it up under systemd). `RUST_LOG` overrides the level.
pub fn init_logging(default_directive: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directive));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Loads the settings from the environment and the optional YAML file, as `run` does; a bad
/// value is reported naming the variable or key, and the verb exits 2.
pub fn load_settings(
    config: Option<&std::path::Path>,
) -> Result<kvs_edge_agent::settings::Settings, std::process::ExitCode> {
    use kvs_edge_agent::settings::{self, Env};
    settings::load(&Env::from_process(), config).map_err(|e| {
        eprintln!("kvs-edge-agent: invalid settings: {e}");
        std::process::ExitCode::from(2)
    })
}
