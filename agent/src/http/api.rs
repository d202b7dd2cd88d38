//! The JSON API (`/api/v1`), in the style of the Kinesis Video Streams API: PascalCase fields,
//! times in epoch seconds.
//!
//! - `GET /streams`: every stream's DescribeEdgeConfiguration response, its usage, its uploads
//!   (live, requests, backlog) and its counters.
//! - `GET /streams/{name}`: one of them.
//! - `GET /streams/{name}/recordings?start=&end=`: what is recorded in a range (default the last
//!   24 hours, at most [`MAX_RECORDINGS_MS`]): the segments, the recorded spans by upload state
//!   and the gaps between them. Spans merge fragments, so a day of 2 s fragments is a few
//!   spans, not 43,200 rows.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde::Serialize;

use super::{ApiError, AppState, db};
use crate::catalog::{Catalog, CatalogError, FragmentTime, UploadState};
use crate::edge_config::DescribeEdgeConfigurationResponse;
use crate::stats::StreamCounts;
use crate::supervisor::requests::{UploadStatus, secs, upload_status};

/// The longest range `recordings` answers for: a week of timeline.
pub const MAX_RECORDINGS_MS: i64 = 7 * 86_400_000;
/// The default range: the last day.
const DEFAULT_RECORDINGS_MS: i64 = 86_400_000;
/// Fragments closer than this are one span: timestamps of consecutive fragments meet within a
/// frame interval, and a missing second is worth showing.
const SPAN_TOLERANCE_MS: i64 = 1000;
/// Most fragments one recordings answer reads (a week of 2 s fragments, with room).
const MAX_FRAGMENTS: usize = 400_000;

/// A stream name from the path: the API's `[a-zA-Z0-9_.-]+`, at most 256 characters.
pub(super) fn stream_name(name: &str) -> Result<&str, ApiError> {
    if name.len() <= 256 && crate::edge_config::validate::is_resource_name(name) {
        Ok(name)
    } else {
        Err(ApiError::bad_request(format!(
            "{} is not a stream name ([a-zA-Z0-9_.-]+, at most 256 characters)",
            crate::input::quote(&crate::input::cut(name))
        )))
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamView {
    pub stream_name: String,
    /// As DescribeEdgeConfiguration answers; absent for media left of a deleted configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuration: Option<DescribeEdgeConfigurationResponse>,
    pub usage: Usage,
    pub uploads: UploadStatus,
    pub counters: Counters,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Usage {
    pub local_media_bytes: u64,
    pub segments: u32,
    /// Epoch seconds of the oldest and newest media on disk.
    pub oldest_media_time: Option<f64>,
    pub newest_media_time: Option<f64>,
}

/// Since the agent started.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Counters {
    pub frames_recorded: u64,
    pub fragments_recorded: u64,
    pub bytes_recorded: u64,
    pub last_frame_time: Option<f64>,
    pub camera_reconnects: u64,
    pub fragments_uploaded: u64,
    pub bytes_uploaded: u64,
    pub upload_retries: u64,
    pub upload_failures: std::collections::BTreeMap<String, u64>,
}

impl From<StreamCounts> for Counters {
    fn from(c: StreamCounts) -> Counters {
        Counters {
            frames_recorded: c.frames_recorded,
            fragments_recorded: c.fragments_recorded,
            bytes_recorded: c.bytes_recorded,
            last_frame_time: c.last_frame_ms.map(secs),
            camera_reconnects: c.camera_reconnects(),
            fragments_uploaded: c.fragments_uploaded,
            bytes_uploaded: c.bytes_uploaded,
            upload_retries: c.upload_retries,
            upload_failures: c.upload_failures,
        }
    }
}

/// Whether the catalog knows the stream at all (a configuration or media).
pub(super) fn known(catalog: &Catalog, name: &str) -> Result<bool, CatalogError> {
    Ok(catalog.config(name)?.is_some() || catalog.media_extent(name)?.0 > 0)
}

fn view(catalog: &Catalog, name: &str, counts: StreamCounts) -> Result<StreamView, CatalogError> {
    let (segments, oldest, newest) = catalog.media_extent(name)?;
    Ok(StreamView {
        stream_name: name.to_owned(),
        configuration: catalog.describe(name)?,
        usage: Usage {
            local_media_bytes: catalog.stream_usage(name)?,
            segments,
            oldest_media_time: oldest.map(secs),
            newest_media_time: newest.map(secs),
        },
        uploads: upload_status(catalog, name)?,
        counters: counts.into(),
    })
}

pub(super) async fn streams(
    State(state): State<AppState>,
) -> Result<Json<Vec<StreamView>>, ApiError> {
    let mut counts = state.supervisor.stats().snapshot();
    let views = db(&state, move |c| {
        let mut names: std::collections::BTreeSet<String> = c
            .configs()?
            .iter()
            .map(|s| s.stream_name().to_owned())
            .collect();
        names.extend(c.media_streams()?);
        names
            .into_iter()
            .map(|n| {
                let counts = counts.remove(&n).unwrap_or_default();
                view(c, &n, counts)
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(Json(views))
}

pub(super) async fn stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<StreamView>, ApiError> {
    let name = stream_name(&name)?.to_owned();
    let counts = state.supervisor.stats().stream_counts(&name);
    let n = name.clone();
    let v = db(&state, move |c| {
        if !known(c, &n)? {
            return Ok(None);
        }
        view(c, &n, counts).map(Some)
    })
    .await?;
    v.map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no stream {}", crate::input::quote(&name))))
}

/// `start` and `end` as the AWS CLI takes times (ISO 8601 or epoch seconds).
#[derive(Debug)]
pub struct RangeQuery {
    pub start: Option<String>,
    pub end: Option<String>,
}

/// A range from the query: both ends parsed, in order, not longer than `max_ms`; a missing
/// `end` is now and a missing `start` is `default_ms` before the end.
pub(super) fn range(
    q: &RangeQuery,
    now_ms: i64,
    default_ms: i64,
    max_ms: i64,
) -> Result<(i64, i64), ApiError> {
    let parse = |field: &str, v: &Option<String>| -> Result<Option<i64>, ApiError> {
        v.as_deref()
            .map(|s| {
                crate::input::parse_time(s)
                    .map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
            })
            .transpose()
    };
    let end = parse("end", &q.end)?.unwrap_or(now_ms);
    let start = parse("start", &q.start)?.unwrap_or(end - default_ms);
    if end <= start {
        return Err(ApiError::bad_request(format!(
            "end ({}) is not after start ({})",
            secs(end),
            secs(start)
        )));
    }
    if end - start > max_ms {
        return Err(ApiError::bad_request(format!(
            "the range is {} s, more than the {} s allowed",
            (end - start) / 1000,
            max_ms / 1000
        )));
    }
    Ok((start, end))
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Span {
    pub start_time: f64,
    pub end_time: f64,
    pub upload_state: &'static str,
    pub fragments: u32,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Gap {
    pub start_time: f64,
    pub end_time: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SegmentView {
    pub start_time: f64,
    pub end_time: f64,
    pub size: u64,
    pub state: &'static str,
    pub fragments: u32,
    pub uploaded: u32,
    pub pending: u32,
    pub failed: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Recordings {
    pub stream_name: String,
    pub start_time: f64,
    pub end_time: f64,
    pub segments: Vec<SegmentView>,
    pub spans: Vec<Span>,
    pub gaps: Vec<Gap>,
    /// More fragments than one answer reads: the spans stop early.
    pub truncated: bool,
}

/// Fragments (in timestamp order) merged into spans of one upload state, and the gaps of more
/// than `tolerance_ms` between recorded media.
pub fn spans(fragments: &[FragmentTime], tolerance_ms: i64) -> (Vec<Span>, Vec<Gap>) {
    let mut spans: Vec<(i64, i64, UploadState, u32)> = Vec::new();
    let mut gaps = Vec::new();
    let mut covered_until: Option<i64> = None;
    for f in fragments {
        let (start, end) = (f.timecode_ms, f.timecode_ms + f.duration_ms.max(0));
        if let Some(until) = covered_until
            && start - until > tolerance_ms
        {
            gaps.push(Gap {
                start_time: secs(until),
                end_time: secs(start),
            });
        }
        covered_until = Some(covered_until.map_or(end, |u| u.max(end)));
        match spans.last_mut() {
            Some(last) if last.2 == f.upload_state && start - last.1 <= tolerance_ms => {
                last.1 = last.1.max(end);
                last.3 += 1;
            }
            _ => spans.push((start, end, f.upload_state, 1)),
        }
    }
    let spans = spans
        .into_iter()
        .map(|(s, e, state, n)| Span {
            start_time: secs(s),
            end_time: secs(e),
            upload_state: state.as_str(),
            fragments: n,
        })
        .collect();
    (spans, gaps)
}

pub(super) async fn recordings(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Recordings>, ApiError> {
    let name = stream_name(&name)?.to_owned();
    let q = range_query(raw.as_deref())?;
    let now = state.clock.now().as_millisecond();
    let (start, end) = range(&q, now, DEFAULT_RECORDINGS_MS, MAX_RECORDINGS_MS)?;
    let n = name.clone();
    let found = db(&state, move |c| {
        if !known(c, &n)? {
            return Ok(None);
        }
        let fragments = c.fragment_times(&n, start, end, MAX_FRAGMENTS + 1)?;
        let segments = c
            .segment_summaries_in(&n, (start, end))?
            .into_iter()
            .map(|s| SegmentView {
                start_time: secs(s.segment.start_ms),
                end_time: secs(s.segment.end_ms),
                size: s.segment.size,
                state: s.segment.state.as_str(),
                fragments: s.fragments,
                uploaded: s.uploaded,
                pending: s.pending,
                failed: s.failed,
            })
            .collect();
        Ok(Some((fragments, segments)))
    })
    .await?;
    let Some((mut fragments, segments)) = found else {
        return Err(ApiError::not_found(format!(
            "no stream {}",
            crate::input::quote(&name)
        )));
    };
    let truncated = fragments.len() > MAX_FRAGMENTS;
    fragments.truncate(MAX_FRAGMENTS);
    let (spans, gaps) = spans(&fragments, SPAN_TOLERANCE_MS);
    Ok(Json(Recordings {
        stream_name: name,
        start_time: secs(start),
        end_time: secs(end),
        segments,
        spans,
        gaps,
        truncated,
    }))
}

/// `start` and `end` from the query string. Other keys are refused by name, so a typo
/// (`from=`) is not silently the default range; so is a key given twice.
pub(super) fn range_query(raw: Option<&str>) -> Result<RangeQuery, ApiError> {
    let mut q = RangeQuery {
        start: None,
        end: None,
    };
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let slot = match k.as_ref() {
            "start" => &mut q.start,
            "end" => &mut q.end,
            super::ACCESS_TOKEN => continue,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {} (this endpoint takes start and end)",
                    crate::input::quote(&crate::input::cut(other))
                )));
            }
        };
        if slot.replace(v.into_owned()).is_some() {
            return Err(ApiError::bad_request(format!("{k} is given twice")));
        }
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(start: i64, dur: i64, state: UploadState) -> FragmentTime {
        FragmentTime {
            segment_id: 1,
            offset: 0,
            size: 0,
            timecode_ms: start,
            duration_ms: dur,
            upload_state: state,
        }
    }

    #[test]
    fn fragments_merge_into_spans_and_gaps() {
        use UploadState::*;
        let f = [
            frag(0, 2000, Uploaded),
            frag(2000, 2000, Uploaded),
            frag(4040, 2000, Pending),
            frag(6040, 2000, Pending),
            frag(20_000, 2000, Pending),
            frag(22_000, 2000, Failed),
        ];
        let (s, g) = spans(&f, 1000);
        let got: Vec<_> = s
            .iter()
            .map(|s| (s.start_time, s.end_time, s.upload_state, s.fragments))
            .collect();
        assert_eq!(
            got,
            [
                (0.0, 4.0, "UPLOADED", 2),
                (4.04, 8.04, "PENDING", 2),
                (20.0, 22.0, "PENDING", 1),
                (22.0, 24.0, "FAILED", 1),
            ]
        );
        assert_eq!(
            g,
            [Gap {
                start_time: 8.04,
                end_time: 20.0
            }]
        );
        assert_eq!(spans(&[], 1000), (vec![], vec![]));
    }

    #[test]
    fn ranges_are_checked_by_name() {
        let q = |s: Option<&str>, e: Option<&str>| RangeQuery {
            start: s.map(str::to_owned),
            end: e.map(str::to_owned),
        };
        let now = 1_800_000_000_000;
        assert_eq!(
            range(&q(None, None), now, 3_600_000, 7_200_000).unwrap(),
            (now - 3_600_000, now)
        );
        assert_eq!(
            range(
                &q(Some("2026-12-04T14:00:00Z"), Some("1796392860")),
                now,
                1,
                7_200_000
            )
            .unwrap(),
            (1_796_392_800_000, 1_796_392_860_000)
        );
        let e = range(&q(Some("yesterday"), None), now, 1, 10).unwrap_err();
        assert!(e.message.starts_with("start:"), "{}", e.message);
        let e = range(&q(Some("100"), Some("50")), now, 1, 1_000_000).unwrap_err();
        assert!(e.message.contains("not after start"), "{}", e.message);
        let e = range(&q(Some("0"), Some("7201")), now, 1, 7_200_000).unwrap_err();
        assert!(
            e.message.contains("7201 s, more than the 7200 s"),
            "{}",
            e.message
        );
    }

    #[test]
    fn stream_names_are_the_apis() {
        assert!(stream_name("cam-1.front_door").is_ok());
        for bad in ["", "a b", "x/y", "ü", &"a".repeat(257)] {
            let e = stream_name(bad).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn unknown_query_keys_are_named() {
        let q = range_query(Some("start=1&end=2026-12-04T14%3A00%3A00Z")).unwrap();
        assert_eq!(q.start.as_deref(), Some("1"));
        assert_eq!(q.end.as_deref(), Some("2026-12-04T14:00:00Z"));
        assert!(range_query(None).unwrap().start.is_none());
        let e = range_query(Some("from=1")).unwrap_err();
        assert!(e.message.contains("\"from\""), "{}", e.message);
        let e = range_query(Some("start=1&start=2")).unwrap_err();
        assert!(e.message.contains("twice"), "{}", e.message);
    }
}
