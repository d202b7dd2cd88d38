//! One PutMedia session: a signed, chunked, streaming POST that stays open while the stream
//! has fragments to send, and its acknowledgement stream. [`PutMedia`] is the production
//! [`MediaSink`].
//!
//! Two futures run side by side in the job's task: the sender writes the header, then each
//! fragment's cluster as the [`Feed`] hands it out (read from its segment file in 256 KiB
//! pieces, paced by the stream's [`Pacer`], through a small bounded channel, so memory stays at
//! a few pieces whatever the fragment size), and the reader turns ack lines into catalog writes.
//! The bookkeeping between them is the pure [`Ledger`] (`session.rs`); this file only moves
//! bytes and applies its effects.
//!
//! Sessions are shaped as the producer libraries shape them:
//! - when nothing more is ready, the sender appends the `AWS_KINESISVIDEO_END_OF_FRAGMENT`
//!   Tags element, so the service closes the last fragment at once instead of waiting for the
//!   next Cluster (PIC `Stream.c:849`; PIC also sends one by itself when frames stop coming,
//!   `Client.c` `checkIntermittentProducerCallback`), and the last cluster of every session
//!   is followed by one;
//! - the body ends only once every sent fragment is PERSISTED or failed (producer-c keeps the
//!   request open until its last ack, `Response.c`), or when the acks stop coming; after a stop
//!   the wait is bounded by `Options::stop_drain`, so the agent's shutdown stays within its 10 s;
//! - a session is replaced before it is 40 minutes old or a few seconds before its signing
//!   credentials expire, whichever is first (PIC `Include.h:305-310`);
//! - a session with nothing to send for `Options::idle_end` ends (the service closes a request
//!   30 s after its last data, seed: PutMedia, Idle), and the next fragment opens a new one.
//!
//! Acks are matched to fragments by FragmentTimecode (our clusters use a 1 ms timecode scale,
//! so it is the catalog's `timecode_ms`). Pacing and session limits run on the job's clock; the
//! response and ack timeouts bound real network I/O, so they stay on tokio's timer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use futures::SinkExt;
use futures::channel::mpsc;
use futures::future::BoxFuture;
use jiff::Timestamp;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{Notify, watch};
use tracing::{debug, warn};

use super::ack::AckParser;
use super::budget::Budget;
use super::endpoint::EndpointCache;
use super::feed::{Feed, FeedFragment, Next};
use super::pacer::Pacer;
use super::session::{Effect, Ledger, ResponseEnd, SenderEnd};
use super::sink::{MediaSink, Outcomes, Session, SessionEnd};
use super::{Options, RunMode, StreamTarget, UploadError};
use crate::clock::Clock;
use crate::media::mkv::end_of_fragment_tags;
use crate::stop::Stop;

/// Size of one body piece read from disk and written to the connection.
const CHUNK: usize = 256 << 10;
/// Body pieces buffered between the file reader and the connection.
const CHANNEL_DEPTH: usize = 4;
/// The signing service name of Kinesis Video Streams.
const SERVICE: &str = "kinesisvideo";
/// Cached credentials are fetched again when they expire sooner than this.
const CREDENTIAL_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Credentials that expire sooner than this are not used to open a session (PIC's
/// `MIN_STREAMING_TOKEN_EXPIRATION_DURATION`, Include.h:300).
const MIN_CREDENTIAL_LIFE: Duration = Duration::from_secs(30);
/// A session ends this long before its credentials expire. PIC rotates 3 s before
/// (`STREAMING_TOKEN_EXPIRATION_GRACE_PERIOD`, Include.h:310) and lets the old connection
/// finish beside the new one; ours waits for its last acks on the same connection first,
/// hence a little more.
pub const ROTATE_BEFORE_EXPIRY: Duration = Duration::from_secs(5);

/// Credentials from the SDK's provider chain, reused until shortly before they expire.
pub struct Signer {
    provider: SharedCredentialsProvider,
    region: String,
    clock: Arc<dyn Clock>,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

/// A request's signed headers, and when the credentials that signed them expire.
pub struct Signed {
    pub headers: HeaderMap,
    pub expires: Option<Timestamp>,
}

impl Signer {
    pub fn new(provider: SharedCredentialsProvider, region: String, clock: Arc<dyn Clock>) -> Self {
        Signer {
            provider,
            region,
            clock,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// Forgets cached credentials (after the service refused them).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    fn life_left(&self, c: &Credentials) -> Option<Duration> {
        let expiry = c.expiry()?;
        let now = SystemTime::UNIX_EPOCH
            + Duration::from_millis(self.clock.now().as_millisecond().max(0) as u64);
        Some(expiry.duration_since(now).unwrap_or(Duration::ZERO))
    }

    async fn credentials(&self) -> Result<Credentials, UploadError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && self.life_left(c).is_none_or(|l| l > CREDENTIAL_MARGIN)
        {
            return Ok(c.clone());
        }
        let c = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| UploadError::Credentials(e.to_string()))?;
        if let Some(left) = self.life_left(&c)
            && left < MIN_CREDENTIAL_LIFE
        {
            *cached = None;
            return Err(UploadError::Credentials(format!(
                "the credentials expire in {} s; a session needs at least {} s",
                left.as_secs(),
                MIN_CREDENTIAL_LIFE.as_secs()
            )));
        }
        *cached = Some(c.clone());
        Ok(c)
    }

    /// Signs a streaming POST to `url` as producer-c does: no `x-amz-content-sha256` header,
    /// and the payload hashed as if the body were empty (`AwsV4Signer.c`, "Streaming treats
    /// this portion as if the body were empty"), since the body is not known in advance.
    pub async fn sign(&self, url: &str, mut headers: HeaderMap) -> Result<Signed, UploadError> {
        let creds = self.credentials().await?;
        let expires = creds
            .expiry()
            .and_then(|e| e.duration_since(SystemTime::UNIX_EPOCH).ok())
            .and_then(|d| Timestamp::from_millisecond(d.as_millis() as i64).ok());
        let identity = creds.into();
        let time = SystemTime::UNIX_EPOCH
            + Duration::from_millis(self.clock.now().as_millisecond().max(0) as u64);
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(time)
            .settings(SigningSettings::default())
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
            SignableBody::Bytes(&[]),
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
        Ok(Signed { headers, expires })
    }
}

/// The production sink: DescribeStream and GetDataEndpoint (cached), then one signed PutMedia
/// session at a time.
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
            signer: Signer::new(provider, region, Arc::clone(&clock)),
            endpoints: EndpointCache::new(client, Arc::clone(&clock), options.endpoint_ttl),
            clock,
            options: options.clone(),
        })
    }

    async fn session(&self, session: Session<'_>) -> Result<SessionEnd, UploadError> {
        let stream = session.stream;
        let endpoint = self.endpoints.get(stream).await?;
        session.outcomes.session_opened();
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

    /// One session: the sender and the ack reader side by side, until both are done.
    async fn put_media(&self, endpoint: &str, session: Session<'_>) -> SessionEnd {
        let Session {
            stream,
            start,
            feed,
            mode,
            pacer,
            budget,
            stop,
            outcomes,
        } = session;
        let url = format!("{endpoint}/putMedia");
        let signed = match headers(stream, start.first.row.timecode_ms) {
            Ok(h) => self.signer.sign(&url, h).await,
            Err(e) => Err(e),
        };
        let signed = match signed {
            Ok(s) => s,
            Err(e) => return SessionEnd::Refused(e),
        };
        let link = Link {
            ledger: Mutex::new(Ledger::new()),
            halt: watch::channel(false).0,
            progress: Notify::new(),
        };
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHANNEL_DEPTH);
        let sender = Sender {
            clock: &self.clock,
            options: &self.options,
            link: &link,
            outcomes,
            stream: stream.key(),
            pacer,
            budget,
            stop,
            mode,
            deadline: self.deadline(signed.expires),
        };
        let reader = Reader {
            options: &self.options,
            link: &link,
            outcomes,
            stream: stream.key(),
            stop,
        };
        let request = self
            .http
            .post(&url)
            .headers(signed.headers)
            .body(reqwest::Body::wrap_stream(rx));
        let body_open = tx.clone();
        let (_, response) = futures::join!(
            sender.run(tx, start.header, start.first, feed),
            reader.run(request, body_open),
        );
        match response {
            Err(refused) => refused,
            Ok(how) => link.ledger().end(how),
        }
    }

    /// When a session opened now must end: 40 minutes at most, and a few seconds before its
    /// credentials expire (monotonic).
    fn deadline(&self, expires: Option<Timestamp>) -> Duration {
        let now = self.clock.monotonic();
        let mut deadline = now + self.options.rotate_after;
        if let Some(at) = expires {
            let left = Duration::try_from(at.duration_since(self.clock.now()))
                .unwrap_or(Duration::ZERO)
                .saturating_sub(ROTATE_BEFORE_EXPIRY);
            deadline = deadline.min(now + left);
        }
        deadline
    }
}

/// What the sender and the reader share.
struct Link {
    ledger: Mutex<Ledger>,
    /// Set by the reader: the sender stops before its next fragment (and stops waiting).
    halt: watch::Sender<bool>,
    /// Wakes the reader when the sender has sent a fragment or finished.
    progress: Notify,
}

impl Link {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn halt(&self) {
        self.halt.send_replace(true);
    }

    fn finish(&self, how: SenderEnd) {
        self.ledger().on_finished(how);
        self.progress.notify_one();
    }
}

/// Applies a ledger's effects: catalog writes, the halt, logs.
async fn apply(link: &Link, outcomes: &Outcomes<'_>, stream: &str, effects: Vec<Effect>) {
    for effect in effects {
        match effect {
            Effect::Uploaded { fragment, number } => {
                if let Err(e) = outcomes.persisted(&fragment, &number).await {
                    warn!(stream, error = %e, "cannot record an upload");
                    let more = link.ledger().on_catalog_error(&e.to_string());
                    if more.contains(&Effect::Halt) {
                        link.halt();
                    }
                }
            }
            Effect::Failed { fragment, what } => {
                warn!(stream, fragment = fragment.id, error = %what, "fragment rejected");
                if let Err(e) = outcomes.rejected(&fragment, &what).await {
                    warn!(stream, error = %e, "cannot record a failure");
                }
            }
            Effect::Halt => link.halt(),
            Effect::Warn(what) => warn!(stream, "{what}"),
        }
    }
}

type BodyTx = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// The body's producer.
struct Sender<'a> {
    clock: &'a Arc<dyn Clock>,
    options: &'a Options,
    link: &'a Link,
    outcomes: &'a Outcomes<'a>,
    stream: &'a str,
    pacer: Arc<Mutex<Pacer>>,
    budget: Arc<Mutex<Budget>>,
    stop: &'a Stop,
    mode: RunMode,
    /// Monotonic time after which no fragment starts.
    deadline: Duration,
}

impl Sender<'_> {
    /// Sends the header and then fragments until the session must end; the EoFr tag follows
    /// the last cluster. Dropping `tx` at the end leaves the body to the reader's clone.
    async fn run(self, mut tx: BodyTx, header: Vec<u8>, first: FeedFragment, feed: &mut Feed) {
        let how = self.send_all(&mut tx, header, first, feed).await;
        debug!(stream = self.stream, ?how, "sending ended");
        self.link.finish(how);
    }

    async fn send_all(
        &self,
        tx: &mut BodyTx,
        header: Vec<u8>,
        first: FeedFragment,
        feed: &mut Feed,
    ) -> SenderEnd {
        if tx.send(Ok(Bytes::from(header))).await.is_err() {
            return SenderEnd::Closed;
        }
        let mut halt = self.link.halt.subscribe();
        let mut stop = self.stop.clone();
        let mut file: Option<(PathBuf, tokio::fs::File)> = None;
        let mut next = Some(first);
        // The last cluster is not yet followed by the EoFr tag.
        let mut open = false;
        let mut last_sent = self.clock.monotonic();
        let how = loop {
            let f = match next.take() {
                Some(f) => f,
                None => match feed.next().await {
                    Ok(Next::Fragment(f)) => f,
                    Ok(Next::NewSession) => break SenderEnd::NewSession,
                    Ok(Next::Finished) => break SenderEnd::CaughtUp,
                    Ok(Next::WindowClosed) => break SenderEnd::Stopped,
                    Ok(Next::Empty) => {
                        // Caught up: close the last fragment now rather than at the next.
                        if open {
                            if !self.send_tags(tx).await {
                                return SenderEnd::Closed;
                            }
                            open = false;
                        }
                        if self.mode == RunMode::UntilEmpty {
                            break SenderEnd::CaughtUp;
                        }
                        let now = self.clock.monotonic();
                        let idle_at = last_sent + self.options.idle_end;
                        tokio::select! {
                            () = feed.changed() => continue,
                            () = stop.stopped() => break SenderEnd::Stopped,
                            _ = halt.wait_for(|h| *h) => break SenderEnd::Halted,
                            () = self.clock.sleep(self.deadline.saturating_sub(now)) => {
                                break SenderEnd::Rotated;
                            }
                            () = self.clock.sleep(idle_at.saturating_sub(now)) => {
                                break SenderEnd::Idle;
                            }
                        }
                    }
                    Err(e) => {
                        warn!(stream = self.stream, error = %e, "cannot read the catalog");
                        self.link.ledger().on_catalog_error(&e.to_string());
                        break SenderEnd::Halted;
                    }
                },
            };
            if stop.is_stopped() {
                break SenderEnd::Stopped;
            }
            if *halt.borrow() {
                break SenderEnd::Halted;
            }
            let wait = self
                .pacer
                .lock()
                .expect("pacer lock")
                .fragment(self.clock.monotonic());
            if !wait.is_zero() && stop.sleep_or_stop(&**self.clock, wait).await {
                break SenderEnd::Stopped;
            }
            // Checked after the pacing wait, so no fragment starts past the session's limit.
            if self.clock.monotonic() >= self.deadline {
                break SenderEnd::Rotated;
            }
            let i = self.link.ledger().on_started(f.row.clone());
            let rates = Rates {
                pacer: &self.pacer,
                budget: &self.budget,
            };
            match send_fragment(&f, &mut file, tx, rates, self.clock).await {
                Ok(()) => {}
                Err(SendError::Closed) => return SenderEnd::Closed,
                Err(SendError::Read(e)) => {
                    let effects = self.link.ledger().on_read_error(i, &e.to_string());
                    apply(self.link, self.outcomes, self.stream, effects).await;
                    // The body must not end cleanly after a partial cluster.
                    let _ = tx.send(Err(e)).await;
                    return SenderEnd::ReadError;
                }
            }
            self.link.ledger().on_sent(i);
            self.link.progress.notify_one();
            open = true;
            last_sent = self.clock.monotonic();
        };
        if open && !self.send_tags(tx).await {
            return SenderEnd::Closed;
        }
        how
    }

    /// Appends the EoFr tag; `false` when the connection is gone.
    async fn send_tags(&self, tx: &mut BodyTx) -> bool {
        tx.send(Ok(Bytes::from(end_of_fragment_tags())))
            .await
            .is_ok()
    }
}

/// The acknowledgement side.
struct Reader<'a> {
    options: &'a Options,
    link: &'a Link,
    outcomes: &'a Outcomes<'a>,
    stream: &'a str,
    stop: &'a Stop,
}

impl Reader<'_> {
    /// Makes the request and reads its acks until the session is settled (then ends the body)
    /// or the response ends; `Err` when the request was refused or never answered. The sender
    /// is halted on the way out, so it never waits on a session that is over.
    async fn run(
        self,
        request: reqwest::RequestBuilder,
        body_open: BodyTx,
    ) -> Result<ResponseEnd, SessionEnd> {
        let r = self.read(request, body_open).await;
        self.link.halt();
        r
    }

    async fn read(
        &self,
        request: reqwest::RequestBuilder,
        body_open: BodyTx,
    ) -> Result<ResponseEnd, SessionEnd> {
        let mut response =
            match tokio::time::timeout(self.options.ack_timeout, request.send()).await {
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
        // The body ends when both this clone and the sender's are dropped.
        let mut body_open = Some(body_open);
        let mut parser = AckParser::new();
        let mut stop = self.stop.clone();
        let mut drain_until: Option<tokio::time::Instant> = None;
        loop {
            if self.link.ledger().settled() {
                // Every sent fragment is resolved: now the body may end.
                drop(body_open.take());
                return Ok(ResponseEnd::Settled);
            }
            let drain = async {
                match drain_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                c = tokio::time::timeout(self.options.ack_timeout, response.chunk()) => {
                    let acks = match c {
                        Err(_) => return Ok(ResponseEnd::Silent),
                        Ok(Err(e)) => return Ok(ResponseEnd::Lost(e.to_string())),
                        Ok(Ok(None)) => {
                            let last = parser.finish();
                            self.acks(last.into_iter().collect()).await;
                            return Ok(ResponseEnd::Ended);
                        }
                        Ok(Ok(Some(bytes))) => parser.push(&bytes),
                    };
                    self.acks(acks).await;
                }
                () = self.link.progress.notified() => {}
                () = stop.stopped(), if drain_until.is_none() => {
                    drain_until = Some(tokio::time::Instant::now() + self.options.stop_drain);
                }
                () = drain => return Ok(ResponseEnd::DrainTimeout),
            }
        }
    }

    async fn acks(&self, acks: Vec<Result<super::ack::Ack, super::ack::AckError>>) {
        for ack in acks {
            let ack = match ack {
                Ok(a) => a,
                Err(e) => {
                    warn!(stream = self.stream, error = %e, "ignoring an acknowledgement line");
                    continue;
                }
            };
            debug!(stream = self.stream, ?ack, "ack");
            if let Some(code) = &ack.error_code {
                warn!(
                    stream = self.stream,
                    error_id = ack.error_id,
                    error_code = code.as_str(),
                    timecode = ack.fragment_timecode,
                    "error acknowledgement"
                );
            }
            let effects = self.link.ledger().on_ack(&ack);
            apply(self.link, self.outcomes, self.stream, effects).await;
        }
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

enum SendError {
    /// The request is gone (connection lost): the ack reader reports it.
    Closed,
    Read(std::io::Error),
}

/// What holds a sender back: the stream's pacing to the service limits, the agent's budget.
struct Rates<'a> {
    pacer: &'a Mutex<Pacer>,
    budget: &'a Mutex<Budget>,
}

impl Rates<'_> {
    /// How many bytes to send next, at most `left`.
    fn piece(&self, clock: &Arc<dyn Clock>, left: u64) -> usize {
        let mut n = left.min(CHUNK as u64) as usize;
        let mut budget = self.budget.lock().expect("budget lock");
        if !budget.is_unlimited() {
            n = n.min(budget.chunk(clock.now(), clock.monotonic()));
        }
        n
    }

    /// Reserves `n` bytes with both; how long to wait before sending them.
    fn reserve(&self, clock: &Arc<dyn Clock>, n: usize) -> Duration {
        let mono = clock.monotonic();
        let pace = self.pacer.lock().expect("pacer lock").bytes(mono, n as u64);
        let mut budget = self.budget.lock().expect("budget lock");
        if budget.is_unlimited() {
            return pace;
        }
        pace.max(budget.take(clock.now(), mono, n))
    }
}

async fn send_fragment(
    f: &FeedFragment,
    file: &mut Option<(PathBuf, tokio::fs::File)>,
    tx: &mut mpsc::Sender<Result<Bytes, std::io::Error>>,
    rates: Rates<'_>,
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
        let n = rates.piece(clock, left);
        let mut buf = vec![0u8; n];
        handle.read_exact(&mut buf).await.map_err(SendError::Read)?;
        let wait = rates.reserve(clock, n);
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
