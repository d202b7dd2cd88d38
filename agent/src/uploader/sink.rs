//! The seam in front of PutMedia: where a job sends its fragments and hears how each fared.
//!
//! A [`MediaSink`] runs one [`Session`]: the header and first fragment of [`Session::start`],
//! then whatever the [`Feed`] hands out, until the session must end. It reports each
//! fragment's outcome to [`Outcomes`] as soon as it is known, so a PERSISTED fragment is marked
//! uploaded in the catalog at once (a crash right after loses no acknowledged work). The
//! production sink is [`super::putmedia::PutMedia`]; [`MemorySink`] lets tests run the job
//! loop without AWS.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use super::budget::Budget;
use super::feed::{Feed, Next, Start};
use super::pacer::Pacer;
pub use super::session::SessionEnd;
use super::{Progress, ProgressSnapshot, RunMode, StreamTarget, UploadError, Uploader, blocking};
use crate::catalog::{Catalog, FragmentRow};
use crate::clock::Clock;
use crate::edge_config::JobStatus;
use crate::stop::Stop;

/// Where a job's media goes.
pub trait MediaSink: Send + Sync + 'static {
    /// Runs one session and says how it ended. `Err` when no request could be made (no
    /// endpoint, a stream that cannot take uploads): nothing was sent.
    fn send<'a>(&'a self, session: Session<'a>) -> BoxFuture<'a, Result<SessionEnd, UploadError>>;
}

/// One session's media and what it reports to.
pub struct Session<'a> {
    pub stream: &'a StreamTarget,
    pub start: Start,
    /// The fragments after the first, as they become ready.
    pub feed: &'a mut Feed,
    /// [`RunMode::UntilEmpty`]: the session ends once nothing more is pending.
    pub mode: RunMode,
    /// The stream's pacing, shared by its consecutive sessions.
    pub pacer: Arc<Mutex<Pacer>>,
    /// The agent's bandwidth budget, shared by every stream.
    pub budget: Arc<Mutex<Budget>>,
    /// Sending stops between fragments once this fires.
    pub stop: &'a Stop,
    pub outcomes: &'a Outcomes<'a>,
}

/// Records what a sink learns: in the catalog (through the blocking pool) and in the job's
/// [`Progress`]; while a session runs (up to 40 minutes), the job status follows its progress
/// every [`STATUS_EVERY`] of persisted fragments.
pub struct Outcomes<'a> {
    pub(super) uploader: &'a Uploader,
    pub(super) key: &'a str,
    pub(super) progress: &'a Progress,
    /// The progress last shown in the job status, and when (monotonic).
    pub(super) reported: tokio::sync::Mutex<(ProgressSnapshot, Option<Duration>)>,
}

/// How often a running session's progress reaches the job status.
const STATUS_EVERY: Duration = Duration::from_secs(30);

impl Outcomes<'_> {
    fn catalog(&self) -> &Arc<Catalog> {
        &self.uploader.shared.catalog
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        &self.uploader.shared.clock
    }

    fn stats(&self) -> Arc<crate::stats::StreamCounters> {
        self.uploader.shared.stats.stream(self.key)
    }

    /// Shows new progress in the job status; `force` even if the last report is recent.
    /// `true` when there was progress to show.
    pub(super) async fn report(&self, force: bool) -> bool {
        let mut reported = self.reported.lock().await;
        let now = self.clock().monotonic();
        let due = force
            || reported
                .1
                .is_none_or(|at| now.saturating_sub(at) >= STATUS_EVERY);
        if !due {
            return false;
        }
        let snap = self.progress.snapshot();
        if snap.fragments_uploaded == reported.0.fragments_uploaded {
            return false;
        }
        // The rate since the last report: what the budget and the link allow now.
        let kbps = reported.1.map(|at| {
            let secs = now.saturating_sub(at).as_secs_f64().max(0.001);
            (snap.bytes_uploaded - reported.0.bytes_uploaded) as f64 * 8.0 / 1000.0 / secs
        });
        let details = self.backlog_line(kbps).await;
        self.uploader
            .status(
                self.key,
                JobStatus::Success,
                details.as_deref(),
                snap.last_persisted,
            )
            .await;
        *reported = (snap, Some(now));
        true
    }

    /// What is left to upload and how fast it goes, for the job status and the log (at most
    /// every [`STATUS_EVERY`]); `None` when the catalog cannot say.
    async fn backlog_line(&self, kbps: Option<f64>) -> Option<String> {
        let stream = self.key.to_owned();
        let backlog = blocking(self.catalog(), move |c| c.backlog(&stream))
            .await
            .ok()?;
        let now = self.clock().now().as_millisecond();
        let oldest = backlog
            .oldest_ms
            .map(|t| format!(", the oldest recorded {} s ago", (now - t).max(0) / 1000))
            .unwrap_or_default();
        let rate = kbps
            .map(|k| format!("; uploading at {k:.0} kbit/s"))
            .unwrap_or_default();
        let line = format!(
            "{} fragments ({:.1} MB) to upload{oldest}{rate}",
            backlog.fragments,
            backlog.bytes as f64 / 1e6
        );
        tracing::info!(
            stream = self.key,
            pending_fragments = backlog.fragments,
            pending_bytes = backlog.bytes,
            oldest_pending_age_secs = backlog.oldest_ms.map(|t| (now - t).max(0) / 1000),
            kbps = kbps.map(|k| k.round() as u64),
            "upload backlog"
        );
        Some(line)
    }

    /// A request was made (counted in the job's sessions).
    pub fn session_opened(&self) {
        self.progress
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The service persisted `fragment` as `number`: it is uploaded.
    pub async fn persisted(&self, fragment: &FragmentRow, number: &str) -> Result<(), UploadError> {
        let (id, number, now) = (fragment.id, number.to_owned(), self.clock().now());
        blocking(self.catalog(), move |c| {
            c.mark_fragment_uploaded(id, &number, now)
        })
        .await?;
        self.progress
            .add_uploaded(fragment.size, self.clock().now());
        self.stats().uploaded(fragment.size);
        self.report(false).await;
        Ok(())
    }

    /// `fragment` can never be sent (`what` says why): it is marked failed and skipped. Counted
    /// as failed even when the catalog cannot record it.
    pub async fn rejected(&self, fragment: &FragmentRow, what: &str) -> Result<(), UploadError> {
        let (id, error, now) = (fragment.id, what.to_owned(), self.clock().now());
        let marked = blocking(self.catalog(), move |c| {
            c.mark_fragment_failed(id, &error, now)
        })
        .await;
        self.progress.add_failed(what);
        self.stats().upload_failed(what);
        marked
    }
}

/// What a [`MemorySink`] was sent on one session.
#[derive(Clone, Debug)]
pub struct Received {
    pub stream: StreamTarget,
    pub header: Vec<u8>,
    pub fragments: Vec<FragmentRow>,
}

/// A sink for tests: acknowledges every fragment as PERSISTED (fragment numbers "1", "2", ...)
/// and keeps what it was sent. Its sessions end once nothing more is ready (the job starts the
/// next one at the next commit); like PutMedia, it stops between fragments when asked.
#[derive(Debug, Default)]
pub struct MemorySink {
    received: Mutex<Vec<Received>>,
    next_number: Mutex<u64>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every session so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("sink lock").clone()
    }

    fn number(&self) -> String {
        let mut n = self.next_number.lock().expect("sink lock");
        *n += 1;
        n.to_string()
    }

    async fn session(&self, s: Session<'_>) -> Result<SessionEnd, UploadError> {
        s.outcomes.session_opened();
        let mut got = Received {
            stream: s.stream.clone(),
            header: s.start.header,
            fragments: Vec::new(),
        };
        let mut next = Some(s.start.first);
        let end = loop {
            let f = match next.take() {
                Some(f) => f,
                None => match s.feed.next().await? {
                    Next::Fragment(f) => f,
                    Next::NewSession => break SessionEnd::NewSession,
                    Next::Empty | Next::Finished => break SessionEnd::Done,
                    Next::WindowClosed => break SessionEnd::Stopped,
                },
            };
            if s.stop.is_stopped() {
                break SessionEnd::Stopped;
            }
            if let Err(e) = s.outcomes.persisted(&f.row, &self.number()).await {
                break SessionEnd::Retry {
                    reason: format!("catalog: {e}"),
                    connection: false,
                };
            }
            got.fragments.push(f.row);
        };
        self.received.lock().expect("sink lock").push(got);
        Ok(end)
    }
}

impl MediaSink for MemorySink {
    fn send<'a>(&'a self, session: Session<'a>) -> BoxFuture<'a, Result<SessionEnd, UploadError>> {
        Box::pin(self.session(session))
    }
}
