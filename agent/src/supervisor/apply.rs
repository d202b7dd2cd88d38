//! Applying a StartEdgeConfigurationUpdate, and refusing one.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::diff::JobDiff;
use super::jobs::StreamJobs;
use super::sync::{self, Verdict};
use super::{SECRET_FIELD, StreamEvent, Supervisor};
use crate::catalog::StoredConfig;
use crate::edge_config::{JobError, StartEdgeConfigurationUpdateRequest, SyncStatus};

impl Supervisor {
    /// Applies a validated StartEdgeConfigurationUpdate received for `thing`. `live`: a live
    /// publish (always applies); otherwise a retained delivery, which applies only when it
    /// differs from the stored configuration. Returns the resulting SyncStatus (`None` when
    /// nothing was done).
    pub async fn apply(
        &self,
        thing: &str,
        request: StartEdgeConfigurationUpdateRequest,
        live: bool,
    ) -> Option<SyncStatus> {
        if !self.0.accepting.load(Ordering::SeqCst) {
            return None;
        }
        let stream = request.stream_name().to_owned();
        let _lane = self.lane(&stream).await;
        let stored = match self.0.catalog.config(&stream) {
            Ok(s) => s,
            Err(e) => return self.fail(thing, &stream, &format!("internal error: {e}")),
        };
        let count = self.0.catalog.config_count().unwrap_or(0);
        let verdict = sync::on_request(
            thing,
            &request,
            stored.as_ref(),
            live,
            count,
            self.0.cfg.max_streams,
        );
        if verdict == Verdict::Unchanged {
            return None;
        }
        self.echo_syncing(thing, &stream, Some(&request));
        if let Verdict::Refuse(details) = verdict {
            return self.fail(thing, &stream, &details);
        }
        let arn = &request
            .edge_config
            .recorder_config
            .media_source_config
            .media_uri_secret_arn;
        if let Err(e) = self.0.secrets.media_uri(arn).await
            && e.is_user_error()
        {
            return self.fail(thing, &stream, &format!("{SECRET_FIELD}: {e}"));
        }
        if let Err(details) = self.admit(&request, stored.is_none()) {
            return self.fail(thing, &stream, &details);
        }
        self.0.changed(&stream);
        self.replace_jobs(&request, live).await;
        self.set_status(&stream, SyncStatus::InSync, None);
        info!(stream, "edge configuration in sync");
        Some(SyncStatus::InSync)
    }

    /// Stores the request ACKNOWLEDGED; a new stream only while there is room for it (counted
    /// again: another stream may have been admitted during the secret lookup).
    fn admit(
        &self,
        request: &StartEdgeConfigurationUpdateRequest,
        new: bool,
    ) -> Result<(), String> {
        let _admission = self
            .0
            .admission
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if new {
            let count = self.0.catalog.config_count().unwrap_or(0);
            if let Some(details) = sync::over_limit(count, self.0.cfg.max_streams) {
                return Err(details);
            }
        }
        self.0
            .catalog
            .put_config(request, SyncStatus::Acknowledged, self.0.clock.now())
            .map(|_| ())
            .map_err(|e| format!("internal error: {e}"))
    }

    /// Replaces a stream's jobs with the request's, keeping the recorder when [`JobDiff`] says.
    async fn replace_jobs(&self, request: &StartEdgeConfigurationUpdateRequest, live: bool) {
        let stream = request.stream_name();
        let previous = self.0.streams.lock().await.remove(stream);
        let kept = match previous {
            Some(mut old) => {
                let running = old.recorder.as_ref().is_some_and(|r| r.is_running());
                let diff = JobDiff::new(&old.config, &request.edge_config, live, running);
                let kept = if diff.keep_recorder {
                    info!(
                        stream,
                        "recorder configuration unchanged; recorder keeps running"
                    );
                    old.recorder.take().map(|r| (r, old.link.clone()))
                } else {
                    None
                };
                old.stop().await;
                kept
            }
            None => None,
        };
        let jobs = StreamJobs::start(&self.0, request, kept);
        self.put_jobs(stream, jobs).await;
    }

    /// A request that cannot be applied: SYNC_FAILED with `details`. A stored configuration
    /// keeps running as it was; a stream with none gets a `reported` that is not stored.
    pub async fn reject(&self, thing: &str, stream: &str, details: &str) {
        let _lane = self.lane(stream).await;
        self.echo_syncing(thing, stream, None);
        self.fail(thing, stream, details);
    }

    /// The SYNCING echo of a received request (not stored).
    fn echo_syncing(
        &self,
        thing: &str,
        stream: &str,
        request: Option<&StartEdgeConfigurationUpdateRequest>,
    ) {
        let created = self.own_config(thing, stream).map(|s| s.creation_time);
        let response = sync::syncing(stream, request, created, self.0.clock.now());
        self.0.emit(StreamEvent::State {
            thing: thing.to_owned(),
            stream: stream.to_owned(),
            response: Box::new(response),
        });
    }

    fn fail(&self, thing: &str, stream: &str, details: &str) -> Option<SyncStatus> {
        warn!(stream, details, "edge configuration refused");
        if self.own_config(thing, stream).is_some() {
            self.set_status(stream, SyncStatus::SyncFailed, Some(details));
        } else {
            self.0.emit(StreamEvent::State {
                thing: thing.to_owned(),
                stream: stream.to_owned(),
                response: Box::new(sync::refused(stream, details, self.0.clock.now())),
            });
        }
        Some(SyncStatus::SyncFailed)
    }

    /// The stored configuration of `stream` when it is `thing`'s; another thing's stream of the
    /// same name is never changed on this thing's behalf.
    fn own_config(&self, thing: &str, stream: &str) -> Option<StoredConfig> {
        self.0
            .catalog
            .config(stream)
            .ok()
            .flatten()
            .filter(|c| c.request.edge_config.thing() == thing)
    }
}
