//! The MQTT control plane (DESIGN.md, "The control protocol (MQTT)").
//!
//! - [`topics`]: building and parsing the topics (pure).
//! - [`desired`]: reading a `desired` payload and checking it against its topic (pure).
//! - [`mqtt`]: broker options, and the agent's connection: subscribe to `desired`, hand requests
//!   to the supervisor, publish `reported` and `agent` (retained, QoS 1, last will offline),
//!   reconnect with backoff and republish everything after a reconnect.
//! - [`client`]: the operator side used by `kvs-edge-agent ctl`.
//! - `broker` (cargo feature `embedded-broker`): an in-process MQTT broker for local mode.
//!
//! The broker being away never stops recording or uploading: the supervisor runs the stored
//! configurations on its own, and the control plane only mirrors state.

#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod client;
pub mod desired;
pub mod mqtt;
pub mod topics;

use serde::{Deserialize, Serialize};

use crate::edge_config::ApiTimestamp;

/// The payload of `{prefix}/{thing}/agent`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentStatus {
    /// `online` or `offline`.
    pub status: String,
    pub version: String,
    pub start_time: ApiTimestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_count: Option<usize>,
}
