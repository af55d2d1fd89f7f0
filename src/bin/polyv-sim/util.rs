//! Small pure helpers: URL-encoded parameter parsing, the timestamp window, the clock and
//! the RFC 7231 `Date` header.
//!
//! Lines marked (inferred) are guesses from /work/shared/polyv-api/README.md.

use std::time::{SystemTime, UNIX_EPOCH};

/// How far a request timestamp may be from the simulator's now: Polyv's 3 minutes.
pub const TIMESTAMP_WINDOW_MS: i128 = 180_000;

/// Request parameters in arrival order. Lookups return the first occurrence.
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The first value for `key`, if any (possibly empty).
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first value for `key` if it is present and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.raw(key).filter(|v| !v.is_empty())
    }

    /// First occurrence of each key, for signing (a repeated key counts once). (inferred)
    pub fn deduped(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = Vec::with_capacity(self.0.len());
        for (k, v) in &self.0 {
            if !out.iter().any(|(seen, _)| seen == k) {
                out.push((k.as_str(), v.as_str()));
            }
        }
        out
    }

    pub fn extend_from(&mut self, other: Params) {
        self.0.extend(other.0);
    }
}

/// Parses `application/x-www-form-urlencoded` text (a query string or a form body).
/// `+` is a space, `%XX` a byte; malformed escapes are kept literally and invalid UTF-8 is
/// replaced, so no input fails.
pub fn parse_urlencoded(input: &[u8]) -> Params {
    let mut out = Vec::new();
    for pair in input.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        out.push((decode_component(k), decode_component(v)));
    }
    Params(out)
}

fn decode_component(input: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => {
                bytes.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < input.len() => match (hex_val(input[i + 1]), hex_val(input[i + 2])) {
                (Some(h), Some(l)) => {
                    bytes.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    bytes.push(b'%');
                    i += 1;
                }
            },
            b => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses a millisecond timestamp as Polyv sends it: ASCII digits, no sign, no leading zero
/// (so the value re-formats to exactly the signed text).
pub fn parse_timestamp(raw: Option<&str>) -> Option<u64> {
    let s = raw?;
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// The timestamp if it parses and lies within 3 minutes of `now_ms` (either side).
pub fn fresh_timestamp(raw: Option<&str>, now_ms: i64) -> Option<u64> {
    let ts = parse_timestamp(raw)?;
    ((i128::from(now_ms) - i128::from(ts)).abs() <= TIMESTAMP_WINDOW_MS).then_some(ts)
}

/// Whether a string is a 13-digit millisecond timestamp (any time, not only now).
pub fn is_13_digit(s: &str) -> bool {
    s.len() == 13 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The real system clock in Unix milliseconds.
pub fn system_now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// `now + offset`, saturating.
pub fn shifted(now_ms: i64, offset_ms: i64) -> i64 {
    now_ms.saturating_add(offset_ms)
}

/// Formats Unix milliseconds as an RFC 7231 IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
/// Times before 1970 are clamped to the epoch; years past 9999 are clamped to 9999-12-31.
pub fn http_date(unix_ms: i64) -> String {
    const MAX_SECS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let secs = (unix_ms.max(0) / 1000).min(MAX_SECS);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let wd = WD[((days + 4) % 7) as usize];
    format!(
        "{wd}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        MON[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian), for non-negative days.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_basics() {
        let p = parse_urlencoded(b"a=1&b=x+y&c=%E5%B0%8F&d&&e=%zz&f=%4&a=2");
        assert_eq!(p.raw("a"), Some("1"));
        assert_eq!(p.raw("b"), Some("x y"));
        assert_eq!(p.raw("c"), Some("小"));
        assert_eq!(p.raw("d"), Some(""));
        assert_eq!(p.get("d"), None);
        assert_eq!(p.raw("e"), Some("%zz"));
        assert_eq!(p.raw("f"), Some("%4"));
        assert_eq!(p.deduped().len(), 6);
        // Trailing percent signs and invalid UTF-8 never fail.
        let p = parse_urlencoded(b"x=%&y=%F&z=%FF");
        assert_eq!(p.raw("x"), Some("%"));
        assert_eq!(p.raw("y"), Some("%F"));
        assert_eq!(p.raw("z"), Some("\u{FFFD}"));
    }

    #[test]
    fn timestamps() {
        let now = 1_516_327_146_366;
        assert_eq!(
            fresh_timestamp(Some("1516327146366"), now),
            Some(1516327146366)
        );
        assert!(fresh_timestamp(Some("1516327326366"), now).is_some());
        assert!(fresh_timestamp(Some("1516327326367"), now).is_none());
        assert!(fresh_timestamp(Some("1516326966366"), now).is_some());
        assert!(fresh_timestamp(Some("1516326966365"), now).is_none());
        assert!(fresh_timestamp(None, now).is_none());
        assert!(fresh_timestamp(Some(""), now).is_none());
        assert!(fresh_timestamp(Some("abc"), now).is_none());
        assert!(fresh_timestamp(Some("-1516327146366"), now).is_none());
        assert!(fresh_timestamp(Some("01516327146366"), now).is_none());
        assert!(fresh_timestamp(Some("99999999999999999999999"), now).is_none());
        assert!(fresh_timestamp(Some("18446744073709551615"), i64::MAX).is_none());
    }

    #[test]
    fn dates() {
        assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(-5), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400_000), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(i64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
    }
}
