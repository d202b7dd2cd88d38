//! One stream's uploader on its schedule: a run inside each window (until the window ends),
//! or, without a schedule, a run at start and every hour until the backlog is empty; and a run
//! whenever operators' requests (a time range, live) are open outside those, which a window
//! opening then joins. A run serves the requests first and ends once it has nothing left.

use std::time::Duration;

use tracing::warn;

use super::Inner;
use super::jobs::JobContext;
use crate::edge_config::JobError;
use crate::health::{JobKind, Occurrence, Phase};
use crate::schedule::{Plan, ScheduleDriver, Transition};
use crate::stop::Stop;
use crate::uploader::{ProgressSnapshot, RunMode, StreamTarget, UploadError, UploadHandle};

/// What woke an uploader job.
enum Wake {
    Transition(Transition),
    /// The run ended by itself (backlog sent, an error it cannot get past).
    RunEnded,
    /// A fragment was acknowledged as persisted.
    Persisted,
    /// An upload request was added or ended.
    Requests,
    /// The job is asked to stop.
    Stop,
}

/// How long a stopping run may take to finish its fragment in flight and hear its last acks
/// (the uploader's `stop_drain`, 6 s, and a margin; within the agent's 7 s for all jobs).
const RUN_STOPS_WITHIN: Duration = Duration::from_millis(6500);

pub(super) async fn run(ctx: JobContext, mut stop: Stop) {
    let JobContext {
        inner,
        stream,
        config,
        stream_arn,
        link,
    } = ctx;
    let target = match stream_arn {
        Some(arn) => StreamTarget::Arn { arn, name: stream },
        None => StreamTarget::Name(stream),
    };
    // With DeleteAfterUpload, an uploaded fragment may free space at once: the janitor is woken
    // then rather than at its next pass, so a recorder paused at DENY_NEW_MEDIA resumes as soon
    // as the upload makes room.
    let wake_janitor = config
        .delete_after_upload()
        .then(|| link.segment_closed.clone());
    let Some(up) = inner.uploader.clone() else {
        return;
    };
    let plan = Plan::for_uploader(&config, &inner.cfg.time_zone);
    let mode = match plan {
        Plan::Hourly(_) => RunMode::UntilEmpty,
        _ => RunMode::UntilStopped,
    };
    let mut driver = ScheduleDriver::new(plan, inner.clock.clone());
    let mut current: Option<UploadHandle> = None;
    let stream = target.key().to_owned();
    let mut requests = inner.catalog.requests_changed(&stream);
    // Requests left open by the last run of the agent resume now.
    let mut wake = Some(Wake::Requests);
    loop {
        let woke = match wake.take() {
            Some(w) => w,
            None => {
                next_wake(
                    &mut driver,
                    &mut current,
                    &wake_janitor,
                    &mut requests,
                    &mut stop,
                )
                .await
            }
        };
        match woke {
            Wake::Persisted => {
                if let Some(w) = &wake_janitor {
                    w.notify_one();
                }
            }
            Wake::Requests => {
                requests.mark_unchanged();
                if current.as_ref().is_some_and(|h| !h.is_finished()) {
                    // The run sees the change itself.
                    continue;
                }
                if let Some(h) = current.take() {
                    finish_run(&inner, &stream, h).await;
                }
                if has_open_requests(&inner, &stream).await {
                    inner
                        .board
                        .set_phase(&stream, JobKind::Upload, Phase::Running);
                    current = Some(up.start(target.clone(), RunMode::Requests, None));
                }
            }
            Wake::Transition(Transition::Start { until }) => {
                if let Some(h) = current.take() {
                    if !h.is_finished() {
                        // Serving requests: the window's backlog joins them.
                        current = Some(up.open_backlog(h, mode, until));
                        continue;
                    }
                    finish_run(&inner, &stream, h).await;
                }
                inner
                    .board
                    .set_phase(&stream, JobKind::Upload, Phase::Running);
                current = Some(up.start(target.clone(), mode, until));
            }
            Wake::Transition(Transition::Stop) => {
                // The run finishes its requests, if any, then ends by itself.
                if let Some(h) = &current {
                    h.close_backlog();
                }
            }
            Wake::RunEnded => {
                if let Some(h) = current.take() {
                    finish_run(&inner, &stream, h).await;
                }
                // A request that came as the run decided to end.
                wake = Some(Wake::Requests);
            }
            Wake::Stop => {
                if let Some(h) = current.take() {
                    stop_run(&inner, h).await;
                }
                return;
            }
        }
    }
}

/// Waits for what the job reacts to next.
async fn next_wake(
    driver: &mut ScheduleDriver,
    current: &mut Option<UploadHandle>,
    wake_janitor: &Option<std::sync::Arc<tokio::sync::Notify>>,
    requests: &mut tokio::sync::watch::Receiver<i64>,
    stop: &mut Stop,
) -> Wake {
    let progress = current.as_ref().map(UploadHandle::live_progress);
    // A run that ends by itself (backlog sent, fatal error) is noticed at once.
    let run_ended = async {
        match current.as_mut() {
            Some(h) => h.ended().await,
            None => std::future::pending().await,
        }
    };
    let persisted = async {
        match (&progress, wake_janitor) {
            (Some(p), Some(_)) => p.persisted().await,
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        t = driver.next_transition() => Wake::Transition(t),
        () = run_ended => Wake::RunEnded,
        () = persisted => Wake::Persisted,
        Ok(()) = requests.changed() => Wake::Requests,
        () = stop.stopped() => Wake::Stop,
    }
}

async fn has_open_requests(inner: &Inner, stream: &str) -> bool {
    let s = stream.to_owned();
    match inner.catalog.blocking(move |c| c.open_requests(&s)).await {
        Ok(Ok(open)) => !open.is_empty(),
        Ok(Err(e)) => {
            warn!(stream, error = %e, "cannot read the upload requests");
            false
        }
        Err(e) => {
            warn!(stream, error = %e, "cannot read the upload requests");
            false
        }
    }
}

/// Stops an upload run after its fragment in flight (bounded) and logs how it ended; `None`
/// when it did not stop in time.
async fn stop_run(inner: &Inner, h: UploadHandle) -> Option<Result<ProgressSnapshot, UploadError>> {
    h.stop();
    let clock = inner.clock.as_ref();
    tokio::select! {
        r = h.wait() => {
            if let Err(e) = &r {
                warn!(error = %e, "upload run ended with an error");
            }
            Some(r)
        }
        () = clock.sleep(RUN_STOPS_WITHIN) => {
            warn!("upload run did not stop in time");
            None
        }
    }
}

/// Ends an upload run ([`stop_run`]) and tells the metrics: Completed when it ended well,
/// FatalError on an error only the user can fix.
async fn finish_run(inner: &Inner, stream: &str, h: UploadHandle) {
    let board = &inner.board;
    board.set_phase(stream, JobKind::Upload, Phase::Scheduled);
    let what = match stop_run(inner, h).await {
        Some(Ok(_)) => Some(Occurrence::Completed),
        Some(Err(e)) => e.is_user_error().then_some(Occurrence::FatalError),
        None => None,
    };
    if let Some(what) = what {
        inner.occurred(stream, JobKind::Upload, what);
    }
}
