//! One PutMedia session's bookkeeping, free of I/O: which fragments went out on it, what each
//! acknowledgement means for them, and how the session ended.
//!
//! The sender reports [`Ledger::on_started`] / [`Ledger::on_sent`] / [`Ledger::on_finished`],
//! the ack reader feeds [`Ledger::on_ack`] and applies the [`Effect`]s it returns (catalog
//! writes), and [`Ledger::end`] turns what happened into a [`SessionEnd`]. `putmedia.rs` is the
//! thin I/O loop around it; every ack order the seed and PIC allow is unit-tested here.
//!
//! Rules, after the seed's PutMedia page and PIC's `StreamEvent.c`:
//! - only PERSISTED with a FragmentNumber marks a fragment uploaded; it wins over an earlier
//!   ERROR for the same fragment (the service has it, so sending it again would duplicate it);
//! - acks are matched by FragmentTimecode; an ack for a fragment this session did not send is
//!   logged and ignored;
//! - any ERROR halts sending after the fragment in flight; 4008 and 4507 end the job, the
//!   transient ids resend later, the others fail their fragment (an ERROR without a known
//!   timecode is charged to the oldest unresolved fragment started);
//! - BUFFERING, RECEIVED, IDLE and unknown events change nothing.

use std::collections::HashMap;

use super::ack::{Ack, AckEventType, ErrorClass, classify, error_name};
use crate::catalog::FragmentRow;

/// Why the sender stopped sending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SenderEnd {
    /// Nothing more was pending (a run that ends when the backlog is sent).
    CaughtUp,
    /// The job was asked to stop (a window's end, a configuration change, shutdown).
    Stopped,
    /// The session reached its age or credential limit.
    Rotated,
    /// The next fragment cannot follow in this session: it has another CodecPrivate or picture
    /// size (a new header), or starts before the last one ended (the wall clock stepped back).
    NewSession,
    /// No new fragment came for a while (the service closes a request 30 s after its last
    /// data).
    Idle,
    /// The ack reader asked it to stop (an ERROR ack, a catalog failure).
    Halted,
    /// A fragment could not be read from disk.
    ReadError,
    /// The connection went away under it.
    Closed,
}

/// How the response side ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseEnd {
    /// Every sent fragment was resolved and the body was ended.
    Settled,
    /// The service ended the response.
    Ended,
    /// The wait for the last acknowledgements after a stop ran out.
    DrainTimeout,
    /// No byte came for the ack timeout.
    Silent,
    /// The connection failed.
    Lost(String),
}

/// Why a session ended, as the job sees it.
#[derive(Debug)]
pub enum SessionEnd {
    /// The backlog was sent and acknowledged.
    Done,
    /// A stop request ended sending; acked fragments are marked, the rest stay pending.
    Stopped,
    /// The session reached its age or credential limit; continue on a new one at once.
    Rotated,
    /// The codec changed or the time went back; continue on a new session at once.
    NewSession,
    /// No new fragment for a while; a new session starts with the next one.
    Idle,
    /// A fragment was rejected for good (marked failed); continue at once.
    FragmentFailed,
    /// Transient failure: resend from the first unpersisted fragment after a backoff.
    /// `connection` when the connection itself failed (the endpoint is looked up again).
    Retry { reason: String, connection: bool },
    /// 4008 or 4507: the stream is gone; the text names which.
    StreamGone(String),
    /// The request itself was refused (HTTP status other than 200).
    Refused(super::UploadError),
}

/// What the I/O loop must do after an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Mark the fragment uploaded with the service's number (commit at once).
    Uploaded {
        fragment: FragmentRow,
        number: String,
    },
    /// Mark the fragment failed for good.
    Failed { fragment: FragmentRow, what: String },
    /// Stop sending after the fragment in flight.
    Halt,
    /// Nothing to do, but worth a warning.
    Warn(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Its first byte is out.
    Sending,
    /// Its last byte is out.
    Sent,
    Persisted,
    Failed,
}

#[derive(Debug)]
struct Entry {
    fragment: FragmentRow,
    state: State,
}

/// Why sending must stop, first reason kept.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Halt {
    Retry(String),
    StreamGone(String),
    FragmentFailed,
}

/// The account of one session.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: Vec<Entry>,
    by_timecode: HashMap<i64, usize>,
    halt: Option<Halt>,
    finished: Option<SenderEnd>,
    read_error: bool,
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// The first byte of `fragment` is about to go out; returns its index.
    pub fn on_started(&mut self, fragment: FragmentRow) -> usize {
        let i = self.entries.len();
        self.by_timecode.insert(fragment.timecode_ms, i);
        self.entries.push(Entry {
            fragment,
            state: State::Sending,
        });
        i
    }

    /// The last byte of fragment `i` is out.
    pub fn on_sent(&mut self, i: usize) {
        if let Some(e) = self.entries.get_mut(i)
            && e.state == State::Sending
        {
            e.state = State::Sent;
        }
    }

    /// Fragment `i` could not be read from disk: it is failed, and sending stops.
    pub fn on_read_error(&mut self, i: usize, error: &str) -> Vec<Effect> {
        self.read_error = true;
        let mut out = self.fail(i, &format!("local read error: {error}"));
        self.halt_with(Halt::FragmentFailed, &mut out);
        out
    }

    /// The sender is done (no more clusters will be sent on this session).
    pub fn on_finished(&mut self, how: SenderEnd) {
        self.finished.get_or_insert(how);
    }

    /// The catalog could not record an ack: stop and resend later.
    pub fn on_catalog_error(&mut self, error: &str) -> Vec<Effect> {
        let mut out = Vec::new();
        self.halt_with(Halt::Retry(format!("catalog: {error}")), &mut out);
        out
    }

    pub fn on_ack(&mut self, ack: &Ack) -> Vec<Effect> {
        let index = ack
            .fragment_timecode
            .and_then(|t| self.by_timecode.get(&t).copied());
        match ack.event {
            AckEventType::Persisted => self.persisted(index, ack),
            AckEventType::Error => self.error(index, ack),
            _ => Vec::new(),
        }
    }

    fn persisted(&mut self, index: Option<usize>, ack: &Ack) -> Vec<Effect> {
        let (Some(i), Some(number)) = (index, ack.fragment_number.as_ref()) else {
            return vec![Effect::Warn(format!(
                "PERSISTED for no fragment of this session: {ack:?}"
            ))];
        };
        let e = &mut self.entries[i];
        if e.state == State::Persisted {
            return Vec::new();
        }
        e.state = State::Persisted;
        vec![Effect::Uploaded {
            fragment: e.fragment.clone(),
            number: number.clone(),
        }]
    }

    fn error(&mut self, index: Option<usize>, ack: &Ack) -> Vec<Effect> {
        let id = ack.error_id.unwrap_or(0);
        let what = match &ack.error_code {
            Some(code) if code != error_name(id) => format!("{id} {} ({code})", error_name(id)),
            _ => format!("{id} {}", error_name(id)),
        };
        let mut out = Vec::new();
        match classify(id) {
            ErrorClass::Retry => self.halt_with(Halt::Retry(format!("error ack {what}")), &mut out),
            ErrorClass::StreamGone => self.halt_with(Halt::StreamGone(what), &mut out),
            ErrorClass::FailFragment => {
                // An error without a known timecode is about the oldest fragment in doubt.
                let target = index.or_else(|| self.oldest_unresolved());
                match target {
                    Some(i) => out.extend(self.fail(i, &what)),
                    None => out.push(Effect::Warn(format!("ERROR {what} for no fragment sent"))),
                }
                self.halt_with(Halt::FragmentFailed, &mut out);
            }
        }
        out
    }

    fn fail(&mut self, i: usize, what: &str) -> Vec<Effect> {
        let Some(e) = self.entries.get_mut(i) else {
            return Vec::new();
        };
        if matches!(e.state, State::Persisted | State::Failed) {
            return Vec::new();
        }
        e.state = State::Failed;
        vec![Effect::Failed {
            fragment: e.fragment.clone(),
            what: what.to_owned(),
        }]
    }

    fn halt_with(&mut self, why: Halt, out: &mut Vec<Effect>) {
        if self.halt.is_none() {
            self.halt = Some(why);
            out.push(Effect::Halt);
        } else if let (Some(Halt::FragmentFailed), Halt::StreamGone(_) | Halt::Retry(_)) =
            (&self.halt, &why)
        {
            // A graver reason replaces a rejected fragment (sending has stopped already).
            self.halt = Some(why);
        }
    }

    fn oldest_unresolved(&self) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| matches!(e.state, State::Sending | State::Sent))
    }

    /// Whether sending must stop.
    pub fn halted(&self) -> bool {
        self.halt.is_some()
    }

    /// How the sender ended, once it has.
    pub fn finished(&self) -> Option<&SenderEnd> {
        self.finished.as_ref()
    }

    /// Fragments sent (or being sent) and not yet persisted or failed.
    pub fn unresolved(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.state, State::Sending | State::Sent))
            .count()
    }

    /// The sender is done and every fragment it sent is resolved: the body may end.
    pub fn settled(&self) -> bool {
        self.finished.is_some() && self.unresolved() == 0
    }

    pub fn sent(&self) -> usize {
        self.entries.len()
    }

    pub fn persisted_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.state == State::Persisted)
            .count()
    }

    /// How the session ended, given how its response ended. Unresolved fragments stay pending
    /// in every case and are sent again by a later session: a possible duplicate, never a loss.
    pub fn end(&self, response: ResponseEnd) -> SessionEnd {
        if self.read_error {
            return SessionEnd::FragmentFailed;
        }
        match &self.halt {
            Some(Halt::StreamGone(what)) => return SessionEnd::StreamGone(what.clone()),
            Some(Halt::Retry(reason)) => {
                return SessionEnd::Retry {
                    reason: reason.clone(),
                    connection: false,
                };
            }
            Some(Halt::FragmentFailed) | None => {}
        }
        let unresolved = self.unresolved();
        if unresolved > 0 {
            let stopped = self.finished == Some(SenderEnd::Stopped);
            return match response {
                ResponseEnd::Lost(e) => SessionEnd::Retry {
                    reason: format!("connection lost: {e}"),
                    connection: true,
                },
                ResponseEnd::Silent => SessionEnd::Retry {
                    reason: "no acknowledgement in time".into(),
                    connection: true,
                },
                _ if stopped => SessionEnd::Stopped,
                _ => SessionEnd::Retry {
                    reason: format!(
                        "the response ended with {unresolved} of {} sent fragments \
                         unacknowledged",
                        self.sent()
                    ),
                    connection: true,
                },
            };
        }
        if self.halt == Some(Halt::FragmentFailed) {
            return SessionEnd::FragmentFailed;
        }
        match &self.finished {
            Some(SenderEnd::Stopped) => SessionEnd::Stopped,
            Some(SenderEnd::Rotated) => SessionEnd::Rotated,
            Some(SenderEnd::NewSession) => SessionEnd::NewSession,
            Some(SenderEnd::Idle) => SessionEnd::Idle,
            Some(SenderEnd::CaughtUp) => SessionEnd::Done,
            // Everything sent is resolved, but the sender did not end by itself: the
            // connection ended first.
            Some(SenderEnd::Closed | SenderEnd::Halted | SenderEnd::ReadError) | None => {
                match response {
                    ResponseEnd::Lost(e) => SessionEnd::Retry {
                        reason: format!("connection lost: {e}"),
                        connection: true,
                    },
                    _ => SessionEnd::Retry {
                        reason: "the service ended the request".into(),
                        connection: true,
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::UploadState;

    fn row(id: i64) -> FragmentRow {
        FragmentRow {
            id,
            segment_id: 1,
            offset: id as u64 * 100,
            size: 100,
            timecode_ms: 1_000 * id,
            duration_ms: 1_000,
            frame_count: 25,
            key_frame_count: 1,
            upload_state: UploadState::Pending,
            fragment_number: None,
            upload_error: None,
            clock_unsynced: false,
        }
    }

    fn ack(event: AckEventType, id: i64) -> Ack {
        Ack {
            event,
            fragment_timecode: Some(1_000 * id),
            fragment_number: Some(format!("9{id}")),
            error_id: None,
            error_code: None,
        }
    }

    fn error(id: Option<i64>, error_id: u32) -> Ack {
        Ack {
            event: AckEventType::Error,
            fragment_timecode: id.map(|i| 1_000 * i),
            fragment_number: None,
            error_id: Some(error_id),
            error_code: None,
        }
    }

    /// A ledger with fragments 1..=n sent.
    fn sent(n: i64) -> Ledger {
        let mut l = Ledger::new();
        for id in 1..=n {
            let i = l.on_started(row(id));
            l.on_sent(i);
        }
        l
    }

    fn uploaded(effects: &[Effect]) -> Vec<i64> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Uploaded { fragment, .. } => Some(fragment.id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn persisted_marks_uploaded_once_and_settles_the_session() {
        let mut l = sent(2);
        assert_eq!(
            uploaded(&l.on_ack(&ack(AckEventType::Buffering, 1))),
            Vec::<i64>::new()
        );
        assert_eq!(
            uploaded(&l.on_ack(&ack(AckEventType::Received, 1))),
            Vec::<i64>::new()
        );
        assert_eq!(uploaded(&l.on_ack(&ack(AckEventType::Persisted, 1))), [1]);
        assert!(
            l.on_ack(&ack(AckEventType::Persisted, 1)).is_empty(),
            "twice"
        );
        assert!(!l.settled(), "the sender has not finished");
        l.on_finished(SenderEnd::CaughtUp);
        assert!(!l.settled(), "fragment 2 is unresolved");
        assert_eq!(uploaded(&l.on_ack(&ack(AckEventType::Persisted, 2))), [2]);
        assert!(l.settled());
        assert!(matches!(l.end(ResponseEnd::Settled), SessionEnd::Done));
    }

    #[test]
    fn acks_for_fragments_not_sent_are_ignored() {
        let mut l = sent(1);
        let e = l.on_ack(&ack(AckEventType::Persisted, 7));
        assert!(matches!(e.as_slice(), [Effect::Warn(_)]), "{e:?}");
        let mut no_number = ack(AckEventType::Persisted, 1);
        no_number.fragment_number = None;
        assert!(matches!(l.on_ack(&no_number).as_slice(), [Effect::Warn(_)]));
        assert_eq!(l.unresolved(), 1);
    }

    #[test]
    fn idle_and_unknown_events_change_nothing() {
        let mut l = sent(1);
        let idle = Ack {
            event: AckEventType::Idle,
            fragment_timecode: None,
            fragment_number: None,
            error_id: None,
            error_code: None,
        };
        assert!(l.on_ack(&idle).is_empty());
        assert!(
            l.on_ack(&ack(AckEventType::Other("NEW".into()), 1))
                .is_empty()
        );
        assert_eq!(l.unresolved(), 1);
        assert!(!l.halted());
    }

    #[test]
    fn error_then_persisted_ends_uploaded() {
        let mut l = sent(2);
        let e = l.on_ack(&error(Some(1), 4006));
        assert!(e.contains(&Effect::Halt));
        assert!(
            matches!(&e[0], Effect::Failed { fragment, what } if fragment.id == 1 && what == "4006 INVALID_MKV_DATA"),
            "{e:?}"
        );
        assert_eq!(uploaded(&l.on_ack(&ack(AckEventType::Persisted, 1))), [1]);
        l.on_finished(SenderEnd::Halted);
        assert_eq!(l.unresolved(), 1, "fragment 2 is still in doubt");
        assert!(matches!(
            l.end(ResponseEnd::Ended),
            SessionEnd::Retry { .. }
        ));
    }

    #[test]
    fn persisted_then_error_keeps_the_upload() {
        let mut l = sent(1);
        assert_eq!(uploaded(&l.on_ack(&ack(AckEventType::Persisted, 1))), [1]);
        let e = l.on_ack(&error(Some(1), 4002));
        assert!(
            !e.iter().any(|e| matches!(e, Effect::Failed { .. })),
            "{e:?}"
        );
        l.on_finished(SenderEnd::Halted);
        assert!(matches!(
            l.end(ResponseEnd::Ended),
            SessionEnd::FragmentFailed
        ));
    }

    #[test]
    fn an_error_without_timecode_is_charged_to_the_oldest_unresolved() {
        let mut l = sent(3);
        l.on_ack(&ack(AckEventType::Persisted, 1));
        let e = l.on_ack(&error(None, 4010));
        assert!(
            matches!(&e[0], Effect::Failed { fragment, .. } if fragment.id == 2),
            "{e:?}"
        );
    }

    #[test]
    fn transient_errors_resend_and_stream_errors_end_the_job() {
        let mut l = sent(1);
        l.on_ack(&error(Some(1), 5000));
        l.on_finished(SenderEnd::Halted);
        assert!(matches!(
            l.end(ResponseEnd::Ended),
            SessionEnd::Retry {
                connection: false,
                ..
            }
        ));
        let mut l = sent(1);
        l.on_ack(&error(Some(1), 4999));
        assert!(matches!(
            l.end(ResponseEnd::Ended),
            SessionEnd::Retry { .. }
        ));
        for (id, name) in [(4008, "STREAM_NOT_ACTIVE"), (4507, "STREAM_DELETED")] {
            let mut l = sent(1);
            let mut a = error(Some(1), id);
            a.error_code = Some(name.into());
            assert_eq!(l.on_ack(&a), vec![Effect::Halt]);
            match l.end(ResponseEnd::Ended) {
                SessionEnd::StreamGone(what) => assert_eq!(what, format!("{id} {name}")),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_unexpected_error_code_is_kept_beside_the_name() {
        let mut l = sent(1);
        let mut a = error(Some(1), 4001);
        a.error_code = Some("FRAGMENT_TOO_BIG".into());
        let e = l.on_ack(&a);
        assert!(
            matches!(&e[0], Effect::Failed { what, .. } if what == "4001 MAX_FRAGMENT_SIZE_REACHED (FRAGMENT_TOO_BIG)"),
            "{e:?}"
        );
    }

    #[test]
    fn a_stream_error_outranks_a_rejected_fragment() {
        let mut l = sent(2);
        l.on_ack(&error(Some(1), 4006));
        l.on_ack(&error(Some(2), 4008));
        assert!(matches!(
            l.end(ResponseEnd::Ended),
            SessionEnd::StreamGone(_)
        ));
    }

    #[test]
    fn a_cut_between_received_and_persisted_resends() {
        let mut l = sent(2);
        l.on_ack(&ack(AckEventType::Persisted, 1));
        l.on_ack(&ack(AckEventType::Received, 2));
        l.on_finished(SenderEnd::Closed);
        match l.end(ResponseEnd::Lost("reset".into())) {
            SessionEnd::Retry { connection, .. } => assert!(connection),
            other => panic!("{other:?}"),
        }
        assert_eq!(l.persisted_count(), 1);
    }

    #[test]
    fn a_stop_with_acks_outstanding_is_a_stop() {
        let mut l = sent(2);
        l.on_ack(&ack(AckEventType::Persisted, 1));
        l.on_finished(SenderEnd::Stopped);
        assert!(matches!(
            l.end(ResponseEnd::DrainTimeout),
            SessionEnd::Stopped
        ));
        // But silence is a dead connection, even when stopping.
        assert!(matches!(
            l.end(ResponseEnd::Silent),
            SessionEnd::Retry {
                connection: true,
                ..
            }
        ));
    }

    #[test]
    fn each_sender_end_maps_to_its_session_end() {
        let cases = [
            (SenderEnd::Stopped, "Stopped"),
            (SenderEnd::Rotated, "Rotated"),
            (SenderEnd::NewSession, "NewSession"),
            (SenderEnd::Idle, "Idle"),
            (SenderEnd::CaughtUp, "Done"),
        ];
        for (how, want) in cases {
            let mut l = sent(1);
            l.on_ack(&ack(AckEventType::Persisted, 1));
            l.on_finished(how.clone());
            let got = format!("{:?}", l.end(ResponseEnd::Settled));
            assert!(got.starts_with(want), "{how:?}: {got}");
        }
    }

    #[test]
    fn a_response_ending_before_the_sender_is_a_retry() {
        let mut l = sent(1);
        l.on_ack(&ack(AckEventType::Persisted, 1));
        assert!(matches!(
            l.end(ResponseEnd::Ended),
            SessionEnd::Retry {
                connection: true,
                ..
            }
        ));
    }

    #[test]
    fn a_read_error_fails_the_fragment_and_halts() {
        let mut l = Ledger::new();
        let i = l.on_started(row(1));
        let e = l.on_read_error(i, "gone");
        assert!(matches!(&e[0], Effect::Failed { fragment, .. } if fragment.id == 1));
        assert!(e.contains(&Effect::Halt));
        l.on_finished(SenderEnd::ReadError);
        assert!(matches!(
            l.end(ResponseEnd::Ended),
            SessionEnd::FragmentFailed
        ));
    }

    #[test]
    fn a_catalog_failure_halts_and_resends() {
        let mut l = sent(1);
        assert_eq!(l.on_catalog_error("disk I/O error"), vec![Effect::Halt]);
        assert!(l.halted());
        assert!(matches!(
            l.end(ResponseEnd::Ended),
            SessionEnd::Retry {
                connection: false,
                ..
            }
        ));
    }
}
