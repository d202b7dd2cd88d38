//! DeleteEdgeConfiguration: the stream's jobs stopped, its media and rows removed.

use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::{StreamEvent, Supervisor};
use crate::catalog::Catalog;
use crate::edge_config::SyncStatus;

impl Supervisor {
    /// DeleteEdgeConfiguration for `stream`.
    pub async fn delete(&self, thing: &str, stream: &str) {
        if !self.0.accepting.load(Ordering::SeqCst) {
            return;
        }
        let _lane = self.lane(stream).await;
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
        self.set_status(stream, SyncStatus::Deleting, None);
        self.set_status(stream, SyncStatus::DeletingAcknowledged, None);
        self.stop_jobs(stream).await;
        let catalog = self.0.catalog.clone();
        let dir = self.0.cfg.recording_dir.clone();
        let name = stream.to_owned();
        let result = tokio::task::spawn_blocking(move || remove_stream_data(&catalog, &dir, &name))
            .await
            .unwrap_or_else(|e| Err(format!("deletion crashed: {e}")));
        match result {
            Ok(()) => {
                info!(stream, "edge configuration and media deleted");
                self.0.emit(StreamEvent::Removed {
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
