//! `polypush schedule`: the real binary with a config file, the time injected with `--from`
//! and the box's zone with TZ.

mod common;

use common::*;
use std::path::PathBuf;

/// A config with these `[[schedule]]` entries (no Polyv needed: nothing is contacted).
fn config(schedule: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "http://127.0.0.1:9", "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push('\n');
    text.push_str(schedule);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// A one-off window in the box's zone across New York's spring-forward change, and a weekly
/// one in Berlin.
const TWO: &str = r#"
[[schedule]]
date = "2026-03-08"
start = "01:00"
end = "04:00"
title = "Night shift"
rename = "{title} {date} {start}-{end}"

[[schedule]]
days = ["mon", "wed"]
start = "08:00"
end = "10:00"
timezone = "Europe/Berlin"
title = "Maths"
"#;

const NEW_YORK: &[(&str, &str)] = &[("TZ", "America/New_York")];

fn error_line(r: &Run) -> String {
    r.stderr
        .lines()
        .rfind(|l| l.starts_with("polypush: error:"))
        .unwrap_or_else(|| panic!("no error line in stderr:\n{}", r.stderr))
        .to_string()
}

#[test]
fn table_lists_the_open_window_then_the_next() {
    let (_d, cfg) = config(TWO);
    // 01:30 EST, half an hour before the clocks go forward.
    let r = polypush_env(
        &cfg,
        &["schedule", "--count", "3", "--from", "2026-03-08T06:30:00Z"],
        NEW_YORK,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "now Sun 2026-03-08 01:30 EST: in a window until Sun 2026-03-08 04:00 EDT (1h 30m left)",
        "{}",
        r.stdout
    );
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        header,
        ["START", "END", "LENGTH", "ZONE", "TITLE", "RENAME", "TO"]
    );
    // Three wall-clock hours, two real ones.
    assert!(
        lines[2].starts_with("*  Sun 2026-03-08 01:00 EST  Sun 2026-03-08 04:00 EDT  2h 00m  America/New_York  Night shift"),
        "{}",
        r.stdout
    );
    assert!(
        lines[2].ends_with("Night shift 2026-03-08 01:00-04:00"),
        "{}",
        r.stdout
    );
    assert!(
        lines[3].contains(
            "Mon 2026-03-09 08:00 CET  Mon 2026-03-09 10:00 CET  2h 00m  Europe/Berlin     Maths"
        ),
        "{}",
        r.stdout
    );
    assert!(
        lines[4].contains("Wed 2026-03-11 08:00 CET"),
        "{}",
        r.stdout
    );
    assert_eq!(lines[5], "(* open now)");
    assert_eq!(lines.len(), 6, "{}", r.stdout);
}

#[test]
fn json_has_rfc3339_instants() {
    let (_d, cfg) = config(TWO);
    let r = polypush_env(
        &cfg,
        &[
            "--json",
            "schedule",
            "--count",
            "3",
            "--from",
            "2026-03-08T06:30:00Z",
        ],
        NEW_YORK,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let a = v.as_array().expect("an array");
    assert_eq!(a.len(), 3);
    assert_eq!(a[0]["start"], "2026-03-08T01:00:00-05:00");
    assert_eq!(a[0]["end"], "2026-03-08T04:00:00-04:00");
    assert_eq!(a[0]["duration_s"], 7200);
    assert_eq!(a[0]["timezone"], "America/New_York");
    assert_eq!(a[0]["title"], "Night shift");
    assert_eq!(a[0]["rename"], "Night shift 2026-03-08 01:00-04:00");
    assert_eq!(a[0]["current"], true);
    assert_eq!(a[1]["start"], "2026-03-09T08:00:00+01:00");
    assert_eq!(a[1]["end"], "2026-03-09T10:00:00+01:00");
    assert_eq!(a[1]["timezone"], "Europe/Berlin");
    assert_eq!(a[1]["rename"], serde_json::Value::Null);
    assert_eq!(a[1]["current"], false);
    assert_eq!(a[2]["start"], "2026-03-11T08:00:00+01:00");

    // After the one-off: only the weekly windows, and --count is the number listed.
    let r = polypush_env(
        &cfg,
        &["--json", "schedule", "--from", "2026-03-08T12:00:00Z"],
        NEW_YORK,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 10, "the default count");
    assert!(a
        .iter()
        .all(|w| w["title"] == "Maths" && w["current"] == false));
}

#[test]
fn box_zone_comes_from_tz() {
    let one = "[[schedule]]\ndays = [\"daily\"]\nstart = \"09:00\"\nend = \"10:00\"\n";
    let (_d, cfg) = config(one);
    for (tz, start) in [
        ("Asia/Shanghai", "2026-01-05T09:00:00+08:00"),
        ("UTC", "2026-01-05T09:00:00+00:00"),
    ] {
        let r = polypush_env(
            &cfg,
            &[
                "--json",
                "schedule",
                "--count",
                "1",
                "--from",
                "2026-01-05T00:00:00Z",
            ],
            &[("TZ", tz)],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(r.json()[0]["start"], start, "TZ={tz}");
    }
}

#[test]
fn no_schedule_streams_all_the_time() {
    let (_d, cfg) = config("");
    let r = polypush(&cfg, &["schedule"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("no [[schedule]] configured"),
        "{}",
        r.stdout
    );
    let r = polypush(&cfg, &["--json", "schedule"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json(), serde_json::json!([]));
}

#[test]
fn past_one_offs_leave_nothing_ahead() {
    let (_d, cfg) = config(
        "[[schedule]]\ndate = \"2026-03-08\"\nstart = \"01:00\"\nend = \"04:00\"\ntimezone = \"UTC\"\n",
    );
    let r = polypush(&cfg, &["schedule", "--from", "2026-04-01T00:00:00Z"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("no window ahead"), "{}", r.stdout);
}

#[test]
fn invalid_entries_are_config_errors() {
    let (_d, cfg) = config(
        "[[schedule]]\ndays = [\"mon\"]\nstart = \"08:00\"\nend = \"09:00\"\n\n[[schedule]]\ndays = [\"funday\"]\nstart = \"08:00\"\nend = \"09:00\"\n",
    );
    let r = polypush(&cfg, &["schedule"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let line = error_line(&r);
    assert!(
        line.contains("schedule[1].days: \"funday\" is not a day: use mon, tue"),
        "{line}"
    );
    let r = polypush(&cfg, &["--json", "schedule"]);
    assert_eq!(r.code, 2);
    assert_eq!(r.json()["error"]["kind"], "config");

    let (_d, cfg) = config(
        "[[schedule]]\ndate = \"2026-09-01\"\nstart = \"08:00\"\nend = \"09:00\"\ntimezone = \"Mars/Olympus\"\n",
    );
    let r = polypush(&cfg, &["check"]);
    assert_eq!(r.code, 2);
    assert!(
        error_line(&r)
            .contains("schedule[0].timezone: \"Mars/Olympus\" is not a known IANA time zone"),
        "{}",
        r.stderr
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let (_d, cfg) = config(TWO);
    let r = polypush(&cfg, &["schedule", "--from", "next tuesday"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("is not an instant"), "{}", r.stderr);
    let r = polypush(&cfg, &["schedule", "--count", "0"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// The commented examples in packaging/polypush.toml, uncommented, are a valid schedule.
#[test]
fn packaging_examples_work() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/polypush.toml"
    ))
    .unwrap();
    let block = &text[text
        .find("# A weekly window, every key shown:")
        .expect("schedule docs")..];
    let keys = [
        "[[schedule]]",
        "days =",
        "date =",
        "start =",
        "end =",
        "timezone =",
        "title =",
        "rename =",
    ];
    let toml: String = block
        .lines()
        .map(|l| l.trim_start_matches(['#', ' ']))
        .filter(|l| keys.iter().any(|k| l.starts_with(k)))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(toml.matches("[[schedule]]").count(), 2, "{toml}");
    let (_d, cfg) = config(&toml);
    let r = polypush_env(
        &cfg,
        &[
            "--json",
            "schedule",
            "--count",
            "4",
            "--from",
            "2026-08-31T00:00:00Z",
        ],
        &[("TZ", "Asia/Shanghai")],
    );
    assert_eq!(r.code, 0, "{}\n{toml}", r.stderr);
    let v = r.json();
    let starts: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["start"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "2026-08-31T08:00:00+08:00",
            "2026-09-01T20:00:00+08:00",
            "2026-09-02T08:00:00+08:00",
            "2026-09-04T08:00:00+08:00",
        ]
    );
    assert_eq!(v[0]["rename"], "Physics 101 2026-08-31");
    assert_eq!(v[1]["end"], "2026-09-02T01:00:00+08:00");
}
