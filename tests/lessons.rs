//! Lesson reports end to end: the real `polypush run` pushing to a real nginx-rtmp with the
//! safety recording on, a 10 s ingest outage (nginx stopped by its PID and started again on
//! the same port), a clean stop (SIGTERM), then `/status` (before the stop) and
//! `polypush lessons` (after it) tell the on-air share and the gap with its cause.

mod common;

use common::daemon::Daemon;
use common::nginx::Nginx;
use common::*;
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn status(addr: &str) -> Option<serde_json::Value> {
    std::net::TcpStream::connect(addr).ok()?;
    let (code, body) = http(addr, "GET", "/status", "", "");
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

fn publishing(addr: &str) -> bool {
    status(addr).is_some_and(|v| v["broadcast"]["publishing"] == true)
}

/// Waits until `/status` says `publishing == want`; the instant it was first seen.
fn wait_publishing(addr: &str, want: bool, within: Duration, d: &Daemon) -> Instant {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if publishing(addr) == want {
            return Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("publishing != {want} after {within:?}:\n{}", d.log());
}

#[test]
fn a_ten_second_ingest_outage_is_one_uplink_gap_in_the_lesson_report() {
    const OUTAGE: Duration = Duration::from_secs(10);
    let mut nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rec = dir.path().join("recordings");
    std::fs::create_dir(&state).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("polypush.toml");
    std::fs::write(
        &cfg,
        format!(
            "[target]\nurl = \"{}\"\nreconnect_max_delay_s = 1\n\
             [video]\nsource = \"test\"\nwidth = 320\nheight = 240\nfps = 25\n\
             bitrate_kbps = 300\npreset = \"ultrafast\"\n[audio]\nsource = \"test\"\n\
             [status]\nlisten = \"{addr}\"\n\
             [record]\nenabled = true\ndir = \"{}\"\nsegment_s = 10\n\
             [service]\nstate_dir = \"{}\"\n",
            nginx.url("lesson"),
            rec.display(),
            state.display()
        ),
    )
    .unwrap();

    let started = Instant::now();
    let d = Daemon::start(&cfg, &[]);
    let first_publish = wait_publishing(&addr, true, Duration::from_secs(30), &d);
    std::thread::sleep(Duration::from_secs(12));

    // The outage: from just before nginx is stopped until polypush publishes again.
    let down = Instant::now();
    nginx.stop();
    let stopped = Instant::now();
    wait_publishing(&addr, false, Duration::from_secs(5), &d);
    std::thread::sleep(OUTAGE.saturating_sub(stopped.elapsed()));
    let restarting = Instant::now();
    nginx.start_again();
    let back = wait_publishing(&addr, true, Duration::from_secs(15), &d);
    // Down for at least this long (nginx not listening), seen off air for at most this.
    let surely_down = restarting.duration_since(stopped).as_secs_f64();
    let seen_off = back.duration_since(down).as_secs_f64();
    std::thread::sleep(Duration::from_secs(12));

    // /status while the lesson is under way: the gap so far and its cause.
    let now = status(&addr).expect("/status");
    let current = &now["lessons"]["current"];
    assert_eq!(current["kind"], "manual", "{now:#}");
    assert!(
        current["causes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "uplink")),
        "{now:#}"
    );
    assert_eq!(now["lessons"]["count"], 0, "{now:#}");

    d.signal(libc::SIGTERM);
    let stop_sent = Instant::now();
    let (ok, _, log) = d.finish(Duration::from_secs(30));
    assert!(ok, "the service did not stop cleanly:\n{log}");
    let run_s = stop_sent.duration_since(started).as_secs_f64();
    let start_s = first_publish.duration_since(started).as_secs_f64();

    let out = polypush(&cfg, &["lessons", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one lesson: {}", out.stdout);
    let l: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    eprintln!("lesson report: {l:#}");
    assert_eq!(l["kind"], "manual");
    assert_eq!(l["planned_start"], serde_json::Value::Null);

    // The gaps: the start (before the first publish) and the outage, nothing else.
    let gaps = l["gaps"].as_array().unwrap();
    let outage: Vec<&serde_json::Value> =
        gaps.iter().filter(|g| g["cause"] != "starting").collect();
    assert_eq!(outage.len(), 1, "{l:#}");
    let g = outage[0];
    // nginx went away: the session was lost and reconnects met a closed port. That is the
    // path to the ingest (uplink); "ingest" is kept for an RTMP server that answers and
    // refuses the connect or the publish.
    assert_eq!(g["cause"], "uplink", "{l:#}");
    let gap_s = g["duration_s"].as_f64().unwrap();
    assert!(
        (gap_s - OUTAGE.as_secs_f64()).abs() <= 3.0,
        "a gap of {gap_s} s for a {OUTAGE:?} outage: {l:#}"
    );
    // Bounded by what the test saw: nginx not listening, and /status not publishing (polled
    // every 100 ms; the report samples every 500 ms).
    assert!(
        gap_s >= surely_down - 0.6 && gap_s <= seen_off + 0.6,
        "gap {gap_s} s, nginx down {surely_down:.2} s, off air seen for {seen_off:.2} s"
    );
    let starting: f64 = gaps
        .iter()
        .filter(|g| g["cause"] == "starting")
        .map(|g| g["duration_s"].as_f64().unwrap())
        .sum();
    assert!(
        starting <= start_s + 0.6,
        "starting gap {starting} s, first publish after {start_s:.2} s"
    );

    // The share: the run minus the start and the outage, of the run.
    let ratio = l["on_air_ratio"].as_f64().unwrap();
    let expected = (run_s - start_s - gap_s) / run_s;
    assert!(
        (ratio - expected).abs() <= 0.05 && (0.5..0.95).contains(&ratio),
        "on air {ratio}, expected about {expected:.3} ({run_s:.1} s run, {start_s:.1} s start, {gap_s} s gap)"
    );
    assert!(l["reconnects"].as_u64().unwrap() >= 1, "{l:#}");

    // The safety recording covers the gap, and the files are there.
    let recs = g["recordings"].as_array().unwrap();
    assert!(!recs.is_empty(), "no recording over the gap: {l:#}");
    for r in recs {
        let name = r.as_str().unwrap();
        assert!(rec.join(name).is_file(), "{name} not in {}", rec.display());
    }

    // The table says the same.
    let table = polypush(&cfg, &["lessons"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.contains("manual") && table.stdout.contains("uplink"),
        "{}",
        table.stdout
    );
    // A bad date is a usage error that says what to write.
    let bad = polypush(&cfg, &["lessons", "--since", "yesterday"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("YYYY-MM-DD"), "{}", bad.stderr);
    // The next start shows the last lesson in /metrics.
    assert!(state.join("lessons.jsonl").is_file());
}
