//! The `kvs-edge-agent` binary: the daemon and the operator verbs.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "kvs-edge-agent", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent daemon (settings from the environment and --config).
    Run(cli::run::RunArgs),
    /// Validate a StartEdgeConfigurationUpdate request and print it normalised.
    CheckConfig(cli::check_config::CheckConfigArgs),
    /// Check a Quartz schedule: next fire times and job windows.
    Schedule(cli::schedule::ScheduleArgs),
    /// Record a camera or file to local segments, without any cloud.
    Record(cli::record::Args),
    /// Compare the catalog with the media files on disk.
    Check(cli::check::Args),
    /// The AWS CLI's edge verbs, spoken to the agent over MQTT.
    Ctl(cli::ctl::Args),
    /// List recorded segments, or show each stream's usage against its limit.
    Recordings(cli::recordings::Args),
    /// Upload a stream's recorded fragments now with PutMedia, showing progress.
    Upload(cli::upload::Args),
    /// Write a recorded time range to an MP4 or Matroska file.
    Export(cli::export::Args),
}

/// Buffers of 128 KiB and more (a camera's read buffer, frames, fragments) are mapped on their own
/// and returned to the system when freed. glibc's default raises this threshold to the size of
/// the largest buffer freed, after which such buffers come from per-thread arenas that keep the
/// memory: a hostile camera driving its read buffer to the 16 MiB limit and retried left the
/// daemon at ~100 MB resident. Setting the threshold also turns that adjustment off.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn map_large_buffers() {
    // SAFETY: glibc's mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn map_large_buffers() {}

fn main() -> ExitCode {
    map_large_buffers();
    // The verbs are command-line tools: a closed pipe (`| head -1`) ends them quietly, as it
    // ends `ls`, where Rust's default (SIGPIPE ignored) makes `println!` panic.
    set_sigpipe(libc::SIG_DFL);
    let cli = Cli::parse();
    if let Command::Run(_) = cli.command {
        // The daemon must never die of a peer closing a socket: write errors it handles.
        set_sigpipe(libc::SIG_IGN);
    }
    let result = match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::CheckConfig(args) => cli::check_config::run(args),
        Command::Schedule(args) => cli::schedule::run(args),
        Command::Record(args) => cli::record::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Ctl(args) => cli::ctl::run(args),
        Command::Recordings(args) => cli::recordings::run(args),
        Command::Upload(args) => cli::upload::run(args),
        Command::Export(args) => cli::export::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvs-edge-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn set_sigpipe(disposition: libc::sighandler_t) {
    // SAFETY: only one thread runs yet, and SIG_DFL and SIG_IGN are not handlers.
    unsafe {
        libc::signal(libc::SIGPIPE, disposition);
    }
}
