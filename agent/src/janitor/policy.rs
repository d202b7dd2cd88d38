//! What to delete and whether to pause recording, decided from a table of segments: pure, no
//! I/O, time passed in, so every rule is tested with a fake clock and a literal table.
//!
//! The rules, from the API reference (DeletionConfig, LocalSizeConfig):
//! - `EdgeRetentionInHours`: media older than this is deleted, uploaded or not. A segment is
//!   "older" when its newest media is (by timestamp: retention is about the media's time);
//!   deleting at segment granularity never deletes media younger than the retention.
//! - `DeleteAfterUpload`: a closed segment whose every fragment is uploaded is deleted. A
//!   segment with a fragment the service refused (FAILED) is kept for the operator until
//!   retention removes it.
//! - `MaxLocalMediaSizeInMB` with `DELETE_OLDEST_MEDIA`: the first recorded closed segments are
//!   deleted until the stream is within its limit (recording order, design/time.md). With
//!   `DENY_NEW_MEDIA`: nothing is deleted; recording
//!   pauses at the limit and resumes once retention or upload has brought usage back under
//!   [`RESUME_FRACTION`] of it (the margin stops the recorder flapping segment by segment).
//!   A limit without a strategy behaves as `DELETE_OLDEST_MEDIA`: the one choice that keeps
//!   both the limit and the newest media.
//!
//! The segment being written (OPEN) is never deleted here; the recorder closes it first.

use crate::catalog::{SegmentId, SegmentState};
use crate::edge_config::{EdgeConfig, StrategyOnFullSize, space_used};

/// With DENY_NEW_MEDIA, recording resumes when usage falls below this fraction of the limit.
pub const RESUME_FRACTION: f64 = 0.9;

const MB: u64 = 1024 * 1024;

/// A segment as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFacts {
    pub id: SegmentId,
    pub state: SegmentState,
    /// Wall-clock end of its newest media, epoch milliseconds.
    pub end_ms: i64,
    pub size: u64,
    pub pending: u32,
    pub failed: u32,
}

/// The deletion settings of one stream, with the API's defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub retention_ms: i64,
    pub delete_after_upload: bool,
    pub max_bytes: Option<u64>,
    pub strategy: StrategyOnFullSize,
}

impl Limits {
    pub fn of(config: &EdgeConfig) -> Limits {
        let local = config.local_size_config();
        Limits {
            retention_ms: i64::from(config.edge_retention_in_hours()) * 3_600_000,
            delete_after_upload: config.delete_after_upload(),
            max_bytes: local
                .and_then(|l| l.max_local_media_size_in_mb)
                .map(|mb| u64::from(mb) * MB),
            strategy: local
                .and_then(|l| l.strategy_on_full_size)
                .unwrap_or(StrategyOnFullSize::DeleteOldestMedia),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Retention,
    Uploaded,
    SizeLimit,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// Segments to delete, oldest first, each with why.
    pub delete: Vec<(SegmentId, Reason)>,
    /// Whether the recorder must be paused (DENY_NEW_MEDIA at its limit).
    pub deny_new_media: bool,
    /// Bytes the stream keeps after the deletions.
    pub usage_after: u64,
    /// `usage_after / MaxLocalMediaSizeInMB`, 0-1 (the PercentageSpaceUsed metric); `None`
    /// without a limit.
    pub percentage_space_used: Option<f64>,
}

/// Decides for one stream. `segments` must be in recording order, the first recorded first
/// (not by timestamp: after a wall-clock step backwards the newest media carries the oldest
/// times); `was_denying` is the previous decision's `deny_new_media` (for the resume margin).
pub fn decide(
    segments: &[SegmentFacts],
    limits: &Limits,
    now_ms: i64,
    was_denying: bool,
) -> Decision {
    let mut delete = Vec::new();
    let mut kept: Vec<&SegmentFacts> = Vec::new();
    for s in segments
        .iter()
        .filter(|s| s.state != SegmentState::Deleting)
    {
        let deletable = s.state == SegmentState::Closed;
        if deletable && s.end_ms <= now_ms.saturating_sub(limits.retention_ms) {
            delete.push((s.id, Reason::Retention));
        } else if deletable && limits.delete_after_upload && s.pending == 0 && s.failed == 0 {
            delete.push((s.id, Reason::Uploaded));
        } else {
            kept.push(s);
        }
    }
    let mut usage: u64 = kept.iter().map(|s| s.size).sum();
    let mut deny_new_media = false;
    if let Some(max) = limits.max_bytes {
        match limits.strategy {
            StrategyOnFullSize::DeleteOldestMedia => {
                for s in kept.iter().filter(|s| s.state == SegmentState::Closed) {
                    if usage <= max {
                        break;
                    }
                    delete.push((s.id, Reason::SizeLimit));
                    usage -= s.size;
                }
            }
            StrategyOnFullSize::DenyNewMedia => {
                let resume_below = (max as f64 * RESUME_FRACTION) as u64;
                deny_new_media = if was_denying {
                    usage >= resume_below
                } else {
                    usage >= max
                };
            }
        }
    }
    delete.sort_by_key(|(id, _)| {
        segments
            .iter()
            .position(|s| s.id == *id)
            .unwrap_or(usize::MAX)
    });
    Decision {
        delete,
        deny_new_media,
        usage_after: usage,
        percentage_space_used: limits.max_bytes.map(|max| space_used(usage, max)),
    }
}

/// The device-level floor: whatever the configurations allow, recording pauses before the file
/// system's free space falls under the reserve, so the box never fills up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskReserve {
    pub min_free_bytes: u64,
    /// Also keep this share of the file system free (percent, 0-100).
    pub min_free_percent: u8,
}

impl Default for DiskReserve {
    fn default() -> Self {
        DiskReserve {
            min_free_bytes: 1 << 30,
            min_free_percent: 5,
        }
    }
}

impl DiskReserve {
    /// Free bytes the file system must keep: the larger of the two floors.
    pub fn floor(&self, total_bytes: u64) -> u64 {
        let pct = total_bytes / 100 * u64::from(self.min_free_percent.min(100));
        self.min_free_bytes.max(pct)
    }

    /// Whether recording must pause with `free_bytes` left of `total_bytes`.
    pub fn must_pause(&self, free_bytes: u64, total_bytes: u64) -> bool {
        free_bytes < self.floor(total_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const NOW: i64 = 1_000 * H;

    fn seg(id: SegmentId, end_ms: i64, size_mb: u64, pending: u32, failed: u32) -> SegmentFacts {
        SegmentFacts {
            id,
            state: SegmentState::Closed,
            end_ms,
            size: size_mb * MB,
            pending,
            failed,
        }
    }

    fn limits(
        retention_h: i64,
        after_upload: bool,
        max_mb: Option<u64>,
        strategy: StrategyOnFullSize,
    ) -> Limits {
        Limits {
            retention_ms: retention_h * H,
            delete_after_upload: after_upload,
            max_bytes: max_mb.map(|m| m * MB),
            strategy,
        }
    }

    use StrategyOnFullSize::{DeleteOldestMedia as Oldest, DenyNewMedia as Deny};

    #[test]
    fn retention_deletes_old_media_uploaded_or_not() {
        let segs = [
            seg(1, NOW - 25 * H, 10, 3, 0),
            seg(2, NOW - 24 * H, 10, 0, 1),
            seg(3, NOW - 24 * H + 1, 10, 5, 0),
        ];
        let d = decide(&segs, &limits(24, false, None, Oldest), NOW, false);
        assert_eq!(d.delete, [(1, Reason::Retention), (2, Reason::Retention)]);
        assert_eq!(d.usage_after, 10 * MB);
        assert_eq!(d.percentage_space_used, None);
    }

    #[test]
    fn delete_after_upload_needs_every_fragment_uploaded() {
        let segs = [
            seg(1, NOW - H, 10, 0, 0),
            seg(2, NOW - H, 10, 1, 0),
            seg(3, NOW - H, 10, 0, 1),
        ];
        let d = decide(&segs, &limits(720, true, None, Oldest), NOW, false);
        assert_eq!(
            d.delete,
            [(1, Reason::Uploaded)],
            "pending and failed media stay"
        );
        let d = decide(&segs, &limits(720, false, None, Oldest), NOW, false);
        assert!(
            d.delete.is_empty(),
            "DeleteAfterUpload false keeps uploaded media"
        );
    }

    #[test]
    fn open_and_deleting_segments_are_left_alone() {
        let mut open = seg(1, NOW - 900 * H, 500, 0, 0);
        open.state = SegmentState::Open;
        let mut deleting = seg(2, NOW - 900 * H, 500, 0, 0);
        deleting.state = SegmentState::Deleting;
        let d = decide(
            &[open, deleting],
            &limits(1, true, Some(64), Oldest),
            NOW,
            false,
        );
        assert!(d.delete.is_empty());
        assert_eq!(
            d.usage_after,
            500 * MB,
            "a deleting segment no longer counts"
        );
        assert_eq!(d.percentage_space_used, Some(1.0), "clamped to 0-1");
    }

    #[test]
    fn delete_oldest_media_keeps_the_stream_under_its_limit() {
        let segs = [
            seg(1, NOW - 5 * H, 40, 1, 0),
            seg(2, NOW - 4 * H, 40, 1, 0),
            seg(3, NOW - 3 * H, 40, 1, 0),
            seg(4, NOW - 2 * H, 40, 1, 0),
        ];
        let d = decide(&segs, &limits(720, true, Some(100), Oldest), NOW, false);
        assert_eq!(d.delete, [(1, Reason::SizeLimit), (2, Reason::SizeLimit)]);
        assert_eq!(d.usage_after, 80 * MB);
        assert_eq!(d.percentage_space_used, Some(0.8));
        assert!(!d.deny_new_media);
        let d = decide(&segs, &limits(720, true, Some(160), Oldest), NOW, false);
        assert!(d.delete.is_empty(), "exactly at the limit is within it");
    }

    #[test]
    fn deny_new_media_pauses_then_resumes_with_a_margin() {
        let full = [seg(1, NOW - H, 60, 1, 0), seg(2, NOW - H, 40, 1, 0)];
        let l = limits(720, true, Some(100), Deny);
        let d = decide(&full, &l, NOW, false);
        assert!(d.deny_new_media);
        assert!(d.delete.is_empty(), "DENY_NEW_MEDIA never deletes for size");
        // Upload of segment 2 frees 40 MB: 60 % used, below the 90 % resume mark.
        let freed = [seg(1, NOW - H, 60, 1, 0), seg(2, NOW - H, 40, 0, 0)];
        let d = decide(&freed, &l, NOW, true);
        assert_eq!(d.delete, [(2, Reason::Uploaded)]);
        assert!(!d.deny_new_media);
        // At 95 %: a paused recorder stays paused, a running one keeps running.
        let near = [seg(1, NOW - H, 95, 1, 0)];
        assert!(decide(&near, &l, NOW, true).deny_new_media);
        assert!(!decide(&near, &l, NOW, false).deny_new_media);
    }

    #[test]
    fn rules_combine() {
        let segs = [
            seg(1, NOW - 30 * H, 50, 2, 0), // past retention
            seg(2, NOW - 10 * H, 50, 0, 0), // uploaded
            seg(3, NOW - 9 * H, 50, 4, 0),
            seg(4, NOW - 8 * H, 50, 4, 0),
            seg(5, NOW - 7 * H, 50, 4, 0),
        ];
        let d = decide(&segs, &limits(24, true, Some(100), Oldest), NOW, false);
        assert_eq!(
            d.delete,
            [
                (1, Reason::Retention),
                (2, Reason::Uploaded),
                (3, Reason::SizeLimit)
            ]
        );
        assert_eq!(d.usage_after, 100 * MB);
    }

    #[test]
    fn limits_apply_the_api_defaults() {
        let json = include_str!("../../../config/example-edge-configuration.json");
        let mut r = crate::edge_config::parse_start_request(json).unwrap();
        let l = Limits::of(&r.edge_config);
        assert_eq!(l.retention_ms, 15 * H);
        assert_eq!(l.max_bytes, Some(2800 * MB));
        assert_eq!(l.strategy, Oldest);
        r.edge_config.deletion_config = None;
        let l = Limits::of(&r.edge_config);
        assert_eq!(l.retention_ms, 720 * H);
        assert!(l.delete_after_upload);
        assert_eq!(l.max_bytes, None);
    }

    #[test]
    fn disk_reserve_takes_the_larger_floor() {
        let r = DiskReserve::default();
        let gib = 1u64 << 30;
        assert_eq!(r.floor(10 * gib), gib, "1 GiB beats 5 % of 10 GiB");
        assert_eq!(r.floor(100 * gib), 5 * gib, "5 % of 100 GiB beats 1 GiB");
        assert!(r.must_pause(gib - 1, 10 * gib));
        assert!(!r.must_pause(gib, 10 * gib));
        let none = DiskReserve {
            min_free_bytes: 0,
            min_free_percent: 0,
        };
        assert!(!none.must_pause(0, 10 * gib));
    }
}
