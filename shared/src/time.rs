//! Times as the services write them: RFC 3339 from Didomi (with
//! milliseconds) and Dataverse (whole seconds, UTC), compared in whole UTC
//! seconds since the epoch. Parsing is the `time` crate's (the AWS SDK
//! compiles it already), which checks the calendar, the offset and the
//! syntax as RFC 3339 states them.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `2026-11-26T10:05:33.540Z` or `…+02:00` to whole UTC seconds since the
/// epoch (the fraction dropped, as Dataverse drops it); `None` when it is
/// not such a time.
pub fn parse_utc_seconds(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text.trim(), &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`; outside the years
/// 0000–9999 (no time of ours), the nearest end of that range.
pub fn iso_utc(seconds: i64) -> String {
    let bounded = seconds.clamp(-62_167_219_200, 253_402_300_799);
    let at = OffsetDateTime::from_unix_timestamp(bounded).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn didomi_and_dataverse_times_compare_in_whole_utc_seconds() {
        let didomi = parse_utc_seconds("2026-11-26T10:05:33.540Z").unwrap();
        let dataverse = parse_utc_seconds("2026-11-26T10:05:33Z").unwrap();
        assert_eq!(didomi, dataverse);
        assert_eq!(iso_utc(didomi), "2026-11-26T10:05:33Z");
        assert_eq!(
            parse_utc_seconds("2026-11-26T12:05:33+02:00"),
            Some(dataverse)
        );
        assert_eq!(parse_utc_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc_seconds("2000-02-29T00:00:00Z"), Some(951_782_400));
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-26T10:05:33",
            "2026-11-26T10:05:33.Z",
            "2026-11-26T10:05:33+2",
            "2026-02-31T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-26T10:05:33+-1:00",
            "2026-11-26T10:05:33+24:00",
            "2026-11-26T10:05:33+01:60",
        ] {
            assert_eq!(parse_utc_seconds(bad), None, "{bad}");
        }
        for seconds in [0, 951_782_400, 1_795_687_533, -86_400] {
            assert_eq!(parse_utc_seconds(&iso_utc(seconds)), Some(seconds));
        }
    }
}
