//! Hand-written checkers for the lexical rules of the FHIR R4 primitive types.
//!
//! Each checker mirrors the `pattern` of the corresponding definition in the R4 JSON Schema
//! (plus, for dates, the calendar: "Dates SHALL be valid dates"). They work on bytes and never
//! allocate, so a check costs a few nanoseconds.

use serde_json::Value;

/// A FHIR primitive type, as far as validation cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prim {
    Boolean,
    /// 32-bit signed integer
    Integer,
    /// integer >= 1
    PositiveInt,
    /// integer >= 0
    UnsignedInt,
    /// 64-bit signed integer (R5 `integer64`; kept for completeness)
    Integer64,
    Decimal,
    /// `string`, `markdown`: at least one character
    String,
    /// `uri`, `url`, `canonical`: no whitespace
    Uri,
    Code,
    Id,
    Oid,
    Uuid,
    Date,
    DateTime,
    Instant,
    Time,
    Base64Binary,
    /// `Narrative.div`: a non-empty string (the XHTML itself is not parsed)
    Xhtml,
    /// a pattern the hand-written checkers do not know, checked with a precompiled regex
    Regex {
        index: u16,
        number: bool,
    },
}

impl Prim {
    /// The primitive type of a schema definition name (`date`, `positiveInt`...).
    pub(crate) fn from_name(name: &str) -> Option<Prim> {
        Some(match name {
            "boolean" => Prim::Boolean,
            "integer" => Prim::Integer,
            "positiveInt" => Prim::PositiveInt,
            "unsignedInt" => Prim::UnsignedInt,
            "integer64" => Prim::Integer64,
            "decimal" => Prim::Decimal,
            "string" | "markdown" => Prim::String,
            "uri" | "url" | "canonical" => Prim::Uri,
            "code" => Prim::Code,
            "id" => Prim::Id,
            "oid" => Prim::Oid,
            "uuid" => Prim::Uuid,
            "date" => Prim::Date,
            "dateTime" => Prim::DateTime,
            "instant" => Prim::Instant,
            "time" => Prim::Time,
            "base64Binary" => Prim::Base64Binary,
            "xhtml" => Prim::Xhtml,
            _ => return None,
        })
    }

    /// The FHIR name used in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Prim::Boolean => "boolean",
            Prim::Integer => "integer",
            Prim::PositiveInt => "positiveInt",
            Prim::UnsignedInt => "unsignedInt",
            Prim::Integer64 => "integer64",
            Prim::Decimal => "decimal",
            Prim::String => "string",
            Prim::Uri => "uri",
            Prim::Code => "code",
            Prim::Id => "id",
            Prim::Oid => "oid",
            Prim::Uuid => "uuid",
            Prim::Date => "date",
            Prim::DateTime => "dateTime",
            Prim::Instant => "instant",
            Prim::Time => "time",
            Prim::Base64Binary => "base64Binary",
            Prim::Xhtml => "xhtml",
            Prim::Regex { .. } => "primitive",
        }
    }
}

/// The JSON kind of a value, for messages.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks one primitive JSON value; `Err` carries the message. `regexes` backs [`Prim::Regex`].
pub(crate) fn check(prim: Prim, v: &Value, regexes: &[regex::Regex]) -> Result<(), String> {
    match prim {
        Prim::Boolean => match v {
            Value::Bool(_) => Ok(()),
            _ => Err(wrong_kind(prim, "boolean", v)),
        },
        Prim::Integer | Prim::PositiveInt | Prim::UnsignedInt | Prim::Integer64 => {
            let Value::Number(n) = v else {
                return Err(wrong_kind(prim, "number", v));
            };
            let Some(i) = n.as_i64() else {
                return Err(format!("{n} is not a valid {}: not an integer in range", prim.name()));
            };
            let (min, max) = match prim {
                Prim::Integer => (i64::from(i32::MIN), i64::from(i32::MAX)),
                Prim::PositiveInt => (1, i64::from(i32::MAX)),
                Prim::UnsignedInt => (0, i64::from(i32::MAX)),
                _ => (i64::MIN, i64::MAX),
            };
            if i < min || i > max {
                return Err(format!("{i} is out of range for {} ({min}..={max})", prim.name()));
            }
            Ok(())
        }
        // Any JSON number matches the decimal pattern (it is the JSON number grammar).
        Prim::Decimal => match v {
            Value::Number(_) => Ok(()),
            _ => Err(wrong_kind(prim, "number", v)),
        },
        Prim::Regex { index, number } => {
            let text = match (v, number) {
                (Value::Number(n), true) => n.to_string(),
                (Value::String(s), false) => s.clone(),
                _ => return Err(wrong_kind(prim, if number { "number" } else { "string" }, v)),
            };
            match regexes.get(usize::from(index)) {
                Some(re) if !re.is_match(&text) => Err(format!("{text:?} does not match the pattern {}", re.as_str())),
                _ => Ok(()),
            }
        }
        _ => {
            let Value::String(s) = v else {
                return Err(wrong_kind(prim, "string", v));
            };
            if check_str(prim, s) {
                Ok(())
            } else {
                Err(bad_lexical(prim, s))
            }
        }
    }
}

fn wrong_kind(prim: Prim, expected: &str, v: &Value) -> String {
    format!("expected a JSON {expected} ({}), found {}", prim.name(), json_kind(v))
}

fn bad_lexical(prim: Prim, s: &str) -> String {
    const MAX_SHOWN: usize = 80;
    let shown: String = s.chars().take(MAX_SHOWN).collect();
    let ellipsis = if shown.len() < s.len() { "..." } else { "" };
    let why = match prim {
        _ if has_control(s.as_bytes()) => "must not contain control characters (other than tab, CR, LF)",
        Prim::String => "must not be empty",
        Prim::Xhtml => "must not be empty",
        Prim::Uri => "must not contain whitespace",
        Prim::Code => "must be non-empty with no leading, trailing or repeated whitespace",
        Prim::Id => "must be 1-64 characters of A-Z a-z 0-9 - .",
        Prim::Oid => "must look like urn:oid:1.2.3",
        Prim::Uuid => "must look like urn:uuid: followed by a lowercase UUID",
        Prim::Date => "must be YYYY, YYYY-MM or YYYY-MM-DD and a real date",
        Prim::DateTime => "must be YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss(.sss)(Z|+hh:mm) and a real date",
        Prim::Instant => "must be YYYY-MM-DDThh:mm:ss(.sss)(Z|+hh:mm) and a real date",
        Prim::Time => "must be hh:mm:ss(.sss)",
        Prim::Base64Binary => "must be base64 (A-Z a-z 0-9 + / =, length a multiple of 4)",
        _ => "is not valid",
    };
    format!("{:?}{ellipsis} is not a valid {}: {why}", shown, prim.name())
}

/// FHIR strings SHALL NOT contain code points below U+0020 other than tab, CR and LF.
fn has_control(b: &[u8]) -> bool {
    b.iter().any(|&c| c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r'))
}

/// Lexical check of a string-valued primitive.
pub(crate) fn check_str(prim: Prim, s: &str) -> bool {
    let b = s.as_bytes();
    if has_control(b) {
        return false;
    }
    match prim {
        Prim::String | Prim::Xhtml => !b.is_empty(),
        Prim::Uri => !b.iter().any(|&c| is_ws(c)),
        Prim::Code => is_code(b),
        Prim::Id => is_id(b),
        Prim::Oid => is_oid(b),
        Prim::Uuid => is_uuid(b),
        Prim::Date => matches!(date_prefix(b), Some((n, _)) if n == b.len()),
        Prim::DateTime => is_date_time(b),
        Prim::Instant => is_instant(b),
        Prim::Time => time_part(b) == Some(b.len()),
        Prim::Base64Binary => is_base64(b),
        _ => true,
    }
}

/// Whitespace as in the schema's `\s` (ASCII: space, tab, CR, LF, VT, FF).
#[inline]
fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// `^[^\s]+(\s[^\s]+)*$`
fn is_code(b: &[u8]) -> bool {
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if is_ws(first) || is_ws(last) {
        return false;
    }
    !b.windows(2).any(|w| is_ws(w[0]) && is_ws(w[1]))
}

/// `^[A-Za-z0-9\-\.]{1,64}$`
fn is_id(b: &[u8]) -> bool {
    !b.is_empty() && b.len() <= 64 && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
}

/// `^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$`
fn is_oid(b: &[u8]) -> bool {
    let Some(rest) = b.strip_prefix(b"urn:oid:") else {
        return false;
    };
    let mut parts = rest.split(|&c| c == b'.');
    match parts.next() {
        Some([c]) if (b'0'..=b'2').contains(c) => {}
        _ => return false,
    }
    let mut count = 0;
    for p in parts {
        count += 1;
        let ok = match p {
            [b'0'] => true,
            [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
            [] => false,
        };
        if !ok {
            return false;
        }
    }
    count > 0
}

/// `^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`
fn is_uuid(b: &[u8]) -> bool {
    let Some(rest) = b.strip_prefix(b"urn:uuid:") else {
        return false;
    };
    rest.len() == 36
        && rest.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

/// base64: the alphabet `A-Z a-z 0-9 + / =`, whitespace allowed (the schema's
/// `^(\s*([0-9a-zA-Z\+/=]){4}\s*)+$`), a whole number of 4-character groups, `=` only as padding.
// `is_multiple_of` needs Rust 1.87; the workspace declares rust-version 1.85
#[allow(clippy::manual_is_multiple_of)]
fn is_base64(b: &[u8]) -> bool {
    let mut n = 0usize;
    let mut pad = 0usize;
    for &c in b {
        if is_ws(c) {
            continue;
        }
        if c == b'=' {
            pad += 1;
        } else if c.is_ascii_alphanumeric() || c == b'+' || c == b'/' {
            if pad > 0 {
                return false;
            }
        } else {
            return false;
        }
        n += 1;
    }
    n > 0 && n % 4 == 0 && pad <= 2
}

#[inline]
fn digits<const N: usize>(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + N)?;
    let mut v = 0u32;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

// `is_multiple_of` needs Rust 1.87; the workspace declares rust-version 1.85
#[allow(clippy::manual_is_multiple_of)]
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses `YYYY(-MM(-DD)?)?` at the start of `b`; returns (bytes consumed, whether the day is present).
fn date_prefix(b: &[u8]) -> Option<(usize, bool)> {
    let year = digits::<4>(b, 0)?;
    if year == 0 {
        return None;
    }
    if b.get(4) != Some(&b'-') {
        return Some((4, false));
    }
    let month = digits::<2>(b, 5)?;
    if !(1..=12).contains(&month) {
        return None;
    }
    if b.get(7) != Some(&b'-') {
        return Some((7, false));
    }
    let day = digits::<2>(b, 8)?;
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some((10, true))
}

/// Parses `hh:mm:ss(.f+)?` at the start of `b`; returns the bytes consumed.
fn time_part(b: &[u8]) -> Option<usize> {
    let h = digits::<2>(b, 0)?;
    let m = digits::<2>(b.get(2..)?.strip_prefix(b":")?, 0)?;
    let s = digits::<2>(b.get(5..)?.strip_prefix(b":")?, 0)?;
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let mut n = 8;
    if b.get(8) == Some(&b'.') {
        let frac = b[9..].iter().take_while(|c| c.is_ascii_digit()).count();
        if frac == 0 {
            return None;
        }
        n = 9 + frac;
    }
    Some(n)
}

/// `Z` or `(+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)`, the whole rest of the input.
fn is_zone(b: &[u8]) -> bool {
    match b {
        [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            let (Some(h), Some(m)) = (digits::<2>(&[*h1, *h2], 0), digits::<2>(&[*m1, *m2], 0)) else {
                return false;
            };
            (h <= 13 && m <= 59) || (h == 14 && m == 0)
        }
        _ => false,
    }
}

/// `T` + time + zone, the whole rest of the input.
fn is_time_and_zone(b: &[u8]) -> bool {
    let Some(rest) = b.strip_prefix(b"T") else {
        return false;
    };
    match time_part(rest) {
        Some(n) => is_zone(&rest[n..]),
        None => false,
    }
}

fn is_date_time(b: &[u8]) -> bool {
    match date_prefix(b) {
        Some((n, _)) if n == b.len() => true,
        Some((n, true)) => is_time_and_zone(&b[n..]),
        _ => false,
    }
}

fn is_instant(b: &[u8]) -> bool {
    match date_prefix(b) {
        Some((n, true)) => is_time_and_zone(&b[n..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        for ok in ["2020", "2020-02", "2020-02-29", "2000-02-29", "0001-01-01"] {
            assert!(check_str(Prim::Date, ok), "{ok}");
        }
        for bad in [
            "",
            "0000",
            "20",
            "2020-",
            "2020-13",
            "2020-00",
            "2019-02-29",
            "1900-02-29",
            "2020-04-31",
            "2020-1-01",
            "2020-01-01T00:00:00Z",
            " 2020",
        ] {
            assert!(!check_str(Prim::Date, bad), "{bad}");
        }
    }

    #[test]
    fn date_times_and_instants() {
        for ok in [
            "2020",
            "2020-01",
            "2020-01-02",
            "2020-01-02T03:04:05Z",
            "2020-01-02T03:04:05.123+14:00",
            "2020-01-02T23:59:60-05:30",
        ] {
            assert!(check_str(Prim::DateTime, ok), "{ok}");
        }
        for bad in [
            "2020-01T03:04:05Z",
            "2020-01-02T03:04:05",
            "2020-01-02T03:04Z",
            "2020-01-02T24:00:00Z",
            "2020-01-02T03:04:05.Z",
            "2020-01-02T03:04:05+14:30",
            "2020-01-02T03:04:05+1:00",
            "2020-01-02 03:04:05Z",
        ] {
            assert!(!check_str(Prim::DateTime, bad), "{bad}");
        }
        assert!(check_str(Prim::Instant, "2020-01-02T03:04:05.5-03:00"));
        for bad in ["2020-01-02", "2020", "2020-01-02T03:04:05"] {
            assert!(!check_str(Prim::Instant, bad), "{bad}");
        }
        assert!(check_str(Prim::Time, "13:45:00"));
        assert!(check_str(Prim::Time, "13:45:00.25"));
        for bad in ["13:45", "25:00:00", "13:60:00", "13:45:00Z"] {
            assert!(!check_str(Prim::Time, bad), "{bad}");
        }
    }

    #[test]
    fn strings_codes_ids_uris() {
        assert!(check_str(Prim::Code, "a b"));
        for bad in ["", " a", "a ", "a  b", "a\tb\t"] {
            assert!(!check_str(Prim::Code, bad), "{bad:?}");
        }
        assert!(check_str(Prim::Id, "abc-DEF.123"));
        assert!(check_str(Prim::Id, &"a".repeat(64)));
        for bad in ["", "a_b", "a b", "é", &"a".repeat(65)] {
            assert!(!check_str(Prim::Id, bad), "{bad:?}");
        }
        assert!(check_str(Prim::Uri, "http://x/y?z=1"));
        assert!(check_str(Prim::Uri, ""));
        assert!(!check_str(Prim::Uri, "http://x/ y"));
        assert!(check_str(Prim::String, " x "));
        assert!(!check_str(Prim::String, ""));
        assert!(!check_str(Prim::String, "a\u{0}b"));
        assert!(!check_str(Prim::Code, "a\u{1}"));
        assert!(check_str(Prim::String, "line\nnext\ttab"));
        assert!(check_str(Prim::Oid, "urn:oid:1.2.840.10008"));
        for bad in ["urn:oid:1", "urn:oid:3.1", "urn:oid:1.02", "1.2.3"] {
            assert!(!check_str(Prim::Oid, bad), "{bad}");
        }
        assert!(check_str(Prim::Uuid, "urn:uuid:c757873d-ec9a-4326-a141-556f43239520"));
        assert!(!check_str(Prim::Uuid, "urn:uuid:C757873D-EC9A-4326-A141-556F43239520"));
        assert!(!check_str(Prim::Uuid, "c757873d-ec9a-4326-a141-556f43239520"));
    }

    #[test]
    fn base64() {
        for ok in ["AAAA", "SGVsbG8=", "SGVsbA==", "SGVs\nbG8h", "+/+/"] {
            assert!(check_str(Prim::Base64Binary, ok), "{ok:?}");
        }
        for bad in ["", "AAA", "SGV=sbG8", "SGVsbG8*", "A==="] {
            assert!(!check_str(Prim::Base64Binary, bad), "{bad:?}");
        }
    }

    #[test]
    fn numbers() {
        let re: Vec<regex::Regex> = Vec::new();
        let n = |s: &str| -> Value { serde_json::from_str(s).unwrap_or(Value::Null) };
        assert!(check(Prim::Integer, &n("-5"), &re).is_ok());
        assert!(check(Prim::Integer, &n("2147483648"), &re).is_err());
        assert!(check(Prim::Integer, &n("1.5"), &re).is_err());
        assert!(check(Prim::Integer, &n("\"1\""), &re).is_err());
        assert!(check(Prim::PositiveInt, &n("0"), &re).is_err());
        assert!(check(Prim::PositiveInt, &n("1"), &re).is_ok());
        assert!(check(Prim::UnsignedInt, &n("0"), &re).is_ok());
        assert!(check(Prim::UnsignedInt, &n("-1"), &re).is_err());
        assert!(check(Prim::Decimal, &n("1.50e3"), &re).is_ok());
        assert!(check(Prim::Decimal, &n("\"1.5\""), &re).is_err());
        assert!(check(Prim::Boolean, &n("true"), &re).is_ok());
        assert!(check(Prim::Boolean, &n("\"true\""), &re).is_err());
    }
}
