//! CloudWatch metrics in the `EdgeRuntimeAgent` namespace, as the seed's table lists them
//! (`AWS_KVS_EDGE_CLOUDWATCH_ENABLED=TRUE`).
//!
//! | metric | dimensions | when |
//! | --- | --- | --- |
//! | `Running` | `StreamName`, `JobType` (`RecordJob`/`UploadJob`) | every interval while the job runs |
//! | `FatalError`, `Completed` | `StreamName`, `JobType` | once, when it happens |
//! | `PercentageSpaceUsed` (Percent, 0-1) | `StreamName` | every interval, streams with a size limit |
//! | `Alive` | `ThingName` | every interval |
//! | `RecordJobs.HealthyJobCount`, `.UnhealthyJobCount`, `.RunningJobCount`, `.EdgeConfigCount`, and the same for `UploadJobs` (Count) | `ThingName` | every interval |
//!
//! The seed's table names the job as a second dimension of the per-stream metrics ("Stream
//! name, RecordJob"); we spell it `JobType` with the job's name as its value.
//!
//! Sampling ([`sample`], [`events`]) is pure. The publisher buffers datums (bounded: the oldest
//! go first, and anything older than CloudWatch accepts is dropped), sends them in batches of
//! at most [`BATCH`] per PutMetricData, and keeps them when the network is down, so an offline
//! box reports its history when it comes back. It runs on its own task: media work never waits
//! for it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudwatch::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::health::{HealthSnapshot, JobEvent, JobKind};
use crate::stop::Stop;
use crate::ticker::Ticker;

pub const NAMESPACE: &str = "EdgeRuntimeAgent";
/// PutMetricData takes at most 1000 datums per request.
pub const BATCH: usize = 1000;
/// CloudWatch refuses datums older than two weeks; keep a margin.
const MAX_AGE: SignedDuration = SignedDuration::from_hours(13 * 24);
/// How long one PutMetricData may take before the batch is tried again later.
const SEND_WITHIN: Duration = Duration::from_secs(20);
/// At shutdown, how long the last datums (a Completed, say) may take to leave.
const FINAL_FLUSH_WITHIN: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    None,
    Count,
    Percent,
}

/// One metric value, as it will be sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Datum {
    pub name: String,
    pub dimensions: Vec<(&'static str, String)>,
    pub value: f64,
    pub unit: Unit,
    pub at: Timestamp,
}

fn stream_job(stream: &str, kind: JobKind) -> Vec<(&'static str, String)> {
    vec![
        ("StreamName", stream.to_owned()),
        ("JobType", kind.job_name().to_owned()),
    ]
}

/// The metrics published every interval. `thing` is the agent's own thing, which always gets
/// `Alive` and its counts (zeros included, so a dashboard shows "no job" rather than "no data").
pub fn sample(snapshot: &HealthSnapshot, thing: &str, at: Timestamp) -> Vec<Datum> {
    let mut out = vec![Datum {
        name: "Alive".into(),
        dimensions: vec![("ThingName", thing.to_owned())],
        value: 1.0,
        unit: Unit::None,
        at,
    }];
    for j in snapshot.jobs.iter().filter(|j| j.running()) {
        out.push(Datum {
            name: "Running".into(),
            dimensions: stream_job(&j.stream, j.kind),
            value: 1.0,
            unit: Unit::None,
            at,
        });
    }
    for (stream, fraction) in &snapshot.space_used {
        out.push(Datum {
            name: "PercentageSpaceUsed".into(),
            dimensions: vec![("StreamName", stream.clone())],
            value: fraction.clamp(0.0, 1.0),
            unit: Unit::Percent,
            at,
        });
    }
    for t in snapshot.things(thing) {
        for kind in JobKind::ALL {
            let c = snapshot.counts(t, kind);
            let counts = [
                ("HealthyJobCount", c.healthy),
                ("UnhealthyJobCount", c.unhealthy),
                ("RunningJobCount", c.running),
                ("EdgeConfigCount", c.configured),
            ];
            for (name, n) in counts {
                out.push(Datum {
                    name: format!("{}.{name}", kind.jobs_name()),
                    dimensions: vec![("ThingName", t.to_owned())],
                    value: n as f64,
                    unit: Unit::Count,
                    at,
                });
            }
        }
    }
    out
}

/// The one-off metrics (`FatalError`, `Completed`), stamped when they happened.
pub fn events(events: &[JobEvent]) -> Vec<Datum> {
    events
        .iter()
        .map(|e| Datum {
            name: e.what.metric_name().into(),
            dimensions: stream_job(&e.stream, e.kind),
            value: 1.0,
            unit: Unit::None,
            at: e.at,
        })
        .collect()
}

/// Datums waiting to be sent; bounded, oldest dropped first.
#[derive(Debug)]
pub struct Buffer {
    queue: VecDeque<Datum>,
    capacity: usize,
    dropped: u64,
}

impl Buffer {
    pub fn new(capacity: usize) -> Buffer {
        Buffer {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    pub fn push(&mut self, datums: impl IntoIterator<Item = Datum>) {
        for d in datums {
            if self.queue.len() == self.capacity {
                self.queue.pop_front();
                self.dropped += 1;
            }
            self.queue.push_back(d);
        }
    }

    /// Drops what CloudWatch would refuse as too old.
    pub fn expire(&mut self, now: Timestamp) {
        let before = self.queue.len();
        self.queue.retain(|d| now.duration_since(d.at) < MAX_AGE);
        self.dropped += (before - self.queue.len()) as u64;
    }

    /// The oldest datums, at most [`BATCH`]; they stay until [`Buffer::sent`].
    pub fn batch(&self) -> Vec<Datum> {
        self.queue.iter().take(BATCH).cloned().collect()
    }

    /// The first `n` datums left (sent, or refused for good).
    pub fn sent(&mut self, n: usize) {
        self.queue.drain(..n.min(self.queue.len()));
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Datums lost to the bound or to age since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Worth trying again later (network, throttling, expired credentials).
    #[error("PutMetricData failed: {0}")]
    Transient(String),
    /// CloudWatch refused the batch itself; sending it again cannot help.
    #[error("PutMetricData refused the batch: {0}")]
    Refused(String),
}

/// Where batches go: CloudWatch, or a recorder in tests.
pub trait MetricsSink: Send + Sync {
    fn put<'a>(&'a self, batch: &'a [Datum]) -> BoxFuture<'a, Result<(), MetricsError>>;
}

/// PutMetricData through the AWS SDK (`AWS_ENDPOINT_URL_CLOUDWATCH` applies).
pub struct CloudWatchSink {
    client: aws_sdk_cloudwatch::Client,
}

impl CloudWatchSink {
    pub fn new(sdk: &aws_config::SdkConfig) -> CloudWatchSink {
        CloudWatchSink {
            client: aws_sdk_cloudwatch::Client::new(sdk),
        }
    }
}

fn to_sdk(d: &Datum) -> MetricDatum {
    let dims = d
        .dimensions
        .iter()
        .map(|(n, v)| Dimension::builder().name(*n).value(v).build())
        .collect::<Vec<_>>();
    MetricDatum::builder()
        .metric_name(&d.name)
        .set_dimensions(Some(dims))
        .value(d.value)
        .unit(match d.unit {
            Unit::None => StandardUnit::None,
            Unit::Count => StandardUnit::Count,
            Unit::Percent => StandardUnit::Percent,
        })
        .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_millis(
            d.at.as_millisecond(),
        ))
        .build()
}

impl MetricsSink for CloudWatchSink {
    fn put<'a>(&'a self, batch: &'a [Datum]) -> BoxFuture<'a, Result<(), MetricsError>> {
        Box::pin(async move {
            let datums = batch.iter().map(to_sdk).collect::<Vec<_>>();
            match self
                .client
                .put_metric_data()
                .namespace(NAMESPACE)
                .set_metric_data(Some(datums))
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => {
                    let code = e.code().unwrap_or_default();
                    let text = DisplayErrorContext(&e).to_string();
                    if matches!(
                        code,
                        "InvalidParameterValue"
                            | "InvalidParameterCombination"
                            | "MissingParameter"
                            | "InvalidParameterValueException"
                            | "MissingRequiredParameterException"
                            | "InvalidParameterCombinationException"
                    ) {
                        Err(MetricsError::Refused(text))
                    } else {
                        Err(MetricsError::Transient(text))
                    }
                }
            }
        })
    }
}

/// What the publisher samples: the supervisor, or a fixture in tests.
pub trait HealthSource: Send + Sync {
    fn snapshot(&self) -> HealthSnapshot;
    fn take_events(&self) -> Vec<JobEvent>;
}

#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// The agent's thing (`ThingName` of `Alive` and the counts).
    pub thing: String,
    /// The seed publishes every minute.
    pub interval: Duration,
    /// Most datums kept while CloudWatch cannot be reached.
    pub buffer: usize,
    /// Set to whether the last sending went through.
    pub link: crate::stats::Link,
}

/// Sends every batch it can, oldest first; stops at the first that fails for a reason worth
/// retrying (the next tick tries again).
async fn flush(buffer: &mut Buffer, sink: &dyn MetricsSink) -> Result<usize, MetricsError> {
    let mut sent = 0;
    while !buffer.is_empty() {
        let batch = buffer.batch();
        let result = match tokio::time::timeout(SEND_WITHIN, sink.put(&batch)).await {
            Ok(r) => r,
            Err(_) => Err(MetricsError::Transient(format!(
                "no answer within {} s",
                SEND_WITHIN.as_secs()
            ))),
        };
        match result {
            Ok(()) => {
                buffer.sent(batch.len());
                sent += batch.len();
            }
            Err(MetricsError::Refused(e)) => {
                warn!(error = %e, datums = batch.len(), "CloudWatch refused metrics; dropped");
                buffer.sent(batch.len());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Samples `source` every interval and sends; at `stop`, takes the last events and flushes
/// them within [`FINAL_FLUSH_WITHIN`].
pub async fn run(
    source: Arc<dyn HealthSource>,
    sink: Arc<dyn MetricsSink>,
    clock: Arc<dyn Clock>,
    cfg: PublisherConfig,
    mut stop: Stop,
) {
    info!(
        namespace = NAMESPACE,
        thing = cfg.thing,
        interval_s = cfg.interval.as_secs_f64(),
        "CloudWatch metrics on"
    );
    let mut buffer = Buffer::new(cfg.buffer);
    let mut ticks = Ticker::new(clock.clone(), cfg.interval);
    let mut failing = false;
    loop {
        let stopping = tokio::select! {
            () = ticks.tick() => false,
            () = stop.stopped() => true,
        };
        let now = clock.now();
        buffer.push(events(&source.take_events()));
        if stopping {
            let _ =
                tokio::time::timeout(FINAL_FLUSH_WITHIN, flush(&mut buffer, sink.as_ref())).await;
            if !buffer.is_empty() {
                warn!(datums = buffer.len(), "metrics not sent before stopping");
            }
            return;
        }
        let snapshot = source.snapshot();
        buffer.push(sample(&snapshot, &cfg.thing, now));
        buffer.expire(now);
        let flushed = flush(&mut buffer, sink.as_ref()).await;
        cfg.link.set(flushed.is_ok());
        match flushed {
            Ok(n) => {
                if failing {
                    info!(sent = n, "CloudWatch reachable again");
                    failing = false;
                }
                debug!(sent = n, "metrics sent");
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, buffered = buffer.len(), "metrics kept until CloudWatch answers");
                    failing = true;
                }
            }
        }
    }
}

impl HealthSource for crate::supervisor::Supervisor {
    fn snapshot(&self) -> HealthSnapshot {
        self.health()
    }

    fn take_events(&self) -> Vec<JobEvent> {
        crate::supervisor::Supervisor::take_events(self)
    }
}

#[cfg(test)]
mod tests;
