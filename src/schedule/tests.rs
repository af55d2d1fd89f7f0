//! Schedule rules with injected time: weekly, one-off, merging, past midnight, daylight-saving
//! gaps and folds (exact UTC instants), and the errors.

use super::*;
use std::time::Duration;

/// An RFC 3339 instant.
fn at(s: &str) -> SystemTime {
    SystemTime::from(
        s.parse::<Timestamp>()
            .unwrap_or_else(|e| panic!("{s}: {e}")),
    )
}

fn weekly(days: &[&str], start: &str, end: &str, tz: &str) -> ScheduleEntry {
    ScheduleEntry {
        days: days.iter().map(|d| d.to_string()).collect(),
        start: start.into(),
        end: end.into(),
        timezone: Some(tz.into()),
        ..ScheduleEntry::default()
    }
}

fn once(date: &str, start: &str, end: &str, tz: &str) -> ScheduleEntry {
    ScheduleEntry {
        date: Some(date.into()),
        start: start.into(),
        end: end.into(),
        timezone: Some(tz.into()),
        ..ScheduleEntry::default()
    }
}

fn titled(mut e: ScheduleEntry, title: &str) -> ScheduleEntry {
    e.title = Some(title.into());
    e
}

fn schedule(entries: &[ScheduleEntry]) -> Schedule {
    Schedule::from_config(entries).unwrap_or_else(|e| panic!("{e}"))
}

/// (start, end) of a window as RFC 3339 UTC.
fn utc(w: &Window) -> (String, String) {
    let f = |t: SystemTime| Timestamp::try_from(t).unwrap().to_string();
    (f(w.start), f(w.end))
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

fn hours(h: f64) -> Duration {
    Duration::from_secs_f64(h * 3600.0)
}

/// The single next window after `from`.
fn next(s: &Schedule, from: &str) -> Window {
    s.upcoming(at(from), 1)
        .into_iter()
        .next()
        .expect("a window ahead")
}

#[test]
fn no_entries_means_no_schedule() {
    let s = schedule(&[]);
    assert!(s.is_empty());
    assert_eq!(s.current(at("2026-01-05T08:00:00Z")), None);
    assert!(s.upcoming(at("2026-01-05T08:00:00Z"), 5).is_empty());
}

#[test]
fn weekly_windows_repeat_on_the_listed_days() {
    // 2026-01-05 is a Monday; Berlin is UTC+1 in winter.
    let s = schedule(&[titled(
        weekly(&["mon", "WED"], "08:00", "10:00", "Europe/Berlin"),
        "Maths",
    )]);
    assert!(!s.is_empty());
    let now = at("2026-01-05T06:00:00Z");
    assert_eq!(s.current(now), None);
    let ws = s.upcoming(now, 4);
    let got: Vec<_> = ws.iter().map(utc).collect();
    assert_eq!(
        got,
        vec![
            pair("2026-01-05T07:00:00Z", "2026-01-05T09:00:00Z"),
            pair("2026-01-07T07:00:00Z", "2026-01-07T09:00:00Z"),
            pair("2026-01-12T07:00:00Z", "2026-01-12T09:00:00Z"),
            pair("2026-01-14T07:00:00Z", "2026-01-14T09:00:00Z"),
        ]
    );
    assert_eq!(ws[0].title.as_deref(), Some("Maths"));
    assert_eq!(ws[0].timezone, "Europe/Berlin");
    assert_eq!(ws[0].rename, None);
    assert_eq!(ws[0].duration(), hours(2.0));

    // Start included, end excluded; the current window is not "upcoming".
    assert_eq!(s.current(at("2026-01-05T07:00:00Z")), Some(ws[0].clone()));
    assert_eq!(s.current(at("2026-01-05T08:59:59Z")), Some(ws[0].clone()));
    assert_eq!(s.current(at("2026-01-05T09:00:00Z")), None);
    assert_eq!(
        s.upcoming(at("2026-01-05T07:00:00Z"), 1),
        vec![ws[1].clone()]
    );
    assert!(ws[0].contains(at("2026-01-05T08:00:00Z")));
}

#[test]
fn day_shorthands_and_full_names() {
    // 2026-01-05 Mon .. 2026-01-11 Sun, all in UTC.
    let starts = |days: &[&str]| {
        let s = schedule(&[weekly(days, "12:00", "13:00", "UTC")]);
        s.upcoming(at("2026-01-05T00:00:00Z"), 7)
            .iter()
            .filter(|w| w.start < at("2026-01-12T00:00:00Z"))
            .map(|w| utc(w).0[8..10].to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(starts(&["Weekdays"]), ["05", "06", "07", "08", "09"]);
    assert_eq!(starts(&["weekend"]), ["10", "11"]);
    assert_eq!(starts(&["daily"]).len(), 7);
    assert_eq!(starts(&["Tuesday", "SUN", "tue"]), ["06", "11"]);
}

#[test]
fn one_off_window_happens_once() {
    let s = schedule(&[titled(
        once("2026-09-01", "08:00", "09:30", "Asia/Shanghai"),
        "Opening",
    )]);
    let w = next(&s, "2026-01-01T00:00:00Z");
    assert_eq!(
        utc(&w),
        pair("2026-09-01T00:00:00Z", "2026-09-01T01:30:00Z")
    );
    assert_eq!(s.upcoming(at("2026-01-01T00:00:00Z"), 5).len(), 1);
    assert_eq!(s.current(at("2026-09-01T01:00:00Z")), Some(w));
    assert!(s.upcoming(at("2026-09-01T00:00:00Z"), 5).is_empty());
    assert_eq!(s.current(at("2026-09-01T01:30:00Z")), None);
    // Found however far ahead it is.
    let far = schedule(&[once("2040-02-29", "10:00", "11:00", "UTC")]);
    assert_eq!(
        utc(&next(&far, "2026-01-01T00:00:00Z")),
        pair("2040-02-29T10:00:00Z", "2040-02-29T11:00:00Z")
    );
}

#[test]
fn overlapping_windows_merge_across_entries_and_zones() {
    // Entry 0 (UTC) 09:00-11:00Z; entry 1 (Berlin) 09:00-11:00 CET = 08:00-10:00Z. Entry 1
    // starts first, so its title, zone and rename win although it comes second.
    let mut b = titled(weekly(&["mon"], "09:00", "11:00", "Europe/Berlin"), "A");
    b.rename = Some("{title} {date} {start}-{end}".into());
    let s = schedule(&[titled(weekly(&["mon"], "09:00", "11:00", "UTC"), "B"), b]);
    let w = next(&s, "2026-01-05T00:00:00Z");
    assert_eq!(
        utc(&w),
        pair("2026-01-05T08:00:00Z", "2026-01-05T11:00:00Z")
    );
    assert_eq!(w.title.as_deref(), Some("A"));
    assert_eq!(w.timezone, "Europe/Berlin");
    // The merged window's end, in entry 1's zone.
    assert_eq!(w.rename.as_deref(), Some("A 2026-01-05 09:00-12:00"));
    assert_eq!(s.current(at("2026-01-05T10:30:00Z")), Some(w.clone()));
    // The next one is a week later, not the second half of this one.
    let n = s.upcoming(at("2026-01-05T08:30:00Z"), 1);
    assert_eq!(utc(&n[0]).0, "2026-01-12T08:00:00Z");
}

#[test]
fn a_window_inside_another_does_not_cut_it() {
    let s = schedule(&[
        weekly(&["mon"], "08:00", "12:00", "UTC"),
        weekly(&["mon"], "09:00", "10:00", "UTC"),
    ]);
    assert_eq!(
        utc(&next(&s, "2026-01-05T00:00:00Z")),
        pair("2026-01-05T08:00:00Z", "2026-01-05T12:00:00Z")
    );
}

#[test]
fn touching_windows_merge_and_a_minute_apart_do_not() {
    let s = schedule(&[
        titled(weekly(&["mon"], "09:00", "10:00", "UTC"), "second"),
        titled(weekly(&["mon"], "08:00", "09:00", "UTC"), "first"),
        titled(weekly(&["mon"], "10:01", "11:00", "UTC"), "third"),
    ]);
    let ws = s.upcoming(at("2026-01-05T00:00:00Z"), 2);
    assert_eq!(
        utc(&ws[0]),
        pair("2026-01-05T08:00:00Z", "2026-01-05T10:00:00Z")
    );
    assert_eq!(ws[0].title.as_deref(), Some("first"));
    assert_eq!(
        utc(&ws[1]),
        pair("2026-01-05T10:01:00Z", "2026-01-05T11:00:00Z")
    );
    // At the touching instant it is the one merged window.
    assert_eq!(s.current(at("2026-01-05T09:00:00Z")), Some(ws[0].clone()));
}

#[test]
fn same_start_takes_the_earlier_entry() {
    let s = schedule(&[
        titled(weekly(&["mon"], "08:00", "09:00", "UTC"), "one"),
        titled(weekly(&["mon"], "08:00", "10:00", "UTC"), "two"),
    ]);
    let w = next(&s, "2026-01-05T00:00:00Z");
    assert_eq!(w.title.as_deref(), Some("one"));
    assert_eq!(w.duration(), hours(2.0));
}

#[test]
fn end_not_after_start_is_the_next_day() {
    // 2026-01-09 is a Friday.
    let s = schedule(&[titled(weekly(&["fri"], "22:00", "02:00", "UTC"), "Night")]);
    let w = next(&s, "2026-01-05T00:00:00Z");
    assert_eq!(
        utc(&w),
        pair("2026-01-09T22:00:00Z", "2026-01-10T02:00:00Z")
    );
    // Saturday early morning is still Friday's window.
    assert_eq!(s.current(at("2026-01-10T01:00:00Z")), Some(w));

    // Seconds may be given.
    let s = schedule(&[weekly(&["mon"], "08:00:05", "08:00:15", "UTC")]);
    assert_eq!(
        utc(&next(&s, "2026-01-05T00:00:00Z")),
        pair("2026-01-05T08:00:05Z", "2026-01-05T08:00:15Z")
    );

    // Equal times: a whole day. "24:00" ends at midnight.
    let s = schedule(&[weekly(&["mon"], "08:00", "08:00", "UTC")]);
    assert_eq!(next(&s, "2026-01-05T00:00:00Z").duration(), hours(24.0));
    let s = schedule(&[weekly(&["mon"], "20:00", "24:00", "UTC")]);
    assert_eq!(
        utc(&next(&s, "2026-01-05T00:00:00Z")),
        pair("2026-01-05T20:00:00Z", "2026-01-06T00:00:00Z")
    );
}

#[test]
fn past_midnight_windows_merge_with_the_next_days_window() {
    let s = schedule(&[
        titled(weekly(&["fri"], "22:00", "02:00", "UTC"), "late"),
        titled(weekly(&["sat"], "01:00", "03:00", "UTC"), "early"),
    ]);
    let w = s.current(at("2026-01-10T02:30:00Z")).expect("inside");
    assert_eq!(
        utc(&w),
        pair("2026-01-09T22:00:00Z", "2026-01-10T03:00:00Z")
    );
    assert_eq!(w.title.as_deref(), Some("late"));
}

#[test]
fn spring_forward_in_berlin() {
    // 2026-03-29 (a Sunday): 02:00 CET becomes 03:00 CEST at 01:00 UTC.
    let z = "Europe/Berlin";
    let from = "2026-03-28T12:00:00Z";
    // Across the change: 01:30 CET .. 03:30 CEST is one hour.
    let w = next(&schedule(&[weekly(&["sun"], "01:30", "03:30", z)]), from);
    assert_eq!(
        utc(&w),
        pair("2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z")
    );
    assert_eq!(w.duration(), hours(1.0));
    // A start in the gap moves to the change itself (03:00 CEST).
    let w = next(&schedule(&[weekly(&["sun"], "02:30", "04:00", z)]), from);
    assert_eq!(
        utc(&w),
        pair("2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z")
    );
    // An end in the gap too.
    let w = next(&schedule(&[weekly(&["sun"], "00:00", "02:30", z)]), from);
    assert_eq!(
        utc(&w),
        pair("2026-03-28T23:00:00Z", "2026-03-29T01:00:00Z")
    );
    assert_eq!(w.duration(), hours(2.0));
    // Entirely inside the gap: no window that day; the next Sunday's is there.
    let w = next(&schedule(&[weekly(&["sun"], "02:10", "02:50", z)]), from);
    assert_eq!(
        utc(&w),
        pair("2026-04-05T00:10:00Z", "2026-04-05T00:50:00Z")
    );
    // Ordinary times keep their wall clock: 08:00 is 07:00Z before, 06:00Z after.
    let s = schedule(&[weekly(&["daily"], "08:00", "09:00", z)]);
    let got: Vec<_> = s.upcoming(at(from), 2).iter().map(utc).collect();
    assert_eq!(
        got,
        vec![
            pair("2026-03-29T06:00:00Z", "2026-03-29T07:00:00Z"),
            pair("2026-03-30T06:00:00Z", "2026-03-30T07:00:00Z"),
        ]
    );
    let w = s.current(at("2026-03-28T07:30:00Z")).unwrap();
    assert_eq!(
        utc(&w),
        pair("2026-03-28T07:00:00Z", "2026-03-28T08:00:00Z")
    );
}

#[test]
fn spring_forward_in_new_york() {
    // 2026-03-08: 02:00 EST becomes 03:00 EDT at 07:00 UTC.
    let z = "America/New_York";
    let w = next(
        &schedule(&[once("2026-03-08", "01:00", "04:00", z)]),
        "2026-03-01T00:00:00Z",
    );
    assert_eq!(
        utc(&w),
        pair("2026-03-08T06:00:00Z", "2026-03-08T08:00:00Z")
    );
    assert_eq!(w.duration(), hours(2.0));
    let w = next(
        &schedule(&[once("2026-03-08", "02:30", "03:30", z)]),
        "2026-03-01T00:00:00Z",
    );
    assert_eq!(
        utc(&w),
        pair("2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z")
    );
    assert_eq!(w.duration(), hours(0.5));
}

#[test]
fn fall_back_in_berlin() {
    // 2026-10-25 (a Sunday): 03:00 CEST becomes 02:00 CET at 01:00 UTC; 02:00-03:00 twice.
    let z = "Europe/Berlin";
    let from = "2026-10-24T12:00:00Z";
    // Across the change: 01:30 CEST .. 03:30 CET is three hours.
    let w = next(&schedule(&[weekly(&["sun"], "01:30", "03:30", z)]), from);
    assert_eq!(
        utc(&w),
        pair("2026-10-24T23:30:00Z", "2026-10-25T02:30:00Z")
    );
    assert_eq!(w.duration(), hours(3.0));
    // An ambiguous start is the earlier instant (02:30 CEST).
    let w = next(&schedule(&[weekly(&["sun"], "02:30", "03:30", z)]), from);
    assert_eq!(
        utc(&w),
        pair("2026-10-25T00:30:00Z", "2026-10-25T02:30:00Z")
    );
    assert_eq!(w.duration(), hours(2.0));
    // An ambiguous end too.
    let w = next(&schedule(&[weekly(&["sun"], "01:00", "02:30", z)]), from);
    assert_eq!(
        utc(&w),
        pair("2026-10-24T23:00:00Z", "2026-10-25T00:30:00Z")
    );
    assert_eq!(w.duration(), hours(1.5));
    // Ordinary times keep their wall clock: 08:00 is 06:00Z before, 07:00Z after.
    let s = schedule(&[weekly(&["daily"], "08:00", "09:00", z)]);
    let got: Vec<_> = s.upcoming(at(from), 2).iter().map(utc).collect();
    assert_eq!(
        got,
        vec![
            pair("2026-10-25T07:00:00Z", "2026-10-25T08:00:00Z"),
            pair("2026-10-26T07:00:00Z", "2026-10-26T08:00:00Z"),
        ]
    );
}

#[test]
fn fall_back_in_new_york() {
    // 2026-11-01: 02:00 EDT becomes 01:00 EST at 06:00 UTC; 01:00-02:00 twice.
    let z = "America/New_York";
    let w = next(
        &schedule(&[once("2026-11-01", "01:30", "02:30", z)]),
        "2026-10-01T00:00:00Z",
    );
    assert_eq!(
        utc(&w),
        pair("2026-11-01T05:30:00Z", "2026-11-01T07:30:00Z")
    );
    assert_eq!(w.duration(), hours(2.0));
    // Over midnight into the change: Saturday 22:00 EDT .. Sunday 02:00 EST is five hours.
    let mut e = weekly(&["sat"], "22:00", "02:00", z);
    e.title = Some("Night".into());
    e.rename = Some("{title} {date} {start}-{end}".into());
    let w = next(&schedule(&[e]), "2026-10-31T12:00:00Z");
    assert_eq!(
        utc(&w),
        pair("2026-11-01T02:00:00Z", "2026-11-01T07:00:00Z")
    );
    assert_eq!(w.duration(), hours(5.0));
    assert_eq!(w.rename.as_deref(), Some("Night 2026-10-31 22:00-02:00"));
}

#[test]
fn rename_templates_render_per_window() {
    let mut e = titled(
        weekly(&["mon", "tue"], "08:00", "10:00", "Asia/Shanghai"),
        "Maths",
    );
    e.rename = Some("{title} {date} {start}–{end} {{live}}".into());
    let ws = schedule(&[e]).upcoming(at("2026-01-04T00:00:00Z"), 2);
    assert_eq!(
        ws[0].rename.as_deref(),
        Some("Maths 2026-01-05 08:00–10:00 {live}")
    );
    assert_eq!(
        ws[1].rename.as_deref(),
        Some("Maths 2026-01-06 08:00–10:00 {live}")
    );
    // Without {title}, no title is needed.
    let mut e = weekly(&["mon"], "08:00", "10:00", "UTC");
    e.rename = Some("Class of {date}".into());
    let w = next(&schedule(&[e]), "2026-01-04T00:00:00Z");
    assert_eq!(w.rename.as_deref(), Some("Class of 2026-01-05"));
    assert_eq!(w.title, None);
}

#[test]
fn the_box_zone_is_used_without_a_timezone() {
    let mut e = weekly(&["mon"], "08:00", "10:00", "UTC");
    e.timezone = None;
    let s = schedule(&[e]);
    let w = next(&s, "2026-01-04T00:00:00Z");
    assert!(!w.timezone.is_empty());
    assert_eq!(w.duration(), hours(2.0));
}

#[test]
fn current_and_upcoming_agree() {
    // Mixed zones, overlaps, touching and overnight windows across both Berlin changes.
    let s = schedule(&[
        weekly(&["weekdays"], "08:00", "12:00", "Europe/Berlin"),
        weekly(&["mon", "thu"], "11:00", "13:00", "UTC"),
        weekly(&["fri"], "22:00", "02:30", "Europe/Berlin"),
        weekly(&["sat"], "02:30", "03:00", "Europe/Berlin"),
        weekly(&["sun"], "02:15", "03:15", "Europe/Berlin"),
        once("2026-03-29", "01:00", "02:00", "America/New_York"),
    ]);
    let second = Duration::from_secs(1);
    for (from, days) in [("2026-03-20T00:00:00Z", 20), ("2026-10-16T00:00:00Z", 20)] {
        let mut t = at(from);
        let stop = t + Duration::from_secs(days * 86400);
        while t < stop {
            let w = s
                .upcoming(t, 1)
                .pop()
                .expect("weekly windows never run out");
            assert!(w.start > t);
            assert!(w.end > w.start);
            assert_eq!(s.current(w.start), Some(w.clone()), "at {:?}", utc(&w));
            assert_eq!(s.current(w.end - second), Some(w.clone()));
            assert_eq!(s.current(w.start - second), None, "touching windows merge");
            assert_eq!(s.current(w.end), None, "touching windows merge");
            if let Some(c) = s.current(t) {
                assert!(c.contains(t));
                assert!(w.start > c.end);
            }
            t += Duration::from_secs(7 * 3600 + 13 * 60);
        }
    }
}

#[test]
fn a_run_that_never_breaks_is_cut_far_ahead() {
    let s = schedule(&[weekly(&["daily"], "00:00", "00:00", "UTC")]);
    let now = at("2026-01-05T12:00:00Z");
    let w = s.current(now).expect("always inside");
    assert!(w.start <= now - Duration::from_secs(300 * 86400));
    assert!(w.end >= now + Duration::from_secs(300 * 86400));
    assert!(s.upcoming(now, 3).is_empty());
}

#[test]
fn instants_out_of_range_do_not_panic() {
    let s = schedule(&[weekly(&["daily"], "08:00", "09:00", "UTC")]);
    let far = SystemTime::UNIX_EPOCH + Duration::from_secs(400 * 365 * 86400 * 100);
    assert_eq!(s.current(far), None);
    assert!(s.upcoming(far, 2).is_empty());
    let edge = at("9999-12-30T00:00:00Z");
    let _ = s.current(edge);
    let _ = s.upcoming(edge, 3);
}

/// (key, message) of the error for these entries.
fn error(entries: &[ScheduleEntry]) -> (String, String) {
    let e = Schedule::from_config(entries).expect_err("invalid");
    assert_eq!(e.to_string(), format!("{}: {}", e.key, e.message));
    (e.key, e.message)
}

#[test]
fn invalid_entries_name_the_key_and_what_to_do() {
    let ok = weekly(&["mon"], "08:00", "09:00", "UTC");

    let (k, m) = error(&[
        ok.clone(),
        weekly(&["mon", "funday"], "08:00", "09:00", "UTC"),
    ]);
    assert_eq!(k, "schedule[1].days");
    assert!(
        m.contains("\"funday\" is not a day") && m.contains("weekdays"),
        "{m}"
    );

    for (bad, why) in [
        ("25:00", "hours go from 00 to 23"),
        ("8h", "no colon"),
        ("08:60", "minutes go from 00 to 59"),
        ("08:5", "digits"),
        ("08:00:60", "seconds go from 00 to 59"),
        ("08:00:00:00", "too many colons"),
        ("24:00", "hours go from 00 to 23"),
        ("", "missing"),
    ] {
        let (k, m) = error(&[weekly(&["mon"], bad, "09:00", "UTC")]);
        assert_eq!(k, "schedule[0].start", "{bad}");
        assert!(m.contains(why) && m.contains("HH:MM"), "{bad}: {m}");
    }
    let (k, m) = error(&[weekly(&["mon"], "08:00", "", "UTC")]);
    assert_eq!(k, "schedule[0].end");
    assert!(m.starts_with("missing"), "{m}");

    let (k, m) = error(&[weekly(&["mon"], "08:00", "09:00", "Europe/Berln")]);
    assert_eq!(k, "schedule[0].timezone");
    assert!(
        m.contains("not a known IANA time zone") && m.contains("remove the key"),
        "{m}"
    );

    let mut both = ok.clone();
    both.date = Some("2026-09-01".into());
    let (k, m) = error(&[both]);
    assert_eq!(k, "schedule[0].days");
    assert!(m.contains("not both"), "{m}");

    let mut neither = ok.clone();
    neither.days.clear();
    let (k, m) = error(&[neither]);
    assert_eq!(k, "schedule[0]");
    assert!(m.contains("days = [") && m.contains("date = \""), "{m}");

    for bad in ["2026-02-30", "1.9.2026", "2026-9-1"] {
        let (k, m) = error(&[once(bad, "08:00", "09:00", "UTC")]);
        assert_eq!(k, "schedule[0].date");
        assert!(m.contains("YYYY-MM-DD"), "{m}");
    }

    for (tpl, why) in [
        ("{titel} live", "unknown placeholder {titel}"),
        ("{title", "without its }"),
        ("a } b", "without its {"),
        ("{title} {date}", "no title"),
        (" ", "is empty"),
    ] {
        let mut e = ok.clone();
        e.rename = Some(tpl.into());
        let (k, m) = error(&[e]);
        assert_eq!(k, "schedule[0].rename", "{tpl}");
        assert!(m.contains(why), "{tpl}: {m}");
    }

    let mut e = ok.clone();
    e.title = Some("  ".into());
    assert_eq!(error(&[e]).0, "schedule[0].title");
}

#[test]
fn config_loading_checks_the_schedule() {
    let base = "[polyv]\nchannel_id = \"1\"\n";
    let good = format!(
        "{base}\n[[schedule]]\ndays = [\"weekdays\"]\nstart = \"08:00\"\nend = \"09:00\"\ntimezone = \"Asia/Shanghai\"\ntitle = \"T\"\nrename = \"{{title}} {{date}}\"\n\n[[schedule]]\ndate = \"2026-09-01\"\nstart = \"22:00\"\nend = \"01:00\"\n"
    );
    let cfg = crate::config::Config::from_toml(std::path::Path::new("p.toml"), &good)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.schedule.len(), 2);
    assert!(!schedule(&cfg.schedule).is_empty());

    let bad =
        format!("{base}\n[[schedule]]\ndays = [\"mon\"]\nstart = \"8 am\"\nend = \"09:00\"\n");
    let msg = crate::config::Config::from_toml(std::path::Path::new("p.toml"), &bad)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("schedule[0].start: \"8 am\" is not a time"),
        "{msg}"
    );

    let unknown = format!("{base}\n[[schedule]]\nday = [\"mon\"]\n");
    let msg = crate::config::Config::from_toml(std::path::Path::new("p.toml"), &unknown)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("unknown field `day`"), "{msg}");
}

#[test]
fn report_lists_the_current_window_first() {
    let mut e = titled(
        weekly(&["mon", "wed"], "08:00", "10:00", "Europe/Berlin"),
        "Maths",
    );
    e.rename = Some("{title} {date}".into());
    let s = schedule(&[e, once("2026-01-06", "18:00", "19:00", "UTC")]);
    let now = at("2026-01-05T08:15:00Z");
    let text = render(&s, now, 3, false, None);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "now Mon 2026-01-05 09:15 CET: in a window until Mon 2026-01-05 10:00 CET (45m left)"
    );
    assert!(lines[1].starts_with("   START"), "{text}");
    assert!(lines[1].ends_with("TITLE  RENAME TO"), "{text}");
    assert!(
        lines[2].starts_with("*  Mon 2026-01-05 08:00 CET  Mon 2026-01-05 10:00 CET  2h 00m"),
        "{text}"
    );
    assert!(
        lines[2].ends_with("Europe/Berlin  Maths  Maths 2026-01-05"),
        "{text}"
    );
    assert!(lines[3].contains("Tue 2026-01-06 18:00 UTC  Tue 2026-01-06 19:00 UTC  1h 00m  UTC"));
    assert!(lines[4].contains("Wed 2026-01-07 08:00 CET"), "{text}");
    assert_eq!(lines[5], "(* open now)");

    let v: serde_json::Value = serde_json::from_str(&render(&s, now, 2, true, None)).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["start"], "2026-01-05T08:00:00+01:00");
    assert_eq!(arr[0]["end"], "2026-01-05T10:00:00+01:00");
    assert_eq!(arr[0]["duration_s"], 7200);
    assert_eq!(arr[0]["current"], true);
    assert_eq!(arr[0]["rename"], "Maths 2026-01-05");
    assert_eq!(arr[1]["start"], "2026-01-06T18:00:00+00:00");
    assert_eq!(arr[1]["title"], serde_json::Value::Null);
    assert_eq!(arr[1]["current"], false);

    let idle = render(&s, at("2026-01-05T06:00:00Z"), 1, false, None);
    assert!(
        idle.starts_with("now Mon 2026-01-05 07:00 CET: idle; the next window starts in 1h 00m"),
        "{idle}"
    );
    assert!(!idle.contains("open now"), "{idle}");

    let empty = render(&schedule(&[]), now, 3, false, None);
    assert!(empty.contains("streams all the time"), "{empty}");
    assert_eq!(render(&schedule(&[]), now, 3, true, None), "[]");
}
