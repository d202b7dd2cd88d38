//! The timeline on synthetic cameras: arrival times made up from a camera clock rate, network
//! delay, jitter, bursts, pauses and media clock jumps.

use super::*;

/// Wall-clock minus monotonic on the synthetic box.
const WALL: i64 = 1_800_000_000_000;
/// The network's least delay.
const DELAY: i64 = 20;
const NOMINAL: i64 = 40;
/// A key frame a second.
const GOP: i64 = 25;

/// A deterministic generator for jitter (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as i64
    }
}

/// A frame as the synthetic camera sends it: media time, and when it was captured and arrived
/// on the box's monotonic clock.
#[derive(Debug, Clone, Copy)]
struct Sent {
    media_ms: i64,
    key: bool,
    capture_ms: i64,
    arrival_ms: i64,
}

/// 25 fps frames for `secs` of box time from a camera whose clock runs `ppm` parts per million
/// fast (negative: slow): frame i has media time i × 40 and is captured when the camera's
/// clock says so.
fn camera(secs: i64, ppm: i64) -> Vec<Sent> {
    let frames = secs * 1000 / NOMINAL;
    (0..frames)
        .map(|i| {
            let media_ms = i * NOMINAL;
            let capture_ms = 10_000 + media_ms * 1_000_000 / (1_000_000 + ppm);
            Sent {
                media_ms,
                key: i % GOP == 0,
                capture_ms,
                arrival_ms: capture_ms + DELAY,
            }
        })
        .collect()
}

fn place_all(t: &mut Timeline, frames: &[Sent]) -> Vec<Placed> {
    place_stepped(t, frames, |_| WALL)
}

/// Like [`place_all`] on a box whose wall clock is `wall(i)` ahead of its monotonic clock at
/// frame i's arrival.
fn place_stepped(t: &mut Timeline, frames: &[Sent], wall: impl Fn(usize) -> i64) -> Vec<Placed> {
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            t.place(
                f.media_ms,
                f.key,
                Arrival {
                    mono_ms: f.arrival_ms,
                    wall_ms: f.arrival_ms + wall(i),
                },
            )
        })
        .collect()
}

/// Timestamps strictly increase, and each step stays within `low..=high` ms.
fn assert_spacing(placed: &[Placed], low: i64, high: i64) {
    for (i, w) in placed.windows(2).enumerate() {
        let step = w[1].timestamp_ms - w[0].timestamp_ms;
        assert!(
            step > 0 && (low..=high).contains(&step),
            "frame {}: a step of {step} ms",
            i + 1
        );
    }
}

/// The largest distance of a frame's timestamp from the wall clock at its arrival, over the
/// frames from `from` on.
fn worst_offset(frames: &[Sent], placed: &[Placed], from: usize) -> i64 {
    frames
        .iter()
        .zip(placed)
        .skip(from)
        .map(|(f, p)| (p.timestamp_ms - (f.arrival_ms + WALL)).abs())
        .max()
        .unwrap()
}

/// The frames placed with a jump: (index, jump).
fn jumps(placed: &[Placed]) -> Vec<(usize, Jump)> {
    placed
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, p.jump?)))
        .collect()
}

#[test]
fn a_camera_two_percent_fast_or_slow_stays_on_the_box_clock_for_hours() {
    for ppm in [20_000, -20_000, 5_000, -500, 0] {
        let frames = camera(2 * 3600, ppm);
        let mut t = Timeline::new();
        let placed = place_all(&mut t, &frames);
        let worst = worst_offset(&frames, &placed, 0);
        assert!(worst <= 500, "{ppm} ppm: {worst} ms off the box clock");
        // After the first seconds: the window's lag (60 ms at 2 % slow) and the dead band.
        let settled = worst_offset(&frames, &placed, 250);
        assert!(settled <= 150, "{ppm} ppm: {settled} ms once settled");
        assert!(placed.iter().all(|p| p.jump.is_none()), "{ppm} ppm");
        // The camera's own spacing (39.2 or 40.8 ms) corrected by a tenth of an interval at most.
        assert_spacing(&placed, 34, 46);
    }
}

#[test]
fn jitter_of_200_ms_is_not_drift() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut frames = camera(600, 0);
    for f in &mut frames {
        f.arrival_ms += rng.below(401);
    }
    let mut t = Timeline::new();
    let placed = place_all(&mut t, &frames);
    // The lag of the least delayed frames is taken: timestamps keep the camera's spacing to
    // within a slew step, and stay near the capture.
    assert_spacing(&placed[1..], 36, 44);
    for (f, p) in frames.iter().zip(&placed).skip(250) {
        let off = p.timestamp_ms - WALL - f.capture_ms;
        assert!((-60..=100).contains(&off), "{off} ms after the capture");
    }
    assert!(worst_offset(&frames, &placed, 0) <= 500);
}

#[test]
fn bursty_delivery_keeps_the_camera_spacing() {
    // The camera sends a second's frames at once, at the end of each second.
    let mut frames = camera(300, 0);
    for f in &mut frames {
        f.arrival_ms = (f.capture_ms / 1000 + 1) * 1000 + DELAY;
    }
    let mut t = Timeline::new();
    let placed = place_all(&mut t, &frames);
    assert!(placed.iter().all(|p| p.jump.is_none()));
    assert_spacing(&placed[25..], 36, 44);
    for (f, p) in frames.iter().zip(&placed).skip(100) {
        let off = p.timestamp_ms - WALL - f.capture_ms;
        assert!((0..=1100).contains(&off), "{off} ms after the capture");
    }
}

#[test]
fn a_delivery_stall_and_its_burst_are_not_a_gap() {
    // Frames captured during 5 s reach the box only at its end, then at once.
    let mut frames = camera(60, 0);
    for f in &mut frames {
        if (20_000..25_000).contains(&f.capture_ms) {
            f.arrival_ms = 25_000 + DELAY;
        }
    }
    let mut t = Timeline::new();
    let placed = place_all(&mut t, &frames);
    assert!(placed.iter().all(|p| p.jump.is_none()), "{placed:?}");
    assert_spacing(&placed, 36, 44);
}

#[test]
fn a_camera_that_pauses_resumes_at_the_box_time_after_a_gap() {
    // 30 s of frames, a 10 s pause the media clock does not see, 30 s more.
    let mut frames = camera(60, 0);
    for f in &mut frames[750..] {
        f.capture_ms += 10_000;
        f.arrival_ms += 10_000;
    }
    let mut t = Timeline::new();
    let placed = place_all(&mut t, &frames);
    let gaps = jumps(&placed);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let (at, Jump::Gap(ms)) = gaps[0] else {
        panic!("{gaps:?}")
    };
    assert!((9_900..=10_100).contains(&ms), "{ms}");
    // Taken once a window of steady arrivals says so; on the box clock from then on.
    let window_frames = (WINDOW_MS / NOMINAL) as usize;
    assert!(at <= 750 + window_frames + 1, "gap taken at frame {at}");
    assert!(worst_offset(&frames, &placed, at) <= 100);
    assert_spacing(&placed[..at], 36, 44);
    assert_spacing(&placed[at + 1..], 36, 44);
}

#[test]
fn a_media_clock_that_jumps_is_followed_smoothly() {
    // The media clock jumps an hour ahead at frame 500 and 30 s back at frame 1000.
    let mut frames = camera(60, 0);
    for f in &mut frames[500..] {
        f.media_ms += 3_600_000;
    }
    for f in &mut frames[1000..] {
        f.media_ms -= 3_630_000;
    }
    let mut t = Timeline::new();
    let placed = place_all(&mut t, &frames);
    let jumps = jumps(&placed);
    assert_eq!(
        jumps,
        [
            (500, Jump::MediaClock(3_600_000)),
            (1000, Jump::MediaClock(-3_630_000))
        ]
    );
    assert_spacing(&placed, 36, 44);
    assert!(worst_offset(&frames, &placed, 0) <= 100);
}

#[test]
fn a_new_session_never_starts_before_the_last_one_ended() {
    let at = |mono_ms: i64, wall_ms: i64| Arrival { mono_ms, wall_ms };
    let mut t = Timeline::new();
    assert_eq!(t.place(0, true, at(0, 1_000_000)).timestamp_ms, 1_000_000);
    assert_eq!(t.place(40, true, at(40, 1_000_040)).timestamp_ms, 1_000_040);
    t.new_session();
    // Reconnected within a frame of the last one: one frame after it.
    let p = t.place(5_000, true, at(50, 1_000_050));
    assert_eq!(
        p,
        Placed {
            timestamp_ms: 1_000_080,
            jump: None
        }
    );
    assert_eq!(
        t.place(5_040, false, at(90, 1_000_090)).timestamp_ms,
        1_000_120
    );
    t.new_session();
    // A real gap: anchored at the wall clock.
    assert_eq!(
        t.place(0, true, at(10_000, 1_010_000)).timestamp_ms,
        1_010_000
    );
}

#[test]
fn one_late_reading_of_the_wall_clock_is_not_a_step() {
    // The thread was preempted for 1.5 s between reading the two clocks, at a key frame.
    let frames = camera(10, 0);
    let mut t = Timeline::new();
    let placed = place_stepped(
        &mut t,
        &frames,
        |i| if i == 100 { WALL + 1_500 } else { WALL },
    );
    assert!(jumps(&placed).is_empty(), "{:?}", jumps(&placed));
    assert_spacing(&placed, 36, 44);
}

#[test]
fn a_wall_clock_step_while_the_camera_was_away_is_taken_whole() {
    let at = |mono_ms: i64, wall_ms: i64| Arrival { mono_ms, wall_ms };
    let mut t = Timeline::new();
    t.place(0, true, at(0, 1_000_000));
    t.place(40, false, at(40, 1_000_040));
    t.new_session();
    // Stepped back an hour meanwhile: no floor from the media before the step.
    let p = t.place(9_000, false, at(100, 1_000_100 - 3_600_000));
    assert_eq!(
        p,
        Placed {
            timestamp_ms: 1_000_100 - 3_600_000,
            jump: Some(Jump::WallStep(-3_600_000))
        }
    );
    assert_eq!(
        t.place(9_040, false, at(140, 1_000_140 - 3_600_000)),
        Placed {
            timestamp_ms: 1_000_140 - 3_600_000,
            jump: None
        }
    );
}

#[test]
fn a_wall_clock_step_mid_session_is_taken_at_the_next_key_frame() {
    // A camera 2 % fast; the box's clock steps two hours ahead at frame 510 and three hours
    // back at frame 1010; key frames every 25 frames.
    const AHEAD: i64 = 2 * 3_600_000;
    const BACK: i64 = -3 * 3_600_000;
    let wall = |i: usize| match i {
        ..510 => WALL,
        510..1010 => WALL + AHEAD,
        _ => WALL + AHEAD + BACK,
    };
    let frames = camera(60, 20_000);
    let mut t = Timeline::new();
    let placed = place_stepped(&mut t, &frames, wall);
    assert_eq!(
        jumps(&placed),
        [(525, Jump::WallStep(AHEAD)), (1025, Jump::WallStep(BACK))]
    );
    // Until the key frame the old time; then the new one, on the box clock.
    for (range, offset) in [
        (0..525, WALL),
        (525..1025, WALL + AHEAD),
        (1025..1500, WALL + AHEAD + BACK),
    ] {
        let segment = &placed[range.clone()];
        assert_spacing(segment, 34, 46);
        for (f, p) in frames[range.clone()].iter().zip(segment) {
            let off = p.timestamp_ms - (f.arrival_ms + offset);
            assert!(off.abs() <= 500, "frame at {}: {off} ms off", f.media_ms);
        }
    }
    // A wall step moves the time by the step, nothing else.
    let moved = placed[525].timestamp_ms - placed[524].timestamp_ms - AHEAD;
    assert!((34..=46).contains(&moved), "{moved}");
}

#[test]
fn media_time_going_back_a_little_still_moves_forward() {
    let at = |mono_ms: i64| Arrival {
        mono_ms,
        wall_ms: mono_ms + WALL,
    };
    let mut t = Timeline::new();
    let first = t.place(100, true, at(5_000)).timestamp_ms;
    assert_eq!(t.place(60, true, at(5_040)).timestamp_ms, first + 1);
}
