//! The command-line verbs, one module each.

pub mod check;
pub mod check_config;
pub mod record;
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
