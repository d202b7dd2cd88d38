//! `GET /metrics`: the seed's job metrics and what an operator watches, in the Prometheus
//! (OpenMetrics) text format, encoded by the Prometheus project's `prometheus-client`.
//!
//! Everything is sampled at scrape time ([`Sample::take`]): the job board and the catalog as
//! CloudWatch sees them, the counters of [`crate::stats`], the backlog and usage from the
//! catalog, the file system's free space. [`encode`] turns a sample into text without I/O, so
//! names and values are unit-tested directly. Names follow Prometheus conventions: a
//! `kvs_edge_` prefix, base units (`_bytes`, `_seconds`, `_ratio`), counters ending in
//! `_total`; the seed's CloudWatch names are said in each help text.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::{ApiError, AppState};
use crate::catalog::{Backlog, Catalog};
use crate::health::{HealthSnapshot, JobKind};
use crate::stats::StreamCounts;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One stream as the metrics see it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamSample {
    pub counts: StreamCounts,
    pub backlog: Backlog,
    /// Bytes of media the catalog indexes for it.
    pub local_media_bytes: u64,
}

/// Everything `/metrics` shows, taken at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub now_ms: i64,
    /// The agent's thing (the seed's `ThingName`).
    pub thing: String,
    pub health: HealthSnapshot,
    pub streams: BTreeMap<String, StreamSample>,
    /// Free and total bytes of the recording directory's file system.
    pub disk: Option<(u64, u64)>,
    pub mqtt_connected: Option<bool>,
    pub cloudwatch_connected: Option<bool>,
}

impl Sample {
    /// Reads the board, the counters and the catalog (blocking: run on the blocking pool).
    pub(crate) fn take(
        state: &AppState,
        catalog: &Catalog,
    ) -> Result<Sample, crate::catalog::CatalogError> {
        let sup = &state.supervisor;
        let stats = sup.stats();
        let health = sup.health();
        let mut counts = stats.snapshot();
        let mut names: std::collections::BTreeSet<String> = catalog
            .configs()?
            .iter()
            .map(|c| c.stream_name().to_owned())
            .collect();
        names.extend(counts.keys().cloned());
        names.extend(health.jobs.iter().map(|j| j.stream.clone()));
        let mut streams = BTreeMap::new();
        for name in names {
            streams.insert(
                name.clone(),
                StreamSample {
                    counts: counts.remove(&name).unwrap_or_default(),
                    backlog: catalog.backlog(&name)?,
                    local_media_bytes: catalog.stream_usage(&name)?,
                },
            );
        }
        Ok(Sample {
            now_ms: state.clock.now().as_millisecond(),
            thing: state.thing.clone(),
            health,
            streams,
            disk: crate::janitor::disk_space(&sup.config().recording_dir).ok(),
            mqtt_connected: stats.mqtt.get(),
            cloudwatch_connected: stats.cloudwatch.get(),
        })
    }
}

pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let s = state.clone();
    let sample = super::db(&state, move |c| Sample::take(&s, c)).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], encode(sample)).into_response())
}

/// The sample in the OpenMetrics text format.
pub fn encode(sample: Sample) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SampleCollector(sample)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String does not fail");
    out
}

#[derive(Debug)]
struct SampleCollector(Sample);

type Labels<'a> = Vec<(&'static str, Cow<'a, str>)>;

/// A label value as the text format wants it. Stream and thing names cannot hold these
/// characters, but `prometheus-client` 0.24 writes label values as given, so they are escaped
/// here rather than trusted.
fn escaped(v: &str) -> Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        Cow::Owned(
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n"),
        )
    } else {
        Cow::Borrowed(v)
    }
}

fn labels<'a>(pairs: &[(&'static str, &'a str)]) -> Labels<'a> {
    pairs.iter().map(|(k, v)| (*k, escaped(v))).collect()
}

/// One metric family: its series, each with its labels.
struct Family<'a, T> {
    name: &'static str,
    help: &'static str,
    series: Vec<(Labels<'a>, T)>,
}

fn family<'a, T>(name: &'static str, help: &'static str) -> Family<'a, T> {
    Family {
        name,
        help,
        series: Vec::new(),
    }
}

impl<'a, T> Family<'a, T> {
    fn add(&mut self, pairs: &[(&'static str, &'a str)], value: T) -> &mut Self {
        self.series.push((labels(pairs), value));
        self
    }
}

fn gauges(e: &mut DescriptorEncoder<'_>, f: Family<'_, f64>) -> Result<(), std::fmt::Error> {
    if f.series.is_empty() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(f.name, f.help, None, MetricType::Gauge)?;
    if let [(l, v)] = f.series.as_slice()
        && l.is_empty()
    {
        return ConstGauge::new(*v).encode(m);
    }
    for (labels, v) in &f.series {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn counters(e: &mut DescriptorEncoder<'_>, f: Family<'_, u64>) -> Result<(), std::fmt::Error> {
    if f.series.is_empty() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(f.name, f.help, None, MetricType::Counter)?;
    for (labels, v) in &f.series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

impl Collector for SampleCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let mut alive = family(
            "kvs_edge_alive",
            "1 while the agent runs (the seed's Alive)",
        );
        alive.add(&[("thing", &s.thing)], 1.0);
        gauges(&mut e, alive)?;

        let mut running = family(
            "kvs_edge_job_running",
            "1 while the job records or uploads and is not errored (the seed's Running)",
        );
        let mut healthy = family(
            "kvs_edge_job_healthy",
            "1 unless the job's last status is an error",
        );
        for j in &s.health.jobs {
            let l = [("stream", j.stream.as_str()), ("job", j.kind.job_name())];
            running.add(&l, flag(j.running()));
            healthy.add(&l, flag(j.healthy()));
        }
        gauges(&mut e, running)?;
        gauges(&mut e, healthy)?;

        let mut jobs = family(
            "kvs_edge_jobs",
            "Jobs of the thing by state (the seed's RecordJobs.* and UploadJobs.* counts)",
        );
        for t in s.health.things(&s.thing) {
            for kind in JobKind::ALL {
                let c = s.health.counts(t, kind);
                let counts = [
                    ("healthy", c.healthy),
                    ("unhealthy", c.unhealthy),
                    ("running", c.running),
                    ("configured", c.configured),
                ];
                for (state, n) in counts {
                    jobs.add(
                        &[("thing", t), ("job", kind.jobs_name()), ("state", state)],
                        n as f64,
                    );
                }
            }
        }
        gauges(&mut e, jobs)?;

        let mut space = family(
            "kvs_edge_space_used_ratio",
            "Local media against MaxLocalMediaSizeInMB, 0-1 (the seed's PercentageSpaceUsed)",
        );
        for (stream, r) in &s.health.space_used {
            space.add(&[("stream", stream)], r.clamp(0.0, 1.0));
        }
        gauges(&mut e, space)?;

        let mut fatal = family(
            "kvs_edge_job_fatal_errors",
            "Job runs ended on an error only the user can fix (the seed's FatalError)",
        );
        let mut completed = family(
            "kvs_edge_job_completed",
            "Job runs that ended by themselves (the seed's Completed)",
        );
        for (stream, st) in &s.streams {
            for ((kind, what), n) in &st.counts.occurrences {
                let l = [("stream", stream.as_str()), ("job", kind.job_name())];
                match *what {
                    "FatalError" => fatal.add(&l, *n),
                    _ => completed.add(&l, *n),
                };
            }
        }
        counters(&mut e, fatal)?;
        counters(&mut e, completed)?;

        self.streams(&mut e)?;

        if let Some((free, total)) = s.disk {
            let mut f = family(
                "kvs_edge_disk_free_bytes",
                "Free bytes of the recording directory's file system",
            );
            f.add(&[], free as f64);
            gauges(&mut e, f)?;
            let mut t = family(
                "kvs_edge_disk_size_bytes",
                "Size of the recording directory's file system",
            );
            t.add(&[], total as f64);
            gauges(&mut e, t)?;
        }
        for (name, help, v) in [
            (
                "kvs_edge_mqtt_connected",
                "1 while the control plane is connected to its MQTT broker",
                s.mqtt_connected,
            ),
            (
                "kvs_edge_cloudwatch_connected",
                "1 when the last CloudWatch metrics sending went through",
                s.cloudwatch_connected,
            ),
        ] {
            if let Some(up) = v {
                let mut f = family(name, help);
                f.add(&[], flag(up));
                gauges(&mut e, f)?;
            }
        }
        Ok(())
    }
}

impl SampleCollector {
    fn streams(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        type Count = fn(&StreamCounts) -> u64;
        let counted: [(&'static str, &'static str, Count); 7] = [
            (
                "kvs_edge_recorded_frames",
                "Frames written to local media",
                |c| c.frames_recorded,
            ),
            (
                "kvs_edge_recorded_fragments",
                "Fragments written to local media",
                |c| c.fragments_recorded,
            ),
            ("kvs_edge_recorded_bytes", "Bytes of media written", |c| {
                c.bytes_recorded
            }),
            (
                "kvs_edge_camera_reconnects",
                "Camera sessions after the first that delivered a frame",
                StreamCounts::camera_reconnects,
            ),
            (
                "kvs_edge_uploaded_fragments",
                "Fragments Kinesis Video Streams persisted",
                |c| c.fragments_uploaded,
            ),
            (
                "kvs_edge_uploaded_bytes",
                "Bytes of the fragments persisted",
                |c| c.bytes_uploaded,
            ),
            (
                "kvs_edge_upload_retries",
                "Upload sessions cut short and retried (connection, endpoint, service errors)",
                |c| c.upload_retries,
            ),
        ];
        for (name, help, get) in counted {
            let mut f = family(name, help);
            for (stream, st) in &s.streams {
                f.add(&[("stream", stream)], get(&st.counts));
            }
            counters(e, f)?;
        }
        let mut failures = family(
            "kvs_edge_upload_failures",
            "Fragments the service rejected, by its error id",
        );
        for (stream, st) in &s.streams {
            for (id, n) in &st.counts.upload_failures {
                failures.add(&[("stream", stream), ("error", id)], *n);
            }
        }
        counters(e, failures)?;

        type Gauge = fn(&StreamSample, i64) -> Option<f64>;
        let gauged: [(&'static str, &'static str, Gauge); 5] = [
            (
                "kvs_edge_pending_fragments",
                "Fragments still to upload",
                |st, _| Some(f64::from(st.backlog.fragments)),
            ),
            (
                "kvs_edge_pending_bytes",
                "Bytes still to upload",
                |st, _| Some(st.backlog.bytes as f64),
            ),
            (
                "kvs_edge_oldest_pending_age_seconds",
                "How long ago the oldest fragment still to upload was recorded",
                |st, now| st.backlog.oldest_ms.map(|t| age(now, t)),
            ),
            (
                "kvs_edge_last_frame_age_seconds",
                "How long ago the newest frame was recorded",
                |st, now| st.counts.last_frame_ms.map(|t| age(now, t)),
            ),
            (
                "kvs_edge_local_media_bytes",
                "Bytes of local media the catalog indexes",
                |st, _| Some(st.local_media_bytes as f64),
            ),
        ];
        for (name, help, get) in gauged {
            let mut f = family(name, help);
            for (stream, st) in &s.streams {
                if let Some(v) = get(st, s.now_ms) {
                    f.add(&[("stream", stream)], v);
                }
            }
            gauges(e, f)?;
        }
        Ok(())
    }
}

fn age(now_ms: i64, t_ms: i64) -> f64 {
    (now_ms - t_ms).max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge_config::JobStatus;
    use crate::health::{JobHealth, Phase};

    fn sample() -> Sample {
        let mut counts = StreamCounts {
            frames_recorded: 750,
            fragments_recorded: 15,
            bytes_recorded: 1_500_000,
            last_frame_ms: Some(99_500),
            camera_sessions: 3,
            fragments_uploaded: 10,
            bytes_uploaded: 1_000_000,
            ..StreamCounts::default()
        };
        counts.upload_failures.insert("4006".into(), 2);
        counts
            .occurrences
            .insert((JobKind::Upload, "FatalError"), 1);
        let mut streams = BTreeMap::new();
        streams.insert(
            "cam-1".to_owned(),
            StreamSample {
                counts,
                backlog: Backlog {
                    fragments: 5,
                    bytes: 500_000,
                    oldest_ms: Some(40_000),
                },
                local_media_bytes: 1_500_000,
            },
        );
        Sample {
            now_ms: 100_000,
            thing: "site-a".into(),
            health: HealthSnapshot {
                jobs: vec![JobHealth {
                    stream: "cam-1".into(),
                    thing: "site-a".into(),
                    kind: JobKind::Record,
                    phase: Phase::Running,
                    status: Some(JobStatus::Success),
                }],
                space_used: vec![("cam-1".into(), 0.25)],
            },
            streams,
            disk: Some((1 << 30, 4 << 30)),
            mqtt_connected: Some(true),
            cloudwatch_connected: None,
        }
    }

    #[test]
    fn names_values_and_labels() {
        let text = encode(sample());
        for line in [
            "kvs_edge_alive{thing=\"site-a\"} 1.0",
            "kvs_edge_job_running{stream=\"cam-1\",job=\"RecordJob\"} 1.0",
            "kvs_edge_jobs{thing=\"site-a\",job=\"RecordJobs\",state=\"healthy\"} 1.0",
            "kvs_edge_jobs{thing=\"site-a\",job=\"UploadJobs\",state=\"configured\"} 0.0",
            "kvs_edge_space_used_ratio{stream=\"cam-1\"} 0.25",
            "kvs_edge_job_fatal_errors_total{stream=\"cam-1\",job=\"UploadJob\"} 1",
            "kvs_edge_recorded_frames_total{stream=\"cam-1\"} 750",
            "kvs_edge_recorded_bytes_total{stream=\"cam-1\"} 1500000",
            "kvs_edge_camera_reconnects_total{stream=\"cam-1\"} 2",
            "kvs_edge_uploaded_fragments_total{stream=\"cam-1\"} 10",
            "kvs_edge_upload_failures_total{stream=\"cam-1\",error=\"4006\"} 2",
            "kvs_edge_pending_fragments{stream=\"cam-1\"} 5.0",
            "kvs_edge_oldest_pending_age_seconds{stream=\"cam-1\"} 60.0",
            "kvs_edge_last_frame_age_seconds{stream=\"cam-1\"} 0.5",
            "kvs_edge_disk_free_bytes 1073741824.0",
            "kvs_edge_mqtt_connected 1.0",
            "# TYPE kvs_edge_recorded_frames counter",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        assert!(
            !text.contains("cloudwatch_connected"),
            "a link not in use is left out"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = sample();
        let st = s.streams.remove("cam-1").unwrap();
        s.streams.insert("a\"b\\c".into(), st);
        let text = encode(s);
        assert!(
            text.contains("kvs_edge_recorded_frames_total{stream=\"a\\\"b\\\\c\"} 750"),
            "{text}"
        );
    }
}
