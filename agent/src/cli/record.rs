//! `kvs-edge-agent record`: record a camera or a clip to local segments, without any cloud.
//!
//! Recovers the stream's segments first (as the agent does at startup), records until
//! `--duration` has passed or SIGINT/SIGTERM arrives, then writes the fragment in flight and
//! closes the segment. Exits 1 when nothing was recorded.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tracing::info;

use kvs_edge_agent::catalog::Catalog;
use kvs_edge_agent::clock::RealClock;
use kvs_edge_agent::edge_config::JobStatus;
use kvs_edge_agent::input::redact_url;
use kvs_edge_agent::recorder::fragmenter::FragmenterConfig;
use kvs_edge_agent::recorder::rtsp::{RtspOptions, RtspTransport};
use kvs_edge_agent::recorder::{self, Control, LogStatus, RecorderConfig, StatusSink};
use kvs_edge_agent::settings::RecorderFile;
use kvs_edge_agent::store::recovery;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// rtsp://[user:password@]host[:port]/path, file:///clip.h264[?fps=N] or /clip.mkv
    #[arg(long)]
    pub uri: String,
    /// Stream name: the directory under the recording directory.
    #[arg(long)]
    pub stream: String,
    /// Stop after this long (e.g. 30s, 5m, 1h; a bare number is seconds). Default: until
    /// interrupted.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub store: super::StoreArgs,
    /// A fragment closes at the first key frame after this many milliseconds.
    #[arg(long)]
    pub min_fragment_ms: Option<u32>,
    /// A segment file closes at the first fragment boundary after this many seconds.
    #[arg(long)]
    pub segment_duration_secs: Option<u32>,
    /// RTP transport.
    #[arg(long, value_parser = ["tcp", "udp"], default_value = "tcp")]
    pub transport: String,
    /// Reconnect when no frame arrives for this many seconds.
    #[arg(long, default_value_t = 10)]
    pub stall_timeout_secs: u64,
    /// Record the source N times in this one process, as streams NAME-1 .. NAME-N: a benchmark
    /// aid showing the daemon's footprint for N cameras.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub copies: u32,
}

/// `30s`, `500ms`, `5m`, `1h`, or seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!(
            "{} is not a duration like 30s",
            kvs_edge_agent::input::quote(s)
        )
    })?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {} (ms, s, m, h)",
                kvs_edge_agent::input::quote(unit)
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// Logs every report and remembers the last one for the exit message.
#[derive(Default)]
struct LastStatus(Mutex<Option<(JobStatus, Option<String>)>>);

impl StatusSink for LastStatus {
    fn report(&self, status: JobStatus, details: Option<&str>) {
        LogStatus.report(status, details);
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((status, details.map(str::to_owned)));
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = match super::load_settings(None) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    super::init_logging("info");
    let (recording_dir, catalog_path) = args.store.resolve(&settings);
    let catalog = open_store(&recording_dir, &catalog_path)?;
    let streams = stream_names(&args);
    for stream in &streams {
        let report = recovery::recover(&catalog, &recording_dir, Some(stream))
            .context("recovery before recording failed")?;
        for line in report.unresolved {
            eprintln!("kvs-edge-agent: unresolved: {line}");
        }
    }
    let cfg = recorder_config(&args, &settings.file.recorder, recording_dir);
    info!(
        stream = %args.stream,
        uri = %redact_url(&args.uri),
        dir = %cfg.recording_dir.display(),
        "recording"
    );
    let status = Arc::new(LastStatus::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let summary = rt.block_on(record(
        &cfg,
        &streams,
        &catalog,
        status.clone(),
        args.duration,
    ))?;
    Ok(outcome(&summary, &status))
}

/// The recording directory (created) and its catalog, bound to each other.
fn open_store(recording_dir: &Path, catalog_path: &Path) -> anyhow::Result<Arc<Catalog>> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(recording_dir)
        .with_context(|| format!("cannot create {}", recording_dir.display()))?;
    let catalog = Arc::new(Catalog::open(catalog_path)?);
    super::bind_store(
        &catalog,
        catalog_path,
        recording_dir,
        kvs_edge_agent::store::directory::Bind::Open,
    )?;
    Ok(catalog)
}

/// `--stream`, or NAME-1 .. NAME-N with `--copies`.
fn stream_names(args: &Args) -> Vec<String> {
    if args.copies == 1 {
        vec![args.stream.clone()]
    } else {
        (1..=args.copies)
            .map(|i| format!("{}-{i}", args.stream))
            .collect()
    }
}

/// The recorder's configuration (its `stream` left empty): the flags, else the settings file.
fn recorder_config(args: &Args, defaults: &RecorderFile, recording_dir: PathBuf) -> RecorderConfig {
    RecorderConfig {
        stream: String::new(),
        uri: args.uri.clone(),
        recording_dir,
        fragmenter: FragmenterConfig {
            min_fragment_ms: i64::from(
                args.min_fragment_ms
                    .unwrap_or(defaults.min_fragment_duration_ms),
            ),
            segment_duration_ms: 1000
                * i64::from(
                    args.segment_duration_secs
                        .unwrap_or(defaults.segment_duration_secs),
                ),
            ..FragmenterConfig::default()
        },
        rtsp: RtspOptions {
            transport: if args.transport == "udp" {
                RtspTransport::Udp
            } else {
                RtspTransport::Tcp
            },
            stall_timeout: Duration::from_secs(args.stall_timeout_secs.max(1)),
            ..RtspOptions::default()
        },
    }
}

/// Records every stream until `duration` has passed or SIGINT/SIGTERM arrives; their summaries
/// added up.
async fn record(
    cfg: &RecorderConfig,
    streams: &[String],
    catalog: &Arc<Catalog>,
    status: Arc<LastStatus>,
    duration: Option<Duration>,
) -> anyhow::Result<recorder::RecorderSummary> {
    let (tx, rx) = tokio::sync::watch::channel(Control::Record);
    stop_on_signal_or_after(duration, tx)?;
    let jobs: Vec<_> = streams
        .iter()
        .map(|stream| {
            let cfg = RecorderConfig {
                stream: stream.clone(),
                ..cfg.clone()
            };
            let status: Arc<dyn StatusSink> = status.clone();
            tokio::spawn(recorder::run(
                cfg,
                catalog.clone(),
                Arc::new(RealClock),
                status,
                rx.clone(),
            ))
        })
        .collect();
    let mut total = recorder::RecorderSummary::default();
    for job in jobs {
        let s = job.await??;
        total.frames += s.frames;
        total.fragments += s.fragments;
        total.segments += s.segments;
        total.sessions += s.sessions;
        total.gaps.extend(s.gaps);
        total.write_errors += s.write_errors;
    }
    Ok(total)
}

/// Sends `Stop` once `duration` has passed or SIGINT/SIGTERM arrives.
fn stop_on_signal_or_after(
    duration: Option<Duration>,
    tx: tokio::sync::watch::Sender<Control>,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let until = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = until => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tx.send(Control::Stop);
        // Keep the sender alive: dropping it also means stop, but say it once.
        std::future::pending::<()>().await;
    });
    Ok(())
}

/// Prints the summary; failure when nothing was recorded, with the last status saying why.
fn outcome(summary: &recorder::RecorderSummary, status: &LastStatus) -> ExitCode {
    println!(
        "recorded {} frames in {} fragments, {} segment files, {} sessions, {} gaps",
        summary.frames,
        summary.fragments,
        summary.segments,
        summary.sessions,
        summary.gaps.len()
    );
    if summary.fragments == 0 {
        let last = status.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((s, details)) = last {
            eprintln!(
                "kvs-edge-agent: nothing recorded; last status {}: {}",
                s.as_str(),
                details.unwrap_or_default()
            );
        } else {
            eprintln!("kvs-edge-agent: nothing recorded");
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("s").is_err());
    }
}
