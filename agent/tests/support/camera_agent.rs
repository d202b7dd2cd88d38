//! The agent as the daemon-level media tests run it: one stream, [`STREAM`], whose camera URI a
//! secrets file holds, configured at start with `--edge-config`, 1 s fragments in 10 s
//! segments, and a broker that may be absent (the agent retries it in the background).

use std::path::{Path, PathBuf};

use crate::agent::THING;
use crate::kvs::{ACCESS_KEY, REGION, SECRET_KEY};
use crate::net::free_port;

pub const STREAM: &str = "cam";
pub const SECRET_ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:cam-uri";

/// Upload windows of a minute every minute: always uploading.
#[allow(dead_code, reason = "for the tests that upload on a schedule")]
pub const ALWAYS_UPLOAD: &str = r#","UploaderConfig":{"ScheduleConfig":{"ScheduleExpression":"0 * * * * ?","DurationInSeconds":60}}"#;

/// A window that is always open (an hour long, starting every second); uploaded media is kept,
/// so the catalog can be compared with the emulator.
#[allow(dead_code, reason = "for the tests that upload live")]
pub const OPEN_WINDOW: &str = r#","UploaderConfig":{"ScheduleConfig":{"ScheduleExpression":"* * * * * ?","DurationInSeconds":3600}},"DeletionConfig":{"EdgeRetentionInHours":24,"DeleteAfterUpload":false}"#;

/// The settings file: 1 s fragments, 10 s segments, no disk reserve (the reliability suite
/// wants the real ENOSPC), a thing name, and a broker (`None`: a port nobody listens on, so no
/// control plane interferes).
pub fn settings(secrets: &Path, broker: Option<&str>, extra: &str) -> String {
    let dead = format!("mqtt://127.0.0.1:{}", free_port());
    format!(
        "secrets_file: {}\nrecorder:\n  min_fragment_duration_ms: 1000\n  segment_duration_secs: 10\n\
         disk_reserve:\n  min_free_mb: 0\n  min_free_percent: 0\n\
         mqtt:\n  thing_name: {THING}\n  broker_url: {}\n{extra}",
        secrets.display(),
        broker.unwrap_or(&dead)
    )
}

/// A StartEdgeConfigurationUpdate request for [`STREAM`].
pub fn request(uri_type: &str, edge_extra: &str) -> String {
    format!(
        r#"{{"StreamName":"{STREAM}","EdgeConfig":{{"HubDeviceArn":"arn:aws:iot:us-east-1:123456789012:thing/{THING}","RecorderConfig":{{"MediaSourceConfig":{{"MediaUriSecretArn":"{SECRET_ARN}","MediaUriType":"{uri_type}"}}}}{edge_extra}}}}}"#
    )
}

/// Writes the secrets file and the request; returns the secrets file and the `run` arguments.
pub fn setup(dir: &Path, uri: &str, req: &str) -> (PathBuf, Vec<String>) {
    std::fs::create_dir_all(dir).unwrap();
    let secrets = dir.join("secrets.yaml");
    std::fs::write(&secrets, format!("{SECRET_ARN}: {uri}\n")).unwrap();
    let req_path = dir.join("cam.json");
    std::fs::write(&req_path, req).unwrap();
    (
        secrets,
        vec!["--edge-config".into(), req_path.display().to_string()],
    )
}

/// The environment that points uploads at the KVS emulator with its static credentials.
#[allow(
    dead_code,
    reason = "for the tests that upload with static credentials"
)]
pub fn upload_env(endpoint: &str) -> Vec<(String, String)> {
    env(&[
        ("AWS_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_ENDPOINT_URL_KINESIS_VIDEO", endpoint),
    ])
}

/// An environment for the agent, from `(name, value)` pairs.
pub fn env(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
