//! `polypush lessons`: the log as a table in the box's time zone, or as JSON lines.

use std::fmt::Write as _;
use std::time::SystemTime;

use jiff::tz::TimeZone;
use jiff::{civil::Date, Timestamp, Zoned};

use super::recorder::Lesson;

/// `--since`: a date (`2026-03-29`, midnight in `tz`) or an instant (RFC 3339, or with a
/// bracketed zone).
pub fn parse_since(s: &str, tz: &TimeZone) -> Result<SystemTime, String> {
    let t = s.trim();
    if let Ok(d) = t.parse::<Date>() {
        if let Ok(z) = d.to_zoned(tz.clone()) {
            return Ok(SystemTime::from(z.timestamp()));
        }
    }
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(SystemTime::from(ts));
    }
    if let Ok(z) = t.parse::<Zoned>() {
        return Ok(SystemTime::from(z.timestamp()));
    }
    Err(format!(
        "--since {s:?} is not a date: use YYYY-MM-DD such as 2026-03-29 (midnight in the box's \
         time zone) or an RFC 3339 instant such as 2026-03-29T08:00:00+08:00"
    ))
}

/// The lessons that ended at or after `since` (all when `None`), oldest first: JSON lines, or
/// a table (date, title, planned window, on air, share, gaps with causes) in `tz`.
pub fn render(lessons: &[Lesson], since: Option<SystemTime>, json: bool, tz: &TimeZone) -> String {
    let list: Vec<&Lesson> = lessons
        .iter()
        .filter(|l| since.is_none_or(|s| l.ended >= s))
        .collect();
    let mut out = String::new();
    if json {
        for l in list {
            let _ = writeln!(out, "{}", serde_json::to_string(l).unwrap_or_default());
        }
        return out;
    }
    if list.is_empty() {
        return "no lessons recorded yet\n".into();
    }
    let rows: Vec<[String; 6]> = list
        .iter()
        .map(|l| {
            let started = local(l.planned_start.unwrap_or(l.started), tz);
            let planned = match (l.planned_start, l.planned_end) {
                (Some(a), Some(b)) => format!("{}–{}", hm(a, tz), hm(b, tz)),
                _ => "manual".to_string(),
            };
            let on_air = format!(
                "{}–{} ({})",
                hm(l.started, tz),
                hm(l.ended, tz),
                dur(l.on_air_s)
            );
            let gaps = if l.gaps.is_empty() {
                "-".to_string()
            } else {
                l.gaps
                    .iter()
                    .map(|g| {
                        format!(
                            "{} {} {}",
                            hm(g.start, tz),
                            dur(g.duration_s),
                            g.cause.as_str()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            [
                started.strftime("%Y-%m-%d").to_string(),
                l.title.clone().unwrap_or_else(|| "-".into()),
                planned,
                on_air,
                format!("{:.1}%", l.on_air_ratio * 100.0),
                gaps,
            ]
        })
        .collect();
    let head = ["DATE", "TITLE", "PLANNED", "ON AIR", "SHARE", "GAPS"];
    let mut widths = head.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = widths[i] - c.chars().count();
                let _ = write!(s, "{c}{}  ", " ".repeat(pad));
            }
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&head.map(String::from)));
    for r in &rows {
        let _ = writeln!(out, "{}", line(r));
    }
    out
}

fn local(t: SystemTime, tz: &TimeZone) -> Zoned {
    Timestamp::try_from(t)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned(tz.clone())
}

fn hm(t: SystemTime, tz: &TimeZone) -> String {
    local(t, tz).strftime("%H:%M:%S").to_string()
}

/// `1h02m`, `12m05s`, `9.8s`.
fn dur(s: f64) -> String {
    let whole = s.round() as u64;
    if whole >= 3600 {
        format!("{}h{:02}m", whole / 3600, whole / 60 % 60)
    } else if whole >= 60 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{s:.1}s")
    }
}
