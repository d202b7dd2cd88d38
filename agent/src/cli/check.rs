//! `kvs-edge-agent check`: compare the catalog with the media files on disk.
//!
//! Read-only by default (safe beside a running agent, which may show an in-flight tail on an
//! open segment); `--repair` runs the startup recovery first, and must not run while the agent
//! records. Exits 0 when catalog and disk agree, 1 when they do not.
//!
//! Both refuse a catalog that does not exist, or a recording directory that belongs to another
//! catalog (`store::directory`): a mistyped path must not look like media nobody indexed.
//! `--repair --reindex` is the explicit rebuild: it creates the catalog if needed, takes the
//! directory over, and indexes every segment file the catalog does not know (pending upload).

use std::process::ExitCode;

use kvs_edge_agent::catalog::Catalog;
use kvs_edge_agent::store::directory::{Bind, Bound};
use kvs_edge_agent::store::{audit, recovery};

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
    /// With --repair: rebuild the catalog from the media files (creating it if missing), and
    /// adopt a recording directory that belongs to another (lost) catalog.
    #[arg(long, requires = "repair")]
    pub reindex: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = match super::load_settings(None) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let (recording_dir, catalog_path) = args.store.resolve(&settings);
    let stream = args.stream.as_deref();
    let catalog = if args.repair {
        let (catalog, mode) = if args.reindex {
            (Catalog::open(&catalog_path)?, Bind::Adopt)
        } else {
            (Catalog::open_existing(&catalog_path)?, Bind::Open)
        };
        if let Bound::Adopted { from } =
            super::bind_store(&catalog, &catalog_path, &recording_dir, mode)?
        {
            let from = from.map_or("no catalog".to_owned(), |c| format!("catalog {c}"));
            println!(
                "repaired: took {} over from {from}",
                recording_dir.display()
            );
        }
        let report = recovery::recover(&catalog, &recording_dir, stream)?;
        for a in &report.actions {
            println!("repaired: {a}");
        }
        for u in &report.unresolved {
            println!("repaired, with loss: {u}");
        }
        catalog
    } else {
        let catalog = Catalog::open_read_only(&catalog_path)?;
        super::bind_store(&catalog, &catalog_path, &recording_dir, Bind::Verify)?;
        catalog
    };
    for q in catalog.quarantined(stream)? {
        println!(
            "quarantined: {} -> {} ({})",
            q.original_path, q.path, q.reason
        );
    }
    let audit = audit::audit(&catalog, &recording_dir, stream)?;
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
