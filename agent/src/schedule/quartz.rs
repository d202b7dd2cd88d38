//! A port of `org.quartz.CronExpression` 2.3.2: its parser, with its error cases and its
//! leniencies, and `getTimeAfter`, the field-by-field search.
//!
//! The port keeps Quartz's structure on purpose (including what looks like a quirk: trailing
//! characters it ignores, `L` outside the day fields accepted but never firing, the year field
//! not range-checked), because users copy expressions that Quartz accepts and expect Quartz's
//! fire times. The conformance test compares it with the real Quartz.

use std::collections::BTreeSet;
use std::fmt;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::jcal::{
    DAY_OF_MONTH, HOUR_OF_DAY, JCal, MINUTE, MONTH, SECOND, YEAR, last_day_of_month,
};

const F_SECOND: usize = 0;
const F_MINUTE: usize = 1;
const F_HOUR: usize = 2;
const F_DAY_OF_MONTH: usize = 3;
const F_MONTH: usize = 4;
const F_DAY_OF_WEEK: usize = 5;
const F_YEAR: usize = 6;

/// Quartz's marker for `*` in a field's value set.
const ALL_SPEC: i64 = 99;
/// Quartz's marker for `?`.
const NO_SPEC: i64 = 98;

/// Quartz gives up its search past this year (`getTimeAfter`'s endless-loop guard).
const SEARCH_END_YEAR: i64 = 2999;
/// A bound on search steps, so a pathological expression cannot hang a caller; Quartz needs far
/// fewer steps for any expression it can answer.
const MAX_STEPS: u32 = 200_000;

/// Why Quartz rejects an expression; the message is Quartz's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Quartz cron expression: {reason}")]
pub struct ParseError {
    /// Quartz's `ParseException` message.
    pub reason: String,
}

/// A parsed Quartz cron expression (6 or 7 fields; `?` in exactly one of the day fields).
#[derive(Clone, PartialEq, Eq)]
pub struct CronSchedule {
    source: String,
    sets: [BTreeSet<i64>; 7],
    lastday_of_week: bool,
    nthday_of_week: i64,
    lastday_of_month: bool,
    nearest_weekday: bool,
    lastday_offset: i64,
    max_year: i64,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronSchedule").field(&self.source).finish()
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for CronSchedule {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        CronSchedule::parse(s)
    }
}

/// A failure inside the parser: Quartz's own `ParseException`, or a Java runtime exception that
/// Quartz wraps as "Illegal cron expression format".
enum PErr {
    Parse(String),
    Runtime(String),
}

type PResult<T> = Result<T, PErr>;

fn perr<T>(msg: impl Into<String>) -> PResult<T> {
    Err(PErr::Parse(msg.into()))
}

fn out_of_bounds<T>(i: usize) -> PResult<T> {
    Err(PErr::Runtime(format!(
        "java.lang.StringIndexOutOfBoundsException: index {i}"
    )))
}

fn char_at(s: &[char], i: usize) -> PResult<char> {
    match s.get(i) {
        Some(c) => Ok(*c),
        None => out_of_bounds(i),
    }
}

fn substring(s: &[char], from: usize, to: usize) -> PResult<String> {
    if from > to || to > s.len() {
        return out_of_bounds(to);
    }
    Ok(s[from..to].iter().collect())
}

/// `Integer.parseInt`: optional sign, ASCII digits, 32-bit range.
fn java_parse_int(s: &[char]) -> PResult<i64> {
    let text: String = s.iter().collect();
    let digits = text.strip_prefix(['+', '-']).unwrap_or(&text);
    let bad = || {
        Err(PErr::Runtime(format!(
            "java.lang.NumberFormatException: For input string: \"{text}\""
        )))
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return bad();
    }
    match text.parse::<i32>() {
        Ok(v) => Ok(i64::from(v)),
        Err(_) => bad(),
    }
}

fn digit_value(c: char) -> PResult<i64> {
    java_parse_int(&[c])
}

fn month_number(s: &str) -> i64 {
    const NAMES: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    NAMES.iter().position(|n| *n == s).map_or(-1, |p| p as i64)
}

fn day_of_week_number(s: &str) -> i64 {
    const NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    NAMES
        .iter()
        .position(|n| *n == s)
        .map_or(-1, |p| p as i64 + 1)
}

/// `s.matches("^L-[0-9]*[W]?")`.
fn is_last_day_offset(s: &[char]) -> bool {
    if s.len() < 2 || s[0] != 'L' || s[1] != '-' {
        return false;
    }
    let rest = &s[2..];
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    matches!(&rest[digits..], [] | ['W'])
}

/// `String.trim()`: strips every char at or below U+0020.
fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

/// Quartz's `MAX_YEAR`: the year when the class loaded, plus 100.
pub fn default_max_year() -> i64 {
    i64::from(jiff::ZonedDateTime::now().year()) + 100
}

impl CronSchedule {
    /// Parses as Quartz does, with Quartz's last year (`MAX_YEAR`, this year + 100).
    pub fn parse(expression: &str) -> Result<Self, ParseError> {
        Self::parse_with_max_year(expression, default_max_year())
    }

    /// Parses with an explicit last year, so results do not depend on today's date.
    pub fn parse_with_max_year(expression: &str, max_year: i64) -> Result<Self, ParseError> {
        let upper = expression.to_uppercase();
        let mut c = CronSchedule {
            source: upper.clone(),
            sets: Default::default(),
            lastday_of_week: false,
            nthday_of_week: 0,
            lastday_of_month: false,
            nearest_weekday: false,
            lastday_offset: 0,
            max_year,
        };
        match c.build(&upper) {
            Ok(()) => Ok(c),
            Err(PErr::Parse(reason)) => Err(ParseError { reason }),
            Err(PErr::Runtime(e)) => Err(ParseError {
                reason: format!("Illegal cron expression format ({e})"),
            }),
        }
    }

    /// The expression as Quartz keeps it (upper-cased).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    fn build(&mut self, expression: &str) -> PResult<()> {
        let mut expr_on = F_SECOND;
        for token in expression.split([' ', '\t']).filter(|t| !t.is_empty()) {
            if expr_on > F_YEAR {
                break;
            }
            let expr = java_trim(token);
            let has_l = expr.contains('L') && expr.chars().count() > 1 && expr.contains(',');
            if expr_on == F_DAY_OF_MONTH && has_l {
                return perr(
                    "Support for specifying 'L' and 'LW' with other days of the month is not implemented",
                );
            }
            if expr_on == F_DAY_OF_WEEK && has_l {
                return perr(
                    "Support for specifying 'L' with other days of the week is not implemented",
                );
            }
            if expr_on == F_DAY_OF_WEEK && expr.matches('#').count() > 1 {
                return perr("Support for specifying multiple \"nth\" days is not implemented.");
            }
            for v in expr.split(',').filter(|v| !v.is_empty()) {
                let chars: Vec<char> = v.chars().collect();
                self.store_expression_vals(&chars, expr_on)?;
            }
            expr_on += 1;
        }
        if expr_on <= F_DAY_OF_WEEK {
            return perr("Unexpected end of expression.");
        }
        if expr_on <= F_YEAR {
            self.store_expression_vals(&['*'], F_YEAR)?;
        }
        let dom_spec = !self.sets[F_DAY_OF_MONTH].contains(&NO_SPEC);
        let dow_spec = !self.sets[F_DAY_OF_WEEK].contains(&NO_SPEC);
        if dom_spec == dow_spec {
            return perr(
                "Support for specifying both a day-of-week AND a day-of-month parameter is not implemented.",
            );
        }
        Ok(())
    }

    fn store_expression_vals(&mut self, s: &[char], ty: usize) -> PResult<()> {
        let mut i = 0usize;
        if s.is_empty() {
            return Ok(());
        }
        let c = s[0];
        let is_l = s == ['L'] || s == ['L', 'W'] || is_last_day_offset(s);
        if c.is_ascii_uppercase() && !is_l {
            let mut sub = substring(s, i, i + 3)?;
            let sval;
            let mut eval = -1;
            if ty == F_MONTH {
                sval = month_number(&sub) + 1;
                if sval <= 0 {
                    return perr(format!("Invalid Month value: '{sub}'"));
                }
                if s.len() > i + 3 && s[i + 3] == '-' {
                    i += 4;
                    sub = substring(s, i, i + 3)?;
                    eval = month_number(&sub) + 1;
                    if eval <= 0 {
                        return perr(format!("Invalid Month value: '{sub}'"));
                    }
                }
            } else if ty == F_DAY_OF_WEEK {
                sval = day_of_week_number(&sub);
                if sval < 0 {
                    return perr(format!("Invalid Day-of-Week value: '{sub}'"));
                }
                if s.len() > i + 3 {
                    match s[i + 3] {
                        '-' => {
                            i += 4;
                            sub = substring(s, i, i + 3)?;
                            eval = day_of_week_number(&sub);
                            if eval < 0 {
                                return perr(format!("Invalid Day-of-Week value: '{sub}'"));
                            }
                        }
                        '#' => {
                            i += 4;
                            match java_parse_int(&s[i.min(s.len())..]) {
                                Ok(n) if (1..=5).contains(&n) => self.nthday_of_week = n,
                                _ => {
                                    return perr(
                                        "A numeric value between 1 and 5 must follow the '#' option",
                                    );
                                }
                            }
                        }
                        'L' => self.lastday_of_week = true,
                        _ => {}
                    }
                }
            } else {
                return perr(format!("Illegal characters for this position: '{sub}'"));
            }
            let incr = if eval != -1 { 1 } else { 0 };
            return self.add_to_set(sval, eval, incr, ty);
        }

        if c == '?' {
            i += 1;
            if i + 1 < s.len() && s[i] != ' ' && s[i + 1] != '\t' {
                return perr(format!("Illegal character after '?': {}", s[i]));
            }
            if ty != F_DAY_OF_WEEK && ty != F_DAY_OF_MONTH {
                return perr("'?' can only be specified for Day-of-Month or Day-of-Week.");
            }
            if ty == F_DAY_OF_WEEK && !self.lastday_of_month {
                match self.sets[F_DAY_OF_MONTH].last() {
                    None => return Err(PErr::Runtime("java.util.NoSuchElementException".into())),
                    Some(&NO_SPEC) => {
                        return perr(
                            "'?' can only be specified for Day-of-Month -OR- Day-of-Week.",
                        );
                    }
                    Some(_) => {}
                }
            }
            return self.add_to_set(NO_SPEC, -1, 0, ty);
        }

        if c == '*' || c == '/' {
            if c == '*' && i + 1 >= s.len() {
                return self.add_to_set(ALL_SPEC, -1, 0, ty);
            } else if c == '/' && (i + 1 >= s.len() || s[i + 1] == ' ' || s[i + 1] == '\t') {
                return perr("'/' must be followed by an integer.");
            } else if c == '*' {
                i += 1;
            }
            let incr = if s[i] == '/' {
                i += 1;
                if i >= s.len() {
                    return perr("Unexpected end of string.");
                }
                let incr = java_parse_int(&s[i..])?;
                check_increment_range(incr, ty)?;
                incr
            } else {
                1
            };
            return self.add_to_set(ALL_SPEC, -1, incr, ty);
        }

        if c == 'L' {
            i += 1;
            if ty == F_DAY_OF_MONTH {
                self.lastday_of_month = true;
            }
            if ty == F_DAY_OF_WEEK {
                self.add_to_set(7, 7, 0, ty)?;
            }
            if ty == F_DAY_OF_MONTH && s.len() > i {
                if s[i] == '-' {
                    let (value, pos) = get_value(0, s, i + 1)?;
                    self.lastday_offset = value;
                    if value > 30 {
                        return perr("Offset from last day must be <= 30");
                    }
                    i = pos;
                }
                if s.len() > i && s[i] == 'W' {
                    self.nearest_weekday = true;
                }
            }
            return Ok(());
        }

        if c.is_ascii_digit() {
            let mut val = c as i64 - '0' as i64;
            i += 1;
            if i >= s.len() {
                return self.add_to_set(val, -1, -1, ty);
            }
            if s[i].is_ascii_digit() {
                let (v, pos) = get_value(val, s, i)?;
                val = v;
                i = pos;
            }
            return self.check_next(i, s, val, ty);
        }

        perr(format!("Unexpected character: {c}"))
    }

    fn check_next(&mut self, pos: usize, s: &[char], val: i64, ty: usize) -> PResult<()> {
        let mut i = pos;
        if i >= s.len() {
            return self.add_to_set(val, -1, -1, ty);
        }
        match s[pos] {
            'L' => {
                if ty != F_DAY_OF_WEEK {
                    return perr(format!("'L' option is not valid here. (pos={i})"));
                }
                if !(1..=7).contains(&val) {
                    return perr("Day-of-Week values must be between 1 and 7");
                }
                self.lastday_of_week = true;
                self.sets[ty].insert(val);
                Ok(())
            }
            'W' => {
                if ty != F_DAY_OF_MONTH {
                    return perr(format!("'W' option is not valid here. (pos={i})"));
                }
                self.nearest_weekday = true;
                if val > 31 {
                    return perr(
                        "The 'W' option does not make sense with values larger than 31 (max number of days in a month)",
                    );
                }
                self.sets[ty].insert(val);
                Ok(())
            }
            '#' => {
                if ty != F_DAY_OF_WEEK {
                    return perr(format!("'#' option is not valid here. (pos={i})"));
                }
                i += 1;
                match java_parse_int(&s[i.min(s.len())..]) {
                    Ok(n) if (1..=5).contains(&n) => self.nthday_of_week = n,
                    _ => return perr("A numeric value between 1 and 5 must follow the '#' option"),
                }
                self.sets[ty].insert(val);
                Ok(())
            }
            '-' => {
                i += 1;
                let v = digit_value(char_at(s, i)?)?;
                let mut end = v;
                i += 1;
                if i >= s.len() {
                    return self.add_to_set(val, end, 1, ty);
                }
                if s[i].is_ascii_digit() {
                    let (e, p) = get_value(v, s, i)?;
                    end = e;
                    i = p;
                }
                if i < s.len() && s[i] == '/' {
                    i += 1;
                    let v2 = digit_value(char_at(s, i)?)?;
                    i += 1;
                    if i >= s.len() {
                        return self.add_to_set(val, end, v2, ty);
                    }
                    if s[i].is_ascii_digit() {
                        let (v3, _) = get_value(v2, s, i)?;
                        return self.add_to_set(val, end, v3, ty);
                    }
                    return self.add_to_set(val, end, v2, ty);
                }
                self.add_to_set(val, end, 1, ty)
            }
            '/' => {
                if i + 1 >= s.len() || s[i + 1] == ' ' || s[i + 1] == '\t' {
                    return perr("'/' must be followed by an integer.");
                }
                i += 1;
                let v2 = digit_value(s[i])?;
                i += 1;
                if i >= s.len() {
                    check_increment_range(v2, ty)?;
                    return self.add_to_set(val, -1, v2, ty);
                }
                let c = s[i];
                if c.is_ascii_digit() {
                    let (v3, _) = get_value(v2, s, i)?;
                    check_increment_range(v3, ty)?;
                    return self.add_to_set(val, -1, v3, ty);
                }
                perr(format!("Unexpected character '{c}' after '/'"))
            }
            _ => self.add_to_set(val, -1, 0, ty),
        }
    }

    fn add_to_set(&mut self, val: i64, end: i64, incr: i64, ty: usize) -> PResult<()> {
        let (lo, hi, msg) = match ty {
            F_SECOND | F_MINUTE => (0, 59, "Minute and Second values must be between 0 and 59"),
            F_HOUR => (0, 23, "Hour values must be between 0 and 23"),
            F_DAY_OF_MONTH => (1, 31, "Day of month values must be between 1 and 31"),
            F_MONTH => (1, 12, "Month values must be between 1 and 12"),
            F_DAY_OF_WEEK => (1, 7, "Day-of-Week values must be between 1 and 7"),
            _ => (i64::MIN, i64::MAX, ""),
        };
        let exempt =
            val == ALL_SPEC || (val == NO_SPEC && (ty == F_DAY_OF_MONTH || ty == F_DAY_OF_WEEK));
        let low_bad = if ty == F_DAY_OF_WEEK {
            val == 0
        } else {
            val < lo
        };
        if ty != F_YEAR && (low_bad || val > hi || end > hi) && !exempt {
            return perr(msg);
        }

        let set = &mut self.sets[ty];
        if (incr == 0 || incr == -1) && val != ALL_SPEC {
            set.insert(if val != -1 { val } else { NO_SPEC });
            return Ok(());
        }
        let mut incr = incr;
        if val == ALL_SPEC && incr <= 0 {
            incr = 1;
            set.insert(ALL_SPEC);
        }
        let (min, max_val, wrap) = match ty {
            F_SECOND | F_MINUTE => (0, 59, 60),
            F_HOUR => (0, 23, 24),
            F_DAY_OF_MONTH => (1, 31, 31),
            F_MONTH => (1, 12, 12),
            F_DAY_OF_WEEK => (1, 7, 7),
            _ => (1970, self.max_year, -1),
        };
        let start = if val == -1 || val == ALL_SPEC {
            min
        } else {
            val
        };
        let mut stop = if end == -1 { max_val } else { end };
        let mut max = -1;
        if stop < start {
            if ty == F_YEAR {
                return Err(PErr::Runtime(
                    "java.lang.IllegalArgumentException: Start year must be less than stop year"
                        .into(),
                ));
            }
            max = wrap;
            stop += max;
        }
        let mut i = start;
        while i <= stop {
            if max == -1 {
                set.insert(i);
            } else {
                let mut i2 = i % max;
                if i2 == 0 && (ty == F_MONTH || ty == F_DAY_OF_WEEK || ty == F_DAY_OF_MONTH) {
                    i2 = max;
                }
                set.insert(i2);
            }
            i += incr;
        }
        Ok(())
    }

    /// The first fire time strictly after `after`, evaluated in `tz` (`getTimeAfter`); `None`
    /// when the schedule has no more fire times (Quartz's search ends at `MAX_YEAR`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let after_secs = after.as_second() - i64::from(after.subsec_nanosecond() < 0);
        // Quartz's years begin at 1970, but its set for `*` also holds the marker 99, which a
        // search from before then would take for the year 99. Two days before the epoch is
        // still 1969 in every zone.
        let after_secs = after_secs.max(-2 * 86_400);
        self.time_after(after_secs, tz)
            .and_then(|s| Timestamp::from_second(s).ok())
    }

    /// The last fire time at or before `t`: the `f <= t` with `next_after(f - 1s) == f`.
    pub fn previous_at_or_before(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let t_secs = t.as_second() - i64::from(t.subsec_nanosecond() < 0);
        let fires_by = |x: i64| matches!(self.time_after(x, tz), Some(f) if f <= t_secs);
        // Widen the look-back until it holds a fire time, then bisect for the last `x` whose
        // next fire is still <= t; that fire is `x + 1`.
        let mut hi = t_secs;
        let mut span = 64i64;
        let lo = loop {
            let lo = t_secs - span;
            if fires_by(lo) {
                break lo;
            }
            hi = lo;
            if lo < 0 {
                return None;
            }
            span = span.saturating_mul(4);
        };
        let (mut lo, mut hi) = (lo, hi);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fires_by(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.time_after(lo, tz)
            .and_then(|s| Timestamp::from_second(s).ok())
    }

    /// `getTimeAfter`, over whole seconds since the epoch.
    fn time_after(&self, after_secs: i64, tz: &TimeZone) -> Option<i64> {
        let [seconds, minutes, hours, dom_set, months, dow_set, years] = &self.sets;
        let tail = |set: &BTreeSet<i64>, from: i64| set.range(from..).next().copied();
        let first = |set: &BTreeSet<i64>| set.first().copied();

        let after_time = after_secs + 1;
        let mut cl = JCal::at(tz, after_time);
        for _ in 0..MAX_STEPS {
            if cl.get(YEAR) > SEARCH_END_YEAR {
                return None;
            }
            let mut sec = cl.get(SECOND);
            let mut min = cl.get(MINUTE);
            match tail(seconds, sec) {
                Some(s) => sec = s,
                None => {
                    sec = first(seconds)?;
                    min += 1;
                    cl.set(MINUTE, min);
                }
            }
            cl.set(SECOND, sec);

            min = cl.get(MINUTE);
            let mut hr = cl.get(HOUR_OF_DAY);
            let mut t = -1;
            match tail(minutes, min) {
                Some(m) => {
                    t = min;
                    min = m;
                }
                None => {
                    min = first(minutes)?;
                    hr += 1;
                }
            }
            if min != t {
                cl.set(SECOND, 0);
                cl.set(MINUTE, min);
                set_calendar_hour(&mut cl, hr);
                continue;
            }
            cl.set(MINUTE, min);

            hr = cl.get(HOUR_OF_DAY);
            let mut day = cl.get(DAY_OF_MONTH);
            t = -1;
            match tail(hours, hr) {
                Some(h) => {
                    t = hr;
                    hr = h;
                }
                None => {
                    hr = first(hours)?;
                    day += 1;
                }
            }
            if hr != t {
                cl.set(SECOND, 0);
                cl.set(MINUTE, 0);
                cl.set(DAY_OF_MONTH, day);
                set_calendar_hour(&mut cl, hr);
                continue;
            }
            cl.set(HOUR_OF_DAY, hr);

            day = cl.get(DAY_OF_MONTH);
            let mut mon = cl.get(MONTH) + 1;
            t = -1;
            let mut tmon = mon;

            let dom_spec = !dom_set.contains(&NO_SPEC);
            let dow_spec = !dow_set.contains(&NO_SPEC);
            if dom_spec && !dow_spec {
                let st = tail(dom_set, day);
                if self.lastday_of_month {
                    t = day;
                    day = last_day_of_month(mon, cl.get(YEAR)) - self.lastday_offset;
                    if !self.nearest_weekday {
                        if t > day {
                            mon += 1;
                            if mon > 12 {
                                mon = 1;
                                tmon = 3333;
                                cl.add_years(1);
                            }
                            day = 1;
                        }
                    } else if nearest_weekday_before(
                        &mut cl, tz, &mut day, mon, sec, min, hr, after_time,
                    ) {
                        day = 1;
                        mon += 1;
                    }
                } else if self.nearest_weekday {
                    t = day;
                    day = first(dom_set)?;
                    if nearest_weekday_before(&mut cl, tz, &mut day, mon, sec, min, hr, after_time)
                    {
                        day = first(dom_set)?;
                        mon += 1;
                    }
                } else if let Some(d) = st {
                    t = day;
                    day = d;
                    if day > last_day_of_month(mon, cl.get(YEAR)) {
                        day = first(dom_set)?;
                        mon += 1;
                    }
                } else {
                    day = first(dom_set)?;
                    mon += 1;
                }
                if day != t || mon != tmon {
                    cl.set(SECOND, 0);
                    cl.set(MINUTE, 0);
                    cl.set(HOUR_OF_DAY, 0);
                    cl.set(DAY_OF_MONTH, day);
                    cl.set(MONTH, mon - 1);
                    continue;
                }
            } else if dow_spec && !dom_spec {
                if self.lastday_of_week {
                    let dow = first(dow_set)?;
                    let cdow = cl.day_of_week();
                    let mut days_to_add = days_until(cdow, dow);
                    let ldom = last_day_of_month(mon, cl.get(YEAR));
                    if day + days_to_add > ldom {
                        start_of_month(&mut cl, mon);
                        continue;
                    }
                    while day + days_to_add + 7 <= ldom {
                        days_to_add += 7;
                    }
                    day += days_to_add;
                    if days_to_add > 0 {
                        start_of_day(&mut cl, day, mon - 1);
                        continue;
                    }
                } else if self.nthday_of_week != 0 {
                    let dow = first(dow_set)?;
                    let cdow = cl.day_of_week();
                    let mut days_to_add = days_until(cdow, dow);
                    let day_shifted = days_to_add > 0;
                    day += days_to_add;
                    let mut week_of_month = day / 7;
                    if day % 7 > 0 {
                        week_of_month += 1;
                    }
                    days_to_add = (self.nthday_of_week - week_of_month) * 7;
                    day += days_to_add;
                    if days_to_add < 0 || day > last_day_of_month(mon, cl.get(YEAR)) {
                        start_of_month(&mut cl, mon);
                        continue;
                    } else if days_to_add > 0 || day_shifted {
                        start_of_day(&mut cl, day, mon - 1);
                        continue;
                    }
                } else {
                    let cdow = cl.day_of_week();
                    let dow = tail(dow_set, cdow).or_else(|| first(dow_set))?;
                    let days_to_add = days_until(cdow, dow);
                    let ldom = last_day_of_month(mon, cl.get(YEAR));
                    if day + days_to_add > ldom {
                        start_of_month(&mut cl, mon);
                        continue;
                    } else if days_to_add > 0 {
                        start_of_day(&mut cl, day + days_to_add, mon - 1);
                        continue;
                    }
                }
            } else {
                return None;
            }
            cl.set(DAY_OF_MONTH, day);

            mon = cl.get(MONTH) + 1;
            let mut year = cl.get(YEAR);
            t = -1;
            if year > self.max_year {
                return None;
            }
            match tail(months, mon) {
                Some(m) => {
                    t = mon;
                    mon = m;
                }
                None => {
                    mon = first(months)?;
                    year += 1;
                }
            }
            if mon != t {
                cl.set(SECOND, 0);
                cl.set(MINUTE, 0);
                cl.set(HOUR_OF_DAY, 0);
                cl.set(DAY_OF_MONTH, 1);
                cl.set(MONTH, mon - 1);
                cl.set(YEAR, year);
                continue;
            }
            cl.set(MONTH, mon - 1);

            year = cl.get(YEAR);
            match tail(years, year) {
                Some(y) => {
                    t = year;
                    year = y;
                }
                None => return None,
            }
            if year != t {
                cl.set(SECOND, 0);
                cl.set(MINUTE, 0);
                cl.set(HOUR_OF_DAY, 0);
                cl.set(DAY_OF_MONTH, 1);
                cl.set(MONTH, 0);
                cl.set(YEAR, year);
                continue;
            }
            cl.set(YEAR, year);
            return Some(cl.time());
        }
        None
    }
}

fn check_increment_range(incr: i64, ty: usize) -> PResult<()> {
    let limit = match ty {
        F_SECOND | F_MINUTE => Some((59, 60)),
        F_HOUR => Some((23, 24)),
        F_DAY_OF_MONTH => Some((31, 31)),
        F_DAY_OF_WEEK => Some((7, 7)),
        F_MONTH => Some((12, 12)),
        _ => None,
    };
    match limit {
        Some((max, shown)) if incr > max => perr(format!("Increment > {shown} : {incr}")),
        _ => Ok(()),
    }
}

/// `getValue`: the digits at `i` appended to `v`, and the position after them (one past the end
/// when they run to the end, as Quartz reports it).
fn get_value(v: i64, s: &[char], i: usize) -> PResult<(i64, usize)> {
    char_at(s, i)?;
    let mut text = v.to_string();
    let mut j = i;
    while j < s.len() && s[j].is_ascii_digit() {
        text.push(s[j]);
        j += 1;
    }
    let pos = if j < s.len() { j } else { j + 1 };
    let chars: Vec<char> = text.chars().collect();
    Ok((java_parse_int(&chars)?, pos))
}

/// Days from weekday `cdow` forward to weekday `dow` (both 1 = Sunday).
fn days_until(cdow: i64, dow: i64) -> i64 {
    if cdow < dow {
        dow - cdow
    } else if cdow > dow {
        dow + (7 - cdow)
    } else {
        0
    }
}

/// `setCalendarHour`: set the hour; when DST moved it, take the hour after.
fn set_calendar_hour(cl: &mut JCal<'_>, hour: i64) {
    cl.set(HOUR_OF_DAY, hour);
    if cl.get(HOUR_OF_DAY) != hour && hour != 24 {
        cl.set(HOUR_OF_DAY, hour + 1);
    }
}

/// Midnight on the first of the month after 1-based `mon` (Quartz sets 0-based `mon`).
fn start_of_month(cl: &mut JCal<'_>, mon: i64) {
    cl.set(SECOND, 0);
    cl.set(MINUTE, 0);
    cl.set(HOUR_OF_DAY, 0);
    cl.set(DAY_OF_MONTH, 1);
    cl.set(MONTH, mon);
}

fn start_of_day(cl: &mut JCal<'_>, day: i64, month0: i64) {
    cl.set(SECOND, 0);
    cl.set(MINUTE, 0);
    cl.set(HOUR_OF_DAY, 0);
    cl.set(DAY_OF_MONTH, day);
    cl.set(MONTH, month0);
}

/// Quartz's `W` step: move `day` to the nearest weekday within the month (as a scratch calendar
/// computes it) and say whether that moment is already before the search start.
#[allow(clippy::too_many_arguments)]
fn nearest_weekday_before(
    cl: &mut JCal<'_>,
    tz: &TimeZone,
    day: &mut i64,
    mon: i64,
    sec: i64,
    min: i64,
    hr: i64,
    after_time: i64,
) -> bool {
    let year = cl.get(YEAR);
    let mut tcal = JCal::with_fields(tz, [year, mon - 1, *day, 0, 0, 0]);
    let ldom = last_day_of_month(mon, year);
    let dow = tcal.day_of_week();
    if dow == 7 && *day == 1 {
        *day += 2;
    } else if dow == 7 {
        *day -= 1;
    } else if dow == 1 && *day == ldom {
        *day -= 2;
    } else if dow == 1 {
        *day += 1;
    }
    tcal.set(SECOND, sec);
    tcal.set(MINUTE, min);
    tcal.set(HOUR_OF_DAY, hr);
    tcal.set(DAY_OF_MONTH, *day);
    tcal.set(MONTH, mon - 1);
    tcal.time() < after_time
}
