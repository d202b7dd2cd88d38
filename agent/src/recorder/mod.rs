//! The recorder: one job per stream turning a camera (RTSP) or a local clip (FILE_URI) into
//! KVS-ready fragments in crash-safe Matroska segments indexed in the catalog.
//!
//! ```text
//! source (rtsp | file) --SourceFrame--> Timeline --TimedFrame--> Fragmenter --Fragment--> SegmentWriter
//!   async, reconnects      box clock, drift        pure                        blocking thread, fsync, catalog
//! ```
//!
//! - [`source`]: the frame types every source yields and the timeline hands on.
//! - [`timeline`]: media time placed on the box's clock, following camera drift (pure).
//! - [`rtsp`] / [`file`]: the two sources.
//! - [`fragmenter`]: where fragments and segments begin and end (pure, unit-tested).
//! - [`crate::store::segment`]: files, fsync order and catalog rows (the store owns them).
//!
//! [`run`] is the per-stream job: connect, record, and on any source failure flush the fragment
//! in flight (so no fragment spans a gap), log the gap, and reconnect after
//! [`Backoff::RESTART`] (1 s doubling to 30 s, half random), waited on the job's [`Clock`].
//! While backing off after the camera was unreachable, a TCP connect probe every 0.5 s cuts the
//! wait short as soon as the camera listens again, so recording resumes within about 2 s of its
//! return even after a long outage; failures from a camera that answers (auth, codec, protocol)
//! wait out the full backoff.
//!
//! Fragments are written on a blocking thread while the next one is received (one write in
//! flight), so a slow fsync does not stop the camera being read; memory per stream is bounded
//! by two fragments.
//!
//! Status (LastRecorderStatus) goes to a [`StatusSink`]: SUCCESS once fragments are committed;
//! USER_ERROR for a bad URI, an authentication failure or an unsupported codec; SYSTEM_ERROR for
//! an unreachable or failing camera, disk faults, a recording directory that cannot be written
//! (checked before each session; the camera is not opened, and the check is retried with the
//! same backoff) and internal errors. Details pass through
//! [`redact_url`] and never hold the password.

pub mod file;
pub mod fragmenter;
pub mod rtsp;
pub mod source;
pub mod timeline;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tracing::{info, warn};
use url::Url;

use crate::backoff::{Backoff, Retry};
use crate::catalog::{Catalog, CatalogError, Job};
use crate::clock::Clock;
use crate::edge_config::{JobError, JobStatus};
use crate::input::{cut, quote, redact_url};
use crate::media::fragment::Fragment;
use crate::store::segment::{SegmentError, SegmentWriter, Written};
use fragmenter::{Fragmenter, FragmenterConfig};
use rtsp::{RtspOptions, RtspSource};
use source::{SourceFrame, TimedFrame};
use timeline::{Arrival, Jump, Timeline};

/// Why a source could not deliver frames.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SourceError {
    #[error("bad media URI: {0}")]
    BadUri(String),
    #[error("the camera refused the credentials: {0}")]
    Auth(String),
    #[error("unsupported codec: {0}")]
    UnsupportedCodec(String),
    #[error("camera unreachable: {0}")]
    Unreachable(String),
    #[error("no video frame for {0:?}")]
    Stalled(Duration),
    #[error("the camera ended the stream")]
    Ended,
    #[error("RTSP error: {0}")]
    Protocol(String),
}

impl JobError for SourceError {
    /// USER_ERROR: the configuration (URI, credentials, camera settings) must change.
    fn job_status(&self) -> JobStatus {
        match self {
            SourceError::BadUri(_) | SourceError::Auth(_) | SourceError::UnsupportedCodec(_) => {
                JobStatus::UserError
            }
            _ => JobStatus::SystemError,
        }
    }
}

/// Errors that stop the job for good (until the configuration changes).
#[derive(Debug, Error)]
pub enum RecorderError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
}

impl JobError for RecorderError {
    /// A segment error ends the job only when the stream's name cannot name a directory.
    fn job_status(&self) -> JobStatus {
        match self {
            RecorderError::Source(e) => e.job_status(),
            RecorderError::Segment(_) => JobStatus::UserError,
        }
    }
}

/// Where the media comes from (`MediaUriType` RTSP_URI or FILE_URI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaUri {
    Rtsp(Url),
    /// A clip; `fps` paces Annex B files (query `?fps=N`, default 25).
    File {
        path: PathBuf,
        fps: u32,
    },
}

impl MediaUri {
    /// `rtsp://[user:password@]host[:port]/path`, `file:///path[?fps=N]` or an absolute path.
    pub fn parse(s: &str) -> Result<MediaUri, SourceError> {
        let bad = |why: &str| SourceError::BadUri(format!("{}: {why}", cut(&redact_url(s))));
        if s.starts_with('/') {
            return Ok(MediaUri::File {
                path: PathBuf::from(s),
                fps: 25,
            });
        }
        let url = Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        match url.scheme() {
            "rtsp" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(bad("no host"));
                }
                Ok(MediaUri::Rtsp(url))
            }
            "file" => {
                let path = url.to_file_path().map_err(|()| bad("not a local path"))?;
                let fps = match url.query_pairs().find(|(k, _)| k == "fps") {
                    Some((_, v)) => v
                        .parse::<u32>()
                        .ok()
                        .filter(|f| (1..=1000).contains(f))
                        .ok_or_else(|| bad("fps must be 1 to 1000"))?,
                    None => 25,
                };
                Ok(MediaUri::File { path, fps })
            }
            other => Err(bad(&format!("scheme {} is not rtsp or file", quote(other)))),
        }
    }

    /// `host:port` to probe while the camera is away.
    fn probe_addr(&self) -> Option<String> {
        match self {
            MediaUri::Rtsp(u) => Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(554))),
            MediaUri::File { .. } => None,
        }
    }
}

enum Source {
    Rtsp(Box<RtspSource>),
    File(file::FileSource),
}

impl Source {
    async fn open(uri: &MediaUri, opts: &RtspOptions) -> Result<Source, SourceError> {
        match uri {
            MediaUri::Rtsp(url) => Ok(Source::Rtsp(Box::new(
                RtspSource::connect(url, opts).await?,
            ))),
            MediaUri::File { path, fps } => {
                let (path, fps) = (path.clone(), *fps);
                tokio::task::spawn_blocking(move || file::FileSource::open(&path, fps))
                    .await
                    .map_err(|e| SourceError::Protocol(format!("loading the clip panicked: {e}")))?
                    .map(Source::File)
            }
        }
    }

    async fn next(&mut self) -> Result<SourceFrame, SourceError> {
        match self {
            Source::Rtsp(s) => s.next().await,
            Source::File(s) => s.next().await,
        }
    }
}

/// Where LastRecorderStatus goes.
pub trait StatusSink: Send + Sync {
    fn report(&self, status: JobStatus, details: Option<&str>);

    /// A segment file was closed (rolled, paused, stopped, or abandoned after a write
    /// failure): what the janitor waits for.
    fn segment_closed(&self) {}

    /// A source session delivered its first frame (every session after the first is a
    /// reconnect).
    fn connected(&self) {}

    /// A frame was placed at `timestamp_ms` (wall clock): how recent the newest frame is.
    fn frame(&self, _timestamp_ms: i64) {}

    /// A fragment of `frames` frames and `bytes` bytes is durably on disk.
    fn fragment_recorded(&self, _frames: u64, _bytes: u64) {}
}

/// Writes the status into the catalog's job_status (the stream must have an edge configuration
/// row); failures are logged.
pub struct CatalogStatus {
    pub catalog: Arc<Catalog>,
    pub stream: String,
    pub clock: Arc<dyn Clock>,
}

impl CatalogStatus {
    /// Stores a LastRecorderStatus; SUCCESS also moves LastCollectedTime to now.
    pub fn store(&self, status: JobStatus, details: Option<&str>) -> Result<(), CatalogError> {
        let now = self.clock.now();
        let collected = (status == JobStatus::Success).then_some(now);
        self.catalog
            .set_job_status(&self.stream, Job::Recorder, status, details, collected, now)
    }
}

impl StatusSink for CatalogStatus {
    fn report(&self, status: JobStatus, details: Option<&str>) {
        if let Err(e) = self.store(status, details) {
            warn!(stream = %self.stream, error = %e, "cannot store the recorder status");
        }
    }
}

/// Logs the status only (the `record` command, which has no edge configuration).
pub struct LogStatus;

impl StatusSink for LogStatus {
    fn report(&self, status: JobStatus, details: Option<&str>) {
        match status {
            JobStatus::Success => info!(status = %status.as_str(), "recorder status"),
            _ => {
                warn!(status = %status.as_str(), details = details.unwrap_or(""), "recorder status")
            }
        }
    }
}

/// Keeps every report, for tests and callers that want to look.
#[derive(Default)]
pub struct MemoryStatus(pub Mutex<Vec<(JobStatus, Option<String>)>>);

impl StatusSink for MemoryStatus {
    fn report(&self, status: JobStatus, details: Option<&str>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((status, details.map(str::to_owned)));
    }
}

/// What the supervisor asks of a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Record,
    /// Stop writing (DENY_NEW_MEDIA, outside the schedule window): the fragment in flight is
    /// written, the segment closed and the camera disconnected until `Record` again.
    Pause,
    /// Finish the fragment in flight, close the segment and return.
    Stop,
}

#[derive(Debug, Clone)]
pub struct RecorderConfig {
    pub stream: String,
    /// The media URI; may hold a password, so it is never logged as is.
    pub uri: String,
    pub recording_dir: PathBuf,
    pub fragmenter: FragmenterConfig,
    pub rtsp: RtspOptions,
}

/// A stretch with no media between two sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// End of the last frame before the gap (its timestamp plus one frame interval).
    pub from_ms: i64,
    /// First frame after the gap.
    pub to_ms: i64,
}

/// What a finished job did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecorderSummary {
    pub frames: u64,
    pub fragments: u64,
    pub segments: u64,
    pub sessions: u64,
    pub gaps: Vec<Gap>,
    pub write_errors: u64,
    /// Fragments written while the box's clock was not synchronised.
    pub clock_unsynced: u64,
    /// Steps of the box's wall clock taken (each began a segment).
    pub wall_steps: u64,
}

/// How often a waiting job probes an unreachable camera.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// A SUCCESS status is refreshed this often while recording (LastCollectedTime).
const STATUS_REFRESH: Duration = Duration::from_secs(60);

/// Reports status changes, and SUCCESS again every [`STATUS_REFRESH`] of the job's clock. A
/// SUCCESS whose details only count on (fragments recorded unsynchronised) waits for the
/// refresh too, so the status is not rewritten at every fragment.
struct Reporter {
    sink: Arc<dyn StatusSink>,
    clock: Arc<dyn Clock>,
    last: Option<(JobStatus, Option<String>)>,
    /// Monotonic time of the last report.
    last_at: Option<Duration>,
}

impl Reporter {
    fn report(&mut self, status: JobStatus, details: Option<String>) {
        let now = self.clock.monotonic();
        let same = self.last.as_ref().is_some_and(|(s, d)| {
            *s == status
                && if status == JobStatus::Success {
                    d.is_some() == details.is_some()
                } else {
                    *d == details
                }
        });
        let fresh = self
            .last_at
            .is_some_and(|t| now.saturating_sub(t) < STATUS_REFRESH);
        if same && (fresh || status != JobStatus::Success) {
            return;
        }
        self.sink.report(status, details.as_deref());
        self.last = Some((status, details));
        self.last_at = Some(now);
    }
}

/// What the next turn of [`run`]'s loop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Back to the loop head (which waits while paused).
    Again,
    Stop,
}

impl From<Control> for Next {
    fn from(c: Control) -> Next {
        match c {
            Control::Stop => Next::Stop,
            Control::Record | Control::Pause => Next::Again,
        }
    }
}

struct JobState {
    cfg: RecorderConfig,
    clock: Arc<dyn Clock>,
    uri: MediaUri,
    /// The URI as logged.
    safe_uri: String,
    /// Reconnect delays; reset at a session's first frame.
    retry: Retry,
    reporter: Reporter,
    fragmenter: Fragmenter,
    timeline: Timeline,
    clock_sync: ClockSync,
    /// The writer, while no fragment is being written.
    writer: Option<SegmentWriter>,
    /// The fragment being written, which holds the writer until it is done.
    pending: Option<WriteTask>,
    summary: RecorderSummary,
}

/// The writer back, what writing gave, and the fragment's frame count and clock flag.
type WriteTask =
    tokio::task::JoinHandle<(SegmentWriter, Result<Written, SegmentError>, usize, bool)>;

impl JobState {
    /// Starts writing a fragment on a blocking thread once the previous one is done, so the
    /// source keeps being read while a fragment is fsynced: at most two fragments are in memory,
    /// the one being written and the one being built. Failures are reported, not returned: the
    /// writer has abandoned its segment and the next fragment starts a new one.
    async fn write(&mut self, frag: Fragment) {
        self.settle().await;
        let mut writer = self.writer.take().expect("no write in flight after settle");
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let r = writer.write(&frag);
            (writer, r, frag.frames.len(), frag.clock_unsynced)
        }));
    }

    /// Waits for the fragment being written, if any. A panic in the writer is a bug: it is
    /// passed on so the supervisor restarts the job.
    async fn settle(&mut self) {
        if let Some(task) = self.pending.take() {
            match task.await {
                Ok((writer, r, frames, unsynced)) => {
                    self.writer = Some(writer);
                    self.after_write(r, frames, unsynced);
                }
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("segment writer task cancelled: {e}"),
            }
        }
    }

    fn after_write(&mut self, r: Result<Written, SegmentError>, frames: usize, unsynced: bool) {
        match r {
            Ok(w) => {
                self.summary.fragments += 1;
                self.summary.frames += frames as u64;
                self.summary.clock_unsynced += u64::from(unsynced);
                self.reporter.sink.fragment_recorded(frames as u64, w.bytes);
                if w.closed_previous {
                    self.reporter.sink.segment_closed();
                }
                if w.new_file.is_some() {
                    self.summary.segments += 1;
                }
                let details = (self.summary.clock_unsynced > 0).then(|| {
                    format!(
                        "{} fragments recorded while the system clock was not synchronised",
                        self.summary.clock_unsynced
                    )
                });
                self.reporter.report(JobStatus::Success, details);
            }
            Err(e) => {
                self.summary.write_errors += 1;
                self.reporter.sink.segment_closed();
                warn!(stream = %self.cfg.stream, error = %e, "cannot write fragment");
                self.reporter.report(
                    JobStatus::SystemError,
                    Some(format!("cannot write media: {e}")),
                );
            }
        }
    }

    /// Writes the fragment being built and waits until everything is on disk.
    async fn flush(&mut self) {
        if let Some(mut frag) = self.fragmenter.flush() {
            frag.clock_unsynced = self.clock_sync.take_flushed();
            self.write(frag).await;
        }
        self.settle().await;
    }

    /// Closes the open segment file (pause, stop).
    async fn close_segment(&mut self) {
        self.flush().await;
        self.fragmenter.end_segment();
        if let Some(mut writer) = self.writer.take() {
            let r = tokio::task::spawn_blocking(move || {
                let r = writer.close();
                (writer, r)
            })
            .await;
            match r {
                Ok((writer, r)) => {
                    self.writer = Some(writer);
                    match r {
                        Ok(true) => self.reporter.sink.segment_closed(),
                        Ok(false) => {}
                        Err(e) => {
                            warn!(stream = %self.cfg.stream, error = %e, "cannot close segment")
                        }
                    }
                }
                Err(e) => warn!(error = %e, "segment writer failed"),
            }
        }
    }

    async fn on_frame(&mut self, f: SourceFrame, session_first: &mut bool) {
        let before = self.timeline.last_ms();
        let interval = self.timeline.interval_ms();
        let at = Arrival {
            mono_ms: i64::try_from(self.clock.monotonic().as_millis()).unwrap_or(i64::MAX),
            wall_ms: self.clock.now().as_millisecond(),
        };
        let placed = self.timeline.place(f.media_ms, f.key, at);
        match self.clock_sync.observe(self.clock.synchronized()) {
            Some(false) => warn!(
                stream = %self.cfg.stream,
                "the system clock is not synchronised: the fragments recorded now are flagged, \
                 their timestamps may be far from the true time"
            ),
            Some(true) => {
                info!(stream = %self.cfg.stream, "the system clock is synchronised again")
            }
            None => {}
        }
        let ts = placed.timestamp_ms;
        match placed.jump {
            Some(Jump::MediaClock(ms)) => warn!(
                stream = %self.cfg.stream,
                jump_ms = ms,
                "the camera's media clock jumped; recording goes on from the last frame"
            ),
            Some(Jump::Gap(ms)) => warn!(
                stream = %self.cfg.stream,
                gap_ms = ms,
                "frames arrive later than the camera's clock says: a gap, taken at once"
            ),
            Some(Jump::WallStep(ms)) => {
                warn!(
                    stream = %self.cfg.stream,
                    step_ms = ms,
                    "the system clock was stepped: media from here on carries the new time, \
                     in a new segment"
                );
                // No segment spans a step: its times would not be in order, or would leave a
                // hole the size of the step.
                self.close_segment().await;
                self.summary.wall_steps += 1;
            }
            None => {}
        }
        // A session's first frame after a step is no gap: the distance is the clock's.
        let stepped = matches!(placed.jump, Some(Jump::WallStep(_)));
        let first = std::mem::replace(session_first, false);
        if let Some(last) = before.filter(|_| first && !stepped) {
            let gap = Gap {
                from_ms: last + interval,
                to_ms: ts,
            };
            if gap.to_ms > gap.from_ms {
                warn!(
                    stream = %self.cfg.stream,
                    from_ms = gap.from_ms,
                    to_ms = gap.to_ms,
                    gap_ms = gap.to_ms - gap.from_ms,
                    "recording resumed after a gap"
                );
                self.summary.gaps.push(gap);
            }
        }
        self.reporter.sink.frame(ts);
        let timed = TimedFrame {
            timestamp_ms: ts,
            key: f.key,
            data: f.data,
            track: f.track,
        };
        if let Some(mut frag) = self.fragmenter.push(timed) {
            frag.clock_unsynced = self.clock_sync.take_closed();
            self.write(frag).await;
        }
        self.clock_sync.frame_done();
    }
}

/// Whether the box's clock was unsynchronised during the fragment being built, and the episode
/// being logged (once when it begins, once when it ends).
#[derive(Debug, Default)]
struct ClockSync {
    /// The current frame was recorded unsynchronised (it belongs to the next fragment when it
    /// closes the one being built).
    frame: bool,
    fragment: bool,
    episode: bool,
}

impl ClockSync {
    /// The clock's state at a frame; `Some(now unsynchronised?)` when an episode begins or ends.
    fn observe(&mut self, synchronized: Option<bool>) -> Option<bool> {
        self.frame = synchronized == Some(false);
        (self.frame != self.episode).then(|| {
            self.episode = self.frame;
            !self.frame
        })
    }

    /// Whether the fragment the current frame closed had an unsynchronised frame; the current
    /// frame starts the next one.
    fn take_closed(&mut self) -> bool {
        std::mem::replace(&mut self.fragment, self.frame)
    }

    /// The same for a fragment flushed without a frame after it.
    fn take_flushed(&mut self) -> bool {
        std::mem::take(&mut self.fragment)
    }

    fn frame_done(&mut self) {
        self.fragment |= self.frame;
    }
}

/// Waits until `control` is no longer `Pause`; returns the new value. A dropped sender means
/// `Stop`.
async fn wait_while_paused(control: &mut watch::Receiver<Control>) -> Control {
    loop {
        if control.has_changed().is_err() {
            return Control::Stop;
        }
        let c = *control.borrow_and_update();
        if c != Control::Pause {
            return c;
        }
        if control.changed().await.is_err() {
            return Control::Stop;
        }
    }
}

/// Waits `delay` on `clock`, cut short by a control change or, when `probe` is set, by the
/// camera's port accepting a TCP connection. Returns the control value to act on.
async fn back_off(
    clock: &dyn Clock,
    delay: Duration,
    probe: Option<&str>,
    control: &mut watch::Receiver<Control>,
) -> Control {
    let deadline = clock.monotonic() + delay;
    loop {
        let left = deadline.saturating_sub(clock.monotonic());
        let step = if probe.is_some() {
            left.min(PROBE_EVERY)
        } else {
            left
        };
        // A control change first: on a simulated clock the sleep is ready at once too.
        tokio::select! {
            biased;
            changed = control.changed() => {
                let c = if changed.is_err() { Control::Stop } else { *control.borrow_and_update() };
                if c != Control::Record {
                    return c;
                }
            }
            () = clock.sleep(step) => {}
        }
        if clock.monotonic() >= deadline {
            return Control::Record;
        }
        if let Some(addr) = probe {
            let connect = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(_)) = tokio::time::timeout(PROBE_EVERY, connect).await {
                return Control::Record;
            }
        }
    }
}

impl JobState {
    /// The job before its first session; a malformed URI or a stream name unusable as a
    /// directory is reported and ends it.
    fn start(
        cfg: RecorderConfig,
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
        status: Arc<dyn StatusSink>,
    ) -> Result<JobState, RecorderError> {
        let mut reporter = Reporter {
            sink: status,
            clock: clock.clone(),
            last: None,
            last_at: None,
        };
        let started = MediaUri::parse(&cfg.uri)
            .map_err(RecorderError::from)
            .and_then(|uri| {
                let writer = SegmentWriter::new(&cfg.recording_dir, &cfg.stream, catalog)?;
                Ok((uri, writer))
            });
        let (uri, writer) = started.inspect_err(|e| {
            reporter.report(e.job_status(), Some(e.to_string()));
        })?;
        Ok(JobState {
            fragmenter: Fragmenter::new(cfg.fragmenter),
            safe_uri: redact_url(&cfg.uri),
            cfg,
            clock,
            uri,
            retry: Backoff::RESTART.start(),
            reporter,
            timeline: Timeline::new(),
            clock_sync: ClockSync::default(),
            writer: Some(writer),
            pending: None,
            summary: RecorderSummary::default(),
        })
    }

    /// One turn: check the directory, open the source, record until it fails or the control
    /// changes, and back off after a failure.
    async fn session(
        &mut self,
        control: &mut watch::Receiver<Control>,
    ) -> Result<Next, RecorderError> {
        if let Err(why) = writable(&self.cfg.recording_dir).await {
            warn!(stream = %self.cfg.stream, "{why}; retrying");
            self.reporter
                .report(JobStatus::SystemError, Some(why.to_string()));
            return Ok(self.back_off(false, control).await);
        }
        let opened = tokio::select! {
            r = Source::open(&self.uri, &self.cfg.rtsp) => r,
            changed = control.changed() => {
                return Ok(if changed.is_err() { Next::Stop } else { Next::Again });
            }
        };
        let src = match opened {
            Ok(s) => s,
            Err(e) => return self.open_failed(e, control).await,
        };
        match self.record(src, control).await {
            // Pause or stop: close the file; the loop head decides what next.
            None => {
                self.close_segment().await;
                Ok(Next::Again)
            }
            Some(e) => Ok(self.source_lost(e, control).await),
        }
    }

    async fn open_failed(
        &mut self,
        e: SourceError,
        control: &mut watch::Receiver<Control>,
    ) -> Result<Next, RecorderError> {
        warn!(stream = %self.cfg.stream, uri = %self.safe_uri, error = %e, "cannot open the source");
        self.reporter.report(e.job_status(), Some(e.to_string()));
        if matches!(self.uri, MediaUri::File { .. }) {
            // A clip that cannot be read will not get better by retrying.
            return Err(e.into());
        }
        let probe = matches!(e, SourceError::Unreachable(_));
        Ok(self.back_off(probe, control).await)
    }

    /// Reads frames until the source fails (its error) or the control leaves `Record` (`None`).
    /// The source is closed on return.
    async fn record(
        &mut self,
        mut src: Source,
        control: &mut watch::Receiver<Control>,
    ) -> Option<SourceError> {
        self.summary.sessions += 1;
        info!(stream = %self.cfg.stream, uri = %self.safe_uri, "source connected");
        self.timeline.new_session();
        let mut session_first = true;
        loop {
            tokio::select! {
                r = src.next() => match r {
                    Ok(f) => {
                        if session_first {
                            self.retry.reset();
                            self.reporter.sink.connected();
                        }
                        self.on_frame(f, &mut session_first).await;
                    }
                    Err(e) => return Some(e),
                },
                changed = control.changed() => {
                    let c = if changed.is_err() { Control::Stop } else { *control.borrow() };
                    if c != Control::Record {
                        return None;
                    }
                }
            }
        }
    }

    async fn source_lost(
        &mut self,
        e: SourceError,
        control: &mut watch::Receiver<Control>,
    ) -> Next {
        warn!(stream = %self.cfg.stream, error = %e, "source lost; reconnecting");
        self.flush().await;
        self.reporter.report(e.job_status(), Some(e.to_string()));
        let probe = matches!(
            e,
            SourceError::Unreachable(_) | SourceError::Ended | SourceError::Stalled(_)
        );
        self.back_off(probe, control).await
    }

    /// Waits the next reconnect delay; `probe`: cut short once the camera's port answers.
    async fn back_off(&mut self, probe: bool, control: &mut watch::Receiver<Control>) -> Next {
        let delay = self.retry.next_delay();
        let addr = probe.then(|| self.uri.probe_addr()).flatten();
        back_off(self.clock.as_ref(), delay, addr.as_deref(), control)
            .await
            .into()
    }

    /// Closes the segment and logs what the job did.
    async fn finish(mut self) -> RecorderSummary {
        self.close_segment().await;
        info!(
            stream = %self.cfg.stream,
            frames = self.summary.frames,
            fragments = self.summary.fragments,
            dropped = self.fragmenter.dropped_frames(),
            "recorder stopped"
        );
        self.summary
    }
}

/// The recorder job of one stream. Runs until `control` says `Stop` (or its sender is dropped),
/// then writes the fragment in flight and closes the segment. Returns an error only for faults
/// no retry can fix: a malformed URI, a missing clip, a stream name unusable as a directory.
///
/// Run [`recovery::recover`] for the stream before starting it.
pub async fn run(
    cfg: RecorderConfig,
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    status: Arc<dyn StatusSink>,
    mut control: watch::Receiver<Control>,
) -> Result<RecorderSummary, RecorderError> {
    let mut job = JobState::start(cfg, catalog, clock, status)?;
    while wait_while_paused(&mut control).await != Control::Stop {
        if job.session(&mut control).await? == Next::Stop {
            break;
        }
    }
    Ok(job.finish().await)
}

/// Whether media can be written under the recording directory. Checked before each session: a
/// read-only mount or a directory the agent may not write would otherwise show only at the
/// first fragment, after the camera was read for nothing, and the last SUCCESS would stand
/// until then. A directory not there yet is created with the first segment: then its nearest
/// existing parent must be writable.
async fn writable(dir: &Path) -> Result<(), NotWritable> {
    let d = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut at = d.as_path();
        loop {
            match rustix::fs::access(at, rustix::fs::Access::WRITE_OK) {
                Err(rustix::io::Errno::NOENT) => match at.parent() {
                    Some(parent) if parent.as_os_str().is_empty() => at = Path::new("."),
                    Some(parent) => at = parent,
                    None => return Err(rustix::io::Errno::NOENT),
                },
                r => return r,
            }
        }
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    .map_err(|errno| NotWritable {
        dir: dir.to_owned(),
        errno,
    })
}

/// The recording directory refuses writes (a read-only mount, the wrong owner).
#[derive(Debug, PartialEq, Eq, Error)]
#[error("the recording directory {} is not writable: {errno}", dir.display())]
struct NotWritable {
    dir: PathBuf,
    errno: rustix::io::Errno,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SimulatedClock;

    #[test]
    fn uris() {
        assert!(matches!(
            MediaUri::parse("rtsp://h/x"),
            Ok(MediaUri::Rtsp(_))
        ));
        assert_eq!(
            MediaUri::parse("file:///tmp/a.h264?fps=30"),
            Ok(MediaUri::File {
                path: "/tmp/a.h264".into(),
                fps: 30
            })
        );
        assert!(matches!(
            MediaUri::parse("/tmp/a.mkv"),
            Ok(MediaUri::File { fps: 25, .. })
        ));
        let e = MediaUri::parse("http://u:secret@h/x").unwrap_err();
        assert_eq!(e.job_status(), JobStatus::UserError);
        assert!(!e.to_string().contains("secret"));
        assert!(MediaUri::parse("rtsp:///x").is_err());
    }

    #[tokio::test]
    async fn dropped_control_sender_means_stop() {
        let (tx, mut rx) = watch::channel(Control::Pause);
        drop(tx);
        assert_eq!(wait_while_paused(&mut rx).await, Control::Stop);
        let (tx, mut rx) = watch::channel(Control::Record);
        drop(tx);
        assert_eq!(wait_while_paused(&mut rx).await, Control::Stop);
        let d = Duration::from_secs(3600);
        let clock = SimulatedClock::new("2026-03-29T00:30:00Z".parse().unwrap());
        assert_eq!(back_off(&clock, d, None, &mut rx).await, Control::Stop);
    }

    /// An unsynchronised episode is reported once at each end; a fragment is flagged when any
    /// of its frames was, the closing frame counting for the next one.
    #[test]
    fn clock_sync_reports_episodes_once_and_flags_fragments() {
        let mut c = ClockSync::default();
        assert_eq!(c.observe(Some(true)), None);
        c.frame_done();
        assert_eq!(c.observe(None), None, "unknown is not unsynchronised");
        c.frame_done();
        assert_eq!(c.observe(Some(false)), Some(false));
        assert!(!c.take_closed(), "the fragment before the episode");
        c.frame_done();
        assert_eq!(c.observe(Some(false)), None);
        c.frame_done();
        assert_eq!(c.observe(Some(true)), Some(true));
        assert!(c.take_closed(), "the fragment with unsynchronised frames");
        c.frame_done();
        assert!(!c.take_flushed());
        assert!(!c.take_flushed());
    }

    /// A recording directory not created yet is writable when its parent is (the first segment
    /// creates it).
    #[tokio::test]
    async fn a_directory_to_be_created_is_writable_through_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(writable(&dir.path().join("not/yet")).await, Ok(()));
        assert_eq!(writable(Path::new("relative/not/yet")).await, Ok(()));
    }

    /// Simulated time that keeps every wait and says Stop after the `stop_after`-th.
    struct WaitLog {
        clock: SimulatedClock,
        waits: Mutex<Vec<Duration>>,
        stop_after: usize,
        control: watch::Sender<Control>,
    }

    impl Clock for WaitLog {
        fn now(&self) -> jiff::Timestamp {
            self.clock.now()
        }

        fn monotonic(&self) -> Duration {
            self.clock.monotonic()
        }

        fn sleep(&self, d: Duration) -> crate::clock::Sleep {
            let mut waits = self.waits.lock().unwrap();
            waits.push(d);
            if waits.len() == self.stop_after {
                self.control.send_replace(Control::Stop);
            }
            self.clock.sleep(d)
        }
    }

    /// A recording directory that cannot be written is checked again after each wait, and the
    /// waits double to thirty seconds on the job's clock.
    #[tokio::test]
    async fn retries_back_off_on_the_clock_doubling_to_thirty_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("a-file");
        std::fs::write(&blocker, b"").unwrap();
        let (tx, rx) = watch::channel(Control::Record);
        let clock = Arc::new(WaitLog {
            clock: SimulatedClock::new("2026-03-29T00:30:00Z".parse().unwrap()),
            waits: Mutex::new(Vec::new()),
            stop_after: 8,
            control: tx,
        });
        let status = Arc::new(MemoryStatus::default());
        let cfg = RecorderConfig {
            stream: "cam1".into(),
            uri: "rtsp://127.0.0.1:9/x".into(),
            recording_dir: blocker.join("media"),
            fragmenter: FragmenterConfig::default(),
            rtsp: RtspOptions::default(),
        };
        let catalog = Arc::new(Catalog::open_in_memory().unwrap());
        let summary = run(cfg, catalog, clock.clone(), status.clone(), rx)
            .await
            .unwrap();
        assert_eq!(summary.sessions, 0, "the camera is not opened");
        let waits = clock.waits.lock().unwrap().clone();
        let caps = [1, 2, 4, 8, 16, 30, 30, 30];
        assert_eq!(waits.len(), caps.len());
        for (w, cap) in waits.iter().zip(caps) {
            let cap = Duration::from_secs(cap);
            assert!(*w >= cap / 2 && *w <= cap, "{w:?} vs {cap:?}");
        }
        let reports = status.0.lock().unwrap();
        assert_eq!(reports.len(), 1, "the same status is reported once");
        assert_eq!(reports[0].0, JobStatus::SystemError);
        assert!(reports[0].1.as_deref().unwrap().contains("not writable"));
    }
}
