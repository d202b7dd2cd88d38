//! Applying a StartEdgeConfigurationUpdate, and refusing one.

use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::diff::JobDiff;
use super::jobs::StreamJobs;
use super::sync::{self, Refusal, Verdict};
use super::{StreamEvent, Supervisor, Ticket};
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
        let ticket = self.ticket(request.stream_name());
        self.apply_in_turn(ticket, thing, request, live).await
    }

    /// [`Supervisor::apply`] of a request whose place in the arrival order is `ticket`.
    pub async fn apply_in_turn(
        &self,
        ticket: Ticket,
        thing: &str,
        request: StartEdgeConfigurationUpdateRequest,
        live: bool,
    ) -> Option<SyncStatus> {
        if !self.0.accepting.load(Ordering::SeqCst) {
            return None;
        }
        let stream = request.stream_name().to_owned();
        let _lane = self.lane(&stream).await;
        let (ticket, looked) = {
            let (thing, request, max) = (thing.to_owned(), request.clone(), self.0.cfg.max_streams);
            self.db(move |c| {
                let looked = c.config(request.stream_name()).and_then(|stored| {
                    ticket.with_streams_ahead(|ahead| {
                        let verdict =
                            sync::on_request(&thing, &request, stored.as_ref(), live, ahead, max);
                        (stored, verdict)
                    })
                });
                (ticket, looked)
            })
            .await
        };
        let (stored, verdict) = match looked {
            Ok(v) => v,
            Err(e) => {
                let refusal = Refusal::Internal(e.to_string());
                return self.fail(thing, &stream, &refusal.to_string()).await;
            }
        };
        if verdict == Verdict::Unchanged {
            return None;
        }
        // The creation time of this thing's stored configuration, read above.
        let created = stored
            .as_ref()
            .filter(|s| s.request.edge_config.thing() == thing)
            .map(|s| s.creation_time);
        self.echo_syncing(thing, &stream, Some(&request), created);
        if let Verdict::Refuse(refusal) = verdict {
            return self.fail(thing, &stream, &refusal.to_string()).await;
        }
        let arn = &request
            .edge_config
            .recorder_config
            .media_source_config
            .media_uri_secret_arn;
        if let Err(e) = self.0.secrets.media_uri(arn).await
            && e.is_user_error()
        {
            return self
                .fail(thing, &stream, &Refusal::Secret(e).to_string())
                .await;
        }
        match self.admit(ticket, &request, stored.is_none()).await {
            Ok(event) => self.0.emit(event),
            Err(refusal) => return self.fail(thing, &stream, &refusal.to_string()).await,
        }
        self.replace_jobs(&request, live).await;
        self.set_status(&stream, SyncStatus::InSync, None).await;
        info!(stream, "edge configuration in sync");
        Some(SyncStatus::InSync)
    }

    /// Stores the request ACKNOWLEDGED (the event publishing it is returned); a new stream
    /// only while there is room for it ahead of the requests that arrived after it (counted
    /// again: the lookup took time).
    async fn admit(
        &self,
        ticket: Ticket,
        request: &StartEdgeConfigurationUpdateRequest,
        new: bool,
    ) -> Result<StreamEvent, Refusal> {
        let (request, max, now) = (request.clone(), self.0.cfg.max_streams, self.0.clock.now());
        self.db(move |c| {
            let stored = ticket.with_streams_ahead(|ahead| {
                if new && let Some(refusal) = sync::over_limit(ahead, max) {
                    return Err(refusal);
                }
                c.put_config(&request, SyncStatus::Acknowledged, now)
                    .map(|_| super::report::snapshot(c, request.stream_name()))
                    .map_err(|e| Refusal::Internal(e.to_string()))
            });
            stored.map_err(|e| Refusal::Internal(e.to_string()))?
        })
        .await
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
        let created = self
            .own_config(thing, stream)
            .await
            .map(|s| s.creation_time);
        self.echo_syncing(thing, stream, None, created);
        self.fail(thing, stream, details).await;
    }

    /// The SYNCING echo of a received request (not stored); `created`: the creation time of
    /// the thing's stored configuration, if any.
    fn echo_syncing(
        &self,
        thing: &str,
        stream: &str,
        request: Option<&StartEdgeConfigurationUpdateRequest>,
        created: Option<jiff::Timestamp>,
    ) {
        let response = sync::syncing(stream, request, created, self.0.clock.now());
        self.0.emit(StreamEvent::State {
            thing: thing.to_owned(),
            stream: stream.to_owned(),
            response: Box::new(response),
        });
    }

    async fn fail(&self, thing: &str, stream: &str, details: &str) -> Option<SyncStatus> {
        warn!(stream, details, "edge configuration refused");
        if self.own_config(thing, stream).await.is_some() {
            self.set_status(stream, SyncStatus::SyncFailed, Some(details))
                .await;
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
    pub(super) async fn own_config(&self, thing: &str, stream: &str) -> Option<StoredConfig> {
        let name = stream.to_owned();
        self.db(move |c| c.config(&name))
            .await
            .ok()
            .flatten()
            .filter(|c| c.request.edge_config.thing() == thing)
    }
}
