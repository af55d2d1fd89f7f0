//! Lesson control with injected time: extend, start now, stop now, lead_s, expiry and the
//! state file's round trip.

use super::*;
use crate::schedule::ScheduleEntry;

/// An RFC 3339 instant.
fn at(s: &str) -> SystemTime {
    SystemTime::from(s.parse::<jiff::Timestamp>().unwrap())
}

fn once(date: &str, start: &str, end: &str, lead_s: u32) -> ScheduleEntry {
    ScheduleEntry {
        date: Some(date.into()),
        start: start.into(),
        end: end.into(),
        timezone: Some("UTC".into()),
        lead_s,
        ..ScheduleEntry::default()
    }
}

/// 08:00-09:00 and 10:00-11:00 UTC on 2030-03-04.
fn two_lessons() -> Schedule {
    Schedule::from_config(&[
        once("2030-03-04", "08:00", "09:00", 0),
        once("2030-03-04", "10:00", "11:00", 0),
    ])
    .unwrap()
}

fn set(s: &Schedule, ov: Option<&Override>, a: ControlAction, now: &str) -> Option<Override> {
    apply(s, ov, a, at(now), "test").unwrap_or_else(|e| panic!("{e}"))
}

const MIN: Duration = Duration::from_secs(60);

#[test]
fn extend_moves_the_end_of_the_window_open_now() {
    let s = two_lessons();
    let ov = set(
        &s,
        None,
        ControlAction::Extend { minutes: 30 },
        "2030-03-04T08:50:00Z",
    );
    let o = ov.clone().unwrap();
    assert_eq!(o.kind, OverrideKind::Extend);
    assert_eq!(o.until, at("2030-03-04T09:30:00Z"));
    assert_eq!(
        (o.set_at, o.by.as_str()),
        (at("2030-03-04T08:50:00Z"), "test")
    );

    // Inside the window the schedule still decides; after its end the extension does.
    let e = effective(&s, ov.as_ref(), at("2030-03-04T08:55:00Z"));
    assert!(e.on);
    assert_eq!(e.end, Some(at("2030-03-04T09:30:00Z")));
    let e = effective(&s, ov.as_ref(), at("2030-03-04T09:10:00Z"));
    assert_eq!(
        (e.on, e.why, e.end),
        (true, Why::Extended, Some(at("2030-03-04T09:30:00Z")))
    );
    assert!(e.window.is_none());
    // Expired: the schedule alone, and the override is no longer reported.
    let e = effective(&s, ov.as_ref(), at("2030-03-04T09:30:00Z"));
    assert_eq!((e.on, e.why, e.control), (false, Why::Idle, None));

    // Extending again adds to the extended end.
    let ov2 = set(
        &s,
        ov.as_ref(),
        ControlAction::Extend { minutes: 15 },
        "2030-03-04T09:20:00Z",
    );
    assert_eq!(ov2.unwrap().until, at("2030-03-04T09:45:00Z"));
}

#[test]
fn an_extension_into_the_next_window_is_one_stretch_on_air() {
    let s = two_lessons();
    let ov = set(
        &s,
        None,
        ControlAction::Extend { minutes: 70 },
        "2030-03-04T08:30:00Z",
    );
    let e = effective(&s, ov.as_ref(), at("2030-03-04T09:30:00Z"));
    assert_eq!(
        (e.why, e.end),
        (Why::Extended, Some(at("2030-03-04T11:00:00Z")))
    );
    let e = effective(&s, ov.as_ref(), at("2030-03-04T10:10:00Z"));
    assert_eq!(
        (e.on, e.why),
        (true, Why::Schedule),
        "the window outlasts the extension"
    );
}

#[test]
fn extend_is_refused_with_what_to_do() {
    let s = two_lessons();
    let e = apply(
        &s,
        None,
        ControlAction::Extend { minutes: 15 },
        at("2030-03-04T09:10:00Z"),
        "t",
    )
    .unwrap_err();
    assert!(
        matches!(e, ControlError::NothingOpen { stopped: false, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("no window is open now") && msg.contains("start now"),
        "{msg}"
    );
    assert!(msg.contains("2030-03-04"), "names the next window: {msg}");

    for bad in [0, 481] {
        let e = apply(
            &s,
            None,
            ControlAction::Extend { minutes: bad },
            at("2030-03-04T08:10:00Z"),
            "t",
        )
        .unwrap_err();
        assert_eq!(e, ControlError::Minutes(bad));
        assert!(e.to_string().contains("1 to 480 minutes"));
    }
    // 8 h from now at most: at 08:10 the end (09:00) may move to 16:10, no further.
    let e = apply(
        &s,
        None,
        ControlAction::Extend { minutes: 440 },
        at("2030-03-04T08:10:00Z"),
        "t",
    )
    .unwrap_err();
    assert!(matches!(e, ControlError::TooFar { most: 430, .. }), "{e:?}");
    assert!(e.to_string().contains("at most 430 minutes"), "{e}");
    assert!(set(
        &s,
        None,
        ControlAction::Extend { minutes: 430 },
        "2030-03-04T08:10:00Z"
    )
    .is_some());

    let none = Schedule::default();
    for a in [
        ControlAction::Extend { minutes: 5 },
        ControlAction::StartNow,
        ControlAction::StopNow,
    ] {
        let e = apply(&none, None, a, at("2030-03-04T08:10:00Z"), "t").unwrap_err();
        assert!(
            e.to_string().contains("no [[schedule]] is configured"),
            "{e}"
        );
    }
}

#[test]
fn start_now_runs_until_the_next_window_which_carries_on() {
    let s = two_lessons();
    let ov = set(&s, None, ControlAction::StartNow, "2030-03-04T09:20:00Z");
    let o = ov.clone().unwrap();
    assert_eq!(
        (o.kind, o.until),
        (OverrideKind::StartNow, at("2030-03-04T10:00:00Z"))
    );
    let e = effective(&s, ov.as_ref(), at("2030-03-04T09:20:00Z"));
    assert_eq!(
        (e.on, e.why, e.end),
        (true, Why::StartedNow, Some(at("2030-03-04T11:00:00Z"))),
        "one stretch to the next window's end"
    );
    let e = effective(&s, ov.as_ref(), at("2030-03-04T10:30:00Z"));
    assert_eq!((e.on, e.why), (true, Why::Schedule));

    // Extending a manual broadcast keeps it manual.
    let ov2 = set(
        &s,
        ov.as_ref(),
        ControlAction::Extend { minutes: 10 },
        "2030-03-04T09:30:00Z",
    );
    assert_eq!(ov2.unwrap().until, at("2030-03-04T11:10:00Z"));

    // No window ahead within 8 h: 8 h.
    let ov = set(&s, None, ControlAction::StartNow, "2030-03-04T12:00:00Z").unwrap();
    assert_eq!(ov.until, at("2030-03-04T20:00:00Z"));

    // Already on: refused, pointing at extend.
    let e = apply(
        &s,
        None,
        ControlAction::StartNow,
        at("2030-03-04T08:10:00Z"),
        "t",
    )
    .unwrap_err();
    assert!(e.to_string().contains("extend it instead"), "{e}");
}

#[test]
fn stop_now_holds_until_the_next_window_opens() {
    let s = two_lessons();
    let ov = set(&s, None, ControlAction::StopNow, "2030-03-04T08:20:00Z");
    let o = ov.clone().unwrap();
    assert_eq!(
        (o.kind, o.until),
        (OverrideKind::StopNow, at("2030-03-04T10:00:00Z"))
    );
    let e = effective(&s, ov.as_ref(), at("2030-03-04T08:30:00Z"));
    assert_eq!((e.on, e.why), (false, Why::StoppedNow));
    assert!(e.window.is_some(), "the window is still reported");
    let e = effective(&s, ov.as_ref(), at("2030-03-04T10:00:00Z"));
    assert_eq!(
        (e.on, e.why),
        (true, Why::Schedule),
        "the next window starts as usual"
    );

    // Extend while stopped says to start again; stop again says nothing is on.
    let e = apply(
        &s,
        ov.as_ref(),
        ControlAction::Extend { minutes: 5 },
        at("2030-03-04T08:30:00Z"),
        "t",
    )
    .unwrap_err();
    assert!(e.to_string().contains("stopped with stop now"), "{e}");
    let e = apply(
        &s,
        ov.as_ref(),
        ControlAction::StopNow,
        at("2030-03-04T08:30:00Z"),
        "t",
    )
    .unwrap_err();
    assert!(matches!(e, ControlError::AlreadyOff { .. }), "{e:?}");
    // Start now inside the stopped window: back to the schedule.
    assert_eq!(
        set(
            &s,
            ov.as_ref(),
            ControlAction::StartNow,
            "2030-03-04T08:30:00Z"
        ),
        None
    );

    // The last window of all: stopped until it would have ended.
    let ov = set(&s, None, ControlAction::StopNow, "2030-03-04T10:20:00Z").unwrap();
    assert_eq!(ov.until, at("2030-03-04T11:00:00Z"));
    // Stop a manual broadcast: off until the next window.
    let started = set(&s, None, ControlAction::StartNow, "2030-03-04T09:10:00Z");
    let ov = set(
        &s,
        started.as_ref(),
        ControlAction::StopNow,
        "2030-03-04T09:20:00Z",
    )
    .unwrap();
    assert_eq!(ov.until, at("2030-03-04T10:00:00Z"));
}

#[test]
fn lead_s_opens_the_window_early() {
    let s = Schedule::from_config(&[once("2030-03-04", "08:00", "09:00", 300)]).unwrap();
    let w = s
        .current(at("2030-03-04T07:55:00Z"))
        .expect("open during the lead");
    assert_eq!(
        (w.opens, w.start, w.end),
        (
            at("2030-03-04T07:55:00Z"),
            at("2030-03-04T08:00:00Z"),
            at("2030-03-04T09:00:00Z")
        )
    );
    assert_eq!(w.lead(), 5 * MIN);
    assert_eq!(
        w.duration(),
        60 * MIN,
        "the lesson's length, lead not counted"
    );
    assert!(s.current(at("2030-03-04T07:54:59Z")).is_none());
    let next = s.upcoming(at("2030-03-04T07:00:00Z"), 1);
    assert_eq!(next[0].opens, at("2030-03-04T07:55:00Z"));
    let e = effective(&s, None, at("2030-03-04T07:56:00Z"));
    assert_eq!((e.on, e.why), (true, Why::Schedule));

    // A lead that reaches into the previous window merges the two: no stop in between.
    let s = Schedule::from_config(&[
        once("2030-03-04", "08:00", "09:00", 0),
        once("2030-03-04", "09:05", "10:00", 600),
    ])
    .unwrap();
    let w = s
        .current(at("2030-03-04T09:02:00Z"))
        .expect("one merged window");
    assert_eq!(
        (w.start, w.end),
        (at("2030-03-04T08:00:00Z"), at("2030-03-04T10:00:00Z"))
    );

    let e = Schedule::from_config(&[once("2030-03-04", "08:00", "09:00", 3601)]).unwrap_err();
    assert_eq!(e.key, "schedule[0].lead_s");
    assert!(e.message.contains("at most 3600 seconds"), "{}", e.message);
}

#[test]
fn the_state_text_round_trips() {
    let o = Override {
        kind: OverrideKind::Extend,
        until: at("2030-03-04T09:30:00Z"),
        set_at: at("2030-03-04T08:50:00Z"),
        by: "page".into(),
    };
    let text = encode(&o);
    assert!(
        text.contains("\"until\": \"2030-03-04T09:30:00Z\""),
        "{text}"
    );
    for k in [
        OverrideKind::Extend,
        OverrideKind::StartNow,
        OverrideKind::StopNow,
    ] {
        let o = Override {
            kind: k,
            ..o.clone()
        };
        assert_eq!(decode(&encode(&o)), Ok(o));
    }
    assert!(decode("{\"version\":1,\"kind\":\"pause\"}").is_err());
    assert!(decode("not json").is_err());
    assert!(decode("{\"version\":2}").is_err());
}

#[test]
fn polypush_schedule_shows_the_lead_and_the_override() {
    let s = Schedule::from_config(&[
        once("2030-03-04", "08:00", "09:00", 300),
        once("2030-03-04", "10:00", "11:00", 0),
    ])
    .unwrap();
    let now = at("2030-03-04T08:50:00Z");
    let ov = set(
        &s,
        None,
        ControlAction::Extend { minutes: 30 },
        "2030-03-04T08:50:00Z",
    );
    let text = crate::schedule::render(&s, now, 2, false, ov.as_ref());
    assert!(text.contains("LEAD"), "{text}");
    assert!(text.contains(" 5m "), "{text}");
    assert!(
        text.contains("lesson control: extend (set ")
            && text.contains("by test): broadcasting until"),
        "{text}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&crate::schedule::render(&s, now, 2, true, None)).unwrap();
    assert_eq!(v[0]["lead_s"], 300);
    assert_eq!(v[0]["opens"], "2030-03-04T07:55:00+00:00");
    let plain = crate::schedule::render(&s, now, 2, false, None);
    assert!(!plain.contains("lesson control"), "{plain}");
}
