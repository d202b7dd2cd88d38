//! What a failed secret lookup says: whose fault it is, the ARN, and never the value.

use kvs_edge_agent::edge_config::JobError;
use kvs_edge_agent::secrets::SecretError;

/// `e` is the user's fault (`user_error`) or not, names `arn` and not the test secrets' value
/// (`hunter2`); its text.
pub fn reason(e: SecretError, arn: &str, user_error: bool) -> String {
    assert_eq!(e.is_user_error(), user_error, "{e}");
    let text = e.to_string();
    assert!(text.contains(arn), "names the ARN: {text}");
    assert!(!text.contains("hunter2"), "never the value: {text}");
    text
}
