//! The lesson recorder on an injected clock, the log's rotation and torn lines, the table.

use super::*;
use std::time::{Duration, UNIX_EPOCH};

/// 2023-11-14T22:13:20Z, plus `s` seconds.
fn at(s: f64) -> SystemTime {
    let base = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    if s >= 0.0 {
        base + Duration::from_secs_f64(s)
    } else {
        base - Duration::from_secs_f64(-s)
    }
}

fn window(start: f64, end: f64) -> Option<Planned> {
    Some(Planned {
        title: Some("Physics".into()),
        start: at(start),
        end: at(end),
    })
}

/// Active, in `planned`, publishing or not.
fn obs(planned: &Option<Planned>, publishing: bool) -> Observation {
    Observation {
        active: true,
        planned: planned.clone(),
        publishing,
        ..Observation::default()
    }
}

fn idle() -> Observation {
    Observation::default()
}

#[test]
fn a_window_with_a_start_and_an_uplink_outage() {
    let w = window(0.0, 600.0);
    let mut r = Recorder::new();
    assert!(r.observe(at(0.0), &obs(&w, false)).is_none());
    assert!(r.observe(at(1.0), &obs(&w, false)).is_none());
    assert!(r.observe(at(2.0), &obs(&w, true)).is_none());
    assert!(r.observe(at(50.0), &obs(&w, true)).is_none());
    // The session is lost; the sender says so 0.4 s before this sample.
    let mut lost = obs(&w, false);
    lost.connections_lost = 1;
    lost.not_publishing_for = Some(Duration::from_millis(400));
    lost.detail = Some("connection reset by peer".into());
    assert!(r.observe(at(100.0), &lost).is_none());
    let mut retry = lost.clone();
    retry.connect_failures = 3;
    retry.detail = Some("connection refused".into());
    assert!(r.observe(at(105.0), &retry).is_none());
    assert!(r.observe(at(110.0), &obs(&w, true)).is_none());
    // The window closes: the schedule says "no window" before the daemon idles.
    assert!(
        r.observe(at(600.2), &obs(&None, true)).is_none(),
        "same lesson"
    );
    let l = r.observe(at(600.5), &idle()).expect("the lesson ended");
    assert!(!r.is_open());

    assert_eq!(l.kind, "window");
    assert_eq!(l.title.as_deref(), Some("Physics"));
    assert_eq!(
        (l.planned_start, l.planned_end),
        (Some(at(0.0)), Some(at(600.0)))
    );
    assert_eq!((l.started, l.ended), (at(0.0), at(600.5)));
    assert_eq!(l.first_on_air, Some(at(2.0)));
    assert_eq!(l.gaps.len(), 2, "{:?}", l.gaps);
    let (start, outage) = (&l.gaps[0], &l.gaps[1]);
    assert_eq!(
        (start.cause, start.start, start.end),
        (Cause::Starting, at(0.0), at(2.0))
    );
    assert_eq!(outage.cause, Cause::Uplink);
    assert_eq!((outage.start, outage.end), (at(99.6), at(110.0)));
    assert!((outage.duration_s - 10.4).abs() < 1e-9);
    assert_eq!(outage.detail.as_deref(), Some("connection reset by peer"));
    assert!((l.on_air_s - 588.1).abs() < 1e-6, "{}", l.on_air_s);
    assert!((l.planned_s - 600.0).abs() < 1e-9);
    assert!((l.on_air_ratio - 0.9802).abs() < 1e-9, "{}", l.on_air_ratio);
    assert_eq!(l.causes(), vec![Cause::Uplink, Cause::Starting]);
}

#[test]
fn each_cause_from_its_evidence_and_the_strongest_wins() {
    // One gap per case, after the lesson was on air.
    type Case = (&'static str, Box<dyn Fn(&mut Observation)>, Cause);
    let cases: Vec<Case> = vec![
        ("lost", Box::new(|o| o.connections_lost = 1), Cause::Uplink),
        (
            "refused",
            Box::new(|o| o.publish_rejections = 1),
            Cause::Ingest,
        ),
        (
            "polyv",
            Box::new(|o| o.platform_refusal = Some("rate_limited")),
            Cause::Platform,
        ),
        (
            "polyv unreachable",
            Box::new(|o| o.platform_refusal = Some("unreachable")),
            Cause::Uplink,
        ),
        ("camera", Box::new(|o| o.capture_down = true), Cause::Device),
        ("failed", Box::new(|o| o.failed = true), Cause::Failed),
        ("no evidence", Box::new(|_| {}), Cause::Uplink),
    ];
    for (name, f, want) in cases {
        let mut r = Recorder::new();
        r.observe(at(0.0), &obs(&None, true));
        let mut o = obs(&None, false);
        f(&mut o);
        r.observe(at(10.0), &o);
        r.observe(at(20.0), &obs(&None, true));
        let l = r.close(at(30.0)).unwrap();
        assert_eq!(l.gaps.len(), 1, "{name}");
        assert_eq!(l.gaps[0].cause, want, "{name}");
    }

    // In one gap: a lost session, then the camera fails too: device wins; later uplink
    // evidence does not take it back.
    let mut r = Recorder::new();
    r.observe(at(0.0), &obs(&None, true));
    let mut o = obs(&None, false);
    o.connections_lost = 1;
    r.observe(at(10.0), &o);
    let mut cam = o.clone();
    cam.capture_down = true;
    cam.detail = Some("/dev/video0: no such device".into());
    r.observe(at(12.0), &cam);
    let mut again = o.clone();
    again.connections_lost = 2;
    r.observe(at(14.0), &again);
    r.observe(at(20.0), &obs(&None, true));
    let l = r.close(at(30.0)).unwrap();
    assert_eq!(l.gaps[0].cause, Cause::Device);
    assert_eq!(
        l.gaps[0].detail.as_deref(),
        Some("/dev/video0: no such device")
    );

    // A start that the ingest refuses is "ingest", not "starting".
    let mut r = Recorder::new();
    r.observe(at(0.0), &obs(&None, false));
    let mut o = obs(&None, false);
    o.publish_rejections = 1;
    r.observe(at(3.0), &o);
    r.observe(at(8.0), &obs(&None, true));
    let l = r.close(at(20.0)).unwrap();
    assert_eq!(l.gaps[0].cause, Cause::Ingest);
    assert_eq!((l.gaps[0].start, l.gaps[0].end), (at(0.0), at(8.0)));
}

#[test]
fn late_start_and_early_stop_are_off_air() {
    let w = window(0.0, 1000.0);
    let mut r = Recorder::new();
    // The service came up 100 s into the window and was stopped at 900 s.
    r.observe(at(100.0), &obs(&w, true));
    r.observe(at(500.0), &obs(&w, true));
    let l = r.close(at(900.0)).unwrap();
    let off: Vec<_> = l.gaps.iter().map(|g| (g.cause, g.start, g.end)).collect();
    assert_eq!(
        off,
        vec![
            (Cause::Off, at(0.0), at(100.0)),
            (Cause::Off, at(900.0), at(1000.0))
        ]
    );
    assert!((l.on_air_s - 800.0).abs() < 1e-9);
    assert!((l.on_air_ratio - 0.8).abs() < 1e-9);
}

#[test]
fn an_extended_window_a_new_window_and_manual_broadcasts() {
    let mut r = Recorder::new();
    r.observe(at(0.0), &obs(&window(0.0, 100.0), true));
    // Extended by 50 s: the same lesson, the new end.
    r.observe(at(90.0), &obs(&window(0.0, 150.0), true));
    // The next window (merged schedules never touch, but a reload can): a new lesson.
    let first = r
        .observe(at(150.0), &obs(&window(150.0, 200.0), true))
        .expect("the first window ended");
    assert_eq!(first.planned_end, Some(at(150.0)));
    assert!((first.on_air_ratio - 1.0).abs() < 1e-9);
    assert!(first.gaps.is_empty(), "{:?}", first.gaps);
    let second = r.observe(at(200.0), &idle()).unwrap();
    assert_eq!(second.planned_start, Some(at(150.0)));

    // A manual broadcast: its share is of its own length.
    r.observe(at(300.0), &obs(&None, true));
    r.observe(at(310.0), &obs(&None, false));
    r.observe(at(320.0), &obs(&None, true));
    // A window opens during it: the manual lesson ends, the window's begins.
    let manual = r
        .observe(at(340.0), &obs(&window(340.0, 400.0), true))
        .unwrap();
    assert_eq!(manual.kind, "manual");
    assert_eq!(
        (manual.planned_start, manual.title.as_deref()),
        (None, None)
    );
    assert!((manual.planned_s - 40.0).abs() < 1e-9);
    assert!((manual.on_air_ratio - 0.75).abs() < 1e-9);
    assert!(r.is_open());

    // A blink of the state machine is no lesson.
    let mut r = Recorder::new();
    r.observe(at(0.0), &obs(&None, false));
    assert!(r.observe(at(0.5), &idle()).is_none());
    assert!(!r.is_open());
}

#[test]
fn counters_are_the_lesson_s_own() {
    let totals = |reconnects: u64, raised: u64, dropped: u64| Counters {
        reconnects,
        video_frames_dropped: dropped,
        alarms_raised: [raised, 0, 0, 0, 0], // silence
        ..Counters::default()
    };
    let mut r = Recorder::new();
    let mut o = obs(&None, true);
    o.totals = totals(5, 1, 10);
    r.observe(at(0.0), &o);
    o.totals = totals(7, 3, 14);
    r.observe(at(60.0), &o);
    let l = r.close(at(61.0)).unwrap();
    assert_eq!(l.reconnects, 2);
    assert_eq!(l.drops.video_frames, 4);
    assert_eq!(l.media_alarms["silence"], 2);
    assert_eq!(l.media_alarms["clipping"], 0);
    assert_eq!(l.media_alarms.len(), 5);
}

#[test]
fn recordings_that_overlap_each_gap() {
    let mut r = Recorder::new();
    r.observe(at(0.0), &obs(&None, true));
    r.observe(at(100.0), &obs(&None, false));
    r.observe(at(130.0), &obs(&None, true));
    let mut l = r.close(at(400.0)).unwrap();
    let seg = |name: &str, a: f64, b: f64| Segment {
        name: name.into(),
        start: at(a),
        end: at(b),
    };
    l.attach_recordings(&[
        seg("polypush-a-0001.flv", -500.0, -10.0),
        seg("polypush-b-0002.flv", 0.0, 110.0),
        seg("polypush-c-0003.flv", 110.0, 400.0),
    ]);
    assert_eq!(
        l.gaps[0].recordings,
        vec!["polypush-b-0002.flv", "polypush-c-0003.flv"]
    );
}

fn lesson(n: u32) -> Lesson {
    let mut r = Recorder::new();
    r.observe(at(f64::from(n) * 1000.0), &obs(&window(0.0, 1e6), true));
    r.observe(
        at(f64::from(n) * 1000.0 + 5.0),
        &obs(&window(0.0, 1e6), false),
    );
    r.close(at(f64::from(n) * 1000.0 + 10.0)).unwrap()
}

#[test]
fn lessons_round_trip_through_json() {
    let l = lesson(1);
    let line = serde_json::to_string(&l).unwrap();
    assert!(
        line.contains("\"planned_start\":\"2023-11-14T22:13:20Z\""),
        "{line}"
    );
    assert!(line.contains("\"cause\":\"uplink\""), "{line}");
    let back: Lesson = serde_json::from_str(&line).unwrap();
    assert_eq!(back, l);
}

#[test]
fn the_log_rotates_and_keeps_three_old_files() {
    let dir = tempfile::tempdir().unwrap();
    let line_len = serde_json::to_string(&lesson(1)).unwrap().len() as u64 + 1;
    // Room for 3 lines a file.
    let log = LessonLog::new(dir.path().join("state"), line_len * 3 + 10);
    let err = log.append(&lesson(1)).unwrap_err();
    assert!(err.to_string().contains("[service] state_dir"), "{err}");
    std::fs::create_dir(dir.path().join("state")).unwrap();
    for n in 1..=20 {
        log.append(&lesson(n)).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "lessons.jsonl",
            "lessons.jsonl.1",
            "lessons.jsonl.2",
            "lessons.jsonl.3"
        ]
    );
    for n in &names {
        let len = std::fs::metadata(dir.path().join("state").join(n))
            .unwrap()
            .len();
        assert!(len <= line_len * 3 + 10, "{n}: {len}");
    }
    let read = log.read().unwrap();
    assert_eq!(read.skipped, 0);
    // 20 lessons, 3 a file, 4 files kept: the newest 11, oldest first (the current file
    // has 2).
    let starts: Vec<SystemTime> = read.lessons.iter().map(|l| l.started).collect();
    let want: Vec<SystemTime> = (10..=20).map(|n| at(f64::from(n) * 1000.0)).collect();
    assert_eq!(starts, want);
}

#[test]
fn a_torn_last_line_is_skipped_and_never_glued_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let log = LessonLog::new(dir.path(), 1 << 20);
    log.append(&lesson(1)).unwrap();
    // A crash in the middle of the second write.
    let full = serde_json::to_string(&lesson(2)).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(log.path())
        .unwrap();
    std::io::Write::write_all(&mut f, &full.as_bytes()[..full.len() / 2]).unwrap();
    drop(f);
    log.append(&lesson(3)).unwrap();
    let read = log.read().unwrap();
    assert_eq!(read.skipped, 1);
    let starts: Vec<SystemTime> = read.lessons.iter().map(|l| l.started).collect();
    assert_eq!(starts, vec![at(1000.0), at(3000.0)]);
    // A missing log is empty, not an error.
    let none = LessonLog::new(dir.path().join("nothing"), 1 << 20)
        .read()
        .unwrap();
    assert!(none.lessons.is_empty());
}

#[test]
fn the_table_and_since() {
    let tz = jiff::tz::TimeZone::UTC;
    let ls = vec![lesson(1), lesson(100)];
    let table = render(&ls, None, false, &tz);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("DATE") && lines[0].contains("SHARE"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("2023-11-14  Physics")
            && lines[1].contains("22:13:20–")
            && lines[1].contains("22:30:05 5.0s uplink"),
        "{table}"
    );
    let since = parse_since("2023-11-15", &tz).unwrap();
    assert_eq!(since, at(6400.0));
    let json = render(&ls, Some(since), true, &tz);
    assert_eq!(json.lines().count(), 1, "{json}");
    let back: Lesson = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(back, ls[1]);
    assert_eq!(
        parse_since("2023-11-14T22:30:00Z", &tz).unwrap(),
        at(1000.0)
    );
    let err = parse_since("last tuesday", &tz).unwrap_err();
    assert!(
        err.contains("YYYY-MM-DD") && err.contains("\"last tuesday\""),
        "{err}"
    );
    assert_eq!(render(&[], None, false, &tz), "no lessons recorded yet\n");
}
