//! One stream's janitor: retention, size limit and delete-after-upload; forwards its pause
//! verdict to the recorder and says in LastRecorderStatus when recording pauses or resumes.

use tokio::sync::watch;

use super::jobs::JobContext;
use super::report::report_pause;
use crate::janitor::{self, Janitor, policy::Limits};
use crate::stop::Stop;

pub(super) async fn run(ctx: JobContext, stop: Stop) {
    let (inner, stream, link) = (&ctx.inner, &ctx.stream, &ctx.link);
    let limits = Limits::of(&ctx.config);
    inner.board.set_size_limit(stream, limits.max_bytes);
    let j = Janitor::new(
        stream,
        inner.catalog.clone(),
        &inner.cfg.recording_dir,
        limits,
        inner.cfg.disk_reserve,
    );
    let (state_tx, mut state_rx) = watch::channel(janitor::State::default());
    let run = janitor::run(
        j,
        inner.clock.clone(),
        link.segment_closed.clone(),
        state_tx,
        stop,
    );
    let forward = async {
        while state_rx.changed().await.is_ok() {
            let state = state_rx.borrow_and_update().clone();
            let p = state.pause_recording();
            if link
                .pause
                .send_if_modified(|v| std::mem::replace(v, p) != p)
            {
                report_pause(inner, stream, &state);
            }
        }
    };
    tokio::join!(run, forward);
}
