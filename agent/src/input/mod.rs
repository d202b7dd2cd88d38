//! Input the agent does not control: files an operator names, JSON from anyone, and the values
//! from either that messages echo back.

pub mod file;
pub mod json;

use std::borrow::Cow;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_values_are_cut() {
        assert_eq!(quote("cam\n1"), r#""cam\n1""#);
        let long = "é".repeat(100_000);
        let q = quote(&long);
        assert_eq!(q, format!("{:?}...", "é".repeat(ECHO_MAX_CHARS)));
        assert_eq!(cut(&long).chars().count(), ECHO_MAX_CHARS + 3);
        assert_eq!(cut("short"), "short");
    }
}
