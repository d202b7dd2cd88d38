//! The command-line verbs, one module each.

pub mod check;
pub mod check_config;
pub mod ctl;
pub mod record;
pub mod recordings;
pub mod run;
pub mod schedule;
pub mod upload;

/// Logs to stderr (journald picks it up under systemd). `RUST_LOG` overrides the level.
pub fn init_logging(default_directive: &str) {
    use std::io::IsTerminal;
    let rust_log = std::env::var("RUST_LOG").ok();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(log_filter(rust_log.as_deref(), default_directive))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into journald or a file.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The filter for `RUST_LOG` (if set and valid) or the default. At trace level the AWS signing
/// and HTTP layers print canonical requests and headers, which carry session tokens, so those
/// targets never go below info, whatever `RUST_LOG` asks for.
fn log_filter(rust_log: Option<&str>, default_directive: &str) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    let mut filter = rust_log
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(default_directive));
    for quiet in [
        "aws_sigv4=info",
        "aws_smithy_runtime=info",
        "aws_smithy_http_client=info",
    ] {
        filter = filter.add_directive(quiet.parse().expect("valid directive"));
    }
    filter
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

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    /// Whether (aws_sigv4, our own) trace events pass the filter.
    fn enabled(rust_log: Option<&str>) -> (bool, bool) {
        let subscriber = tracing_subscriber::registry().with(super::log_filter(rust_log, "info"));
        tracing::subscriber::with_default(subscriber, || {
            (
                tracing::enabled!(target: "aws_sigv4::http_request", Level::TRACE),
                tracing::enabled!(target: "kvs_edge_agent::uploader", Level::TRACE),
            )
        })
    }

    #[test]
    fn signing_layers_never_log_below_info() {
        assert_eq!(enabled(Some("trace")), (false, true));
        assert_eq!(enabled(Some("aws_sigv4=trace,trace")), (false, true));
        assert_eq!(enabled(None), (false, false));
    }
}
