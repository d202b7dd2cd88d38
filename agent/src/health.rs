//! What every job is doing right now, and what just happened to it: the state behind the
//! CloudWatch metrics (the seed's `Running`, `FatalError`, `Completed`, `PercentageSpaceUsed`
//! and the `RecordJobs.*` / `UploadJobs.*` counts).
//!
//! The supervisor's jobs write here (cheap, synchronous, never blocking media work); the
//! metrics publisher samples it once a minute and drains the one-off events. Whether a job is
//! errored is not kept here: the catalog's job status (LastRecorderStatus /
//! LastUploaderStatus) is the one truth, so the metrics always agree with
//! DescribeEdgeConfiguration.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use jiff::Timestamp;

use crate::edge_config::JobStatus;

/// The two kinds of job the seed's metrics distinguish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKind {
    Record,
    Upload,
}

impl JobKind {
    pub const ALL: [JobKind; 2] = [JobKind::Record, JobKind::Upload];

    /// The job's name in the seed's metrics table (`RecordJob`, `UploadJob`).
    pub fn job_name(self) -> &'static str {
        match self {
            JobKind::Record => "RecordJob",
            JobKind::Upload => "UploadJob",
        }
    }

    /// The prefix of the per-thing counts (`RecordJobs.HealthyJobCount`).
    pub fn jobs_name(self) -> &'static str {
        match self {
            JobKind::Record => "RecordJobs",
            JobKind::Upload => "UploadJobs",
        }
    }
}

/// Whether a healthy job is doing its work now or waiting for its schedule (or for space).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Scheduled,
    Running,
}

/// Something that happened once to a job; published once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occurrence {
    /// The job stopped on an error only the user can fix (USER_ERROR).
    FatalError,
    /// A run of the job ended by itself: its schedule window closed, its source ended, or (upload
    /// without a schedule) the backlog was sent.
    Completed,
}

impl Occurrence {
    pub fn metric_name(self) -> &'static str {
        match self {
            Occurrence::FatalError => "FatalError",
            Occurrence::Completed => "Completed",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct JobEvent {
    pub stream: String,
    pub kind: JobKind,
    pub what: Occurrence,
    pub at: Timestamp,
}

/// One job as the metrics see it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobHealth {
    pub stream: String,
    /// The thing of the configuration's HubDeviceArn: the counts are per thing.
    pub thing: String,
    pub kind: JobKind,
    pub phase: Phase,
    /// The job's last status in the catalog; `None` before its first report.
    pub status: Option<JobStatus>,
}

impl JobHealth {
    /// Running or scheduled, not errored.
    pub fn healthy(&self) -> bool {
        matches!(self.status, None | Some(JobStatus::Success))
    }

    /// Actively working (recording, uploading) and not errored.
    pub fn running(&self) -> bool {
        self.healthy() && self.phase == Phase::Running
    }
}

/// A sample of the board, completed with the catalog's job status by the supervisor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HealthSnapshot {
    pub jobs: Vec<JobHealth>,
    /// PercentageSpaceUsed (0-1) of the streams that have a size limit.
    pub space_used: Vec<(String, f64)>,
}

/// One thing's jobs of one kind by state: the seed's `RecordJobs.*` / `UploadJobs.*` counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub healthy: usize,
    pub unhealthy: usize,
    pub running: usize,
    /// Every job (the seed's EdgeConfigCount).
    pub configured: usize,
}

impl HealthSnapshot {
    /// `own` (which gets its counts even with no job) and every thing that has a job.
    pub fn things<'a>(&'a self, own: &'a str) -> std::collections::BTreeSet<&'a str> {
        std::iter::once(own)
            .chain(self.jobs.iter().map(|j| j.thing.as_str()))
            .collect()
    }

    pub fn counts(&self, thing: &str, kind: JobKind) -> JobCounts {
        let mut c = JobCounts::default();
        for j in self
            .jobs
            .iter()
            .filter(|j| j.thing == thing && j.kind == kind)
        {
            c.configured += 1;
            c.running += usize::from(j.running());
            if j.healthy() {
                c.healthy += 1;
            } else {
                c.unhealthy += 1;
            }
        }
        c
    }
}

/// One-off events kept until the publisher takes them; beyond this the oldest are dropped
/// (with metrics off nobody takes them).
const MAX_EVENTS: usize = 1024;

#[derive(Default)]
struct Board {
    /// (stream, kind) -> (thing, phase)
    jobs: BTreeMap<(String, JobKind), (String, Phase)>,
    /// MaxLocalMediaSizeInMB in bytes, of the streams that have one.
    size_limits: BTreeMap<String, u64>,
    events: VecDeque<JobEvent>,
}

/// Shared by the supervisor's jobs and the metrics publisher.
#[derive(Default)]
pub struct JobBoard(Mutex<Board>);

impl JobBoard {
    pub fn new() -> JobBoard {
        JobBoard::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Board) -> R) -> R {
        // A panic elsewhere while holding the lock leaves plain data behind: keep using it.
        let mut b = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut b)
    }

    /// A job exists (started or waiting for its schedule). A job registered already (a
    /// recorder kept across a configuration change) keeps its phase.
    pub fn register(&self, stream: &str, thing: &str, kind: JobKind) {
        self.with(|b| {
            b.jobs
                .entry((stream.to_owned(), kind))
                .and_modify(|j| thing.clone_into(&mut j.0))
                .or_insert_with(|| (thing.to_owned(), Phase::Scheduled));
        });
    }

    /// The job is gone (configuration deleted or replaced, agent stopping).
    pub fn remove(&self, stream: &str, kind: JobKind) {
        self.with(|b| {
            b.jobs.remove(&(stream.to_owned(), kind));
            if kind == JobKind::Record {
                b.size_limits.remove(stream);
            }
        });
    }

    pub fn set_phase(&self, stream: &str, kind: JobKind, phase: Phase) {
        self.with(|b| {
            if let Some(j) = b.jobs.get_mut(&(stream.to_owned(), kind)) {
                j.1 = phase;
            }
        });
    }

    /// The stream's MaxLocalMediaSizeInMB (in bytes), for PercentageSpaceUsed.
    pub fn set_size_limit(&self, stream: &str, max_bytes: Option<u64>) {
        self.with(|b| match max_bytes {
            Some(m) => {
                b.size_limits.insert(stream.to_owned(), m);
            }
            None => {
                b.size_limits.remove(stream);
            }
        });
    }

    /// Records a one-off event of a registered job.
    pub fn occurred(&self, stream: &str, kind: JobKind, what: Occurrence, at: Timestamp) {
        self.with(|b| {
            if !b.jobs.contains_key(&(stream.to_owned(), kind)) {
                return;
            }
            if b.events.len() == MAX_EVENTS {
                b.events.pop_front();
            }
            b.events.push_back(JobEvent {
                stream: stream.to_owned(),
                kind,
                what,
                at,
            });
        });
    }

    /// The events since the last call.
    pub fn take_events(&self) -> Vec<JobEvent> {
        self.with(|b| b.events.drain(..).collect())
    }

    /// The jobs and space figures, with each job's status from `status_of` and each limited
    /// stream's bytes on disk from `usage_of` (read now, so the figure is current rather than
    /// as of the janitor's last pass).
    pub fn snapshot(
        &self,
        mut status_of: impl FnMut(&str, JobKind) -> Option<JobStatus>,
        mut usage_of: impl FnMut(&str) -> Option<u64>,
    ) -> HealthSnapshot {
        let (jobs, space_used) = self.with(|b| {
            (
                b.jobs
                    .iter()
                    .map(|((s, k), (t, p))| (s.clone(), *k, t.clone(), *p))
                    .collect::<Vec<_>>(),
                b.size_limits
                    .iter()
                    .map(|(s, m)| (s.clone(), *m))
                    .collect::<Vec<_>>(),
            )
        });
        // The catalog is read outside the board's lock.
        let jobs = jobs
            .into_iter()
            .map(|(stream, kind, thing, phase)| JobHealth {
                status: status_of(&stream, kind),
                stream,
                thing,
                kind,
                phase,
            })
            .collect();
        let space_used = space_used
            .into_iter()
            .filter_map(|(stream, max)| {
                let usage = usage_of(&stream)?;
                Some((stream, crate::edge_config::space_used(usage, max)))
            })
            .collect();
        HealthSnapshot { jobs, space_used }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn events_only_for_registered_jobs_and_taken_once() {
        let b = JobBoard::new();
        b.occurred("cam", JobKind::Record, Occurrence::FatalError, at(1));
        assert!(b.take_events().is_empty());
        b.register("cam", "thing", JobKind::Record);
        b.occurred("cam", JobKind::Record, Occurrence::FatalError, at(2));
        let e = b.take_events();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].what, Occurrence::FatalError);
        assert_eq!(e[0].at, at(2));
        assert!(b.take_events().is_empty());
    }

    #[test]
    fn events_are_bounded_oldest_dropped() {
        let b = JobBoard::new();
        b.register("cam", "thing", JobKind::Upload);
        for i in 0..(MAX_EVENTS as i64 + 10) {
            b.occurred("cam", JobKind::Upload, Occurrence::Completed, at(i));
        }
        let e = b.take_events();
        assert_eq!(e.len(), MAX_EVENTS);
        assert_eq!(e[0].at, at(10));
    }

    #[test]
    fn snapshot_merges_status_and_phase() {
        let b = JobBoard::new();
        b.register("a", "t1", JobKind::Record);
        b.register("a", "t1", JobKind::Upload);
        b.register("b", "t2", JobKind::Record);
        b.set_phase("a", JobKind::Record, Phase::Running);
        b.set_phase("b", JobKind::Record, Phase::Running);
        b.set_size_limit("a", Some(400));
        let s = b.snapshot(
            |stream, kind| match (stream, kind) {
                ("b", JobKind::Record) => Some(JobStatus::SystemError),
                _ => Some(JobStatus::Success),
            },
            |stream| (stream == "a").then_some(100),
        );
        let find = |s: &HealthSnapshot, stream: &str, kind| {
            s.jobs
                .iter()
                .find(|j| j.stream == stream && j.kind == kind)
                .cloned()
                .unwrap()
        };
        assert!(find(&s, "a", JobKind::Record).running());
        assert!(!find(&s, "a", JobKind::Upload).running());
        assert!(find(&s, "a", JobKind::Upload).healthy());
        let errored = find(&s, "b", JobKind::Record);
        assert!(!errored.healthy() && !errored.running());
        assert_eq!(errored.thing, "t2");
        assert_eq!(s.space_used, vec![("a".to_owned(), 0.25)]);
        b.remove("a", JobKind::Record);
        let s = b.snapshot(|_, _| None, |_| Some(0));
        assert_eq!(s.jobs.len(), 2);
        assert!(s.space_used.is_empty());
    }
}
