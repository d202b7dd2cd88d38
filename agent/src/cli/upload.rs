//! `kvs-edge-agent upload`: uploads a stream's pending fragments now, outside any schedule.
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
    #[arg(long)]
    pub until_empty: bool,
    /// Optional YAML settings file (see config/agent.yaml); environment variables still apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    let mode = if args.until_empty {
        RunMode::UntilEmpty
    } else {
        RunMode::UntilStopped
    };
    let options = Options {
        pacing: !args.no_pacing,
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
        anyhow::Ok(if report.fragments_failed > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
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
        let (left, left_bytes) = match catalog.pending_fragments(stream, 10_000_000) {
            Ok(rows) => (rows.len(), rows.iter().map(|r| r.size).sum::<u64>()),
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
