//! The whole agent against its AWS stand-ins and real peers: a GStreamer RTSP camera that asks
//! for a password, Mosquitto, the KVS ingest emulator, moto's Secrets Manager and LocalStack's
//! CloudWatch (read back through the AWS SDK).
//!
//! - After a record + upload cycle the `EdgeRuntimeAgent` metrics must be there with the seed's
//!   names, dimensions and values, and no secret (camera password, AWS secret key, session
//!   token) may appear in any log line, log file, MQTT message or metric.
//! - The camera URI comes from Secrets Manager; when the camera's password is rotated (the
//!   secret updated, the camera restarted with it), the agent's cached URI is refused, it asks
//!   again and records on without the configuration being resent.

#[path = "support/agent.rs"]
mod agent;
#[path = "support/aws.rs"]
mod aws;
#[path = "support/bin.rs"]
mod bin;
#[path = "support/control.rs"]
mod control;
#[path = "support/ctl.rs"]
mod ctl;
#[path = "support/kvs.rs"]
mod kvs;
#[path = "support/mosquitto.rs"]
mod mosquitto;
#[path = "support/net.rs"]
mod net;
#[path = "support/peer.rs"]
mod peer;
#[path = "support/poll.rs"]
mod poll;
#[path = "support/process.rs"]
mod process;
#[path = "support/recording.rs"]
mod recording;
#[path = "support/rtsp.rs"]
mod rtsp;
#[path = "support/sample.rs"]
mod sample;
#[path = "support/watcher.rs"]
mod watcher;

use std::path::Path;
use std::time::{Duration, Instant};

use agent::{Agent, THING};
use aws::{LocalStack, start_moto};
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use control::*;
use ctl::*;
use kvs::{ACCESS_KEY, Emulator, REGION, SECRET_KEY};
use mosquitto::Mosquitto;
use net::free_port;
use rtsp::{RtspServer, require_gstreamer};
use watcher::*;

const T: Duration = Duration::from_secs(60);
const CAMERA_PASSWORD: &str = "Cam-Pa55word-9f3e";
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN0123456789";

/// A metric, its dimensions, a statistic and the value it must have (`None`: no datapoint).
type Expected = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    Statistic,
    Option<f64>,
);

async fn cloudwatch(url: &str) -> aws_sdk_cloudwatch::Client {
    let creds = aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(creds)
        .endpoint_url(url)
        .load()
        .await;
    aws_sdk_cloudwatch::Client::new(&conf)
}

/// A statistic of one metric over the last hour (None without datapoints).
async fn stat(
    cw: &aws_sdk_cloudwatch::Client,
    name: &str,
    dims: &[(&str, &str)],
    statistic: Statistic,
) -> Option<f64> {
    let now = aws_sdk_cloudwatch::primitives::DateTime::from_secs(
        jiff::Timestamp::now().as_second() + 600,
    );
    let start = aws_sdk_cloudwatch::primitives::DateTime::from_secs(
        jiff::Timestamp::now().as_second() - 3600,
    );
    let out = cw
        .get_metric_statistics()
        .namespace("EdgeRuntimeAgent")
        .metric_name(name)
        .set_dimensions(Some(
            dims.iter()
                .map(|(n, v)| Dimension::builder().name(*n).value(*v).build())
                .collect(),
        ))
        .start_time(start)
        .end_time(now)
        .period(3600)
        .statistics(statistic.clone())
        .send()
        .await
        .expect("GetMetricStatistics");
    let points = out.datapoints();
    if points.is_empty() {
        return None;
    }
    let values = points.iter().filter_map(|p| match statistic {
        Statistic::Sum => p.sum(),
        Statistic::Maximum => p.maximum(),
        Statistic::Minimum => p.minimum(),
        _ => p.average(),
    });
    Some(match statistic {
        Statistic::Sum => values.sum(),
        Statistic::Minimum => values.fold(f64::INFINITY, f64::min),
        _ => values.fold(f64::NEG_INFINITY, f64::max),
    })
}

/// Every file under `dir`, as text.
fn all_text_under(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push_str(&all_text_under(&p));
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_record_and_upload_cycle_and_no_secret_anywhere() {
    if !require_gstreamer(&["x264enc", "rtph264pay"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Mosquitto::start(dir.path()) else {
        return;
    };
    let Some(localstack) = LocalStack::start(dir.path()) else {
        return;
    };
    let emulator = Emulator::start(&dir.path().join("kvs"), &[]);
    let camera = RtspServer::start(&[
        "--source",
        "clip",
        "--user",
        "operator",
        "--password",
        CAMERA_PASSWORD,
    ]);
    let camera_uri = camera.url_with("operator", CAMERA_PASSWORD);
    assert!(camera_uri.contains(CAMERA_PASSWORD));

    let yaml = format!(
        "mqtt:\n  broker_url: {}\n  thing_name: {THING}\ncloudwatch:\n  interval_secs: 1\n  buffer_datums: 1000\n",
        broker.url()
    );
    let secrets = format!(
        "{}: {camera_uri}\n{}: /nonexistent/clip.h264\n",
        secret_arn("cam-rtsp"),
        secret_arn("cam-bad")
    );
    let mut agent = Agent::launch_env(
        dir.path(),
        &yaml,
        &secrets,
        &[
            ("AWS_KVS_EDGE_CLOUDWATCH_ENABLED", "TRUE"),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_SESSION_TOKEN", SESSION_TOKEN),
            ("AWS_ENDPOINT_URL_KINESIS_VIDEO", &emulator.url()),
            ("AWS_ENDPOINT_URL_CLOUDWATCH", &localstack.url()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            // Everything the agent logs, so a secret at any level would show.
            (
                "RUST_LOG",
                "trace,rumqttd=off,h2=info,hyper=info,rustls=info",
            ),
        ],
    );
    let w = Watcher::start(broker.port).await;
    w.wait("agent online", T, |m| {
        m.iter()
            .any(|m| m.topic == agent_topic() && m.payload.starts_with(br#"{"Status":"online""#))
    })
    .await;

    // cam-rtsp: the password-protected camera, uploaded continuously, with a size limit.
    // cam-1: the sample clip (looped), uploaded by the run at start (no UploaderConfig: that
    // run completes when the backlog is sent, and the next is an hour later).
    // cam-bad: a clip that does not exist (USER_ERROR: the record job fails fatally).
    let rtsp = start_request("cam-rtsp", r#","UploaderConfig":{"ScheduleConfig":{"ScheduleExpression":"* * * * * ?","DurationInSeconds":3600}},"DeletionConfig":{"EdgeRetentionInHours":24,"LocalSizeConfig":{"MaxLocalMediaSizeInMB":64,"StrategyOnFullSize":"DELETE_OLDEST_MEDIA"},"DeleteAfterUpload":false}"#)
        .replace("FILE_URI", "RTSP_URI");
    for (name, body) in [
        ("cam-rtsp", rtsp),
        ("cam-1", start_request("cam-1", "")),
        ("cam-bad", start_request("cam-bad", "")),
    ] {
        let req = write_request(dir.path(), &format!("{name}.json"), &body);
        let out = ctl_start(&broker.url(), &req).await;
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    }

    // Recorded and uploaded: fragments of the RTSP camera reach the emulator.
    agent.wait_fragments("cam-rtsp", 3, T).await;
    let deadline = Instant::now() + T;
    loop {
        let index = emulator.index("cam-rtsp").await;
        if index["fragments"].as_array().is_some_and(|f| f.len() >= 2) {
            break;
        }
        assert!(Instant::now() < deadline, "no upload of cam-rtsp: {index}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.recorder_status("cam-bad USER_ERROR", "cam-bad", "USER_ERROR", T)
        .await;
    agent.wait_fragments("cam-1", 2, T).await;

    let cw = cloudwatch(&localstack.url()).await;
    let thing = [("ThingName", THING)];
    let job =
        |stream: &'static str, job: &'static str| vec![("StreamName", stream), ("JobType", job)];
    // A sample taken after cam-bad failed: its unhealthy count reaches CloudWatch.
    let deadline = Instant::now() + T;
    while stat(
        &cw,
        "RecordJobs.UnhealthyJobCount",
        &thing,
        Statistic::Maximum,
    )
    .await
        != Some(1.0)
    {
        assert!(
            Instant::now() < deadline,
            "no sample counting cam-bad as unhealthy"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A clean stop: the last events are flushed.
    let (status, _) = agent.stop().unwrap();
    assert!(status.success());

    let thing_dims = thing.to_vec();
    let expected: Vec<Expected> = vec![
        (
            "Running",
            job("cam-rtsp", "RecordJob"),
            Statistic::Maximum,
            Some(1.0),
        ),
        (
            "Running",
            job("cam-rtsp", "UploadJob"),
            Statistic::Maximum,
            Some(1.0),
        ),
        (
            "Running",
            job("cam-1", "RecordJob"),
            Statistic::Maximum,
            Some(1.0),
        ),
        // The upload run at start completed once; the next is an hour later.
        (
            "Completed",
            job("cam-1", "UploadJob"),
            Statistic::Sum,
            Some(1.0),
        ),
        (
            "FatalError",
            job("cam-bad", "RecordJob"),
            Statistic::Sum,
            Some(1.0),
        ),
        (
            "FatalError",
            job("cam-rtsp", "RecordJob"),
            Statistic::Sum,
            None,
        ),
        (
            "RecordJobs.EdgeConfigCount",
            thing_dims.clone(),
            Statistic::Maximum,
            Some(3.0),
        ),
        (
            "UploadJobs.EdgeConfigCount",
            thing_dims.clone(),
            Statistic::Maximum,
            Some(3.0),
        ),
        (
            "UploadJobs.UnhealthyJobCount",
            thing_dims.clone(),
            Statistic::Maximum,
            Some(0.0),
        ),
    ];
    for (name, dims, statistic, want) in expected {
        let got = stat(&cw, name, &dims, statistic.clone()).await;
        assert_eq!(got, want, "{name} {dims:?} {statistic:?}");
    }
    let at_least: [(&str, f64); 4] = [
        ("Alive", 2.0),
        // cam-bad may fail before the first sample that sees all three.
        ("RecordJobs.HealthyJobCount", 2.0),
        ("RecordJobs.RunningJobCount", 1.0),
        ("UploadJobs.RunningJobCount", 1.0),
    ];
    for (name, min) in at_least {
        let statistic = if name == "Alive" {
            Statistic::Sum
        } else {
            Statistic::Maximum
        };
        let got = stat(&cw, name, &thing, statistic).await;
        assert!(got >= Some(min), "{name}: {got:?}");
    }
    let used = stat(
        &cw,
        "PercentageSpaceUsed",
        &[("StreamName", "cam-rtsp")],
        Statistic::Maximum,
    )
    .await
    .expect("PercentageSpaceUsed of the stream with a size limit");
    assert!(used > 0.0 && used < 1.0, "{used}");

    // No secret anywhere: stderr, the rolling log files, MQTT, the metrics.
    let listed = cw
        .list_metrics()
        .namespace("EdgeRuntimeAgent")
        .send()
        .await
        .expect("ListMetrics");
    let metrics_text = format!("{:?}", listed.metrics());
    let places = [
        ("stderr", agent.log_text()),
        ("log files", all_text_under(&dir.path().join("log"))),
        (
            "MQTT",
            w.all()
                .iter()
                .map(|m| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload)))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        ("metrics", metrics_text),
    ];
    assert!(
        places[1].1.contains("upload job started"),
        "the log files hold the run"
    );
    for (place, text) in &places {
        for secret in [CAMERA_PASSWORD, SECRET_KEY, SESSION_TOKEN] {
            assert!(!text.contains(secret), "{secret:?} leaked into {place}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_uri_from_secrets_manager_and_a_rotated_password() {
    if !require_gstreamer(&["x264enc", "rtph264pay"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Mosquitto::start(dir.path()) else {
        return;
    };
    let Some((_moto, moto_port)) = start_moto() else {
        return;
    };
    let moto_url = format!("http://127.0.0.1:{moto_port}");
    let port = free_port().to_string();
    let (old_password, new_password) = ("Old-Pa55-7a1", "New-Pa55-c9d");
    let camera = RtspServer::start(&[
        "--port",
        &port,
        "--user",
        "operator",
        "--password",
        old_password,
    ]);
    let uri = |password: &str| {
        serde_json::json!({ "MediaURI": camera.url_with("operator", password) }).to_string()
    };
    let creds = aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(creds)
        .endpoint_url(&moto_url)
        .load()
        .await;
    let sm = aws_sdk_secretsmanager::Client::new(&conf);
    let arn = sm
        .create_secret()
        .name("front-door")
        .secret_string(uri(old_password))
        .send()
        .await
        .expect("CreateSecret")
        .arn()
        .unwrap()
        .to_owned();

    // No secrets file: local mode with AWS_REGION asks Secrets Manager (the comment keeps the
    // test harness from adding one).
    let yaml = format!(
        "# secrets_file: none, AWS Secrets Manager\nmqtt:\n  broker_url: {}\n  thing_name: {THING}\n",
        broker.url()
    );
    let agent = Agent::launch_env(
        dir.path(),
        &yaml,
        "",
        &[
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", &moto_url),
            ("AWS_ENDPOINT_URL_KINESIS_VIDEO", "http://127.0.0.1:9"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let body = start_request("front-door", "")
        .replace(&secret_arn("front-door"), &arn)
        .replace("FILE_URI", "RTSP_URI");
    let req = write_request(dir.path(), "front-door.json", &body);
    let out = ctl_start(&broker.url(), &req).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        agent.log_text()
    );
    agent.wait_fragments("front-door", 2, T).await;
    assert!(
        agent
            .log_text()
            .contains("media URIs from AWS Secrets Manager")
    );

    // Rotation: the secret gets the new password, the camera restarts with it.
    sm.put_secret_value()
        .secret_id(&arn)
        .secret_string(uri(new_password))
        .send()
        .await
        .expect("PutSecretValue");
    drop(camera);
    let before = agent.fragment_count("front-door");
    let _camera = RtspServer::start(&[
        "--port",
        &port,
        "--user",
        "operator",
        "--password",
        new_password,
    ]);
    agent
        .wait_log(
            "the media URI changed in the secret store; recording again",
            1,
            T,
        )
        .await;
    agent.wait_fragments("front-door", before + 2, T).await;
    let log = agent.log_text();
    assert!(log.contains("refused the credentials"), "{log}");
    for secret in [old_password, new_password, SECRET_KEY] {
        assert!(!log.contains(secret), "{secret} leaked into the log");
        assert!(
            !all_text_under(&dir.path().join("log")).contains(secret),
            "{secret} leaked into the log files"
        );
    }
}
