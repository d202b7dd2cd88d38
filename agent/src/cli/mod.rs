//! The command-line verbs, one module each.

pub mod check;
pub mod check_config;
pub mod ctl;
pub mod export;
pub mod record;
pub mod recordings;
pub mod run;
pub mod schedule;
pub mod upload;

/// Logs to stderr only (the operator verbs); `run` adds the rolled files
/// ([`kvs_edge_agent::logging::init_with_files`]). `RUST_LOG` overrides the level.
pub fn init_logging(default_directive: &str) {
    kvs_edge_agent::logging::init_stderr(default_directive);
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

/// Where a verb finds the media and the catalog: its flags, else the agent's settings.
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// The recording directory (default: AWS_KVS_EDGE_RECORDING_DIRECTORY, else the current
    /// directory).
    #[arg(long)]
    pub recording_dir: Option<std::path::PathBuf>,
    /// The catalog (default: kvs-edge-agent.db in the recording directory given, else the
    /// agent's own).
    #[arg(long)]
    pub catalog: Option<std::path::PathBuf>,
}

impl StoreArgs {
    /// The recording directory and the catalog's path.
    pub fn resolve(
        &self,
        settings: &kvs_edge_agent::settings::Settings,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let (dir, default_catalog) = match &self.recording_dir {
            Some(d) => (d.clone(), d.join(kvs_edge_agent::catalog::FILE_NAME)),
            None => (
                settings.recording_directory.clone(),
                settings.catalog_path(),
            ),
        };
        (dir, self.catalog.clone().unwrap_or(default_catalog))
    }
}

/// Checks that the recording directory belongs to the catalog (binding a new one when `mode`
/// allows) before a verb touches media; a refusal names both and how to proceed.
pub fn bind_store(
    catalog: &kvs_edge_agent::catalog::Catalog,
    catalog_path: &std::path::Path,
    recording_dir: &std::path::Path,
    mode: kvs_edge_agent::store::directory::Bind,
) -> anyhow::Result<kvs_edge_agent::store::directory::Bound> {
    Ok(kvs_edge_agent::store::directory::bind(
        catalog,
        catalog_path,
        recording_dir,
        mode,
    )?)
}
