//! One `[[schedule]]` entry, parsed: when it applies, its wall-clock times and zone, and how
//! a wall-clock time becomes an instant (daylight-saving gaps and folds).

use super::entry::ScheduleEntry;
use crate::setting::InvalidSetting;
use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};

/// The days a rule applies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum When {
    /// Weekly, Monday first.
    Weekly([bool; 7]),
    /// One date.
    Once(Date),
}

/// A parsed, checked entry.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    pub when: When,
    pub start: Time,
    pub end: Time,
    /// `end` is on the day after `start` (it is not after `start` on the clock).
    pub overnight: bool,
    pub tz: TimeZone,
    pub tz_name: String,
    pub title: Option<String>,
    pub rename: Option<Template>,
    /// How long before `start` the broadcast opens (`lead_s`).
    pub lead: jiff::SignedDuration,
}

/// The most `lead_s` may be: an hour.
pub(super) const MAX_LEAD_S: u32 = 3600;

impl Rule {
    /// Parses entry `index` against the box's zone `local` (used when it names none).
    pub(super) fn parse(
        index: usize,
        e: &ScheduleEntry,
        local: &(TimeZone, String),
    ) -> Result<Rule, InvalidSetting> {
        let key = |field: &str| {
            if field.is_empty() {
                format!("schedule[{index}]")
            } else {
                format!("schedule[{index}].{field}")
            }
        };
        let err = |field: &str, message: String| InvalidSetting {
            key: key(field),
            message,
        };
        let when = match (&e.date, e.days.is_empty()) {
            (Some(_), false) => {
                return Err(err(
                    "days",
                    "set either days (a weekly window) or date (a one-off window), not both: remove one"
                        .into(),
                ))
            }
            (None, true) => {
                return Err(err(
                    "",
                    "needs the days it repeats on, such as days = [\"mon\", \"wed\"], or the date of a one-off window, such as date = \"2026-09-01\"".into(),
                ))
            }
            (Some(d), true) => When::Once(parse_date(d).map_err(|m| err("date", m))?),
            (None, false) => {
                let mut set = [false; 7];
                for d in &e.days {
                    for wd in parse_days(d).map_err(|m| err("days", m))? {
                        set[wd.to_monday_zero_offset() as usize] = true;
                    }
                }
                When::Weekly(set)
            }
        };
        let start = parse_time(&e.start, false).map_err(|m| err("start", m))?;
        let end = parse_time(&e.end, true).map_err(|m| err("end", m))?;
        let (tz, tz_name) = match &e.timezone {
            None => local.clone(),
            Some(name) => (
                parse_zone(name).map_err(|m| err("timezone", m))?,
                name.trim().to_string(),
            ),
        };
        let title = match &e.title {
            Some(t) if t.trim().is_empty() => {
                return Err(err(
                    "title",
                    "is empty: write what the window is, such as title = \"Physics 101\", or remove the key".into(),
                ))
            }
            t => t.clone(),
        };
        let rename = match &e.rename {
            None => None,
            Some(r) => Some(Template::parse(r, title.is_some()).map_err(|m| err("rename", m))?),
        };
        if e.lead_s > MAX_LEAD_S {
            return Err(err(
                "lead_s",
                format!(
                    "{} is too long: start the broadcast at most {MAX_LEAD_S} seconds (an hour) before the window, such as lead_s = 300, or remove the key",
                    e.lead_s
                ),
            ));
        }
        Ok(Rule {
            lead: jiff::SignedDuration::from_secs(i64::from(e.lead_s)),
            when,
            start,
            end,
            overnight: end <= start,
            tz,
            tz_name,
            title,
            rename,
        })
    }

    /// The occurrences (start, end) of this rule that overlap `lo..hi`: end after `lo`,
    /// start before `hi`. Empty occurrences (both ends in one daylight-saving gap) are left
    /// out.
    pub(super) fn occurrences(&self, lo: Timestamp, hi: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let mut out = Vec::new();
        let mut consider = |date: Date| {
            if let Some((s, e)) = self.on(date) {
                if e > lo && s < hi {
                    out.push((s, e));
                }
            }
        };
        match &self.when {
            When::Once(date) => consider(*date),
            When::Weekly(days) => {
                // An occurrence that overlaps lo started at most a day (plus an offset
                // change) before lo's local date; one that starts before hi starts on or
                // before hi's local date.
                let first = self.tz.to_datetime(lo).date();
                let first = first.checked_sub(2.days()).unwrap_or(first);
                let last = self.tz.to_datetime(hi).date();
                let last = last.checked_add(1.day()).unwrap_or(last);
                let mut d = first;
                while d <= last {
                    if days[d.weekday().to_monday_zero_offset() as usize] {
                        consider(d);
                    }
                    match d.tomorrow() {
                        Ok(next) => d = next,
                        Err(_) => break,
                    }
                }
            }
        }
        out
    }

    /// The window this rule has when it starts on local `date`: `None` when it would be
    /// empty or out of range.
    pub(super) fn on(&self, date: Date) -> Option<(Timestamp, Timestamp)> {
        let start = resolve(&self.tz, date.to_datetime(self.start))?;
        let end_date = if self.overnight {
            date.tomorrow().ok()?
        } else {
            date
        };
        let end = resolve(&self.tz, end_date.to_datetime(self.end))?;
        (end > start).then_some((start, end))
    }
}

/// The instant of a wall-clock time in `tz`. In a gap (the clock jumps forward), the first
/// valid instant after it: the transition itself. In a fold (the clock goes back), the
/// earlier of the two instants.
pub(super) fn resolve(tz: &TimeZone, dt: DateTime) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok(),
        AmbiguousOffset::Gap { before, after } => {
            // With the offset after the gap, `dt` lands before the transition (the offset
            // grew), so the next transition from there is the end of the gap.
            let early = after.to_timestamp(dt).ok()?;
            match tz.following(early).next() {
                Some(t) => Some(t.timestamp()),
                None => before.to_timestamp(dt).ok(),
            }
        }
    }
}

fn parse_date(s: &str) -> Result<Date, String> {
    let t = s.trim();
    let shape = t.len() == 10
        && t.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    let bad = || format!("{s:?} is not a date: write it as YYYY-MM-DD, such as \"2026-09-01\"");
    if !shape {
        return Err(bad());
    }
    t.parse::<Date>().map_err(|_| bad())
}

/// "HH:MM" (one or two hour digits), or "HH:MM:SS". "24:00" is accepted for an end: midnight
/// at the end of the day, the same as "00:00" there.
fn parse_time(s: &str, is_end: bool) -> Result<Time, String> {
    let t = s.trim();
    let example = if is_end { "\"17:30\"" } else { "\"08:00\"" };
    if t.is_empty() {
        return Err(format!(
            "missing: set the time as HH:MM on the 24-hour clock, such as {example}"
        ));
    }
    let bad = |why: &str| {
        format!("{s:?} is not a time: {why}; write HH:MM on the 24-hour clock, such as {example}")
    };
    let parts: Vec<&str> = t.split(':').collect();
    if parts.len() < 2 {
        return Err(bad("no colon"));
    }
    if parts.len() > 3 {
        return Err(bad("too many colons"));
    }
    let digits = |x: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&x.len()) && x.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(parts[0], 1..=2) || parts[1..].iter().any(|p| !digits(p, 2..=2)) {
        return Err(bad("hours, minutes (and seconds) must be digits"));
    }
    let num = |p: &str| p.parse::<i8>().unwrap_or(99);
    let (h, m) = (num(parts[0]), num(parts[1]));
    let sec = parts.get(2).map_or(0, |p| num(p));
    if is_end && h == 24 && m == 0 && sec == 0 {
        return Ok(Time::midnight());
    }
    if h > 23 {
        return Err(bad(if is_end {
            "hours go from 00 to 23 (24:00 is allowed for midnight)"
        } else {
            "hours go from 00 to 23"
        }));
    }
    if m > 59 {
        return Err(bad("minutes go from 00 to 59"));
    }
    if sec > 59 {
        return Err(bad("seconds go from 00 to 59"));
    }
    Time::new(h, m, sec, 0).map_err(|_| bad("out of range"))
}

/// A day name or shorthand.
fn parse_days(s: &str) -> Result<Vec<Weekday>, String> {
    use Weekday::*;
    let all = [
        Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday,
    ];
    let one = |d| Ok(vec![d]);
    match s.trim().to_ascii_lowercase().as_str() {
        "mon" | "monday" => one(Monday),
        "tue" | "tuesday" => one(Tuesday),
        "wed" | "wednesday" => one(Wednesday),
        "thu" | "thursday" => one(Thursday),
        "fri" | "friday" => one(Friday),
        "sat" | "saturday" => one(Saturday),
        "sun" | "sunday" => one(Sunday),
        "weekdays" => Ok(all[..5].to_vec()),
        "weekend" => Ok(all[5..].to_vec()),
        "daily" => Ok(all.to_vec()),
        _ => Err(format!(
            "{s:?} is not a day: use mon, tue, wed, thu, fri, sat, sun (or the full names), or weekdays, weekend, daily"
        )),
    }
}

fn parse_zone(name: &str) -> Result<TimeZone, String> {
    let n = name.trim();
    if n.is_empty() {
        return Err(
            "is empty: write an IANA zone such as \"Asia/Shanghai\", or remove the key to use the box's zone"
                .into(),
        );
    }
    TimeZone::get(n).map_err(|_| {
        format!(
            "{name:?} is not a known IANA time zone: use a name such as \"Asia/Shanghai\" or \"Europe/Berlin\" (see /usr/share/zoneinfo; `timedatectl list-timezones` lists them), or remove the key to use the box's zone"
        )
    })
}

/// The box's own zone and its name: TZ, else /etc/localtime; UTC when neither says.
pub(super) fn local_zone() -> (TimeZone, String) {
    match TimeZone::try_system() {
        Ok(tz) => {
            let name = tz
                .iana_name()
                .map(str::to_string)
                .or_else(|| std::env::var("TZ").ok().filter(|s| !s.is_empty()))
                .unwrap_or_else(|| "local".to_string());
            (tz, name)
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot tell the box's time zone (TZ, /etc/localtime); schedule windows without a timezone use UTC"
            );
            (TimeZone::UTC, "UTC".to_string())
        }
    }
}

/// A parsed rename template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Title,
    Date,
    Start,
    End,
}

const PLACEHOLDERS: &str = "{title}, {date}, {start} and {end} ({{ and }} for braces)";

impl Template {
    fn parse(s: &str, has_title: bool) -> Result<Template, String> {
        if s.trim().is_empty() {
            return Err(
                "is empty: write a template such as \"{title} {date}\", or remove the key to keep the channel's name"
                    .into(),
            );
        }
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(format!(
                            "{s:?} has a {{ without its }}: the placeholders are {PLACEHOLDERS}"
                        ));
                    }
                    let piece = match name.as_str() {
                        "title" if !has_title => {
                            return Err(format!(
                                "{s:?} uses {{title}} but this entry has no title: set title = \"...\" or take {{title}} out"
                            ))
                        }
                        "title" => Piece::Title,
                        "date" => Piece::Date,
                        "start" => Piece::Start,
                        "end" => Piece::End,
                        other => {
                            return Err(format!(
                                "{s:?} has the unknown placeholder {{{other}}}: the placeholders are {PLACEHOLDERS}"
                            ))
                        }
                    };
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(piece);
                }
                '}' => {
                    return Err(format!(
                        "{s:?} has a }} without its {{: the placeholders are {PLACEHOLDERS}"
                    ))
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template(pieces))
    }

    /// The name for one window.
    pub(super) fn render(&self, title: Option<&str>, date: &str, start: &str, end: &str) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Title => out.push_str(title.unwrap_or_default()),
                Piece::Date => out.push_str(date),
                Piece::Start => out.push_str(start),
                Piece::End => out.push_str(end),
            }
        }
        out
    }
}
