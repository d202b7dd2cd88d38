//! `kvs-edge-agent check-config FILE|file://FILE|-`: validate a StartEdgeConfigurationUpdate
//! request before sending it, as `aws kinesisvideo start-edge-configuration-update
//! --cli-input-json` would take it.

use std::path::Path;
use std::process::ExitCode;

use kvs_edge_agent::control::desired::MAX_PAYLOAD_BYTES;
use kvs_edge_agent::edge_config::{StartEdgeConfigurationUpdateRequest, parse_start_request};
use kvs_edge_agent::input::file::read_stdin_text;
use kvs_edge_agent::input::{ReadError, read_regular_text};

#[derive(clap::Args, Debug)]
pub struct CheckConfigArgs {
    /// The request JSON: a path, `file://path` (as the AWS CLI takes it), or `-` for stdin.
    pub input: String,
}

/// Reads `FILE`, `file://FILE` or `-` (stdin), the forms the AWS CLI's `--cli-input-json` takes:
/// a regular file of at most what the agent takes over MQTT.
pub fn read_input(input: &str) -> Result<String, ReadError> {
    const WHAT: &str = "the request";
    let max = MAX_PAYLOAD_BYTES as u64;
    if input == "-" {
        return read_stdin_text(max, WHAT);
    }
    let path = input.strip_prefix("file://").unwrap_or(input);
    read_regular_text(Path::new(path), max, WHAT)
}

pub fn run(args: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let text = read_input(&args.input)?;
    match parse_start_request(&text) {
        Ok(request) => {
            let normalized = StartEdgeConfigurationUpdateRequest {
                edge_config: request.edge_config.normalized(),
                ..request
            };
            println!("{}", serde_json::to_string_pretty(&normalized)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            for error in e.field_errors() {
                eprintln!("{error}");
            }
            Ok(ExitCode::from(2))
        }
    }
}
