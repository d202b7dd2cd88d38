//! Which of a stream's jobs a new configuration restarts (as Vector's `ConfigDiff` decides
//! which components a reload rebuilds).

use crate::edge_config::EdgeConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct JobDiff {
    /// Keep the running recorder: its configuration did not change, so an uploader or deletion
    /// change loses no frame.
    pub keep_recorder: bool,
}

impl JobDiff {
    /// `live`: a live publish, not a retained delivery. A live resend of the very configuration
    /// running restarts every job (the seed's FAQ: "Resend the StartEdgeConfigurationUpdate to
    /// restart the job"). `recorder_running`: the old recorder has not ended by itself (a
    /// recorder stopped on a configuration error starts again).
    pub fn new(old: &EdgeConfig, new: &EdgeConfig, live: bool, recorder_running: bool) -> JobDiff {
        let resend = live && old == new;
        JobDiff {
            keep_recorder: !resend
                && old.recorder_config == new.recorder_config
                && recorder_running,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge_config::parse_start_request;

    fn config(uri_arn: &str, retention: u32) -> EdgeConfig {
        parse_start_request(&format!(
            r#"{{"StreamName":"s","EdgeConfig":{{"HubDeviceArn":"arn:aws:iot:us-east-1:123456789012:thing/hub","RecorderConfig":{{"MediaSourceConfig":{{"MediaUriSecretArn":"arn:aws:secretsmanager:us-east-1:123456789012:secret:{uri_arn}","MediaUriType":"FILE_URI"}}}},"DeletionConfig":{{"EdgeRetentionInHours":{retention}}}}}}}"#
        ))
        .unwrap()
        .edge_config
    }

    #[test]
    fn only_a_recorder_change_or_a_resend_restarts_the_recorder() {
        let old = config("a", 24);
        assert!(JobDiff::new(&old, &config("a", 12), true, true).keep_recorder);
        assert!(JobDiff::new(&old, &config("a", 12), false, true).keep_recorder);
        assert!(!JobDiff::new(&old, &config("b", 24), false, true).keep_recorder);
        assert!(
            !JobDiff::new(&old, &old.clone(), true, true).keep_recorder,
            "a resend"
        );
        assert!(JobDiff::new(&old, &old.clone(), false, true).keep_recorder);
        assert!(!JobDiff::new(&old, &config("a", 12), true, false).keep_recorder);
    }
}
