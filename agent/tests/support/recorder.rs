//! A recorder job in the test process, on a runtime thread of its own.

use std::sync::Arc;
use std::thread::JoinHandle;

use kvs_edge_agent::catalog::Catalog;
use kvs_edge_agent::clock::Clock;
use kvs_edge_agent::recorder::{self, Control, RecorderConfig, RecorderSummary, StatusSink};
use tokio::sync::watch;

/// A running recorder: its control channel and the thread that returns its summary.
pub struct Job {
    pub tx: watch::Sender<Control>,
    handle: JoinHandle<RecorderSummary>,
}

impl Job {
    /// `recorder::run` on a current-thread runtime; its error fails the test at [`Job::stop`].
    pub fn spawn(
        cfg: RecorderConfig,
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
        status: Arc<dyn StatusSink>,
    ) -> Job {
        let (tx, rx) = watch::channel(Control::Record);
        let handle = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(recorder::run(cfg, catalog, clock, status, rx))
                .unwrap()
        });
        Job { tx, handle }
    }

    /// Stop, then the summary.
    pub fn stop(self) -> RecorderSummary {
        self.tx.send(Control::Stop).unwrap();
        self.handle.join().unwrap()
    }
}
