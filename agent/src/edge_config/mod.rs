//! The edge-configuration data model of the Kinesis Video Streams API (the requests and responses
//! of StartEdgeConfigurationUpdate, DescribeEdgeConfiguration, DeleteEdgeConfiguration and
//! ListEdgeAgentConfigurations), serialised exactly as the API's JSON (PascalCase).
//!
//! Untrusted JSON (MQTT payloads, `ctl` and `check-config` input) enters only through the
//! `parse_*` functions of [`validate`], which check every constraint the API reference states and
//! report every problem with its JSON path. The `Deserialize` impls here are for JSON the agent
//! wrote itself (the catalog, `reported` payloads read back by `ctl`).
//!
//! Optional fields stay `Option` so a configuration serialises back exactly as it was sent;
//! [`EdgeConfig::normalized`] and the accessors apply the API's documented defaults.

mod plans;
mod timestamp;
pub mod validate;

use serde::{Deserialize, Serialize};

pub use timestamp::ApiTimestamp;
pub use validate::{
    ConfigError, FieldError, parse_delete_request, parse_describe_request, parse_list_request,
    parse_start_request, stream_name_from_arn, thing_name_from_arn,
};

/// Default of `DeletionConfig.EdgeRetentionInHours` (30 days).
pub const DEFAULT_EDGE_RETENTION_IN_HOURS: u32 = 720;
/// Default of `DeletionConfig.DeleteAfterUpload`.
pub const DEFAULT_DELETE_AFTER_UPLOAD: bool = true;
/// Default of `ListEdgeAgentConfigurations.MaxResults`.
pub const DEFAULT_LIST_MAX_RESULTS: u32 = 5;

/// The request of StartEdgeConfigurationUpdate: the `desired` payload of a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StartEdgeConfigurationUpdateRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_name: Option<String>,
    #[serde(rename = "StreamARN", skip_serializing_if = "Option::is_none")]
    pub stream_arn: Option<String>,
    pub edge_config: EdgeConfig,
}

impl StartEdgeConfigurationUpdateRequest {
    /// The stream this configuration is for: `StreamName`, or the name inside `StreamARN`.
    /// Validation guarantees one of them is present and well-formed.
    pub fn stream_name(&self) -> &str {
        stream_ref_name(self.stream_name.as_deref(), self.stream_arn.as_deref())
    }
}

/// The request of DescribeEdgeConfiguration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeEdgeConfigurationRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_name: Option<String>,
    #[serde(rename = "StreamARN", skip_serializing_if = "Option::is_none")]
    pub stream_arn: Option<String>,
}

/// The request of DeleteEdgeConfiguration: same shape as Describe's.
pub type DeleteEdgeConfigurationRequest = DescribeEdgeConfigurationRequest;

impl DescribeEdgeConfigurationRequest {
    pub fn stream_name(&self) -> &str {
        stream_ref_name(self.stream_name.as_deref(), self.stream_arn.as_deref())
    }
}

fn stream_ref_name<'a>(name: Option<&'a str>, arn: Option<&'a str>) -> &'a str {
    match (name, arn) {
        (Some(name), _) => name,
        (None, Some(arn)) => stream_name_from_arn(arn).unwrap_or(arn),
        (None, None) => "",
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EdgeConfig {
    pub hub_device_arn: String,
    pub recorder_config: RecorderConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploader_config: Option<UploaderConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_config: Option<DeletionConfig>,
}

impl EdgeConfig {
    /// The configuration with the API's defaults filled in: a `DeletionConfig` with
    /// `EdgeRetentionInHours` 720 and `DeleteAfterUpload` true where they were left out.
    /// `LocalSizeConfig` has no documented default and stays as sent.
    pub fn normalized(&self) -> EdgeConfig {
        let mut c = self.clone();
        let d = c
            .deletion_config
            .get_or_insert_with(DeletionConfig::default);
        d.edge_retention_in_hours
            .get_or_insert(DEFAULT_EDGE_RETENTION_IN_HOURS);
        d.delete_after_upload
            .get_or_insert(DEFAULT_DELETE_AFTER_UPLOAD);
        c
    }

    pub fn edge_retention_in_hours(&self) -> u32 {
        self.deletion_config
            .as_ref()
            .and_then(|d| d.edge_retention_in_hours)
            .unwrap_or(DEFAULT_EDGE_RETENTION_IN_HOURS)
    }

    pub fn delete_after_upload(&self) -> bool {
        self.deletion_config
            .as_ref()
            .and_then(|d| d.delete_after_upload)
            .unwrap_or(DEFAULT_DELETE_AFTER_UPLOAD)
    }

    pub fn local_size_config(&self) -> Option<&LocalSizeConfig> {
        self.deletion_config
            .as_ref()
            .and_then(|d| d.local_size_config.as_ref())
    }

    /// The recorder's schedule; `None` means always recording.
    pub fn recorder_schedule(&self) -> Option<&ScheduleConfig> {
        self.recorder_config.schedule_config.as_ref()
    }

    /// The uploader's schedule; `None` means an upload run every hour.
    pub fn uploader_schedule(&self) -> Option<&ScheduleConfig> {
        self.uploader_config.as_ref().map(|u| &u.schedule_config)
    }

    /// The thing named by `HubDeviceArn` (empty when it names none).
    pub fn thing(&self) -> String {
        thing_name_from_arn(&self.hub_device_arn)
            .unwrap_or_default()
            .to_owned()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecorderConfig {
    pub media_source_config: MediaSourceConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_config: Option<ScheduleConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MediaSourceConfig {
    pub media_uri_secret_arn: String,
    pub media_uri_type: MediaUriType,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleConfig {
    pub schedule_expression: String,
    pub duration_in_seconds: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UploaderConfig {
    pub schedule_config: ScheduleConfig,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeletionConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge_retention_in_hours: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_size_config: Option<LocalSizeConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_after_upload: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LocalSizeConfig {
    #[serde(
        rename = "MaxLocalMediaSizeInMB",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_local_media_size_in_mb: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy_on_full_size: Option<StrategyOnFullSize>,
}

/// PercentageSpaceUsed: `usage` out of `max` bytes (a stream's MaxLocalMediaSizeInMB), 0-1.
/// Here, below both, because the janitor decides with it and the health board reports it.
pub fn space_used(usage: u64, max: u64) -> f64 {
    (usage as f64 / max.max(1) as f64).clamp(0.0, 1.0)
}

/// A string that is none of an API enum's wire names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} is not one of {}", crate::input::quote(value), names.join(", "))]
pub struct UnknownWireName {
    pub value: String,
    pub names: &'static [&'static str],
}

/// Declares a string enum of the API with its exact wire names, `as_str` and `FromStr`
/// (the catalog stores the wire names).
macro_rules! api_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub const WIRE_NAMES: &'static [&'static str] = &[$($wire),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownWireName;
            fn from_str(s: &str) -> Result<Self, UnknownWireName> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(UnknownWireName {
                        value: s.to_owned(),
                        names: $name::WIRE_NAMES,
                    }),
                }
            }
        }
    };
}

api_enum!(
    /// Where the recorder reads media from.
    MediaUriType { RtspUri = "RTSP_URI", FileUri = "FILE_URI" }
);

api_enum!(
    /// What the janitor does when a stream reaches `MaxLocalMediaSizeInMB`.
    StrategyOnFullSize { DeleteOldestMedia = "DELETE_OLDEST_MEDIA", DenyNewMedia = "DENY_NEW_MEDIA" }
);

api_enum!(
    /// The state of a stream's edge configuration as it moves between cloud and agent.
    SyncStatus {
        Syncing = "SYNCING",
        Acknowledged = "ACKNOWLEDGED",
        InSync = "IN_SYNC",
        SyncFailed = "SYNC_FAILED",
        Deleting = "DELETING",
        DeleteFailed = "DELETE_FAILED",
        DeletingAcknowledged = "DELETING_ACKNOWLEDGED",
    }
);

api_enum!(
    /// The outcome of a stream's latest recorder or uploader job.
    JobStatus { Success = "SUCCESS", UserError = "USER_ERROR", SystemError = "SYSTEM_ERROR" }
);

/// The one answer to "whose fault is this?": every error a job can end or pause on says which
/// status it reports. USER_ERROR means only a changed configuration (or secret) can fix it, so
/// the job waits for one instead of retrying; SYSTEM_ERROR is retried.
pub trait JobError: std::error::Error {
    fn job_status(&self) -> JobStatus;

    fn is_user_error(&self) -> bool {
        self.job_status() == JobStatus::UserError
    }
}

/// `RecorderStatus` values, as the API names the type.
pub type RecorderStatus = JobStatus;
/// `UploaderStatus` values, as the API names the type.
pub type UploaderStatus = JobStatus;

/// The response of DescribeEdgeConfiguration: the `reported` payload of a stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeEdgeConfigurationResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<ApiTimestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge_agent_status: Option<EdgeAgentStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge_config: Option<EdgeConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_status_details: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated_time: Option<ApiTimestamp>,
    #[serde(rename = "StreamARN", skip_serializing_if = "Option::is_none")]
    pub stream_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_status: Option<SyncStatus>,
}

/// The response of StartEdgeConfigurationUpdate has the same shape minus EdgeAgentStatus.
pub type StartEdgeConfigurationUpdateResponse = DescribeEdgeConfigurationResponse;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EdgeAgentStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_recorder_status: Option<LastRecorderStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_uploader_status: Option<LastUploaderStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LastRecorderStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_status_details: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_collected_time: Option<ApiTimestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated_time: Option<ApiTimestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorder_status: Option<RecorderStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LastUploaderStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_status_details: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_collected_time: Option<ApiTimestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated_time: Option<ApiTimestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploader_status: Option<UploaderStatus>,
}

/// The request of ListEdgeAgentConfigurations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListEdgeAgentConfigurationsRequest {
    pub hub_device_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListEdgeAgentConfigurationsResponse {
    pub edge_configs: Vec<ListEdgeAgentConfigurationsEdgeConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// One entry of ListEdgeAgentConfigurations: the same members as DescribeEdgeConfiguration's
/// response except EdgeAgentStatus, which is always `None` here.
pub type ListEdgeAgentConfigurationsEdgeConfig = DescribeEdgeConfigurationResponse;

#[cfg(test)]
mod tests;
