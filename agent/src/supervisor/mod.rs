//! The supervisor: one task set per stream (recorder, uploader, janitor), driven by the edge
//! configurations the control plane hands it.
//!
//! Applying a StartEdgeConfigurationUpdate: checks (stream limit, secret) -> ACKNOWLEDGED and
//! persisted -> the stream's jobs replaced -> IN_SYNC; a refused one -> SYNC_FAILED with
//! FailedStatusDetails naming the field. A configuration whose `RecorderConfig` did not change
//! keeps its recorder running (an uploader or deletion change loses no frame); a live resend of
//! the same configuration restarts every job (the seed's FAQ: "Resend the
//! StartEdgeConfigurationUpdate to restart the job"). Deleting: DELETING ->
//! DELETING_ACKNOWLEDGED -> jobs stopped, media and rows removed -> [`StreamEvent::Removed`];
//! DELETE_FAILED when that fails.
//!
//! Restart policy: a recorder that crashes (or cannot read its secret for a transient reason)
//! restarts after 1 s, doubling to 30 s; a fatal error (unknown secret, bad URI, missing clip,
//! unsupported codec: USER_ERROR) stops it until the configuration is sent again. Transient
//! source failures (camera unreachable, stalls) are retried inside the recorder itself.
//!
//! The jobs of a stream: the recorder records inside its schedule's windows (always without
//! one) unless the janitor says pause (DENY_NEW_MEDIA at the size limit, disk under its
//! reserve); the janitor passes at least once a minute; the uploader (only with AWS settings:
//! local mode without `AWS_REGION` records only) runs inside its windows, or at start and every
//! hour until the backlog is empty. The uploader and janitor write their status to the catalog,
//! which the control plane publishes when it changes.
//!
//! Data flows one way: the supervisor never calls the control plane; it sends
//! [`StreamEvent`]s on a channel, which the control plane turns into `reported` publishes.

pub(crate) mod fault;
pub mod secrets;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::catalog::{Catalog, CatalogError};
use crate::clock::Clock;
use crate::edge_config::{
    ApiTimestamp, DescribeEdgeConfigurationResponse, EdgeConfig, JobStatus,
    StartEdgeConfigurationUpdateRequest, SyncStatus, thing_name_from_arn,
};
use crate::health::{HealthSnapshot, JobBoard, JobEvent, JobKind, Occurrence, Phase};
use crate::janitor::{self, Janitor, policy::DiskReserve, policy::Limits};
use crate::recorder::fragmenter::FragmenterConfig;
use crate::recorder::rtsp::RtspOptions;
use crate::recorder::{self, Control, StatusSink};
use crate::schedule::{CronSchedule, Plan, PlanState, ScheduleDriver, Transition, Windows};
use crate::uploader::{self, RunMode, StreamTarget, Uploader};
use secrets::SecretSource;

/// What changed, for the control plane to publish.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// The stream's stored state changed: publish `catalog.describe(stream)`.
    Changed { stream: String },
    /// The stream's stored state at the moment it changed: publish this response.
    Stored {
        thing: String,
        stream: String,
        response: Box<DescribeEdgeConfigurationResponse>,
    },
    /// A state the catalog does not hold (the SYNCING echo of a received request, or a refusal
    /// of a stream that has no stored configuration): publish this response.
    State {
        thing: String,
        stream: String,
        response: Box<DescribeEdgeConfigurationResponse>,
    },
    /// The configuration is gone: clear the stream's `reported` and `desired` topics.
    Removed { thing: String, stream: String },
}

#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    pub recording_dir: PathBuf,
    /// Most configurations run at once; one more is refused with SYNC_FAILED.
    pub max_streams: usize,
    pub fragmenter: FragmenterConfig,
    pub rtsp: RtspOptions,
    /// The zone schedules are evaluated in (the device's, as the seed says).
    pub time_zone: jiff::tz::TimeZone,
    /// Free space every stream's recorder leaves on the file system.
    pub disk_reserve: DiskReserve,
}

/// The path of the secret ARN in a request, for FailedStatusDetails.
const SECRET_FIELD: &str = "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriSecretArn";

const RESTART_MIN: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);

/// A running job: dropping or setting `stop` asks it to finish.
struct JobHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl JobHandle {
    async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            warn!(error = %e, "job panicked while stopping");
        }
    }
}

/// The jobs of one stream and the configuration they run with.
struct StreamJobs {
    config: EdgeConfig,
    recorder: Option<JobHandle>,
    uploader: Option<JobHandle>,
    janitor: Option<JobHandle>,
    stream: String,
    board: Arc<JobBoard>,
    /// The recorder's pause signal and segment-closed wake-up, shared with the janitor; outlives
    /// a janitor restarted by a configuration change.
    link: Arc<Link>,
}

impl StreamJobs {
    /// Stops every job; the uploader and janitor first, then the recorder, which writes its
    /// fragment in flight.
    async fn stop(self) {
        // The jobs leave the metrics with their configuration (a recorder kept across a
        // configuration change was taken out before, and stays).
        if self.recorder.is_some() {
            self.board.remove(&self.stream, JobKind::Record);
        }
        if self.uploader.is_some() {
            self.board.remove(&self.stream, JobKind::Upload);
        }
        let others = [self.uploader, self.janitor]
            .into_iter()
            .flatten()
            .map(JobHandle::stop);
        futures::future::join_all(others).await;
        if let Some(r) = self.recorder {
            r.stop().await;
        }
    }
}

struct Inner {
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    cfg: SupervisorConfig,
    secrets: Arc<dyn SecretSource>,
    events: mpsc::UnboundedSender<StreamEvent>,
    /// Uploads to Kinesis Video Streams; `None` without AWS settings (local mode).
    uploader: Option<Uploader>,
    streams: Mutex<HashMap<String, StreamJobs>>,
    accepting: AtomicBool,
    /// What each job is doing, for the metrics.
    board: Arc<JobBoard>,
}

/// Cheap to clone; every clone drives the same jobs.
#[derive(Clone)]
pub struct Supervisor(Arc<Inner>);

impl Supervisor {
    pub fn new(
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
        cfg: SupervisorConfig,
        secrets: Arc<dyn SecretSource>,
        uploader: Option<Uploader>,
        events: mpsc::UnboundedSender<StreamEvent>,
    ) -> Supervisor {
        Supervisor(Arc::new(Inner {
            catalog,
            clock,
            cfg,
            secrets,
            uploader,
            events,
            streams: Mutex::new(HashMap::new()),
            accepting: AtomicBool::new(true),
            board: Arc::new(JobBoard::new()),
        }))
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.0.catalog
    }

    /// Every job's phase, with its status from the catalog (errored or not).
    pub fn health(&self) -> HealthSnapshot {
        let catalog = &self.0.catalog;
        self.0.board.snapshot(
            |stream, kind| {
                let job = match kind {
                    JobKind::Record => crate::catalog::Job::Recorder,
                    JobKind::Upload => crate::catalog::Job::Uploader,
                };
                catalog
                    .job_status(stream, job)
                    .ok()
                    .flatten()
                    .map(|r| r.status)
            },
            |stream| catalog.stream_usage(stream).ok(),
        )
    }

    /// The jobs' one-off events (FatalError, Completed) since the last call.
    pub fn take_events(&self) -> Vec<JobEvent> {
        self.0.board.take_events()
    }

    fn now(&self) -> Timestamp {
        self.0.clock.now()
    }

    fn emit(&self, e: StreamEvent) {
        let _ = self.0.events.send(e);
    }

    /// Publishes the stream's stored state as it is now (a snapshot, so every transition is
    /// seen even when the next follows at once).
    fn changed(&self, stream: &str) {
        self.emit(snapshot(&self.0.catalog, stream));
    }

    /// Streams with running jobs.
    pub async fn running_streams(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0.streams.lock().await.keys().cloned().collect();
        v.sort();
        v
    }

    /// Starts the jobs of every stored configuration (at startup, before and without any
    /// broker), and finishes deletions a previous run left half done.
    pub async fn resume(&self) {
        let configs = match self.0.catalog.each_config() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot read the stored configurations");
                return;
            }
        };
        for c in configs {
            let c = match c {
                Ok(c) => c,
                Err(e) => {
                    // One damaged row fails its stream, not the agent.
                    warn!(error = %e, "cannot resume a stored configuration");
                    if let CatalogError::Corrupt { stream, .. } = &e {
                        self.set_status(stream, SyncStatus::SyncFailed, Some(&e.to_string()));
                    }
                    continue;
                }
            };
            let stream = c.stream_name().to_owned();
            let thing = thing_of(&c.request.edge_config);
            match c.sync_status {
                SyncStatus::Deleting | SyncStatus::DeletingAcknowledged => {
                    info!(stream, "finishing an interrupted deletion");
                    self.delete(&thing, &stream).await;
                }
                SyncStatus::DeleteFailed => {
                    info!(
                        stream,
                        "deletion failed earlier; jobs stay stopped until deleted again"
                    );
                }
                status => {
                    info!(stream, %status, "resuming stored configuration");
                    let mut streams = self.0.streams.lock().await;
                    let jobs = self.start_jobs(&c.request.edge_config, &c.request, None);
                    streams.insert(stream.clone(), jobs);
                    drop(streams);
                    if matches!(status, SyncStatus::Syncing | SyncStatus::Acknowledged) {
                        self.set_status(&stream, SyncStatus::InSync, None);
                    }
                }
            }
        }
    }

    fn set_status(&self, stream: &str, status: SyncStatus, details: Option<&str>) {
        match self
            .0
            .catalog
            .set_sync_status(stream, status, details, self.now())
        {
            Ok(()) => self.changed(stream),
            Err(e) => warn!(stream, error = %e, "cannot store the sync status"),
        }
    }

    /// The SYNCING echo of a received request (not stored).
    fn echo_syncing(
        &self,
        thing: &str,
        stream: &str,
        request: Option<&StartEdgeConfigurationUpdateRequest>,
    ) {
        let stored = self.own_config(thing, stream);
        let response = DescribeEdgeConfigurationResponse {
            creation_time: Some(ApiTimestamp(
                stored.as_ref().map_or(self.now(), |s| s.creation_time),
            )),
            edge_agent_status: None,
            edge_config: request.map(|r| r.edge_config.clone()),
            failed_status_details: None,
            last_updated_time: Some(ApiTimestamp(self.now())),
            stream_arn: request.and_then(|r| r.stream_arn.clone()),
            stream_name: Some(stream.to_owned()),
            sync_status: Some(SyncStatus::Syncing),
        };
        self.emit(StreamEvent::State {
            thing: thing.to_owned(),
            stream: stream.to_owned(),
            response: Box::new(response),
        });
    }

    /// A request that cannot be applied: SYNC_FAILED with `details`. A stored configuration
    /// keeps running as it was; a stream with none gets a `reported` that is not stored.
    pub async fn reject(&self, thing: &str, stream: &str, details: &str) {
        self.echo_syncing(thing, stream, None);
        self.fail(thing, stream, details);
    }

    fn fail(&self, thing: &str, stream: &str, details: &str) {
        warn!(stream, details, "edge configuration refused");
        if self.own_config(thing, stream).is_some() {
            self.set_status(stream, SyncStatus::SyncFailed, Some(details));
            return;
        }
        let now = ApiTimestamp(self.now());
        self.emit(StreamEvent::State {
            thing: thing.to_owned(),
            stream: stream.to_owned(),
            response: Box::new(DescribeEdgeConfigurationResponse {
                creation_time: Some(now),
                edge_agent_status: None,
                edge_config: None,
                failed_status_details: Some(details.to_owned()),
                last_updated_time: Some(now),
                stream_arn: None,
                stream_name: Some(stream.to_owned()),
                sync_status: Some(SyncStatus::SyncFailed),
            }),
        });
    }

    /// The stored configuration of `stream` when it is `thing`'s; another thing's stream of the
    /// same name is never changed on this thing's behalf.
    fn own_config(&self, thing: &str, stream: &str) -> Option<crate::catalog::StoredConfig> {
        self.0
            .catalog
            .config(stream)
            .ok()
            .flatten()
            .filter(|c| thing_of(&c.request.edge_config) == thing)
    }

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
        let mut streams = self.0.streams.lock().await;
        let stored = match self.0.catalog.config(&stream) {
            Ok(s) => s,
            Err(e) => {
                self.fail(thing, &stream, &format!("internal error: {e}"));
                return Some(SyncStatus::SyncFailed);
            }
        };
        if !live
            && let Some(s) = &stored
            && s.request == request
            && s.sync_status != SyncStatus::SyncFailed
        {
            return None;
        }
        self.echo_syncing(thing, &stream, Some(&request));
        // Stream names are unique per account and region: one stream recorded by two things
        // is a conflict, refused on the newcomer's topic; the owner's stream runs on untouched.
        if let Some(owner) = stored
            .as_ref()
            .map(|s| thing_of(&s.request.edge_config))
            .filter(|owner| owner != thing)
        {
            self.fail(
                thing,
                &stream,
                &format!(
                    "StreamName: the stream {stream:?} is configured on the thing {owner:?}; \
                     delete it there with DeleteEdgeConfiguration first"
                ),
            );
            return Some(SyncStatus::SyncFailed);
        }

        if stored.is_none() {
            let count = self.0.catalog.config_count().unwrap_or(0);
            if count >= self.0.cfg.max_streams {
                self.fail(
                    thing,
                    &stream,
                    &format!(
                        "the agent already runs {count} streams, its limit (max_streams {}); \
                         delete one with DeleteEdgeConfiguration first",
                        self.0.cfg.max_streams
                    ),
                );
                return Some(SyncStatus::SyncFailed);
            }
        }
        let arn = &request
            .edge_config
            .recorder_config
            .media_source_config
            .media_uri_secret_arn;
        if let Err(e) = self.0.secrets.media_uri(arn)
            && e.is_fatal()
        {
            self.fail(thing, &stream, &format!("{SECRET_FIELD}: {e}"));
            return Some(SyncStatus::SyncFailed);
        }

        if let Err(e) = self
            .0
            .catalog
            .put_config(&request, SyncStatus::Acknowledged, self.now())
        {
            self.fail(thing, &stream, &format!("internal error: {e}"));
            return Some(SyncStatus::SyncFailed);
        }
        self.changed(&stream);

        let previous = streams.remove(&stream);
        let jobs = match previous {
            Some(mut old) => {
                let keep_recorder = !live_resend(live, &old.config, &request.edge_config)
                    && old.config.recorder_config == request.edge_config.recorder_config
                    && old.recorder.as_ref().is_some_and(|r| !r.task.is_finished());
                let kept = if keep_recorder {
                    info!(
                        stream,
                        "recorder configuration unchanged; recorder keeps running"
                    );
                    old.recorder.take().map(|r| (r, old.link.clone()))
                } else {
                    None
                };
                old.stop().await;
                self.start_jobs(&request.edge_config, &request, kept)
            }
            None => self.start_jobs(&request.edge_config, &request, None),
        };
        streams.insert(stream.clone(), jobs);
        drop(streams);
        self.set_status(&stream, SyncStatus::InSync, None);
        info!(stream, "edge configuration in sync");
        Some(SyncStatus::InSync)
    }

    /// Starts a stream's jobs; `kept` is a recorder kept from the previous configuration, with
    /// its pause signal.
    fn start_jobs(
        &self,
        config: &EdgeConfig,
        request: &StartEdgeConfigurationUpdateRequest,
        kept: Option<(JobHandle, Arc<Link>)>,
    ) -> StreamJobs {
        let stream = request.stream_name();
        let thing = thing_of(config);
        let board = &self.0.board;
        board.register(stream, &thing, JobKind::Record);
        if self.0.uploader.is_some() {
            board.register(stream, &thing, JobKind::Upload);
        }
        let (recorder, link) = kept.unwrap_or_else(|| {
            let link = Arc::new(Link {
                pause: watch::channel(false).0,
                segment_closed: Arc::new(tokio::sync::Notify::new()),
            });
            let (stop, rx) = watch::channel(false);
            let task = tokio::spawn(recorder_job(
                self.0.clone(),
                stream.to_owned(),
                config.clone(),
                link.clone(),
                rx,
            ));
            (JobHandle { stop, task }, link)
        });
        let janitor = {
            let (stop, rx) = watch::channel(false);
            let (inner, name, config, link) = (
                self.0.clone(),
                stream.to_owned(),
                config.clone(),
                link.clone(),
            );
            let task = tokio::spawn(restarting("janitor", stream.to_owned(), rx, move |rx| {
                janitor_job(
                    inner.clone(),
                    name.clone(),
                    config.clone(),
                    link.clone(),
                    rx,
                )
            }));
            JobHandle { stop, task }
        };
        let uploader = self.0.uploader.as_ref().map(|_| {
            let target = match &request.stream_arn {
                Some(arn) => StreamTarget::Arn {
                    arn: arn.clone(),
                    name: stream.to_owned(),
                },
                None => StreamTarget::Name(stream.to_owned()),
            };
            let (stop, rx) = watch::channel(false);
            let (inner, config, link) = (self.0.clone(), config.clone(), link.clone());
            let task = tokio::spawn(restarting("uploader", stream.to_owned(), rx, move |rx| {
                uploader_job(
                    inner.clone(),
                    target.clone(),
                    config.clone(),
                    link.clone(),
                    rx,
                )
            }));
            JobHandle { stop, task }
        });
        StreamJobs {
            config: config.clone(),
            recorder: Some(recorder),
            uploader,
            janitor: Some(janitor),
            stream: stream.to_owned(),
            board: board.clone(),
            link,
        }
    }

    /// DeleteEdgeConfiguration for `stream`.
    pub async fn delete(&self, thing: &str, stream: &str) {
        if !self.0.accepting.load(Ordering::SeqCst) {
            return;
        }
        let mut streams = self.0.streams.lock().await;
        let stored = match self.0.catalog.config(stream) {
            Ok(s) => s,
            Err(e) => {
                warn!(stream, error = %e, "cannot read the configuration to delete");
                None
            }
        };
        // Another thing's stream of this name is not this thing's to delete.
        let foreign = stored
            .as_ref()
            .is_some_and(|s| thing_of(&s.request.edge_config) != thing);
        let Some(stored) = stored.filter(|_| !foreign) else {
            // Nothing stored for this thing (never applied, refused, deleted already, or
            // another thing's): clear this thing's topics.
            if foreign {
                info!(
                    stream,
                    thing, "deletion for a stream of another thing; ignored"
                );
            } else if let Some(jobs) = streams.remove(stream) {
                jobs.stop().await;
            }
            self.emit(StreamEvent::Removed {
                thing: thing.to_owned(),
                stream: stream.to_owned(),
            });
            return;
        };
        let thing = thing_of(&stored.request.edge_config);
        self.set_status(stream, SyncStatus::Deleting, None);
        self.set_status(stream, SyncStatus::DeletingAcknowledged, None);
        if let Some(jobs) = streams.remove(stream) {
            jobs.stop().await;
        }
        drop(streams);
        let catalog = self.0.catalog.clone();
        let dir = self.0.cfg.recording_dir.clone();
        let name = stream.to_owned();
        let result = tokio::task::spawn_blocking(move || remove_stream_data(&catalog, &dir, &name))
            .await
            .unwrap_or_else(|e| Err(format!("deletion crashed: {e}")));
        match result {
            Ok(()) => {
                info!(stream, "edge configuration and media deleted");
                self.emit(StreamEvent::Removed {
                    thing,
                    stream: stream.to_owned(),
                });
            }
            Err(e) => {
                warn!(stream, error = %e, "deletion failed");
                self.set_status(stream, SyncStatus::DeleteFailed, Some(&e));
            }
        }
    }

    /// Stops accepting configurations and stops every job (each recorder writes its fragment
    /// in flight and closes its segment). Bounded by `within`.
    pub async fn shutdown(&self, within: Duration) {
        self.0.accepting.store(false, Ordering::SeqCst);
        // Bounded as a whole: an apply or delete in progress holds the lock while it stops jobs.
        let all = async {
            let jobs: Vec<(String, StreamJobs)> = {
                let mut streams = self.0.streams.lock().await;
                streams.drain().collect()
            };
            let stops = jobs.into_iter().map(|(_, j)| j.stop());
            futures::future::join_all(stops).await;
        };
        if tokio::time::timeout(within, all).await.is_err() {
            warn!("some jobs did not stop in time");
        }
    }
}

/// The event carrying a stream's stored state now; `Changed` (read again when published) when
/// it cannot be read.
fn snapshot(catalog: &Catalog, stream: &str) -> StreamEvent {
    match catalog.describe(stream) {
        Ok(Some(d)) => StreamEvent::Stored {
            thing: d.edge_config.as_ref().map(thing_of).unwrap_or_default(),
            stream: stream.to_owned(),
            response: Box::new(d),
        },
        _ => StreamEvent::Changed {
            stream: stream.to_owned(),
        },
    }
}

/// Whether this is a live resend of the very configuration already running (a restart).
fn live_resend(live: bool, old: &EdgeConfig, new: &EdgeConfig) -> bool {
    live && old == new
}

/// The thing named by a configuration's HubDeviceArn.
pub fn thing_of(config: &EdgeConfig) -> String {
    thing_name_from_arn(&config.hub_device_arn)
        .unwrap_or_default()
        .to_owned()
}

/// Removes a stream's media (each segment in the janitor's crash-safe order), its directory,
/// then its configuration and job status. Only the stream's own directory is removed whole; a
/// directory from before `streams/` only once empty.
fn remove_stream_data(
    catalog: &Catalog,
    recording_dir: &std::path::Path,
    stream: &str,
) -> Result<(), String> {
    let segments = catalog
        .segments(Some(stream))
        .map_err(|e| format!("cannot list the media: {e}"))?;
    let stream_dir = crate::store::layout::stream_dir(stream);
    // Segments recorded before `streams/` lived in `{recording_dir}/{stream}/`.
    let legacy = segments.iter().any(|s| !s.path.starts_with(&stream_dir));
    for s in segments {
        crate::janitor::delete::delete(catalog, recording_dir, &s)
            .map_err(|e| format!("cannot delete {}: {e}", s.path))?;
    }
    let dir = recording_dir.join(&stream_dir);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot delete the directory of {stream}: {e}")),
    }
    if legacy {
        // Never a directory this stream's rows did not use (`log` may be the agent's own).
        let _ = std::fs::remove_dir(recording_dir.join(stream));
    }
    if let Some(parent) = dir.parent() {
        crate::store::fsx::fsync_dir_if_exists(parent).map_err(|e| e.to_string())?;
    }
    catalog
        .delete_config(stream)
        .map_err(|e| format!("cannot remove the configuration: {e}"))?;
    Ok(())
}

/// Writes recorder status to the catalog and tells the control plane.
struct EventStatus {
    inner: Arc<Inner>,
    store: recorder::CatalogStatus,
    /// Wakes the stream's janitor: a closed segment may be deletable, or over the limit.
    segment_closed: Arc<tokio::sync::Notify>,
    /// Set on USER_ERROR (bad URI, credentials refused, unsupported codec): a configuration
    /// error, which stops the recorder until the configuration is sent again.
    fatal: watch::Sender<bool>,
}

impl StatusSink for EventStatus {
    fn report(&self, status: JobStatus, details: Option<&str>) {
        match self.store.store(status, details) {
            Ok(()) => {
                let _ = self
                    .inner
                    .events
                    .send(snapshot(&self.inner.catalog, &self.store.stream));
            }
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
}

/// The recorder's plan from its ScheduleConfig (validated already, so it parses).
fn recorder_plan(config: &EdgeConfig, tz: &jiff::tz::TimeZone) -> Plan {
    match config.recorder_schedule() {
        None => Plan::Always,
        Some(s) => match CronSchedule::parse(&s.schedule_expression) {
            Ok(cron) => Plan::Windows(Windows::new(
                cron,
                Duration::from_secs(u64::from(s.duration_in_seconds)),
                tz.clone(),
            )),
            Err(e) => {
                warn!(reason = %e.reason, "unparseable recorder schedule; recording always");
                Plan::Always
            }
        },
    }
}

async fn wait_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        r = stop.wait_for(|s| *s) => { drop(r); true }
    };
    stopped || *stop.borrow()
}

/// Says in LastRecorderStatus why recording paused or that it resumed: DENY_NEW_MEDIA at the
/// limit is the configured behaviour (SUCCESS), a full disk is not (SYSTEM_ERROR).
fn report_pause(inner: &Inner, stream: &str, state: &janitor::State) {
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
    match inner.catalog.set_job_status(
        stream,
        crate::catalog::Job::Recorder,
        status,
        Some(&details),
        None,
        now,
    ) {
        Ok(()) => {
            let _ = inner.events.send(snapshot(&inner.catalog, stream));
        }
        Err(e) => warn!(stream, error = %e, "cannot store the recorder status"),
    }
    info!(stream, "{details}");
}

/// What a stream's recorder and janitor share, kept across configuration changes that keep
/// the recorder.
struct Link {
    /// The janitor's verdict (DENY_NEW_MEDIA at the limit, disk under its reserve).
    pause: watch::Sender<bool>,
    /// The recorder closed a segment: the janitor passes at once instead of within a minute.
    segment_closed: Arc<tokio::sync::Notify>,
}

/// One stream's recorder under supervision: recovery, schedule, restarts.
/// How one recording attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecorderEnd {
    /// Asked to stop (configuration changed or deleted, agent stopping).
    Stopped,
    /// The source ended by itself (a clip played to its end).
    Completed,
    /// A configuration error (USER_ERROR): nothing to retry until something changes.
    Fatal,
}

/// One stream's recorder under supervision. After a configuration error, the secret is asked
/// again past the cache: a camera password rotated in the secret store takes effect without
/// resending the configuration. Otherwise the job stays stopped (FatalError) until it is.
async fn recorder_job(
    inner: Arc<Inner>,
    stream: String,
    config: EdgeConfig,
    link: Arc<Link>,
    stop: watch::Receiver<bool>,
) {
    let arn = &config
        .recorder_config
        .media_source_config
        .media_uri_secret_arn;
    let mut used_uri = None;
    loop {
        let end = record(&inner, &stream, &config, &link, stop.clone(), &mut used_uri).await;
        let what = match end {
            RecorderEnd::Stopped => return,
            RecorderEnd::Completed => Occurrence::Completed,
            RecorderEnd::Fatal => {
                let refreshed = inner.secrets.refresh(arn);
                if let (Ok(uri), Some(used)) = (&refreshed, &used_uri)
                    && uri != used
                {
                    info!(
                        stream,
                        "the media URI changed in the secret store; recording again"
                    );
                    continue;
                }
                warn!(
                    stream,
                    "recorder stopped until the configuration is sent again"
                );
                Occurrence::FatalError
            }
        };
        inner
            .board
            .occurred(&stream, JobKind::Record, what, inner.clock.now());
        return;
    }
}

/// Records until stopped, until the source ends, or until a configuration error; `used_uri`
/// is the media URI it last recorded from.
async fn record(
    inner: &Arc<Inner>,
    stream: &str,
    config: &EdgeConfig,
    link: &Arc<Link>,
    mut stop: watch::Receiver<bool>,
    used_uri: &mut Option<String>,
) -> RecorderEnd {
    let inner = inner.clone();
    let stream = stream.to_owned();
    let mut pause = link.pause.subscribe();
    let (fatal_tx, mut fatal) = watch::channel(false);
    let sink: Arc<dyn StatusSink> = Arc::new(EventStatus {
        inner: inner.clone(),
        store: recorder::CatalogStatus {
            catalog: inner.catalog.clone(),
            stream: stream.clone(),
            clock: inner.clock.clone(),
        },
        segment_closed: link.segment_closed.clone(),
        fatal: fatal_tx,
    });
    if let Err(e) =
        recorder::recover_stream(inner.catalog.clone(), &inner.cfg.recording_dir, &stream).await
    {
        warn!(stream, error = %e, "recovery before recording failed");
    }
    let plan = recorder_plan(config, &inner.cfg.time_zone);
    let mut active = matches!(plan.state_at(inner.clock.now()), PlanState::Active { .. });
    let want = |active: bool, paused: bool| {
        if active && !paused {
            Control::Record
        } else {
            Control::Pause
        }
    };
    let (ctl_tx, ctl_rx) = watch::channel(want(active, *pause.borrow_and_update()));
    let board = inner.board.clone();
    let stream_name = stream.clone();
    let set_phase = move |c: Control| {
        let phase = match c {
            Control::Record => Phase::Running,
            _ => Phase::Scheduled,
        };
        board.set_phase(&stream_name, JobKind::Record, phase);
    };
    set_phase(*ctl_rx.borrow());
    // The recorder records inside its schedule's windows, unless the janitor says pause.
    let schedule_task = {
        let tx = ctl_tx.clone();
        let clock = inner.clock.clone();
        let inner = inner.clone();
        let stream = stream.clone();
        let set_phase = set_phase.clone();
        tokio::spawn(async move {
            let mut driver =
                (!matches!(plan, Plan::Always)).then(|| ScheduleDriver::new(plan, clock));
            loop {
                let transition = async {
                    match driver.as_mut() {
                        Some(d) => d.next_transition().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    t = transition => {
                        let was = std::mem::replace(&mut active, matches!(t, Transition::Start { .. }));
                        if was && !active {
                            inner.board.occurred(&stream, JobKind::Record, Occurrence::Completed, inner.clock.now());
                        }
                    }
                    r = pause.changed() => if r.is_err() { return },
                }
                let paused = *pause.borrow_and_update();
                let c = want(active, paused);
                set_phase(c);
                if tx.send(c).is_err() {
                    return;
                }
            }
        })
    };
    let arn = config
        .recorder_config
        .media_source_config
        .media_uri_secret_arn
        .clone();
    let mut delay = RESTART_MIN;
    let end = loop {
        if *stop.borrow() {
            break RecorderEnd::Stopped;
        }
        let uri = match inner.secrets.media_uri(&arn) {
            Ok(u) => u,
            Err(e) if e.is_fatal() => {
                sink.report(JobStatus::UserError, Some(&e.to_string()));
                warn!(stream, error = %e, "the media URI secret cannot be used");
                break RecorderEnd::Fatal;
            }
            Err(e) => {
                sink.report(JobStatus::SystemError, Some(&e.to_string()));
                if wait_stop(&mut stop, delay).await {
                    break RecorderEnd::Stopped;
                }
                delay = (delay * 2).min(RESTART_MAX);
                continue;
            }
        };
        *used_uri = Some(uri.clone());
        let cfg = recorder::RecorderConfig {
            stream: stream.clone(),
            uri,
            recording_dir: inner.cfg.recording_dir.clone(),
            fragmenter: inner.cfg.fragmenter,
            rtsp: inner.cfg.rtsp,
        };
        let run = recorder::run(
            cfg,
            inner.catalog.clone(),
            inner.clock.clone(),
            sink.clone(),
            ctl_rx.clone(),
        );
        let name = stream.clone();
        let mut task = tokio::spawn(async move {
            fault::job_started("recorder", &name);
            run.await
        });
        let finished = tokio::select! {
            r = &mut task => Some(r),
            r = stop.wait_for(|s| *s) => { drop(r); None }
            r = fatal.wait_for(|f| *f) => { drop(r); None }
        };
        let by_itself = finished.is_some();
        let result = match finished {
            Some(r) => r,
            None => {
                schedule_task.abort();
                let _ = ctl_tx.send(Control::Stop);
                let r = task.await;
                if *fatal.borrow() && !*stop.borrow() {
                    warn!(stream, "configuration error: recorder stopped");
                    break RecorderEnd::Fatal;
                }
                r
            }
        };
        match result {
            Ok(Ok(_)) if by_itself => break RecorderEnd::Completed,
            Ok(Ok(_)) => break RecorderEnd::Stopped,
            Ok(Err(_)) if *stop.borrow() => break RecorderEnd::Stopped,
            Ok(Err(e)) => {
                // Status (USER_ERROR or SYSTEM_ERROR) was reported by the recorder itself.
                warn!(stream, error = %e, "the recorder gave up");
                break RecorderEnd::Fatal;
            }
            Err(e) => {
                warn!(stream, error = %format!("the recorder crashed: {e}"), "restarting the recorder");
                // The panic's own text stays in the log: it may quote anything, a URI with
                // its password included, and LastRecorderStatus leaves the device.
                sink.report(
                    JobStatus::SystemError,
                    Some("the recorder crashed (an internal error, logged); restarting it"),
                );
                if wait_stop(&mut stop, delay).await {
                    break RecorderEnd::Stopped;
                }
                delay = (delay * 2).min(RESTART_MAX);
            }
        }
    };
    schedule_task.abort();
    set_phase(Control::Pause);
    end
}

/// Runs a stream's janitor or uploader job, started again after a panic (1 s doubling to 30 s,
/// as the recorder): a panic ends only its task (the release profile unwinds), and a job left
/// gone would silently stop retention or uploads for good.
async fn restarting<F, Fut>(
    job: &'static str,
    stream: String,
    mut stop: watch::Receiver<bool>,
    make: F,
) where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut delay = RESTART_MIN;
    loop {
        let run = make(stop.clone());
        let name = stream.clone();
        let task = tokio::spawn(async move {
            fault::job_started(job, &name);
            run.await
        });
        match task.await {
            Ok(()) => return,
            Err(e) => warn!(stream, job, error = %e, "the job crashed; restarting"),
        }
        if wait_stop(&mut stop, delay).await {
            return;
        }
        delay = (delay * 2).min(RESTART_MAX);
    }
}

/// One stream's janitor: retention, size limit and delete-after-upload; forwards its pause
/// verdict to the recorder.
async fn janitor_job(
    inner: Arc<Inner>,
    stream: String,
    config: EdgeConfig,
    link: Arc<Link>,
    stop: watch::Receiver<bool>,
) {
    let limits = Limits::of(&config);
    inner.board.set_size_limit(&stream, limits.max_bytes);
    let j = Janitor::new(
        &stream,
        inner.catalog.clone(),
        &inner.cfg.recording_dir,
        limits,
        inner.cfg.disk_reserve,
    );
    let (state_tx, mut state_rx) = watch::channel(janitor::State::default());
    let (stopper, job_stop) = crate::stop::channel();
    let run = janitor::run(
        j,
        inner.clock.clone(),
        link.segment_closed.clone(),
        state_tx,
        job_stop,
    );
    let mut stop = stop;
    let stop_on_request = async move {
        let _ = stop.wait_for(|s| *s).await;
        drop(stopper);
    };
    let forward = async {
        while state_rx.changed().await.is_ok() {
            let state = state_rx.borrow_and_update().clone();
            let p = state.pause_recording();
            if link
                .pause
                .send_if_modified(|v| std::mem::replace(v, p) != p)
            {
                report_pause(&inner, &stream, &state);
            }
        }
    };
    tokio::join!(run, forward, stop_on_request);
}

/// One stream's uploader on its schedule: a run inside each window (until the window ends),
/// or, without a schedule, a run at start and every hour until the backlog is empty.
async fn uploader_job(
    inner: Arc<Inner>,
    target: StreamTarget,
    config: EdgeConfig,
    link: Arc<Link>,
    mut stop: watch::Receiver<bool>,
) {
    // With DeleteAfterUpload, an uploaded fragment may free space at once: the janitor is woken
    // then rather than at its next pass, so a recorder paused at DENY_NEW_MEDIA resumes as soon
    // as the upload makes room.
    let wake_janitor = config
        .delete_after_upload()
        .then(|| link.segment_closed.clone());
    let Some(up) = inner.uploader.clone() else {
        return;
    };
    let tz = inner.cfg.time_zone.clone();
    let (plan, mode) = match config.uploader_schedule() {
        None => (Plan::Hourly(tz), RunMode::UntilEmpty),
        Some(s) => match CronSchedule::parse(&s.schedule_expression) {
            Ok(cron) => (
                Plan::Windows(Windows::new(
                    cron,
                    Duration::from_secs(u64::from(s.duration_in_seconds)),
                    tz,
                )),
                RunMode::UntilStopped,
            ),
            Err(e) => {
                warn!(reason = %e.reason, "unparseable uploader schedule; uploading hourly");
                (Plan::Hourly(tz), RunMode::UntilEmpty)
            }
        },
    };
    let mut driver = ScheduleDriver::new(plan, inner.clock.clone());
    let mut current: Option<uploader::UploadHandle> = None;
    let stream = target.key().to_owned();
    let end_run = |h: uploader::UploadHandle| finish_run(&inner, &stream, h);
    loop {
        let progress = current.as_ref().map(uploader::UploadHandle::live_progress);
        // A run that ends by itself (backlog sent, fatal error) is noticed at once.
        let run_ended = async {
            match current.as_mut() {
                Some(h) => h.ended().await,
                None => std::future::pending().await,
            }
        };
        let persisted = async {
            match (&progress, &wake_janitor) {
                (Some(p), Some(_)) => p.persisted().await,
                _ => std::future::pending().await,
            }
        };
        let wake = tokio::select! {
            t = driver.next_transition() => Wake::Transition(t),
            () = run_ended => Wake::RunEnded,
            () = persisted => Wake::Persisted,
            r = stop.wait_for(|s| *s) => { drop(r); Wake::Stop }
        };
        match wake {
            Wake::Persisted => {
                if let Some(w) = &wake_janitor {
                    w.notify_one();
                }
            }
            Wake::Transition(Transition::Start { until }) => {
                if current.as_ref().is_some_and(|h| !h.is_finished()) {
                    continue;
                }
                if let Some(h) = current.take() {
                    end_run(h).await;
                }
                inner
                    .board
                    .set_phase(&stream, JobKind::Upload, Phase::Running);
                current = Some(up.start(target.clone(), mode, until));
            }
            Wake::Transition(Transition::Stop) | Wake::RunEnded => {
                if let Some(h) = current.take() {
                    end_run(h).await;
                }
            }
            Wake::Stop => {
                if let Some(h) = current.take() {
                    stop_run(h).await;
                }
                return;
            }
        }
    }
}

/// What woke an uploader job.
enum Wake {
    Transition(Transition),
    /// The run ended by itself (backlog sent, an error it cannot get past).
    RunEnded,
    /// A fragment was acknowledged as persisted.
    Persisted,
    /// The job is asked to stop.
    Stop,
}

/// Stops an upload run after its fragment in flight (bounded) and logs how it ended; `None`
/// when it did not stop in time.
async fn stop_run(
    h: uploader::UploadHandle,
) -> Option<Result<uploader::ProgressSnapshot, uploader::UploadError>> {
    h.stop();
    match tokio::time::timeout(Duration::from_secs(5), h.wait()).await {
        Ok(r) => {
            if let Err(e) = &r {
                warn!(error = %e, "upload run ended with an error");
            }
            Some(r)
        }
        Err(_) => {
            warn!("upload run did not stop in time");
            None
        }
    }
}

/// Ends an upload run ([`stop_run`]) and tells the metrics: Completed when it ended well,
/// FatalError on an error only the user can fix.
async fn finish_run(inner: &Inner, stream: &str, h: uploader::UploadHandle) {
    let board = &inner.board;
    board.set_phase(stream, JobKind::Upload, Phase::Scheduled);
    let what = match stop_run(h).await {
        Some(Ok(_)) => Some(Occurrence::Completed),
        Some(Err(e)) => e.is_user_error().then_some(Occurrence::FatalError),
        None => None,
    };
    if let Some(what) = what {
        board.occurred(stream, JobKind::Upload, what, inner.clock.now());
    }
}

#[cfg(test)]
mod tests;
