//! The KVS ingest emulator (tests/kvs_emulator/kvs_emulator.py) as a child process, its admin
//! API, and the static test credentials it accepts.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::process::{Killed, ready_line};

pub const ACCESS_KEY: &str = "AKIDUPLOADERTEST";
pub const SECRET_KEY: &str = "uploader/test/secret+key";
pub const REGION: &str = "us-east-1";

#[allow(dead_code, reason = "for the tests that start the emulator")]
const EMULATOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/kvs_emulator/kvs_emulator.py"
);

/// The emulator process; killed when dropped.
pub struct Emulator {
    _child: Killed,
    pub port: u16,
    #[allow(dead_code, reason = "for the tests that read the stored media")]
    pub data_dir: PathBuf,
    http: reqwest::Client,
}

impl Emulator {
    #[allow(dead_code, reason = "for the tests that start the emulator")]
    pub fn start(data_dir: &Path, extra: &[&str]) -> Emulator {
        let mut child = Command::new("python3")
            .arg(EMULATOR)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .args(["--region", REGION])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the emulator (python3 with botocore)");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let child = Killed(child);
        let port = ready_line(
            &mut stdout,
            "the KVS emulator (it needs python3 with botocore: python3 -m pip install botocore)",
            |line| line.strip_prefix("KVS_EMULATOR_PORT=")?.parse().ok(),
        );
        Emulator {
            _child: child,
            port,
            data_dir: data_dir.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    #[allow(dead_code, reason = "for some of the tests with the emulator only")]
    pub async fn admin(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/_admin/{path}", self.url()))
            .body(body.to_string())
            .header("content-length", body.to_string().len())
            .send()
            .await
            .expect("admin request");
        assert!(r.status().is_success(), "admin {path}: {}", r.status());
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }

    /// The stream's persisted fragments, as the emulator indexes them.
    #[allow(dead_code, reason = "for the tests that read the emulator's index")]
    pub async fn index(&self, stream: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/_admin/streams/{stream}", self.url()))
            .send()
            .await
            .expect("index request");
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return serde_json::json!({"fragments": [], "files": [], "errors": []});
        }
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }

    /// [`Emulator::index`] once every session the emulator logged has seen its body end: the
    /// agent may finish (its last ack read, the connection closed) a moment before the
    /// emulator's handler records how the body ended.
    #[allow(dead_code, reason = "for the tests of the session shape")]
    pub async fn index_settled(&self, stream: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let index = self.index(stream).await;
            let settled = index["session_log"]
                .as_array()
                .is_none_or(|log| log.iter().all(|s| !s["body_end_ms"].is_null()));
            if settled || std::time::Instant::now() > deadline {
                return index;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[allow(dead_code, reason = "for some of the tests with the emulator only")]
    pub async fn fault(&self, stream: &str, fault: Value) {
        self.admin(
            &format!("streams/{stream}/faults"),
            serde_json::json!({ "faults": [fault] }),
        )
        .await;
    }
}

/// `key` of every entry of an emulator index's `list` (`fragments`, `errors`), read with `get`.
#[allow(dead_code, reason = "for some of the tests with the emulator only")]
pub fn each<T, C: FromIterator<T>>(
    index: &Value,
    list: &str,
    key: &str,
    get: impl Fn(&Value) -> Option<T>,
) -> C {
    index[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| get(&e[key]).unwrap())
        .collect()
}

/// The persisted fragments from an emulator index: (timecode, fragment number, sha256).
#[allow(dead_code, reason = "for some of the tests with the emulator only")]
pub fn persisted(index: &Value) -> Vec<(i64, String, String)> {
    index["fragments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["timecode"].as_i64().unwrap(),
                f["fragment_number"].as_str().unwrap().to_owned(),
                f["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[allow(dead_code, reason = "for some of the tests with the emulator only")]
pub fn sha256_hex(data: &[u8]) -> String {
    // sha256sum is part of coreutils; avoids a hashing crate for tests.
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// A session of the emulator's `session_log` ended as the producer libraries end one: its last
/// cluster closed by the END_OF_FRAGMENT tag, not cut, and its body ended no sooner than its
/// last acknowledgement. (`ended` may still be unset: the agent closes once settled, before the
/// emulator logs how.)
#[allow(dead_code, reason = "for the tests of the session shape")]
pub fn assert_ended_after_last_ack(session: &Value) {
    assert_eq!(session["last_cluster_eofr"], true, "{session}");
    assert!(
        !matches!(session["ended"].as_str(), Some("cut" | "expired" | "error")),
        "{session}"
    );
    let (body_end, last_ack) = (
        session["body_end_ms"].as_i64().unwrap(),
        session["last_ack_ms"].as_i64().unwrap(),
    );
    assert!(
        body_end >= last_ack,
        "the body ended before its last ack: {session}"
    );
}

/// The credentials the emulator accepts.
#[allow(dead_code, reason = "for the tests that sign requests")]
pub fn credentials() -> aws_credential_types::Credentials {
    aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test")
}

/// An SDK configuration for an AWS stand-in at `url` (the emulator, LocalStack) in [`REGION`].
#[allow(dead_code, reason = "for the tests with an AWS client")]
pub async fn sdk_config(
    url: &str,
    creds: aws_credential_types::Credentials,
) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(creds)
        .endpoint_url(url)
        .load()
        .await
}
