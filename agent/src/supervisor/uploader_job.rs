//! One stream's uploader on its schedule: a run inside each window (until the window ends),
//! or, without a schedule, a run at start and every hour until the backlog is empty.

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
    loop {
        let progress = current.as_ref().map(UploadHandle::live_progress);
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
            () = stop.stopped() => Wake::Stop,
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
                    finish_run(&inner, &stream, h).await;
                }
                inner
                    .board
                    .set_phase(&stream, JobKind::Upload, Phase::Running);
                current = Some(up.start(target.clone(), mode, until));
            }
            Wake::Transition(Transition::Stop) | Wake::RunEnded => {
                if let Some(h) = current.take() {
                    finish_run(&inner, &stream, h).await;
                }
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
        board.occurred(stream, JobKind::Upload, what, inner.clock.now());
    }
}
