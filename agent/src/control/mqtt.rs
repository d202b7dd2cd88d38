//! The agent's MQTT connection (rumqttc 0.25, MQTT 3.1.1).
//!
//! rumqttc's traps, handled here: the event loop is polled all the time by its own task (a
//! publisher never waits on it); after an error the next poll reconnects at once, so the poll
//! task backs off (0.5 s doubling to 15 s); the session is persistent (`clean_session` false)
//! and the subscription is renewed on every ConnAck anyway, because a broker that lost the
//! session (restarted without persistence) would otherwise leave the agent deaf. Every
//! ConnAck also republishes the agent status and every stream's `reported`, so state
//! reconverges after an outage. Publishes use `try_publish` on a large request channel and are
//! never awaited: a full channel during an outage drops a publish, which the republish after
//! the reconnect covers.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::AgentStatus;
use super::desired::{Desired, parse_desired};
use super::topics::{Kind, StreamTopic, Topics};
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::edge_config::{ApiTimestamp, DescribeEdgeConfigurationResponse};
use crate::input::quote;
use crate::stop::{self, Stop};
use crate::supervisor::requests::{Answer, RequestTopic, upload_status};
use crate::supervisor::{StreamEvent, Supervisor, Ticket};
use crate::ticker::Ticker;

/// Where and how to connect.
#[derive(Clone, Debug, Default)]
pub struct BrokerOptions {
    /// `mqtt://host[:port]` (or `tcp://`), `mqtts://host[:port]` (or `ssl://`); user and
    /// password may be given in the URL.
    pub url: String,
    /// CA certificate (PEM) for `mqtts`; default: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS (AWS IoT Core).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_id: String,
    pub clean_session: bool,
    pub keep_alive: Duration,
}

/// The largest packet either side accepts. A `desired` above the 64 KiB limit must still arrive,
/// to be refused with a clear status; one above this makes rumqttc drop the connection (and a
/// retained one would do so at every reconnect), so it is generous.
pub const MAX_PACKET_BYTES: usize = 16 << 20;

/// Why broker options cannot make a connection. URLs here are redacted already.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker URL {}: {source}", quote(url))]
    Url {
        url: String,
        source: url::ParseError,
    },
    #[error(
        "broker URL {}: scheme {} is not mqtt, tcp, mqtts or ssl",
        quote(url),
        quote(scheme)
    )]
    Scheme { url: String, scheme: String },
    #[error("broker URL {} has no host", quote(url))]
    NoHost { url: String },
    #[error(transparent)]
    TlsFile(#[from] crate::input::ReadError),
    #[error("a client certificate needs its key, and a key its certificate")]
    HalfClientAuth,
    #[error("mutual TLS needs the CA certificate (--ca-file)")]
    NoCaFile,
    #[error("TLS files given for a plain mqtt:// broker URL; use mqtts://")]
    TlsFilesWithoutTls,
}

impl BrokerOptions {
    pub fn mqtt_options(&self) -> Result<MqttOptions, BrokerError> {
        let url = url::Url::parse(&self.url).map_err(|source| BrokerError::Url {
            url: redact(&self.url),
            source,
        })?;
        let tls = match url.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(BrokerError::Scheme {
                    url: redact(&self.url),
                    scheme: other.to_owned(),
                });
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| BrokerError::NoHost {
                url: redact(&self.url),
            })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
        let mut o = MqttOptions::new(self.client_id.clone(), host, port);
        // rumqttc panics on a persistent session without a client id.
        o.set_clean_session(self.clean_session || self.client_id.is_empty());
        o.set_keep_alive(if self.keep_alive.is_zero() {
            Duration::from_secs(30)
        } else {
            self.keep_alive
        });
        o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        if !url.username().is_empty() {
            o.set_credentials(url.username(), url.password().unwrap_or(""));
        }
        if tls {
            let read = |p: &PathBuf| {
                crate::input::read_regular_file(
                    p,
                    crate::aws::iot_credentials::MAX_PEM_BYTES,
                    "the TLS file",
                )
            };
            let client_auth = match (&self.cert_file, &self.key_file) {
                (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                (None, None) => None,
                _ => return Err(BrokerError::HalfClientAuth),
            };
            // AWS IoT Core serves MQTT on 443 only to clients that ask for it by ALPN.
            let alpn = (port == 443).then(|| vec![IOT_CORE_ALPN.as_bytes().to_vec()]);
            match &self.ca_file {
                Some(ca) => o.set_transport(Transport::tls(read(ca)?, client_auth, alpn)),
                None if client_auth.is_none() => {
                    o.set_transport(Transport::tls_with_default_config())
                }
                None => return Err(BrokerError::NoCaFile),
            };
        } else if self.cert_file.is_some() || self.ca_file.is_some() {
            return Err(BrokerError::TlsFilesWithoutTls);
        }
        Ok(o)
    }
}

/// The ALPN protocol AWS IoT Core requires for MQTT with client certificates on port 443.
pub const IOT_CORE_ALPN: &str = "x-amzn-mqtt-ca";

/// The URL with any password hidden.
pub fn redact(url: &str) -> String {
    crate::input::redact_url(url)
}

/// The agent's side of the protocol.
pub struct ControlConfig {
    pub broker: BrokerOptions,
    pub topics: Topics,
    pub start_time: ApiTimestamp,
    /// What the reconnect waits and the status refresh are measured on.
    pub clock: Arc<dyn Clock>,
}

enum Conn {
    Up,
    Down,
}

/// How often job status the catalog gained without an event is published.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// Topics warned about as unusable, kept so each is warned about once; a flood of distinct
/// ones is then only logged at debug level.
const MAX_IGNORED_TOPICS: usize = 1000;

/// Between reconnects: a broker back after a restart is found quickly, one that stays away is
/// not hammered.
const RECONNECT: Backoff = Backoff {
    min: Duration::from_millis(500),
    max: Duration::from_secs(15),
    jitter: 0.0,
};

/// A stream's `desired` topic: (thing, stream).
type StreamKey = (String, String);

/// A received `desired` publish: topic, payload, live, arrival number.
type Request = (StreamTopic, bytes::Bytes, bool, u64);

/// What arrived last on each `desired` topic. The agent clears a stream's `desired` after
/// carrying out a delete; a request that arrived after the delete (an apply queued behind it,
/// now the retained payload) must not be wiped by that clear. One that reached the broker just
/// before the clear but the agent just after it was wiped: the broker delivers in its order, so
/// it is the one received between sending the clear and the clear coming back, and the agent
/// publishes it again (retained).
#[derive(Default)]
struct Arrivals {
    next: u64,
    /// The arrival number of the last publish received on each topic.
    last: HashMap<StreamKey, u64>,
    /// The arrival number of the delete last handed to the supervisor for each topic.
    deleting: HashMap<StreamKey, u64>,
    /// Topics whose clear was sent and has not come back yet.
    clearing: BTreeSet<StreamKey>,
    /// Requests published again after the clear wiped them, until they come back.
    restoring: HashMap<StreamKey, bytes::Bytes>,
}

/// A received `desired` publish, numbered.
#[derive(Debug, PartialEq, Eq)]
struct Arrival {
    seq: u64,
    /// A live publish (always applies); the agent's own republish of a request it already
    /// handed on is not.
    live: bool,
    /// The agent's clear wiped this request at the broker: publish it again.
    restore: bool,
}

type SharedArrivals = std::sync::Arc<std::sync::Mutex<Arrivals>>;

fn lock(a: &SharedArrivals) -> std::sync::MutexGuard<'_, Arrivals> {
    // Plain counters: a panic elsewhere leaves them usable.
    a.lock().unwrap_or_else(|p| p.into_inner())
}

impl Arrivals {
    fn received(&mut self, t: &StreamTopic, payload: &[u8], live: bool) -> Arrival {
        let key = (t.thing.clone(), t.stream.clone());
        self.next += 1;
        let seq = self.next;
        self.last.insert(key.clone(), seq);
        if self.restoring.get(&key).is_some_and(|p| p == payload) {
            self.restoring.remove(&key);
            return Arrival {
                seq,
                live: false,
                restore: false,
            };
        }
        let restore = self.clearing.remove(&key) && !payload.is_empty();
        if restore {
            self.restoring
                .insert(key, bytes::Bytes::copy_from_slice(payload));
        }
        Arrival { seq, live, restore }
    }

    /// Whether something arrived on the topic after the delete being carried out (or, with no
    /// delete, at all): then `desired` holds a newer request and stays.
    fn superseded(&self, key: &StreamKey) -> bool {
        self.last.get(key).copied().unwrap_or(0) > self.deleting.get(key).copied().unwrap_or(0)
    }
}

/// Where the poll task hands what it receives.
struct Inbox {
    /// Numbers each `desired` publish.
    arrivals: SharedArrivals,
    desired: mpsc::UnboundedSender<Request>,
    /// Upload and live requests.
    uploads: mpsc::UnboundedSender<(StreamTopic, bytes::Bytes)>,
    conn: mpsc::UnboundedSender<Conn>,
}

/// Polls the event loop for ever (until `done`), with [`RECONNECT`] waits on `clock` after
/// errors. Incoming `desired` publishes and connection changes go to `inbox`.
async fn poll(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Topics,
    inbox: Inbox,
    clock: Arc<dyn Clock>,
    mut done: Stop,
) {
    let mut retry = RECONNECT.start();
    let mut up = false;
    let mut warned = false;
    // After our own DISCONNECT the broker closes the socket: that is the end, not a loss.
    let mut leaving = false;
    let mut ignored = HashSet::new();
    loop {
        let ev = tokio::select! {
            ev = eventloop.poll() => ev,
            () = done.stopped() => return,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                info!(
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
                retry.reset();
                up = true;
                warned = false;
                let _ = inbox.conn.send(Conn::Up);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => match topics.parse(&p.topic) {
                Some(t) if t.kind == Kind::Desired => {
                    let a = lock(&inbox.arrivals).received(&t, &p.payload, !p.retain);
                    if a.restore {
                        info!(topic = %p.topic, "publishing again a request the deletion's clear wiped");
                        if let Err(e) =
                            client.try_publish(p.topic, QoS::AtLeastOnce, true, p.payload.clone())
                        {
                            warn!(error = %e, "cannot publish the request again");
                        }
                    }
                    let _ = inbox.desired.send((t, p.payload, a.live, a.seq));
                }
                Some(t) if matches!(t.kind, Kind::Uploads | Kind::Live) => {
                    if p.retain {
                        // Replayed at every subscription: it would be taken again each time.
                        warn!(topic = %p.topic, "ignoring a retained upload request; publish requests without the retain flag");
                    } else {
                        let _ = inbox.uploads.send((t, p.payload));
                    }
                }
                // Only `desired` topics are subscribed to: one that does not parse names a
                // thing or stream outside [a-zA-Z0-9_.-]+ (non-ASCII, say), and its sender
                // waits for an answer that never comes, so say so (once per topic).
                _ if ignored.len() < MAX_IGNORED_TOPICS && ignored.insert(p.topic.clone()) => {
                    warn!(
                        topic = %quote(&p.topic),
                        "ignoring a request whose topic's thing or stream name is not \
                         [a-zA-Z0-9_.-]+"
                    )
                }
                _ => debug!(topic = %quote(&p.topic), "ignoring a publish on an unknown topic"),
            },
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                debug!("disconnect sent");
                leaving = true;
            }
            Ok(_) => {}
            Err(e) if leaving => {
                debug!(error = %e, "disconnected");
                return;
            }
            Err(e) => {
                if up {
                    warn!(error = %e, "MQTT connection lost; reconnecting");
                    let _ = inbox.conn.send(Conn::Down);
                    up = false;
                } else if !warned {
                    warn!(error = %e, "cannot reach the MQTT broker; retrying (recording goes on)");
                    warned = true;
                } else {
                    debug!(error = %e, "MQTT connection failed");
                }
                if done.sleep_or_stop(clock.as_ref(), retry.next_delay()).await {
                    return;
                }
            }
        }
    }
}

fn agent_payload(cfg: &ControlConfig, online: bool, streams: Option<usize>) -> Vec<u8> {
    serde_json::to_vec(&AgentStatus {
        status: if online { "online" } else { "offline" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        start_time: cfg.start_time,
        stream_count: streams,
    })
    .expect("agent status serialises")
}

struct Publisher<'a> {
    client: AsyncClient,
    cfg: &'a ControlConfig,
    supervisor: &'a Supervisor,
    last_count: Option<usize>,
    /// Streams whose topics were cleared since the last connect (resent after a reconnect).
    cleared: BTreeSet<(String, String)>,
    /// The stored state last published per stream, to publish what jobs changed since (the
    /// uploader and janitor write their status to the catalog only).
    last_stored: HashMap<String, DescribeEdgeConfigurationResponse>,
    arrivals: SharedArrivals,
    /// Per stream, the upload status last published: its requests part, its backlog part and
    /// when (monotonic), since the backlog changes with every fragment recorded.
    last_upload_status: HashMap<String, (String, String, Duration)>,
}

/// A changed backlog alone republishes the upload status at most this often.
const BACKLOG_STATUS_EVERY: Duration = Duration::from_secs(60);

impl Publisher<'_> {
    /// Publishes retained; false when the publish was dropped.
    fn publish(&self, topic: String, payload: Vec<u8>) -> bool {
        match self
            .client
            .try_publish(topic.clone(), QoS::AtLeastOnce, true, payload)
        {
            Ok(()) => true,
            Err(e) => {
                debug!(topic, error = %e, "publish dropped; it is resent after the next connect");
                false
            }
        }
    }

    fn agent_status(&mut self, force: bool) {
        let count = self.supervisor.catalog().config_count().ok();
        if force || count != self.last_count {
            self.last_count = count;
            self.publish(
                self.cfg.topics.agent(),
                agent_payload(self.cfg, true, count),
            );
        }
    }

    /// Publishes the stream's stored state; with `only_changed`, only when it differs from the
    /// last one published.
    fn stream(&mut self, stream: &str, only_changed: bool) {
        match self.supervisor.catalog().describe(stream) {
            Ok(Some(d)) => {
                if only_changed && self.last_stored.get(stream) == Some(&d) {
                    return;
                }
                self.stored(stream, d);
            }
            Ok(None) => {}
            Err(e) => warn!(stream, error = %e, "cannot read the stream's state"),
        }
    }

    fn stored(&mut self, stream: &str, d: DescribeEdgeConfigurationResponse) {
        let thing = d
            .edge_config
            .as_ref()
            .map(|c| c.thing())
            .unwrap_or_default();
        let payload = serde_json::to_vec(&d).expect("response serialises");
        self.publish(self.cfg.topics.reported(&thing, stream), payload);
        self.last_stored.insert(stream.to_owned(), d);
    }

    /// Publishes what changed in the catalog without an event (uploader, janitor status,
    /// upload requests).
    fn refresh(&mut self) {
        if let Ok(configs) = self.supervisor.catalog().configs() {
            for c in configs {
                self.stream(c.stream_name(), true);
                self.upload_status(&c.request.edge_config.thing(), c.stream_name(), false);
            }
        }
    }

    /// Publishes the stream's upload status (retained) when its requests changed, or its
    /// backlog changed and the last one is [`BACKLOG_STATUS_EVERY`] old; `force`: anyway.
    fn upload_status(&mut self, thing: &str, stream: &str, force: bool) {
        let status = match upload_status(self.supervisor.catalog(), stream) {
            Ok(s) => s,
            Err(e) => {
                warn!(stream, error = %e, "cannot read the stream's upload status");
                return;
            }
        };
        let requests =
            serde_json::to_string(&(&status.live, &status.requests)).expect("status serialises");
        let backlog = serde_json::to_string(&status.backlog).expect("status serialises");
        let now = self.cfg.clock.monotonic();
        let due = match self.last_upload_status.get(stream) {
            None => true,
            Some((r, b, at)) => {
                force
                    || *r != requests
                    || (*b != backlog && now.saturating_sub(*at) >= BACKLOG_STATUS_EVERY)
            }
        };
        if !due {
            return;
        }
        let payload = serde_json::to_vec(&status).expect("status serialises");
        let topic = self.cfg.topics.stream(thing, stream, Kind::UploadStatus);
        if self.publish(topic, payload) {
            self.last_upload_status
                .insert(stream.to_owned(), (requests, backlog, now));
        }
    }

    /// Publishes the answer to a request (not retained: it is for whoever is waiting), then
    /// the stream's upload status.
    fn answer(&mut self, thing: &str, stream: &str, answer: &Answer) {
        let topic = self.cfg.topics.stream(thing, stream, Kind::UploadAnswers);
        let payload = serde_json::to_vec(answer).expect("answer serialises");
        if let Err(e) = self
            .client
            .try_publish(topic.clone(), QoS::AtLeastOnce, false, payload)
        {
            warn!(topic, error = %e, "cannot publish the answer to an upload request");
        }
        if self
            .supervisor
            .catalog()
            .config(stream)
            .ok()
            .flatten()
            .is_some()
        {
            self.upload_status(thing, stream, false);
        }
    }

    fn on_event(&mut self, e: StreamEvent) {
        match e {
            StreamEvent::Changed { stream } => {
                self.stream(&stream, false);
                self.agent_status(false);
            }
            StreamEvent::Stored {
                stream, response, ..
            } => {
                self.stored(&stream, *response);
                self.agent_status(false);
            }
            StreamEvent::State {
                thing,
                stream,
                response,
            } => {
                let payload = serde_json::to_vec(&response).expect("response serialises");
                self.publish(self.cfg.topics.reported(&thing, &stream), payload);
                self.agent_status(false);
            }
            StreamEvent::Removed { thing, stream } => {
                self.publish(self.cfg.topics.reported(&thing, &stream), Vec::new());
                self.publish(
                    self.cfg.topics.stream(&thing, &stream, Kind::UploadStatus),
                    Vec::new(),
                );
                self.last_stored.remove(&stream);
                self.last_upload_status.remove(&stream);
                let key = (thing, stream);
                self.clear_desired(&key);
                self.cleared.insert(key);
                self.agent_status(false);
            }
        }
    }

    /// Clears a deleted stream's `desired`, unless a request arrived after the delete.
    fn clear_desired(&self, key: &StreamKey) {
        let (thing, stream) = key;
        let mut arrivals = lock(&self.arrivals);
        if arrivals.superseded(key) {
            info!(
                thing,
                stream, "desired kept: a request arrived after the deletion"
            );
            return;
        }
        if self.publish(self.cfg.topics.desired(thing, stream), Vec::new()) {
            arrivals.clearing.insert(key.clone());
        }
    }

    fn on_connect(&mut self) {
        let [uploads, live] = self.cfg.topics.request_filters();
        for filter in [self.cfg.topics.desired_filter(), uploads, live] {
            if let Err(e) = self.client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                warn!(filter, error = %e, "cannot subscribe");
            }
        }
        self.agent_status(true);
        for key in std::mem::take(&mut self.cleared) {
            let (thing, stream) = &key;
            self.publish(self.cfg.topics.reported(thing, stream), Vec::new());
            self.clear_desired(&key);
        }
        match self.supervisor.catalog().configs() {
            Ok(configs) => {
                for c in configs {
                    self.stream(c.stream_name(), false);
                    self.upload_status(&c.request.edge_config.thing(), c.stream_name(), true);
                }
            }
            Err(e) => warn!(error = %e, "cannot read the stored configurations"),
        }
    }
}

/// Hands `desired` requests to the supervisor: one stream's one at a time, in arrival order;
/// different streams' side by side, so one stream's slow apply (a secret store that does not
/// answer) holds up no other stream. Each stream's requests go through a lane task
/// ([`stream_lane`]) that ends when it has nothing queued.
async fn apply_requests(
    supervisor: Supervisor,
    arrivals: SharedArrivals,
    mut rx: mpsc::UnboundedReceiver<Request>,
) {
    type Lane = (mpsc::UnboundedSender<Turn>, tokio::task::JoinHandle<()>);
    let mut lanes: HashMap<(String, String), Lane> = HashMap::new();
    while let Some(request) = rx.recv().await {
        let key = (request.0.thing.clone(), request.0.stream.clone());
        // Taken here, in arrival order, so `max_streams` refuses the last to arrive.
        let request = (request, supervisor.ticket(&key.1));
        let request = match lanes.get(&key) {
            Some((tx, _)) => match tx.send(request) {
                Ok(()) => continue,
                // The lane closed itself (it had nothing queued): a new one takes over.
                Err(mpsc::error::SendError(r)) => r,
            },
            None => request,
        };
        let before = lanes.remove(&key).map(|(_, task)| task);
        let (tx, lane_rx) = mpsc::unbounded_channel();
        let _ = tx.send(request);
        let task = tokio::spawn(stream_lane(
            supervisor.clone(),
            arrivals.clone(),
            before,
            lane_rx,
        ));
        lanes.insert(key, (tx, task));
        lanes.retain(|_, (_, task)| !task.is_finished());
    }
}

/// One stream's requests, in order, after the lane it took over from (`before`) has finished
/// what it had queued. Each is handled in a task of its own: a panic (the release profile
/// unwinds) fails that request with SYNC_FAILED rather than leaving the stream deaf.
async fn stream_lane(
    supervisor: Supervisor,
    arrivals: SharedArrivals,
    before: Option<tokio::task::JoinHandle<()>>,
    mut rx: mpsc::UnboundedReceiver<Turn>,
) {
    if let Some(before) = before {
        let _ = before.await;
    }
    loop {
        let request = match rx.try_recv() {
            Ok(r) => r,
            Err(_) => {
                // Closed first, then drained: a request sent meanwhile is either received
                // here or refused to the sender, never lost.
                rx.close();
                match rx.try_recv() {
                    Ok(r) => r,
                    Err(_) => return,
                }
            }
        };
        let (thing, stream) = (request.0.0.thing.clone(), request.0.0.stream.clone());
        let handled = tokio::spawn(handle_request(
            supervisor.clone(),
            arrivals.clone(),
            request,
        ))
        .await;
        if let Err(e) = handled {
            warn!(stream, error = %e, "handling a desired request crashed");
            supervisor
                .reject(
                    &thing,
                    &stream,
                    "internal error: the agent failed while handling this request, which was \
                     not applied (its log says why)",
                )
                .await;
        }
    }
}

/// A request and its place in the arrival order.
type Turn = (Request, Ticket);

/// Takes upload and live requests one at a time (each is one catalog write) and hands each
/// answer to the publisher.
async fn take_upload_requests(
    supervisor: Supervisor,
    mut rx: mpsc::UnboundedReceiver<(StreamTopic, bytes::Bytes)>,
    answers: mpsc::UnboundedSender<(StreamTopic, Answer)>,
) {
    while let Some((topic, payload)) = rx.recv().await {
        let kind = if topic.kind == Kind::Live {
            RequestTopic::Live
        } else {
            RequestTopic::Uploads
        };
        let answer = supervisor
            .upload_request(&topic.thing, &topic.stream, kind, &payload)
            .await;
        let _ = answers.send((topic, answer));
    }
}

async fn handle_request(supervisor: Supervisor, arrivals: SharedArrivals, turn: Turn) {
    let ((topic, payload, live, seq), ticket) = turn;
    crate::supervisor::fault::job_started("apply", &topic.stream);
    match parse_desired(&topic, &payload) {
        Ok(Desired::Start(request)) => {
            info!(stream = %topic.stream, live, "edge configuration received");
            supervisor
                .apply_in_turn(ticket, &topic.thing, *request, live)
                .await;
        }
        Ok(Desired::Delete) => {
            info!(stream = %topic.stream, live, "edge configuration deletion received");
            lock(&arrivals)
                .deleting
                .insert((topic.thing.clone(), topic.stream.clone()), seq);
            supervisor.delete(&topic.thing, &topic.stream).await;
        }
        Ok(Desired::Cleared) => {}
        Err(details) => {
            supervisor
                .reject(&topic.thing, &topic.stream, &details.to_string())
                .await;
        }
    }
}

/// Runs the control plane until `shutdown` becomes true; then publishes `offline` and
/// disconnects (bounded to about 2 s).
pub async fn run(
    cfg: ControlConfig,
    supervisor: Supervisor,
    mut events: mpsc::UnboundedReceiver<StreamEvent>,
    mut shutdown: Stop,
) -> Result<(), BrokerError> {
    crate::supervisor::fault::job_started("control", "agent");
    let mut options = cfg.broker.mqtt_options()?;
    options.set_last_will(LastWill::new(
        cfg.topics.agent(),
        agent_payload(&cfg, false, None),
        QoS::AtLeastOnce,
        true,
    ));
    info!(
        broker = %redact(&cfg.broker.url),
        subscribe = %cfg.topics.desired_filter(),
        "control plane starting"
    );
    let (client, eventloop) = AsyncClient::new(options, 4096);
    let (desired_tx, desired_rx) = mpsc::unbounded_channel();
    let (uploads_tx, uploads_rx) = mpsc::unbounded_channel();
    let (answers_tx, mut answers_rx) = mpsc::unbounded_channel();
    let (conn_tx, mut conn_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = stop::channel();
    let arrivals = SharedArrivals::default();
    let poller = tokio::spawn(poll(
        eventloop,
        client.clone(),
        cfg.topics.clone(),
        Inbox {
            arrivals: arrivals.clone(),
            desired: desired_tx,
            uploads: uploads_tx,
            conn: conn_tx,
        },
        cfg.clock.clone(),
        done_rx,
    ));
    let applier = tokio::spawn(apply_requests(
        supervisor.clone(),
        arrivals.clone(),
        desired_rx,
    ));
    let taker = tokio::spawn(take_upload_requests(
        supervisor.clone(),
        uploads_rx,
        answers_tx,
    ));
    let mut p = Publisher {
        client: client.clone(),
        cfg: &cfg,
        supervisor: &supervisor,
        last_count: None,
        cleared: BTreeSet::new(),
        last_stored: HashMap::new(),
        arrivals,
        last_upload_status: HashMap::new(),
    };
    let mut connected = false;
    let link = supervisor.stats().mqtt.clone();
    link.set(false);
    let mut refresh = Ticker::new(cfg.clock.clone(), REFRESH_EVERY);
    loop {
        tokio::select! {
            () = refresh.tick() => p.refresh(),
            c = conn_rx.recv() => match c {
                Some(Conn::Up) => { connected = true; link.set(true); p.on_connect(); }
                Some(Conn::Down) => { connected = false; link.set(false); }
                None => break,
            },
            e = events.recv() => match e {
                Some(e) => p.on_event(e),
                None => break,
            },
            Some((t, answer)) = answers_rx.recv() => p.answer(&t.thing, &t.stream, &answer),
            () = shutdown.stopped() => break,
        }
    }
    applier.abort();
    taker.abort();
    // Whatever the jobs reported while stopping, then offline.
    while let Ok(e) = events.try_recv() {
        p.on_event(e);
    }
    if connected {
        let _ = client.try_publish(
            cfg.topics.agent(),
            QoS::AtLeastOnce,
            true,
            agent_payload(&cfg, false, p.supervisor.catalog().config_count().ok()),
        );
        let _ = client.try_disconnect();
        // The poll task sends both; give it a moment, bounded.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while !poller.is_finished() {
                cfg.clock.sleep(Duration::from_millis(20)).await;
                // The poll loop ends on the error that follows the disconnect.
                if conn_rx.try_recv().is_ok() {
                    break;
                }
            }
        })
        .await;
    }
    done_tx.stop();
    let _ = tokio::time::timeout(Duration::from_secs(1), poller).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order the broker delivers in decides: a request received after the agent sent its
    /// clear and before the clear came back reached the broker first and was wiped, so it is
    /// published again, once, and that copy coming back is not a live publish (which would
    /// restart the jobs it just started).
    #[test]
    fn a_request_the_clear_wiped_is_published_again_once() {
        let t = StreamTopic {
            thing: "hub-1".into(),
            stream: "cam".into(),
            kind: Kind::Desired,
        };
        let key = (t.thing.clone(), t.stream.clone());
        let mut a = Arrivals::default();
        let delete = a.received(&t, br#"{"StreamName":"cam"}"#, true);
        a.deleting.insert(key.clone(), delete.seq);
        assert!(!a.superseded(&key));
        a.clearing.insert(key.clone());
        let apply = a.received(&t, b"{apply}", true);
        assert!(apply.live && apply.restore, "{apply:?}");
        assert!(a.superseded(&key));
        let echo = a.received(&t, b"", false);
        assert!(!echo.restore);
        let again = a.received(&t, b"{apply}", true);
        assert!(!again.live && !again.restore, "{again:?}");
        // Later resends are the operator's: live, nothing to restore.
        let resend = a.received(&t, b"{apply}", true);
        assert!(resend.live && !resend.restore);

        // The clear came back first: the request after it is retained as it is.
        a.clearing.insert(key.clone());
        assert!(!a.received(&t, b"", false).restore);
        assert!(!a.received(&t, b"{other}", true).restore);
    }

    fn opts(url: &str) -> BrokerOptions {
        BrokerOptions {
            url: url.into(),
            client_id: "c".into(),
            ..BrokerOptions::default()
        }
    }

    #[test]
    fn port_443_offers_the_iot_core_alpn() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not parsed until connecting").unwrap();
        let alpn_of = |url: &str| {
            let o = BrokerOptions {
                ca_file: Some(ca.clone()),
                ..opts(url)
            }
            .mqtt_options()
            .unwrap();
            match o.transport() {
                Transport::Tls(rumqttc::TlsConfiguration::Simple { alpn, .. }) => alpn,
                _ => panic!("not TLS"),
            }
        };
        assert_eq!(
            alpn_of("mqtts://example-ats.iot.us-east-1.amazonaws.com:443"),
            Some(vec![b"x-amzn-mqtt-ca".to_vec()])
        );
        assert_eq!(
            alpn_of("mqtts://example-ats.iot.us-east-1.amazonaws.com"),
            None
        );
    }

    #[test]
    fn broker_urls() {
        let o = opts("mqtt://127.0.0.1:18830").mqtt_options().unwrap();
        assert_eq!(o.broker_address(), ("127.0.0.1".to_owned(), 18830));
        assert!(!o.clean_session());
        assert_eq!(
            opts("tcp://h").mqtt_options().unwrap().broker_address(),
            ("h".to_owned(), 1883)
        );
        let o = opts("mqtt://user:pw@h").mqtt_options().unwrap();
        assert_eq!(o.credentials().map(|l| l.username), Some("user".to_owned()));
        for bad in ["http://h", "mqtt://", "nonsense", "mqtt://:1883", ""] {
            let e = opts(bad).mqtt_options().unwrap_err().to_string();
            assert!(!e.is_empty(), "{bad}");
        }
        // A password never appears in an error.
        let e = opts("ftp://u:hunter2@h")
            .mqtt_options()
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        // No client id: a clean session (rumqttc refuses a persistent one).
        let anon = BrokerOptions {
            url: "mqtt://h".into(),
            ..BrokerOptions::default()
        };
        assert!(anon.mqtt_options().unwrap().clean_session());
    }

    #[test]
    fn tls_files() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("x.pem");
        std::fs::write(&pem, "not really a certificate").unwrap();
        let mut o = opts("mqtts://h");
        assert_eq!(
            o.mqtt_options().unwrap().broker_address(),
            ("h".to_owned(), 8883)
        );
        o.cert_file = Some(pem.clone());
        assert!(o.mqtt_options().unwrap_err().to_string().contains("key"));
        o.key_file = Some(pem.clone());
        assert!(o.mqtt_options().unwrap_err().to_string().contains("CA"));
        o.ca_file = Some(dir.path().join("missing.pem"));
        assert!(
            o.mqtt_options()
                .unwrap_err()
                .to_string()
                .contains("missing.pem")
        );
        o.ca_file = Some(pem.clone());
        assert!(o.mqtt_options().is_ok());
        let mut plain = opts("mqtt://h");
        plain.ca_file = Some(pem);
        assert!(
            plain
                .mqtt_options()
                .unwrap_err()
                .to_string()
                .contains("mqtts")
        );
    }
}
