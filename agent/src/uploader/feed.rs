//! What a stream's sessions send, in order: the first pending fragment with its segment header,
//! then each later one as soon as the recorder has committed it.
//!
//! A [`Feed`] lives as long as the job. [`Feed::plan`] says which work comes next
//! ([`super::agenda`]: live, requested ranges, the backlog); [`Feed::begin`] starts a session of
//! it at its oldest pending fragment (so whatever a previous session left unacknowledged is
//! sent again); [`Feed::next`]
//! hands out the fragments after the last one handed out in recording order, or says the
//! session must end for a new header (another CodecPrivate or picture size) or because the next
//! fragment's time goes back (a wall-clock step) or more urgent work came (a live or range
//! request), that the work is finished, or that nothing is ready yet; then
//! [`Feed::changed`] waits for the catalog's commit announcement ([`Catalog::committed`]). The
//! announcement is in-process only: commits by another process (`record` beside `upload`) are
//! seen at the next look, every `recheck` at the latest.
//!
//! Segment rows are looked up afresh at each catalog read: SQLite gives the id of a deleted
//! newest segment to the next one (the janitor deletes the segment closed by recovery, or the
//! last one before a pause, once uploaded), and a row cached longer could name a deleted file.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tracing::warn;

use super::UploadError;
use super::agenda::{self, Backlog, BacklogOrder, Work};
use crate::catalog::{
    Catalog, CatalogError, FragmentRow, RequestKind, RequestState, SegmentId, SegmentRow,
};
use crate::clock::Clock;

/// Largest segment header accepted from disk (CodecPrivate is at most 1 MiB).
const MAX_HEADER: u64 = 4 << 20;
/// Fragments read from the catalog at a time.
const READ_AHEAD: usize = 32;

/// A fragment to send and the segment file its cluster lives in.
#[derive(Clone, Debug)]
pub struct FeedFragment {
    pub row: FragmentRow,
    pub path: PathBuf,
}

/// A session's start: the header to send first, then its first fragment.
#[derive(Clone, Debug)]
pub struct Start {
    pub header: Vec<u8>,
    pub first: FeedFragment,
}

/// What comes after the last fragment handed out.
#[derive(Debug)]
pub enum Next {
    Fragment(FeedFragment),
    /// The next pending fragment cannot follow in this session: end it. Either it needs
    /// another header, or it starts before the last one handed out ended (recorded after the
    /// wall clock stepped back), and a session's timecodes must increase (PutMedia 4004).
    /// Or more urgent work came (a live or range request), or the work changed (a request
    /// ended, the backlog's window closed).
    NewSession,
    /// The session's work is done: its range is sent, its live time is up, or (newest first)
    /// an older part of the backlog waits.
    Finished,
    /// The backlog's window closed under a backlog session: it stops as at a job stop.
    WindowClosed,
    /// Nothing pending after the last fragment (yet).
    Empty,
}

/// The picture a session's header describes; a change needs a new session.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Codec {
    id: String,
    private: Vec<u8>,
    size: (u16, u16),
}

impl Codec {
    fn of(s: &SegmentRow) -> Self {
        Codec {
            id: s.codec_id.clone(),
            private: s.codec_private.clone(),
            size: (s.width, s.height),
        }
    }
}

pub struct Feed {
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    stream: String,
    dir: PathBuf,
    commits: tokio::sync::watch::Receiver<i64>,
    recheck: Duration,
    queue: VecDeque<FragmentRow>,
    /// The last fragment handed out: the catalog is read after it.
    last: Option<FragmentRow>,
    segments: HashMap<SegmentId, SegmentRow>,
    codec: Option<Codec>,
    requests: tokio::sync::watch::Receiver<i64>,
    backlog: tokio::sync::watch::Receiver<Option<Backlog>>,
    /// What the session sends, and (from it) the time range it is limited to.
    work: Option<Work>,
    range: Option<(i64, i64)>,
    /// The session's first fragment (newest first: whether older media waits).
    first: Option<FragmentRow>,
    /// A request or the backlog's window changed while waiting: see again what to do.
    replan_due: bool,
}

impl Feed {
    pub fn new(
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
        stream: &str,
        dir: &Path,
        recheck: Duration,
        backlog: tokio::sync::watch::Receiver<Option<Backlog>>,
    ) -> Feed {
        let mut commits = catalog.committed(stream);
        commits.mark_unchanged();
        let requests = catalog.requests_changed(stream);
        Feed {
            catalog,
            clock,
            stream: stream.to_owned(),
            dir: dir.to_owned(),
            commits,
            recheck,
            queue: VecDeque::new(),
            last: None,
            segments: HashMap::new(),
            codec: None,
            requests,
            backlog,
            work: None,
            range: None,
            first: None,
            replan_due: false,
        }
    }

    /// The work to do now (see [`agenda::choose`]); live requests whose time is up are ended
    /// first. `None`: nothing, until a request comes or the backlog's window opens.
    pub async fn plan(&mut self) -> Result<Option<Work>, UploadError> {
        self.requests.mark_unchanged();
        self.replan_due = false;
        let backlog = self.backlog.borrow_and_update().map(|b| b.order);
        let (stream, now) = (self.stream.clone(), self.clock.now());
        let open = self.db(move |c| c.open_requests(&stream)).await?;
        let expired = agenda::expired(&open, now.as_millisecond());
        for id in &expired {
            let id = *id;
            self.db(move |c| {
                c.end_request(id, RequestState::Done, "ended after its duration", now)
            })
            .await?;
        }
        if !expired.is_empty() {
            self.requests.mark_unchanged();
        }
        Ok(agenda::choose(&open, now.as_millisecond(), backlog))
    }

    /// Starts a session of `work` at its oldest pending fragment; `None` when nothing of it is
    /// pending. A fragment whose segment header cannot be read is marked failed and skipped.
    pub async fn begin(&mut self, work: &Work) -> Result<Option<Start>, UploadError> {
        self.queue.clear();
        self.last = None;
        self.codec = None;
        self.first = None;
        self.work = Some(work.clone());
        self.range = match work {
            Work::Backlog(BacklogOrder::Newest) => {
                let stream = self.stream.clone();
                let newest = self.db(move |c| c.newest_pending_fragment(&stream)).await?;
                newest.map(|f| (f.timecode_ms - agenda::NEWEST_FIRST_CHUNK_MS, i64::MAX))
            }
            other => other.range(),
        };
        // Bounded: each pass either returns or marks one fragment failed.
        for _ in 0..READ_AHEAD {
            if self.queue.is_empty() && !self.refill().await? {
                return Ok(None);
            }
            let Some(row) = self.queue.pop_front() else {
                return Ok(None);
            };
            let seg = self.segment(row.segment_id).await?;
            let path = self.dir.join(&seg.path);
            match read_header(&path, seg.header_size).await {
                Ok(header) => {
                    self.codec = Some(Codec::of(&seg));
                    self.last = Some(row.clone());
                    self.first = Some(row.clone());
                    return Ok(Some(Start {
                        header,
                        first: FeedFragment { row, path },
                    }));
                }
                Err(e) => {
                    let what = format!("segment file {} unreadable: {e}", seg.path);
                    warn!(stream = self.stream, error = what, "skipping fragment");
                    let (id, now) = (row.id, self.clock.now());
                    self.db(move |c| c.mark_fragment_failed(id, &what, now))
                        .await?;
                    self.last = Some(row);
                }
            }
        }
        Ok(None)
    }

    /// The fragment after the last one handed out, if it is ready, fits the header and is
    /// still the most urgent work.
    pub async fn next(&mut self) -> Result<Next, UploadError> {
        if let Some(end) = self.replan().await? {
            return Ok(end);
        }
        if self.queue.is_empty() && !self.refill().await? {
            return self.caught_up().await;
        }
        let Some(row) = self.queue.front().cloned() else {
            return Ok(Next::Empty);
        };
        let seg = self.segment(row.segment_id).await?;
        if self.codec.as_ref() != Some(&Codec::of(&seg))
            || self.last.as_ref().is_some_and(|last| goes_back(last, &row))
        {
            return Ok(Next::NewSession);
        }
        self.queue.pop_front();
        self.last = Some(row.clone());
        Ok(Next::Fragment(FeedFragment {
            path: self.dir.join(&seg.path),
            row,
        }))
    }

    /// Whether the session must end before its next fragment: its live time is up, or the
    /// work to do is no longer its own (a request came or ended, the backlog's window closed).
    async fn replan(&mut self) -> Result<Option<Next>, UploadError> {
        let Some(work) = self.work.clone() else {
            return Ok(None);
        };
        let now = self.clock.now().as_millisecond();
        if work
            .request()
            .is_some_and(|r| now >= r.end_ms && r.kind == RequestKind::Live)
        {
            return Ok(Some(Next::Finished));
        }
        let changed = self.replan_due
            || self.requests.has_changed().unwrap_or(false)
            || self.backlog.has_changed().unwrap_or(false);
        if !changed {
            return Ok(None);
        }
        Ok(match self.plan().await? {
            Some(best) if best.same(&work) => None,
            // The backlog's window closed: the session stops (a bounded drain).
            _ if matches!(work, Work::Backlog(_)) && self.backlog.borrow().is_none() => {
                Some(Next::WindowClosed)
            }
            Some(_) => Some(Next::NewSession),
            None => Some(Next::Finished),
        })
    }

    /// Nothing more is pending in the session's scope: wait for commits, or end the work.
    async fn caught_up(&mut self) -> Result<Next, UploadError> {
        let now = self.clock.now().as_millisecond();
        match &self.work {
            Some(Work::Request(r)) if r.kind == RequestKind::Range => {
                let (stream, start, end) = (self.stream.clone(), r.start_ms, r.end_ms);
                let counts = self
                    .db(move |c| c.range_counts(&stream, start, end))
                    .await?;
                if agenda::range_complete(end, counts.recorded_until, now) {
                    return Ok(Next::Finished);
                }
            }
            Some(Work::Backlog(BacklogOrder::Newest)) => {
                // Older media waits: this chunk is done, the next session goes further back.
                let stream = self.stream.clone();
                let oldest = self.db(move |c| c.pending_fragments(&stream, 1)).await?;
                let first = self.first.as_ref().map(|f| (f.segment_id, f.offset));
                if oldest
                    .first()
                    .is_some_and(|o| first.is_some_and(|f| (o.segment_id, o.offset) < f))
                {
                    return Ok(Next::Finished);
                }
            }
            _ => {}
        }
        Ok(Next::Empty)
    }

    /// Waits until something may have changed: a fragment of the stream committed (the
    /// recorder's announcement, or `recheck` for commits made by another process), a request
    /// added or ended, the backlog's window opened or closed, or the live time up.
    pub async fn changed(&mut self) {
        let live_end = match &self.work {
            Some(Work::Request(r)) if r.kind == RequestKind::Live => {
                let left = r.end_ms - self.clock.now().as_millisecond();
                Duration::from_millis(left.max(0) as u64)
            }
            _ => self.recheck,
        };
        tokio::select! {
            r = self.commits.changed() => {
                if r.is_err() {
                    // The catalog is gone; nothing more will be announced.
                    std::future::pending::<()>().await;
                }
            }
            Ok(()) = self.requests.changed() => self.replan_due = true,
            Ok(()) = self.backlog.changed() => self.replan_due = true,
            () = self.clock.sleep(self.recheck.min(live_end)) => {}
        }
    }

    async fn refill(&mut self) -> Result<bool, UploadError> {
        // Marks what is already committed as seen: `changed` then waits for newer commits.
        self.commits.mark_unchanged();
        self.segments.clear();
        let (stream, after, range) = (self.stream.clone(), self.last.clone(), self.range);
        let rows = self
            .db(move |c| c.pending_fragments_in(&stream, after.as_ref(), range, READ_AHEAD))
            .await?;
        self.queue.extend(rows);
        Ok(!self.queue.is_empty())
    }

    async fn segment(&mut self, id: SegmentId) -> Result<SegmentRow, UploadError> {
        if let Some(s) = self.segments.get(&id) {
            return Ok(s.clone());
        }
        let row = self.db(move |c| c.segment(id)).await?.ok_or_else(|| {
            UploadError::Catalog(CatalogError::NotFound {
                what: "segment",
                key: id.to_string(),
            })
        })?;
        self.segments.insert(id, row.clone());
        Ok(row)
    }

    async fn db<T, F>(&self, f: F) -> Result<T, UploadError>
    where
        T: Send + 'static,
        F: FnOnce(&Catalog) -> Result<T, CatalogError> + Send + 'static,
    {
        super::blocking(&self.catalog, f).await
    }
}

/// Whether `next` may start before `last`'s newest frame: the service wants every fragment of a
/// session to start after the previous one's newest frame. A fragment's frames all lie before
/// its end (`timecode + duration`, exact when the next fragment followed it, an over-estimate
/// when it was flushed), so this never misses a fragment that goes back; it can only take a
/// fragment flushed at a gap for one, and that costs a new session, nothing else.
fn goes_back(last: &FragmentRow, next: &FragmentRow) -> bool {
    next.timecode_ms < last.timecode_ms + last.duration_ms
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
