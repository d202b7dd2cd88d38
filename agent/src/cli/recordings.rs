//! `kvs-edge-agent recordings list|du`: what is recorded, what is uploaded, and how much room
//! each stream uses against its limit. Reads the catalog read-only, so it is safe beside a
//! running agent.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use kvs_edge_agent::catalog::{Catalog, SegmentState, SegmentSummary};
use kvs_edge_agent::janitor::policy::Limits;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Optional YAML settings file, as given to `run`.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Segments with their time range, size, fragments and upload state, then totals.
    List {
        /// Only this stream.
        #[arg(long)]
        stream: Option<String>,
    },
    /// Per-stream usage against MaxLocalMediaSizeInMB.
    Du,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = match super::load_settings(args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let catalog = Catalog::open_read_only(&settings.catalog_path())?;
    match args.command {
        Command::List { stream } => list(&catalog, stream.as_deref()),
        Command::Du => du(&catalog),
    }?;
    Ok(ExitCode::SUCCESS)
}

fn list(catalog: &Catalog, stream: Option<&str>) -> anyhow::Result<()> {
    let segments = catalog.segment_summaries(stream)?;
    println!(
        "{:<20} {:<20} {:>9} {:>10} {:>5} {:>8} {:>6} {:>7} {:<8} PATH",
        "STREAM",
        "START (UTC)",
        "DURATION",
        "SIZE",
        "FRAGS",
        "UPLOADED",
        "FAILED",
        "UNSYNC",
        "STATE"
    );
    for s in &segments {
        let seg = &s.segment;
        println!(
            "{:<20} {:<20} {:>9} {:>10} {:>5} {:>8} {:>6} {:>7} {:<8} {}",
            seg.stream_name,
            utc(seg.start_ms),
            seconds(seg.end_ms - seg.start_ms),
            size(seg.size),
            s.fragments,
            s.uploaded,
            s.failed,
            s.clock_unsynced,
            seg.state.as_str(),
            seg.path
        );
    }
    for (stream, t) in totals(&segments) {
        let unsynced = if t.clock_unsynced > 0 {
            format!(
                "; {} recorded while the clock was not synchronised",
                t.clock_unsynced
            )
        } else {
            String::new()
        };
        println!(
            "total {stream}: {} segments, {}, {} fragments ({} uploaded, {} failed, {} pending){unsynced}",
            t.segments,
            size(t.bytes),
            t.fragments,
            t.uploaded,
            t.failed,
            t.pending
        );
    }
    Ok(())
}

fn du(catalog: &Catalog) -> anyhow::Result<()> {
    let segments = catalog.segment_summaries(None)?;
    let mut streams = totals(&segments);
    for config in catalog.configs()? {
        streams.entry(config.stream_name().to_owned()).or_default();
    }
    println!(
        "{:<20} {:>8} {:>10} {:>10} {:>6} {:<19} {:>7} {:>10} {:>9} RETENTION",
        "STREAM",
        "SEGMENTS",
        "USED",
        "LIMIT",
        "USED%",
        "STRATEGY",
        "PENDING",
        "TO_UPLOAD",
        "OLDEST"
    );
    let now = jiff::Timestamp::now().as_millisecond();
    for (stream, t) in &streams {
        let config = catalog.config(stream)?;
        let limits = config.as_ref().map(|c| Limits::of(&c.request.edge_config));
        let max = limits.and_then(|l| l.max_bytes);
        let backlog = catalog.backlog(stream)?;
        println!(
            "{:<20} {:>8} {:>10} {:>10} {:>6} {:<19} {:>7} {:>10} {:>9} {}",
            stream,
            t.segments,
            size(t.bytes),
            max.map(size).unwrap_or_else(|| "-".into()),
            max.map(|m| format!("{:.1}", 100.0 * t.bytes as f64 / m as f64))
                .unwrap_or_else(|| "-".into()),
            match (limits, max) {
                (Some(l), Some(_)) => l.strategy.as_str(),
                _ => "-",
            },
            backlog.fragments,
            size(backlog.bytes).replace(' ', ""),
            backlog
                .oldest_ms
                .map(|t| age(now - t))
                .unwrap_or_else(|| "-".into()),
            limits
                .map(|l| format!("{}h", l.retention_ms / 3_600_000))
                .unwrap_or_else(|| "(no configuration)".into()),
        );
    }
    Ok(())
}

/// An age as `3d04h`, `2h05m`, `4m10s` or `12s`.
fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[derive(Default)]
struct Totals {
    segments: usize,
    bytes: u64,
    fragments: u64,
    uploaded: u64,
    failed: u64,
    pending: u64,
    clock_unsynced: u64,
}

/// Per-stream totals of what is kept (segments being deleted no longer count).
fn totals(segments: &[SegmentSummary]) -> BTreeMap<String, Totals> {
    let mut out: BTreeMap<String, Totals> = BTreeMap::new();
    for s in segments
        .iter()
        .filter(|s| s.segment.state != SegmentState::Deleting)
    {
        let t = out.entry(s.segment.stream_name.clone()).or_default();
        t.segments += 1;
        t.bytes += s.segment.size;
        t.fragments += u64::from(s.fragments);
        t.uploaded += u64::from(s.uploaded);
        t.failed += u64::from(s.failed);
        t.pending += u64::from(s.pending);
        t.clock_unsynced += u64::from(s.clock_unsynced);
    }
    out
}

fn utc(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

fn seconds(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

fn size(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / MIB / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB)
    }
}
