//! FHIR date/dateTime/instant values as half-open UTC millisecond ranges.
//!
//! Hand-written rather than built on a date library because FHIR values are partial (`2015`,
//! `2015-03`) and their *precision* defines the range, which general-purpose parsers do not expose.

/// A half-open range `[start, end)` in milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub start: i64,
    pub end: i64,
}

const MS_PER_SECOND: i64 = 1_000;
const MS_PER_MINUTE: i64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// Parse a FHIR `date`, `dateTime` or `instant` (partial dates allowed: `2015`, `2015-03`,
/// `2015-03-07`, `2015-03-07T10:00:00Z`, with or without fractional seconds and zone; a value
/// with a time but no zone is taken as UTC; `2015-03-07T10:00` (no seconds) is accepted for search
/// values). The range covers the value's precision: `2015` is all of 2015.
pub fn parse_range(s: &str) -> Option<DateRange> {
    let mut cur = Cursor(s.as_bytes());
    let year = cur.digits(4)?;
    if year == 0 {
        return None;
    }
    if cur.is_empty() {
        return Some(DateRange { start: day_start(year, 1, 1), end: day_start(year + 1, 1, 1) });
    }
    cur.expect(b'-')?;
    let month = cur.digits(2)?;
    if !(1..=12).contains(&month) {
        return None;
    }
    if cur.is_empty() {
        let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
        return Some(DateRange { start: day_start(year, month, 1), end: day_start(next_year, next_month, 1) });
    }
    cur.expect(b'-')?;
    let day = cur.digits(2)?;
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let midnight = day_start(year, month, day);
    if cur.is_empty() {
        return Some(DateRange { start: midnight, end: midnight + MS_PER_DAY });
    }

    cur.expect(b'T')?;
    let hour = cur.digits(2)?;
    cur.expect(b':')?;
    let minute = cur.digits(2)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    let mut local = midnight + hour * MS_PER_HOUR + minute * MS_PER_MINUTE;
    let mut width = MS_PER_MINUTE;
    if cur.peek() == Some(b':') {
        cur.expect(b':')?;
        // FHIR's regex admits a leap second (60); fold it into the last regular second.
        let second = cur.digits(2)?;
        if second > 60 {
            return None;
        }
        let second = second.min(59);
        local += second * MS_PER_SECOND;
        width = MS_PER_SECOND;
        if cur.peek() == Some(b'.') {
            cur.expect(b'.')?;
            let fraction = cur.take_while(|b| b.is_ascii_digit());
            if fraction.is_empty() {
                return None;
            }
            // Millisecond precision is the finest the index keeps; extra digits are truncated.
            let millis = fraction.iter().chain(b"00").take(3).fold(0, |acc, d| acc * 10 + i64::from(d - b'0'));
            local += millis;
            width = 1;
        }
    }
    let offset = match cur.peek() {
        None => 0,
        Some(b'Z') => {
            cur.expect(b'Z')?;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            cur.expect(sign)?;
            let hours = cur.digits(2)?;
            cur.expect(b':')?;
            let minutes = cur.digits(2)?;
            if hours > 14 || minutes > 59 {
                return None;
            }
            let magnitude = hours * MS_PER_HOUR + minutes * MS_PER_MINUTE;
            if sign == b'+' {
                magnitude
            } else {
                -magnitude
            }
        }
        Some(_) => return None,
    };
    if !cur.is_empty() {
        return None;
    }
    let start = local - offset;
    Some(DateRange { start, end: start + width })
}

/// Milliseconds since the epoch at 00:00 UTC of the given (valid) calendar day.
fn day_start(year: i64, month: i64, day: i64) -> i64 {
    days_from_civil(year, month, day) * MS_PER_DAY
}

/// Days since 1970-01-01 in the proleptic Gregorian calendar (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12; // March = 0
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A tiny byte cursor: the grammar is fixed-width, so this beats a regex both in speed and clarity.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }
    fn expect(&mut self, byte: u8) -> Option<()> {
        let (&first, rest) = self.0.split_first()?;
        (first == byte).then(|| self.0 = rest)
    }
    /// Exactly `n` ASCII digits as a number.
    fn digits(&mut self, n: usize) -> Option<i64> {
        let digits = self.0.get(..n)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = &self.0[n..];
        Some(digits.iter().fold(0, |acc, d| acc * 10 + i64::from(d - b'0')))
    }
    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &[u8] {
        let n = self.0.iter().take_while(|&&b| pred(b)).count();
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> (i64, i64) {
        let r = parse_range(s).unwrap_or_else(|| panic!("{s} should parse"));
        (r.start, r.end)
    }

    #[test]
    fn precision_defines_the_range() {
        // 2015-01-01T00:00:00Z = 1420070400000
        let y2015 = 1_420_070_400_000;
        let y2016 = 1_451_606_400_000;
        assert_eq!(range("2015"), (y2015, y2016));
        assert_eq!(range("2015-01"), (y2015, y2015 + 31 * MS_PER_DAY));
        assert_eq!(range("2015-12"), (y2016 - 31 * MS_PER_DAY, y2016));
        assert_eq!(range("2015-01-01"), (y2015, y2015 + MS_PER_DAY));
        assert_eq!(range("2015-01-01T00:00"), (y2015, y2015 + MS_PER_MINUTE));
        assert_eq!(range("2015-01-01T00:00:00Z"), (y2015, y2015 + MS_PER_SECOND));
        assert_eq!(range("2015-01-01T00:00:00.250Z"), (y2015 + 250, y2015 + 251));
        assert_eq!(range("2015-01-01T00:00:00.5Z"), (y2015 + 500, y2015 + 501));
        assert_eq!(range("2015-01-01T00:00:00.123456Z"), (y2015 + 123, y2015 + 124));
        assert_eq!(range("1970-01-01T00:00:00Z"), (0, 1000));
        assert_eq!(range("1969-12-31"), (-MS_PER_DAY, 0));
    }

    #[test]
    fn zones_shift_to_utc() {
        let utc = range("2015-03-07T10:00:00Z").0;
        assert_eq!(range("2015-03-07T10:00:00").0, utc);
        assert_eq!(range("2015-03-07T10:00:00+00:00").0, utc);
        assert_eq!(range("2015-03-07T15:00:00+05:00").0, utc);
        assert_eq!(range("2015-03-07T06:30:00-03:30").0, utc);
        assert_eq!(range("2015-03-07T10:00+01:00").0, utc - MS_PER_HOUR);
    }

    #[test]
    fn calendar_edges() {
        assert!(parse_range("2016-02-29").is_some());
        assert!(parse_range("2000-02-29").is_some());
        assert!(parse_range("0001-01-01").is_some());
        assert_eq!(range("9999").1, days_from_civil(10_000, 1, 1) * MS_PER_DAY);
    }

    #[test]
    fn rejects_invalid_values() {
        for bad in [
            "",
            "15",
            "2015-13",
            "2015-00",
            "2015-01-32",
            "2015-02-29",
            "2015-02-30",
            "1900-02-29",
            "0000",
            "2015-04-31",
            "2015-01-01T24:00:00Z",
            "2015-01-01T10:60Z",
            "2015-01-01T10:00:61Z",
            "2015-01-01T10",
            "2015-01-01 10:00:00Z",
            "2015-01-01T10:00:00.Z",
            "2015-01-01T10:00:00+0500",
            "2015-01-01T10:00:00+15:00",
            "2015-01-01Z",
            "2015-1-1",
            "abcd",
            "2015-01-01T10:00:00Zx",
        ] {
            assert_eq!(parse_range(bad), None, "{bad:?} should be rejected");
        }
    }
}
