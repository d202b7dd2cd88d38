//! One stream's recorder under supervision: recovery first, the schedule and the janitor's
//! pause verdict as its control, restarts after a crash or a secret store that cannot answer
//! (on [`Backoff::RESTART`]), and a stop until the configuration is sent again on a
//! configuration error (USER_ERROR: unknown secret, bad URI, missing clip, unsupported codec).
//! Transient source failures (camera unreachable, stalls) are retried inside the recorder.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::jobs::{JobContext, Link};
use super::report::EventStatus;
use super::{Inner, fault};
use crate::backoff::{Backoff, Retry};
use crate::edge_config::{EdgeConfig, JobError, JobStatus};
use crate::health::{JobKind, Occurrence, Phase};
use crate::recorder::{self, Control, StatusSink};
use crate::schedule::{Plan, PlanState, ScheduleDriver, Transition};
use crate::stop::Stop;

/// How one recording attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Asked to stop (configuration changed or deleted, agent stopping).
    Stopped,
    /// The source ended by itself (a clip played to its end).
    Completed,
    /// A configuration error (USER_ERROR): nothing to retry until something changes.
    Fatal,
}

/// After a configuration error the secret is asked again past the cache: a camera password
/// rotated in the secret store takes effect without resending the configuration. Otherwise the
/// job stays stopped (FatalError) until it is.
pub(super) async fn run(ctx: JobContext, stop: Stop) {
    let JobContext {
        inner,
        stream,
        config,
        link,
        ..
    } = ctx;
    let arn = &config
        .recorder_config
        .media_source_config
        .media_uri_secret_arn;
    let mut used_uri = None;
    loop {
        let job = Recording::new(&inner, &stream, &link);
        let what = match job.record(&config, stop.clone(), &mut used_uri).await {
            End::Stopped => return,
            End::Completed => Occurrence::Completed,
            End::Fatal => {
                let refreshed = inner.secrets.refresh(arn).await;
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

/// One run of recording attempts: the status sink, the control channel the schedule drives
/// and the fatal-error signal they share.
struct Recording {
    inner: Arc<Inner>,
    stream: String,
    sink: Arc<dyn StatusSink>,
    fatal: watch::Receiver<bool>,
    link: Arc<Link>,
}

impl Recording {
    fn new(inner: &Arc<Inner>, stream: &str, link: &Arc<Link>) -> Recording {
        let (fatal_tx, fatal) = watch::channel(false);
        let sink: Arc<dyn StatusSink> = Arc::new(EventStatus {
            inner: inner.clone(),
            store: recorder::CatalogStatus {
                catalog: inner.catalog.clone(),
                stream: stream.to_owned(),
                clock: inner.clock.clone(),
            },
            segment_closed: link.segment_closed.clone(),
            fatal: fatal_tx,
            counters: inner.stats.stream(stream),
        });
        Recording {
            inner: inner.clone(),
            stream: stream.to_owned(),
            sink,
            fatal,
            link: link.clone(),
        }
    }

    /// Records until stopped, until the source ends, or until a configuration error;
    /// `used_uri` is the media URI it last recorded from.
    async fn record(
        mut self,
        config: &EdgeConfig,
        mut stop: Stop,
        used_uri: &mut Option<String>,
    ) -> End {
        let inner = &self.inner;
        if let Err(e) = crate::store::recovery::recover_stream(
            inner.catalog.clone(),
            &inner.cfg.recording_dir,
            &self.stream,
        )
        .await
        {
            warn!(stream = self.stream, error = %e, "recovery before recording failed");
        }
        let plan = Plan::for_recorder(config, &inner.cfg.time_zone);
        let (ctl_tx, ctl_rx) = watch::channel(Control::Pause);
        let schedule = self.follow_schedule(plan, ctl_tx.clone());
        let arn = &config
            .recorder_config
            .media_source_config
            .media_uri_secret_arn;
        let mut retry = Backoff::RESTART.start();
        let end = loop {
            if stop.is_stopped() {
                break End::Stopped;
            }
            let uri = match self.inner.secrets.media_uri(arn).await {
                Ok(u) => u,
                Err(e) if e.is_user_error() => {
                    self.sink.report(JobStatus::UserError, Some(&e.to_string()));
                    warn!(stream = self.stream, error = %e, "the media URI secret cannot be used");
                    break End::Fatal;
                }
                Err(e) => {
                    self.sink
                        .report(JobStatus::SystemError, Some(&e.to_string()));
                    if self.back_off(&mut stop, &mut retry).await {
                        break End::Stopped;
                    }
                    continue;
                }
            };
            *used_uri = Some(uri.clone());
            let attempt = self.attempt(uri, ctl_rx.clone(), &ctl_tx, &schedule, &mut stop);
            match attempt.await {
                Some(end) => break end,
                None => {
                    if self.back_off(&mut stop, &mut retry).await {
                        break End::Stopped;
                    }
                }
            }
        };
        schedule.abort();
        self.set_phase(Control::Pause);
        end
    }

    /// One run of the recorder; `None` when it crashed and is to be restarted.
    async fn attempt(
        &mut self,
        uri: String,
        ctl_rx: watch::Receiver<Control>,
        ctl_tx: &watch::Sender<Control>,
        schedule: &JoinHandle<()>,
        stop: &mut Stop,
    ) -> Option<End> {
        let inner = &self.inner;
        let cfg = recorder::RecorderConfig {
            stream: self.stream.clone(),
            uri,
            recording_dir: inner.cfg.recording_dir.clone(),
            fragmenter: inner.cfg.fragmenter,
            rtsp: inner.cfg.rtsp,
        };
        let run = recorder::run(
            cfg,
            inner.catalog.clone(),
            inner.clock.clone(),
            self.sink.clone(),
            ctl_rx,
        );
        let name = self.stream.clone();
        let mut task = tokio::spawn(async move {
            fault::job_started("recorder", &name);
            run.await
        });
        let finished = tokio::select! {
            r = &mut task => Some(r),
            () = stop.stopped() => None,
            r = self.fatal.wait_for(|f| *f) => { drop(r); None }
        };
        let by_itself = finished.is_some();
        let result = match finished {
            Some(r) => r,
            None => {
                schedule.abort();
                let _ = ctl_tx.send(Control::Stop);
                let r = task.await;
                if *self.fatal.borrow() && !stop.is_stopped() {
                    warn!(
                        stream = self.stream,
                        "configuration error: recorder stopped"
                    );
                    return Some(End::Fatal);
                }
                r
            }
        };
        match result {
            Ok(Ok(_)) if by_itself => Some(End::Completed),
            Ok(Ok(_)) => Some(End::Stopped),
            Ok(Err(_)) if stop.is_stopped() => Some(End::Stopped),
            Ok(Err(e)) => {
                // Status (USER_ERROR or SYSTEM_ERROR) was reported by the recorder itself.
                warn!(stream = self.stream, error = %e, "the recorder gave up");
                Some(End::Fatal)
            }
            Err(e) => {
                warn!(stream = self.stream, error = %format!("the recorder crashed: {e}"), "restarting the recorder");
                // The panic's own text stays in the log: it may quote anything, a URI with
                // its password included, and LastRecorderStatus leaves the device.
                self.sink.report(
                    JobStatus::SystemError,
                    Some("the recorder crashed (an internal error, logged); restarting it"),
                );
                None
            }
        }
    }

    /// Waits out the next restart delay; true when stopped meanwhile.
    async fn back_off(&self, stop: &mut Stop, retry: &mut Retry) -> bool {
        stop.sleep_or_stop(self.inner.clock.as_ref(), retry.next_delay())
            .await
    }

    fn set_phase(&self, c: Control) {
        set_phase(&self.inner, &self.stream, c);
    }

    /// Drives `ctl`: the recorder records inside its schedule's windows, unless the janitor
    /// says pause. A window that closes completes the record job (for the metrics).
    fn follow_schedule(&self, plan: Plan, ctl: watch::Sender<Control>) -> JoinHandle<()> {
        let inner = self.inner.clone();
        let stream = self.stream.clone();
        let mut pause = self.link.pause.subscribe();
        let mut active = matches!(plan.state_at(inner.clock.now()), PlanState::Active { .. });
        let want = |active: bool, paused: bool| {
            if active && !paused {
                Control::Record
            } else {
                Control::Pause
            }
        };
        let first = want(active, *pause.borrow_and_update());
        ctl.send_replace(first);
        self.set_phase(first);
        tokio::spawn(async move {
            let mut driver = (!matches!(plan, Plan::Always))
                .then(|| ScheduleDriver::new(plan, inner.clock.clone()));
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
                            inner.occurred(&stream, JobKind::Record, Occurrence::Completed);
                        }
                    }
                    r = pause.changed() => if r.is_err() { return },
                }
                let c = want(active, *pause.borrow_and_update());
                set_phase(&inner, &stream, c);
                if ctl.send(c).is_err() {
                    return;
                }
            }
        })
    }
}

/// The record job's phase for the metrics: running while told to record.
fn set_phase(inner: &Inner, stream: &str, c: Control) {
    let phase = match c {
        Control::Record => Phase::Running,
        _ => Phase::Scheduled,
    };
    inner.board.set_phase(stream, JobKind::Record, phase);
}
