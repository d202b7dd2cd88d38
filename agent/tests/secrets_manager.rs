//! `aws::secrets::SecretsManagerSource` against moto's Secrets Manager (`python3 -m moto.server`),
//! through the real SDK client configured the way `run` does it (`aws_config` defaults, with
//! `AWS_ENDPOINT_URL_SECRETS_MANAGER`). Without moto the test is skipped, except under CI.
//!
//! One test in this binary: it sets process environment variables.

#[path = "support/aws.rs"]
mod aws;
#[path = "support/net.rs"]
mod net;
#[path = "support/peer.rs"]
mod peer;
#[path = "support/poll.rs"]
mod poll;
#[path = "support/process.rs"]
mod process;
#[path = "support/runtime.rs"]
mod runtime;
#[path = "support/secret.rs"]
mod secret;

use aws::start_moto;
use kvs_edge_agent::aws::secrets::SecretsManagerSource;
use kvs_edge_agent::secrets::{SecretError, SecretSource};

fn fatal_reason(e: SecretError, arn: &str) -> String {
    secret::reason(e, arn, true)
}

#[test]
fn secrets_manager_media_uris() {
    let Some((_moto, port)) = start_moto() else {
        return;
    };
    // SAFETY: the only test of this binary, set before any thread reads the environment.
    unsafe {
        std::env::set_var(
            "AWS_ENDPOINT_URL_SECRETS_MANAGER",
            format!("http://127.0.0.1:{port}"),
        );
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::remove_var("AWS_PROFILE");
        std::env::remove_var("AWS_SESSION_TOKEN");
    }
    let rt = runtime::runtime();
    let sdk = rt.block_on(aws_config::defaults(aws_config::BehaviorVersion::latest()).load());
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let create = |name: &str, value: &str| -> String {
        rt.block_on(
            client
                .create_secret()
                .name(name)
                .secret_string(value)
                .send(),
        )
        .unwrap()
        .arn()
        .unwrap()
        .to_owned()
    };
    let good = create(
        "front-door",
        r#"{"MediaURI":"rtsp://admin:hunter2@10.0.0.2/live"}"#,
    );
    let wrong_key = create(
        "wrong-key",
        r#"{"MediaUri":"rtsp://admin:hunter2@10.0.0.2/live"}"#,
    );
    let not_json = create("not-json", "rtsp://admin:hunter2@10.0.0.2/live");
    let missing = good.replace("front-door", "no-such-secret");

    let source = SecretsManagerSource::new(&sdk);
    assert_eq!(
        rt.block_on(source.media_uri(&good)).unwrap(),
        "rtsp://admin:hunter2@10.0.0.2/live"
    );
    let e = fatal_reason(
        rt.block_on(source.media_uri(&missing)).unwrap_err(),
        &missing,
    );
    assert!(e.contains("does not exist"), "{e}");
    let e = fatal_reason(
        rt.block_on(source.media_uri(&wrong_key)).unwrap_err(),
        &wrong_key,
    );
    assert!(e.contains("no key MediaURI"), "{e}");
    let e = fatal_reason(
        rt.block_on(source.media_uri(&not_json)).unwrap_err(),
        &not_json,
    );
    assert!(e.contains("not JSON"), "{e}");

    // Cached: a changed value is not fetched again within the cache time. Asked from inside the
    // runtime, as the supervisor does.
    rt.block_on(
        client
            .put_secret_value()
            .secret_id(&good)
            .secret_string(r#"{"MediaURI":"rtsp://admin:changed@10.0.0.2/live"}"#)
            .send(),
    )
    .unwrap();
    let again = rt.block_on(source.media_uri(&good)).unwrap();
    assert_eq!(again, "rtsp://admin:hunter2@10.0.0.2/live");
    // A fresh source sees the new value (so the first answer really came from moto); made and
    // asked inside the runtime, as `run` does.
    let fresh = rt.block_on(async {
        let fresh = SecretsManagerSource::new(&sdk);
        fresh.media_uri(&good).await
    });
    assert_eq!(fresh.unwrap(), "rtsp://admin:changed@10.0.0.2/live");
}
