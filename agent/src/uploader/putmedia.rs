//! One PutMedia request: a signed, chunked, streaming POST and its acknowledgement stream.
//! [`PutMedia`] is the production [`MediaSink`]: GetDataEndpoint, then one request per batch.
//!
//! The body is produced by a task that reads the batch's clusters from the segment files in
//! 256 KiB pieces (never a whole file in memory), paced by the stream's [`Pacer`], and handed to
//! reqwest through a small bounded channel, so memory stays at a few chunks whatever the
//! fragment size. The response (acks) is read concurrently: the service answers 200 as soon as
//! the headers are valid and acks each fragment while later ones are still being sent.
//!
//! Acks are matched to fragments by FragmentTimecode (our clusters use a 1 ms timecode scale,
//! so it is the catalog's `timecode_ms`). Only PERSISTED marks a fragment uploaded, at once and
//! in the catalog (through the session's [`Ledger`]), so a crash right after loses no acknowledged work. The sender stops only
//! between fragments: on a stop request, at the rotation deadline, or after an ERROR ack.
//!
//! Pacing waits go through the job's clock; the response and ack timeouts bound real network
//! I/O, so they stay on tokio's timer (a simulated clock would fire them at once).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use futures::SinkExt;
use futures::channel::mpsc;
use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::{debug, warn};

use super::ack::{Ack, AckError, AckEventType, AckParser, ErrorClass, classify, error_name};
use super::endpoint::EndpointCache;
use super::pacer::Pacer;
use super::sink::{Batch, BatchFragment, Ledger, MediaSink, Session, SessionEnd};
use super::{Options, StreamTarget, UploadError};
use crate::catalog::FragmentRow;
use crate::clock::Clock;
use crate::stop::Stop;

/// Size of one body piece read from disk and written to the connection.
const CHUNK: usize = 256 << 10;
/// Body pieces buffered between the file reader and the connection.
const CHANNEL_DEPTH: usize = 4;
/// The signing service name of Kinesis Video Streams.
const SERVICE: &str = "kinesisvideo";
/// Credentials are refreshed this long before they expire.
const CREDENTIAL_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Credentials from the SDK's provider chain, reused until shortly before they expire.
pub struct Signer {
    provider: SharedCredentialsProvider,
    region: String,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

impl Signer {
    pub fn new(provider: SharedCredentialsProvider, region: String) -> Self {
        Signer {
            provider,
            region,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// Forgets cached credentials (after the service refused them).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn credentials(&self) -> Result<Credentials, UploadError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            let fresh = c
                .expiry()
                .is_none_or(|e| e > SystemTime::now() + CREDENTIAL_MARGIN);
            if fresh {
                return Ok(c.clone());
            }
        }
        let c = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| UploadError::Credentials(e.to_string()))?;
        *cached = Some(c.clone());
        Ok(c)
    }

    /// Adds the SigV4 headers (Authorization, X-Amz-Date, X-Amz-Content-SHA256:
    /// UNSIGNED-PAYLOAD, the session token) for a streaming POST to `url`.
    pub async fn sign(
        &self,
        url: &str,
        headers: &mut HeaderMap,
        time: SystemTime,
    ) -> Result<(), UploadError> {
        let creds = self.credentials().await?;
        let identity = creds.into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| UploadError::Signing(e.to_string()))?
            .into();
        let pairs: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let signable = SignableRequest::new(
            "POST",
            url,
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| UploadError::Signing(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| UploadError::Signing(e.to_string()))?
            .into_parts();
        let (new_headers, _) = instructions.into_parts();
        for h in new_headers {
            let mut value = HeaderValue::from_str(h.value())
                .map_err(|e| UploadError::Signing(e.to_string()))?;
            value.set_sensitive(h.sensitive());
            headers.insert(HeaderName::from_static(h.name()), value);
        }
        Ok(())
    }
}

/// What the body task tells the ack reader.
#[derive(Default)]
struct SendState {
    /// Fragments whose every byte has been handed to the connection.
    sent: AtomicUsize,
    /// Fragments whose first byte has been handed to the connection.
    started: AtomicUsize,
    finished: AtomicBool,
    /// Wakes the ack reader when sending ends (a stored permit, so no wake-up is lost).
    finished_notify: tokio::sync::Notify,
    /// Ends sending after the fragment in flight (an ERROR ack arrived).
    halt: AtomicBool,
    stopped_by_request: AtomicBool,
    rotated: AtomicBool,
    read_error: Mutex<Option<(usize, String)>>,
}

/// The production sink: GetDataEndpoint (cached), then one signed PutMedia request per batch.
pub struct PutMedia {
    http: reqwest::Client,
    signer: Signer,
    endpoints: EndpointCache,
    clock: Arc<dyn Clock>,
    options: Options,
}

impl PutMedia {
    /// Region and credentials provider from `sdk`; `options` gives the timeouts and the
    /// endpoint cache's lifetime.
    pub fn new(
        sdk: &aws_config::SdkConfig,
        clock: Arc<dyn Clock>,
        options: &Options,
    ) -> Result<PutMedia, UploadError> {
        let region = sdk
            .region()
            .ok_or_else(|| UploadError::Config("no AWS region (set AWS_REGION)".into()))?
            .to_string();
        let provider = sdk
            .credentials_provider()
            .ok_or_else(|| UploadError::Credentials("no credentials provider".into()))?;
        let http = reqwest::Client::builder()
            .http1_only()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| UploadError::Config(format!("HTTP client: {e}")))?;
        let client = aws_sdk_kinesisvideo::Client::new(sdk);
        Ok(PutMedia {
            http,
            signer: Signer::new(provider, region),
            endpoints: EndpointCache::new(client, Arc::clone(&clock), options.endpoint_ttl),
            clock,
            options: options.clone(),
        })
    }

    async fn session(&self, session: Session<'_>) -> Result<SessionEnd, UploadError> {
        let stream = session.stream;
        let endpoint = self.endpoints.get(stream).await?;
        session.ledger.session_opened();
        let end = self.put_media(&endpoint, session).await;
        self.forget_after(stream, &end).await;
        Ok(end)
    }

    /// Drops what a failed request casts doubt on: the cached endpoint, refused credentials.
    async fn forget_after(&self, stream: &StreamTarget, end: &SessionEnd) {
        match end {
            // The endpoint may have moved; an error ack came from a live one.
            SessionEnd::Retry {
                connection: true, ..
            } => self.endpoints.invalidate(stream),
            // The stream is gone: the job ends.
            SessionEnd::Refused(UploadError::Http { status: 404, .. }) => {}
            SessionEnd::Refused(e) => {
                self.endpoints.invalidate(stream);
                if let UploadError::Http {
                    status: 401 | 403, ..
                } = e
                {
                    // Refused credentials are fetched again from the provider chain.
                    self.signer.invalidate().await;
                }
            }
            _ => {}
        }
    }

    /// Sends one batch on one PutMedia request and processes its acks.
    async fn put_media(&self, endpoint: &str, session: Session<'_>) -> SessionEnd {
        let Session {
            stream,
            batch,
            pacer,
            stop,
            ledger,
        } = session;
        let Some(first) = batch.fragments.first() else {
            return SessionEnd::Done;
        };
        let url = format!("{endpoint}/putMedia");
        let headers = match self
            .signed_headers(&url, stream, first.row.timecode_ms)
            .await
        {
            Ok(h) => h,
            Err(e) => return SessionEnd::Refused(e),
        };
        let state = Arc::new(SendState::default());
        let mut acks = Acks::new(stream, ledger, &state, &batch);
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHANNEL_DEPTH);
        let deadline = self.clock.monotonic() + self.options.rotate_after;
        let sender = tokio::spawn(send_body(
            batch,
            tx,
            Arc::clone(&state),
            pacer,
            Arc::clone(&self.clock),
            stop.clone(),
            deadline,
        ));
        let _abort_sender = AbortOnDrop(sender);
        let response = match self.request(&url, headers, rx).await {
            Ok(r) => r,
            Err(end) => return end,
        };
        acks.read(response, stop, &self.options).await;
        acks.end().await
    }

    async fn signed_headers(
        &self,
        url: &str,
        stream: &StreamTarget,
        start_ms: i64,
    ) -> Result<HeaderMap, UploadError> {
        let mut headers = headers(stream, start_ms)?;
        let now = SystemTime::UNIX_EPOCH
            + Duration::from_millis(self.clock.now().as_millisecond().max(0) as u64);
        self.signer.sign(url, &mut headers, now).await?;
        Ok(headers)
    }

    /// Starts the streaming POST; `Err` says how the request ended when no 200 came.
    async fn request(
        &self,
        url: &str,
        headers: HeaderMap,
        body: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> Result<reqwest::Response, SessionEnd> {
        let request = self
            .http
            .post(url)
            .headers(headers)
            .body(reqwest::Body::wrap_stream(body));
        let response = match tokio::time::timeout(self.options.ack_timeout, request.send()).await {
            Err(_) => {
                return Err(SessionEnd::Retry {
                    reason: "no response to PutMedia".into(),
                    connection: true,
                });
            }
            Ok(Err(e)) => {
                return Err(SessionEnd::Retry {
                    reason: format!("PutMedia request failed: {e}"),
                    connection: true,
                });
            }
            Ok(Ok(r)) => r,
        };
        if response.status() != reqwest::StatusCode::OK {
            return Err(SessionEnd::Refused(refusal(response).await));
        }
        Ok(response)
    }
}

impl MediaSink for PutMedia {
    fn send<'a>(&'a self, session: Session<'a>) -> BoxFuture<'a, Result<SessionEnd, UploadError>> {
        Box::pin(self.session(session))
    }
}

/// PutMedia's headers, before signing, for media of `stream` starting at `start_ms`.
fn headers(stream: &StreamTarget, start_ms: i64) -> Result<HeaderMap, UploadError> {
    let mut headers = HeaderMap::new();
    let (name, value) = match stream {
        StreamTarget::Name(n) => ("x-amzn-stream-name", n.as_str()),
        StreamTarget::Arn { arn, .. } => ("x-amzn-stream-arn", arn.as_str()),
    };
    let Ok(value) = HeaderValue::from_str(value) else {
        return Err(UploadError::Config(format!(
            "stream {value:?} is not a valid header value"
        )));
    };
    headers.insert(name, value);
    headers.insert(
        "x-amzn-fragment-timecode-type",
        HeaderValue::from_static("ABSOLUTE"),
    );
    // The producer started recording this media when its first fragment began.
    let start = format!(
        "{}.{:03}",
        start_ms.div_euclid(1000),
        start_ms.rem_euclid(1000)
    );
    headers.insert(
        "x-amzn-producer-start-timestamp",
        HeaderValue::from_str(&start).expect("digits and a dot"),
    );
    headers.insert(
        "x-amzn-fragment-acknowledgment-required",
        HeaderValue::from_static("1"),
    );
    Ok(headers)
}

/// The ack reader's account of one request.
struct Acks<'a> {
    stream: &'a StreamTarget,
    ledger: &'a Ledger<'a>,
    state: &'a SendState,
    rows: Vec<FragmentRow>,
    by_timecode: HashMap<i64, usize>,
    /// Per fragment: resolved (persisted or failed) yet?
    resolved: Vec<bool>,
    resolved_count: usize,
    retry: Option<String>,
    connection_failed: bool,
    not_active: bool,
    failed_fragment: bool,
}

impl<'a> Acks<'a> {
    fn new(
        stream: &'a StreamTarget,
        ledger: &'a Ledger<'a>,
        state: &'a SendState,
        batch: &Batch,
    ) -> Self {
        let rows: Vec<FragmentRow> = batch.fragments.iter().map(|f| f.row.clone()).collect();
        Acks {
            stream,
            ledger,
            state,
            by_timecode: rows
                .iter()
                .enumerate()
                .map(|(i, r)| (r.timecode_ms, i))
                .collect(),
            resolved: vec![false; rows.len()],
            rows,
            resolved_count: 0,
            retry: None,
            connection_failed: false,
            not_active: false,
            failed_fragment: false,
        }
    }

    /// Every fragment is resolved, or sending is over and every sent one is, with no retry due.
    fn settled(&self, finished: bool, sent: usize) -> bool {
        self.resolved_count == self.rows.len()
            || (finished && (0..sent).all(|i| self.resolved[i]) && sent > 0 && self.retry.is_none())
    }

    /// Reads acks until they settle, the response ends, the connection fails, or the grace
    /// after an early end of sending runs out.
    async fn read(&mut self, mut response: reqwest::Response, stop: &Stop, options: &Options) {
        let state = self.state;
        let mut parser = AckParser::new();
        let mut stop = stop.clone();
        let mut stop_live = true;
        let mut grace_until: Option<tokio::time::Instant> = None;
        loop {
            let finished = state.finished.load(Ordering::Acquire);
            let sent = state.sent.load(Ordering::Acquire);
            if self.settled(finished, sent) {
                break;
            }
            if finished && grace_until.is_none() && sent < self.rows.len() {
                // Sending ended early (stop, rotation, error): wait a bounded time for the acks
                // of what was sent.
                grace_until = Some(tokio::time::Instant::now() + options.ack_grace);
            }
            let grace = async {
                match grace_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let chunk = tokio::select! {
                c = tokio::time::timeout(options.ack_timeout, response.chunk()) => c,
                _ = grace => break,
                _ = state.finished_notify.notified(), if !finished => continue,
                () = stop.stopped(), if stop_live => {
                    // A wake-up only (the sender ends sending), and a stop fires once.
                    stop_live = false;
                    continue;
                }
            };
            let (acks, ended) = match chunk {
                Err(_) => {
                    self.connection_failed = true;
                    self.retry.get_or_insert_with(|| {
                        format!("no acknowledgement for {:?}", options.ack_timeout)
                    });
                    break;
                }
                Ok(Err(e)) => {
                    if state.read_error.lock().expect("lock").is_none() {
                        self.connection_failed = true;
                        self.retry
                            .get_or_insert_with(|| format!("connection lost: {e}"));
                    }
                    break;
                }
                Ok(Ok(None)) => (parser.finish().into_iter().collect(), true),
                Ok(Ok(Some(bytes))) => (parser.push(&bytes), false),
            };
            for ack in acks {
                self.ack(ack).await;
            }
            if ended {
                break;
            }
        }
    }

    async fn ack(&mut self, ack: Result<Ack, AckError>) {
        let key = self.stream.key();
        let ack = match ack {
            Ok(a) => a,
            Err(e) => {
                warn!(stream = key, error = %e, "ignoring an acknowledgement line");
                return;
            }
        };
        debug!(stream = key, ?ack, "ack");
        let index = ack
            .fragment_timecode
            .and_then(|t| self.by_timecode.get(&t).copied());
        match ack.event {
            AckEventType::Persisted => match (index, ack.fragment_number.as_deref()) {
                (Some(i), Some(number)) => self.persisted(i, number).await,
                _ => warn!(
                    stream = key,
                    ?ack,
                    "PERSISTED for no fragment of this request"
                ),
            },
            AckEventType::Error => self.error(index, ack.error_id.unwrap_or(0)).await,
            _ => {}
        }
    }

    async fn persisted(&mut self, i: usize, number: &str) {
        if self.resolved[i] {
            return;
        }
        if let Err(e) = self.ledger.persisted(&self.rows[i], number).await {
            warn!(stream = self.stream.key(), error = %e, "cannot record an upload");
            self.retry.get_or_insert_with(|| format!("catalog: {e}"));
            self.state.halt.store(true, Ordering::Release);
            return;
        }
        self.resolved[i] = true;
        self.resolved_count += 1;
    }

    /// An ERROR ack: sending halts after the fragment in flight.
    async fn error(&mut self, index: Option<usize>, id: u32) {
        self.state.halt.store(true, Ordering::Release);
        // An error without a known timecode is about the fragment in flight.
        let i = index.or_else(|| {
            let started = self.state.started.load(Ordering::Acquire);
            (0..started.max(1).min(self.rows.len())).find(|&i| !self.resolved[i])
        });
        let what = format!("{id} {}", error_name(id));
        match classify(id) {
            ErrorClass::Retry => {
                self.retry
                    .get_or_insert_with(|| format!("error ack {what}"));
            }
            ErrorClass::StreamNotActive => self.not_active = true,
            ErrorClass::FailFragment => {
                if let Some(i) = i {
                    self.reject(i, &what).await;
                }
            }
        }
    }

    async fn reject(&mut self, i: usize, what: &str) {
        if self.resolved[i] {
            return;
        }
        let key = self.stream.key();
        warn!(stream = key, fragment = self.rows[i].id, error = %what, "fragment rejected");
        if let Err(e) = self.ledger.rejected(&self.rows[i], what).await {
            warn!(stream = key, error = %e, "cannot record a failure");
        }
        self.resolved[i] = true;
        self.resolved_count += 1;
        self.failed_fragment = true;
    }

    /// How the request ended, once its acks are read.
    async fn end(self) -> SessionEnd {
        let state = self.state;
        let total = self.rows.len();
        let read_error = state.read_error.lock().expect("lock").take();
        if let Some((i, e)) = read_error {
            let what = format!("local read error: {e}");
            if i < total && !self.resolved[i] {
                let _ = self.ledger.rejected(&self.rows[i], &what).await;
            }
            return SessionEnd::FragmentFailed;
        }
        if self.not_active {
            return SessionEnd::StreamNotActive;
        }
        if let Some(reason) = self.retry {
            return SessionEnd::Retry {
                reason,
                connection: self.connection_failed,
            };
        }
        if self.resolved_count == total {
            return SessionEnd::Done;
        }
        // Unacknowledged fragments stay pending in every case below, and are sent again.
        if state.stopped_by_request.load(Ordering::Acquire) {
            return SessionEnd::Stopped;
        }
        if self.failed_fragment {
            return SessionEnd::FragmentFailed;
        }
        if state.rotated.load(Ordering::Acquire) {
            return SessionEnd::Rotated;
        }
        let sent = state.sent.load(Ordering::Acquire);
        SessionEnd::Retry {
            reason: format!(
                "the response ended with {} of {sent} sent fragments unacknowledged",
                (0..sent).filter(|&i| !self.resolved[i]).count()
            ),
            connection: true,
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads a refused request's error (x-amz-ErrorType and the JSON message, bounded).
async fn refusal(mut response: reqwest::Response) -> UploadError {
    let status = response.status().as_u16();
    let error_type = ["x-amz-errortype", "x-amzn-errortype"]
        .iter()
        .find_map(|h| response.headers().get(*h))
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(':').next().unwrap_or(s).to_owned())
        .unwrap_or_default();
    let mut body = Vec::new();
    while body.len() < 4096 {
        match tokio::time::timeout(Duration::from_secs(5), response.chunk()).await {
            Ok(Ok(Some(c))) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    body.truncate(4096);
    let message = crate::input::json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(|m| m.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    UploadError::Http {
        status,
        error_type,
        message,
    }
}

/// The body task: header, then each fragment's cluster, read piece by piece from its file.
async fn send_body(
    batch: Batch,
    mut tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    state: Arc<SendState>,
    pacer: Arc<Mutex<Pacer>>,
    clock: Arc<dyn Clock>,
    mut stop: Stop,
    deadline: Duration,
) {
    let done = |state: &SendState| {
        state.finished.store(true, Ordering::Release);
        state.finished_notify.notify_one();
    };
    if tx.send(Ok(Bytes::from(batch.header))).await.is_err() {
        return done(&state);
    }
    let mut file: Option<(PathBuf, tokio::fs::File)> = None;
    for (i, f) in batch.fragments.iter().enumerate() {
        if stop.is_stopped() {
            state.stopped_by_request.store(true, Ordering::Release);
            break;
        }
        if state.halt.load(Ordering::Acquire) {
            break;
        }
        let wait = pacer
            .lock()
            .expect("pacer lock")
            .fragment(clock.monotonic());
        if !wait.is_zero() && stop.sleep_or_stop(&*clock, wait).await {
            state.stopped_by_request.store(true, Ordering::Release);
            break;
        }
        // Checked after the pacing wait, so no fragment starts past the connection's age limit.
        if clock.monotonic() >= deadline {
            state.rotated.store(true, Ordering::Release);
            break;
        }
        state.started.store(i + 1, Ordering::Release);
        if let Err(e) = send_fragment(f, &mut file, &mut tx, &pacer, &clock).await {
            match e {
                SendError::Closed => {}
                SendError::Read(e) => {
                    *state.read_error.lock().expect("lock") = Some((i, e.to_string()));
                    let _ = tx.send(Err(e)).await;
                }
            }
            return done(&state);
        }
        state.sent.store(i + 1, Ordering::Release);
    }
    done(&state);
    // Dropping `tx` ends the chunked body with its terminating chunk.
}

enum SendError {
    /// The request is gone (connection lost): the ack reader reports it.
    Closed,
    Read(std::io::Error),
}

async fn send_fragment(
    f: &BatchFragment,
    file: &mut Option<(PathBuf, tokio::fs::File)>,
    tx: &mut mpsc::Sender<Result<Bytes, std::io::Error>>,
    pacer: &Mutex<Pacer>,
    clock: &Arc<dyn Clock>,
) -> Result<(), SendError> {
    if file.as_ref().is_none_or(|(p, _)| *p != f.path) {
        let opened = crate::store::fsx::open_media_async(&f.path)
            .await
            .map_err(SendError::Read)?;
        *file = Some((f.path.clone(), opened));
    }
    let (_, handle) = file.as_mut().expect("opened above");
    handle
        .seek(std::io::SeekFrom::Start(f.row.offset))
        .await
        .map_err(SendError::Read)?;
    let mut left = f.row.size;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; n];
        handle.read_exact(&mut buf).await.map_err(SendError::Read)?;
        let wait = pacer
            .lock()
            .expect("pacer lock")
            .bytes(clock.monotonic(), n as u64);
        if !wait.is_zero() {
            clock.sleep(wait).await;
        }
        tx.send(Ok(Bytes::from(buf)))
            .await
            .map_err(|_| SendError::Closed)?;
        left -= n as u64;
    }
    Ok(())
}
