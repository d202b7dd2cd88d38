//! One PutMedia request: a signed, chunked, streaming POST and its acknowledgement stream.
//!
//! The body is produced by a task that reads the batch's clusters from the segment files in
//! 256 KiB pieces (never a whole file in memory), paced by the stream's [`Pacer`], and handed to
//! reqwest through a small bounded channel, so memory stays at a few chunks whatever the
//! fragment size. The response (acks) is read concurrently: the service answers 200 as soon as
//! the headers are valid and acks each fragment while later ones are still being sent.
//!
//! Acks are matched to fragments by FragmentTimecode (our clusters use a 1 ms timecode scale,
//! so it is the catalog's `timecode_ms`). Only PERSISTED marks a fragment uploaded, at once and
//! in the catalog, so a crash right after loses no acknowledged work. The sender stops only
//! between fragments: on a stop request, at the rotation deadline, or after an ERROR ack.

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
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::{debug, warn};

use super::ack::{AckEventType, AckParser, ErrorClass, classify, error_name};
use super::pacer::Pacer;
use super::{Progress, Shared, StopSignal, StreamTarget, UploadError};
use crate::catalog::FragmentRow;

/// Size of one body piece read from disk and written to the connection.
const CHUNK: usize = 256 << 10;
/// Body pieces buffered between the file reader and the connection.
const CHANNEL_DEPTH: usize = 4;
/// The signing service name of Kinesis Video Streams.
const SERVICE: &str = "kinesisvideo";
/// Credentials are refreshed this long before they expire.
const CREDENTIAL_MARGIN: Duration = Duration::from_secs(5 * 60);

/// A fragment to send and the segment file its cluster lives in.
#[derive(Clone, Debug)]
pub struct BatchFragment {
    pub row: FragmentRow,
    pub path: PathBuf,
}

/// A request's media: the segment header, then consecutive clusters sharing its CodecPrivate.
#[derive(Clone, Debug)]
pub struct Batch {
    pub header: Vec<u8>,
    pub fragments: Vec<BatchFragment>,
}

/// Why a request ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Every fragment of the batch is persisted or marked failed.
    Done,
    /// A stop request ended sending; acked fragments are marked, the rest stay pending.
    Stopped,
    /// The connection reached its age limit; continue on a new one at once.
    Rotated,
    /// A fragment was rejected for good (marked failed); continue at once.
    FragmentFailed,
    /// Transient failure: resend from the first unpersisted fragment after a backoff.
    /// `connection` when the connection itself failed (the endpoint is looked up again).
    Retry { reason: String, connection: bool },
    /// 4008: the stream was deleted.
    StreamNotActive,
    /// The request itself was refused (HTTP status other than 200).
    Refused(UploadError),
}

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

/// Sends one batch on one PutMedia request and processes its acks.
pub(crate) async fn put_media(
    shared: &Shared,
    endpoint: &str,
    stream: &StreamTarget,
    batch: Batch,
    pacer: Arc<Mutex<Pacer>>,
    stop: &StopSignal,
    progress: &Progress,
) -> SessionEnd {
    let Some(first) = batch.fragments.first() else {
        return SessionEnd::Done;
    };
    let url = format!("{endpoint}/putMedia");
    let mut headers = HeaderMap::new();
    let (name, value) = match stream {
        StreamTarget::Name(n) => ("x-amzn-stream-name", n.as_str()),
        StreamTarget::Arn { arn, .. } => ("x-amzn-stream-arn", arn.as_str()),
    };
    let Ok(value) = HeaderValue::from_str(value) else {
        return SessionEnd::Refused(UploadError::Config(format!(
            "stream {value:?} is not a valid header value"
        )));
    };
    headers.insert(name, value);
    headers.insert(
        "x-amzn-fragment-timecode-type",
        HeaderValue::from_static("ABSOLUTE"),
    );
    // The producer started recording this media when its first fragment began.
    let start_ms = first.row.timecode_ms;
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
    let now = SystemTime::UNIX_EPOCH
        + Duration::from_millis(shared.clock.now().as_millisecond().max(0) as u64);
    if let Err(e) = shared.signer.sign(&url, &mut headers, now).await {
        return SessionEnd::Refused(e);
    }

    let by_timecode: HashMap<i64, usize> = batch
        .fragments
        .iter()
        .enumerate()
        .map(|(i, f)| (f.row.timecode_ms, i))
        .collect();
    let total = batch.fragments.len();
    let sizes: Vec<u64> = batch.fragments.iter().map(|f| f.row.size).collect();
    let ids: Vec<i64> = batch.fragments.iter().map(|f| f.row.id).collect();

    let state = Arc::new(SendState::default());
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHANNEL_DEPTH);
    let deadline = shared.clock.monotonic() + shared.options.rotate_after;
    let sender = tokio::spawn(send_body(
        batch,
        tx,
        Arc::clone(&state),
        pacer,
        Arc::clone(&shared.clock),
        stop.clone(),
        deadline,
    ));
    let _abort_sender = AbortOnDrop(sender);

    let request = shared
        .http
        .post(&url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(rx));
    let response = match tokio::time::timeout(shared.options.ack_timeout, request.send()).await {
        Err(_) => {
            return SessionEnd::Retry {
                reason: "no response to PutMedia".into(),
                connection: true,
            };
        }
        Ok(Err(e)) => {
            return SessionEnd::Retry {
                reason: format!("PutMedia request failed: {e}"),
                connection: true,
            };
        }
        Ok(Ok(r)) => r,
    };
    if response.status() != reqwest::StatusCode::OK {
        return SessionEnd::Refused(refusal(response).await);
    }

    let mut response = response;
    let mut parser = AckParser::new();
    // Per fragment: resolved (persisted or failed) yet?
    let mut resolved = vec![false; total];
    let mut resolved_count = 0usize;
    let mut retry: Option<String> = None;
    let mut connection_failed = false;
    let mut not_active = false;
    let mut failed_fragment = false;
    let mut stop = stop.clone();
    let mut stop_live = true;
    let mut grace_until: Option<tokio::time::Instant> = None;
    let mut stream_ended = false;

    loop {
        let finished = state.finished.load(Ordering::Acquire);
        let sent = state.sent.load(Ordering::Acquire);
        if resolved_count == total
            || (finished && (0..sent).all(|i| resolved[i]) && sent > 0 && retry.is_none())
        {
            break;
        }
        if finished && grace_until.is_none() && sent < total {
            // Sending ended early (stop, rotation, error): wait a bounded time for the acks of
            // what was sent.
            grace_until = Some(tokio::time::Instant::now() + shared.options.ack_grace);
        }
        let grace = async {
            match grace_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let chunk = tokio::select! {
            c = tokio::time::timeout(shared.options.ack_timeout, response.chunk()) => c,
            _ = grace => break,
            _ = state.finished_notify.notified(), if !finished => continue,
            r = stop.changed(), if stop_live => {
                // A dropped sender can never signal again; stop watching it.
                stop_live = r.is_ok() && !*stop.borrow();
                continue;
            }
        };
        let acks = match chunk {
            Err(_) => {
                connection_failed = true;
                retry.get_or_insert_with(|| {
                    format!("no acknowledgement for {:?}", shared.options.ack_timeout)
                });
                break;
            }
            Ok(Err(e)) => {
                if state.read_error.lock().expect("lock").is_none() {
                    connection_failed = true;
                    retry.get_or_insert_with(|| format!("connection lost: {e}"));
                }
                break;
            }
            Ok(Ok(None)) => {
                stream_ended = true;
                parser.finish().into_iter().collect::<Vec<_>>()
            }
            Ok(Ok(Some(bytes))) => parser.push(&bytes),
        };
        for ack in acks {
            let ack = match ack {
                Ok(a) => a,
                Err(e) => {
                    warn!(stream = stream.key(), error = %e, "ignoring an acknowledgement line");
                    continue;
                }
            };
            debug!(stream = stream.key(), ?ack, "ack");
            let index = ack
                .fragment_timecode
                .and_then(|t| by_timecode.get(&t).copied());
            match ack.event {
                AckEventType::Persisted => {
                    let (Some(i), Some(number)) = (index, ack.fragment_number.as_deref()) else {
                        warn!(
                            stream = stream.key(),
                            ?ack,
                            "PERSISTED for no fragment of this request"
                        );
                        continue;
                    };
                    if resolved[i] {
                        continue;
                    }
                    // A durable SQLite commit (fsync) must not stall the runtime's workers,
                    // which other streams' senders share.
                    let (catalog, id, number, now) = (
                        Arc::clone(&shared.catalog),
                        ids[i],
                        number.to_owned(),
                        shared.clock.now(),
                    );
                    let marked = tokio::task::spawn_blocking(move || {
                        catalog
                            .mark_fragment_uploaded(id, &number, now)
                            .map_err(|e| e.to_string())
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("catalog task failed: {e}")));
                    if let Err(e) = marked {
                        warn!(stream = stream.key(), error = %e, "cannot record an upload");
                        retry.get_or_insert_with(|| format!("catalog: {e}"));
                        state.halt.store(true, Ordering::Release);
                        continue;
                    }
                    resolved[i] = true;
                    resolved_count += 1;
                    progress.add_uploaded(sizes[i], shared.clock.now());
                }
                AckEventType::Error => {
                    let id = ack.error_id.unwrap_or(0);
                    state.halt.store(true, Ordering::Release);
                    // An error without a known timecode is about the fragment in flight.
                    let i = index.or_else(|| {
                        let started = state.started.load(Ordering::Acquire);
                        (0..started.max(1).min(total)).find(|&i| !resolved[i])
                    });
                    let what = format!("{id} {}", error_name(id));
                    match classify(id) {
                        ErrorClass::Retry => {
                            retry.get_or_insert_with(|| format!("error ack {what}"));
                        }
                        ErrorClass::StreamNotActive => not_active = true,
                        ErrorClass::FailFragment => {
                            let Some(i) = i else { continue };
                            if resolved[i] {
                                continue;
                            }
                            warn!(stream = stream.key(), fragment = ids[i], error = %what, "fragment rejected");
                            if let Err(e) = shared.catalog.mark_fragment_failed(
                                ids[i],
                                &what,
                                shared.clock.now(),
                            ) {
                                warn!(stream = stream.key(), error = %e, "cannot record a failure");
                            }
                            resolved[i] = true;
                            resolved_count += 1;
                            failed_fragment = true;
                            progress.add_failed(&what);
                        }
                    }
                }
                _ => {}
            }
        }
        if stream_ended {
            break;
        }
    }

    if let Some((i, e)) = state.read_error.lock().expect("lock").take() {
        let what = format!("local read error: {e}");
        if i < total && !resolved[i] {
            let _ = shared
                .catalog
                .mark_fragment_failed(ids[i], &what, shared.clock.now());
            progress.add_failed(&what);
        }
        return SessionEnd::FragmentFailed;
    }
    if not_active {
        return SessionEnd::StreamNotActive;
    }
    if let Some(reason) = retry {
        return SessionEnd::Retry {
            reason,
            connection: connection_failed,
        };
    }
    if resolved_count == total {
        return SessionEnd::Done;
    }
    // Unacknowledged fragments stay pending in every case below, and are sent again.
    if state.stopped_by_request.load(Ordering::Acquire) {
        return SessionEnd::Stopped;
    }
    if failed_fragment {
        return SessionEnd::FragmentFailed;
    }
    if state.rotated.load(Ordering::Acquire) {
        return SessionEnd::Rotated;
    }
    let sent = state.sent.load(Ordering::Acquire);
    SessionEnd::Retry {
        reason: format!(
            "the response ended with {} of {sent} sent fragments unacknowledged",
            (0..sent).filter(|&i| !resolved[i]).count()
        ),
        connection: true,
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
    clock: Arc<dyn crate::clock::Clock>,
    mut stop: StopSignal,
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
        if *stop.borrow() {
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
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => {
                    state.stopped_by_request.store(true, Ordering::Release);
                    break;
                }
            }
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
    clock: &Arc<dyn crate::clock::Clock>,
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
            tokio::time::sleep(wait).await;
        }
        tx.send(Ok(Bytes::from(buf)))
            .await
            .map_err(|_| SendError::Closed)?;
        left -= n as u64;
    }
    Ok(())
}
