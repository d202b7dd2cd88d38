//! Input the agent does not control: files an operator names, JSON from anyone, and the values
//! from either that messages echo back.

pub mod file;
pub mod json;

use std::borrow::Cow;

use url::Url;

pub use file::{ReadError, read_regular_file, read_regular_text};

/// Most characters of a value a message echoes: a pasted blob must not flood a log line, a
/// status detail or a terminal.
pub const ECHO_MAX_CHARS: usize = 64;

/// `s` cut to [`ECHO_MAX_CHARS`] characters, `...` marking a cut.
pub fn cut(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(ECHO_MAX_CHARS) {
        None => Cow::Borrowed(s),
        Some((at, _)) => Cow::Owned(format!("{}...", &s[..at])),
    }
}

/// `s` quoted (control characters escaped) and cut, for a value in a message.
pub fn quote(s: &str) -> String {
    match s.char_indices().nth(ECHO_MAX_CHARS) {
        None => format!("{s:?}"),
        Some((at, _)) => format!("{:?}...", &s[..at]),
    }
}

/// The URL with any password replaced by `***`, for logs and status details. Text that is not a
/// URL is returned with anything between `://` and `@` masked.
pub fn redact_url(s: &str) -> String {
    if let Ok(mut u) = Url::parse(s)
        && u.password().is_some()
    {
        let _ = u.set_password(Some("***"));
        return u.to_string();
    }
    match (s.find("://"), s.rfind('@')) {
        (Some(i), Some(j)) if j > i + 3 => format!("{}***{}", &s[..i + 3], &s[j..]),
        _ => s.to_owned(),
    }
}

/// A time as the AWS CLI takes one: ISO 8601 with a zone (`2026-12-04T14:00:00Z`) or epoch
/// seconds (may be fractional); in epoch milliseconds. The error says what was expected.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if !(0.0..=253_402_300_799.0).contains(&secs) {
            return Err(format!("{}: epoch seconds outside 1970-9999", quote(s)));
        }
        return Ok((secs * 1000.0).round() as i64);
    }
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| {
            format!(
                "{}: not ISO 8601 with a zone (2026-12-04T14:00:00Z) nor epoch seconds: {e}",
                quote(s)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(
            redact_url("rtsp://admin:s3cret@10.0.0.2:554/stream1"),
            "rtsp://admin:***@10.0.0.2:554/stream1"
        );
        assert_eq!(redact_url("rtsp://10.0.0.2/s"), "rtsp://10.0.0.2/s");
        assert!(!redact_url("rtsp://a:p@ss@w/rd@host").contains("ss@w"));
        assert_eq!(redact_url("nonsense://u:pw@"), "nonsense://***@");
    }

    #[test]
    fn echoed_values_are_cut() {
        assert_eq!(quote("cam\n1"), r#""cam\n1""#);
        let long = "é".repeat(100_000);
        let q = quote(&long);
        assert_eq!(q, format!("{:?}...", "é".repeat(ECHO_MAX_CHARS)));
        assert_eq!(cut(&long).chars().count(), ECHO_MAX_CHARS + 3);
        assert_eq!(cut("short"), "short");
    }

    #[test]
    fn times_are_iso_8601_or_epoch_seconds() {
        assert_eq!(parse_time("1767225600"), Ok(1_767_225_600_000));
        assert_eq!(parse_time("1767225600.25"), Ok(1_767_225_600_250));
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Ok(1_767_225_600_000));
        assert_eq!(
            parse_time("2026-01-01T01:00:00+01:00"),
            Ok(1_767_225_600_000)
        );
        assert!(
            parse_time("2026-01-01 00:00")
                .unwrap_err()
                .contains("ISO 8601")
        );
        assert!(
            parse_time("1767225600000")
                .unwrap_err()
                .contains("outside 1970-9999")
        );
        assert!(
            parse_time("yesterday")
                .unwrap_err()
                .contains("\"yesterday\"")
        );
    }
}
