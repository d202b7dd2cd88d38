//! A stream's running jobs and how they are started, stopped and restarted after a panic.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use super::{Inner, fault, janitor_job, recorder_job, uploader_job};
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::edge_config::{EdgeConfig, StartEdgeConfigurationUpdateRequest};
use crate::health::{JobBoard, JobKind};
use crate::stop::{self, Stop, Stopper};
use crate::uploader::StreamTarget;

/// A running job: [`JobHandle::stop`] (or dropping it) asks it to finish.
pub(super) struct JobHandle {
    stop: Stopper,
    task: JoinHandle<()>,
}

impl JobHandle {
    fn spawn<F, Fut>(job: F) -> JobHandle
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, rx) = stop::channel();
        JobHandle {
            stop,
            task: tokio::spawn(job(rx)),
        }
    }

    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    pub async fn stop(self) {
        self.stop.stop();
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            warn!(error = %e, "job panicked while stopping");
        }
    }
}

/// What a stream's recorder and janitor share, kept across configuration changes that keep
/// the recorder.
pub(super) struct Link {
    /// The janitor's verdict (DENY_NEW_MEDIA at the limit, disk under its reserve).
    pub pause: watch::Sender<bool>,
    /// The recorder closed a segment: the janitor passes at once instead of within a minute.
    pub segment_closed: Arc<tokio::sync::Notify>,
}

/// The jobs of one stream and the configuration they run with.
pub(super) struct StreamJobs {
    pub config: EdgeConfig,
    pub recorder: Option<JobHandle>,
    uploader: Option<JobHandle>,
    janitor: Option<JobHandle>,
    stream: String,
    board: Arc<JobBoard>,
    /// The recorder's pause signal and segment-closed wake-up, shared with the janitor; outlives
    /// a janitor restarted by a configuration change.
    pub link: Arc<Link>,
}

impl StreamJobs {
    /// Starts a stream's jobs; `kept` is a recorder kept from the previous configuration, with
    /// its pause signal.
    pub fn start(
        inner: &Arc<Inner>,
        request: &StartEdgeConfigurationUpdateRequest,
        kept: Option<(JobHandle, Arc<Link>)>,
    ) -> StreamJobs {
        let config = &request.edge_config;
        let stream = request.stream_name();
        let thing = config.thing();
        let board = &inner.board;
        board.register(stream, &thing, JobKind::Record);
        if inner.uploader.is_some() {
            board.register(stream, &thing, JobKind::Upload);
        }
        let (recorder, link) = kept.unwrap_or_else(|| {
            let link = Arc::new(Link {
                pause: watch::channel(false).0,
                segment_closed: Arc::new(tokio::sync::Notify::new()),
            });
            let (inner, name, config, l) = (
                inner.clone(),
                stream.to_owned(),
                config.clone(),
                link.clone(),
            );
            let job = JobHandle::spawn(|stop| recorder_job::run(inner, name, config, l, stop));
            (job, link)
        });
        let janitor = {
            let (inner, name, config, link) = (
                inner.clone(),
                stream.to_owned(),
                config.clone(),
                link.clone(),
            );
            JobHandle::spawn(|stop| {
                restarting(
                    "janitor",
                    stream.to_owned(),
                    inner.clock.clone(),
                    stop,
                    move |stop| {
                        janitor_job::run(
                            inner.clone(),
                            name.clone(),
                            config.clone(),
                            link.clone(),
                            stop,
                        )
                    },
                )
            })
        };
        let uploader = inner.uploader.as_ref().map(|_| {
            let target = match &request.stream_arn {
                Some(arn) => StreamTarget::Arn {
                    arn: arn.clone(),
                    name: stream.to_owned(),
                },
                None => StreamTarget::Name(stream.to_owned()),
            };
            let (inner, config, link) = (inner.clone(), config.clone(), link.clone());
            JobHandle::spawn(|stop| {
                restarting(
                    "uploader",
                    stream.to_owned(),
                    inner.clock.clone(),
                    stop,
                    move |stop| {
                        uploader_job::run(
                            inner.clone(),
                            target.clone(),
                            config.clone(),
                            link.clone(),
                            stop,
                        )
                    },
                )
            })
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

    /// Stops every job; the uploader and janitor first, then the recorder, which writes its
    /// fragment in flight.
    pub async fn stop(self) {
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

/// Runs a stream's janitor or uploader job, started again after a panic (on the restart
/// backoff, as the recorder): a panic ends only its task (the release profile unwinds), and a
/// job left gone would silently stop retention or uploads for good.
async fn restarting<F, Fut>(
    job: &'static str,
    stream: String,
    clock: Arc<dyn Clock>,
    mut stop: Stop,
    make: F,
) where
    F: Fn(Stop) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut retry = Backoff::RESTART.start();
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
        if stop.sleep_or_stop(clock.as_ref(), retry.next_delay()).await {
            return;
        }
    }
}
