//! Operators' upload requests as the control plane hands them over (a stream's `uploads` and
//! `live` topics): checked, stored in the catalog (where the stream's uploader job finds them)
//! and answered; and the stream's upload status that the control plane publishes.

use serde::Serialize;
use tracing::{info, warn};

use super::Supervisor;
use crate::catalog::{Added, Backlog, Catalog, CatalogError, RequestRow, RequestState};
use crate::uploader::request::{self, LiveAction, Refused};

/// Which request topic a payload came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestTopic {
    /// `{"RequestId"?, "StartTime", "EndTime"}`: a time range.
    Uploads,
    /// `{"RequestId"?, "Action": "START" | "STOP", "DurationInSeconds"?}`.
    Live,
}

/// The agent's answer to one request (the `upload-answers` topic): QUEUED, or the state of a
/// request already stored under that id, or FAILED with the reason it was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    pub request_id: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

impl Answer {
    fn refused(r: Refused) -> Answer {
        Answer {
            request_id: r.request_id,
            status: RequestState::Failed.as_str().to_owned(),
            details: Some(r.message),
        }
    }

    fn of(row: &RequestRow) -> Answer {
        Answer {
            request_id: Some(row.request_id.clone()),
            status: row.state.as_str().to_owned(),
            details: row.details.clone(),
        }
    }
}

impl Supervisor {
    /// Takes a request for `stream` that came on `thing`'s `topic`. Nothing is stored unless
    /// the request is accepted; a redelivered request (same RequestId) changes nothing.
    pub async fn upload_request(
        &self,
        thing: &str,
        stream: &str,
        topic: RequestTopic,
        payload: &[u8],
    ) -> Answer {
        let inner = &self.0;
        let now = inner.clock.now();
        let limits = inner.cfg.request_limits;
        let parsed = match topic {
            RequestTopic::Uploads => {
                request::parse_range(stream, payload, now.as_millisecond(), limits)
                    .map(LiveAction::Start)
            }
            RequestTopic::Live => {
                request::parse_live(stream, payload, now.as_millisecond(), limits)
            }
        };
        let action = match parsed {
            Ok(a) => a,
            Err(r) => return self.refuse(stream, r),
        };
        let id = match &action {
            LiveAction::Start(r) => r.request_id.clone(),
            LiveAction::Stop { request_id } => request_id.clone(),
        };
        let refused = |message: String| Refused {
            request_id: Some(id.clone()),
            message,
        };
        if self.own_config(thing, stream).await.is_none() {
            return self.refuse(
                stream,
                refused(format!(
                    "stream {stream} has no edge configuration on this agent"
                )),
            );
        }
        if inner.uploader.is_none() {
            return self.refuse(
                stream,
                refused(
                    "uploads are off on this agent (no AWS region or credentials configured)"
                        .to_owned(),
                ),
            );
        }
        let stored: Result<Option<Answer>, CatalogError> = match action {
            LiveAction::Start(r) => self.db(move |c| c.add_request(&r, now)).await.map(|added| {
                if let Added::New(row) = &added {
                    info!(
                        stream = row.stream_name,
                        request = row.request_id,
                        kind = row.kind.as_str(),
                        "upload request queued"
                    );
                }
                Some(Answer::of(added.row()))
            }),
            LiveAction::Stop { request_id } => {
                let name = stream.to_owned();
                self.db(move |c| c.stop_live(&name, now)).await.map(|row| {
                    row.map(|live| Answer {
                        request_id: Some(request_id),
                        status: RequestState::Done.as_str().to_owned(),
                        details: Some(format!("live request {} stopped", live.request_id)),
                    })
                })
            }
        };
        match stored {
            Ok(Some(answer)) => answer,
            Ok(None) => self.refuse(stream, refused("no live upload is running".to_owned())),
            Err(e) => {
                warn!(stream, error = %e, "cannot store an upload request");
                self.refuse(
                    stream,
                    refused(format!("the agent could not store it: {e}")),
                )
            }
        }
    }

    fn refuse(&self, stream: &str, r: Refused) -> Answer {
        warn!(stream, request = r.request_id.as_deref().unwrap_or("-"), reason = %r.message, "upload request refused");
        Answer::refused(r)
    }
}

/// A stream's upload status (the retained `upload-status` topic): live, the latest requests
/// newest first, and what is still to upload.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UploadStatus {
    pub stream_name: String,
    pub live: Option<LiveStatus>,
    pub requests: Vec<RequestStatus>,
    pub backlog: BacklogStatus,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LiveStatus {
    pub request_id: String,
    pub status: String,
    /// Epoch seconds.
    pub end_time: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestStatus {
    pub request_id: String,
    pub kind: String,
    pub start_time: f64,
    pub end_time: f64,
    pub status: String,
    pub uploaded: u32,
    pub already_uploaded: u32,
    pub failed: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    pub requested_time: f64,
    pub last_updated_time: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BacklogStatus {
    pub pending_fragments: u32,
    pub pending_bytes: u64,
    /// Epoch seconds of the oldest fragment still to upload.
    pub oldest_pending_time: Option<f64>,
}

impl From<Backlog> for BacklogStatus {
    fn from(b: Backlog) -> Self {
        BacklogStatus {
            pending_fragments: b.fragments,
            pending_bytes: b.bytes,
            oldest_pending_time: b.oldest_ms.map(secs),
        }
    }
}

/// Epoch milliseconds as the API's epoch seconds.
pub(crate) fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// The stream's upload status as the catalog has it.
pub fn upload_status(catalog: &Catalog, stream: &str) -> Result<UploadStatus, CatalogError> {
    let rows = catalog.requests(stream)?;
    let live = rows
        .iter()
        .find(|r| r.kind == crate::catalog::RequestKind::Live && r.state.is_open())
        .map(|r| LiveStatus {
            request_id: r.request_id.clone(),
            status: r.state.as_str().to_owned(),
            end_time: secs(r.end_ms),
        });
    let requests = rows
        .iter()
        .map(|r| RequestStatus {
            request_id: r.request_id.clone(),
            kind: r.kind.as_str().to_owned(),
            start_time: secs(r.start_ms),
            end_time: secs(r.end_ms),
            status: r.state.as_str().to_owned(),
            uploaded: r.uploaded,
            already_uploaded: r.already,
            failed: r.failed,
            details: r.details.clone(),
            requested_time: secs(r.requested_ms),
            last_updated_time: secs(r.updated_ms),
        })
        .collect();
    Ok(UploadStatus {
        stream_name: stream.to_owned(),
        live,
        requests,
        backlog: catalog.backlog(stream)?.into(),
    })
}
