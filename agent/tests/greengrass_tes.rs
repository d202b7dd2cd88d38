//! Greengrass mode's SDK configuration (`aws::greengrass::sdk_config`): the region from the
//! nucleus' effectiveConfig.yaml and credentials from a stand-in token exchange service, read by
//! the SDK's container provider (`AWS_CONTAINER_CREDENTIALS_FULL_URI` +
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN`, as the nucleus sets them).
//!
//! One test in this binary: it sets process environment variables.

use std::path::Path;

use aws_credential_types::provider::ProvideCredentials;
use kvs_edge_agent::aws::greengrass::{GreengrassConfig, sdk_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "tes-authorization-token";

/// Answers every request as the token exchange service does when the token is right, else 403.
async fn token_exchange_service(listener: tokio::net::TcpListener) {
    loop {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&request).to_lowercase();
        let (status, body) = if head.contains(&format!("authorization: {TOKEN}"))
            && head.starts_with("get /2016-11-01/credentialprovider/")
        {
            let expiration = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
            (
                "200 OK",
                format!(
                    r#"{{"AccessKeyId":"ASIATESTES","SecretAccessKey":"tes-secret","Token":"tes-session","Expiration":"{}"}}"#,
                    expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
                ),
            )
        } else {
            ("403 Forbidden", r#"{"message":"bad token"}"#.to_owned())
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(response.as_bytes()).await.unwrap();
        let _ = conn.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greengrass_credentials_from_the_token_exchange_service() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(token_exchange_service(listener));
    // SAFETY: the only test of this binary, set before the SDK reads the environment.
    unsafe {
        for v in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        ] {
            std::env::remove_var(v);
        }
        std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/aws/config");
        std::env::set_var(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws/credentials",
        );
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://127.0.0.1:{port}/2016-11-01/credentialprovider/"),
        );
        std::env::set_var("AWS_CONTAINER_AUTHORIZATION_TOKEN", TOKEN);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/greengrass");
    let config = GreengrassConfig::load(&root).unwrap();
    let sdk = sdk_config(&config).await;
    assert_eq!(sdk.region().unwrap().as_ref(), "us-west-2");
    let creds = sdk
        .credentials_provider()
        .unwrap()
        .provide_credentials()
        .await
        .unwrap();
    assert_eq!(creds.access_key_id(), "ASIATESTES");
    assert_eq!(creds.secret_access_key(), "tes-secret");
    assert_eq!(creds.session_token(), Some("tes-session"));
    assert!(creds.expiry().is_some());
}
