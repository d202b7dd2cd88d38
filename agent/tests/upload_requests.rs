//! Operators' upload requests end to end: the daemon with Mosquitto and the KVS ingest emulator,
//! over media recorded before it started (the backlog of a box that was offline):
//!
//! - a range uploads exactly the fragments that overlap it, outside the upload window; a range
//!   overlapping one already sent, and two overlapping ranges at once, send each fragment once;
//!   every malformed request is answered FAILED naming its field and changes nothing; then the
//!   window opens and the rest goes, nothing twice;
//! - a request cut by kill -9 resumes after the restart;
//! - live from a real camera comes first: while a 10-minute backlog uploads, the first live
//!   fragment reaches the emulator within its duration + 1.5 s of `start-live`, no backlog is
//!   sent while live, and `stop-live` or the duration end it;
//! - newest first after an outage, checked on the emulator's arrival order.

#[path = "support/agent.rs"]
mod agent;
#[path = "support/bin.rs"]
mod bin;
#[path = "support/camera_agent.rs"]
mod camera_agent;
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

use std::collections::BTreeMap;
use std::time::Duration;

use agent::{Agent, THING};
use camera_agent::*;
use kvs::Emulator;
use kvs_edge_agent::catalog::{Catalog, RequestRow, RequestState};
use mosquitto::Mosquitto;
use poll::wait_until_async;
use recording::{Layout, record_long};
use rumqttc::QoS;
use serde_json::{Value, json};
use watcher::{PREFIX, Watcher};

const T: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn topic(kind: &str) -> String {
    format!("{PREFIX}/{THING}/streams/{STREAM}/{kind}")
}

/// The agent with a broker, the emulator and a backlog recorded before it started.
struct Rig {
    _dir: tempfile::TempDir,
    broker: Mosquitto,
    emulator: Emulator,
    watcher: Watcher,
    agent: Agent,
    /// The backlog's first fragment's timecode.
    t0: i64,
}

struct Setup<'a> {
    /// The camera (`None`: a port nobody listens on; the recorder retries, harmless).
    camera: Option<&'a str>,
    backlog: Layout,
    /// How long before now the backlog ends.
    ended_ago_ms: i64,
    edge_extra: &'a str,
    yaml: &'a str,
}

impl Rig {
    async fn start(s: Setup<'_>) -> Option<Rig> {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start(dir.path())?;
        let emulator = Emulator::start(&dir.path().join("kvs"), &[]);
        let dead = format!("rtsp://127.0.0.1:{}/none", net::free_port());
        let (secrets, args) = setup(
            dir.path(),
            s.camera.unwrap_or(&dead),
            &request("RTSP_URI", s.edge_extra),
        );
        let mut agent = Agent::new(
            &dir.path().join("agent"),
            &settings(&secrets, Some(&broker.url()), s.yaml),
            &args,
            &upload_env(&emulator.url()),
        );
        let secs =
            (s.backlog.segments * s.backlog.per_segment * s.backlog.gops_per_fragment) as i64;
        let t0 = (now_ms() - s.ended_ago_ms - secs * 1000) / 1000 * 1000;
        {
            std::fs::create_dir_all(&agent.rec).unwrap();
            let catalog = Catalog::open(&agent.catalog()).unwrap();
            record_long(&catalog, &agent.rec, STREAM, t0, s.backlog);
        }
        let watcher = Watcher::start(broker.port).await;
        agent.start();
        watcher.agent_online(T).await;
        Some(Rig {
            _dir: dir,
            broker,
            emulator,
            watcher,
            agent,
            t0,
        })
    }

    /// Publishes a request (not retained) on the stream's `kind` topic.
    async fn publish(&self, kind: &str, payload: &[u8]) {
        self.watcher
            .client
            .publish(topic(kind), QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .unwrap();
    }

    /// Publishes a request and returns the agent's answer to it.
    async fn ask(&self, kind: &str, payload: Value) -> Value {
        let id = payload["RequestId"].as_str().unwrap().to_owned();
        let before = self.answers(&id).len();
        self.publish(kind, payload.to_string().as_bytes()).await;
        self.watcher
            .wait(&format!("the answer to {id}"), T, |_| {
                self.answers(&id).len() > before
            })
            .await;
        self.answers(&id).pop().unwrap()
    }

    /// The answers on `upload-answers` naming `id`, oldest first.
    fn answers(&self, id: &str) -> Vec<Value> {
        let answers = topic("upload-answers");
        self.watcher
            .all()
            .iter()
            .filter(|m| m.topic == answers)
            .filter_map(watcher::Msg::json)
            .filter(|j| j["RequestId"] == id)
            .collect()
    }

    fn requests(&self) -> Vec<RequestRow> {
        Catalog::open_read_only(&self.agent.catalog())
            .unwrap()
            .requests(STREAM)
            .unwrap()
    }

    fn request(&self, id: &str) -> Option<RequestRow> {
        self.requests().into_iter().find(|r| r.request_id == id)
    }

    async fn until_ended(&self, id: &str, limit: Duration) -> RequestRow {
        wait_until_async(&format!("request {id} ended"), limit, || {
            self.request(id).is_some_and(|r| !r.state.is_open())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", self.agent.log_tail()));
        self.request(id).unwrap()
    }

    /// The emulator's persisted fragments, in arrival order.
    async fn fragments(&self) -> Vec<Value> {
        let mut f = self.emulator.index(STREAM).await["fragments"]
            .as_array()
            .unwrap()
            .clone();
        f.sort_by_key(|f| f["received_ms"].as_i64().unwrap());
        f
    }

    /// Polls the emulator (a process of its own: nothing to await) until `pred` holds.
    async fn until_emulator(&self, what: &str, limit: Duration, pred: impl Fn(&[Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if pred(&self.fragments().await) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.agent.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Seconds after `t0` of the fragments at the emulator, each with how often it came.
    async fn sent(&self) -> BTreeMap<i64, usize> {
        let mut m = BTreeMap::new();
        for f in self.fragments().await {
            *m.entry((f["timecode"].as_i64().unwrap() - self.t0) / 1000)
                .or_default() += 1;
        }
        m
    }

    fn range(&self, id: &str, from_s: i64, to_s: i64) -> Value {
        json!({
            "RequestId": id,
            "StartTime": (self.t0 / 1000 + from_s),
            "EndTime": (self.t0 / 1000 + to_s),
        })
    }
}

fn once(secs: std::ops::Range<i64>) -> BTreeMap<i64, usize> {
    secs.map(|s| (s, 1)).collect()
}

/// An upload window starting `in_secs` from now (on the agent's clock and zone), a minute long.
fn window_in(in_secs: i64) -> String {
    let at = jiff::tz::TimeZone::system()
        .to_datetime(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(in_secs));
    format!(
        r#","UploaderConfig":{{"ScheduleConfig":{{"ScheduleExpression":"{} {} {} * * ?","DurationInSeconds":60}}}},"DeletionConfig":{{"EdgeRetentionInHours":24,"DeleteAfterUpload":false}}"#,
        at.second(),
        at.minute(),
        at.hour()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_go_first_once_each_refusals_change_nothing_then_the_window_sends_the_rest() {
    let Some(rig) = Rig::start(Setup {
        camera: None,
        backlog: Layout {
            segments: 1,
            per_segment: 60,
            gops_per_fragment: 1,
        },
        ended_ago_ms: 120_000,
        edge_extra: &window_in(40),
        yaml: "",
    })
    .await
    else {
        return;
    };
    let broker = rig.broker.url();

    // A 10 s range out of 60 s, through ctl: exactly its fragments, outside the window.
    let (from, to) = (rig.t0 / 1000 + 20, rig.t0 / 1000 + 30);
    let out = ctl::ctl(
        &broker,
        &[
            "upload-media",
            "--stream-name",
            STREAM,
            "--start-time",
            &from.to_string(),
            "--end-time",
            &jiff::Timestamp::from_second(to).unwrap().to_string(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", ctl::stderr(&out));
    let done = ctl::stdout_json(&out);
    assert_eq!(done["Status"], "DONE", "{done}");
    assert_eq!(done["Uploaded"], 10, "{done}");
    assert_eq!(rig.sent().await, once(20..30));

    // Overlapping what was sent: only the new part goes.
    let a = rig.ask("uploads", rig.range("over", 25, 35)).await;
    assert_eq!(a["Status"], "QUEUED", "{a}");
    let r = rig.until_ended("over", T).await;
    assert_eq!((r.state, r.uploaded, r.already), (RequestState::Done, 5, 5));
    // Two overlapping requests at once.
    rig.publish("uploads", rig.range("x", 40, 50).to_string().as_bytes())
        .await;
    rig.publish("uploads", rig.range("y", 45, 55).to_string().as_bytes())
        .await;
    let (x, y) = (rig.until_ended("x", T).await, rig.until_ended("y", T).await);
    // y's count includes what x sent after y came: uploaded since it was asked.
    assert_eq!(
        (x.uploaded, y.uploaded + y.already),
        (10, 10),
        "{x:?} {y:?}"
    );
    let asked: BTreeMap<i64, usize> = once(20..35).into_iter().chain(once(40..55)).collect();
    assert_eq!(rig.sent().await, asked, "each fragment once");
    // A redelivered request is answered with its state, not taken again.
    let again = rig.ask("uploads", rig.range("x", 40, 50)).await;
    assert_eq!(again["Status"], "DONE", "{again}");

    // Every malformed request: FAILED naming the field; nothing stored, nothing sent.
    let stored = rig.requests().len();
    let now = now_ms() / 1000;
    let t0 = rig.t0 / 1000;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "uploads",
            json!({"RequestId": "b1", "StartTime": t0 + 10, "EndTime": t0}),
            "EndTime must be after StartTime",
        ),
        (
            "uploads",
            json!({"RequestId": "b2", "StartTime": now + 60, "EndTime": now + 70}),
            "StartTime is in the future",
        ),
        (
            "uploads",
            json!({"RequestId": "b3", "StartTime": t0, "EndTime": now + 60}),
            "EndTime is in the future",
        ),
        (
            "uploads",
            json!({"RequestId": "b4", "StartTime": t0 - 100_000, "EndTime": t0}),
            "uploader.max_range_secs",
        ),
        (
            "uploads",
            json!({"RequestId": "b5", "StartTime": "noon", "EndTime": t0}),
            "StartTime \"noon\"",
        ),
        (
            "uploads",
            json!({"RequestId": "b6", "EndTime": t0}),
            "StartTime is required",
        ),
        (
            "uploads",
            json!({"RequestId": "b7", "StartTime": t0, "EndTime": t0 + 1, "Camera": 1}),
            "unknown field Camera",
        ),
        (
            "live",
            json!({"RequestId": "b8", "Action": "PAUSE"}),
            "must be START or STOP",
        ),
        (
            "live",
            json!({"RequestId": "b9", "Action": "START", "DurationInSeconds": 999_999}),
            "uploader.max_live_secs",
        ),
        (
            "live",
            json!({"RequestId": "b10", "Action": "STOP"}),
            "no live upload is running",
        ),
    ];
    for (kind, payload, needle) in cases {
        let a = rig.ask(kind, payload.clone()).await;
        assert_eq!(a["Status"], "FAILED", "{payload}: {a}");
        let details = a["Details"].as_str().unwrap_or_default();
        assert!(
            details.contains(needle),
            "{payload}: {details:?} should say {needle:?}"
        );
    }
    // Not JSON, and a stream this agent does not have: answered without an id to name.
    rig.publish("uploads", b"{not json").await;
    let answers = topic("upload-answers");
    rig.watcher
        .wait("the answer to a payload that is not JSON", T, |m| {
            m.iter().any(|m| {
                m.topic == answers
                    && m.json().is_some_and(|j| {
                        j["Details"]
                            .as_str()
                            .is_some_and(|d| d.contains("not valid JSON"))
                    })
            })
        })
        .await;
    let other = format!("{PREFIX}/{THING}/streams/nope/uploads");
    let payload = rig.range("b11", 0, 10).to_string();
    rig.watcher
        .client
        .publish(other, QoS::AtLeastOnce, false, payload.into_bytes())
        .await
        .unwrap();
    let nope_answers = format!("{PREFIX}/{THING}/streams/nope/upload-answers");
    rig.watcher
        .wait("the answer for an unknown stream", T, |m| {
            m.iter().any(|m| {
                m.topic == nope_answers
                    && m.json().is_some_and(|j| {
                        j["Details"]
                            .as_str()
                            .is_some_and(|d| d.contains("no edge configuration"))
                    })
            })
        })
        .await;
    assert_eq!(rig.requests().len(), stored, "refusals store nothing");
    assert_eq!(rig.sent().await, asked, "refusals send nothing");

    // The retained status shows the requests and what is left.
    let status = topic("upload-status");
    rig.watcher
        .wait("an upload status with 30 fragments pending", T, |m| {
            m.iter()
                .rev()
                .find(|m| m.topic == status)
                .and_then(watcher::Msg::json)
                .is_some_and(|j| {
                    j["Backlog"]["PendingFragments"] == 30 && j["Requests"][0]["RequestId"] == "y"
                })
        })
        .await;

    // The window opens: the rest, nothing twice.
    rig.until_emulator("all 60 fragments", Duration::from_secs(150), |f| {
        f.len() >= 60
    })
    .await;
    assert_eq!(rig.sent().await, once(0..60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_by_kill_9_resumes_after_the_restart() {
    let Some(mut rig) = Rig::start(Setup {
        camera: None,
        backlog: Layout {
            segments: 2,
            per_segment: 100,
            gops_per_fragment: 1,
        },
        ended_ago_ms: 60_000,
        // A window half a day away: only the request uploads.
        edge_extra: &window_in(12 * 3600),
        yaml: "",
    })
    .await
    else {
        return;
    };
    let a = rig.ask("uploads", rig.range("cut", 0, 200)).await;
    assert_eq!(a["Status"], "QUEUED", "{a}");
    rig.until_emulator("30 fragments", T, |f| f.len() >= 30)
        .await;
    rig.agent.kill9().unwrap();
    let r = rig.request("cut").unwrap();
    assert_eq!(r.state, RequestState::Uploading, "{r:?}");
    let before = rig.fragments().await.len();
    assert!(before < 200, "the request was cut short: {before}");
    rig.agent.start();
    let r = rig.until_ended("cut", Duration::from_secs(120)).await;
    assert_eq!(r.state, RequestState::Done, "{r:?}");
    let sent = rig.sent().await;
    assert_eq!(
        sent.keys().copied().collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );
    let twice: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
    // At most the fragments whose PERSISTED was in flight at the kill.
    assert!(twice.len() <= 2, "sent twice: {twice:?}");
    let (status, _) = rig.agent.stop().unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_comes_before_a_ten_minute_backlog_and_ends_on_stop_or_duration() {
    if !rtsp::require_gstreamer(&["x264enc", "rtph264pay"]) {
        return;
    }
    let camera = rtsp::RtspServer::start(&["--source", "live"]);
    let Some(rig) = Rig::start(Setup {
        camera: Some(&camera.url),
        // Ten minutes in 6 s fragments: the backlog takes ~20 s at five fragments a second.
        backlog: Layout {
            segments: 1,
            per_segment: 100,
            gops_per_fragment: 6,
        },
        ended_ago_ms: 60_000,
        edge_extra: OPEN_WINDOW,
        yaml: "",
    })
    .await
    else {
        return;
    };
    let backlog_end = rig.t0 + 600_000;
    rig.until_emulator("the backlog uploading", T, |f| f.len() >= 3)
        .await;

    let asked = now_ms();
    let a = rig
        .ask(
            "live",
            json!({"RequestId": "live-1", "Action": "START", "DurationInSeconds": 60}),
        )
        .await;
    assert_eq!(a["Status"], "QUEUED", "{a}");
    let is_live = |f: &Value| f["timecode"].as_i64().unwrap() > backlog_end;
    rig.until_emulator("a live fragment", T, |f| f.iter().any(is_live))
        .await;
    let frags = rig.fragments().await;
    let first = frags.iter().find(|f| is_live(f)).unwrap();
    let late = first["received_ms"].as_i64().unwrap() - asked;
    let duration = first["duration_ms"].as_i64().unwrap();
    println!(
        "start-live -> first live fragment at the emulator: {late} ms (fragment {duration} ms)"
    );
    assert!(
        late <= duration + 1500,
        "{late} ms for a {duration} ms fragment"
    );
    let backlog_before = frags.iter().filter(|f| !is_live(f)).count();
    assert!(
        backlog_before < 100,
        "the backlog was still pending: {backlog_before}"
    );

    // Live for a while: nothing of the backlog goes meanwhile.
    let first_ms = first["received_ms"].as_i64().unwrap();
    rig.until_emulator("three live fragments", T, |f| {
        f.iter().filter(|f| is_live(f)).count() >= 3
    })
    .await;
    let stopped = rig
        .ask("live", json!({"RequestId": "live-2", "Action": "STOP"}))
        .await;
    assert_eq!(stopped["Status"], "DONE", "{stopped}");
    let stop_ms = now_ms();
    let during: Vec<i64> = rig
        .fragments()
        .await
        .iter()
        .filter(|f| (first_ms..stop_ms).contains(&f["received_ms"].as_i64().unwrap()))
        .filter(|f| !is_live(f))
        .map(|f| f["timecode"].as_i64().unwrap())
        .collect();
    assert!(during.is_empty(), "backlog sent while live: {during:?}");
    // After stop-live the backlog goes on.
    rig.until_emulator("the backlog after stop-live", T, |f| {
        f.iter()
            .any(|f| !is_live(f) && f["received_ms"].as_i64().unwrap() > stop_ms)
    })
    .await;

    // A live of 3 s ends by itself.
    let a = rig
        .ask(
            "live",
            json!({"RequestId": "live-3", "Action": "START", "DurationInSeconds": 3}),
        )
        .await;
    assert_eq!(a["Status"], "QUEUED", "{a}");
    let r = rig.until_ended("live-3", Duration::from_secs(20)).await;
    assert_eq!(
        r.details.as_deref(),
        Some("ended after its duration"),
        "{r:?}"
    );
    assert!(r.updated_ms - r.start_ms >= 3000, "{r:?}");
    rig.until_emulator("the whole backlog", Duration::from_secs(90), |f| {
        f.iter().filter(|f| !is_live(f)).count() >= 100
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_first_after_an_outage() {
    let Some(rig) = Rig::start(Setup {
        camera: None,
        // Twelve minutes in 6 s fragments, in two segments.
        backlog: Layout {
            segments: 2,
            per_segment: 60,
            gops_per_fragment: 6,
        },
        ended_ago_ms: 60_000,
        edge_extra: OPEN_WINDOW,
        yaml: "uploader:\n  backlog_order: newest\n",
    })
    .await
    else {
        return;
    };
    rig.until_emulator("the whole backlog", Duration::from_secs(120), |f| {
        f.len() >= 120
    })
    .await;
    let frags = rig.fragments().await;
    let mut sessions: Vec<(i64, Vec<i64>)> = Vec::new();
    for f in &frags {
        let (s, tc) = (
            f["session"].as_i64().unwrap(),
            (f["timecode"].as_i64().unwrap() - rig.t0) / 1000,
        );
        match sessions.last_mut() {
            Some((last, tcs)) if *last == s => tcs.push(tc),
            _ => sessions.push((s, vec![tc])),
        }
    }
    let firsts: Vec<i64> = sessions.iter().map(|(_, t)| t[0]).collect();
    println!("sessions start at (s after the backlog's start): {firsts:?}");
    // Newest (714 s) first: back five minutes to 414 s; then the newest left is 408 s, back to
    // 108 s; then the rest from 0.
    assert_eq!(firsts, [414, 108, 0]);
    for (_, t) in &sessions {
        assert!(t.windows(2).all(|w| w[0] < w[1]), "forward in time: {t:?}");
    }
    assert_eq!(rig.sent().await.len(), 120);
    assert!(rig.sent().await.values().all(|n| *n == 1));
}
