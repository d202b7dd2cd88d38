//! What a stream's uploader sends next (design/uploads.md, "Order"): live first, then the
//! requested ranges oldest request first, then the scheduled backlog while its window is open.
//! Pure: the job asks at every session start, and a running session asks again whenever a
//! request comes or ends, so the live edge never waits behind a backlog.

use crate::catalog::{RequestKind, RequestRow};

/// How the scheduled backlog is ordered across sessions (`uploader.backlog_order`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BacklogOrder {
    /// The seed's order: oldest first.
    #[default]
    Oldest,
    /// Newest first, in chunks of [`NEWEST_FIRST_CHUNK_MS`] each sent forward in time.
    Newest,
}

/// A run's scheduled backlog while its window is open (`None` in the run's gate: closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backlog {
    pub order: BacklogOrder,
    /// Until nothing is pending (the hourly run without a schedule), then closed.
    pub until_empty: bool,
}

/// A newest-first backlog goes back this far per session: each session sends forward from
/// there (a session's timecodes only increase), the next one starts further back.
pub const NEWEST_FIRST_CHUNK_MS: i64 = 5 * 60 * 1000;

/// A range is complete once media is recorded past its end, or this long after its end (the
/// fragment in flight at the end has been committed by then, or there is none).
pub const RANGE_GRACE_MS: i64 = 30_000;

/// The work of one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    Request(RequestRow),
    Backlog(BacklogOrder),
}

impl Work {
    /// The request served, if any.
    pub fn request(&self) -> Option<&RequestRow> {
        match self {
            Work::Request(r) => Some(r),
            Work::Backlog(_) => None,
        }
    }

    /// The time range a session of this work sends (`None`: all pending).
    pub fn range(&self) -> Option<(i64, i64)> {
        self.request().map(|r| (r.start_ms, r.end_ms))
    }

    /// Whether the two are the same work (a request by id, whatever its counters say).
    pub fn same(&self, other: &Work) -> bool {
        match (self, other) {
            (Work::Request(a), Work::Request(b)) => a.id == b.id,
            (a, b) => a == b,
        }
    }
}

/// The open live requests whose time is up at `now_ms`: to be ended before choosing.
pub fn expired(open: &[RequestRow], now_ms: i64) -> Vec<i64> {
    open.iter()
        .filter(|r| r.kind == RequestKind::Live && now_ms >= r.end_ms)
        .map(|r| r.id)
        .collect()
}

/// The work to do now: an open live request, else the oldest open range, else the backlog when
/// `backlog` (its window is open) says so. `open` holds only open requests, oldest first.
pub fn choose(open: &[RequestRow], now_ms: i64, backlog: Option<BacklogOrder>) -> Option<Work> {
    let live = open
        .iter()
        .rfind(|r| r.kind == RequestKind::Live && now_ms < r.end_ms);
    let range = || open.iter().find(|r| r.kind == RequestKind::Range);
    live.or_else(range)
        .map(|r| Work::Request(r.clone()))
        .or(backlog.map(Work::Backlog))
}

/// Whether a range request has all its media once nothing of it is pending: something was
/// recorded past its end (so its last fragment is committed), or its grace has passed.
pub fn range_complete(end_ms: i64, recorded_until: Option<i64>, now_ms: i64) -> bool {
    recorded_until.is_some_and(|t| t >= end_ms) || now_ms >= end_ms + RANGE_GRACE_MS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::RequestState;

    fn req(id: i64, kind: RequestKind, start_ms: i64, end_ms: i64) -> RequestRow {
        RequestRow {
            id,
            stream_name: "cam".into(),
            request_id: format!("r{id}"),
            kind,
            start_ms,
            end_ms,
            state: RequestState::Queued,
            already: 0,
            uploaded: 0,
            failed: 0,
            details: None,
            requested_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn live_comes_before_ranges_and_ranges_before_the_backlog() {
        let range1 = req(1, RequestKind::Range, 0, 10);
        let range2 = req(2, RequestKind::Range, 20, 30);
        let live = req(3, RequestKind::Live, 100, 700);
        let backlog = Some(BacklogOrder::Oldest);
        let all = [range1.clone(), range2.clone(), live.clone()];
        assert_eq!(choose(&all, 200, backlog), Some(Work::Request(live)));
        assert_eq!(
            choose(&all[..2], 200, backlog),
            Some(Work::Request(range1.clone())),
            "ranges oldest request first"
        );
        assert_eq!(
            choose(&[], 200, backlog),
            Some(Work::Backlog(BacklogOrder::Oldest))
        );
        assert_eq!(
            choose(&[], 200, None),
            None,
            "no window, no request: nothing"
        );
        assert_eq!(choose(&all[..1], 200, None), Some(Work::Request(range1)));
    }

    #[test]
    fn an_expired_live_request_is_not_chosen_and_is_ended() {
        let live = req(3, RequestKind::Live, 100, 700);
        let range = req(4, RequestKind::Range, 0, 10);
        let open = [live.clone(), range.clone()];
        assert_eq!(expired(&open, 699), Vec::<i64>::new());
        assert_eq!(expired(&open, 700), vec![3]);
        assert_eq!(choose(&open, 700, None), Some(Work::Request(range)));
    }

    #[test]
    fn a_range_is_complete_once_recorded_past_or_after_its_grace() {
        assert!(!range_complete(10_000, Some(9_000), 20_000));
        assert!(range_complete(10_000, Some(10_000), 10_001));
        assert!(!range_complete(10_000, None, 10_000 + RANGE_GRACE_MS - 1));
        assert!(range_complete(10_000, None, 10_000 + RANGE_GRACE_MS));
    }

    #[test]
    fn work_is_the_same_by_request_id_not_by_counters() {
        let a = req(1, RequestKind::Range, 0, 10);
        let mut b = a.clone();
        b.state = RequestState::Uploading;
        assert!(Work::Request(a.clone()).same(&Work::Request(b)));
        assert!(!Work::Request(a).same(&Work::Backlog(BacklogOrder::Oldest)));
        assert!(!Work::Backlog(BacklogOrder::Oldest).same(&Work::Backlog(BacklogOrder::Newest)));
    }
}
