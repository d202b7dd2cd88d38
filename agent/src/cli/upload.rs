//! `kvs-edge-agent upload`: uploads a stream's pending fragments now, outside any schedule;
//! with `--from` and `--to`, only those of a time range (stored as an upload request, as one
//! over MQTT would be, and served the same way).
//!
//! Uses the same settings as `run` (catalog and recording directory) and the AWS SDK's
//! configuration from the environment (region, credentials chain, `AWS_ENDPOINT_URL_*`).
//! Progress goes to stdout: one line rewritten in place on a terminal, plain lines otherwise
//! (logs and pipes). Ctrl-C or SIGTERM stops after the fragment in flight and its acks.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kvs_edge_agent::catalog::Catalog;
use kvs_edge_agent::clock::RealClock;
use kvs_edge_agent::input::parse_time;
use kvs_edge_agent::uploader::{Options, ProgressSnapshot, RunMode, StreamTarget, Uploader};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The stream whose recorded fragments to upload (its name in the catalog).
    #[arg(long, value_name = "NAME")]
    pub stream: String,
    /// Send to this stream ARN (x-amzn-stream-arn) instead of the name.
    #[arg(long, value_name = "ARN")]
    pub stream_arn: Option<String>,
    /// Return once no fragment is pending, instead of waiting for new ones until interrupted.
    #[arg(long, conflicts_with = "from")]
    pub until_empty: bool,
    /// Only the fragments from this time (ISO 8601 with a zone, or epoch seconds); with --to.
    #[arg(long, requires = "to", value_name = "TIME")]
    pub from: Option<String>,
    /// Only the fragments until this time; with --from. Returns once they are uploaded.
    #[arg(long, requires = "from", value_name = "TIME")]
    pub to: Option<String>,
    /// Optional YAML settings file (see config/agent.yaml); environment variables still apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Cap this upload at N kbit/s (measured on the bytes sent); the settings file's
    /// uploader.max_kbps and bandwidth_windows otherwise.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(8..=10_000_000))]
    pub max_kbps: Option<u32>,
    /// Do not pace to the service limits (benchmarks against an emulator only).
    #[arg(long, hide = true)]
    pub no_pacing: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = match super::load_settings(args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    super::init_logging("warn");
    let catalog = Arc::new(Catalog::open_existing(&settings.catalog_path())?);
    super::bind_store(
        &catalog,
        &settings.catalog_path(),
        &settings.recording_directory,
        kvs_edge_agent::store::directory::Bind::Verify,
    )?;
    let target = match args.stream_arn {
        Some(arn) => StreamTarget::Arn {
            arn,
            name: args.stream.clone(),
        },
        None => StreamTarget::Name(args.stream.clone()),
    };
    let request = match (&args.from, &args.to) {
        (Some(from), Some(to)) => {
            match range_request(
                &args.stream,
                from,
                to,
                settings.file.uploader.request_limits(),
            ) {
                Ok(r) => Some(r),
                Err(message) => {
                    eprintln!("{message}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        _ => None,
    };
    let mode = if request.is_some() {
        RunMode::Requests
    } else if args.until_empty {
        RunMode::UntilEmpty
    } else {
        RunMode::UntilStopped
    };
    let request_id = match request {
        Some(r) => {
            let id = r.request_id.clone();
            catalog.add_request(&r, jiff::Timestamp::now())?;
            Some(id)
        }
        None => None,
    };
    let mut bandwidth = settings
        .file
        .uploader
        .bandwidth(&jiff::tz::TimeZone::system());
    if let Some(kbps) = args.max_kbps {
        bandwidth = kvs_edge_agent::uploader::budget::Caps {
            default_kbps: kbps,
            windows: Vec::new(),
        };
    }
    let options = Options {
        pacing: !args.no_pacing,
        backlog_order: settings.file.uploader.backlog_order,
        bandwidth,
        ..Options::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let sdk = kvs_edge_agent::aws::env_credentials::sdk_config().await?;
        let uploader = Uploader::new(
            &sdk,
            Arc::clone(&catalog),
            settings.recording_directory.clone(),
            Arc::new(RealClock),
            options,
        )
        .context("cannot set up the uploader")?;
        let handle = uploader.start(target, mode, None);
        let tty = std::io::stdout().is_terminal();
        let mut display = Display::new(tty);
        let mut tick = tokio::time::interval(if tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        });
        let mut stopping = false;
        while !handle.is_finished() {
            tokio::select! {
                _ = tick.tick() => {
                    display.show(&args.stream, &catalog, &handle.progress());
                }
                _ = term.recv(), if !stopping => { stopping = true; handle.stop(); }
                _ = int.recv(), if !stopping => { stopping = true; handle.stop(); }
            }
        }
        let result = handle.wait().await;
        let last = match &result {
            Ok(p) => p.clone(),
            Err(_) => ProgressSnapshot::default(),
        };
        display.show(&args.stream, &catalog, &last);
        display.finish();
        let report = result.context("upload failed")?;
        println!(
            "{}: uploaded {} fragments ({}), {} failed",
            args.stream,
            report.fragments_uploaded,
            megabytes(report.bytes_uploaded),
            report.fragments_failed
        );
        if let Some(id) = request_id {
            let row = catalog
                .requests(&args.stream)?
                .into_iter()
                .find(|r| r.request_id == id);
            if let Some(r) = row {
                println!(
                    "request {id}: {} ({})",
                    r.state.as_str(),
                    r.details.as_deref().unwrap_or("stopped before it was done")
                );
                if r.state != kvs_edge_agent::catalog::RequestState::Done {
                    return anyhow::Ok(ExitCode::from(1));
                }
            }
        }
        anyhow::Ok(if report.fragments_failed > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// The range request of `--from`/`--to`, checked as a request over MQTT would be.
fn range_request(
    stream: &str,
    from: &str,
    to: &str,
    limits: kvs_edge_agent::uploader::request::Limits,
) -> Result<kvs_edge_agent::catalog::NewRequest, String> {
    let start = parse_time(from).map_err(|e| format!("--from {e}"))?;
    let end = parse_time(to).map_err(|e| format!("--to {e}"))?;
    let now = jiff::Timestamp::now().as_millisecond();
    kvs_edge_agent::uploader::request::range(
        stream,
        format!("local-{now}"),
        start,
        end,
        now,
        limits,
    )
    .map_err(|r| {
        r.message
            .replace("EndTime", "--to")
            .replace("StartTime", "--from")
    })
}

struct Display {
    tty: bool,
    started: Instant,
    drawn: bool,
}

impl Display {
    fn new(tty: bool) -> Self {
        Display {
            tty,
            started: Instant::now(),
            drawn: false,
        }
    }

    fn show(&mut self, stream: &str, catalog: &Catalog, p: &ProgressSnapshot) {
        let (left, left_bytes) = match catalog.backlog(stream) {
            Ok(b) => (b.fragments, b.bytes),
            Err(_) => (0, 0),
        };
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let mut line = format!(
            "{stream}: {left} fragments ({}) left, {} uploaded ({}), {} failed, {}/s",
            megabytes(left_bytes),
            p.fragments_uploaded,
            megabytes(p.bytes_uploaded),
            p.fragments_failed,
            megabytes((p.bytes_uploaded as f64 / secs) as u64),
        );
        // Retrying shows why, or a stuck upload would look merely slow.
        if p.retries > 0
            && let Some(e) = &p.last_error
        {
            line.push_str(&format!(", {} retries, last: {e}", p.retries));
        }
        let mut out = std::io::stdout().lock();
        if self.tty {
            let _ = write!(out, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        self.drawn = true;
    }

    fn finish(&mut self) {
        if self.tty && self.drawn {
            println!();
        }
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
