//! `kvs-edge-agent check`: compare the catalog with the media files on disk.
//!
//! Read-only by default (safe beside a running agent, which may show an in-flight tail on an
//! open segment); `--repair` runs the startup recovery first, and must not run while the agent
//! records. Exits 0 when catalog and disk agree, 1 when they do not.

use std::path::PathBuf;
use std::process::ExitCode;

use kvs_edge_agent::catalog::{self, Catalog};
use kvs_edge_agent::recorder::recovery;
use kvs_edge_agent::settings::{self, Env};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The recording directory (default: AWS_KVS_EDGE_RECORDING_DIRECTORY, else the current
    /// directory).
    #[arg(long)]
    pub recording_dir: Option<PathBuf>,
    /// The catalog (default: kvs-edge-agent.db in the recording directory given, else the
    /// agent's own).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Only this stream.
    #[arg(long)]
    pub stream: Option<String>,
    /// Repair first, as the agent does at startup (stop the agent before).
    #[arg(long)]
    pub repair: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = match settings::load(&Env::from_process(), None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kvs-edge-agent: invalid settings: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let (recording_dir, default_catalog) = match &args.recording_dir {
        Some(d) => (d.clone(), d.join(catalog::FILE_NAME)),
        None => (
            settings.recording_directory.clone(),
            settings.catalog_path(),
        ),
    };
    let catalog_path = args.catalog.clone().unwrap_or(default_catalog);
    let stream = args.stream.as_deref();
    let catalog = if args.repair {
        let catalog = Catalog::open(&catalog_path)?;
        let report = recovery::recover(&catalog, &recording_dir, stream)?;
        for a in &report.actions {
            println!("repaired: {a}");
        }
        catalog
    } else {
        Catalog::open_read_only(&catalog_path)?
    };
    let audit = recovery::audit(&catalog, &recording_dir, stream)?;
    for p in &audit.problems {
        println!("problem: {p}");
    }
    println!(
        "{} segments, {} fragments, {} files: {}",
        audit.segments,
        audit.fragments,
        audit.files,
        if audit.problems.is_empty() {
            "catalog and disk agree".to_owned()
        } else {
            format!("{} problems", audit.problems.len())
        }
    );
    Ok(if audit.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
