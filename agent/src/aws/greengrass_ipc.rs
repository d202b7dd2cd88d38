//! `MediaUriSecretArn` resolved through the Greengrass nucleus' IPC (Greengrass mode): the
//! `aws.greengrass.SecretManager` component answers `aws.greengrass#GetSecretValue` from its local
//! copy of the secrets, so cameras keep recording while the device is offline.
//!
//! The IPC is eventstream RPC over the Unix domain socket named by
//! `AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT`, as the AWS IoT Device SDKs speak it
//! (aws-c-event-stream's RPC client, which the Python, Java and C++ SDKs wrap):
//!
//! 1. CONNECT on stream 0 with `:version` `0.1.0` and the JSON payload `{"authToken": SVCUID}`;
//!    the nucleus answers CONNECT_ACK, with the flag CONNECTION_ACCEPTED unless it rejects the
//!    token (and then closes the connection).
//! 2. The request opens stream 1: an APPLICATION_MESSAGE with the header `operation`
//!    `aws.greengrass#GetSecretValue`, `service-model-type` `aws.greengrass#GetSecretValueRequest`,
//!    `:content-type` `application/json` and the payload `{"secretId": ARN}`.
//! 3. The answer on stream 1 ends it (TERMINATE_STREAM): an APPLICATION_MESSAGE
//!    `aws.greengrass#GetSecretValueResponse` `{"secretValue": {"secretString": ...}}`, or an
//!    APPLICATION_ERROR whose `service-model-type` names the error
//!    (`aws.greengrass#ResourceNotFoundError`, `aws.greengrass#UnauthorizedError`, ...) and whose
//!    JSON payload has a `message`. Errors of the RPC layer itself (an unknown operation, a payload
//!    the nucleus cannot parse) come without `service-model-type`.
//!
//! Every protocol message also carries the int32 headers `:message-type`, `:message-flags` and
//! `:stream-id`. Frames are encoded and checked (prelude and message CRC32) by
//! `aws-smithy-eventstream`; a new connection is opened per fetch, and answers are cached like the
//! Secrets Manager source's ([`crate::aws::secrets`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_smithy_eventstream::frame::{read_message_from, write_message_to};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::secrets::{Cache, Lookup, SecretError, SecretSource, media_uri_of};

/// The nucleus' socket, set by the nucleus for every component.
pub const SOCKET_ENV: &str = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT";
/// The component's IPC token, set by the nucleus for every component.
pub const TOKEN_ENV: &str = "SVCUID";
/// How long connecting and the CONNECT/CONNECT_ACK handshake may take.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(5);
/// How long the nucleus may take to answer a request (it may ask the cloud when asked to
/// refresh; this client never does).
pub const REPLY_WITHIN: Duration = Duration::from_secs(10);

/// The protocol version the nucleus accepts (it rejects any other in CONNECT_ACK).
const VERSION: &str = "0.1.0";
const GET_SECRET_VALUE: &str = "aws.greengrass#GetSecretValue";
const GET_SECRET_VALUE_REQUEST: &str = "aws.greengrass#GetSecretValueRequest";
const GET_SECRET_VALUE_RESPONSE: &str = "aws.greengrass#GetSecretValueResponse";
pub const RESOURCE_NOT_FOUND: &str = "aws.greengrass#ResourceNotFoundError";
pub const UNAUTHORIZED: &str = "aws.greengrass#UnauthorizedError";
const JSON: &str = "application/json";

const MESSAGE_TYPE: &str = ":message-type";
const MESSAGE_FLAGS: &str = ":message-flags";
const STREAM_ID: &str = ":stream-id";
const OPERATION: &str = "operation";
const CONTENT_TYPE: &str = ":content-type";
const SERVICE_MODEL_TYPE: &str = "service-model-type";
const VERSION_HEADER: &str = ":version";

const FLAG_CONNECTION_ACCEPTED: i32 = 0x1;
const FLAG_TERMINATE_STREAM: i32 = 0x2;
/// The stream of the one request per connection (streams are numbered from 1, consecutively).
const REQUEST_STREAM: i32 = 1;

/// Prelude (total length, headers length, prelude CRC) plus the message CRC.
const FRAME_OVERHEAD: u32 = 16;
/// The largest message accepted. Secrets Manager values are at most 64 KiB, so an answer beyond
/// this is a broken peer; without the bound a bad length prefix would make us buffer up to 4 GiB.
const MAX_MESSAGE_BYTES: u32 = 1 << 20;
/// The most of a peer's error text quoted in our errors.
const MAX_QUOTED: usize = 200;

/// The message types of eventstream RPC (`:message-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MessageType {
    ApplicationMessage,
    ApplicationError,
    Ping,
    PingResponse,
    Connect,
    ConnectAck,
    ProtocolError,
    InternalError,
}

impl MessageType {
    fn code(self) -> i32 {
        match self {
            MessageType::ApplicationMessage => 0,
            MessageType::ApplicationError => 1,
            MessageType::Ping => 2,
            MessageType::PingResponse => 3,
            MessageType::Connect => 4,
            MessageType::ConnectAck => 5,
            MessageType::ProtocolError => 6,
            MessageType::InternalError => 7,
        }
    }

    fn of(code: i32) -> Option<Self> {
        Some(match code {
            0 => MessageType::ApplicationMessage,
            1 => MessageType::ApplicationError,
            2 => MessageType::Ping,
            3 => MessageType::PingResponse,
            4 => MessageType::Connect,
            5 => MessageType::ConnectAck,
            6 => MessageType::ProtocolError,
            7 => MessageType::InternalError,
            _ => return None,
        })
    }
}

/// Why an IPC call failed. No variant carries a secret value: payloads are never quoted, except
/// the `message` of an error the nucleus sent (shortened).
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// The socket is absent or nobody listens (the nucleus is down or restarting).
    #[error("cannot connect to the Greengrass nucleus at {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    /// CONNECT_ACK without CONNECTION_ACCEPTED: the nucleus does not know our SVCUID (or our
    /// protocol version).
    #[error("the Greengrass nucleus rejected the IPC connection (SVCUID not accepted)")]
    Rejected,
    #[error("the Greengrass nucleus did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the Greengrass nucleus closed the IPC connection before answering")]
    Closed,
    #[error("IPC with the Greengrass nucleus failed: {0}")]
    Io(#[from] std::io::Error),
    /// Bytes that are not the protocol: a bad frame, missing headers, unexpected messages.
    #[error("the Greengrass nucleus sent a malformed reply: {0}")]
    Malformed(String),
    /// PROTOCOL_ERROR or INTERNAL_ERROR on stream 0: the nucleus dropped the connection.
    #[error("the Greengrass nucleus reported an IPC protocol error: {0}")]
    Protocol(String),
    /// An APPLICATION_ERROR: `model` is its `service-model-type` (absent for errors of the RPC
    /// layer, such as an unsupported operation).
    #[error("the Greengrass nucleus answered {}: {message}", model.as_deref().unwrap_or("an error"))]
    Operation {
        model: Option<String>,
        message: String,
    },
}

/// A secret as GetSecretValue returns it. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretValue {
    String(String),
    Binary,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretValue::String(_) => f.write_str("SecretValue::String(<redacted>)"),
            SecretValue::Binary => f.write_str("SecretValue::Binary(<redacted>)"),
        }
    }
}

/// A Greengrass IPC client: where the nucleus listens and this component's token.
#[derive(Clone)]
pub struct IpcClient {
    socket: PathBuf,
    token: String,
    connect_within: Duration,
    reply_within: Duration,
}

impl std::fmt::Debug for IpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpcClient")
            .field("socket", &self.socket)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl IpcClient {
    pub fn new(socket: impl Into<PathBuf>, token: impl Into<String>) -> Self {
        IpcClient {
            socket: socket.into(),
            token: token.into(),
            connect_within: CONNECT_WITHIN,
            reply_within: REPLY_WITHIN,
        }
    }

    /// The client of a Greengrass component: both variables set (and not empty) by the nucleus.
    pub fn from_env() -> Option<Self> {
        let socket = std::env::var_os(SOCKET_ENV).filter(|s| !s.is_empty())?;
        let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty())?;
        Some(IpcClient::new(socket, token))
    }

    /// Other limits than [`CONNECT_WITHIN`] and [`REPLY_WITHIN`].
    pub fn with_timeouts(mut self, connect_within: Duration, reply_within: Duration) -> Self {
        self.connect_within = connect_within;
        self.reply_within = reply_within;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Connects and completes the handshake: the nucleus is there and accepts our token.
    pub async fn check(&self) -> Result<(), IpcError> {
        self.connect().await.map(drop)
    }

    /// `aws.greengrass#GetSecretValue` of `secret_id` (an ARN or a name), current version.
    pub async fn get_secret_value(&self, secret_id: &str) -> Result<SecretValue, IpcError> {
        let mut conn = self.connect().await?;
        let reply = tokio::time::timeout(self.reply_within, async {
            conn.send(&get_secret_value_request(REQUEST_STREAM, secret_id))
                .await?;
            loop {
                let m = conn.recv().await?;
                match (m.stream_id, m.kind) {
                    (0, MessageType::Ping | MessageType::PingResponse) => continue,
                    (0, MessageType::ProtocolError | MessageType::InternalError) => {
                        return Err(IpcError::Protocol(error_text(&m)));
                    }
                    (REQUEST_STREAM, _) => return Ok(m),
                    (0, kind) => {
                        return Err(IpcError::Malformed(format!(
                            "an unexpected {kind:?} message on stream 0"
                        )));
                    }
                    (id, _) => {
                        return Err(IpcError::Malformed(format!(
                            "a message on stream {id}, which was never opened"
                        )));
                    }
                }
            }
        })
        .await
        .map_err(|_| IpcError::Timeout(self.reply_within))??;
        secret_of_reply(&reply)
    }

    async fn connect(&self) -> Result<Connection, IpcError> {
        tokio::time::timeout(self.connect_within, async {
            let stream =
                UnixStream::connect(&self.socket)
                    .await
                    .map_err(|source| IpcError::Connect {
                        path: self.socket.clone(),
                        source,
                    })?;
            let mut conn = Connection { stream };
            conn.send(&connect_message(&self.token)).await?;
            let ack = conn.recv().await?;
            match (ack.stream_id, ack.kind) {
                (0, MessageType::ConnectAck) if ack.flags & FLAG_CONNECTION_ACCEPTED != 0 => {
                    Ok(conn)
                }
                (0, MessageType::ConnectAck) => Err(IpcError::Rejected),
                (0, MessageType::ProtocolError | MessageType::InternalError) => {
                    Err(IpcError::Protocol(error_text(&ack)))
                }
                (id, kind) => Err(IpcError::Malformed(format!(
                    "{kind:?} on stream {id} where CONNECT_ACK was expected"
                ))),
            }
        })
        .await
        .map_err(|_| IpcError::Timeout(self.connect_within))?
    }
}

/// One connection to the nucleus, after or during the handshake.
struct Connection {
    stream: UnixStream,
}

impl Connection {
    async fn send(&mut self, message: &Message) -> Result<(), IpcError> {
        let mut frame = Vec::new();
        write_message_to(message, &mut frame)
            .map_err(|e| IpcError::Malformed(format!("cannot encode the request: {e}")))?;
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// The next message. The length prefix is checked here before the frame is read
    /// (`MessageFrameDecoder` would buffer whatever length a broken peer announces); the crate
    /// then checks both CRCs and decodes the headers.
    async fn recv(&mut self) -> Result<RpcMessage, IpcError> {
        let eof = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => IpcError::Closed,
            _ => IpcError::Io(e),
        };
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).await.map_err(eof)?;
        let total = u32::from_be_bytes(prefix);
        if !(FRAME_OVERHEAD..=MAX_MESSAGE_BYTES).contains(&total) {
            return Err(IpcError::Malformed(format!(
                "a frame length of {total} bytes (at least {FRAME_OVERHEAD}, at most {MAX_MESSAGE_BYTES})"
            )));
        }
        let mut frame = vec![0u8; total as usize];
        frame[..4].copy_from_slice(&prefix);
        self.stream.read_exact(&mut frame[4..]).await.map_err(eof)?;
        parse(&frame)
    }
}

/// A protocol message with its RPC headers taken apart; `headers` keeps them all. No `Debug`:
/// the payload may be a secret.
struct RpcMessage {
    kind: MessageType,
    flags: i32,
    stream_id: i32,
    headers: Vec<Header>,
    payload: Bytes,
}

impl RpcMessage {
    /// A string header, by case-insensitive name as aws-c-event-stream matches them.
    fn string(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name().as_str().eq_ignore_ascii_case(name))
            .and_then(|h| h.value().as_string().ok())
            .map(|s| s.as_str())
    }
}

fn int32(name: &str, value: i32) -> Header {
    Header::new(name.to_owned(), HeaderValue::Int32(value))
}

fn string(name: &str, value: &str) -> Header {
    Header::new(
        name.to_owned(),
        HeaderValue::String(value.to_owned().into()),
    )
}

/// A message as aws-c-event-stream's client builds it: the caller's headers, then the three
/// RPC headers, then `operation` when a stream is opened.
fn build(
    kind: MessageType,
    flags: i32,
    stream_id: i32,
    operation: Option<&str>,
    headers: Vec<Header>,
    payload: Vec<u8>,
) -> Message {
    let mut all = headers;
    all.push(int32(MESSAGE_TYPE, kind.code()));
    all.push(int32(MESSAGE_FLAGS, flags));
    all.push(int32(STREAM_ID, stream_id));
    if let Some(op) = operation {
        all.push(string(OPERATION, op));
    }
    Message::new_from_parts(all, payload)
}

fn json_payload(value: serde_json::Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

fn connect_message(token: &str) -> Message {
    build(
        MessageType::Connect,
        0,
        0,
        None,
        vec![string(VERSION_HEADER, VERSION)],
        json_payload(serde_json::json!({ "authToken": token })),
    )
}

fn get_secret_value_request(stream_id: i32, secret_id: &str) -> Message {
    build(
        MessageType::ApplicationMessage,
        0,
        stream_id,
        Some(GET_SECRET_VALUE),
        vec![
            string(CONTENT_TYPE, JSON),
            string(SERVICE_MODEL_TYPE, GET_SECRET_VALUE_REQUEST),
        ],
        json_payload(serde_json::json!({ "secretId": secret_id })),
    )
}

/// Decodes one whole frame and takes its RPC headers apart (all three are required, int32, as
/// aws-c-event-stream requires them).
fn parse(frame: &[u8]) -> Result<RpcMessage, IpcError> {
    let message =
        read_message_from(frame).map_err(|e| IpcError::Malformed(format!("a bad frame: {e}")))?;
    let find = |name: &str| -> Result<i32, IpcError> {
        message
            .headers()
            .iter()
            .find(|h| h.name().as_str().eq_ignore_ascii_case(name))
            .and_then(|h| h.value().as_int32().ok())
            .ok_or_else(|| IpcError::Malformed(format!("no int32 header {name}")))
    };
    let code = find(MESSAGE_TYPE)?;
    let kind = MessageType::of(code)
        .ok_or_else(|| IpcError::Malformed(format!("an unknown message type {code}")))?;
    Ok(RpcMessage {
        kind,
        flags: find(MESSAGE_FLAGS)?,
        stream_id: find(STREAM_ID)?,
        headers: message.headers().to_vec(),
        payload: message.payload().clone(),
    })
}

/// The human part of an error message: the `message` (or `error`) of a JSON payload, or a short
/// plain-text payload. Never more than [`MAX_QUOTED`] characters.
fn error_text(m: &RpcMessage) -> String {
    let text = match crate::input::json::from_slice::<serde_json::Value>(&m.payload) {
        Ok(v) => ["message", "error"]
            .iter()
            .find_map(|k| v.get(k).and_then(|s| s.as_str()).map(str::to_owned))
            .unwrap_or_default(),
        Err(_) => std::str::from_utf8(&m.payload)
            .map(str::trim)
            .unwrap_or_default()
            .to_owned(),
    };
    let text: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_QUOTED)
        .collect();
    if text.is_empty() {
        "no details".to_owned()
    } else {
        text
    }
}

/// The secret of the reply on the request's stream, or the error it carries.
fn secret_of_reply(m: &RpcMessage) -> Result<SecretValue, IpcError> {
    let model = m.string(SERVICE_MODEL_TYPE).map(str::to_owned);
    match m.kind {
        MessageType::ApplicationError => {
            return Err(IpcError::Operation {
                model,
                message: error_text(m),
            });
        }
        MessageType::ApplicationMessage => {}
        kind => {
            return Err(IpcError::Malformed(format!(
                "{kind:?} on the request's stream"
            )));
        }
    }
    if model.is_none() && m.payload.is_empty() && m.flags & FLAG_TERMINATE_STREAM != 0 {
        return Err(IpcError::Malformed(
            "the stream was ended without an answer".into(),
        ));
    }
    if model.as_deref() != Some(GET_SECRET_VALUE_RESPONSE) {
        return Err(IpcError::Malformed(format!(
            "the answer is {}, not {GET_SECRET_VALUE_RESPONSE}",
            model.as_deref().unwrap_or("of no service-model-type")
        )));
    }
    match m.string(CONTENT_TYPE) {
        Some(JSON) => {}
        other => {
            return Err(IpcError::Malformed(format!(
                "the answer's content type is {}, not {JSON}",
                other.unwrap_or("missing")
            )));
        }
    }
    // serde_json's errors give a position, never the text.
    let body: serde_json::Value = crate::input::json::from_slice(&m.payload)
        .map_err(|e| IpcError::Malformed(format!("the answer is not JSON ({e})")))?;
    let value = body
        .get("secretValue")
        .and_then(|v| v.as_object())
        .ok_or_else(|| IpcError::Malformed("the answer has no secretValue object".into()))?;
    match (value.get("secretString"), value.get("secretBinary")) {
        (Some(serde_json::Value::String(s)), _) => Ok(SecretValue::String(s.clone())),
        (None | Some(serde_json::Value::Null), Some(b)) if !b.is_null() => Ok(SecretValue::Binary),
        _ => Err(IpcError::Malformed(
            "the answer's secretValue has no secretString or secretBinary".into(),
        )),
    }
}

/// Why the Greengrass Secret Manager component is not the secret source.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{} or {} is not set", SOCKET_ENV, TOKEN_ENV)]
    NotAComponent,
    #[error(
        "the Greengrass nucleus does not serve GetSecretValue (is aws.greengrass.SecretManager deployed?)"
    )]
    NoSecretManager,
    #[error(transparent)]
    Ipc(IpcError),
}

/// Media URIs from the Greengrass Secret Manager component, cached
/// ([`crate::secrets::Cache`]) like [`crate::aws::secrets::SecretsManagerSource`]'s.
pub struct GreengrassSecretSource {
    client: IpcClient,
    cache: Cache,
}

impl GreengrassSecretSource {
    pub fn new(client: IpcClient) -> Self {
        GreengrassSecretSource {
            client,
            cache: Cache::new("the Greengrass nucleus"),
        }
    }

    /// The source of a Greengrass component (socket and token from the environment) whose
    /// nucleus serves GetSecretValue, see [`GreengrassSecretSource::probe`]; otherwise why not,
    /// for the log.
    pub async fn from_env() -> Result<Self, ProbeError> {
        let client = IpcClient::from_env().ok_or(ProbeError::NotAComponent)?;
        GreengrassSecretSource::probe(client).await
    }

    /// The source when the nucleus accepts our token and serves GetSecretValue, which it does
    /// only with the `aws.greengrass.SecretManager` component deployed: asked for the empty
    /// secret id, that component answers a modelled error, while a nucleus without it answers
    /// the RPC layer's "unsupported operation" (no `service-model-type`).
    pub async fn probe(client: IpcClient) -> Result<Self, ProbeError> {
        match client.get_secret_value("").await {
            Ok(_) | Err(IpcError::Operation { model: Some(_), .. }) => {}
            Err(IpcError::Operation { model: None, .. }) => {
                return Err(ProbeError::NoSecretManager);
            }
            Err(e) => return Err(ProbeError::Ipc(e)),
        }
        Ok(GreengrassSecretSource::new(client))
    }

    pub fn socket(&self) -> &Path {
        &self.client.socket
    }
}

impl SecretSource for GreengrassSecretSource {
    fn media_uri<'a>(&'a self, arn: &'a str) -> Lookup<'a> {
        Box::pin(self.cache.media_uri(arn, fetch(&self.client, arn)))
    }

    fn refresh<'a>(&'a self, arn: &'a str) -> Lookup<'a> {
        Box::pin(self.cache.refresh(arn, fetch(&self.client, arn)))
    }
}

/// One fetch. A secret unknown to the Secret Manager component, or one this component may not
/// read, is the user's to fix (fatal, USER_ERROR), like a bad value. Everything else, including a
/// rejected token (the nucleus issues SVCUID; a restarted component gets a good one), is
/// retried.
async fn fetch(client: &IpcClient, arn: &str) -> Result<String, SecretError> {
    let invalid = |reason: String| SecretError::Invalid {
        arn: arn.to_owned(),
        reason,
    };
    match client.get_secret_value(arn).await {
        Ok(SecretValue::String(text)) => media_uri_of(&text).map_err(|e| invalid(e.to_string())),
        Ok(SecretValue::Binary) => {
            Err(invalid("it has no secret string (a binary secret?)".into()))
        }
        Err(IpcError::Operation { model: Some(m), .. }) if m == RESOURCE_NOT_FOUND => Err(invalid(
            "the Greengrass Secret Manager component does not have it (add it to the component's \
             cloudSecrets configuration and check the ARN)"
                .into(),
        )),
        Err(IpcError::Operation { model: Some(m), .. }) if m == UNAUTHORIZED => Err(invalid(
            "access denied: the agent component's accessControl must allow \
             aws.greengrass#GetSecretValue on it for aws.greengrass.SecretManager"
                .into(),
        )),
        Err(e) => Err(SecretError::Unavailable {
            arn: arn.to_owned(),
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(m: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        write_message_to(m, &mut out).unwrap();
        out
    }

    fn reply(
        kind: MessageType,
        flags: i32,
        stream: i32,
        headers: Vec<Header>,
        payload: &str,
    ) -> RpcMessage {
        let m = build(
            kind,
            flags,
            stream,
            None,
            headers,
            payload.as_bytes().to_vec(),
        );
        parse(&encode(&m)).unwrap()
    }

    fn response(payload: &str) -> RpcMessage {
        reply(
            MessageType::ApplicationMessage,
            FLAG_TERMINATE_STREAM,
            1,
            vec![
                string(CONTENT_TYPE, JSON),
                string(SERVICE_MODEL_TYPE, GET_SECRET_VALUE_RESPONSE),
            ],
            payload,
        )
    }

    #[test]
    fn connect_message_is_what_the_sdk_sends() {
        let m = parse(&encode(&connect_message("tok\"en"))).unwrap();
        assert_eq!(m.kind, MessageType::Connect);
        assert_eq!((m.flags, m.stream_id), (0, 0));
        assert_eq!(m.string(":VERSION"), Some("0.1.0"));
        assert_eq!(m.string(OPERATION), None);
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(body, serde_json::json!({"authToken": "tok\"en"}));
    }

    #[test]
    fn request_opens_stream_one_with_the_operation() {
        let arn = "arn:aws:secretsmanager:us-east-1:1:secret:cam";
        let m = parse(&encode(&get_secret_value_request(1, arn))).unwrap();
        assert_eq!(m.kind, MessageType::ApplicationMessage);
        assert_eq!((m.flags, m.stream_id), (0, 1));
        assert_eq!(m.string(OPERATION), Some(GET_SECRET_VALUE));
        assert_eq!(m.string(SERVICE_MODEL_TYPE), Some(GET_SECRET_VALUE_REQUEST));
        assert_eq!(m.string(CONTENT_TYPE), Some(JSON));
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(body, serde_json::json!({"secretId": arn}));
        // The RPC headers are int32, as aws-c-event-stream requires.
        let names: Vec<_> = m.headers.iter().map(|h| h.name().as_str()).collect();
        assert_eq!(
            names,
            [
                CONTENT_TYPE,
                SERVICE_MODEL_TYPE,
                MESSAGE_TYPE,
                MESSAGE_FLAGS,
                STREAM_ID,
                OPERATION
            ]
        );
    }

    #[test]
    fn secret_string_and_binary() {
        let r =
            response(r#"{"secretId":"x","secretValue":{"secretString":"{\"MediaURI\":\"u\"}"}}"#);
        assert_eq!(
            secret_of_reply(&r).unwrap(),
            SecretValue::String(r#"{"MediaURI":"u"}"#.into())
        );
        let r = response(r#"{"secretValue":{"secretBinary":"AAEC"}}"#);
        assert_eq!(secret_of_reply(&r).unwrap(), SecretValue::Binary);
        assert_eq!(
            format!("{:?}", SecretValue::String("hunter2".into())),
            "SecretValue::String(<redacted>)"
        );
    }

    #[test]
    fn application_errors_keep_their_model_and_message() {
        let r = reply(
            MessageType::ApplicationError,
            FLAG_TERMINATE_STREAM,
            1,
            vec![
                string(CONTENT_TYPE, JSON),
                string(SERVICE_MODEL_TYPE, RESOURCE_NOT_FOUND),
            ],
            r#"{"message":"no such secret","resourceType":"secret"}"#,
        );
        match secret_of_reply(&r).unwrap_err() {
            IpcError::Operation { model, message } => {
                assert_eq!(model.as_deref(), Some(RESOURCE_NOT_FOUND));
                assert_eq!(message, "no such secret");
            }
            e => panic!("{e}"),
        }
        // The RPC layer's own errors: no model, text or JSON "error".
        let r = reply(
            MessageType::ApplicationError,
            FLAG_TERMINATE_STREAM,
            1,
            vec![string(CONTENT_TYPE, "text/plain")],
            "InternalServerError",
        );
        let e = secret_of_reply(&r).unwrap_err().to_string();
        assert!(e.ends_with("an error: InternalServerError"), "{e}");
    }

    #[test]
    fn malformed_answers_never_quote_the_payload() {
        let cases = [
            r#"{"secretValue":{"secretString":"rtsp://u:hunter2@h"#,
            r#"["rtsp://u:hunter2@h"]"#,
            r#"{"secretValue":"rtsp://u:hunter2@h"}"#,
            r#"{"secretValue":{"secretString":7,"x":"hunter2"}}"#,
        ];
        for payload in cases {
            let e = secret_of_reply(&response(payload)).unwrap_err();
            assert!(matches!(e, IpcError::Malformed(_)), "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        let wrong_model = reply(
            MessageType::ApplicationMessage,
            FLAG_TERMINATE_STREAM,
            1,
            vec![string(CONTENT_TYPE, JSON)],
            r#"{"secretValue":{"secretString":"hunter2"}}"#,
        );
        let e = secret_of_reply(&wrong_model).unwrap_err().to_string();
        assert!(
            e.contains("no service-model-type") && !e.contains("hunter2"),
            "{e}"
        );
    }

    /// CRC-32 (IEEE), as eventstream frames use it.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let good = encode(&get_secret_value_request(1, "arn"));
        // Missing RPC headers.
        let bare = encode(&Message::new_from_parts(vec![], b"{}".to_vec()));
        assert!(matches!(parse(&bare), Err(IpcError::Malformed(_))));
        // A corrupted byte anywhere, every truncation, and pseudo-random bytes.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x5a;
            assert!(parse(&bad).is_err(), "corrupted byte {i}");
            assert!(parse(&good[..i]).is_err(), "truncated at {i}");
        }
        let mut x: u32 = 0x1234_5678;
        for len in 0..512 {
            let noise: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse(&noise);
        }
        // Corrupted headers inside frames whose CRCs are right, so the header decoder runs.
        let prelude_end = 12;
        let headers_end = prelude_end + u32::from_be_bytes(good[4..8].try_into().unwrap()) as usize;
        for i in prelude_end..headers_end {
            for byte in [0x00, 0x01, 0x07, 0x09, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[i] = byte;
                let body_end = bad.len() - 4;
                let crc = crc32(&bad[..body_end]);
                bad[body_end..].copy_from_slice(&crc.to_be_bytes());
                let _ = parse(&bad);
            }
        }
        let unknown_type = build(MessageType::Ping, 0, 0, None, vec![], vec![]);
        let mut headers = unknown_type.headers().to_vec();
        headers[0] = int32(MESSAGE_TYPE, 42);
        let m = Message::new_from_parts(headers, Vec::<u8>::new());
        assert!(matches!(parse(&encode(&m)), Err(IpcError::Malformed(_))));
    }

    #[test]
    fn error_text_is_short_and_single_line() {
        let long = format!(r#"{{"message":"{}\nmore"}}"#, "x".repeat(1000));
        let r = reply(MessageType::ProtocolError, 0, 0, vec![], &long);
        let t = error_text(&r);
        assert_eq!(t.chars().count(), MAX_QUOTED);
        assert!(!t.contains('\n'));
        let r = reply(MessageType::ProtocolError, 0, 0, vec![], "");
        assert_eq!(error_text(&r), "no details");
    }
}
