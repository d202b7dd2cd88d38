//! The agent's own AWS pieces the SDK does not provide: the Secrets Manager [`SecretSource`]
//! for media URIs, the AWS IoT credentials provider, the Greengrass nucleus configuration and
//! the CloudWatch metrics publisher.
//!
//! [`SecretSource`]: crate::secrets::SecretSource

pub mod env_credentials;
pub mod greengrass;
pub mod greengrass_ipc;
pub mod iot_credentials;
pub mod metrics;
pub mod secrets;

/// An error and its sources on one line (reqwest's own message omits the TLS cause).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
