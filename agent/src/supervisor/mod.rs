//! The supervisor: one task set per stream (recorder, uploader, janitor), driven by the edge
//! configurations the control plane hands it.
//!
//! Applying a StartEdgeConfigurationUpdate: checks (ownership, stream limit: [`sync`]; the
//! secret) -> ACKNOWLEDGED and persisted -> the stream's jobs replaced ([`diff`] decides which)
//! -> IN_SYNC; a refused one -> SYNC_FAILED with FailedStatusDetails naming the field. Deleting:
//! DELETING -> DELETING_ACKNOWLEDGED -> jobs stopped, media and rows removed ->
//! [`StreamEvent::Removed`]; DELETE_FAILED when that fails.
//!
//! Concurrency: operations on one stream run one at a time, in the order they arrive (a lane
//! per stream); different streams' run side by side, so a secret store that hangs on one
//! stream's lookup holds up only that stream. The map of running jobs is locked only to take
//! or put a stream's jobs, never across a lookup or a job's stop.
//!
//! The jobs of a stream ([`jobs`]): the recorder ([`recorder_job`]) records inside its
//! schedule's windows (always without one) unless the janitor ([`janitor_job`]) says pause
//! (DENY_NEW_MEDIA at the size limit, disk under its reserve); the janitor passes at least once
//! a minute; the uploader ([`uploader_job`], only with AWS settings: local mode without
//! `AWS_REGION` records only) runs inside its windows, or at start and every hour until the
//! backlog is empty. The jobs write their status to the catalog, which the control plane
//! publishes when it changes ([`report`]).
//!
//! Data flows one way: the supervisor never calls the control plane; it sends
//! [`StreamEvent`]s on a channel, which the control plane turns into `reported` publishes.

mod admission;
mod apply;
mod delete;
mod diff;
pub(crate) mod fault;
mod janitor_job;
mod jobs;
mod recorder_job;
mod report;
pub mod requests;
mod sync;
mod uploader_job;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tracing::{info, warn};

use crate::catalog::{Catalog, CatalogError};
use crate::clock::Clock;
use crate::edge_config::{DescribeEdgeConfigurationResponse, SyncStatus};
use crate::health::{HealthSnapshot, JobBoard, JobEvent, JobKind};
use crate::janitor::policy::DiskReserve;
use crate::recorder::fragmenter::FragmenterConfig;
use crate::recorder::rtsp::RtspOptions;
use crate::secrets::SecretSource;
use crate::stats::Stats;
use crate::uploader::Uploader;
pub use admission::Ticket;
use jobs::StreamJobs;
use sync::Resume;

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
    /// What operators' upload requests may ask for.
    pub request_limits: crate::uploader::request::Limits,
}

/// The path of the secret ARN in a request, for FailedStatusDetails.
const SECRET_FIELD: &str = "EdgeConfig.RecorderConfig.MediaSourceConfig.MediaUriSecretArn";

struct Inner {
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    cfg: SupervisorConfig,
    secrets: Arc<dyn SecretSource>,
    events: mpsc::UnboundedSender<StreamEvent>,
    /// Uploads to Kinesis Video Streams; `None` without AWS settings (local mode).
    uploader: Option<Uploader>,
    /// The running jobs of each stream.
    streams: Mutex<HashMap<String, StreamJobs>>,
    /// One lock per stream: its applies and deletions, one at a time.
    lanes: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// The requests being applied, in arrival order, for the `max_streams` limit.
    admission: admission::Admission,
    accepting: AtomicBool,
    /// What each job is doing, for the metrics.
    board: Arc<JobBoard>,
    /// What each stream has done since the start (the uploader's, shared).
    stats: Arc<Stats>,
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
        let stats = uploader
            .as_ref()
            .map_or_else(Default::default, Uploader::stats);
        Supervisor(Arc::new(Inner {
            stats,
            catalog,
            clock,
            cfg,
            secrets,
            uploader,
            events,
            streams: Mutex::new(HashMap::new()),
            lanes: std::sync::Mutex::new(HashMap::new()),
            admission: Default::default(),
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

    /// What each stream has done since the agent started.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.0.stats
    }

    /// The supervisor's configuration (the recording directory, for the HTTP server).
    pub fn config(&self) -> &SupervisorConfig {
        &self.0.cfg
    }

    /// The jobs' one-off events (FatalError, Completed) since the last call.
    pub fn take_events(&self) -> Vec<JobEvent> {
        self.0.board.take_events()
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
        let configs = match self.db(|c| c.each_config()).await {
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
                        self.set_status(stream, SyncStatus::SyncFailed, Some(&e.to_string()))
                            .await;
                    }
                    continue;
                }
            };
            let stream = c.stream_name().to_owned();
            match sync::on_resume(c.sync_status) {
                Resume::FinishDeletion => {
                    info!(stream, "finishing an interrupted deletion");
                    self.delete(&c.request.edge_config.thing(), &stream).await;
                }
                Resume::StayStopped => info!(
                    stream,
                    "deletion failed earlier; jobs stay stopped until deleted again"
                ),
                Resume::Start { settle } => {
                    info!(stream, status = %c.sync_status, "resuming stored configuration");
                    let jobs = StreamJobs::start(&self.0, &c.request, None);
                    self.put_jobs(&stream, jobs).await;
                    if settle {
                        self.set_status(&stream, SyncStatus::InSync, None).await;
                    }
                }
            }
        }
    }

    /// Stores the stream's SyncStatus and publishes its state as it is then.
    async fn set_status(&self, stream: &str, status: SyncStatus, details: Option<&str>) {
        let (name, details, now) = (
            stream.to_owned(),
            details.map(str::to_owned),
            self.0.clock.now(),
        );
        let stored = self
            .db(move |c| {
                c.set_sync_status(&name, status, details.as_deref(), now)
                    .map(|()| report::snapshot(c, &name))
            })
            .await;
        match stored {
            Ok(event) => self.0.emit(event),
            Err(e) => warn!(stream, error = %e, "cannot store the sync status"),
        }
    }

    /// The catalog from the supervisor's async code, on the blocking pool
    /// ([`Catalog::blocking`]); a panic in `f` is the caller's.
    async fn db<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&Catalog) -> T + Send + 'static,
    {
        match self.0.catalog.blocking(f).await {
            Ok(t) => t,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("a catalog task was cancelled: {e}"),
        }
    }

    /// The stream's lane: held for the whole of an operation on it. Lanes nobody holds or
    /// waits for (only the map has them) are dropped on the way, so the map does not keep a
    /// lock for every stream name ever received.
    async fn lane(&self, stream: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lane = {
            let mut lanes = self.0.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            lanes.retain(|_, lane| Arc::strong_count(lane) > 1);
            lanes.entry(stream.to_owned()).or_default().clone()
        };
        lane.lock_owned().await
    }

    /// Files a stream's started jobs; after shutdown began, stops them instead (shutdown has
    /// taken the map's jobs already and would never see these).
    async fn put_jobs(&self, stream: &str, jobs: StreamJobs) {
        let mut streams = self.0.streams.lock().await;
        if self.0.accepting.load(Ordering::SeqCst) {
            streams.insert(stream.to_owned(), jobs);
        } else {
            drop(streams);
            jobs.stop().await;
        }
    }

    async fn stop_jobs(&self, stream: &str) {
        let jobs = self.0.streams.lock().await.remove(stream);
        if let Some(jobs) = jobs {
            jobs.stop().await;
        }
    }

    /// Stops accepting configurations and stops every job (each recorder writes its fragment
    /// in flight and closes its segment). Bounded by `within`.
    pub async fn shutdown(&self, within: Duration) {
        self.0.accepting.store(false, Ordering::SeqCst);
        let all = async {
            let jobs: Vec<(String, StreamJobs)> = self.0.streams.lock().await.drain().collect();
            let stops = jobs.into_iter().map(|(_, j)| j.stop());
            futures::future::join_all(stops).await;
        };
        if tokio::time::timeout(within, all).await.is_err() {
            warn!("some jobs did not stop in time");
        }
    }
}

#[cfg(test)]
mod tests;
