//! The uploader: sends a stream's recorded fragments to Kinesis Video Streams with PutMedia.
//!
//! - [`ack`]: the acknowledgement-stream parser and the error table (pure);
//! - [`pacer`]: 5 fragments/s and 12.5 MB/s per stream (pure);
//! - [`endpoint`]: GetDataEndpoint through the AWS SDK, cached 40 minutes;
//! - [`feed`]: the fragments a session sends, as the recorder commits them;
//! - [`session`]: a session's bookkeeping, what each ack means (pure);
//! - [`putmedia`]: the signed, streaming PutMedia session, a thin I/O loop around [`session`];
//! - [`sink`]: the seam between the job and PutMedia ([`MediaSink`]), and a sink for tests.
//!
//! This module is the per-stream job: [`Uploader::start`] spawns it, [`UploadHandle::stop`]
//! ends it after the fragment in flight. Each round asks the [`agenda`] what comes first (live,
//! requested ranges, the backlog while its window is open) and opens one session of it at its
//! oldest pending fragment; it streams that and then each new fragment as it is committed,
//! until a stop, more urgent work, rotation, a codec change, an idle spell or an error ends it
//! (design/uploads.md). The job reacts to how it ended: transient failures back off
//! ([`BACKOFF`]) and resend from the first unpersisted fragment, rejected fragments are marked
//! failed and skipped, a deleted stream ends the job with USER_ERROR. A fragment is marked
//! uploaded only by its PERSISTED ack. Streams upload in parallel, one task each.

pub mod ack;
pub mod agenda;
pub mod budget;
pub mod endpoint;
pub mod feed;
pub mod pacer;
pub mod putmedia;
pub mod request;
pub mod session;
pub mod sink;

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tracing::{info, warn};

use crate::backoff::{Backoff, Retry};
use crate::catalog::{Catalog, CatalogError, Job, RequestKind, RequestRow, RequestState};
use crate::clock::Clock;
use crate::edge_config::{JobError, JobStatus};
use crate::stop::{self, Stop, Stopper};
use agenda::{Backlog, BacklogOrder, Work};
use feed::Feed;
use pacer::Pacer;
use putmedia::PutMedia;
pub use sink::MediaSink;
use sink::{Outcomes, Session, SessionEnd};

/// Retries of a failed upload: 1 s doubling to 30 s, each wait drawn from `[d/2, d]`.
pub const BACKOFF: Backoff = Backoff {
    min: Duration::from_secs(1),
    max: Duration::from_secs(30),
    jitter: 0.5,
};

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("stream {stream} does not exist")]
    StreamNotFound { stream: String },
    /// 4008 STREAM_NOT_ACTIVE or 4507 STREAM_DELETED; `what` says which.
    #[error("stream {stream} is gone ({what})")]
    StreamNotActive { stream: String, what: String },
    #[error(
        "stream {stream} keeps no data (DataRetentionInHours 0): Kinesis Video Streams never \
         acknowledges its fragments as PERSISTED, so an upload could never be confirmed; give \
         the stream a retention period"
    )]
    NoRetention { stream: String },
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
    #[error("catalog task failed: {0}")]
    CatalogTask(tokio::task::JoinError),
    #[error("configuration: {0}")]
    Config(String),
}

impl JobError for UploadError {
    /// Only the user can fix it (the stream, its state or the permissions): USER_ERROR.
    fn job_status(&self) -> JobStatus {
        match self {
            UploadError::StreamNotFound { .. }
            | UploadError::StreamNotActive { .. }
            | UploadError::NoRetention { .. }
            | UploadError::NotAuthorized(_)
            | UploadError::Http {
                status: 401 | 403, ..
            } => JobStatus::UserError,
            _ => JobStatus::SystemError,
        }
    }
}

/// Runs a catalog call on the blocking pool, the one way async code reaches SQLite: a durable
/// commit (fsync) must not stall the runtime's workers, which every stream's job shares.
async fn blocking<T, F>(catalog: &Arc<Catalog>, f: F) -> Result<T, UploadError>
where
    T: Send + 'static,
    F: FnOnce(&Catalog) -> Result<T, CatalogError> + Send + 'static,
{
    catalog
        .blocking(f)
        .await
        .map_err(UploadError::CatalogTask)?
        .map_err(UploadError::from)
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
    /// A session is replaced after this long (the service ends it at 45 min; PIC rotates at
    /// 40, `MAX_ENFORCED_TOKEN_EXPIRATION_DURATION`), and earlier when its credentials expire.
    pub rotate_after: Duration,
    /// No response or ack line for this long means the connection is dead.
    pub ack_timeout: Duration,
    /// After a stop, how long a session waits for the acks of what it sent (the agent's whole
    /// shutdown takes at most 10 s).
    pub stop_drain: Duration,
    /// A caught-up session with no new fragment for this long ends (the service closes a
    /// request 30 s after its last data).
    pub idle_end: Duration,
    /// Pace to the service limits; off only for benchmarks.
    pub pacing: bool,
    /// A waiting job looks at the catalog this often even without a commit announcement (for
    /// commits by another process).
    pub recheck: Duration,
    /// The retry delays' range ([`BACKOFF`]'s jitter).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long a GetDataEndpoint answer is reused.
    pub endpoint_ttl: Duration,
    /// The scheduled backlog's order (`uploader.backlog_order`).
    pub backlog_order: BacklogOrder,
    /// The agent's bandwidth caps (`uploader.max_kbps`, `uploader.bandwidth_windows`).
    pub bandwidth: budget::Caps,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rotate_after: Duration::from_secs(40 * 60),
            ack_timeout: Duration::from_secs(30),
            stop_drain: Duration::from_secs(6),
            idle_end: Duration::from_secs(25),
            pacing: true,
            recheck: Duration::from_secs(10),
            backoff_min: BACKOFF.min,
            backoff_max: BACKOFF.max,
            endpoint_ttl: endpoint::ENDPOINT_TTL,
            backlog_order: BacklogOrder::Oldest,
            bandwidth: budget::Caps::default(),
        }
    }
}

impl Options {
    fn backoff(&self) -> Backoff {
        Backoff {
            min: self.backoff_min,
            max: self.backoff_max,
            ..BACKOFF
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

/// What a job run sends besides the operators' requests, and when it returns. Every run
/// serves the stream's open requests first and returns once it has nothing left to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// The backlog too, until the window closes ([`UploadHandle::close_backlog`], or the
    /// `until` of [`Uploader::start`]) or a stop; a caught-up job sends each new fragment as it
    /// is committed.
    UntilStopped,
    /// The backlog too, until no fragment is pending (or stopped): the hourly run, the
    /// operator's `upload --until-empty`.
    UntilEmpty,
    /// Only the requests (a request outside the upload window, the operator's
    /// `upload --from --to`).
    Requests,
}

/// Whether a run sends the scheduled backlog, and how (`None`: its window is closed).
type BacklogGate = tokio::sync::watch::Sender<Option<Backlog>>;

impl RunMode {
    fn backlog(self, order: BacklogOrder) -> Option<Backlog> {
        match self {
            RunMode::Requests => None,
            RunMode::UntilStopped | RunMode::UntilEmpty => Some(Backlog {
                order,
                until_empty: self == RunMode::UntilEmpty,
            }),
        }
    }
}

struct Shared {
    /// The agent's upload bandwidth budget, shared by every stream's sessions.
    budget: Arc<Mutex<budget::Budget>>,
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn MediaSink>,
    recording_dir: PathBuf,
    options: Options,
    /// What each stream has uploaded since the agent started.
    stats: Arc<crate::stats::Stats>,
}

/// Uploads streams; cheap to clone, one per agent.
#[derive(Clone)]
pub struct Uploader {
    shared: Arc<Shared>,
}

/// A job's state across its rounds.
struct RunState {
    pacer: Arc<Mutex<Pacer>>,
    retry: Retry,
    feed: Feed,
    /// The run's backlog gate: an until-empty backlog closes it once empty.
    gate: Arc<BacklogGate>,
    /// Transient failures in a row.
    failures: u32,
    /// The progress last reported as the job status.
    reported: ProgressSnapshot,
}

/// What a job does after a round.
enum Next {
    /// Another round at once.
    Now,
    /// Another round after this wait (unless stopped meanwhile).
    After(Duration),
    /// The job ends.
    End(Result<(), UploadError>),
}

impl Uploader {
    /// Uploads with PutMedia, as `sdk` configures it.
    pub fn new(
        sdk: &aws_config::SdkConfig,
        catalog: Arc<Catalog>,
        recording_dir: PathBuf,
        clock: Arc<dyn Clock>,
        options: Options,
    ) -> Result<Uploader, UploadError> {
        let sink = PutMedia::new(sdk, Arc::clone(&clock), &options)?;
        Ok(Self::with_sink(
            Arc::new(sink),
            catalog,
            recording_dir,
            clock,
            options,
        ))
    }

    /// Uploads into `sink` (a [`sink::MemorySink`] in tests: no AWS settings needed).
    pub fn with_sink(
        sink: Arc<dyn MediaSink>,
        catalog: Arc<Catalog>,
        recording_dir: PathBuf,
        clock: Arc<dyn Clock>,
        options: Options,
    ) -> Uploader {
        Uploader {
            shared: Arc::new(Shared {
                budget: Arc::new(Mutex::new(budget::Budget::new(options.bandwidth.clone()))),
                catalog,
                clock,
                sink,
                recording_dir,
                options,
                stats: Arc::new(crate::stats::Stats::new()),
            }),
        }
    }

    /// The counters the uploader keeps (and the recorders share, through the supervisor).
    pub fn stats(&self) -> Arc<crate::stats::Stats> {
        Arc::clone(&self.shared.stats)
    }

    /// Spawns a stream's upload job; it runs until [`UploadHandle::stop`], until `until` (the
    /// schedule window's end) or, in [`RunMode::UntilEmpty`], until nothing is pending.
    pub fn start(
        &self,
        stream: StreamTarget,
        mode: RunMode,
        until: Option<Timestamp>,
    ) -> UploadHandle {
        let (stopper, stop) = stop::channel();
        let stopper = Arc::new(stopper);
        let progress = Arc::new(Progress::default());
        let order = self.shared.options.backlog_order;
        let gate = Arc::new(BacklogGate::new(mode.backlog(order)));
        let me = self.clone();
        let p = Arc::clone(&progress);
        let g = Arc::clone(&gate);
        let task = tokio::spawn(async move { me.run(&stream, stop, g, &p).await });
        let h = UploadHandle {
            stop: stopper,
            task,
            progress,
            result: None,
            gate,
            order,
            closer: None,
        };
        match until {
            Some(until) => self.close_at(h, until),
            None => h,
        }
    }

    /// Closes the job's backlog at `until` on the uploader's clock (the window's end).
    fn close_at(&self, mut h: UploadHandle, until: Timestamp) -> UploadHandle {
        let clock = Arc::clone(&self.shared.clock);
        let left = until.duration_since(clock.now());
        let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
        let gate = Arc::clone(&h.gate);
        h.closer = None;
        // Not ended by `gate.closed()`: the job may not have subscribed yet. The handle aborts
        // it when dropped.
        h.closer = Some(AbortOnDrop(tokio::spawn(async move {
            clock.sleep(left).await;
            gate.send_replace(None);
        })));
        h
    }

    /// Opens a running job's backlog as `mode` says, until `until` (a window starting while
    /// it serves requests).
    pub fn open_backlog(
        &self,
        h: UploadHandle,
        mode: RunMode,
        until: Option<Timestamp>,
    ) -> UploadHandle {
        h.gate.send_replace(mode.backlog(h.order));
        match until {
            Some(until) => self.close_at(h, until),
            None => h,
        }
    }

    /// The job loop (see the module doc). Returns when stopped, when nothing is pending in
    /// [`RunMode::UntilEmpty`], or with an error the job cannot get past (stream gone).
    pub async fn run(
        &self,
        stream: &StreamTarget,
        mut stop: Stop,
        gate: Arc<BacklogGate>,
        progress: &Progress,
    ) -> Result<ProgressSnapshot, UploadError> {
        let s = &self.shared;
        let mut st = RunState {
            pacer: Arc::new(Mutex::new(if s.options.pacing {
                Pacer::new(s.clock.monotonic())
            } else {
                Pacer::unlimited()
            })),
            retry: s.options.backoff().start(),
            feed: Feed::new(
                Arc::clone(&s.catalog),
                Arc::clone(&s.clock),
                stream.key(),
                &s.recording_dir,
                s.options.recheck,
                gate.subscribe(),
            ),
            gate,
            failures: 0,
            reported: progress.snapshot(),
        };
        info!(stream = stream.key(), "upload job started");
        let result = loop {
            if stop.is_stopped() {
                break Ok(());
            }
            match self.round(stream, &stop, progress, &mut st).await {
                Next::Now => {}
                Next::After(d) => {
                    if stop.sleep_or_stop(&*s.clock, d).await {
                        break Ok(());
                    }
                }
                Next::End(r) => break r,
            }
        };
        self.finish(stream.key(), result, st.failures, progress)
            .await
    }

    /// One session, and what the job does next.
    async fn round(
        &self,
        stream: &StreamTarget,
        stop: &Stop,
        progress: &Progress,
        st: &mut RunState,
    ) -> Next {
        let s = &self.shared;
        let key = stream.key();
        let work = match st.feed.plan().await {
            Ok(w) => w,
            Err(e) => return Next::End(Err(e)),
        };
        // Nothing to do: no request open, the backlog's window closed (or its run emptied it).
        let Some(work) = work else {
            return Next::End(Ok(()));
        };
        if let Work::Request(r) = &work
            && r.state == RequestState::Queued
        {
            let (id, now) = (r.id, s.clock.now());
            if let Err(e) = blocking(&s.catalog, move |c| c.set_request_uploading(id, now)).await {
                return Next::End(Err(e));
            }
            info!(
                stream = key,
                request = r.request_id,
                kind = r.kind.as_str(),
                "serving an upload request"
            );
        }
        let start = match st.feed.begin(&work).await {
            Ok(Some(start)) => start,
            Ok(None) => return self.nothing_pending(key, &work, stop, st).await,
            Err(e) => return Next::End(Err(e)),
        };
        // A request's session tails the recorder (its feed says when it is finished); so does
        // the backlog's, unless it is to end once empty.
        let until_empty = matches!(work, Work::Backlog(_)) && until_empty(&st.gate);
        let mode = if until_empty {
            RunMode::UntilEmpty
        } else {
            RunMode::UntilStopped
        };
        let before = st.reported.fragments_uploaded;
        let outcomes = Outcomes {
            uploader: self,
            key,
            progress,
            reported: tokio::sync::Mutex::new((st.reported.clone(), None)),
        };
        // The session stops as the job does, and a backlog session also when its window
        // closes: what it sent then gets the stop's bounded drain, and the job goes on with
        // any requests.
        let (session_stopper, session_stop) = stop::channel();
        let mut gate = st.gate.subscribe();
        let is_backlog = matches!(work, Work::Backlog(_));
        let trigger = {
            let mut stop = stop.clone();
            async move {
                tokio::select! {
                    () = stop.stopped() => {}
                    Ok(_) = gate.wait_for(Option::is_none), if is_backlog => {}
                }
            }
        };
        let session = Session {
            stream,
            start,
            feed: &mut st.feed,
            mode,
            pacer: Arc::clone(&st.pacer),
            budget: Arc::clone(&s.budget),
            stop: &session_stop,
            outcomes: &outcomes,
        };
        let ended = {
            let send = s.sink.send(session);
            tokio::pin!(send, trigger);
            let mut fired = false;
            loop {
                tokio::select! {
                    r = &mut send => break r,
                    () = &mut trigger, if !fired => {
                        session_stopper.stop();
                        fired = true;
                    }
                }
            }
        };
        outcomes.report(true).await;
        st.reported = outcomes.reported.into_inner().0;
        match ended {
            Ok(end) => {
                if st.reported.fragments_uploaded != before {
                    // Not a failure in a row: a cut after it backs off from the minimum again.
                    st.failures = 0;
                    st.retry.reset();
                }
                self.after(key, end, stop, progress, st).await
            }
            Err(e @ (UploadError::StreamNotFound { .. } | UploadError::NoRetention { .. })) => {
                Next::End(Err(e))
            }
            Err(e) => {
                self.failed(key, &e.to_string(), st, progress, &e).await;
                Next::After(st.retry.next_delay())
            }
        }
    }

    /// What the job does when `work` has nothing pending: a complete range request is done, a
    /// run that empties its backlog goes on with requests only; otherwise it waits for the next
    /// commit, request or window change (or a stop).
    async fn nothing_pending(
        &self,
        key: &str,
        work: &Work,
        stop: &Stop,
        st: &mut RunState,
    ) -> Next {
        let s = &self.shared;
        match work {
            Work::Request(r) if r.kind == RequestKind::Range => {
                let (stream, row, now) = (key.to_owned(), r.clone(), s.clock.now());
                let ended = blocking(&s.catalog, move |c| {
                    let counts = c.range_counts(&stream, row.start_ms, row.end_ms)?;
                    if !agenda::range_complete(
                        row.end_ms,
                        counts.recorded_until,
                        now.as_millisecond(),
                    ) {
                        return Ok(None);
                    }
                    let details = done_details(&row, counts);
                    c.end_request(row.id, RequestState::Done, &details, now)
                })
                .await;
                match ended {
                    Ok(Some(row)) => {
                        info!(
                            stream = key,
                            request = row.request_id,
                            details = row.details.as_deref().unwrap_or(""),
                            "upload request done"
                        );
                        return Next::Now;
                    }
                    Ok(None) => {}
                    Err(e) => return Next::End(Err(e)),
                }
            }
            Work::Backlog(_) if until_empty(&st.gate) => {
                st.gate.send_replace(None);
                return Next::Now;
            }
            _ => {}
        }
        let mut stop = stop.clone();
        tokio::select! {
            () = st.feed.changed() => Next::Now,
            () = stop.stopped() => Next::End(Ok(())),
        }
    }

    /// What the job does after a session that ended so.
    async fn after(
        &self,
        key: &str,
        end: SessionEnd,
        stop: &Stop,
        progress: &Progress,
        st: &mut RunState,
    ) -> Next {
        match end {
            SessionEnd::Done
            | SessionEnd::Rotated
            | SessionEnd::NewSession
            | SessionEnd::Idle
            | SessionEnd::FragmentFailed => {
                st.failures = 0;
                st.retry.reset();
                Next::Now
            }
            // A window that closed stops only its session: requests may be left.
            SessionEnd::Stopped if !stop.is_stopped() => Next::Now,
            SessionEnd::Stopped => Next::End(Ok(())),
            SessionEnd::StreamGone(what) => Next::End(Err(UploadError::StreamNotActive {
                stream: key.to_owned(),
                what,
            })),
            SessionEnd::Retry { reason, .. } => {
                warn!(
                    stream = key,
                    reason, "upload interrupted; will resend from the first unpersisted fragment"
                );
                progress.retries.fetch_add(1, Ordering::Relaxed);
                self.shared.stats.stream(key).upload_retry();
                let e = UploadError::Endpoint(reason.clone());
                self.failed(key, &reason, st, progress, &e).await;
                Next::After(st.retry.next_delay())
            }
            SessionEnd::Refused(UploadError::Http { status: 404, .. }) => {
                Next::End(Err(UploadError::StreamNotFound {
                    stream: key.to_owned(),
                }))
            }
            SessionEnd::Refused(e) => {
                warn!(stream = key, error = %e, "PutMedia refused");
                progress.retries.fetch_add(1, Ordering::Relaxed);
                self.shared.stats.stream(key).upload_retry();
                self.failed(key, &e.to_string(), st, progress, &e).await;
                Next::After(st.retry.next_delay())
            }
        }
    }

    /// The job's last status and log line; its progress, or the error it ended with.
    async fn finish(
        &self,
        key: &str,
        result: Result<(), UploadError>,
        failures: u32,
        progress: &Progress,
    ) -> Result<ProgressSnapshot, UploadError> {
        let snap = progress.snapshot();
        match &result {
            Ok(()) => {
                if failures == 0 {
                    self.status(key, JobStatus::Success, None, snap.last_persisted)
                        .await;
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
                self.status(
                    key,
                    e.job_status(),
                    Some(&e.to_string()),
                    snap.last_persisted,
                )
                .await;
                warn!(stream = key, error = %e, "upload job ended");
                if e.is_user_error() {
                    self.fail_requests(key, &e.to_string()).await;
                }
            }
        }
        result.map(|()| snap)
    }

    /// Ends the stream's open requests as FAILED: the job cannot get past `why` (a stream gone,
    /// not authorized), and they would otherwise wait for ever.
    async fn fail_requests(&self, key: &str, why: &str) {
        let s = &self.shared;
        let (stream, why, now) = (key.to_owned(), why.to_owned(), s.clock.now());
        let r = blocking(&s.catalog, move |c| {
            for r in c.open_requests(&stream)? {
                c.end_request(r.id, RequestState::Failed, &why, now)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = r {
            warn!(stream = key, error = %e, "cannot record the requests' failure");
        }
    }

    /// Records a transient failure; the job status shows it at once when only the user can fix
    /// it, otherwise after three in a row.
    async fn failed(
        &self,
        key: &str,
        reason: &str,
        st: &mut RunState,
        progress: &Progress,
        e: &UploadError,
    ) {
        progress.set_error(reason);
        st.failures += 1;
        let status = if e.is_user_error() {
            JobStatus::UserError
        } else if st.failures >= 3 {
            JobStatus::SystemError
        } else {
            return;
        };
        self.status(key, status, Some(reason), None).await;
    }

    /// LastUploaderStatus in the catalog. A stream without an edge configuration (an operator's
    /// `upload` of leftover media) has no status row to write, which is not an upload failure.
    async fn status(
        &self,
        key: &str,
        status: JobStatus,
        details: Option<&str>,
        collected: Option<Timestamp>,
    ) {
        let s = &self.shared;
        let (stream, details, clock) = (
            key.to_owned(),
            details.map(str::to_owned),
            Arc::clone(&s.clock),
        );
        let result = blocking(&s.catalog, move |c| {
            if c.config(&stream)?.is_none() {
                return Ok(());
            }
            let now = clock.now();
            c.set_job_status(
                &stream,
                Job::Uploader,
                status,
                details.as_deref(),
                collected,
                now,
            )
        })
        .await;
        if let Err(e) = result {
            warn!(stream = key, error = %e, "cannot record the uploader status");
        }
    }
}

fn until_empty(gate: &BacklogGate) -> bool {
    gate.borrow().is_some_and(|b| b.until_empty)
}

/// What a range request's DONE says.
fn done_details(row: &RequestRow, counts: crate::catalog::RangeCounts) -> String {
    if counts.uploaded + counts.failed + counts.pending == 0 {
        return "no media recorded in the range".to_owned();
    }
    let sent = counts.uploaded.saturating_sub(row.already);
    let mut s = format!("{sent} fragments uploaded");
    if row.already > 0 {
        s += &format!(", {} uploaded before", row.already);
    }
    if counts.failed > 0 {
        s += &format!(", {} failed", counts.failed);
    }
    s
}

/// A running job.
pub struct UploadHandle {
    stop: Arc<Stopper>,
    task: tokio::task::JoinHandle<Result<ProgressSnapshot, UploadError>>,
    progress: Arc<Progress>,
    /// The job's result once [`UploadHandle::ended`] saw it.
    result: Option<Result<ProgressSnapshot, UploadError>>,
    gate: Arc<BacklogGate>,
    order: BacklogOrder,
    /// Closes the backlog at the window's end.
    closer: Option<AbortOnDrop>,
}

fn joined(
    r: Result<Result<ProgressSnapshot, UploadError>, tokio::task::JoinError>,
) -> Result<ProgressSnapshot, UploadError> {
    r.unwrap_or_else(|e| Err(UploadError::Config(format!("upload task failed: {e}"))))
}

/// A task that ends with whoever holds it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl UploadHandle {
    /// Asks the job to stop after the fragment in flight (and its acks, within the grace).
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// Closes the backlog (the window ended): the job finishes its requests, then ends.
    pub fn close_backlog(&self) {
        self.gate.send_replace(None);
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
    use crate::catalog::{RequestKind, UploadState};
    use crate::clock::PausedClock;
    use sink::MemorySink;
    use std::path::Path;

    /// Writes `n` one-second fragments of `stream` through the segment writer, as recording does.
    fn record(dir: &Path, catalog: &Arc<Catalog>, stream: &str, n: i64) {
        record_at(dir, catalog, stream, 1_767_225_600_000, n);
    }

    /// Like [`record`], in a new segment whose first fragment starts at `start_ms`.
    fn record_at(dir: &Path, catalog: &Arc<Catalog>, stream: &str, start_ms: i64, n: i64) {
        use crate::media::mkv::{Frame, TrackInfo, VideoCodec};
        let track = Arc::new(TrackInfo {
            codec: VideoCodec::H264,
            codec_private: vec![1, 77, 0, 30, 0xFF, 0xE0, 0],
            width: 64,
            height: 64,
        });
        let mut w =
            crate::store::segment::SegmentWriter::new(dir, stream, Arc::clone(catalog)).unwrap();
        for i in 0..n {
            w.write(&crate::media::fragment::Fragment {
                frames: vec![Frame {
                    timestamp_ms: start_ms + i * 1000,
                    key: true,
                    data: vec![0, 0, 0, 2, 0x65, 1],
                }],
                track: Arc::clone(&track),
                duration_ms: 1000,
                new_segment: false,
                clock_unsynced: false,
            })
            .unwrap();
        }
    }

    fn memory_uploader(
        dir: &Path,
        catalog: &Arc<Catalog>,
        clock: Arc<dyn Clock>,
    ) -> (Uploader, Arc<MemorySink>) {
        let sink = Arc::new(MemorySink::new());
        let up = Uploader::with_sink(
            Arc::clone(&sink) as Arc<dyn MediaSink>,
            Arc::clone(catalog),
            dir.to_owned(),
            clock,
            Options::default(),
        );
        (up, sink)
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_uploads_into_its_sink_until_the_window_ends() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(Catalog::open(&dir.path().join("c.db")).unwrap());
        record(dir.path(), &catalog, "cam", 3);
        let clock = PausedClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let (up, sink) = memory_uploader(dir.path(), &catalog, Arc::new(clock.clone()));
        let window = Duration::from_secs(60);
        let until = clock.now() + window;
        let h = up.start(
            StreamTarget::Name("cam".into()),
            RunMode::UntilStopped,
            Some(until),
        );

        let snap = tokio::time::timeout(Duration::from_secs(3600), h.wait())
            .await
            .expect("the window end stops the job")
            .unwrap();
        assert_eq!(snap.fragments_uploaded, 3);
        assert_eq!(snap.sessions, 1);
        assert!(
            clock.monotonic() >= window,
            "an idle job runs until its window ends: {:?}",
            clock.monotonic()
        );
        let seg = &catalog.segments(Some("cam")).unwrap()[0];
        let rows = catalog.fragments(seg.id).unwrap();
        assert_eq!(rows.len(), 3);
        for r in &rows {
            assert_eq!(r.upload_state, UploadState::Uploaded, "{r:?}");
            assert!(r.fragment_number.is_some(), "{r:?}");
        }
        let got = sink.received();
        assert_eq!(got.len(), 1, "one request for one codec");
        assert_eq!(got[0].stream.key(), "cam");
        assert_eq!(got[0].header.len() as u64, seg.header_size);
        let sent: Vec<i64> = got[0].fragments.iter().map(|f| f.id).collect();
        assert_eq!(sent, rows.iter().map(|r| r.id).collect::<Vec<_>>());
    }

    /// After the wall clock stepped back, the recorder's next segment starts before the media
    /// already sent: a live session must end there (its timecodes only increase; waiting on
    /// would never see that segment, as it sorts before the last fragment sent by time), and the
    /// next one starts with it, in recording order.
    #[tokio::test(start_paused = true)]
    async fn the_feed_ends_a_session_where_the_time_goes_back() {
        const T: i64 = 1_767_225_600_000;
        const HOUR: i64 = 3_600_000;
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(Catalog::open(&dir.path().join("c.db")).unwrap());
        record_at(dir.path(), &catalog, "cam", T, 3);
        let clock: Arc<dyn Clock> =
            Arc::new(PausedClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
        let mut feed = feed::Feed::new(
            Arc::clone(&catalog),
            Arc::clone(&clock),
            "cam",
            dir.path(),
            Duration::from_secs(10),
            tokio::sync::watch::channel(RunMode::UntilStopped.backlog(BacklogOrder::Oldest)).1,
        );
        let backlog = Work::Backlog(BacklogOrder::Oldest);
        let timecode = |n: feed::Next| match n {
            feed::Next::Fragment(f) => f.row.timecode_ms,
            other => panic!("{other:?}"),
        };
        let start = feed.begin(&backlog).await.unwrap().unwrap();
        let mut sent = vec![start.first.row.clone()];
        for _ in 0..2 {
            let feed::Next::Fragment(f) = feed.next().await.unwrap() else {
                panic!("three fragments pending");
            };
            sent.push(f.row);
        }
        assert!(matches!(feed.next().await.unwrap(), feed::Next::Empty));
        record_at(dir.path(), &catalog, "cam", T - HOUR, 2);
        assert!(matches!(feed.next().await.unwrap(), feed::Next::NewSession));
        for row in &sent {
            catalog
                .mark_fragment_uploaded(row.id, "1", clock.now())
                .unwrap();
        }
        let start = feed.begin(&backlog).await.unwrap().unwrap();
        assert_eq!(start.first.row.timecode_ms, T - HOUR);
        assert_eq!(timecode(feed.next().await.unwrap()), T - HOUR + 1000);
        assert!(matches!(feed.next().await.unwrap(), feed::Next::Empty));
    }

    const T: i64 = 1_767_225_600_000;

    fn ask(catalog: &Catalog, id: &str, kind: RequestKind, start_s: i64, end_s: i64) {
        let r = crate::catalog::NewRequest {
            stream_name: "cam".into(),
            request_id: id.into(),
            kind,
            start_ms: T + start_s * 1000,
            end_ms: T + end_s * 1000,
        };
        catalog
            .add_request(&r, Timestamp::from_millisecond(T).unwrap())
            .unwrap();
    }

    /// Seconds after `T` of every fragment the sink received, session by session.
    fn sent_secs(sink: &MemorySink) -> Vec<Vec<i64>> {
        sink.received()
            .iter()
            .map(|r| {
                r.fragments
                    .iter()
                    .map(|f| (f.timecode_ms - T) / 1000)
                    .collect()
            })
            .collect()
    }

    fn request(catalog: &Catalog, id: &str) -> RequestRow {
        catalog
            .requests("cam")
            .unwrap()
            .into_iter()
            .find(|r| r.request_id == id)
            .unwrap()
    }

    async fn run_to_end(up: &Uploader, mode: RunMode) -> ProgressSnapshot {
        let h = up.start(StreamTarget::Name("cam".into()), mode, None);
        tokio::time::timeout(Duration::from_secs(3600), h.wait())
            .await
            .expect("the run ends by itself")
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_range_sends_exactly_its_fragments_and_the_backlog_the_rest_once() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(Catalog::open(&dir.path().join("c.db")).unwrap());
        record(dir.path(), &catalog, "cam", 60);
        let clock = PausedClock::new("2026-01-01T00:01:00Z".parse().unwrap());
        let (up, sink) = memory_uploader(dir.path(), &catalog, Arc::new(clock));
        ask(&catalog, "r1", RequestKind::Range, 20, 30);
        let snap = run_to_end(&up, RunMode::Requests).await;
        assert_eq!(snap.fragments_uploaded, 10);
        assert_eq!(sent_secs(&sink), [(20..30).collect::<Vec<_>>()]);
        let r = request(&catalog, "r1");
        assert_eq!(r.state, RequestState::Done);
        assert_eq!((r.uploaded, r.already), (10, 0));
        assert_eq!(r.details.as_deref(), Some("10 fragments uploaded"));

        run_to_end(&up, RunMode::UntilEmpty).await;
        let all: Vec<i64> = sent_secs(&sink).concat();
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, (0..60).collect::<Vec<_>>());
        assert_eq!(all.len(), 60, "nothing sent twice: {all:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn overlapping_ranges_send_each_fragment_once_and_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(Catalog::open(&dir.path().join("c.db")).unwrap());
        record(dir.path(), &catalog, "cam", 60);
        let clock = PausedClock::new("2026-01-01T00:01:00Z".parse().unwrap());
        let (up, sink) = memory_uploader(dir.path(), &catalog, Arc::new(clock));
        ask(&catalog, "a", RequestKind::Range, 10, 30);
        ask(&catalog, "b", RequestKind::Range, 20, 40);
        ask(&catalog, "none", RequestKind::Range, -100, -50);
        run_to_end(&up, RunMode::Requests).await;
        let all = sent_secs(&sink).concat();
        assert_eq!(
            all,
            (10..40).collect::<Vec<_>>(),
            "each once, in request order"
        );
        let b = request(&catalog, "b");
        assert_eq!((b.state, b.uploaded), (RequestState::Done, 20));
        // "b" was stored while "a" was still queued: nothing of it was uploaded then.
        assert_eq!(b.details.as_deref(), Some("20 fragments uploaded"));
        let again = "again";
        ask(&catalog, again, RequestKind::Range, 15, 25);
        run_to_end(&up, RunMode::Requests).await;
        let r = request(&catalog, again);
        assert_eq!(
            r.details.as_deref(),
            Some("0 fragments uploaded, 10 uploaded before"),
            "an uploaded range is done at once"
        );
        assert_eq!(sent_secs(&sink).concat().len(), 30);
        let none = request(&catalog, "none");
        assert_eq!(none.state, RequestState::Done);
        assert_eq!(
            none.details.as_deref(),
            Some("no media recorded in the range")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_newest_first_backlog_goes_back_in_forward_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(Catalog::open(&dir.path().join("c.db")).unwrap());
        // 12 minutes, one fragment a second, in three segments.
        for seg in 0..3 {
            record_at(dir.path(), &catalog, "cam", T + seg * 240_000, 240);
        }
        let clock = PausedClock::new("2026-01-01T00:12:00Z".parse().unwrap());
        let sink = Arc::new(MemorySink::new());
        let up = Uploader::with_sink(
            Arc::clone(&sink) as Arc<dyn MediaSink>,
            Arc::clone(&catalog),
            dir.path().to_owned(),
            Arc::new(clock),
            Options {
                backlog_order: BacklogOrder::Newest,
                ..Options::default()
            },
        );
        run_to_end(&up, RunMode::UntilEmpty).await;
        let sessions = sent_secs(&sink);
        let firsts: Vec<i64> = sessions.iter().map(|s| s[0]).collect();
        // Newest at 719 s: back 300 s to 419; then the newest left is 418, back to 118; then
        // the rest. Each chunk goes forward to where the previous one began.
        assert_eq!(firsts, [419, 118, 0], "{sessions:?}");
        for s in &sessions {
            assert!(s.windows(2).all(|w| w[0] < w[1]), "forward in time: {s:?}");
        }
        assert_eq!(sessions.concat().len(), 720, "each fragment once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_job_sends_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(Catalog::open(&dir.path().join("c.db")).unwrap());
        let clock = PausedClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let (up, sink) = memory_uploader(dir.path(), &catalog, Arc::new(clock.clone()));
        let h = up.start(
            StreamTarget::Name("cam".into()),
            RunMode::UntilStopped,
            None,
        );
        clock.sleep(Duration::from_secs(10)).await;
        h.stop();
        record(dir.path(), &catalog, "cam", 2);
        let snap = tokio::time::timeout(Duration::from_secs(60), h.wait())
            .await
            .expect("a stop ends an idle job")
            .unwrap();
        assert_eq!(snap.fragments_uploaded, 0);
        assert!(sink.received().is_empty());
        assert_eq!(catalog.pending_fragments("cam", 10).unwrap().len(), 2);
    }

    #[test]
    fn user_errors_are_the_ones_only_the_user_can_fix() {
        let user = [
            UploadError::StreamNotFound { stream: "s".into() },
            UploadError::StreamNotActive {
                stream: "s".into(),
                what: "4507 STREAM_DELETED".into(),
            },
            UploadError::NoRetention { stream: "s".into() },
            UploadError::NotAuthorized("no".into()),
            UploadError::Http {
                status: 403,
                error_type: String::new(),
                message: String::new(),
            },
        ];
        for e in &user {
            assert_eq!(e.job_status(), JobStatus::UserError, "{e}");
        }
        let system = [
            UploadError::Endpoint("cut".into()),
            UploadError::Http {
                status: 500,
                error_type: String::new(),
                message: String::new(),
            },
            UploadError::Credentials("expired".into()),
        ];
        for e in &system {
            assert_eq!(e.job_status(), JobStatus::SystemError, "{e}");
        }
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
