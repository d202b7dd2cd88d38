//! What each stream has done since the agent started: frames and bytes recorded, camera
//! sessions, fragments and bytes uploaded, upload failures by error id. The counters behind
//! `/metrics` (Prometheus counters start at zero with the process; a scraper handles the reset).
//!
//! The recorder and the uploader bump them on their hot paths, so each stream's counters are
//! atomics reached through an `Arc` the job keeps: no lock or map lookup per frame. What the
//! catalog knows (backlog, usage) is not counted here but read from it at scrape time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::health::{JobKind, Occurrence};

/// Distinct error labels kept per stream; beyond them failures count as `other`, so a stream of
/// odd error ids cannot grow the metrics without bound.
const MAX_ERROR_LABELS: usize = 32;

/// One stream's counters.
#[derive(Debug, Default)]
pub struct StreamCounters {
    frames_recorded: AtomicU64,
    fragments_recorded: AtomicU64,
    bytes_recorded: AtomicU64,
    /// The newest recorded frame's timestamp (wall-clock ms); 0 before the first.
    last_frame_ms: AtomicI64,
    camera_sessions: AtomicU64,
    fragments_uploaded: AtomicU64,
    bytes_uploaded: AtomicU64,
    upload_retries: AtomicU64,
    upload_failures: Mutex<BTreeMap<String, u64>>,
    /// FatalError and Completed of the record and upload jobs.
    occurrences: Mutex<BTreeMap<(JobKind, &'static str), u64>>,
}

/// A copy of one stream's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamCounts {
    pub frames_recorded: u64,
    pub fragments_recorded: u64,
    pub bytes_recorded: u64,
    pub last_frame_ms: Option<i64>,
    /// Sessions with the camera (or file) that delivered a frame; every one after the first is
    /// a reconnect.
    pub camera_sessions: u64,
    pub fragments_uploaded: u64,
    pub bytes_uploaded: u64,
    pub upload_retries: u64,
    /// Fragments the service rejected, by error id (`4006`, ...).
    pub upload_failures: BTreeMap<String, u64>,
    pub occurrences: BTreeMap<(JobKind, &'static str), u64>,
}

impl StreamCounts {
    pub fn camera_reconnects(&self) -> u64 {
        self.camera_sessions.saturating_sub(1)
    }
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .or_default() += 1;
}

impl StreamCounters {
    /// A fragment of `frames` frames, `bytes` long, is on disk.
    pub fn fragment_recorded(&self, frames: u64, bytes: u64) {
        add(&self.frames_recorded, frames);
        add(&self.fragments_recorded, 1);
        add(&self.bytes_recorded, bytes);
    }

    pub fn frame(&self, timestamp_ms: i64) {
        self.last_frame_ms
            .fetch_max(timestamp_ms, Ordering::Relaxed);
    }

    pub fn camera_session(&self) {
        add(&self.camera_sessions, 1);
    }

    pub fn uploaded(&self, bytes: u64) {
        add(&self.fragments_uploaded, 1);
        add(&self.bytes_uploaded, bytes);
    }

    pub fn upload_retry(&self) {
        add(&self.upload_retries, 1);
    }

    /// A fragment rejected; `what` starts with the service's error id (`4006 INVALID_MKV_DATA`).
    pub fn upload_failed(&self, what: &str) {
        let id = what.split_whitespace().next().unwrap_or_default();
        let mut failures = self
            .upload_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let known = failures.contains_key(id);
        let label = if !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && id.len() <= 8
            && (known || failures.len() < MAX_ERROR_LABELS)
        {
            id
        } else {
            "other"
        };
        *failures.entry(label.to_owned()).or_default() += 1;
    }

    pub fn occurred(&self, kind: JobKind, what: Occurrence) {
        bump(&self.occurrences, (kind, what.metric_name()));
    }

    pub fn snapshot(&self) -> StreamCounts {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let last = self.last_frame_ms.load(Ordering::Relaxed);
        StreamCounts {
            frames_recorded: load(&self.frames_recorded),
            fragments_recorded: load(&self.fragments_recorded),
            bytes_recorded: load(&self.bytes_recorded),
            last_frame_ms: (last != 0).then_some(last),
            camera_sessions: load(&self.camera_sessions),
            fragments_uploaded: load(&self.fragments_uploaded),
            bytes_uploaded: load(&self.bytes_uploaded),
            upload_retries: load(&self.upload_retries),
            upload_failures: self
                .upload_failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            occurrences: self
                .occurrences
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// Whether a connection the agent keeps (MQTT, CloudWatch) is up; cheap to clone, every clone
/// the same state.
#[derive(Clone, Debug, Default)]
pub struct Link(Arc<AtomicU8>);

impl Link {
    const UNUSED: u8 = 0;
    const DOWN: u8 = 1;
    const UP: u8 = 2;

    pub fn set(&self, up: bool) {
        let v = if up { Self::UP } else { Self::DOWN };
        self.0.store(v, Ordering::Relaxed);
    }

    /// `None` while the agent does not use the connection at all.
    pub fn get(&self) -> Option<bool> {
        match self.0.load(Ordering::Relaxed) {
            Self::UNUSED => None,
            v => Some(v == Self::UP),
        }
    }
}

/// Every stream's counters and the agent's links; shared by the recorder jobs, the uploader,
/// the control plane and the HTTP server.
#[derive(Debug, Default)]
pub struct Stats {
    streams: Mutex<BTreeMap<String, Arc<StreamCounters>>>,
    /// The control plane's broker connection.
    pub mqtt: Link,
    /// Whether the CloudWatch publisher's last sending went through.
    pub cloudwatch: Link,
}

impl Stats {
    pub fn new() -> Stats {
        Stats::default()
    }

    /// The stream's counters, created at the first call.
    pub fn stream(&self, name: &str) -> Arc<StreamCounters> {
        let mut map = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(name) {
            Some(c) => c.clone(),
            None => map.entry(name.to_owned()).or_default().clone(),
        }
    }

    /// One stream's counts (zeros for a stream not seen since the start).
    pub fn stream_counts(&self, name: &str) -> StreamCounts {
        let c = self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned();
        c.map(|c| c.snapshot()).unwrap_or_default()
    }

    /// Forgets a deleted stream, so its series leave `/metrics`.
    pub fn remove(&self, name: &str) {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    /// Every stream's counts, by name.
    pub fn snapshot(&self) -> BTreeMap<String, StreamCounts> {
        let streams: Vec<(String, Arc<StreamCounters>)> = self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        streams
            .into_iter()
            .map(|(k, v)| (k, v.snapshot()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_stream() {
        let stats = Stats::new();
        let a = stats.stream("a");
        a.fragment_recorded(50, 1000);
        a.fragment_recorded(25, 500);
        a.frame(2000);
        a.frame(1000);
        a.camera_session();
        a.camera_session();
        stats.stream("a").uploaded(1000);
        stats
            .stream("b")
            .occurred(JobKind::Upload, Occurrence::FatalError);
        let snap = stats.snapshot();
        let a = &snap["a"];
        assert_eq!((a.frames_recorded, a.fragments_recorded), (75, 2));
        assert_eq!(a.bytes_recorded, 1500);
        assert_eq!(
            a.last_frame_ms,
            Some(2000),
            "the newest frame, not the last call"
        );
        assert_eq!(a.camera_reconnects(), 1);
        assert_eq!((a.fragments_uploaded, a.bytes_uploaded), (1, 1000));
        assert_eq!(snap["b"].occurrences[&(JobKind::Upload, "FatalError")], 1);
        assert_eq!(snap["b"].last_frame_ms, None);
        stats.remove("a");
        assert!(!stats.snapshot().contains_key("a"));
    }

    #[test]
    fn failure_labels_are_error_ids_and_bounded() {
        let c = StreamCounters::default();
        c.upload_failed("4006 INVALID_MKV_DATA");
        c.upload_failed("4006 INVALID_MKV_DATA");
        c.upload_failed("connection reset");
        c.upload_failed("");
        for i in 0..100 {
            c.upload_failed(&format!("{} X", 5000 + i));
        }
        let f = c.snapshot().upload_failures;
        assert_eq!(f["4006"], 2);
        assert!(f["other"] >= 2);
        assert!(f.len() <= MAX_ERROR_LABELS + 1, "{f:?}");
        assert_eq!(f.values().sum::<u64>(), 104);
    }
}
