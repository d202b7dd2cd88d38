//! The schedule module through its public API: the seed FAQ's schedule table, each Quartz
//! syntax feature (expected values produced by Quartz 2.3.2), windows and the driver with a
//! simulated clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use kvs_edge_agent::clock::{Clock, SimulatedClock, Sleep};
use kvs_edge_agent::schedule::{
    CronSchedule, Plan, PlanState, ScheduleDriver, Transition, Window, Windows,
};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn cron(expr: &str) -> CronSchedule {
    CronSchedule::parse_with_max_year(expr, 2126).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

fn nexts(expr: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
    let tz = TimeZone::get(zone).unwrap();
    let c = cron(expr);
    let mut t = ts(from);
    let mut out = Vec::new();
    for _ in 0..n {
        let Some(f) = c.next_after(t, &tz) else { break };
        out.push(f.to_string());
        t = f;
    }
    out
}

fn windows(expr: &str, secs: u64, zone: &str) -> Windows {
    Windows::new(
        cron(expr),
        Duration::from_secs(secs),
        TimeZone::get(zone).unwrap(),
    )
}

fn active(w: &Windows, at: &str) -> bool {
    w.window_at(ts(at)).is_some()
}

// 2026-11-27 is a Friday, 11-28 Saturday, 11-29 Sunday, 11-30 Monday.

#[test]
fn faq_9_to_5_every_day() {
    let w = windows("0 0 9-16 * * ? *", 3599, "UTC");
    assert!(active(&w, "2026-11-28T09:00:00Z"));
    assert!(active(&w, "2026-11-29T16:59:58Z"));
    assert!(
        !active(&w, "2026-11-29T16:59:59Z"),
        "the window ends before 17:00"
    );
    assert!(!active(&w, "2026-11-29T08:59:59Z"));
    assert!(!active(&w, "2026-11-29T17:00:00Z"));
    assert_eq!(
        w.window_at(ts("2026-11-28T10:30:00Z")),
        Some(Window {
            start: ts("2026-11-28T10:00:00Z"),
            end: ts("2026-11-28T10:59:59Z")
        })
    );
}

#[test]
fn faq_9_to_5_weekdays_all_spellings() {
    for expr in [
        "0 0 9-16 ? * 2-6 *",
        "0 0 9-16 ? * 2,3,4,5,6 *",
        "0 0 9-16 ? * MON-FRI *",
        "0 0 9-16 ? * MON,TUE,WED,THU,FRI *",
    ] {
        let w = windows(expr, 3599, "UTC");
        assert!(active(&w, "2026-11-27T10:30:00Z"), "{expr} on Friday");
        assert!(active(&w, "2026-11-30T09:00:00Z"), "{expr} on Monday");
        assert!(!active(&w, "2026-11-28T10:30:00Z"), "{expr} on Saturday");
        assert!(!active(&w, "2026-11-29T10:30:00Z"), "{expr} on Sunday");
        assert_eq!(
            nexts(expr, "UTC", "2026-11-27T16:30:00Z", 2),
            ["2026-11-30T09:00:00Z", "2026-11-30T10:00:00Z"],
            "{expr}"
        );
    }
}

#[test]
fn faq_9_to_5_weekends() {
    let w = windows("0 0 9-16 ? * SAT,SUN *", 3599, "UTC");
    assert!(active(&w, "2026-11-28T12:00:00Z"));
    assert!(active(&w, "2026-11-29T16:00:00Z"));
    assert!(!active(&w, "2026-11-27T12:00:00Z"));
    assert!(!active(&w, "2026-11-30T12:00:00Z"));
}

#[test]
fn faq_10_to_midnight_weekdays() {
    let w = windows("0 0 22,23 ? * MON-FRI *", 3599, "UTC");
    assert!(active(&w, "2026-11-27T22:30:00Z"));
    assert!(active(&w, "2026-11-27T23:59:58Z"));
    assert!(!active(&w, "2026-11-27T21:59:59Z"));
    assert!(!active(&w, "2026-11-28T22:30:00Z"), "Saturday");
}

#[test]
fn faq_9_to_10_every_day() {
    let w = windows("0 0 9 * * ? *", 3600, "UTC");
    assert!(active(&w, "2026-11-28T09:00:00Z"));
    assert!(active(&w, "2026-11-28T09:59:59Z"));
    assert!(!active(&w, "2026-11-28T10:00:00Z"));
}

#[test]
fn faq_4_to_6_pm_every_day() {
    let w = windows("0 0 16-17 * * ? *", 3599, "UTC");
    assert!(active(&w, "2026-11-28T16:00:00Z"));
    assert!(active(&w, "2026-11-28T17:30:00Z"));
    assert!(!active(&w, "2026-11-28T15:59:59Z"));
    assert!(!active(&w, "2026-11-28T18:00:00Z"));
}

#[test]
fn faq_null_schedule_records_always_and_uploads_hourly() {
    let tz = TimeZone::get("Asia/Kolkata").unwrap();
    let recorder = Plan::from_schedule(None, tz.clone(), Plan::Always);
    assert_eq!(
        recorder.state_at(ts("2026-11-28T03:17:00Z")),
        PlanState::Active { until: None }
    );
    let uploader = Plan::from_schedule(None, tz.clone(), Plan::Hourly(tz));
    // Local time is UTC+05:30, so the local hour boundary is at :30 UTC.
    assert_eq!(
        uploader.state_at(ts("2026-11-28T03:17:00Z")),
        PlanState::Idle {
            next: Some(ts("2026-11-28T03:30:00Z"))
        }
    );
}

/// Expected values produced by Quartz 2.3.2 (from 2026-11-25T00:00:00Z, a Wednesday).
#[test]
fn syntax_features_match_quartz() {
    let from = "2026-11-25T00:00:00Z";
    let cases: &[(&str, &[&str])] = &[
        (
            "* * * * * ?",
            &["2026-11-25T00:00:01Z", "2026-11-25T00:00:02Z"],
        ),
        (
            "0 0 1,13 * * ?",
            &[
                "2026-11-25T01:00:00Z",
                "2026-11-25T13:00:00Z",
                "2026-11-26T01:00:00Z",
            ],
        ),
        (
            "0 0 9-10 * * ?",
            &[
                "2026-11-25T09:00:00Z",
                "2026-11-25T10:00:00Z",
                "2026-11-26T09:00:00Z",
            ],
        ),
        (
            "0 0 22-2 * * ?",
            &[
                "2026-11-25T01:00:00Z",
                "2026-11-25T02:00:00Z",
                "2026-11-25T22:00:00Z",
                "2026-11-25T23:00:00Z",
                "2026-11-26T00:00:00Z",
            ],
        ),
        (
            "0 0 12 ? * FRI-MON",
            &[
                "2026-11-27T12:00:00Z",
                "2026-11-28T12:00:00Z",
                "2026-11-29T12:00:00Z",
                "2026-11-30T12:00:00Z",
                "2026-12-04T12:00:00Z",
            ],
        ),
        (
            "0 0 12 1 NOV-FEB ?",
            &[
                "2026-12-01T12:00:00Z",
                "2027-01-01T12:00:00Z",
                "2027-02-01T12:00:00Z",
                "2027-11-01T12:00:00Z",
            ],
        ),
        (
            "0 5/15 * * * ?",
            &[
                "2026-11-25T00:05:00Z",
                "2026-11-25T00:20:00Z",
                "2026-11-25T00:35:00Z",
                "2026-11-25T00:50:00Z",
                "2026-11-25T01:05:00Z",
            ],
        ),
        (
            "0 */20 * * * ?",
            &[
                "2026-11-25T00:20:00Z",
                "2026-11-25T00:40:00Z",
                "2026-11-25T01:00:00Z",
            ],
        ),
        (
            "0 0 0 1/7 * ?",
            &[
                "2026-11-29T00:00:00Z",
                "2026-12-01T00:00:00Z",
                "2026-12-08T00:00:00Z",
            ],
        ),
        (
            "0 0 12 ? JAN,MAR SUN",
            &["2027-01-03T12:00:00Z", "2027-01-10T12:00:00Z"],
        ),
        (
            "0 0 12 ? jan,mar sun",
            &["2027-01-03T12:00:00Z", "2027-01-10T12:00:00Z"],
        ),
        (
            "0 0 12 ? * 1",
            &["2026-11-29T12:00:00Z", "2026-12-06T12:00:00Z"],
        ),
        (
            "0 0 12 ? * SAT,SUN",
            &["2026-11-28T12:00:00Z", "2026-11-29T12:00:00Z"],
        ),
        (
            "0 0 0 L * ?",
            &[
                "2026-11-30T00:00:00Z",
                "2026-12-31T00:00:00Z",
                "2027-01-31T00:00:00Z",
            ],
        ),
        (
            "0 0 0 L-3 * ?",
            &[
                "2026-11-27T00:00:00Z",
                "2026-12-28T00:00:00Z",
                "2027-01-28T00:00:00Z",
            ],
        ),
        (
            "0 0 0 LW * ?",
            &[
                "2026-11-30T00:00:00Z",
                "2026-12-31T00:00:00Z",
                "2027-01-29T00:00:00Z",
            ],
        ),
        (
            "0 0 0 15W * ?",
            &[
                "2026-12-15T00:00:00Z",
                "2027-01-15T00:00:00Z",
                "2027-02-15T00:00:00Z",
            ],
        ),
        (
            "0 0 0 ? * 6L",
            &[
                "2026-11-27T00:00:00Z",
                "2026-12-25T00:00:00Z",
                "2027-01-29T00:00:00Z",
            ],
        ),
        (
            "0 0 0 ? * 6#5",
            &[
                "2027-01-29T00:00:00Z",
                "2027-04-30T00:00:00Z",
                "2027-07-30T00:00:00Z",
            ],
        ),
        (
            "0 0 0 1 1 ? 2028-2029",
            &["2028-01-01T00:00:00Z", "2029-01-01T00:00:00Z"],
        ),
    ];
    for (expr, want) in cases {
        assert_eq!(
            nexts(expr, "UTC", from, want.len() + 1)[..want.len()],
            want[..],
            "{expr}"
        );
    }
    // The year field ends the schedule.
    assert_eq!(nexts("0 0 0 1 1 ? 2028-2029", "UTC", from, 5).len(), 2);
    // 1W when the 1st is a Saturday (August 2026) moves forward to Monday the 3rd.
    assert_eq!(
        nexts("0 0 0 1W * ?", "UTC", "2026-07-15T00:00:00Z", 2),
        ["2026-08-03T00:00:00Z", "2026-09-01T00:00:00Z"]
    );
}

#[test]
fn rejects_what_quartz_rejects_with_the_reason() {
    let cases = [
        ("0 0 12 1 * MON", "both a day-of-week AND a day-of-month"),
        ("0 0 12 * * *", "both a day-of-week AND a day-of-month"),
        (
            "0 0 12 ? * ?",
            "'?' can only be specified for Day-of-Month -OR- Day-of-Week",
        ),
        ("0 0 24 * * ?", "Hour values must be between 0 and 23"),
        (
            "0 60 0 * * ?",
            "Minute and Second values must be between 0 and 59",
        ),
        (
            "0 0 12 32 * ?",
            "Day of month values must be between 1 and 31",
        ),
        (
            "0 0 0 0/7 * ?",
            "Day of month values must be between 1 and 31",
        ),
        ("0 0 12 * 13 ?", "Month values must be between 1 and 12"),
        ("0 0 12 ? * 8", "Day-of-Week values must be between 1 and 7"),
        ("0 0 12 ? * 6#6", "between 1 and 5 must follow the '#'"),
        ("0 0 12 L,15 * ?", "'L' and 'LW' with other days"),
        ("0 0 12 ? FOO *", "Invalid Month value: 'FOO'"),
        ("0 */61 * * * ?", "Increment > 60"),
        ("0 0 12 * *", "Unexpected end of expression"),
        (
            "0 0 12 * * ? 2030-2020",
            "Start year must be less than stop year",
        ),
    ];
    for (expr, reason) in cases {
        let err = CronSchedule::parse(expr).expect_err(expr);
        assert!(err.reason.contains(reason), "{expr}: {}", err.reason);
    }
}

#[test]
fn dst_skipped_time_does_not_fire_and_repeated_time_fires_once() {
    // 2026-03-08: New York skips 02:00-03:00.
    assert_eq!(
        nexts(
            "0 30 2 * * ?",
            "America/New_York",
            "2026-03-06T12:00:00Z",
            3
        ),
        [
            "2026-03-07T07:30:00Z",
            "2026-03-09T06:30:00Z",
            "2026-03-10T06:30:00Z"
        ]
    );
    // 2026-11-01: 01:00-02:00 happens twice; Quartz fires once, on the second (EST) pass.
    assert_eq!(
        nexts(
            "0 30 1 * * ?",
            "America/New_York",
            "2026-10-31T00:00:00Z",
            3
        ),
        [
            "2026-10-31T05:30:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-02T06:30:00Z"
        ]
    );
}

#[test]
fn previous_fire_is_consistent_with_next() {
    let tz = TimeZone::get("Europe/London").unwrap();
    for expr in [
        "0 0 9-16 ? * MON-FRI *",
        "0 0 0 L * ?",
        "0 15 10 ? * 6#3",
        "*/7 * * * * ?",
    ] {
        let c = cron(expr);
        let mut t = ts("2026-03-20T00:00:00Z");
        for _ in 0..5 {
            let f = c.next_after(t, &tz).unwrap();
            assert_eq!(
                c.previous_at_or_before(f, &tz),
                Some(f),
                "{expr} at a fire time"
            );
            let just_before = f - jiff::SignedDuration::from_secs(1);
            let p = c.previous_at_or_before(just_before, &tz).unwrap();
            assert!(
                p < f && c.next_after(p, &tz) == Some(f),
                "{expr}: {p} then {f}"
            );
            t = f;
        }
    }
}

#[test]
fn windows_merge_when_they_overlap_or_touch() {
    // Every 30 minutes from 09:00 to 10:30, for 40 minutes each: one window, 09:00 to 11:10.
    let w = windows("0 0/30 9-10 * * ?", 2400, "UTC");
    let want = Window {
        start: ts("2026-11-28T09:00:00Z"),
        end: ts("2026-11-28T11:10:00Z"),
    };
    assert_eq!(w.window_at(ts("2026-11-28T09:10:00Z")), Some(want));
    assert_eq!(w.window_at(ts("2026-11-28T10:45:00Z")), Some(want));
    assert_eq!(w.window_at(ts("2026-11-28T11:10:00Z")), None);
    // Touching hourly windows of an hour merge into one.
    let w = windows("0 0 9-16 ? * MON-FRI *", 3600, "UTC");
    assert_eq!(
        w.window_at(ts("2026-11-27T12:00:00Z")),
        Some(Window {
            start: ts("2026-11-27T09:00:00Z"),
            end: ts("2026-11-27T17:00:00Z")
        })
    );
    assert_eq!(
        w.next_window_after(ts("2026-11-27T12:00:00Z")),
        Some(Window {
            start: ts("2026-11-30T09:00:00Z"),
            end: ts("2026-11-30T17:00:00Z")
        })
    );
    let listed: Vec<Window> = w.windows_from(ts("2026-11-27T12:00:00Z")).take(2).collect();
    assert_eq!(listed[1].start, ts("2026-11-30T09:00:00Z"));
}

#[test]
fn windows_across_dst() {
    // London 2026-03-29: 01:00 local does not exist; a 01:30 window is skipped that day and
    // the 00:30 one still lasts an hour of real time.
    let w = windows("0 30 0,1 * * ?", 1800, "Europe/London");
    assert!(active(&w, "2026-03-29T00:45:00Z"));
    assert!(!active(&w, "2026-03-29T01:15:00Z"));
    assert_eq!(
        w.next_window_after(ts("2026-03-29T00:45:00Z"))
            .map(|x| x.start),
        Some(ts("2026-03-29T23:30:00Z")),
        "next is 00:30 BST on the 30th"
    );
}

/// A simulated clock that records each sleep and steps the wall clock on chosen sleeps.
struct JumpingClock {
    clock: SimulatedClock,
    /// (sleep number, wall time to jump to after it).
    jumps: Mutex<VecDeque<(usize, Timestamp)>>,
    sleeps: Mutex<Vec<Duration>>,
}

impl JumpingClock {
    fn new(clock: &SimulatedClock, jumps: &[(usize, &str)]) -> Arc<Self> {
        Arc::new(JumpingClock {
            clock: clock.clone(),
            jumps: Mutex::new(jumps.iter().map(|(n, t)| (*n, ts(t))).collect()),
            sleeps: Mutex::new(Vec::new()),
        })
    }
}

impl Clock for JumpingClock {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn monotonic(&self) -> Duration {
        self.clock.monotonic()
    }

    fn sleep(&self, d: Duration) -> Sleep {
        let mut sleeps = self.sleeps.lock().unwrap();
        sleeps.push(d);
        let slept = self.clock.sleep(d);
        let mut jumps = self.jumps.lock().unwrap();
        if jumps.front().is_some_and(|(n, _)| *n == sleeps.len()) {
            let (_, to) = jumps.pop_front().unwrap();
            self.clock.jump(to);
        }
        slept
    }
}

fn driver(plan: Plan, sleeper: Arc<JumpingClock>) -> ScheduleDriver {
    ScheduleDriver::new(plan, sleeper)
}

#[tokio::test]
async fn driver_starts_at_once_inside_a_window_and_stops_at_its_end() {
    let clock = SimulatedClock::new(ts("2026-11-27T10:20:00Z"));
    let sleeper = JumpingClock::new(&clock, &[]);
    let plan = Plan::Windows(windows("0 0 9-16 ? * MON-FRI *", 1800, "UTC"));
    let mut d = driver(plan, sleeper.clone());
    assert_eq!(
        d.next_transition().await,
        Transition::Start {
            until: Some(ts("2026-11-27T10:30:00Z"))
        }
    );
    assert_eq!(
        clock.now(),
        ts("2026-11-27T10:20:00Z"),
        "no waiting when inside a window"
    );
    assert_eq!(d.next_transition().await, Transition::Stop);
    assert_eq!(
        clock.now(),
        ts("2026-11-27T10:30:00Z"),
        "stopped exactly at the end"
    );
    assert_eq!(
        d.next_transition().await,
        Transition::Start {
            until: Some(ts("2026-11-27T11:30:00Z"))
        }
    );
    assert_eq!(clock.now(), ts("2026-11-27T11:00:00Z"));
    // Sleeps are capped at a minute: a clock step is noticed within that.
    assert!(
        sleeper
            .sleeps
            .lock()
            .unwrap()
            .iter()
            .all(|s| *s <= Duration::from_secs(60))
    );
}

#[tokio::test]
async fn driver_handles_clock_jumps() {
    // Idle before a 09:00 window; the clock steps forward into the window, then back out of it.
    let clock = SimulatedClock::new(ts("2026-11-27T07:00:00Z"));
    let sleeper = JumpingClock::new(
        &clock,
        &[(3, "2026-11-27T09:30:00Z"), (4, "2026-11-27T08:00:00Z")],
    );
    let plan = Plan::Windows(windows("0 0 9 * * ?", 3600, "UTC"));
    let mut d = driver(plan, sleeper.clone());
    assert_eq!(
        d.next_transition().await,
        Transition::Start {
            until: Some(ts("2026-11-27T10:00:00Z"))
        }
    );
    assert_eq!(
        clock.now(),
        ts("2026-11-27T09:30:00Z"),
        "started after the forward step"
    );
    assert_eq!(d.next_transition().await, Transition::Stop);
    assert!(
        clock.now() < ts("2026-11-27T09:00:00Z"),
        "stopped after the backward step"
    );
    assert_eq!(
        d.next_transition().await,
        Transition::Start {
            until: Some(ts("2026-11-27T10:00:00Z"))
        }
    );
    assert_eq!(clock.now(), ts("2026-11-27T09:00:00Z"));
}

#[tokio::test]
async fn driver_runs_hourly_uploads_at_start_and_on_the_hour() {
    let tz = TimeZone::get("Australia/Lord_Howe").unwrap();
    let clock = SimulatedClock::new(ts("2026-11-27T10:20:00Z"));
    let sleeper = JumpingClock::new(&clock, &[]);
    let mut d = driver(Plan::Hourly(tz), sleeper);
    assert_eq!(d.next_transition().await, Transition::Start { until: None });
    assert_eq!(clock.now(), ts("2026-11-27T10:20:00Z"), "a run at start");
    assert_eq!(d.next_transition().await, Transition::Start { until: None });
    // Lord Howe is UTC+11 in summer: local hours fall on the UTC hour.
    assert_eq!(clock.now(), ts("2026-11-27T11:00:00Z"));
    assert_eq!(d.next_transition().await, Transition::Start { until: None });
    assert_eq!(clock.now(), ts("2026-11-27T12:00:00Z"));
}

#[tokio::test]
async fn driver_always_starts_once() {
    let clock = SimulatedClock::new(ts("2026-11-27T10:20:00Z"));
    let mut d = driver(Plan::Always, JumpingClock::new(&clock, &[]));
    assert_eq!(d.next_transition().await, Transition::Start { until: None });
    let more = tokio::time::timeout(Duration::from_millis(20), d.next_transition()).await;
    assert!(more.is_err(), "no further transition");
}
