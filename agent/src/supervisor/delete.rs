//! DeleteEdgeConfiguration: the stream's jobs stopped, its media and rows removed.

use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::{StreamEvent, Supervisor};
use crate::edge_config::SyncStatus;

impl Supervisor {
    /// DeleteEdgeConfiguration for `stream`.
    pub async fn delete(&self, thing: &str, stream: &str) {
        if !self.0.accepting.load(Ordering::SeqCst) {
            return;
        }
        let _lane = self.lane(stream).await;
        let name = stream.to_owned();
        let stored = match self.db(move |c| c.config(&name)).await {
            Ok(s) => s,
            Err(e) => {
                warn!(stream, error = %e, "cannot read the configuration to delete");
                None
            }
        };
        // Another thing's stream of this name is not this thing's to delete.
        let foreign = stored
            .as_ref()
            .is_some_and(|s| s.request.edge_config.thing() != thing);
        let Some(stored) = stored.filter(|_| !foreign) else {
            // Nothing stored for this thing (never applied, refused, deleted already, or
            // another thing's): clear this thing's topics.
            if foreign {
                info!(
                    stream,
                    thing, "deletion for a stream of another thing; ignored"
                );
            } else {
                self.stop_jobs(stream).await;
            }
            self.0.emit(StreamEvent::Removed {
                thing: thing.to_owned(),
                stream: stream.to_owned(),
            });
            return;
        };
        let thing = stored.request.edge_config.thing();
        self.set_status(stream, SyncStatus::Deleting, None).await;
        self.set_status(stream, SyncStatus::DeletingAcknowledged, None)
            .await;
        self.stop_jobs(stream).await;
        let (dir, name) = (self.0.cfg.recording_dir.clone(), stream.to_owned());
        let result = self
            .0
            .catalog
            .blocking(move |c| crate::store::delete::delete_stream(c, &dir, &name))
            .await
            .unwrap_or_else(|e| Err(e.into()));
        match result {
            Ok(()) => {
                self.0.stats.remove(stream);
                info!(stream, "edge configuration and media deleted");
                self.0.emit(StreamEvent::Removed {
                    thing,
                    stream: stream.to_owned(),
                });
            }
            Err(e) => {
                warn!(stream, error = %e, "deletion failed");
                self.set_status(stream, SyncStatus::DeleteFailed, Some(&e.to_string()))
                    .await;
            }
        }
    }
}
