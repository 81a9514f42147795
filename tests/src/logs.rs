//! Reading the server's tracing log (`tracing_subscriber::fmt`, plain text, UTC
//! timestamps) the way the end-to-end tests need it: one field of an event, the
//! moment an event was written, the last lines for a failure message.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::TestServer;

/// The value of field `name` in an event line, without the quotes the formatter puts
/// around `&str` values: `field(r#"... phase="closing" ..."#, "phase") == Some("closing")`.
/// Only whole field names match: `cut` does not match `requests_cut=`.
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line
        .match_indices(name)
        .map(|(at, _)| at)
        .find(|&at| line[..at].ends_with(' ') && line[at + name.len()..].starts_with('='))?
        + name.len()
        + 1;
    let rest = &line[start..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split(' ').next(),
    }
}

/// Field `name` as a number.
pub fn field_u64(line: &str, name: &str) -> Option<u64> {
    field(line, name)?.parse().ok()
}

/// When the event was written: the leading `2026-12-01T17:12:36.727520Z` timestamp.
pub fn time(line: &str) -> Option<SystemTime> {
    let stamp = line.split(' ').next()?.strip_suffix('Z')?;
    let (date, clock) = stamp.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let mut hms = clock.splitn(3, ':');
    let hours: u64 = hms.next()?.parse().ok()?;
    let minutes: u64 = hms.next()?.parse().ok()?;
    let seconds: f64 = hms.next()?.parse().ok()?;
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let whole = days * 86_400 + hours * 3_600 + minutes * 60;
    Some(UNIX_EPOCH + Duration::from_secs(whole) + Duration::from_secs_f64(seconds))
}

/// The [`Instant`] at which the event of `line` was written (its timestamp mapped onto
/// the monotonic clock), so that a test can schedule against the server's own timeline.
pub fn instant(line: &str) -> Option<Instant> {
    let written = time(line)?;
    let ago = SystemTime::now()
        .duration_since(written)
        .unwrap_or(Duration::ZERO);
    Instant::now().checked_sub(ago)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The last `n` lines of `lines`, joined, for an assertion message.
pub fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits up to `timeout` for the `phase changed` event into `phase`.
pub async fn wait_for_phase(server: &TestServer, phase: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = server
            .stderr()
            .into_iter()
            .find(|line| line.contains("phase changed") && field(line, "phase") == Some(phase));
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "2026-12-01T17:12:37.728764Z  INFO terminus: shutdown complete reason=signal SIGTERM \
                        graceful=true requests_drained=3 requests_cut=1 connections_cut=2 path=\"/stream\"";

    #[test]
    fn field_matches_whole_names_and_strips_quotes() {
        assert_eq!(field(LINE, "graceful"), Some("true"));
        assert_eq!(field_u64(LINE, "requests_cut"), Some(1));
        assert_eq!(field_u64(LINE, "connections_cut"), Some(2));
        assert_eq!(field(LINE, "cut"), None);
        assert_eq!(field(LINE, "path"), Some("/stream"));
        assert_eq!(field(LINE, "tasks_cut"), None);
    }

    #[test]
    fn time_reads_the_utc_timestamp() {
        let written = time(LINE).unwrap();
        let since_epoch = written.duration_since(UNIX_EPOCH).unwrap();
        // 2026-12-01T17:12:37.728764Z, checked with `date -u -d @1796145157`.
        assert_eq!(since_epoch.as_secs(), 1_796_145_157);
        assert_eq!(since_epoch.subsec_micros(), 728_764);
    }
}
