//! `aws::iot_credentials::IotCredentialsProvider` against a local HTTPS server that requires a
//! client certificate (tests/iot_credentials/server.py), with a test CA made by `openssl` here.
//! Without python3 or openssl the test is skipped, except under CI.

#[path = "support/certs.rs"]
mod certs;
#[path = "support/iot_endpoint.rs"]
mod iot_endpoint;
#[path = "support/peer.rs"]
mod peer;
#[path = "support/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use kvs_edge_agent::aws::iot_credentials::{IotCredentialsError, IotCredentialsProvider};
use kvs_edge_agent::settings::IotSettings;

use iot_endpoint::{IotEndpoint, make_pki};
use peer::require;

fn settings(dir: &Path, port: u16, alias: &str, device: &str) -> IotSettings {
    IotSettings {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join(format!("{device}.pem")),
        private_key: dir.join(format!("{device}.key")),
        credential_endpoint: format!("127.0.0.1:{port}"),
        data_ats_endpoint: "unused.example.com".into(),
        role_alias: alias.into(),
        thing_name: "front-door-camera".into(),
    }
}

fn provider(dir: &Path, port: u16, alias: &str) -> IotCredentialsProvider {
    IotCredentialsProvider::new(&settings(dir, port, alias, "device")).unwrap()
}

#[tokio::test]
async fn iot_credentials_provider() {
    if !require("openssl", &["version"]) || !require("python3", &["--version"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().to_owned();
    make_pki(&dir);
    let server = IotEndpoint::start(&dir, &[]);
    let port = server.port;

    // Long-lived credentials are reused; through the SDK's trait as the clients call it.
    let long = provider(&dir, port, "long");
    let first = long.provide_credentials().await.unwrap();
    let second = long.provide_credentials().await.unwrap();
    assert!(first.access_key_id().starts_with("AKIDTEST"));
    assert_eq!(first.access_key_id(), second.access_key_id(), "cached");
    assert_eq!(first.secret_access_key(), "SECRETTEST");
    assert_eq!(first.session_token(), Some("TOKENTEST"));
    let left = first
        .expiry()
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(3500) && left <= Duration::from_secs(3600),
        "{left:?}"
    );

    // Credentials expiring within the refresh margin are fetched again.
    let short = provider(&dir, port, "short");
    let a = short.credentials().await.unwrap();
    let b = short.credentials().await.unwrap();
    assert_ne!(
        a.access_key_id(),
        b.access_key_id(),
        "refreshed before expiry"
    );

    // A client certificate from another CA: refused, said clearly.
    let rogue = IotCredentialsProvider::new(&settings(&dir, port, "long", "rogue")).unwrap();
    let e = rogue.credentials().await.unwrap_err();
    assert!(matches!(e, IotCredentialsError::Transport { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("device certificate"), "{text}");

    // A body that is not the documented JSON: an error that quotes no credentials.
    let e = provider(&dir, port, "malformed")
        .credentials()
        .await
        .unwrap_err();
    assert!(matches!(e, IotCredentialsError::Malformed { .. }), "{e}");
    assert!(!e.to_string().contains("SECRETTEST"), "{e}");

    // An unknown role alias: IoT's refusal, naming the alias and the thing.
    let e = provider(&dir, port, "no-such-alias")
        .credentials()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HTTP 403") && e.contains("no-such-alias") && e.contains("front-door-camera"),
        "{e}"
    );

    // A missing key file fails at construction, naming it.
    let mut s = settings(&dir, port, "long", "device");
    s.private_key = dir.join("absent.key");
    let e = IotCredentialsProvider::new(&s).unwrap_err().to_string();
    assert!(
        e.contains("absent.key") && e.contains("AWS_IOT_CORE_PRIVATE_KEY"),
        "{e}"
    );
}
