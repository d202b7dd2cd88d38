//! `kvs-edge-agent check`: compare the catalog with the media files on disk.
//!
//! Read-only by default (safe beside a running agent, which may show an in-flight tail on an
//! open segment); `--repair` runs the startup recovery first, and must not run while the agent
//! records. Exits 0 when catalog and disk agree, 1 when they do not.

use std::process::ExitCode;

use kvs_edge_agent::catalog::Catalog;
use kvs_edge_agent::recorder::recovery;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub store: super::StoreArgs,
    /// Only this stream.
    #[arg(long)]
    pub stream: Option<String>,
    /// Repair first, as the agent does at startup (stop the agent before).
    #[arg(long)]
    pub repair: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = match super::load_settings(None) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let (recording_dir, catalog_path) = args.store.resolve(&settings);
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
