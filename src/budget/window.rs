//! Budget windows (`budget_duration`), aligned to the calendar as LiteLLM aligns its
//! `budget_reset_at`, in `litellm_settings.timezone` (UTC by default):
//! - `Ns`, `Nm`, `Nh`: multiples of N from the day's midnight (`6h` resets at 00:00, 06:00, …);
//! - `1d`: midnight; `7d` and `1w`: Monday 00:00; `30d` and `1mo`: the 1st of the month;
//! - any other `Nd` (`Nw`): every N days counted from 1970-01-01. LiteLLM counts them from
//!   when the budget was set, which differs per instance and per restart; a fixed origin
//!   lets every instance agree on the window without coordination.
//!
//! The window containing an instant is a pure function of the instant, so spend counted by
//! any instance, from any event, lands in the same window.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

/// A parsed `budget_duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// A whole number of seconds dividing the day from midnight (s, m, h units).
    Clock(i64),
    Day,
    Week,
    Month,
    /// Every N days from 1970-01-01.
    Days(i64),
}

const DAY_SECS: i64 = 86_400;

impl Window {
    /// `30s`, `15m`, `1h`, `1d`, `7d`, `2w`, `30d`, `1mo`. Units and numbers as LiteLLM's
    /// duration parser takes them; other month counts are rejected, as LiteLLM does.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: i64 =
            number.parse().ok().filter(|n| *n > 0 && *n <= 100_000).ok_or_else(|| {
                format!("invalid duration {text:?}: expected a number and a unit (s, m, h, d, w, mo)")
            })?;
        Ok(match unit {
            "s" => Self::Clock(n),
            "m" => Self::Clock(n * 60),
            "h" => Self::Clock(n * 3600),
            "d" if n == 1 => Self::Day,
            "d" if n == 7 => Self::Week,
            "d" if n == 30 => Self::Month,
            "d" => Self::Days(n),
            "w" if n == 1 => Self::Week,
            "w" => Self::Days(n * 7),
            "mo" if n == 1 => Self::Month,
            "mo" => return Err(format!("invalid duration {text:?}: only 1mo is supported for months")),
            _ => return Err(format!("invalid duration {text:?}: unknown unit {unit:?} (s, m, h, d, w, mo)")),
        })
    }

    /// The start of the window that contains `at`.
    pub fn start(self, at: Timestamp, tz: &TimeZone) -> Timestamp {
        let zoned = at.to_zoned(tz.clone());
        let midnight = zoned.start_of_day().unwrap_or_else(|_| zoned.clone());
        let start: Option<Zoned> = match self {
            Self::Clock(secs) if secs >= DAY_SECS && secs % DAY_SECS == 0 => {
                Some(days_from_epoch(&zoned, secs / DAY_SECS, tz))
            }
            Self::Clock(secs) => {
                let into_day = zoned.timestamp().as_second() - midnight.timestamp().as_second();
                let floored = into_day - into_day.rem_euclid(secs.max(1));
                midnight.checked_add(floored.seconds()).ok()
            }
            Self::Day => Some(midnight),
            Self::Week => {
                let back = i64::from(zoned.weekday().to_monday_zero_offset());
                date_start(zoned.date().checked_sub(back.days()).ok(), tz)
            }
            Self::Month => date_start(Some(zoned.date().first_of_month()), tz),
            Self::Days(n) => Some(days_from_epoch(&zoned, n, tz)),
        };
        start.map(|z| z.timestamp()).unwrap_or(at)
    }

    /// When the window that contains `at` ends: the next reset (LiteLLM's `budget_reset_at`).
    pub fn end(self, at: Timestamp, tz: &TimeZone) -> Timestamp {
        let start = self.start(at, tz).to_zoned(tz.clone());
        let end = match self {
            Self::Clock(secs) => start.checked_add(secs.seconds()).ok().map(|z| {
                // A window that does not divide the day ends at the next midnight.
                let midnight = start.tomorrow().ok().and_then(|t| t.start_of_day().ok());
                match midnight {
                    Some(m) if m.timestamp() < z.timestamp() => m,
                    _ => z,
                }
            }),
            Self::Day => start.tomorrow().ok(),
            Self::Week => date_start(start.date().checked_add(7.days()).ok(), tz),
            Self::Month => date_start(start.date().checked_add(1.month()).ok(), tz),
            Self::Days(n) => date_start(start.date().checked_add(n.days()).ok(), tz),
        };
        end.map(|z| z.timestamp()).unwrap_or(Timestamp::MAX)
    }
}

fn date_start(date: Option<Date>, tz: &TimeZone) -> Option<Zoned> {
    date?.to_zoned(tz.clone()).ok()?.start_of_day().ok()
}

/// The start of the N-day period (counted from 1970-01-01, local dates) holding `zoned`.
fn days_from_epoch(zoned: &Zoned, n: i64, tz: &TimeZone) -> Zoned {
    let epoch = Date::constant(1970, 1, 1);
    let days = i64::from(epoch.until(zoned.date()).map(|s| s.get_days()).unwrap_or(0));
    let start_day = days - days.rem_euclid(n.max(1));
    date_start(epoch.checked_add(start_day.days()).ok(), tz).unwrap_or_else(|| zoned.clone())
}

/// When a key created at `now` with `duration` (`30s`, `15m`, `2h`, `7d`, `1w`, `1mo`)
/// expires: `now` plus the duration, not aligned (LiteLLM's `expires`).
pub fn expiry(now: Timestamp, duration: &str) -> Result<Timestamp, String> {
    let text = duration.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("invalid duration {text:?}: expected a number and a unit (s, m, h, d, w, mo)");
    let n: i64 = number.parse().ok().filter(|n| *n > 0 && *n <= 1_000_000).ok_or_else(bad)?;
    let span = match unit {
        "s" | "" => n.seconds(),
        "m" => n.minutes(),
        "h" => n.hours(),
        "d" => n.days(),
        "w" => n.weeks(),
        "mo" => n.months(),
        _ => return Err(bad()),
    };
    now.to_zoned(TimeZone::UTC)
        .checked_add(span)
        .map(|z| z.timestamp())
        .map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// `litellm_settings.timezone`: an IANA name; UTC when unset or unknown.
pub fn timezone(name: Option<&str>) -> Result<TimeZone, String> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|e| format!("unknown timezone {name:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn parses_litellm_durations() {
        assert_eq!(Window::parse("30s"), Ok(Window::Clock(30)));
        assert_eq!(Window::parse("15m"), Ok(Window::Clock(900)));
        assert_eq!(Window::parse("1h"), Ok(Window::Clock(3600)));
        assert_eq!(Window::parse("1d"), Ok(Window::Day));
        assert_eq!(Window::parse("7d"), Ok(Window::Week));
        assert_eq!(Window::parse("1w"), Ok(Window::Week));
        assert_eq!(Window::parse("30d"), Ok(Window::Month));
        assert_eq!(Window::parse("1mo"), Ok(Window::Month));
        assert_eq!(Window::parse("3d"), Ok(Window::Days(3)));
        assert!(Window::parse("2mo").is_err());
        assert!(Window::parse("0d").is_err());
        assert!(Window::parse("d").is_err());
        assert!(Window::parse("5y").is_err());
    }

    #[test]
    fn windows_align_to_the_calendar_in_utc() {
        let utc = TimeZone::UTC;
        let at = ts("2026-11-28T10:51:49Z"); // a Saturday
        assert_eq!(Window::Clock(30).start(at, &utc), ts("2026-11-28T10:51:30Z"));
        assert_eq!(Window::Clock(30).end(at, &utc), ts("2026-11-28T10:52:00Z"));
        assert_eq!(Window::Clock(6 * 3600).start(at, &utc), ts("2026-11-28T06:00:00Z"));
        assert_eq!(Window::Day.start(at, &utc), ts("2026-11-28T00:00:00Z"));
        assert_eq!(Window::Day.end(at, &utc), ts("2026-11-29T00:00:00Z"));
        assert_eq!(Window::Week.start(at, &utc), ts("2026-11-23T00:00:00Z"));
        assert_eq!(Window::Week.end(at, &utc), ts("2026-11-30T00:00:00Z"));
        assert_eq!(Window::Month.start(at, &utc), ts("2026-11-01T00:00:00Z"));
        assert_eq!(Window::Month.end(at, &utc), ts("2026-12-01T00:00:00Z"));
        let three = Window::Days(3);
        let start = three.start(at, &utc);
        assert!(start <= at && at < three.end(at, &utc));
        assert_eq!(three.end(at, &utc).duration_since(start).as_secs(), 3 * 86_400);
    }

    #[test]
    fn a_window_that_does_not_divide_the_day_restarts_at_midnight() {
        let utc = TimeZone::UTC;
        let w = Window::Clock(5 * 3600);
        assert_eq!(w.start(ts("2026-11-28T23:30:00Z"), &utc), ts("2026-11-28T20:00:00Z"));
        assert_eq!(w.end(ts("2026-11-28T23:30:00Z"), &utc), ts("2026-11-29T00:00:00Z"));
    }

    #[test]
    fn expiry_adds_the_duration_unaligned() {
        let now = ts("2026-11-28T10:51:49Z");
        assert_eq!(expiry(now, "30s"), Ok(ts("2026-11-28T10:52:19Z")));
        assert_eq!(expiry(now, "2h"), Ok(ts("2026-11-28T12:51:49Z")));
        assert_eq!(expiry(now, "1mo"), Ok(ts("2026-12-28T10:51:49Z")));
        assert!(expiry(now, "soon").is_err());
        assert!(expiry(now, "-1d").is_err());
    }

    #[test]
    fn windows_follow_the_configured_timezone() {
        let tz = timezone(Some("America/New_York")).unwrap();
        // 03:00 UTC is still the previous day in New York (UTC-5 in November).
        let at = ts("2026-11-28T03:00:00Z");
        assert_eq!(Window::Day.start(at, &tz), ts("2026-11-27T05:00:00Z"));
        assert!(timezone(Some("Mars/Olympus")).is_err());
    }
}
