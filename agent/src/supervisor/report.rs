//! How the jobs' states reach the catalog and the control plane: every stored change is sent
//! as a [`StreamEvent`] carrying the state as it is at that moment.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

use super::{Inner, StreamEvent};
use crate::catalog::{Catalog, Job};
use crate::edge_config::JobStatus;
use crate::health::{JobKind, Occurrence};
use crate::janitor;
use crate::recorder::{self, StatusSink};

/// The event carrying a stream's stored state now (a snapshot, so every transition is seen even
/// when the next follows at once); `Changed` (read again when published) when it cannot be read.
pub(super) fn snapshot(catalog: &Catalog, stream: &str) -> StreamEvent {
    match catalog.describe(stream) {
        Ok(Some(d)) => StreamEvent::Stored {
            thing: d
                .edge_config
                .as_ref()
                .map(|c| c.thing())
                .unwrap_or_default(),
            stream: stream.to_owned(),
            response: Box::new(d),
        },
        _ => StreamEvent::Changed {
            stream: stream.to_owned(),
        },
    }
}

impl Inner {
    pub(super) fn emit(&self, e: StreamEvent) {
        let _ = self.events.send(e);
    }

    /// A job's one-off event, for CloudWatch (published once) and Prometheus (counted).
    pub(super) fn occurred(&self, stream: &str, kind: JobKind, what: Occurrence) {
        self.board.occurred(stream, kind, what, self.clock.now());
        self.stats.stream(stream).occurred(kind, what);
    }

    /// Publishes the stream's stored state as it is now.
    pub(super) fn changed(&self, stream: &str) {
        self.emit(snapshot(&self.catalog, stream));
    }
}

/// Writes recorder status to the catalog and tells the control plane.
pub(super) struct EventStatus {
    pub inner: Arc<Inner>,
    pub store: recorder::CatalogStatus,
    /// Wakes the stream's janitor: a closed segment may be deletable, or over the limit.
    pub segment_closed: Arc<tokio::sync::Notify>,
    /// Set on USER_ERROR (bad URI, credentials refused, unsupported codec): a configuration
    /// error, which stops the recorder until the configuration is sent again.
    pub fatal: watch::Sender<bool>,
    pub counters: Arc<crate::stats::StreamCounters>,
}

impl StatusSink for EventStatus {
    fn report(&self, status: JobStatus, details: Option<&str>) {
        match self.store.store(status, details) {
            Ok(()) => self.inner.changed(&self.store.stream),
            Err(e) => {
                warn!(stream = %self.store.stream, error = %e, "cannot store the recorder status")
            }
        }
        if status == JobStatus::UserError {
            self.fatal.send_replace(true);
        }
    }

    fn segment_closed(&self) {
        self.segment_closed.notify_one();
    }

    fn connected(&self) {
        self.counters.camera_session();
    }

    fn frame(&self, timestamp_ms: i64) {
        self.counters.frame(timestamp_ms);
    }

    fn fragment_recorded(&self, frames: u64, bytes: u64) {
        self.counters.fragment_recorded(frames, bytes);
    }
}

/// Says in LastRecorderStatus why recording paused or that it resumed: DENY_NEW_MEDIA at the
/// limit is the configured behaviour (SUCCESS), a full disk is not (SYSTEM_ERROR).
pub(super) fn report_pause(inner: &Inner, stream: &str, state: &janitor::State) {
    let (status, details) = if state.disk_low {
        (
            JobStatus::SystemError,
            "recording paused: the file system is under its free-space reserve".to_owned(),
        )
    } else if state.deny_new_media {
        (
            JobStatus::Success,
            format!(
                "recording paused: the stream holds {} MB, at its MaxLocalMediaSizeInMB \
                 (DENY_NEW_MEDIA); it resumes when retention or upload frees space",
                state.usage_bytes >> 20
            ),
        )
    } else {
        (JobStatus::Success, "recording resumed".to_owned())
    };
    let now = inner.clock.now();
    match inner
        .catalog
        .set_job_status(stream, Job::Recorder, status, Some(&details), None, now)
    {
        Ok(()) => inner.changed(stream),
        Err(e) => warn!(stream, error = %e, "cannot store the recorder status"),
    }
    info!(stream, "{details}");
}
