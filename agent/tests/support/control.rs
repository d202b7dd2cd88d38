//! The agent as the control-plane tests drive it: settings naming a secrets file that maps each
//! stream `cam-N` to the sample clip, `kvs-edge-agent ctl`, and an MQTT watcher that records
//! every message under the prefix.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::Notify;

use crate::agent::{Agent, THING};
use crate::bin::BIN;
use crate::net::free_port;
use crate::poll::wait_until_async;
use crate::sample::sample_clip;

pub const PREFIX: &str = "kvs-edge";

pub fn secret_arn(stream: &str) -> String {
    format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{stream}-uri")
}

impl Agent {
    /// Writes the settings (`yaml` is appended) and the secrets file (each stream `cam-N`
    /// maps to the sample clip; `extra_secrets` lines are appended), then starts the agent.
    pub fn launch(dir: &Path, yaml: &str, extra_secrets: &str) -> Agent {
        Self::launch_env(dir, yaml, extra_secrets, &[])
    }

    /// With extra environment variables.
    pub fn launch_env(dir: &Path, yaml: &str, extra_secrets: &str, env: &[(&str, &str)]) -> Agent {
        Self::launch_bin(dir, yaml, extra_secrets, env, Path::new(BIN), &[])
    }

    /// With another binary (the release build) and arguments for `run`.
    pub fn launch_bin(
        dir: &Path,
        yaml: &str,
        extra_secrets: &str,
        env: &[(&str, &str)],
        bin: &Path,
        args: &[&str],
    ) -> Agent {
        let secrets = dir.join("secrets.yaml");
        let mut s = String::new();
        for i in 0..20 {
            s.push_str(&format!(
                "{}: {}\n",
                secret_arn(&format!("cam-{i}")),
                sample_clip().display()
            ));
        }
        s.push_str(extra_secrets);
        std::fs::write(&secrets, s).unwrap();
        // A `yaml` naming its own secrets file keeps it.
        let own = if yaml.contains("secrets_file:") {
            String::new()
        } else {
            format!("secrets_file: {}\n", secrets.display())
        };
        let settings = format!(
            "{own}recorder:\n  min_fragment_duration_ms: 1000\n  segment_duration_secs: 10\n{yaml}"
        );
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut a = Agent::new(dir, &settings, &args, &env).inheriting_env(bin);
        a.start();
        a
    }

    /// Waits until the logs hold `needle` `count` times (bounded).
    pub async fn wait_log(&self, needle: &str, count: usize, limit: Duration) {
        let what = format!("{count}x {needle:?} in the agent log");
        wait_until_async(&what, limit, || {
            self.log_text().matches(needle).count() >= count
        })
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", self.log_text()));
    }

    /// The stream's segment files on disk.
    pub fn segment_files(&self, stream: &str) -> Vec<PathBuf> {
        crate::recording::segment_files(&self.rec, stream)
    }

    /// Fragments the catalog holds for the stream.
    pub fn fragment_count(&self, stream: &str) -> usize {
        let Ok(cat) = kvs_edge_agent::catalog::Catalog::open_read_only(&self.catalog()) else {
            return 0;
        };
        let Ok(segs) = cat.segments(Some(stream)) else {
            return 0;
        };
        segs.iter()
            .map(|s| cat.fragments(s.id).map(|f| f.len()).unwrap_or(0))
            .sum()
    }

    pub async fn wait_fragments(&self, stream: &str, at_least: usize, limit: Duration) {
        let what = format!("{at_least} fragments of {stream}");
        wait_until_async(&what, limit, || self.fragment_count(stream) >= at_least)
            .await
            .unwrap_or_else(|e| panic!("{e}; log:\n{}", self.log_text()));
    }
}

/// Runs `kvs-edge-agent ctl --broker URL ARGS...`.
pub async fn ctl(broker: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("ctl").args(args).arg("--broker").arg(broker);
    if !args.contains(&"--wait-seconds") {
        cmd.arg("--wait-seconds").arg("30");
    }
    cmd.output().await.expect("run ctl")
}

/// `ctl start-edge-configuration-update --cli-input-json REQ` (a `file://` URL).
pub async fn ctl_start(broker: &str, req: &str) -> Output {
    ctl(
        broker,
        &["start-edge-configuration-update", "--cli-input-json", req],
    )
    .await
}

pub fn stdout_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "ctl printed no JSON ({e}): status {:?}\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A StartEdgeConfigurationUpdate request for `stream` on THING with the sample clip.
pub fn start_request(stream: &str, extra_edge: &str) -> String {
    format!(
        r#"{{"StreamName":"{stream}","EdgeConfig":{{"HubDeviceArn":"arn:aws:iot:us-east-1:123456789012:thing/{THING}","RecorderConfig":{{"MediaSourceConfig":{{"MediaUriSecretArn":"{}","MediaUriType":"FILE_URI"}}}}{extra_edge}}}}}"#,
        secret_arn(stream)
    )
}

pub fn write_request(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    format!("file://{}", p.display())
}

#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.payload).ok()
    }

    pub fn sync_status(&self) -> Option<String> {
        self.json()?.get("SyncStatus")?.as_str().map(str::to_owned)
    }
}

/// Records every message under `{PREFIX}/#`; reconnects (and resubscribes) on its own.
pub struct Watcher {
    pub client: AsyncClient,
    msgs: Arc<Mutex<Vec<Msg>>>,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    pub async fn start(port: u16) -> Watcher {
        let mut o = MqttOptions::new(format!("watcher-{}", free_port()), "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut ev) = AsyncClient::new(o, 100);
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let notify = Arc::new(Notify::new());
        let subscribed = Arc::new(Notify::new());
        let (m, n, c, s) = (
            msgs.clone(),
            notify.clone(),
            client.clone(),
            subscribed.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe(format!("{PREFIX}/#"), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => s.notify_one(),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        m.lock().unwrap().push(Msg {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                        n.notify_waiters();
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
            .await
            .expect("watcher subscribed");
        Watcher {
            client,
            msgs,
            notify,
            task,
        }
    }

    pub fn all(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    pub fn on(&self, topic: &str) -> Vec<Msg> {
        self.all()
            .into_iter()
            .filter(|m| m.topic == topic)
            .collect()
    }

    /// Waits until `pred` holds over the messages so far (bounded).
    pub async fn wait(&self, what: &str, limit: Duration, pred: impl Fn(&[Msg]) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            if pred(&self.all()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                if pred(&self.all()) {
                    return;
                }
                let topics: Vec<String> = self
                    .all()
                    .iter()
                    .map(|m| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload)))
                    .collect();
                panic!(
                    "timed out waiting for {what}; messages:\n{}",
                    topics.join("\n")
                );
            }
        }
    }

    /// Publishes (retained, QoS 1).
    pub async fn publish(&self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload.to_vec())
            .await
            .unwrap();
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn reported(stream: &str) -> String {
    format!("{PREFIX}/{THING}/streams/{stream}/reported")
}

pub fn desired(stream: &str) -> String {
    format!("{PREFIX}/{THING}/streams/{stream}/desired")
}

pub fn agent_topic() -> String {
    format!("{PREFIX}/{THING}/agent")
}

/// The statuses seen on `topic`, in order.
pub fn statuses(msgs: &[Msg], topic: &str) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.topic == topic)
        .filter_map(Msg::sync_status)
        .collect()
}
