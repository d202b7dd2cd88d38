//! What a stream's sessions send, in order: the first pending fragment with its segment header,
//! then each later one as soon as the recorder has committed it.
//!
//! A [`Feed`] lives as long as the job. [`Feed::begin`] starts a session at the oldest pending
//! fragment (so whatever a previous session left unacknowledged is sent again); [`Feed::next`]
//! hands out the fragments after the last one handed out in recording order, or says the
//! session must end for a new header (another CodecPrivate or picture size) or because the next
//! fragment's time goes back (a wall-clock step), or that nothing is ready yet; then
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
use crate::catalog::{Catalog, CatalogError, FragmentRow, SegmentId, SegmentRow};
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
    NewSession,
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
}

impl Feed {
    pub fn new(
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
        stream: &str,
        dir: &Path,
        recheck: Duration,
    ) -> Feed {
        let mut commits = catalog.committed(stream);
        commits.mark_unchanged();
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
        }
    }

    /// Starts a session at the oldest pending fragment; `None` when nothing is pending. A
    /// fragment whose segment header cannot be read is marked failed and skipped.
    pub async fn begin(&mut self) -> Result<Option<Start>, UploadError> {
        self.queue.clear();
        self.last = None;
        self.codec = None;
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

    /// The fragment after the last one handed out, if it is ready and fits the header.
    pub async fn next(&mut self) -> Result<Next, UploadError> {
        if self.queue.is_empty() && !self.refill().await? {
            return Ok(Next::Empty);
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

    /// Waits until a fragment of the stream may have been committed: the recorder's
    /// announcement, or `recheck` for commits made by another process.
    pub async fn changed(&mut self) {
        tokio::select! {
            r = self.commits.changed() => {
                if r.is_err() {
                    // The catalog is gone; nothing more will be announced.
                    std::future::pending::<()>().await;
                }
            }
            () = self.clock.sleep(self.recheck) => {}
        }
    }

    async fn refill(&mut self) -> Result<bool, UploadError> {
        // Marks what is already committed as seen: `changed` then waits for newer commits.
        self.commits.mark_unchanged();
        self.segments.clear();
        let (stream, after) = (self.stream.clone(), self.last.clone());
        let rows = self
            .db(move |c| c.pending_fragments_after(&stream, after.as_ref(), READ_AHEAD))
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
