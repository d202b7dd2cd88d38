//! End to end: the agent daemon steered over MQTT by `ctl`, against Mosquitto (started by each
//! test on a free port) and against the embedded broker. FILE_URI configurations play the sample
//! clip; the RTSP case uses the GStreamer test camera.

#[path = "support/agent.rs"]
mod agent;
#[path = "support/bin.rs"]
mod bin;
#[path = "support/certs.rs"]
mod certs;
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

use std::time::Duration;

use agent::{Agent, THING};
use bin::BIN;
use certs::make_certs;
use control::*;
use ctl::*;
use mosquitto::Mosquitto;
use net::{free_port, wait_listening};
use sample::{repo_root, sample_clip};
use watcher::*;

const T: Duration = Duration::from_secs(30);

fn yaml_with(broker: &str, extra: &str) -> String {
    format!("mqtt:\n  broker_url: {broker}\n  thing_name: {THING}\n{extra}")
}

/// A broker, the agent on it and a watcher that has seen the agent online; `None` (the test
/// skipped) without Mosquitto.
async fn online(dir: &std::path::Path) -> Option<(Mosquitto, Agent, Watcher)> {
    let broker = Mosquitto::start(dir)?;
    let agent = Agent::launch(dir, &yaml_with(&broker.url(), ""), "");
    let w = Watcher::start(broker.port).await;
    w.agent_online(T).await;
    Some((broker, agent, w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_describe_resend_update_delete() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Mosquitto::start(dir.path()) else {
        return;
    };
    let agent = Agent::launch(dir.path(), &yaml_with(&broker.url(), ""), "");
    let w = Watcher::start(broker.port).await;
    w.wait("agent online", T, |m| {
        m.iter()
            .any(|m| m.topic == agent_topic() && m.payload.starts_with(br#"{"Status":"online""#))
    })
    .await;

    // Start: SYNCING -> ACKNOWLEDGED -> IN_SYNC on `reported`, and ctl prints IN_SYNC.
    let req = write_request(dir.path(), "cam-1.json", &start_request("cam-1", ""));
    let out = ctl_start(&broker.url(), &req).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v = stdout_json(&out);
    assert_eq!(v["SyncStatus"], "IN_SYNC", "{v}");
    assert_eq!(v["StreamName"], "cam-1");
    assert_eq!(
        v["EdgeConfig"]["HubDeviceArn"],
        "arn:aws:iot:us-east-1:123456789012:thing/hub-1"
    );
    let seen = statuses(&w.all(), &reported("cam-1"));
    let pos = |s: &str| seen.iter().position(|x| x == s);
    assert!(
        pos("SYNCING") < pos("ACKNOWLEDGED") && pos("ACKNOWLEDGED") < pos("IN_SYNC"),
        "{seen:?}"
    );
    assert!(pos("SYNCING").is_some());

    // Recording appears on disk, and the recorder status reaches `reported`.
    agent.wait_fragments("cam-1", 2, T).await;
    assert!(!agent.segment_files("cam-1").is_empty());
    w.recorder_status("LastRecorderStatus SUCCESS", "cam-1", "SUCCESS", T)
        .await;
    let out = ctl(
        &broker.url(),
        &["describe-edge-configuration", "--stream-name", "cam-1"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let d = stdout_json(&out);
    assert_eq!(d["SyncStatus"], "IN_SYNC");
    assert_eq!(
        d["EdgeAgentStatus"]["LastRecorderStatus"]["RecorderStatus"], "SUCCESS",
        "{d}"
    );
    // The secret (the clip's path here) never reaches `reported`.
    let clip = sample_clip().display().to_string();
    assert!(
        w.all()
            .iter()
            .all(|m| !String::from_utf8_lossy(&m.payload).contains(&clip))
    );

    // Resend the same configuration: the jobs restart (a second source session).
    assert_eq!(agent.log_text().matches("source connected").count(), 1);
    let out = ctl_start(&broker.url(), &req).await;
    assert!(out.status.success(), "{}", stderr(&out));
    agent.wait_log("source connected", 2, T).await;

    // Update only the uploader and deletion parts: the recorder keeps running, no new session.
    // (First one fragment of the new session, so the gap check below starts inside it.)
    let restarted = agent.fragment_count("cam-1");
    agent.wait_fragments("cam-1", restarted + 1, T).await;
    let before = agent.fragment_count("cam-1");
    let upd = write_request(
        dir.path(),
        "cam-1-upd.json",
        &start_request(
            "cam-1",
            r#","UploaderConfig":{"ScheduleConfig":{"ScheduleExpression":"0 0 3 * * ?","DurationInSeconds":600}},"DeletionConfig":{"EdgeRetentionInHours":24}"#,
        ),
    );
    let out = ctl_start(&broker.url(), &upd).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout_json(&out)["EdgeConfig"]["DeletionConfig"]["EdgeRetentionInHours"],
        24
    );
    agent.wait_fragments("cam-1", before + 2, T).await;
    // No gap in the media across the update: each fragment from the last one before it starts
    // where the one before ended (the recorder measures durations to the next fragment).
    let cat = kvs_edge_agent::catalog::Catalog::open_read_only(
        &agent.rec.join(kvs_edge_agent::catalog::FILE_NAME),
    )
    .unwrap();
    let frags: Vec<_> = cat
        .segments(Some("cam-1"))
        .unwrap()
        .iter()
        .flat_map(|s| cat.fragments(s.id).unwrap())
        .collect();
    for pair in frags[before.saturating_sub(1)..].windows(2) {
        assert_eq!(
            pair[1].timecode_ms,
            pair[0].timecode_ms + pair[0].duration_ms,
            "media continues across the uploader-only update: {pair:?}"
        );
    }
    let log = agent.log_text();
    assert_eq!(log.matches("source connected").count(), 2, "{log}");
    assert!(log.contains("recorder keeps running"), "{log}");
    assert_eq!(log.matches("recorder stopped").count(), 1, "{log}");

    // Delete: DELETING -> DELETING_ACKNOWLEDGED, media gone, topics cleared.
    let out = ctl(
        &broker.url(),
        &["delete-edge-configuration", "--stream-name", "cam-1"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    w.wait("reported cleared", T, |m| {
        m.iter()
            .any(|m| m.topic == reported("cam-1") && m.payload.is_empty())
    })
    .await;
    let seen = statuses(&w.all(), &reported("cam-1"));
    assert!(
        seen.ends_with(&["DELETING".into(), "DELETING_ACKNOWLEDGED".into()]),
        "{seen:?}"
    );
    assert!(!agent.rec.join("streams/cam-1").exists());
    assert_eq!(agent.fragment_count("cam-1"), 0);
    w.wait("desired cleared", T, |m| {
        m.iter()
            .any(|m| m.topic == desired("cam-1") && m.payload.is_empty())
    })
    .await;
    let fresh = Watcher::start(broker.port).await;
    // A new subscriber gets the agent status, but nothing retained for the stream.
    fresh
        .wait("retained agent status", T, |m| {
            m.iter().any(|m| m.topic == agent_topic())
        })
        .await;
    assert!(
        fresh
            .all()
            .iter()
            .all(|m| !m.topic.contains("/streams/cam-1/"))
    );
    let out = ctl(
        &broker.url(),
        &["describe-edge-configuration", "--stream-name", "cam-1"],
    )
    .await;
    assert_eq!(out.status.code(), Some(254));
    assert!(
        stderr(&out).contains("StreamEdgeConfigurationNotFoundException"),
        "{}",
        stderr(&out)
    );
    let out = ctl(
        &broker.url(),
        &["delete-edge-configuration", "--stream-name", "cam-1"],
    )
    .await;
    assert_eq!(out.status.code(), Some(254));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_fail_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let Some((broker, mut agent, w)) = online(dir.path()).await else {
        return;
    };

    let bad_duration = start_request(
        "cam-2",
        r#","UploaderConfig":{"ScheduleConfig":{"ScheduleExpression":"0 0 3 * * ?","DurationInSeconds":5}}"#,
    );
    let big = format!(
        "{{\"StreamName\":\"cam-2\",\"X\":\"{}\"}}",
        "a".repeat(70_000)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("cam-2", b"not json".to_vec(), "not valid JSON"),
        ("cam-2", b"[1,2]".to_vec(), ""),
        ("cam-2", b"\xff\xfe\x00".to_vec(), "UTF-8"),
        (
            "cam-2",
            br#"{"StreamName":7,"EdgeConfig":{}}"#.to_vec(),
            "StreamName",
        ),
        (
            "cam-2",
            bad_duration.into_bytes(),
            "EdgeConfig.UploaderConfig.ScheduleConfig.DurationInSeconds",
        ),
        (
            "cam-3",
            start_request("cam-2", "").into_bytes(),
            "StreamName:",
        ),
        ("cam-2", big.into_bytes(), "exceeds the limit"),
        (
            "cam-2",
            start_request("cam-2", "")
                .replacen("{", r#"{"StreamName":"cam-9","#, 1)
                .into_bytes(),
            r#"not valid JSON: duplicate key "StreamName""#,
        ),
    ];
    for (stream, payload, needle) in cases {
        let topic = reported(stream);
        let n = statuses(&w.all(), &topic).len();
        w.publish(&desired(stream), &payload).await;
        w.wait(&format!("SYNC_FAILED with {needle:?}"), T, |m| {
            m.iter().filter(|m| m.topic == topic).skip(n).any(|m| {
                m.sync_status().as_deref() == Some("SYNC_FAILED")
                    && m.json().is_some_and(|j| {
                        j["FailedStatusDetails"]
                            .as_str()
                            .is_some_and(|d| d.contains(needle))
                    })
            })
        })
        .await;
    }
    // A HubDeviceArn of another thing, through ctl: SYNC_FAILED, exit 254, the field named.
    let other = start_request("cam-4", "").replace("thing/hub-1", "thing/hub-9");
    let req = write_request(dir.path(), "other.json", &other);
    // ctl sends to the HubDeviceArn's thing, which this agent does not listen to: it times out.
    let out = ctl(
        &broker.url(),
        &[
            "start-edge-configuration-update",
            "--cli-input-json",
            &req,
            "--wait-seconds",
            "2",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    // Published on this agent's topic, it is refused naming the field.
    w.publish(&desired("cam-4"), other.as_bytes()).await;
    w.wait("HubDeviceArn refused", T, |m| {
        m.iter().any(|m| {
            m.topic == reported("cam-4")
                && m.json().is_some_and(|j| {
                    j["FailedStatusDetails"]
                        .as_str()
                        .is_some_and(|d| d.starts_with("EdgeConfig.HubDeviceArn"))
                })
        })
    })
    .await;
    // An unknown secret: SYNC_FAILED naming the secret's field, through ctl (exit 254).
    let unknown = start_request("cam-5", "").replace("cam-5-uri", "nobody");
    let req = write_request(dir.path(), "unknown.json", &unknown);
    let out = ctl_start(&broker.url(), &req).await;
    assert_eq!(out.status.code(), Some(254), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriSecretArn"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout_json(&out)["SyncStatus"], "SYNC_FAILED");
    // ctl refuses an invalid request itself (exit 252), naming the field.
    let req = write_request(
        dir.path(),
        "bad.json",
        r#"{"StreamName":"x y","EdgeConfig":{}}"#,
    );
    let out = ctl_start(&broker.url(), &req).await;
    assert_eq!(out.status.code(), Some(252));
    assert!(
        stderr(&out).contains("EdgeConfig.HubDeviceArn: is required"),
        "{}",
        stderr(&out)
    );

    // A topic naming a stream outside [a-zA-Z0-9_.-]+ gets no answer: the agent says why in
    // its log, once per topic.
    let bad_topic = desired("camé");
    w.publish(&bad_topic, start_request("camé", "").as_bytes())
        .await;
    w.publish(&bad_topic, start_request("camé", "").as_bytes())
        .await;
    // Handled in order: once this one is answered, both above have been seen.
    w.publish(&desired("cam-6"), b"not json").await;
    w.wait("cam-6 SYNC_FAILED", T, |m| {
        m.iter().any(|m| {
            m.topic == reported("cam-6") && m.sync_status().as_deref() == Some("SYNC_FAILED")
        })
    })
    .await;
    let warned = agent
        .log_text()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("ignoring a request whose topic"))
        .filter(|l| l.contains("camé"))
        .count();
    assert_eq!(warned, 1, "{}", agent.log_text());

    assert!(
        agent.is_running(),
        "the agent survived every malformed payload"
    );
    assert!(!agent.log_text().contains("panicked"));
}

/// FILE_URI secrets naming a device and a FIFO: USER_ERROR at once, naming what the file is,
/// and nothing held (the old agent read /dev/zero until memory ran out, and blocked a thread
/// for ever on each FIFO, until recording stopped for every stream). A clip records
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_uris_that_are_not_regular_files_fail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Mosquitto::start(dir.path()) else {
        return;
    };
    let fifo = dir.path().join("fifo.h264");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let extra = format!(
        "{}: /dev/zero\n{}: {}\n",
        secret_arn("zero"),
        secret_arn("fifo"),
        fifo.display()
    );
    let mut agent = Agent::launch(dir.path(), &yaml_with(&broker.url(), ""), &extra);
    let w = Watcher::start(broker.port).await;
    w.agent_online(T).await;
    apply(
        &broker.url(),
        dir.path(),
        "cam-0.json",
        &start_request("cam-0", ""),
    )
    .await;
    for round in 0..3 {
        for (stream, kind) in [("zero", "character device"), ("fifo", "FIFO (named pipe)")] {
            let topic = reported(stream);
            let seen = w.on(&topic).len();
            apply(
                &broker.url(),
                dir.path(),
                "x.json",
                &start_request(stream, ""),
            )
            .await;
            w.wait(&format!("{stream} USER_ERROR naming a {kind}"), T, |m| {
                m.iter().filter(|m| m.topic == topic).skip(seen).any(|m| {
                    m.json().is_some_and(|j| {
                        let s = &j["EdgeAgentStatus"]["LastRecorderStatus"];
                        s["RecorderStatus"] == "USER_ERROR"
                            && s["JobStatusDetails"]
                                .as_str()
                                .is_some_and(|d| d.contains(kind))
                    })
                })
            })
            .await;
            let out = ctl(
                &broker.url(),
                &["delete-edge-configuration", "--stream-name", stream],
            )
            .await;
            assert!(out.status.success(), "round {round}: {}", stderr(&out));
        }
    }
    let before = agent.fragment_count("cam-0");
    agent.wait_fragments("cam-0", before + 2, T).await;
    let (status, _) = agent.stop().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seventeenth_stream_fails_and_list_pages() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Mosquitto::start(dir.path()) else {
        return;
    };
    let _agent = Agent::launch(dir.path(), &yaml_with(&broker.url(), ""), "");
    let w = Watcher::start(broker.port).await;
    w.agent_online(T).await;
    // A schedule far in the future keeps 16 recorders idle (cheap on a small box).
    for i in 0..17 {
        let stream = format!("cam-{i}");
        let body = start_request(&stream, "").replace(
            r#""MediaUriType":"FILE_URI"}"#,
            r#""MediaUriType":"FILE_URI"},"ScheduleConfig":{"ScheduleExpression":"0 0 0 1 1 ? 2099","DurationInSeconds":60}"#,
        );
        w.publish(&desired(&stream), body.as_bytes()).await;
    }
    w.wait(
        "16 IN_SYNC and one SYNC_FAILED",
        Duration::from_secs(60),
        |m| {
            let terminal = |s: &str| -> usize {
                (0..17)
                    .filter(|i| {
                        statuses(m, &reported(&format!("cam-{i}")))
                            .last()
                            .map(String::as_str)
                            == Some(s)
                    })
                    .count()
            };
            terminal("IN_SYNC") == 16 && terminal("SYNC_FAILED") == 1
        },
    )
    .await;
    let last = statuses(&w.all(), &reported("cam-16"));
    assert_eq!(last.last().map(String::as_str), Some("SYNC_FAILED"));
    let failed = w.on(&reported("cam-16")).last().unwrap().json().unwrap();
    assert!(
        failed["FailedStatusDetails"]
            .as_str()
            .unwrap()
            .contains("limit"),
        "{failed}"
    );

    // list-edge-agent-configurations pages through them, 5 by default.
    let hub = format!("arn:aws:iot:us-east-1:123456789012:thing/{THING}");
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["list-edge-agent-configurations", "--hub-device-arn", &hub];
        if let Some(t) = &token {
            args.push("--next-token");
            args.push(t);
        }
        let out = ctl(&broker.url(), &args).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let v = stdout_json(&out);
        let page = v["EdgeConfigs"].as_array().unwrap();
        assert!(page.len() <= 5);
        assert!(page.iter().all(|e| e.get("EdgeAgentStatus").is_none()));
        names.extend(
            page.iter()
                .map(|e| e["StreamName"].as_str().unwrap().to_owned()),
        );
        pages += 1;
        match v.get("NextToken").and_then(|t| t.as_str()) {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(names.len(), 17, "{names:?}");
    assert_eq!(pages, 4);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let out = ctl(
        &broker.url(),
        &[
            "list-edge-agent-configurations",
            "--hub-device-arn",
            &hub,
            "--max-results",
            "11",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(252), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_and_restart_without_broker() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = Mosquitto::start(dir.path()) else {
        return;
    };
    let mut agent = Agent::launch(dir.path(), &yaml_with(&broker.url(), ""), "");
    let url = broker.url();
    let req = write_request(dir.path(), "cam-1.json", &start_request("cam-1", ""));
    {
        let w = Watcher::start(broker.port).await;
        w.agent_online(T).await;
    }
    let out = ctl_start(&url, &req).await;
    assert!(out.status.success(), "{}", stderr(&out));
    agent.wait_fragments("cam-1", 2, T).await;

    // The broker goes away: recording goes on.
    broker.stop();
    let n = agent.fragment_count("cam-1");
    agent.wait_fragments("cam-1", n + 3, T).await;
    assert!(agent.is_running());

    // It returns: the agent reconnects and republishes its state.
    broker.restart();
    let w = Watcher::start(broker.port).await;
    w.wait("reported republished after the outage", T, |m| {
        m.iter().any(|m| {
            m.topic == reported("cam-1")
                && !m.retain
                && m.sync_status().as_deref() == Some("IN_SYNC")
        })
    })
    .await;
    w.wait("agent online again", T, |m| {
        m.iter().any(|m| {
            m.topic == agent_topic() && !m.retain && m.payload.starts_with(br#"{"Status":"online""#)
        })
    })
    .await;

    // SIGTERM: exit 0 within 10 s, offline published.
    let (status, took) = agent.stop().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    w.wait("offline", T, |m| {
        m.iter()
            .any(|m| m.topic == agent_topic() && m.payload.starts_with(br#"{"Status":"offline""#))
    })
    .await;
    assert!(agent.log_text().contains("recorder stopped"));

    // Restarted with the broker down: the stored configuration resumes.
    broker.stop();
    let n = agent.fragment_count("cam-1");
    agent.start();
    agent.wait_fragments("cam-1", n + 2, T).await;
    let (status, _) = agent.stop().unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_walkthrough() {
    // README's walk-through: local mode, no thing name, no broker URL (the agent embeds one),
    // config/secrets.example.yaml and config/example-local.json as shipped.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut agent = Agent::launch(
        dir.path(),
        &format!(
            "secrets_file: {}\nmqtt:\n  embedded_broker_listen: 127.0.0.1:{port}\n",
            repo_root().join("config/secrets.example.yaml").display()
        ),
        "",
    );
    assert!(
        wait_listening(port, T),
        "embedded broker: {}",
        agent.log_text()
    );
    let url = format!("mqtt://127.0.0.1:{port}");
    agent.wait_log("connected to the MQTT broker", 1, T).await;
    let req = format!(
        "file://{}",
        repo_root().join("config/example-local.json").display()
    );
    let out = ctl_start(&url, &req).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        agent.log_text()
    );
    let v = stdout_json(&out);
    assert_eq!(v["SyncStatus"], "IN_SYNC");
    assert_eq!(v["StreamName"], "demo-cam");
    agent.wait_fragments("demo-cam", 2, T).await;
    let out = ctl(
        &url,
        &["describe-edge-configuration", "--stream-name", "demo-cam"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let d = stdout_json(&out);
    assert_eq!(d["SyncStatus"], "IN_SYNC");
    assert_eq!(
        d["EdgeConfig"]["HubDeviceArn"],
        "arn:aws:iot:us-east-1:123456789012:thing/my-edge-device"
    );
    // The agent status of a thing-less local agent.
    let w = Watcher::start(port).await;
    w.wait("agent status", T, |m| {
        m.iter().any(|m| m.topic == "kvs-edge/local/agent")
    })
    .await;
    let out = ctl(
        &url,
        &[
            "list-edge-agent-configurations",
            "--hub-device-arn",
            "arn:aws:iot:us-east-1:123456789012:thing/my-edge-device",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout_json(&out)["EdgeConfigs"][0]["StreamName"],
        "demo-cam"
    );
    let out = ctl(
        &url,
        &["delete-edge-configuration", "--stream-name", "demo-cam"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!agent.rec.join("streams/demo-cam").exists());
    let (status, took) = agent.stop().unwrap();
    assert!(
        status.success() && took < Duration::from_secs(10),
        "{status:?} {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_camera_recorded_and_its_password_kept_secret() {
    if !rtsp::require_gstreamer(&["x264enc", "rtph264pay"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Mosquitto::start(dir.path()) else {
        return;
    };
    let server = rtsp::RtspServer::start(&["--user", "viewer", "--password", "s3cret-pw"]);
    let good = server.url_with("viewer", "s3cret-pw");
    let bad = server.url_with("viewer", "wrong-pw");
    let secrets = format!(
        "{}: {good}\n{}: {bad}\n",
        secret_arn("door"),
        secret_arn("yard")
    );
    let agent = Agent::launch(dir.path(), &yaml_with(&broker.url(), ""), &secrets);
    let w = Watcher::start(broker.port).await;
    w.agent_online(T).await;
    for stream in ["door", "yard"] {
        let body = start_request(stream, "").replace("FILE_URI", "RTSP_URI");
        apply(&broker.url(), dir.path(), &format!("{stream}.json"), &body).await;
    }
    agent.wait_fragments("door", 2, T).await;
    assert!(!agent.segment_files("door").is_empty());
    // The wrong password: USER_ERROR in LastRecorderStatus, without the password.
    w.recorder_status("yard USER_ERROR", "yard", "USER_ERROR", T)
        .await;
    // A configuration error stops the job until the configuration is sent again (seed FAQ).
    agent
        .wait_log(
            "recorder stopped until the configuration is sent again",
            1,
            T,
        )
        .await;
    // Fix the secret, resend: the job starts again and records.
    let secrets = format!(
        "{}: {good}\n{}: {good}\n",
        secret_arn("door"),
        secret_arn("yard")
    );
    std::fs::write(dir.path().join("secrets.yaml"), secrets).unwrap();
    let req = format!("file://{}", dir.path().join("yard.json").display());
    let out = ctl_start(&broker.url(), &req).await;
    assert!(out.status.success(), "{}", stderr(&out));
    agent.wait_fragments("yard", 2, T).await;
    for m in w.all() {
        let text = String::from_utf8_lossy(&m.payload);
        assert!(
            !text.contains("s3cret-pw") && !text.contains("wrong-pw"),
            "{text}"
        );
    }
    let log = agent.log_text();
    assert!(
        !log.contains("s3cret-pw") && !log.contains("wrong-pw"),
        "{log}"
    );
}

fn sessions_of(agent: &Agent, stream: &str) -> usize {
    agent
        .log_text()
        .lines()
        .filter(|l| l.contains("source connected") && l.contains(stream))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_while_the_agent_is_away_apply_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let Some((broker, mut agent, w)) = online(dir.path()).await else {
        return;
    };
    apply(
        &broker.url(),
        dir.path(),
        "cam-1.json",
        &start_request("cam-1", ""),
    )
    .await;
    agent.wait_fragments("cam-1", 1, T).await;
    assert_eq!(sessions_of(&agent, "cam-1"), 1);

    let (status, _) = agent.stop().unwrap();
    assert!(status.success());
    // While the agent is away: a new stream (queued in its persistent session, and retained).
    w.publish(&desired("cam-2"), start_request("cam-2", "").as_bytes())
        .await;
    agent.start();
    w.wait("cam-2 in sync after the agent returned", T, |m| {
        statuses(m, &reported("cam-2")).last().map(String::as_str) == Some("IN_SYNC")
    })
    .await;
    // A later live request is applied after every earlier delivery (one at a time, in order).
    w.publish(&desired("cam-3"), start_request("cam-3", "").as_bytes())
        .await;
    w.wait("cam-3 in sync", T, |m| {
        statuses(m, &reported("cam-3")).last().map(String::as_str) == Some("IN_SYNC")
    })
    .await;
    agent.wait_fragments("cam-2", 1, T).await;
    // cam-1 resumed from the catalog once; its retained `desired`, redelivered on subscribe and
    // equal to the stored configuration, did not restart it.
    assert_eq!(sessions_of(&agent, "cam-1"), 2, "{}", agent.log_text());
    assert_eq!(sessions_of(&agent, "cam-2"), 1, "{}", agent.log_text());
}

/// A delete and then a new configuration of the same stream, both published (retained) while the
/// agent is away, reach it one after the other when it returns: it deletes, then applies, and
/// `desired` keeps the newer request. The agent clears `desired` after a delete; that clear must
/// not wipe a request that arrived after the delete, or the configuration is gone for the next
/// subscriber (a replaced device, `ctl`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_then_an_apply_leaves_the_apply_desired() {
    let dir = tempfile::tempdir().unwrap();
    let Some((broker, mut agent, w)) = online(dir.path()).await else {
        return;
    };
    w.publish(&desired("cam-1"), start_request("cam-1", "").as_bytes())
        .await;
    agent.wait_fragments("cam-1", 1, T).await;
    let (status, _) = agent.stop().unwrap();
    assert!(status.success());

    w.publish(&desired("cam-1"), br#"{"StreamName":"cam-1"}"#)
        .await;
    let newer = start_request("cam-1", r#","DeletionConfig":{"EdgeRetentionInHours":12}"#);
    w.publish(&desired("cam-1"), newer.as_bytes()).await;
    let seen_before = w.on(&reported("cam-1")).len();
    agent.start();
    w.wait("deleted, then in sync with the newer request", T, |m| {
        let after: Vec<_> = m
            .iter()
            .filter(|m| m.topic == reported("cam-1"))
            .skip(seen_before)
            .collect();
        let deleted = after
            .iter()
            .position(|m| m.sync_status().as_deref() == Some("DELETING_ACKNOWLEDGED"));
        deleted.is_some_and(|i| {
            after[i..].iter().any(|m| {
                m.json().is_some_and(|j| {
                    j["SyncStatus"] == "IN_SYNC"
                        && j["EdgeConfig"]["DeletionConfig"]["EdgeRetentionInHours"] == 12
                })
            })
        })
    })
    .await;
    agent.wait_fragments("cam-1", 1, T).await;

    // The agent published its clear (if any) before IN_SYNC: a new subscriber now gets the
    // newer request, retained.
    let fresh = Watcher::start(broker.port).await;
    fresh
        .wait(
            "the newer request retained on desired",
            Duration::from_secs(5),
            |m| {
                m.iter()
                    .any(|m| m.topic == desired("cam-1") && m.payload == newer.as_bytes())
            },
        )
        .await;
    assert!(
        fresh
            .on(&desired("cam-1"))
            .iter()
            .all(|m| m.payload == newer.as_bytes())
    );
    let log = agent.log_text();
    assert!(log.contains("desired kept"), "{log}");
}

/// Without `mqtt.thing_name` the agent serves every thing's topics; a stream name is unique
/// per account and region, so a second thing's `cam-1` is refused on that thing's topic naming
/// the owner, and a delete there leaves the owner's stream recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_things_stream_of_the_same_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Mosquitto::start(dir.path()) else {
        return;
    };
    let agent = Agent::launch(
        dir.path(),
        &format!("mqtt:\n  broker_url: {}\n", broker.url()),
        "",
    );
    let w = Watcher::start(broker.port).await;
    w.publish(&desired("cam-1"), start_request("cam-1", "").as_bytes())
        .await;
    w.wait("cam-1 in sync on hub-1", T, |m| {
        statuses(m, &reported("cam-1")).last().map(String::as_str) == Some("IN_SYNC")
    })
    .await;
    agent.wait_fragments("cam-1", 1, T).await;

    let other = |kind: &str| format!("{PREFIX}/hub-2/streams/cam-1/{kind}");
    let on_hub_2 = start_request("cam-1", "").replace("thing/hub-1", "thing/hub-2");
    w.publish(&other("desired"), on_hub_2.as_bytes()).await;
    w.wait("SYNC_FAILED on hub-2", T, |m| {
        statuses(m, &other("reported")).last().map(String::as_str) == Some("SYNC_FAILED")
    })
    .await;
    let refusal = w.on(&other("reported")).last().unwrap().json().unwrap();
    let details = refusal["FailedStatusDetails"].as_str().unwrap();
    assert!(
        details.starts_with("StreamName:") && details.contains("\"hub-1\""),
        "{details}"
    );
    w.publish(&other("desired"), br#"{"StreamName":"cam-1"}"#)
        .await;
    w.wait("hub-2's topics cleared", T, |m| {
        m.iter()
            .any(|m| m.topic == other("reported") && m.payload.is_empty())
    })
    .await;
    // hub-1's stream: still in sync with its configuration, still recording.
    let n = agent.fragment_count("cam-1");
    agent.wait_fragments("cam-1", n + 1, T).await;
    let mine = w.on(&reported("cam-1"));
    assert_eq!(
        mine.last().unwrap().sync_status().as_deref(),
        Some("IN_SYNC"),
        "{mine:?}"
    );
    assert!(mine.iter().all(|m| !m.payload.is_empty()));
    let out = ctl(
        &broker.url(),
        &[
            "describe-edge-configuration",
            "--stream-name",
            "cam-1",
            "--thing-name",
            THING,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["SyncStatus"], "IN_SYNC");
}

/// The release binary at `target/release` (tests/ci.sh builds it in tests/packaging/check.sh
/// before `cargo test`), when it has the fault hook; `None` with a notice locally.
fn release_binary() -> Option<std::path::PathBuf> {
    let bin = repo_root().join("target/release/kvs-edge-agent");
    let why = match std::fs::read(&bin) {
        Err(e) => format!(
            "{} not found ({e}): run `cargo build --release`",
            bin.display()
        ),
        Ok(b) if !b.windows(20).any(|w| w == b"KVS_EDGE_AGENT_FAULT") => format!(
            "{} predates the fault hook: run `cargo build --release`",
            bin.display()
        ),
        Ok(_) => return Some(bin),
    };
    peer::required("the release binary", false, &why);
    None
}

/// The shipped binary keeps a panic to its job: one stream's recorder panics (injected by the
/// test-only KVS_EDGE_AGENT_FAULT hook, supervisor/fault.rs) and is restarted and records,
/// the other stream records on, and the process stays up and stops cleanly. With the release
/// profile's former `panic = "abort"`, the panic ended the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_release_binary_restarts_a_panicked_job_and_keeps_the_others() {
    let Some(bin) = release_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut configs = Vec::new();
    for stream in ["cam-1", "cam-2"] {
        let path = dir.path().join(format!("{stream}.json"));
        std::fs::write(&path, start_request(stream, "")).unwrap();
        configs.push(path.display().to_string());
    }
    // The streams come from --edge-config; nothing listens at the broker URL.
    let yaml = yaml_with(&format!("mqtt://127.0.0.1:{}", free_port()), "");
    let mut agent = Agent::launch_bin(
        dir.path(),
        &yaml,
        "",
        &[("KVS_EDGE_AGENT_FAULT", "panic-recorder:cam-1")],
        &bin,
        &["--edge-config", &configs[0], "--edge-config", &configs[1]],
    );
    agent
        .wait_log("injected panic in the recorder of cam-1", 1, T)
        .await;
    agent.wait_fragments("cam-2", 1, T).await;
    let n = agent.fragment_count("cam-2");
    agent.wait_log("restarting the recorder", 1, T).await;
    agent.wait_fragments("cam-1", 1, T).await;
    agent.wait_fragments("cam-2", n + 2, T).await;
    assert!(agent.is_running(), "{}", agent.log_text());
    let (status, _) = agent.stop().unwrap();
    assert!(status.success(), "{status:?}\n{}", agent.log_text());
    assert_eq!(agent.log_text().matches("injected panic").count(), 2);
}

/// A request whose handling panics fails with SYNC_FAILED, and the agent goes on handling
/// requests: the same one sent again applies and records (the panic is the test-only fault
/// hook's, armed for the first request of cam-1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_handling_panics_fails_and_the_next_applies() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Mosquitto::start(dir.path()) else {
        return;
    };
    let agent = Agent::launch_env(
        dir.path(),
        &yaml_with(&broker.url(), ""),
        "",
        &[("KVS_EDGE_AGENT_FAULT", "panic-apply:cam-1")],
    );
    let w = Watcher::start(broker.port).await;
    w.agent_online(T).await;
    let req = start_request("cam-1", "");
    w.publish(&desired("cam-1"), req.as_bytes()).await;
    w.wait("SYNC_FAILED", T, |m| {
        statuses(m, &reported("cam-1")).last().map(String::as_str) == Some("SYNC_FAILED")
    })
    .await;
    let failed = w.on(&reported("cam-1")).last().unwrap().json().unwrap();
    assert!(
        failed["FailedStatusDetails"]
            .as_str()
            .is_some_and(|d| d.starts_with("internal error")),
        "{failed}"
    );
    w.publish(&desired("cam-1"), req.as_bytes()).await;
    w.wait("IN_SYNC", T, |m| {
        statuses(m, &reported("cam-1")).last().map(String::as_str) == Some("IN_SYNC")
    })
    .await;
    agent.wait_fragments("cam-1", 1, T).await;
}

/// A janitor whose task panics is started again, as the recorder is (the release profile
/// unwinds, so a panic ends only its task), and does its work: here, with a free-space reserve
/// larger than the disk, it pauses the recording. The panic is the test-only fault hook's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_janitor_is_restarted_and_does_its_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cam-1.json");
    std::fs::write(&path, start_request("cam-1", "")).unwrap();
    let agent = Agent::launch_bin(
        dir.path(),
        &yaml_with(
            &format!("mqtt://127.0.0.1:{}", free_port()),
            "disk_reserve:\n  min_free_mb: 10000000\n",
        ),
        "",
        &[("KVS_EDGE_AGENT_FAULT", "panic-janitor:cam-1")],
        std::path::Path::new(BIN),
        &["--edge-config", &path.display().to_string()],
    );
    agent
        .wait_log("injected panic in the janitor of cam-1", 1, T)
        .await;
    agent.wait_log("the job crashed; restarting", 1, T).await;
    agent
        .wait_log(
            "recording paused: the file system is under its free-space reserve",
            1,
            T,
        )
        .await;
    let log = agent.log_text();
    let crashed = log.find("the job crashed").unwrap();
    assert!(log[crashed..].contains("recording paused"), "{log}");
}

#[tokio::test]
async fn ctl_refuses_malformed_input_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens here: every case must fail on its input first (252), not on the broker.
    let nowhere = format!("mqtt://127.0.0.1:{}", free_port());
    let not_json = write_request(dir.path(), "x.json", "{ nope");
    let array = write_request(dir.path(), "a.json", "[1]");
    let hub = "arn:aws:iot:us-east-1:123456789012:thing/hub-1";
    fn start_json(req: &str) -> Vec<&str> {
        vec!["start-edge-configuration-update", "--cli-input-json", req]
    }
    fn start_edge(edge: &str) -> Vec<&str> {
        let head = ["start-edge-configuration-update", "--stream-name", "cam"];
        [&head[..], &["--edge-config", edge]].concat()
    }
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (start_json(&not_json), "not valid JSON"),
        (start_json(&array), ""),
        (start_json("file:///nonexistent/x.json"), "cannot read"),
        (
            start_json("file:///dev/zero"),
            "the request /dev/zero is a character device, not a regular file",
        ),
        (
            start_edge("file:///dev/zero"),
            "the request /dev/zero is a character device",
        ),
        (
            vec![
                "delete-edge-configuration",
                "--cli-input-json",
                r#"{"StreamName":"a","StreamName":"b"}"#,
            ],
            r#"duplicate key "StreamName""#,
        ),
        (
            start_edge(r#"{"HubDeviceArn":"a","HubDeviceArn":"b"}"#),
            r#"--edge-config is not valid JSON: duplicate key "HubDeviceArn""#,
        ),
        (start_edge("{}"), "EdgeConfig.HubDeviceArn: is required"),
        (vec!["describe-edge-configuration"], "StreamName"),
        (
            vec!["describe-edge-configuration", "--stream-name", "a b"],
            "StreamName",
        ),
        (
            vec![
                "delete-edge-configuration",
                "--stream-name",
                "a",
                "--stream-arn",
                "arn:aws:kinesisvideo:us-east-1:123456789012:stream/a/1",
            ],
            "not both",
        ),
        (vec!["list-edge-agent-configurations"], "HubDeviceArn"),
        (
            vec!["list-edge-agent-configurations", "--hub-device-arn", "nope"],
            "HubDeviceArn",
        ),
        (
            vec![
                "list-edge-agent-configurations",
                "--hub-device-arn",
                hub,
                "--max-results",
                "0",
            ],
            "MaxResults",
        ),
        (
            vec![
                "list-edge-agent-configurations",
                "--hub-device-arn",
                hub,
                "--next-token",
                "a b",
            ],
            "NextToken",
        ),
        (
            vec![
                "describe-edge-configuration",
                "--stream-name",
                "a",
                "--topic-prefix",
                "a/#",
            ],
            "--topic-prefix",
        ),
    ];
    for (args, needle) in cases {
        let out = ctl(&nowhere, &args).await;
        assert_eq!(out.status.code(), Some(252), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    let out = ctl(
        "http://x",
        &["describe-edge-configuration", "--stream-name", "a"],
    )
    .await;
    assert_eq!(out.status.code(), Some(252), "{}", stderr(&out));
    // A valid request and no broker: 255, saying so.
    let out = ctl(
        &nowhere,
        &["describe-edge-configuration", "--stream-name", "a"],
    )
    .await;
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(stderr(&out).contains("MQTT broker"), "{}", stderr(&out));
}

/// Mosquitto as the IoT Core stand-in: TLS with a test CA, client certificates required.
/// Returns the broker and the CA, client certificate and key files.
fn mtls_broker(dir: &std::path::Path) -> Option<(Mosquitto, [std::path::PathBuf; 3])> {
    let [ca, server_crt, server_key, client_crt, client_key] = make_certs(dir)?;
    let conf = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\n",
        ca.display(),
        server_crt.display(),
        server_key.display()
    );
    let broker = Mosquitto::start_with(dir, &conf)?;
    Some((broker, [ca, client_crt, client_key]))
}

/// The agent on the TLS broker at `url` with `env`, once connected, and `cam-1` applied through
/// ctl over TLS (`tls`: its CA, certificate and key arguments), in sync.
async fn tls_agent_applies(
    dir: &std::path::Path,
    url: &str,
    env: &[(&str, &str)],
    tls: &[&str],
) -> Agent {
    let agent = Agent::launch_env(dir, &format!("mqtt:\n  broker_url: {url}\n"), "", env);
    agent.wait_log("connected to the MQTT broker", 1, T).await;
    let req = write_request(dir, "cam-1.json", &start_request("cam-1", ""));
    let mut args = vec!["start-edge-configuration-update", "--cli-input-json", &req];
    args.extend(tls);
    let out = ctl(url, &args).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        agent.log_text()
    );
    assert_eq!(stdout_json(&out)["SyncStatus"], "IN_SYNC");
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iot_mode_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let Some((broker, [ca, client_crt, client_key])) = mtls_broker(dir.path()) else {
        return;
    };
    let url = format!("mqtts://localhost:{}", broker.port);
    let (ca, crt, key) = (
        ca.display().to_string(),
        client_crt.display().to_string(),
        client_key.display().to_string(),
    );
    // IoT mode: the AWS_IOT_* variables; the broker URL points at the local Mosquitto.
    let env = [
        ("AWS_REGION", "us-east-1"),
        ("AWS_IOT_CA_CERT", ca.as_str()),
        ("AWS_IOT_CORE_CERT", crt.as_str()),
        ("AWS_IOT_CORE_PRIVATE_KEY", key.as_str()),
        ("AWS_IOT_CORE_CREDENTIAL_ENDPOINT", "127.0.0.1"),
        ("AWS_IOT_CORE_DATA_ATS_ENDPOINT", "localhost"),
        ("AWS_IOT_CORE_ROLE_ALIAS", "role"),
        ("AWS_IOT_CORE_THING_NAME", THING),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_ENDPOINT_URL_KINESIS_VIDEO", "http://127.0.0.1:9"),
    ];
    let tls = ["--ca-file", &ca, "--cert-file", &crt, "--key-file", &key];
    let agent = tls_agent_applies(dir.path(), &url, &env, &tls).await;
    agent.wait_fragments("cam-1", 1, T).await;
    // Without a client certificate the broker refuses ctl.
    let out = ctl(
        &url,
        &[
            "describe-edge-configuration",
            "--stream-name",
            "cam-1",
            "--ca-file",
            &ca,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    let mut args = vec!["describe-edge-configuration", "--stream-name", "cam-1"];
    args.extend(tls);
    let out = ctl(&url, &args).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["SyncStatus"], "IN_SYNC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_reach_kvs_and_reported_carries_both_job_statuses() {
    if !peer::on_path("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Mosquitto::start(dir.path()) else {
        return;
    };
    let emulator = kvs::Emulator::start(&dir.path().join("kvs"), &[]);
    let endpoint = emulator.url();
    let env = [
        ("AWS_REGION", kvs::REGION),
        ("AWS_ACCESS_KEY_ID", kvs::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", kvs::SECRET_KEY),
        ("AWS_ENDPOINT_URL_KINESIS_VIDEO", endpoint.as_str()),
    ];
    let agent = Agent::launch_env(dir.path(), &yaml_with(&broker.url(), ""), "", &env);
    let w = Watcher::start(broker.port).await;
    w.agent_online(T).await;
    // Upload windows of a minute, every minute: always uploading.
    let req = write_request(
        dir.path(),
        "cam-1.json",
        &start_request(
            "cam-1",
            r#","UploaderConfig":{"ScheduleConfig":{"ScheduleExpression":"0 * * * * ?","DurationInSeconds":60}}"#,
        ),
    );
    let out = ctl_start(&broker.url(), &req).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = std::time::Instant::now() + T;
    loop {
        let index = emulator.index("cam-1").await;
        if index["fragments"].as_array().is_some_and(|f| f.len() >= 2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no upload: {index}\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.wait("reported with both job statuses", T, |m| {
        m.iter().any(|m| {
            m.topic == reported("cam-1")
                && m.json().is_some_and(|j| {
                    let s = &j["EdgeAgentStatus"];
                    s["LastRecorderStatus"]["RecorderStatus"] == "SUCCESS"
                        && s["LastUploaderStatus"]["UploaderStatus"] == "SUCCESS"
                })
        })
    })
    .await;
}

/// Greengrass mode: the thing, certificate, key and CA come from the nucleus' effectiveConfig.yaml
/// (a fixture root here); the agent connects over mutual TLS with a client id of its own beside
/// the nucleus' (`{thing}#kvs-edge-agent`) and answers for the nucleus' thing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greengrass_mode_connects_with_the_nucleus_identity() {
    let dir = tempfile::tempdir().unwrap();
    let Some((broker, [ca, client_crt, client_key])) = mtls_broker(dir.path()) else {
        return;
    };
    let root = dir.path().join("greengrass");
    std::fs::create_dir_all(root.join("config")).unwrap();
    let fixture = std::fs::read_to_string(
        repo_root().join("agent/tests/fixtures/greengrass/config/effectiveConfig.yaml"),
    )
    .unwrap()
    .replace("GreengrassCamera01", THING)
    .replace(
        "/greengrass/v2/thingCert.crt",
        &client_crt.display().to_string(),
    )
    .replace(
        "/greengrass/v2/privKey.key",
        &client_key.display().to_string(),
    )
    .replace("/greengrass/v2/rootCA.pem", &ca.display().to_string());
    std::fs::write(root.join("config/effectiveConfig.yaml"), fixture).unwrap();
    let url = format!("mqtts://localhost:{}", broker.port);
    let root_text = root.display().to_string();
    let env = [
        ("GREENGRASS_ROOT_DIRECTORY", root_text.as_str()),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_ENDPOINT_URL_KINESIS_VIDEO", "http://127.0.0.1:9"),
    ];
    // No thing_name in the settings file: the nucleus' is used.
    let (ca, crt, key) = (
        ca.display().to_string(),
        client_crt.display().to_string(),
        client_key.display().to_string(),
    );
    let tls = ["--ca-file", &ca, "--cert-file", &crt, "--key-file", &key];
    let agent = tls_agent_applies(dir.path(), &url, &env, &tls).await;
    let broker_log =
        std::fs::read_to_string(dir.path().join("mosquitto/mosquitto.log")).unwrap_or_default();
    assert!(
        broker_log.contains(&format!("as {THING}#kvs-edge-agent ")),
        "the agent's client id: {broker_log}"
    );
    assert!(agent.log_text().contains("greengrass (root"));
}
