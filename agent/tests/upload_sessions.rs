//! Upload sessions of the daemon as the producer libraries make them, with a live GStreamer RTSP
//! camera and the KVS ingest emulator:
//!
//! - an upload window open all along: one PutMedia request for the whole run, every fragment
//!   persisted exactly once, each at the emulator within its duration + 1.5 s of its first frame;
//! - rotation shortened to 20 s: one more request per rotation, nothing lost or sent twice;
//! - credentials that expire a minute after they are issued, from the IoT credentials endpoint or
//!   from the environment (`AWS_CREDENTIAL_EXPIRATION`): every session ends before its
//!   credentials do, so the service never cuts one.
//!
//! In each, every session's last cluster is followed by the END_OF_FRAGMENT tag, its body ends
//! only after its last acknowledgement, and a SIGTERM at the end sends nothing twice.
//! UPLOAD_SESSIONS_SECS sets the length of the open-window run (300 s by default).

#[path = "support/agent.rs"]
mod agent;
#[path = "support/bin.rs"]
mod bin;
#[path = "support/camera_agent.rs"]
mod camera_agent;
#[path = "support/certs.rs"]
mod certs;
#[path = "support/iot_endpoint.rs"]
mod iot_endpoint;
#[path = "support/kvs.rs"]
mod kvs;
#[path = "support/net.rs"]
mod net;
#[path = "support/peer.rs"]
mod peer;
#[path = "support/poll.rs"]
mod poll;
#[path = "support/process.rs"]
mod process;
#[path = "support/rtsp.rs"]
mod rtsp;
#[path = "support/sample.rs"]
mod sample;
#[path = "support/snapshot.rs"]
mod snapshot;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use agent::{Agent, THING};
use camera_agent::*;
use iot_endpoint::{IotEndpoint, make_pki};
use kvs::{Emulator, REGION, assert_ended_after_last_ack};
use peer::require;
use poll::wait_until_async;
use rtsp::{RtspServer, require_gstreamer};
use serde_json::{Value, json};
use snapshot::{Snapshot, snapshot};

/// How late a fragment may reach the emulator after its last frame.
const LATENCY_SLACK_MS: i64 = 1500;
/// Generous bound for the first fragment to be persisted (camera start, connect, a fragment).
const FIRST: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A live camera, the emulator, and the agent's directory, secrets and request (the window
/// open all along).
struct Rig {
    dir: tempfile::TempDir,
    _camera: RtspServer,
    emulator: Emulator,
    secrets: PathBuf,
    args: Vec<String>,
}

impl Rig {
    fn new() -> Option<Rig> {
        if !require_gstreamer(&["x264enc", "rtph264pay"]) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let camera = RtspServer::start(&["--source", "live"]);
        let emulator = Emulator::start(&dir.path().join("kvs"), &[]);
        let (secrets, args) = setup(dir.path(), &camera.url, &request("RTSP_URI", OPEN_WINDOW));
        Some(Rig {
            dir,
            _camera: camera,
            emulator,
            secrets,
            args,
        })
    }

    /// Starts the agent with the settings `extra` and the environment `env`.
    fn launch(&self, extra: &str, env: &[(String, String)]) -> Agent {
        let mut agent = Agent::new(
            &self.dir.path().join("agent"),
            &settings(&self.secrets, None, extra),
            &self.args,
            env,
        );
        agent.start();
        agent
    }

    /// Waits for the first fragment to be acknowledged, lets the agent upload live for `run`,
    /// then stops it (SIGTERM, which must take less than 10 s); returns when the stop began.
    async fn run_for(&self, agent: &mut Agent, run: Duration) -> i64 {
        let db = agent.catalog();
        wait_until_async("a fragment acknowledged", FIRST, || {
            snapshot(&db, STREAM).uploaded() > 0
        })
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", agent.log_tail()));
        // The length of the run itself, not a wait for an event.
        tokio::time::sleep(run).await;
        let stop_ms = now_ms();
        let (status, took) = agent.stop().unwrap();
        assert!(status.success(), "{status:?}:\n{}", agent.log_tail());
        assert!(took < Duration::from_secs(10), "stop took {took:?}");
        stop_ms
    }

    async fn index(&self) -> Value {
        self.emulator.index_settled(STREAM).await
    }
}

/// What one run left at the emulator, checked against the catalog.
#[derive(Debug)]
struct Report {
    fragments: usize,
    sessions: Vec<Value>,
    /// Per fragment: when its last byte arrived after its last frame, in ms.
    lateness_ms: Vec<i64>,
}

impl Report {
    /// Each session as "opened+seconds/fragments", for the output.
    fn shape(&self) -> String {
        let t0 = self
            .sessions
            .first()
            .map_or(0, |s| s["opened_ms"].as_i64().unwrap());
        let ms = |s: &Value, k: &str| s[k].as_i64().unwrap_or(0);
        self.sessions
            .iter()
            .map(|s| {
                format!(
                    "{:.1}+{:.1}s/{}",
                    (ms(s, "opened_ms") - t0) as f64 / 1000.0,
                    (ms(s, "closed_ms") - ms(s, "opened_ms")) as f64 / 1000.0,
                    s["fragments"]
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn lateness(&self) -> (i64, i64) {
        let mut l = self.lateness_ms.clone();
        l.sort_unstable();
        (l[l.len() / 2], *l.last().unwrap())
    }
}

/// Every fragment committed before the stop (but the last two seconds' worth) is at the
/// emulator exactly once; every fragment there is UPLOADED in the catalog with its number
/// (nothing will be sent again); every session ended with the END_OF_FRAGMENT tag after its
/// last cluster, and its body ended no sooner than its last acknowledgement.
fn check(index: &Value, snap: &Snapshot, stop_ms: i64) -> Report {
    let errors = index["errors"].as_array().unwrap();
    assert!(errors.is_empty(), "emulator errors: {errors:?}");
    let frags = index["fragments"].as_array().unwrap();
    let mut at_emulator: HashMap<i64, &Value> = HashMap::new();
    let mut lateness_ms = Vec::new();
    for f in frags {
        let tc = f["timecode"].as_i64().unwrap();
        assert!(
            at_emulator.insert(tc, f).is_none(),
            "fragment {tc} persisted twice"
        );
        lateness_ms.push(
            f["received_ms"].as_i64().unwrap()
                - f["producer_timestamp_ms"].as_i64().unwrap()
                - f["duration_ms"].as_i64().unwrap(),
        );
    }
    let catalog: HashMap<i64, &snapshot::Frag> =
        snap.frags.values().map(|f| (f.timecode_ms, f)).collect();
    for (tc, f) in &at_emulator {
        let row = catalog.get(tc).unwrap_or_else(|| {
            let mut known: Vec<i64> = catalog.keys().copied().collect();
            known.sort_unstable();
            panic!("{tc} at the emulator, not in the catalog: {known:?}")
        });
        assert_eq!(row.upload_state, "UPLOADED", "{tc}: {row:?}");
        assert_eq!(
            row.fragment_number.as_deref(),
            f["fragment_number"].as_str(),
            "{tc}"
        );
    }
    for f in catalog.values() {
        if f.timecode_ms + f.duration_ms < stop_ms - 2000 {
            assert!(
                at_emulator.contains_key(&f.timecode_ms),
                "{} committed before the stop, never persisted: {f:?}",
                f.timecode_ms
            );
        }
    }
    let sessions = index["session_log"].as_array().unwrap().clone();
    sessions.iter().for_each(assert_ended_after_last_ack);
    Report {
        fragments: frags.len(),
        sessions,
        lateness_ms,
    }
}

fn run_secs() -> u64 {
    std::env::var("UPLOAD_SESSIONS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_window_is_one_request_with_every_fragment_once_and_on_time() {
    let Some(rig) = Rig::new() else { return };
    let env = upload_env(&rig.emulator.url());
    let mut agent = rig.launch("", &env);
    let stop_ms = rig
        .run_for(&mut agent, Duration::from_secs(run_secs()))
        .await;
    let index = rig.index().await;
    let r = check(&index, &snapshot(&agent.catalog(), STREAM), stop_ms);
    let (median, max) = r.lateness();
    println!(
        "{} fragments in {} session(s); after its last frame a fragment reached the emulator in \
         {median} ms (median), {max} ms (max) plus its duration",
        r.fragments,
        r.sessions.len()
    );
    assert_eq!(index["requests"].as_array().unwrap().len(), 1, "{index}");
    assert_eq!(r.sessions.len(), 1);
    assert!(
        r.fragments as u64 >= run_secs() - 5,
        "{} fragments",
        r.fragments
    );
    assert!(
        max <= LATENCY_SLACK_MS,
        "a fragment came {max} ms after its duration: {:?}",
        r.lateness_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shortened_rotation_adds_one_request_per_rotation() {
    let Some(rig) = Rig::new() else { return };
    let env = upload_env(&rig.emulator.url());
    let mut agent = rig.launch("uploader:\n  max_session_secs: 20\n", &env);
    let stop_ms = rig.run_for(&mut agent, Duration::from_secs(70)).await;
    let index = rig.index().await;
    let r = check(&index, &snapshot(&agent.catalog(), STREAM), stop_ms);
    println!("sessions (start+length/fragments): {}", r.shape());
    let requests = index["requests"].as_array().unwrap();
    assert_eq!(requests.len(), r.sessions.len(), "{requests:?}");
    assert!(r.sessions.len() >= 4, "{:?}", r.sessions);
    // Each but the last ran its 20 s, then waited for its last acks; the next opened at once.
    for pair in r.sessions.windows(2) {
        let (opened, closed) = (
            pair[0]["opened_ms"].as_i64().unwrap(),
            pair[0]["closed_ms"].as_i64().unwrap(),
        );
        assert!(
            (19_500..=27_000).contains(&(closed - opened)),
            "a session of {} ms: {}",
            closed - opened,
            pair[0]
        );
        let next = pair[1]["opened_ms"].as_i64().unwrap();
        assert!(
            next - closed < 3000,
            "{} ms between sessions",
            next - closed
        );
        assert!(pair[0]["fragments"].as_i64().unwrap() >= 15, "{}", pair[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iot_credentials_of_a_minute_rotate_each_session_before_they_expire() {
    if !require("openssl", &["version"]) {
        return;
    }
    let Some(rig) = Rig::new() else { return };
    let pki = rig.dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_pki(&pki);
    let endpoint = IotEndpoint::start(&pki, &["--register", &rig.emulator.url()]);
    let file = |n: &str| pki.join(n).display().to_string();
    let credential_endpoint = format!("127.0.0.1:{}", endpoint.port);
    let env = env(&[
        ("AWS_REGION", REGION),
        ("AWS_ENDPOINT_URL_KINESIS_VIDEO", &rig.emulator.url()),
        ("AWS_IOT_CA_CERT", &file("ca.pem")),
        ("AWS_IOT_CORE_CERT", &file("device.pem")),
        ("AWS_IOT_CORE_PRIVATE_KEY", &file("device.key")),
        ("AWS_IOT_CORE_CREDENTIAL_ENDPOINT", &credential_endpoint),
        ("AWS_IOT_CORE_DATA_ATS_ENDPOINT", "127.0.0.1"),
        ("AWS_IOT_CORE_ROLE_ALIAS", "minute"),
        ("AWS_IOT_CORE_THING_NAME", THING),
    ]);
    let mut agent = rig.launch("", &env);
    let stop_ms = rig.run_for(&mut agent, Duration::from_secs(130)).await;
    let index = rig.index().await;
    let r = check(&index, &snapshot(&agent.catalog(), STREAM), stop_ms);
    println!("sessions (start+length/fragments): {}", r.shape());
    assert_eq!(index["expired_sessions"], 0, "{index}");
    let expiry: HashMap<String, i64> = endpoint.issued().into_iter().collect();
    assert!(r.sessions.len() >= 3, "{:?}", r.sessions);
    let mut keys = Vec::new();
    for s in &r.sessions {
        let key = s["access_key"].as_str().unwrap();
        let expires = expiry[key];
        let closed = s["closed_ms"].as_i64().unwrap();
        assert!(
            closed < expires,
            "closed {} ms after expiry: {s}",
            closed - expires
        );
        // Fresh credentials for each session, used for most of their minute.
        assert!(
            expires - s["opened_ms"].as_i64().unwrap() >= 30_000,
            "opened with less than 30 s left: {s}"
        );
        keys.push(key);
    }
    keys.dedup();
    assert_eq!(keys.len(), r.sessions.len(), "a key reused: {keys:?}");
    for pair in r.sessions.windows(2) {
        let gap = pair[1]["opened_ms"].as_i64().unwrap() - pair[0]["closed_ms"].as_i64().unwrap();
        assert!(gap < 3000, "{gap} ms without a session");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_credentials_with_an_expiry_end_their_session_before_it() {
    let Some(rig) = Rig::new() else { return };
    const KEY: &str = "AKIDENVEXPIRING";
    const SECRET: &str = "env/expiring/secret";
    let expires = jiff::Timestamp::from_second(now_ms() / 1000 + 60).unwrap();
    let expires_ms = expires.as_millisecond();
    rig.emulator
        .admin(
            "credentials",
            json!({"access_key": KEY, "secret_key": SECRET, "expires_ms": expires_ms}),
        )
        .await;
    let env = env(&[
        ("AWS_REGION", REGION),
        ("AWS_ENDPOINT_URL_KINESIS_VIDEO", &rig.emulator.url()),
        ("AWS_ACCESS_KEY_ID", KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_CREDENTIAL_EXPIRATION", &expires.to_string()),
    ]);
    let mut agent = rig.launch("", &env);
    let run = Duration::from_millis((expires_ms + 5000 - now_ms()).max(0) as u64);
    let stop_ms = rig.run_for(&mut agent, run).await;
    let index = rig.index().await;
    let snap = snapshot(&agent.catalog(), STREAM);
    // Nothing is sent after the credentials' end: only fragments of before it must be there.
    let r = check(&index, &snap, stop_ms.min(expires_ms - 5000));
    println!("sessions (start+length/fragments): {}", r.shape());
    assert_eq!(index["expired_sessions"], 0, "{index}");
    assert_eq!(r.sessions.len(), 1, "{:?}", r.sessions);
    let closed = r.sessions[0]["closed_ms"].as_i64().unwrap();
    assert!(
        closed < expires_ms,
        "closed {} ms after expiry",
        closed - expires_ms
    );
    assert!(r.fragments >= 30, "{} fragments", r.fragments);
    let log = agent.log();
    assert!(log.contains("a session needs at least 30 s"), "{log}");
}
