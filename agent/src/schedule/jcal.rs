//! The few behaviours of a lenient `java.util.GregorianCalendar` that Quartz's search relies on.
//!
//! Quartz moves through time by setting calendar fields to values that may be out of range
//! (minute 60, day 32, month 12) and reading them back, which normalises them and resolves the
//! local time in the zone. Reproducing that exactly (rather than approximating it with a date
//! library's checked arithmetic) is what makes our answers match Quartz's across month ends and
//! DST changes.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};

pub(crate) const YEAR: usize = 0;
/// 0-based, as `Calendar.MONTH`.
pub(crate) const MONTH: usize = 1;
pub(crate) const DAY_OF_MONTH: usize = 2;
pub(crate) const HOUR_OF_DAY: usize = 3;
pub(crate) const MINUTE: usize = 4;
pub(crate) const SECOND: usize = 5;

/// A calendar holding local fields that are normalised lazily, as Java's are.
pub(crate) struct JCal<'a> {
    tz: &'a TimeZone,
    fields: [i64; 6],
    /// Set by `set`, cleared when the fields are recomputed from the instant.
    dirty: bool,
    /// Seconds since the epoch, valid when not dirty.
    secs: i64,
}

impl<'a> JCal<'a> {
    /// A calendar at an instant (whole seconds).
    pub(crate) fn at(tz: &'a TimeZone, secs: i64) -> Self {
        let mut c = JCal {
            tz,
            fields: [0; 6],
            dirty: false,
            secs,
        };
        c.compute_fields();
        c
    }

    /// A calendar whose fields are all set, not yet normalised (as `Calendar.getInstance()`
    /// followed by `set` of every field Quartz uses).
    pub(crate) fn with_fields(tz: &'a TimeZone, fields: [i64; 6]) -> Self {
        JCal {
            tz,
            fields,
            dirty: true,
            secs: 0,
        }
    }

    pub(crate) fn set(&mut self, field: usize, value: i64) {
        self.fields[field] = value;
        self.dirty = true;
    }

    pub(crate) fn get(&mut self, field: usize) -> i64 {
        self.complete();
        self.fields[field]
    }

    /// `Calendar.DAY_OF_WEEK`: 1 = Sunday .. 7 = Saturday.
    pub(crate) fn day_of_week(&mut self) -> i64 {
        self.complete();
        let days = days_from_civil(
            self.fields[YEAR],
            self.fields[MONTH] + 1,
            self.fields[DAY_OF_MONTH],
        );
        (days + 4).rem_euclid(7) + 1
    }

    /// `add(Calendar.YEAR, n)`: normalise, move the year, pin the day to the month's length.
    pub(crate) fn add_years(&mut self, n: i64) {
        self.complete();
        self.fields[YEAR] += n;
        let last = last_day_of_month(self.fields[MONTH] + 1, self.fields[YEAR]);
        if self.fields[DAY_OF_MONTH] > last {
            self.fields[DAY_OF_MONTH] = last;
        }
        self.dirty = true;
    }

    /// The instant, in seconds since the epoch.
    pub(crate) fn time(&mut self) -> i64 {
        self.complete();
        self.secs
    }

    fn complete(&mut self) {
        if self.dirty {
            self.secs = self.compute_time();
            self.compute_fields();
            self.dirty = false;
        }
    }

    fn compute_time(&self) -> i64 {
        let f = &self.fields;
        let months = f[YEAR] * 12 + f[MONTH];
        let (y, m0) = (months.div_euclid(12), months.rem_euclid(12));
        let mut days = days_from_civil(y, m0 + 1, 1) + f[DAY_OF_MONTH] - 1;
        let sod = f[HOUR_OF_DAY] * 3600 + f[MINUTE] * 60 + f[SECOND];
        days += sod.div_euclid(86_400);
        let wall = days * 86_400 + sod.rem_euclid(86_400);
        wall - self.offset_for_wall(wall)
    }

    /// The offset Java applies to a local time: in a gap the offset before it (the instant lands
    /// after the gap), in a fold the offset after it (the later instant). Java's `ZoneInfo`
    /// does the same past its transition table (2037), where it applies the zone's rules.
    fn offset_for_wall(&self, wall: i64) -> i64 {
        let Some(dt) = civil_of(wall) else {
            return i64::from(self.tz.to_offset(Timestamp::UNIX_EPOCH).seconds());
        };
        let offset = match self.tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset,
            AmbiguousOffset::Gap { before, .. } => before,
            AmbiguousOffset::Fold { after, .. } => after,
        };
        i64::from(offset.seconds())
    }

    fn compute_fields(&mut self) {
        let offset = Timestamp::from_second(self.secs)
            .map(|ts| self.tz.to_offset(ts).seconds() as i64)
            .unwrap_or(0);
        let local = self.secs + offset;
        let days = local.div_euclid(86_400);
        let sod = local.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        self.fields = [y, m - 1, d, sod / 3600, sod % 3600 / 60, sod % 60];
    }
}

fn civil_of(wall: i64) -> Option<DateTime> {
    let days = wall.div_euclid(86_400);
    let sod = wall.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    DateTime::new(
        i16::try_from(y).ok()?,
        m as i8,
        d as i8,
        (sod / 3600) as i8,
        (sod % 3600 / 60) as i8,
        (sod % 60) as i8,
        0,
    )
    .ok()
}

pub(crate) fn is_leap_year(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// `CronExpression.getLastDayOfMonth` (month 1-based).
pub(crate) fn last_day_of_month(month: i64, year: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (month 1-based).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of `days_from_civil`.
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-800_000, -1, 0, 1, 59, 365, 11_016, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn lenient_fields_roll_over() {
        let tz = TimeZone::UTC;
        let mut c = JCal::with_fields(&tz, [2025, 1, 31, 0, 0, 0]);
        assert_eq!(
            (c.get(MONTH), c.get(DAY_OF_MONTH)),
            (2, 3),
            "Feb 31 is Mar 3"
        );
        c.set(MONTH, 12);
        assert_eq!((c.get(YEAR), c.get(MONTH)), (2026, 0));
        c.set(MINUTE, 60);
        assert_eq!((c.get(HOUR_OF_DAY), c.get(MINUTE)), (1, 0));
        assert_eq!(c.day_of_week(), 7, "2026-01-03 is a Saturday");
    }

    #[test]
    fn gap_and_fold_resolve_as_java() {
        let tz = TimeZone::get("America/New_York").unwrap();
        let mut gap = JCal::with_fields(&tz, [2026, 2, 8, 2, 30, 0]);
        assert_eq!(gap.get(HOUR_OF_DAY), 3, "02:30 does not exist: 03:30 EDT");
        let mut fold = JCal::with_fields(&tz, [2026, 10, 1, 1, 30, 0]);
        let t = fold.time();
        assert_eq!(
            t,
            "2026-11-01T06:30:00Z"
                .parse::<Timestamp>()
                .unwrap()
                .as_second()
        );
    }
}
