//! `aws::greengrass_ipc` (the Greengrass IPC client and `GreengrassSecretSource`) against
//! tests/greengrass_ipc/server.py, a strict fake of the nucleus' IPC server. The fake is itself
//! checked against the real client, the AWS IoT Device SDK v2 for Python (`awsiotsdk`): its
//! self-test runs here, and the messages our client sends are compared with the SDK's. Without
//! python3 (or `awsiotsdk` for the tests that use it) the tests are skipped, except under CI.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/peer.rs"]
mod peer;
#[path = "support/process.rs"]
mod process;
#[path = "support/secret.rs"]
mod secret;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kvs_edge_agent::aws::greengrass_ipc::{GreengrassSecretSource, IpcClient, IpcError};
use kvs_edge_agent::secrets::{SecretError, SecretSource};
use peer::python;
use process::Killed;
use serde_json::{Value, json};

const TOKEN: &str = "svcuid-of-the-agent";
const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:";
const URI: &str = "rtsp://admin:hunter2@10.0.0.2/live";
const MISBEHAVIOURS: [&str; 8] = [
    "garbage",
    "bad-crc",
    "huge",
    "no-model",
    "bad-json",
    "wrong-stream",
    "close",
    "silent",
];

fn arn(name: &str) -> String {
    format!("{ARN}{name}-AbCdEf")
}

fn fake_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/greengrass_ipc")
}

fn have_fake() -> bool {
    python("json", "apt-get install python3")
}

fn have_sdk() -> bool {
    python("awsiot", "python3 -m pip install awsiotsdk")
}

struct Fake {
    _child: Killed,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Fake {
    /// The fake nucleus serving `store` ({"secrets": {...}, "unauthorized": [...]}); returns once
    /// it listens.
    fn start(store: Value) -> Fake {
        Fake::start_with(store, &[])
    }

    fn start_with(store: Value, args: &[&str]) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ipc.socket");
        let secrets = dir.path().join("secrets.json");
        std::fs::write(&secrets, store.to_string()).unwrap();
        let mut child = Command::new("python3")
            .arg(fake_dir().join("server.py"))
            .arg("--socket")
            .arg(&socket)
            .args(["--token", TOKEN, "--secrets"])
            .arg(&secrets)
            .arg("--record")
            .arg(dir.path().join("record.jsonl"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening"), "the fake nucleus: {line:?}");
        Fake {
            _child: Killed(child),
            dir,
            socket,
        }
    }

    fn client(&self) -> IpcClient {
        IpcClient::new(&self.socket, TOKEN)
    }

    fn source(&self) -> GreengrassSecretSource {
        GreengrassSecretSource::new(self.client())
    }

    fn set_store(&self, store: Value) {
        std::fs::write(self.dir.path().join("secrets.json"), store.to_string()).unwrap();
    }

    /// Every message the fake received, oldest first, and forgets them.
    fn take_record(&self) -> Vec<Value> {
        let path = self.dir.path().join("record.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Asks a source from a test without a runtime of its own.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn store() -> Value {
    json!({
        "secrets": {
            arn("front-door"): json!({"MediaURI": URI}).to_string(),
            arn("wrong-key"): json!({"MediaUri": URI}).to_string(),
            arn("not-json"): URI,
            arn("binary"): {"secretBinary": "AAEC"},
            arn("denied"): json!({"MediaURI": URI}).to_string(),
        },
        "unauthorized": [arn("denied")],
    })
}

fn fatal_reason(e: SecretError, arn: &str) -> String {
    secret::reason(e, arn, true)
}

fn transient_reason(e: SecretError, arn: &str) -> String {
    secret::reason(e, arn, false)
}

#[test]
fn secret_fetched_then_cached() {
    if !have_fake() {
        return;
    }
    let fake = Fake::start(store());
    let source = fake.source();
    let good = arn("front-door");
    assert_eq!(block_on(source.media_uri(&good)).unwrap(), URI);
    // Cached: a changed value is not fetched again within the cache time.
    let mut changed = store();
    changed["secrets"][good.as_str()] = json!({"MediaURI": "rtsp://admin:changed@10.0.0.2/live"})
        .to_string()
        .into();
    fake.set_store(changed);
    assert_eq!(block_on(source.media_uri(&good)).unwrap(), URI);
    // A fresh source sees the new value, so the first answer really came from the fake; asked
    // from inside a runtime, as the supervisor does.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fresh = rt.block_on(async { fake.source().media_uri(&good).await });
    assert_eq!(fresh.unwrap(), "rtsp://admin:changed@10.0.0.2/live");
}

#[test]
fn unusable_secrets_are_fatal_and_name_the_arn() {
    if !have_fake() {
        return;
    }
    let fake = Fake::start(store());
    let source = fake.source();
    let missing = arn("no-such-secret");
    let e = fatal_reason(block_on(source.media_uri(&missing)).unwrap_err(), &missing);
    assert!(e.contains("does not have it"), "{e}");
    let denied = arn("denied");
    let e = fatal_reason(block_on(source.media_uri(&denied)).unwrap_err(), &denied);
    assert!(e.contains("access denied"), "{e}");
    let wrong_key = arn("wrong-key");
    let e = fatal_reason(
        block_on(source.media_uri(&wrong_key)).unwrap_err(),
        &wrong_key,
    );
    assert!(e.contains("no key MediaURI"), "{e}");
    let not_json = arn("not-json");
    let e = fatal_reason(
        block_on(source.media_uri(&not_json)).unwrap_err(),
        &not_json,
    );
    assert!(e.contains("not JSON"), "{e}");
    let binary = arn("binary");
    let e = fatal_reason(block_on(source.media_uri(&binary)).unwrap_err(), &binary);
    assert!(e.contains("no secret string"), "{e}");
}

#[tokio::test]
async fn a_wrong_svcuid_is_rejected() {
    if !have_fake() {
        return;
    }
    let fake = Fake::start(store());
    let client = IpcClient::new(&fake.socket, "not-our-svcuid");
    assert!(matches!(client.check().await, Err(IpcError::Rejected)));
    let e = client
        .get_secret_value(&arn("front-door"))
        .await
        .unwrap_err();
    assert!(matches!(e, IpcError::Rejected), "{e}");
    assert!(
        !e.to_string().contains("not-our-svcuid"),
        "never the token: {e}"
    );
    fake.client().check().await.unwrap();
    // Through the source: an error that is retried (the nucleus issues the token).
    let source = GreengrassSecretSource::new(client);
    let good = arn("front-door");
    let e = source.media_uri(&good).await.unwrap_err();
    let text = transient_reason(e, &arn("front-door"));
    assert!(text.contains("rejected"), "{text}");
}

#[tokio::test]
async fn an_absent_socket_is_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-nucleus.socket");
    let client = IpcClient::new(&socket, TOKEN);
    let e = client.check().await.unwrap_err();
    assert!(matches!(e, IpcError::Connect { .. }), "{e}");
    assert!(e.to_string().contains("no-nucleus.socket"), "{e}");
    // A socket file nobody listens on (the nucleus stopped). A child process forked by another
    // test between the bind and the drop holds the listener until it execs, so a connect may
    // still be taken for a moment: refused once that child has let go.
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    drop(listener);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match client.check().await {
            Err(IpcError::Connect { .. }) => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "a socket nobody listens on: {other:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let source = GreengrassSecretSource::new(client);
    let good = arn("front-door");
    let e = source.media_uri(&good).await.unwrap_err();
    let text = transient_reason(e, &arn("front-door"));
    assert!(text.contains("cannot connect"), "{text}");
}

#[tokio::test]
async fn malformed_replies_are_clear_errors() {
    if !have_fake() {
        return;
    }
    let secrets: serde_json::Map<String, Value> = MISBEHAVIOURS
        .iter()
        .map(|m| (arn(m), json!({ "misbehave": m })))
        .collect();
    let fake = Fake::start(json!({ "secrets": secrets }));
    let client = fake
        .client()
        .with_timeouts(Duration::from_secs(5), Duration::from_millis(1500));
    for mode in MISBEHAVIOURS {
        let e = client.get_secret_value(&arn(mode)).await.unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("hunter2"), "{mode}: never the value: {text}");
        match mode {
            "close" => assert!(matches!(e, IpcError::Closed), "{mode}: {text}"),
            "silent" => assert!(matches!(e, IpcError::Timeout(_)), "{mode}: {text}"),
            _ => assert!(matches!(e, IpcError::Malformed(_)), "{mode}: {text}"),
        }
        let expected = match mode {
            "garbage" | "bad-crc" => "bad frame",
            "huge" => "frame length of 2147483648 bytes",
            "no-model" => "not aws.greengrass#GetSecretValueResponse",
            "bad-json" => "not JSON",
            "wrong-stream" => "stream 7",
            "close" => "closed",
            _ => "did not answer",
        };
        assert!(text.contains(expected), "{mode}: {text}");
    }
    // Through the source: retried, not fatal.
    let source = GreengrassSecretSource::new(client);
    let e = source.media_uri(&arn("garbage")).await.unwrap_err();
    transient_reason(e, &arn("garbage"));
}

/// `run` picks the IPC source only when the nucleus accepts the token and serves GetSecretValue.
#[tokio::test]
async fn the_probe_says_when_to_fall_back_to_secrets_manager() {
    if !have_fake() {
        return;
    }
    let fake = Fake::start(store());
    let source = GreengrassSecretSource::probe(fake.client()).await.unwrap();
    assert_eq!(source.socket(), fake.socket);
    let why = GreengrassSecretSource::probe(IpcClient::new(&fake.socket, "not-our-svcuid"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(why.contains("rejected"), "{why}");
    let without = Fake::start_with(store(), &["--no-secret-manager"]);
    let why = GreengrassSecretSource::probe(without.client())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(why.contains("aws.greengrass.SecretManager"), "{why}");
    let dir = tempfile::tempdir().unwrap();
    let why = GreengrassSecretSource::probe(IpcClient::new(dir.path().join("none"), TOKEN))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(why.contains("cannot connect"), "{why}");
}

/// The fake's own suite: the real SDK client against it.
#[test]
fn fake_nucleus_self_test() {
    if !have_sdk() {
        return;
    }
    let out = Command::new("python3")
        .arg(fake_dir().join("test_server.py"))
        .output()
        .expect("python3");
    process::assert_success(&out);
}

/// What goes on the wire: our CONNECT and request are the SDK's, header for header (names, types
/// and values) and payload for payload.
#[tokio::test]
async fn our_messages_are_the_sdks() {
    if !have_sdk() {
        return;
    }
    let fake = Fake::start(store());
    let good = arn("front-door");
    let script = "import sys\n\
        from awsiot import greengrasscoreipc\n\
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2\n\
        c = GreengrassCoreIPCClientV2(client=greengrasscoreipc.connect(\n\
            ipc_socket=sys.argv[1], authtoken=sys.argv[2], timeout=5))\n\
        print(c.get_secret_value(secret_id=sys.argv[3]).secret_value.secret_string)\n\
        c.close()\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&fake.socket)
        .args([TOKEN, &good])
        .output()
        .unwrap();
    process::assert_success(&out);
    let sdk_said: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sdk_said["MediaURI"], URI);
    // The SDK may end its stream or ping after the answer; compare the first two messages.
    let sdk = fake.take_record();
    match fake.client().get_secret_value(&good).await.unwrap() {
        kvs_edge_agent::aws::greengrass_ipc::SecretValue::String(s) => {
            assert_eq!(serde_json::from_str::<Value>(&s).unwrap()["MediaURI"], URI)
        }
        other => panic!("{other:?}"),
    }
    let ours = fake.take_record();
    assert!(sdk.len() >= 2 && ours.len() == 2, "{sdk:?} {ours:?}");
    for (s, o) in sdk.iter().zip(&ours) {
        assert_eq!(s["headers"], o["headers"]);
        let payload =
            |m: &Value| -> Value { serde_json::from_str(m["payload"].as_str().unwrap()).unwrap() };
        assert_eq!(payload(s), payload(o));
    }
}

/// `kvs-edge-agent run` as a Greengrass component: the IPC source when the nucleus serves
/// GetSecretValue (the configuration given at start is resolved through it, and the URI appears
/// in no log line), AWS Secrets Manager when it does not.
#[test]
fn run_in_greengrass_mode_takes_secrets_from_the_nucleus() {
    if !have_fake() {
        return;
    }
    const EXAMPLE_ARN: &str =
        "arn:aws:secretsmanager:us-west-2:123456789012:secret:your-secret-dRbHJQ";
    let secrets = json!({ "secrets": {
        EXAMPLE_ARN: json!({"MediaURI": "rtsp://admin:hunter2@127.0.0.1:9/live"}).to_string(),
    }});
    let run = |fake: &Fake| -> (Vec<String>, String) {
        let dir = tempfile::tempdir().unwrap();
        let mut child = bin::command()
            .arg("run")
            .arg("--edge-config")
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../config/example-edge-configuration.json"),
            )
            .env(
                "GREENGRASS_ROOT_DIRECTORY",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/greengrass"),
            )
            .env(
                "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT",
                &fake.socket,
            )
            .env("SVCUID", TOKEN)
            // Nothing reaches AWS.
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_KVS_EDGE_RECORDING_DIRECTORY", dir.path())
            .env("AWS_KVS_EDGE_LOG_LEVEL", "info")
            .env("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", dir.path().join("log"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = Vec::new();
        for line in BufReader::new(child.stderr.take().unwrap()).lines() {
            let line = line.unwrap();
            let ready = line.contains("ready");
            lines.push(line);
            if ready {
                break;
            }
        }
        process::signal(child.id(), "-TERM");
        assert_eq!(child.wait().unwrap().code(), Some(0), "{lines:#?}");
        let file = std::fs::read_to_string(dir.path().join("log/kvs-edge-agent.log")).unwrap();
        (lines, file)
    };

    let fake = Fake::start(secrets.clone());
    let (lines, file) = run(&fake);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("media URIs from the Greengrass Secret Manager component (IPC)")),
        "{lines:#?}"
    );
    let asked: Vec<Value> = fake
        .take_record()
        .into_iter()
        .filter(|m| m["payload"].as_str().unwrap().contains(EXAMPLE_ARN))
        .collect();
    assert!(
        !asked.is_empty(),
        "the configuration's secret was asked of the nucleus"
    );
    assert!(!file.contains("hunter2"), "{file}");
    assert!(!lines.iter().any(|l| l.contains("hunter2")), "{lines:#?}");

    let without = Fake::start_with(secrets, &["--no-secret-manager"]);
    let (lines, _) = run(&without);
    for expected in [
        "no Greengrass IPC, so AWS Secrets Manager",
        "media URIs from AWS Secrets Manager",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(expected)),
            "{expected}: {lines:#?}"
        );
    }
}
