//! Room for new streams, given in the order requests arrive. Requests for different streams are
//! applied side by side (a slow secret lookup holds up only its own), so the one that reaches
//! the catalog first is not always the one that arrived first; a [`Ticket`], taken when the
//! request arrives, keeps the `max_streams` limit in arrival order: a new stream counts the
//! stored streams and the new streams that arrived before it and are still being applied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Inner, Supervisor};
use crate::catalog::CatalogError;

/// The requests being applied, by arrival.
#[derive(Debug, Default)]
pub(super) struct Queue {
    next: u64,
    /// Arrival number -> stream.
    waiting: BTreeMap<u64, String>,
}

/// A request's place in the arrival order; dropping it leaves the queue.
pub struct Ticket {
    inner: Arc<Inner>,
    seq: u64,
    stream: String,
}

impl Supervisor {
    /// Takes `stream`'s place for a request that just arrived (the control plane takes it as
    /// it reads the request, before handing it on).
    pub fn ticket(&self, stream: &str) -> Ticket {
        let mut q = queue(&self.0);
        let seq = q.next;
        q.next += 1;
        q.waiting.insert(seq, stream.to_owned());
        Ticket {
            inner: self.0.clone(),
            seq,
            stream: stream.to_owned(),
        }
    }
}

impl Ticket {
    /// The streams ahead of this request: those stored, and the new ones that arrived earlier
    /// and are still being applied. `then` runs with the queue held, so a stream stored in
    /// it is counted by every later request.
    pub(super) fn with_streams_ahead<T>(
        &self,
        then: impl FnOnce(usize) -> T,
    ) -> Result<T, CatalogError> {
        let q = queue(&self.inner);
        let catalog = &self.inner.catalog;
        let mut earlier = BTreeSet::new();
        for stream in q.waiting.range(..self.seq).map(|(_, s)| s) {
            if stream != &self.stream && catalog.config(stream)?.is_none() {
                earlier.insert(stream.as_str());
            }
        }
        let ahead = catalog.config_count()? + earlier.len();
        Ok(then(ahead))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        queue(&self.inner).waiting.remove(&self.seq);
    }
}

fn queue(inner: &Inner) -> MutexGuard<'_, Queue> {
    inner
        .admission
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The type of [`Inner::admission`].
pub(super) type Admission = Mutex<Queue>;
