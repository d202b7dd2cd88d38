//! The PutMedia acknowledgement stream: newline-separated JSON objects, parsed incrementally.
//!
//! The response body arrives in arbitrary chunks (HTTP chunking and TCP segments do not respect
//! line boundaries), so the parser keeps the unfinished line between calls. A line longer than
//! [`MAX_ACK_LINE`] is reported once and skipped up to its newline, so a broken or hostile peer
//! cannot make the buffer grow without bound. Unknown keys are ignored (the service may add
//! some), and the seed's `{ "Acknowledgement": { ... } }` wrapper is accepted as well as the bare
//! object the service actually sends. Nothing here panics on any input (see the fuzz target).

use serde::Deserialize;

/// Longest ack line accepted. Real acks are about 150 bytes (the producer SDK caps an ack at
/// 1,024 characters); the slack tolerates extra keys.
pub const MAX_ACK_LINE: usize = 64 * 1024;

/// What an acknowledgement says about a fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckEventType {
    /// The service started receiving the fragment.
    Buffering,
    /// The service received the whole fragment.
    Received,
    /// The fragment is durably stored: the only event that marks a fragment uploaded.
    Persisted,
    /// The service rejected the fragment or the stream; see `error_id`.
    Error,
    /// Keep-alive while no data is flowing.
    Idle,
    /// An event type this agent does not know; ignored by the uploader.
    Other(String),
}

impl AckEventType {
    fn parse(s: &str) -> AckEventType {
        match s.to_ascii_uppercase().as_str() {
            "BUFFERING" => AckEventType::Buffering,
            "RECEIVED" => AckEventType::Received,
            "PERSISTED" => AckEventType::Persisted,
            "ERROR" => AckEventType::Error,
            "IDLE" => AckEventType::Idle,
            _ => AckEventType::Other(s.to_owned()),
        }
    }
}

/// One acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub event: AckEventType,
    /// The fragment's cluster timecode, in the stream's timecode scale (ms for our segments).
    pub fragment_timecode: Option<i64>,
    /// The service's fragment number: a decimal string too long for any integer type.
    pub fragment_number: Option<String>,
    pub error_id: Option<u32>,
    /// The service's name for `error_id` (the seed: "ErrorId and ErrorCode"), at most
    /// [`MAX_ERROR_CODE`] characters, kept for logs and the job status.
    pub error_code: Option<String>,
}

/// Longest ErrorCode kept (the seed's longest is 38 characters).
pub const MAX_ERROR_CODE: usize = 64;

/// A line that is not an acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("ack line longer than {MAX_ACK_LINE} bytes ({len} bytes so far); skipped")]
    TooLong { len: usize },
    #[error("malformed ack line {line:?}: {reason}")]
    Malformed { line: String, reason: String },
}

/// Incremental parser: feed response chunks with [`AckParser::push`].
#[derive(Debug, Default)]
pub struct AckParser {
    line: Vec<u8>,
    /// Inside an oversized line already reported: drop bytes until its newline.
    skipping: bool,
}

impl AckParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses every line `chunk` completes; blank lines are skipped.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Result<Ack, AckError>> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            let newline = rest.iter().position(|&b| b == b'\n');
            let (piece, after) = match newline {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            if !self.skipping {
                if self.line.len() + piece.len() > MAX_ACK_LINE {
                    out.push(Err(AckError::TooLong {
                        len: self.line.len() + piece.len(),
                    }));
                    self.line.clear();
                    self.skipping = true;
                } else {
                    self.line.extend_from_slice(piece);
                }
            }
            match after {
                Some(after) => {
                    if !self.skipping {
                        out.extend(parse_line(&self.line));
                    }
                    self.line.clear();
                    self.skipping = false;
                    rest = after;
                }
                None => break,
            }
        }
        out
    }

    /// The end of the stream: a last line without its newline still counts.
    pub fn finish(&mut self) -> Option<Result<Ack, AckError>> {
        let skipping = std::mem::take(&mut self.skipping);
        let line = std::mem::take(&mut self.line);
        if skipping { None } else { parse_line(&line) }
    }
}

/// Accepts a JSON number or a string holding one (the service quotes some numbers).
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrString {
    Num(serde_json::Number),
    Str(String),
}

impl NumOrString {
    fn text(&self) -> String {
        match self {
            NumOrString::Num(n) => n.to_string(),
            NumOrString::Str(s) => s.trim().to_owned(),
        }
    }
}

#[derive(Deserialize)]
struct RawAck {
    #[serde(rename = "EventType", alias = "AckEventType")]
    event_type: Option<String>,
    #[serde(rename = "FragmentTimecode", alias = "FragmentTimeCode")]
    fragment_timecode: Option<NumOrString>,
    #[serde(rename = "FragmentNumber")]
    fragment_number: Option<NumOrString>,
    #[serde(rename = "ErrorId")]
    error_id: Option<NumOrString>,
    #[serde(rename = "ErrorCode")]
    error_code: Option<NumOrString>,
    #[serde(rename = "Acknowledgement")]
    wrapped: Option<Box<RawAck>>,
}

fn malformed(line: &[u8], reason: impl ToString) -> AckError {
    // Bounded copy: enough to recognise the line in a log.
    let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
    AckError::Malformed {
        line: shown,
        reason: reason.to_string(),
    }
}

fn parse_line(line: &[u8]) -> Option<Result<Ack, AckError>> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return None;
    }
    Some(parse_object(trimmed))
}

fn parse_object(line: &[u8]) -> Result<Ack, AckError> {
    // Plain serde_json: acks are the service's own output, and this module compiles alone into
    // the fuzz target.
    let mut raw: RawAck = serde_json::from_slice(line).map_err(|e| malformed(line, e))?;
    if raw.event_type.is_none()
        && let Some(inner) = raw.wrapped.take()
    {
        raw = *inner;
    }
    let event = raw
        .event_type
        .as_deref()
        .map(AckEventType::parse)
        .ok_or_else(|| malformed(line, "no EventType"))?;
    let fragment_timecode = match &raw.fragment_timecode {
        None => None,
        Some(v) => Some(
            v.text()
                .parse::<i64>()
                .map_err(|_| malformed(line, "FragmentTimecode is not an integer"))?,
        ),
    };
    let fragment_number = match &raw.fragment_number {
        None => None,
        Some(v) => {
            let t = v.text();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed(line, "FragmentNumber is not a decimal number"));
            }
            Some(t)
        }
    };
    let error_id = match &raw.error_id {
        None => None,
        Some(v) => Some(
            v.text()
                .parse::<u32>()
                .map_err(|_| malformed(line, "ErrorId is not a number"))?,
        ),
    };
    if event == AckEventType::Error && error_id.is_none() {
        return Err(malformed(line, "ERROR without ErrorId"));
    }
    // Free text from the peer: printable ASCII only, bounded, so it is safe in a log line.
    let error_code = raw.error_code.map(|v| {
        v.text()
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(MAX_ERROR_CODE)
            .collect::<String>()
    });
    Ok(Ack {
        event,
        fragment_timecode,
        fragment_number,
        error_id,
        error_code: error_code.filter(|c| !c.is_empty()),
    })
}

/// How the uploader reacts to an ERROR ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: resend from the first unpersisted fragment after a backoff.
    Retry,
    /// This fragment can never be accepted: mark it failed and move on.
    FailFragment,
    /// The stream is gone (4008 STREAM_NOT_ACTIVE, 4507 STREAM_DELETED): end the run with
    /// USER_ERROR. PIC gives up on both (`StreamEvent.c`, `serviceCallResultRetry`).
    StreamGone,
}

/// The seed's error table, as the issue decides each one.
pub fn classify(error_id: u32) -> ErrorClass {
    match error_id {
        4000 | 4003 | 5000 | 5001 => ErrorClass::Retry,
        4008 | 4507 => ErrorClass::StreamGone,
        4001..=4012 | 4500..=4506 => ErrorClass::FailFragment,
        // Unknown codes: transient until proven otherwise, so media is never given up lightly.
        _ => ErrorClass::Retry,
    }
}

/// The seed's name for an ErrorId, for logs and the catalog.
pub fn error_name(error_id: u32) -> &'static str {
    match error_id {
        4000 => "STREAM_READ_ERROR",
        4001 => "MAX_FRAGMENT_SIZE_REACHED",
        4002 => "MAX_FRAGMENT_DURATION_REACHED",
        4003 => "MAX_CONNECTION_DURATION_REACHED",
        4004 => "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS",
        4005 => "MORE_THAN_ALLOWED_TRACKS_FOUND",
        4006 => "INVALID_MKV_DATA",
        4007 => "INVALID_PRODUCER_TIMESTAMP",
        4008 => "STREAM_NOT_ACTIVE",
        4009 => "FRAGMENT_METADATA_LIMIT_REACHED",
        4010 => "TRACK_NUMBER_MISMATCH",
        4011 => "FRAMES_MISSING_FOR_TRACK",
        4012 => "INVALID_FRAGMENT_METADATA",
        4500 => "KMS_KEY_ACCESS_DENIED",
        4501 => "KMS_KEY_DISABLED",
        4502 => "KMS_KEY_VALIDATION_ERROR",
        4503 => "KMS_KEY_UNAVAILABLE",
        4504 => "KMS_KEY_INVALID_USAGE",
        4505 => "KMS_KEY_INVALID_STATE",
        4506 => "KMS_KEY_NOT_FOUND",
        // Not in the seed's table; PIC's `SERVICE_CALL_RESULT_STREAM_DELETED` (Include.h:786).
        4507 => "STREAM_DELETED",
        5000 => "INTERNAL_ERROR",
        5001 => "ARCHIVAL_ERROR",
        _ => "UNKNOWN_ERROR",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn persisted(tc: i64, n: &str) -> Ack {
        Ack {
            event: AckEventType::Persisted,
            fragment_timecode: Some(tc),
            fragment_number: Some(n.into()),
            error_id: None,
            error_code: None,
        }
    }

    #[test]
    fn parses_the_service_format() {
        let mut p = AckParser::new();
        let acks = p.push(
            b"{\"EventType\":\"BUFFERING\",\"FragmentTimecode\":1700000000000,\
              \"FragmentNumber\":\"91343852333181432392682062607743920146264440140\"}\n\
              {\"EventType\":\"PERSISTED\",\"FragmentTimecode\":1700000000000,\
              \"FragmentNumber\":\"91343852333181432392682062607743920146264440140\"}\r\n\
              {\"EventType\":\"ERROR\",\"FragmentTimecode\":1700000002000,\"ErrorId\":4004}\n\
              {\"EventType\":\"IDLE\"}\n",
        );
        let acks: Vec<Ack> = acks.into_iter().map(Result::unwrap).collect();
        assert_eq!(acks.len(), 4);
        assert_eq!(acks[0].event, AckEventType::Buffering);
        assert_eq!(
            acks[1],
            persisted(
                1_700_000_000_000,
                "91343852333181432392682062607743920146264440140"
            )
        );
        assert_eq!(acks[2].event, AckEventType::Error);
        assert_eq!(acks[2].error_id, Some(4004));
        assert_eq!(acks[3].event, AckEventType::Idle);
        assert_eq!(acks[3].fragment_timecode, None);
    }

    #[test]
    fn lines_split_anywhere_give_the_same_acks() {
        let text = b"{\"EventType\":\"RECEIVED\",\"FragmentTimecode\":5,\"FragmentNumber\":\"17\"}\n\
                     {\"EventType\":\"PERSISTED\",\"FragmentTimecode\":5,\"FragmentNumber\":\"17\"}\n";
        for split in 0..=text.len() {
            for second in split..=text.len() {
                let mut p = AckParser::new();
                let mut acks = p.push(&text[..split]);
                acks.extend(p.push(&text[split..second]));
                acks.extend(p.push(&text[second..]));
                assert!(p.finish().is_none());
                let acks: Vec<Ack> = acks.into_iter().map(Result::unwrap).collect();
                assert_eq!(acks.len(), 2, "split at {split}/{second}");
                assert_eq!(acks[1], persisted(5, "17"));
            }
        }
    }

    #[test]
    fn byte_by_byte_feeding_works() {
        let text = b"{\"EventType\":\"PERSISTED\",\"FragmentTimecode\":9,\"FragmentNumber\":1}\n";
        let mut p = AckParser::new();
        let acks: Vec<_> = text.iter().flat_map(|b| p.push(&[*b])).collect();
        assert_eq!(acks, vec![Ok(persisted(9, "1"))]);
    }

    #[test]
    fn unknown_keys_and_the_seed_wrapper_are_accepted() {
        let mut p = AckParser::new();
        let acks = p.push(
            b"{\"EventType\":\"persisted\",\"FragmentTimecode\":\"7\",\"FragmentNumber\":\"8\",\
              \"NewKey\":{\"nested\":[1,2]},\"Other\":null}\n\
              {\"Acknowledgement\":{\"EventType\":\"PERSISTED\",\"FragmentTimecode\":7,\
              \"FragmentNumber\":\"8\"}}\n\
              {\"EventType\":\"SOMETHING_NEW\"}\n",
        );
        assert_eq!(acks[0], Ok(persisted(7, "8")));
        assert_eq!(acks[1], Ok(persisted(7, "8")));
        assert_eq!(
            acks[2].as_ref().unwrap().event,
            AckEventType::Other("SOMETHING_NEW".into())
        );
    }

    #[test]
    fn malformed_lines_are_reported_and_parsing_goes_on() {
        let mut p = AckParser::new();
        let acks = p.push(
            b"not json\n\
              {\"FragmentTimecode\":1}\n\
              {\"EventType\":\"PERSISTED\",\"FragmentTimecode\":1.5}\n\
              {\"EventType\":\"PERSISTED\",\"FragmentNumber\":\"12a\"}\n\
              {\"EventType\":\"ERROR\",\"FragmentTimecode\":1}\n\
              {\"EventType\":\"ERROR\",\"ErrorId\":\"x\"}\n\
              [1,2]\n\
              \xff\xfe\n\
              \n   \n\
              {\"EventType\":\"PERSISTED\",\"FragmentTimecode\":3,\"FragmentNumber\":\"4\"}\n",
        );
        assert_eq!(acks.len(), 9, "{acks:?}");
        for a in &acks[..8] {
            assert!(
                matches!(a, Err(AckError::Malformed { .. })),
                "expected malformed, got {a:?}"
            );
        }
        assert_eq!(acks[8], Ok(persisted(3, "4")));
    }

    #[test]
    fn oversized_lines_are_skipped_with_one_error() {
        let mut p = AckParser::new();
        let mut out = Vec::new();
        // 3 * MAX in 1000-byte pieces, no newline until the end.
        let piece = vec![b'x'; 1000];
        for _ in 0..(3 * MAX_ACK_LINE / 1000) {
            out.extend(p.push(&piece));
        }
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], Err(AckError::TooLong { .. })));
        assert!(p.line.len() <= MAX_ACK_LINE, "buffer stays bounded");
        let after = p.push(
            b"tail\n{\"EventType\":\"PERSISTED\",\"FragmentTimecode\":2,\"FragmentNumber\":3}\n",
        );
        assert_eq!(after, vec![Ok(persisted(2, "3"))]);
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_accepted() {
        let head = b"{\"EventType\":\"IDLE\",\"Pad\":\"";
        let tail = b"\"}";
        let mut line = head.to_vec();
        line.resize(MAX_ACK_LINE - tail.len(), b'p');
        line.extend_from_slice(tail);
        assert_eq!(line.len(), MAX_ACK_LINE);
        let mut p = AckParser::new();
        let mut acks = p.push(&line);
        acks.extend(p.push(b"\n"));
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].as_ref().unwrap().event, AckEventType::Idle);
        line.insert(5, b' ');
        let acks = p.push(&line);
        assert!(matches!(acks[..], [Err(AckError::TooLong { .. })]));
    }

    #[test]
    fn last_line_without_newline_counts_at_the_end() {
        let mut p = AckParser::new();
        assert!(
            p.push(
                b"{\"EventType\":\"PERSISTED\",\"FragmentTimecode\":1,\"FragmentNumber\":\"2\"}"
            )
            .is_empty()
        );
        assert_eq!(p.finish(), Some(Ok(persisted(1, "2"))));
        assert_eq!(p.finish(), None);
    }

    /// A cheap in-tree fuzz (the libFuzzer target is fuzz/fuzz_targets/ack_parser.rs): random
    /// bytes mixed with ack fragments, in random pieces, never panic and never grow the buffer
    /// past the limit.
    #[test]
    fn random_input_never_panics_and_stays_bounded() {
        let pieces: [&[u8]; 8] = [
            b"{\"EventType\":\"PERSISTED\",\"FragmentTimecode\":",
            b"123,\"FragmentNumber\":\"4\"}",
            b"\n",
            b"{\"Acknowledgement\":{",
            b"\"ErrorId\":4004",
            b"\xff\x00\r",
            b"[{\"a\":",
            b"}}}}",
        ];
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).unwrap();
        let mut x = u64::from_le_bytes(seed) | 1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200 {
            let mut p = AckParser::new();
            for _ in 0..200 {
                let chunk: Vec<u8> = match next() % 4 {
                    0 => (0..next() % 64).map(|_| next() as u8).collect(),
                    1 => vec![b'z'; (next() % 20_000) as usize],
                    _ => pieces[(next() % 8) as usize].to_vec(),
                };
                let _ = p.push(&chunk);
                assert!(p.line.len() <= MAX_ACK_LINE);
            }
            let _ = p.finish();
        }
    }

    #[test]
    fn error_classes_follow_the_issue() {
        for id in [4000, 4003, 5000, 5001] {
            assert_eq!(classify(id), ErrorClass::Retry, "{id}");
        }
        for id in [
            4001, 4002, 4004, 4005, 4006, 4007, 4009, 4010, 4011, 4012, 4500, 4506,
        ] {
            assert_eq!(classify(id), ErrorClass::FailFragment, "{id}");
        }
        assert_eq!(classify(4008), ErrorClass::StreamGone);
        assert_eq!(classify(4507), ErrorClass::StreamGone);
        assert_eq!(classify(4999), ErrorClass::Retry, "unknown ids are retried");
        assert_eq!(error_name(4004), "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS");
        assert_eq!(error_name(4507), "STREAM_DELETED");
    }

    #[test]
    fn error_code_is_kept_bounded_and_printable() {
        let mut p = AckParser::new();
        let long = "X".repeat(500);
        let line = format!(
            "{{\"EventType\":\"ERROR\",\"FragmentTimecode\":5,\"ErrorId\":4507,\
             \"ErrorCode\":\"STREAM_DELETED\"}}\n\
             {{\"EventType\":\"ERROR\",\"ErrorId\":4001,\"ErrorCode\":\"{long}\"}}\n\
             {{\"EventType\":\"ERROR\",\"ErrorId\":4001,\"ErrorCode\":\"a\\nb\\u001b[31m\"}}\n\
             {{\"EventType\":\"ERROR\",\"ErrorId\":4001,\"ErrorCode\":17}}\n"
        );
        let acks: Vec<Ack> = p
            .push(line.as_bytes())
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(acks[0].error_code.as_deref(), Some("STREAM_DELETED"));
        assert_eq!(acks[0].error_id, Some(4507));
        assert_eq!(acks[1].error_code.as_ref().unwrap().len(), MAX_ERROR_CODE);
        assert_eq!(acks[2].error_code.as_deref(), Some("ab[31m"));
        assert_eq!(acks[3].error_code.as_deref(), Some("17"));
    }
}
