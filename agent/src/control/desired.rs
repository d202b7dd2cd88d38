//! Reading a `desired` payload: the request JSON of StartEdgeConfigurationUpdate, or of
//! DeleteEdgeConfiguration (no `EdgeConfig` key), checked against the topic it came on.
//! Pure; every failure is the text that becomes FailedStatusDetails.

use serde_json::Value;

use super::topics::StreamTopic;
use crate::edge_config::validate::{validate_start_request, validate_stream_request};
use crate::edge_config::{ConfigError, StartEdgeConfigurationUpdateRequest, thing_name_from_arn};
use crate::input::quote;

/// Largest `desired` payload the agent reads; a bigger one gets SYNC_FAILED saying so.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Desired {
    /// StartEdgeConfigurationUpdate: apply this configuration.
    Start(Box<StartEdgeConfigurationUpdateRequest>),
    /// DeleteEdgeConfiguration.
    Delete,
    /// An empty payload: the retained topic was cleared (the agent does that after a delete).
    Cleared,
}

/// Why a `desired` payload is refused; its text becomes FailedStatusDetails.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DesiredError {
    #[error(
        "the request of {size} bytes exceeds the limit of {} bytes",
        MAX_PAYLOAD_BYTES
    )]
    TooLarge { size: usize },
    #[error("not valid JSON: the payload is not UTF-8 ({0})")]
    NotUtf8(std::str::Utf8Error),
    #[error("not valid JSON: {0}")]
    Json(String),
    /// Every field problem, `; `-separated.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error(
        "{field}: names the stream {}, but the request came on the topic of stream {}",
        quote(named),
        quote(topic)
    )]
    OtherStream {
        field: &'static str,
        named: String,
        topic: String,
    },
    #[error(
        "EdgeConfig.HubDeviceArn: {} names the thing {}, not this agent's thing {}",
        quote(hub),
        quote(named),
        quote(thing)
    )]
    OtherThing {
        hub: String,
        named: String,
        thing: String,
    },
}

/// Reads a `desired` payload received on `topic`.
pub fn parse_desired(topic: &StreamTopic, payload: &[u8]) -> Result<Desired, DesiredError> {
    if payload.is_empty() {
        return Ok(Desired::Cleared);
    }
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DesiredError::TooLarge {
            size: payload.len(),
        });
    }
    let text = std::str::from_utf8(payload).map_err(DesiredError::NotUtf8)?;
    let value: Value =
        crate::input::json::from_str(text).map_err(|e| DesiredError::Json(e.to_string()))?;
    let is_start = value
        .as_object()
        .is_some_and(|o| o.contains_key("EdgeConfig"));
    if !is_start {
        let request = validate_stream_request(&value)?;
        check_stream(
            topic,
            request.stream_name.as_deref(),
            request.stream_arn.as_deref(),
            request.stream_name(),
        )?;
        return Ok(Desired::Delete);
    }
    let request = validate_start_request(&value)?;
    check_stream(
        topic,
        request.stream_name.as_deref(),
        request.stream_arn.as_deref(),
        request.stream_name(),
    )?;
    let hub = &request.edge_config.hub_device_arn;
    match thing_name_from_arn(hub) {
        Some(thing) if thing == topic.thing => {}
        other => {
            return Err(DesiredError::OtherThing {
                hub: hub.clone(),
                named: other.unwrap_or("").to_owned(),
                thing: topic.thing.clone(),
            });
        }
    }
    Ok(Desired::Start(Box::new(request)))
}

fn check_stream(
    topic: &StreamTopic,
    name: Option<&str>,
    arn: Option<&str>,
    resolved: &str,
) -> Result<(), DesiredError> {
    if resolved == topic.stream {
        return Ok(());
    }
    let field = if name.is_some() {
        "StreamName"
    } else if arn.is_some() {
        "StreamARN"
    } else {
        "StreamName"
    };
    Err(DesiredError::OtherStream {
        field,
        named: resolved.to_owned(),
        topic: topic.stream.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::topics::Kind;

    fn topic() -> StreamTopic {
        StreamTopic {
            thing: "hub-1".into(),
            stream: "cam".into(),
            kind: Kind::Desired,
        }
    }

    fn start(stream: &str, thing: &str) -> String {
        format!(
            r#"{{"StreamName":"{stream}","EdgeConfig":{{"HubDeviceArn":"arn:aws:iot:us-east-1:123456789012:thing/{thing}","RecorderConfig":{{"MediaSourceConfig":{{"MediaUriSecretArn":"arn:aws:secretsmanager:us-east-1:123456789012:secret:cam-uri","MediaUriType":"RTSP_URI"}}}}}}}}"#
        )
    }

    #[test]
    fn start_and_delete() {
        match parse_desired(&topic(), start("cam", "hub-1").as_bytes()) {
            Ok(Desired::Start(r)) => assert_eq!(r.stream_name(), "cam"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_desired(&topic(), br#"{"StreamName":"cam"}"#),
            Ok(Desired::Delete)
        );
        assert_eq!(
            parse_desired(
                &topic(),
                br#"{"StreamARN":"arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam/1700000000000"}"#
            ),
            Ok(Desired::Delete)
        );
        assert_eq!(parse_desired(&topic(), b""), Ok(Desired::Cleared));
    }

    #[test]
    fn malformed_payloads_are_errors_never_panics() {
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        let cases: Vec<(&[u8], &str)> = vec![
            (b"not json", "not valid JSON"),
            (b"{", "not valid JSON"),
            (b"\xff\xfe", "not UTF-8"),
            (b"[]", ""),
            (b"42", ""),
            (b"null", ""),
            (b"\"text\"", ""),
            (br#"{"EdgeConfig":"x","StreamName":"cam"}"#, "EdgeConfig"),
            (br#"{"EdgeConfig":{},"StreamName":5}"#, "StreamName"),
            (br#"{"StreamName":"cam","Extra":1}"#, "Extra"),
            (br#"{}"#, "StreamName"),
            (&big, "exceeds the limit"),
            (
                br#"{"StreamName":"cam","StreamName":"cam"}"#,
                r#"not valid JSON: duplicate key "StreamName" at line 1"#,
            ),
        ];
        for (payload, needle) in cases {
            let e = parse_desired(&topic(), payload).unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        }
    }

    #[test]
    fn topic_and_payload_must_agree() {
        let e = parse_desired(&topic(), start("other", "hub-1").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("StreamName:"), "{e}");
        let e = parse_desired(&topic(), start("cam", "hub-2").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("EdgeConfig.HubDeviceArn:"), "{e}");
        let e = parse_desired(&topic(), br#"{"StreamName":"other"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("StreamName:"), "{e}");
        let e = parse_desired(
            &topic(),
            br#"{"StreamARN":"arn:aws:kinesisvideo:us-east-1:123456789012:stream/x/1"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("StreamARN:"), "{e}");
    }
}
