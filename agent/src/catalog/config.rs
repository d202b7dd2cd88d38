//! Edge configurations and job status rows.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, Row, params};

use super::{Catalog, CatalogError, Result};
use crate::edge_config::{
    ApiTimestamp, DescribeEdgeConfigurationResponse, EdgeAgentStatus, JobStatus,
    LastRecorderStatus, LastUploaderStatus, StartEdgeConfigurationUpdateRequest, SyncStatus,
    UnknownWireName,
};

/// A stream's configuration as the catalog holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredConfig {
    pub request: StartEdgeConfigurationUpdateRequest,
    pub sync_status: SyncStatus,
    pub failed_status_details: Option<String>,
    pub creation_time: Timestamp,
    pub last_updated_time: Timestamp,
}

impl StoredConfig {
    pub fn stream_name(&self) -> &str {
        self.request.stream_name()
    }

    /// The API's view of this configuration: DescribeEdgeConfiguration's response without
    /// EdgeAgentStatus, which is also a ListEdgeAgentConfigurations entry.
    pub fn describe(&self) -> DescribeEdgeConfigurationResponse {
        DescribeEdgeConfigurationResponse {
            creation_time: Some(ApiTimestamp(self.creation_time)),
            edge_agent_status: None,
            edge_config: Some(self.request.edge_config.clone()),
            failed_status_details: self.failed_status_details.clone(),
            last_updated_time: Some(ApiTimestamp(self.last_updated_time)),
            stream_arn: self.request.stream_arn.clone(),
            stream_name: Some(self.stream_name().to_owned()),
            sync_status: Some(self.sync_status),
        }
    }
}

text_enum!(
    /// Which of a stream's jobs a status is about.
    Job { Recorder = "RECORDER", Uploader = "UPLOADER" }
);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobStatusRow {
    pub status: JobStatus,
    pub details: Option<String>,
    pub last_collected_time: Option<Timestamp>,
    pub last_updated_time: Timestamp,
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn parse_enum<E: std::str::FromStr<Err = UnknownWireName>>(stream: &str, s: &str) -> Result<E> {
    s.parse()
        .map_err(|e: UnknownWireName| CatalogError::Corrupt {
            stream: stream.to_owned(),
            message: e.to_string(),
        })
}

const CONFIG_COLUMNS: &str = "stream_name, request_json, sync_status, failed_status_details, \
                              creation_time_ms, last_updated_time_ms";

fn config_from_row(
    row: &Row<'_>,
) -> rusqlite::Result<(String, String, String, Option<String>, i64, i64)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn stored_config(
    (stream, json, status, details, created, updated): (
        String,
        String,
        String,
        Option<String>,
        i64,
        i64,
    ),
) -> Result<StoredConfig> {
    let request = crate::input::json::from_str(&json).map_err(|e| CatalogError::Corrupt {
        stream: stream.clone(),
        message: e.to_string(),
    })?;
    Ok(StoredConfig {
        request,
        sync_status: parse_enum(&stream, &status)?,
        failed_status_details: details,
        creation_time: ts(created),
        last_updated_time: ts(updated),
    })
}

impl Catalog {
    /// Stores a stream's configuration, replacing any earlier one of the same stream; the
    /// creation time of an existing configuration is kept, as the API keeps it.
    pub fn put_config(
        &self,
        request: &StartEdgeConfigurationUpdateRequest,
        sync_status: SyncStatus,
        now: Timestamp,
    ) -> Result<StoredConfig> {
        let json = serde_json::to_string(request).expect("configuration serialises");
        let now_ms = now.as_millisecond();
        let conn = self.conn();
        conn.execute(
            "insert into edge_config (stream_name, stream_arn, hub_device_arn, request_json, \
             sync_status, failed_status_details, creation_time_ms, last_updated_time_ms) \
             values (?1, ?2, ?3, ?4, ?5, null, ?6, ?6) \
             on conflict (stream_name) do update set stream_arn = excluded.stream_arn, \
             hub_device_arn = excluded.hub_device_arn, request_json = excluded.request_json, \
             sync_status = excluded.sync_status, failed_status_details = null, \
             last_updated_time_ms = excluded.last_updated_time_ms",
            params![
                request.stream_name(),
                request.stream_arn,
                request.edge_config.hub_device_arn,
                json,
                sync_status.as_str(),
                now_ms
            ],
        )?;
        drop(conn);
        self.config(request.stream_name())?
            .ok_or_else(|| CatalogError::NotFound {
                what: "edge configuration for stream",
                key: request.stream_name().to_owned(),
            })
    }

    pub fn config(&self, stream: &str) -> Result<Option<StoredConfig>> {
        let raw = self
            .conn()
            .query_row(
                &format!("select {CONFIG_COLUMNS} from edge_config where stream_name = ?1"),
                [stream],
                config_from_row,
            )
            .optional()?;
        raw.map(stored_config).transpose()
    }

    /// Every stored configuration, ordered by stream name.
    pub fn configs(&self) -> Result<Vec<StoredConfig>> {
        self.each_config()?.into_iter().collect()
    }

    /// Every stored configuration, each read on its own: one that cannot be read
    /// ([`CatalogError::Corrupt`], naming its stream) does not hide the others.
    pub fn each_config(&self) -> Result<Vec<Result<StoredConfig>>> {
        let rows = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(&format!(
                "select {CONFIG_COLUMNS} from edge_config order by stream_name"
            ))?;
            stmt.query_map([], config_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        Ok(rows.into_iter().map(stored_config).collect())
    }

    /// A page of the configurations of one hub device, ordered by stream name, starting after
    /// `after` (the pagination key ListEdgeAgentConfigurations' NextToken carries).
    pub fn configs_of_hub(
        &self,
        hub_device_arn: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredConfig>> {
        let rows = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(&format!(
                "select {CONFIG_COLUMNS} from edge_config where hub_device_arn = ?1 \
                 and stream_name > ?2 order by stream_name limit ?3"
            ))?;
            stmt.query_map(
                params![hub_device_arn, after.unwrap_or(""), limit as i64],
                config_from_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        rows.into_iter().map(stored_config).collect()
    }

    pub fn config_count(&self) -> Result<usize> {
        let n: i64 = self
            .conn()
            .query_row("select count(*) from edge_config", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// Moves a configuration's SyncStatus; `details` becomes its FailedStatusDetails.
    pub fn set_sync_status(
        &self,
        stream: &str,
        status: SyncStatus,
        details: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        let n = self.conn().execute(
            "update edge_config set sync_status = ?2, failed_status_details = ?3, \
             last_updated_time_ms = ?4 where stream_name = ?1",
            params![stream, status.as_str(), details, now.as_millisecond()],
        )?;
        if n == 0 {
            return Err(CatalogError::NotFound {
                what: "edge configuration for stream",
                key: stream.to_owned(),
            });
        }
        Ok(())
    }

    /// Removes a stream's configuration, its job status and its upload requests. Its media
    /// rows are the janitor's to remove (file first, then rows), so they are left alone here.
    pub fn delete_config(&self, stream: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "delete from upload_request where stream_name = ?1",
            [stream],
        )?;
        let n = tx.execute("delete from edge_config where stream_name = ?1", [stream])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Records the outcome of a stream's recorder or uploader job. `collected` (media stored or
    /// uploaded) updates LastCollectedTime; `None` keeps the previous one.
    pub fn set_job_status(
        &self,
        stream: &str,
        job: Job,
        status: JobStatus,
        details: Option<&str>,
        collected: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<()> {
        self.conn().execute(
            "insert into job_status (stream_name, job, status, details, last_collected_time_ms, \
             last_updated_time_ms) values (?1, ?2, ?3, ?4, ?5, ?6) \
             on conflict (stream_name, job) do update set status = excluded.status, \
             details = excluded.details, last_collected_time_ms = \
             coalesce(excluded.last_collected_time_ms, last_collected_time_ms), \
             last_updated_time_ms = excluded.last_updated_time_ms",
            params![
                stream,
                job.as_str(),
                status.as_str(),
                details,
                collected.map(|t| t.as_millisecond()),
                now.as_millisecond()
            ],
        )?;
        Ok(())
    }

    pub fn job_status(&self, stream: &str, job: Job) -> Result<Option<JobStatusRow>> {
        let raw = self
            .conn()
            .query_row(
                "select status, details, last_collected_time_ms, last_updated_time_ms \
                 from job_status where stream_name = ?1 and job = ?2",
                params![stream, job.as_str()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()?;
        raw.map(|(status, details, collected, updated)| {
            Ok(JobStatusRow {
                status: parse_enum(stream, &status)?,
                details,
                last_collected_time: collected.map(ts),
                last_updated_time: ts(updated),
            })
        })
        .transpose()
    }

    /// DescribeEdgeConfiguration's response for a stream: the configuration, its sync status
    /// and the latest recorder and uploader status.
    pub fn describe(&self, stream: &str) -> Result<Option<DescribeEdgeConfigurationResponse>> {
        let Some(config) = self.config(stream)? else {
            return Ok(None);
        };
        let mut d = config.describe();
        let recorder = self.job_status(stream, Job::Recorder)?;
        let uploader = self.job_status(stream, Job::Uploader)?;
        if recorder.is_some() || uploader.is_some() {
            let at = |t: Timestamp| Some(ApiTimestamp(t));
            d.edge_agent_status = Some(EdgeAgentStatus {
                last_recorder_status: recorder.map(|r| LastRecorderStatus {
                    job_status_details: r.details,
                    last_collected_time: r.last_collected_time.and_then(at),
                    last_updated_time: at(r.last_updated_time),
                    recorder_status: Some(r.status),
                }),
                last_uploader_status: uploader.map(|u| LastUploaderStatus {
                    job_status_details: u.details,
                    last_collected_time: u.last_collected_time.and_then(at),
                    last_updated_time: at(u.last_updated_time),
                    uploader_status: Some(u.status),
                }),
            });
        }
        Ok(Some(d))
    }
}
