//! Operators' upload requests as they arrive (MQTT `uploads` and `live` topics, `ctl`, the
//! `upload --from --to` verb): parsed and checked against the agent's limits, every problem
//! named by its field. Pure: the time they are judged against is passed in.

use serde_json::{Map, Value};

use crate::catalog::{NewRequest, RequestKind};
use crate::input::{cut, json};

/// Largest request payload read (a request is a few dozen bytes).
pub const MAX_PAYLOAD: usize = 4096;

/// A range may end this far past the agent's clock (the requester's clock may be a little
/// ahead); beyond it the range is in the future.
pub const FUTURE_TOLERANCE_MS: i64 = 5_000;

/// The agent's limits on requests (agent.yaml `uploader.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_range_secs: u32,
    pub live_default_secs: u32,
    pub max_live_secs: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_range_secs: 86_400,
            live_default_secs: 600,
            max_live_secs: 3600,
        }
    }
}

/// What a live request asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveAction {
    Start(NewRequest),
    Stop { request_id: String },
}

/// Why a request was refused: the text says which field and why, and the request id when one
/// could be read (so the answer can name the request).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub request_id: Option<String>,
    pub message: String,
}

fn refused(id: Option<&str>, message: impl Into<String>) -> Refused {
    Refused {
        request_id: id.map(str::to_owned),
        message: message.into(),
    }
}

/// A request id: 1 to 64 of `[A-Za-z0-9_.:-]`.
pub fn valid_request_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

/// The object of a request payload, and its RequestId (generated from `now_ms` when absent).
fn object(payload: &[u8], now_ms: i64) -> Result<(Map<String, Value>, String), Refused> {
    if payload.len() > MAX_PAYLOAD {
        return Err(refused(
            None,
            format!("request of {} bytes; at most {MAX_PAYLOAD}", payload.len()),
        ));
    }
    let value: Value = json::from_slice(payload)
        .map_err(|e| refused(None, format!("request is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(refused(None, "request must be a JSON object"));
    };
    let id = match map.get("RequestId") {
        None | Some(Value::Null) => format!("agent-{now_ms}"),
        Some(Value::String(s)) if valid_request_id(s) => s.clone(),
        Some(other) => {
            return Err(refused(
                None,
                format!(
                    "RequestId {}: must be 1 to 64 characters of [A-Za-z0-9_.:-]",
                    cut(&other.to_string())
                ),
            ));
        }
    };
    Ok((map, id))
}

fn unknown_keys(map: &Map<String, Value>, known: &[&str], id: &str) -> Result<(), Refused> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(refused(
            Some(id),
            format!(
                "unknown field {}; expected one of {}",
                cut(k),
                known.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// An epoch-seconds field (may be fractional), in milliseconds.
fn epoch_ms(map: &Map<String, Value>, field: &str, id: &str) -> Result<i64, Refused> {
    let v = map
        .get(field)
        .filter(|v| !v.is_null())
        .ok_or_else(|| refused(Some(id), format!("{field} is required (epoch seconds)")))?;
    let secs = v.as_f64().filter(|s| s.is_finite()).ok_or_else(|| {
        refused(
            Some(id),
            format!(
                "{field} {}: must be a number of epoch seconds",
                cut(&v.to_string())
            ),
        )
    })?;
    // Years 1970 to 9999: a wider value is a unit mix-up (milliseconds), not a time.
    if !(0.0..=253_402_300_799.0).contains(&secs) {
        return Err(refused(
            Some(id),
            format!("{field} {secs}: outside 1970-9999 (epoch seconds, not milliseconds)"),
        ));
    }
    Ok((secs * 1000.0).round() as i64)
}

/// A range request: `{"RequestId"?, "StartTime", "EndTime"}` for `stream`, judged at `now_ms`.
pub fn parse_range(
    stream: &str,
    payload: &[u8],
    now_ms: i64,
    limits: Limits,
) -> Result<NewRequest, Refused> {
    let (map, id) = object(payload, now_ms)?;
    unknown_keys(&map, &["RequestId", "StartTime", "EndTime"], &id)?;
    let start_ms = epoch_ms(&map, "StartTime", &id)?;
    let end_ms = epoch_ms(&map, "EndTime", &id)?;
    range(stream, id, start_ms, end_ms, now_ms, limits)
}

/// Checks a range (also the `upload --from --to` verb's).
pub fn range(
    stream: &str,
    request_id: String,
    start_ms: i64,
    end_ms: i64,
    now_ms: i64,
    limits: Limits,
) -> Result<NewRequest, Refused> {
    let id = Some(request_id.as_str());
    if end_ms <= start_ms {
        return Err(refused(id, "EndTime must be after StartTime"));
    }
    if start_ms > now_ms {
        return Err(refused(
            id,
            "StartTime is in the future: nothing is recorded there yet (start-live sends what is \
             to come)",
        ));
    }
    if end_ms > now_ms + FUTURE_TOLERANCE_MS {
        return Err(refused(
            id,
            "EndTime is in the future: a range must be recorded already (start-live sends what \
             is to come)",
        ));
    }
    let max = i64::from(limits.max_range_secs) * 1000;
    if end_ms - start_ms > max {
        return Err(refused(
            id,
            format!(
                "the range lasts {} s, longer than uploader.max_range_secs ({})",
                (end_ms - start_ms) / 1000,
                limits.max_range_secs
            ),
        ));
    }
    Ok(NewRequest {
        stream_name: stream.to_owned(),
        request_id,
        kind: RequestKind::Range,
        start_ms,
        end_ms,
    })
}

/// A live request: `{"RequestId"?, "Action": "START" | "STOP", "DurationInSeconds"?}`.
pub fn parse_live(
    stream: &str,
    payload: &[u8],
    now_ms: i64,
    limits: Limits,
) -> Result<LiveAction, Refused> {
    let (map, id) = object(payload, now_ms)?;
    unknown_keys(&map, &["RequestId", "Action", "DurationInSeconds"], &id)?;
    let action = map.get("Action").and_then(Value::as_str);
    match action {
        Some("START") => {}
        Some("STOP") => {
            if map.get("DurationInSeconds").is_some_and(|v| !v.is_null()) {
                return Err(refused(
                    Some(&id),
                    "DurationInSeconds is only for Action START",
                ));
            }
            return Ok(LiveAction::Stop { request_id: id });
        }
        _ => {
            let got = map
                .get("Action")
                .map_or("nothing".to_owned(), |v| cut(&v.to_string()).into_owned());
            return Err(refused(
                Some(&id),
                format!("Action {got}: must be START or STOP"),
            ));
        }
    }
    let max = limits.max_live_secs;
    let secs = match map.get("DurationInSeconds") {
        None | Some(Value::Null) => limits.live_default_secs.min(max),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=u64::from(max)).contains(&n) => n as u32,
            _ => {
                return Err(refused(
                    Some(&id),
                    format!(
                        "DurationInSeconds {}: must be a whole number from 1 to {max} \
                         (uploader.max_live_secs)",
                        cut(&v.to_string())
                    ),
                ));
            }
        },
    };
    Ok(LiveAction::Start(NewRequest {
        stream_name: stream.to_owned(),
        request_id: id,
        kind: RequestKind::Live,
        start_ms: now_ms,
        end_ms: now_ms + i64::from(secs) * 1000,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600_000;

    fn range_of(payload: &str) -> Result<NewRequest, Refused> {
        parse_range("cam", payload.as_bytes(), NOW, Limits::default())
    }

    fn message(r: Result<impl std::fmt::Debug, Refused>) -> String {
        r.expect_err("refused").message
    }

    #[test]
    fn a_range_is_taken_in_epoch_seconds() {
        let r = range_of(r#"{"RequestId":"r-1","StartTime":1767225000,"EndTime":1767225010.5}"#)
            .unwrap();
        assert_eq!(r.request_id, "r-1");
        assert_eq!(
            (r.start_ms, r.end_ms),
            (1_767_225_000_000, 1_767_225_010_500)
        );
        assert_eq!(r.kind, RequestKind::Range);
        let r = range_of(r#"{"StartTime":1767225000,"EndTime":1767225010}"#).unwrap();
        assert_eq!(
            r.request_id,
            format!("agent-{NOW}"),
            "an id is made up when none is given"
        );
    }

    #[test]
    fn every_malformed_range_names_its_field() {
        let cases = [
            ("", "not valid JSON"),
            ("[1]", "must be a JSON object"),
            (
                r#"{"StartTime":1,"StartTime":2,"EndTime":3}"#,
                "duplicate key",
            ),
            (r#"{"StartTime":1767225000}"#, "EndTime is required"),
            (r#"{"EndTime":1767225000}"#, "StartTime is required"),
            (
                r#"{"StartTime":"yesterday","EndTime":1767225000}"#,
                "StartTime \"yesterday\": must be a number",
            ),
            (
                r#"{"StartTime":1767225000000,"EndTime":1767225010000}"#,
                "not milliseconds",
            ),
            (
                r#"{"StartTime":1767225010,"EndTime":1767225000}"#,
                "EndTime must be after StartTime",
            ),
            (
                r#"{"StartTime":1767225600,"EndTime":1767225600}"#,
                "EndTime must be after StartTime",
            ),
            (
                r#"{"StartTime":1767225601,"EndTime":1767225700}"#,
                "StartTime is in the future",
            ),
            (
                r#"{"StartTime":1767225000,"EndTime":1767225606}"#,
                "EndTime is in the future",
            ),
            (
                r#"{"StartTime":1767000000,"EndTime":1767225000}"#,
                "longer than uploader.max_range_secs (86400)",
            ),
            (
                r#"{"StartTime":1767225000,"EndTime":1767225010,"Stream":"x"}"#,
                "unknown field Stream",
            ),
            (
                r#"{"RequestId":"a b","StartTime":1767225000,"EndTime":1767225010}"#,
                "RequestId \"a b\"",
            ),
            (
                r#"{"RequestId":7,"StartTime":1767225000,"EndTime":1767225010}"#,
                "RequestId 7",
            ),
        ];
        for (payload, want) in cases {
            let got = message(range_of(payload));
            assert!(got.contains(want), "{payload}: {got:?} should say {want:?}");
        }
        let big = format!(
            r#"{{"StartTime":1,"EndTime":2,"x":"{}"}}"#,
            "a".repeat(MAX_PAYLOAD)
        );
        assert!(message(range_of(&big)).contains("at most 4096"));
        let err = range_of(r#"{"RequestId":"r9","StartTime":1767225010,"EndTime":1}"#).unwrap_err();
        assert_eq!(
            err.request_id.as_deref(),
            Some("r9"),
            "the answer can name the request"
        );
    }

    #[test]
    fn an_end_a_little_ahead_of_the_agents_clock_is_taken() {
        assert!(range_of(r#"{"StartTime":1767225590,"EndTime":1767225604}"#).is_ok());
    }

    #[test]
    fn live_starts_for_its_duration_or_the_default_and_stops() {
        let live = |p: &str| parse_live("cam", p.as_bytes(), NOW, Limits::default());
        let LiveAction::Start(r) = live(r#"{"RequestId":"l1","Action":"START"}"#).unwrap() else {
            panic!("a start");
        };
        assert_eq!(
            (r.kind, r.start_ms, r.end_ms),
            (RequestKind::Live, NOW, NOW + 600_000)
        );
        let LiveAction::Start(r) = live(r#"{"Action":"START","DurationInSeconds":60}"#).unwrap()
        else {
            panic!("a start");
        };
        assert_eq!(r.end_ms, NOW + 60_000);
        assert_eq!(
            live(r#"{"RequestId":"l2","Action":"STOP"}"#).unwrap(),
            LiveAction::Stop {
                request_id: "l2".into()
            }
        );
        for (payload, want) in [
            (r#"{"Action":"GO"}"#, "Action \"GO\": must be START or STOP"),
            (r#"{}"#, "Action nothing"),
            (
                r#"{"Action":"START","DurationInSeconds":0}"#,
                "from 1 to 3600",
            ),
            (
                r#"{"Action":"START","DurationInSeconds":3601}"#,
                "uploader.max_live_secs",
            ),
            (
                r#"{"Action":"START","DurationInSeconds":1.5}"#,
                "whole number",
            ),
            (
                r#"{"Action":"STOP","DurationInSeconds":5}"#,
                "only for Action START",
            ),
            (r#"{"Action":"START","Until":5}"#, "unknown field Until"),
        ] {
            let got = message(live(payload));
            assert!(got.contains(want), "{payload}: {got:?} should say {want:?}");
        }
    }
}
