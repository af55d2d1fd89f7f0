//! Segment file names: `polypush-YYYYmmddTHHMMSSZ-NNNN.flv`, and the UTC calendar arithmetic
//! they need (a date formatter is two dozen lines; a date crate would be a dependency for one
//! string).
//!
//! The time is the system clock at segment open, so an operator can find "Tuesday's second
//! lesson" by name. The sequence number continues from the highest one in the directory, so it
//! orders segments by creation even when the clock is wrong: a Raspberry Pi has no RTC and
//! boots with a stale clock until NTP answers. Quota deletion therefore goes by sequence number,
//! not by the time in the name.

/// Every segment name starts with this.
pub(crate) const PREFIX: &str = "polypush-";
/// A complete segment.
pub(crate) const EXT: &str = ".flv";
/// A segment being written (or left by a crash).
pub(crate) const PART_EXT: &str = ".flv.part";

/// `(year, month 1..=12, day 1..=31)` of the proleptic Gregorian calendar for `days` since
/// 1970-01-01. Howard Hinnant's `civil_from_days` (public domain): count 400-year eras from
/// 0000-03-01 so that leap days fall at the end of each year.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYYmmddTHHMMSSZ` (ISO 8601 basic format, UTC) for seconds since the Unix epoch.
pub(crate) fn utc_stamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The final name of segment `seq` opened at `unix_secs`. The sequence has at least four
/// digits; names of the same second still sort by it.
pub(crate) fn segment_name(unix_secs: u64, seq: u32) -> String {
    format!("{PREFIX}{}-{seq:04}{EXT}", utc_stamp(unix_secs))
}

/// Which of our files a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// `….flv`: a complete segment, subject to the quota.
    Segment,
    /// `….flv.part`: being written, or left by a crash.
    Part,
}

/// The sequence number and kind of one of our segment files, or `None` for anything else in
/// the directory (which the recorder never touches).
pub(crate) fn parse_name(name: &str) -> Option<(u32, FileKind)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (stem, kind) = if let Some(stem) = rest.strip_suffix(PART_EXT) {
        (stem, FileKind::Part)
    } else {
        (rest.strip_suffix(EXT)?, FileKind::Segment)
    };
    let (stamp, seq) = stem.split_once('-')?;
    let stamp_ok = stamp.len() == 16
        && stamp.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    if !stamp_ok || seq.len() < 4 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((seq.parse().ok()?, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The inverse (Hinnant's `days_from_civil`), only to check the formatter against.
    fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = i64::from((m + 9) % 12);
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    #[test]
    fn civil_dates_at_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29)); // divisible by 400: leap
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1)); // 2100 is not a leap year
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_088), (2024, 12, 31));
    }

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        // `date -u -d @1709251199 +%Y%m%dT%H%M%SZ`
        assert_eq!(utc_stamp(1_709_251_199), "20240229T235959Z");
        assert_eq!(utc_stamp(1_709_251_200), "20240301T000000Z");
        assert_eq!(utc_stamp(4_102_444_800), "21000101T000000Z");
    }

    #[test]
    fn names_round_trip_and_sort() {
        let a = segment_name(1_709_251_199, 7);
        assert_eq!(a, "polypush-20240229T235959Z-0007.flv");
        assert_eq!(parse_name(&a), Some((7, FileKind::Segment)));
        assert_eq!(parse_name(&format!("{a}.part")), Some((7, FileKind::Part)));
        assert_eq!(
            parse_name("polypush-20240229T235959Z-12345.flv.part"),
            Some((12_345, FileKind::Part))
        );
        // Same second: the sequence decides.
        assert!(segment_name(100, 9) < segment_name(100, 10));
    }

    #[test]
    fn foreign_files_are_not_ours() {
        for name in [
            "polypush.toml",
            "lesson.flv",
            "polypush-20240229T235959Z-007.flv",
            "polypush-20240229T235959-0007.flv",
            "polypush-2024022xT235959Z-0007.flv",
            "polypush-20240229T235959Z-0007.flv.tmp",
            "polypush-20240229T235959Z-00a7.flv",
            "polypush-20240229T235959Z-99999999999.flv",
        ] {
            assert_eq!(parse_name(name), None, "{name}");
        }
    }

    proptest! {
        #[test]
        fn civil_from_days_inverts_days_from_civil(days in -1_000_000i64..3_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn consecutive_days_are_consecutive_dates(days in -1_000_000i64..3_000_000) {
            let (y0, m0, d0) = civil_from_days(days);
            let (y1, m1, d1) = civil_from_days(days + 1);
            let next_day = y1 == y0 && m1 == m0 && d1 == d0 + 1;
            let next_month = y1 == y0 && m1 == m0 + 1 && d1 == 1;
            let next_year = y1 == y0 + 1 && m0 == 12 && d0 == 31 && m1 == 1 && d1 == 1;
            prop_assert!(next_day || next_month || next_year);
        }
    }
}
