//! `kvs-edge-agent export`: a recorded time range to a file, MP4 or Matroska by its
//! extension, as the HTTP server's export endpoint serves it. Reads the catalog read-only, so
//! it is safe beside a running agent. No range limit: the file is written as it is built,
//! one fragment in memory at a time. Written to `FILE.partial` and renamed once complete, so
//! an interrupted export never leaves a file that looks whole.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use kvs_edge_agent::catalog::Catalog;
use kvs_edge_agent::export::{Export, ExportError, Format};
use kvs_edge_agent::input::parse_time;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The stream to export (its name in the catalog).
    #[arg(long, value_name = "NAME")]
    pub stream: String,
    /// From this time (ISO 8601 with a zone, or epoch seconds).
    #[arg(long, value_name = "TIME")]
    pub from: String,
    /// Until this time.
    #[arg(long, value_name = "TIME")]
    pub to: String,
    /// The file to write: `.mp4` (fragmented MP4, what browsers play) or `.mkv`.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Optional YAML settings file, as given to `run`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = match super::load_settings(args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let usage = |message: String| {
        eprintln!("kvs-edge-agent export: {message}");
        Ok(ExitCode::from(2))
    };
    let Some(format) = Format::from_path(&args.output) else {
        return usage(format!(
            "--output {}: the name must end in .mp4 or .mkv",
            args.output.display()
        ));
    };
    let (start, end) = match (parse_time(&args.from), parse_time(&args.to)) {
        (Ok(s), Ok(e)) if e > s => (s, e),
        (Ok(_), Ok(_)) => return usage("--to is not after --from".into()),
        (Err(e), _) => return usage(format!("--from: {e}")),
        (_, Err(e)) => return usage(format!("--to: {e}")),
    };
    let catalog = Arc::new(Catalog::open_read_only(&settings.catalog_path())?);
    let mut export = match Export::new(
        catalog,
        &settings.recording_directory,
        &args.stream,
        (start, end),
        format,
    ) {
        Ok(e) => e,
        Err(e @ ExportError::NoMedia { .. }) => return usage(e.to_string()),
        Err(e) => return Err(e.into()),
    };
    let partial = PathBuf::from(format!("{}.partial", args.output.display()));
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?,
    );
    let terminal = std::io::stderr().is_terminal();
    let written = (|| -> anyhow::Result<()> {
        while let Some(chunk) = export.next_chunk()? {
            file.write_all(&chunk)?;
            if terminal {
                let p = export.progress();
                eprint!(
                    "\r{}/{} fragments, {:.1} MB",
                    p.fragments_done,
                    p.fragments_total,
                    p.bytes as f64 / 1e6
                );
            }
        }
        file.flush()?;
        file.get_ref().sync_all()?;
        Ok(())
    })();
    if terminal {
        eprintln!();
    }
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e.context(format!("exporting to {}", args.output.display())));
    }
    std::fs::rename(&partial, &args.output)
        .with_context(|| format!("cannot rename {} into place", partial.display()))?;
    let p = export.progress();
    println!(
        "{}: {} fragments, {} bytes{}{}",
        args.output.display(),
        p.fragments_done - p.skipped - p.overlapping,
        p.bytes,
        if p.skipped > 0 {
            format!("; {} deleted while exporting", p.skipped)
        } else {
            String::new()
        },
        export
            .ended_early
            .as_deref()
            .map(|why| format!("; ended early: {why}"))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
