//! `kvs-edge-agent check-config FILE|file://FILE|-`: validate a StartEdgeConfigurationUpdate
//! request before sending it, as `aws kinesisvideo start-edge-configuration-update
//! --cli-input-json` would take it.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;

use kvs_edge_agent::edge_config::{StartEdgeConfigurationUpdateRequest, parse_start_request};

#[derive(clap::Args, Debug)]
pub struct CheckConfigArgs {
    /// The request JSON: a path, `file://path` (as the AWS CLI takes it), or `-` for stdin.
    pub input: String,
}

/// Reads `FILE`, `file://FILE` or `-` (stdin), the forms the AWS CLI's `--cli-input-json` takes.
pub fn read_input(input: &str) -> anyhow::Result<String> {
    if input == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        return Ok(s);
    }
    let path = input.strip_prefix("file://").unwrap_or(input);
    std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))
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
