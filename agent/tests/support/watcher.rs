//! An MQTT client that records every message under the agent's topic prefix, and the topics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::Notify;

use crate::agent::THING;
use crate::net::free_port;

pub const PREFIX: &str = "kvs-edge";

#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    #[allow(dead_code, reason = "for some of the tests that watch MQTT only")]
    pub retain: bool,
}

impl Msg {
    #[allow(dead_code, reason = "for some of the tests that watch MQTT only")]
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.payload).ok()
    }

    #[allow(dead_code, reason = "for some of the tests that watch MQTT only")]
    pub fn sync_status(&self) -> Option<String> {
        self.json()?.get("SyncStatus")?.as_str().map(str::to_owned)
    }
}

/// Records every message under `{PREFIX}/#`; reconnects (and resubscribes) on its own.
pub struct Watcher {
    #[allow(dead_code, reason = "for some of the tests that watch MQTT only")]
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

    #[allow(dead_code, reason = "for some of the tests that watch MQTT only")]
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

    /// Waits until the agent has said something on its own topic (it is online).
    #[allow(dead_code, reason = "for some of the tests that watch MQTT only")]
    pub async fn agent_online(&self, limit: Duration) {
        self.wait("agent online", limit, |m| {
            m.iter().any(|m| m.topic == agent_topic())
        })
        .await;
    }

    /// Waits until `stream`'s reported state says its LastRecorderStatus is `status`.
    #[allow(dead_code, reason = "for some of the tests that watch MQTT only")]
    pub async fn recorder_status(&self, what: &str, stream: &str, status: &str, limit: Duration) {
        self.wait(what, limit, |m| {
            m.iter().any(|m| {
                m.topic == reported(stream)
                    && m.json().is_some_and(|j| {
                        j["EdgeAgentStatus"]["LastRecorderStatus"]["RecorderStatus"] == status
                    })
            })
        })
        .await;
    }

    /// Publishes (retained, QoS 1).
    #[allow(dead_code, reason = "for some of the tests that watch MQTT only")]
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

#[allow(dead_code, reason = "for some of the tests that watch MQTT only")]
pub fn reported(stream: &str) -> String {
    format!("{PREFIX}/{THING}/streams/{stream}/reported")
}

#[allow(dead_code, reason = "for some of the tests that watch MQTT only")]
pub fn desired(stream: &str) -> String {
    format!("{PREFIX}/{THING}/streams/{stream}/desired")
}

#[allow(dead_code, reason = "for some of the tests that watch MQTT only")]
pub fn agent_topic() -> String {
    format!("{PREFIX}/{THING}/agent")
}

/// The statuses seen on `topic`, in order.
#[allow(dead_code, reason = "for some of the tests that watch MQTT only")]
pub fn statuses(msgs: &[Msg], topic: &str) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.topic == topic)
        .filter_map(Msg::sync_status)
        .collect()
}
