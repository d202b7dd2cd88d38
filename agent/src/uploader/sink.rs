//! The seam in front of PutMedia: where a job sends a batch and hears how each fragment fared.
//!
//! A [`MediaSink`] sends one [`Session`] (a batch on one request) and reports each fragment's
//! outcome to the session's [`Ledger`] as soon as it is known, so a PERSISTED fragment is marked
//! uploaded in the catalog at once (a crash right after loses no acknowledged work). The
//! production sink is [`super::putmedia::PutMedia`]; [`MemorySink`] lets tests run the job loop
//! without AWS.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::pacer::Pacer;
use super::{Progress, StreamTarget, UploadError, blocking};
use crate::catalog::{Catalog, FragmentRow};
use crate::clock::Clock;
use crate::stop::Stop;

/// Where a job's media goes.
pub trait MediaSink: Send + Sync + 'static {
    /// Sends `session.batch` to `session.stream` on one request and says how it ended. `Err`
    /// when no request could be made (no endpoint): nothing of the batch was sent.
    fn send<'a>(&'a self, session: Session<'a>) -> BoxFuture<'a, Result<SessionEnd, UploadError>>;
}

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

/// One request's worth of media and what it reports to.
pub struct Session<'a> {
    pub stream: &'a StreamTarget,
    pub batch: Batch,
    /// The stream's pacing, shared by its consecutive requests.
    pub pacer: Arc<Mutex<Pacer>>,
    /// Sending stops between fragments once this fires.
    pub stop: &'a Stop,
    pub ledger: &'a Ledger<'a>,
}

/// Records what a sink learns: in the catalog (through the blocking pool) and in the job's
/// [`Progress`].
pub struct Ledger<'a> {
    pub(super) catalog: Arc<Catalog>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) progress: &'a Progress,
}

impl Ledger<'_> {
    /// A request was made (counted in the job's sessions).
    pub fn session_opened(&self) {
        self.progress
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The service persisted `fragment` as `number`: it is uploaded.
    pub async fn persisted(&self, fragment: &FragmentRow, number: &str) -> Result<(), UploadError> {
        let (id, number, now) = (fragment.id, number.to_owned(), self.clock.now());
        blocking(&self.catalog, move |c| {
            c.mark_fragment_uploaded(id, &number, now)
        })
        .await?;
        self.progress.add_uploaded(fragment.size, self.clock.now());
        Ok(())
    }

    /// `fragment` can never be sent (`what` says why): it is marked failed and skipped. Counted
    /// as failed even when the catalog cannot record it.
    pub async fn rejected(&self, fragment: &FragmentRow, what: &str) -> Result<(), UploadError> {
        let (id, error, now) = (fragment.id, what.to_owned(), self.clock.now());
        let marked = blocking(&self.catalog, move |c| {
            c.mark_fragment_failed(id, &error, now)
        })
        .await;
        self.progress.add_failed(what);
        marked
    }
}

/// What a [`MemorySink`] was sent on one request.
#[derive(Clone, Debug)]
pub struct Received {
    pub stream: StreamTarget,
    pub header: Vec<u8>,
    pub fragments: Vec<FragmentRow>,
}

/// A sink for tests: acknowledges every fragment as PERSISTED (fragment numbers "1", "2", ...)
/// and keeps what it was sent. Like PutMedia, it stops between fragments when asked.
#[derive(Debug, Default)]
pub struct MemorySink {
    received: Mutex<Vec<Received>>,
    next_number: Mutex<u64>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every request so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("sink lock").clone()
    }

    fn number(&self) -> String {
        let mut n = self.next_number.lock().expect("sink lock");
        *n += 1;
        n.to_string()
    }

    async fn session(&self, s: Session<'_>) -> Result<SessionEnd, UploadError> {
        s.ledger.session_opened();
        let mut got = Received {
            stream: s.stream.clone(),
            header: s.batch.header,
            fragments: Vec::new(),
        };
        let mut end = SessionEnd::Done;
        for f in s.batch.fragments {
            if s.stop.is_stopped() {
                end = SessionEnd::Stopped;
                break;
            }
            if let Err(e) = s.ledger.persisted(&f.row, &self.number()).await {
                end = SessionEnd::Retry {
                    reason: format!("catalog: {e}"),
                    connection: false,
                };
                break;
            }
            got.fragments.push(f.row);
        }
        self.received.lock().expect("sink lock").push(got);
        Ok(end)
    }
}

impl MediaSink for MemorySink {
    fn send<'a>(&'a self, session: Session<'a>) -> BoxFuture<'a, Result<SessionEnd, UploadError>> {
        Box::pin(self.session(session))
    }
}
