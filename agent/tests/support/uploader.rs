//! An uploader in the test process, wired to the KVS emulator, and the catalog state it needs.

use std::path::Path;
use std::sync::Arc;

use kvs_edge_agent::catalog::Catalog;
use kvs_edge_agent::clock::RealClock;
use kvs_edge_agent::uploader::{Options, RunMode, StreamTarget, UploadHandle, Uploader};
use serde_json::Value;

use crate::kvs::{Emulator, credentials, sdk_config};

/// Stores an edge configuration for `stream` (job status rows belong to one).
#[allow(dead_code, reason = "for the tests of job status rows")]
pub fn configure(catalog: &Catalog, stream: &str) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seed-example-verbatim.json"
    ))
    .unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("StreamARN");
    o.insert("StreamName".into(), Value::String(stream.into()));
    let req = serde_json::from_value(v).unwrap();
    catalog
        .put_config(
            &req,
            kvs_edge_agent::edge_config::SyncStatus::InSync,
            jiff::Timestamp::now(),
        )
        .unwrap();
}

/// An hour ago: recent enough for the emulator's timestamp checks, old like a backlog.
pub fn an_hour_ago_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond() - 3_600_000
}

/// Options for tests: short timeouts so faults resolve quickly.
pub fn test_options() -> Options {
    Options {
        ack_timeout: std::time::Duration::from_secs(10),
        backoff_min: std::time::Duration::from_millis(100),
        backoff_max: std::time::Duration::from_millis(400),
        recheck: std::time::Duration::from_millis(200),
        stop_drain: std::time::Duration::from_secs(2),
        ..Options::default()
    }
}

/// An uploader using static test credentials and the emulator as the Kinesis Video endpoint.
pub async fn uploader(
    catalog: Arc<Catalog>,
    recording_dir: &Path,
    emulator: &Emulator,
    options: Options,
) -> Uploader {
    uploader_with_clock(
        catalog,
        recording_dir,
        emulator,
        options,
        Arc::new(RealClock),
    )
    .await
}

/// [`uploader`] on `clock`.
pub async fn uploader_with_clock(
    catalog: Arc<Catalog>,
    recording_dir: &Path,
    emulator: &Emulator,
    options: Options,
    clock: Arc<dyn kvs_edge_agent::clock::Clock>,
) -> Uploader {
    uploader_with(
        catalog,
        recording_dir,
        emulator,
        options,
        clock,
        credentials(),
    )
    .await
}

/// An uploader with the given clock and credentials.
pub async fn uploader_with(
    catalog: Arc<Catalog>,
    recording_dir: &Path,
    emulator: &Emulator,
    options: Options,
    clock: Arc<dyn kvs_edge_agent::clock::Clock>,
    creds: aws_credential_types::Credentials,
) -> Uploader {
    let sdk = sdk_config(&emulator.url(), creds).await;
    Uploader::new(&sdk, catalog, recording_dir.to_owned(), clock, options).unwrap()
}

/// Starts a run of `stream` until nothing is pending.
#[allow(dead_code, reason = "for the tests that upload a backlog")]
pub fn until_empty(up: &Uploader, stream: &str) -> UploadHandle {
    up.start(StreamTarget::Name(stream.into()), RunMode::UntilEmpty, None)
}
