//! Calendar rules of SPEC §1 "Wedding day" and "Saturday mode", as pure functions: is a
//! wedding's `event_date` today in its own time zone, and is today one of the Saturday-mode
//! days in the server's time zone. Time comes in as an argument (milliseconds since the
//! Unix epoch); nothing here reads the clock.
//!
//! Time zones are IANA names resolved against the tz database bundled into the binary
//! (jiff's `tzdb-bundle-always`), so a fresh machine needs nothing installed and every host
//! answers the same. What this module does not do: decide *which* clock is "now" (the
//! runtime does, and tests can set it), or keep any table of weddings.

use crate::error::{ErrorCode, Refusal};
pub use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A resolved IANA time zone with the name it was given.
#[derive(Clone, Debug)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Zone {
    /// Resolves an IANA name (`Europe/London`, `UTC`, `Pacific/Kiritimati`). Unknown names
    /// are refused with `WS_INVALID_WEDDING_CONTEXT`, naming the field.
    pub fn parse(name: &str) -> Result<Zone, Refusal> {
        let bad = || {
            Refusal::new(
                ErrorCode::InvalidWeddingContext,
                format!(
                    "time_zone {:?} is not a known IANA time zone name",
                    name.escape_default().to_string()
                ),
            )
        };
        // Bounded before the lookup: the longest name in tzdata is 32 bytes.
        if name.is_empty() || name.len() > 64 {
            return Err(bad());
        }
        let tz = TimeZone::get(name).map_err(|_| bad())?;
        Ok(Zone {
            name: tz.iana_name().unwrap_or(name).to_owned(),
            tz,
        })
    }

    pub fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            tz: TimeZone::UTC,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The calendar date at `unix_ms` in this zone.
    pub fn date_at(&self, unix_ms: u64) -> Date {
        timestamp(unix_ms).to_zoned(self.tz.clone()).date()
    }

    /// The weekday at `unix_ms` in this zone.
    pub fn weekday_at(&self, unix_ms: u64) -> Weekday {
        self.date_at(unix_ms).weekday()
    }

    /// `[start, end)` of `date` in this zone, in Unix milliseconds. A day is 23 or 25 hours
    /// long across a daylight-saving change, and starts at the first instant that exists
    /// (a zone that skips midnight starts the day later).
    pub fn day_span_ms(&self, date: Date) -> (u64, u64) {
        let start = date
            .to_zoned(self.tz.clone())
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MIN);
        let end = date
            .tomorrow()
            .and_then(|d| d.to_zoned(self.tz.clone()))
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MAX);
        (to_ms(start), to_ms(end))
    }

    /// The instant, in Unix milliseconds, of local time `hh:mm` on `date` in this zone (a
    /// wedding's ceremony). A time skipped by a daylight-saving change is taken as the
    /// instant after the gap, a repeated one as its first occurrence (jiff's `compatible`).
    pub fn local_time_ms(&self, date: Date, time: LocalTime) -> u64 {
        let t = date
            .at(time.hour as i8, time.minute as i8, 0, 0)
            .to_zoned(self.tz.clone())
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MAX);
        to_ms(t)
    }
}

/// A wall-clock time of day, `HH:MM` (24-hour).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    pub hour: u8,
    pub minute: u8,
}

impl std::fmt::Display for LocalTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

/// Parses a `ceremony_time`: exactly `HH:MM`, 00:00 to 23:59. Refused with
/// `WS_INVALID_WEDDING_CONTEXT`, naming the field.
pub fn parse_local_time(s: &str) -> Result<LocalTime, Refusal> {
    let bad = || {
        Refusal::new(
            ErrorCode::InvalidWeddingContext,
            format!(
                "ceremony_time {:?} must be a local time as HH:MM (00:00 to 23:59)",
                s.escape_default().to_string()
            ),
        )
    };
    let b = s.as_bytes();
    if b.len() != 5
        || b[2] != b':'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 2 || c.is_ascii_digit())
    {
        return Err(bad());
    }
    let hour: u8 = s[0..2].parse().map_err(|_| bad())?;
    let minute: u8 = s[3..5].parse().map_err(|_| bad())?;
    if hour > 23 || minute > 59 {
        return Err(bad());
    }
    Ok(LocalTime { hour, minute })
}

fn timestamp(unix_ms: u64) -> Timestamp {
    let ms = i64::try_from(unix_ms).unwrap_or(i64::MAX);
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::MAX)
}

fn to_ms(t: Timestamp) -> u64 {
    u64::try_from(t.as_millisecond()).unwrap_or(0)
}

/// Parses an `event_date`: exactly `YYYY-MM-DD`, a real calendar day (no `+002026-…`, no
/// `2026-02-30`). Refused with `WS_INVALID_WEDDING_CONTEXT`, naming the field.
pub fn parse_date(s: &str) -> Result<Date, Refusal> {
    let bad = || {
        Refusal::new(
            ErrorCode::InvalidWeddingContext,
            format!(
                "event_date {:?} must be a calendar date as YYYY-MM-DD",
                s.escape_default().to_string()
            ),
        )
    };
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<i16>().map_err(|_| bad());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if y < 1 {
        return Err(bad());
    }
    Date::new(y, m as i8, d as i8).map_err(|_| bad())
}

/// Whether the day `[span.0, span.1)` (see [`Zone::day_span_ms`]) contains `now_ms`.
pub fn in_span(span: (u64, u64), now_ms: u64) -> bool {
    span.0 <= now_ms && now_ms < span.1
}

/// Whether `event_date` is today in `zone` at `now_ms` (SPEC §1 "Wedding day").
pub fn is_wedding_day(event_date: Date, zone: &Zone, now_ms: u64) -> bool {
    zone.date_at(now_ms) == event_date
}

/// A weekday by its English name, any case (`saturday`, `Sun`).
pub fn parse_weekday(s: &str) -> Option<Weekday> {
    let l = s.to_ascii_lowercase();
    Some(match l.as_str() {
        "monday" | "mon" => Weekday::Monday,
        "tuesday" | "tue" => Weekday::Tuesday,
        "wednesday" | "wed" => Weekday::Wednesday,
        "thursday" | "thu" => Weekday::Thursday,
        "friday" | "fri" => Weekday::Friday,
        "saturday" | "sat" => Weekday::Saturday,
        "sunday" | "sun" => Weekday::Sunday,
        _ => return None,
    })
}

/// Whether `now_ms`, in `zone`, falls on one of `days` (SPEC §1 "Saturday mode", `auto`).
pub fn is_mode_day(days: &[Weekday], zone: &Zone, now_ms: u64) -> bool {
    days.contains(&zone.weekday_at(now_ms))
}

/// Parses an RFC 3339 instant (`2026-06-13T10:00:00Z`, `2026-06-13T12:00:00+02:00`) to
/// Unix milliseconds; `None` for anything else or an instant before 1970.
pub fn parse_instant_ms(s: &str) -> Option<u64> {
    let t: Timestamp = s.parse().ok()?;
    u64::try_from(t.as_millisecond()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceremony_times_are_local_to_the_wedding() {
        let t = parse_local_time("14:30").unwrap();
        assert_eq!(t.to_string(), "14:30");
        let d = parse_date("2026-06-13").unwrap();
        // London is UTC+1 in June.
        let london = Zone::parse("Europe/London").unwrap();
        assert_eq!(
            london.local_time_ms(d, t),
            parse_instant_ms("2026-06-13T13:30:00Z").unwrap()
        );
        for bad in ["24:00", "9:30", "12:60", "12-30", "", "12:3x", "+1:30"] {
            let e = parse_local_time(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidWeddingContext, "{bad}");
            assert!(e.message.contains("ceremony_time"));
        }
    }

    fn ms(s: &str) -> u64 {
        parse_instant_ms(s).unwrap()
    }

    #[test]
    fn dates_are_strict() {
        assert_eq!(
            parse_date("2026-06-13").unwrap(),
            Date::constant(2026, 6, 13)
        );
        assert_eq!(
            parse_date("2028-02-29").unwrap(),
            Date::constant(2028, 2, 29)
        );
        for bad in [
            "2027-02-29",
            "2026-04-31",
            "2026-13-01",
            "2026-00-10",
            "0000-01-01",
            "2026-6-13",
            "2026/06/13",
            "+02026-06-13",
            "2026-06-13T00:00",
            "",
            "２０２６-06-13",
        ] {
            let e = parse_date(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidWeddingContext, "{bad}");
            assert!(e.message.contains("event_date"), "{}", e.message);
        }
    }

    #[test]
    fn zones_come_from_the_bundled_database() {
        for ok in [
            "UTC",
            "Europe/London",
            "America/New_York",
            "Pacific/Kiritimati",
        ] {
            assert_eq!(Zone::parse(ok).unwrap().name(), ok);
        }
        for bad in [
            "",
            "Mars/Olympus",
            "Europe/London\0",
            "../../etc/passwd",
            &"A".repeat(65),
        ] {
            let e = Zone::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidWeddingContext);
            assert!(e.message.contains("time_zone"), "{}", e.message);
        }
    }

    #[test]
    fn today_is_in_the_weddings_own_zone() {
        let june13 = Date::constant(2026, 6, 13);
        let london = Zone::parse("Europe/London").unwrap();
        let kiri = Zone::parse("Pacific/Kiritimati").unwrap(); // UTC+14
        let la = Zone::parse("America/Los_Angeles").unwrap(); // UTC-7 in June
                                                              // 23:30 UTC on the 12th is 00:30 on the 13th in London (BST, UTC+1).
        assert!(is_wedding_day(june13, &london, ms("2026-06-12T23:30:00Z")));
        assert!(!is_wedding_day(
            june13,
            &Zone::utc(),
            ms("2026-06-12T23:30:00Z")
        ));
        // 10:30 UTC on the 13th is already the 14th in Kiritimati.
        assert!(!is_wedding_day(june13, &kiri, ms("2026-06-13T10:30:00Z")));
        assert!(is_wedding_day(
            Date::constant(2026, 6, 14),
            &kiri,
            ms("2026-06-13T10:30:00Z")
        ));
        // 03:00 UTC on the 14th is still the 13th in Los Angeles.
        assert!(is_wedding_day(june13, &la, ms("2026-06-14T03:00:00Z")));
        assert!(!is_wedding_day(june13, &la, ms("2026-06-14T07:00:00Z")));
    }

    #[test]
    fn day_spans_follow_daylight_saving() {
        let london = Zone::parse("Europe/London").unwrap();
        // 29 March 2026: clocks go forward, a 23-hour day starting at 00:00 GMT.
        let (s, e) = london.day_span_ms(Date::constant(2026, 3, 29));
        assert_eq!(s, ms("2026-03-29T00:00:00Z"));
        assert_eq!(e - s, 23 * 3_600_000);
        // 25 October 2026: clocks go back, a 25-hour day starting at 00:00 BST.
        let (s, e) = london.day_span_ms(Date::constant(2026, 10, 25));
        assert_eq!(s, ms("2026-10-24T23:00:00Z"));
        assert_eq!(e - s, 25 * 3_600_000);
        assert!(in_span((s, e), s));
        assert!(!in_span((s, e), e));
        // The span agrees with `is_wedding_day` at every hour around it.
        let d = Date::constant(2026, 10, 25);
        let mut t = s - 3 * 3_600_000;
        while t < e + 3 * 3_600_000 {
            assert_eq!(in_span((s, e), t), is_wedding_day(d, &london, t), "{t}");
            t += 1_800_000;
        }
    }

    #[test]
    fn saturday_mode_days_in_a_zone() {
        let sat = [Weekday::Saturday];
        // 2026-06-13 is a Saturday; 2026-06-16 a Tuesday.
        assert!(is_mode_day(&sat, &Zone::utc(), ms("2026-06-13T10:00:00Z")));
        assert!(!is_mode_day(&sat, &Zone::utc(), ms("2026-06-16T10:00:00Z")));
        // 23:00 UTC Friday is already Saturday in Berlin (UTC+2).
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        assert!(!is_mode_day(&sat, &Zone::utc(), ms("2026-06-12T23:00:00Z")));
        assert!(is_mode_day(&sat, &berlin, ms("2026-06-12T23:00:00Z")));
        assert!(is_mode_day(
            &[Weekday::Friday, Weekday::Sunday],
            &Zone::utc(),
            ms("2026-06-14T12:00:00Z")
        ));
        assert_eq!(parse_weekday("Saturday"), Some(Weekday::Saturday));
        assert_eq!(parse_weekday("sun"), Some(Weekday::Sunday));
        assert_eq!(parse_weekday("caturday"), None);
    }

    #[test]
    fn instants_parse_as_rfc3339() {
        assert_eq!(ms("1970-01-01T00:00:00Z"), 0);
        assert_eq!(ms("2026-06-13T12:00:00+02:00"), ms("2026-06-13T10:00:00Z"));
        assert_eq!(parse_instant_ms("2026-06-13"), None);
        assert_eq!(parse_instant_ms("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_instant_ms("soon"), None);
    }
}
