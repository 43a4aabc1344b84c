//! Timestamp parsing and formatting, without a format string from the user.
//!
//! Monitoring exports disagree on how to write time: NAB and Azure write naive
//! `YYYY-MM-DD HH:MM:SS[.fffffff]`, CloudWatch and our own files write RFC 3339,
//! Prometheus and many scripts write unix seconds or milliseconds. Asking the user
//! for a format string is error-prone, so every cell is classified by its shape:
//!
//! * digits only (optionally with a sign and a fraction) are a unix epoch whose
//!   unit is decided by magnitude: below 10^11 seconds, below 10^14 milliseconds,
//!   below 10^17 microseconds, otherwise nanoseconds (10^11 s is the year 5138,
//!   10^11 ms is 1973, so real data never sits on the wrong side of a boundary);
//! * anything else must be a calendar date `YYYY-MM-DD`, optionally followed by
//!   `T` or a space, `HH:MM[:SS[.fraction]]` and an optional zone (`Z`, `±HH:MM`,
//!   `±HHMM`, `±HH`, `UTC`, `GMT`). A time without a zone is taken as UTC.
//!
//! Everything is converted to unix milliseconds (fractions are truncated towards
//! the past). The calendar arithmetic is hand-written (Howard Hinnant's
//! `days_from_civil`) because it is a few lines, is exact for the proleptic
//! Gregorian calendar, and lets errors say precisely which part is out of range.

use std::fmt::Write as _;

use thiserror::Error;

/// Why a cell is not a timestamp. `Display` quotes the offending text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimestampError {
    /// The cell is empty (or only whitespace).
    #[error("empty timestamp")]
    Empty,
    /// The text has no recognised timestamp shape.
    #[error(
        "`{input}` is not a timestamp: expected `YYYY-MM-DD HH:MM:SS[.fff]`, RFC 3339 \
         (e.g. `2024-01-31T12:00:00Z`, `2024-01-31T12:00:00.5+02:00`) or unix seconds/milliseconds"
    )]
    Unrecognized {
        /// The text as found.
        input: String,
    },
    /// One component (month, day, hour...) is outside its valid range.
    #[error("`{input}`: {component} {value} is outside {range}")]
    OutOfRange {
        /// The text as found.
        input: String,
        /// Which component: `month`, `day`, `hour`, `minute`, `second`, `offset hours`...
        component: &'static str,
        /// The value found.
        value: i64,
        /// The valid range, e.g. `1..=12`.
        range: String,
    },
    /// The instant does not fit in an `i64` of milliseconds.
    #[error("`{input}`: timestamp is too far from 1970 to represent")]
    Overflow {
        /// The text as found.
        input: String,
    },
}

/// Parse one timestamp cell to unix milliseconds (UTC). See the module docs for the
/// accepted forms.
///
/// ```
/// use aya_forecaster::data::parse_timestamp;
/// assert_eq!(parse_timestamp("1970-01-01 00:00:01").unwrap(), 1000);
/// assert_eq!(parse_timestamp("1970-01-01T02:00:00+02:00").unwrap(), 0);
/// assert_eq!(parse_timestamp("1400000000").unwrap(), 1_400_000_000_000);
/// assert_eq!(parse_timestamp("1400000000123").unwrap(), 1_400_000_000_123);
/// ```
pub fn parse_timestamp(s: &str) -> Result<i64, TimestampError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(TimestampError::Empty);
    }
    let b = t.as_bytes();
    // Epoch numbers: optional sign, digits, optional fraction. A date always has a
    // '-' after at least one digit, so "digits only" is unambiguous.
    let body = b
        .strip_prefix(b"-")
        .or_else(|| b.strip_prefix(b"+"))
        .unwrap_or(b);
    if !body.is_empty() && body.iter().all(|c| c.is_ascii_digit() || *c == b'.') {
        return parse_epoch(t);
    }
    parse_calendar(t)
}

/// Unix epoch numbers, unit by magnitude.
fn parse_epoch(t: &str) -> Result<i64, TimestampError> {
    let unrecognized = || TimestampError::Unrecognized {
        input: t.to_string(),
    };
    let overflow = || TimestampError::Overflow {
        input: t.to_string(),
    };
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if int_part.is_empty()
        || !int_part.bytes().all(|c| c.is_ascii_digit())
        || !frac_part.bytes().all(|c| c.is_ascii_digit())
        || (body.contains('.') && frac_part.is_empty())
    {
        return Err(unrecognized());
    }
    if int_part.len() > 20 {
        return Err(overflow());
    }
    let int: i128 = int_part.parse().map_err(|_| overflow())?;
    // Scale: how many of this unit make one millisecond, as (numerator, denominator):
    // value_ms = value * mul / div.
    let (mul, div): (i128, i128) = if int < 100_000_000_000 {
        (1000, 1) // seconds
    } else if int < 100_000_000_000_000 {
        (1, 1) // milliseconds
    } else if int < 100_000_000_000_000_000 {
        (1, 1000) // microseconds
    } else {
        (1, 1_000_000) // nanoseconds
    };
    // Fraction of the unit, kept to 9 digits (nanounits), which is finer than a ms
    // for every unit.
    let mut frac_nano: i128 = 0;
    for (i, c) in frac_part.bytes().take(9).enumerate() {
        frac_nano += i128::from(c - b'0') * 10i128.pow(8 - i as u32);
    }
    // total in nano-units of the unit, then to ms with floor division.
    let total_nano = int * 1_000_000_000 + frac_nano;
    let signed = if negative { -total_nano } else { total_nano };
    let ms = (signed * mul).div_euclid(div * 1_000_000_000);
    i64::try_from(ms).map_err(|_| overflow())
}

/// A cursor over the bytes of a calendar timestamp.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    /// Exactly `n` ASCII digits.
    fn digits(&mut self, n: usize) -> Option<i64> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.pos = end;
        Some(s.iter().fold(0i64, |acc, c| acc * 10 + i64::from(c - b'0')))
    }
    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }
}

/// `YYYY-MM-DD[(T| )HH:MM[:SS[.f+]]][ ][zone]`.
fn parse_calendar(t: &str) -> Result<i64, TimestampError> {
    let unrecognized = || TimestampError::Unrecognized {
        input: t.to_string(),
    };
    let range = |component: &'static str, value: i64, range: &str| TimestampError::OutOfRange {
        input: t.to_string(),
        component,
        value,
        range: range.to_string(),
    };
    let mut c = Cursor {
        b: t.as_bytes(),
        pos: 0,
    };
    let year = c.digits(4).ok_or_else(unrecognized)?;
    if !c.eat(b'-') {
        return Err(unrecognized());
    }
    let month = c.digits(2).ok_or_else(unrecognized)?;
    if !c.eat(b'-') {
        return Err(unrecognized());
    }
    let day = c.digits(2).ok_or_else(unrecognized)?;
    if !(1..=12).contains(&month) {
        return Err(range("month", month, "1..=12"));
    }
    let dim = days_in_month(year, month);
    if day < 1 || day > dim {
        return Err(range(
            "day",
            day,
            &format!("1..={dim} for {year:04}-{month:02}"),
        ));
    }
    let (mut hour, mut minute, mut second, mut nanos) = (0i64, 0i64, 0i64, 0i64);
    let mut offset_min = 0i64;
    if !c.done() {
        if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
            return Err(unrecognized());
        }
        hour = c.digits(2).ok_or_else(unrecognized)?;
        if !c.eat(b':') {
            return Err(unrecognized());
        }
        minute = c.digits(2).ok_or_else(unrecognized)?;
        if c.eat(b':') {
            second = c.digits(2).ok_or_else(unrecognized)?;
            if c.eat(b'.') || c.eat(b',') {
                let start = c.pos;
                let mut n = 0usize;
                while let Some(d) = c.peek().filter(u8::is_ascii_digit) {
                    if n < 9 {
                        nanos = nanos * 10 + i64::from(d - b'0');
                    }
                    n += 1;
                    c.pos += 1;
                }
                if c.pos == start {
                    return Err(unrecognized());
                }
                for _ in n.min(9)..9 {
                    nanos *= 10;
                }
            }
        }
        if hour > 23 {
            return Err(range("hour", hour, "0..=23"));
        }
        if minute > 59 {
            return Err(range("minute", minute, "0..=59"));
        }
        // 60 is a leap second (RFC 3339 allows it); it lands on the next second.
        if second > 60 {
            return Err(range("second", second, "0..=60"));
        }
        offset_min = parse_zone(&mut c, t)?;
        if !c.done() {
            return Err(unrecognized());
        }
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    secs.checked_mul(1000)
        .and_then(|ms| ms.checked_add(nanos / 1_000_000))
        .ok_or_else(|| TimestampError::Overflow {
            input: t.to_string(),
        })
}

/// The zone after the time of day: nothing, `Z`, `UTC`/`GMT` or `±hh[:]mm`, as minutes east of UTC.
fn parse_zone(c: &mut Cursor<'_>, t: &str) -> Result<i64, TimestampError> {
    let unrecognized = || TimestampError::Unrecognized {
        input: t.to_string(),
    };
    let range = |component: &'static str, value: i64, range: &str| TimestampError::OutOfRange {
        input: t.to_string(),
        component,
        value,
        range: range.to_string(),
    };
    let before_space = c.pos;
    c.eat(b' ');
    if c.done() {
        if c.pos != before_space {
            return Err(unrecognized()); // trailing space inside a trimmed cell cannot happen, but be strict
        }
    } else if c.eat(b'Z') || c.eat(b'z') {
    } else if let Some(rest) = t.get(c.pos..).filter(|r| *r == "UTC" || *r == "GMT") {
        c.pos += rest.len();
    } else {
        let sign = if c.eat(b'+') {
            1
        } else if c.eat(b'-') {
            -1
        } else {
            return Err(unrecognized());
        };
        let oh = c.digits(2).ok_or_else(unrecognized)?;
        let om = if c.eat(b':') {
            c.digits(2).ok_or_else(unrecognized)?
        } else if c.done() {
            0
        } else {
            c.digits(2).ok_or_else(unrecognized)?
        };
        if oh > 23 {
            return Err(range("offset hours", oh, "0..=23"));
        }
        if om > 59 {
            return Err(range("offset minutes", om, "0..=59"));
        }
        return Ok(sign * (oh * 60 + om));
    }
    Ok(0)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of `days_from_civil`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Format unix milliseconds as RFC 3339 UTC: `2024-01-31T12:00:00Z`, with `.fff`
/// only when the milliseconds are not zero. Deterministic; `parse_timestamp`
/// reads it back exactly.
pub fn format_rfc3339(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    push_rfc3339(&mut out, ms);
    out
}

/// Append [`format_rfc3339`] of `ms` to `out` (no allocation when `out` has room).
pub fn push_rfc3339(out: &mut String, ms: i64) {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if milli != 0 {
        let _ = write!(out, ".{milli:03}");
    }
    out.push('Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        match parse_timestamp(s) {
            Ok(v) => v,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    /// Cross-check against chrono for the calendar forms.
    fn chrono_ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| d.timestamp_millis())
            .unwrap_or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
                    .map(|d| d.and_utc().timestamp_millis())
                    .unwrap_or_else(|e| panic!("chrono cannot parse {s:?}: {e}"))
            })
    }

    #[test]
    fn naive_space_separated_forms() {
        for s in [
            "2014-02-14 14:30:00",
            "1998-04-30 21:30:00",
            "2023-11-16 18:17:03.9799600",
            "2023-11-16 18:17:03.5",
            "2000-02-29 23:59:59.999",
            "1969-12-31 23:59:59.5",
            "1900-03-01 00:00:00",
        ] {
            assert_eq!(ms(s), chrono_ms(s), "{s}");
        }
        assert_eq!(
            ms("2023-11-16 18:17:03.9799600") % 1000,
            979,
            "7 digits truncate to ms"
        );
    }

    #[test]
    fn rfc3339_forms() {
        for s in [
            "1998-04-30T21:30:00Z",
            "1998-04-30T21:30:00.250Z",
            "2024-01-31T12:00:00+02:00",
            "2024-01-31T12:00:00.123456789-05:30",
            "2024-12-31T23:59:59.001+00:00",
        ] {
            assert_eq!(ms(s), chrono_ms(s), "{s}");
        }
        assert_eq!(ms("2024-01-31t12:00:00z"), ms("2024-01-31T12:00:00Z"));
        assert_eq!(ms("2024-01-31 12:00:00 UTC"), ms("2024-01-31T12:00:00Z"));
        assert_eq!(ms("2024-01-31T12:00:00+0200"), ms("2024-01-31T10:00:00Z"));
        assert_eq!(ms("2024-01-31T12:00:00-02"), ms("2024-01-31T14:00:00Z"));
        assert_eq!(ms("2024-01-31T12:00"), ms("2024-01-31T12:00:00Z"));
        assert_eq!(ms("2024-01-31"), ms("2024-01-31T00:00:00Z"));
        assert_eq!(
            ms("2016-12-31T23:59:60Z"),
            ms("2017-01-01T00:00:00Z"),
            "leap second"
        );
    }

    #[test]
    fn naive_is_utc() {
        assert_eq!(ms("2024-01-31 12:00:00"), ms("2024-01-31T12:00:00Z"));
        assert_eq!(ms("1970-01-01 00:00:00"), 0);
    }

    #[test]
    fn epoch_units_by_magnitude() {
        assert_eq!(ms("0"), 0);
        assert_eq!(ms("1400000000"), 1_400_000_000_000); // seconds (2014)
        assert_eq!(ms("1400000000.25"), 1_400_000_000_250);
        assert_eq!(ms("99999999999"), 99_999_999_999_000); // largest seconds value
        assert_eq!(ms("100000000000"), 100_000_000_000); // smallest ms value (1973)
        assert_eq!(ms("1400000000123"), 1_400_000_000_123); // milliseconds
        assert_eq!(ms("1400000000123.9"), 1_400_000_000_123);
        assert_eq!(ms("1400000000123456"), 1_400_000_000_123); // microseconds
        assert_eq!(ms("1400000000123456789"), 1_400_000_000_123); // nanoseconds
        assert_eq!(ms("-1.5"), -1500);
        assert_eq!(ms(" 60 "), 60_000);
    }

    #[test]
    fn errors_name_the_part() {
        let e = |s: &str| parse_timestamp(s).unwrap_err().to_string();
        assert_eq!(parse_timestamp("  "), Err(TimestampError::Empty));
        assert!(
            e("2014-13-01 00:00:00").contains("month 13 is outside 1..=12"),
            "{}",
            e("x")
        );
        assert!(e("2014-02-30 00:00:00").contains("day 30 is outside 1..=28 for 2014-02"));
        assert!(e("2016-02-30 00:00:00").contains("day 30 is outside 1..=29 for 2016-02"));
        assert!(e("2014-02-14 24:00:00").contains("hour 24"));
        assert!(e("2014-02-14 23:60:00").contains("minute 60"));
        assert!(e("2014-02-14 23:59:61").contains("second 61"));
        assert!(e("2014-02-14T23:59:59+25:00").contains("offset hours 25"));
        for bad in [
            "yesterday",
            "14/02/2014 10:00",
            "2014-2-14",
            "2014-02-14X10:00:00",
            "2014-02-14 10",
            "2014-02-14 10:00:00.",
            "2014-02-14 10:00:00 PST",
            "1.2.3",
            "12.",
            "NaN",
        ] {
            assert!(
                matches!(
                    parse_timestamp(bad),
                    Err(TimestampError::Unrecognized { .. })
                ),
                "{bad:?} -> {:?}",
                parse_timestamp(bad)
            );
        }
        assert!(matches!(
            parse_timestamp("123456789012345678901234"),
            Err(TimestampError::Overflow { .. })
        ));
    }

    #[test]
    fn format_round_trips() {
        for v in [
            0i64,
            1,
            999,
            1_000,
            -1,
            -86_400_001,
            893_971_800_000,
            1_700_000_000_123,
        ] {
            let s = format_rfc3339(v);
            assert_eq!(ms(&s), v, "{s}");
            assert_eq!(chrono_ms(&s), v, "{s}");
        }
        assert_eq!(format_rfc3339(893_971_800_000), "1998-04-30T21:30:00Z");
        assert_eq!(format_rfc3339(1_500), "1970-01-01T00:00:01.500Z");
    }
}
