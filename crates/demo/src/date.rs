//! Minimal civil-calendar arithmetic (proleptic Gregorian) and FHIR formatting.
//!
//! All demo timestamps are local wall-clock times in US Eastern time; the UTC
//! offset (-05:00 or -04:00) follows the US daylight-saving rule so every
//! `dateTime` carries a correct timezone.

/// Days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i64);

impl Day {
    pub const fn from_ymd(y: i64, m: u32, d: u32) -> Day {
        // Howard Hinnant's days_from_civil.
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = m as i64;
        let d = d as i64;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Day(era * 146_097 + doe - 719_468)
    }

    pub fn ymd(self) -> (i64, u32, u32) {
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (if m <= 2 { y + 1 } else { y }, m, d)
    }

    pub fn year(self) -> i64 {
        self.ymd().0
    }

    pub fn month(self) -> u32 {
        self.ymd().1
    }

    /// 0 = Sunday ... 6 = Saturday.
    pub fn weekday(self) -> i64 {
        (self.0 + 4).rem_euclid(7)
    }

    pub fn plus(self, days: i64) -> Day {
        Day(self.0 + days)
    }

    /// Whole years between `self` (a birth date) and `on`.
    pub fn age_on(self, on: Day) -> i64 {
        let (by, bm, bd) = self.ymd();
        let (y, m, d) = on.ymd();
        let mut age = y - by;
        if (m, d) < (bm, bd) {
            age -= 1;
        }
        age
    }

    /// Same month/day `years` later (Feb 29 falls back to Feb 28).
    pub fn plus_years(self, years: i64) -> Day {
        let (y, m, d) = self.ymd();
        let d = if m == 2 && d == 29 { 28 } else { d };
        Day::from_ymd(y + years, m, d)
    }

    /// FHIR `date`: `YYYY-MM-DD`.
    pub fn fhir(self) -> String {
        let (y, m, d) = self.ymd();
        format!("{y:04}-{m:02}-{d:02}")
    }
}

/// n-th Sunday (1-based) of a month.
fn nth_sunday(y: i64, m: u32, n: i64) -> Day {
    let first = Day::from_ymd(y, m, 1);
    let offset = (7 - first.weekday()) % 7;
    first.plus(offset + 7 * (n - 1))
}

/// Is US daylight saving time in effect on this local date (2007+ rule)?
fn is_dst(day: Day) -> bool {
    let y = day.year();
    let start = nth_sunday(y, 3, 2);
    let end = nth_sunday(y, 11, 1);
    day >= start && day < end
}

/// Local wall-clock instant, in minutes since 1970-01-01T00:00 local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts(pub i64);

impl Ts {
    pub fn at(day: Day, hour: i64, minute: i64) -> Ts {
        Ts(day.0 * 1440 + hour * 60 + minute)
    }

    pub fn day(self) -> Day {
        Day(self.0.div_euclid(1440))
    }

    pub fn plus_minutes(self, minutes: i64) -> Ts {
        Ts(self.0 + minutes)
    }

    /// FHIR `dateTime` / `instant` with seconds and a UTC offset.
    pub fn fhir(self) -> String {
        let day = self.day();
        let mins = self.0.rem_euclid(1440);
        let offset = if is_dst(day) { "-04:00" } else { "-05:00" };
        format!("{}T{:02}:{:02}:00{}", day.fhir(), mins / 60, mins % 60, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_weekdays() {
        for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (2024, 12, 31), (1931, 7, 4)] {
            assert_eq!(Day::from_ymd(y, m, d).ymd(), (y, m, d));
        }
        assert_eq!(Day::from_ymd(1970, 1, 1).0, 0);
        // 2026-03-01 is a Sunday.
        assert_eq!(Day::from_ymd(2026, 3, 1).weekday(), 0);
        assert_eq!(Day::from_ymd(1990, 6, 15).age_on(Day::from_ymd(2026, 6, 14)), 35);
        assert_eq!(Day::from_ymd(1990, 6, 15).age_on(Day::from_ymd(2026, 6, 15)), 36);
    }

    #[test]
    fn daylight_saving_offsets() {
        assert!(Ts::at(Day::from_ymd(2025, 7, 1), 9, 30).fhir().ends_with("T09:30:00-04:00"));
        assert_eq!(Ts::at(Day::from_ymd(2025, 1, 10), 14, 5).fhir(), "2025-01-10T14:05:00-05:00");
        // 2025: DST from March 9 to November 2.
        assert!(!is_dst(Day::from_ymd(2025, 3, 8)));
        assert!(is_dst(Day::from_ymd(2025, 3, 9)));
        assert!(is_dst(Day::from_ymd(2025, 11, 1)));
        assert!(!is_dst(Day::from_ymd(2025, 11, 2)));
    }
}
