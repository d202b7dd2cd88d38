//! The SyncStatus state machine of one stream, as pure functions: what a received request, a
//! stored status at startup, or a refusal becomes. The supervisor does what they say.

use jiff::Timestamp;

use crate::catalog::StoredConfig;
use crate::edge_config::{
    ApiTimestamp, DescribeEdgeConfigurationResponse, StartEdgeConfigurationUpdateRequest,
    SyncStatus,
};

/// What to do with a StartEdgeConfigurationUpdate received for a thing.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A retained delivery of what is stored and in force: nothing to do.
    Unchanged,
    /// Refused with these FailedStatusDetails.
    Refuse(String),
    /// To apply (after its secret is checked).
    Apply,
}

/// The checks that need no I/O: a retained copy of the stored configuration is not applied
/// again; a stream is one thing's (stream names are unique per account and region, so one
/// stream recorded by two things is a conflict, refused on the newcomer's topic); a new stream
/// must fit under `max_streams`.
pub(super) fn on_request(
    thing: &str,
    request: &StartEdgeConfigurationUpdateRequest,
    stored: Option<&StoredConfig>,
    live: bool,
    streams: usize,
    max_streams: usize,
) -> Verdict {
    if !live
        && let Some(s) = stored
        && s.request == *request
        && s.sync_status != SyncStatus::SyncFailed
    {
        return Verdict::Unchanged;
    }
    let stream = request.stream_name();
    if let Some(owner) = stored
        .map(|s| s.request.edge_config.thing())
        .filter(|owner| owner != thing)
    {
        return Verdict::Refuse(format!(
            "StreamName: the stream {stream:?} is configured on the thing {owner:?}; \
             delete it there with DeleteEdgeConfiguration first"
        ));
    }
    if stored.is_none()
        && let Some(details) = over_limit(streams, max_streams)
    {
        return Verdict::Refuse(details);
    }
    Verdict::Apply
}

/// FailedStatusDetails when one more stream would pass `max_streams`.
pub(super) fn over_limit(streams: usize, max_streams: usize) -> Option<String> {
    (streams >= max_streams).then(|| {
        format!(
            "the agent already runs {streams} streams, its limit (max_streams {max_streams}); \
             delete one with DeleteEdgeConfiguration first"
        )
    })
}

/// What a stored configuration's status asks for at startup.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Resume {
    /// A deletion was under way: finish it.
    FinishDeletion,
    /// A deletion failed: the jobs stay stopped until it is asked again.
    StayStopped,
    /// Start the jobs; `settle`: the configuration was being applied, so it becomes IN_SYNC.
    Start { settle: bool },
}

pub(super) fn on_resume(status: SyncStatus) -> Resume {
    match status {
        SyncStatus::Deleting | SyncStatus::DeletingAcknowledged => Resume::FinishDeletion,
        SyncStatus::DeleteFailed => Resume::StayStopped,
        SyncStatus::Syncing | SyncStatus::Acknowledged => Resume::Start { settle: true },
        _ => Resume::Start { settle: false },
    }
}

/// The SYNCING echo of a received request (not stored): the stored creation time when there is
/// one.
pub(super) fn syncing(
    stream: &str,
    request: Option<&StartEdgeConfigurationUpdateRequest>,
    created: Option<Timestamp>,
    now: Timestamp,
) -> DescribeEdgeConfigurationResponse {
    DescribeEdgeConfigurationResponse {
        creation_time: Some(ApiTimestamp(created.unwrap_or(now))),
        edge_agent_status: None,
        edge_config: request.map(|r| r.edge_config.clone()),
        failed_status_details: None,
        last_updated_time: Some(ApiTimestamp(now)),
        stream_arn: request.and_then(|r| r.stream_arn.clone()),
        stream_name: Some(stream.to_owned()),
        sync_status: Some(SyncStatus::Syncing),
    }
}

/// SYNC_FAILED for a stream with no stored configuration (nothing to store it in).
pub(super) fn refused(
    stream: &str,
    details: &str,
    now: Timestamp,
) -> DescribeEdgeConfigurationResponse {
    let now = ApiTimestamp(now);
    DescribeEdgeConfigurationResponse {
        creation_time: Some(now),
        edge_agent_status: None,
        edge_config: None,
        failed_status_details: Some(details.to_owned()),
        last_updated_time: Some(now),
        stream_arn: None,
        stream_name: Some(stream.to_owned()),
        sync_status: Some(SyncStatus::SyncFailed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge_config::parse_start_request;

    fn request(thing: &str, retention: u32) -> StartEdgeConfigurationUpdateRequest {
        parse_start_request(&format!(
            r#"{{"StreamName":"s","EdgeConfig":{{"HubDeviceArn":"arn:aws:iot:us-east-1:123456789012:thing/{thing}","RecorderConfig":{{"MediaSourceConfig":{{"MediaUriSecretArn":"arn:aws:secretsmanager:us-east-1:123456789012:secret:s","MediaUriType":"FILE_URI"}}}},"DeletionConfig":{{"EdgeRetentionInHours":{retention}}}}}}}"#
        ))
        .unwrap()
    }

    fn stored(request: StartEdgeConfigurationUpdateRequest, status: SyncStatus) -> StoredConfig {
        let t: Timestamp = "2026-12-02T00:00:00Z".parse().unwrap();
        StoredConfig {
            request,
            sync_status: status,
            failed_status_details: None,
            creation_time: t,
            last_updated_time: t,
        }
    }

    #[test]
    fn a_retained_copy_of_what_runs_is_not_applied_again() {
        let s = stored(request("hub", 24), SyncStatus::InSync);
        let r = request("hub", 24);
        assert_eq!(
            on_request("hub", &r, Some(&s), false, 1, 1),
            Verdict::Unchanged
        );
        assert_eq!(on_request("hub", &r, Some(&s), true, 1, 1), Verdict::Apply);
        let failed = stored(request("hub", 24), SyncStatus::SyncFailed);
        assert_eq!(
            on_request("hub", &r, Some(&failed), false, 1, 1),
            Verdict::Apply
        );
        let changed = request("hub", 12);
        assert_eq!(
            on_request("hub", &changed, Some(&s), false, 1, 1),
            Verdict::Apply
        );
    }

    #[test]
    fn another_things_stream_and_the_limit_are_refused() {
        let s = stored(request("other", 24), SyncStatus::InSync);
        let Verdict::Refuse(d) = on_request("hub", &request("hub", 24), Some(&s), true, 1, 16)
        else {
            panic!("accepted");
        };
        assert!(
            d.starts_with("StreamName:") && d.contains("\"other\""),
            "{d}"
        );
        let Verdict::Refuse(d) = on_request("hub", &request("hub", 24), None, true, 2, 2) else {
            panic!("accepted");
        };
        assert!(d.contains("max_streams 2"), "{d}");
        // A stored stream is counted already.
        let own = stored(request("hub", 6), SyncStatus::InSync);
        assert_eq!(
            on_request("hub", &request("hub", 24), Some(&own), true, 2, 2),
            Verdict::Apply
        );
    }

    #[test]
    fn startup_finishes_deletions_and_settles_applies() {
        assert_eq!(on_resume(SyncStatus::Deleting), Resume::FinishDeletion);
        assert_eq!(
            on_resume(SyncStatus::DeletingAcknowledged),
            Resume::FinishDeletion
        );
        assert_eq!(on_resume(SyncStatus::DeleteFailed), Resume::StayStopped);
        assert_eq!(
            on_resume(SyncStatus::Acknowledged),
            Resume::Start { settle: true }
        );
        assert_eq!(
            on_resume(SyncStatus::InSync),
            Resume::Start { settle: false }
        );
        assert_eq!(
            on_resume(SyncStatus::SyncFailed),
            Resume::Start { settle: false }
        );
    }
}
