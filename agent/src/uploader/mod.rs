//! The uploader: sends a stream's recorded fragments to Kinesis Video Streams with PutMedia.
//!
//! - [`ack`]: the acknowledgement-stream parser and the error table (pure);
//! - [`pacer`]: 5 fragments/s and 12.5 MB/s per stream (pure);
//! - [`endpoint`]: GetDataEndpoint through the AWS SDK, cached 40 minutes;
//! - [`putmedia`]: one signed, streaming PutMedia request and its acks.
//!
//! This module is the per-stream job: [`Uploader::start`] spawns it, [`UploadHandle::stop`]
//! ends it after the fragment in flight (the schedule's window end). Each round takes the
//! oldest pending fragments that share one CodecPrivate (a change opens a new request), sends
//! them on one request, and reacts to how it ended: transient failures back off (1 s doubling to
//! 30 s, jittered) and resend from the first unpersisted fragment, rejected fragments are marked
//! failed and skipped, a deleted stream ends the job with USER_ERROR. A fragment is marked
//! uploaded only by its PERSISTED ack. Streams upload in parallel, one task each.

pub mod ack;
pub mod endpoint;
pub mod pacer;
pub mod putmedia;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::catalog::{Catalog, CatalogError, Job, SegmentId, SegmentRow};
use crate::clock::Clock;
use crate::edge_config::JobStatus;
use endpoint::EndpointCache;
use pacer::Pacer;
use putmedia::{Batch, BatchFragment, SessionEnd, Signer};

/// Becomes `true` when the job must stop (after the fragment in flight).
pub type StopSignal = watch::Receiver<bool>;

/// Largest segment header accepted from disk (CodecPrivate is at most 1 MiB).
const MAX_HEADER: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("stream {stream} does not exist")]
    StreamNotFound { stream: String },
    #[error("stream {stream} is not active (4008 STREAM_NOT_ACTIVE)")]
    StreamNotActive { stream: String },
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    #[error("GetDataEndpoint: {0}")]
    Endpoint(String),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("request signing: {0}")]
    Signing(String),
    #[error("PutMedia refused: HTTP {status} {error_type}: {message}")]
    Http {
        status: u16,
        error_type: String,
        message: String,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("configuration: {0}")]
    Config(String),
}

impl UploadError {
    /// Only the user can fix it (the stream, its state or the permissions): USER_ERROR.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            UploadError::StreamNotFound { .. }
                | UploadError::StreamNotActive { .. }
                | UploadError::NotAuthorized(_)
        )
    }
}

/// The stream a job uploads to: by name, or by ARN (as the edge configuration gives it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamTarget {
    Name(String),
    /// `name` is the catalog's key for the stream.
    Arn {
        arn: String,
        name: String,
    },
}

impl StreamTarget {
    /// The stream name the catalog files its media under.
    pub fn key(&self) -> &str {
        match self {
            StreamTarget::Name(n) => n,
            StreamTarget::Arn { name, .. } => name,
        }
    }
}

/// Tunables; the defaults are the production values.
#[derive(Clone, Debug)]
pub struct Options {
    /// A connection is replaced after this long (the service closes it at 45 min and the
    /// producer SDK rotates within 40).
    pub rotate_after: Duration,
    /// No response or ack line for this long means the connection is dead.
    pub ack_timeout: Duration,
    /// After sending stops early (window end), how long to wait for the acks of what was sent.
    pub ack_grace: Duration,
    /// Pace to the service limits; off only for benchmarks.
    pub pacing: bool,
    /// Most fragments sent on one request.
    pub batch_fragments: usize,
    /// How often an idle job looks for new fragments.
    pub poll_interval: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long a GetDataEndpoint answer is reused.
    pub endpoint_ttl: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rotate_after: Duration::from_secs(35 * 60),
            ack_timeout: Duration::from_secs(30),
            ack_grace: Duration::from_secs(3),
            pacing: true,
            batch_fragments: 300,
            poll_interval: Duration::from_secs(2),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            endpoint_ttl: endpoint::ENDPOINT_TTL,
        }
    }
}

/// What a job has done so far; shared with whoever displays it.
#[derive(Debug, Default)]
pub struct Progress {
    fragments_uploaded: AtomicU64,
    bytes_uploaded: AtomicU64,
    fragments_failed: AtomicU64,
    sessions: AtomicU64,
    retries: AtomicU64,
    last_persisted_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
    /// Notified at every PERSISTED ack (what waits may delete the fragment now).
    persisted: tokio::sync::Notify,
}

/// A copy of [`Progress`] at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub fragments_uploaded: u64,
    pub bytes_uploaded: u64,
    pub fragments_failed: u64,
    pub sessions: u64,
    pub retries: u64,
    /// When the last PERSISTED ack arrived.
    pub last_persisted: Option<Timestamp>,
    pub last_error: Option<String>,
}

impl Progress {
    fn add_uploaded(&self, bytes: u64, now: Timestamp) {
        self.fragments_uploaded.fetch_add(1, Ordering::Relaxed);
        self.bytes_uploaded.fetch_add(bytes, Ordering::Relaxed);
        self.last_persisted_ms
            .store(now.as_millisecond(), Ordering::Relaxed);
        self.persisted.notify_one();
    }

    /// Waits for the next PERSISTED ack (or returns at once for one not yet waited for).
    pub async fn persisted(&self) {
        self.persisted.notified().await
    }

    fn add_failed(&self, error: &str) {
        self.fragments_failed.fetch_add(1, Ordering::Relaxed);
        self.set_error(error);
    }

    fn set_error(&self, error: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_owned());
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        let ms = self.last_persisted_ms.load(Ordering::Relaxed);
        ProgressSnapshot {
            fragments_uploaded: self.fragments_uploaded.load(Ordering::Relaxed),
            bytes_uploaded: self.bytes_uploaded.load(Ordering::Relaxed),
            fragments_failed: self.fragments_failed.load(Ordering::Relaxed),
            sessions: self.sessions.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            last_persisted: (ms != 0)
                .then(|| Timestamp::from_millisecond(ms).ok())
                .flatten(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// When a job run returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Until stopped; an idle job polls for new fragments.
    UntilStopped,
    /// Until no fragment is pending (or stopped): the operator's `upload --until-empty`.
    UntilEmpty,
}

pub(crate) struct Shared {
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    signer: Signer,
    endpoints: EndpointCache,
    recording_dir: PathBuf,
    options: Options,
}

/// Uploads streams; cheap to clone, one per agent.
#[derive(Clone)]
pub struct Uploader {
    shared: Arc<Shared>,
}

impl Uploader {
    /// Loads the AWS configuration (region, credentials provider chain, endpoint overrides such
    /// as `AWS_ENDPOINT_URL_KINESIS_VIDEO`) from the environment.
    pub async fn from_env(
        catalog: Arc<Catalog>,
        recording_dir: PathBuf,
        clock: Arc<dyn Clock>,
        options: Options,
    ) -> Result<Uploader, UploadError> {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        Self::new(&sdk, catalog, recording_dir, clock, options)
    }

    pub fn new(
        sdk: &aws_config::SdkConfig,
        catalog: Arc<Catalog>,
        recording_dir: PathBuf,
        clock: Arc<dyn Clock>,
        options: Options,
    ) -> Result<Uploader, UploadError> {
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
        Ok(Uploader {
            shared: Arc::new(Shared {
                catalog,
                endpoints: EndpointCache::new(client, Arc::clone(&clock), options.endpoint_ttl),
                clock,
                http,
                signer: Signer::new(provider, region),
                recording_dir,
                options,
            }),
        })
    }

    /// Spawns a stream's upload job; it runs until [`UploadHandle::stop`], until `until` (the
    /// schedule window's end) or, in [`RunMode::UntilEmpty`], until nothing is pending.
    pub fn start(
        &self,
        stream: StreamTarget,
        mode: RunMode,
        until: Option<Timestamp>,
    ) -> UploadHandle {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let progress = Arc::new(Progress::default());
        if let Some(until) = until {
            let tx = Arc::clone(&stop_tx);
            let left = until.duration_since(self.shared.clock.now());
            let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(left) => { let _ = tx.send(true); }
                    _ = tx.closed() => {}
                }
            });
        }
        let me = self.clone();
        let p = Arc::clone(&progress);
        let task = tokio::spawn(async move { me.run(&stream, mode, stop_rx, &p).await });
        UploadHandle {
            stop: stop_tx,
            task,
            progress,
            result: None,
        }
    }

    /// The job loop (see the module doc). Returns when stopped, when nothing is pending in
    /// [`RunMode::UntilEmpty`], or with an error the job cannot get past (stream gone).
    pub async fn run(
        &self,
        stream: &StreamTarget,
        mode: RunMode,
        mut stop: StopSignal,
        progress: &Progress,
    ) -> Result<ProgressSnapshot, UploadError> {
        let s = &self.shared;
        let key = stream.key();
        let pacer = Arc::new(Mutex::new(if s.options.pacing {
            Pacer::new(s.clock.monotonic())
        } else {
            Pacer::unlimited()
        }));
        let mut backoff = Backoff::new(s.options.backoff_min, s.options.backoff_max);
        let mut segments: HashMap<SegmentId, SegmentRow> = HashMap::new();
        let mut failures = 0u32;
        let mut reported = progress.snapshot();
        info!(stream = key, "upload job started");
        let result = loop {
            if *stop.borrow() {
                break Ok(());
            }
            let batch = match self.next_batch(key, &mut segments).await {
                Ok(b) => b,
                Err(e) => break Err(e),
            };
            let Some(batch) = batch else {
                if mode == RunMode::UntilEmpty {
                    break Ok(());
                }
                if wait_or_stop(&mut stop, s.options.poll_interval).await {
                    break Ok(());
                }
                continue;
            };
            let endpoint = match s.endpoints.get(stream).await {
                Ok(e) => e,
                Err(e @ UploadError::StreamNotFound { .. }) => break Err(e),
                Err(e) => {
                    self.failed(key, &e.to_string(), &mut failures, progress, &e);
                    if wait_or_stop(&mut stop, backoff.next()).await {
                        break Ok(());
                    }
                    continue;
                }
            };
            progress.sessions.fetch_add(1, Ordering::Relaxed);
            let end = putmedia::put_media(
                s,
                &endpoint,
                stream,
                batch,
                Arc::clone(&pacer),
                &stop,
                progress,
            )
            .await;
            let now = progress.snapshot();
            if now.fragments_uploaded != reported.fragments_uploaded {
                self.status(key, JobStatus::Success, None, now.last_persisted);
                reported = now;
                // A session that persisted fragments was no failure: a cut after it backs off
                // from the minimum again (the failures in a row start again from zero).
                failures = 0;
                backoff.reset();
            }
            match end {
                SessionEnd::Done | SessionEnd::Rotated | SessionEnd::FragmentFailed => {
                    failures = 0;
                    backoff.reset();
                }
                SessionEnd::Stopped => break Ok(()),
                SessionEnd::StreamNotActive => {
                    break Err(UploadError::StreamNotActive {
                        stream: key.to_owned(),
                    });
                }
                SessionEnd::Retry { reason, connection } => {
                    warn!(
                        stream = key,
                        reason,
                        "upload interrupted; will resend from the first unpersisted fragment"
                    );
                    progress.retries.fetch_add(1, Ordering::Relaxed);
                    if connection {
                        // The endpoint may have moved; an error ack came from a live one.
                        s.endpoints.invalidate(stream);
                    }
                    let e = UploadError::Endpoint(reason.clone());
                    self.failed(key, &reason, &mut failures, progress, &e);
                    if wait_or_stop(&mut stop, backoff.next()).await {
                        break Ok(());
                    }
                }
                SessionEnd::Refused(e) => {
                    if let UploadError::Http { status: 404, .. } = e {
                        break Err(UploadError::StreamNotFound {
                            stream: key.to_owned(),
                        });
                    }
                    warn!(stream = key, error = %e, "PutMedia refused");
                    progress.retries.fetch_add(1, Ordering::Relaxed);
                    s.endpoints.invalidate(stream);
                    if let UploadError::Http {
                        status: 401 | 403, ..
                    } = e
                    {
                        // Refused credentials are fetched again from the provider chain.
                        s.signer.invalidate().await;
                    }
                    self.failed(key, &e.to_string(), &mut failures, progress, &e);
                    if wait_or_stop(&mut stop, backoff.next()).await {
                        break Ok(());
                    }
                }
            }
        };
        let snap = progress.snapshot();
        match &result {
            Ok(()) => {
                if failures == 0 {
                    self.status(key, JobStatus::Success, None, snap.last_persisted);
                }
                info!(
                    stream = key,
                    fragments = snap.fragments_uploaded,
                    bytes = snap.bytes_uploaded,
                    failed = snap.fragments_failed,
                    "upload job stopped"
                );
            }
            Err(e) => {
                let status = if e.is_user_error() {
                    JobStatus::UserError
                } else {
                    JobStatus::SystemError
                };
                self.status(key, status, Some(&e.to_string()), snap.last_persisted);
                warn!(stream = key, error = %e, "upload job ended");
            }
        }
        result.map(|()| snap)
    }

    /// Records a transient failure; after three in a row the job status shows it.
    fn failed(
        &self,
        key: &str,
        reason: &str,
        failures: &mut u32,
        progress: &Progress,
        e: &UploadError,
    ) {
        progress.set_error(reason);
        *failures += 1;
        let status = match e {
            UploadError::NotAuthorized(_)
            | UploadError::Http {
                status: 401 | 403, ..
            } => JobStatus::UserError,
            _ if *failures >= 3 => JobStatus::SystemError,
            _ => return,
        };
        self.status(key, status, Some(reason), None);
    }

    /// LastUploaderStatus in the catalog. A stream without an edge configuration (an operator's
    /// `upload` of leftover media) has no status row to write, which is not an upload failure.
    fn status(
        &self,
        key: &str,
        status: JobStatus,
        details: Option<&str>,
        collected: Option<Timestamp>,
    ) {
        let s = &self.shared;
        let result = match s.catalog.config(key) {
            Ok(Some(_)) => s.catalog.set_job_status(
                key,
                Job::Uploader,
                status,
                details,
                collected,
                s.clock.now(),
            ),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            warn!(stream = key, error = %e, "cannot record the uploader status");
        }
    }

    /// The oldest pending fragments that share the first one's codec, with the segment header
    /// to send before them; `None` when nothing is pending.
    async fn next_batch(
        &self,
        stream: &str,
        segments: &mut HashMap<SegmentId, SegmentRow>,
    ) -> Result<Option<Batch>, UploadError> {
        let s = &self.shared;
        // Segment rows are cached for one batch only: SQLite gives the id of a deleted newest
        // segment to the next one (the janitor deletes the segment closed by recovery, or the
        // last one before a pause, once uploaded), and a row cached across batches would then
        // name the deleted file, failing the new segment's fragments as unreadable.
        segments.clear();
        // Bounded: each pass either returns or marks one fragment failed.
        for _ in 0..s.options.batch_fragments.max(1) {
            let rows = s
                .catalog
                .pending_fragments(stream, s.options.batch_fragments)?;
            let Some(first) = rows.first() else {
                return Ok(None);
            };
            let first_seg = self.segment(first.segment_id, segments)?;
            let path = s.recording_dir.join(&first_seg.path);
            let header = match read_header(&path, first_seg.header_size).await {
                Ok(h) => h,
                Err(e) => {
                    let what = format!("segment file {} unreadable: {e}", first_seg.path);
                    warn!(stream, error = what, "skipping fragment");
                    s.catalog
                        .mark_fragment_failed(first.id, &what, s.clock.now())?;
                    continue;
                }
            };
            let mut fragments = Vec::with_capacity(rows.len());
            for row in rows {
                let seg = self.segment(row.segment_id, segments)?;
                let same = seg.codec_id == first_seg.codec_id
                    && seg.codec_private == first_seg.codec_private
                    && (seg.width, seg.height) == (first_seg.width, first_seg.height);
                if !same {
                    break;
                }
                let path = s.recording_dir.join(&seg.path);
                fragments.push(BatchFragment { row, path });
            }
            return Ok(Some(Batch { header, fragments }));
        }
        Ok(None)
    }

    fn segment(
        &self,
        id: SegmentId,
        cache: &mut HashMap<SegmentId, SegmentRow>,
    ) -> Result<SegmentRow, UploadError> {
        if let Some(s) = cache.get(&id) {
            return Ok(s.clone());
        }
        let row = self.shared.catalog.segment(id)?.ok_or_else(|| {
            UploadError::Catalog(CatalogError::NotFound {
                what: "segment",
                key: id.to_string(),
            })
        })?;
        cache.insert(id, row.clone());
        Ok(row)
    }
}

async fn read_header(path: &Path, len: u64) -> std::io::Result<Vec<u8>> {
    if len == 0 || len > MAX_HEADER {
        return Err(std::io::Error::other(format!("header size {len}")));
    }
    let mut f = crate::store::fsx::open_media_async(path).await?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Waits `d` unless a stop comes first; true when stopped (or the stop sender is gone).
async fn wait_or_stop(stop: &mut StopSignal, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        r = stop.wait_for(|s| *s) => { let _ = r; true }
    }
}

/// Exponential backoff with jitter: each delay is drawn from [d/2, d], d doubling to the cap.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let r = getrandom::u64().unwrap_or(0) % 1000;
        d / 2 + d.mul_f64(r as f64 / 2000.0)
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// A running job.
pub struct UploadHandle {
    stop: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<Result<ProgressSnapshot, UploadError>>,
    progress: Arc<Progress>,
    /// The job's result once [`UploadHandle::ended`] saw it.
    result: Option<Result<ProgressSnapshot, UploadError>>,
}

fn joined(
    r: Result<Result<ProgressSnapshot, UploadError>, tokio::task::JoinError>,
) -> Result<ProgressSnapshot, UploadError> {
    r.unwrap_or_else(|e| Err(UploadError::Config(format!("upload task failed: {e}"))))
}

impl UploadHandle {
    /// Asks the job to stop after the fragment in flight (and its acks, within the grace).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    pub fn progress(&self) -> ProgressSnapshot {
        self.progress.snapshot()
    }

    /// The live progress, shared with the job (to wait on [`Progress::persisted`]).
    pub fn live_progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    pub fn is_finished(&self) -> bool {
        self.result.is_some() || self.task.is_finished()
    }

    /// Waits until the job has ended, keeping its result for [`UploadHandle::wait`]
    /// (cancel-safe, for `select!`).
    pub async fn ended(&mut self) {
        if self.result.is_none() {
            self.result = Some(joined((&mut self.task).await));
        }
    }

    /// Waits for the job to end.
    pub async fn wait(self) -> Result<ProgressSnapshot, UploadError> {
        match self.result {
            Some(r) => r,
            None => joined(self.task.await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let expect = [1u64, 2, 4, 8, 16, 30, 30];
        for e in expect {
            let d = b.next();
            let e = Duration::from_secs(e);
            assert!(d >= e / 2 && d <= e, "{d:?} not in [{:?}, {e:?}]", e / 2);
        }
        b.reset();
        assert!(b.next() <= Duration::from_secs(1));
    }

    #[test]
    fn stream_target_key_is_the_catalog_name() {
        let t = StreamTarget::Arn {
            arn: "arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam/1".into(),
            name: "cam".into(),
        };
        assert_eq!(t.key(), "cam");
    }
}
