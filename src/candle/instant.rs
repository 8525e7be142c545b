//! Instants as people and programs write them in requests and on the command line:
//! epoch milliseconds, RFC 3339 times, or plain dates (midnight UTC).

use chrono::{DateTime, NaiveDate, Utc};

/// A value that is not an instant; the message says which forms are accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a time: expected epoch milliseconds (1735689600000), an RFC 3339 time \
     (2025-01-01T00:00:00Z) or a date YYYY-MM-DD (midnight UTC), from 1970 on"
)]
pub struct BadInstant(pub String);

/// Parses `raw` into ms since the epoch (UTC): whole epoch milliseconds, an RFC 3339
/// time with its offset (RFC 3339 §5.6), or a `YYYY-MM-DD` date meaning 00:00 UTC.
///
/// # Errors
/// [`BadInstant`] for anything else, or a time before 1970.
pub fn parse_instant(raw: &str) -> Result<i64, BadInstant> {
    let bad = || BadInstant(raw.chars().take(40).collect());
    let raw = raw.trim();
    let millis = if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        raw.parse::<i64>().map_err(|_| bad())?
    } else if let Ok(time) = DateTime::parse_from_rfc3339(raw) {
        time.timestamp_millis()
    } else if let Some(time) = raw
        .rsplit_once(' ')
        .and_then(|(time, offset)| DateTime::parse_from_rfc3339(&format!("{time}+{offset}")).ok())
    {
        // An unencoded `+00:00` in a query string arrives as a space.
        time.timestamp_millis()
    } else if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        date.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
            .ok_or_else(bad)?
    } else {
        return Err(bad());
    };
    if millis < 0 {
        return Err(bad());
    }
    Ok(millis)
}

/// `YYYY-MM-DD`, the UTC date of `millis` (ms since the epoch).
pub fn utc_date(millis: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_and_nothing_else() {
        assert_eq!(parse_instant("1735689600000"), Ok(1_735_689_600_000));
        assert_eq!(parse_instant("2025-01-01"), Ok(1_735_689_600_000));
        assert_eq!(parse_instant("2025-01-01T00:00:00Z"), Ok(1_735_689_600_000));
        assert_eq!(
            parse_instant("2025-01-01T02:00:00+02:00"),
            Ok(1_735_689_600_000)
        );
        assert_eq!(
            parse_instant("2025-01-01T00:00:00.250Z"),
            Ok(1_735_689_600_250)
        );
        for bad in [
            "",
            "yesterday",
            "2025-13-01",
            "-5",
            "2025-01-01 00:00",
            "99999999999999999999",
        ] {
            assert!(parse_instant(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse_instant("soon")
                .unwrap_err()
                .to_string()
                .contains("RFC 3339")
        );
        assert_eq!(utc_date(1_735_689_600_000 - 1), "2024-12-31");
    }
}
