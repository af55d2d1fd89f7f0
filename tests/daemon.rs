//! `polypush run` as a service, end to end against a real nginx-rtmp: a schedule window that
//! opens a few seconds after start and lasts 10 s (idle before it, a clean recording of the
//! window, stopped by its end), and SIGHUP reloads (a valid media change is applied without
//! interrupting the broadcast, an invalid file is refused, a schedule change that leaves no
//! window stops it). The timing of the loop (to the millisecond, on tokio's paused clock
//! with an injected wall clock) is `tests/service.rs`; these prove the real process does it.

mod common;

use common::daemon::Daemon;
use common::nginx::{decode_errors, ffprobe_json, Nginx, NginxOptions};
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A fixed-offset zone (`Etc/GMT±N`) where it is between 09:00 and 15:00 at `t`, and the
/// local date and `HH:MM:SS` of `t` there: a window of a few seconds never crosses midnight,
/// whatever the time of day the test runs at.
fn midday_zone(t: SystemTime) -> (String, String, impl Fn(SystemTime) -> String) {
    let ts = jiff::Timestamp::try_from(t).unwrap();
    let utc_hour = i64::from(ts.to_zoned(jiff::tz::TimeZone::UTC).hour());
    // Local = UTC + offset; aim for 12:00, offsets -12..=+14 (Etc/GMT-N is UTC+N).
    let offset = (12 - utc_hour).clamp(-12, 14);
    let name = match offset {
        0 => "Etc/GMT".to_string(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    };
    let tz = jiff::tz::TimeZone::get(&name).unwrap();
    let local = ts.to_zoned(tz.clone());
    let date = local.strftime("%Y-%m-%d").to_string();
    let clock = move |t: SystemTime| {
        jiff::Timestamp::try_from(t)
            .unwrap()
            .to_zoned(tz.clone())
            .strftime("%H:%M:%S")
            .to_string()
    };
    (name, date, clock)
}

#[test]
fn a_window_opens_and_closes_with_a_clean_recording_of_it() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let stream = "sched";
    // The window: from the whole second 6-7 s after now, for 10 s, one-off.
    let now = SystemTime::now();
    let since_epoch = now.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let opens = SystemTime::UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs() + 6);
    let (zone, date, clock) = midday_zone(opens);
    let extra = format!(
        "[[schedule]]\ndate = \"{date}\"\nstart = \"{}\"\nend = \"{}\"\ntimezone = \"{zone}\"\ntitle = \"test window\"\n",
        clock(opens),
        clock(opens + Duration::from_secs(10))
    );
    let cfg = write_run_config(dir.path(), None, &extra);
    let url = nginx.url(stream);
    let d = Daemon::start(&cfg, &["--url", &url, "--duration", "22"]);
    let (ok, summary, log) = d.finish(Duration::from_secs(40));
    assert!(ok, "polypush failed:\n{log}");
    // Idle first (no connection), then the window, then its end stops the broadcast.
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not logged:\n{log}"))
    };
    assert!(at("idle until the next window") < at("window open: starting the broadcast"));
    assert!(at("window open: starting the broadcast") < at("publishing"));
    assert!(at("publishing") < at("window closed: stopping the broadcast"));
    assert_eq!(summary["broadcasts"], 1, "{summary}");
    // One clean recording of the window: shorter than the run (22 s), so the window's end
    // stopped it, not --duration.
    let rec = nginx.recording(stream);
    let probe = ffprobe_json(&rec);
    let dur: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (3.0..15.0).contains(&dur),
        "recorded {dur} s of a 10 s window"
    );
    assert!(decode_errors(&rec).is_empty());
}

fn rewrite(cfg: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(cfg).unwrap();
    assert!(text.contains(from), "{from:?} not in {text}");
    std::fs::write(cfg, text.replace(from, to)).unwrap();
}

#[test]
fn sighup_applies_a_valid_change_refuses_an_invalid_one_and_keeps_broadcasting() {
    let nginx = Nginx::start_with(NginxOptions {
        record_unique: true,
        ..NginxOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_run_config(dir.path(), None, "");
    let url = nginx.url("hup");
    let d = Daemon::start(&cfg, &["--url", &url, "--duration", "14"]);
    assert!(
        d.wait_for_log("publishing", Duration::from_secs(10)),
        "{}",
        d.log()
    );

    // A valid media change: the bitrate. Applied inside the running broadcast.
    rewrite(&cfg, "bitrate_kbps = 800", "bitrate_kbps = 500");
    d.signal(libc::SIGHUP);
    assert!(
        d.wait_for_log("capture and encoding restarted", Duration::from_secs(10)),
        "{}",
        d.log()
    );

    // An invalid file: refused, the old config kept, the broadcast goes on.
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{good}\n[video]\nbogus = 1\n")).unwrap();
    d.signal(libc::SIGHUP);
    assert!(
        d.wait_for_log("reload refused", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    std::fs::write(&cfg, good).unwrap();

    let (ok, summary, log) = d.finish(Duration::from_secs(30));
    assert!(ok, "polypush failed:\n{log}");
    // One session the whole time: the reloads did not interrupt the broadcast.
    let recs: Vec<PathBuf> = nginx.recordings("hup");
    assert_eq!(recs.len(), 1, "{recs:?}\n{log}");
    assert_eq!(summary["reconnects"], 0, "{summary}");
    let probe = ffprobe_json(&recs[0]);
    let dur: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(dur >= 12.0, "recorded {dur} s of a 14 s run\n{log}");
    let errors = decode_errors(&recs[0]);
    assert!(errors.is_empty(), "{errors}");
    // The change took effect: the later part of the stream is at the lower rate.
    assert!(log.contains("kbps=500"), "{log}");
}

#[test]
fn sighup_with_a_schedule_that_excludes_now_stops_the_broadcast() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_run_config(dir.path(), None, "");
    let url = nginx.url("hupsched");
    let d = Daemon::start(&cfg, &["--url", &url, "--duration", "12"]);
    assert!(
        d.wait_for_log("publishing", Duration::from_secs(10)),
        "{}",
        d.log()
    );
    // A window on a date long past: nothing is inside it now.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{text}\n[[schedule]]\ndate = \"2020-01-01\"\nstart = \"08:00\"\nend = \"09:00\"\ntimezone = \"UTC\"\n"),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    assert!(
        d.wait_for_log("outside the new schedule", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    assert!(
        d.wait_for_log("stream closed", Duration::from_secs(10)),
        "{}",
        d.log()
    );
    let (ok, _summary, log) = d.finish(Duration::from_secs(20));
    assert!(ok, "polypush failed:\n{log}");
    let after_hup = &log[log.find("outside the new schedule").unwrap()..];
    assert!(after_hup.contains("idle"), "{log}");
    assert!(!after_hup.contains("window open"), "{log}");
}
