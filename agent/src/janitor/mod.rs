//! The janitor: deletes a stream's media by retention, size limit and delete-after-upload, and
//! says when recording must pause (DENY_NEW_MEDIA at its limit, or the disk under its reserve).
//!
//! [`policy`] decides (pure); [`delete`] carries out a deletion in the crash-safe order; this
//! module measures the disk and runs the per-stream loop: a pass after every closed segment
//! (the recorder's notification) and at least once a minute.

pub mod policy;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinError;
use tracing::{info, warn};

use crate::catalog::{Catalog, CatalogError, SegmentId};
use crate::clock::Clock;
use crate::stop::Stop;
use crate::store::delete;
use policy::{DiskReserve, Limits, Reason, SegmentFacts};

/// The longest the janitor waits between passes.
pub const PASS_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum JanitorError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Delete(#[from] crate::store::StoreError),
    #[error("cannot measure free space of {path}: {source}")]
    Statvfs {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the rest of the agent needs to know after a pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// DENY_NEW_MEDIA and the stream is at its limit.
    pub deny_new_media: bool,
    /// The file system is under its reserve.
    pub disk_low: bool,
    /// Bytes the stream keeps on disk.
    pub usage_bytes: u64,
    /// PercentageSpaceUsed (0-1), when the stream has a size limit.
    pub percentage_space_used: Option<f64>,
}

impl State {
    /// Whether the recorder must pause.
    pub fn pause_recording(&self) -> bool {
        self.deny_new_media || self.disk_low
    }
}

/// Free and total bytes of the file system holding `path`.
pub fn disk_space(path: &Path) -> std::io::Result<(u64, u64)> {
    let s = rustix::fs::statvfs(path)?;
    let unit = s.f_frsize.max(1);
    Ok((s.f_bavail * unit, s.f_blocks * unit))
}

pub struct Janitor {
    stream: String,
    catalog: Arc<Catalog>,
    root: PathBuf,
    limits: Limits,
    reserve: DiskReserve,
    state: State,
}

impl Janitor {
    pub fn new(
        stream: &str,
        catalog: Arc<Catalog>,
        root: &Path,
        limits: Limits,
        reserve: DiskReserve,
    ) -> Janitor {
        Janitor {
            stream: stream.to_owned(),
            catalog,
            root: root.to_owned(),
            limits,
            reserve,
            state: State::default(),
        }
    }

    /// One pass: decide, delete, measure the disk. Returns the new state and what was deleted.
    pub fn pass(&mut self, now_ms: i64) -> Result<(State, Vec<(SegmentId, Reason)>), JanitorError> {
        let summaries = self.catalog.segment_summaries(Some(&self.stream))?;
        let facts: Vec<SegmentFacts> = summaries
            .iter()
            .map(|s| SegmentFacts {
                id: s.segment.id,
                state: s.segment.state,
                end_ms: s.segment.end_ms,
                size: s.segment.size,
                pending: s.pending,
                failed: s.failed,
            })
            .collect();
        let decision = policy::decide(&facts, &self.limits, now_ms, self.state.deny_new_media);
        let mut deleted = Vec::new();
        for (id, reason) in &decision.delete {
            let Some(row) = summaries.iter().find(|s| s.segment.id == *id) else {
                continue;
            };
            delete::delete(&self.catalog, &self.root, &row.segment)?;
            info!(stream = %self.stream, segment = %row.segment.path, ?reason, "deleted");
            deleted.push((*id, *reason));
        }
        let (free, total) = disk_space(&self.root).map_err(|source| JanitorError::Statvfs {
            path: self.root.clone(),
            source,
        })?;
        let disk_low = self.reserve.must_pause(free, total);
        if disk_low && !self.state.disk_low {
            warn!(
                stream = %self.stream,
                free_bytes = free,
                reserve_bytes = self.reserve.floor(total),
                "disk under its reserve: recording paused"
            );
        }
        if decision.deny_new_media != self.state.deny_new_media {
            info!(
                stream = %self.stream,
                usage_bytes = decision.usage_after,
                "DENY_NEW_MEDIA: recording {}",
                if decision.deny_new_media { "paused" } else { "resumed" }
            );
        }
        self.state = State {
            deny_new_media: decision.deny_new_media,
            disk_low,
            usage_bytes: decision.usage_after,
            percentage_space_used: decision.percentage_space_used,
        };
        Ok((self.state.clone(), deleted))
    }
}

/// Runs passes until `stop`: after each `wake` (a closed segment, an upload) and at least every
/// [`PASS_EVERY`] of `clock`. The state after each pass is published on `state`. A failed pass
/// is logged and retried at the next one; it never stops the loop. A pass that panics is logged
/// and its panic passed on, so the job's owner restarts the job (as it restarts a recorder).
pub async fn run(
    mut janitor: Janitor,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    state: watch::Sender<State>,
    mut stop: Stop,
) {
    let stream = janitor.stream.clone();
    loop {
        let now_ms = clock.now().as_millisecond();
        let pass = tokio::task::spawn_blocking(move || {
            let r = janitor.pass(now_ms);
            (janitor, r)
        })
        .await;
        let result;
        (janitor, result) = match pass {
            Ok(done) => done,
            Err(e) => return end_on_lost_pass(&stream, e),
        };
        match result {
            Ok((s, _)) => {
                state.send_replace(s);
            }
            Err(e) => warn!(stream, error = %e, "janitor pass failed"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            stopped = stop.sleep_or_stop(clock.as_ref(), PASS_EVERY) => if stopped { return },
        }
    }
}

/// A pass that panicked (its panic goes on to the job's owner) or was cancelled (the runtime is
/// shutting down: the job just ends).
fn end_on_lost_pass(stream: &str, e: JoinError) {
    if e.is_panic() {
        warn!(stream, "janitor pass panicked; the janitor restarts");
        std::panic::resume_unwind(e.into_panic());
    }
    warn!(stream, error = %e, "janitor pass cancelled");
}

#[cfg(test)]
mod tests;
