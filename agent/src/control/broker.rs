//! The embedded MQTT broker of local mode (cargo feature `embedded-broker`, on by default):
//! `rumqttd` in-process on a loopback address, so `kvs-edge-agent run` works on a machine with
//! nothing else installed. Retained messages and sessions live in memory and end with the
//! process; the catalog is the agent's memory, and it republishes every `reported` on connect.

use std::collections::HashMap;
use std::net::SocketAddr;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::{error, info};

const LISTEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerStartError {
    #[error(
        "cannot start the embedded MQTT broker on {listen}: {source} (is another broker running \
         there? set mqtt.broker_url to use it)"
    )]
    Bind {
        listen: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the embedded MQTT broker: {0}")]
    Thread(std::io::Error),
    #[error(
        "the embedded MQTT broker did not listen on {listen} within {} s",
        LISTEN_WITHIN.as_secs()
    )]
    NotListening { listen: SocketAddr },
}

/// Starts the broker on `listen` on its own threads. Fails when the address is taken (another
/// broker already listening: configure `mqtt.broker_url` to use it).
pub fn start(listen: SocketAddr) -> Result<(), BrokerStartError> {
    // rumqttd only logs a bind failure from its server thread; find it out first.
    std::net::TcpListener::bind(listen)
        .map_err(|source| BrokerStartError::Bind { listen, source })?;
    let server = ServerSettings {
        name: "v4-local".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            // Above the 64 KiB request limit, so an oversized request is refused by the agent
            // with a clear status rather than dropped by the broker.
            max_payload_size: 1 << 20,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 1000,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 << 20,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("v4-local".to_owned(), server)])),
        ..Config::default()
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(BrokerStartError::Thread)?;
    // rumqttd binds on its own thread and says nothing when it has: wait for the port (it takes
    // milliseconds), so the control plane's first connection does not fail and warn.
    let deadline = std::time::Instant::now() + LISTEN_WITHIN;
    while std::net::TcpStream::connect_timeout(&listen, LISTEN_WITHIN).is_err() {
        if std::time::Instant::now() > deadline {
            return Err(BrokerStartError::NotListening { listen });
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    info!(%listen, "embedded MQTT broker listening");
    Ok(())
}
