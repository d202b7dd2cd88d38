//! The operator's side of the protocol, used by `kvs-edge-agent ctl`: a short-lived
//! clean-session connection that reads retained `reported` topics, publishes `desired`, and
//! waits (bounded) for the agent's answer.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use tokio::time::Instant;

use super::mqtt::{BrokerError, BrokerOptions};

/// Why a `ctl` exchange with the broker failed. URLs here are redacted already.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Options(#[from] BrokerError),
    #[error("cannot connect to the MQTT broker {url}: {source}")]
    Connect {
        url: String,
        source: rumqttc::ConnectionError,
    },
    #[error("no answer from the MQTT broker {url} within {timeout:?}")]
    NoAnswer { url: String, timeout: Duration },
    /// The client's request queue is closed.
    #[error(transparent)]
    Request(#[from] rumqttc::ClientError),
    #[error("the broker did not confirm the subscription to {0}")]
    NotSubscribed(String),
    #[error("the broker did not acknowledge the publish")]
    NotAcknowledged,
    #[error("MQTT connection lost: {0}")]
    Lost(rumqttc::ConnectionError),
}

/// One received message.
#[derive(Clone, Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    /// Delivered from the broker's retained store (old state), not a live publish.
    pub retained: bool,
}

pub struct Session {
    pub client: AsyncClient,
    eventloop: EventLoop,
}

impl Session {
    /// Connects (clean session, a random client id), bounded by `timeout`.
    pub async fn connect(
        broker: &BrokerOptions,
        timeout: Duration,
    ) -> Result<Session, SessionError> {
        let mut b = broker.clone();
        if b.client_id.is_empty() {
            let mut r = [0u8; 6];
            let _ = getrandom::fill(&mut r);
            b.client_id = format!(
                "kvs-edge-ctl-{}",
                r.iter().map(|x| format!("{x:02x}")).collect::<String>()
            );
        }
        b.clean_session = true;
        let options = b.mqtt_options()?;
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let connected = tokio::time::timeout(timeout, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        match connected {
            Ok(Ok(())) => Ok(Session { client, eventloop }),
            Ok(Err(source)) => Err(SessionError::Connect {
                url: super::mqtt::redact(&broker.url),
                source,
            }),
            Err(_) => Err(SessionError::NoAnswer {
                url: super::mqtt::redact(&broker.url),
                timeout,
            }),
        }
    }

    /// Subscribes and waits for the SubAck (bounded); messages arriving meanwhile are kept.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        timeout: Duration,
    ) -> Result<Vec<Message>, SessionError> {
        self.client.subscribe(filter, QoS::AtLeastOnce).await?;
        let deadline = Instant::now() + timeout;
        let mut early = Vec::new();
        loop {
            match self.next_until(deadline).await? {
                Some(Step::SubAck) => return Ok(early),
                Some(Step::Message(m)) => early.push(m),
                Some(Step::Other) => {}
                None => return Err(SessionError::NotSubscribed(filter.to_owned())),
            }
        }
    }

    /// The next message, or `None` at `deadline`.
    pub async fn next_message(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<Message>, SessionError> {
        loop {
            match self.next_until(deadline).await? {
                Some(Step::Message(m)) => return Ok(Some(m)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    async fn next_until(&mut self, deadline: Instant) -> Result<Option<Step>, SessionError> {
        match tokio::time::timeout_at(deadline, self.eventloop.poll()).await {
            Err(_) => Ok(None),
            Ok(Err(e)) => Err(SessionError::Lost(e)),
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => Ok(Some(Step::SubAck)),
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => Ok(Some(Step::Message(Message {
                topic: p.topic,
                payload: p.payload,
                retained: p.retain,
            }))),
            Ok(Ok(_)) => Ok(Some(Step::Other)),
        }
    }

    /// Every retained message on `filter`: those that arrive before a `quiet` pause after the
    /// subscription is confirmed, at most until `max` has passed.
    pub async fn retained(
        &mut self,
        filter: &str,
        quiet: Duration,
        max: Duration,
    ) -> Result<Vec<Message>, SessionError> {
        let end = Instant::now() + max;
        let mut out: Vec<Message> = self
            .subscribe(filter, max)
            .await?
            .into_iter()
            .filter(|m| m.retained)
            .collect();
        loop {
            let deadline = (Instant::now() + quiet).min(end);
            match self.next_message(deadline).await? {
                Some(m) if m.retained => out.push(m),
                Some(_) => {}
                None => return Ok(out),
            }
        }
    }

    /// Publishes retained (QoS 1) and waits until the broker acknowledged it, bounded.
    pub async fn publish_retained(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        timeout: Duration,
        seen: &mut Vec<Message>,
    ) -> Result<(), SessionError> {
        self.publish(topic, payload, true, timeout, seen).await
    }

    /// Publishes (QoS 1) and waits until the broker acknowledged it, bounded; messages that
    /// arrive meanwhile go to `seen`.
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
        timeout: Duration,
        seen: &mut Vec<Message>,
    ) -> Result<(), SessionError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await?;
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.eventloop.poll()).await {
                Err(_) => return Err(SessionError::NotAcknowledged),
                Ok(Err(e)) => return Err(SessionError::Lost(e)),
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => return Ok(()),
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => seen.push(Message {
                    topic: p.topic,
                    payload: p.payload,
                    retained: p.retain,
                }),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Disconnects politely (bounded).
    pub async fn close(mut self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while self.eventloop.poll().await.is_ok() {}
        })
        .await;
    }
}

enum Step {
    SubAck,
    Message(Message),
    Other,
}
