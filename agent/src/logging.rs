//! Where `tracing` output goes: stderr always (journald picks it up under systemd), and for the
//! daemon also size-rolled files in `AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY`, as the AWS agent does.
//!
//! `tracing-appender` rotates by time only, so the file is a `file-rotate` writer behind
//! `tracing_appender::non_blocking` (a slow disk never blocks a recorder). Sizes:
//! `AWS_KVS_EDGE_LOG_MAX_FILE_SIZE` MB per file, rolled into `kvs-edge-agent.log.1` ..
//! `.N` with N = `AWS_KVS_EDGE_LOG_ROLLOVER_COUNT` (older ones are deleted).
//! A size of 0 means no size rollover (one growing file, for logrotate or the like); a count of
//! 0 keeps only the current file.

use std::path::{Path, PathBuf};

use file_rotate::{ContentLimit, FileRotate, compression::Compression, suffix::AppendCount};
use serde::Deserialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The levels `AWS_KVS_EDGE_LOG_LEVEL` accepts (log4j's names, matched case-insensitively).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Off,
    All,
    Fatal,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub(crate) const NAMES: &'static [(&'static str, LogLevel)] = &[
        ("OFF", LogLevel::Off),
        ("ALL", LogLevel::All),
        ("FATAL", LogLevel::Fatal),
        ("ERROR", LogLevel::Error),
        ("WARN", LogLevel::Warn),
        ("INFO", LogLevel::Info),
        ("DEBUG", LogLevel::Debug),
        ("TRACE", LogLevel::Trace),
    ];

    /// The `tracing` filter directive for this level; FATAL has no tracing level of its own and
    /// maps to ERROR, ALL to TRACE.
    pub fn filter_directive(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Fatal | LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::All | LogLevel::Trace => "trace",
        }
    }
}

/// Where and how the daemon logs: the `AWS_KVS_EDGE_LOG_*` variables and `log_format`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    pub level: LogLevel,
    /// Size at which the log file rolls over, in MB (`AWS_KVS_EDGE_LOG_MAX_FILE_SIZE`).
    pub max_file_size_mb: u32,
    /// Rolled-over files kept (`AWS_KVS_EDGE_LOG_ROLLOVER_COUNT`).
    pub rollover_count: u32,
    pub output_directory: PathBuf,
    /// The files' format (stderr stays text for journald).
    pub format: LogFormat,
}

/// The rolled log files' format (the settings file's `log_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The current log file's name in the output directory.
pub const FILE_NAME: &str = "kvs-edge-agent.log";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot create the log directory {}: {source}", dir.display())]
    Directory {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Keeps the file writer's thread alive; dropping it flushes the lines still queued, so hold it
/// until the process exits.
#[must_use = "dropping the guard stops file logging"]
pub struct LogGuard {
    _worker: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Logs to stderr only (the operator verbs). `RUST_LOG` overrides the level.
pub fn init_stderr(default_directive: &str) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let _ = tracing_subscriber::registry()
        .with(log_filter(rust_log.as_deref(), default_directive))
        .with(stderr_layer())
        .try_init();
}

/// Logs to stderr and to the rolled files (the daemon). A directory that cannot be created is
/// an error, so a misconfigured path is noticed at start rather than silently losing logs.
pub fn init_with_files(
    default_directive: &str,
    settings: &LogSettings,
) -> Result<LogGuard, LogError> {
    let writer = rolling_writer(
        &settings.output_directory,
        u64::from(settings.max_file_size_mb) << 20,
        settings.rollover_count,
    )?;
    let (non_blocking, worker) = tracing_appender::non_blocking(writer);
    let rust_log = std::env::var("RUST_LOG").ok();
    let _ = tracing_subscriber::registry()
        .with(log_filter(rust_log.as_deref(), default_directive))
        .with(stderr_layer())
        .with(file_layer(non_blocking, settings.format))
        .try_init();
    Ok(LogGuard {
        _worker: Some(worker),
    })
}

fn stderr_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use std::io::IsTerminal;
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into journald or a file.
        .with_ansi(std::io::stderr().is_terminal())
}

fn file_layer<S>(
    writer: tracing_appender::non_blocking::NonBlocking,
    format: LogFormat,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false);
    match format {
        LogFormat::Text => Box::new(layer),
        LogFormat::Json => Box::new(layer.json().flatten_event(true)),
    }
}

/// The size-rolled file writer: `max_bytes` 0 is no size limit. Rolls after the write that
/// crosses the limit (`BytesSurpassed`), so no line is cut in two across files.
pub fn rolling_writer(
    dir: &Path,
    max_bytes: u64,
    rollover_count: u32,
) -> Result<FileRotate<AppendCount>, LogError> {
    // file-rotate panics when it cannot create the directory: check it here first.
    std::fs::create_dir_all(dir).map_err(|source| LogError::Directory {
        dir: dir.to_owned(),
        source,
    })?;
    let limit = match usize::try_from(max_bytes) {
        Ok(0) => ContentLimit::None,
        Ok(n) => ContentLimit::BytesSurpassed(n),
        Err(_) => ContentLimit::None,
    };
    Ok(FileRotate::new(
        dir.join(FILE_NAME),
        AppendCount::new(rollover_count as usize),
        limit,
        Compression::None,
        None,
    ))
}

/// The filter for `RUST_LOG` (if set and valid) or the default. At trace level the AWS signing
/// and HTTP layers print canonical requests and headers, which carry session tokens, so those
/// targets never go below info, whatever `RUST_LOG` asks for.
pub fn log_filter(rust_log: Option<&str>, default_directive: &str) -> EnvFilter {
    let mut filter = rust_log
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(default_directive));
    for quiet in [
        "aws_sigv4=info",
        "aws_smithy_runtime=info",
        "aws_smithy_http_client=info",
    ] {
        filter = filter.add_directive(quiet.parse().expect("valid directive"));
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    /// Whether (aws_sigv4, our own) trace events pass the filter.
    fn enabled(rust_log: Option<&str>) -> (bool, bool) {
        let subscriber = tracing_subscriber::registry().with(log_filter(rust_log, "info"));
        tracing::subscriber::with_default(subscriber, || {
            (
                tracing::enabled!(target: "aws_sigv4::http_request", Level::TRACE),
                tracing::enabled!(target: "kvs_edge_agent::uploader", Level::TRACE),
            )
        })
    }

    #[test]
    fn signing_layers_never_log_below_info() {
        assert_eq!(enabled(Some("trace")), (false, true));
        assert_eq!(enabled(Some("aws_sigv4=trace,trace")), (false, true));
        assert_eq!(enabled(None), (false, false));
    }

    fn log_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Writes `lines` events through the same layers as the daemon, then drops the guard (which
    /// must flush every queued line).
    fn log_through_files(dir: &Path, max_bytes: u64, count: u32, lines: usize) {
        log_through_files_as(dir, max_bytes, count, lines, LogFormat::Text)
    }

    fn log_through_files_as(
        dir: &Path,
        max_bytes: u64,
        count: u32,
        lines: usize,
        format: LogFormat,
    ) {
        let (writer, guard) =
            tracing_appender::non_blocking(rolling_writer(dir, max_bytes, count).unwrap());
        let subscriber = tracing_subscriber::registry()
            .with(log_filter(None, "info"))
            .with(file_layer(writer, format));
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..lines {
                tracing::info!(
                    line = i,
                    "a line long enough to fill a small log file quickly"
                );
            }
        });
        drop(guard);
    }

    #[test]
    fn json_files_hold_one_object_per_line_with_the_fields() {
        let dir = tempfile::tempdir().unwrap();
        log_through_files_as(dir.path(), 0, 1, 3, LogFormat::Json);
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["line"], 2);
        assert_eq!(lines[2]["level"], "INFO");
        assert_eq!(
            lines[2]["message"],
            "a line long enough to fill a small log file quickly"
        );
        assert!(lines[2]["timestamp"].is_string());
    }

    #[test]
    fn files_roll_at_the_size_and_their_number_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("nested/log");
        log_through_files(&logs, 1000, 3, 200);
        assert_eq!(
            log_files(&logs),
            [
                "kvs-edge-agent.log",
                "kvs-edge-agent.log.1",
                "kvs-edge-agent.log.2",
                "kvs-edge-agent.log.3"
            ]
        );
        for name in log_files(&logs) {
            let text = std::fs::read_to_string(logs.join(&name)).unwrap();
            // One line over the limit at most, and never a line cut in two.
            assert!(text.len() < 1000 + 200, "{name}: {} bytes", text.len());
            assert!(text.ends_with('\n'), "{name}");
            assert!(!text.contains("\x1b["), "no colour codes in files");
        }
        // The guard flushed the last line; the newest file holds it.
        let current = std::fs::read_to_string(logs.join(FILE_NAME)).unwrap();
        assert!(current.contains("line=199"), "{current}");
        let oldest = std::fs::read_to_string(logs.join("kvs-edge-agent.log.3")).unwrap();
        assert!(
            !oldest.contains("line=0\n"),
            "the oldest files were deleted"
        );
    }

    #[test]
    fn zero_size_is_one_growing_file() {
        let dir = tempfile::tempdir().unwrap();
        log_through_files(dir.path(), 0, 3, 200);
        assert_eq!(log_files(dir.path()), ["kvs-edge-agent.log"]);
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text.lines().count(), 200);
    }

    #[test]
    fn zero_count_keeps_only_the_current_file() {
        let dir = tempfile::tempdir().unwrap();
        log_through_files(dir.path(), 500, 0, 50);
        assert_eq!(log_files(dir.path()), ["kvs-edge-agent.log"]);
    }

    #[test]
    fn an_uncreatable_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let e = rolling_writer(&file.join("log"), 1 << 20, 3)
            .err()
            .expect("a file is not a directory");
        assert!(e.to_string().contains("a-file/log"), "{e}");
    }
}
