//! `polypush schedule`: the window open now and the next ones, rendered as a table or as
//! JSON (pure: the command prints what [`render`] returns).

use super::control::{effective, Override, Why};
use super::{rule, Schedule, Window};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// Parses `--from`: an RFC 3339 instant (`2026-03-29T08:00:00+02:00`, `…Z`), or a local time
/// with its zone in brackets (`2026-03-29T08:00[Europe/Berlin]`).
pub fn parse_instant(s: &str) -> Result<SystemTime, String> {
    let t = s.trim();
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(SystemTime::from(ts));
    }
    if let Ok(z) = t.parse::<Zoned>() {
        return Ok(SystemTime::from(z.timestamp()));
    }
    Err(format!(
        "{s:?} is not an instant: use RFC 3339 such as 2026-03-29T08:00:00+02:00 or 2026-03-29T06:00:00Z, or 2026-03-29T08:00[Europe/Berlin]"
    ))
}

/// The window open at `now` (if any) and the ones after it, `count` in all. JSON: an array
/// of `{start, end, duration_s, lead_s, opens, timezone, title, rename, current}` with RFC 3339
/// instants in the window's zone (`opens`: when the broadcast starts, `lead_s` before
/// `start`). Otherwise a line about now, the lesson-control override `ov` if it is in force,
/// then a table of local start and end, length, lead, zone, title and rename; or a line
/// saying there is no schedule.
pub fn render(
    schedule: &Schedule,
    now: SystemTime,
    count: usize,
    json: bool,
    ov: Option<&Override>,
) -> String {
    let mut list: Vec<(Window, bool)> = Vec::new();
    if count > 0 {
        if let Some(w) = schedule.current(now) {
            list.push((w, true));
        }
    }
    let rest = count.saturating_sub(list.len());
    list.extend(schedule.upcoming(now, rest).into_iter().map(|w| (w, false)));

    if json {
        let arr: Vec<Value> = list
            .iter()
            .map(|(w, current)| {
                let tz = schedule.zone_of(w);
                json!({
                    "start": rfc3339(w.start, &tz),
                    "end": rfc3339(w.end, &tz),
                    "duration_s": w.duration().as_secs(),
                    "lead_s": w.lead().as_secs(),
                    "opens": rfc3339(w.opens, &tz),
                    "timezone": w.timezone,
                    "title": w.title,
                    "rename": w.rename,
                    "current": current,
                })
            })
            .collect();
        return serde_json::to_string_pretty(&Value::Array(arr)).unwrap_or_default();
    }

    if schedule.is_empty() {
        return "no [[schedule]] configured: `polypush run` streams all the time".into();
    }
    let now_tz = list
        .first()
        .map(|(w, _)| schedule.zone_of(w))
        .unwrap_or_else(|| rule::local_zone().0);
    let mut s = format!("now {}: ", local(now, &now_tz));
    match list.first() {
        Some((w, true)) => s.push_str(&format!(
            "in a window until {} ({} left)",
            local(w.end, &schedule.zone_of(w)),
            length(w.end.duration_since(now).unwrap_or_default())
        )),
        Some((w, false)) => s.push_str(&format!(
            "idle; the next window starts in {}",
            length(w.start.duration_since(now).unwrap_or_default())
        )),
        None if count == 0 => s.push_str("(--count 0: no windows listed)"),
        None => s.push_str("idle; no window ahead (every one-off date has passed)"),
    }
    let eff = effective(schedule, ov, now);
    if let Some(o) = &eff.control {
        let tz = rule::local_zone().0;
        let what = match (eff.why, eff.end) {
            (Why::StoppedNow, _) => format!("no broadcast until {}", local(o.until, &tz)),
            (_, Some(end)) => format!("broadcasting until {}", local(end, &tz)),
            _ => "broadcasting".into(),
        };
        s.push_str(&format!(
            "\nlesson control: {} (set {} by {}): {what}",
            o.kind.as_str().replace('_', " "),
            local(o.set_at, &tz),
            if o.by.is_empty() { "?" } else { &o.by },
        ));
    }
    if list.is_empty() {
        return s;
    }
    let any_rename = list.iter().any(|(w, _)| w.rename.is_some());
    let any_lead = list.iter().any(|(w, _)| w.opens < w.start);
    let mut rows: Vec<Vec<String>> = vec![{
        let mut h: Vec<String> = ["", "START", "END", "LENGTH"].map(String::from).into();
        if any_lead {
            h.push("LEAD".into());
        }
        h.extend(["ZONE", "TITLE"].map(String::from));
        if any_rename {
            h.push("RENAME TO".into());
        }
        h
    }];
    for (w, current) in &list {
        let tz = schedule.zone_of(w);
        let mut row = vec![
            if *current { "*" } else { "" }.to_string(),
            local(w.start, &tz),
            local(w.end, &tz),
            length(w.duration()),
        ];
        if any_lead {
            let lead = w.lead().as_secs();
            row.push(if lead % 60 == 0 {
                format!("{}m", lead / 60)
            } else {
                format!("{lead}s")
            });
        }
        row.extend([
            w.timezone.clone(),
            w.title.clone().unwrap_or_else(|| "-".into()),
        ]);
        if any_rename {
            row.push(w.rename.clone().unwrap_or_else(|| "-".into()));
        }
        rows.push(row);
    }
    s.push('\n');
    s.push_str(&table(&rows));
    if list.iter().any(|(_, c)| *c) {
        s.push_str("\n(* open now)");
    }
    s
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut lines = Vec::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[c] - cell.chars().count()));
            }
        }
        lines.push(line.trim_end().to_string());
    }
    lines.join("\n")
}

fn zoned(t: SystemTime, tz: &TimeZone) -> Option<Zoned> {
    Timestamp::try_from(t)
        .ok()
        .map(|ts| ts.to_zoned(tz.clone()))
}

/// "Sun 2026-03-29 03:00 CEST".
fn local(t: SystemTime, tz: &TimeZone) -> String {
    zoned(t, tz)
        .map(|z| z.strftime("%a %Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_else(|| "?".into())
}

/// "2026-03-29T03:00:00+02:00".
fn rfc3339(t: SystemTime, tz: &TimeZone) -> String {
    zoned(t, tz)
        .map(|z| z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
        .unwrap_or_default()
}

/// "45m", "2h 00m", "3d 4h 05m" (whole minutes, rounded down).
fn length(d: Duration) -> String {
    let m = d.as_secs() / 60;
    let (days, h, m) = (m / 1440, m / 60 % 24, m % 60);
    match (days, h) {
        (0, 0) => format!("{m}m"),
        (0, h) => format!("{h}h {m:02}m"),
        (d, h) => format!("{d}d {h}h {m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_read_well() {
        assert_eq!(length(Duration::from_secs(45 * 60 + 59)), "45m");
        assert_eq!(length(Duration::from_secs(7200)), "2h 00m");
        assert_eq!(
            length(Duration::from_secs(3 * 86400 + 4 * 3600 + 5 * 60)),
            "3d 4h 05m"
        );
    }

    #[test]
    fn instants_parse() {
        let want = SystemTime::UNIX_EPOCH + Duration::from_secs(1_774_749_600);
        assert_eq!(parse_instant("2026-03-29T02:00:00Z").unwrap(), want);
        assert_eq!(parse_instant("2026-03-29T04:00:00+02:00").unwrap(), want);
        assert_eq!(
            parse_instant("2026-03-29T04:00[Europe/Berlin]").unwrap(),
            want
        );
        let e = parse_instant("tomorrow").unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
    }
}
