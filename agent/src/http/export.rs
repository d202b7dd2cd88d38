//! `GET /api/v1/streams/{name}/export.mp4?start=&end=` (and `.mkv`): a range as a file a
//! browser plays, streamed while [`crate::export::Export`] builds it on a blocking thread. The
//! channel between the two holds two chunks, so memory stays bounded by a few fragments and a
//! client that goes away stops the export at its next fragment.
//!
//! What can be refused is refused before the first byte (a bad range, an unknown stream, no
//! media in the range): after it the status is sent, and a failure can only cut the body short.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tracing::{info, warn};

use super::api::{range, range_query, stream_name};
use super::{ApiError, AppState};
use crate::export::{Export, ExportError, Format};

pub(super) async fn mp4(
    state: State<AppState>,
    name: Path<String>,
    query: RawQuery,
) -> Result<Response, ApiError> {
    export(state, name, query, Format::Mp4).await
}

pub(super) async fn mkv(
    state: State<AppState>,
    name: Path<String>,
    query: RawQuery,
) -> Result<Response, ApiError> {
    export(state, name, query, Format::Mkv).await
}

async fn export(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    format: Format,
) -> Result<Response, ApiError> {
    let name = stream_name(&name)?.to_owned();
    let q = range_query(raw.as_deref())?;
    if q.start.is_none() || q.end.is_none() {
        return Err(ApiError::bad_request(
            "start and end are required (ISO 8601 with a zone, or epoch seconds)",
        ));
    }
    let now = state.clock.now().as_millisecond();
    let (start, end) = range(&q, now, 0, state.max_export_ms)?;
    let catalog = state.supervisor.catalog().clone();
    let root = state.supervisor.config().recording_dir.clone();
    let stream = name.clone();
    let opened = tokio::task::spawn_blocking(move || {
        if !super::api::known(&catalog, &stream)? {
            return Ok(None);
        }
        Export::new(catalog, &root, &stream, (start, end), format).map(Some)
    })
    .await
    .map_err(ApiError::internal)?;
    let mut export = match opened {
        Ok(Some(e)) => e,
        Ok(None) => {
            return Err(ApiError::not_found(format!(
                "no stream {}",
                crate::input::quote(&name)
            )));
        }
        Err(e @ ExportError::NoMedia { .. }) => return Err(ApiError::not_found(e.to_string())),
        Err(e) => return Err(ApiError::internal(e)),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let stream = name.clone();
    tokio::task::spawn_blocking(move || {
        loop {
            let chunk = match export.next_chunk() {
                Ok(Some(c)) => Ok(Bytes::from(c)),
                Ok(None) => break,
                Err(e) => {
                    warn!(stream, error = %e, "export cut short");
                    Err(std::io::Error::other(e.to_string()))
                }
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
        let p = export.progress();
        info!(
            stream,
            fragments = p.fragments_done,
            bytes = p.bytes,
            skipped = p.skipped,
            ended_early = export.ended_early.as_deref(),
            "exported"
        );
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let file = format!(
        "{name}-{}.{}",
        jiff::Timestamp::from_millisecond(start)
            .map(|t| t.strftime("%Y%m%dT%H%M%SZ").to_string())
            .unwrap_or_default(),
        format.extension()
    );
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{file}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
