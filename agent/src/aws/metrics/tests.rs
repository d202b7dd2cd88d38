use std::sync::Mutex;

use super::*;
use crate::clock::PausedClock;
use crate::edge_config::JobStatus;
use crate::health::{JobBoard, Occurrence, Phase};

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_780_000_000 + s).unwrap()
}

fn find<'a>(d: &'a [Datum], name: &str, dims: &[(&str, &str)]) -> Option<&'a Datum> {
    d.iter().find(|x| {
        x.name == name
            && x.dimensions.len() == dims.len()
            && dims
                .iter()
                .all(|(k, v)| x.dimensions.iter().any(|(dk, dv)| dk == k && dv == v))
    })
}

fn board() -> JobBoard {
    let b = JobBoard::new();
    b.register("cam1", "thing-a", JobKind::Record);
    b.register("cam1", "thing-a", JobKind::Upload);
    b.register("cam2", "thing-a", JobKind::Record);
    b.register("cam3", "thing-b", JobKind::Record);
    b.set_phase("cam1", JobKind::Record, Phase::Running);
    b.set_phase("cam2", JobKind::Record, Phase::Running);
    b.set_size_limit("cam1", Some(100));
    b
}

fn statuses(stream: &str, kind: JobKind) -> Option<JobStatus> {
    match (stream, kind) {
        ("cam2", JobKind::Record) => Some(JobStatus::UserError),
        ("cam1", _) => Some(JobStatus::Success),
        _ => None,
    }
}

#[test]
fn sample_has_every_metric_of_the_seed_with_its_dimensions() {
    let snap = board().snapshot(statuses, |_| Some(42));
    let d = sample(&snap, "thing-a", at(0));
    let alive = find(&d, "Alive", &[("ThingName", "thing-a")]).unwrap();
    assert_eq!((alive.value, alive.unit), (1.0, Unit::None));
    let running = find(
        &d,
        "Running",
        &[("StreamName", "cam1"), ("JobType", "RecordJob")],
    )
    .unwrap();
    assert_eq!(running.value, 1.0);
    // Errored (cam2), scheduled (cam1 upload) and not yet started (cam3 waits in Scheduled)
    // jobs are not running.
    assert!(
        find(
            &d,
            "Running",
            &[("StreamName", "cam2"), ("JobType", "RecordJob")]
        )
        .is_none()
    );
    assert!(
        find(
            &d,
            "Running",
            &[("StreamName", "cam1"), ("JobType", "UploadJob")]
        )
        .is_none()
    );
    let space = find(&d, "PercentageSpaceUsed", &[("StreamName", "cam1")]).unwrap();
    assert_eq!((space.value, space.unit), (0.42, Unit::Percent));
    let count = |name: &str, thing: &str| find(&d, name, &[("ThingName", thing)]).unwrap().value;
    assert_eq!(count("RecordJobs.HealthyJobCount", "thing-a"), 1.0);
    assert_eq!(count("RecordJobs.UnhealthyJobCount", "thing-a"), 1.0);
    assert_eq!(count("RecordJobs.RunningJobCount", "thing-a"), 1.0);
    assert_eq!(count("RecordJobs.EdgeConfigCount", "thing-a"), 2.0);
    assert_eq!(count("UploadJobs.HealthyJobCount", "thing-a"), 1.0);
    assert_eq!(count("UploadJobs.UnhealthyJobCount", "thing-a"), 0.0);
    assert_eq!(count("UploadJobs.RunningJobCount", "thing-a"), 0.0);
    assert_eq!(count("UploadJobs.EdgeConfigCount", "thing-a"), 1.0);
    // Another thing's configuration gets its own counts.
    assert_eq!(count("RecordJobs.EdgeConfigCount", "thing-b"), 1.0);
    assert_eq!(count("RecordJobs.HealthyJobCount", "thing-b"), 1.0);
    assert!(d.iter().all(|x| x.at == at(0)));
    let count_unit = find(
        &d,
        "UploadJobs.EdgeConfigCount",
        &[("ThingName", "thing-a")],
    )
    .unwrap()
    .unit;
    assert_eq!(count_unit, Unit::Count);
}

#[test]
fn an_agent_without_jobs_still_says_alive_and_zero() {
    let d = sample(&HealthSnapshot::default(), "lonely", at(0));
    assert!(find(&d, "Alive", &[("ThingName", "lonely")]).is_some());
    assert_eq!(
        find(&d, "RecordJobs.EdgeConfigCount", &[("ThingName", "lonely")])
            .unwrap()
            .value,
        0.0
    );
    assert_eq!(d.len(), 1 + 8);
}

#[test]
fn events_keep_their_time() {
    let e = vec![JobEvent {
        stream: "cam".into(),
        kind: JobKind::Upload,
        what: Occurrence::Completed,
        at: at(7),
    }];
    let d = events(&e);
    let c = find(
        &d,
        "Completed",
        &[("StreamName", "cam"), ("JobType", "UploadJob")],
    )
    .unwrap();
    assert_eq!((c.value, c.at), (1.0, at(7)));
}

fn datum(s: i64) -> Datum {
    Datum {
        name: "Alive".into(),
        dimensions: vec![("ThingName", "t".into())],
        value: 1.0,
        unit: Unit::None,
        at: at(s),
    }
}

#[test]
fn buffer_is_bounded_and_expires_what_cloudwatch_refuses() {
    let mut b = Buffer::new(3);
    b.push((0..5).map(datum));
    assert_eq!(b.len(), 3);
    assert_eq!(b.dropped(), 2);
    assert_eq!(b.batch()[0].at, at(2));
    b.expire(at(4) + SignedDuration::from_hours(13 * 24));
    assert_eq!(b.len(), 0, "datums 13 days old are dropped");
    assert_eq!(b.dropped(), 5);
}

#[test]
fn batches_hold_at_most_a_thousand() {
    let mut b = Buffer::new(5000);
    b.push((0..2500).map(datum));
    assert_eq!(b.batch().len(), BATCH);
    b.sent(BATCH);
    b.sent(BATCH);
    assert_eq!(b.batch().len(), 500);
}

/// Records batches; fails while `down` is set.
#[derive(Default)]
struct Recorder {
    batches: Mutex<Vec<Vec<Datum>>>,
    down: std::sync::atomic::AtomicBool,
    refuse: std::sync::atomic::AtomicBool,
}

impl MetricsSink for Recorder {
    fn put<'a>(&'a self, batch: &'a [Datum]) -> BoxFuture<'a, Result<(), MetricsError>> {
        Box::pin(async move {
            use std::sync::atomic::Ordering::SeqCst;
            if self.down.load(SeqCst) {
                return Err(MetricsError::Transient("connection refused".into()));
            }
            if self.refuse.load(SeqCst) {
                return Err(MetricsError::Refused("InvalidParameterValue".into()));
            }
            self.batches.lock().unwrap().push(batch.to_vec());
            Ok(())
        })
    }
}

struct Source(JobBoard);

impl HealthSource for Source {
    fn snapshot(&self) -> HealthSnapshot {
        self.0.snapshot(statuses, |_| Some(42))
    }
    fn take_events(&self) -> Vec<JobEvent> {
        self.0.take_events()
    }
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn publisher_buffers_while_offline_and_sends_in_order_when_back() {
    use std::sync::atomic::Ordering::SeqCst;
    let source = Arc::new(Source(board()));
    let sink = Arc::new(Recorder::default());
    let clock = PausedClock::new(at(0));
    sink.down.store(true, SeqCst);
    let (stopper, stop) = crate::stop::channel();
    let task = tokio::spawn(run(
        source.clone(),
        sink.clone(),
        Arc::new(clock.clone()),
        PublisherConfig {
            thing: "thing-a".into(),
            interval: Duration::from_secs(60),
            buffer: 10_000,
            link: Default::default(),
        },
        stop,
    ));
    // Three samples while CloudWatch is unreachable.
    for _ in 0..3 {
        settle().await;
        tokio::time::advance(Duration::from_secs(60)).await;
    }
    settle().await;
    assert!(sink.batches.lock().unwrap().is_empty());
    source
        .0
        .occurred("cam1", JobKind::Upload, Occurrence::Completed, at(170));
    sink.down.store(false, SeqCst);
    tokio::time::advance(Duration::from_secs(60)).await;
    settle().await;
    let sent: Vec<Datum> = sink.batches.lock().unwrap().concat();
    let alive: Vec<Timestamp> = sent
        .iter()
        .filter(|d| d.name == "Alive")
        .map(|d| d.at)
        .collect();
    assert_eq!(alive, vec![at(0), at(60), at(120), at(180), at(240)]);
    let completed = find(
        &sent,
        "Completed",
        &[("StreamName", "cam1"), ("JobType", "UploadJob")],
    )
    .unwrap();
    assert_eq!(completed.at, at(170));
    assert_eq!(
        sent.iter().filter(|d| d.name == "Completed").count(),
        1,
        "published once"
    );
    // A Completed right before stopping still leaves.
    source
        .0
        .occurred("cam1", JobKind::Record, Occurrence::FatalError, at(250));
    stopper.stop();
    task.await.unwrap();
    let sent: Vec<Datum> = sink.batches.lock().unwrap().concat();
    assert!(
        find(
            &sent,
            "FatalError",
            &[("StreamName", "cam1"), ("JobType", "RecordJob")]
        )
        .is_some()
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_batch_is_dropped_not_retried_forever() {
    use std::sync::atomic::Ordering::SeqCst;
    let sink = Recorder::default();
    sink.refuse.store(true, SeqCst);
    let mut b = Buffer::new(100);
    b.push((0..3).map(datum));
    assert_eq!(flush(&mut b, &sink).await.unwrap(), 0);
    assert!(b.is_empty());
    sink.refuse.store(false, SeqCst);
    sink.down.store(true, SeqCst);
    b.push((0..3).map(datum));
    assert!(matches!(
        flush(&mut b, &sink).await,
        Err(MetricsError::Transient(_))
    ));
    assert_eq!(b.len(), 3, "kept for the next try");
}

#[test]
fn sdk_datum_carries_name_dimensions_unit_and_time() {
    let d = to_sdk(&Datum {
        name: "PercentageSpaceUsed".into(),
        dimensions: vec![("StreamName", "cam".into())],
        value: 0.5,
        unit: Unit::Percent,
        at: at(0),
    });
    assert_eq!(d.metric_name(), Some("PercentageSpaceUsed"));
    assert_eq!(d.unit(), Some(&StandardUnit::Percent));
    assert_eq!(d.value(), Some(0.5));
    assert_eq!(d.dimensions()[0].name(), Some("StreamName"));
    assert_eq!(
        d.timestamp().unwrap().to_millis().unwrap(),
        at(0).as_millisecond()
    );
}
